//! Path-dependent TreeSHAP in `O(nodes · N)` per tree and row, `N = ⌈d/2⌉` for trees whose
//! leaves split on at most `d` distinct features, with per-node weights built once per model.
//! The formulation is that of Linear TreeSHAP (Yu et al., "Linear TreeShap", NeurIPS 2022):
//! each leaf's part of a contribution is an integral of a polynomial in one variable, and
//! polynomials are summed up the tree as their values at a few fixed points. Here the points
//! are those of Gauss–Legendre quadrature, which integrates the degree `d − 1` polynomials
//! exactly with `⌈d/2⌉` of them.
//!
//! # The algebra
//!
//! Fix a leaf with value `v` whose root path splits on the `d` distinct features `P` (a
//! feature split on several times counts once). Path-dependent TreeSHAP gives each `j ∈ P` a
//! "zero fraction" `z_j`, the product of `cover(child) / cover(node)` over the path's splits
//! on `j` (0 at a node without cover), and a "one fraction" `o_j`: 1 when the row takes the
//! leaf's side at every split on `j`, else 0. The leaf's part of feature `k`'s contribution
//! is the Shapley value of the game `g(S) = v · Π_{j∈S} o_j · Π_{j∈P∖S} z_j`:
//!
//! `φ_k = (o_k − z_k) · v · Σ_{S ⊆ P∖k} w(|S|) Π_{j∈S} o_j Π_{j∈P∖k∖S} z_j`,
//! `w(s) = s! (d − 1 − s)! / d! = ∫₀¹ tˢ (1 − t)^(d−1−s) dt`,
//!
//! so, with the factor `f_j(t) = (1 − t) z_j + t o_j` and `R(t) = Π_{j∈P} f_j(t)`,
//!
//! `φ_k = (o_k − z_k) · v · ∫₀¹ R(t) / f_k(t) dt = Σ_i ω_i · (o_k − z_k) / f_k(t_i) · v R(t_i)`
//!
//! exactly, for the `N`-point Gauss–Legendre rule (`t_i`, `ω_i`) on `[0, 1]`: `R / f_k` is a
//! polynomial of degree `d − 1 <= 2N − 1`.
//!
//! # Over the tree
//!
//! A pass down the tree gives every node the vector `R(t_i)` of its path (times the leaf
//! value at leaves): a child's vector is its parent's times the factor of the split's
//! feature, divided by that feature's factor before the split when the feature was split on
//! further up. A pass up sums the vectors: `H(node)` = Σ over the leaves below of `v R(t_i)`.
//! A split on `k` adds, for each child `c`, `Σ_i ω_i (o − z)/f(t_i) · H_i(c)` with `c`'s
//! fractions, and, when `k` was split on further up, removes the same term with the fractions
//! from before the split (which that earlier split added for these leaves): each leaf is
//! counted once, with the fractions of the last split on `k` above it. The fractions across a
//! split take three combinations (`o` was 1 and the row takes this child, or the other one;
//! or `o` was already 0), so each split keeps, per child and combination, the multiplier of
//! the way down and the weight of the way up: `12 · N` f64. A split between two leaves needs
//! neither pass for its leaves: it keeps, per way the row can go, the sum of its children's
//! multipliers and of their weights times multipliers (`6 · N` f64), and is done in one step.
//!
//! A row costs, per split, `next` and `O(N)` multiply-adds, with no lookups but the row's
//! own; the weights are read in order. Nodes are numbered breadth-first, so the way down does
//! not wait on a product it has just stored. `o = 0` never meets `z = 0` in a division: the
//! weight `(0 − z) / ((1 − t) z)` is `−1 / (1 − t)` for every `z`, and a child without cover
//! gets the vector 0.
//!
//! The values agree with Algorithm 2's to about 1e-15 while paths have up to ~40 distinct
//! features; past that Algorithm 2's unwinding loses accuracy (against the exact per-leaf
//! definition: 1e-8 relative at 80 features, 1e-6 at 100, 1e-3 at 120) while these stay at
//! 1e-15 (see the tests).
//!
//! # Bounds
//!
//! `N` is taken from [`LANES`] (1–8, then 16, 32, 64, 128), so a tree gets weights when its
//! leaves have at most 256 distinct path features ([`MAX_PATH_FEATURES`]; the loader's
//! default depth limit is 256), its covers give finite non-negative fractions, and the
//! ensemble's weights stay within a byte budget ([`DEFAULT_TABLE_BUDGET`], 64 MiB). A split
//! with an internal child takes `24 + 96 N` bytes, one between two leaves `24 + 48 N`: a
//! full tree of depth 6 (`N = 3`) about 15 KiB, of depth 8 (`N = 4`) about 78 KiB, of depth
//! 10 (`N = 5`) about 384 KiB, so 64 MiB holds about 4,400, 840 and 170 such trees. Trees
//! are taken in order while they fit; every other tree goes to Algorithm 2
//! ([`super::tree_contributions`]) at each row, so correctness never depends on the budget.

use super::{Scratch, add_base_margin, narrow, tree_contributions};
use crate::TreeEnsemble;
use crate::node::{LEAF, Node, next};

/// The most distinct features one leaf's path may split on for its tree to get weights.
pub const MAX_PATH_FEATURES: usize = 2 * LANES[LANES.len() - 1];

/// Default cap on the bytes of one ensemble's weights ([`FastShap::new`]).
pub const DEFAULT_TABLE_BUDGET: usize = 64 << 20;

/// Quadrature sizes with a compiled kernel; a tree uses the smallest that covers its paths.
const LANES: [usize; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128];

/// Groups of `N` f64 in a split's weights: multipliers and weights for two children and three
/// combinations.
const PER_SPLIT: usize = 12;

/// Groups of `N` f64 in the weights of a split between two leaves: for each way the row can
/// go (left, right, or o already 0), the sum of the children's multipliers and of their
/// weights times multipliers.
const PER_BOTTOM: usize = 6;

/// The combinations of one fractions across a split, as indices into a child's weights.
const KEEP: u8 = 0; // o was 1 and the row goes to this child: o stays 1
const LOSE: u8 = 1; // o was 1 and the row goes to the other child: o becomes 0
const LOST: u8 = 2; // o was already 0

/// An internal node. Nodes are numbered breadth-first within their tree.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// The split, with `left` and `right` the children's numbers, so [`next`] returns the
    /// number of the child the row goes to.
    node: Node,
    /// This node's number.
    me: u32,
    /// The node whose one fraction this split's feature had before it: the child on this
    /// path of the previous split on the same feature, or the root (whose combination is
    /// always [`KEEP`]) for a first split.
    prev: u32,
}

/// Where one tree's parts are.
#[derive(Debug, Clone, Copy)]
struct TreeParts {
    /// First split, and the counts of splits with an internal child (first) and of splits
    /// between two leaves (after them).
    splits: u32,
    upper: u32,
    bottom: u32,
    /// First f64 of the splits' weights.
    weights: usize,
    /// Nodes in the tree.
    nodes: u32,
    /// Quadrature points.
    lanes: u32,
}

/// TreeSHAP weights of one [`TreeEnsemble`], built once ([`FastShap::new`]) and used for
/// every row ([`FastShap::contributions`]). Values equal [`super::reference_contributions`]'s
/// within f64 rounding.
#[derive(Debug, Clone)]
pub struct FastShap {
    /// Per tree: its parts, or `None` for Algorithm 2.
    trees: Vec<Option<TreeParts>>,
    splits: Vec<Split>,
    weights: Vec<f64>,
    /// Per-row scratch sizes: the most nodes, and nodes times points, of a tree.
    max_nodes: usize,
    max_values: usize,
}

/// A split found by [`layout`]: its feature's zero fraction before it (1 for a first split),
/// and per child the edge's cover ratio and value factor (the leaf's value times the tree's
/// weight for a leaf, else 1).
struct PendingSplit {
    zero_before: f64,
    children: [(f64, f64); 2],
    /// Both children are leaves.
    bottom: bool,
}

impl FastShap {
    /// Weights for `e` within [`DEFAULT_TABLE_BUDGET`] bytes.
    pub fn new(e: &TreeEnsemble) -> Self {
        Self::with_budget(e, DEFAULT_TABLE_BUDGET)
    }

    /// Weights for `e`'s trees, in order, while they fit in `budget` bytes (see
    /// [`FastShap::table_bytes`]); the other trees are computed by Algorithm 2 at each row.
    pub fn with_budget(e: &TreeEnsemble, budget: usize) -> Self {
        let rules: Vec<(Vec<f64>, Vec<f64>)> = LANES.iter().map(|&n| gauss_legendre(n)).collect();
        let mut s = FastShap {
            trees: Vec::with_capacity(e.roots.len()),
            splits: Vec::new(),
            weights: Vec::new(),
            max_nodes: 0,
            max_values: 0,
        };
        let mut full = Vec::new();
        for (t, &root) in e.roots.iter().enumerate() {
            let first = s.splits.len();
            let room = budget.saturating_sub(s.table_bytes());
            let scale = f64::from(e.tree_weight[t]);
            let laid = layout(e, root as usize, scale, &mut s.splits, room);
            let fits = laid.and_then(|(pending, nodes, d)| {
                let rule = LANES.iter().position(|&n| 2 * n >= d)?;
                let bottom = pending.iter().filter(|p| p.bottom).count();
                let groups = (pending.len() - bottom) * PER_SPLIT + bottom * PER_BOTTOM;
                let bytes = groups * LANES[rule] * size_of::<f64>();
                (s.table_bytes() + bytes <= budget).then_some((pending, nodes, rule, bottom))
            });
            let Some((pending, nodes, rule, bottom)) = fits else {
                s.splits.truncate(first);
                s.trees.push(None);
                continue;
            };
            let lanes = LANES[rule];
            let start = s.weights.len();
            // Splits with an internal child first, then those between two leaves, each in
            // breadth-first order.
            let order: Vec<usize> = (0..pending.len())
                .filter(|&i| !pending[i].bottom)
                .chain((0..pending.len()).filter(|&i| pending[i].bottom))
                .collect();
            let splits: Vec<Split> = order.iter().map(|&i| s.splits[first + i]).collect();
            s.splits[first..].copy_from_slice(&splits);
            for &i in &order {
                let p = &pending[i];
                if p.bottom {
                    full.clear();
                    push_weights(p, &rules[rule], &mut full);
                    push_bottom(&full, lanes, &mut s.weights);
                } else {
                    push_weights(p, &rules[rule], &mut s.weights);
                }
            }
            s.max_nodes = s.max_nodes.max(nodes);
            s.max_values = s.max_values.max(nodes * lanes);
            s.trees.push(Some(TreeParts {
                splits: first as u32,
                upper: (pending.len() - bottom) as u32,
                bottom: bottom as u32,
                weights: start,
                nodes: nodes as u32,
                lanes: lanes as u32,
            }));
        }
        s.splits.shrink_to_fit();
        s.weights.shrink_to_fit();
        s
    }

    /// Bytes held by the splits and their weights (what the budget bounds): per split with an
    /// internal child `24 + 96 · N`, per split between two leaves `24 + 48 · N`.
    pub fn table_bytes(&self) -> usize {
        self.weights.len() * size_of::<f64>() + self.splits.len() * size_of::<Split>()
    }

    /// Number of trees with weights (the others use Algorithm 2).
    pub fn tabled_trees(&self) -> usize {
        self.trees.iter().filter(|t| t.is_some()).count()
    }

    /// Contributions of `row` to `e`'s outputs, as [`super::contributions`]: per output group,
    /// `num_features` contributions then the bias. `e` must be the ensemble the weights were
    /// built from.
    ///
    /// # Panics
    ///
    /// When `e` has a different number of trees, or `row` is shorter than a split feature.
    pub fn contributions(&self, e: &TreeEnsemble, row: &[f32]) -> Vec<f32> {
        narrow(self.phi(e, row))
    }

    /// [`FastShap::contributions`] before narrowing to f32.
    pub(crate) fn phi(&self, e: &TreeEnsemble, row: &[f32]) -> Vec<f64> {
        assert_eq!(
            self.trees.len(),
            e.roots.len(),
            "TreeSHAP weights of another model"
        );
        let nf = e.num_features;
        let mut phi = vec![0f64; (nf + 1) * e.num_groups];
        let mut values = vec![0f64; self.max_values];
        let mut combos = vec![0u8; self.max_nodes];
        let mut scratch: Option<Scratch> = None;
        for (t, &root) in e.roots.iter().enumerate() {
            let g = e.tree_group[t] as usize;
            let scale = f64::from(e.tree_weight[t]);
            let out = &mut phi[g * (nf + 1)..(g + 1) * (nf + 1)];
            out[nf] += e.tree_expected[t] * scale;
            let Some(p) = self.trees[t] else {
                let s = scratch.get_or_insert_with(Scratch::default);
                tree_contributions(e, root as usize, row, scale, &mut out[..nf], s);
                continue;
            };
            let w = Walk {
                splits: &self.splits[p.splits as usize..(p.splits + p.upper + p.bottom) as usize],
                upper: p.upper as usize,
                weights: &self.weights[p.weights..],
                e,
                row,
            };
            let phi = &mut out[..nf];
            let values = &mut values[..p.nodes as usize * p.lanes as usize];
            let combos = &mut combos[..p.nodes as usize];
            match p.lanes {
                1 => w.run::<1>(phi, values, combos),
                2 => w.run::<2>(phi, values, combos),
                3 => w.run::<3>(phi, values, combos),
                4 => w.run::<4>(phi, values, combos),
                5 => w.run::<5>(phi, values, combos),
                6 => w.run::<6>(phi, values, combos),
                7 => w.run::<7>(phi, values, combos),
                8 => w.run::<8>(phi, values, combos),
                16 => w.run::<16>(phi, values, combos),
                32 => w.run::<32>(phi, values, combos),
                64 => w.run::<64>(phi, values, combos),
                _ => w.run::<128>(phi, values, combos),
            }
        }
        add_base_margin(e, &mut phi);
        phi
    }
}

/// One tree's walk for one row.
struct Walk<'a> {
    /// The tree's splits: `upper` with an internal child, then those between two leaves.
    splits: &'a [Split],
    upper: usize,
    weights: &'a [f64],
    e: &'a TreeEnsemble,
    row: &'a [f32],
}

impl Walk<'_> {
    /// Adds the tree's contributions into `phi`. `values` holds `N` per node: `R(t_i)` on the
    /// way down, `H(t_i)` on the way up; `combos` the combination of the edge into each node.
    #[inline]
    fn run<const N: usize>(&self, phi: &mut [f64], values: &mut [f64], combos: &mut [u8]) {
        let e = self.e;
        let values: &mut [[f64; N]] = values.as_chunks_mut::<N>().0;
        let (splits, bottom) = self.splits.split_at(self.upper);
        let (records, rest) = self.weights.split_at(self.upper * PER_SPLIT * N);
        let records: &[[[f64; N]; PER_SPLIT]] = records.as_chunks::<N>().0.as_chunks().0;
        let bottom_records: &[[[f64; N]; PER_BOTTOM]] = rest.as_chunks::<N>().0.as_chunks().0;
        combos[0] = KEEP;
        values[0] = [1.0; N];
        for (s, w) in splits.iter().zip(records) {
            let keep = combos[s.prev as usize] == KEEP;
            let hot = next(
                &s.node,
                self.row[s.node.feature()],
                &e.cat_sets,
                &e.cat_bits,
            );
            let (l, r) = (s.node.left as usize, s.node.right as usize);
            let (to_hot, to_cold) = if keep { (KEEP, LOSE) } else { (LOST, LOST) };
            let (cl, cr) = if hot == s.node.right {
                (to_cold, to_hot)
            } else {
                (to_hot, to_cold)
            };
            combos[l] = cl;
            combos[r] = cr;
            let up = values[s.me as usize];
            let (ml, mr) = (&w[usize::from(cl)], &w[3 + usize::from(cr)]);
            let (mut vl, mut vr) = ([0.0; N], [0.0; N]);
            for i in 0..N {
                vl[i] = up[i] * ml[i];
                vr[i] = up[i] * mr[i];
            }
            values[l] = vl;
            values[r] = vr;
        }
        // Splits between two leaves: their parents are done, and no other split needs their
        // leaves' vectors, so the way up is done at once.
        for (s, w) in bottom.iter().zip(bottom_records) {
            let keep = combos[s.prev as usize] == KEEP;
            let hot = next(
                &s.node,
                self.row[s.node.feature()],
                &e.cat_sets,
                &e.cat_bits,
            );
            let way = if keep {
                usize::from(hot == s.node.right)
            } else {
                2
            };
            let up = values[s.me as usize];
            let (m, em) = (&w[way], &w[3 + way]);
            let mut sum = [0.0; N];
            let mut c = 0.0;
            for i in 0..N {
                sum[i] = up[i] * m[i];
                c += up[i] * em[i];
            }
            values[s.me as usize] = sum;
            phi[s.node.feature()] += c;
        }
        for (s, w) in splits.iter().zip(records).rev() {
            let (l, r) = (s.node.left as usize, s.node.right as usize);
            let (hl, hr) = (values[l], values[r]);
            let (el, er) = (
                &w[6 + usize::from(combos[l])],
                &w[9 + usize::from(combos[r])],
            );
            let mut sum = [0.0; N];
            let mut c = 0.0;
            for i in 0..N {
                sum[i] = hl[i] + hr[i];
                c += el[i] * hl[i] + er[i] * hr[i];
            }
            values[s.me as usize] = sum;
            phi[s.node.feature()] += c;
        }
    }
}

/// Appends the tree at `root`'s splits to `splits`, numbering the nodes breadth-first, and
/// returns their build data, the tree's node count and the most distinct features on a
/// leaf's path; `None` when a cover gives a fraction that is not finite and non-negative, or
/// when the splits alone would pass `room` bytes (so a huge tree costs no more than that).
///
/// Breadth-first, a split's parent comes a whole level before it rather than just before
/// it (as in pre-order), so the walk down does not wait on each product it just stored.
/// Memory is `O(nodes)`: a split finds the previous split on its feature by walking up its
/// ancestors (`O(depth)`), rather than each node carrying a copy of its path.
fn layout(
    e: &TreeEnsemble,
    root: usize,
    scale: f64,
    splits: &mut Vec<Split>,
    room: usize,
) -> Option<(Vec<PendingSplit>, usize, usize)> {
    const NONE: u32 = u32::MAX;
    let min_split = size_of::<Split>() + PER_BOTTOM * size_of::<f64>();
    let mut pending = Vec::new();
    let mut most = 0u32;
    // Per node number: its parent's number, the zero fraction of the parent's feature after
    // the edge into it, the distinct features on its path, and its split feature (NONE for a
    // leaf or a node not reached yet).
    let mut parent = vec![NONE];
    let mut zero_in = vec![1.0f64];
    let mut distinct = vec![0u32];
    let mut feature_of = vec![NONE];
    let mut queue = std::collections::VecDeque::from([(root, 0u32)]);
    while let Some((i, me)) = queue.pop_front() {
        let n = e.nodes[i];
        let m = me as usize;
        if n.is_leaf() {
            most = most.max(distinct[m]);
            continue;
        }
        // Checked trees have one parent per node; this bounds the walk regardless.
        if parent.len() + 2 > e.nodes.len() || (pending.len() + 1) * min_split > room {
            return None;
        }
        let feature = n.feature() as u32;
        feature_of[m] = feature;
        // The previous split on this feature, and the node below it on this path.
        let (mut child, mut a) = (me, parent[m]);
        while a != NONE && feature_of[a as usize] != feature {
            (child, a) = (a, parent[a as usize]);
        }
        let (zero_before, prev, new) = if a == NONE {
            (1.0, 0, 1)
        } else {
            (zero_in[child as usize], child, 0)
        };
        let (left, right) = (parent.len() as u32, parent.len() as u32 + 1);
        let cover = e.covers[i];
        let mut children = [(0.0, 1.0); 2];
        for (slot, c) in children.iter_mut().zip([n.left, n.right]) {
            let z = if cover > 0.0 {
                e.covers[c as usize] / cover
            } else {
                0.0
            };
            let zero = z * zero_before;
            if !(z >= 0.0 && z.is_finite() && zero.is_finite()) {
                return None;
            }
            let child = e.nodes[c as usize];
            let value = if child.is_leaf() {
                f64::from(child.value) * scale
            } else {
                1.0
            };
            *slot = (z, value);
            queue.push_back((c as usize, parent.len() as u32));
            parent.push(me);
            zero_in.push(zero);
            distinct.push(distinct[m] + new);
            feature_of.push(NONE);
        }
        splits.push(Split {
            node: Node {
                value: n.value,
                packed: n.packed & !LEAF,
                left,
                right,
            },
            me,
            prev,
        });
        pending.push(PendingSplit {
            zero_before,
            children,
            bottom: e.nodes[n.left as usize].is_leaf() && e.nodes[n.right as usize].is_leaf(),
        });
    }
    Some((pending, parent.len(), most as usize))
}

/// Appends one split's `12 · N` weights: per child (left, then right) the multipliers of the
/// three combinations, then per child the contribution weights of the three.
fn push_weights(p: &PendingSplit, (t, omega): &(Vec<f64>, Vec<f64>), out: &mut Vec<f64>) {
    let n = t.len();
    let zp = p.zero_before;
    let start = out.len();
    out.resize(start + PER_SPLIT * n, 0.0);
    let w = &mut out[start..];
    for (c, &(z_edge, value)) in p.children.iter().enumerate() {
        let z = zp * z_edge;
        for i in 0..n {
            let (t, u, om) = (t[i], 1.0 - t[i], omega[i]);
            // The feature's factor before the split, with o = 1 (1 for a first split).
            let before = u * zp + t;
            // The weight the earlier split gave these leaves with o = 1 (0 for a first split).
            let earlier = (1.0 - zp) * om / before;
            let m = &mut w[c * 3 * n..];
            m[KEEP as usize * n + i] = (u * z + t) / before * value;
            m[LOSE as usize * n + i] = u * z / before * value;
            m[LOST as usize * n + i] = z_edge * value;
            let e = &mut w[(6 + c * 3) * n..];
            e[KEEP as usize * n + i] = (1.0 - z) * om / (u * z + t) - earlier;
            e[LOSE as usize * n + i] = -om / u - earlier;
            // o was already 0: the earlier split's weight, −ω/(1 − t), is this one's too.
            e[LOST as usize * n + i] = 0.0;
        }
    }
}

/// Appends the [`PER_BOTTOM`] groups of a split between two leaves from its [`push_weights`]
/// groups `w`: for the row going left (left KEEP, right LOSE), right (LOSE, KEEP), or o
/// already 0 (LOST, LOST), `M_l + M_r` and `E_l M_l + E_r M_r`.
fn push_bottom(w: &[f64], n: usize, out: &mut Vec<f64>) {
    let group = |g: usize| &w[g * n..(g + 1) * n];
    let ways = [(KEEP, LOSE), (LOSE, KEEP), (LOST, LOST)];
    for (l, r) in ways {
        let (ml, mr) = (group(usize::from(l)), group(3 + usize::from(r)));
        out.extend((0..n).map(|i| ml[i] + mr[i]));
    }
    for (l, r) in ways {
        let (ml, mr) = (group(usize::from(l)), group(3 + usize::from(r)));
        let (el, er) = (group(6 + usize::from(l)), group(9 + usize::from(r)));
        out.extend((0..n).map(|i| el[i] * ml[i] + er[i] * mr[i]));
    }
}

/// The `n`-point Gauss–Legendre rule on `[0, 1]`: points and weights.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut t = vec![0.0; n];
    let mut w = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        // Newton's method on P_n from the usual first guess of the i-th root in (−1, 1).
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let p = if n == 1 { x } else { p1 };
            let pm1 = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (x * p - pm1) / (x * x - 1.0);
            let dx = p / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        let weight = 2.0 / ((1.0 - x * x) * dp * dp);
        // Roots come in ± pairs; map [−1, 1] to [0, 1].
        t[i] = (1.0 - x) / 2.0;
        t[n - 1 - i] = (1.0 + x) / 2.0;
        w[i] = weight / 2.0;
        w[n - 1 - i] = weight / 2.0;
    }
    (t, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules integrate `t^k` exactly up to `k = 2n − 1`.
    #[test]
    fn quadrature_is_exact() {
        for &n in &LANES {
            let (t, w) = gauss_legendre(n);
            for k in 0..2 * n {
                let q: f64 = t.iter().zip(&w).map(|(t, w)| w * t.powi(k as i32)).sum();
                let exact = 1.0 / (k + 1) as f64;
                assert!(
                    (q - exact).abs() < 1e-13 * exact.max(1e-3),
                    "n={n} k={k}: {q} vs {exact}"
                );
            }
        }
    }
}
