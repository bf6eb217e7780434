//! `infermesh train fraud`: a LightGBM fraud classifier from a table.
//!
//! Polars loads the table and prepares the features ([`data`]); LightGBM trains with early
//! stopping on the validation split's average precision ([`lgbm`]); the decision threshold is
//! chosen on validation (max F1, or a target precision); the reported metrics come from the
//! test split, scored by the project's own tree engine on the written `model.txt`, so they are
//! the served model's. The output is a model version directory:
//!
//! ```text
//! <out>/model.txt     LightGBM text model (feature names inside)
//! <out>/card.json     model card: data, split, parameters, threshold, metrics
//! <out>/config.toml   the model config that serves it (platform lightgbm, features, threshold)
//! <out>/drift_reference.parquet  the fitted rows' drift profile (`infermesh drift --reference`)
//! ```
//!
//! With `--tracking-uri` the run goes to MLflow (parameters, per-round validation metrics, the
//! directory as the `model` artifact) and `--register NAME` registers it there; without one,
//! `--register NAME` copies it into the local registry. Either way the alias `challenger`
//! (`--alias`) then points at the new version.
//!
//! With `--tune N` the parameters come from N trials of a TPE search with a median pruner
//! ([`tune`]), each trial a nested MLflow run under the job's run; the best trial's
//! parameters and round count are then trained on train + validation, and that model is
//! the version. Its threshold is chosen on validation with the best trial's model (trained
//! on train only), since the final model has seen the validation rows.

pub mod data;
pub mod lgbm;
pub mod tune;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use infermesh_model_core::metrics::{self, ThresholdRule};
use infermesh_registry::mlflow::{KeyValue, Metric, Run, RunStatus};
use infermesh_registry::{LocalRegistry, MlflowClient};
use serde_json::json;

use crate::table::{TableSpec, parse_separator};

/// Fraud job failures; all of them are raised before anything is written, except a registry
/// failure after training (the version directory is then complete on disk).
#[derive(Debug, thiserror::Error)]
pub enum FraudJobError {
    /// The data cannot be trained on.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// The drift reference could not be written.
    #[error(transparent)]
    Drift(#[from] crate::drift::DriftJobError),
    /// LightGBM refused.
    #[error(transparent)]
    Lgbm(#[from] lgbm::LgbmError),
    /// A metric could not be computed.
    #[error(transparent)]
    Metric(#[from] metrics::MetricError),
    /// The written model could not be read back by the tree engine.
    #[error("the trained model does not load in the tree engine: {0}")]
    Engine(String),
    /// MLflow.
    #[error(transparent)]
    Mlflow(#[from] infermesh_registry::MlflowError),
    /// The local registry.
    #[error(transparent)]
    Local(#[from] infermesh_registry::LocalRegistryError),
    /// A bad flag.
    #[error("{0}")]
    Invalid(String),
    /// Writing the output.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FraudJobError + '_ {
    move |source| FraudJobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `--threshold-by` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThresholdBy {
    /// The threshold with the highest F1 on validation.
    F1,
    /// The lowest threshold whose validation precision reaches --target-precision.
    Precision,
}

/// `infermesh train fraud`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainFraudArgs {
    /// Training table: CSV, TSV or Parquet, one row per transaction.
    #[arg(long)]
    pub data: PathBuf,
    /// Label column: 1 (or true) for fraud, 0 (or false) otherwise.
    #[arg(long)]
    pub label: String,
    /// Columns to leave out (ids, timestamps...), comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// Columns to encode as categories (codes over their sorted levels), comma-separated or
    /// repeated.
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Remove exact duplicate rows before splitting.
    #[arg(long)]
    pub dedup: bool,
    /// Take the split from this column (cells train, valid, test) instead of a stratified
    /// random split; the column is not a feature.
    #[arg(long)]
    pub split_column: Option<String>,
    /// Field separator of a text table: one character or `tab`. Default: tab for .tsv, else
    /// comma.
    #[arg(long, value_parser = parse_separator)]
    pub separator: Option<u8>,
    /// The model version directory to write (model.txt, card.json, config.toml).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the split and of LightGBM.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of each class held out for validation (early stopping, threshold).
    #[arg(long, default_value_t = 0.15)]
    pub valid_fraction: f64,
    /// Share of each class held out for the reported test metrics.
    #[arg(long, default_value_t = 0.15)]
    pub test_fraction: f64,
    /// Most boosting rounds.
    #[arg(long, default_value_t = 1000)]
    pub num_iterations: usize,
    /// Stop after this many rounds without a better validation average precision, and keep
    /// the best round (0: never stop; every round is kept).
    #[arg(long, default_value_t = 50)]
    pub early_stopping: usize,
    /// Search the LightGBM parameters with this many TPE trials (0: train once with the
    /// flags' parameters). Searched: learning rate, leaves, depth, min data in leaf,
    /// feature and bagging fractions.
    #[arg(long, default_value_t = 0)]
    pub tune: usize,
    /// Trials drawn at random before TPE takes over (Optuna's default).
    #[arg(long, default_value_t = 10)]
    pub tune_startup: usize,
    /// Rounds a trial runs before the median pruner may stop it.
    #[arg(long, default_value_t = 20)]
    pub prune_warmup: usize,
    /// Trials that must finish before the median pruner stops any.
    #[arg(long, default_value_t = 5)]
    pub prune_min_trials: usize,
    /// Never prune a trial.
    #[arg(long)]
    pub no_prune: bool,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub learning_rate: f64,
    /// Leaves per tree.
    #[arg(long, default_value_t = 31)]
    pub num_leaves: u32,
    /// Depth limit (-1: none).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub max_depth: i32,
    /// Fewest rows in a leaf.
    #[arg(long, default_value_t = 20)]
    pub min_data_in_leaf: u32,
    /// Share of features each tree sees.
    #[arg(long, default_value_t = 1.0)]
    pub feature_fraction: f64,
    /// Share of rows each bagging round sees (with --bagging-freq > 0).
    #[arg(long, default_value_t = 1.0)]
    pub bagging_fraction: f64,
    /// Re-bag every this many rounds (0: no bagging).
    #[arg(long, default_value_t = 0)]
    pub bagging_freq: u32,
    /// LightGBM threads (0: LightGBM's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// How the decision threshold is chosen on validation.
    #[arg(long, value_enum, default_value = "f1")]
    pub threshold_by: ThresholdBy,
    /// Validation precision to reach with --threshold-by precision.
    #[arg(long, default_value_t = 0.9)]
    pub target_precision: f64,
    /// MLflow tracking URI; the run, its metrics and the model go there.
    #[arg(long, env = "INFERMESH_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// MLflow experiment (created when missing).
    #[arg(long, default_value = "fraud")]
    pub experiment: String,
    /// Register the version under this model name (in MLflow with --tracking-uri, else in the
    /// local registry --registry) and point --alias at it.
    #[arg(long)]
    pub register: Option<String>,
    /// Local registry directory (without --tracking-uri).
    #[arg(long, env = "INFERMESH_REGISTRY", default_value = "run/registry")]
    pub registry: PathBuf,
    /// Alias set on a registered version.
    #[arg(long, default_value = "challenger")]
    pub alias: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// LightGBM hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Learning rate.
    pub learning_rate: f64,
    /// Leaves.
    pub num_leaves: u32,
    /// Depth (-1 none).
    pub max_depth: i32,
    /// Min rows per leaf.
    pub min_data_in_leaf: u32,
    /// Feature fraction.
    pub feature_fraction: f64,
    /// Bagging fraction.
    pub bagging_fraction: f64,
    /// Bagging frequency.
    pub bagging_freq: u32,
}

impl Params {
    fn check(&self) -> Result<(), FraudJobError> {
        let frac = |x: f64| x > 0.0 && x <= 1.0;
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite())
            || self.num_leaves < 2
            || self.min_data_in_leaf == 0
            || !frac(self.feature_fraction)
            || !frac(self.bagging_fraction)
            || self.max_depth == 0
            || self.max_depth < -1
        {
            return Err(FraudJobError::Invalid(format!(
                "bad LightGBM parameters: {self:?} (learning rate > 0, leaves >= 2, \
                 min data in leaf >= 1, fractions in (0, 1], depth -1 or >= 1)"
            )));
        }
        Ok(())
    }

    /// LightGBM's parameter string.
    fn lightgbm(&self, seed: u64, threads: usize, categorical: &[usize]) -> String {
        let mut s = format!(
            "objective=binary metric=average_precision,auc verbosity=-1 seed={} \
             deterministic=true learning_rate={} num_leaves={} max_depth={} \
             min_data_in_leaf={} feature_fraction={} bagging_fraction={} bagging_freq={}",
            seed % (i32::MAX as u64),
            self.learning_rate,
            self.num_leaves,
            self.max_depth,
            self.min_data_in_leaf,
            self.feature_fraction,
            self.bagging_fraction,
            self.bagging_freq
        );
        if threads > 0 {
            s.push_str(&format!(" num_threads={threads}"));
        }
        if !categorical.is_empty() {
            let c: Vec<String> = categorical.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" categorical_feature={}", c.join(",")));
        }
        s
    }

    /// As MLflow parameters.
    pub fn as_params(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("learning_rate", self.learning_rate.to_string()),
            KeyValue::new("num_leaves", self.num_leaves.to_string()),
            KeyValue::new("max_depth", self.max_depth.to_string()),
            KeyValue::new("min_data_in_leaf", self.min_data_in_leaf.to_string()),
            KeyValue::new("feature_fraction", self.feature_fraction.to_string()),
            KeyValue::new("bagging_fraction", self.bagging_fraction.to_string()),
            KeyValue::new("bagging_freq", self.bagging_freq.to_string()),
        ]
    }
}

/// A trained booster: its text and what training saw.
#[derive(Debug, Clone)]
pub struct Trained {
    /// LightGBM text model, cut at the best round.
    pub model_text: String,
    /// Rounds kept.
    pub best_iteration: usize,
    /// Validation average precision per round.
    pub valid_ap: Vec<f64>,
    /// Validation ROC AUC per round.
    pub valid_auc: Vec<f64>,
}

/// Trains on `train` rows, early-stopping on `valid` rows; `on_round(round, valid_ap)` runs
/// after each round and may stop training by returning `false`.
#[allow(clippy::too_many_arguments)]
pub fn train_booster(
    prepared: &data::Prepared,
    train: &[usize],
    valid: &[usize],
    params: &Params,
    rounds: usize,
    early_stopping: usize,
    seed: u64,
    threads: usize,
    mut on_round: impl FnMut(usize, f64) -> bool,
) -> Result<Trained, FraudJobError> {
    params.check()?;
    if rounds == 0 {
        return Err(FraudJobError::Invalid(
            "--num-iterations must be at least 1".into(),
        ));
    }
    let cols = prepared.cols();
    let cat = prepared.categorical_indices();
    let ds_params = {
        let mut s = "max_bin=255 verbosity=-1".to_string();
        if !cat.is_empty() {
            let c: Vec<String> = cat.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" categorical_feature={}", c.join(",")));
        }
        s
    };
    let as_f32 = |l: &[bool]| {
        l.iter()
            .map(|&b| f32::from(u8::from(b)))
            .collect::<Vec<f32>>()
    };
    let (tx, ty) = prepared.take(train);
    let (vx, vy) = prepared.take(valid);
    let dtrain = lgbm::Dataset::new(&tx, cols, &as_f32(&ty), &prepared.names, &ds_params, None)?;
    let dvalid = lgbm::Dataset::new(
        &vx,
        cols,
        &as_f32(&vy),
        &prepared.names,
        &ds_params,
        Some(&dtrain),
    )?;
    let mut booster =
        lgbm::Booster::new(&dtrain, &[&dvalid], &params.lightgbm(seed, threads, &cat))?;
    let (mut valid_ap, mut valid_auc) = (Vec::new(), Vec::new());
    let mut best = (f64::NEG_INFINITY, 0usize);
    for round in 1..=rounds {
        if booster.update()? {
            break;
        }
        let e = booster.eval(1)?;
        let (ap, auc) = (
            e.first().copied().unwrap_or(f64::NAN),
            e.get(1).copied().unwrap_or(f64::NAN),
        );
        valid_ap.push(ap);
        valid_auc.push(auc);
        if ap > best.0 {
            best = (ap, round);
        }
        if !on_round(round, ap) {
            break;
        }
        if early_stopping > 0 && round - best.1 >= early_stopping {
            break;
        }
    }
    // Without early stopping every round is kept.
    let best_iteration = if early_stopping == 0 {
        valid_ap.len().max(1)
    } else {
        best.1.max(1)
    };
    while booster.iterations()? > best_iteration {
        booster.rollback()?;
    }
    Ok(Trained {
        model_text: booster.model_text()?,
        best_iteration,
        valid_ap,
        valid_auc,
    })
}

/// Probabilities of `rows` from a LightGBM text model, by the project's tree engine (what the
/// server runs).
pub fn engine_scores(
    model_text: &str,
    prepared: &data::Prepared,
    rows: &[usize],
) -> Result<Vec<f64>, FraudJobError> {
    use infermesh_model_core::TabularModel;
    let model = infermesh_trees::TreeEnsemble::from_lightgbm_text(model_text)
        .map_err(|e| FraudJobError::Engine(e.to_string()))?;
    if model.num_outputs() != 1 {
        return Err(FraudJobError::Engine(format!(
            "{} outputs, expected 1",
            model.num_outputs()
        )));
    }
    let (x, _) = prepared.take(rows);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let mut out = vec![0.0f32; rows.len()];
    model
        .predict(&x32, &mut out)
        .map_err(|e| FraudJobError::Engine(e.to_string()))?;
    Ok(out.into_iter().map(f64::from).collect())
}

/// What `train fraud` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FraudReport {
    /// Rows after preparation.
    pub rows: usize,
    /// Duplicate rows removed.
    pub duplicates_removed: usize,
    /// Rows per split: train, validation, test.
    pub split: [usize; 3],
    /// Rounds kept.
    pub best_iteration: usize,
    /// Decision threshold (probability above which a transaction is flagged).
    pub threshold: f64,
    /// Test metrics.
    pub test: serde_json::Value,
    /// Validation metrics.
    pub valid: serde_json::Value,
    /// Seconds spent in LightGBM.
    pub fit_seconds: f64,
    /// Where the version was written.
    pub out: String,
    /// MLflow run id, when tracked.
    pub run_id: Option<String>,
    /// Registered `(name, version)`.
    pub registered: Option<(String, u64)>,
}

fn threshold_metrics(
    scores: &[f64],
    labels: &[bool],
    threshold: f64,
) -> Result<serde_json::Value, FraudJobError> {
    let at = metrics::at_threshold(scores, labels, threshold)?;
    Ok(json!({
        "pr_auc": metrics::average_precision(scores, labels)?,
        "roc_auc": metrics::roc_auc(scores, labels)?,
        "precision": at.precision,
        "recall": at.recall,
        "f1": at.f1,
        "tp": at.tp, "fp": at.fp, "fn": at.fn_,
        "rows": labels.len(),
        "positives": labels.iter().filter(|&&l| l).count(),
    }))
}

impl TrainFraudArgs {
    fn params(&self) -> Params {
        Params {
            learning_rate: self.learning_rate,
            num_leaves: self.num_leaves,
            max_depth: self.max_depth,
            min_data_in_leaf: self.min_data_in_leaf,
            feature_fraction: self.feature_fraction,
            bagging_fraction: self.bagging_fraction,
            bagging_freq: self.bagging_freq,
        }
    }

    /// Trains, writes the version, tracks and registers it; returns the report.
    pub fn train(&self) -> Result<FraudReport, FraudJobError> {
        let params = self.params();
        params.check()?;
        if !(0.0..=1.0).contains(&self.target_precision) {
            return Err(FraudJobError::Invalid(
                "--target-precision must be within [0, 1]".into(),
            ));
        }
        if let Some(name) = &self.register
            && !infermesh_registry::uri::valid_name(name)
        {
            return Err(FraudJobError::Invalid(format!("bad model name '{name}'")));
        }
        // A tracking server that is down fails here, before training.
        let tracking = match &self.tracking_uri {
            Some(uri) => Some(crate::tracking::connect(uri, &self.experiment)?),
            None => None,
        };
        let table = TableSpec {
            path: self.data.clone(),
            separator: self.separator,
            has_header: true,
        }
        .read()
        .map_err(data::DataError::from)?;
        // Empty entries (`--drop ""` from a scheduler with nothing to drop) are no columns.
        let listed = |v: &[String]| -> Vec<String> {
            v.iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string())
                .collect()
        };
        let mut drop = listed(&self.drop);
        drop.extend(self.split_column.iter().cloned());
        let categorical = listed(&self.categorical);
        let prepared = data::prepare(&table, &self.label, &drop, &categorical, self.dedup)?;
        let split = match &self.split_column {
            Some(col) => data::split_from_column(
                &table,
                col,
                &prepared.labels,
                prepared.kept_rows.as_deref(),
            )?,
            None => data::stratified_split(
                &prepared.labels,
                self.valid_fraction,
                self.test_fraction,
                self.seed,
            )?,
        };

        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(self.num_iterations as u64);
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix("train fraud");
            b
        };
        let started = Instant::now();
        let mut parent: Option<Run> = None;
        let (params, trained, trial_model, tuning) = if self.tune > 0 {
            if let Some((rt, client, exp)) = &tracking {
                parent = Some(rt.block_on(client.create_run(
                    exp,
                    "tune-fraud",
                    &[KeyValue::new("infermesh.kind", "fraud")],
                    None,
                ))?);
            }
            let searched = self.search(&prepared, &split, tracking.as_ref(), parent.as_ref(), &bar);
            let outcome = match searched {
                Ok(o) => o,
                Err(e) => {
                    if let (Some((rt, client, _)), Some(run)) = (&tracking, &parent) {
                        let _ = rt.block_on(client.update_run(&run.info.run_id, RunStatus::Failed));
                    }
                    return Err(e);
                }
            };
            let best = outcome.trials[outcome.best].clone();
            // The best trial's parameters and rounds, on train + validation.
            let mut rows = split.train.clone();
            rows.extend_from_slice(&split.valid);
            bar.set_length(best.best_iteration as u64);
            bar.set_position(0);
            bar.set_prefix("final fit");
            bar.set_message("rounds on train + validation");
            let trained = train_booster(
                &prepared,
                &rows,
                &split.valid,
                &best.params,
                best.best_iteration,
                0,
                self.seed,
                self.threads,
                |round, _| {
                    bar.set_position(round as u64);
                    true
                },
            )?;
            (
                best.params,
                trained,
                Some(best.model_text.clone()),
                Some(outcome),
            )
        } else {
            let trained = train_booster(
                &prepared,
                &split.train,
                &split.valid,
                &params,
                self.num_iterations,
                self.early_stopping,
                self.seed,
                self.threads,
                |round, ap| {
                    bar.set_position(round as u64);
                    bar.set_message(format!("rounds, valid PR-AUC {ap:.4}"));
                    true
                },
            )?;
            (params, trained, None, None)
        };
        let fit_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();

        let (_, valid_labels) = prepared.take(&split.valid);
        let (_, test_labels) = prepared.take(&split.test);
        // The threshold comes from a model that has not seen the validation rows.
        let valid_scores = engine_scores(
            trial_model.as_deref().unwrap_or(&trained.model_text),
            &prepared,
            &split.valid,
        )?;
        let test_scores = engine_scores(&trained.model_text, &prepared, &split.test)?;
        let rule = match self.threshold_by {
            ThresholdBy::F1 => ThresholdRule::MaxF1,
            ThresholdBy::Precision => ThresholdRule::Precision(self.target_precision),
        };
        let chosen = metrics::choose_threshold(&valid_scores, &valid_labels, rule)?;
        let threshold = chosen.threshold;
        let valid = threshold_metrics(&valid_scores, &valid_labels, threshold)?;
        let test = threshold_metrics(&test_scores, &test_labels, threshold)?;

        // The server flags p > threshold; the chosen score itself must be flagged.
        let served_threshold = (threshold as f32).next_down().max(0.0);
        let card = json!({
            "kind": "fraud",
            "framework": "lightgbm",
            "data": {
                "path": self.data.display().to_string(),
                "rows": prepared.rows(),
                "duplicates_removed": prepared.duplicates_removed,
                "label": self.label,
                "dropped": self.drop,
            },
            "features": prepared.names,
            "categorical": prepared.categorical,
            "split": {"seed": self.seed, "train": split.train.len(), "valid": split.valid.len(), "test": split.test.len()},
            "params": params.as_params().into_iter().map(|p| (p.key, p.value)).collect::<std::collections::BTreeMap<_, _>>(),
            "best_iteration": trained.best_iteration,
            "threshold": {"value": threshold, "served": served_threshold, "rule": format!("{:?}", self.threshold_by).to_lowercase(), "target_precision": self.target_precision},
            "metrics": {
                "pr_auc": test["pr_auc"], "roc_auc": test["roc_auc"],
                "precision": test["precision"], "recall": test["recall"], "f1": test["f1"],
            },
            "test": test,
            "valid": valid,
            "fit_seconds": fit_seconds,
            "tuning": tuning.as_ref().map(tune::Outcome::card),
        });
        self.write_version(
            &trained.model_text,
            &card,
            &prepared.names,
            served_threshold,
        )?;
        // The drift reference: the fitted rows' profile (training rows; with --tune the final
        // fit also saw the validation rows), as table rows.
        let mut fitted = split.train.clone();
        if tuning.is_some() {
            fitted.extend_from_slice(&split.valid);
        }
        let table_rows: Vec<usize> = fitted
            .iter()
            .map(|&i| prepared.kept_rows.as_ref().map_or(i, |k| k[i]))
            .collect();
        crate::drift::write_reference(&table, &prepared.names, Some(&table_rows), &self.out)?;

        let mut report = FraudReport {
            rows: prepared.rows(),
            duplicates_removed: prepared.duplicates_removed,
            split: [split.train.len(), split.valid.len(), split.test.len()],
            best_iteration: trained.best_iteration,
            threshold,
            test: test.clone(),
            valid: valid.clone(),
            fit_seconds,
            out: self.out.display().to_string(),
            run_id: None,
            registered: None,
        };
        match tracking {
            Some((rt, client, exp)) => {
                let (run_id, _artifact_uri, version) =
                    rt.block_on(self.track(&client, &exp, &params, &trained, &card, parent))?;
                report.run_id = Some(run_id);
                report.registered = version;
            }
            None => {
                if let Some(name) = &self.register {
                    let v = LocalRegistry::new(&self.registry).register_as(
                        name,
                        &self.out,
                        &self.alias,
                    )?;
                    report.registered = Some((name.clone(), v));
                }
            }
        }
        Ok(report)
    }

    fn write_version(
        &self,
        model_text: &str,
        card: &serde_json::Value,
        names: &[String],
        threshold: f32,
    ) -> Result<(), FraudJobError> {
        if self.out.exists()
            && std::fs::read_dir(&self.out)
                .map_err(io(&self.out))?
                .next()
                .is_some()
        {
            return Err(FraudJobError::Invalid(format!(
                "{} exists and is not empty",
                self.out.display()
            )));
        }
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        let model = self.out.join("model.txt");
        std::fs::write(&model, model_text).map_err(io(&model))?;
        let card_path = self.out.join("card.json");
        let text =
            serde_json::to_vec_pretty(card).map_err(|e| FraudJobError::Invalid(e.to_string()))?;
        std::fs::write(&card_path, text).map_err(io(&card_path))?;
        let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        let config = format!(
            "# Written by `infermesh train fraud`: serves this version's model.txt.\n\
             platform = \"lightgbm\"\n\
             feature_names = [{}]\n\
             threshold = {threshold}\n",
            quoted.join(", ")
        );
        let config_path = self.out.join("config.toml");
        std::fs::write(&config_path, config).map_err(io(&config_path))?;
        Ok(())
    }

    async fn track(
        &self,
        client: &MlflowClient,
        experiment: &str,
        params: &Params,
        trained: &Trained,
        card: &serde_json::Value,
        existing: Option<Run>,
    ) -> Result<(String, String, Option<(String, u64)>), FraudJobError> {
        let run = match existing {
            Some(r) => r,
            None => {
                client
                    .create_run(
                        experiment,
                        "train-fraud",
                        &[KeyValue::new("infermesh.kind", "fraud")],
                        None,
                    )
                    .await?
            }
        };
        let mut ps = params.as_params();
        ps.push(KeyValue::new("seed", self.seed.to_string()));
        ps.push(KeyValue::new(
            "best_iteration",
            trained.best_iteration.to_string(),
        ));
        ps.push(KeyValue::new(
            "threshold_by",
            format!("{:?}", self.threshold_by).to_lowercase(),
        ));
        let mut ms = Vec::new();
        for (i, (ap, auc)) in trained.valid_ap.iter().zip(&trained.valid_auc).enumerate() {
            ms.push(Metric::now("valid_pr_auc_by_round", *ap, i as i64 + 1));
            ms.push(Metric::now("valid_roc_auc_by_round", *auc, i as i64 + 1));
        }
        if let Some(t) = card["tuning"].as_object() {
            for k in ["trials", "pruned", "best_trial"] {
                if let Some(v) = t.get(k) {
                    ps.push(KeyValue::new(format!("tune_{k}"), v.to_string()));
                }
            }
        }
        ms.extend(crate::tracking::card_metrics(card));
        if let Some(t) = card["threshold"]["value"].as_f64() {
            ms.push(Metric::now("threshold", t, 0));
        }
        let tracked = crate::tracking::log_version(
            client,
            &run,
            &ps,
            &ms,
            &self.out,
            self.register.as_deref(),
            &self.alias,
        )
        .await?;
        Ok((tracked.run_id, tracked.artifact_uri, tracked.registered))
    }

    /// Runs the job and returns its report for stdout (JSON with `--json`).
    pub fn run(&self) -> Result<String, FraudJobError> {
        let r = self.train()?;
        Ok(if self.json {
            format!("{}\n", serde_json::to_string_pretty(&r).unwrap_or_default())
        } else {
            format!(
                "fraud model trained: {} rows ({} duplicates removed), {} rounds, threshold {:.4}; \
                 test PR-AUC {:.4}, ROC-AUC {:.4}, precision {:.4}, recall {:.4}; {:.2} s; written to {}{}{}\n",
                r.rows,
                r.duplicates_removed,
                r.best_iteration,
                r.threshold,
                r.test["pr_auc"].as_f64().unwrap_or(f64::NAN),
                r.test["roc_auc"].as_f64().unwrap_or(f64::NAN),
                r.test["precision"].as_f64().unwrap_or(f64::NAN),
                r.test["recall"].as_f64().unwrap_or(f64::NAN),
                r.fit_seconds,
                r.out,
                r.run_id
                    .as_ref()
                    .map_or(String::new(), |id| format!("; MLflow run {id}")),
                r.registered
                    .as_ref()
                    .map_or(String::new(), |(n, v)| format!(
                        "; registered {n} version {v} as @{}",
                        self.alias
                    )),
            )
        })
    }
}
