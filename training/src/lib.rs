//! Training and evaluation jobs behind `infermesh train <job>` and `infermesh eval <job>`.
//!
//! * [`categorizer`]: fine-tunes BERT / DistilBERT text categorisers on candle.
//! * [`fraud`]: LightGBM fraud classifiers from tables, tracked in MLflow or the local
//!   registry; [`promote`] moves their aliases.
//! * [`recs`]: trains and evaluates the LightFM-style recommender (`infermesh-recs`) on
//!   interaction tables loaded with Polars ([`table`]).
//! * [`sample_reviews`]: the sample topic and sentiment models `infermesh up` serves,
//!   trained on product reviews generated from templates.
//! * [`sentiment`]: the local sentiment classifier, the categoriser's trainer with the cached
//!   all-MiniLM-L6-v2 as its default base.
//! * [`topics`]: fits the BERTopic-equivalent topic model (`infermesh-topics`) on a text
//!   column (embeddings from a sentence encoder, or a float32 `.npy` read by [`npy`]) and
//!   scores it against labels (NMI, ARI, outlier share).

pub mod anomaly;
pub mod categorizer;
pub mod drift;
pub mod drift_registry;
pub mod fraud;
pub mod npy;
pub mod promote;
pub mod recs;
pub mod sample_reviews;
pub mod sentiment;
pub mod table;
pub mod topics;
pub mod tracking;

use categorizer::{CategorizerError, EvalArgs, TrainArgs};

/// Everything that can stop a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The categoriser job failed.
    #[error(transparent)]
    Categorizer(#[from] CategorizerError),
    /// The recommender job failed.
    #[error(transparent)]
    Recs(#[from] recs::RecsJobError),
    /// The fraud job failed.
    #[error(transparent)]
    Fraud(#[from] fraud::FraudJobError),
    /// The topic-model job failed.
    #[error(transparent)]
    Topics(#[from] topics::TopicsJobError),
    /// The anomaly job failed.
    #[error(transparent)]
    Anomaly(#[from] anomaly::AnomalyJobError),
    /// The result could not be written to stdout.
    #[error("cannot write the result to stdout: {0}")]
    Output(#[from] std::io::Error),
}

/// Writes a job's result to stdout. `println!` panics when the reader has gone away
/// (`infermesh eval ... --json | head -3`); here a closed pipe just ends the output, as it does
/// for other Unix tools, and any other write error is returned.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        done => done,
    }
}

/// `infermesh train <job>`.
#[derive(Debug, clap::Subcommand)]
pub enum TrainCommand {
    /// Fine-tune a text categoriser (BERT from --base, or a small DistilBERT with --init) on
    /// a labelled CSV file and write it in the Hugging Face layout the server loads.
    Categorizer(TrainArgs),
    /// Train the LightFM-style hybrid recommender on an interactions table (CSV, TSV or
    /// Parquet) and write a model version the server loads (platform `recommender`).
    Recs(recs::TrainRecsArgs),
    /// Train a LightGBM fraud classifier on a table (CSV, TSV or Parquet) with early stopping,
    /// choose its threshold on validation, report test PR-AUC / ROC-AUC, and write a model
    /// version the server loads (platform `lightgbm`); optionally tracked in MLflow and
    /// registered (alias challenger).
    Fraud(fraud::TrainFraudArgs),
    /// Train the local sentiment classifier on a labelled CSV file (labels as the data names
    /// them, e.g. negative / positive / neutral): the categoriser's trainer and defaults (a
    /// probe on the frozen encoder's sentence embedding blended with a TF-IDF lexical head),
    /// --base defaulting to the cached all-MiniLM-L6-v2; the written directory serves as
    /// platform `sentiment`.
    Sentiment(sentiment::TrainSentimentArgs),
    /// Fit a BERTopic-equivalent topic model (UMAP, HDBSCAN, c-TF-IDF keywords) on a text
    /// column of a table (CSV, TSV or Parquet), embedding the texts with a sentence encoder
    /// (or reading --embeddings), and write a model version the server loads (platform
    /// `topics`, the encoder copied under embedder/, training_report.json).
    Topics(topics::TrainTopicsArgs),
    /// Train an Isolation Forest (scikit-learn's algorithm and defaults) on the numeric
    /// columns of a table (CSV, TSV or Parquet) and write a model version the server loads
    /// (platform `isolation-forest`); with --label, the test split's ROC-AUC.
    Anomaly(anomaly::TrainAnomalyArgs),
}

impl TrainCommand {
    /// Runs the job and prints a summary.
    pub fn run(self) -> Result<(), JobError> {
        let text = match self {
            TrainCommand::Categorizer(args) => classifier_summary(args)?,
            TrainCommand::Sentiment(args) => classifier_summary(args.resolved())?,
            TrainCommand::Recs(args) => args.run()?,
            TrainCommand::Fraud(args) => args.run()?,
            TrainCommand::Topics(args) => args.run()?,
            TrainCommand::Anomaly(args) => args.run()?,
        };
        Ok(write_stdout(&text)?)
    }
}

/// Trains a text classifier (categoriser or sentiment) and says what was written.
fn classifier_summary(args: TrainArgs) -> Result<String, JobError> {
    let out = args.out.clone();
    let report = args.run()?;
    Ok(format!(
        "{} trained: {} epochs (best {}), validation accuracy {:.4}, macro-F1 {:.4}, {:.1} s; written to {}\n",
        report.architecture,
        report.epochs_run,
        report.best_epoch,
        report.validation_accuracy,
        report.validation_macro_f1,
        report.elapsed_seconds,
        out.display()
    ))
}

/// `infermesh eval <job>`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Score a trained categoriser on a labelled CSV file (accuracy, macro-F1).
    Categorizer(EvalArgs),
    /// Score a trained sentiment classifier on a labelled CSV file (accuracy, macro-F1, per
    /// label), as `eval categorizer` does.
    Sentiment(EvalArgs),
    /// Score a trained recommender on held-out interactions: precision@k, recall@k and AUC
    /// as LightFM's `lightfm.evaluation` defines them (training interactions excluded).
    Recs(recs::EvalRecsArgs),
    /// Assign a labelled table's texts to the topics of a trained topic model (embedded with
    /// its own embedder/) and print the NMI and ARI of topics against labels and the share
    /// of outliers.
    Topics(topics::EvalTopicsArgs),
}

impl EvalCommand {
    /// Runs the evaluation and prints it (JSON with `--json`).
    pub fn run(self) -> Result<(), JobError> {
        let text = match self {
            EvalCommand::Categorizer(args) | EvalCommand::Sentiment(args) => {
                let json = args.json;
                let report = args.run()?;
                if json {
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&report)
                            .map_err(|_| CategorizerError::Internal("report is not JSON"))?
                    )
                } else {
                    categorizer::format_report(&report)
                }
            }
            EvalCommand::Recs(args) => args.run()?,
            EvalCommand::Topics(args) => args.run()?,
        };
        Ok(write_stdout(&text)?)
    }
}
