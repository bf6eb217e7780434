//! Model-family traits shared by serving and training.
//!
//! A model family (trees today; text, recommenders and more later) implements one of these
//! object-safe traits; the serving engine wraps it without knowing the family. Nothing here
//! knows about tokio, tonic or axum.

pub mod metrics;
#[cfg(feature = "onnx")]
pub mod onnx_proto;
pub mod rng;

use std::fmt;
use std::path::PathBuf;

/// The model cache the project's scripts fill with weights that never come from a hub at
/// run time (`INFERMESH_MODEL_CACHE`, default `~/.cache/infermesh/models`): all-MiniLM-L6-v2
/// in `all-MiniLM-L6-v2/`.
pub fn default_model_cache() -> PathBuf {
    match std::env::var_os("INFERMESH_MODEL_CACHE") {
        Some(p) => p.into(),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/infermesh/models"),
    }
}

/// Errors a model family reports. Serving maps these onto its single `ErrorKind`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The caller's data does not fit the model (wrong feature count, bad shape...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The artifact could not be parsed or is of an unsupported kind.
    #[error("cannot load model: {0}")]
    Load(String),
    /// The model does not support the operation (e.g. explanations).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// What a tabular model predicts, which decides how its outputs are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// One probability per row (of the positive class).
    BinaryClassification,
    /// One raw score per row (regression, or a raw margin such as `binary:logitraw`).
    Regression,
    /// `classes` probabilities per row (softprob), or `classes` scores whose argmax is the class.
    Multiclass {
        /// Number of classes.
        classes: usize,
    },
}

/// A model over fixed-width rows of `f32` features, `NaN` meaning "missing".
///
/// Implementations must be cheap to call from many threads at once (`&self`, no locks on the
/// predict path).
pub trait TabularModel: Send + Sync + fmt::Debug {
    /// Number of input features per row.
    fn num_features(&self) -> usize;
    /// Feature names in column order, when the artifact carries them.
    fn feature_names(&self) -> Option<&[String]>;
    /// Number of output values per row (1 for binary and regression, K for K classes).
    fn num_outputs(&self) -> usize;
    /// The kind of prediction, as the artifact's objective says.
    fn task(&self) -> Task;
    /// A short name of the artifact format, e.g. `xgboost_json`, `lightgbm`.
    fn format(&self) -> &'static str;
    /// Predicts `rows.len() / num_features()` rows, row-major, into `out`
    /// (`n_rows * num_outputs()`, row-major), with the objective's transform applied
    /// (probabilities for classifiers).
    fn predict(&self, rows: &[f32], out: &mut [f32]) -> Result<(), ModelError>;
    /// Exact per-feature contributions of one row to the margin (path-dependent TreeSHAP for
    /// trees): `(num_features() + 1) * num_outputs()` values, output group major, the bias
    /// (expected value) last in each group, exactly as xgboost's `pred_contribs=True`.
    fn contributions(&self, row: &[f32]) -> Result<Vec<f32>, ModelError>;
}

/// Checks that `rows` holds a whole number of rows of `num_features` and that `out` fits.
pub fn check_shapes(
    rows: &[f32],
    num_features: usize,
    out: &[f32],
    num_outputs: usize,
) -> Result<usize, ModelError> {
    if num_features == 0 {
        return Err(ModelError::InvalidInput("model has no features".into()));
    }
    if !rows.len().is_multiple_of(num_features) {
        return Err(ModelError::InvalidInput(format!(
            "{} values is not a whole number of rows of {num_features} features",
            rows.len()
        )));
    }
    let n = rows.len() / num_features;
    if out.len() != n * num_outputs {
        return Err(ModelError::InvalidInput(format!(
            "output buffer has {} values, expected {}",
            out.len(),
            n * num_outputs
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_shapes_counts_rows_and_rejects_ragged() {
        assert_eq!(check_shapes(&[0.0; 6], 3, &[0.0; 2], 1).ok(), Some(2));
        assert!(check_shapes(&[0.0; 7], 3, &[0.0; 2], 1).is_err());
        assert!(check_shapes(&[0.0; 6], 3, &[0.0; 3], 1).is_err());
        assert!(check_shapes(&[0.0; 6], 0, &[0.0; 3], 1).is_err());
    }
}
