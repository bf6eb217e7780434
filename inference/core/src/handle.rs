//! A loaded model version: the model, its batcher, feature names and output semantics.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use infermesh_common::ServiceError;
use infermesh_model_core::{TabularModel, Task};
use infermesh_registry::{ModelConfig, OutputMode, Platform, VersionEntry};
use infermesh_trees::{ModelFormat, TreeEnsemble};

use crate::batcher::{BatchConfig, Batcher};

/// An output tensor of the V2 API: FP32 values and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Tensor name.
    pub name: String,
    /// Shape, rows first.
    pub shape: Vec<i64>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// One servable version of a model. Shared by `Arc`: a request holds its version until it
/// answers, so retiring a version never fails a request in flight.
#[derive(Debug)]
pub struct LoadedVersion {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The config it was loaded with.
    pub config: Arc<ModelConfig>,
    /// The model.
    pub model: Arc<dyn TabularModel>,
    /// Fingerprint of the version folder when it was loaded.
    pub fingerprint: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    feature_names: Vec<String>,
    feature_index: HashMap<String, usize>,
    batcher: Batcher,
}

impl LoadedVersion {
    /// Loads the artifact of `entry` as `config` says and starts its batcher.
    pub fn load(config: Arc<ModelConfig>, entry: &VersionEntry) -> Result<Self, String> {
        let (path, format) = find_artifact(&config, &entry.dir)?;
        let model = TreeEnsemble::load(&path, format).map_err(|e| e.to_string())?;
        let model: Arc<dyn TabularModel> = Arc::new(model);
        Self::from_model(config, entry.version, entry.fingerprint, model)
    }

    /// Wraps an already built model (used by loaders and tests).
    pub fn from_model(
        config: Arc<ModelConfig>,
        version: u64,
        fingerprint: u64,
        model: Arc<dyn TabularModel>,
    ) -> Result<Self, String> {
        let n = model.num_features();
        let feature_names: Vec<String> = match (&config.feature_names, model.feature_names()) {
            (Some(names), _) => {
                if names.len() != n {
                    return Err(format!(
                        "config.toml lists {} feature_names but the model has {n} features",
                        names.len()
                    ));
                }
                names.clone()
            }
            (None, Some(names)) if names.len() == n => names.to_vec(),
            _ => (0..n).map(|i| format!("f{i}")).collect(),
        };
        let mut feature_index = HashMap::with_capacity(n);
        for (i, f) in feature_names.iter().enumerate() {
            if feature_index.insert(f.clone(), i).is_some() {
                return Err(format!("feature name '{f}' appears twice"));
            }
        }
        if config.output.output_class && matches!(model.task(), Task::Regression) {
            tracing::warn!(model = %config.name, "output_class is set but the model is a regression");
        }
        let batcher = Batcher::start(
            model.clone(),
            BatchConfig {
                model: config.name.clone(),
                version: version.to_string(),
                max_batch_size: config.max_batch_size,
                max_queue_delay: config.max_queue_delay,
                max_queue_rows: config.max_queue_rows,
            },
        )
        .map_err(|e| format!("cannot start the batcher thread: {e}"))?;
        Ok(Self {
            name: config.name.clone(),
            version,
            config,
            model,
            fingerprint,
            loaded_at: SystemTime::now(),
            feature_names,
            feature_index,
            batcher,
        })
    }

    /// Feature names in column order (the artifact's, the config's, or `f0..fN`).
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The column of feature `name`.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.feature_index.get(name).copied()
    }

    /// Number of input features.
    pub fn num_features(&self) -> usize {
        self.model.num_features()
    }

    /// Rows admitted and not yet answered.
    pub fn in_flight_rows(&self) -> usize {
        self.batcher.in_flight_rows()
    }

    /// The model's own outputs per row (probabilities for classifiers), through the batcher.
    pub async fn predict_raw(&self, features: Vec<f32>) -> Result<Vec<f32>, ServiceError> {
        self.batcher.predict(features).await
    }

    /// Shape of the output tensor for `rows` rows, as the output mode shapes it.
    pub fn output_shape(&self, rows: i64) -> Vec<i64> {
        let k = self.model.num_outputs() as i64;
        match output_layout(self.model.task(), self.config.output) {
            Layout::Scalar => vec![rows],
            Layout::TwoClass => vec![rows, 2],
            Layout::PerOutput => vec![rows, k],
            Layout::ClassIndex => vec![rows],
        }
    }

    /// Runs `features` and shapes the result as the V2 output tensor (Triton FIL semantics).
    pub async fn infer(&self, features: Vec<f32>) -> Result<OutputTensor, ServiceError> {
        let rows = features.len() / self.num_features().max(1);
        let raw = self.predict_raw(features).await?;
        let data = apply_output_mode(
            self.model.task(),
            self.config.output,
            self.model.num_outputs(),
            raw,
        );
        Ok(OutputTensor {
            name: self.config.output_name.clone(),
            shape: self.output_shape(rows as i64),
            data,
        })
    }

    /// Exact per-feature contributions of one row (TreeSHAP), bias last.
    pub fn explain(&self, row: &[f32]) -> Result<Vec<f32>, ServiceError> {
        self.model
            .contributions(row)
            .map_err(|e| ServiceError::invalid(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[n]`: the prediction itself.
    Scalar,
    /// `[n, 2]`: binary class probabilities `(1 - p, p)`.
    TwoClass,
    /// `[n, k]`: per-class values.
    PerOutput,
    /// `[n]`: the predicted class index.
    ClassIndex,
}

fn output_layout(task: Task, mode: OutputMode) -> Layout {
    match (task, mode.output_class, mode.predict_proba) {
        (Task::BinaryClassification, true, true) => Layout::TwoClass,
        (Task::BinaryClassification, true, false) => Layout::ClassIndex,
        (Task::BinaryClassification, false, _) | (Task::Regression, _, _) => Layout::Scalar,
        (Task::Multiclass { .. }, true, false) => Layout::ClassIndex,
        (Task::Multiclass { .. }, _, _) => Layout::PerOutput,
    }
}

/// Turns raw model outputs (`k` per row) into the output tensor's values.
fn apply_output_mode(task: Task, mode: OutputMode, k: usize, raw: Vec<f32>) -> Vec<f32> {
    match output_layout(task, mode) {
        Layout::Scalar | Layout::PerOutput => raw,
        Layout::TwoClass => raw.iter().flat_map(|&p| [1.0 - p, p]).collect(),
        Layout::ClassIndex if k == 1 => raw
            .iter()
            .map(|&p| if p > mode.threshold { 1.0 } else { 0.0 })
            .collect(),
        Layout::ClassIndex => raw
            .chunks(k.max(1))
            .map(|row| {
                let mut best = 0;
                for (i, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = i;
                    }
                }
                best as f32
            })
            .collect(),
    }
}

fn find_artifact(
    config: &ModelConfig,
    dir: &Path,
) -> Result<(std::path::PathBuf, ModelFormat), String> {
    for file in config.candidate_files() {
        let path = dir.join(&file);
        if path.is_file() {
            let format = match (config.platform, config.model_type.as_deref()) {
                (Platform::Lightgbm, _) => ModelFormat::Lightgbm,
                (Platform::Xgboost, Some(t)) => ModelFormat::from_triton_model_type(t)
                    .ok_or_else(|| format!("unsupported model_type '{t}'"))?,
                (Platform::Xgboost, None) => {
                    if file.ends_with(".ubj") {
                        ModelFormat::XgboostUbj
                    } else {
                        ModelFormat::XgboostJson
                    }
                }
            };
            return Ok((path, format));
        }
    }
    Err(format!(
        "no model file in {} (looked for {})",
        dir.display(),
        config.candidate_files().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(output_class: bool, predict_proba: bool) -> OutputMode {
        OutputMode {
            output_class,
            predict_proba,
            threshold: 0.6,
        }
    }

    #[test]
    fn binary_outputs_follow_fil_semantics() {
        let t = Task::BinaryClassification;
        let raw = vec![0.5, 0.7];
        assert_eq!(
            apply_output_mode(t, mode(false, false), 1, raw.clone()),
            raw
        );
        assert_eq!(
            apply_output_mode(t, mode(true, false), 1, raw.clone()),
            vec![0.0, 1.0]
        );
        assert_eq!(
            apply_output_mode(t, mode(true, true), 1, raw.clone()),
            vec![0.5, 0.5, 1.0 - 0.7, 0.7]
        );
    }

    #[test]
    fn multiclass_outputs_are_probabilities_or_argmax() {
        let t = Task::Multiclass { classes: 3 };
        let raw = vec![0.2, 0.5, 0.3, 0.6, 0.3, 0.1];
        assert_eq!(
            apply_output_mode(t, mode(true, false), 3, raw.clone()),
            vec![1.0, 0.0]
        );
        assert_eq!(apply_output_mode(t, mode(true, true), 3, raw.clone()), raw);
        assert_eq!(output_layout(t, mode(false, false)), Layout::PerOutput);
    }
}
