//! The networks `train` trains (burn, on its CPU backend): an MLP, or a small CNN in front of
//! the same MLP head.
//!
//! - `mlp`: `depth` hidden layers `Linear(width) -> BatchNorm -> ReLU`, then the feature layer
//!   `Linear(d)`, a plain linear map with no activation and no batch norm (with a ReLU the
//!   features are non-negative and cannot form a simplex ETF);
//! - `cnn`: two convolutions `3x3 stride 2 (32, 64 channels) -> BatchNorm -> ReLU` (28 -> 14
//!   -> 7), flattened, then the `mlp` layers;
//! - the classifier W (K x d) and the bias b (K): logits `z = W h + b`. With
//!   `--classifier etf`, W is a fixed simplex ETF and never trains.
//!
//! Weights are drawn from the run's own ChaCha8 generator (PyTorch's default scale, uniform
//! in `+-1/sqrt(fan_in)`), and parameter ids are numbered in module order, so the same seed
//! gives the same network and a checkpoint's optimizer state matches the parameters it was
//! saved with.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{activation, Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bail;
use crate::error::Result;

/// The architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Fully connected layers with batch norm.
    Mlp,
    /// Two strided convolutions, then the MLP layers.
    Cnn,
}

/// The classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierKind {
    /// Trained with the rest of the network.
    Learned,
    /// A fixed simplex ETF, `W W^T = alpha (I - 11^T/K)`.
    Etf,
}

/// The shape of a network.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// Architecture.
    pub arch: Arch,
    /// Canvas height and width.
    pub input: (usize, usize),
    /// Hidden width.
    pub width: usize,
    /// Number of hidden layers.
    pub depth: usize,
    /// Feature dimension d.
    pub dim: usize,
    /// Classes K.
    pub classes: usize,
    /// Learned or fixed-ETF classifier.
    pub classifier: ClassifierKind,
    /// The ETF's scale alpha (used with `Etf`).
    pub etf_alpha: f64,
}

impl NetConfig {
    /// Checks the shape.
    pub fn check(&self) -> Result<()> {
        if self.width == 0 || self.dim == 0 {
            bail!("--width and --dim must be at least 1");
        }
        if self.classifier == ClassifierKind::Etf && self.dim + 1 < self.classes {
            bail!("--dim {} with --classifier etf: a simplex ETF of K = {} classes needs d >= K-1 = {}", self.dim, self.classes, self.classes - 1);
        }
        if self.arch == Arch::Cnn && (self.input.0 < 4 || self.input.1 < 4) {
            bail!("--model cnn needs inputs of at least 4 x 4");
        }
        if !(self.etf_alpha > 0.0 && self.etf_alpha.is_finite()) {
            bail!("the ETF scale must be positive and finite, got {}", self.etf_alpha);
        }
        Ok(())
    }

    /// The convolutions' output shapes `(channels, height, width)` (none for the MLP; each a
    /// stride-2 3 x 3 convolution) and the width of what enters the first linear layer: what
    /// [`Net::new`] builds, [`parameters`](Self::parameters) counts and
    /// [`training_bytes`](Self::training_bytes) sizes.
    fn conv_shapes(&self) -> (Vec<(usize, usize, usize)>, usize) {
        let (mut h, mut w) = self.input;
        if self.arch != Arch::Cnn {
            return (Vec::new(), h * w);
        }
        let shapes: Vec<_> = [32usize, 64]
            .iter()
            .map(|&c| {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
                (c, h, w)
            })
            .collect();
        let flat = shapes.last().map_or(0, |&(c, h, w)| c * h * w);
        (shapes, flat)
    }

    /// Number of parameters as the framework counts them (a batch norm's running mean and
    /// variance among them), as f64: the widths a user can ask for overflow nothing.
    pub fn parameters(&self) -> f64 {
        let (convs, flat) = self.conv_shapes();
        let mut cin = 1.0;
        let mut p = 0.0;
        for &(c, _, _) in &convs {
            p += c as f64 * (cin * 9.0 + 1.0) + 4.0 * c as f64;
            cin = c as f64;
        }
        let (width, depth) = (self.width as f64, self.depth as f64);
        let mut din = flat as f64;
        if self.depth > 0 {
            p += din * width + 5.0 * width + (depth - 1.0) * (width * width + 5.0 * width);
            din = width;
        }
        p + din * self.dim as f64 + self.dim as f64 + (self.dim * self.classes + self.classes) as f64
    }

    /// Memory that training with batches of `batch` needs, about: three copies of the
    /// parameters in float32 (the weights, their gradients and the momentum) and a batch's
    /// activations (at least the evaluation's batches of 500). Measured: width 3,000 and depth
    /// 30 peaked at 3.28 GB against 3.34 GB estimated.
    pub fn training_bytes(&self, batch: usize) -> f64 {
        let (convs, flat) = self.conv_shapes();
        let per_sample: f64 = convs.iter().map(|&(c, h, w)| (c * h * w) as f64).sum::<f64>()
            + flat as f64
            + self.depth as f64 * self.width as f64
            + (self.dim + self.classes) as f64;
        4.0 * (3.0 * self.parameters() + batch.max(500) as f64 * per_sample)
    }
}

/// The network: body, feature layer, classifier.
#[derive(Module, Debug)]
pub struct Net {
    convs: Vec<Conv2d>,
    conv_norms: Vec<BatchNorm>,
    hidden: Vec<Linear>,
    norms: Vec<BatchNorm>,
    feature: Linear,
    /// The classifier, stored transposed (d x K) so that logits are `h W^T`.
    classifier: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
}

/// A simplex ETF `K x d` (d >= K-1) with `W W^T = alpha (I - 11^T/K)`, row-major: the centred
/// identity when d >= K (padded with zero columns), or its coordinates in an orthonormal basis
/// of the centred subspace when d = K-1.
pub fn simplex_etf(k: usize, d: usize, alpha: f64) -> Vec<f64> {
    let s = alpha.sqrt();
    let mut w = vec![0.0; k * d];
    if d >= k {
        for i in 0..k {
            for j in 0..k {
                w[i * d + j] = s * (if i == j { 1.0 } else { 0.0 } - 1.0 / k as f64);
            }
        }
    } else {
        // Columns of simplex_basis are an orthonormal basis of 1-perp (K x (K-1)).
        let b = crate::theory::prediction::simplex_basis(k);
        for i in 0..k {
            for j in 0..d {
                w[i * d + j] = s * b[(i, j)];
            }
        }
    }
    w
}

/// Renumbers parameter ids in module order and redraws the linear and convolution weights
/// from the run's generator.
struct Init {
    rng: ChaCha8Rng,
    next: u64,
    layer: Vec<String>,
    fan_in: usize,
    device: Device,
}

impl ModuleMapper for Init {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.layer.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.layer.pop();
    }

    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let layer = self.layer.last().map(String::as_str).unwrap_or("");
        if layer == "Struct:Linear" || layer == "Struct:Conv2d" {
            let dims = param.val().dims();
            if D >= 2 {
                // Linear weight [in, out]; convolution weight [out, in, kh, kw].
                self.fan_in = if D == 2 { dims[0] } else { dims[1..].iter().product() };
            }
            let bound = 1.0 / (self.fan_in.max(1) as f64).sqrt();
            let n: usize = dims.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (self.rng.random::<f64>() * 2.0 - 1.0) * bound).map(|x| x as f32).collect();
            let device = self.device.clone();
            param = param.map(move |t| {
                let rg = t.is_require_grad();
                Tensor::<D>::from_data(TensorData::new(v, dims), &device).set_require_grad(rg)
            });
        }
        param.id = ParamId::from(self.next);
        self.next += 1;
        param
    }
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32).collect()
}

impl Net {
    /// A new network on `device`, its weights drawn from `seed`.
    pub fn new(cfg: &NetConfig, seed: u64, device: &Device) -> Net {
        let mut convs = Vec::new();
        let mut conv_norms = Vec::new();
        let (shapes, flat) = cfg.conv_shapes();
        let mut c = 1;
        for (out, _, _) in shapes {
            convs.push(Conv2dConfig::new([c, out], [3, 3]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device));
            conv_norms.push(BatchNormConfig::new(out).init(device));
            c = out;
        }
        let mut hidden = Vec::new();
        let mut norms = Vec::new();
        let mut din = flat;
        for _ in 0..cfg.depth {
            hidden.push(LinearConfig::new(din, cfg.width).init(device));
            norms.push(BatchNormConfig::new(cfg.width).init(device));
            din = cfg.width;
        }
        let feature = LinearConfig::new(din, cfg.dim).init(device);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00);
        let (classifier, learned) = match cfg.classifier {
            ClassifierKind::Learned => {
                let bound = 1.0 / (cfg.dim as f64).sqrt();
                let w = uniform(&mut rng, cfg.dim * cfg.classes, bound);
                (Tensor::<2>::from_data(TensorData::new(w, [cfg.dim, cfg.classes]), device), true)
            }
            ClassifierKind::Etf => {
                let w = simplex_etf(cfg.classes, cfg.dim, cfg.etf_alpha);
                // Stored transposed: d x K.
                let mut t = vec![0.0f32; cfg.dim * cfg.classes];
                for k in 0..cfg.classes {
                    for j in 0..cfg.dim {
                        t[j * cfg.classes + k] = w[k * cfg.dim + j] as f32;
                    }
                }
                (Tensor::<2>::from_data(TensorData::new(t, [cfg.dim, cfg.classes]), device), false)
            }
        };
        let b = uniform(&mut rng, cfg.classes, 1.0 / (cfg.dim as f64).sqrt());
        let net = Net {
            convs,
            conv_norms,
            hidden,
            norms,
            feature,
            classifier: if learned { Param::from_tensor(classifier) } else { Param::from_tensor(classifier).set_require_grad(false) },
            bias: Param::from_tensor(Tensor::<1>::from_data(TensorData::new(b, [cfg.classes]), device)),
        };
        let mut init = Init { rng, next: 1, layer: Vec::new(), fan_in: 1, device: device.clone() };
        net.map(&mut init)
    }

    /// The features (B x d) and the logits (B x K) of a batch of inputs (B x pixels).
    pub fn forward(&self, x: Tensor<2>, input: (usize, usize)) -> (Tensor<2>, Tensor<2>) {
        let mut a = x;
        if !self.convs.is_empty() {
            let [b, _] = a.dims();
            let mut c: Tensor<4> = a.reshape([b, 1, input.0, input.1]);
            for (conv, norm) in self.convs.iter().zip(&self.conv_norms) {
                c = activation::relu(norm.forward(conv.forward(c)));
            }
            let [b, ch, h, w] = c.dims();
            a = c.reshape([b, ch * h * w]);
        }
        for (lin, norm) in self.hidden.iter().zip(&self.norms) {
            a = activation::relu(norm.forward(lin.forward(a)));
        }
        let h = self.feature.forward(a);
        let z = h.clone().matmul(self.classifier.val()) + self.bias.val().unsqueeze::<2>();
        (h, z)
    }

    /// The classifier K x d, row-major (`nn.Linear.weight` layout).
    pub fn classifier(&self) -> Vec<f32> {
        let t = self.classifier.val();
        let [d, k] = t.dims();
        let v = tensor_values(t);
        let mut w = vec![0.0f32; k * d];
        for j in 0..d {
            for c in 0..k {
                w[c * d + j] = v[j * k + c];
            }
        }
        w
    }

    /// The bias, length K.
    pub fn bias(&self) -> Vec<f32> {
        tensor_values(self.bias.val())
    }
}

/// The values of a float tensor, as f32.
pub fn tensor_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counted parameters are the ones the framework makes (its own count of the built
    /// network), for both architectures, every depth from 0, odd input sizes, both classifiers.
    #[test]
    fn the_parameter_count_is_the_built_networks() {
        let device = Device::flex();
        for arch in [Arch::Mlp, Arch::Cnn] {
            for (input, width, depth, dim, classes) in [((28, 28), 16, 2, 5, 4), ((9, 7), 3, 0, 2, 3), ((8, 8), 7, 1, 10, 10), ((5, 6), 4, 3, 3, 4)] {
                for classifier in [ClassifierKind::Learned, ClassifierKind::Etf] {
                    let cfg = NetConfig { arch, input, width, depth, dim, classes, classifier, etf_alpha: 1.0 };
                    let built = Net::new(&cfg, 0, &device).num_params();
                    assert_eq!(cfg.parameters(), built as f64, "{cfg:?}");
                }
            }
        }
    }

    /// `W W^T = alpha (I - 11^T/K)` to rounding, for d = K-1, K and above.
    #[test]
    fn simplex_etf_has_the_etf_gram_matrix() {
        for (k, d) in [(3usize, 2usize), (4, 4), (10, 9), (10, 10), (5, 12)] {
            let alpha = 2.5;
            let w = simplex_etf(k, d, alpha);
            for i in 0..k {
                for j in 0..k {
                    let g: f64 = (0..d).map(|c| w[i * d + c] * w[j * d + c]).sum();
                    let want = alpha * (if i == j { 1.0 } else { 0.0 } - 1.0 / k as f64);
                    assert!((g - want).abs() < 1e-13, "K={k} d={d} ({i},{j}): {g} vs {want}");
                }
            }
        }
    }

    /// The same seed gives the same weights; another seed does not.
    #[test]
    fn initial_weights_follow_the_seed() {
        let cfg = NetConfig { arch: Arch::Mlp, input: (8, 8), width: 16, depth: 2, dim: 5, classes: 4, classifier: ClassifierKind::Learned, etf_alpha: 1.0 };
        let dev = Device::flex();
        let x = Tensor::<2>::from_data(TensorData::new((0..128).map(|i| (i % 7) as f32 / 7.0).collect::<Vec<_>>(), [2, 64]), &dev);
        let out = |seed| tensor_values(Net::new(&cfg, seed, &dev).forward(x.clone(), (8, 8)).1);
        assert_eq!(out(1), out(1));
        assert_ne!(out(1), out(2));
    }
}
