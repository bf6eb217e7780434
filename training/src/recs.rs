//! `infermesh train recs` and `infermesh eval recs`: the LightFM-style recommender
//! ([`infermesh_recs`]) trained on an interactions table and scored as LightFM scores.
//!
//! The interactions table gives a user column, an item column and optionally a weight
//! column: rows whose weight is at least `--min-weight` are positives; the others only add
//! their user and item to the catalogue (as LightFM's `Dataset` does when it is fitted on
//! every id), or become known negatives with `--keep-negatives` (the logistic loss needs
//! them; WARP and BPR then never draw them as negatives). Item features (`--item-features`)
//! and user features (`--user-features`) are tables keyed by the same id column: every
//! other column becomes a categorical feature `column:value` (a column named `feature`
//! gives its values as they are). Item texts (`--item-text`) feed the content-based part.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use infermesh_recs::{
    Blend, DatasetBuilder, EvalReport, FitOptions, Hyper, Loss, Recommender, RecsArtifact,
    RecsError, Schedule, ServeOptions, UnknownUser,
};
use serde::Serialize;

use crate::table::{Table, TableError, TableSpec, parse_separator};

/// Errors of the recommender jobs.
#[derive(Debug, thiserror::Error)]
pub enum RecsJobError {
    /// A table could not be used.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The model rejected the data or parameters, or could not be saved or loaded.
    #[error(transparent)]
    Model(#[from] RecsError),
    /// Bad flags or data.
    #[error("{0}")]
    Invalid(String),
}

/// How the interaction tables are read (shared by train and eval).
#[derive(Debug, Clone, clap::Args)]
pub struct InteractionColumns {
    /// Column holding the user id.
    #[arg(long, default_value = "user_id")]
    pub user_col: String,
    /// Column holding the item id.
    #[arg(long, default_value = "item_id")]
    pub item_col: String,
    /// Column holding a weight (rating, count...); without it every row is a positive.
    #[arg(long)]
    pub weight_col: Option<String>,
    /// Rows whose weight is below this are not positives (needs --weight-col). Default:
    /// every row with a weight above 0.
    #[arg(long, requires = "weight_col")]
    pub min_weight: Option<f64>,
    /// Field separator of text tables: one character or `tab`. Default: tab for .tsv/.tab
    /// files, comma otherwise (Parquet needs none).
    #[arg(long, value_parser = parse_separator)]
    pub separator: Option<u8>,
    /// Text tables have no header row: columns are then named column_1, column_2, ...
    #[arg(long)]
    pub no_header: bool,
}

impl InteractionColumns {
    fn spec(&self, path: &std::path::Path) -> TableSpec {
        TableSpec {
            path: path.to_path_buf(),
            separator: self.separator,
            has_header: !self.no_header,
        }
    }

    /// Reads `(user, item, weight)` rows; `None` weight when there is no weight column.
    fn rows(&self, path: &std::path::Path) -> Result<Rows, RecsJobError> {
        let t = self.spec(path).read()?;
        let users = t.strings(&self.user_col)?;
        let items = t.strings(&self.item_col)?;
        let weights = match &self.weight_col {
            Some(c) => t.floats(c)?,
            None => vec![None; t.height()],
        };
        let mut rows = Rows::default();
        for ((u, i), w) in users.into_iter().zip(items).zip(weights) {
            match (u, i) {
                (Some(u), Some(i)) => rows.rows.push((u, i, w)),
                _ => rows.skipped += 1,
            }
        }
        Ok(rows)
    }

    /// Whether a row's weight makes it a positive.
    fn positive(&self, w: Option<f64>) -> bool {
        match (self.weight_col.is_some(), w, self.min_weight) {
            (false, _, _) => true,
            (true, None, _) => false,
            (true, Some(w), Some(min)) => w >= min,
            (true, Some(w), None) => w > 0.0,
        }
    }

    /// The positive `(user, item)` pairs of a table.
    fn positive_pairs(
        &self,
        path: &std::path::Path,
    ) -> Result<(Vec<(String, String)>, Rows), RecsJobError> {
        let rows = self.rows(path)?;
        let pairs = rows
            .rows
            .iter()
            .filter(|(_, _, w)| self.positive(*w))
            .map(|(u, i, _)| (u.clone(), i.clone()))
            .collect();
        Ok((pairs, rows))
    }
}

#[derive(Debug, Default)]
struct Rows {
    rows: Vec<(String, String, Option<f64>)>,
    skipped: usize,
}

/// `--loss` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossArg {
    /// Weighted Approximate-Rank Pairwise: optimises the top of the list.
    Warp,
    /// Bayesian Personalised Ranking.
    Bpr,
    /// Logistic regression on positives and known negatives (--keep-negatives).
    Logistic,
}

/// `--schedule` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// Adagrad with --learning-rate.
    Adagrad,
    /// Adadelta with --rho and --epsilon.
    Adadelta,
}

/// Flags of `infermesh train recs`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainRecsArgs {
    /// Interactions table (CSV, TSV or Parquet).
    #[arg(long)]
    pub interactions: PathBuf,
    /// How to read it.
    #[command(flatten)]
    pub columns: InteractionColumns,
    /// Keep rows below --min-weight as known negatives instead of dropping them.
    #[arg(long)]
    pub keep_negatives: bool,
    /// More tables read like --interactions whose user and item ids only join the catalogue
    /// (no interaction is trained), as LightFM's `Dataset.fit` over every id of a split's
    /// files: e.g. the test file, so evaluation ranks the same catalogue. Repeatable.
    #[arg(long)]
    pub catalog: Vec<PathBuf>,
    /// Item features table keyed by --item-col: every other column becomes a feature
    /// `column:value` (a column named `feature` gives its values as they are).
    #[arg(long)]
    pub item_features: Option<PathBuf>,
    /// User features table keyed by --user-col, read like --item-features.
    #[arg(long)]
    pub user_features: Option<PathBuf>,
    /// Item texts table keyed by --item-col, for the content-based part (TF-IDF).
    #[arg(long)]
    pub item_text: Option<PathBuf>,
    /// Text columns of --item-text, comma-separated. Default: every column but the id.
    #[arg(long, value_delimiter = ',')]
    pub text_cols: Vec<String>,
    /// Loss. Default warp.
    #[arg(long, value_enum, default_value_t = LossArg::Warp)]
    pub loss: LossArg,
    /// Passes over the interactions. Default 10.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Embedding width (LightFM's no_components). Default 10.
    #[arg(long, default_value_t = 10)]
    pub components: usize,
    /// Learning-rate schedule. Default adagrad.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Adagrad)]
    pub schedule: ScheduleArg,
    /// Adagrad learning rate. Default 0.05.
    #[arg(long, default_value_t = 0.05)]
    pub learning_rate: f32,
    /// Adadelta decay. Default 0.95.
    #[arg(long, default_value_t = 0.95)]
    pub rho: f32,
    /// Adadelta epsilon. Default 1e-6.
    #[arg(long, default_value_t = 1e-6)]
    pub epsilon: f32,
    /// L2 penalty on item features. Default 0.
    #[arg(long, default_value_t = 0.0)]
    pub item_alpha: f32,
    /// L2 penalty on user features. Default 0.
    #[arg(long, default_value_t = 0.0)]
    pub user_alpha: f32,
    /// WARP's negative draws per positive. Default 10.
    #[arg(long, default_value_t = 10)]
    pub max_sampled: usize,
    /// Training threads (Hogwild when > 1; 1 is deterministic). Default 0: all cores.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seed of the initial weights, shuffles and draws. Default 42.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Weight of the content score in the served blend (with --item-text). Default 0.3.
    #[arg(long, default_value_t = 0.3)]
    pub content_weight: f32,
    /// Output: the model version directory (recs.json, model.safetensors), created.
    #[arg(long)]
    pub out: PathBuf,
}

/// What a training run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainRecsReport {
    /// Users in the catalogue.
    pub users: usize,
    /// Items in the catalogue.
    pub items: usize,
    /// Positive interactions.
    pub positives: usize,
    /// Rows skipped for an empty id.
    pub skipped_rows: usize,
    /// Seconds spent fitting.
    pub fit_seconds: f64,
    /// Seconds in all (loading included).
    pub total_seconds: f64,
}

/// Adds `column:value` features of a keyed table through `add(id, feature)`.
fn add_features(t: &Table, key: &str, mut add: impl FnMut(&str, &str)) -> Result<(), RecsJobError> {
    let ids = t.strings(key)?;
    for col in t.columns().into_iter().filter(|c| c != key) {
        let values = t.strings(&col)?;
        for (id, v) in ids.iter().zip(values) {
            if let (Some(id), Some(v)) = (id, v) {
                if col == "feature" {
                    add(id, &v);
                } else {
                    add(id, &format!("{col}:{v}"));
                }
            }
        }
    }
    Ok(())
}

impl TrainRecsArgs {
    fn hyper(&self) -> Hyper {
        Hyper {
            components: self.components,
            loss: match self.loss {
                LossArg::Warp => Loss::Warp,
                LossArg::Bpr => Loss::Bpr,
                LossArg::Logistic => Loss::Logistic,
            },
            schedule: match self.schedule {
                ScheduleArg::Adagrad => Schedule::Adagrad,
                ScheduleArg::Adadelta => Schedule::Adadelta,
            },
            learning_rate: self.learning_rate,
            rho: self.rho,
            epsilon: self.epsilon,
            item_alpha: self.item_alpha,
            user_alpha: self.user_alpha,
            max_sampled: self.max_sampled,
            seed: self.seed,
        }
    }

    /// Loads the tables, trains, writes the version; returns the report.
    pub fn train(&self, progress: bool) -> Result<TrainRecsReport, RecsJobError> {
        let started = Instant::now();
        let hyper = self.hyper();
        hyper.check()?;
        if self.loss == LossArg::Logistic && !self.keep_negatives {
            return Err(RecsJobError::Invalid(
                "--loss logistic needs negatives: give --weight-col, --min-weight and --keep-negatives"
                    .into(),
            ));
        }
        let c = &self.columns;
        let rows = c.rows(&self.interactions)?;
        let mut b = DatasetBuilder::new();
        for (u, i, w) in &rows.rows {
            if c.positive(*w) {
                b.interaction(u, i, 1.0);
            } else if self.keep_negatives {
                b.interaction(u, i, -1.0);
            } else {
                b.user(u);
                b.item(i);
            }
        }
        for path in &self.catalog {
            for (u, i, _) in &c.rows(path)?.rows {
                b.user(u);
                b.item(i);
            }
        }
        if let Some(path) = &self.item_features {
            let t = c.spec(path).read()?;
            add_features(&t, &c.item_col, |id, f| b.item_feature(id, f, 1.0))?;
        }
        if let Some(path) = &self.user_features {
            let t = c.spec(path).read()?;
            add_features(&t, &c.user_col, |id, f| b.user_feature(id, f, 1.0))?;
        }
        if let Some(path) = &self.item_text {
            let t = c.spec(path).read()?;
            let ids = t.strings(&c.item_col)?;
            let cols: Vec<String> = if self.text_cols.is_empty() {
                t.columns()
                    .into_iter()
                    .filter(|x| *x != c.item_col)
                    .collect()
            } else {
                self.text_cols.clone()
            };
            for col in cols {
                for (id, text) in ids.iter().zip(t.strings(&col)?) {
                    if let (Some(id), Some(text)) = (id, text) {
                        b.item_text(id, &text);
                    }
                }
            }
        }
        let data = b.build()?;
        let bar = if progress {
            let bar = ProgressBar::new(self.epochs as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let art = infermesh_recs::fit(
            &data,
            hyper,
            FitOptions {
                epochs: self.epochs,
                threads: self.threads,
                content_weight: self.content_weight,
            },
            |_, stats| {
                bar.set_message(format!(
                    "{} of {} examples updated",
                    stats.updates, stats.examples
                ));
                bar.inc(1);
            },
        )?;
        bar.finish_and_clear();
        art.save(&self.out)?;
        // The model config that serves this version, for registries that need one per model.
        let config = self.out.join("config.toml");
        std::fs::write(
            &config,
            "# Written by `infermesh train recs`: serves this version.\nplatform = \"recommender\"\n",
        )
        .map_err(|e| RecsJobError::Invalid(format!("{}: {e}", config.display())))?;
        write_score_reference(&art, &self.out)?;
        Ok(TrainRecsReport {
            users: data.users.len(),
            items: data.items.len(),
            positives: art.training.positives,
            skipped_rows: rows.skipped,
            fit_seconds: art.training.fit_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Runs the job and returns its summary for stdout.
    pub fn run(self) -> Result<String, RecsJobError> {
        let r = self.train(true)?;
        Ok(format!(
            "recommender trained: {} users, {} items, {} positives ({} rows skipped for empty ids), fit {:.2} s, {:.2} s in all; written to {}\n",
            r.users,
            r.items,
            r.positives,
            r.skipped_rows,
            r.fit_seconds,
            r.total_seconds,
            self.out.display()
        ))
    }
}

/// Flags of `infermesh eval recs`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalRecsArgs {
    /// Model version directory written by `infermesh train recs`.
    #[arg(long)]
    pub model: PathBuf,
    /// The training interactions (their positives are left out of the ranking).
    #[arg(long)]
    pub train: PathBuf,
    /// The held-out interactions to score.
    #[arg(long)]
    pub test: PathBuf,
    /// How to read both tables.
    #[command(flatten)]
    pub columns: InteractionColumns,
    /// Cut-off of precision@k and recall@k. Default 10.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl EvalRecsArgs {
    /// Loads the model and tables and scores.
    pub fn evaluate(&self) -> Result<EvalReport, RecsJobError> {
        let art = RecsArtifact::load(&self.model)?;
        let rec = Recommender::new(
            art,
            ServeOptions {
                blend: Blend::default(),
                max_k: self.k.max(1),
                unknown_user: UnknownUser::Popularity,
            },
        )?;
        let (train, _) = self.columns.positive_pairs(&self.train)?;
        let (test, _) = self.columns.positive_pairs(&self.test)?;
        Ok(infermesh_recs::evaluate_pairs(&rec, &train, &test, self.k)?)
    }

    /// Runs the evaluation and returns it for stdout (JSON with `--json`).
    pub fn run(self) -> Result<String, RecsJobError> {
        let r = self.evaluate()?;
        if self.json {
            Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&r)
                    .map_err(|e| RecsJobError::Invalid(e.to_string()))?
            ))
        } else {
            let m = &r.metrics;
            Ok(format!(
                "precision@{k} {:.4}  recall@{k} {:.4}  AUC {:.4}  ({} users, {} test interactions; {} test and {} train pairs with unknown ids left out)\n",
                m.precision_at_k,
                m.recall_at_k,
                m.auc,
                m.users,
                m.test_interactions,
                r.unknown_test_pairs,
                r.unknown_train_pairs,
                k = m.k
            ))
        }
    }
}

/// Writes `drift_reference.parquet` into a recommender version folder: the profile of the
/// top-10 scores the server answers for the training users (`score_0` .. `score_9`), what the
/// server's live drift compares the served scores with (prediction drift).
pub fn write_score_reference(
    art: &infermesh_recs::RecsArtifact,
    dir: &std::path::Path,
) -> Result<(), RecsJobError> {
    use infermesh_recs::recommender::{REFERENCE_K, REFERENCE_MAX_USERS, reference_scores};
    let columns: Vec<(String, infermesh_drift::Values)> =
        reference_scores(art, REFERENCE_K, REFERENCE_MAX_USERS)?
            .into_iter()
            .map(|(n, s)| {
                (
                    n,
                    infermesh_drift::Values::Float(s.into_iter().map(f64::from).collect()),
                )
            })
            .collect();
    infermesh_drift::file::write_columns(&dir.join(crate::drift::REFERENCE_FILE), &columns)
        .map_err(|e| RecsJobError::Invalid(e.to_string()))
}
