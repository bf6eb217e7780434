//! Exact path-dependent TreeSHAP (Lundberg, Erion & Lee, "Consistent Individualized Feature
//! Attribution for Tree Ensembles", Algorithm 2), as xgboost's `pred_contribs=True` and
//! LightGBM's `pred_contrib=True` compute it: node covers weight the paths not taken.
//!
//! Two implementations of the same values:
//!
//! * [`FastShap`] (in `shap/fast.rs`): per-split weights built once per model, after Linear
//!   TreeSHAP (Yu et al. 2022) with Gauss–Legendre points, so a row costs two passes over each
//!   tree's splits, `O(⌈d/2⌉)` flops per split for `d` distinct features on a path (about 14x
//!   Algorithm 2 on 100 trees of depth 6). It covers the trees within its bounds
//!   ([`MAX_PATH_FEATURES`], [`DEFAULT_TABLE_BUDGET`]) and hands every other tree to the
//!   algorithm below.
//! * [`reference_contributions`]: Algorithm 2 itself, `O(L·D²)` per tree and row, with an
//!   explicit stack (no recursion, so no tree depth can overflow the thread's stack).
//!
//! They agree to about 1e-15 of the row's largest contribution while paths have up to about
//! 40 distinct features; past that Algorithm 2's unwinding (xgboost's too) loses accuracy
//! and the weights do not (see `shap/fast.rs`).
//!
//! Written by hand: no maintained Rust crate implements TreeSHAP over an external tree layout.

mod fast;
#[cfg(test)]
mod tests;

pub use fast::{DEFAULT_TABLE_BUDGET, FastShap, MAX_PATH_FEATURES};

use crate::TreeEnsemble;
use crate::node::{Node, next};

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: i64,
    zero_fraction: f64,
    one_fraction: f64,
    pweight: f64,
}

fn recip(n: usize) -> f64 {
    if n < RECIP.len() {
        RECIP[n]
    } else {
        1.0 / n as f64
    }
}

fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i64) {
    path[depth] = PathElement {
        feature,
        zero_fraction: zero,
        one_fraction: one,
        pweight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let inv_d1 = recip(depth + 1);
    for i in (0..depth).rev() {
        path[i + 1].pweight += one * path[i].pweight * (i + 1) as f64 * inv_d1;
        path[i].pweight = zero * path[i].pweight * (depth - i) as f64 * inv_d1;
    }
}

fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let d1 = (depth + 1) as f64;
    let inv_d1 = recip(depth + 1);
    let mut next_one = path[depth].pweight;
    if one != 0.0 {
        let scale = d1 / one;
        for i in (0..depth).rev() {
            let tmp = path[i].pweight;
            path[i].pweight = next_one * scale * recip(i + 1);
            next_one = tmp - path[i].pweight * zero * (depth - i) as f64 * inv_d1;
        }
    } else {
        // `zero` is not 0 here: an element with both fractions 0 never joins a path (see
        // `tree_contributions`).
        let scale = d1 / zero;
        for i in (0..depth).rev() {
            path[i].pweight = path[i].pweight * scale * recip(depth - i);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

/// Reciprocals of 1..=64, so the hot loop multiplies instead of dividing.
const RECIP: [f64; 65] = {
    let mut r = [0.0; 65];
    let mut i = 1;
    while i < 65 {
        r[i] = 1.0 / i as f64;
        i += 1;
    }
    r
};

fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let d1 = (depth + 1) as f64;
    let inv_d1 = 1.0 / d1;
    let mut next_one = path[depth].pweight;
    let mut total = 0.0;
    if one != 0.0 {
        let scale = d1 / one;
        for i in (0..depth).rev() {
            let r = recip(i + 1);
            let tmp = next_one * scale * r;
            total += tmp;
            next_one = path[i].pweight - tmp * zero * ((depth - i) as f64 * inv_d1);
        }
    } else if zero != 0.0 {
        let inv_zero = 1.0 / zero;
        for i in (0..depth).rev() {
            let r = recip(depth - i);
            total += path[i].pweight * inv_zero * d1 * r;
        }
    }
    total
}

/// A node waiting to be visited by [`tree_contributions`]: its path starts at `offset` in
/// the path buffer, holds `depth + 1` elements once extended by (`zero`, `one`, `feature`),
/// and is first copied (`depth` elements) from the parent's, which starts at `parent`.
#[derive(Debug, Clone, Copy)]
struct Visit {
    node: usize,
    offset: usize,
    parent: usize,
    depth: usize,
    zero: f64,
    one: f64,
    feature: i64,
}

/// Reusable buffers of [`tree_contributions`].
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    path: Vec<PathElement>,
    stack: Vec<Visit>,
}

/// Adds one tree's contributions (times `scale`) for `row` into `phi` (`num_features`
/// values, no bias): Algorithm 2 of the paper (and xgboost's `TreeShap`), walked with an
/// explicit stack in the same order as the recursive original (hot child first), so the sums
/// are the same to the bit. Each level's path is a copy of its parent's plus one element, at
/// the next free offset of `s.path`: level `l` holds at most `l + 1` elements (and at most
/// one more than the features), so the buffer stays within `(depth + 1)(depth + 2) / 2`
/// elements of 32 bytes (about 1 MB at depth 256), and the stack within `depth + 1` visits.
pub(crate) fn tree_contributions(
    e: &TreeEnsemble,
    root: usize,
    row: &[f32],
    scale: f64,
    phi: &mut [f64],
    s: &mut Scratch,
) {
    s.stack.clear();
    s.stack.push(Visit {
        node: root,
        offset: 0,
        parent: 0,
        depth: 0,
        zero: 1.0,
        one: 1.0,
        feature: -1,
    });
    while let Some(v) = s.stack.pop() {
        let end = v.offset + v.depth + 1;
        if s.path.len() < end {
            s.path.resize(end, PathElement::default());
        }
        s.path.copy_within(v.parent..v.parent + v.depth, v.offset);
        let path = &mut s.path[v.offset..end];
        let mut depth = v.depth;
        extend(path, depth, v.zero, v.one, v.feature);
        let n: Node = e.nodes[v.node];
        if n.is_leaf() {
            let leaf = f64::from(n.value) * scale;
            for i in 1..=depth {
                let w = unwound_sum(path, depth, i);
                let el = path[i];
                phi[el.feature as usize] += w * (el.one_fraction - el.zero_fraction) * leaf;
            }
            continue;
        }
        let feature = n.feature() as i64;
        let x = row[n.feature()];
        let hot = next(&n, x, &e.cat_sets, &e.cat_bits) as usize;
        let cold = if hot == n.left as usize {
            n.right as usize
        } else {
            n.left as usize
        };
        let cover = e.covers[v.node];
        let (hot_zero, cold_zero) = if cover > 0.0 {
            (e.covers[hot] / cover, e.covers[cold] / cover)
        } else {
            (0.0, 0.0)
        };
        let mut in_zero = 1.0;
        let mut in_one = 1.0;
        // A feature split on again further up: undo that split first.
        if let Some(k) = (1..=depth).find(|&k| path[k].feature == feature) {
            in_zero = path[k].zero_fraction;
            in_one = path[k].one_fraction;
            unwind(path, depth, k);
            depth -= 1;
        }
        // The children's paths follow this one (`depth + 1` elements from `v.offset`).
        let child = |node, zero, one| Visit {
            node,
            offset: v.offset + depth + 1,
            parent: v.offset,
            depth: depth + 1,
            zero,
            one,
            feature,
        };
        // A child whose fractions are both 0 weighs nothing: every term of every leaf below
        // it has a factor 0. The original descends anyway and, should the feature be split on
        // again below, unwinds by dividing by 0 (NaN contributions); skipping is exact.
        let cold_zero = cold_zero * in_zero;
        if cold_zero != 0.0 {
            s.stack.push(child(cold, cold_zero, 0.0));
        }
        let hot_zero = hot_zero * in_zero;
        if hot_zero != 0.0 || in_one != 0.0 {
            s.stack.push(child(hot, hot_zero, in_one));
        }
    }
}

/// The cover-weighted mean output of the subtree at `node` (the tree's expected value at the
/// root). Post-order with an explicit stack: no recursion, whatever the depth.
pub(crate) fn expected_value(e: &TreeEnsemble, node: usize) -> f64 {
    // (node, children done?) and the values of finished subtrees.
    let mut stack = vec![(node, false)];
    let mut values: Vec<f64> = Vec::new();
    while let Some((i, done)) = stack.pop() {
        let n = e.nodes[i];
        if n.is_leaf() {
            values.push(f64::from(n.value));
            continue;
        }
        let (l, r) = (n.left as usize, n.right as usize);
        if !done {
            stack.push((i, true));
            stack.push((r, false));
            stack.push((l, false));
            continue;
        }
        // The left subtree finished first, so its value is below the right one's.
        let vr = values.pop().unwrap_or(0.0);
        let vl = values.pop().unwrap_or(0.0);
        let cover = e.covers[i];
        values.push(if cover <= 0.0 {
            0.5 * (vl + vr)
        } else {
            (e.covers[l] * vl + e.covers[r] * vr) / cover
        });
    }
    values.pop().unwrap_or(0.0)
}

/// Contributions of `row` (which has `num_features` values): per output group,
/// `num_features` contributions then the bias, summing to the group's margin.
///
/// Computed with the model's [`FastShap`] weights, built on the first call.
pub fn contributions(e: &TreeEnsemble, row: &[f32]) -> Vec<f32> {
    e.shap_weights().contributions(e, row)
}

/// [`contributions`] by Algorithm 2 for every tree (no tables): the fallback of
/// [`FastShap`] and the oracle its tests compare with.
pub fn reference_contributions(e: &TreeEnsemble, row: &[f32]) -> Vec<f32> {
    narrow(reference_phi(e, row))
}

/// [`reference_contributions`] before narrowing to f32.
pub(crate) fn reference_phi(e: &TreeEnsemble, row: &[f32]) -> Vec<f64> {
    let nf = e.num_features;
    let mut phi = vec![0f64; (nf + 1) * e.num_groups];
    let mut s = Scratch::default();
    for (t, &root) in e.roots.iter().enumerate() {
        let g = e.tree_group[t] as usize;
        let scale = f64::from(e.tree_weight[t]);
        let out = &mut phi[g * (nf + 1)..(g + 1) * (nf + 1)];
        out[nf] += e.tree_expected[t] * scale;
        tree_contributions(e, root as usize, row, scale, &mut out[..nf], &mut s);
    }
    add_base_margin(e, &mut phi);
    phi
}

/// Adds the base margins to the biases.
fn add_base_margin(e: &TreeEnsemble, phi: &mut [f64]) {
    let nf = e.num_features;
    for g in 0..e.num_groups {
        phi[g * (nf + 1) + nf] += e.base_margin[g];
    }
}

fn narrow(phi: Vec<f64>) -> Vec<f32> {
    phi.into_iter().map(|v| v as f32).collect()
}
