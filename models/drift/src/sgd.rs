//! scikit-learn's `SGDClassifier(loss="log_loss", random_state=42)` fit, step for step
//! (`_plain_sgd` with the half-binomial loss, L2 penalty, the `optimal` learning rate, the
//! weight vector's scale trick, `SequentialDataset.shuffle`'s xorshift draws and the
//! tolerance stop over 5 epochs), so the domain classifier of Evidently's embedding drift
//! gives the same coefficients. Written here: no crate reproduces scikit-learn's SGD.

use crate::numpy::NpRandom;

/// scikit-learn's `SGDClassifier(loss="log_loss")` defaults.
const ALPHA: f64 = 1e-4;
const TOL: f64 = 1e-3;
const MAX_ITER: usize = 1000;
const N_ITER_NO_CHANGE: usize = 5;
const MAX_DLOSS: f64 = 1e12;
const MAX_INT: u32 = i32::MAX as u32;

fn log1pexp(x: f64) -> f64 {
    if x <= -37.0 {
        x.exp()
    } else if x <= -2.0 {
        x.exp().ln_1p()
    } else if x <= 18.0 {
        (1.0 + x.exp()).ln()
    } else if x <= 33.3 {
        x + (-x).exp()
    } else {
        x
    }
}

/// `CyHalfBinomialLoss`: loss and gradient for a label in {0, 1}.
fn half_binomial(y: f64, p: f64) -> (f64, f64) {
    let loss = log1pexp(p) - y * p;
    let gradient = if p > -37.0 {
        let e = (-p).exp();
        ((1.0 - y) - y * e) / (1.0 + e)
    } else {
        p.exp() - y
    };
    (loss, gradient)
}

/// Fits scikit-learn's `SGDClassifier(loss="log_loss", random_state=42)` (penalty l2, alpha
/// 1e-4, learning rate `optimal`, shuffled epochs, tol 1e-3 over 5 epochs) on `rows` with
/// labels in {0, 1}; returns `(coef, intercept)`.
pub(crate) fn sgd_log_loss(rows: &[&[f64]], labels: &[f64], d: usize) -> (Vec<f64>, f64) {
    let n = rows.len();
    // _fit_binary: RandomState(42) draws the dataset's seed (unused by sequential passes),
    // then the shuffling seed.
    let mut rng = NpRandom::new(42);
    let _dataset_seed = rng.randint(1, MAX_INT);
    let seed = rng.randint(0, MAX_INT);
    let mut w = vec![0.0f64; d];
    let mut wscale = 1.0f64;
    let mut sq_norm = 0.0f64;
    let mut intercept = 0.0f64;
    let mut index: Vec<usize> = (0..n).collect();
    let typw = (1.0 / ALPHA.sqrt()).sqrt();
    let initial_eta0 = typw / half_binomial(1.0, -typw).1.max(1.0);
    let optimal_init = 1.0 / (initial_eta0 * ALPHA);
    let mut t = 1.0f64;
    let mut best = f64::INFINITY;
    let mut no_improvement = 0;
    for _ in 0..MAX_ITER {
        // SequentialDataset.shuffle(seed): the same seed each epoch, on the current order.
        let mut s = seed;
        for i in 0..n.saturating_sub(1) {
            let j = i + (our_rand_r(&mut s) as usize) % (n - i);
            index.swap(i, j);
        }
        let mut objective = 0.0;
        for &k in &index {
            let x = rows[k];
            let y = labels[k];
            let p = w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() * wscale + intercept;
            let eta = 1.0 / (ALPHA * (optimal_init + t - 1.0));
            let (loss, dloss) = half_binomial(y, p);
            let norm = sq_norm.sqrt();
            objective += loss + ALPHA * (0.5 * norm.powi(2));
            let update = -eta * dloss.clamp(-MAX_DLOSS, MAX_DLOSS);
            // w.scale(max(0, 1 - eta alpha)).
            let c = (1.0 - eta * ALPHA).max(0.0);
            wscale *= c;
            sq_norm *= c * c;
            if wscale < 1e-9 {
                w.iter_mut().for_each(|v| *v *= wscale);
                wscale = 1.0;
            }
            if update != 0.0 {
                let mut l2 = 0.0;
                for (wj, xj) in w.iter_mut().zip(x) {
                    *wj += xj * (update / wscale);
                    l2 += *wj * *wj;
                }
                sq_norm = l2 * (wscale * wscale);
                intercept += update;
            }
            t += 1.0;
        }
        let mean = objective / n as f64;
        if mean > best - TOL {
            no_improvement += 1;
        } else {
            no_improvement = 0;
        }
        if mean < best {
            best = mean;
        }
        if no_improvement >= N_ITER_NO_CHANGE {
            break;
        }
    }
    w.iter_mut().for_each(|v| *v *= wscale);
    (w, intercept)
}

/// scikit-learn's `our_rand_r` (xorshift, below 2^31).
fn our_rand_r(seed: &mut u32) -> u32 {
    if *seed == 0 {
        *seed = 1;
    }
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    *seed % (i32::MAX as u32 + 1)
}
