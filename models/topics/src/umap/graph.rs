//! The fuzzy simplicial set: umap-learn 0.5's `smooth_knn_dist`,
//! `compute_membership_strengths` and the fuzzy union (`set_op_mix_ratio = 1`).

/// umap-learn's `SMOOTH_K_TOLERANCE`.
const SMOOTH_K_TOLERANCE: f64 = 1e-5;
/// umap-learn's `MIN_K_DIST_SCALE`.
const MIN_K_DIST_SCALE: f64 = 1e-3;
/// Binary-search steps (umap-learn's `n_iter`).
const N_ITER: usize = 64;

/// A sparse weighted graph as COO triplets in row-major order (scipy's `tocoo()` of a CSR
/// matrix): the edge order of the layout's epochs.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Graph {
    pub(crate) n_rows: usize,
    pub(crate) n_cols: usize,
    pub(crate) rows: Vec<u32>,
    pub(crate) cols: Vec<u32>,
    pub(crate) weights: Vec<f32>,
}

impl Graph {
    /// Zeroes the weights below `max / n_epochs` and drops them (umap-learn does this before
    /// the layout: such edges would never be sampled).
    pub(crate) fn prune(&mut self, n_epochs: usize) {
        let max = self.weights.iter().copied().fold(0f32, f32::max);
        let cut = max / n_epochs as f32;
        let keep: Vec<bool> = self.weights.iter().map(|&w| w >= cut && w > 0.0).collect();
        let mut k = keep.iter();
        self.rows.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        self.cols.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        self.weights.retain(|_| *k.next().unwrap_or(&false));
    }
}

/// `(sigmas, rhos)` per row of `distances` (`k` per row, nearest first; the first column is
/// skipped in the search, as umap-learn's loop starts at 1).
pub(crate) fn smooth_knn_dist(
    distances: &[f32],
    k: usize,
    local_connectivity: f64,
) -> (Vec<f32>, Vec<f32>) {
    let n = distances.len() / k.max(1);
    let target = (k as f64).log2();
    let mean_distances =
        distances.iter().map(|&d| f64::from(d)).sum::<f64>() / distances.len().max(1) as f64;
    let mut sigmas = vec![0f32; n];
    let mut rhos = vec![0f32; n];
    for i in 0..n {
        let row = &distances[i * k..(i + 1) * k];
        let non_zero: Vec<f64> = row
            .iter()
            .filter(|&&d| d > 0.0)
            .map(|&d| f64::from(d))
            .collect();
        let mut rho = 0f64;
        if non_zero.len() as f64 >= local_connectivity {
            let index = local_connectivity.floor() as usize;
            let interpolation = local_connectivity - index as f64;
            if index > 0 {
                rho = non_zero[index - 1];
                if interpolation > SMOOTH_K_TOLERANCE {
                    rho += interpolation * (non_zero[index] - non_zero[index - 1]);
                }
            } else if let Some(&first) = non_zero.first() {
                rho = interpolation * first;
            }
        } else if !non_zero.is_empty() {
            rho = non_zero.iter().copied().fold(f64::MIN, f64::max);
        }
        // umap-learn keeps rho in a float32 array.
        let rho = f64::from(rho as f32);
        let (mut lo, mut hi, mut mid) = (0f64, f64::INFINITY, 1f64);
        for _ in 0..N_ITER {
            let mut psum = 0f64;
            for &d in &row[1..] {
                let d = f64::from(d) - rho;
                psum += if d > 0.0 { (-(d / mid)).exp() } else { 1.0 };
            }
            if (psum - target).abs() < SMOOTH_K_TOLERANCE {
                break;
            }
            if psum > target {
                hi = mid;
                mid = (lo + hi) / 2.0;
            } else {
                lo = mid;
                if hi == f64::INFINITY {
                    mid *= 2.0;
                } else {
                    mid = (lo + hi) / 2.0;
                }
            }
        }
        let floor = if rho > 0.0 {
            MIN_K_DIST_SCALE * row.iter().map(|&d| f64::from(d)).sum::<f64>() / k as f64
        } else {
            MIN_K_DIST_SCALE * mean_distances
        };
        sigmas[i] = mid.max(floor) as f32;
        rhos[i] = rho as f32;
    }
    (sigmas, rhos)
}

/// The membership strength of each kNN edge: `exp(-(d - rho) / sigma)`, 1 within `rho`, 0
/// for a row's edge to itself unless `bipartite` (new points against training points).
pub(crate) fn membership_strengths(
    indices: &[u32],
    distances: &[f32],
    k: usize,
    sigmas: &[f32],
    rhos: &[f32],
    bipartite: bool,
) -> Vec<f32> {
    let mut vals = vec![0f32; indices.len()];
    for (at, v) in vals.iter_mut().enumerate() {
        let i = at / k;
        let d = distances[at];
        *v = if !bipartite && indices[at] as usize == i {
            0.0
        } else if d - rhos[i] <= 0.0 || sigmas[i] == 0.0 {
            1.0
        } else {
            (-((f64::from(d) - f64::from(rhos[i])) / f64::from(sigmas[i]))).exp() as f32
        };
    }
    vals
}

/// The fuzzy union `A + Aᵀ - A∘Aᵀ` of the directed kNN graph `A` (`n` rows, `k` edges per
/// row), zeros dropped, in row-major order.
pub(crate) fn fuzzy_union(n: usize, indices: &[u32], vals: &[f32], k: usize) -> Graph {
    // (row, col, A[row, col] or Aᵀ[row, col] flag, value): each (row, col) appears at most
    // once from A and once from Aᵀ.
    let mut entries: Vec<(u32, u32, bool, f32)> = Vec::with_capacity(2 * indices.len());
    for (at, (&j, &v)) in indices.iter().zip(vals).enumerate() {
        let i = (at / k) as u32;
        if v != 0.0 {
            entries.push((i, j, false, v));
            entries.push((j, i, true, v));
        }
    }
    entries.sort_unstable_by_key(|e| (e.0, e.1, e.2));
    let mut g = Graph {
        n_rows: n,
        n_cols: n,
        ..Graph::default()
    };
    let mut at = 0;
    while at < entries.len() {
        let (r, c) = (entries[at].0, entries[at].1);
        let (mut a, mut b) = (0f32, 0f32);
        while at < entries.len() && entries[at].0 == r && entries[at].1 == c {
            if entries[at].2 {
                b = entries[at].3;
            } else {
                a = entries[at].3;
            }
            at += 1;
        }
        let w = a + b - a * b;
        if w != 0.0 {
            g.rows.push(r);
            g.cols.push(c);
            g.weights.push(w);
        }
    }
    g
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sigma_makes_the_memberships_sum_to_log2_k() {
        let k = 5;
        let dists = [0.0f32, 0.5, 0.7, 1.0, 1.6, 0.0, 0.1, 0.2, 0.3, 0.4];
        let (sigmas, rhos) = smooth_knn_dist(&dists, k, 1.0);
        assert_eq!(rhos, vec![0.5, 0.1]);
        for i in 0..2 {
            let s: f64 = dists[i * k + 1..(i + 1) * k]
                .iter()
                .map(|&d| (-(f64::from(d - rhos[i]).max(0.0)) / f64::from(sigmas[i])).exp())
                .sum();
            assert!((s - (k as f64).log2()).abs() < 1e-4, "row {i}: {s}");
        }
        let idx = [0u32, 1, 2, 3, 4, 1, 0, 2, 3, 4];
        let vals = membership_strengths(&idx, &dists, k, &sigmas, &rhos, false);
        assert_eq!(vals[0], 0.0, "a point's edge to itself is dropped");
        assert_eq!(vals[1], 1.0, "the nearest neighbour has membership 1");
        assert!(vals[2] < 1.0 && vals[2] > vals[3]);
    }

    #[test]
    fn the_union_is_symmetric_probabilistic_or() {
        // k = 1: 0 -> 1 (0.5), 1 -> 0 (0.5), 2 -> 1 (0.25).
        let g = fuzzy_union(3, &[1, 0, 1], &[0.5, 0.5, 0.25], 1);
        assert_eq!(g.rows, vec![0, 1, 1, 2]);
        assert_eq!(g.cols, vec![1, 0, 2, 1]);
        // (0,1): 0.5 + 0.5 - 0.25; (1,2) and (2,1) from 2 -> 1 only.
        assert_eq!(g.weights, vec![0.75, 0.75, 0.25, 0.25]);
        let g = fuzzy_union(3, &[1, 2, 1], &[0.5, 1.0, 0.25], 1);
        let w: Vec<_> = g.rows.iter().zip(&g.cols).zip(&g.weights).collect();
        assert!(w.contains(&((&1, &2), &1.0)) && w.contains(&((&2, &1), &1.0)));
    }
}
