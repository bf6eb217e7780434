//! Text categoriser training: fine-tunes a BERT / DistilBERT sequence classifier on labelled
//! texts with candle autograd and writes it in the Hugging Face layout that
//! [`infermesh_text::classifier::TextClassifier`] (and the server's `bert-classifier` /
//! `distilbert-classifier` backends) load.
//!
//! * Data: a CSV file read with the `csv` crate. Polars is the project's training loader
//!   elsewhere, but it is a 16-minute build; CSV alone keeps this crate's CI build small.
//!   Parquet is not supported yet.
//! * Split: stratified train / validation by seed; labels sorted for a stable `id2label`.
//! * Init: a BERT encoder from a base directory (e.g. all-MiniLM-L6-v2) with a fresh seeded
//!   head, or a small seeded DistilBERT ([`ModelInit`]); the head starts random, at class
//!   prototypes, or as a linear probe fitted on the frozen features ([`HeadInit`]).
//! * Optimisation: AdamW, linear warmup then linear decay, inverse-frequency class-weighted
//!   cross-entropy, dynamic padding, a seeded shuffle per epoch, early stopping on
//!   validation macro-F1, best weights kept; optional dropout (`--dropout`, where Hugging Face's
//!   BERT applies it), refit on all rows (`--refit`), and a uniform model soup over seeds
//!   (`--soup N`).
//! * Lexical head (`--lexical-weight`, 0.5 unless given on the command line): TF-IDF n-grams
//!   into a logistic regression, blended with the classifier ([`infermesh_text::lexical`]);
//!   fitted in [`lexical`].
//! * Command-line defaults with `--base` (what `bench/categorizer.sh` measured best): no
//!   fine-tuning (`--epochs 0`) — the classifier is the probe on the frozen encoder's mean
//!   sentence embedding, fitted on every row — blended with the lexical head.
//! * Output: `config.json`, `model.safetensors`, `tokenizer.json`, `training_report.json`,
//!   and with a lexical head `lexical.json` and `lexical.safetensors`.
//!
//! ```no_run
//! use infermesh_training::categorizer::{ModelInit, TrainParams, train};
//! let params = TrainParams::new(
//!     "transactions.csv".into(), "description", "category",
//!     ModelInit::Base { dir: "models/all-MiniLM-L6-v2".into() }, "out/categorizer".into(),
//! );
//! let outcome = train(&params.check()?)?;
//! println!("validation macro-F1 {:.3}", outcome.report.validation_macro_f1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use infermesh_text::TextError;
use infermesh_text::TextModel;
use infermesh_text::classifier::{TextClassifier, argmax, softmax};
use infermesh_text::lexical::LexicalHead;

mod args;
pub mod data;
mod encoder;
mod head;
mod lexical;
pub mod metrics;
mod params;
mod train;

pub use args::{EvalArgs, HeadInitKind, InitKind, PoolingKind, TrainArgs, format_report};
pub use data::{DataError, LabelledTexts};
pub use metrics::{ClassMetrics, EvalReport};
pub use params::{HeadInit, ModelInit, ParamsError, TrainConfig, TrainParams};
pub use train::{
    EpochStats, LexicalReport, SoupMember, TrainOutcome, TrainedCategorizer, TrainingReport, train,
};

/// Everything that can stop a training or evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum CategorizerError {
    /// A parameter is out of range.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The data file cannot be used.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The base encoder directory cannot be used.
    #[error("base model {dir}: {message}")]
    Base {
        /// The directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// Loading a model or tokenizer failed.
    #[error(transparent)]
    Model(#[from] TextError),
    /// A tensor computation failed.
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// A file cannot be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A lock was poisoned by a panic elsewhere.
    #[error("weights lock poisoned")]
    Poisoned,
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl CategorizerError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        CategorizerError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// Scores the classifier in `model_dir` on the CSV file `data`. True labels the model does
/// not know count as errors.
pub fn evaluate(
    model_dir: &Path,
    data: &Path,
    text_column: &str,
    label_column: &str,
) -> Result<EvalReport, CategorizerError> {
    evaluate_rows(model_dir, data, text_column, label_column).map(|(report, _, _)| report)
}

/// As [`evaluate`], also returning the rows and each row's [`Prediction`].
pub fn evaluate_rows(
    model_dir: &Path,
    data: &Path,
    text_column: &str,
    label_column: &str,
) -> Result<(EvalReport, LabelledTexts, Vec<Prediction>), CategorizerError> {
    let model = TextClassifier::load(model_dir)?;
    let lexical = LexicalHead::load_optional(model_dir, model.labels())?;
    let rows = data::read_csv(data, text_column, label_column)?;
    let predicted = predict(&model, lexical.as_ref(), &rows.texts)?;
    let labels: Vec<&str> = predicted.iter().map(|p| p.label.as_str()).collect();
    let report = metrics::score(&rows.labels, &labels);
    Ok((report, rows, predicted))
}

/// One text's most likely label and the probability the model gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The most likely label.
    pub label: String,
    /// Its softmax probability.
    pub probability: f32,
}

/// The most likely label of each text with its probability, batched by token length (less
/// padding); with a `lexical` head, from the blend of the two.
pub fn predict(
    model: &TextClassifier,
    lexical: Option<&LexicalHead>,
    texts: &[String],
) -> Result<Vec<Prediction>, CategorizerError> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = model.tokenize(&refs)?;
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut out = vec![None; ids.len()];
    for chunk in order.chunks(32) {
        let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        for (&i, mut row) in chunk.iter().zip(model.forward_tokens(&batch)?) {
            if let Some(head) = lexical {
                head.blend(&mut row, &texts[i]);
            }
            let best = argmax(&row);
            out[i] = Some(Prediction {
                label: model.labels()[best].clone(),
                probability: softmax(&row)[best],
            });
        }
    }
    out.into_iter()
        .map(|p| p.ok_or(CategorizerError::Internal("a row was not predicted")))
        .collect()
}

/// Writes one CSV row per text: `text,label,predicted,probability` (the file `infermesh eval
/// categorizer --predictions` writes, for error analysis and paired comparisons).
pub fn write_predictions(
    path: &Path,
    rows: &LabelledTexts,
    predicted: &[Prediction],
) -> Result<(), CategorizerError> {
    let mut w = csv::Writer::from_path(path).map_err(|e| CategorizerError::io(path, e))?;
    w.write_record(["text", "label", "predicted", "probability"])
        .map_err(|e| CategorizerError::io(path, e))?;
    for ((text, label), p) in rows.texts.iter().zip(&rows.labels).zip(predicted) {
        w.write_record([text, label, &p.label, &format!("{:.6}", p.probability)])
            .map_err(|e| CategorizerError::io(path, e))?;
    }
    w.flush().map_err(|e| CategorizerError::io(path, e))
}
