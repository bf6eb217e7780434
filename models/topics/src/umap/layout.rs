//! umap-learn 0.5's `optimize_layout_euclidean`: SGD over the graph's edges, each sampled
//! every `epochs_per_sample` epochs, with `negative_sample_rate` negative samples per
//! positive one, gradients clipped to ±4 and the learning rate decayed linearly to 0.
//!
//! It runs sequentially, as umap-learn does with a `random_state` (its parallel mode is
//! not reproducible), so a seed gives bit-identical layouts.

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

/// Optimises `head` (`graph.n_rows x dim`) against `tail` (`graph.n_cols x dim`). With
/// `tail = None` the graph is over `head`'s own points and both ends of an edge move
/// (training); otherwise only `head` moves (transform of new points against the fixed
/// training layout). `rng` seeds one stream per head vertex.
pub(crate) fn optimize(
    head: &mut [f32],
    tail: Option<&[f32]>,
    dim: usize,
    graph: &Graph,
    params: &LayoutParams,
    rng: &mut Rng,
) {
    let n_epochs = params.n_epochs;
    let eps = epochs_per_sample(&graph.weights, n_epochs);
    let neg_rate = params.negative_sample_rate.max(1) as f64;
    let eps_neg: Vec<f64> = eps.iter().map(|e| e / neg_rate).collect();
    let mut next_neg = eps_neg.clone();
    let mut next = eps.clone();
    let n_vertices = graph.n_cols;
    let mut streams: Vec<Rng> = (0..graph.n_rows)
        .map(|_| Rng::new(rng.next_u64()))
        .collect();
    let (a, b, gamma) = (params.a, params.b, params.gamma);
    let mut current = vec![0f32; dim];
    let mut other = vec![0f32; dim];
    let mut alpha = params.initial_alpha;
    for n in 0..n_epochs {
        let epoch = n as f64;
        for i in 0..eps.len() {
            if eps[i] < 0.0 || next[i] > epoch {
                continue;
            }
            let j = graph.rows[i] as usize;
            let k = graph.cols[i] as usize;
            current.copy_from_slice(&head[j * dim..(j + 1) * dim]);
            match tail {
                None => other.copy_from_slice(&head[k * dim..(k + 1) * dim]),
                Some(t) => other.copy_from_slice(&t[k * dim..(k + 1) * dim]),
            }
            let dist2: f32 = current
                .iter()
                .zip(&other)
                .map(|(c, o)| (c - o) * (c - o))
                .sum();
            let coeff = if dist2 > 0.0 {
                -2.0 * a * b * dist2.powf(b - 1.0) / (a * dist2.powf(b) + 1.0)
            } else {
                0.0
            };
            for d in 0..dim {
                let g = clip(coeff * (current[d] - other[d]));
                current[d] += g * alpha;
                if tail.is_none() {
                    other[d] -= g * alpha;
                }
            }
            if tail.is_none() {
                head[k * dim..(k + 1) * dim].copy_from_slice(&other);
            }
            next[i] += eps[i];
            let n_neg = if params.negative_sample_rate == 0 {
                0
            } else {
                ((epoch - next_neg[i]) / eps_neg[i]).max(0.0) as usize
            };
            for _ in 0..n_neg {
                let s = streams[j].below(n_vertices);
                let o = match tail {
                    None => &head[s * dim..(s + 1) * dim],
                    Some(t) => &t[s * dim..(s + 1) * dim],
                };
                // With both ends in `head`, the sample may be `j` itself, whose row is
                // `current` (not yet written back).
                let o: &[f32] = if tail.is_none() && s == j {
                    &current
                } else {
                    o
                };
                let dist2: f32 = current.iter().zip(o).map(|(c, o)| (c - o) * (c - o)).sum();
                let coeff = if dist2 > 0.0 {
                    2.0 * gamma * b / ((0.001 + dist2) * (a * dist2.powf(b) + 1.0))
                } else if j == s {
                    continue;
                } else {
                    0.0
                };
                if coeff > 0.0 {
                    for d in 0..dim {
                        other[d] = clip(coeff * (current[d] - o[d]));
                    }
                    for d in 0..dim {
                        current[d] += other[d] * alpha;
                    }
                }
            }
            head[j * dim..(j + 1) * dim].copy_from_slice(&current);
            next_neg[i] += n_neg as f64 * eps_neg[i];
        }
        alpha = params.initial_alpha * (1.0 - (n as f32 / n_epochs as f32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
