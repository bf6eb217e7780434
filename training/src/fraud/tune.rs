//! `train fraud --tune N`: a sequential model-based hyper-parameter search.
//!
//! The sampler is TPE as in Optuna's default `TPESampler`: the first `startup` trials draw
//! each parameter uniformly (over its log scale where it has one), later trials ask one
//! univariate Tree-structured Parzen Estimator per parameter (the `tpe` crate, by an Optuna
//! maintainer) fitted on every earlier trial's objective, the validation PR-AUC.
//!
//! The pruner is written here (no crate does it): Optuna's `MedianPruner`. After `warmup`
//! rounds, and once `min_trials` trials have finished, a trial stops when its best
//! validation PR-AUC so far is below the median of the earlier finished trials' best at the
//! same round (a trial that early-stopped before that round counts with its final best).
//! Every trial also early-stops as a normal training does.

use indicatif::ProgressBar;
use infermesh_registry::MlflowClient;
use infermesh_registry::mlflow::{KeyValue, Metric, Run, RunStatus};
use rand::{RngExt, SeedableRng};
use serde_json::json;

use super::{FraudJobError, Params, TrainFraudArgs, data, train_booster};

/// One searched parameter: a range, on a log scale or not, rounded to an integer or not.
#[derive(Debug, Clone, Copy)]
struct Dim {
    lo: f64,
    hi: f64,
    log: bool,
    int: bool,
}

impl Dim {
    fn range(&self) -> (f64, f64) {
        if self.log {
            (self.lo.ln(), self.hi.ln())
        } else {
            (self.lo, self.hi)
        }
    }

    fn value(&self, x: f64) -> f64 {
        let v = if self.log { x.exp() } else { x };
        let v = v.clamp(self.lo, self.hi);
        if self.int { v.round() } else { v }
    }
}

/// The search space, in the order of [`Params`]' fields it sets.
const SPACE: [(&str, Dim); 6] = [
    (
        "learning_rate",
        Dim {
            lo: 0.01,
            hi: 0.3,
            log: true,
            int: false,
        },
    ),
    (
        "num_leaves",
        Dim {
            lo: 8.0,
            hi: 256.0,
            log: true,
            int: true,
        },
    ),
    (
        "max_depth",
        Dim {
            lo: 3.0,
            hi: 12.0,
            log: false,
            int: true,
        },
    ),
    (
        "min_data_in_leaf",
        Dim {
            lo: 5.0,
            hi: 200.0,
            log: true,
            int: true,
        },
    ),
    (
        "feature_fraction",
        Dim {
            lo: 0.4,
            hi: 1.0,
            log: false,
            int: false,
        },
    ),
    (
        "bagging_fraction",
        Dim {
            lo: 0.4,
            hi: 1.0,
            log: false,
            int: false,
        },
    ),
];

fn params_from(x: &[f64]) -> Params {
    let v: Vec<f64> = SPACE.iter().zip(x).map(|((_, d), &x)| d.value(x)).collect();
    Params {
        learning_rate: v[0],
        num_leaves: v[1] as u32,
        max_depth: v[2] as i32,
        min_data_in_leaf: v[3] as u32,
        feature_fraction: v[4],
        bagging_fraction: v[5],
        // Bagging every round; a fraction of 1.0 is no bagging.
        bagging_freq: 1,
    }
}

/// TPE over [`SPACE`].
#[derive(Debug)]
pub struct Sampler {
    rng: rand::rngs::StdRng,
    startup: usize,
    told: usize,
    optimizers: Vec<tpe::TpeOptimizer>,
}

/// A point the sampler proposed: its raw coordinates (to tell back) and the parameters.
#[derive(Debug, Clone)]
pub struct Proposal {
    raw: Vec<f64>,
    /// The LightGBM parameters.
    pub params: Params,
}

impl Sampler {
    /// A seeded sampler; the first `startup` proposals are uniform.
    pub fn new(seed: u64, startup: usize) -> Self {
        let optimizers = SPACE
            .iter()
            .map(|(_, d)| {
                let (lo, hi) = d.range();
                #[allow(clippy::expect_used)]
                let r = tpe::range(lo, hi).expect("the search space's ranges are valid");
                tpe::TpeOptimizer::new(tpe::parzen_estimator(), r)
            })
            .collect();
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            startup,
            told: 0,
            optimizers,
        }
    }

    /// The next point to try.
    pub fn ask(&mut self) -> Proposal {
        let mut raw = Vec::with_capacity(SPACE.len());
        for (i, (_, d)) in SPACE.iter().enumerate() {
            let (lo, hi) = d.range();
            let x = if self.told < self.startup {
                self.rng.random_range(lo..hi)
            } else {
                // The Parzen estimator never fails on finite observations in range.
                self.optimizers[i]
                    .ask(&mut self.rng)
                    .unwrap_or_else(|_| (lo + hi) / 2.0)
            };
            raw.push(x);
        }
        Proposal {
            params: params_from(&raw),
            raw,
        }
    }

    /// Reports a proposal's objective (higher is better).
    pub fn tell(&mut self, p: &Proposal, objective: f64) {
        let loss = if objective.is_finite() {
            -objective
        } else {
            f64::MAX
        };
        for (opt, &x) in self.optimizers.iter_mut().zip(&p.raw) {
            // Only NaN or an out-of-range point is refused; neither is produced by ask.
            let _ = opt.tell(x, loss);
        }
        self.told += 1;
    }
}

/// Optuna's median pruner over the running best validation PR-AUC.
#[derive(Debug, Clone)]
pub struct MedianPruner {
    warmup: usize,
    min_trials: usize,
    /// Per finished trial, its best-so-far value after each round.
    curves: Vec<Vec<f64>>,
}

impl MedianPruner {
    /// Prunes after `warmup` rounds once `min_trials` trials have finished.
    pub fn new(warmup: usize, min_trials: usize) -> Self {
        Self {
            warmup,
            min_trials: min_trials.max(1),
            curves: Vec::new(),
        }
    }

    /// Whether a trial whose best so far after `round` (1-based) is `best` should stop.
    pub fn should_prune(&self, round: usize, best: f64) -> bool {
        if round <= self.warmup || self.curves.len() < self.min_trials {
            return false;
        }
        let mut at: Vec<f64> = self
            .curves
            .iter()
            .filter_map(|c| c.get(round - 1).or(c.last()).copied())
            .filter(|v| v.is_finite())
            .collect();
        if at.is_empty() {
            return false;
        }
        at.sort_by(f64::total_cmp);
        let n = at.len();
        let median = if n % 2 == 1 {
            at[n / 2]
        } else {
            (at[n / 2 - 1] + at[n / 2]) / 2.0
        };
        best < median
    }

    /// Records a finished (not pruned) trial's per-round values.
    pub fn finished(&mut self, per_round: &[f64]) {
        let mut best = f64::NEG_INFINITY;
        self.curves.push(
            per_round
                .iter()
                .map(|&v| {
                    if v > best {
                        best = v;
                    }
                    best
                })
                .collect(),
        );
    }
}

/// One trial.
#[derive(Debug, Clone)]
pub struct TrialResult {
    /// Its number, from 0.
    pub number: usize,
    /// Parameters tried.
    pub params: Params,
    /// Best validation PR-AUC (the objective).
    pub value: f64,
    /// Rounds at the best value.
    pub best_iteration: usize,
    /// Rounds run.
    pub rounds: usize,
    /// Stopped by the pruner.
    pub pruned: bool,
    /// Its model (trained on train only), cut at the best round.
    pub model_text: String,
    /// Its nested MLflow run.
    pub run_id: Option<String>,
}

/// The search's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every trial, in order.
    pub trials: Vec<TrialResult>,
    /// Index of the best finished trial.
    pub best: usize,
}

impl Outcome {
    /// The model card's `tuning` object.
    pub fn card(&self) -> serde_json::Value {
        let best = &self.trials[self.best];
        json!({
            "sampler": "tpe",
            "pruner": "median",
            "searched": SPACE.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "trials": self.trials.len(),
            "pruned": self.trials.iter().filter(|t| t.pruned).count(),
            "best_trial": best.number,
            "best_valid_pr_auc": best.value,
            "best_iteration": best.best_iteration,
            "final_fit": "train + validation, the best trial's rounds",
            "threshold_from": "the best trial's model on validation",
            "history": self.trials.iter().map(|t| json!({
                "trial": t.number, "value": t.value, "rounds": t.rounds,
                "best_iteration": t.best_iteration, "pruned": t.pruned, "run_id": t.run_id,
            })).collect::<Vec<_>>(),
        })
    }
}

type Tracking = (tokio::runtime::Runtime, MlflowClient, String);

impl TrainFraudArgs {
    /// Runs `--tune` trials on the train split, each early-stopped on validation.
    pub(super) fn search(
        &self,
        prepared: &data::Prepared,
        split: &data::Split,
        tracking: Option<&Tracking>,
        parent: Option<&Run>,
        bar: &ProgressBar,
    ) -> Result<Outcome, FraudJobError> {
        let mut sampler = Sampler::new(self.seed, self.tune_startup);
        let mut pruner = MedianPruner::new(self.prune_warmup, self.prune_min_trials);
        let mut trials: Vec<TrialResult> = Vec::new();
        bar.set_length(self.tune as u64);
        bar.set_prefix("tune fraud");
        for number in 0..self.tune {
            let proposal = sampler.ask();
            let mut best = f64::NEG_INFINITY;
            let mut pruned = false;
            let trained = train_booster(
                prepared,
                &split.train,
                &split.valid,
                &proposal.params,
                self.num_iterations,
                self.early_stopping,
                self.seed,
                self.threads,
                |round, ap| {
                    if ap > best {
                        best = ap;
                    }
                    if !self.no_prune && pruner.should_prune(round, best) {
                        pruned = true;
                        return false;
                    }
                    true
                },
            )?;
            let value = trained.valid_ap[..trained.best_iteration.min(trained.valid_ap.len())]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            if !pruned {
                pruner.finished(&trained.valid_ap);
            }
            sampler.tell(&proposal, value);
            let run_id = match (tracking, parent) {
                (Some((rt, client, exp)), Some(p)) => Some(rt.block_on(log_trial(
                    client,
                    exp,
                    &p.info.run_id,
                    number,
                    &proposal.params,
                    &trained.valid_ap,
                    value,
                    trained.best_iteration,
                    pruned,
                ))?),
                _ => None,
            };
            trials.push(TrialResult {
                number,
                params: proposal.params,
                value,
                best_iteration: trained.best_iteration,
                rounds: trained.valid_ap.len(),
                pruned,
                model_text: trained.model_text,
                run_id,
            });
            let best_so_far = trials
                .iter()
                .filter(|t| !t.pruned)
                .map(|t| t.value)
                .fold(f64::NEG_INFINITY, f64::max);
            bar.set_position(number as u64 + 1);
            bar.set_message(format!("trials, best valid PR-AUC {best_so_far:.4}"));
        }
        // The best finished trial; pruned ones only if every trial was pruned (not possible
        // with min_trials >= 1, but cheap to guard).
        let pick = |allow_pruned: bool| {
            trials
                .iter()
                .enumerate()
                .filter(|(_, t)| allow_pruned || !t.pruned)
                .max_by(|a, b| a.1.value.total_cmp(&b.1.value).then(b.0.cmp(&a.0)))
                .map(|(i, _)| i)
        };
        let best = pick(false)
            .or_else(|| pick(true))
            .ok_or_else(|| FraudJobError::Invalid("--tune needs at least one trial".into()))?;
        Ok(Outcome { trials, best })
    }
}

#[allow(clippy::too_many_arguments)]
async fn log_trial(
    client: &MlflowClient,
    experiment: &str,
    parent: &str,
    number: usize,
    params: &Params,
    valid_ap: &[f64],
    value: f64,
    best_iteration: usize,
    pruned: bool,
) -> Result<String, FraudJobError> {
    let state = if pruned { "PRUNED" } else { "COMPLETE" };
    let run = client
        .create_run(
            experiment,
            &format!("trial-{number}"),
            &[
                KeyValue::new("infermesh.kind", "fraud-trial"),
                KeyValue::new("trial_number", number.to_string()),
                KeyValue::new("trial_state", state),
            ],
            Some(parent),
        )
        .await?;
    let id = run.info.run_id;
    let mut ps = params.as_params();
    ps.push(KeyValue::new("best_iteration", best_iteration.to_string()));
    let mut ms: Vec<Metric> = valid_ap
        .iter()
        .enumerate()
        .map(|(i, ap)| Metric::now("valid_pr_auc_by_round", *ap, i as i64 + 1))
        .collect();
    ms.push(Metric::now("valid_pr_auc", value, 0));
    client.log_batch(&id, &ms, &ps, &[]).await?;
    let status = if pruned {
        RunStatus::Killed
    } else {
        RunStatus::Finished
    };
    client.update_run(&id, status).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_stay_in_the_space_and_are_seeded() {
        let mut a = Sampler::new(7, 3);
        let mut b = Sampler::new(7, 3);
        for i in 0..12 {
            let (pa, pb) = (a.ask(), b.ask());
            assert_eq!(pa.params, pb.params, "trial {i}");
            let p = pa.params;
            assert!((0.01..=0.3).contains(&p.learning_rate));
            assert!((8..=256).contains(&p.num_leaves));
            assert!((3..=12).contains(&p.max_depth));
            assert!((5..=200).contains(&p.min_data_in_leaf));
            assert!((0.4..=1.0).contains(&p.feature_fraction));
            assert!((0.4..=1.0).contains(&p.bagging_fraction));
            a.tell(&pa, -p.learning_rate);
            b.tell(&pb, -p.learning_rate);
        }
    }

    #[test]
    fn tpe_moves_toward_better_regions() {
        // Objective: a small learning rate is better. After the random start, TPE should
        // propose smaller rates than uniform sampling does on average.
        let mut s = Sampler::new(1, 10);
        let mut late = Vec::new();
        for i in 0..60 {
            let p = s.ask();
            if i >= 30 {
                late.push(p.params.learning_rate.ln());
            }
            s.tell(&p, -p.params.learning_rate);
        }
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        // The uniform mean on the log scale is the midpoint of ln 0.01 and ln 0.3.
        let uniform = (0.01f64.ln() + 0.3f64.ln()) / 2.0;
        assert!(
            mean < uniform - 0.5,
            "mean ln(lr) {mean} vs uniform {uniform}"
        );
    }

    #[test]
    fn median_pruner_stops_trials_below_the_median() {
        let mut p = MedianPruner::new(2, 2);
        assert!(!p.should_prune(5, 0.0), "no finished trials yet");
        p.finished(&[0.5, 0.6, 0.7, 0.8]);
        assert!(!p.should_prune(5, 0.0), "one finished trial is not enough");
        p.finished(&[0.4, 0.5, 0.9]);
        // Round 2 is warm-up.
        assert!(!p.should_prune(2, 0.1));
        // Round 3: bests 0.7 and 0.9, median 0.8.
        assert!(p.should_prune(3, 0.79));
        assert!(!p.should_prune(3, 0.8));
        // Round 4: the second trial stopped at 3 and counts with 0.9; median 0.85.
        assert!(p.should_prune(4, 0.84));
        // Running bests: a later dip does not lower a curve.
        p.finished(&[0.9, 0.1, 0.1]);
        assert!(p.should_prune(3, 0.85));
    }
}
