//! Server and model metadata, built once for both front ends.

use infermesh_common::ServiceError;
use infermesh_inference::ModelManager;
pub use infermesh_inference::TensorMeta;
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
    let d = handle.description();
    let platform = handle.config.platform.clone();
    let (inputs, outputs) = (d.inputs.clone(), d.outputs.clone());
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
    let d = handle.description();
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
    let backend = d.backend.clone();
    let parameters = d.parameters.clone();
    Ok(pb::ModelConfig {
        name: name.to_string(),
        platform: meta.platform,
        backend,
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(version_policy),
        }),
        max_batch_size: i32::try_from(d.max_batch_size).unwrap_or(i32::MAX),
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
        parameters: parameters.into_iter().map(|(k, v)| (k, param(v))).collect(),
    })
}

fn triton_type(datatype: &str) -> pb::DataType {
    match datatype {
        "BYTES" => pb::DataType::TypeString,
        "BOOL" => pb::DataType::TypeBool,
        "INT32" => pb::DataType::TypeInt32,
        "INT64" => pb::DataType::TypeInt64,
        "FP64" => pb::DataType::TypeFp64,
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
