//! `infermesh train anomaly`: an Isolation Forest (scikit-learn's algorithm,
//! `infermesh_anomaly::train`) on the numeric columns of a table (CSV, TSV or Parquet, read
//! with Polars), written as a model version the server loads (platform `isolation-forest`):
//!
//! ```text
//! <out>/isolation_forest.json   the forest (the artifact infermesh-anomaly documents)
//! <out>/config.toml             platform = "isolation-forest"
//! <out>/card.json               data, parameters, score quantiles, test ROC-AUC with --label
//! <out>/drift_reference.parquet the fitted rows' drift profile (`infermesh drift --reference`)
//! ```
//!
//! With `--label` the rows are split as `train fraud` splits them (stratified by the label,
//! the same seed and fractions give the same rows), the forest is fitted on the training and
//! validation rows without their labels, and the card reports the test rows' ROC-AUC and
//! average precision of the anomaly score (lower `score_samples` = more anomalous). Without
//! it every row is fitted.
//!
//! The drift profile holds the features and the model's own outputs on the fitted rows
//! (`score`, `is_anomaly`), so the server's live drift watches the scores too (prediction
//! drift). With `--tracking-uri` the run goes to MLflow (parameters, the card's metrics, the
//! directory as the `model` artifact) and `--register NAME` registers it there, as `train
//! fraud` does; without one, `--register NAME` copies it into the local registry.

use std::path::PathBuf;
use std::time::Instant;

use infermesh_anomaly::train::{Contamination, FitParams, MaxSamples, fit};
use infermesh_model_core::metrics;
use infermesh_registry::LocalRegistry;
use serde_json::json;

use crate::fraud::data::{split_from_column, stratified_split};
use crate::table::{TableError, TableSpec, parse_separator};

/// Errors of `infermesh train anomaly`.
#[derive(Debug, thiserror::Error)]
pub enum AnomalyJobError {
    /// The table could not be read.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The forest could not be fitted.
    #[error(transparent)]
    Fit(#[from] infermesh_anomaly::AnomalyError),
    /// A metric could not be computed.
    #[error(transparent)]
    Metric(#[from] metrics::MetricError),
    /// Registering the version failed.
    #[error(transparent)]
    Registry(#[from] infermesh_registry::LocalRegistryError),
    /// MLflow refused or is unreachable.
    #[error(transparent)]
    Mlflow(#[from] infermesh_registry::MlflowError),
    /// A flag or the data is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The drift profile could not be written.
    #[error(transparent)]
    Drift(#[from] crate::drift::DriftJobError),
    /// Writing the version failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> AnomalyJobError + '_ {
    move |source| AnomalyJobError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Train an Isolation Forest (scikit-learn's algorithm and defaults: 100 trees of
/// min(256, n) rows, contamination "auto") on the numeric columns of a table and write a model
/// version the server loads (platform `isolation-forest`); with --label, report the test
/// split's ROC-AUC.
#[derive(Debug, clap::Args)]
pub struct TrainAnomalyArgs {
    /// Training table: CSV, TSV or Parquet.
    #[arg(long)]
    pub data: PathBuf,
    /// The model version directory to write (isolation_forest.json, config.toml, card.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Columns to leave out (ids, timestamps...), comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// A label column (1/true = anomaly) for evaluation only: never a feature, never seen by
    /// the fit; the rows are split as `train fraud` splits them and the test rows scored.
    #[arg(long)]
    pub label: Option<String>,
    /// Expected share of anomalies in (0, 0.5], which sets the threshold at that percentile
    /// of the training scores; `auto`: offset -0.5.
    #[arg(long, default_value = "auto")]
    pub contamination: String,
    /// Trees.
    #[arg(long, default_value_t = 100)]
    pub trees: usize,
    /// Rows per tree: `auto` (min(256, n)), a count, or a share in (0, 1].
    #[arg(long, default_value = "auto")]
    pub max_samples: String,
    /// Draw each tree's rows with replacement.
    #[arg(long)]
    pub bootstrap: bool,
    /// Seed of the split and of the forest.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// With --label: share of each class held out as validation (fitted on; kept so the
    /// split matches `train fraud`'s).
    #[arg(long, default_value_t = 0.15)]
    pub valid_fraction: f64,
    /// With --label: share of each class held out for the reported test metrics.
    #[arg(long, default_value_t = 0.15)]
    pub test_fraction: f64,
    /// With --label: take the split from this column (cells train, valid, test), as
    /// `train fraud --split-column` does; the column is not a feature.
    #[arg(long)]
    pub split_column: Option<String>,
    /// Field separator of a text table: one character or `tab`.
    #[arg(long, value_parser = parse_separator)]
    pub separator: Option<u8>,
    /// MLflow tracking URI; the run, its parameters and metrics and the model go there.
    #[arg(long, env = "INFERMESH_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// MLflow experiment (created when missing).
    #[arg(long, default_value = "anomaly")]
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
    /// Print the report (the card) as JSON.
    #[arg(long)]
    pub json: bool,
}

impl TrainAnomalyArgs {
    fn params(&self) -> Result<FitParams, AnomalyJobError> {
        let bad = |m: String| AnomalyJobError::Invalid(m);
        let contamination = match self.contamination.as_str() {
            "auto" => Contamination::Auto,
            s => Contamination::Share(
                s.parse()
                    .map_err(|_| bad(format!("--contamination '{s}' is not auto or a number")))?,
            ),
        };
        let max_samples = match self.max_samples.as_str() {
            "auto" => MaxSamples::Auto,
            s if s.contains('.') => MaxSamples::Fraction(
                s.parse()
                    .map_err(|_| bad(format!("--max-samples '{s}' is not a share")))?,
            ),
            s => MaxSamples::Count(
                s.parse()
                    .map_err(|_| bad(format!("--max-samples '{s}' is not auto or a count")))?,
            ),
        };
        Ok(FitParams {
            n_estimators: self.trees,
            max_samples,
            contamination,
            bootstrap: self.bootstrap,
            seed: self.seed,
        })
    }

    /// Fits, writes the version (and registers it); returns the card.
    pub fn train(&self) -> Result<serde_json::Value, AnomalyJobError> {
        let params = self.params()?;
        if let Some(name) = &self.register
            && !infermesh_registry::uri::valid_name(name)
        {
            return Err(AnomalyJobError::Invalid(format!("bad model name '{name}'")));
        }
        // A tracking server that is down fails here, before training.
        let tracking = self
            .tracking_uri
            .as_deref()
            .map(|uri| crate::tracking::connect(uri, &self.experiment))
            .transpose()?;
        if self.out.exists()
            && std::fs::read_dir(&self.out)
                .map_err(io(&self.out))?
                .next()
                .is_some()
        {
            return Err(AnomalyJobError::Invalid(format!(
                "{} exists and is not empty",
                self.out.display()
            )));
        }
        let mut spec = TableSpec::new(&self.data);
        spec.separator = self.separator;
        let table = spec.read()?;
        let columns = table.columns();
        for c in self
            .drop
            .iter()
            .chain(&self.label)
            .chain(&self.split_column)
        {
            if !columns.contains(c) {
                return Err(AnomalyJobError::Invalid(format!(
                    "{}: no column '{c}' (columns: {})",
                    self.data.display(),
                    columns.join(", ")
                )));
            }
        }
        let names: Vec<String> = columns
            .into_iter()
            .filter(|c| {
                !self.drop.contains(c)
                    && self.label.as_ref() != Some(c)
                    && self.split_column.as_ref() != Some(c)
            })
            .collect();
        if names.is_empty() {
            return Err(AnomalyJobError::Invalid("no feature columns left".into()));
        }
        let n = table.height();
        let mut values = vec![0f32; n * names.len()];
        for (j, name) in names.iter().enumerate() {
            for (i, v) in table.floats(name)?.into_iter().enumerate() {
                let v = v.filter(|v| v.is_finite()).ok_or_else(|| {
                    AnomalyJobError::Invalid(format!(
                        "{}: column '{name}' row {}: missing or not finite (Isolation Forest takes finite numbers only)",
                        self.data.display(),
                        i + 1
                    ))
                })?;
                values[i * names.len() + j] = v as f32;
            }
        }
        let labels = match &self.label {
            Some(l) => Some(
                table
                    .floats(l)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Some(x) if x == 0.0 || x == 1.0 => Ok(x == 1.0),
                        other => Err(AnomalyJobError::Invalid(format!(
                            "label '{l}' row {}: {other:?} is not 0 or 1",
                            i + 1
                        ))),
                    })
                    .collect::<Result<Vec<bool>, _>>()?,
            ),
            None => None,
        };
        let f = names.len();
        let take = |idx: &[usize]| -> Vec<f32> {
            let mut out = Vec::with_capacity(idx.len() * f);
            for &i in idx {
                out.extend_from_slice(&values[i * f..(i + 1) * f]);
            }
            out
        };
        let (fit_rows, fit_index, test) = match &labels {
            Some(l) => {
                let split = match &self.split_column {
                    Some(c) => split_from_column(&table, c, l, None),
                    None => stratified_split(l, self.valid_fraction, self.test_fraction, self.seed),
                }
                .map_err(|e| AnomalyJobError::Invalid(e.to_string()))?;
                let mut rows = split.train.clone();
                rows.extend_from_slice(&split.valid);
                rows.sort_unstable();
                (take(&rows), Some(rows), Some(split.test))
            }
            None => (values.clone(), None, None),
        };
        let started = Instant::now();
        let fitted = fit(&fit_rows, f, &names, &params)?;
        let fit_seconds = started.elapsed().as_secs_f64();
        let score = |rows: &[f32]| -> Result<Vec<f64>, AnomalyJobError> {
            rows.chunks(f)
                .map(|r| {
                    fitted
                        .forest
                        .score_row(r)
                        .map(|s| s.score)
                        .map_err(|e| AnomalyJobError::Invalid(e.to_string()))
                })
                .collect()
        };
        let fit_scores = score(&fit_rows)?;
        let mut train_scores = fit_scores.clone();
        train_scores.sort_by(f64::total_cmp);
        let q = |p: f64| train_scores[((train_scores.len() - 1) as f64 * p).round() as usize];
        let offset = fitted.forest.offset();
        let flagged = train_scores.iter().filter(|&&s| s < offset).count();
        let mut card = json!({
            "kind": "anomaly",
            "framework": "isolation-forest",
            "data": {"path": self.data.display().to_string(), "rows": n, "dropped": self.drop, "label": self.label},
            "features": names,
            "params": {
                "n_estimators": params.n_estimators,
                "max_samples": fitted.artifact["max_samples"],
                "contamination": self.contamination,
                "bootstrap": params.bootstrap,
                "seed": params.seed,
            },
            "offset": fitted.artifact["offset"],
            "fit_rows": fit_rows.len() / f,
            "fit_seconds": fit_seconds,
            "train_scores": {"min": q(0.0), "p01": q(0.01), "p50": q(0.5), "p99": q(0.99), "max": q(1.0), "flagged_share": flagged as f64 / train_scores.len() as f64},
        });
        if let (Some(test), Some(l)) = (&test, &labels) {
            let scores = score(&take(test))?;
            // Anomalies score lower: rank by the negated score.
            let neg: Vec<f64> = scores.iter().map(|s| -s).collect();
            let test_labels: Vec<bool> = test.iter().map(|&i| l[i]).collect();
            card["metrics"] = json!({
                "roc_auc": metrics::roc_auc(&neg, &test_labels)?,
                "pr_auc": metrics::average_precision(&neg, &test_labels)?,
                "test_rows": test.len(),
                "test_positives": test_labels.iter().filter(|&&b| b).count(),
            });
        }
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        let write = |name: &str, bytes: Vec<u8>| -> Result<(), AnomalyJobError> {
            let p = self.out.join(name);
            std::fs::write(&p, bytes).map_err(io(&p))
        };
        write(
            infermesh_anomaly::ARTIFACT_FILE,
            serde_json::to_vec(&fitted.artifact)
                .map_err(|e| AnomalyJobError::Invalid(e.to_string()))?,
        )?;
        write(
            "card.json",
            serde_json::to_vec_pretty(&card)
                .map_err(|e| AnomalyJobError::Invalid(e.to_string()))?,
        )?;
        write(
            "config.toml",
            b"# Written by `infermesh train anomaly`: serves this version's isolation_forest.json.\n\
              platform = \"isolation-forest\"\n"
                .to_vec(),
        )?;
        // The outputs the server answers with, on the fitted rows (in table order, as the
        // profiled rows are).
        let outputs = [
            (
                "score".to_string(),
                infermesh_drift::Values::Float(fit_scores.clone()),
            ),
            (
                "is_anomaly".to_string(),
                infermesh_drift::Values::Bool(
                    fit_scores.iter().map(|&s| Some(s < offset)).collect(),
                ),
            ),
        ];
        crate::drift::write_reference_with(
            &table,
            &names,
            fit_index.as_deref(),
            &outputs,
            &self.out,
        )?;
        match tracking {
            Some((rt, client, exp)) => {
                let tracked = rt.block_on(async {
                    let run = client
                        .create_run(
                            &exp,
                            "train-anomaly",
                            &[infermesh_registry::mlflow::KeyValue::new(
                                "infermesh.kind",
                                "anomaly",
                            )],
                            None,
                        )
                        .await?;
                    let params: Vec<_> = card["params"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| {
                            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                            infermesh_registry::mlflow::KeyValue::new(k.clone(), v)
                        })
                        .collect();
                    let mut metrics = crate::tracking::card_metrics(&card);
                    for (k, v) in card["train_scores"].as_object().into_iter().flatten() {
                        if let Some(x) = v.as_f64() {
                            metrics.push(infermesh_registry::mlflow::Metric::now(
                                format!("train_score_{k}"),
                                x,
                                0,
                            ));
                        }
                    }
                    crate::tracking::log_version(
                        &client,
                        &run,
                        &params,
                        &metrics,
                        &self.out,
                        self.register.as_deref(),
                        &self.alias,
                    )
                    .await
                })?;
                card["run_id"] = json!(tracked.run_id);
                if let Some((name, v)) = tracked.registered {
                    card["registered"] = json!({"name": name, "version": v, "alias": self.alias});
                }
            }
            None => {
                if let Some(name) = &self.register {
                    let v = LocalRegistry::new(&self.registry).register_as(
                        name,
                        &self.out,
                        &self.alias,
                    )?;
                    card["registered"] = json!({"name": name, "version": v, "alias": self.alias});
                }
            }
        }
        Ok(card)
    }

    /// Trains and says what was written.
    pub fn run(&self) -> Result<String, AnomalyJobError> {
        let card = self.train()?;
        if self.json {
            return Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&card).unwrap_or_default()
            ));
        }
        let auc = card["metrics"]["roc_auc"]
            .as_f64()
            .map_or(String::new(), |a| format!("; test ROC-AUC {a:.4}"));
        Ok(format!(
            "isolation forest trained: {} trees on {} rows x {} features in {:.2} s, offset {}{auc}; written to {}\n",
            card["params"]["n_estimators"],
            card["fit_rows"],
            card["features"].as_array().map_or(0, Vec::len),
            card["fit_seconds"].as_f64().unwrap_or(0.0),
            card["offset"],
            self.out.display()
        ))
    }
}
