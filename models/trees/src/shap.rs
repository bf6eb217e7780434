//! Exact path-dependent TreeSHAP (Lundberg, Erion & Lee, "Consistent Individualized Feature
//! Attribution for Tree Ensembles", Algorithm 2), as xgboost's `pred_contribs=True` and
//! LightGBM's `pred_contrib=True` compute it: node covers weight the paths not taken.
//!
//! Written by hand: no maintained Rust crate implements TreeSHAP over an external tree layout.

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

struct Ctx<'a> {
    e: &'a TreeEnsemble,
    row: &'a [f32],
    phi: &'a mut [f64],
    scale: f64,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn recurse(
        &mut self,
        node: usize,
        buf: &mut [PathElement],
        mut depth: usize,
        parent_zero: f64,
        parent_one: f64,
        parent_feature: i64,
    ) {
        // This level's path starts right after the parent's (which holds depth elements
        // plus the one extended below): copy it forward, as the reference does.
        let (parent, rest) = buf.split_at_mut(depth + 1);
        rest[..depth + 1].copy_from_slice(parent);
        let path = rest;
        extend(path, depth, parent_zero, parent_one, parent_feature);
        let n: Node = self.e.nodes[node];
        if n.is_leaf() {
            let leaf = f64::from(n.value) * self.scale;
            for i in 1..=depth {
                let w = unwound_sum(path, depth, i);
                let el = path[i];
                self.phi[el.feature as usize] += w * (el.one_fraction - el.zero_fraction) * leaf;
            }
            return;
        }
        let feature = n.feature() as i64;
        let x = self.row[n.feature()];
        let hot = next(&n, x, &self.e.cat_sets, &self.e.cat_bits) as usize;
        let cold = if hot == n.left as usize {
            n.right as usize
        } else {
            n.left as usize
        };
        let cover = self.e.covers[node];
        let (hot_zero, cold_zero) = if cover > 0.0 {
            (self.e.covers[hot] / cover, self.e.covers[cold] / cover)
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
        self.recurse(hot, path, depth + 1, hot_zero * in_zero, in_one, feature);
        self.recurse(cold, path, depth + 1, cold_zero * in_zero, 0.0, feature);
    }
}

/// The cover-weighted mean output of the subtree at `node` (the tree's expected value at the
/// root).
pub(crate) fn expected_value(e: &TreeEnsemble, node: usize) -> f64 {
    let n = e.nodes[node];
    if n.is_leaf() {
        return f64::from(n.value);
    }
    let (l, r) = (n.left as usize, n.right as usize);
    let cover = e.covers[node];
    if cover <= 0.0 {
        return 0.5 * (expected_value(e, l) + expected_value(e, r));
    }
    (e.covers[l] * expected_value(e, l) + e.covers[r] * expected_value(e, r)) / cover
}

/// Contributions of `row` (which has `num_features` values): per output group,
/// `num_features` contributions then the bias, summing to the group's margin.
pub fn contributions(e: &TreeEnsemble, row: &[f32]) -> Vec<f32> {
    let nf = e.num_features;
    let mut phi = vec![0f64; (nf + 1) * e.num_groups];
    let max_depth = e.tree_depth.iter().copied().max().unwrap_or(0) as usize + 2;
    let mut buf = vec![PathElement::default(); max_depth * (max_depth + 1) / 2 + max_depth + 2];
    for (t, &root) in e.roots.iter().enumerate() {
        let g = e.tree_group[t] as usize;
        let scale = f64::from(e.tree_weight[t]);
        let out = &mut phi[g * (nf + 1)..(g + 1) * (nf + 1)];
        out[nf] += e.tree_expected[t] * scale;
        let mut ctx = Ctx {
            e,
            row,
            phi: out,
            scale,
        };
        ctx.recurse(root as usize, &mut buf, 0, 1.0, 1.0, -1);
    }
    for g in 0..e.num_groups {
        phi[g * (nf + 1) + nf] += e.base_margin[g];
    }
    phi.into_iter().map(|v| v as f32).collect()
}
