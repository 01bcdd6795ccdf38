//! Training a network on multi-label images, and measuring it the way `ufm` and `measure`
//! measure (docs/theory.md §8).
//!
//! One epoch: the samples in an order drawn from the run's seed and the epoch, batches of
//! `batch` (a last batch of one sample is dropped: batch norm needs two), and for each batch
//! the loss
//!
//! ```text
//! (1/B) sum_i L(W h_i + b, S_i) + (fd/2) (1/B) sum_i ||h_i||^2
//! ```
//!
//! differentiated by burn's autodiff, then one SGD step with momentum and weight decay `wd`
//! on every trainable parameter (PyTorch's `SGD(momentum, weight_decay)`). The learning rate
//! follows a cosine from `lr` at the first epoch towards 0 after the last.
//!
//! Every `eval_every` epochs, at the start and at the end, the network in evaluation mode
//! (batch norm with its running statistics) gives the features of the whole training set;
//! they, the classifier and the bias go through `analysis::measure`, the code `measure` runs.
//! The record also has the accuracies, the loss, and the UFM prediction for the same K, M,
//! counts and regularisation: `lambda_w = lambda_b = wd`, `lambda_h = fd / N`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::analysis::arrays::Array2;
use crate::analysis::measure::{measure_inputs, Inputs, Names};
use crate::analysis::metrics::Metrics;
use crate::bail;
use crate::data::multilabel::{self, MultiLabel};
use crate::error::{Error, Result};
use crate::io::jsonl::{read_finished, Appender};
use crate::io::report::{write_atomic, write_json_atomic};
use crate::model::loss::{loss_value, Loss};
use crate::network::loss::batch_mean;
use crate::network::model::{tensor_values, Arch, ClassifierKind, Net, NetConfig};
use crate::theory::prediction::{predict_counts, Prediction};

/// Everything that defines a run. A checkpoint records it, and `--resume` refuses a run
/// whose options differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// IDX directory.
    pub data: PathBuf,
    /// Classes K.
    pub classes: usize,
    /// Training samples per label set, per multiplicity (its length is M).
    pub per_set: Vec<usize>,
    /// Test samples per label set, per multiplicity.
    pub test_per_set: Vec<usize>,
    /// Architecture.
    pub model: Arch,
    /// Hidden width.
    pub width: usize,
    /// Hidden layers.
    pub depth: usize,
    /// Feature dimension d.
    pub dim: usize,
    /// Learned or fixed-ETF classifier.
    pub classifier: ClassifierKind,
    /// Loss.
    pub loss: Loss,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay on every trainable parameter.
    pub weight_decay: f64,
    /// Feature decay: `(fd/2)` times the batch mean of `||h||^2`.
    pub feature_decay: f64,
    /// Evaluate every k epochs.
    pub eval_every: usize,
    /// Seed of the data, the initialisation and the batch order.
    pub seed: u64,
}

impl TrainOptions {
    /// Checks the numbers a run needs.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.batch < 2 {
            bail!("--batch {}: batch norm needs batches of at least 2", self.batch);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be positive and finite, got {}", self.lr);
        }
        if !(self.momentum >= 0.0 && self.momentum < 1.0) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        for (name, v) in [("--weight-decay", self.weight_decay), ("--feature-decay", self.feature_decay)] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("{name} must be non-negative and finite, got {v}");
            }
        }
        if self.eval_every == 0 {
            bail!("--eval-every must be at least 1");
        }
        if self.per_set.is_empty() || self.per_set.iter().all(|&n| n == 0) {
            bail!("--per-set needs at least one positive count");
        }
        if self.per_set[0] == 0 {
            bail!("--per-set: the single-label count must be positive (the metrics need every class's mean)");
        }
        if self.test_per_set.len() != self.per_set.len() {
            bail!("--test-per-set has {} counts but --per-set has {} (one per multiplicity)", self.test_per_set.len(), self.per_set.len());
        }
        Ok(())
    }

    /// The UFM's regularisation for this training: `(lambda_w, lambda_h, lambda_b)` with
    /// `n` training samples (docs/theory.md §8).
    pub fn ufm_lambdas(&self, n: usize) -> (f64, f64, f64) {
        (self.weight_decay, self.feature_decay / n as f64, self.weight_decay)
    }
}

/// Accuracy of predicted label sets. The predicted set of a sample with m labels is its m
/// largest logits (the cardinality is given); see docs/theory.md §8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Fraction of samples whose predicted set is exactly S.
    pub exact: f64,
    /// Mean |P cap S| / |P cup S|.
    pub iou: f64,
    /// Mean softmax mass on S, `sum_{k in S} softmax(z)_k` (what the paper's code reports as
    /// "IoU").
    pub softmax_mass: f64,
}

/// The UFM side of a record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UfmSide {
    /// lambda_w = weight decay.
    pub lambda_w: f64,
    /// lambda_h = feature decay / N.
    pub lambda_h: f64,
    /// lambda_b = weight decay.
    pub lambda_b: f64,
    /// The predicted global minimum f* (NaN for BCE).
    pub objective: f64,
    /// Predicted ETF scale alpha.
    pub alpha: f64,
    /// Predicted tag-wise scale s_m (index m-1).
    pub scale: Vec<Option<f64>>,
    /// The prediction passed its float64 checks.
    pub validated: bool,
    /// The UFM objective at the network's last layer (its W, H, b): at least f*.
    pub objective_at_network: f64,
}

/// One evaluation: one JSON line of `--out`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Epochs completed (0 = before training).
    pub epoch: usize,
    /// Learning rate of the last epoch run (the first epoch's at epoch 0).
    pub lr: f64,
    /// Seconds spent training so far (evaluations excluded).
    pub train_seconds: f64,
    /// Seconds this evaluation took.
    pub eval_seconds: f64,
    /// Mean training loss (evaluation mode).
    pub train_loss: f64,
    /// Mean ||h||^2 over the training set.
    pub feature_norm_sq: f64,
    /// Training accuracy (evaluation mode).
    pub train: Accuracy,
    /// Test accuracy.
    pub test: Accuracy,
    /// The NC metrics of the training features, from `analysis::measure`.
    pub metrics: Metrics,
    /// Mean least-squares synthesis weight per multiplicity m >= 2 (index m-2).
    pub synthesis_weight: Vec<Option<f64>>,
    /// The UFM prediction beside the network.
    pub ufm: UfmSide,
    /// Parameters, trainable parameters.
    pub params: usize,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// The run's options.
    pub options: TrainOptions,
}

/// Progress after each epoch, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Epochs done.
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
    /// Mean batch loss of the epoch (training mode, without the feature decay).
    pub loss: f64,
    /// Exact-set accuracy over the epoch's batches (training mode).
    pub train_exact: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The last evaluation.
    pub last: Record,
    /// Epoch the run started from (0, or the checkpoint's).
    pub resumed_from: Option<usize>,
    /// The run paused here (`pause_at`) and can be resumed.
    pub paused_at: Option<usize>,
    /// Median seconds per training epoch in this process.
    pub median_epoch_seconds: f64,
}

/// The checkpoint's table of contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    epoch: usize,
    model: String,
    optimizer: String,
    train_seconds: f64,
    options: TrainOptions,
}

/// Where a run's checkpoints live: `<out>.ckpt/`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

struct Split {
    x: Vec<f32>,
    y: Vec<f32>,
    sets: Vec<Vec<usize>>,
}

impl Split {
    fn of(ml: &MultiLabel) -> Split {
        Split { x: ml.pixels.clone(), y: ml.multi_hot(), sets: ml.sets.clone() }
    }
}

fn cosine_lr(lr: f64, epoch: usize, epochs: usize) -> f64 {
    lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs as f64).cos())
}

fn batch_tensors(s: &Split, idx: &[usize], pix: usize, k: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let mut x = Vec::with_capacity(idx.len() * pix);
    let mut y = Vec::with_capacity(idx.len() * k);
    for &i in idx {
        x.extend_from_slice(&s.x[i * pix..(i + 1) * pix]);
        y.extend_from_slice(&s.y[i * k..(i + 1) * k]);
    }
    (Tensor::from_data(TensorData::new(x, [idx.len(), pix]), device), Tensor::from_data(TensorData::new(y, [idx.len(), k]), device))
}

/// The indices of the m largest entries of `z`, sorted.
fn top_set(z: &[f32], m: usize) -> Vec<usize> {
    let mut o: Vec<usize> = (0..z.len()).collect();
    o.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    let mut p = o[..m].to_vec();
    p.sort_unstable();
    p
}

fn accuracy(logits: &[f32], sets: &[Vec<usize>], k: usize) -> Accuracy {
    let n = sets.len();
    let (mut exact, mut iou, mut mass) = (0.0, 0.0, 0.0);
    for (i, s) in sets.iter().enumerate() {
        let z = &logits[i * k..(i + 1) * k];
        let p = top_set(z, s.len());
        let inter = p.iter().filter(|c| s.contains(c)).count();
        exact += (inter == s.len()) as u8 as f64;
        iou += inter as f64 / (2 * s.len() - inter) as f64;
        let mx = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let tot: f64 = z.iter().map(|&v| (v as f64 - mx).exp()).sum();
        mass += s.iter().map(|&c| (z[c] as f64 - mx).exp()).sum::<f64>() / tot;
    }
    let nf = n.max(1) as f64;
    Accuracy { exact: exact / nf, iou: iou / nf, softmax_mass: mass / nf }
}

/// Features (N x d) and logits (N x K) of a split, in evaluation mode.
fn infer(net: &Net, s: &Split, pix: usize, k: usize, input: (usize, usize), device: &Device) -> (Vec<f32>, Vec<f32>) {
    let n = s.sets.len();
    let (mut h, mut z) = (Vec::new(), Vec::new());
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(500) {
        let (x, _) = batch_tensors(s, chunk, pix, k, device);
        let (hb, zb) = net.forward(x, input);
        h.extend(tensor_values(hb));
        z.extend(tensor_values(zb));
    }
    (h, z)
}

/// The run's fixed inputs: the data, the prediction, the network's shape.
struct Setup {
    train: Split,
    test: Split,
    pix: usize,
    input: (usize, usize),
    pred: Prediction,
    net: NetConfig,
}

fn setup(o: &TrainOptions) -> Result<Setup> {
    o.check()?;
    let src = crate::data::load_split(&o.data, "train")?;
    let tsrc = crate::data::load_split(&o.data, "t10k")?;
    let train = multilabel::build(&src, o.classes, &o.per_set, o.seed, "training")?;
    let test = multilabel::build(&tsrc, o.classes, &o.test_per_set, o.seed ^ 0x7465_7374_0000_0000, "test")?;
    if (test.rows, test.cols) != (train.rows, train.cols) {
        bail!("the test images are {} x {}, the training images {} x {}", test.rows, test.cols, train.rows, train.cols);
    }
    let n_m = train.samples_per_multiplicity();
    let (lw, lh, _) = o.ufm_lambdas(train.len());
    let pred = predict_counts(o.classes, o.dim, &n_m, o.loss, lw, lh);
    let alpha =
        if pred.validated && !pred.trivial && pred.alpha.is_finite() && pred.alpha > 0.0 { pred.alpha } else { o.classes as f64 / (o.classes - 1) as f64 };
    let net = NetConfig {
        arch: o.model,
        input: (train.rows, train.cols),
        width: o.width,
        depth: o.depth,
        dim: o.dim,
        classes: o.classes,
        classifier: o.classifier,
        etf_alpha: alpha,
    };
    net.check()?;
    let batch = o.batch.min(train.len());
    if let Some(short) = crate::model::config::beyond_memory(net.training_bytes(batch)) {
        bail!("--width {} --depth {} --dim {}: training a network of {:.3e} parameters would need {short}", o.width, o.depth, o.dim, net.parameters());
    }
    let input = (train.rows, train.cols);
    Ok(Setup { pix: train.input_dim(), input, train: Split::of(&train), test: Split::of(&test), pred, net })
}

fn evaluate(net: &Net, su: &Setup, o: &TrainOptions, epoch: usize, lr: f64, train_seconds: f64) -> Result<(Record, Vec<f32>)> {
    let t0 = Instant::now();
    let k = o.classes;
    let plain = Device::flex();
    let valid = net.valid();
    let (h, z) = infer(&valid, &su.train, su.pix, k, su.input, &plain);
    let (_, zt) = infer(&valid, &su.test, su.pix, k, su.input, &plain);
    let n = su.train.sets.len();
    let d = o.dim;
    let w = valid.classifier();
    let b = valid.bias();
    let h64: Vec<f64> = h.iter().map(|&v| v as f64).collect();
    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let y64: Vec<f64> = su.train.y.iter().map(|&v| v as f64).collect();
    let inp = Inputs {
        features: Array2::row_major(&h64, n, d)?,
        labels: Array2::row_major(&y64, n, k)?,
        classifier: Some(Array2::row_major(&w64, k, d)?),
        bias: Some(&b64),
    };
    let names = Names { features: "features", labels: "labels", classifier: "classifier", bias: "bias" };
    let report = measure_inputs(&inp, &names).map_err(|e| Error::new(format!("epoch {epoch}: cannot measure the features: {e}")))?;
    let mut metrics = report.metrics;
    for t in &mut metrics.tag {
        t.scale_pred = su.pred.scale.get(t.multiplicity - 1).copied().flatten();
    }
    let mut synthesis_weight = Vec::new();
    for m in 2..=o.per_set.len() {
        let ws: Vec<f64> = report.synthesis.iter().filter(|s| s.set.len() == m).flat_map(|s| s.weights.iter().copied()).collect();
        synthesis_weight.push((!ws.is_empty()).then(|| ws.iter().sum::<f64>() / ws.len() as f64));
    }
    // The loss and the UFM objective at the network's last layer, in float64 from h, W, b.
    let (lw, lh, lb) = o.ufm_lambdas(n);
    let (mut data, mut hsq) = (0.0, 0.0);
    let mut u = vec![0.0; k];
    for (i, s) in su.train.sets.iter().enumerate() {
        let hi = &h64[i * d..(i + 1) * d];
        for c in 0..k {
            u[c] = b64[c] + (0..d).map(|j| w64[c * d + j] * hi[j]).sum::<f64>();
        }
        data += loss_value(o.loss, &u, s);
        hsq += hi.iter().map(|v| v * v).sum::<f64>();
    }
    let sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
    let objective_at_network = data / n as f64 + 0.5 * lw * sq(&w64) + 0.5 * lh * hsq + 0.5 * lb * sq(&b64);
    let rec = Record {
        epoch,
        lr,
        train_seconds,
        eval_seconds: t0.elapsed().as_secs_f64(),
        train_loss: data / n as f64,
        feature_norm_sq: hsq / n as f64,
        train: accuracy(&z, &su.train.sets, k),
        test: accuracy(&zt, &su.test.sets, k),
        metrics,
        synthesis_weight,
        ufm: UfmSide {
            lambda_w: lw,
            lambda_h: lh,
            lambda_b: lb,
            objective: su.pred.objective,
            alpha: su.pred.alpha,
            scale: su.pred.scale.clone(),
            validated: su.pred.validated,
            objective_at_network,
        },
        params: net.num_params(),
        trainable_params: net.num_params() - if o.classifier == ClassifierKind::Etf { o.dim * o.classes } else { 0 },
        options: o.clone(),
    };
    Ok((rec, h))
}

fn optimizer(o: &TrainOptions) -> ModuleOptimizer {
    let mut c = SgdConfig::new();
    if o.momentum > 0.0 {
        c = c.with_momentum(Some(MomentumConfig { momentum: o.momentum, dampening: 0.0, nesterov: false }));
    }
    if o.weight_decay > 0.0 {
        c = c.with_weight_decay(Some(WeightDecayConfig { penalty: o.weight_decay as f32 }));
    }
    c.init()
}

fn save_checkpoint(dir: &Path, net: &Net, opt: &ModuleOptimizer, epoch: usize, train_seconds: f64, o: &TrainOptions) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::new(format!("{}: cannot create: {e}", dir.display())))?;
    let model = format!("model-e{epoch}.safetensors");
    let optim = format!("optimizer-e{epoch}.bpk");
    let tmp_model = dir.join(format!("{model}.tmp"));
    let tmp_optim = dir.join(format!("{optim}.tmp"));
    // A save that fails part way (a full disk) leaves none of its temporary files behind.
    let saved_optim = || if tmp_optim.exists() { tmp_optim.clone() } else { tmp_optim.with_extension("tmp.bpk") };
    let clean = |e: Error| {
        for p in [tmp_model.clone(), tmp_optim.clone(), tmp_optim.with_extension("tmp.bpk")] {
            let _ = std::fs::remove_file(p);
        }
        e
    };
    net.save_into(&mut SafetensorsStore::from_file(&tmp_model))
        .map_err(|e| clean(Error::new(format!("{}: cannot save the model: {e:?}", tmp_model.display()))))?;
    std::fs::rename(&tmp_model, dir.join(&model)).map_err(|e| clean(Error::new(format!("{}: cannot save: {e}", dir.display()))))?;
    opt.save(&tmp_optim).map_err(|e| clean(Error::new(format!("{}: cannot save the optimizer state: {e:?}", tmp_optim.display()))))?;
    std::fs::rename(saved_optim(), dir.join(&optim)).map_err(|e| clean(Error::new(format!("{}: cannot save: {e}", dir.display()))))?;
    let state = State { epoch, model: model.clone(), optimizer: optim.clone(), train_seconds, options: o.clone() };
    write_json_atomic(&dir.join("state.json"), &state)?;
    // The state now names the new files; the older ones go.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.starts_with("model-e") || name.starts_with("optimizer-e")) && name != model && name != optim {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

fn load_checkpoint(dir: &Path, o: &TrainOptions, net: Net, opt: ModuleOptimizer) -> Result<Option<(State, Net, ModuleOptimizer)>> {
    let sp = dir.join("state.json");
    let text = match std::fs::read_to_string(&sp) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("{}: cannot read: {e}", sp.display()),
    };
    let state: State = serde_json::from_str(&text).map_err(|e| Error::new(format!("{}: not a checkpoint state: {e}", sp.display())))?;
    if &state.options != o {
        bail!("--resume: the checkpoint in {} was made with other options; run with the same flags, or start a new --out", dir.display());
    }
    let mut net = net;
    let mp = dir.join(&state.model);
    net.load_from(&mut SafetensorsStore::from_file(&mp)).map_err(|e| Error::new(format!("{}: cannot load the model: {e:?}", mp.display())))?;
    let op = dir.join(&state.optimizer);
    let opt = opt.load(&op).map_err(|e| Error::new(format!("{}: cannot load the optimizer state: {e:?}", op.display())))?;
    Ok(Some((state, net, opt)))
}

/// Keeps the records of `out` up to `epoch` (a run killed after writing a line but before its
/// checkpoint repeats that evaluation on resume).
fn truncate_records(out: &Path, epoch: usize) -> Result<()> {
    let f = read_finished::<serde_json::Value>(out)?;
    let mut text = String::new();
    for r in f.records {
        if r.get("epoch").and_then(|e| e.as_u64()).is_some_and(|e| e as usize <= epoch) {
            text.push_str(&serde_json::to_string(&r).map_err(|e| Error::new(e.to_string()))?);
            text.push('\n');
        }
    }
    write_atomic(out, text.as_bytes())
}

/// Where a run writes.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// JSON lines, one per evaluation (and the checkpoints in `<out>.ckpt/`).
    pub out: Option<PathBuf>,
    /// Directory for the final features, labels, classifier and bias as `.npy`.
    pub export: Option<PathBuf>,
    /// Continue from the last checkpoint.
    pub resume: bool,
    /// Stop after this epoch's checkpoint (a multiple of `eval_every`); `resume` continues.
    pub pause_at: Option<usize>,
}

/// Trains, evaluating every `eval_every` epochs; `on_record` sees every evaluation and
/// `on_epoch` every epoch. Runs on the caller's rayon pool.
pub fn train(o: &TrainOptions, outs: &Outputs, on_record: &mut dyn FnMut(&Record), on_epoch: &mut dyn FnMut(Progress)) -> Result<TrainOutcome> {
    let su = setup(o)?;
    if let Some(p) = outs.pause_at {
        if p == 0 || p % o.eval_every != 0 || p >= o.epochs || outs.out.is_none() {
            bail!("--pause-at {p}: must be a multiple of --eval-every {} below --epochs {}, with --out", o.eval_every, o.epochs);
        }
    }
    // Where the run will write must be writable before it trains, not after.
    if let Some(dir) = &outs.export {
        std::fs::create_dir_all(dir).map_err(|e| Error::new(format!("--export {}: cannot create: {e}", dir.display())))?;
        crate::io::report::check_writable(&dir.join("features.npy"))?;
    }
    let device = Device::flex().autodiff();
    let mut net = Net::new(&su.net, o.seed, &device);
    let mut opt = optimizer(o);
    let (mut start, mut train_seconds, mut resumed_from) = (0usize, 0.0f64, None);
    let appender = match &outs.out {
        Some(out) => {
            let dir = checkpoint_dir(out);
            let nonempty = std::fs::metadata(out).map(|m| m.len() > 0).unwrap_or(false);
            if outs.resume {
                if let Some((state, n2, o2)) = load_checkpoint(&dir, o, net.clone(), optimizer(o))? {
                    (net, opt, start, train_seconds, resumed_from) = (n2, o2, state.epoch, state.train_seconds, Some(state.epoch));
                    truncate_records(out, state.epoch)?;
                } else if nonempty {
                    bail!("--resume: {} has records but {} has no checkpoint; remove the file to start again", out.display(), dir.display());
                }
            } else if nonempty || dir.join("state.json").exists() {
                bail!("--out {}: the run exists; pass --resume to continue it, or remove {} and {}", out.display(), out.display(), dir.display());
            }
            let file = Appender::open(out)?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::new(format!("{}: cannot create: {e}", dir.display())))?;
            Some(file)
        }
        None => None,
    };
    let emit = |rec: &Record, on_record: &mut dyn FnMut(&Record)| -> Result<()> {
        if let Some(a) = &appender {
            a.write(rec)?;
        }
        on_record(rec);
        Ok(())
    };
    let mut last = None;
    if start == 0 {
        let (rec, _) = evaluate(&net, &su, o, 0, cosine_lr(o.lr, 0, o.epochs), 0.0)?;
        emit(&rec, on_record)?;
        last = Some(rec);
    }
    let k = o.classes;
    let n = su.train.sets.len();
    let mut epoch_secs = Vec::new();
    let mut final_h = None;
    for epoch in start..o.epochs {
        let t0 = Instant::now();
        let lr = cosine_lr(o.lr, epoch, o.epochs);
        let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
        rng.set_stream(1 + epoch as u64);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut exact, mut seen) = (0.0, 0.0, 0usize);
        for idx in order.chunks(o.batch) {
            if idx.len() < 2 {
                continue;
            }
            let (x, y) = batch_tensors(&su.train, idx, su.pix, k, &device);
            let (h, z) = net.forward(x, su.input);
            let data = batch_mean(o.loss, z.clone(), y);
            let total = if o.feature_decay > 0.0 { data.clone() + h.square().sum_dim(1).mean() * (0.5 * o.feature_decay) } else { data.clone() };
            let grads = total.backward();
            let grads = GradientsParams::from_grads(grads, &net);
            net = opt.step(lr, net, grads);
            let lv = tensor_values(data.detach());
            let zb = tensor_values(z.detach());
            let sets: Vec<Vec<usize>> = idx.iter().map(|&i| su.train.sets[i].clone()).collect();
            loss_sum += lv[0] as f64 * idx.len() as f64;
            exact += accuracy(&zb, &sets, k).exact * idx.len() as f64;
            seen += idx.len();
        }
        if !loss_sum.is_finite() {
            bail!("epoch {}: the training loss is not finite (lower --lr)", epoch + 1);
        }
        let dt = t0.elapsed().as_secs_f64();
        epoch_secs.push(dt);
        train_seconds += dt;
        let done = epoch + 1;
        on_epoch(Progress { epoch: done, epochs: o.epochs, loss: loss_sum / seen.max(1) as f64, train_exact: exact / seen.max(1) as f64 });
        if done % o.eval_every == 0 || done == o.epochs {
            let (rec, h) = evaluate(&net, &su, o, done, lr, train_seconds)?;
            emit(&rec, on_record)?;
            if let Some(out) = &outs.out {
                save_checkpoint(&checkpoint_dir(out), &net, &opt, done, train_seconds, o)?;
            }
            last = Some(rec);
            final_h = Some(h);
            if outs.pause_at == Some(done) {
                break;
            }
        }
    }
    let last = match last {
        Some(r) => r,
        None => evaluate(&net, &su, o, o.epochs, cosine_lr(o.lr, o.epochs - 1, o.epochs), train_seconds)?.0,
    };
    let paused = outs.pause_at.filter(|&p| last.epoch == p);
    if let (Some(dir), None) = (&outs.export, paused) {
        let h = match final_h {
            Some(h) => h,
            None => infer(&net.valid(), &su.train, su.pix, k, su.input, &Device::flex()).0,
        };
        export(dir, &h, &su.train.y, &net.valid(), n, o.dim, k)?;
    }
    epoch_secs.sort_by(f64::total_cmp);
    let median_epoch_seconds = if epoch_secs.is_empty() { f64::NAN } else { epoch_secs[epoch_secs.len() / 2] };
    Ok(TrainOutcome { last, resumed_from, paused_at: paused, median_epoch_seconds })
}

/// Writes `features.npy` (N x d), `labels.npy` (N x K), `classifier.npy` (K x d) and
/// `bias.npy` (K), float32, for `mlab-nc measure`.
fn export(dir: &Path, h: &[f32], y: &[f32], net: &Net, n: usize, d: usize, k: usize) -> Result<()> {
    use crate::io::npy::write_f32;
    std::fs::create_dir_all(dir).map_err(|e| Error::new(format!("--export {}: cannot create: {e}", dir.display())))?;
    write_f32(&dir.join("features.npy"), &[n, d], h)?;
    write_f32(&dir.join("labels.npy"), &[n, k], y)?;
    write_f32(&dir.join("classifier.npy"), &[k, d], &net.classifier())?;
    write_f32(&dir.join("bias.npy"), &[k], &net.bias())
}
