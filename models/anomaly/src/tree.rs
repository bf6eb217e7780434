//! An Isolation Forest tree as scoring walks it: the complete-tree layout of trees up to
//! [`COMPLETE_MAX_DEPTH`] deep (and the linked one of deeper trees), the block-wise walk of
//! [`crate::IsolationForest::score_rows`], and the checks that turn an artifact's arrays into
//! a tree.

use crate::{RawTree, average_path_length};

/// One tree, flattened: internal nodes test `x[column] <= threshold`; a leaf holds its path
/// length (depth + `c(n_node_samples)`). The threshold is the artifact's f64 threshold
/// rounded down to f32: for an f32 value `x`, `x <= t32` exactly when `x <= t` (as
/// scikit-learn compares its float32 rows).
#[derive(Debug, Clone)]
pub(crate) enum Tree {
    /// A tree of depth at most [`COMPLETE_MAX_DEPTH`] (scikit-learn grows its trees to
    /// `ceil(log2(max_samples))`, 8 by default), laid out as the complete tree of its depth
    /// `D`: node `a`'s children are `2a + 1` and `2a + 2`, so a walk loads no child index and
    /// takes exactly `D` steps without a branch. A leaf above the last level becomes a chain
    /// of tests that always hold (`+inf` thresholds) down to the last level, which holds the
    /// path lengths.
    Complete {
        /// The `2^D - 1` tests `(column, threshold)`, breadth first.
        tests: Vec<(u32, f32)>,
        /// The `2^D` path lengths of the last level.
        leaves: Vec<f64>,
        /// `D`.
        depth: u32,
    },
    /// Any deeper tree, as its nodes.
    Linked {
        /// Per node: `(column, threshold, left, right)`. A leaf `i` is `(0, +inf, i, i)`.
        nodes: Vec<(u32, f32, u32, u32)>,
        /// Per node: the path length of a leaf (unused for internal nodes).
        path: Vec<f64>,
    },
}

/// The deepest tree laid out as a complete tree (1,023 tests and 1,024 leaves, 16 KiB).
pub(crate) const COMPLETE_MAX_DEPTH: usize = 10;

impl Tree {
    pub(crate) fn path_length(&self, row: &[f32]) -> f64 {
        match self {
            Tree::Complete {
                tests,
                leaves,
                depth,
            } => {
                let mut at = 0usize;
                for _ in 0..*depth {
                    let (column, threshold) = tests[at];
                    at = 2 * at + 1 + usize::from(row[column as usize] > threshold);
                }
                leaves[at - tests.len()]
            }
            Tree::Linked { nodes, path } => {
                let mut at = 0usize;
                loop {
                    let (column, threshold, left, right) = nodes[at];
                    if threshold == f32::INFINITY {
                        return path[at];
                    }
                    at = if row[column as usize] <= threshold {
                        left as usize
                    } else {
                        right as usize
                    };
                }
            }
        }
    }

    /// Adds the path lengths of a block's rows to `sums` (`cols`: the block column by
    /// column, [`BLOCK`] values per column, the rows past `n` padding). A complete tree's
    /// first [`TOP_LEVELS`] levels are decided for the whole block at once: each test of those
    /// levels compares a whole column against its threshold (vector instructions, no
    /// dependent loads), and a row keeps the outcome of the one test its walk reaches. The
    /// rest of each walk goes node by node, [`LANES`] rows side by side: the walks are
    /// independent, so their loads overlap instead of waiting on each other.
    #[inline(always)]
    pub(crate) fn add_block(&self, cols: &[[f32; BLOCK]], n: usize, sums: &mut [f64; BLOCK]) {
        match self {
            Tree::Complete {
                tests,
                leaves,
                depth,
            } => {
                let top = (*depth as usize).min(TOP_LEVELS);
                let mut pos = [0u32; BLOCK];
                for level in 0..top {
                    let first = (1usize << level) - 1;
                    let mut bit = [0u32; BLOCK];
                    for (j, &(column, threshold)) in tests[first..2 * first + 1].iter().enumerate()
                    {
                        let col = &cols[column as usize];
                        for ((b, p), x) in bit.iter_mut().zip(&pos).zip(col) {
                            *b |= u32::from(*p == j as u32) & u32::from(*x > threshold);
                        }
                    }
                    for (p, b) in pos.iter_mut().zip(bit) {
                        *p = 2 * *p + b;
                    }
                }
                let start = (1usize << top) - 1;
                let rest = *depth as usize - top;
                let full = n / LANES * LANES;
                for (k0, s) in (0..full).step_by(LANES).zip(sums.chunks_exact_mut(LANES)) {
                    let mut at: [usize; LANES] =
                        std::array::from_fn(|k| start + pos[k0 + k] as usize);
                    for _ in 0..rest {
                        for (k, a) in at.iter_mut().enumerate() {
                            let (column, threshold) = tests[*a];
                            *a =
                                2 * *a + 1 + usize::from(cols[column as usize][k0 + k] > threshold);
                        }
                    }
                    for (s, a) in s.iter_mut().zip(at) {
                        *s += leaves[a - tests.len()];
                    }
                }
                for r in full..n {
                    let mut a = start + pos[r] as usize;
                    for _ in 0..rest {
                        let (column, threshold) = tests[a];
                        a = 2 * a + 1 + usize::from(cols[column as usize][r] > threshold);
                    }
                    sums[r] += leaves[a - tests.len()];
                }
            }
            Tree::Linked { .. } => {
                let mut row = vec![0f32; cols.len()];
                for (r, s) in sums[..n].iter_mut().enumerate() {
                    for (v, col) in row.iter_mut().zip(cols) {
                        *v = col[r];
                    }
                    *s += self.path_length(&row);
                }
            }
        }
    }
}

/// Rows scored together by [`IsolationForest::score_rows`], each tree over the whole block.
pub(crate) const BLOCK: usize = 64;
/// The levels of a complete tree decided a whole block at a time (see [`Tree::add_block`]).
const TOP_LEVELS: usize = 4;

/// The largest f32 at or below `t` (finite `t`; below f32's range, -inf): an f32 `x` has
/// `x <= t` exactly when `x <= round_down_f32(t)`. Never +inf (a leaf's mark).
pub(crate) fn round_down_f32(t: f64) -> f32 {
    let c = t as f32;
    if f64::from(c) > t { c.next_down() } else { c }
}

/// Rows walked side by side by [`Tree::add_block`].
const LANES: usize = 8;

/// Checks and flattens one tree, laid out as a complete tree when it is at most
/// `complete_max_depth` deep.
pub(crate) fn build_tree(
    t: RawTree,
    n_features: usize,
    max_depth: usize,
    complete_max_depth: usize,
) -> Result<Tree, String> {
    let n = t.children_left.len();
    if n == 0 {
        return Err("no nodes".into());
    }
    if [
        t.children_right.len(),
        t.feature.len(),
        t.threshold.len(),
        t.n_node_samples.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err("children_left, children_right, feature, threshold and n_node_samples must have one entry per node".into());
    }
    if n > u32::MAX as usize {
        return Err("too many nodes".into());
    }
    let columns = match t.features {
        Some(f) => {
            if f.is_empty() || f.len() > n_features || f.iter().any(|&c| c >= n_features) {
                return Err(format!(
                    "features must list 1 to {n_features} columns below {n_features}"
                ));
            }
            f
        }
        None => (0..n_features).collect(),
    };
    let mut nodes = Vec::with_capacity(n);
    let mut path = vec![0.0; n];
    let mut depth = vec![0usize; n];
    let mut parents = vec![0u8; n];
    for i in 0..n {
        let (l, r) = (t.children_left[i], t.children_right[i]);
        let samples = t.n_node_samples[i];
        if !(samples.is_finite() && samples >= 1.0) {
            return Err(format!("node {i}: n_node_samples must be at least 1"));
        }
        if l == -1 && r == -1 {
            path[i] = depth[i] as f64 + average_path_length(samples);
            nodes.push((0, f32::INFINITY, i as u32, i as u32));
            continue;
        }
        // Children come after their parent (scikit-learn numbers nodes depth first), so no
        // walk can loop, and each node has one parent.
        let child = |c: i64| -> Result<usize, String> {
            usize::try_from(c)
                .ok()
                .filter(|&c| c > i && c < n)
                .ok_or_else(|| format!("node {i}: child {c} is not a later node below {n}"))
        };
        let (l, r) = (child(l)?, child(r)?);
        if l == r {
            return Err(format!("node {i}: both children are node {l}"));
        }
        for c in [l, r] {
            parents[c] += 1;
            if parents[c] > 1 {
                return Err(format!("node {c} has more than one parent"));
            }
            depth[c] = depth[i] + 1;
            if depth[c] > max_depth {
                return Err(format!("deeper than max_depth ({max_depth})"));
            }
        }
        let column = usize::try_from(t.feature[i])
            .ok()
            .and_then(|f| columns.get(f).copied())
            .ok_or_else(|| format!("node {i}: feature {} is out of range", t.feature[i]))?;
        let threshold = t.threshold[i];
        if !threshold.is_finite() {
            return Err(format!("node {i}: threshold is not a finite number"));
        }
        nodes.push((column as u32, round_down_f32(threshold), l as u32, r as u32));
    }
    if let Some(orphan) = (1..n).find(|&i| parents[i] == 0) {
        return Err(format!("node {orphan} has no parent"));
    }
    let deepest = depth.iter().copied().max().unwrap_or(0);
    if deepest > complete_max_depth {
        return Ok(Tree::Linked { nodes, path });
    }
    let mut tests = vec![(0u32, f32::INFINITY); (1 << deepest) - 1];
    let mut leaves = vec![0.0; 1 << deepest];
    fill_complete(&nodes, &path, 0, 0, &mut tests, &mut leaves);
    Ok(Tree::Complete {
        tests,
        leaves,
        depth: deepest as u32,
    })
}

/// Writes the subtree of `node` at position `at` of a complete tree (see [`Tree::Complete`]):
/// a leaf above the last level fills both sides below it (only the left one is reachable).
fn fill_complete(
    nodes: &[(u32, f32, u32, u32)],
    path: &[f64],
    node: usize,
    at: usize,
    tests: &mut [(u32, f32)],
    leaves: &mut [f64],
) {
    if at >= tests.len() {
        leaves[at - tests.len()] = path[node];
        return;
    }
    let (column, threshold, left, right) = nodes[node];
    let (left, right) = if threshold == f32::INFINITY {
        (node, node)
    } else {
        tests[at] = (column, threshold);
        (left as usize, right as usize)
    };
    fill_complete(nodes, path, left, 2 * at + 1, tests, leaves);
    fill_complete(nodes, path, right, 2 * at + 2, tests, leaves);
}
