//! Fitting an Isolation Forest as scikit-learn's `IsolationForest.fit` does, into the
//! artifact [`crate::IsolationForest`] loads:
//!
//! - each of `n_estimators` trees sees `max_samples` rows drawn without replacement
//!   (`"auto"`: `min(256, n)`), or with replacement under `bootstrap`;
//! - a tree is scikit-learn's `ExtraTreeRegressor(max_features=1, splitter="random")` grown
//!   to `max_depth = ceil(log2(max_samples))`: at each node a feature drawn at random among
//!   those not constant in the node, a threshold drawn uniformly between that feature's
//!   minimum and maximum in the node (the minimum if the draw lands on the maximum), rows with
//!   `x <= threshold` to the left; a node of one row, or whose features are all constant, is
//!   a leaf;
//! - values are taken as f32 first, as scikit-learn's trees take them;
//! - `offset`: -0.5 with `contamination = "auto"`, else the `100 * contamination`-th
//!   percentile (linear interpolation) of the training rows' `score_samples`.
//!
//! The random draws are this crate's (a seeded `StdRng`), not NumPy's, so a seed gives the same
//! forest here every time but not scikit-learn's forest; the score distribution is the same
//! (checked against scikit-learn by `bench/anomaly.sh`). Trees are grown in parallel, each
//! from its own seed, so the forest does not depend on the thread count.
//!
//! Written here: no Rust crate fits scikit-learn's Isolation Forest (linfa has none).

use rand::{RngExt, SeedableRng, rngs::StdRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::{AnomalyError, FORMAT, IsolationForest, LoadLimits};

/// `max_samples`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxSamples {
    /// `min(256, n)`.
    Auto,
    /// This many rows (at most `n`).
    Count(usize),
    /// This share of the rows, in (0, 1].
    Fraction(f64),
}

/// `contamination`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contamination {
    /// Offset -0.5 (the original paper's threshold).
    Auto,
    /// The expected share of anomalies, in (0, 0.5].
    Share(f64),
}

/// What to fit (scikit-learn's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitParams {
    /// Trees.
    pub n_estimators: usize,
    /// Rows per tree.
    pub max_samples: MaxSamples,
    /// Threshold choice.
    pub contamination: Contamination,
    /// Draw each tree's rows with replacement.
    pub bootstrap: bool,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for FitParams {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            contamination: Contamination::Auto,
            bootstrap: false,
            seed: 0,
        }
    }
}

/// A fitted forest: the artifact's JSON and the loaded model.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The `isolation_forest.json` document.
    pub artifact: serde_json::Value,
    /// The same forest, loaded.
    pub forest: IsolationForest,
}

#[derive(Debug, Serialize)]
struct ArtifactTree {
    children_left: Vec<i64>,
    children_right: Vec<i64>,
    feature: Vec<i64>,
    threshold: Vec<f64>,
    n_node_samples: Vec<f64>,
}

/// Fits a forest on `rows` (`n x n_features`, row-major, finite). `names` names the
/// features.
pub fn fit(
    rows: &[f32],
    n_features: usize,
    names: &[String],
    params: &FitParams,
) -> Result<Fitted, AnomalyError> {
    let invalid = |m: String| AnomalyError::Invalid(m);
    if n_features == 0 || !rows.len().is_multiple_of(n_features) {
        return Err(invalid(format!(
            "{} values do not make rows of {n_features} features",
            rows.len()
        )));
    }
    if names.len() != n_features {
        return Err(invalid(format!(
            "{} names for {n_features} features",
            names.len()
        )));
    }
    let n = rows.len() / n_features;
    if n == 0 {
        return Err(invalid("no rows to fit".into()));
    }
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "row {} feature '{}' is not a finite number",
            i / n_features,
            names[i % n_features]
        )));
    }
    if params.n_estimators == 0 || params.n_estimators > 100_000 {
        return Err(invalid(format!(
            "n_estimators = {} is not within 1..=100000",
            params.n_estimators
        )));
    }
    let max_samples = match params.max_samples {
        MaxSamples::Auto => n.min(256),
        MaxSamples::Count(c) if c >= 1 => c.min(n),
        MaxSamples::Fraction(f) if f > 0.0 && f <= 1.0 => ((f * n as f64) as usize).max(1),
        other => return Err(invalid(format!("max_samples {other:?} is not valid"))),
    };
    if let Contamination::Share(c) = params.contamination
        && !(c > 0.0 && c <= 0.5)
    {
        return Err(invalid(format!("contamination {c} is not within (0, 0.5]")));
    }
    let max_depth = (max_samples.max(2) as f64).log2().ceil() as usize;
    let mut master = StdRng::seed_from_u64(params.seed);
    let seeds: Vec<u64> = (0..params.n_estimators)
        .map(|_| master.random::<u64>())
        .collect();
    let trees: Vec<ArtifactTree> = seeds
        .par_iter()
        .map(|&seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let sample = draw_rows(&mut rng, n, max_samples, params.bootstrap);
            grow(rows, n_features, sample, max_depth, &mut rng)
        })
        .collect();
    let mut artifact = serde_json::json!({
        "format": FORMAT,
        "version": 1,
        "n_features": n_features,
        "feature_names": names,
        "max_samples": max_samples,
        "offset": -0.5,
        "trees": trees,
    });
    let limits = LoadLimits::default();
    let bytes = serde_json::to_vec(&artifact).map_err(|e| invalid(e.to_string()))?;
    let mut forest = IsolationForest::from_json(&bytes, &limits)?;
    if let Contamination::Share(c) = params.contamination {
        let per_thread = (n / rayon::current_num_threads().max(1)).max(1) * n_features;
        let scores: Vec<f64> = rows
            .par_chunks(per_thread)
            .map(|part| {
                let mut s = Vec::new();
                forest.score_rows(part, &mut s).map(|()| s)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?
            .into_iter()
            .flatten()
            .map(|s| s.score)
            .collect();
        let offset = percentile(scores, 100.0 * c);
        artifact["offset"] = serde_json::json!(offset);
        let bytes = serde_json::to_vec(&artifact).map_err(|e| invalid(e.to_string()))?;
        forest = IsolationForest::from_json(&bytes, &limits)?;
    }
    Ok(Fitted { artifact, forest })
}

/// The rows a tree is grown on.
fn draw_rows(rng: &mut StdRng, n: usize, k: usize, bootstrap: bool) -> Vec<usize> {
    if bootstrap {
        return (0..k).map(|_| rng.random_range(0..n)).collect();
    }
    if k * 4 >= n {
        // Partial Fisher-Yates over all rows.
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = rng.random_range(i..n);
            all.swap(i, j);
        }
        all.truncate(k);
        return all;
    }
    // Few of many: draw until k distinct.
    let mut seen = std::collections::HashSet::with_capacity(k * 2);
    let mut out = Vec::with_capacity(k);
    while out.len() < k {
        let r = rng.random_range(0..n);
        if seen.insert(r) {
            out.push(r);
        }
    }
    out
}

/// A node to grow: its rows `start..end` of the sample, its depth, and its parent with the
/// side it hangs on (`true`: left).
type Pending = (usize, usize, usize, Option<(usize, bool)>);

/// Grows one tree depth first (scikit-learn's node order: a node, then its left subtree,
/// then its right).
fn grow(
    rows: &[f32],
    n_features: usize,
    mut sample: Vec<usize>,
    max_depth: usize,
    rng: &mut StdRng,
) -> ArtifactTree {
    let mut t = ArtifactTree {
        children_left: Vec::new(),
        children_right: Vec::new(),
        feature: Vec::new(),
        threshold: Vec::new(),
        n_node_samples: Vec::new(),
    };
    let mut stack: Vec<Pending> = vec![(0, sample.len(), 0, None)];
    let mut features: Vec<usize> = (0..n_features).collect();
    while let Some((start, end, depth, parent)) = stack.pop() {
        let id = t.children_left.len();
        if let Some((p, left)) = parent {
            if left {
                t.children_left[p] = id as i64;
            } else {
                t.children_right[p] = id as i64;
            }
        }
        t.children_left.push(-1);
        t.children_right.push(-1);
        t.feature.push(-2);
        t.threshold.push(-2.0);
        t.n_node_samples.push((end - start) as f64);
        if end - start < 2 || depth >= max_depth {
            continue;
        }
        let node = &mut sample[start..end];
        // Features in random order until one is not constant in the node.
        let mut split = None;
        let mut remaining = n_features;
        while remaining > 0 {
            let j = rng.random_range(0..remaining);
            features.swap(j, remaining - 1);
            let f = features[remaining - 1];
            remaining -= 1;
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &r in node.iter() {
                let v = rows[r * n_features + f];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if hi > lo {
                let (lo, hi) = (f64::from(lo), f64::from(hi));
                let mut threshold = lo + (hi - lo) * rng.random::<f64>();
                if threshold >= hi {
                    threshold = lo;
                }
                split = Some((f, threshold));
                break;
            }
        }
        let Some((f, threshold)) = split else {
            continue;
        };
        // Partition: rows at or below the threshold first.
        let mut mid = 0;
        for i in 0..node.len() {
            if f64::from(rows[node[i] * n_features + f]) <= threshold {
                node.swap(i, mid);
                mid += 1;
            }
        }
        t.feature[id] = f as i64;
        t.threshold[id] = threshold;
        // Right pushed first so that the left subtree is numbered next.
        stack.push((start + mid, end, depth + 1, Some((id, false))));
        stack.push((start, start + mid, depth + 1, Some((id, true))));
    }
    t
}

/// NumPy's `percentile` with linear interpolation.
fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let frac = pos - lo as f64;
    v[lo] + (v[hi] - v[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: usize, outliers: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut rows = Vec::new();
        for i in 0..n {
            let far = i < outliers;
            for _ in 0..3 {
                let v: f64 = rng.random::<f64>() - 0.5;
                rows.push(if far {
                    (v * 2.0 + 6.0) as f32
                } else {
                    v as f32
                });
            }
        }
        rows
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn outliers_score_lower_and_the_threshold_takes_the_contamination() {
        let rows = blob(2000, 20);
        let fitted = fit(
            &rows,
            3,
            &names(),
            &FitParams {
                contamination: Contamination::Share(0.01),
                seed: 3,
                ..FitParams::default()
            },
        )
        .expect("fit");
        let scores: Vec<_> = rows
            .chunks(3)
            .map(|r| fitted.forest.score_row(r).expect("score"))
            .collect();
        let flagged = scores.iter().filter(|s| s.is_anomaly()).count();
        // 1% of 2,000 below the offset (ties aside), and they are the planted outliers.
        assert!((15..=25).contains(&flagged), "{flagged}");
        assert!(scores[..20].iter().all(|s| s.is_anomaly()));
        let inlier_mean = scores[20..].iter().map(|s| s.score).sum::<f64>() / 1980.0;
        assert!(
            inlier_mean > -0.5 && scores[0].score < -0.6,
            "{inlier_mean} {:?}",
            scores[0]
        );
    }

    #[test]
    fn trees_respect_depth_and_sample_sizes() {
        let rows = blob(1000, 0);
        let fitted = fit(&rows, 3, &names(), &FitParams::default()).expect("fit");
        assert_eq!(fitted.artifact["max_samples"], 256);
        assert_eq!(fitted.artifact["offset"], -0.5);
        let trees = fitted.artifact["trees"].as_array().expect("trees");
        assert_eq!(trees.len(), 100);
        for t in trees {
            let samples = t["n_node_samples"].as_array().expect("samples");
            assert_eq!(samples[0], 256.0);
            // Children's samples add up to the parent's.
            let left = t["children_left"].as_array().expect("left");
            let right = t["children_right"].as_array().expect("right");
            for i in 0..samples.len() {
                let (l, r) = (
                    left[i].as_i64().unwrap_or(-1),
                    right[i].as_i64().unwrap_or(-1),
                );
                if l >= 0 {
                    let s = |k: i64| samples[k as usize].as_f64().unwrap_or(0.0);
                    assert_eq!(s(l) + s(r), samples[i].as_f64().unwrap_or(0.0));
                }
            }
        }
    }

    #[test]
    fn a_seed_gives_one_forest() {
        let rows = blob(500, 5);
        let p = FitParams {
            seed: 11,
            n_estimators: 20,
            ..FitParams::default()
        };
        let a = fit(&rows, 3, &names(), &p).expect("fit");
        let b = fit(&rows, 3, &names(), &p).expect("fit");
        assert_eq!(a.artifact, b.artifact);
        let c = fit(&rows, 3, &names(), &FitParams { seed: 12, ..p }).expect("fit");
        assert_ne!(a.artifact, c.artifact);
    }

    #[test]
    fn bad_input_is_refused() {
        let names = names();
        assert!(fit(&[1.0, 2.0], 3, &names, &FitParams::default()).is_err());
        assert!(fit(&[1.0, f32::NAN, 2.0], 3, &names, &FitParams::default()).is_err());
        let p = FitParams {
            contamination: Contamination::Share(0.7),
            ..FitParams::default()
        };
        assert!(fit(&[1.0, 2.0, 3.0], 3, &names, &p).is_err());
        // Constant data: one leaf per tree, every score the same.
        let flat = vec![1.0f32; 30];
        let f = fit(&flat, 3, &names, &FitParams::default()).expect("fit");
        let s = f.forest.score_row(&[1.0, 1.0, 1.0]).expect("score");
        assert!(s.score.is_finite());
    }

    #[test]
    fn batch_scores_are_the_row_scores() {
        let rows = blob(300, 7);
        let fitted = fit(&rows, 3, &names(), &FitParams::default()).expect("fit");
        let mut batch = Vec::new();
        fitted.forest.score_rows(&rows, &mut batch).expect("batch");
        assert_eq!(batch.len(), 300);
        for (r, b) in rows.chunks(3).zip(&batch) {
            assert_eq!(fitted.forest.score_row(r).expect("row"), *b);
        }
        let mut bad = rows.clone();
        bad[4] = f32::INFINITY;
        assert!(fitted.forest.score_rows(&bad, &mut batch).is_err());
        assert!(fitted.forest.score_rows(&rows[..4], &mut batch).is_err());
    }

    #[test]
    fn deep_trees_score_the_same_in_batches() {
        // 1,500 rows per tree grow trees 11 levels deep: past the complete layout.
        let rows = blob(1500, 15);
        let p = FitParams {
            n_estimators: 5,
            max_samples: MaxSamples::Count(1500),
            ..FitParams::default()
        };
        let fitted = fit(&rows, 3, &names(), &p).expect("fit");
        let mut batch = Vec::new();
        fitted.forest.score_rows(&rows, &mut batch).expect("batch");
        for (r, b) in rows.chunks(3).zip(&batch) {
            assert_eq!(fitted.forest.score_row(r).expect("row"), *b);
        }
    }

    #[test]
    fn percentile_interpolates_as_numpy() {
        assert_eq!(percentile(vec![1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(vec![3.0, 1.0, 2.0], 0.0), 1.0);
        assert!((percentile((1..=10).map(f64::from).collect(), 10.0) - 1.9).abs() < 1e-12);
    }
}
