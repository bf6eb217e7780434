//! The trees family behind the serving seam ([`infermesh_inference::Servable`]): platforms
//! `xgboost`, `lightgbm` and Triton's `fil` (a FIL-backend `config.pbtxt`), rows of `f32`
//! features batched by rows, Triton FIL's output semantics, and the typed fraud API's
//! contributions (TreeSHAP) through [`TreeServable`].
//!
//! Config keys (`config.toml`; in a `config.pbtxt`, the FIL `parameters`, as strings):
//!
//! ```toml
//! model_type = "xgboost_json"   # or "xgboost_ubj", "lightgbm"; picked by the file found
//! feature_names = ["amount", "hour"]   # column order, overriding the artifact's
//! threshold = 0.5               # a binary prediction is positive when p > threshold
//! output_class = false          # true: classes or class probabilities (FIL's default: true)
//! predict_proba = false         # with output_class: [n, classes] probabilities
//! [limits]                      # LoadLimits: max_file_bytes, max_features, max_trees...
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use infermesh_common::ServiceError;
use infermesh_inference::backends::TabularBackend;
use infermesh_inference::batcher::Batcher;
use infermesh_inference::tensor::tabular_rows;
use infermesh_inference::{
    BatchUnit, Batching, BoxFuture, Description, Family, LoadContext, OutputTensor, Servable,
    TensorData, TensorMeta, V2Request, family_limits,
};
use infermesh_model_core::{TabularModel, Task};
use infermesh_registry::{ConfigSource, ModelConfig};

use crate::{LoadLimits, ModelFormat, TreeEnsemble};

/// The trees family: one registration line in the serving binary's table.
pub static FAMILY: Family = Family {
    name: "trees",
    platforms: &["xgboost", "lightgbm", "fil"],
    load,
    grpc: None,
    file_descriptor_set: None,
};

fn load(cx: &LoadContext<'_>) -> Result<Arc<dyn Servable>, String> {
    let options = TreeOptions::parse(cx.config)?;
    let (path, format) = find_artifact(cx.config, &options, cx.dir)?;
    let limits: LoadLimits = family_limits(cx.config)?;
    let model =
        TreeEnsemble::load_with_limits(&path, format, &limits).map_err(|e| e.to_string())?;
    Ok(Arc::new(TreeServable::new(
        cx.config,
        cx.version,
        Arc::new(model),
    )?))
}

/// How a tree model's prediction becomes the output tensor (Triton FIL semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputMode {
    /// The model is a classifier: outputs are classes or class probabilities.
    pub output_class: bool,
    /// With `output_class`, return per-class probabilities (`[n, classes]`, `[n, 2]` for
    /// binary) instead of the class index.
    pub predict_proba: bool,
    /// Probability above which a binary prediction is the positive class (FIL's
    /// `threshold`).
    pub threshold: f32,
}

/// The trees family's config keys, parsed from a model config.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeOptions {
    /// Artifact format as Triton FIL names it, or `None` to pick by the file found.
    pub model_type: Option<String>,
    /// Feature names in column order, overriding the artifact's.
    pub feature_names: Option<Vec<String>>,
    /// Output semantics.
    pub output: OutputMode,
}

/// Largest `feature_names` list a config may give (the [`LoadLimits`] default bound).
const MAX_CONFIG_FEATURES: usize = 100_000;

impl TreeOptions {
    /// Reads the family's keys. From `config.toml`, an unknown key is an error; from a
    /// Triton `config.pbtxt`, FIL's other parameters (`algo`, `storage_type`...) concern
    /// FIL's GPU kernels and are ignored.
    pub fn parse(config: &ModelConfig) -> Result<Self, String> {
        let p = &config.parameters;
        let pbtxt = config.source == ConfigSource::TritonPbtxt;
        if !pbtxt {
            const KNOWN: [&str; 5] = [
                "model_type",
                "feature_names",
                "threshold",
                "output_class",
                "predict_proba",
            ];
            if let Some(k) = p.keys().find(|k| !KNOWN.contains(&k.as_str())) {
                return Err(format!(
                    "unknown key '{k}' for platform {} (the trees family reads {})",
                    config.platform,
                    KNOWN.join(", ")
                ));
            }
        }
        let model_type = match p.get("model_type") {
            None => None,
            Some(toml::Value::String(t)) => {
                if ModelFormat::from_triton_model_type(t).is_none() {
                    return Err(format!(
                        "model_type '{t}' is not one of xgboost_json, xgboost_ubj, lightgbm"
                    ));
                }
                Some(t.clone())
            }
            Some(v) => return Err(format!("model_type must be a string, not {}", v.type_str())),
        };
        if config.platform == "fil" && model_type.is_none() {
            return Err("a FIL config's parameters must set model_type".into());
        }
        let feature_names = match p.get("feature_names") {
            None => None,
            Some(toml::Value::Array(a)) => {
                if a.len() > MAX_CONFIG_FEATURES {
                    return Err(format!(
                        "feature_names lists {} names, more than the {MAX_CONFIG_FEATURES} accepted",
                        a.len()
                    ));
                }
                Some(
                    a.iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .ok_or("feature_names must be strings")
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            Some(toml::Value::String(s)) => {
                Some(s.split(',').map(|f| f.trim().to_string()).collect())
            }
            Some(v) => {
                return Err(format!(
                    "feature_names must be a list of strings, not {}",
                    v.type_str()
                ));
            }
        };
        let output_class = flag(p, "output_class")?.unwrap_or(pbtxt);
        let predict_proba = flag(p, "predict_proba")?.unwrap_or(false);
        let threshold = match p.get("threshold") {
            None => 0.5,
            Some(toml::Value::Float(f)) => *f as f32,
            Some(toml::Value::Integer(i)) => *i as f32,
            Some(toml::Value::String(s)) => s
                .trim()
                .parse::<f32>()
                .map_err(|_| format!("threshold must be a number, got '{s}'"))?,
            Some(v) => return Err(format!("threshold must be a number, not {}", v.type_str())),
        };
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!("threshold {threshold} is not within [0, 1]"));
        }
        Ok(Self {
            model_type,
            feature_names,
            output: OutputMode {
                output_class,
                predict_proba,
                threshold,
            },
        })
    }
}

/// A boolean key: a TOML boolean, or (FIL parameters) `true`/`false`/`1`/`0`.
fn flag(p: &toml::Table, key: &str) -> Result<Option<bool>, String> {
    match p.get(key) {
        None => Ok(None),
        Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
        Some(toml::Value::String(s)) => match s.trim() {
            "true" | "True" | "1" => Ok(Some(true)),
            "false" | "False" | "0" => Ok(Some(false)),
            v => Err(format!("{key} must be true or false, got '{v}'")),
        },
        Some(v) => Err(format!("{key} must be true or false, not {}", v.type_str())),
    }
}

/// The artifact file names to look for in a version folder, in order.
fn candidate_files(config: &ModelConfig, options: &TreeOptions) -> Vec<String> {
    if let Some(f) = &config.model_file {
        return vec![f.clone()];
    }
    match (config.platform.as_str(), options.model_type.as_deref()) {
        ("lightgbm", _) | (_, Some("lightgbm")) => vec!["model.txt".into()],
        (_, Some("xgboost_json")) => vec!["xgboost.json".into(), "model.json".into()],
        (_, Some("xgboost_ubj")) => vec!["xgboost.ubj".into(), "model.ubj".into()],
        _ => vec![
            "model.json".into(),
            "model.ubj".into(),
            "xgboost.json".into(),
            "xgboost.ubj".into(),
        ],
    }
}

fn find_artifact(
    config: &ModelConfig,
    options: &TreeOptions,
    dir: &Path,
) -> Result<(PathBuf, ModelFormat), String> {
    let candidates = candidate_files(config, options);
    for file in &candidates {
        let path = dir.join(file);
        if path.is_file() {
            let format = match (config.platform.as_str(), options.model_type.as_deref()) {
                ("lightgbm", _) => ModelFormat::Lightgbm,
                (_, Some(t)) => ModelFormat::from_triton_model_type(t)
                    .ok_or_else(|| format!("unsupported model_type '{t}'"))?,
                (_, None) => {
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
        candidates.join(", ")
    ))
}

/// A tabular model version: the model, its row batcher, feature names and output semantics.
#[derive(Debug)]
pub struct TreeServable {
    /// The model.
    pub model: Arc<dyn TabularModel>,
    output: OutputMode,
    input_name: String,
    output_name: String,
    feature_names: Vec<String>,
    feature_index: HashMap<String, usize>,
    batcher: Batcher<TabularBackend>,
    description: Description,
}

impl TreeServable {
    /// Serves `model` (any [`TabularModel`]: loaders and tests) as `config` says.
    pub fn new(
        config: &ModelConfig,
        version: u64,
        model: Arc<dyn TabularModel>,
    ) -> Result<Self, String> {
        let options = TreeOptions::parse(config)?;
        let n = model.num_features();
        let feature_names: Vec<String> = match (&options.feature_names, model.feature_names()) {
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
        if options.output.output_class && matches!(model.task(), Task::Regression) {
            tracing::warn!(model = %config.name, "output_class is set but the model is a regression");
        }
        let batcher = Batcher::for_rows(model.clone(), config, version)?;
        let input_name = config.input_name_or("input__0").to_string();
        let output_name = config.output_name_or("output__0").to_string();
        let layout = output_layout(model.task(), options.output);
        let mut out_shape = layout_shape(layout, -1, model.num_outputs() as i64);
        if out_shape.is_empty() {
            out_shape.push(-1);
        }
        let model_type = options
            .model_type
            .clone()
            .unwrap_or_else(|| model.format().to_string());
        let description = Description {
            backend: "fil".into(),
            format: model.format().to_string(),
            inputs: vec![TensorMeta::new(&input_name, "FP32", vec![-1, n as i64])],
            outputs: vec![TensorMeta::new(&output_name, "FP32", out_shape)],
            max_batch_size: config.max_batch_size,
            batching: Batching {
                unit: BatchUnit::Rows,
                max_batch_cost: config.max_batch_size,
                max_queue_cost: config.max_queue_rows,
            },
            width: n,
            parameters: vec![
                ("model_type".into(), model_type),
                (
                    "output_class".into(),
                    options.output.output_class.to_string(),
                ),
                (
                    "predict_proba".into(),
                    options.output.predict_proba.to_string(),
                ),
                ("threshold".into(), options.output.threshold.to_string()),
                ("feature_names".into(), feature_names.join(",")),
            ],
        };
        Ok(Self {
            model,
            output: options.output,
            input_name,
            output_name,
            feature_names,
            feature_index,
            batcher,
            description,
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

    /// The output semantics (its `threshold` decides a binary label).
    pub fn output_mode(&self) -> OutputMode {
        self.output
    }

    /// The model's own outputs per row (probabilities for classifiers), through the batcher.
    pub async fn predict_raw(&self, features: Vec<f32>) -> Result<Vec<f32>, ServiceError> {
        self.batcher
            .predict_rows(features, self.num_features())
            .await
    }

    /// Shape of the output tensor for `rows` rows, as the output mode shapes it.
    pub fn output_shape(&self, rows: i64) -> Vec<i64> {
        layout_shape(
            output_layout(self.model.task(), self.output),
            rows,
            self.model.num_outputs() as i64,
        )
    }

    /// Runs `features` and shapes the result as the V2 output tensor (Triton FIL semantics).
    pub async fn infer_rows(&self, features: Vec<f32>) -> Result<OutputTensor, ServiceError> {
        let rows = features.len() / self.num_features().max(1);
        let raw = self.predict_raw(features).await?;
        let data = apply_output_mode(
            self.model.task(),
            self.output,
            self.model.num_outputs(),
            raw,
        );
        Ok(OutputTensor {
            name: self.output_name.clone(),
            shape: self.output_shape(rows as i64),
            data: TensorData::Fp32(data),
        })
    }

    /// Exact per-feature contributions of one row (TreeSHAP), bias last.
    pub fn explain(&self, row: &[f32]) -> Result<Vec<f32>, ServiceError> {
        self.model
            .contributions(row)
            .map_err(|e| ServiceError::invalid(e.to_string()))
    }
}

impl Servable for TreeServable {
    fn description(&self) -> &Description {
        &self.description
    }

    fn infer(&self, request: V2Request) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>> {
        Box::pin(async move {
            let rows = tabular_rows(request.inputs, &self.input_name, self.num_features())?;
            Ok(vec![self.infer_rows(rows).await?])
        })
    }

    fn failure(&self) -> Option<String> {
        self.batcher.failure().map(str::to_string)
    }

    fn in_flight(&self) -> usize {
        self.batcher.in_flight()
    }

    fn as_any(&self) -> &dyn Any {
        self
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

fn layout_shape(layout: Layout, rows: i64, k: i64) -> Vec<i64> {
    match layout {
        Layout::Scalar | Layout::ClassIndex => vec![rows],
        Layout::TwoClass => vec![rows, 2],
        Layout::PerOutput => vec![rows, k],
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    fn toml(text: &str) -> Result<TreeOptions, String> {
        TreeOptions::parse(&ModelConfig::from_toml("m", text).unwrap())
    }

    #[test]
    fn options_from_toml_are_typed_and_checked() {
        let o = toml(
            "platform = \"xgboost\"\nfeature_names = [\"a\", \"b\"]\nthreshold = 0.7\noutput_class = true",
        )
        .unwrap();
        assert_eq!(
            o.feature_names.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(
            o.output,
            OutputMode {
                output_class: true,
                predict_proba: false,
                threshold: 0.7
            }
        );
        let defaults = toml("platform = \"lightgbm\"").unwrap();
        assert!(!defaults.output.output_class);
        for bad in [
            "bogus = 1",
            "threshold = 2.0",
            "threshold = \"high\"",
            "output_class = 3",
            "model_type = \"treelite_checkpoint\"",
            "feature_names = [1, 2]",
            "engine = \"candle\"",
        ] {
            let err = toml(&format!("platform = \"xgboost\"\n{bad}")).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }

    const FIL: &str = r#"
name: "fil_model"
backend: "fil"
max_batch_size: 32768
parameters [
  { key: "model_type" value: { string_value: "xgboost_json" } },
  { key: "output_class" value: { string_value: "true" } },
  { key: "threshold" value: { string_value: "0.4" } },
  { key: "storage_type" value: { string_value: "AUTO" } }
]
"#;

    #[test]
    fn fil_parameters_are_strings_and_fil_defaults_apply() {
        let c = ModelConfig::from_pbtxt("fil_model", FIL).unwrap();
        let o = TreeOptions::parse(&c).unwrap();
        assert_eq!(o.model_type.as_deref(), Some("xgboost_json"));
        assert!(o.output.output_class && !o.output.predict_proba);
        assert_eq!(o.output.threshold, 0.4);
        assert_eq!(candidate_files(&c, &o)[0], "xgboost.json");
        let bad = FIL.replace("xgboost_json", "treelite_checkpoint");
        let c = ModelConfig::from_pbtxt("fil_model", &bad).unwrap();
        assert!(TreeOptions::parse(&c).is_err());
        let none = FIL.replace("model_type", "modeltype");
        let c = ModelConfig::from_pbtxt("fil_model", &none).unwrap();
        assert!(TreeOptions::parse(&c).unwrap_err().contains("model_type"));
    }
}
