//! umap-learn 0.5's `optimize_layout_euclidean`: SGD over the graph's edges, each sampled
//! every `epochs_per_sample` epochs, with `negative_sample_rate` negative samples per
//! positive one, gradients clipped to ±4 and the learning rate decayed linearly to 0.
//!
//! umap-learn runs it sequentially when seeded (its parallel mode is not reproducible). Here
//! the edges are taken [`LANES`] at a time from fixed runs of the edge list (see [`run`]), so
//! the work is vector-wide and the schedule still fixed: a seed gives a bit-identical layout,
//! on every CPU (plain f32 arithmetic, no fused operations). Checked against umap-learn with
//! `tools/umap_check.py` (trustworthiness and neighbour agreement within its spread over
//! seeds).

use super::graph::Graph;
use crate::rng::Rng;

/// umap-learn's `clip`: gradients are bounded by ±4.
fn clip(v: f32) -> f32 {
    v.clamp(-4.0, 4.0)
}

/// umap-learn's `make_epochs_per_sample`: an edge of weight `w` is sampled every
/// `max_w / w` epochs (-1: never).
pub(crate) fn epochs_per_sample(weights: &[f32], n_epochs: usize) -> Vec<f64> {
    let max = weights.iter().copied().fold(0f32, f32::max);
    weights
        .iter()
        .map(|&w| {
            let n_samples = n_epochs as f64 * (f64::from(w) / f64::from(max));
            if n_samples > 0.0 {
                n_epochs as f64 / n_samples
            } else {
                -1.0
            }
        })
        .collect()
}

/// What the layout optimises.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayoutParams {
    pub(crate) a: f32,
    pub(crate) b: f32,
    pub(crate) gamma: f32,
    pub(crate) initial_alpha: f32,
    pub(crate) negative_sample_rate: usize,
    pub(crate) n_epochs: usize,
}

/// Most layout dimensions ([`super::UmapParams::check`] refuses more): the SGD keeps a
/// point's coordinates in fixed-size stack arrays.
pub(crate) const MAX_DIM: usize = 64;

/// Optimises `head` (`graph.n_rows x dim`) against `tail` (`graph.n_cols x dim`). With
/// `tail = None` the graph is over `head`'s own points and both ends of an edge move
/// (training); otherwise only `head` moves (transform of new points against the fixed
/// training layout). `rng` seeds the lanes' random draws. `dim <= MAX_DIM`.
pub(crate) fn optimize(
    head: &mut [f32],
    tail: Option<&[f32]>,
    dim: usize,
    graph: &Graph,
    params: &LayoutParams,
    rng: &mut Rng,
) {
    // The common layout sizes get a copy with the loops over coordinates unrolled; the
    // arithmetic is the same in every copy.
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        #[allow(unsafe_code)]
        unsafe {
            return run_avx2(head, tail, dim, graph, params, rng);
        }
    }
    run_any(head, tail, dim, graph, params, rng);
}

/// [`run_any`] compiled for AVX2: eight-lane vectors for the lanes, and no fused
/// multiply-add, so the same arithmetic and the same layout as without it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(
    head: &mut [f32],
    tail: Option<&[f32]>,
    dim: usize,
    graph: &Graph,
    params: &LayoutParams,
    rng: &mut Rng,
) {
    run_any(head, tail, dim, graph, params, rng);
}

#[inline(always)]
fn run_any(
    head: &mut [f32],
    tail: Option<&[f32]>,
    dim: usize,
    graph: &Graph,
    params: &LayoutParams,
    rng: &mut Rng,
) {
    match dim {
        2 => run::<2, 2>(head, tail, dim, graph, params, rng),
        3 => run::<3, 3>(head, tail, dim, graph, params, rng),
        4 => run::<4, 4>(head, tail, dim, graph, params, rng),
        5 => run::<5, 5>(head, tail, dim, graph, params, rng),
        8 => run::<8, 8>(head, tail, dim, graph, params, rng),
        10 => run::<10, 10>(head, tail, dim, graph, params, rng),
        _ => run::<0, MAX_DIM>(head, tail, dim, graph, params, rng),
    }
}

/// `x^b` for a normal, finite, positive `x`, as `2^(b log2 x)` with `log2` and `2^y` by short
/// polynomials: within a few units in the last place of `powf`, at a fraction of its cost
/// (the layout's hottest call), and with selects instead of branches.
#[inline(always)]
fn pow_normal(x: f32, b: f32) -> f32 {
    // log2 x = e + log2 m with m in [sqrt(1/2), sqrt 2); ln m = 2 atanh(s), s = (m-1)/(m+1),
    // |s| <= 0.172, by its series to s^9 (next term below 1e-8). Integer and select steps
    // only, no float-to-integer conversion, so that lanes of these compile to vector code.
    let bits = x.to_bits();
    let high = (bits & 0x007f_ffff) > 0x0035_04f3; // the mantissa of sqrt 2
    let m = f32::from_bits((bits & 0x007f_ffff) | if high { 0x3f00_0000 } else { 0x3f80_0000 });
    let e = ((bits >> 23) & 0xff) as i32 - if high { 126 } else { 127 };
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let ln_m =
        2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))));
    let y = (b * (e as f32 + ln_m * std::f32::consts::LOG2_E)).clamp(-126.0, 127.0);
    // 2^y = 2^n 2^f with n = round(y): adding 1.5 * 2^23 rounds y to an integer held in the
    // low mantissa bits; 2^f = e^(f ln 2) by its Taylor series to the 7th power
    // (|f ln 2| <= 0.35).
    const ROUND: f32 = 12_582_912.0;
    let shifted = y + ROUND;
    let n = shifted - ROUND;
    let t = (y - n) * std::f32::consts::LN_2;
    let p = 1.0
        + t * (1.0
            + t * (0.5
                + t * (1.0 / 6.0
                    + t * (1.0 / 24.0
                        + t * (1.0 / 120.0 + t * (1.0 / 720.0 + t * (1.0 / 5040.0)))))));
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// L'Ecuyer's three-component Tausworthe generator (taus88, the generator of umap-learn's
/// `tau_rand_int`), one per lane: shifts, masks and exclusive ors on 32 bits, so that the
/// lanes' draws compile to vector code. Seeded from the crate's [`Rng`].
struct LaneRng {
    s: [[u32; LANES]; 3],
}

impl LaneRng {
    fn new(rng: &mut Rng) -> Self {
        // Each component needs a seed above 1, 7 and 15 respectively.
        let mut s = [[0u32; LANES]; 3];
        for (c, floor) in s.iter_mut().zip([2u32, 8, 16]) {
            for v in c.iter_mut() {
                *v = (rng.next_u64() >> 32) as u32 | floor;
            }
        }
        Self { s }
    }

    /// One draw per lane, uniform in `0..n` (multiply-shift; bias below n / 2^32).
    // The lanes index the three state arrays and the output by one counter.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn below(&mut self, n: u32) -> [u32; LANES] {
        let mut out = [0u32; LANES];
        for l in 0..LANES {
            let [a, b, c] = [self.s[0][l], self.s[1][l], self.s[2][l]];
            let a = ((a & 0xffff_fffe) << 12) ^ (((a << 13) ^ a) >> 19);
            let b = ((b & 0xffff_fff8) << 4) ^ (((b << 2) ^ b) >> 25);
            let c = ((c & 0xffff_fff0) << 17) ^ (((c << 3) ^ c) >> 11);
            (self.s[0][l], self.s[1][l], self.s[2][l]) = (a, b, c);
            out[l] = ((u64::from(a ^ b ^ c) * u64::from(n)) >> 32) as u32;
        }
        out
    }
}

/// Edges laid out side by side (see [`run`]).
const LANES: usize = 8;

/// `x^b` on [`LANES`] values at once, without branches (so it compiles to vector
/// instructions): `x` is first clamped to f32's normal range, which changes nothing the
/// layout can see (a squared distance below 1e-38 contributes `0.001` to its denominator).
#[inline]
fn pow_lanes(x: [f32; LANES], b: f32) -> [f32; LANES] {
    let mut out = [0f32; LANES];
    for t in 0..LANES {
        out[t] = pow_normal(x[t].clamp(f32::MIN_POSITIVE, f32::MAX), b);
    }
    out
}

/// [`optimize`] for `D` coordinates per point (`D = 0`: `dim` of them), held in arrays of
/// `S >= dim` (`S = D`: small enough to stay in registers).
///
/// The edges (in row order) are cut into [`LANES`] contiguous runs, and each epoch the runs'
/// due edges are taken one from each run at a time: a step reads the [`LANES`] edges' ends,
/// applies the attraction and then the negative samples lane by lane side by side (each
/// lane's samples in sequence, as umap-learn takes them, from the lane's own generator), and
/// writes the moved rows back in lane order. Within a step the lanes see the rows as they were at its start, as umap-learn's
/// parallel layout sees rows other threads are moving; unlike it, the schedule is fixed, so a
/// seed gives one layout. The arithmetic is plain f32 (no fused operations), the same on every
/// CPU.
// The lanes index several parallel arrays (edges, rows, draws, coordinates) by one counter.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn run<const D: usize, const S: usize>(
    head: &mut [f32],
    tail: Option<&[f32]>,
    dim: usize,
    graph: &Graph,
    params: &LayoutParams,
    rng: &mut Rng,
) {
    let dim = if D == 0 { dim } else { D };
    assert!(dim <= S, "layout of {dim} dimensions");
    let n_epochs = params.n_epochs;
    let neg_rate = params.negative_sample_rate.max(1) as f64;
    let mut edges: Vec<EdgeState> = epochs_per_sample(&graph.weights, n_epochs)
        .into_iter()
        .zip(graph.rows.iter().zip(&graph.cols))
        .map(|(eps, (&row, &col))| EdgeState {
            eps,
            next: eps,
            next_neg: eps / neg_rate,
            row,
            col,
        })
        .collect();
    // The first epoch at which each edge is due (`next <= epoch` for a whole `epoch` is
    // `ceil(next) <= epoch`); never for an edge that is never sampled.
    let mut due_at: Vec<u32> = edges.iter().map(EdgeState::due_at).collect();
    let n_vertices = graph.n_cols;
    let mut draws = LaneRng::new(rng);
    let n_vertices = u32::try_from(n_vertices).unwrap_or(u32::MAX);
    let (a, b, gamma) = (params.a, params.b, params.gamma);
    let n_edges = edges.len();
    let runs: [std::ops::Range<usize>; LANES] =
        std::array::from_fn(|l| l * n_edges / LANES..(l + 1) * n_edges / LANES);
    let mut due: [Vec<u32>; LANES] = std::array::from_fn(|l| vec![0; runs[l].len()]);
    // Per coordinate, one value per lane.
    let mut cur = [[0f32; LANES]; S];
    let mut oth = [[0f32; LANES]; S];
    let mut alpha = params.initial_alpha;
    for n in 0..n_epochs {
        let epoch = n as f64;
        let n_u32 = n as u32;
        // Each run's due edges, listed without branches (every edge is written, the count
        // moves past the due ones).
        let mut counts = [0usize; LANES];
        for ((list, run), count) in due.iter_mut().zip(&runs).zip(counts.iter_mut()) {
            let mut len = 0;
            for (i, &at) in run.clone().zip(&due_at[run.clone()]) {
                list[len] = i as u32;
                len += usize::from(at <= n_u32);
            }
            *count = len;
        }
        let steps = counts.iter().copied().max().unwrap_or(0);
        for step in 0..steps {
            // An idle lane reads row 0 at both ends (distance 0, no force) and draws no
            // negative samples (its `next_neg` is the epoch).
            let mut active = [false; LANES];
            let mut ids = [0usize; LANES];
            let (mut js, mut ks) = ([0usize; LANES], [0usize; LANES]);
            let (mut eps, mut next_neg) = ([1f64; LANES], [epoch; LANES]);
            for l in 0..LANES {
                if step < counts[l] {
                    let i = due[l][step] as usize;
                    let e = &edges[i];
                    (active[l], ids[l]) = (true, i);
                    (js[l], ks[l]) = (e.row as usize, e.col as usize);
                    (eps[l], next_neg[l]) = (e.eps, e.next_neg);
                }
            }
            let at_j: [usize; LANES] = std::array::from_fn(|l| js[l] * dim);
            let at_k: [usize; LANES] = std::array::from_fn(|l| ks[l] * dim);
            {
                let other = tail.unwrap_or(&*head);
                for d in 0..dim {
                    cur[d] = gather(head, &at_j, d);
                    oth[d] = gather(other, &at_k, d);
                }
                // An idle lane's other end is its own row 0 in `head` (with a tail, a row of
                // the tail is not at distance 0).
                for l in 0..LANES {
                    if !active[l] {
                        for d in 0..dim {
                            oth[d][l] = cur[d][l];
                        }
                    }
                }
            }
            // Attraction: -2ab d^(2(b-1)) / (1 + a d^2b), with d^(2(b-1)) = d^2b / d^2.
            let dist2 = squared_distances(&cur[..dim], &oth[..dim]);
            let p = pow_lanes(dist2, b);
            let mut coeff = [0f32; LANES];
            for l in 0..LANES {
                let c = -2.0 * a * b * (p[l] / dist2[l]) / (a * p[l] + 1.0);
                coeff[l] = if dist2[l] > 0.0 { c } else { 0.0 };
            }
            for d in 0..dim {
                for l in 0..LANES {
                    let g = clip(coeff[l] * (cur[d][l] - oth[d][l]));
                    cur[d][l] += g * alpha;
                    oth[d][l] -= g * alpha;
                }
            }
            // Negative samples owed since the edge's last ones: all lanes at once.
            let mut n_neg = [0usize; LANES];
            if params.negative_sample_rate > 0 {
                for l in 0..LANES {
                    let eps_neg = eps[l] / neg_rate;
                    n_neg[l] = ((epoch - next_neg[l]) / eps_neg).max(0.0) as usize;
                    next_neg[l] += n_neg[l] as f64 * eps_neg;
                }
            }
            for l in 0..LANES {
                if !active[l] {
                    continue;
                }
                if tail.is_none() {
                    for d in 0..dim {
                        head[at_k[l] + d] = oth[d][l];
                    }
                }
                let e = &mut edges[ids[l]];
                e.next += e.eps;
                e.next_neg = next_neg[l];
                due_at[ids[l]] = e.due_at();
            }
            // Repulsion from random rows, round by round. Every lane draws and reads a row in
            // every round (no branches); a lane past its count, an idle lane, or one that drew
            // its own row (with both ends in `head` that row is `cur`, not yet written back)
            // gets no force.
            let rounds = n_neg.iter().copied().max().unwrap_or(0);
            let rows = tail.unwrap_or(&*head);
            for round in 0..rounds {
                let (mut at, mut live) = ([0usize; LANES], [false; LANES]);
                let drawn = draws.below(n_vertices);
                for l in 0..LANES {
                    let s = drawn[l] as usize;
                    at[l] = s * dim;
                    live[l] = round < n_neg[l] && !(tail.is_none() && s == js[l]);
                }
                for (d, lanes) in oth.iter_mut().enumerate().take(dim) {
                    *lanes = gather(rows, &at, d);
                }
                let dist2 = squared_distances(&cur[..dim], &oth[..dim]);
                let p = pow_lanes(dist2, b);
                let mut coeff = [0f32; LANES];
                for l in 0..LANES {
                    let c = 2.0 * gamma * b / ((0.001 + dist2[l]) * (a * p[l] + 1.0));
                    coeff[l] = if live[l] && dist2[l] > 0.0 && c > 0.0 {
                        c
                    } else {
                        0.0
                    };
                }
                for d in 0..dim {
                    for l in 0..LANES {
                        cur[d][l] += clip(coeff[l] * (cur[d][l] - oth[d][l])) * alpha;
                    }
                }
            }
            for l in 0..LANES {
                if active[l] {
                    for d in 0..dim {
                        head[at_j[l] + d] = cur[d][l];
                    }
                }
            }
        }
        alpha = params.initial_alpha * (1.0 - (n as f32 / n_epochs as f32));
    }
}

/// An edge's sampling schedule (umap-learn's `epochs_per_sample`, `epoch_of_next_sample` and
/// `epoch_of_next_negative_sample`) with its ends, side by side so that a due edge is one read.
#[derive(Debug, Clone, Copy)]
struct EdgeState {
    eps: f64,
    next: f64,
    next_neg: f64,
    row: u32,
    col: u32,
}

impl EdgeState {
    /// The first whole epoch `n` with `next <= n` (`u32::MAX`: never, as for an edge that is
    /// never sampled, `eps < 0`).
    fn due_at(&self) -> u32 {
        if self.eps >= 0.0 {
            // Saturating: a `next` past `u32::MAX` (or infinite) is never due.
            self.next.ceil() as u32
        } else {
            u32::MAX
        }
    }
}

/// `rows[at[l] + d]` for each lane `l`, written as one array value (so the lanes are put
/// together in registers rather than stored one by one and read back as a vector).
#[inline(always)]
fn gather(rows: &[f32], at: &[usize; LANES], d: usize) -> [f32; LANES] {
    [
        rows[at[0] + d],
        rows[at[1] + d],
        rows[at[2] + d],
        rows[at[3] + d],
        rows[at[4] + d],
        rows[at[5] + d],
        rows[at[6] + d],
        rows[at[7] + d],
    ]
}

/// Per lane, the squared distance between `x` and `y` (one array of lanes per coordinate).
#[inline]
fn squared_distances(x: &[[f32; LANES]], y: &[[f32; LANES]]) -> [f32; LANES] {
    let mut out = [0f32; LANES];
    for (xd, yd) in x.iter().zip(y) {
        for l in 0..LANES {
            let diff = xd[l] - yd[l];
            out[l] += diff * diff;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_matches_powf() {
        // The layout's exponents (b for min_dist 0 .. 0.99) over squared distances from 1e-30
        // to 1e30.
        for b in [0.79f32, 0.9, 1.0, 1.5, 1.93] {
            let mut x = [1e-30f32; LANES];
            for l in 1..LANES {
                x[l] = x[l - 1] * 1.37;
            }
            while x[0] < 1e30 {
                for (&xl, got) in x.iter().zip(pow_lanes(x, b)) {
                    let want = xl.powf(b);
                    // Past f32's normal range the exponent is clamped (the layout never goes
                    // there). Within it the error is that of `b log2 x` in f32, so it grows
                    // with the exponent: 1e-6 at 2^0, 8e-6 at 2^-75.
                    let tol = 1e-7 * (10.0 + want.log2().abs());
                    assert!(
                        !want.is_normal() || want > 1e38 || (got - want).abs() <= tol * want.abs(),
                        "{xl}^{b}: {got} vs {want}"
                    );
                }
                x.iter_mut().for_each(|v| *v *= 1.37f32.powi(LANES as i32));
            }
        }
        // Each lane on its own: the same as one value at a time; 1 is exact; a subnormal is
        // taken as the smallest normal.
        let xs = [1e-20f32, 0.003, 0.5, 1.0, 1.41, 1.42, 7.0, 1e-40];
        let lanes = pow_lanes(xs, 0.79);
        for (&x, got) in xs.iter().zip(lanes) {
            assert_eq!(got, pow_normal(x.max(f32::MIN_POSITIVE), 0.79));
        }
        assert_eq!(lanes[3], 1.0);
    }

    #[test]
    fn lane_draws_are_uniform_independent_and_seeded() {
        let n = 7u32;
        let mut draws = LaneRng::new(&mut Rng::new(3));
        let mut hits = [[0usize; 7]; LANES];
        let mut same = 0;
        for _ in 0..7000 {
            let d = draws.below(n);
            same += usize::from(d.iter().all(|&v| v == d[0]));
            for (l, &v) in d.iter().enumerate() {
                hits[l][v as usize] += 1;
            }
        }
        for lane in hits {
            assert!(lane.iter().all(|&h| (850..1150).contains(&h)), "{lane:?}");
        }
        assert!(same < 10, "the lanes draw alike {same} times");
        let (mut a, mut b) = (
            LaneRng::new(&mut Rng::new(9)),
            LaneRng::new(&mut Rng::new(9)),
        );
        let mut c = LaneRng::new(&mut Rng::new(10));
        let (x, y, z) = (a.below(1 << 30), b.below(1 << 30), c.below(1 << 30));
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn heavier_edges_are_sampled_more_often() {
        assert_eq!(
            epochs_per_sample(&[1.0, 0.5, 0.0], 200),
            vec![1.0, 2.0, -1.0]
        );
    }

    #[test]
    fn an_edge_pulls_its_ends_together_and_negatives_push_apart() {
        // Two points joined by an edge: attraction shortens the edge.
        let mut emb = vec![0.0f32, 0.0, 3.0, 0.0];
        let graph = Graph {
            n_rows: 2,
            n_cols: 2,
            rows: vec![0, 1],
            cols: vec![1, 0],
            weights: vec![1.0, 1.0],
        };
        let params = LayoutParams {
            a: 1.93,
            b: 0.79,
            gamma: 1.0,
            initial_alpha: 1.0,
            negative_sample_rate: 0,
            n_epochs: 50,
        };
        optimize(&mut emb, None, 2, &graph, &params, &mut Rng::new(1));
        let d = (emb[2] - emb[0]).hypot(emb[3] - emb[1]);
        assert!(d < 1.0, "{emb:?}");
        // A new point with one edge to training point 0 moves towards it; training is fixed.
        let tail = vec![0.0f32, 0.0, 10.0, 10.0];
        let mut head = vec![4.0f32, 0.0];
        let g = Graph {
            n_rows: 1,
            n_cols: 2,
            rows: vec![0],
            cols: vec![0],
            weights: vec![1.0],
        };
        optimize(&mut head, Some(&tail), 2, &g, &params, &mut Rng::new(1));
        assert!(head[0].hypot(head[1]) < 2.0, "{head:?}");
    }
}
