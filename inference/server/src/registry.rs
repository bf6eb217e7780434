//! Models served from a registry by alias (`--model fraud@champion`): the version behind the
//! alias is brought into the model repository ([`infermesh_registry::sync`]), served, and
//! swapped when the alias moves.
//!
//! A swap loads the new version beside the old one, then moves the model's pin (one atomic
//! store: requests that name no version go to the new version from then on), then retires
//! the old folder. A request in flight keeps the version it started with, so a swap fails
//! none. A new version that does not load is discarded and the old one keeps serving. A
//! registry that is down changes nothing: the server keeps serving what it has, marks the
//! model degraded (`infermesh_registry_degraded`, `infermesh_registry_reachable`) and logs
//! a warning on every failed poll.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infermesh_common::metrics_names as m;
use infermesh_inference::ModelManager;
use infermesh_registry::{
    LocalRegistry, MlflowClient, MlflowOptions, ModelSync, RegistrySource, SyncError,
    promote::Registry,
};

/// Flags of `infermesh serve` for registry models.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Serve a registered model by alias or version: `fraud@champion`,
    /// `models:/fraud@champion`, `models:/fraud/3`, or `NAME=...` to serve it under another
    /// name. Repeatable; `<repo>/registry.toml` may list more ([[model]] uri, name).
    #[arg(long = "model", value_name = "[NAME=]MODEL@ALIAS")]
    pub models: Vec<String>,
    /// MLflow tracking server holding the registered models; without one, the local
    /// registry `--registry` is used.
    #[arg(long, visible_alias = "tracking-uri", env = "INFERMESH_TRACKING_URI")]
    pub registry_uri: Option<String>,
    /// Local registry directory (when no --registry-uri is given).
    #[arg(long, env = "INFERMESH_REGISTRY", default_value = "run/registry")]
    pub registry: PathBuf,
    /// Where downloaded registry versions are cached [default: ~/.cache/infermesh/registry].
    #[arg(long, env = "INFERMESH_REGISTRY_CACHE")]
    pub registry_cache: Option<PathBuf>,
    /// How often to ask the registry where each alias points, in seconds.
    #[arg(long, env = "INFERMESH_REGISTRY_POLL_INTERVAL", default_value_t = 10.0)]
    pub registry_poll_interval: f64,
    /// Allow registry artifacts on this machine's own disk (`file:` URIs and absolute paths,
    /// which an MLflow server without the artifact proxy hands out). Off by default: the
    /// tracking server names the location, and `file:///etc` would copy this machine's files
    /// into the model repository.
    #[arg(long, env = "INFERMESH_ALLOW_LOCAL_ARTIFACTS")]
    pub allow_local_artifacts: bool,
}

impl Default for RegistryArgs {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            registry_uri: None,
            registry: PathBuf::from("run/registry"),
            registry_cache: None,
            registry_poll_interval: 10.0,
            allow_local_artifacts: false,
        }
    }
}

/// The default download cache.
pub fn default_registry_cache() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/infermesh/registry")
}

/// Validated registry serving config.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Moves versions into the repository.
    pub sync: ModelSync,
    /// What to serve.
    pub sources: Vec<RegistrySource>,
    /// Poll interval.
    pub interval: Duration,
}

impl RegistryArgs {
    /// Builds the config (`None` when no registry model is asked for); `repo_sources` are
    /// the entries of the repository's `registry.toml`.
    pub fn validate(
        self,
        repository: &std::path::Path,
        repo_sources: Vec<RegistrySource>,
    ) -> Result<Option<RegistryConfig>, String> {
        let mut sources = repo_sources;
        for spec in &self.models {
            let s: RegistrySource = spec
                .parse()
                .map_err(|e: SyncError| format!("--model: {e}"))?;
            sources.push(s);
        }
        if sources.is_empty() {
            return Ok(None);
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &sources {
            if !seen.insert(s.served.clone()) {
                return Err(format!("model '{}' is asked for twice", s.served));
            }
        }
        if !self.registry_poll_interval.is_finite() || self.registry_poll_interval < 0.1 {
            return Err(format!(
                "--registry-poll-interval must be at least 0.1 seconds, got {}",
                self.registry_poll_interval
            ));
        }
        let registry = match &self.registry_uri {
            Some(uri) => Registry::Mlflow(
                MlflowClient::new(
                    uri,
                    MlflowOptions {
                        allow_local_artifacts: self.allow_local_artifacts,
                        ..MlflowOptions::from_env()
                    },
                )
                .map_err(|e| e.to_string())?,
            ),
            None => Registry::Local(LocalRegistry::new(&self.registry)),
        };
        let cache = self.registry_cache.unwrap_or_else(default_registry_cache);
        let sync = ModelSync::new(registry, cache, repository);
        // A model folder that belongs to a local model or another source is refused here,
        // before anything serves.
        for s in &sources {
            sync.marker(s).map_err(|e| e.to_string())?;
        }
        Ok(Some(RegistryConfig {
            sync,
            sources,
            interval: Duration::from_secs_f64(self.registry_poll_interval),
        }))
    }
}

/// What one sync of one source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The alias still points at the served version.
    Unchanged,
    /// A new version serves now.
    Swapped(u64),
    /// The new version could not be fetched or loaded; the old one keeps serving.
    Failed,
    /// The registry did not answer; what was served keeps serving.
    Unreachable,
    /// The registry answered without the model or alias.
    NotFound,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Swapped(_) => "swapped",
            Outcome::Failed => "failed",
            Outcome::Unreachable => "unreachable",
            Outcome::NotFound => "not_found",
        }
    }
}

/// Keeps the registry models of one server in step with their aliases.
#[derive(Debug)]
pub struct RegistrySync {
    cfg: RegistryConfig,
    manager: Arc<ModelManager>,
    /// Per served model: the version that failed to load (not retried until the alias moves).
    failed: Mutex<HashMap<String, u64>>,
}

impl RegistrySync {
    /// A sync for `manager`'s repository.
    pub fn new(cfg: RegistryConfig, manager: Arc<ModelManager>) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            manager,
            failed: Mutex::new(HashMap::new()),
        })
    }

    /// The sources served.
    pub fn sources(&self) -> &[RegistrySource] {
        &self.cfg.sources
    }

    /// Syncs every source once.
    pub async fn sync_all(&self) -> Vec<Outcome> {
        let mut out = Vec::new();
        for src in &self.cfg.sources {
            let outcome = self.sync_one(src).await;
            metrics::counter!(m::REGISTRY_SYNCS_TOTAL, "model" => src.served.clone(), "outcome" => outcome.label()).increment(1);
            let degraded = matches!(
                outcome,
                Outcome::Failed | Outcome::Unreachable | Outcome::NotFound
            );
            metrics::gauge!(m::REGISTRY_DEGRADED, "model" => src.served.clone())
                .set(f64::from(u8::from(degraded)));
            metrics::gauge!(m::REGISTRY_REACHABLE, "model" => src.served.clone())
                .set(f64::from(u8::from(outcome != Outcome::Unreachable)));
            out.push(outcome);
        }
        out
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ModelSync, &ModelManager) -> T + Send + 'static,
    ) -> Result<T, SyncError> {
        let (sync, mgr) = (self.cfg.sync.clone(), self.manager.clone());
        tokio::task::spawn_blocking(move || f(&sync, &mgr))
            .await
            .map_err(|e| SyncError::Registry(format!("sync task: {e}")))
    }

    async fn sync_one(&self, src: &RegistrySource) -> Outcome {
        let served = src.served.clone();
        let marker = match self.cfg.sync.marker(src) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(model = %served, source = %src, error = %e, "cannot serve registry model");
                return Outcome::Failed;
            }
        };
        // After a restart, the version on disk answers until the registry says otherwise.
        let have = marker.as_ref().map(|mk| mk.version);
        if let Some(v) = have
            && self.manager.pinned(&served).is_none()
        {
            self.manager.pin(&served, Some(v));
            metrics::gauge!(m::REGISTRY_SERVED_VERSION, "model" => served.clone()).set(v as f64);
        }
        let version = match self.cfg.sync.resolve(src).await {
            Ok(v) => v,
            Err(e) => {
                let outcome = if e.is_unreachable() {
                    Outcome::Unreachable
                } else if matches!(e, SyncError::NotFound(_)) {
                    Outcome::NotFound
                } else {
                    Outcome::Failed
                };
                match have {
                    Some(v) => tracing::warn!(model = %served, source = %src, error = %e,
                        serving = v, "registry sync failed; still serving the version on disk (degraded)"),
                    None => tracing::error!(model = %served, source = %src, error = %e,
                        "registry sync failed and nothing is on disk yet; model not served"),
                }
                return outcome;
            }
        };
        let serving = |mgr: &ModelManager, v: u64| mgr.get(&served, Some(&v.to_string())).is_ok();
        if have == Some(version) && serving(&self.manager, version) {
            self.manager.pin(&served, Some(version));
            return Outcome::Unchanged;
        }
        if self.lock_failed().get(&served) == Some(&version) {
            return Outcome::Failed;
        }
        match self.swap(src, version).await {
            Ok(()) => {
                self.lock_failed().remove(&served);
                metrics::gauge!(m::REGISTRY_SERVED_VERSION, "model" => served.clone())
                    .set(version as f64);
                tracing::info!(model = %served, source = %src, version, previous = ?have, "registry model swapped");
                Outcome::Swapped(version)
            }
            Err(e) => {
                self.lock_failed().insert(served.clone(), version);
                tracing::error!(model = %served, source = %src, version, error = %e, serving = ?have,
                    "new registry version not served; the previous one keeps serving");
                Outcome::Failed
            }
        }
    }

    async fn swap(&self, src: &RegistrySource, version: u64) -> Result<(), SyncError> {
        let cached = self.cfg.sync.fetch(src, version).await?;
        let s = src.clone();
        // Stage beside the version that serves, and load it; nothing switches yet.
        let loaded = self
            .blocking(move |sync, mgr| -> Result<Option<String>, SyncError> {
                sync.stage(&s, version, &cached)?;
                let status = mgr
                    .refresh_model(&s.served)
                    .map_err(|e| SyncError::Invalid(e.message))?;
                Ok(match status.versions.get(&version) {
                    Some(v) if v.loaded.is_some() => None,
                    Some(v) => Some(v.error.clone().unwrap_or_else(|| "not loaded".into())),
                    None => Some(
                        status
                            .error
                            .clone()
                            .unwrap_or_else(|| "the version is not in the repository".into()),
                    ),
                })
            })
            .await??;
        if let Some(why) = loaded {
            let s = src.clone();
            self.blocking(move |sync, mgr| {
                let _ = sync.discard(&s, version);
                let _ = mgr.refresh_model(&s.served);
            })
            .await?;
            return Err(SyncError::Invalid(format!(
                "version {version} failed to load: {why}"
            )));
        }
        // The switch: one atomic store.
        self.manager.pin(&src.served, Some(version));
        let s = src.clone();
        self.blocking(move |sync, mgr| -> Result<(), SyncError> {
            let removed = sync.retire_others(&s, version)?;
            mgr.refresh_model(&s.served)
                .map_err(|e| SyncError::Invalid(e.message))?;
            if !removed.is_empty() {
                tracing::info!(model = %s.served, ?removed, "retired registry versions");
            }
            Ok(())
        })
        .await?
    }

    /// Syncs every `interval` on a Tokio task until the handle is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.cfg.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.sync_all().await;
            }
        })
    }
}
