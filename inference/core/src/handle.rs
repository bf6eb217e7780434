//! A loaded model version: its config, and the family's [`Servable`] that answers for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use infermesh_common::ServiceError;
use infermesh_registry::{ModelConfig, VersionEntry};

use crate::monitor::VersionMonitor;
use crate::servable::{Description, Families, LoadContext, Servable};
use crate::tensor::{OutputTensor, V2Request};

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
    /// Fingerprint of the version folder when it was loaded.
    pub fingerprint: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    servable: Arc<dyn Servable>,
    monitor: Option<Arc<dyn VersionMonitor>>,
    dir: Option<PathBuf>,
    feature_names: Option<Vec<String>>,
}

impl LoadedVersion {
    /// Loads the artifact of `entry` with the family its config names. A `config.toml`
    /// inside the version folder (what `infermesh train` writes beside its artifacts) is that
    /// version's own config and wins over the model-level one, so versions with different
    /// thresholds or features coexist.
    pub fn load(
        config: Arc<ModelConfig>,
        entry: &VersionEntry,
        families: &Families,
    ) -> Result<Self, String> {
        let own = entry.dir.join("config.toml");
        let config = if own.is_file() {
            let text = infermesh_registry::config::read_config_file(&own)
                .map_err(|e| format!("{}: {e}", own.display()))?;
            let mut c = ModelConfig::from_toml(&config.name, &text)
                .map_err(|e| format!("version {}: {e}", entry.version))?;
            c.version_policy = config.version_policy.clone();
            Arc::new(c)
        } else {
            config
        };
        let servable = families.load(&LoadContext {
            config: &config,
            version: entry.version,
            dir: &entry.dir,
        })?;
        let mut loaded = Self::new(config, entry.version, entry.fingerprint, servable);
        loaded.dir = Some(entry.dir.clone());
        Ok(loaded)
    }

    /// Wraps an already loaded servable (loaders and tests).
    pub fn new(
        config: Arc<ModelConfig>,
        version: u64,
        fingerprint: u64,
        servable: Arc<dyn Servable>,
    ) -> Self {
        // The family's `feature_names` parameter, split once here rather than per request.
        let feature_names = servable
            .description()
            .parameters
            .iter()
            .find(|(k, _)| k == "feature_names")
            .map(|(_, v)| v.split(',').map(str::to_string).collect());
        Self {
            name: config.name.clone(),
            version,
            config,
            fingerprint,
            loaded_at: SystemTime::now(),
            servable,
            monitor: None,
            dir: None,
            feature_names,
        }
    }

    /// The names of the family's input columns (its description's `feature_names`
    /// parameter), if it has them.
    pub fn feature_names(&self) -> Option<&[String]> {
        self.feature_names.as_deref()
    }

    /// The version folder it was loaded from (None: built in memory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The version with `monitor` watching its requests (see [`crate::monitor`]).
    pub fn with_monitor(mut self, monitor: Option<Arc<dyn VersionMonitor>>) -> Self {
        self.monitor = monitor;
        self
    }

    /// The version's monitor, if it is watched.
    pub fn monitor(&self) -> Option<&Arc<dyn VersionMonitor>> {
        self.monitor.as_ref()
    }

    /// The family's servable.
    pub fn servable(&self) -> &Arc<dyn Servable> {
        &self.servable
    }

    /// The version's signature and configuration.
    pub fn description(&self) -> &Description {
        self.servable.description()
    }

    /// The family's own type `T` (typed services: a fraud API needs a tree model's
    /// contributions, an embedding API a text model's tokenizer), or INVALID_ARGUMENT naming
    /// the model's platform and what was `wanted`.
    pub fn family<T: Servable>(&self, wanted: &str) -> Result<&T, ServiceError> {
        self.servable.as_any().downcast_ref::<T>().ok_or_else(|| {
            ServiceError::invalid(format!(
                "model '{}' is a {} model, not a {wanted} one",
                self.name, self.config.platform
            ))
        })
    }

    /// A short name of the artifact format (`xgboost_json`, `lightgbm`, `bert-embedding`...).
    pub fn format(&self) -> &str {
        &self.description().format
    }

    /// A size for logs (features, embedding width, catalogue size).
    pub fn width(&self) -> usize {
        self.description().width
    }

    /// Why this version can no longer serve (its backend panicked while running a request),
    /// if so. A failed version is not ready; it serves again once reloaded.
    pub fn failure(&self) -> Option<String> {
        self.servable.failure()
    }

    /// Budget units admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.servable.in_flight()
    }

    /// Answers a V2 request: output names the request asks for are checked against the
    /// signature before anything runs, and only those are returned (all when none is named).
    pub async fn infer(&self, request: V2Request) -> Result<Vec<OutputTensor>, ServiceError> {
        self.infer_with_id(request, "").await
    }

    /// [`LoadedVersion::infer`] for a request with id `id` (which the version's monitor may
    /// log when the model's config allows it).
    pub async fn infer_with_id(
        &self,
        request: V2Request,
        id: &str,
    ) -> Result<Vec<OutputTensor>, ServiceError> {
        let known = &self.description().outputs;
        if let Some(o) = request
            .outputs
            .iter()
            .find(|w| !known.iter().any(|k| &k.name == *w))
        {
            return Err(ServiceError::invalid(format!(
                "unknown output '{o}': the model's outputs are {}",
                known
                    .iter()
                    .map(|k| format!("'{}'", k.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let wanted = request.outputs.clone();
        let pending = crate::monitor::observe_request(self, &request, id);
        let mut outputs = self.servable.infer(request).await?;
        if !wanted.is_empty() {
            outputs.retain(|o| wanted.contains(&o.name));
        }
        if let Some(p) = pending {
            p.finish(&outputs);
        }
        Ok(outputs)
    }
}
