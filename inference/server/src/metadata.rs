//! Server and model metadata, built once for both front ends.

use infermesh_common::ServiceError;
use infermesh_inference::ModelManager;

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
        .filter(|(_, v)| v.loaded.is_some())
        .map(|(n, _)| n.to_string())
        .collect();
    let platform = match handle.config.source {
        infermesh_registry::config::ConfigSource::TritonFil => "fil".to_string(),
        infermesh_registry::config::ConfigSource::Toml => {
            handle.config.platform.as_str().to_string()
        }
    };
    let mut out_shape = handle.output_shape(-1);
    if out_shape.is_empty() {
        out_shape.push(-1);
    }
    Ok(ModelMeta {
        name: name.to_string(),
        versions,
        platform,
        inputs: vec![TensorMeta {
            name: handle.config.input_name.clone(),
            datatype: "FP32".into(),
            shape: vec![-1, handle.num_features() as i64],
        }],
        outputs: vec![TensorMeta {
            name: handle.config.output_name.clone(),
            datatype: "FP32".into(),
            shape: out_shape,
        }],
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
