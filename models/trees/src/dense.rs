//! A second layout for prediction: every tree padded to a perfect binary tree of its depth,
//! children at `2i + 1` / `2i + 2`, so a traversal is a fixed number of branch-free steps
//! and several rows can walk the same tree in lockstep (their loads overlap instead of
//! waiting on each other). Used when every split is numerical with NaN-as-missing (all of
//! XGBoost's, and LightGBM's without categorical or zero-as-missing splits) and trees are at
//! most [`MAX_DEPTH`] deep; otherwise the general [`crate::node`] traversal runs.

use crate::node::{CATEGORICAL, DEFAULT_LEFT, FEATURE_MASK, Node, ZERO_MISSING};

/// Deeper trees would pad to too many nodes.
pub const MAX_DEPTH: u32 = 10;
/// Rows walking a tree together.
const LANES: usize = 8;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Split {
    threshold: f32,
    /// Feature index, with [`SPLIT_DEFAULT_LEFT`] set when missing values go left.
    feature: u32,
}

/// Default-left flag inside [`Split::feature`].
const SPLIT_DEFAULT_LEFT: u32 = 1 << 31;

#[derive(Debug, Clone)]
struct Tree {
    depth: u32,
    splits: u32,
    leaves: u32,
    group: u32,
}

/// One tree of `S` (= 2^depth) slots walked by [`LANES`] NaN-free rows in lockstep; adds
/// each row's leaf to `sums`.
#[inline(always)]
fn walk<const S: usize, const N: usize, const NAN: bool>(
    splits: &[Split],
    leaves: &[f32],
    depth: u32,
    lanes: &[[f32; N]; LANES],
    sums: &mut [f64],
) {
    let (Ok(splits), Ok(leaves)) = (
        <&[Split; S]>::try_from(splits),
        <&[f32; S]>::try_from(leaves),
    ) else {
        // Unreachable: the caller slices exactly 2^depth slots.
        return;
    };
    let mut idx = [0usize; LANES];
    for _ in 0..depth {
        for (i, lane) in idx.iter_mut().zip(lanes) {
            *i = fixed_step::<S, N, NAN>(splits, lane, *i);
        }
    }
    for (sum, i) in sums.iter_mut().zip(idx) {
        *sum += f64::from(leaves[(i + 1) & (S - 1)]);
    }
}

#[inline(always)]
fn fixed_step<const S: usize, const N: usize, const NAN: bool>(
    splits: &[Split; S],
    lane: &[f32; N],
    i: usize,
) -> usize {
    let s = splits[i & (S - 1)];
    // Masking keeps the index in range and drops the default-left flag.
    let x = lane[s.feature as usize & (N - 1)];
    let left = if NAN {
        (x < s.threshold) | (x.is_nan() & (s.feature & SPLIT_DEFAULT_LEFT != 0))
    } else {
        x < s.threshold
    };
    2 * i + 2 - usize::from(left)
}

/// [`walk`] for two trees of the same depth at once: twice the independent loads in flight.
#[inline(always)]
fn walk2<const S: usize, const N: usize, const NAN: bool>(
    a: (&[Split], &[f32]),
    b: (&[Split], &[f32]),
    depth: u32,
    lanes: &[[f32; N]; LANES],
    sums_a: &mut [f64],
    sums_b: &mut [f64],
) {
    let (Ok(sa), Ok(la), Ok(sb), Ok(lb)) = (
        <&[Split; S]>::try_from(a.0),
        <&[f32; S]>::try_from(a.1),
        <&[Split; S]>::try_from(b.0),
        <&[f32; S]>::try_from(b.1),
    ) else {
        return;
    };
    let mut ia = [0usize; LANES];
    let mut ib = [0usize; LANES];
    for _ in 0..depth {
        for ((x, y), lane) in ia.iter_mut().zip(ib.iter_mut()).zip(lanes) {
            *x = fixed_step::<S, N, NAN>(sa, lane, *x);
            *y = fixed_step::<S, N, NAN>(sb, lane, *y);
        }
    }
    for j in 0..LANES {
        sums_a[j] += f64::from(la[(ia[j] + 1) & (S - 1)]);
    }
    for j in 0..LANES {
        sums_b[j] += f64::from(lb[(ib[j] + 1) & (S - 1)]);
    }
}

/// Perfect-tree layout of a whole ensemble.
#[derive(Debug, Clone)]
pub struct DenseForest {
    trees: Vec<Tree>,
    splits: Vec<Split>,
    leaves: Vec<f32>,
}

impl DenseForest {
    /// Builds the layout, or `None` when some tree does not qualify.
    pub fn build(
        nodes: &[Node],
        roots: &[u32],
        depths: &[u32],
        groups: &[u32],
        weights: &[f32],
    ) -> Option<Self> {
        if nodes
            .iter()
            .any(|n| !n.is_leaf() && n.packed & (CATEGORICAL | ZERO_MISSING) != 0)
        {
            return None;
        }
        if depths.iter().any(|&d| d > MAX_DEPTH) {
            return None;
        }
        // Slot offsets are u32: an ensemble too large for them keeps the general layout.
        let slots: usize = depths.iter().map(|&d| 1usize << d).sum();
        if u32::try_from(slots).is_err() {
            return None;
        }
        let mut f = DenseForest {
            trees: Vec::with_capacity(roots.len()),
            splits: Vec::new(),
            leaves: Vec::new(),
        };
        for (t, &root) in roots.iter().enumerate() {
            let d = depths[t];
            let tree = Tree {
                depth: d,
                splits: f.splits.len() as u32,
                leaves: f.leaves.len() as u32,
                group: groups[t],
            };
            // One spare slot makes the split array a power of two long, so `i & mask`
            // indexing needs no bounds check.
            let n_splits = 1usize << d;
            f.splits.resize(
                f.splits.len() + n_splits,
                Split {
                    threshold: f32::NAN,
                    feature: 0,
                },
            );
            f.leaves.resize(f.leaves.len() + (1usize << d), 0.0);
            f.place(nodes, &tree, root as usize, weights[t]);
            f.trees.push(tree);
        }
        Some(f)
    }

    /// Copies the tree at `root` into `tree`'s slots, padding leaves above full depth. An
    /// explicit stack rather than recursion: the walk's depth never rests on the call stack.
    fn place(&mut self, nodes: &[Node], tree: &Tree, root: usize, weight: f32) {
        let first_leaf = (1usize << tree.depth) - 1;
        // (source node, slot in the perfect tree, level); at most depth + 1 entries deep.
        let mut stack = vec![(root, 0usize, 0u32)];
        while let Some((src, pos, level)) = stack.pop() {
            let n = nodes[src];
            if level == tree.depth {
                // At full depth every source node is a leaf (depth is the max leaf depth).
                self.leaves[tree.leaves as usize + pos - first_leaf] = n.value * weight;
                continue;
            }
            if n.is_leaf() {
                // Pad: a split that always goes right (x < NaN is false, no default-left),
                // whose subtrees all end in this leaf.
                self.splits[tree.splits as usize + pos] = Split {
                    threshold: f32::NAN,
                    feature: 0,
                };
                stack.push((src, 2 * pos + 2, level + 1));
                stack.push((src, 2 * pos + 1, level + 1));
                continue;
            }
            self.splits[tree.splits as usize + pos] = Split {
                threshold: n.value,
                feature: (n.packed & FEATURE_MASK)
                    | if n.packed & DEFAULT_LEFT != 0 {
                        SPLIT_DEFAULT_LEFT
                    } else {
                        0
                    },
            };
            stack.push((n.right as usize, 2 * pos + 2, level + 1));
            stack.push((n.left as usize, 2 * pos + 1, level + 1));
        }
    }

    /// One step for rows known to hold no NaN: the default direction never matters.
    #[inline(always)]
    fn step_dense(s: Split, row: &[f32], idx: usize) -> usize {
        let x = row[(s.feature & !SPLIT_DEFAULT_LEFT) as usize];
        2 * idx + 2 - usize::from(x < s.threshold)
    }

    #[inline(always)]
    fn step(s: Split, row: &[f32], idx: usize) -> usize {
        let x = row[(s.feature & !SPLIT_DEFAULT_LEFT) as usize];
        let left = (x < s.threshold) | (x.is_nan() & (s.feature & SPLIT_DEFAULT_LEFT != 0));
        2 * idx + 2 - usize::from(left)
    }

    /// Adds every tree's output for each row of `rows` (`nf` features each) into `acc`
    /// (`k` groups per row).
    pub fn accumulate(&self, rows: &[f32], nf: usize, k: usize, acc: &mut [f64]) {
        let n = rows.len() / nf;
        // Rows are copied into fixed-size arrays when the row width is small, so no index
        // needs a bounds check; blocks without missing values skip the NaN test.
        let nan = rows.iter().any(|x| x.is_nan());
        let done = match (nf, nan) {
            (0..=32, false) => self.accumulate_fixed::<32, false>(rows, nf, k, acc),
            (0..=32, true) => self.accumulate_fixed::<32, true>(rows, nf, k, acc),
            (33..=64, false) => self.accumulate_fixed::<64, false>(rows, nf, k, acc),
            (33..=64, true) => self.accumulate_fixed::<64, true>(rows, nf, k, acc),
            (65..=128, false) => self.accumulate_fixed::<128, false>(rows, nf, k, acc),
            (65..=128, true) => self.accumulate_fixed::<128, true>(rows, nf, k, acc),
            (129..=256, false) => self.accumulate_fixed::<256, false>(rows, nf, k, acc),
            (129..=256, true) => self.accumulate_fixed::<256, true>(rows, nf, k, acc),
            _ => 0,
        };
        if done < n {
            let rest = &rows[done * nf..];
            let acc = &mut acc[done * k..];
            if nan {
                self.accumulate_with(rest, nf, k, acc, Self::step);
            } else {
                self.accumulate_with(rest, nf, k, acc, Self::step_dense);
            }
        }
    }

    /// The walk over whole groups of [`LANES`] rows (`NAN`: some value may be missing), each
    /// copied into an `N`-wide array (`N` a power of two >= the row width): feature and node indices are masked into
    /// range, so the walk carries no bounds checks. Returns the rows it handled.
    fn accumulate_fixed<const N: usize, const NAN: bool>(
        &self,
        rows: &[f32],
        nf: usize,
        k: usize,
        acc: &mut [f64],
    ) -> usize {
        let n = rows.len() / nf;
        let mut lanes = [[0f32; N]; LANES];
        let mut sums = vec![0f64; LANES * k];
        let mut r = 0;
        while r + LANES <= n {
            for (j, lane) in lanes.iter_mut().enumerate() {
                lane[..nf].copy_from_slice(&rows[(r + j) * nf..(r + j + 1) * nf]);
            }
            sums.iter_mut().for_each(|v| *v = 0.0);
            let mut ti = 0;
            while ti < self.trees.len() {
                let t = &self.trees[ti];
                let (splits, leaves) = self.slots(t);
                let g = t.group as usize * LANES;
                let sums = &mut sums[g..g + LANES];
                // Consecutive trees of one depth and output walk in pairs: twice the
                // independent loads in flight. Sums are added in tree order either way.
                if let Some(u) = self
                    .trees
                    .get(ti + 1)
                    .filter(|u| u.depth == t.depth && u.group == t.group)
                {
                    let (us, ul) = self.slots(u);
                    let mut second = [0f64; LANES];
                    macro_rules! pair {
                        ($s:literal) => {
                            walk2::<$s, N, NAN>(
                                (splits, leaves),
                                (us, ul),
                                t.depth,
                                &lanes,
                                sums,
                                &mut second,
                            )
                        };
                    }
                    match t.depth {
                        0 => {
                            sums.iter_mut().for_each(|v| *v += f64::from(leaves[0]));
                            second.iter_mut().for_each(|v| *v += f64::from(ul[0]));
                        }
                        1 => pair!(2),
                        2 => pair!(4),
                        3 => pair!(8),
                        4 => pair!(16),
                        5 => pair!(32),
                        6 => pair!(64),
                        7 => pair!(128),
                        8 => pair!(256),
                        9 => pair!(512),
                        _ => pair!(1024),
                    }
                    for (d, v) in sums.iter_mut().zip(second) {
                        *d += v;
                    }
                    ti += 2;
                    continue;
                }
                macro_rules! single {
                    ($s:literal) => {
                        walk::<$s, N, NAN>(splits, leaves, t.depth, &lanes, sums)
                    };
                }
                match t.depth {
                    0 => sums.iter_mut().for_each(|v| *v += f64::from(leaves[0])),
                    1 => single!(2),
                    2 => single!(4),
                    3 => single!(8),
                    4 => single!(16),
                    5 => single!(32),
                    6 => single!(64),
                    7 => single!(128),
                    8 => single!(256),
                    9 => single!(512),
                    _ => single!(1024),
                }
                ti += 1;
            }
            for j in 0..LANES {
                for g in 0..k {
                    acc[(r + j) * k + g] += sums[g * LANES + j];
                }
            }
            r += LANES;
        }
        r
    }

    /// A tree's split and leaf slots (2^depth each).
    fn slots(&self, t: &Tree) -> (&[Split], &[f32]) {
        let size = 1usize << t.depth;
        (
            &self.splits[t.splits as usize..t.splits as usize + size],
            &self.leaves[t.leaves as usize..t.leaves as usize + size],
        )
    }

    /// Row-group major: a group of [`LANES`] rows walks every tree in lockstep, its sums
    /// kept local; the trees' splits stream from cache while the rows stay in L1.
    #[inline(always)]
    fn accumulate_with(
        &self,
        rows: &[f32],
        nf: usize,
        k: usize,
        acc: &mut [f64],
        step: impl Fn(Split, &[f32], usize) -> usize + Copy,
    ) {
        let n = rows.len() / nf;
        let mut sums = vec![0f64; LANES * k];
        let mut r = 0;
        while r + LANES <= n {
            let lane_rows: [&[f32]; LANES] =
                std::array::from_fn(|j| &rows[(r + j) * nf..(r + j + 1) * nf]);
            sums.iter_mut().for_each(|v| *v = 0.0);
            let mut ti = 0;
            while ti < self.trees.len() {
                let t = &self.trees[ti];
                let mask = (1usize << t.depth) - 1;
                let splits = &self.splits[t.splits as usize..t.splits as usize + mask + 1];
                let leaves = &self.leaves[t.leaves as usize..t.leaves as usize + mask + 1];
                // Two trees of the same depth walk together: twice the independent loads in
                // flight.
                if let Some(u) = self.trees.get(ti + 1).filter(|u| u.depth == t.depth) {
                    let splits_u = &self.splits[u.splits as usize..u.splits as usize + mask + 1];
                    let leaves_u = &self.leaves[u.leaves as usize..u.leaves as usize + mask + 1];
                    let mut a = [0usize; LANES];
                    let mut b = [0usize; LANES];
                    for _ in 0..t.depth {
                        for ((i, k2), row) in a.iter_mut().zip(b.iter_mut()).zip(lane_rows) {
                            *i = step(splits[*i & mask], row, *i);
                            *k2 = step(splits_u[*k2 & mask], row, *k2);
                        }
                    }
                    let (g, h) = (t.group as usize * LANES, u.group as usize * LANES);
                    for j in 0..LANES {
                        sums[g + j] += f64::from(leaves[(a[j] - mask) & mask]);
                        sums[h + j] += f64::from(leaves_u[(b[j] - mask) & mask]);
                    }
                    ti += 2;
                    continue;
                }
                let mut idx = [0usize; LANES];
                for _ in 0..t.depth {
                    for (i, row) in idx.iter_mut().zip(lane_rows) {
                        *i = step(splits[*i & mask], row, *i);
                    }
                }
                let g = t.group as usize * LANES;
                for (j, i) in idx.iter().enumerate() {
                    sums[g + j] += f64::from(leaves[(i - mask) & mask]);
                }
                ti += 1;
            }
            for j in 0..LANES {
                for g in 0..k {
                    acc[(r + j) * k + g] += sums[g * LANES + j];
                }
            }
            r += LANES;
        }
        while r < n {
            let row = &rows[r * nf..(r + 1) * nf];
            for t in &self.trees {
                let mask = (1usize << t.depth) - 1;
                let splits = &self.splits[t.splits as usize..t.splits as usize + mask + 1];
                let mut i = 0;
                for _ in 0..t.depth {
                    i = step(splits[i & mask], row, i);
                }
                acc[r * k + t.group as usize] +=
                    f64::from(self.leaves[t.leaves as usize + i - mask]);
            }
            r += 1;
        }
    }

    /// The summed output of all trees for one row of a single-group model.
    #[inline]
    pub fn sum_one(&self, row: &[f32]) -> f64 {
        let mut sum = 0f64;
        for t in &self.trees {
            let base = t.splits as usize;
            let mut i = 0;
            for _ in 0..t.depth {
                i = Self::step(self.splits[base + i], row, i);
            }
            sum += f64::from(self.leaves[t.leaves as usize + i - ((1usize << t.depth) - 1)]);
        }
        sum
    }
}
