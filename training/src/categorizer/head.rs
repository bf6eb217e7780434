//! How the new classifier layer starts: class prototypes (nearest centroid) or a linear probe
//! (multinomial logistic regression fitted on the frozen encoder's pooled features, the "LP"
//! of LP-FT, Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
//! Out-of-Distribution").
//!
//! The probe is fitted here with candle autograd and full-batch Adam rather than with
//! linfa-logistic: that crate takes no per-row weights, and the probe must minimise the same
//! class-weighted cross-entropy the fine-tuning does.

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::train::weighted_cross_entropy;

/// Logit spread of the prototype head: a row at its class centroid, one typical distance
/// from the global mean, scores this much more than at the mean.
pub(crate) const PROTOTYPE_SCALE: f32 = 4.0;

/// A nearest-centroid classifier layer from pooled `features` and their labels. With `m` the
/// global mean, `d_c` class `c`'s mean minus `m` and `r` the mean distance of the features
/// from `m`, row `c` is `k * d_c` and its bias `-k * (d_c . m + |d_c|^2 / 2)`, `k = scale /
/// r^2`: the argmax is the nearest class mean, and logits differ by about `scale` across
/// a typical distance. Labels without rows get zero rows.
pub(crate) fn prototype_head(
    features: &[Vec<f32>],
    labels: &[u32],
    num_labels: usize,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let dim = features.first().map_or(0, Vec::len);
    let n = features.len().max(1) as f32;
    let mut mean = vec![0f32; dim];
    for f in features {
        for (m, x) in mean.iter_mut().zip(f) {
            *m += x / n;
        }
    }
    let radius = features
        .iter()
        .map(|f| {
            f.iter()
                .zip(&mean)
                .map(|(x, m)| (x - m) * (x - m))
                .sum::<f32>()
                .sqrt()
        })
        .sum::<f32>()
        / n;
    let mut sums = vec![vec![0f32; dim]; num_labels];
    let mut counts = vec![0usize; num_labels];
    for (f, &y) in features.iter().zip(labels) {
        counts[y as usize] += 1;
        for (s, x) in sums[y as usize].iter_mut().zip(f) {
            *s += x;
        }
    }
    let mut weight = Vec::with_capacity(num_labels * dim);
    let mut bias = Vec::with_capacity(num_labels);
    for (sum, &count) in sums.iter().zip(&counts) {
        let dir: Vec<f32> = if count == 0 {
            vec![0.0; dim]
        } else {
            sum.iter()
                .zip(&mean)
                .map(|(s, m)| s / count as f32 - m)
                .collect()
        };
        let k = if count > 0 && radius > 0.0 {
            scale / (radius * radius)
        } else {
            0.0
        };
        let half_sq = dir.iter().map(|x| x * x).sum::<f32>() / 2.0;
        let row: Vec<f32> = dir.iter().map(|x| x * k).collect();
        bias.push(-row.iter().zip(&mean).map(|(w, m)| w * m).sum::<f32>() - k * half_sq);
        weight.extend(row);
    }
    (weight, bias)
}

/// Full-batch Adam steps of the probe; the step size decays along a cosine from
/// [`PROBE_LR`] to 0, so the last steps settle on the optimum.
const PROBE_STEPS: usize = 3000;
/// The probe's first step size.
const PROBE_LR: f64 = 0.02;

/// A fitted linear probe.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    /// `(num_labels, dim)`, row-major.
    pub weight: Vec<f32>,
    /// `(num_labels)`.
    pub bias: Vec<f32>,
    /// The objective at the end: class-weighted mean cross-entropy plus the L2 term.
    pub loss: f64,
}

/// Multinomial logistic regression on frozen `features`: minimises the class-weighted mean
/// cross-entropy (`class_weights` per label, as the fine-tuning uses) plus `l2 / 2 * |W|^2`
/// (the bias is not penalised), starting from the prototype head. In scikit-learn's terms
/// `l2 = 1 / (C * n)` with `class_weight="balanced"`.
pub(crate) fn probe_head(
    features: &[Vec<f32>],
    labels: &[u32],
    num_labels: usize,
    class_weights: &[f32],
    l2: f64,
    device: &Device,
) -> candle_core::Result<Probe> {
    let n = features.len();
    let dim = features.first().map_or(0, Vec::len);
    let x = Tensor::from_vec(features.concat(), (n, dim), device)?;
    let y = Tensor::new(labels, device)?;
    let cw = Tensor::new(class_weights, device)?;
    let (w0, b0) = prototype_head(features, labels, num_labels, PROTOTYPE_SCALE);
    let weight = Var::from_tensor(&Tensor::from_vec(w0, (num_labels, dim), device)?)?;
    let bias = Var::from_tensor(&Tensor::from_vec(b0, num_labels, device)?)?;
    let objective = || -> candle_core::Result<Tensor> {
        let logits = x.matmul(&weight.t()?)?.broadcast_add(bias.as_tensor())?;
        weighted_cross_entropy(&logits, &y, &cw)? + (weight.sqr()?.sum_all()? * (l2 / 2.0))?
    };
    let mut opt = AdamW::new(
        vec![weight.clone(), bias.clone()],
        ParamsAdamW {
            lr: PROBE_LR,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    for step in 0..PROBE_STEPS {
        let progress = step as f64 / PROBE_STEPS as f64;
        opt.set_learning_rate(PROBE_LR * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        opt.backward_step(&objective()?)?;
    }
    Ok(Probe {
        loss: f64::from(objective()?.to_scalar::<f32>()?),
        weight: weight.flatten_all()?.to_vec1()?,
        bias: bias.to_vec1()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use infermesh_text::classifier::argmax;

    #[test]
    fn prototype_head_classifies_by_nearest_centroid() {
        // Three clusters in 2-D around (1, 0), (0, 1), (-1, -1); label 3 has no rows.
        let features = vec![
            vec![1.1, 0.1],
            vec![0.9, -0.1],
            vec![0.1, 1.0],
            vec![-0.1, 1.1],
            vec![-1.0, -0.9],
        ];
        let labels = [0u32, 0, 1, 1, 2];
        let (w, b) = prototype_head(&features, &labels, 4, 4.0);
        assert_eq!((w.len(), b.len()), (8, 4));
        assert_eq!((w[6], w[7], b[3]), (0.0, 0.0, 0.0));
        let predict = |x: &[f32]| {
            let logits: Vec<f32> = (0..4)
                .map(|c| w[2 * c] * x[0] + w[2 * c + 1] * x[1] + b[c])
                .collect();
            argmax(&logits)
        };
        for (f, &y) in features.iter().zip(&labels) {
            assert_eq!(predict(f) as u32, y, "{f:?}");
        }
        assert_eq!(predict(&[0.8, 0.2]), 0);
        assert_eq!(predict(&[-0.7, -1.2]), 2);
    }

    /// Overlapping classes in 2-D (so the optimum is finite) from a seeded generator.
    fn blobs() -> (Vec<Vec<f32>>, Vec<u32>) {
        let mut rng = infermesh_model_core::rng::SplitMix64::new(7);
        let centres = [(1.0, 0.0), (0.0, 1.0), (-1.0, -1.0)];
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for (c, (cx, cy)) in centres.iter().enumerate() {
            // Unbalanced: 40, 20 and 8 rows.
            for _ in 0..[40, 20, 8][c] {
                features.push(vec![
                    (cx + 0.8 * rng.normal()) as f32,
                    (cy + 0.8 * rng.normal()) as f32,
                ]);
                labels.push(c as u32);
            }
        }
        (features, labels)
    }

    #[test]
    fn probe_reaches_the_optimum_of_the_weighted_l2_objective() {
        let (features, labels) = blobs();
        let weights = crate::categorizer::train::class_weights(&labels, 3);
        let l2 = 1e-2;
        let probe = probe_head(&features, &labels, 3, &weights, l2, &Device::Cpu).unwrap();
        // The gradient, by hand in f64: sum_i s_i (p_i - onehot_i) x_i + l2 W (bias without
        // the L2 term), with s_i the row weights normalised to sum 1.
        let total: f64 = labels.iter().map(|&y| f64::from(weights[y as usize])).sum();
        let mut grad_w = [[0f64; 2]; 3];
        let mut grad_b = [0f64; 3];
        for (x, &y) in features.iter().zip(&labels) {
            let s = f64::from(weights[y as usize]) / total;
            let logits: Vec<f64> = (0..3)
                .map(|c| {
                    f64::from(probe.weight[2 * c]) * f64::from(x[0])
                        + f64::from(probe.weight[2 * c + 1]) * f64::from(x[1])
                        + f64::from(probe.bias[c])
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            for c in 0..3 {
                let p = (logits[c] - max).exp() / z - if c as u32 == y { 1.0 } else { 0.0 };
                grad_w[c][0] += s * p * f64::from(x[0]);
                grad_w[c][1] += s * p * f64::from(x[1]);
                grad_b[c] += s * p;
            }
        }
        for (c, (row, db)) in grad_w.iter().zip(grad_b).enumerate() {
            for (j, dw) in row.iter().enumerate() {
                let dw = dw + l2 * f64::from(probe.weight[2 * c + j]);
                assert!(dw.abs() < 1e-4, "dW[{c}][{j}] = {dw}");
            }
            assert!(db.abs() < 1e-4, "db[{c}] = {db}");
        }
        assert!(probe.loss.is_finite() && probe.loss > 0.0);
        // Class weights matter: the smallest class is predicted on a fair share of its rows.
        let hits = features
            .iter()
            .zip(&labels)
            .filter(|(x, y)| {
                let logits: Vec<f32> = (0..3)
                    .map(|c| {
                        probe.weight[2 * c] * x[0] + probe.weight[2 * c + 1] * x[1] + probe.bias[c]
                    })
                    .collect();
                **y == 2 && argmax(&logits) == 2
            })
            .count();
        assert!(hits >= 6, "{hits} of 8 rows of the rare class");
    }
}
