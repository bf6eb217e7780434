//! HDBSCAN (Campello, Moulavi and Sander 2013) as the `hdbscan` Python library 0.8 computes
//! it with BERTopic's settings (euclidean, `cluster_selection_method = "eom"`,
//! `allow_single_cluster = False`, `cluster_selection_epsilon = 0`), plus its
//! `approximate_predict` for new points.
//!
//! 1. Core distance of a point: the distance to its `min_samples`-th nearest other point
//!    (`min_samples` defaults to `min_cluster_size`, at most `n - 1`). (`approximate_predict`
//!    uses, as the library does, the `min_samples`-th nearest with the point itself counted:
//!    both are kept.)
//! 2. Mutual reachability `max(core(a), core(b), d(a, b))`; its exact minimum spanning tree by
//!    Prim's algorithm on the dense matrix (the library's default Borůvka tree is approximate,
//!    `approx_min_span_tree=True`; its `match_reference_implementation` is exact) (computed on the fly: O(N²) time, O(N) memory),
//!    edges sorted by weight into a single-linkage tree.
//! 3. The condensed tree for `min_cluster_size` (`lambda = 1 / distance`): a split where both
//!    sides have `min_cluster_size` points makes two clusters; a smaller side's points fall
//!    out of the parent at that lambda.
//! 4. Excess-of-mass selection: a cluster is kept unless its children's stabilities sum to
//!    more; the root is never a cluster. Labels number the selected clusters in id order,
//!    `-1` is noise; the probability of a point is `min(lambda_point, lambda_max) /
//!    lambda_max` with `lambda_max` the largest lambda among its cluster's direct children.
//! 5. [`Hdbscan::approximate_predict`]: the new point's `2 min_samples` nearest training
//!    points, its mutual-reachability-nearest one among them (the new point's core distance
//!    being the distance to its `(min_samples + 1)`-th neighbour), and the cluster of that
//!    neighbour at the new point's lambda (walking up the condensed tree while the
//!    neighbour's cluster was born after that lambda); probability as above.
//!
//! Checked against the library (`tools/hdbscan_check.py`) on umap-learn's 5-d layouts of
//! digits and blobs: the training labels match its default algorithm with ARI 1.0000 and
//! identical probabilities (digits) and ARI 0.998 (blobs; the library's own exact
//! `algorithm="generic"` differs from its default by as much: mutual reachability distances
//! tie often, and the order of tied merges shapes the tree). `approximate_predict` differs
//! from the library only where the library contradicts itself: its prediction data re-selects
//! the clusters in Python (`CondensedTree._select_clusters`), which on digits disagrees with
//! its own fitted `labels_` for 150 of 1618 training points; here the fit's selection is used.
//!
//! Why written here: the crates of the field (`hdbscan` 0.12, `petal-clustering` 0.14) label
//! correctly but expose no condensed tree, lambdas or core distances, which
//! `approximate_predict` and the membership probabilities need, and a fitted model must be
//! saved and reloaded with that state.

mod mst;

use crate::TopicError;
use mst::{core_distances, nearest_k, prim_mst};

/// HDBSCAN's hyper-parameters (BERTopic: `min_cluster_size = min_topic_size = 10`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HdbscanParams {
    /// Smallest cluster.
    pub min_cluster_size: usize,
    /// Neighbours of the core distance, the point itself counted; `None`: `min_cluster_size`.
    pub min_samples: Option<usize>,
}

impl Default for HdbscanParams {
    fn default() -> Self {
        Self {
            min_cluster_size: 10,
            min_samples: None,
        }
    }
}

impl HdbscanParams {
    /// Refuses sizes HDBSCAN cannot use.
    pub fn check(&self) -> Result<(), TopicError> {
        if self.min_cluster_size < 2 {
            return Err(TopicError::InvalidParams(format!(
                "hdbscan: min_cluster_size = {} must be at least 2",
                self.min_cluster_size
            )));
        }
        if self.min_samples == Some(0) {
            return Err(TopicError::InvalidParams(
                "hdbscan: min_samples must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn min_samples(&self) -> usize {
        self.min_samples.unwrap_or(self.min_cluster_size)
    }
}

/// One row of the condensed tree: `child` (a point `< n`, or a cluster `>= n`) leaves or
/// splits from `parent` (a cluster) at `lambda`, with `size` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeRow {
    /// The cluster it leaves.
    pub parent: usize,
    /// A point, or a child cluster.
    pub child: usize,
    /// `1 / distance` at which it leaves (infinite at distance 0).
    pub lambda: f64,
    /// Points in `child`.
    pub size: usize,
}

/// A fitted HDBSCAN: what `approximate_predict` needs, and the training labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Hdbscan {
    min_samples: usize,
    dim: usize,
    data: Vec<f64>,
    core: Vec<f64>,
    predict_core: Vec<f64>,
    tree: Vec<TreeRow>,
    selected: Vec<usize>,
    // Derived from the above.
    labels: Vec<i64>,
    probabilities: Vec<f64>,
    /// Per point: (its parent cluster, the lambda at which it leaves it).
    point_row: Vec<(usize, f64)>,
    /// Per cluster id - n: (parent cluster, birth lambda) (the root: (root, 0)).
    cluster_row: Vec<(usize, f64)>,
    /// Per cluster id - n: the label of its selected ancestor-or-self, or -1.
    cluster_label: Vec<i64>,
    /// Per cluster id - n: the max lambda among its selected ancestor's direct children.
    max_lambda: Vec<f64>,
}

impl Hdbscan {
    /// Clusters `data` (`n x dim`, row-major, finite).
    pub fn fit(data: &[f32], dim: usize, params: &HdbscanParams) -> Result<Self, TopicError> {
        params.check()?;
        if dim == 0 || !data.len().is_multiple_of(dim) || data.len() / dim < 2 {
            return Err(TopicError::InvalidInput(format!(
                "hdbscan needs at least 2 rows of {dim} columns, got {} values",
                data.len()
            )));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(TopicError::InvalidInput(
                "hdbscan input is not finite".into(),
            ));
        }
        let n = data.len() / dim;
        let data: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
        let min_samples = params.min_samples().min(n - 1);
        let (core, predict_core) = core_distances(&data, dim, min_samples);
        let mst = prim_mst(&data, dim, &core);
        let linkage = single_linkage(n, mst);
        let tree = condense(n, &linkage, params.min_cluster_size);
        let selected = select_eom(n, &tree);
        Self::from_parts(min_samples, dim, data, core, predict_core, tree, selected)
            .map_err(|m| TopicError::InvalidInput(format!("hdbscan: {m}")))
    }

    /// Rebuilds a fitted model from its saved state, checking that the condensed tree is a
    /// tree over `n` points (each point and non-root cluster a child exactly once, a cluster's
    /// children numbered after it) and the selection a set of its non-root clusters.
    pub(crate) fn from_parts(
        min_samples: usize,
        dim: usize,
        data: Vec<f64>,
        core: Vec<f64>,
        predict_core: Vec<f64>,
        tree: Vec<TreeRow>,
        selected: Vec<usize>,
    ) -> Result<Self, String> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(format!("{} values are not rows of {dim}", data.len()));
        }
        let n = data.len() / dim;
        if n < 2 || core.len() != n {
            return Err(format!("{} core distances for {n} points", core.len()));
        }
        if min_samples == 0 || min_samples > n {
            return Err(format!("min_samples = {min_samples} is not within 1..={n}"));
        }
        if data.iter().any(|v| !v.is_finite()) || core.iter().any(|v| !(v.is_finite() && *v >= 0.0))
        {
            return Err("a point or core distance is not a finite number".into());
        }
        let n_clusters = tree
            .iter()
            .map(|r| r.parent.max(if r.child >= n { r.child } else { 0 }))
            .max()
            .map_or(1, |m| m.saturating_sub(n) + 1);
        if tree.len() > 2 * n || n_clusters > n {
            return Err(format!(
                "{} rows and {n_clusters} clusters for {n} points",
                tree.len()
            ));
        }
        let mut point_row = vec![(usize::MAX, 0f64); n];
        let mut cluster_row = vec![(usize::MAX, 0f64); n_clusters];
        cluster_row[0] = (n, 0.0);
        for (i, r) in tree.iter().enumerate() {
            if r.parent < n || r.parent >= n + n_clusters {
                return Err(format!("row {i}: parent {} is not a cluster", r.parent));
            }
            if r.lambda.is_nan() || r.lambda < 0.0 || r.size == 0 || r.size > n {
                return Err(format!(
                    "row {i}: lambda {} or size {} is out of range",
                    r.lambda, r.size
                ));
            }
            if r.child < n {
                if point_row[r.child].0 != usize::MAX || r.size != 1 {
                    return Err(format!(
                        "row {i}: point {} is placed twice or has size {}",
                        r.child, r.size
                    ));
                }
                point_row[r.child] = (r.parent, r.lambda);
            } else {
                let c = r.child - n;
                if r.child <= r.parent || cluster_row[c].0 != usize::MAX || c == 0 {
                    return Err(format!(
                        "row {i}: cluster {} is not a new child of {}",
                        r.child, r.parent
                    ));
                }
                cluster_row[c] = (r.parent, r.lambda);
            }
        }
        if let Some(p) = point_row.iter().position(|r| r.0 == usize::MAX) {
            return Err(format!("point {p} is not in the tree"));
        }
        if let Some(c) = cluster_row.iter().position(|r| r.0 == usize::MAX) {
            return Err(format!("cluster {} has no parent", c + n));
        }
        let mut selected = selected;
        selected.sort_unstable();
        selected.dedup();
        if selected.iter().any(|&c| c <= n || c >= n + n_clusters) {
            return Err("a selected cluster is not a non-root cluster of the tree".into());
        }
        // Selected clusters must not nest: walk each one's ancestors.
        let is_selected = {
            let mut s = vec![false; n_clusters];
            selected.iter().for_each(|&c| s[c - n] = true);
            s
        };
        // The max lambda of each cluster's direct children (hdbscan's `max_lambdas`).
        let mut direct_max = vec![0f64; n_clusters];
        for r in &tree {
            let m = &mut direct_max[r.parent - n];
            *m = m.max(r.lambda);
        }
        // Clusters in id order see their parent first (parent < child), so one pass gives each
        // its selected ancestor-or-self.
        let mut cluster_label = vec![-1i64; n_clusters];
        let mut max_lambda = vec![0f64; n_clusters];
        let mut owner = vec![usize::MAX; n_clusters];
        for c in 0..n_clusters {
            let parent_owner = if c == 0 {
                usize::MAX
            } else {
                owner[cluster_row[c].0 - n]
            };
            if is_selected[c] && parent_owner != usize::MAX {
                return Err(format!("selected cluster {} lies inside another", c + n));
            }
            owner[c] = if is_selected[c] { c } else { parent_owner };
            if owner[c] != usize::MAX {
                let label = selected
                    .binary_search(&(owner[c] + n))
                    .unwrap_or(usize::MAX);
                cluster_label[c] = label as i64;
                max_lambda[c] = direct_max[owner[c]];
            }
        }
        let labels: Vec<i64> = point_row
            .iter()
            .map(|&(p, _)| cluster_label[p - n])
            .collect();
        let probabilities = labels
            .iter()
            .zip(&point_row)
            .map(|(&l, &(p, lambda))| {
                if l < 0 {
                    0.0
                } else {
                    let max = max_lambda[p - n];
                    if max == 0.0 || !lambda.is_finite() {
                        1.0
                    } else {
                        lambda.min(max) / max
                    }
                }
            })
            .collect();
        Ok(Self {
            min_samples,
            dim,
            data,
            core,
            predict_core,
            tree,
            selected,
            labels,
            probabilities,
            point_row,
            cluster_row,
            cluster_label,
            max_lambda,
        })
    }

    /// The training labels (`-1`: noise; clusters `0..n_clusters` in condensed-tree order).
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The training membership probabilities (0 for noise).
    pub fn probabilities(&self) -> &[f64] {
        &self.probabilities
    }

    /// Number of clusters found.
    pub fn n_clusters(&self) -> usize {
        self.selected.len()
    }

    /// The condensed tree.
    pub fn condensed_tree(&self) -> &[TreeRow] {
        &self.tree
    }

    /// The selected clusters' ids in the condensed tree (label `i` is `selected()[i]`).
    pub fn selected(&self) -> &[usize] {
        &self.selected
    }

    /// Core distances of the training points (clustering's, then `approximate_predict`'s).
    pub fn core_distances(&self) -> (&[f64], &[f64]) {
        (&self.core, &self.predict_core)
    }

    /// `min_samples` as fitted.
    pub fn min_samples(&self) -> usize {
        self.min_samples
    }

    /// Dimensions of the points.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The label and probability of each new point (`n x dim`, row-major), as the hdbscan
    /// library's `approximate_predict` gives them.
    pub fn approximate_predict(&self, points: &[f32]) -> Result<Vec<(i64, f64)>, TopicError> {
        let dim = self.dim;
        if !points.len().is_multiple_of(dim) {
            return Err(TopicError::InvalidInput(format!(
                "{} values are not rows of {dim}",
                points.len()
            )));
        }
        if points.iter().any(|v| !v.is_finite()) {
            return Err(TopicError::InvalidInput(
                "points to predict are not finite".into(),
            ));
        }
        let n = self.core.len();
        let k = (2 * self.min_samples).min(n);
        use rayon::prelude::*;
        Ok(points
            .par_chunks(dim)
            .map(|p| {
                let p: Vec<f64> = p.iter().map(|&v| f64::from(v)).collect();
                let nearest = nearest_k(&self.data, dim, &p, k);
                self.find_cluster(&nearest)
            })
            .collect())
    }

    fn find_cluster(&self, nearest: &[(f64, usize)]) -> (i64, f64) {
        let n = self.core.len();
        let point_core = nearest[self.min_samples.min(nearest.len() - 1)].0;
        let (mut best, mut best_d) = (nearest[0].1, f64::INFINITY);
        for &(d, j) in nearest {
            let mr = d.max(point_core).max(self.predict_core[j]);
            if mr < best_d {
                best_d = mr;
                best = j;
            }
        }
        let lambda = if best_d > 0.0 { 1.0 / best_d } else { f64::MAX };
        let (mut cluster, neighbour_lambda) = self.point_row[best];
        if neighbour_lambda > lambda {
            while cluster > n {
                let (parent, birth) = self.cluster_row[cluster - n];
                if birth < lambda {
                    break;
                }
                cluster = parent;
            }
        }
        let label = self.cluster_label[cluster - n];
        if label < 0 {
            return (-1, 0.0);
        }
        let max = self.max_lambda[cluster - n];
        let prob = if max > 0.0 {
            lambda.min(max) / max
        } else {
            1.0
        };
        (label, prob)
    }
}

/// scipy-style single linkage: `(left, right, distance, size)` merges, node `n + i` made by
/// merge `i`, from the MST edges sorted by weight (stable).
fn single_linkage(n: usize, mut mst: Vec<(usize, usize, f64)>) -> Vec<(usize, usize, f64, usize)> {
    mst.sort_by(|x, y| x.2.total_cmp(&y.2));
    let mut parent: Vec<usize> = (0..2 * n - 1).collect();
    let mut size = vec![1usize; 2 * n - 1];
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut out = Vec::with_capacity(n - 1);
    for (i, (a, b, d)) in mst.into_iter().enumerate() {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        let node = n + i;
        parent[ra] = node;
        parent[rb] = node;
        size[node] = size[ra] + size[rb];
        out.push((ra, rb, d, size[node]));
    }
    out
}

/// hdbscan's `condense_tree`.
fn condense(
    n: usize,
    linkage: &[(usize, usize, f64, usize)],
    min_cluster_size: usize,
) -> Vec<TreeRow> {
    let root = 2 * n - 2;
    let size_of = |node: usize| if node < n { 1 } else { linkage[node - n].3 };
    let children_of = |node: usize| (linkage[node - n].0, linkage[node - n].1);
    // Breadth-first from the root.
    let bfs = |start: usize| -> Vec<usize> {
        let mut out = vec![start];
        let mut at = 0;
        while at < out.len() {
            let node = out[at];
            if node >= n {
                let (l, r) = children_of(node);
                out.push(l);
                out.push(r);
            }
            at += 1;
        }
        out
    };
    let mut relabel = vec![0usize; root + 1];
    relabel[root] = n;
    let mut next_label = n + 1;
    let mut ignore = vec![false; root + 1];
    let mut rows = Vec::new();
    for node in bfs(root) {
        if ignore[node] || node < n {
            continue;
        }
        let (left, right) = children_of(node);
        let d = linkage[node - n].2;
        let lambda = if d > 0.0 { 1.0 / d } else { f64::INFINITY };
        let (lc, rc) = (size_of(left), size_of(right));
        let parent = relabel[node];
        let fall_out = |sub: usize, rows: &mut Vec<TreeRow>, ignore: &mut Vec<bool>| {
            for s in bfs(sub) {
                if s < n {
                    rows.push(TreeRow {
                        parent,
                        child: s,
                        lambda,
                        size: 1,
                    });
                }
                ignore[s] = true;
            }
        };
        if lc >= min_cluster_size && rc >= min_cluster_size {
            for (child, count) in [(left, lc), (right, rc)] {
                relabel[child] = next_label;
                next_label += 1;
                rows.push(TreeRow {
                    parent,
                    child: relabel[child],
                    lambda,
                    size: count,
                });
            }
        } else if lc < min_cluster_size && rc < min_cluster_size {
            fall_out(left, &mut rows, &mut ignore);
            fall_out(right, &mut rows, &mut ignore);
        } else if lc < min_cluster_size {
            relabel[right] = parent;
            fall_out(left, &mut rows, &mut ignore);
        } else {
            relabel[left] = parent;
            fall_out(right, &mut rows, &mut ignore);
        }
    }
    rows
}

/// Excess-of-mass selection over the condensed tree (the root never selected).
fn select_eom(n: usize, tree: &[TreeRow]) -> Vec<usize> {
    let n_clusters = tree
        .iter()
        .map(|r| r.parent.max(r.child))
        .max()
        .map_or(0, |m| m + 1)
        .saturating_sub(n);
    if n_clusters <= 1 {
        return Vec::new();
    }
    let mut birth = vec![0f64; n_clusters];
    let mut children = vec![Vec::new(); n_clusters];
    for r in tree.iter().filter(|r| r.child >= n) {
        birth[r.child - n] = r.lambda;
        children[r.parent - n].push(r.child - n);
    }
    let mut stability = vec![0f64; n_clusters];
    for r in tree {
        stability[r.parent - n] += (r.lambda - birth[r.parent - n]) * r.size as f64;
    }
    let mut is_cluster = vec![true; n_clusters];
    is_cluster[0] = false;
    for c in (1..n_clusters).rev() {
        let subtree: f64 = children[c].iter().map(|&ch| stability[ch]).sum();
        if subtree > stability[c] {
            is_cluster[c] = false;
            stability[c] = subtree;
        } else {
            let mut stack = children[c].clone();
            while let Some(s) = stack.pop() {
                is_cluster[s] = false;
                stack.extend_from_slice(&children[s]);
            }
        }
    }
    (1..n_clusters)
        .filter(|&c| is_cluster[c])
        .map(|c| c + n)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Three tight groups on a line plus two far points.
    fn groups() -> Vec<f32> {
        let mut x = Vec::new();
        for centre in [0.0f32, 10.0, 20.0] {
            for i in 0..6 {
                x.push(centre + i as f32 * 0.1);
            }
        }
        x.extend([50.0, -40.0]);
        x
    }

    #[test]
    fn finds_the_groups_and_marks_the_far_points_noise() {
        let x = groups();
        let params = HdbscanParams {
            min_cluster_size: 4,
            min_samples: Some(2),
        };
        let h = Hdbscan::fit(&x, 1, &params).unwrap();
        let l = h.labels();
        assert_eq!(h.n_clusters(), 3, "{l:?}");
        for g in 0..3 {
            assert!(
                l[g * 6..g * 6 + 6].iter().all(|&v| v == l[g * 6] && v >= 0),
                "{l:?}"
            );
        }
        assert_eq!(&l[18..], &[-1, -1]);
        assert!(h.probabilities()[..18].iter().all(|&p| p > 0.0 && p <= 1.0));
        // New points: one inside each group, one far away.
        let pred = h.approximate_predict(&[0.25, 10.25, 20.25, 200.0]).unwrap();
        assert_eq!(pred[0].0, l[0]);
        assert_eq!(pred[1].0, l[6]);
        assert_eq!(pred[2].0, l[12]);
        assert_eq!(pred[3], (-1, 0.0));
    }

    #[test]
    fn a_tree_that_is_not_a_tree_is_refused() {
        let x = groups();
        let h = Hdbscan::fit(
            &x,
            1,
            &HdbscanParams {
                min_cluster_size: 4,
                min_samples: Some(2),
            },
        )
        .unwrap();
        let parts = |tree: Vec<TreeRow>, selected: Vec<usize>| {
            Hdbscan::from_parts(
                2,
                1,
                h.data.clone(),
                h.core.clone(),
                h.predict_core.clone(),
                tree,
                selected,
            )
        };
        assert_eq!(parts(h.tree.clone(), h.selected.clone()).unwrap(), h);
        let mut t = h.tree.clone();
        t.pop();
        assert!(parts(t, h.selected.clone()).is_err(), "a point missing");
        let mut t = h.tree.clone();
        t.push(t[0]);
        assert!(parts(t, h.selected.clone()).is_err(), "a point twice");
        let mut t = h.tree.clone();
        t[0].parent = 3;
        assert!(parts(t, h.selected.clone()).is_err(), "a point as parent");
        let mut t = h.tree.clone();
        t[0].lambda = f64::NAN;
        assert!(parts(t, h.selected.clone()).is_err(), "NaN lambda");
        assert!(
            parts(h.tree.clone(), vec![20]).is_err(),
            "the root selected"
        );
        assert!(parts(h.tree.clone(), vec![999]).is_err(), "no such cluster");
    }
}
