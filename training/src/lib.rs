//! Training and evaluation jobs behind `infermesh train <job>` and `infermesh eval <job>`.
//!
//! * [`categorizer`]: fine-tunes BERT / DistilBERT text categorisers on candle.
//! * [`fraud`]: LightGBM fraud classifiers from tables, tracked in MLflow or the local
//!   registry; [`promote`] moves their aliases.
//! * [`recs`]: trains and evaluates the LightFM-style recommender (`infermesh-recs`) on
//!   interaction tables loaded with Polars ([`table`]).

pub mod categorizer;
pub mod fraud;
pub mod promote;
pub mod recs;
pub mod table;

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
}

impl TrainCommand {
    /// Runs the job and prints a summary.
    pub fn run(self) -> Result<(), JobError> {
        match self {
            TrainCommand::Categorizer(args) => {
                let out = args.out.clone();
                let report = args.run()?;
                println!(
                    "{} trained: {} epochs (best {}), validation accuracy {:.4}, macro-F1 {:.4}, {:.1} s; written to {}",
                    report.architecture,
                    report.epochs_run,
                    report.best_epoch,
                    report.validation_accuracy,
                    report.validation_macro_f1,
                    report.elapsed_seconds,
                    out.display()
                );
                Ok(())
            }
            TrainCommand::Recs(args) => Ok(args.run()?),
            TrainCommand::Fraud(args) => Ok(args.run()?),
        }
    }
}

/// `infermesh eval <job>`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Score a trained categoriser on a labelled CSV file (accuracy, macro-F1).
    Categorizer(EvalArgs),
    /// Score a trained recommender on held-out interactions: precision@k, recall@k and AUC
    /// as LightFM's `lightfm.evaluation` defines them (training interactions excluded).
    Recs(recs::EvalRecsArgs),
}

impl EvalCommand {
    /// Runs the evaluation and prints it (JSON with `--json`).
    pub fn run(self) -> Result<(), JobError> {
        match self {
            EvalCommand::Categorizer(args) => {
                let json = args.json;
                let report = args.run()?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report)
                            .map_err(|_| CategorizerError::Internal("report is not JSON"))?
                    );
                } else {
                    categorizer::print_report(&report);
                }
                Ok(())
            }
            EvalCommand::Recs(args) => Ok(args.run()?),
        }
    }
}
