//! The repository manager: which model versions are served, and hot reload.
//!
//! The served set is an immutable map swapped atomically ([`ArcSwap`]): readers never lock,
//! and a request that already holds an `Arc<LoadedVersion>` keeps it until it answers, so a
//! reload or unload never fails a request in flight. Reloads are serialised by a mutex.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use infermesh_common::{ServiceError, metrics_names as m};
use infermesh_registry::{ModelConfig, ModelEntry, scan, scan_model};

use crate::handle::LoadedVersion;
use crate::monitor::MonitorFactory;
use crate::servable::Families;

/// Where models come from and how often to look again.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The local model repository.
    pub repository: PathBuf,
    /// How often to rescan it; `None` disables polling (the repository API still works).
    pub poll_interval: Option<Duration>,
    /// The model families this server serves, by platform.
    pub families: Families,
    /// Gives each loaded version its monitor (inference log, live drift); None: none is
    /// watched.
    pub monitor: Option<Arc<dyn MonitorFactory>>,
}

/// One version's state.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    /// The version being served, if any.
    pub loaded: Option<Arc<LoadedVersion>>,
    /// Why the version (or its latest reload) failed, if it did. A version whose reload failed
    /// keeps serving its previous artifact and reports the failure here.
    pub error: Option<String>,
    /// Fingerprint of the version folder at the last load attempt: an unchanged folder is not
    /// loaded again on every poll (a broken artifact is reported once, not every interval).
    pub fingerprint: u64,
}

/// One model's state.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    /// Model name.
    pub name: String,
    /// The config, when it could be read.
    pub config: Option<Arc<ModelConfig>>,
    /// Why the model cannot be served at all (bad or missing config), if so.
    pub error: Option<String>,
    /// Versions the policy selects.
    pub versions: BTreeMap<u64, VersionStatus>,
    config_fingerprint: u64,
}

impl VersionStatus {
    /// The loaded version when it can serve (loaded, and its backend has not failed).
    pub fn ready(&self) -> Option<&Arc<LoadedVersion>> {
        self.loaded.as_ref().filter(|l| l.failure().is_none())
    }

    /// Why the version does not serve, or why its latest reload failed.
    pub fn reason(&self) -> Option<String> {
        self.loaded
            .as_ref()
            .and_then(|l| l.failure())
            .or_else(|| self.error.clone())
    }
}

impl ModelStatus {
    /// The highest version that is ready.
    pub fn latest_ready(&self) -> Option<&Arc<LoadedVersion>> {
        self.versions.values().rev().find_map(VersionStatus::ready)
    }
    /// True when at least one version serves.
    pub fn is_ready(&self) -> bool {
        self.latest_ready().is_some()
    }
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, empty for a model-level state.
    pub version: String,
    /// `READY`, `UNAVAILABLE`.
    pub state: String,
    /// Why it is not ready.
    pub reason: String,
}

type ServedMap = BTreeMap<String, Arc<ModelStatus>>;

/// Serves the models of one repository.
#[derive(Debug)]
pub struct ModelManager {
    cfg: ManagerConfig,
    models: ArcSwap<ServedMap>,
    unloaded: Mutex<BTreeSet<String>>,
    reload: Mutex<()>,
    /// The version a model answers with when a request names none (a registry alias's
    /// version); models without a pin answer with their highest ready version.
    pins: ArcSwap<BTreeMap<String, u64>>,
}

impl ModelManager {
    /// Creates a manager and loads the repository once. An unreadable repository is an error
    /// (nothing could ever be served); broken models are not.
    pub fn open(cfg: ManagerConfig) -> Result<Arc<Self>, ServiceError> {
        if !cfg.repository.is_dir() {
            return Err(ServiceError::not_found(format!(
                "model repository {} is not a directory",
                cfg.repository.display()
            )));
        }
        let mgr = Arc::new(Self {
            cfg,
            models: ArcSwap::from_pointee(ServedMap::new()),
            unloaded: Mutex::new(BTreeSet::new()),
            reload: Mutex::new(()),
            pins: ArcSwap::from_pointee(BTreeMap::new()),
        });
        mgr.reconcile();
        Ok(mgr)
    }

    /// The repository directory.
    pub fn repository(&self) -> &std::path::Path {
        &self.cfg.repository
    }

    /// The model families this manager loads with.
    pub fn families(&self) -> &Families {
        &self.cfg.families
    }

    /// A snapshot of every model's state.
    pub fn models(&self) -> Arc<ServedMap> {
        self.models.load_full()
    }

    /// The state of one model.
    pub fn model(&self, name: &str) -> Result<Arc<ModelStatus>, ServiceError> {
        self.models
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("unknown model '{name}'")))
    }

    /// The version to answer a request: `version` if given (it must be served and ready),
    /// else the pinned one when it is ready, else the highest ready one.
    pub fn get(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedVersion>, ServiceError> {
        let status = self.model(name)?;
        match version.filter(|v| !v.is_empty()) {
            None => self
                .pins
                .load()
                .get(name)
                .and_then(|p| status.versions.get(p))
                .and_then(VersionStatus::ready)
                .or_else(|| status.latest_ready())
                .cloned()
                .ok_or_else(|| {
                    let why = status
                        .error
                        .clone()
                        .or_else(|| {
                            status
                                .versions
                                .values()
                                .rev()
                                .find_map(VersionStatus::reason)
                        })
                        .unwrap_or_else(|| "no version is on disk".into());
                    ServiceError::unavailable(format!("model '{name}' is not ready: {why}"))
                }),
            Some(v) => {
                let n: u64 = v.parse().map_err(|_| {
                    ServiceError::invalid(format!(
                        "model version '{v}' is not a non-negative integer"
                    ))
                })?;
                let vs = status.versions.get(&n).ok_or_else(|| {
                    ServiceError::not_found(format!("model '{name}' has no version {n}"))
                })?;
                vs.ready().cloned().ok_or_else(|| {
                    ServiceError::unavailable(format!(
                        "model '{name}' version {n} is not ready: {}",
                        vs.reason().as_deref().unwrap_or("loading")
                    ))
                })
            }
        }
    }

    /// Every model and version with its state (the repository extension's index).
    pub fn index(&self) -> Vec<IndexEntry> {
        let mut out = Vec::new();
        for (name, st) in self.models.load().iter() {
            if let Some(err) = &st.error {
                out.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE".into(),
                    reason: err.clone(),
                });
            }
            for (v, vs) in &st.versions {
                out.push(IndexEntry {
                    name: name.clone(),
                    version: v.to_string(),
                    state: if vs.ready().is_some() {
                        "READY"
                    } else {
                        "UNAVAILABLE"
                    }
                    .into(),
                    reason: vs.reason().unwrap_or_default(),
                });
            }
        }
        for name in self.lock_unloaded().iter() {
            out.push(IndexEntry {
                name: name.clone(),
                version: String::new(),
                state: "UNAVAILABLE".into(),
                reason: "unloaded".into(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
        out
    }

    fn lock_unloaded(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.unloaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes requests that name no version go to `version` of `name` while it is ready
    /// (`None` returns to the highest ready version). The switch is one atomic store.
    pub fn pin(&self, name: &str, version: Option<u64>) {
        self.pins.rcu(|pins| {
            let mut next = (**pins).clone();
            match version {
                Some(v) => next.insert(name.to_string(), v),
                None => next.remove(name),
            };
            next
        });
    }

    /// The pinned version of `name`, if any.
    pub fn pinned(&self, name: &str) -> Option<u64> {
        self.pins.load().get(name).copied()
    }

    /// Rescans one model now, as a poll would (new versions load, removed ones retire,
    /// changed ones reload; unchanged ones keep serving untouched). An unloaded model stays
    /// unloaded. Blocking: call from a blocking context.
    pub fn refresh_model(&self, name: &str) -> Result<Arc<ModelStatus>, ServiceError> {
        let dir = self.model_dir(name)?;
        if self.lock_unloaded().contains(name) {
            return Err(ServiceError::unavailable(format!(
                "model '{name}' was unloaded; load it through the repository API"
            )));
        }
        let _g = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.is_dir() {
            let mut next = (*self.models.load_full()).clone();
            next.remove(name);
            self.models.store(Arc::new(next));
            return Err(ServiceError::not_found(format!(
                "model '{name}' is not in the repository"
            )));
        }
        Ok(self.rescan_one(name, &dir, false))
    }

    /// Scans one model folder, builds its status on the current one (`force`: retry every
    /// version) and swaps it in. The caller holds the reload lock.
    fn rescan_one(&self, name: &str, dir: &std::path::Path, force: bool) -> Arc<ModelStatus> {
        let current = self.models.load_full();
        let status = Arc::new(build_status(
            scan_model(name, dir),
            current.get(name),
            force,
            &self.cfg,
        ));
        let mut next = (*current).clone();
        next.insert(name.to_string(), status.clone());
        self.models.store(Arc::new(next));
        publish_ready(&status);
        status
    }

    /// Loads (or reloads) one model from the repository, undoing an earlier unload. Blocking:
    /// call from a blocking context.
    pub fn load_model(&self, name: &str) -> Result<Arc<ModelStatus>, ServiceError> {
        let dir = self.model_dir(name)?;
        if !dir.is_dir() {
            return Err(ServiceError::not_found(format!(
                "model '{name}' is not in the repository"
            )));
        }
        self.lock_unloaded().remove(name);
        let _g = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        // An explicit load retries every version, including ones that failed before; a failed
        // retry keeps what was serving.
        let status = self.rescan_one(name, &dir, true);
        if let Some(err) = &status.error {
            return Err(ServiceError::invalid(format!(
                "model '{name}' failed to load: {err}"
            )));
        }
        if !status.is_ready() {
            let why = status
                .versions
                .values()
                .find_map(|v| v.error.clone())
                .unwrap_or_else(|| "no version is on disk".into());
            return Err(ServiceError::invalid(format!(
                "model '{name}' failed to load: {why}"
            )));
        }
        Ok(status)
    }

    /// Stops serving a model until it is loaded again (polling does not bring it back).
    /// Blocking: call from a blocking context. When nothing else holds the model, it is freed
    /// here, after its batchers have answered what was queued.
    pub fn unload_model(&self, name: &str) -> Result<(), ServiceError> {
        let _g = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.models.load_full();
        if !current.contains_key(name) {
            return Err(ServiceError::not_found(format!(
                "model '{name}' is not loaded"
            )));
        }
        self.lock_unloaded().insert(name.to_string());
        let mut next = (*current).clone();
        if let Some(old) = next.remove(name) {
            for v in old.versions.keys() {
                metrics::counter!(m::MODEL_LOAD_EVENTS_TOTAL, "model" => name.to_string(), "version" => v.to_string(), "event" => "unloaded").increment(1);
            }
        }
        metrics::gauge!(m::MODELS_READY, "model" => name.to_string()).set(0.0);
        self.models.store(Arc::new(next));
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf, ServiceError> {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Err(ServiceError::invalid(format!(
                "'{name}' is not a model name"
            )));
        }
        Ok(self.cfg.repository.join(name))
    }

    /// Rescans the repository and swaps in the new served set: new versions load, removed
    /// ones retire, changed ones reload. Blocking: call from a blocking context.
    pub fn reconcile(&self) {
        let _g = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let snap = match scan(&self.cfg.repository) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot scan the model repository; keeping what is served");
                return;
            }
        };
        let current = self.models.load_full();
        let unloaded = self.lock_unloaded().clone();
        let mut next = ServedMap::new();
        for (name, entry) in snap.models {
            if unloaded.contains(&name) {
                continue;
            }
            let prev = current.get(&name);
            // Unchanged models keep their Arc: no work, no churn.
            if let Some(p) = prev
                && p.config_fingerprint == entry.config_fingerprint
                && same_versions(p, &entry)
            {
                next.insert(name, p.clone());
                continue;
            }
            let status = Arc::new(build_status(entry, prev, false, &self.cfg));
            publish_ready(&status);
            next.insert(name, status);
        }
        for (name, old) in current.iter() {
            if !next.contains_key(name) && !unloaded.contains(name) {
                tracing::info!(model = %name, "model removed from the repository; retired");
                for v in old.versions.keys() {
                    metrics::counter!(m::MODEL_LOAD_EVENTS_TOTAL, "model" => name.clone(), "version" => v.to_string(), "event" => "unloaded").increment(1);
                }
                metrics::gauge!(m::MODELS_READY, "model" => name.clone()).set(0.0);
            }
        }
        self.models.store(Arc::new(next));
    }

    /// Rescans every `interval` on a Tokio task until the returned handle is aborted.
    pub fn spawn_poller(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let mgr = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let m = mgr.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || m.reconcile()).await {
                    tracing::error!(error = %e, "repository poll failed");
                }
            }
        })
    }
}

fn same_versions(prev: &ModelStatus, entry: &ModelEntry) -> bool {
    prev.versions.len() == entry.versions.len()
        && entry.versions.iter().all(|v| {
            prev.versions
                .get(&v.version)
                .is_some_and(|s| s.fingerprint == v.fingerprint)
        })
}

fn build_status(
    entry: ModelEntry,
    prev: Option<&Arc<ModelStatus>>,
    force: bool,
    cfg: &ManagerConfig,
) -> ModelStatus {
    let name = entry.name.clone();
    let config = match entry.config {
        Ok(c) => Arc::new(c),
        Err(reason) => {
            tracing::error!(model = %name, %reason, "model config is invalid; model not served");
            metrics::counter!(m::MODEL_LOAD_EVENTS_TOTAL, "model" => name.clone(), "version" => "", "event" => "failed").increment(1);
            return ModelStatus {
                name,
                config: None,
                error: Some(reason),
                versions: BTreeMap::new(),
                config_fingerprint: entry.config_fingerprint,
            };
        }
    };
    let config_changed = prev.is_none_or(|p| p.config_fingerprint != entry.config_fingerprint);
    let mut versions = BTreeMap::new();
    for v in &entry.versions {
        let prev_status = prev.and_then(|p| p.versions.get(&v.version));
        // A version with its own config.toml does not use the model-level one: a change
        // there does not reload it (its own file is in its fingerprint).
        let uses_model_config = !v.dir.join("config.toml").is_file();
        if let Some(ps) = prev_status
            && !force
            && !(config_changed && uses_model_config)
            && ps.fingerprint == v.fingerprint
        {
            versions.insert(v.version, ps.clone());
            continue;
        }
        let old = prev_status.and_then(|s| s.loaded.clone());
        let started = std::time::Instant::now();
        match LoadedVersion::load(config.clone(), v, &cfg.families) {
            Ok(loaded) => {
                let monitor = cfg.monitor.as_ref().and_then(|f| f.attach(&loaded));
                let loaded = loaded.with_monitor(monitor);
                tracing::info!(
                    model = %name, version = v.version, width = loaded.width(),
                    format = loaded.format(), elapsed_ms = started.elapsed().as_millis() as u64,
                    "model version loaded"
                );
                metrics::counter!(m::MODEL_LOAD_EVENTS_TOTAL, "model" => name.clone(), "version" => v.version.to_string(), "event" => "loaded").increment(1);
                versions.insert(
                    v.version,
                    VersionStatus {
                        loaded: Some(Arc::new(loaded)),
                        error: None,
                        fingerprint: v.fingerprint,
                    },
                );
            }
            Err(reason) => {
                tracing::error!(model = %name, version = v.version, %reason, "model version failed to load");
                metrics::counter!(m::MODEL_LOAD_EVENTS_TOTAL, "model" => name.clone(), "version" => v.version.to_string(), "event" => "failed").increment(1);
                // A failed reload keeps the previous artifact serving.
                versions.insert(
                    v.version,
                    VersionStatus {
                        loaded: old,
                        error: Some(reason),
                        fingerprint: v.fingerprint,
                    },
                );
            }
        }
    }
    if let Some(p) = prev {
        for v in p.versions.keys() {
            if !versions.contains_key(v) {
                tracing::info!(model = %name, version = v, "model version retired");
                metrics::counter!(m::MODEL_LOAD_EVENTS_TOTAL, "model" => name.clone(), "version" => v.to_string(), "event" => "unloaded").increment(1);
            }
        }
    }
    ModelStatus {
        name,
        config: Some(config),
        error: None,
        versions,
        config_fingerprint: entry.config_fingerprint,
    }
}

fn publish_ready(status: &ModelStatus) {
    let ready = status
        .versions
        .values()
        .filter(|v| v.ready().is_some())
        .count();
    metrics::gauge!(m::MODELS_READY, "model" => status.name.clone()).set(ready as f64);
}
