//! Mutual reachability for [`super::Hdbscan`]: nearest neighbours, core distances and the
//! exact minimum spanning tree, each distance computed in one fixed way (the squared sum over
//! the coordinates in order, then its square root), so that the faster searches here give
//! the values a scan of every pair gives.

/// The squared euclidean distance, summed over the coordinates in order.
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>()
}

/// The `k` nearest rows of `data` to `p`, nearest first, ties to the lower index.
pub(super) fn nearest_k(data: &[f64], dim: usize, p: &[f64], k: usize) -> Vec<(f64, usize)> {
    let mut near = Nearest::new(k);
    for (j, row) in data.chunks_exact(dim).enumerate() {
        near.offer(squared_distance(p, row), j);
    }
    near.into_vec()
}

/// The `k` nearest rows seen so far, nearest first, ties to the lower (earlier offered)
/// index, kept as (distance, row, squared distance): a row whose square exceeds the farthest
/// kept one's is no nearer once rooted either (the square root is monotone), so it is passed
/// over before its root is taken.
struct Nearest {
    k: usize,
    best: Vec<(f64, usize, f64)>,
}

impl Nearest {
    fn new(k: usize) -> Self {
        Self {
            k,
            best: Vec::with_capacity(k + 1),
        }
    }

    /// The square above which an offer is passed over.
    #[inline]
    fn bound(&self) -> f64 {
        if self.best.len() == self.k {
            self.best.last().map_or(f64::NEG_INFINITY, |w| w.2)
        } else {
            f64::INFINITY
        }
    }

    #[inline]
    fn offer(&mut self, d2: f64, j: usize) {
        if d2 > self.bound() {
            return;
        }
        let d = d2.sqrt();
        if self.best.len() == self.k && self.best.last().is_none_or(|w| d >= w.0) {
            return;
        }
        let at = self.best.partition_point(|w| w.0 <= d);
        self.best.insert(at, (d, j, d2));
        self.best.truncate(self.k);
    }

    fn into_vec(self) -> Vec<(f64, usize)> {
        self.best.into_iter().map(|(d, j, _)| (d, j)).collect()
    }
}

/// The rows of `data` (`n x dim`) as one array per coordinate.
fn columns(data: &[f64], dim: usize) -> Vec<Vec<f64>> {
    (0..dim)
        .map(|d| data.iter().skip(d).step_by(dim).copied().collect())
        .collect()
}

/// Per point, the distance to its `min_samples`-th nearest other point (clustering's core
/// distance) and to its `min_samples`-th nearest with itself counted (`approximate_predict`'s).
///
/// The points are sorted by their first coordinate, and each one's neighbours are sought
/// outwards from it in that order, nearer first coordinate first; a direction ends where
/// the first coordinate alone puts every further point beyond the farthest of the nearest
/// found (a sum of squares is at least its first term). Each distance is computed as
/// [`nearest_k`] computes it, so the values are the same as a scan of every point gives.
pub(super) fn core_distances(data: &[f64], dim: usize, min_samples: usize) -> (Vec<f64>, Vec<f64>) {
    use rayon::prelude::*;
    let n = data.len() / dim;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| data[a * dim].total_cmp(&data[b * dim]).then(a.cmp(&b)));
    let xs: Vec<f64> = order.iter().map(|&i| data[i * dim]).collect();
    let mut rank = vec![0usize; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    (0..n)
        .into_par_iter()
        .map(|i| {
            let p = &data[i * dim..(i + 1) * dim];
            let mut near = Nearest::new(min_samples + 1);
            let offer = |near: &mut Nearest, r: usize| {
                let j = order[r];
                near.offer(squared_distance(p, &data[j * dim..(j + 1) * dim]), j);
            };
            let r = rank[i];
            offer(&mut near, r);
            let (mut left, mut right) = (r, r + 1);
            loop {
                let bound = near.bound();
                let gap = |x: f64| (p[0] - x) * (p[0] - x);
                let l = (left > 0)
                    .then(|| gap(xs[left - 1]))
                    .filter(|&g| g <= bound);
                let rt = (right < n).then(|| gap(xs[right])).filter(|&g| g <= bound);
                match (l, rt) {
                    (None, None) => break,
                    (Some(gl), Some(gr)) if gl <= gr => {
                        left -= 1;
                        offer(&mut near, left);
                    }
                    (Some(_), None) => {
                        left -= 1;
                        offer(&mut near, left);
                    }
                    _ => {
                        offer(&mut near, right);
                        right += 1;
                    }
                }
            }
            let near = near.into_vec();
            (near[min_samples].0, near[min_samples - 1].0)
        })
        .unzip()
}

/// Prim's minimum spanning tree of the mutual reachability graph: `(a, b, weight)` edges in
/// the order they join the tree (ties to the lower index).
///
/// The points not yet in the tree are kept compacted, one array per coordinate, so each step
/// is a few passes the compiler vectorises: the squared distances to the point that joined
/// last; then, only where the square is small enough to improve a point's best weight
/// (`bound`, its square with a margin for rounding), the weight itself (the distance raised
/// to the mutual reachability); then the minimum (ties to the lower point index, as a scan in
/// index order finds it).
pub(super) fn prim_mst(data: &[f64], dim: usize, core: &[f64]) -> Vec<(usize, usize, f64)> {
    let n = core.len();
    let mut edges = Vec::with_capacity(n.saturating_sub(1));
    // Points 1..n, in index order to start with.
    let mut index: Vec<usize> = (1..n).collect();
    let mut coords: Vec<Vec<f64>> = columns(&data[dim.min(data.len())..], dim);
    let mut core_left: Vec<f64> = core[1..].to_vec();
    let mut best = vec![f64::INFINITY; n - 1];
    let mut bound = vec![f64::INFINITY; n - 1];
    let mut from = vec![0usize; n - 1];
    let mut acc = vec![0f64; n - 1];
    let mut current = 0usize;
    while !index.is_empty() {
        let m = index.len();
        let cp = &data[current * dim..(current + 1) * dim];
        let core_current = core[current];
        let acc = &mut acc[..m];
        acc.fill(0.0);
        for (column, &c) in coords.iter().zip(cp) {
            for (a, &v) in acc.iter_mut().zip(&column[..m]) {
                let diff = c - v;
                *a += diff * diff;
            }
        }
        for t in 0..m {
            // A square above `bound[t]` roots to at least `best[t]`: no improvement.
            if acc[t] > bound[t] {
                continue;
            }
            let d = acc[t].sqrt().max(core_current).max(core_left[t]);
            if d < best[t] {
                best[t] = d;
                // sqrt(x) < d needs x < d^2 (1 + 2^-52 or so): a wider margin is safe.
                bound[t] = d * d * (1.0 + 1e-12);
                from[t] = current;
            }
        }
        let min = best[..m].iter().copied().fold(f64::INFINITY, f64::min);
        let mut at = usize::MAX;
        for (t, (&b, &j)) in best[..m].iter().zip(&index).enumerate() {
            if b == min && (at == usize::MAX || j < index[at]) {
                at = t;
            }
        }
        let next = index[at];
        edges.push((from[at], next, best[at]));
        index.swap_remove(at);
        for column in &mut coords {
            column.swap_remove(at);
        }
        core_left.swap_remove(at);
        best.swap_remove(at);
        bound.swap_remove(at);
        from.swap_remove(at);
        current = next;
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain forms: every distance rooted, Prim over the points in index order.
    fn reference_nearest(data: &[f64], dim: usize, p: &[f64], k: usize) -> Vec<(f64, usize)> {
        let mut all: Vec<(f64, usize)> = data
            .chunks_exact(dim)
            .enumerate()
            .map(|(j, row)| (squared_distance(p, row).sqrt(), j))
            .collect();
        all.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        all.truncate(k);
        all
    }

    fn reference_prim(data: &[f64], dim: usize, core: &[f64]) -> Vec<(usize, usize, f64)> {
        let n = core.len();
        let mut in_tree = vec![false; n];
        let mut best = vec![f64::INFINITY; n];
        let mut from = vec![0usize; n];
        let mut edges = Vec::new();
        let mut current = 0;
        in_tree[0] = true;
        for _ in 1..n {
            let mut next = usize::MAX;
            for j in (0..n).filter(|&j| !in_tree[j]) {
                let d = squared_distance(&data[current * dim..][..dim], &data[j * dim..][..dim])
                    .sqrt()
                    .max(core[current])
                    .max(core[j]);
                if d < best[j] {
                    (best[j], from[j]) = (d, current);
                }
                if next == usize::MAX || best[j] < best[next] {
                    next = j;
                }
            }
            in_tree[next] = true;
            edges.push((from[next], next, best[next]));
            current = next;
        }
        edges
    }

    #[test]
    fn the_tree_and_neighbours_match_their_plain_forms() {
        // Random points on a coarse grid (many equal distances, so the ties are exercised)
        // and random continuous ones.
        let mut rng = crate::rng::Rng::new(5);
        for (n, dim, grid) in [(300, 3, true), (257, 5, false), (64, 1, true)] {
            let data: Vec<f64> = (0..n * dim)
                .map(|_| {
                    if grid {
                        rng.below(6) as f64 * 0.5
                    } else {
                        rng.normal()
                    }
                })
                .collect();
            for k in [1, 4, 11] {
                for p in data.chunks_exact(dim).take(40) {
                    assert_eq!(
                        nearest_k(&data, dim, p, k),
                        reference_nearest(&data, dim, p, k)
                    );
                }
            }
            let (core, predict) = core_distances(&data, dim, 4);
            for (i, p) in data.chunks_exact(dim).enumerate() {
                let near = reference_nearest(&data, dim, p, 5);
                assert_eq!((core[i], predict[i]), (near[4].0, near[3].0), "point {i}");
            }
            assert_eq!(
                prim_mst(&data, dim, &core),
                reference_prim(&data, dim, &core)
            );
            let flat = vec![0.0; n];
            assert_eq!(
                prim_mst(&data, dim, &flat),
                reference_prim(&data, dim, &flat)
            );
        }
    }

    #[test]
    fn core_distance_counts_the_point_itself() {
        let data = [0.0, 1.0, 3.0, 7.0];
        let (core, predict) = core_distances(&data, 1, 1);
        assert_eq!(core, vec![1.0, 1.0, 2.0, 4.0]);
        assert_eq!(predict, vec![0.0; 4]);
        let (core, predict) = core_distances(&data, 1, 2);
        assert_eq!(core, vec![3.0, 2.0, 3.0, 6.0]);
        assert_eq!(predict, vec![1.0, 1.0, 2.0, 4.0]);
    }
}
