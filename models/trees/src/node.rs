//! The flat node layout and the traversal every format shares.
//!
//! All trees of an ensemble live in one `Vec<Node>` of 16-byte nodes (threshold or leaf
//! value, packed feature + flags, two absolute child indices), so a traversal touches one
//! contiguous array. Formats are normalised at load time to one comparison, `x < threshold`
//! goes left, with the missing-value rule folded into two flags.

/// Node flag: a leaf; `value` is its output.
pub const LEAF: u32 = 1 << 31;
/// Node flag: missing values go left.
pub const DEFAULT_LEFT: u32 = 1 << 30;
/// Node flag: LightGBM "zero as missing": NaN and |x| <= 1e-35 take the default direction.
pub const ZERO_MISSING: u32 = 1 << 29;
/// Node flag: categorical split; `value`'s bits index [`crate::TreeEnsemble`]'s bitsets.
pub const CATEGORICAL: u32 = 1 << 28;
/// Mask of the feature index in `packed`.
pub const FEATURE_MASK: u32 = (1 << 28) - 1;

/// LightGBM's `kZeroThreshold`.
const ZERO_THRESHOLD: f32 = 1e-35;

/// One node: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Node {
    /// Split threshold (`x < value` goes left), a leaf's output, or a categorical bitset index.
    pub value: f32,
    /// Feature index (low 28 bits) and flags.
    pub packed: u32,
    /// Left child (absolute index).
    pub left: u32,
    /// Right child (absolute index).
    pub right: u32,
}

impl Node {
    /// A leaf with output `value`.
    pub fn leaf(value: f32) -> Self {
        Node {
            value,
            packed: LEAF,
            left: 0,
            right: 0,
        }
    }

    /// True for leaves.
    #[inline(always)]
    pub fn is_leaf(&self) -> bool {
        self.packed & LEAF != 0
    }

    /// The split feature.
    #[inline(always)]
    pub fn feature(&self) -> usize {
        (self.packed & FEATURE_MASK) as usize
    }
}

/// A categorical split's set: `words` 32-bit words of bitset starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatSet {
    /// First word in the ensemble's bitset table.
    pub start: u32,
    /// Number of words.
    pub words: u32,
}

/// The child `x` goes to at internal node `n`.
#[inline(always)]
pub fn next(n: &Node, x: f32, cat_sets: &[CatSet], cat_bits: &[u32]) -> u32 {
    let flags = n.packed;
    if flags & (ZERO_MISSING | CATEGORICAL) == 0 {
        // The common case: plain numeric split, NaN takes the default direction.
        let left = if x.is_nan() {
            flags & DEFAULT_LEFT != 0
        } else {
            x < n.value
        };
        return if left { n.left } else { n.right };
    }
    if flags & CATEGORICAL != 0 {
        // LightGBM: NaN and negative categories (after truncation to int) go right; others
        // go left when in the set.
        if x.is_nan() || x <= -1.0 {
            return n.right;
        }
        let cat = x as u32;
        let set = cat_sets[n.value.to_bits() as usize];
        let word = cat / 32;
        let hit =
            word < set.words && (cat_bits[(set.start + word) as usize] >> (cat % 32)) & 1 == 1;
        return if hit { n.left } else { n.right };
    }
    // Zero as missing: NaN counts as 0.
    let left = if x.is_nan() || (-ZERO_THRESHOLD..=ZERO_THRESHOLD).contains(&x) {
        flags & DEFAULT_LEFT != 0
    } else {
        x < n.value
    };
    if left { n.left } else { n.right }
}

/// The leaf value `row` reaches from `root`.
#[inline(always)]
pub fn leaf_value(
    nodes: &[Node],
    root: u32,
    row: &[f32],
    cat_sets: &[CatSet],
    cat_bits: &[u32],
) -> f32 {
    let mut i = root as usize;
    loop {
        let n = &nodes[i];
        if n.is_leaf() {
            return n.value;
        }
        // Feature indices are checked against the row width at load time.
        let x = row[n.feature()];
        i = next(n, x, cat_sets, cat_bits) as usize;
    }
}

/// The largest `f32` not above `t`: `x <= t` (in f64, as LightGBM compares) is then
/// `x <= floor_f32(t)` for every `f32` x.
pub fn floor_f32(t: f64) -> f32 {
    let f = t as f32;
    if f64::from(f) > t { f.next_down() } else { f }
}

/// LightGBM's `x <= t` (in f64) as the shared `x < threshold` rule.
pub fn lightgbm_threshold(t: f64) -> f32 {
    floor_f32(t).next_up()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 16);
    }

    #[test]
    fn lightgbm_thresholds_keep_f64_semantics() {
        for t in [
            0.1f64,
            -0.3,
            1e-35,
            1.0000000180025095e-35,
            7.5,
            1e300,
            -1e300,
            0.0,
        ] {
            let thr = lightgbm_threshold(t);
            for x in [
                t as f32,
                (t as f32).next_up(),
                (t as f32).next_down(),
                0.0,
                -0.0,
            ] {
                assert_eq!(x < thr, f64::from(x) <= t, "x={x} t={t}");
            }
        }
    }

    #[test]
    fn traversal_follows_flags() {
        let nodes = [
            Node {
                value: 0.5,
                packed: DEFAULT_LEFT,
                left: 1,
                right: 2,
            },
            Node::leaf(-1.0),
            Node::leaf(1.0),
        ];
        assert_eq!(leaf_value(&nodes, 0, &[0.1], &[], &[]), -1.0);
        assert_eq!(leaf_value(&nodes, 0, &[0.5], &[], &[]), 1.0);
        assert_eq!(leaf_value(&nodes, 0, &[f32::NAN], &[], &[]), -1.0);
        let zero = Node {
            value: -5.0,
            packed: ZERO_MISSING | DEFAULT_LEFT,
            left: 1,
            right: 2,
        };
        assert_eq!(next(&zero, 0.0, &[], &[]), 1);
        assert_eq!(next(&zero, f32::NAN, &[], &[]), 1);
        assert_eq!(next(&zero, 3.0, &[], &[]), 2);
        let sets = [CatSet { start: 0, words: 2 }];
        let bits = [0b1010u32, 1];
        let cat = Node {
            value: f32::from_bits(0),
            packed: CATEGORICAL,
            left: 1,
            right: 2,
        };
        assert_eq!(next(&cat, 1.0, &sets, &bits), 1);
        assert_eq!(next(&cat, 3.7, &sets, &bits), 1);
        assert_eq!(next(&cat, 2.0, &sets, &bits), 2);
        assert_eq!(next(&cat, 32.0, &sets, &bits), 1);
        assert_eq!(next(&cat, 64.0, &sets, &bits), 2);
        assert_eq!(next(&cat, -1.0, &sets, &bits), 2);
        assert_eq!(
            next(&cat, -0.5, &sets, &bits),
            2,
            "-0.5 truncates to category 0, not in the set"
        );
        let bits0 = [1u32, 0];
        assert_eq!(
            next(&cat, -0.5, &sets, &bits0),
            1,
            "-0.5 truncates to category 0, in the set"
        );
        assert_eq!(next(&cat, f32::NAN, &sets, &bits), 2);
    }
}
