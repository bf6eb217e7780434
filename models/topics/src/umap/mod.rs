//! UMAP (McInnes, Healy and Melville 2018) as umap-learn 0.5 computes it, with exact
//! neighbours:
//!
//! 1. the `n_neighbors` nearest neighbours of every row (brute force in SIMD tiles, the row
//!    itself first; see [`crate::knn`]);
//! 2. per row, `rho` (distance to the nearest neighbour, `local_connectivity = 1`) and
//!    `sigma` (binary search so that `sum exp(-(d - rho) / sigma) = log2(k)`), giving the
//!    directed memberships `exp(-(d - rho) / sigma)`;
//! 3. their fuzzy union `A + Aᵀ - A∘Aᵀ`, edges below `max / n_epochs` dropped;
//! 4. a spectral initial layout (normalized Laplacian eigenvectors, see [`spectral`]),
//!    scaled to ±10 with `N(0, 1e-4)` noise, then min–max scaled to `[0, 10]`;
//! 5. SGD with the low-dimensional similarity `1 / (1 + a d^2b)` (`a`, `b` fitted from
//!    `spread` and `min_dist` as `find_ab_params` does), `negative_sample_rate` negative
//!    samples per edge sample, gradient clip 4 and a learning rate decaying to 0, for
//!    `n_epochs` (500 up to 10,000 rows, else 200), eight edges side by side on a fixed
//!    schedule (see `layout`).
//!
//! [`Umap::transform`] embeds new rows as umap-learn's `transform` does: their neighbours among
//! the training rows with `local_connectivity - 1` (so `rho = 0`), an initial position at
//! the membership-weighted mean of the neighbours' layout positions, then the same SGD for
//! 100 epochs (30 past 10,000 new rows; `n_epochs / 3` when `n_epochs` is set) at a quarter of
//! the learning rate, moving only the new points against the fixed training layout.
//!
//! Everything is seeded ([`UmapParams::seed`], [`UmapParams::transform_seed`]) and every
//! order that matters is fixed (the parallel parts compute per-row results), so the same
//! input and seed give a bit-identical layout. The crate
//! `umap-rs` 0.4.5 is not used: its layout gradient is wrong (see RECIPES.md).

mod ab;
pub(crate) mod graph;
mod layout;
pub(crate) mod spectral;

use serde::{Deserialize, Serialize};

use crate::knn::{self, Metric};
use crate::rng::Rng;
use crate::{Matrix, TopicError};
use graph::Graph;
use layout::LayoutParams;

/// Most SGD epochs a model may ask for.
pub const MAX_EPOCHS: usize = 100_000;
/// Most negative samples per positive sample.
pub const MAX_NEGATIVE_SAMPLE_RATE: usize = 1_000;

/// UMAP's hyper-parameters; the defaults are BERTopic's (`n_neighbors = 15`,
/// `n_components = 5`, `min_dist = 0`, `metric = cosine`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UmapParams {
    /// Neighbours per row, the row itself included.
    pub n_neighbors: usize,
    /// Dimensions of the layout (1 to 64).
    pub n_components: usize,
    /// Smallest distance between points in the layout.
    pub min_dist: f32,
    /// Scale of the layout's similarity curve.
    pub spread: f32,
    /// Input distance.
    pub metric: Metric,
    /// SGD epochs; `None`: 500 up to 10,000 rows, else 200.
    pub n_epochs: Option<usize>,
    /// Initial SGD learning rate.
    pub learning_rate: f32,
    /// Negative samples per positive sample.
    pub negative_sample_rate: usize,
    /// Weight of the negative samples' repulsion (`gamma`).
    pub repulsion_strength: f32,
    /// Neighbours each row is taken to be fully connected to.
    pub local_connectivity: f32,
    /// Seed of the fit.
    pub seed: u64,
    /// Seed of [`Umap::transform`] (umap-learn's `transform_seed`).
    pub transform_seed: u64,
}

impl Default for UmapParams {
    fn default() -> Self {
        Self {
            n_neighbors: 15,
            n_components: 5,
            min_dist: 0.0,
            spread: 1.0,
            metric: Metric::Cosine,
            n_epochs: None,
            learning_rate: 1.0,
            negative_sample_rate: 5,
            repulsion_strength: 1.0,
            local_connectivity: 1.0,
            seed: 42,
            transform_seed: 42,
        }
    }
}

impl UmapParams {
    /// Refuses values umap-learn refuses (and a few that would make no layout).
    pub fn check(&self) -> Result<(), TopicError> {
        let bad = |m: String| Err(TopicError::InvalidParams(format!("umap: {m}")));
        if self.n_neighbors < 2 {
            return bad(format!(
                "n_neighbors = {} must be at least 2",
                self.n_neighbors
            ));
        }
        if self.n_components == 0 || self.n_components > layout::MAX_DIM {
            return bad(format!(
                "n_components = {} is not within 1..={}",
                self.n_components,
                layout::MAX_DIM
            ));
        }
        if !(self.spread.is_finite() && self.spread > 0.0) {
            return bad(format!("spread = {} must be positive", self.spread));
        }
        if !(self.min_dist.is_finite() && self.min_dist >= 0.0 && self.min_dist <= self.spread) {
            return bad(format!(
                "min_dist = {} must be within 0..=spread ({})",
                self.min_dist, self.spread
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate must be positive".into());
        }
        if !(self.repulsion_strength.is_finite() && self.repulsion_strength >= 0.0) {
            return bad("repulsion_strength must be non-negative".into());
        }
        if !(self.local_connectivity.is_finite() && self.local_connectivity >= 0.0) {
            return bad("local_connectivity must be non-negative".into());
        }
        // Upper bounds keep a hostile artifact from making transform run for ever.
        if let Some(e) = self.n_epochs
            && !(1..=MAX_EPOCHS).contains(&e)
        {
            return bad(format!("n_epochs = {e} is not within 1..={MAX_EPOCHS}"));
        }
        if self.negative_sample_rate > MAX_NEGATIVE_SAMPLE_RATE {
            return bad(format!(
                "negative_sample_rate = {} is more than {MAX_NEGATIVE_SAMPLE_RATE}",
                self.negative_sample_rate
            ));
        }
        Ok(())
    }
}

/// A fitted UMAP: the training rows (prepared for the metric), their layout, and `a`, `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Umap {
    params: UmapParams,
    a: f32,
    b: f32,
    dim: usize,
    train: Vec<f32>,
    embedding: Vec<f32>,
}

impl Umap {
    /// Fits the layout of `data` (one row per point).
    pub fn fit(data: &Matrix, params: &UmapParams) -> Result<Self, TopicError> {
        params.check()?;
        data.check_finite("umap input")?;
        let (n, dim) = (data.rows(), data.cols());
        if n < 2 || dim == 0 {
            return Err(TopicError::InvalidInput(format!(
                "umap needs at least 2 rows of at least 1 column, got {n} x {dim}"
            )));
        }
        let (a, b) = ab::find_ab_params(f64::from(params.spread), f64::from(params.min_dist))
            .ok_or_else(|| {
                TopicError::InvalidParams("umap: the a, b curve fit did not converge".into())
            })?;
        let (a, b) = (a as f32, b as f32);
        let train = params.metric.prepare(data.as_slice(), dim);
        let k = params.n_neighbors.min(n);
        let (indices, distances) = knn::knn(&train, &train, dim, k, params.metric, true);
        let (sigmas, rhos) =
            graph::smooth_knn_dist(&distances, k, f64::from(params.local_connectivity));
        let vals = graph::membership_strengths(&indices, &distances, k, &sigmas, &rhos, false);
        let mut graph = graph::fuzzy_union(n, &indices, &vals, k);
        let default_epochs = if n <= 10_000 { 500 } else { 200 };
        let n_epochs = params.n_epochs.unwrap_or(default_epochs);
        graph.prune(if n_epochs > 10 {
            n_epochs
        } else {
            default_epochs
        });

        let c = params.n_components;
        let mut rng = Rng::new(params.seed);
        let init = spectral::spectral_layout(&graph, c, &train, dim, params.metric, &mut rng);
        let mut embedding: Vec<f32> = match init {
            Some(coords) => {
                // noisy_scale_coords(max_coord = 10, noise = 1e-4).
                let max = coords.iter().fold(0f64, |m, v| m.max(v.abs()));
                let expansion = if max > 0.0 { 10.0 / max } else { 1.0 };
                coords
                    .iter()
                    .map(|&v| (v * expansion) as f32 + (rng.normal() * 1e-4) as f32)
                    .collect()
            }
            None => (0..n * c)
                .map(|_| (rng.uniform() * 20.0 - 10.0) as f32)
                .collect(),
        };
        // Each column min–max scaled to [0, 10].
        for d in 0..c {
            let (lo, hi) = (0..n)
                .map(|i| embedding[i * c + d])
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            if hi > lo {
                for i in 0..n {
                    embedding[i * c + d] = 10.0 * (embedding[i * c + d] - lo) / (hi - lo);
                }
            }
        }
        let layout = LayoutParams {
            a,
            b,
            gamma: params.repulsion_strength,
            initial_alpha: params.learning_rate,
            negative_sample_rate: params.negative_sample_rate,
            n_epochs,
        };
        layout::optimize(&mut embedding, None, c, &graph, &layout, &mut rng);
        Ok(Self {
            params: params.clone(),
            a,
            b,
            dim,
            train,
            embedding,
        })
    }

    /// Rebuilds a fitted UMAP from its parts (the artifact loader), checking their shapes.
    pub(crate) fn from_parts(
        params: UmapParams,
        a: f32,
        b: f32,
        dim: usize,
        train: Vec<f32>,
        embedding: Vec<f32>,
    ) -> Result<Self, String> {
        params.check().map_err(|e| e.to_string())?;
        let c = params.n_components;
        if dim == 0 || !train.len().is_multiple_of(dim) || train.len() / dim < 2 {
            return Err(format!(
                "{} training values are not rows of {dim}",
                train.len()
            ));
        }
        if embedding.len() != train.len() / dim * c {
            return Err(format!(
                "{} layout values for {} rows of {c} components",
                embedding.len(),
                train.len() / dim
            ));
        }
        if !(a.is_finite() && a > 0.0 && b.is_finite() && b > 0.0) {
            return Err(format!("a = {a}, b = {b} must be finite and positive"));
        }
        if let Some(v) = train.iter().chain(&embedding).find(|v| !v.is_finite()) {
            return Err(format!("a training value or layout coordinate is {v}"));
        }
        Ok(Self {
            params,
            a,
            b,
            dim,
            train,
            embedding,
        })
    }

    /// The hyper-parameters it was fitted with.
    pub fn params(&self) -> &UmapParams {
        &self.params
    }

    /// `(a, b)` of the layout's similarity curve.
    pub fn ab(&self) -> (f32, f32) {
        (self.a, self.b)
    }

    /// Input dimensions.
    pub fn input_dim(&self) -> usize {
        self.dim
    }

    /// Number of training rows.
    pub fn n_train(&self) -> usize {
        self.train.len() / self.dim
    }

    /// The training rows as the metric reads them (unit rows for cosine).
    pub(crate) fn train_rows(&self) -> &[f32] {
        &self.train
    }

    /// The training layout, row-major (`n_train x n_components`).
    pub fn embedding_slice(&self) -> &[f32] {
        &self.embedding
    }

    /// The training layout as a matrix.
    pub fn embedding(&self) -> Matrix {
        Matrix::new(
            self.n_train(),
            self.params.n_components,
            self.embedding.clone(),
        )
        .unwrap_or_else(|_| unreachable!("the layout has n_train x n_components values"))
    }

    /// Embeds new rows against the fitted layout (see the module doc).
    pub fn transform(&self, data: &Matrix) -> Result<Matrix, TopicError> {
        let c = self.params.n_components;
        if data.cols() != self.dim {
            return Err(TopicError::InvalidInput(format!(
                "rows have {} columns, the model was fitted on {}",
                data.cols(),
                self.dim
            )));
        }
        data.check_finite("umap transform input")?;
        let n_new = data.rows();
        if n_new == 0 {
            return Matrix::new(0, c, Vec::new());
        }
        let n_train = self.n_train();
        let query = self.params.metric.prepare(data.as_slice(), self.dim);
        let k = self.params.n_neighbors.min(n_train);
        let (indices, distances) =
            knn::knn(&query, &self.train, self.dim, k, self.params.metric, false);
        let local = (f64::from(self.params.local_connectivity) - 1.0).max(0.0);
        let (sigmas, rhos) = graph::smooth_knn_dist(&distances, k, local);
        let vals = graph::membership_strengths(&indices, &distances, k, &sigmas, &rhos, true);

        let mut head = vec![0f32; n_new * c];
        let mut g = Graph {
            n_rows: n_new,
            n_cols: n_train,
            ..Graph::default()
        };
        for i in 0..n_new {
            let row_idx = &indices[i * k..(i + 1) * k];
            let row_val = &vals[i * k..(i + 1) * k];
            // init_graph_transform: a neighbour at membership 1 (an identical row) gives its
            // position (the first in column order); otherwise the weighted mean.
            let mut order: Vec<usize> = (0..k).filter(|&s| row_val[s] != 0.0).collect();
            order.sort_by_key(|&s| row_idx[s]);
            let out = &mut head[i * c..(i + 1) * c];
            let total: f32 = order.iter().map(|&s| row_val[s]).sum();
            if let Some(&s) = order.iter().find(|&&s| row_val[s] == 1.0) {
                let j = row_idx[s] as usize;
                out.copy_from_slice(&self.embedding[j * c..(j + 1) * c]);
            } else if total > 0.0 {
                for &s in &order {
                    let j = row_idx[s] as usize;
                    let w = row_val[s] / total;
                    for (o, e) in out.iter_mut().zip(&self.embedding[j * c..(j + 1) * c]) {
                        *o += w * e;
                    }
                }
            } else {
                // No membership at all (umap-learn gives NaN): the nearest neighbour's position.
                let j = row_idx[0] as usize;
                out.copy_from_slice(&self.embedding[j * c..(j + 1) * c]);
            }
            for s in 0..k {
                if row_val[s] != 0.0 {
                    g.rows.push(i as u32);
                    g.cols.push(row_idx[s]);
                    g.weights.push(row_val[s]);
                }
            }
        }
        let n_epochs = match self.params.n_epochs {
            None if n_new <= 10_000 => 100,
            None => 30,
            Some(e) => e / 3,
        };
        if n_epochs > 0 && !g.weights.is_empty() {
            g.prune(n_epochs);
            let layout = LayoutParams {
                a: self.a,
                b: self.b,
                gamma: self.params.repulsion_strength,
                initial_alpha: self.params.learning_rate / 4.0,
                negative_sample_rate: self.params.negative_sample_rate,
                n_epochs,
            };
            let mut rng = Rng::new(self.params.transform_seed);
            layout::optimize(&mut head, Some(&self.embedding), c, &g, &layout, &mut rng);
        }
        Matrix::new(n_new, c, head)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// `per` points around each of `centres` random centres in `dim` dimensions (spread 0.3,
    /// centres within ±5, drawn from `seed`; the points' noise from `noise`), with labels.
    pub(crate) fn blobs(
        centres: usize,
        per: usize,
        dim: usize,
        seed: u64,
        noise: u64,
    ) -> (Matrix, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let c: Vec<f32> = (0..centres * dim)
            .map(|_| (rng.uniform() * 10.0 - 5.0) as f32)
            .collect();
        let mut rng = Rng::new(noise);
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..centres * per {
            let l = i % centres;
            labels.push(l);
            data.extend((0..dim).map(|d| c[l * dim + d] + (rng.normal() * 0.3) as f32));
        }
        (Matrix::new(centres * per, dim, data).unwrap(), labels)
    }

    fn nearest(emb: &[f32], c: usize, p: &[f32], skip: Option<usize>) -> usize {
        (0..emb.len() / c)
            .filter(|&j| Some(j) != skip)
            .min_by(|&x, &y| {
                knn::squared_euclidean(p, &emb[x * c..(x + 1) * c])
                    .total_cmp(&knn::squared_euclidean(p, &emb[y * c..(y + 1) * c]))
            })
            .unwrap()
    }

    #[test]
    fn blobs_stay_apart_and_the_seed_fixes_every_bit() {
        let (data, labels) = blobs(3, 40, 8, 5, 6);
        let params = UmapParams {
            n_components: 2,
            n_epochs: Some(120),
            metric: Metric::Euclidean,
            ..UmapParams::default()
        };
        let u = Umap::fit(&data, &params).unwrap();
        assert_eq!(u, Umap::fit(&data, &params).unwrap(), "same input and seed");
        let other = Umap::fit(
            &data,
            &UmapParams {
                seed: 9,
                ..params.clone()
            },
        )
        .unwrap();
        assert_ne!(u.embedding_slice(), other.embedding_slice(), "another seed");
        let emb = u.embedding_slice();
        assert!(emb.iter().all(|v| v.is_finite()));
        // Each point's nearest layout neighbour is from its own blob.
        for i in 0..data.rows() {
            let j = nearest(emb, 2, &emb[i * 2..i * 2 + 2], Some(i));
            assert_eq!(labels[i], labels[j], "point {i}");
        }
        // New points from the same blobs land beside their blob.
        let (new, new_labels) = blobs(3, 5, 8, 5, 7);
        let t = u.transform(&new).unwrap();
        assert_eq!(t, u.transform(&new).unwrap());
        for (i, want) in new_labels.iter().enumerate() {
            let j = nearest(emb, 2, t.row(i), None);
            assert_eq!(*want, labels[j], "new point {i}");
        }
        assert!(
            u.transform(&Matrix::new(1, 3, vec![0.0; 3]).unwrap())
                .is_err()
        );
        assert!(
            u.transform(&Matrix::new(1, 8, vec![f32::NAN; 8]).unwrap())
                .is_err()
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        for p in [
            UmapParams {
                n_neighbors: 1,
                ..UmapParams::default()
            },
            UmapParams {
                n_components: 0,
                ..UmapParams::default()
            },
            UmapParams {
                min_dist: 2.0,
                ..UmapParams::default()
            },
            UmapParams {
                spread: f32::NAN,
                ..UmapParams::default()
            },
            UmapParams {
                n_epochs: Some(0),
                ..UmapParams::default()
            },
        ] {
            assert!(p.check().is_err(), "{p:?}");
        }
        let one = Matrix::new(1, 2, vec![0.0, 1.0]).unwrap();
        assert!(Umap::fit(&one, &UmapParams::default()).is_err());
    }
}
