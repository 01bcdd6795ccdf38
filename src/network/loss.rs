//! The UFM's losses (docs/theory.md §1) on a batch of logits, as burn tensors, so that autodiff
//! differentiates them. One definition each, the same as `model::loss`:
//! - PAL: `L(z, S) = m LSE(z) - sum_{k in S} z_k = -sum_k y_k log_softmax(z)_k`;
//! - PAL-mean: PAL / m;
//! - BCE: `sum_k softplus(z_k) - y_k z_k`, softplus(x) = max(x, 0) + log1p(exp(-|x|)).
//!
//! `log_softmax` subtracts the row maximum, so no exponential overflows. The batch loss is the
//! mean over the batch, the UFM's `(1/N) sum_i L`.

use burn::tensor::{activation, Tensor};

use crate::model::loss::Loss;

/// Per-sample losses (B) of logits `z` (B x K) with multi-hot targets `y` (B x K).
pub fn per_sample(loss: Loss, z: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    match loss {
        Loss::Pal | Loss::PalMean => {
            let ls = activation::log_softmax(z, 1);
            let l = (ls * y.clone()).sum_dim(1).neg();
            let l = if loss == Loss::PalMean { l / y.sum_dim(1) } else { l };
            l.squeeze_dim::<1>(1)
        }
        Loss::Bce => {
            let sp = activation::relu(z.clone()) + z.clone().abs().neg().exp().log1p();
            (sp - y * z).sum_dim(1).squeeze_dim::<1>(1)
        }
    }
}

/// The mean loss of a batch.
pub fn batch_mean(loss: Loss, z: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    per_sample(loss, z, y).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use rand::{Rng, SeedableRng};

    /// The tensor losses equal the UFM's `loss_value` (computed in float64 from the same
    /// float32 logits), for every loss, on small and large logits.
    #[test]
    fn tensor_losses_are_the_ufm_losses() {
        let dev = Device::flex();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (b, k) = (64usize, 7usize);
        for scale in [0.1f64, 3.0, 40.0] {
            let z: Vec<f32> = (0..b * k).map(|_| (rng.random::<f64>() * 2.0 - 1.0) as f32 * scale as f32).collect();
            let mut y = vec![0.0f32; b * k];
            let mut sets = Vec::new();
            for i in 0..b {
                let m = 1 + i % 3;
                let mut s: Vec<usize> = (0..k).collect();
                s.rotate_left(i % k);
                let mut s = s[..m].to_vec();
                s.sort_unstable();
                for &c in &s {
                    y[i * k + c] = 1.0;
                }
                sets.push(s);
            }
            for loss in Loss::ALL {
                let zt = Tensor::<2>::from_data(TensorData::new(z.clone(), [b, k]), &dev);
                let yt = Tensor::<2>::from_data(TensorData::new(y.clone(), [b, k]), &dev);
                let got = crate::network::model::tensor_values(per_sample(loss, zt, yt));
                for (i, s) in sets.iter().enumerate() {
                    let u: Vec<f64> = z[i * k..(i + 1) * k].iter().map(|&v| v as f64).collect();
                    let want = crate::model::loss::loss_value(loss, &u, s);
                    // float32 arithmetic on logits of size `scale`: a few ulp of the largest term.
                    let tol = 1e-5 * (1.0 + want.abs() + scale * s.len() as f64);
                    assert!((got[i] as f64 - want).abs() <= tol, "{loss:?} scale {scale} sample {i}: {} vs {want}", got[i]);
                }
            }
        }
    }
}
