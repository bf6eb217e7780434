//! The LightFM model and its training: users and items are sums of their feature embeddings
//! (plus per-feature biases), a score is `dot(user, item) + user bias + item bias`, trained by
//! SGD on WARP, BPR or logistic loss with Adagrad or Adadelta per-parameter rates.
//!
//! Written by hand after LightFM's Cython (`_lightfm_fast.pyx`): the same initialisation
//! (`U(-0.5, 0.5) / k` embeddings, zero biases, Adagrad accumulators at 1), the same
//! sampling rules (WARP draws uniform negatives until one violates the margin of 1, refusing
//! known interactions, weighting the update by `ln(floor((items - 1) / draws))`; BPR draws
//! from the interactions' item column) and the same update formulas. No Rust crate trains
//! this model. Two deliberate differences: the L2 penalty (`item_alpha`, `user_alpha`) is
//! applied to the rows an update touches (LightFM applies it lazily through a global scale),
//! and the random numbers come from SplitMix64, so runs match LightFM in distribution, not
//! draw for draw.
//!
//! Multi-threaded epochs are Hogwild (Recht et al. 2011), as LightFM's: threads update the
//! shared parameters without locks. The parameters are relaxed atomics (`AtomicU32` holding
//! `f32` bits), so a lost update is possible, as in Hogwild, but a data race (undefined
//! behaviour in Rust) is not. One thread with a seed is deterministic.

use std::sync::atomic::{AtomicU32, Ordering};

use infermesh_model_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::RecsError;
use crate::data::{Csr, Interactions};

/// Largest WARP loss weight (LightFM's `MAX_LOSS`).
const MAX_LOSS: f32 = 10.0;

/// Training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Weighted Approximate-Rank Pairwise (Weston et al. 2011): precision at the top.
    Warp,
    /// Bayesian Personalised Ranking (Rendle et al. 2009).
    Bpr,
    /// Logistic loss on positives and known negatives.
    Logistic,
}

impl Loss {
    /// The name used in flags and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::Warp => "warp",
            Loss::Bpr => "bpr",
            Loss::Logistic => "logistic",
        }
    }
}

/// Per-parameter learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Adagrad (Duchi et al. 2011) with `learning_rate`.
    Adagrad,
    /// Adadelta (Zeiler 2012) with `rho` and `epsilon`.
    Adadelta,
}

impl Schedule {
    /// The name used in flags and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Adagrad => "adagrad",
            Schedule::Adadelta => "adadelta",
        }
    }
}

/// Hyper-parameters, LightFM's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Embedding width (`no_components`). Default 10.
    pub components: usize,
    /// Loss. Default WARP (LightFM's default is logistic, which needs negatives).
    pub loss: Loss,
    /// Schedule. Default Adagrad.
    pub schedule: Schedule,
    /// Adagrad's learning rate. Default 0.05.
    pub learning_rate: f32,
    /// Adadelta's decay. Default 0.95.
    pub rho: f32,
    /// Adadelta's epsilon. Default 1e-6.
    pub epsilon: f32,
    /// L2 penalty on item features. Default 0.
    pub item_alpha: f32,
    /// L2 penalty on user features. Default 0.
    pub user_alpha: f32,
    /// WARP's negative draws per positive. Default 10.
    pub max_sampled: usize,
    /// Seed of the initial weights, the shuffles and the negative draws. Default 42.
    pub seed: u64,
}

impl Default for Hyper {
    fn default() -> Self {
        Self {
            components: 10,
            loss: Loss::Warp,
            schedule: Schedule::Adagrad,
            learning_rate: 0.05,
            rho: 0.95,
            epsilon: 1e-6,
            item_alpha: 0.0,
            user_alpha: 0.0,
            max_sampled: 10,
            seed: 42,
        }
    }
}

impl Hyper {
    /// Checks ranges.
    pub fn check(&self) -> Result<(), RecsError> {
        let bad = |what: &str| Err(RecsError::Invalid(what.to_string()));
        if self.components == 0 || self.components > 4096 {
            return bad("components must be in 1..=4096");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning rate must be positive");
        }
        if !(self.rho > 0.0 && self.rho < 1.0) {
            return bad("rho must be in (0, 1)");
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad("epsilon must be positive");
        }
        let alpha_ok = |a: f32| a.is_finite() && a >= 0.0;
        if !alpha_ok(self.item_alpha) || !alpha_ok(self.user_alpha) {
            return bad("alphas must be finite and >= 0");
        }
        if self.max_sampled == 0 {
            return bad("max_sampled must be at least 1");
        }
        Ok(())
    }
}

/// `f32` values shared by Hogwild threads.
struct Shared(Vec<AtomicU32>);

impl Shared {
    fn new(values: impl IntoIterator<Item = f32>) -> Self {
        Self(
            values
                .into_iter()
                .map(|v| AtomicU32::new(v.to_bits()))
                .collect(),
        )
    }

    #[inline]
    fn get(&self, i: usize) -> f32 {
        f32::from_bits(self.0[i].load(Ordering::Relaxed))
    }

    #[inline]
    fn set(&self, i: usize, v: f32) {
        self.0[i].store(v.to_bits(), Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<f32> {
        (0..self.0.len()).map(|i| self.get(i)).collect()
    }
}

/// One side's (users' or items') parameters and optimiser state.
struct Side {
    emb: Shared,
    bias: Shared,
    /// Adagrad: sum of squared gradients (from 1). Adadelta: running mean of them.
    emb_g: Shared,
    bias_g: Shared,
    /// Adadelta: running mean of squared updates.
    emb_m: Shared,
    bias_m: Shared,
    alpha: f32,
}

impl Side {
    fn new(features: usize, k: usize, hyper: &Hyper, alpha: f32, rng: &mut SplitMix64) -> Self {
        let start = match hyper.schedule {
            Schedule::Adagrad => 1.0,
            Schedule::Adadelta => 0.0,
        };
        Self {
            emb: Shared::new((0..features * k).map(|_| (rng.next_f64() as f32 - 0.5) / k as f32)),
            bias: Shared::new(std::iter::repeat_n(0.0, features)),
            emb_g: Shared::new(std::iter::repeat_n(start, features * k)),
            bias_g: Shared::new(std::iter::repeat_n(start, features)),
            emb_m: Shared::new(std::iter::repeat_n(0.0, features * k)),
            bias_m: Shared::new(std::iter::repeat_n(0.0, features)),
            alpha,
        }
    }
}

/// What one epoch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Interactions visited.
    pub examples: usize,
    /// Of those, the ones that produced an update (WARP: a violating negative was found).
    pub updates: usize,
}

/// The training inputs: interactions and both feature matrices.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// Users x items.
    pub interactions: &'a Interactions,
    /// Users x user features.
    pub user_features: &'a Csr,
    /// Items x item features.
    pub item_features: &'a Csr,
}

impl TrainData<'_> {
    fn check(&self, model: &LightFm) -> Result<(), RecsError> {
        let x = &self.interactions.matrix;
        if x.rows() != self.user_features.rows() || x.cols != self.item_features.rows() {
            return Err(RecsError::Invalid(format!(
                "interactions are {} x {} but there are {} user and {} item feature rows",
                x.rows(),
                x.cols,
                self.user_features.rows(),
                self.item_features.rows()
            )));
        }
        if self.user_features.cols != model.user_features
            || self.item_features.cols != model.item_features
        {
            return Err(RecsError::Invalid(
                "feature matrices do not match the model's feature counts".into(),
            ));
        }
        if x.cols == 0 {
            return Err(RecsError::Invalid("no items".into()));
        }
        Ok(())
    }
}

/// A LightFM model being trained.
pub struct LightFm {
    hyper: Hyper,
    user_features: usize,
    item_features: usize,
    user: Side,
    item: Side,
    rng: SplitMix64,
}

impl std::fmt::Debug for LightFm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LightFm")
            .field("hyper", &self.hyper)
            .field("user_features", &self.user_features)
            .field("item_features", &self.item_features)
            .finish_non_exhaustive()
    }
}

/// Scratch space of one thread: the three representations, `k` components then the bias.
struct Scratch {
    user: Vec<f32>,
    pos: Vec<f32>,
    neg: Vec<f32>,
    grad: Vec<f32>,
}

impl LightFm {
    /// A new model with `user_features` and `item_features` feature rows, initialised from
    /// `hyper.seed` (items first, then users, as LightFM draws them).
    pub fn new(
        hyper: Hyper,
        user_features: usize,
        item_features: usize,
    ) -> Result<Self, RecsError> {
        hyper.check()?;
        let k = hyper.components;
        let mut rng = SplitMix64::new(hyper.seed);
        let item = Side::new(item_features, k, &hyper, hyper.item_alpha, &mut rng);
        let user = Side::new(user_features, k, &hyper, hyper.user_alpha, &mut rng);
        Ok(Self {
            hyper,
            user_features,
            item_features,
            user,
            item,
            rng,
        })
    }

    /// The hyper-parameters.
    pub fn hyper(&self) -> &Hyper {
        &self.hyper
    }

    /// One pass over the interactions in a seeded random order, on `threads` threads
    /// (Hogwild when more than one). Fails when the parameters stop being finite.
    pub fn fit_epoch(
        &mut self,
        data: TrainData<'_>,
        threads: usize,
    ) -> Result<EpochStats, RecsError> {
        data.check(self)?;
        let x = &data.interactions.matrix;
        let mut order: Vec<u32> = (0..x.nnz() as u32).collect();
        self.rng.shuffle(&mut order);
        // The row of each stored entry, so a thread can read (user, item, value) by index.
        let mut rows = vec![0u32; x.nnz()];
        for u in 0..x.rows() {
            for r in &mut rows[x.indptr[u] as usize..x.indptr[u + 1] as usize] {
                *r = u as u32;
            }
        }
        let threads = threads.max(1).min(order.len().max(1));
        let seeds: Vec<u64> = (0..threads).map(|_| self.rng.next_u64()).collect();
        let chunk = order.len().div_ceil(threads).max(1);
        let this = &*self;
        let stats = std::thread::scope(|s| {
            let handles: Vec<_> = order
                .chunks(chunk)
                .zip(&seeds)
                .map(|(part, &seed)| {
                    let rows = &rows;
                    s.spawn(move || this.run(data, rows, part, seed))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join())
                .collect::<Result<Vec<EpochStats>, _>>()
        })
        .map_err(|_| RecsError::Internal("a training thread panicked".into()))?;
        if !self.is_finite() {
            return Err(RecsError::Diverged);
        }
        Ok(stats.into_iter().fold(
            EpochStats {
                examples: 0,
                updates: 0,
            },
            |a, b| EpochStats {
                examples: a.examples + b.examples,
                updates: a.updates + b.updates,
            },
        ))
    }

    fn is_finite(&self) -> bool {
        [&self.user, &self.item].iter().all(|s| {
            (0..s.emb.0.len()).all(|i| s.emb.get(i).is_finite())
                && (0..s.bias.0.len()).all(|i| s.bias.get(i).is_finite())
        })
    }

    /// One thread's share of an epoch.
    fn run(&self, data: TrainData<'_>, rows: &[u32], part: &[u32], seed: u64) -> EpochStats {
        let k = self.hyper.components;
        let x = &data.interactions.matrix;
        let n_items = x.cols;
        let mut rng = SplitMix64::new(seed);
        let mut s = Scratch {
            user: vec![0.0; k + 1],
            pos: vec![0.0; k + 1],
            neg: vec![0.0; k + 1],
            grad: vec![0.0; k],
        };
        let mut stats = EpochStats {
            examples: 0,
            updates: 0,
        };
        for &e in part {
            let e = e as usize;
            let (u, i, y) = (rows[e] as usize, x.indices[e] as usize, x.values[e]);
            stats.examples += 1;
            let updated = match self.hyper.loss {
                Loss::Warp => self.warp_step(data, &mut s, &mut rng, u, i, y, n_items),
                Loss::Bpr => self.bpr_step(data, &mut s, &mut rng, u, i, y),
                Loss::Logistic => self.logistic_step(data, &mut s, u, i, y),
            };
            stats.updates += usize::from(updated);
        }
        stats
    }

    #[allow(clippy::too_many_arguments)]
    fn warp_step(
        &self,
        data: TrainData<'_>,
        s: &mut Scratch,
        rng: &mut SplitMix64,
        u: usize,
        i: usize,
        weight: f32,
        n_items: usize,
    ) -> bool {
        if weight <= 0.0 {
            return false;
        }
        self.represent(&self.user, data.user_features, u, &mut s.user);
        self.represent(&self.item, data.item_features, i, &mut s.pos);
        let positive = predict(&s.user, &s.pos);
        for sampled in 1..=self.hyper.max_sampled {
            let j = rng.below(n_items);
            self.represent(&self.item, data.item_features, j, &mut s.neg);
            let negative = predict(&s.user, &s.neg);
            if negative > positive - 1.0 {
                if data.interactions.matrix.contains(u, j as u32) {
                    continue;
                }
                let rank_weight = ((n_items - 1) / sampled).max(1) as f32;
                let loss = (weight * rank_weight.ln()).min(MAX_LOSS);
                self.pairwise_update(data, s, loss, u, i, j);
                return true;
            }
        }
        false
    }

    fn bpr_step(
        &self,
        data: TrainData<'_>,
        s: &mut Scratch,
        rng: &mut SplitMix64,
        u: usize,
        i: usize,
        weight: f32,
    ) -> bool {
        if weight <= 0.0 {
            return false;
        }
        let x = &data.interactions.matrix;
        // A negative from the interactions' item column (popularity-weighted), redrawn
        // while it is a known interaction of the user, at most nnz times.
        let mut j = x.indices[rng.below(x.nnz())] as usize;
        for _ in 1..x.nnz() {
            if !x.contains(u, j as u32) {
                break;
            }
            j = x.indices[rng.below(x.nnz())] as usize;
        }
        self.represent(&self.user, data.user_features, u, &mut s.user);
        self.represent(&self.item, data.item_features, i, &mut s.pos);
        self.represent(&self.item, data.item_features, j, &mut s.neg);
        let diff = predict(&s.user, &s.pos) - predict(&s.user, &s.neg);
        let loss = weight * (1.0 - sigmoid(diff));
        self.pairwise_update(data, s, loss, u, i, j);
        true
    }

    fn logistic_step(
        &self,
        data: TrainData<'_>,
        s: &mut Scratch,
        u: usize,
        i: usize,
        y: f32,
    ) -> bool {
        let target = if y > 0.0 { 1.0 } else { 0.0 };
        // Positives weigh their value (the sample weight), known negatives 1.
        let weight = if y > 0.0 { y } else { 1.0 };
        self.represent(&self.user, data.user_features, u, &mut s.user);
        self.represent(&self.item, data.item_features, i, &mut s.pos);
        let loss = weight * (sigmoid(predict(&s.user, &s.pos)) - target);
        let k = self.hyper.components;
        // d/d item = loss * user, d/d user = loss * item.
        s.grad[..k].copy_from_slice(&s.user[..k]);
        s.grad.iter_mut().for_each(|g| *g *= loss);
        self.update_row(&self.item, data.item_features, i, &s.grad, loss);
        s.grad[..k].copy_from_slice(&s.pos[..k]);
        s.grad.iter_mut().for_each(|g| *g *= loss);
        self.update_row(&self.user, data.user_features, u, &s.grad, loss);
        true
    }

    /// LightFM's `warp_update`: positive item down the loss, negative item up, user
    /// towards `pos - neg`, every gradient from the representations before the update.
    fn pairwise_update(
        &self,
        data: TrainData<'_>,
        s: &mut Scratch,
        loss: f32,
        u: usize,
        i: usize,
        j: usize,
    ) {
        let k = self.hyper.components;
        for c in 0..k {
            s.grad[c] = -loss * s.user[c];
        }
        self.update_row(&self.item, data.item_features, i, &s.grad, -loss);
        for c in 0..k {
            s.grad[c] = loss * s.user[c];
        }
        self.update_row(&self.item, data.item_features, j, &s.grad, loss);
        for c in 0..k {
            s.grad[c] = loss * (s.neg[c] - s.pos[c]);
        }
        self.update_row(&self.user, data.user_features, u, &s.grad, loss);
    }

    /// Sum of row `r`'s feature embeddings and biases, weighted by the feature values.
    fn represent(&self, side: &Side, features: &Csr, r: usize, out: &mut [f32]) {
        let k = self.hyper.components;
        out.iter_mut().for_each(|v| *v = 0.0);
        let (cols, vals) = features.row(r);
        for (&f, &w) in cols.iter().zip(vals) {
            let base = f as usize * k;
            for (c, o) in out[..k].iter_mut().enumerate() {
                *o += w * side.emb.get(base + c);
            }
            out[k] += w * side.bias.get(f as usize);
        }
    }

    /// Applies gradient `grad` (per component) and `bias_grad` to every feature of row `r`.
    fn update_row(&self, side: &Side, features: &Csr, r: usize, grad: &[f32], bias_grad: f32) {
        let k = self.hyper.components;
        let (cols, vals) = features.row(r);
        for (&f, &w) in cols.iter().zip(vals) {
            let base = f as usize * k;
            for (c, &g) in grad.iter().enumerate() {
                self.step(
                    &side.emb,
                    &side.emb_g,
                    &side.emb_m,
                    base + c,
                    g,
                    w,
                    side.alpha,
                );
            }
            self.step(
                &side.bias,
                &side.bias_g,
                &side.bias_m,
                f as usize,
                bias_grad,
                w,
                side.alpha,
            );
        }
    }

    /// One parameter's update (LightFM's `update_features` / `update_biases`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn step(
        &self,
        w: &Shared,
        g: &Shared,
        m: &Shared,
        at: usize,
        grad: f32,
        feature: f32,
        alpha: f32,
    ) {
        let scaled = grad * feature;
        let (local_lr, delta) = match self.hyper.schedule {
            Schedule::Adagrad => {
                let acc = g.get(at);
                let local_lr = self.hyper.learning_rate / acc.sqrt();
                g.set(at, acc + scaled * scaled);
                (local_lr, local_lr * scaled)
            }
            Schedule::Adadelta => {
                let (rho, eps) = (self.hyper.rho, self.hyper.epsilon);
                let acc = rho * g.get(at) + (1.0 - rho) * scaled * scaled;
                g.set(at, acc);
                let mom = m.get(at);
                let local_lr = (mom + eps).sqrt() / (acc + eps).sqrt();
                let delta = local_lr * scaled;
                m.set(at, rho * mom + (1.0 - rho) * delta * delta);
                (local_lr, delta)
            }
        };
        let mut v = w.get(at) - delta;
        if alpha > 0.0 {
            v *= 1.0 - (alpha * local_lr).min(1.0);
        }
        w.set(at, v);
    }

    /// The trained parameters.
    pub fn factors(&self) -> Factors {
        Factors {
            components: self.hyper.components,
            user_embeddings: self.user.emb.snapshot(),
            user_biases: self.user.bias.snapshot(),
            item_embeddings: self.item.emb.snapshot(),
            item_biases: self.item.bias.snapshot(),
        }
    }
}

/// Trained parameters per feature: what a model version stores and serving reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    /// Embedding width.
    pub components: usize,
    /// `user features x components`, row-major.
    pub user_embeddings: Vec<f32>,
    /// One per user feature.
    pub user_biases: Vec<f32>,
    /// `item features x components`, row-major.
    pub item_embeddings: Vec<f32>,
    /// One per item feature.
    pub item_biases: Vec<f32>,
}

impl Factors {
    /// Representation (`k` components, then the bias) of a feature row given as pairs.
    pub fn user_repr(&self, row: impl IntoIterator<Item = (u32, f32)>) -> Vec<f32> {
        repr(
            &self.user_embeddings,
            &self.user_biases,
            self.components,
            row,
        )
    }

    /// Representation of an item feature row.
    pub fn item_repr(&self, row: impl IntoIterator<Item = (u32, f32)>) -> Vec<f32> {
        repr(
            &self.item_embeddings,
            &self.item_biases,
            self.components,
            row,
        )
    }

    /// Every item's representation: `items x components` row-major, and the biases.
    pub fn item_matrix(&self, item_features: &Csr) -> (Vec<f32>, Vec<f32>) {
        let k = self.components;
        let n = item_features.rows();
        let mut emb = vec![0f32; n * k];
        let mut bias = vec![0f32; n];
        for i in 0..n {
            let (cols, vals) = item_features.row(i);
            let r = self.item_repr(cols.iter().copied().zip(vals.iter().copied()));
            emb[i * k..(i + 1) * k].copy_from_slice(&r[..k]);
            bias[i] = r[k];
        }
        (emb, bias)
    }

    /// Checks the lengths against the feature counts.
    pub fn check(&self, user_features: usize, item_features: usize) -> Result<(), RecsError> {
        let k = self.components;
        if k == 0
            || self.user_embeddings.len() != user_features * k
            || self.user_biases.len() != user_features
            || self.item_embeddings.len() != item_features * k
            || self.item_biases.len() != item_features
        {
            return Err(RecsError::Load(
                "embedding shapes do not match the feature counts".into(),
            ));
        }
        Ok(())
    }
}

fn repr(
    emb: &[f32],
    bias: &[f32],
    k: usize,
    row: impl IntoIterator<Item = (u32, f32)>,
) -> Vec<f32> {
    let mut out = vec![0f32; k + 1];
    for (f, w) in row {
        let base = f as usize * k;
        for (o, e) in out[..k].iter_mut().zip(&emb[base..base + k]) {
            *o += w * e;
        }
        out[k] += w * bias[f as usize];
    }
    out
}

/// Scores of every item for a user representation: `dot(user, item) + biases`, written
/// into `out` (a plain loop the compiler vectorises).
pub fn score_all(user: &[f32], item_emb: &[f32], item_bias: &[f32], out: &mut Vec<f32>) {
    let k = user.len() - 1;
    let u = &user[..k];
    out.clear();
    out.extend(
        item_emb
            .chunks_exact(k)
            .zip(item_bias)
            .map(|(row, b)| dot(u, row) + b + user[k]),
    );
}

/// Dot product in eight lanes (vectorised by the compiler).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[inline]
fn predict(user: &[f32], item: &[f32]) -> f32 {
    let k = user.len() - 1;
    dot(&user[..k], &item[..k]) + user[k] + item[k]
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::Features;

    /// Two groups of users, each liking its own half of the items.
    fn blocks(users: usize, items: usize) -> Interactions {
        let mut t = Vec::new();
        for u in 0..users {
            for i in 0..items {
                if (u < users / 2) == (i < items / 2) && (u + i) % 3 != 0 {
                    t.push((u as u32, i as u32, 1.0));
                }
            }
        }
        Interactions::new(users, items, &t).unwrap()
    }

    fn train(loss: Loss, schedule: Schedule, threads: usize, seed: u64) -> (Factors, Interactions) {
        let x = blocks(20, 30);
        let uf = Features::identity(20);
        let itf = Features::identity(30);
        let hyper = Hyper {
            loss,
            schedule,
            seed,
            ..Hyper::default()
        };
        let mut m = LightFm::new(hyper, 20, 30).unwrap();
        let data = TrainData {
            interactions: &x,
            user_features: &uf.matrix,
            item_features: &itf.matrix,
        };
        for _ in 0..30 {
            m.fit_epoch(data, threads).unwrap();
        }
        (m.factors(), x)
    }

    /// Mean score of a user's own block minus the other block.
    fn separation(f: &Factors, x: &Interactions) -> f32 {
        let (emb, bias) = f.item_matrix(&Csr::identity(x.items()));
        let mut scores = Vec::new();
        let mut margin = 0.0;
        for u in 0..x.users() {
            let user = f.user_repr([(u as u32, 1.0)]);
            score_all(&user, &emb, &bias, &mut scores);
            let half = x.items() / 2;
            let (a, b) = scores.split_at(half);
            let (mine, other) = if u < x.users() / 2 { (a, b) } else { (b, a) };
            margin += mine.iter().sum::<f32>() / mine.len() as f32
                - other.iter().sum::<f32>() / other.len() as f32;
        }
        margin / x.users() as f32
    }

    #[test]
    fn every_loss_and_schedule_learns_the_blocks() {
        for loss in [Loss::Warp, Loss::Bpr] {
            for schedule in [Schedule::Adagrad, Schedule::Adadelta] {
                let (f, x) = train(loss, schedule, 1, 7);
                let sep = separation(&f, &x);
                assert!(sep > 0.5, "{loss:?} {schedule:?}: {sep}");
            }
        }
    }

    #[test]
    fn logistic_learns_with_known_negatives() {
        let mut t = Vec::new();
        for u in 0..20u32 {
            for i in 0..30u32 {
                let liked = (u < 10) == (i < 15);
                t.push((u, i, if liked { 1.0 } else { -1.0 }));
            }
        }
        let x = Interactions::new(20, 30, &t).unwrap();
        let hyper = Hyper {
            loss: Loss::Logistic,
            ..Hyper::default()
        };
        let mut m = LightFm::new(hyper, 20, 30).unwrap();
        let (uf, itf) = (Csr::identity(20), Csr::identity(30));
        for _ in 0..30 {
            m.fit_epoch(
                TrainData {
                    interactions: &x,
                    user_features: &uf,
                    item_features: &itf,
                },
                1,
            )
            .unwrap();
        }
        assert!(separation(&m.factors(), &x) > 1.0);
    }

    #[test]
    fn one_thread_is_deterministic_and_seeds_matter() {
        let (a, _) = train(Loss::Warp, Schedule::Adagrad, 1, 3);
        let (b, _) = train(Loss::Warp, Schedule::Adagrad, 1, 3);
        let (c, _) = train(Loss::Warp, Schedule::Adagrad, 1, 4);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn hogwild_threads_learn_too() {
        let (f, x) = train(Loss::Warp, Schedule::Adagrad, 4, 3);
        assert!(separation(&f, &x) > 0.5);
    }

    #[test]
    fn initialisation_is_lightfm_s() {
        let m = LightFm::new(Hyper::default(), 3, 5).unwrap();
        let f = m.factors();
        assert!(f.item_embeddings.iter().all(|v| v.abs() <= 0.05));
        assert!(
            f.user_biases
                .iter()
                .chain(&f.item_biases)
                .all(|&b| b == 0.0)
        );
        assert_eq!(m.item.emb_g.get(0), 1.0);
    }

    #[test]
    fn bad_hyper_parameters_and_shapes_are_refused() {
        for h in [
            Hyper {
                components: 0,
                ..Hyper::default()
            },
            Hyper {
                learning_rate: -1.0,
                ..Hyper::default()
            },
            Hyper {
                max_sampled: 0,
                ..Hyper::default()
            },
        ] {
            assert!(LightFm::new(h, 1, 1).is_err());
        }
        let mut m = LightFm::new(Hyper::default(), 2, 2).unwrap();
        let x = blocks(2, 2);
        let f = Csr::identity(3);
        let data = TrainData {
            interactions: &x,
            user_features: &f,
            item_features: &f,
        };
        assert!(m.fit_epoch(data, 1).is_err());
    }

    #[test]
    fn a_huge_learning_rate_is_reported_as_divergence() {
        let x = blocks(20, 30);
        let (uf, itf) = (Csr::identity(20), Csr::identity(30));
        let hyper = Hyper {
            loss: Loss::Logistic,
            schedule: Schedule::Adagrad,
            learning_rate: 1e30,
            ..Hyper::default()
        };
        let mut m = LightFm::new(hyper, 20, 30).unwrap();
        let data = TrainData {
            interactions: &x,
            user_features: &uf,
            item_features: &itf,
        };
        let r = (0..5).try_for_each(|_| m.fit_epoch(data, 1).map(|_| ()));
        assert!(matches!(r, Err(RecsError::Diverged)), "{r:?}");
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..13).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..13).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }
}
