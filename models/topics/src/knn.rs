//! Exact k-nearest neighbours by brute force (every pair), parallel over blocks of query rows
//! with rayon, the distances computed in cache-sized tiles by an AVX2/FMA kernel where the CPU
//! has one. Each pair's distance is summed in one fixed order, so a row's result depends only
//! on that row: the output is the same for any number of threads and any batch it came in.
//! The rows of a fit against themselves compute each pair once, for both rows ([`knn_self`],
//! the same result). Fine up to ~20k rows (N² distance evaluations).

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
        self.finish(self.raw(a, b))
    }

    /// What the distance is computed from: `a · b` for cosine, `|a - b|^2` for Euclidean.
    fn raw(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => dot(a, b),
            Metric::Euclidean => squared_euclidean(a, b),
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

/// Query rows per parallel task.
const QUERY_BLOCK: usize = 32;
/// Base rows per distance tile (a tile of base rows stays in L2 while a query block reads it).
const BASE_BLOCK: usize = 128;

/// The `k` nearest rows of `base` to each row of `queries` (both prepared for `metric`,
/// `dim` columns), nearest first, ties to the lower index. With `self_query`, `queries` is
/// `base` and a row's distance to itself is exactly 0 (so it comes first, as umap-learn's
/// exact search puts it). Returns row-major `(indices, distances)`, `k` per query
/// (`k <= base rows`).
///
/// Distances are computed tile by tile (a block of queries against a block of base rows, see
/// [`tile`]) and each pair's sum runs in one fixed order whatever the tile, so a row's
/// neighbours do not depend on the other rows of the call or on the number of threads.
pub(crate) fn knn(
    queries: &[f32],
    base: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    self_query: bool,
) -> (Vec<u32>, Vec<f32>) {
    if self_query && k > 0 && dim > 0 {
        return knn_self(base, dim, k, metric);
    }
    knn_brute(queries, base, dim, k, metric, self_query)
}

/// [`knn`] by every (query, base) pair.
fn knn_brute(
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
    if k == 0 || dim == 0 {
        return (indices, distances);
    }
    let simd = tile::Kernel::detect();
    indices
        .par_chunks_mut(QUERY_BLOCK * k)
        .zip(distances.par_chunks_mut(QUERY_BLOCK * k))
        .enumerate()
        .for_each(|(block, (idx, dist))| {
            let first = block * QUERY_BLOCK;
            let rows = idx.len() / k;
            let q = &queries[first * dim..(first + rows) * dim];
            // Per query, a sorted list of the best k so far; a later row replaces only a
            // strictly nearer one, so ties keep the lower index.
            let mut best: Vec<Vec<(f32, u32)>> =
                (0..rows).map(|_| Vec::with_capacity(k + 1)).collect();
            let mut scratch = vec![0f32; rows * BASE_BLOCK];
            for b0 in (0..n_base).step_by(BASE_BLOCK) {
                let cols = BASE_BLOCK.min(n_base - b0);
                let out = &mut scratch[..rows * cols];
                simd.tile(metric, q, &base[b0 * dim..(b0 + cols) * dim], dim, out);
                for (r, list) in best.iter_mut().enumerate() {
                    for (c, &raw) in out[r * cols..(r + 1) * cols].iter().enumerate() {
                        let j = b0 + c;
                        let d = if self_query && first + r == j {
                            0.0
                        } else {
                            metric.finish(raw)
                        };
                        if list.len() == k && list.last().is_none_or(|w| d >= w.0) {
                            continue;
                        }
                        let at = list.partition_point(|w| w.0 <= d);
                        list.insert(at, (d, j as u32));
                        list.truncate(k);
                    }
                }
            }
            for (r, list) in best.into_iter().enumerate() {
                for (slot, (d, j)) in list.into_iter().enumerate() {
                    idx[r * k + slot] = j;
                    dist[r * k + slot] = d;
                }
            }
        });
    (indices, distances)
}

/// Rows per block of the symmetric search.
const PAIR_BLOCK: usize = 128;

/// A block's rows' neighbour lists (sorted `(distance, index)`, at most `k` each).
type BlockLists = Vec<Vec<(f32, u32)>>;

/// [`knn`] of the rows against themselves, each pair's distance computed once: a pair's sum
/// is the same whichever row is the query (products and differences are symmetric, the order
/// of the terms is fixed), so a tile of blocks `I x J` serves the rows of both. The blocks
/// are paired round by round as in a round-robin tournament (each block in at most one pair
/// per round), so a round's tiles run in parallel and each updates only its own two blocks'
/// lists. A list keeps the `k` least `(distance, index)`, which does not depend on the order
/// the candidates come in: the result is [`knn_brute`]'s, bit for bit.
fn knn_self(rows: &[f32], dim: usize, k: usize, metric: Metric) -> (Vec<u32>, Vec<f32>) {
    let n = rows.len() / dim;
    let blocks = n.div_ceil(PAIR_BLOCK);
    let simd = tile::Kernel::detect();
    let mut lists: Vec<BlockLists> = (0..blocks)
        .map(|b| {
            let len = PAIR_BLOCK.min(n - b * PAIR_BLOCK);
            (0..len).map(|_| Vec::with_capacity(k + 1)).collect()
        })
        .collect();
    let block_rows = |b: usize| {
        let lo = b * PAIR_BLOCK;
        &rows[lo * dim..(lo + PAIR_BLOCK).min(n) * dim]
    };
    // Round-robin over an even number of seats (the last one empty when `blocks` is odd):
    // seat `seats - 1` stays, the others turn; round 0 also pairs each block with itself.
    let seats = blocks + blocks % 2;
    let rounds = seats.saturating_sub(1).max(1);
    for round in 0..rounds {
        let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(seats / 2 + blocks);
        if seats >= 2 {
            let turn = |t: usize| (round + t) % (seats - 1);
            pairs.push((turn(0), seats - 1));
            for t in 1..seats / 2 {
                pairs.push((turn(t), turn(seats - 1 - t)));
            }
        }
        pairs.retain(|&(a, b)| a < blocks && b < blocks);
        // Disjoint pairs: each task takes its two blocks' lists out of `lists`.
        let mut tasks: Vec<(usize, usize, BlockLists, BlockLists)> = pairs
            .iter()
            .map(|&(a, b)| {
                (
                    a,
                    b,
                    std::mem::take(&mut lists[a]),
                    std::mem::take(&mut lists[b]),
                )
            })
            .collect();
        tasks.par_iter_mut().for_each(|(a, b, la, lb)| {
            let (qa, qb) = (block_rows(*a), block_rows(*b));
            let (ra, rb) = (la.len(), lb.len());
            let mut out = vec![0f32; ra * rb];
            simd.tile(metric, qa, qb, dim, &mut out);
            for (r, list) in la.iter_mut().enumerate() {
                for (c, &raw) in out[r * rb..(r + 1) * rb].iter().enumerate() {
                    let d = metric.finish(raw);
                    offer(list, k, d, (*b * PAIR_BLOCK + c) as u32);
                    offer(&mut lb[c], k, d, (*a * PAIR_BLOCK + r) as u32);
                }
            }
        });
        for (a, b, la, lb) in tasks {
            lists[a] = la;
            lists[b] = lb;
        }
        if round == 0 {
            // Each block against itself (a row's distance to itself is 0).
            lists.par_iter_mut().enumerate().for_each(|(b, block)| {
                let q = block_rows(b);
                let len = block.len();
                let mut out = vec![0f32; len * len];
                simd.tile(metric, q, q, dim, &mut out);
                for (r, list) in block.iter_mut().enumerate() {
                    for (c, &raw) in out[r * len..(r + 1) * len].iter().enumerate() {
                        let d = if r == c { 0.0 } else { metric.finish(raw) };
                        offer(list, k, d, (b * PAIR_BLOCK + c) as u32);
                    }
                }
            });
        }
    }
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for list in lists.into_iter().flatten() {
        for (d, j) in list {
            indices.push(j);
            distances.push(d);
        }
    }
    (indices, distances)
}

/// Keeps `(d, j)` in `list` (sorted, at most `k`) if it is among the `k` least `(distance,
/// index)` pairs offered.
#[inline]
fn offer(list: &mut Vec<(f32, u32)>, k: usize, d: f32, j: u32) {
    let less = |w: &(f32, u32)| w.0 < d || (w.0 == d && w.1 < j);
    if list.len() == k && list.last().is_none_or(less) {
        return;
    }
    let at = list.partition_point(less);
    list.insert(at, (d, j));
    list.truncate(k);
}

impl Metric {
    /// The distance from what [`tile`] sums for a pair: `1 - x·y` (at least 0) for cosine,
    /// the square root of the squared difference for Euclidean.
    fn finish(self, raw: f32) -> f32 {
        match self {
            Metric::Euclidean => raw.sqrt(),
            Metric::Cosine => (1.0 - raw).max(0.0),
        }
    }
}

/// Distance tiles: for a block of query rows and a block of base rows, every pair's `x·y`
/// (cosine) or `|x - y|²` (Euclidean). Written by hand because no matrix-product crate fixes
/// the summation order of one entry independently of the matrix shapes, and the model's
/// neighbours (so its topics) must not depend on how a batch was cut.
///
/// With AVX2 and FMA (detected at run time) a 4 x 3 register tile of eight-lane FMA
/// accumulators; otherwise [`dot`] / [`squared_euclidean`] per pair. The two differ in
/// rounding, so a fitted model's neighbours are fixed per instruction set, as its layout is.
mod tile {
    use super::Metric;

    /// The kernel the CPU runs.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Kernel {
        Portable,
        #[cfg(target_arch = "x86_64")]
        Avx2,
    }

    impl Kernel {
        pub(super) fn detect() -> Self {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
            Kernel::Portable
        }

        /// `out[r * cols + c]` = the raw sum of query row `r` and base row `c`.
        #[allow(unsafe_code)]
        pub(super) fn tile(
            self,
            metric: Metric,
            q: &[f32],
            b: &[f32],
            dim: usize,
            out: &mut [f32],
        ) {
            let cols = b.len() / dim;
            match self {
                Kernel::Portable => {
                    for (qr, o) in q.chunks_exact(dim).zip(out.chunks_exact_mut(cols)) {
                        for (br, v) in b.chunks_exact(dim).zip(o.iter_mut()) {
                            *v = metric.raw(qr, br);
                        }
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => match metric {
                    // SAFETY: `detect` saw AVX2 and FMA on this CPU.
                    Metric::Cosine => unsafe { x86::tile::<false>(q, b, dim, out) },
                    // SAFETY: as above.
                    Metric::Euclidean => unsafe { x86::tile::<true>(q, b, dim, out) },
                },
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    mod x86 {
        use std::arch::x86_64::*;

        /// Rows of queries and of base rows per register tile.
        const MR: usize = 4;
        const NR: usize = 3;

        /// `r x c` pairs starting at query row `q0` and base row `b0`, written to `out`
        /// (`cols` per row). Each pair: eight lanes of FMA over the full chunks of eight, the
        /// lanes summed in one order, then the remaining columns one by one.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        fn block<const R: usize, const C: usize, const EUCLID: bool>(
            q: &[f32],
            b: &[f32],
            dim: usize,
            q0: usize,
            b0: usize,
            out: &mut [f32],
            cols: usize,
        ) {
            let chunks = dim / 8;
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let qp: [*const f32; R] = std::array::from_fn(|r| q[(q0 + r) * dim..].as_ptr());
            let bp: [*const f32; C] = std::array::from_fn(|c| b[(b0 + c) * dim..].as_ptr());
            for ch in 0..chunks {
                // SAFETY: rows hold `dim >= 8 * chunks` values past their pointer.
                let bv: [__m256; C] =
                    std::array::from_fn(|c| unsafe { _mm256_loadu_ps(bp[c].add(ch * 8)) });
                for r in 0..R {
                    // SAFETY: as above.
                    let qv = unsafe { _mm256_loadu_ps(qp[r].add(ch * 8)) };
                    for c in 0..C {
                        acc[r][c] = if EUCLID {
                            let d = _mm256_sub_ps(qv, bv[c]);
                            _mm256_fmadd_ps(d, d, acc[r][c])
                        } else {
                            _mm256_fmadd_ps(qv, bv[c], acc[r][c])
                        };
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    let mut s = hsum(acc[r][c]);
                    let (qr, br) = (
                        &q[(q0 + r) * dim..(q0 + r + 1) * dim],
                        &b[(b0 + c) * dim..(b0 + c + 1) * dim],
                    );
                    for t in chunks * 8..dim {
                        s += if EUCLID {
                            (qr[t] - br[t]) * (qr[t] - br[t])
                        } else {
                            qr[t] * br[t]
                        };
                    }
                    out[(q0 + r) * cols + b0 + c] = s;
                }
            }
        }

        #[target_feature(enable = "avx2,fma")]
        #[inline]
        fn hsum(v: __m256) -> f32 {
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps(v, 1);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }

        /// Every pair of `q`'s and `b`'s rows (`dim` columns) into `out` (row-major).
        #[target_feature(enable = "avx2,fma")]
        pub(super) fn tile<const EUCLID: bool>(q: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
            let (rows, cols) = (q.len() / dim, b.len() / dim);
            let mut r = 0;
            while r + MR <= rows {
                let mut c = 0;
                while c + NR <= cols {
                    block::<MR, NR, EUCLID>(q, b, dim, r, c, out, cols);
                    c += NR;
                }
                while c < cols {
                    block::<MR, 1, EUCLID>(q, b, dim, r, c, out, cols);
                    c += 1;
                }
                r += MR;
            }
            while r < rows {
                let mut c = 0;
                while c + NR <= cols {
                    block::<1, NR, EUCLID>(q, b, dim, r, c, out, cols);
                    c += NR;
                }
                while c < cols {
                    block::<1, 1, EUCLID>(q, b, dim, r, c, out, cols);
                    c += 1;
                }
                r += 1;
            }
        }
    }
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

    /// Rows of `n x dim` uniform values in -1..1.
    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n * dim)
            .map(|_| (rng.uniform() * 2.0 - 1.0) as f32)
            .collect()
    }

    #[test]
    fn tiles_agree_with_the_pairwise_sums() {
        // Every tile shape the kernel cuts (4 x 3 blocks and their edges), and dimensions
        // with and without a remainder past the eight-lane chunks.
        for (nq, nb, dim) in [(9, 7, 384), (5, 4, 19), (1, 1, 3), (4, 3, 8), (7, 11, 45)] {
            let (q, b) = (rows(nq, dim, 1), rows(nb, dim, 2));
            for metric in [Metric::Cosine, Metric::Euclidean] {
                let mut got = vec![0f32; nq * nb];
                tile::Kernel::detect().tile(metric, &q, &b, dim, &mut got);
                for i in 0..nq {
                    for j in 0..nb {
                        let (x, y) = (&q[i * dim..(i + 1) * dim], &b[j * dim..(j + 1) * dim]);
                        let want = metric.raw(x, y);
                        let tol = 1e-5 * (1.0 + want.abs()) * dim as f32;
                        assert!(
                            (got[i * nb + j] - want).abs() <= tol,
                            "{metric:?} {nq}x{nb}x{dim} ({i}, {j}): {} vs {want}",
                            got[i * nb + j]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_neighbours_in_any_batch() {
        // 70 queries cross several query blocks and 300 base rows several base tiles.
        let dim = 37;
        let base = Metric::Cosine.prepare(&rows(300, dim, 3), dim);
        let queries = Metric::Cosine.prepare(&rows(70, dim, 4), dim);
        let (all_idx, all_dist) = knn(&queries, &base, dim, 10, Metric::Cosine, false);
        for i in [0, 5, 33, 69] {
            let (idx, dist) = knn(
                &queries[i * dim..(i + 1) * dim],
                &base,
                dim,
                10,
                Metric::Cosine,
                false,
            );
            assert_eq!(idx, all_idx[i * 10..(i + 1) * 10]);
            assert_eq!(
                dist.iter().map(|d| d.to_bits()).collect::<Vec<_>>(),
                all_dist[i * 10..(i + 1) * 10]
                    .iter()
                    .map(|d| d.to_bits())
                    .collect::<Vec<_>>()
            );
        }
        // Against the plain pairwise distances: the same neighbour sets in the same order
        // up to rounding ties.
        for i in 0..70 {
            let q = &queries[i * dim..(i + 1) * dim];
            let mut want: Vec<(f32, u32)> = (0..300)
                .map(|j| {
                    (
                        Metric::Cosine.distance(q, &base[j * dim..(j + 1) * dim]),
                        j as u32,
                    )
                })
                .collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (slot, &(d, _)) in want.iter().take(10).enumerate() {
                assert!(
                    (all_dist[i * 10 + slot] - d).abs() < 1e-5,
                    "row {i} slot {slot}"
                );
            }
        }
    }

    #[test]
    fn the_symmetric_search_is_the_brute_force_one() {
        // Block counts odd and even, a dimension with a remainder past the eight-lane chunks,
        // and repeated rows (exact ties).
        for (n, dim, metric) in [
            (300, 37, Metric::Cosine),
            (513, 16, Metric::Euclidean),
            (100, 5, Metric::Cosine),
            (385, 9, Metric::Euclidean),
        ] {
            let mut data = rows(n, dim, 7);
            for i in (0..n).step_by(11).skip(1) {
                let (src, dst) = data.split_at_mut(i * dim);
                dst[..dim].copy_from_slice(&src[..dim]);
            }
            let data = metric.prepare(&data, dim);
            let k = 15.min(n);
            let (bi, bd) = knn_brute(&data, &data, dim, k, metric, true);
            let (si, sd) = knn_self(&data, dim, k, metric);
            assert_eq!(si, bi, "{n} x {dim} {metric:?}");
            assert_eq!(
                sd.iter().map(|d| d.to_bits()).collect::<Vec<_>>(),
                bd.iter().map(|d| d.to_bits()).collect::<Vec<_>>()
            );
        }
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
