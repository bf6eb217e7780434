//! Exact k-nearest neighbours by brute force (every pair), parallel over query rows with
//! rayon. Each row's result depends only on that row, so the output is the same for any
//! number of threads. Fine up to ~20k rows (N² distance evaluations).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The input-space distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// `sqrt(sum (x - y)^2)`.
    Euclidean,
    /// `1 - x·y / (|x| |y|)` (umap-learn's `cosine`; BERTopic's default). A zero row is at
    /// distance 1 from everything.
    #[default]
    Cosine,
}

impl Metric {
    /// The rows as the distance reads them: unit rows for cosine (so the distance is
    /// `1 - x·y`), the rows unchanged for Euclidean.
    pub(crate) fn prepare(self, data: &[f32], dim: usize) -> Vec<f32> {
        let mut out = data.to_vec();
        if self == Metric::Cosine && dim > 0 {
            for row in out.chunks_exact_mut(dim) {
                let norm = dot(row, row).sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|v| *v /= norm);
                }
            }
        }
        out
    }

    /// The distance between two prepared rows.
    pub(crate) fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Euclidean => squared_euclidean(a, b).sqrt(),
            Metric::Cosine => (1.0 - dot(a, b)).max(0.0),
        }
    }
}

/// `a · b` with eight independent accumulators (vectorisable, and a fixed summation order).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `|a - b|^2`, summed as [`dot`] is.
pub(crate) fn squared_euclidean(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// The `k` nearest rows of `base` to each row of `queries` (both prepared for `metric`,
/// `dim` columns), nearest first, ties to the lower index. With `self_query`, `queries` is
/// `base` and a row's distance to itself is exactly 0 (so it comes first, as umap-learn's
/// exact search puts it). Returns row-major `(indices, distances)`, `k` per query
/// (`k <= base rows`).
pub(crate) fn knn(
    queries: &[f32],
    base: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    self_query: bool,
) -> (Vec<u32>, Vec<f32>) {
    let n_base = base.len() / dim.max(1);
    let n_queries = queries.len() / dim.max(1);
    debug_assert!(k <= n_base);
    let mut indices = vec![0u32; n_queries * k];
    let mut distances = vec![0f32; n_queries * k];
    indices
        .par_chunks_mut(k.max(1))
        .zip(distances.par_chunks_mut(k.max(1)))
        .enumerate()
        .for_each(|(i, (idx, dist))| {
            let q = &queries[i * dim..(i + 1) * dim];
            // A sorted list of the best k so far; a later row replaces only a strictly
            // nearer one, so ties keep the lower index.
            let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
            for j in 0..n_base {
                let d = if self_query && i == j {
                    0.0
                } else {
                    metric.distance(q, &base[j * dim..(j + 1) * dim])
                };
                if best.len() == k && best.last().is_none_or(|w| d >= w.0) {
                    continue;
                }
                let at = best.partition_point(|w| w.0 <= d);
                best.insert(at, (d, j as u32));
                best.truncate(k);
            }
            for (slot, (d, j)) in best.into_iter().enumerate() {
                idx[slot] = j;
                dist[slot] = d;
            }
        });
    (indices, distances)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_exact_and_ordered() {
        // Points on a line at 0, 1, 3, 6, 10.
        let base = [0.0f32, 1.0, 3.0, 6.0, 10.0];
        let (idx, dist) = knn(&base, &base, 1, 3, Metric::Euclidean, true);
        assert_eq!(&idx[..3], &[0, 1, 2]);
        assert_eq!(&dist[..3], &[0.0, 1.0, 3.0]);
        assert_eq!(
            &idx[6..9],
            &[2, 1, 0],
            "3 and 0 tie at 3: the lower index wins"
        );
        assert_eq!(&idx[12..15], &[4, 3, 2]);
        // A tie (0 and 2 are both 1 from 1) goes to the lower index.
        let (idx, _) = knn(&[1.0], &[0.0, 2.0, 1.0], 1, 2, Metric::Euclidean, false);
        assert_eq!(idx, vec![2, 0]);
    }

    #[test]
    fn cosine_is_one_minus_the_cosine_similarity() {
        let rows = Metric::Cosine.prepare(&[3.0, 0.0, 1.0, 1.0, 0.0, 0.0], 2);
        let d = Metric::Cosine.distance(&rows[0..2], &rows[2..4]);
        assert!((d - (1.0 - 0.5f32.sqrt())).abs() < 1e-6, "{d}");
        assert_eq!(Metric::Cosine.distance(&rows[0..2], &rows[4..6]), 1.0);
        let long: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let want: f32 = long.iter().map(|v| v * v).sum();
        assert!((dot(&long, &long) - want).abs() < 1e-3);
        assert!((squared_euclidean(&long, &[0.0; 19]) - want).abs() < 1e-3);
    }
}
