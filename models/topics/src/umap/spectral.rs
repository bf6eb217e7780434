//! Spectral initialisation (umap-learn 0.5's `spectral_layout`): the eigenvectors of the
//! normalized Laplacian `L = I - D^-1/2 A D^-1/2` with the 2nd..(dim+1)th smallest
//! eigenvalues; a disconnected graph is laid out per component around a meta-layout of the
//! components (`multi_component_layout`).
//!
//! umap-learn asks ARPACK (`eigsh`, `tol = 1e-4`) for them. Here a deterministic block
//! subspace iteration on `M = (I + D^-1/2 A D^-1/2) / 2` (whose largest eigenvalues are `L`'s
//! smallest, all in `[0, 1]`), deflated by the known first eigenvector `D^1/2 1`, with
//! Chebyshev filtering (Zhou and Saad 2007): between two Rayleigh–Ritz steps (Jacobi on the
//! small projected matrix) the block is multiplied by the Chebyshev polynomial that is small
//! on `[0, b]`, `b` the block's smallest Ritz value, and grows fast above it, which separates
//! the wanted eigenvalues (crowded near 1 on a clustered graph) far faster than plain
//! powers of `M`. The block is orthonormalised (Cholesky QR, twice) for each Rayleigh–Ritz
//! step; the filter's degree is bounded so that it stays well conditioned for that. The
//! matrix products run per row in parallel, each row's sum in edge order. The result only
//! seeds the SGD layout, so the iteration stops at `tol = 1e-4` on the Ritz residuals or
//! after [`MAX_APPLIES`] products, whichever is first; a non-finite result falls back to a
//! random layout, as umap-learn's does when ARPACK fails.

use rayon::prelude::*;

use super::graph::Graph;
use crate::knn::Metric;
use crate::rng::Rng;

/// Most products with the matrix.
const MAX_APPLIES: usize = 600;
/// Highest degree of a Chebyshev filter between two Rayleigh–Ritz steps.
const MAX_DEGREE: usize = 16;
/// Most growth a filter may give the block's largest component over its smallest kept one.
const FILTER_GROWTH: f64 = 1e6;
/// Ritz residual below which the wanted vectors are taken as converged.
const TOL: f64 = 1e-4;

/// An initial layout (`n x dim`, row-major) of `graph`, with `data` (`n x data_dim`,
/// prepared for `metric`) for the component centroids. `None` when the eigenvectors could
/// not be computed (the caller falls back to random).
pub(crate) fn spectral_layout(
    graph: &Graph,
    dim: usize,
    data: &[f32],
    data_dim: usize,
    metric: Metric,
    rng: &mut Rng,
) -> Option<Vec<f64>> {
    let n = graph.n_rows;
    let labels = components(graph);
    let n_components = labels.iter().copied().max().map_or(0, |m| m + 1);
    if n_components <= 1 {
        return laplacian_eigenmap(graph, n, dim, rng);
    }
    // multi_component_layout.
    let meta = if n_components > 2 * dim {
        component_layout(&labels, n_components, data, data_dim, dim, metric)?
    } else {
        let k = n_components.div_ceil(2);
        let mut m = vec![0f64; n_components * dim];
        for c in 0..n_components {
            let (row, sign) = if c < k { (c, 1.0) } else { (c - k, -1.0) };
            m[c * dim + row] = sign;
        }
        m
    };
    let mut result = vec![0f64; n * dim];
    for c in 0..n_components {
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        let centre = &meta[c * dim..(c + 1) * dim];
        let data_range = (0..n_components)
            .filter(|&o| o != c)
            .map(|o| {
                let other = &meta[o * dim..(o + 1) * dim];
                centre
                    .iter()
                    .zip(other)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt()
            })
            .filter(|&d| d > 0.0)
            .fold(f64::INFINITY, f64::min)
            / 2.0;
        let data_range = if data_range.is_finite() {
            data_range
        } else {
            1.0
        };
        let sub = (members.len() >= 2 * dim && members.len() > dim + 1)
            .then(|| subgraph(graph, &members))
            .and_then(|g| laplacian_eigenmap(&g, members.len(), dim, rng));
        match sub {
            Some(layout) => {
                let max = layout.iter().fold(0f64, |m, v| m.max(v.abs()));
                let expansion = if max > 0.0 { data_range / max } else { 0.0 };
                for (local, &i) in members.iter().enumerate() {
                    for d in 0..dim {
                        result[i * dim + d] = layout[local * dim + d] * expansion + centre[d];
                    }
                }
            }
            None => {
                for &i in &members {
                    for d in 0..dim {
                        result[i * dim + d] = centre[d] + (rng.uniform() * 2.0 - 1.0) * data_range;
                    }
                }
            }
        }
    }
    Some(result)
}

/// Connected component of each vertex, numbered in order of first vertex.
pub(crate) fn components(graph: &Graph) -> Vec<usize> {
    let n = graph.n_rows;
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for (&r, &c) in graph.rows.iter().zip(&graph.cols) {
        let (a, b) = (find(&mut parent, r as usize), find(&mut parent, c as usize));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut label = vec![usize::MAX; n];
    let mut next = 0;
    (0..n)
        .map(|i| {
            let root = find(&mut parent, i);
            if label[root] == usize::MAX {
                label[root] = next;
                next += 1;
            }
            label[root]
        })
        .collect()
}

fn subgraph(graph: &Graph, members: &[usize]) -> Graph {
    let mut local = vec![u32::MAX; graph.n_rows];
    for (l, &i) in members.iter().enumerate() {
        local[i] = l as u32;
    }
    let mut g = Graph {
        n_rows: members.len(),
        n_cols: members.len(),
        ..Graph::default()
    };
    for ((&r, &c), &w) in graph.rows.iter().zip(&graph.cols).zip(&graph.weights) {
        let (lr, lc) = (local[r as usize], local[c as usize]);
        if lr != u32::MAX && lc != u32::MAX {
            g.rows.push(lr);
            g.cols.push(lc);
            g.weights.push(w);
        }
    }
    g
}

/// umap-learn's `component_layout`: a spectral embedding of the component centroids with
/// affinity `exp(-d²)`, scaled so its largest coordinate is 1.
fn component_layout(
    labels: &[usize],
    n_components: usize,
    data: &[f32],
    data_dim: usize,
    dim: usize,
    metric: Metric,
) -> Option<Vec<f64>> {
    let mut centroids = vec![0f32; n_components * data_dim];
    let mut counts = vec![0f32; n_components];
    for (i, &c) in labels.iter().enumerate() {
        counts[c] += 1.0;
        for d in 0..data_dim {
            centroids[c * data_dim + d] += data[i * data_dim + d];
        }
    }
    for c in 0..n_components {
        for d in 0..data_dim {
            centroids[c * data_dim + d] /= counts[c];
        }
    }
    // Cosine distances between centroids need unit centroids.
    let centroids = metric.prepare(&centroids, data_dim);
    let mut affinity = vec![0f64; n_components * n_components];
    for i in 0..n_components {
        for j in 0..n_components {
            let d = f64::from(metric.distance(
                &centroids[i * data_dim..(i + 1) * data_dim],
                &centroids[j * data_dim..(j + 1) * data_dim],
            ));
            affinity[i * n_components + j] = (-(d * d)).exp();
        }
    }
    // Normalized affinity D^-1/2 W D^-1/2, its top eigenvectors after the first, divided by
    // sqrt(degree) (scikit-learn's SpectralEmbedding).
    let sqrt_deg: Vec<f64> = (0..n_components)
        .map(|i| {
            affinity[i * n_components..(i + 1) * n_components]
                .iter()
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let mut m = affinity;
    for i in 0..n_components {
        for j in 0..n_components {
            m[i * n_components + j] /= sqrt_deg[i] * sqrt_deg[j];
        }
    }
    let (values, vectors) = jacobi_eigen(&m, n_components);
    let mut order: Vec<usize> = (0..n_components).collect();
    order.sort_by(|&x, &y| values[y].total_cmp(&values[x]));
    let mut out = vec![0f64; n_components * dim];
    for d in 0..dim {
        let Some(&col) = order.get(d + 1) else { break };
        let mut v: Vec<f64> = (0..n_components)
            .map(|i| vectors[i * n_components + col] / sqrt_deg[i])
            .collect();
        sign_flip(&mut v);
        for i in 0..n_components {
            out[i * dim + d] = v[i];
        }
    }
    let max = out.iter().copied().fold(f64::MIN, f64::max);
    if !(max.is_finite() && max > 0.0) {
        return None;
    }
    out.iter_mut().for_each(|v| *v /= max);
    Some(out)
}

/// Makes the largest-magnitude entry positive (scikit-learn's `_deterministic_vector_sign_flip`).
fn sign_flip(v: &mut [f64]) {
    let mut at = 0;
    for (i, x) in v.iter().enumerate() {
        if x.abs() > v[at].abs() {
            at = i;
        }
    }
    if v.get(at).is_some_and(|&x| x < 0.0) {
        v.iter_mut().for_each(|x| *x = -*x);
    }
}

/// The eigenvectors of the normalized Laplacian of a connected graph for its eigenvalues
/// 2..=dim+1 (`n x dim`), or `None` when they are not finite.
fn laplacian_eigenmap(graph: &Graph, n: usize, dim: usize, rng: &mut Rng) -> Option<Vec<f64>> {
    if n <= dim + 1 {
        return None;
    }
    let mut degree = vec![0f64; n];
    for (&r, &w) in graph.rows.iter().zip(&graph.weights) {
        degree[r as usize] += f64::from(w);
    }
    if degree.iter().any(|&d| d <= 0.0) {
        return None;
    }
    let inv_sqrt: Vec<f64> = degree.iter().map(|d| 1.0 / d.sqrt()).collect();
    let norm = degree.iter().sum::<f64>().sqrt();
    let first: Vec<f64> = degree.iter().map(|d| d.sqrt() / norm).collect();
    // D^-1/2 A D^-1/2 by rows (CSR; the edges of a row keep their order).
    let mut starts = vec![0usize; n + 1];
    for &r in &graph.rows {
        starts[r as usize + 1] += 1;
    }
    for i in 0..n {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut cols = vec![0u32; graph.rows.len()];
    let mut vals = vec![0f64; graph.rows.len()];
    for ((&r, &c), &w) in graph.rows.iter().zip(&graph.cols).zip(&graph.weights) {
        let (r, c) = (r as usize, c as usize);
        let at = fill[r];
        fill[r] += 1;
        cols[at] = c as u32;
        vals[at] = f64::from(w) * inv_sqrt[r] * inv_sqrt[c];
    }
    // y = (x + D^-1/2 A D^-1/2 x) / 2 on a block of p column vectors stored row-major,
    // rows in parallel (each row's sum in edge order, so the result is the same for any
    // number of threads).
    let apply = |x: &[f64], p: usize, y: &mut [f64]| {
        y.par_chunks_mut(p).enumerate().for_each(|(r, out)| {
            out.copy_from_slice(&x[r * p..(r + 1) * p]);
            for e in starts[r]..starts[r + 1] {
                let (c, s) = (cols[e] as usize, vals[e]);
                for (o, &v) in out.iter_mut().zip(&x[c * p..(c + 1) * p]) {
                    *o += s * v;
                }
            }
            out.iter_mut().for_each(|v| *v *= 0.5);
        });
    };
    let p = (2 * dim + 8).min(n - 1);
    let mut q: Vec<f64> = (0..n * p).map(|_| rng.normal()).collect();
    let mut y = vec![0f64; n * p];
    let mut older = vec![0f64; n * p];
    let mut applied = 0;
    loop {
        orthonormalize(&mut q, n, p, &first);
        apply(&q, p, &mut y);
        applied += 1;
        // Rayleigh–Ritz: H = Qᵀ M Q, rotate Q (and M Q) to H's eigenvectors, largest first.
        let mut h = vec![0f64; p * p];
        for (qr, yr) in q.chunks_exact(p).zip(y.chunks_exact(p)) {
            for (a, &qa) in qr.iter().enumerate() {
                for (hb, &yb) in h[a * p..(a + 1) * p].iter_mut().zip(yr) {
                    *hb += qa * yb;
                }
            }
        }
        let (values, vectors) = jacobi_eigen(&h, p);
        let mut order: Vec<usize> = (0..p).collect();
        order.sort_by(|&x, &z| values[z].total_cmp(&values[x]));
        let rotate = |m: &[f64], out: &mut [f64]| {
            for (row, o) in m.chunks_exact(p).zip(out.chunks_exact_mut(p)) {
                for (to, &from) in order.iter().enumerate() {
                    o[to] = (0..p).map(|k| row[k] * vectors[k * p + from]).sum();
                }
            }
        };
        rotate(&q, &mut older);
        std::mem::swap(&mut q, &mut older);
        rotate(&y, &mut older);
        std::mem::swap(&mut y, &mut older);
        let residual = (0..dim)
            .map(|j| {
                let theta = values[order[j]];
                (0..n)
                    .map(|i| (y[i * p + j] - theta * q[i * p + j]).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0f64, f64::max);
        if residual < TOL || applied >= MAX_APPLIES {
            break;
        }
        // Chebyshev filter on [0, b], b the block's smallest Ritz value: every eigenvalue
        // of M at or below b (none of the wanted ones, by interlacing) is damped, those
        // above grow by |T_m((λ - b/2) / (b/2))|. The degree keeps the largest growth
        // (λ = 1) under FILTER_GROWTH, so the block stays well enough conditioned for
        // Cholesky QR.
        let b = values[order[p - 1]].clamp(1e-3, 1.0);
        let half = b / 2.0;
        let sigma = (1.0 - half) / half;
        let degree = if sigma > 1.0 {
            (FILTER_GROWTH.acosh() / sigma.acosh()).floor() as usize
        } else {
            MAX_DEGREE
        }
        .clamp(1, MAX_DEGREE)
        .min(MAX_APPLIES - applied);
        // x1 = (M - c) x0 / e from the products already at hand, then
        // x_{k+1} = 2 (M - c) x_k / e - x_{k-1} (c = e = b / 2).
        for (yv, &qv) in y.iter_mut().zip(&q) {
            *yv = (*yv - half * qv) / half;
        }
        // q: x_{k-1}, y: x_k.
        for _ in 1..degree {
            apply(&y, p, &mut older);
            applied += 1;
            for ((o, &xk), &xprev) in older.iter_mut().zip(&y).zip(&q) {
                *o = 2.0 * (*o - half * xk) / half - xprev;
            }
            // older: x_{k+1} -> y; y: x_k -> q; q (x_{k-1}) is free.
            std::mem::swap(&mut q, &mut y);
            std::mem::swap(&mut y, &mut older);
        }
        std::mem::swap(&mut q, &mut y);
    }
    let mut out = vec![0f64; n * dim];
    for j in 0..dim {
        let mut v: Vec<f64> = (0..n).map(|i| q[i * p + j]).collect();
        sign_flip(&mut v);
        for i in 0..n {
            out[i * dim + j] = v[i];
        }
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// Makes each of the `p` columns of `q` (`n x p`, row-major) orthogonal to `first` and of
/// unit length: one pass over the rows for the projections and norms, one to apply them.
fn deflate_and_scale(q: &mut [f64], n: usize, p: usize, first: &[f64]) {
    let mut proj = vec![0f64; p];
    for (row, &f) in q.chunks_exact(p).zip(first) {
        for (acc, &v) in proj.iter_mut().zip(row) {
            *acc += v * f;
        }
    }
    let mut norm = vec![0f64; p];
    for (row, &f) in q.chunks_exact_mut(p).zip(first) {
        for ((v, &pr), nm) in row.iter_mut().zip(&proj).zip(norm.iter_mut()) {
            *v -= pr * f;
            *nm += *v * *v;
        }
    }
    let scale: Vec<f64> = norm
        .iter()
        .map(|&s| if s > 1e-300 { 1.0 / s.sqrt() } else { 1.0 })
        .collect();
    for row in q.chunks_exact_mut(p).take(n) {
        for (v, &s) in row.iter_mut().zip(&scale) {
            *v *= s;
        }
    }
}

/// Orthonormal columns for `q` (`n x p`, row-major), each first made orthogonal to `first`:
/// Cholesky QR twice (the Gram matrix in one pass over the rows, then each row times the
/// inverse Cholesky factor), or, when the Gram matrix is too ill-conditioned for that,
/// modified Gram–Schmidt (twice); a column that vanishes is replaced by a fixed vector.
fn orthonormalize(q: &mut [f64], n: usize, p: usize, first: &[f64]) {
    deflate_and_scale(q, n, p, first);
    if !(cholesky_qr(q, p) && cholesky_qr(q, p)) {
        gram_schmidt(q, n, p, first);
    }
}

/// One Cholesky QR step on the columns of `q`; false (and `q` untouched) when the Gram
/// matrix is not safely positive definite.
fn cholesky_qr(q: &mut [f64], p: usize) -> bool {
    let mut g = vec![0f64; p * p];
    for row in q.chunks_exact(p) {
        for a in 0..p {
            let ra = row[a];
            for b in a..p {
                g[a * p + b] += ra * row[b];
            }
        }
    }
    // G = Rᵀ R, R upper triangular (stored in the upper triangle of g).
    for a in 0..p {
        for k in 0..a {
            let r = g[k * p + a];
            for b in a..p {
                g[a * p + b] -= r * g[k * p + b];
            }
        }
        let d = g[a * p + a];
        if !(d.is_finite() && d > 1e-10) {
            return false;
        }
        let d = d.sqrt();
        for b in a..p {
            g[a * p + b] /= d;
        }
    }
    // Each row x ← x R⁻¹ (forward substitution over the columns).
    for row in q.chunks_exact_mut(p) {
        for b in 0..p {
            let mut v = row[b];
            for k in 0..b {
                v -= row[k] * g[k * p + b];
            }
            row[b] = v / g[b * p + b];
        }
    }
    true
}

/// Modified Gram–Schmidt (twice) on the `p` columns of `q` (`n x p`, row-major), each first
/// made orthogonal to `first`; a column that vanishes is replaced by a fixed vector.
fn gram_schmidt(q: &mut [f64], n: usize, p: usize, first: &[f64]) {
    for _pass in 0..2 {
        for j in 0..p {
            let proj: f64 = (0..n).map(|i| q[i * p + j] * first[i]).sum();
            for i in 0..n {
                q[i * p + j] -= proj * first[i];
            }
            for k in 0..j {
                let proj: f64 = (0..n).map(|i| q[i * p + j] * q[i * p + k]).sum();
                for i in 0..n {
                    q[i * p + j] -= proj * q[i * p + k];
                }
            }
            let norm: f64 = (0..n).map(|i| q[i * p + j].powi(2)).sum::<f64>().sqrt();
            if norm > 1e-300 {
                for i in 0..n {
                    q[i * p + j] /= norm;
                }
            } else {
                for i in 0..n {
                    q[i * p + j] = if (i + j) % 2 == 0 { 1.0 } else { -1.0 } / (n as f64).sqrt();
                }
            }
        }
    }
}

/// Eigen-decomposition of a symmetric `n x n` matrix by cyclic Jacobi rotations: the
/// eigenvalues and the eigenvectors as the columns of a row-major matrix.
pub(crate) fn jacobi_eigen(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let m = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0];
        let (values, vectors) = jacobi_eigen(&m, 3);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for (got, want) in sorted.iter().zip([1.0, 3.0, 5.0]) {
            assert!((got - want).abs() < 1e-12, "{sorted:?}");
        }
        // M v = λ v for each column.
        for c in 0..3 {
            for r in 0..3 {
                let mv: f64 = (0..3).map(|k| m[r * 3 + k] * vectors[k * 3 + c]).sum();
                assert!((mv - values[c] * vectors[r * 3 + c]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn a_ring_is_laid_out_on_a_circle() {
        // The Laplacian of a cycle has cos/sin eigenvectors for its 2nd and 3rd eigenvalues.
        let n = 40;
        let mut g = Graph {
            n_rows: n,
            n_cols: n,
            ..Graph::default()
        };
        for i in 0..n {
            for j in [(i + n - 1) % n, (i + 1) % n] {
                g.rows.push(i as u32);
                g.cols.push(j as u32);
                g.weights.push(1.0);
            }
        }
        let layout = laplacian_eigenmap(&g, n, 2, &mut Rng::new(3)).unwrap();
        let radii: Vec<f64> = (0..n)
            .map(|i| layout[2 * i].hypot(layout[2 * i + 1]))
            .collect();
        let mean = radii.iter().sum::<f64>() / n as f64;
        assert!(
            radii.iter().all(|r| (r - mean).abs() < 1e-3 * mean),
            "{radii:?}"
        );
    }

    #[test]
    fn the_eigenmap_has_the_dense_solvers_eigenpairs() {
        // A connected graph of three loose groups (a ring plus random chords, heavier
        // within a group), so the wanted eigenvalues crowd near 1 as on a clustered kNN graph.
        let n = 90;
        let mut rng = Rng::new(11);
        let mut w = vec![0f64; n * n];
        for i in 0..n {
            let j = (i + 1) % n;
            w[i * n + j] = 1.0;
            w[j * n + i] = 1.0;
            for _ in 0..4 {
                let j = rng.below(n);
                let weight = if i / 30 == j / 30 { 1.0 } else { 0.05 };
                if j != i {
                    w[i * n + j] = weight;
                    w[j * n + i] = weight;
                }
            }
        }
        let mut g = Graph {
            n_rows: n,
            n_cols: n,
            ..Graph::default()
        };
        for i in 0..n {
            for j in 0..n {
                if w[i * n + j] > 0.0 {
                    g.rows.push(i as u32);
                    g.cols.push(j as u32);
                    g.weights.push(w[i * n + j] as f32);
                }
            }
        }
        let deg: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| f64::from(w[i * n + j] as f32)).sum())
            .collect();
        let m: Vec<f64> = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                let nij = f64::from(w[ij] as f32) / (deg[i] * deg[j]).sqrt();
                (if i == j { 1.0 } else { 0.0 } + nij) / 2.0
            })
            .collect();
        let (values, _) = jacobi_eigen(&m, n);
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert!((sorted[0] - 1.0).abs() < 1e-9);
        let dim = 4;
        let layout = laplacian_eigenmap(&g, n, dim, &mut Rng::new(2)).unwrap();
        for j in 0..dim {
            let v: Vec<f64> = (0..n).map(|i| layout[i * dim + j]).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let mv: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|k| m[i * n + k] * v[k]).sum::<f64>() / norm)
                .collect();
            let theta: f64 = mv.iter().zip(&v).map(|(a, b)| a * b / norm).sum();
            let residual = mv
                .iter()
                .zip(&v)
                .map(|(a, b)| (a - theta * b / norm).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(residual < 2e-4, "vector {j}: residual {residual}");
            assert!(
                (theta - sorted[j + 1]).abs() < 1e-6,
                "vector {j}: {theta} against {}",
                sorted[j + 1]
            );
        }
    }

    #[test]
    fn blocks_are_orthonormalised_off_the_first_vector() {
        let (n, p) = (50, 6);
        let mut rng = Rng::new(5);
        let norm = (n as f64).sqrt();
        let first: Vec<f64> = (0..n).map(|_| 1.0 / norm).collect();
        // Nearly dependent columns (what ten steps without orthonormalising leave), then an
        // exactly dependent pair (Cholesky QR refuses it; Gram–Schmidt takes over).
        for dependent in [false, true] {
            let mut q: Vec<f64> = (0..n * p)
                .map(|i| 1.0 + 1e-3 * rng.normal() + (i % p) as f64 * 1e-2)
                .collect();
            if dependent {
                for i in 0..n {
                    q[i * p + 1] = 2.0 * q[i * p];
                }
            }
            orthonormalize(&mut q, n, p, &first);
            for a in 0..p {
                let on_first: f64 = (0..n).map(|i| q[i * p + a] * first[i]).sum();
                assert!(on_first.abs() < 1e-9, "column {a}: {on_first}");
                for b in 0..p {
                    let dot: f64 = (0..n).map(|i| q[i * p + a] * q[i * p + b]).sum();
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-9, "{dependent} ({a}, {b}): {dot}");
                }
            }
        }
    }

    #[test]
    fn components_are_found() {
        let g = Graph {
            n_rows: 5,
            n_cols: 5,
            rows: vec![0, 1, 3, 4],
            cols: vec![1, 0, 4, 3],
            weights: vec![1.0; 4],
        };
        assert_eq!(components(&g), vec![0, 0, 1, 2, 2]);
    }
}
