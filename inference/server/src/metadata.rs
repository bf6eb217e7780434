//! Server and model metadata, built once for both front ends.

use infermesh_common::ServiceError;
use infermesh_inference::ModelManager;
use infermesh_proto::inference as pb;
use infermesh_registry::VersionPolicy;

/// Server name reported by `/v2` and ServerMetadata.
pub const SERVER_NAME: &str = "infermesh";
/// Server version.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Protocol extensions supported.
pub const EXTENSIONS: &[&str] = &[
    "model_repository",
    "binary_tensor_data",
    "model_configuration",
];

/// A tensor's metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorMeta {
    /// Name.
    pub name: String,
    /// V2 datatype.
    pub datatype: String,
    /// Shape; -1 for the batch dimension.
    pub shape: Vec<i64>,
}

/// A model's metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelMeta {
    /// Name.
    pub name: String,
    /// Ready versions, ascending.
    pub versions: Vec<String>,
    /// Platform.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMeta>,
    /// Outputs.
    pub outputs: Vec<TensorMeta>,
}

/// Metadata of `name` (at `version`, or its latest ready version).
pub fn model_meta(
    mgr: &ModelManager,
    name: &str,
    version: Option<&str>,
) -> Result<ModelMeta, ServiceError> {
    let status = mgr.model(name)?;
    let handle = mgr.get(name, version)?;
    let versions = status
        .versions
        .iter()
        .filter(|(_, v)| v.ready().is_some())
        .map(|(n, _)| n.to_string())
        .collect();
    let platform = match handle.config.source {
        infermesh_registry::config::ConfigSource::TritonFil => "fil".to_string(),
        infermesh_registry::config::ConfigSource::Toml => {
            handle.config.platform.as_str().to_string()
        }
    };
    let (inputs, outputs) = match (handle.recs(), handle.text()) {
        (Ok(_), _) => (
            vec![
                TensorMeta {
                    name: handle.config.input_name.clone(),
                    datatype: "BYTES".into(),
                    shape: vec![-1],
                },
                TensorMeta {
                    name: "k".into(),
                    datatype: "INT32".into(),
                    shape: vec![1],
                },
            ],
            vec![
                TensorMeta {
                    name: handle.config.output_name.clone(),
                    datatype: "BYTES".into(),
                    shape: vec![-1, -1],
                },
                TensorMeta {
                    name: "score".into(),
                    datatype: "FP32".into(),
                    shape: vec![-1, -1],
                },
            ],
        ),
        (_, Ok(text)) => (
            vec![TensorMeta {
                name: handle.config.input_name.clone(),
                datatype: "BYTES".into(),
                shape: vec![-1],
            }],
            text.output_meta(&handle.config.output_name)
                .into_iter()
                .map(|(name, datatype, shape)| TensorMeta {
                    name,
                    datatype: datatype.into(),
                    shape,
                })
                .collect(),
        ),
        (_, Err(_)) => {
            let tab = handle.tabular()?;
            let mut out_shape = tab.output_shape(-1);
            if out_shape.is_empty() {
                out_shape.push(-1);
            }
            (
                vec![TensorMeta {
                    name: handle.config.input_name.clone(),
                    datatype: "FP32".into(),
                    shape: vec![-1, tab.num_features() as i64],
                }],
                vec![TensorMeta {
                    name: handle.config.output_name.clone(),
                    datatype: "FP32".into(),
                    shape: out_shape,
                }],
            )
        }
    };
    Ok(ModelMeta {
        name: name.to_string(),
        versions,
        platform,
        inputs,
        outputs,
    })
}

/// Whether `name` (at `version`) is ready. Unknown models are an error; known but not ready
/// models are `Ok(false)`.
pub fn model_ready(
    mgr: &ModelManager,
    name: &str,
    version: Option<&str>,
) -> Result<bool, ServiceError> {
    mgr.model(name)?;
    match mgr.get(name, version) {
        Ok(_) => Ok(true),
        Err(e) if e.kind == infermesh_common::ErrorKind::Unavailable => Ok(false),
        Err(e) => Err(e),
    }
}

/// Triton's model configuration for `name` (at `version`, or latest ready), shared by REST
/// `/v2/models/{m}/config` and gRPC `ModelConfig`.
pub fn model_config(
    mgr: &ModelManager,
    name: &str,
    version: Option<&str>,
) -> Result<pb::ModelConfig, ServiceError> {
    let meta = model_meta(mgr, name, version)?;
    let handle = mgr.get(name, version)?;
    let cfg = &handle.config;
    let model_type = cfg
        .model_type
        .clone()
        .unwrap_or_else(|| handle.format().to_string());
    let param = |v: String| pb::ModelParameter { string_value: v };
    let version_policy = match &cfg.version_policy {
        VersionPolicy::Latest(n) => {
            pb::model_version_policy::PolicyChoice::Latest(pb::model_version_policy::Latest {
                num_versions: *n as u32,
            })
        }
        VersionPolicy::All => {
            pb::model_version_policy::PolicyChoice::All(pb::model_version_policy::All {})
        }
        VersionPolicy::Specific(v) => {
            pb::model_version_policy::PolicyChoice::Specific(pb::model_version_policy::Specific {
                versions: v.iter().map(|&x| x as i64).collect(),
            })
        }
    };
    let (backend, parameters) = match (handle.recs(), handle.text()) {
        (Ok(recs), _) => {
            let r = recs.recommender();
            let o = r.options();
            (
                "infermesh-recs".to_string(),
                vec![
                    ("model_type", model_type),
                    ("items", r.num_items().to_string()),
                    ("users", r.artifact().users.len().to_string()),
                    ("components", r.artifact().factors.components.to_string()),
                    ("max_k", o.max_k.to_string()),
                    ("cf_weight", o.blend.cf_weight.to_string()),
                    ("content_weight", o.blend.content_weight.to_string()),
                ],
            )
        }
        (_, Ok(text)) => {
            let l = text.limits();
            (
                text.engine().as_str().to_string(),
                vec![
                    ("model_type", model_type),
                    ("engine", text.engine().as_str().to_string()),
                    ("max_len", text.max_len().to_string()),
                    ("max_batch_tokens", l.max_batch_tokens.to_string()),
                    ("max_batch_requests", l.max_batch_requests.to_string()),
                    ("max_client_batch_size", l.max_client_batch_size.to_string()),
                    ("labels", text.labels().join(",")),
                ],
            )
        }
        (_, Err(_)) => (
            "fil".to_string(),
            vec![
                ("model_type", model_type),
                ("output_class", cfg.output.output_class.to_string()),
                ("predict_proba", cfg.output.predict_proba.to_string()),
                ("threshold", cfg.output.threshold.to_string()),
                ("feature_names", handle.tabular()?.feature_names().join(",")),
            ],
        ),
    };
    Ok(pb::ModelConfig {
        name: name.to_string(),
        platform: meta.platform,
        backend,
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(version_policy),
        }),
        max_batch_size: i32::try_from(if cfg.platform.is_text() {
            cfg.text.max_client_batch_size
        } else {
            cfg.max_batch_size
        })
        .unwrap_or(i32::MAX),
        // Per-item dims, the batch dimension left out (Triton's convention with batching).
        input: meta
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: triton_type(&t.datatype) as i32,
                dims: item_dims(&t.shape),
            })
            .collect(),
        output: meta
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: triton_type(&t.datatype) as i32,
                dims: item_dims(&t.shape),
            })
            .collect(),
        default_model_filename: cfg.model_file.clone().unwrap_or_default(),
        dynamic_batching: Some(pb::ModelDynamicBatching {
            preferred_batch_size: Vec::new(),
            max_queue_delay_microseconds: cfg.max_queue_delay.as_micros() as u64,
        }),
        parameters: parameters
            .into_iter()
            .map(|(k, v)| (k.to_string(), param(v)))
            .collect(),
    })
}

fn triton_type(datatype: &str) -> pb::DataType {
    match datatype {
        "BYTES" => pb::DataType::TypeString,
        _ => pb::DataType::TypeFp32,
    }
}

fn item_dims(shape: &[i64]) -> Vec<i64> {
    match shape {
        [_] => vec![1],
        [_, rest @ ..] => rest.to_vec(),
        [] => Vec::new(),
    }
}
