//! The seam between the serving core and the model families: [`Servable`], what a family
//! serves for one loaded model version, and [`Family`], how a family loads one.
//!
//! The core (manager, batcher, KServe V2 front ends, metrics) knows no family by name: a
//! model's `platform` (or a Triton `config.pbtxt`'s `backend`) picks a [`Family`] from the
//! [`Families`] table the serving binary was built with, and everything the core says about
//! the model (V2 metadata, Triton model configuration, readiness) comes from the family's
//! [`Servable::description`] and [`Servable::failure`]. A family parses its own config keys
//! ([`infermesh_registry::ModelConfig::parameters`] and `[limits]`), decodes its own
//! inputs from a [`V2Request`], and batches through [`crate::batcher::Batcher`] with the
//! budget it chooses (rows, tokens) or admits requests its own way.
//!
//! Typed services (the `infermesh.v1` gRPC APIs) reach a family's own methods through
//! [`crate::LoadedVersion::family`], a checked downcast; a family may also bring its own
//! typed gRPC service ([`Family::grpc`]), which the server mounts beside the V2 ones.
//!
//! The seam lives here, not in `models/core`: it is written in serving terms (V2 tensors,
//! [`ServiceError`], the batcher), and `models/core` stays the math shared with training.
//! A family crate depends on this crate only behind its `serving` feature, so training never
//! links the server.

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use infermesh_common::ServiceError;
use infermesh_registry::ModelConfig;

use crate::manager::ModelManager;
use crate::tensor::{OutputTensor, TensorMeta, V2Request};

/// A future a [`Servable`] returns (boxed: the trait is used as `dyn Servable`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a request is batched by (reported in the model configuration and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchUnit {
    /// Rows of a tensor (tabular models): a batch holds at most `max_batch_cost` rows.
    Rows,
    /// Tokens (transformers, TEI's token budget): a batch holds at most `max_batch_cost`
    /// padded tokens.
    Tokens,
    /// Whole requests admitted up to a limit and computed one by one (no batching).
    Requests,
}

impl BatchUnit {
    /// The unit's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchUnit::Rows => "rows",
            BatchUnit::Tokens => "tokens",
            BatchUnit::Requests => "requests",
        }
    }
}

/// Batching limits of a loaded version, in its [`BatchUnit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// The budget unit.
    pub unit: BatchUnit,
    /// Largest batch, in units.
    pub max_batch_cost: usize,
    /// Units admitted (queued or running) at once; past it requests are refused (429).
    pub max_queue_cost: usize,
}

/// What a loaded version says about itself: its V2 signature, Triton-style configuration and
/// batching. Built once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// Triton's `backend` of the model configuration (`fil`, `onnxruntime`...).
    pub backend: String,
    /// Artifact format (`xgboost_json`, `lightgbm`, `bert-embedding`...).
    pub format: String,
    /// Input tensors.
    pub inputs: Vec<TensorMeta>,
    /// Output tensors, in the order an answer lists them.
    pub outputs: Vec<TensorMeta>,
    /// Most items (rows, texts, users) in one request.
    pub max_batch_size: usize,
    /// Batching.
    pub batching: Batching,
    /// A size for logs (features, embedding width, catalogue size).
    pub width: usize,
    /// The model configuration's `parameters`, as strings.
    pub parameters: Vec<(String, String)>,
}

/// One loaded model version of a family. Synchronous compute belongs on the batcher's thread
/// (or `spawn_blocking`), never on the async worker running [`Servable::infer`].
pub trait Servable: Send + Sync + Debug + 'static {
    /// The version's signature and configuration.
    fn description(&self) -> &Description;

    /// Answers a V2 request: one tensor per output of [`Description::outputs`] (the caller
    /// keeps those the request asked for, after checking their names). Inputs that do not
    /// fit the signature are INVALID_ARGUMENT.
    fn infer(&self, request: V2Request) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>>;

    /// Why this version can no longer serve (its backend panicked), if so. A failed version
    /// is not ready; it serves again once reloaded.
    fn failure(&self) -> Option<String>;

    /// Budget units admitted and not yet answered.
    fn in_flight(&self) -> usize;

    /// The concrete type, for typed services ([`crate::LoadedVersion::family`]).
    fn as_any(&self) -> &dyn Any;
}

/// What a family's loader gets: the model's config (a version's own `config.toml` already
/// applied), the version number and its folder.
#[derive(Debug, Clone, Copy)]
pub struct LoadContext<'a> {
    /// The config.
    pub config: &'a ModelConfig,
    /// Version number.
    pub version: u64,
    /// The version folder.
    pub dir: &'a Path,
}

/// Loads a version of a family's model; the error is the reason shown in the repository
/// index.
pub type LoadFn = fn(&LoadContext<'_>) -> Result<Arc<dyn Servable>, String>;

/// Adds the typed gRPC service(s) a family brings, built over the server's model manager, to
/// the server's routes.
pub type GrpcFn = fn(Arc<ModelManager>, &mut tonic::service::RoutesBuilder);

/// A model family: the platforms it serves and its loader. Registered in the serving
/// binary's table (one line per family, under a cargo feature).
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The family's name (logs, errors).
    pub name: &'static str,
    /// `platform` values of `config.toml` (and Triton `backend` values of `config.pbtxt`) it
    /// serves.
    pub platforms: &'static [&'static str],
    /// The loader.
    pub load: LoadFn,
    /// A typed gRPC service of its own, mounted beside KServe V2 on the gRPC port.
    pub grpc: Option<GrpcFn>,
    /// The encoded `FileDescriptorSet` of that service's protos, for gRPC reflection.
    pub file_descriptor_set: Option<&'static [u8]>,
}

/// The families a server serves, looked up by platform.
#[derive(Debug, Clone, Default)]
pub struct Families {
    list: Arc<Vec<&'static Family>>,
}

impl Families {
    /// A table of `families`; a platform claimed twice is a programming error, refused.
    pub fn new(families: Vec<&'static Family>) -> Result<Self, String> {
        let mut seen = std::collections::BTreeMap::new();
        for f in &families {
            for p in f.platforms {
                if let Some(other) = seen.insert(*p, f.name) {
                    return Err(format!(
                        "platform '{p}' is claimed by both the {other} and the {} family",
                        f.name
                    ));
                }
            }
        }
        Ok(Self {
            list: Arc::new(families),
        })
    }

    /// The family serving `platform`.
    pub fn find(&self, platform: &str) -> Option<&'static Family> {
        self.list
            .iter()
            .copied()
            .find(|f| f.platforms.contains(&platform))
    }

    /// Every family.
    pub fn iter(&self) -> impl Iterator<Item = &'static Family> + '_ {
        self.list.iter().copied()
    }

    /// Every platform served, sorted (for errors and `--help`).
    pub fn platforms(&self) -> Vec<&'static str> {
        let mut p: Vec<&'static str> = self
            .iter()
            .flat_map(|f| f.platforms.iter().copied())
            .collect();
        p.sort_unstable();
        p
    }

    /// Loads a version with the family its config's platform names.
    pub fn load(&self, cx: &LoadContext<'_>) -> Result<Arc<dyn Servable>, String> {
        let platform = cx.config.platform.as_str();
        let family = self.find(platform).ok_or_else(|| {
            format!(
                "platform '{platform}' is not served by this build (it serves {})",
                self.platforms().join(", ")
            )
        })?;
        (family.load)(cx)
    }
}

/// The model's `[limits]` section read as its family's limits type (defaults for absent
/// keys; an unknown key, or a value of the wrong type, is an error naming it).
pub fn family_limits<T: serde::de::DeserializeOwned>(config: &ModelConfig) -> Result<T, String> {
    toml::Value::Table(config.limits.clone())
        .try_into()
        .map_err(|e| format!("[limits]: {e}"))
}

/// The model's family keys (every `config.toml` key the registry does not read itself, or a
/// `config.pbtxt`'s `parameters` as strings) read as the family's options type.
pub fn family_parameters<T: serde::de::DeserializeOwned>(
    config: &ModelConfig,
) -> Result<T, String> {
    toml::Value::Table(config.parameters.clone())
        .try_into()
        .map_err(|e| format!("config: {e}"))
}
