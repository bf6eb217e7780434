//! Embedding drift as Evidently 0.7's `EmbeddingsDrift` metric computes it (its legacy
//! `embedding_drift_methods`), number for number: the same random draws (NumPy's legacy
//! `RandomState`, MT19937), the same classifier (scikit-learn's `SGDClassifier`) and the same
//! formulas. An embedding is a set of numeric columns; `reference` and `current` are their
//! rows, row-major.
//!
//! - `model` (the default; `bootstrap` when the reference has fewer than 1,000 rows): a
//!   domain classifier. Reference rows are labelled 1, current rows 0, the rows are split in
//!   halves by `train_test_split(test_size=0.5, random_state=42, shuffle=True)`, an
//!   `SGDClassifier(loss="log_loss", random_state=42)` is fitted on one half, and the score
//!   is its ROC AUC on the other. Drift when the ROC AUC is above `threshold` (0.55), or,
//!   with `bootstrap`, above the `quantile_probability` (0.95) percentile of 100 ROC AUCs of
//!   random predictions (`np.random.seed(i); np.random.rand(n)`).
//! - `mmd`: the unbiased squared maximum mean discrepancy with an RBF kernel whose
//!   `gamma = 1 / median²` of the euclidean distances between (at most 1,000 sampled)
//!   reference and current rows; the score is `max(MMD², 0)`, drift when MMD² is above
//!   `threshold` (0.015), or with `bootstrap` above the `quantile_probability` (0.05)
//!   percentile of 100 MMD² of reference-only resamples.
//! - `distance`: a distance (`euclidean`, `cosine`, `cityblock`, `chebyshev`) between the
//!   mean rows, drift above `threshold` (0.2), or with `bootstrap` above the percentile of
//!   100 distances between reference resamples.
//! - `ratio`: the share of components (columns) whose own test (`wasserstein`, threshold 0.1)
//!   drifts, drift above `threshold` (0.2).
//!
//! Evidently's `pca_components` option is not offered. MMD computes every pair of rows, as
//! Evidently does (without holding the kernel matrix), so the two sides together are bounded
//! by [`MAX_MMD_ROWS`]; every method refuses an empty side, a width of 0, and non-finite
//! values (scikit-learn refuses them).
//!
//! Written here: no crate reproduces scikit-learn's SGD or NumPy's legacy draws; MT19937 is
//! `rand_mt`'s (`Mt`).

use rayon::prelude::*;

use crate::numpy::{NpRandom, median, percentile};
use crate::sgd::sgd_log_loss;
use crate::{DriftError, StatTest, Values};

/// Most reference plus current rows the `mmd` method compares (all pairs).
pub const MAX_MMD_ROWS: usize = 20_000;
/// Rows of each side Evidently samples for the MMD bandwidth.
const MMD_SAMPLE: usize = 1000;
/// Resamples of the bootstrap variants (Evidently's `N_BOOTSTRAP`).
const N_BOOTSTRAP: u32 = 100;

/// A distance between the mean rows (scipy's functions of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distance {
    /// `euclidean`.
    Euclidean,
    /// `cosine`: `1 - u.v / (|u| |v|)`.
    Cosine,
    /// `cityblock`: the sum of absolute differences.
    Cityblock,
    /// `chebyshev`: the largest absolute difference.
    Chebyshev,
}

impl Distance {
    /// Parses Evidently's name.
    pub fn parse(s: &str) -> Result<Self, DriftError> {
        Ok(match s {
            "euclidean" => Self::Euclidean,
            "cosine" => Self::Cosine,
            "cityblock" => Self::Cityblock,
            "chebyshev" => Self::Chebyshev,
            _ => {
                return Err(DriftError::BadOption(format!(
                    "unknown distance '{s}' (euclidean, cosine, cityblock, chebyshev)"
                )));
            }
        })
    }

    fn between(self, u: &[f64], v: &[f64]) -> f64 {
        let pairs = u.iter().zip(v);
        match self {
            Self::Euclidean => pairs.map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt(),
            Self::Cityblock => pairs.map(|(a, b)| (a - b).abs()).sum(),
            Self::Chebyshev => pairs.map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
            Self::Cosine => {
                let dot: f64 = pairs.map(|(a, b)| a * b).sum();
                let nu: f64 = u.iter().map(|a| a * a).sum::<f64>().sqrt();
                let nv: f64 = v.iter().map(|a| a * a).sum::<f64>().sqrt();
                // scipy clips the similarity's distance into [0, 2].
                (1.0 - dot / (nu * nv)).clamp(0.0, 2.0)
            }
        }
    }
}

/// How an embedding is tested (Evidently's drift methods and their defaults).
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingMethod {
    /// The domain classifier's ROC AUC.
    Model {
        /// Drift above this ROC AUC (0.55) unless `bootstrap`.
        threshold: f64,
        /// Compare with random predictions' ROC AUCs instead (None: false).
        bootstrap: Option<bool>,
        /// Their percentile (0.95).
        quantile_probability: f64,
    },
    /// The squared maximum mean discrepancy.
    Mmd {
        /// Drift above this MMD² (0.015) unless `bootstrap`.
        threshold: f64,
        /// Compare with reference resamples instead.
        bootstrap: Option<bool>,
        /// Their percentile (0.05).
        quantile_probability: f64,
    },
    /// A distance between the mean rows.
    Distance {
        /// Which distance (euclidean).
        dist: Distance,
        /// Drift above it (0.2) unless `bootstrap`.
        threshold: f64,
        /// Compare with reference resamples instead.
        bootstrap: Option<bool>,
        /// Their percentile (0.95).
        quantile_probability: f64,
    },
    /// The share of drifted components.
    Ratio {
        /// Each component's test (wasserstein).
        component_stattest: StatTest,
        /// Its threshold (0.1).
        component_threshold: f64,
        /// Drift above this share (0.2).
        threshold: f64,
    },
}

impl EmbeddingMethod {
    /// Evidently's defaults of the method named `name` (`model`, `mmd`, `distance`, `ratio`).
    pub fn named(name: &str) -> Result<Self, DriftError> {
        Ok(match name {
            "model" => Self::Model {
                threshold: 0.55,
                bootstrap: None,
                quantile_probability: 0.95,
            },
            "mmd" => Self::Mmd {
                threshold: 0.015,
                bootstrap: None,
                quantile_probability: 0.05,
            },
            "distance" => Self::Distance {
                dist: Distance::Euclidean,
                threshold: 0.2,
                bootstrap: None,
                quantile_probability: 0.95,
            },
            "ratio" => Self::Ratio {
                component_stattest: StatTest::Wasserstein,
                component_threshold: 0.1,
                threshold: 0.2,
            },
            _ => {
                return Err(DriftError::BadOption(format!(
                    "unknown embedding drift method '{name}' (model, mmd, distance, ratio)"
                )));
            }
        })
    }

    /// The method Evidently picks when none is given: `model`, bootstrapped when the
    /// reference has fewer than 1,000 rows.
    pub fn default_for(reference_rows: usize) -> Self {
        Self::Model {
            threshold: 0.55,
            bootstrap: Some(reference_rows < 1000),
            quantile_probability: 0.95,
        }
    }

    /// Sets the threshold (every method has one).
    pub fn with_threshold(mut self, t: f64) -> Self {
        match &mut self {
            Self::Model { threshold, .. }
            | Self::Mmd { threshold, .. }
            | Self::Distance { threshold, .. }
            | Self::Ratio { threshold, .. } => *threshold = t,
        }
        self
    }

    /// Sets `bootstrap` (not for `ratio`, which has none).
    pub fn with_bootstrap(mut self, b: bool) -> Result<Self, DriftError> {
        match &mut self {
            Self::Model { bootstrap, .. }
            | Self::Mmd { bootstrap, .. }
            | Self::Distance { bootstrap, .. } => *bootstrap = Some(b),
            Self::Ratio { .. } => {
                return Err(DriftError::BadOption(
                    "the ratio method has no bootstrap".into(),
                ));
            }
        }
        Ok(self)
    }

    /// Evidently's method name (`method_name` of its result).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Model { .. } => "model",
            Self::Mmd { .. } => "mmd",
            Self::Distance { .. } => "distance",
            Self::Ratio { .. } => "ratio",
        }
    }

    /// The configured threshold.
    pub fn threshold(&self) -> f64 {
        match self {
            Self::Model { threshold, .. }
            | Self::Mmd { threshold, .. }
            | Self::Distance { threshold, .. }
            | Self::Ratio { threshold, .. } => *threshold,
        }
    }
}

/// One embedding's result (Evidently's `EmbeddingsDriftMetricResults` fields).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingDrift {
    /// The method's score.
    pub drift_score: f64,
    /// Its decision.
    pub drift_detected: bool,
    /// `model`, `mmd`, `distance` or `ratio`.
    pub method_name: &'static str,
}

/// Tests the embedding rows `current` against `reference` (each row `dim` values, row-major)
/// with `method` (None: Evidently's default for the reference's size).
pub fn embedding_drift(
    reference: &[f64],
    current: &[f64],
    dim: usize,
    method: Option<&EmbeddingMethod>,
) -> Result<EmbeddingDrift, DriftError> {
    if dim == 0 {
        return Err(DriftError::BadOption(
            "an embedding needs at least one column".into(),
        ));
    }
    for (rows, side) in [(reference, "reference"), (current, "current")] {
        if rows.is_empty() || rows.len() % dim != 0 {
            return Err(DriftError::BadOption(format!(
                "the {side} embedding rows are empty or not {dim} values each"
            )));
        }
        if rows.iter().any(|v| !v.is_finite()) {
            return Err(DriftError::BadOption(format!(
                "the {side} embedding holds missing or infinite values"
            )));
        }
    }
    let x = Rows::new(reference, dim);
    let y = Rows::new(current, dim);
    let default;
    let method = match method {
        Some(m) => m,
        None => {
            default = EmbeddingMethod::default_for(x.n);
            &default
        }
    };
    let rule = |threshold: f64, bootstrap: Option<bool>, quantile: f64| Rule {
        threshold,
        bootstrap: bootstrap.unwrap_or(false),
        quantile,
    };
    let (score, detected) = match *method {
        EmbeddingMethod::Model {
            threshold,
            bootstrap,
            quantile_probability,
        } => model_drift(&x, &y, rule(threshold, bootstrap, quantile_probability))?,
        EmbeddingMethod::Mmd {
            threshold,
            bootstrap,
            quantile_probability,
        } => mmd_drift(&x, &y, rule(threshold, bootstrap, quantile_probability))?,
        EmbeddingMethod::Distance {
            dist,
            threshold,
            bootstrap,
            quantile_probability,
        } => distance_drift(
            &x,
            &y,
            dist,
            rule(threshold, bootstrap, quantile_probability),
        ),
        EmbeddingMethod::Ratio {
            component_stattest,
            component_threshold,
            threshold,
        } => ratio_drift(&x, &y, component_stattest, component_threshold, threshold)?,
    };
    Ok(EmbeddingDrift {
        drift_score: score,
        drift_detected: detected,
        method_name: method.name(),
    })
}

/// How a score becomes a decision: above `threshold`, or with `bootstrap` above the
/// `quantile` percentile of the resampled scores (of the reference, or of random
/// predictions).
#[derive(Debug, Clone, Copy)]
struct Rule {
    threshold: f64,
    bootstrap: bool,
    quantile: f64,
}

/// Row-major rows.
struct Rows<'a> {
    v: &'a [f64],
    d: usize,
    n: usize,
}

impl<'a> Rows<'a> {
    fn new(v: &'a [f64], d: usize) -> Self {
        Self {
            v,
            d,
            n: v.len() / d,
        }
    }

    fn row(&self, i: usize) -> &'a [f64] {
        &self.v[i * self.d..(i + 1) * self.d]
    }

    /// The mean row of `idx` (all rows when None).
    fn mean(&self, idx: Option<&[usize]>) -> Vec<f64> {
        let mut m = vec![0.0; self.d];
        let mut add = |r: &[f64]| m.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        let count = match idx {
            Some(idx) => {
                idx.iter().for_each(|&i| add(self.row(i)));
                idx.len()
            }
            None => {
                (0..self.n).for_each(|i| add(self.row(i)));
                self.n
            }
        };
        m.iter_mut().for_each(|a| *a /= count as f64);
        m
    }
}

// ---- model: the domain classifier ----

fn model_drift(x: &Rows<'_>, y: &Rows<'_>, rule: Rule) -> Result<(f64, bool), DriftError> {
    let n = x.n + y.n;
    if n < 4 {
        return Err(DriftError::BadOption(
            "the model method needs at least 4 rows in all".into(),
        ));
    }
    // Reference rows (target 1) then current rows (target 0), split by
    // train_test_split(test_size=0.5, random_state=42, shuffle=True).
    let row = |i: usize| if i < x.n { x.row(i) } else { y.row(i - x.n) };
    let label = |i: usize| if i < x.n { 1.0 } else { 0.0 };
    let n_test = n.div_ceil(2);
    let perm = NpRandom::new(42).permutation(n);
    let (test, train) = perm.split_at(n_test);
    let train_rows: Vec<&[f64]> = train.iter().map(|&i| row(i)).collect();
    let train_labels: Vec<f64> = train.iter().map(|&i| label(i)).collect();
    if !train_labels.contains(&1.0) || !train_labels.contains(&0.0) {
        return Err(DriftError::BadOption(
            "the classifier's half holds rows of one side only (too few rows)".into(),
        ));
    }
    let (coef, intercept) = sgd_log_loss(&train_rows, &train_labels, x.d);
    // predict_proba's positive column: expit of the decision function.
    let proba: Vec<f64> = test
        .iter()
        .map(|&i| {
            let z = row(i).iter().zip(&coef).map(|(a, b)| a * b).sum::<f64>() + intercept;
            1.0 / (1.0 + (-z).exp())
        })
        .collect();
    let truth: Vec<bool> = test.iter().map(|&i| i < x.n).collect();
    let auc = |scores: &[f64]| {
        infermesh_model_core::metrics::roc_auc(scores, &truth)
            .map_err(|e| DriftError::BadOption(format!("the test half cannot be scored: {e}")))
    };
    let roc = auc(&proba)?;
    if !rule.bootstrap {
        return Ok((roc, roc > rule.threshold));
    }
    let random = (0..N_BOOTSTRAP)
        .map(|i| {
            let mut r = NpRandom::new(i);
            let scores: Vec<f64> = (0..truth.len()).map(|_| r.rand()).collect();
            auc(&scores)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((roc, roc > percentile(&random, 100.0 * rule.quantile)))
}

// ---- mmd ----

/// `sum_i |r_i|²` per row.
fn sq_norms(r: &Rows<'_>) -> Vec<f64> {
    (0..r.n)
        .map(|i| r.row(i).iter().map(|v| v * v).sum())
        .collect()
}

/// Squared euclidean distance as scikit-learn computes it: `|a|² + |b|² - 2 a.b`, at least 0.
fn sq_dist(a: &[f64], na: f64, b: &[f64], nb: f64) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
    (na + nb - 2.0 * dot).max(0.0)
}

/// The rows pandas' `sample(min(n, 1000), random_state=0)` picks (their order is irrelevant
/// here).
fn sampled(n: usize) -> Vec<usize> {
    if n <= MMD_SAMPLE {
        return (0..n).collect();
    }
    let mut p = NpRandom::new(0).permutation(n);
    p.truncate(MMD_SAMPLE);
    p
}

/// Rows of one side of a kernel sum: the rows, their squared norms, which of them.
#[derive(Clone, Copy)]
struct Picked<'a> {
    rows: &'a Rows<'a>,
    norms: &'a [f64],
    idx: &'a [usize],
}

/// The sum of `exp(-gamma d²)` over the pairs `(a[i], b[j])` (all of them; `same`: a and b
/// are the same rows, so the diagonal is exactly 1, as scikit-learn zeroes its distances).
fn kernel_sum(a: Picked<'_>, b: Picked<'_>, gamma: f64, same: bool) -> f64 {
    a.idx
        .par_iter()
        .enumerate()
        .map(|(p, &i)| {
            let mut s = 0.0;
            for (q, &j) in b.idx.iter().enumerate() {
                let d2 = if same && p == q {
                    0.0
                } else {
                    sq_dist(a.rows.row(i), a.norms[i], b.rows.row(j), b.norms[j])
                };
                s += (-gamma * d2).exp();
            }
            s
        })
        .sum()
}

fn mmd2u(kx: f64, ky: f64, kxy: f64, m: f64, n: f64) -> f64 {
    1.0 / (m * (m - 1.0)) * (kx - m) + 1.0 / (n * (n - 1.0)) * (ky - n) - 2.0 / (m * n) * kxy
}

fn mmd_drift(x: &Rows<'_>, y: &Rows<'_>, rule: Rule) -> Result<(f64, bool), DriftError> {
    let (m, n) = (x.n, y.n);
    if m + n > MAX_MMD_ROWS {
        return Err(DriftError::BadOption(format!(
            "the mmd method compares every pair of rows: {} rows is more than {MAX_MMD_ROWS}; sample the tables first",
            m + n
        )));
    }
    if m < 2 || n < 2 {
        return Err(DriftError::BadOption(
            "the mmd method needs at least 2 rows on each side".into(),
        ));
    }
    let (nx, ny) = (sq_norms(x), sq_norms(y));
    let (nx, ny) = (&nx[..], &ny[..]);
    let (sx, sy) = (sampled(m), sampled(n));
    let dists: Vec<f64> = sx
        .par_iter()
        .flat_map_iter(|&i| {
            sy.iter()
                .map(move |&j| sq_dist(x.row(i), nx[i], y.row(j), ny[j]).sqrt())
        })
        .collect();
    let sigma2 = median(dists).powi(2);
    let gamma = 1.0 / sigma2;
    let all_x: Vec<usize> = (0..m).collect();
    let all_y: Vec<usize> = (0..n).collect();
    let px = Picked {
        rows: x,
        norms: nx,
        idx: &all_x,
    };
    let py = Picked {
        rows: y,
        norms: ny,
        idx: &all_y,
    };
    let kx = kernel_sum(px, px, gamma, true);
    let ky = kernel_sum(py, py, gamma, true);
    let kxy = kernel_sum(px, py, gamma, false);
    let value = mmd2u(kx, ky, kxy, m as f64, n as f64);
    if !rule.bootstrap {
        return Ok((value.max(0.0), value > rule.threshold));
    }
    // The bandwidth of the reference alone (its sample against itself, zeros included).
    let dx: Vec<f64> = sx
        .par_iter()
        .flat_map_iter(|&i| {
            sx.iter().map(move |&j| {
                if i == j {
                    0.0
                } else {
                    sq_dist(x.row(i), nx[i], x.row(j), nx[j]).sqrt()
                }
            })
        })
        .collect();
    let gamma_x = 1.0 / median(dx).powi(2);
    let x_size = ((m * m) / (m + n)).max(1);
    let y_size = ((m * n) / (m + n)).max(1);
    let mut values = Vec::with_capacity(N_BOOTSTRAP as usize);
    for i in 0..N_BOOTSTRAP {
        let mut r = NpRandom::new(i);
        let xi = r.choice(m, x_size);
        let yi = r.choice(m, y_size);
        // K[idx][:, idx] keeps repeated rows; its diagonal is K[i, i] = 1.
        let (pa, pb) = (
            Picked {
                rows: x,
                norms: nx,
                idx: &xi,
            },
            Picked {
                rows: x,
                norms: nx,
                idx: &yi,
            },
        );
        let kxx = kernel_sum(pa, pa, gamma_x, true);
        let kyy = kernel_sum(pb, pb, gamma_x, true);
        let kxy = kernel_sum(pa, pb, gamma_x, false);
        values.push(mmd2u(kxx, kyy, kxy, x_size as f64, y_size as f64));
    }
    Ok((
        value.max(0.0),
        value > percentile(&values, 100.0 * rule.quantile),
    ))
}

// ---- distance, ratio ----

fn distance_drift(x: &Rows<'_>, y: &Rows<'_>, dist: Distance, rule: Rule) -> (f64, bool) {
    let value = dist.between(&x.mean(None), &y.mean(None));
    if !rule.bootstrap {
        return (value, value > rule.threshold);
    }
    let (m, n) = (x.n, y.n);
    let ref_size = (m * m) / (m + n);
    let cur_size = (n * m) / (m + n);
    let values: Vec<f64> = (0..N_BOOTSTRAP)
        .map(|i| {
            let mut r = NpRandom::new(i);
            let a = r.choice(m, ref_size);
            let b = r.choice(m, cur_size);
            dist.between(&x.mean(Some(&a)), &x.mean(Some(&b)))
        })
        .collect();
    (value, value > percentile(&values, 100.0 * rule.quantile))
}

fn ratio_drift(
    x: &Rows<'_>,
    y: &Rows<'_>,
    test: StatTest,
    component_threshold: f64,
    threshold: f64,
) -> Result<(f64, bool), DriftError> {
    let column =
        |r: &Rows<'_>, j: usize| Values::Float((0..r.n).map(|i| r.v[i * r.d + j]).collect());
    let drifted = (0..x.d)
        .into_par_iter()
        .map(|j| {
            crate::column_drift(
                &format!("component {j}"),
                &column(x, j),
                &column(y, j),
                crate::ColumnType::Numerical,
                Some(test),
                Some(component_threshold),
                false,
            )
            .map(|c| usize::from(c.drift_detected))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .sum::<usize>();
    let share = drifted as f64 / x.d as f64;
    Ok((share, share > threshold))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_refused() {
        let r = [0.0, 1.0, 2.0, 3.0];
        for (a, b, d) in [
            (&r[..], &[][..], 2),
            (&r[..], &r[..3], 2),
            (&r[..], &r[..], 0),
        ] {
            assert!(embedding_drift(a, b, d, None).is_err());
        }
        let nan = [0.0, f64::NAN, 2.0, 3.0];
        assert!(embedding_drift(&r, &nan, 2, None).is_err());
        let big = vec![0.5; 2 * (MAX_MMD_ROWS / 2 + 1)];
        let m = EmbeddingMethod::named("mmd").unwrap();
        let e = embedding_drift(&big, &big, 1, Some(&m)).unwrap_err();
        assert!(e.to_string().contains("every pair"), "{e}");
        assert!(EmbeddingMethod::named("pca").is_err());
    }

    #[test]
    fn shifted_embeddings_drift_and_equal_ones_do_not() {
        let mut r = NpRandom::new(7);
        let rows = |r: &mut NpRandom, n: usize, shift: f64| -> Vec<f64> {
            (0..n * 8).map(|_| r.rand() + shift).collect()
        };
        let reference = rows(&mut r, 600, 0.0);
        let same = rows(&mut r, 500, 0.0);
        let shifted = rows(&mut r, 500, 0.4);
        for name in ["model", "mmd", "distance", "ratio"] {
            let m = EmbeddingMethod::named(name).unwrap();
            let a = embedding_drift(&reference, &same, 8, Some(&m)).unwrap();
            let b = embedding_drift(&reference, &shifted, 8, Some(&m)).unwrap();
            assert!(!a.drift_detected, "{name}: {a:?}");
            assert!(b.drift_detected, "{name}: {b:?}");
            assert_eq!(a.method_name, name);
        }
        let d = embedding_drift(&reference, &shifted, 8, None).unwrap();
        assert_eq!(d.method_name, "model");
        assert!(d.drift_detected && d.drift_score > 0.9, "{d:?}");
    }
}
