//! Serving registry models: the files behind `models:/NAME@ALIAS` brought into a local model
//! repository, so the server's ordinary hot reload serves them.
//!
//! One registry source is one served model. Its files move in three steps, each atomic:
//!
//! 1. **fetch**: the version's artifacts are downloaded (MLflow, through the artifact proxy)
//!    or copied (local registry) into a cache, `<cache>/<registry key>/<model>/<version>/`,
//!    through a temporary directory and a rename; a cached version is never fetched again.
//! 2. **stage**: the cached version is copied into the repository as
//!    `<repo>/<served>/<version>/` (temporary directory, rename). The model folder gets a
//!    `config.toml` the first time (the version's own config with `version_policy = "all"`,
//!    so an older version can come back on a rollback) and a `.registry.json` marker that
//!    says which source owns the folder and which version it serves. A folder without the
//!    marker belongs to someone else and is never touched.
//! 3. **retire**: once the server serves the new version, the other version folders are
//!    removed and the model config is refreshed from the served version.
//!
//! Each version folder keeps its own `config.toml` (what `infermesh train` writes), which
//! the serving core prefers over the model-level one, so a version always runs with its own
//! threshold and features.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::local::{LocalRegistryError, copy_tree};
use crate::mlflow::MlflowError;
use crate::promote::{PromoteError, Registry};
use crate::uri::{ModelRef, ModelUri, redact_uri, valid_name};

/// The marker file in a registry-managed model folder.
pub const MARKER: &str = ".registry.json";

/// Sync failures.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The registry could not be reached (the server keeps serving what it has).
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// The registry answered, but the model, alias or version is not there.
    #[error("{0}")]
    NotFound(String),
    /// A bad source or a folder the sync does not own.
    #[error("{0}")]
    Invalid(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Any other registry error.
    #[error("{0}")]
    Registry(String),
}

impl SyncError {
    /// True when the registry could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SyncError::Unreachable(_))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<MlflowError> for SyncError {
    fn from(e: MlflowError) -> Self {
        // Down, or down behind a proxy (502, 503): either way nothing to act on.
        if matches!(e, MlflowError::Unreachable { .. })
            || matches!(e, MlflowError::Api { status, .. } if status >= 500)
        {
            SyncError::Unreachable(e.to_string())
        } else if e.is_not_found() {
            SyncError::NotFound(e.to_string())
        } else {
            SyncError::Registry(e.to_string())
        }
    }
}

impl From<LocalRegistryError> for SyncError {
    fn from(e: LocalRegistryError) -> Self {
        match e {
            LocalRegistryError::NotFound(m) => SyncError::NotFound(m),
            LocalRegistryError::Invalid(m) => SyncError::Invalid(m),
            LocalRegistryError::Io { path, source } => SyncError::Io { path, source },
        }
    }
}

impl From<PromoteError> for SyncError {
    fn from(e: PromoteError) -> Self {
        match e {
            PromoteError::Mlflow(e) => e.into(),
            PromoteError::Local(e) => e.into(),
            PromoteError::NotFound(m) => SyncError::NotFound(m),
            other => SyncError::Registry(other.to_string()),
        }
    }
}

/// One registry model to serve: `[SERVED=]models:/NAME@ALIAS` (or `NAME@ALIAS`,
/// `models:/NAME/VERSION`). The served name defaults to the registered name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySource {
    /// The name the server serves it under.
    pub served: String,
    /// The registered model and the alias or version.
    pub uri: ModelUri,
}

impl FromStr for RegistrySource {
    type Err = SyncError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (served, uri) = match s.split_once('=') {
            Some((served, uri)) => (Some(served.trim()), uri.trim()),
            None => (None, s.trim()),
        };
        let uri: ModelUri = uri
            .parse()
            .map_err(|e: crate::uri::BadModelUri| SyncError::Invalid(e.to_string()))?;
        let served = served.unwrap_or(&uri.name).to_string();
        if !valid_name(&served) {
            return Err(SyncError::Invalid(format!(
                "served model name '{served}' must be letters, digits, '_', '-' or '.'"
            )));
        }
        Ok(Self { served, uri })
    }
}

impl std::fmt::Display for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.served == self.uri.name {
            write!(f, "{}", self.uri)
        } else {
            write!(f, "{}={}", self.served, self.uri)
        }
    }
}

/// What the marker file records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// The source (`models:/fraud@champion`).
    pub uri: String,
    /// The registry it came from (tracking URI without credentials, or directory).
    pub registry: String,
    /// The version served.
    pub version: u64,
}

/// Registry sources in `<repo>/registry.toml`:
///
/// ```toml
/// [[model]]
/// uri = "models:/fraud@champion"
/// name = "fraud"          # optional: the served name
/// ```
pub fn read_repository_sources(repo: &Path) -> Result<Vec<RegistrySource>, SyncError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        model: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        uri: String,
        name: Option<String>,
    }
    let path = repo.join("registry.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&path)(e)),
    };
    let f: File = toml::from_str(&text)
        .map_err(|e| SyncError::Invalid(format!("{}: {}", path.display(), e.message())))?;
    f.model
        .into_iter()
        .map(|e| {
            let spec = match e.name {
                Some(n) => format!("{n}={}", e.uri),
                None => e.uri,
            };
            spec.parse()
                .map_err(|e: SyncError| SyncError::Invalid(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// Moves registry versions into a model repository.
#[derive(Debug, Clone)]
pub struct ModelSync {
    registry: Registry,
    cache: PathBuf,
    repository: PathBuf,
}

impl ModelSync {
    /// A sync from `registry` into `repository`, caching downloads under `cache`.
    pub fn new(
        registry: Registry,
        cache: impl Into<PathBuf>,
        repository: impl Into<PathBuf>,
    ) -> Self {
        Self {
            registry,
            cache: cache.into(),
            repository: repository.into(),
        }
    }

    /// The registry's address (tracking URI or directory), without credentials
    /// ([`redact_uri`]): it is logged, written to the [`MARKER`] and hashed into the cache
    /// path.
    pub fn registry_label(&self) -> String {
        match &self.registry {
            // `uri()` is redacted already; redacting here too keeps this true whatever
            // the client does.
            Registry::Mlflow(c) => redact_uri(c.uri()),
            Registry::Local(r) => r.root().display().to_string(),
        }
    }

    fn model_dir(&self, src: &RegistrySource) -> PathBuf {
        self.repository.join(&src.served)
    }

    /// The version the source points at now.
    pub async fn resolve(&self, src: &RegistrySource) -> Result<u64, SyncError> {
        match &src.uri.reference {
            ModelRef::Version(v) => Ok(*v),
            ModelRef::Alias(alias) => self
                .registry
                .alias_version(&src.uri.name, alias)
                .await?
                .ok_or_else(|| {
                    SyncError::NotFound(format!(
                        "registered model '{}' has no alias '{alias}'",
                        src.uri.name
                    ))
                }),
        }
    }

    /// The cache folder of one version.
    pub fn cache_dir(&self, src: &RegistrySource, version: u64) -> PathBuf {
        let mut h = DefaultHasher::new();
        self.registry_label().hash(&mut h);
        self.cache
            .join(format!("{:016x}", h.finish()))
            .join(&src.uri.name)
            .join(version.to_string())
    }

    /// Brings a version's files into the cache (once); returns the cached folder.
    pub async fn fetch(&self, src: &RegistrySource, version: u64) -> Result<PathBuf, SyncError> {
        let dest = self.cache_dir(src, version);
        if dest.is_dir() {
            return Ok(dest);
        }
        match &self.registry {
            Registry::Mlflow(c) => {
                let uri = c.model_version_download_uri(&src.uri.name, version).await?;
                if let Err(e) = c.download_dir(&uri, "", &dest).await {
                    // Another server sharing the cache may have won the race to the rename.
                    if dest.is_dir() {
                        return Ok(dest);
                    }
                    return Err(e.into());
                }
            }
            Registry::Local(r) => {
                let from = r.version_dir(&src.uri.name, version)?;
                if !from.is_dir() {
                    return Err(SyncError::NotFound(format!(
                        "registered model '{}' has no version {version}",
                        src.uri.name
                    )));
                }
                let parent = dest.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(parent).map_err(io(parent))?;
                let tmp = parent.join(format!(".{version}.partial-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&tmp);
                if let Err(e) = copy_tree(&from, &tmp) {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e.into());
                }
                if let Err(e) = std::fs::rename(&tmp, &dest) {
                    let _ = std::fs::remove_dir_all(&tmp);
                    // Another server sharing the cache may have won the race to the rename.
                    if !dest.is_dir() {
                        return Err(io(&dest)(e));
                    }
                }
            }
        }
        Ok(dest)
    }

    /// The marker of the source's folder: `Ok(None)` when there is no folder yet; an error
    /// when the folder exists but belongs to someone else (no marker, or another source).
    pub fn marker(&self, src: &RegistrySource) -> Result<Option<Marker>, SyncError> {
        let dir = self.model_dir(src);
        if !dir.exists() {
            return Ok(None);
        }
        let path = dir.join(MARKER);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SyncError::Invalid(format!(
                    "{} exists and is not managed by the registry sync (no {MARKER}); \
                     serve {src} under another name or remove the folder",
                    dir.display()
                )));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let m: Marker = serde_json::from_slice(&text)
            .map_err(|e| SyncError::Invalid(format!("{}: {e}", path.display())))?;
        if m.uri != src.uri.to_string() {
            return Err(SyncError::Invalid(format!(
                "{} serves {}, not {}",
                dir.display(),
                m.uri,
                src.uri
            )));
        }
        Ok(Some(m))
    }

    fn write_marker(&self, src: &RegistrySource, version: u64) -> Result<(), SyncError> {
        let m = Marker {
            uri: src.uri.to_string(),
            // Never credentials on disk.
            registry: redact_uri(&self.registry_label()),
            version,
        };
        let text = serde_json::to_vec_pretty(&m).map_err(|e| SyncError::Invalid(e.to_string()))?;
        atomic_write(&self.model_dir(src).join(MARKER), &text)
    }

    /// Copies a cached version into the repository (unless it is there already) and gives a
    /// new model folder its config and marker. Returns the version folder.
    pub fn stage(
        &self,
        src: &RegistrySource,
        version: u64,
        cached: &Path,
    ) -> Result<PathBuf, SyncError> {
        let prior = self.marker(src)?;
        let dir = self.model_dir(src);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        if prior.is_none() {
            // Claim the folder before anything else lands in it.
            self.write_marker(src, version)?;
        }
        let target = dir.join(version.to_string());
        if !target.is_dir() {
            let tmp = dir.join(format!(".{version}.staging-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            if let Err(e) = copy_tree(cached, &tmp) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, &target).map_err(io(&target))?;
        }
        if !dir.join("config.toml").is_file() {
            self.write_model_config(src, version)?;
        }
        Ok(target)
    }

    /// Writes the model-level `config.toml` from a version's own, with every version on disk
    /// selected (the sync, not the version policy, decides what is there). Returns whether
    /// the file changed.
    pub fn write_model_config(
        &self,
        src: &RegistrySource,
        version: u64,
    ) -> Result<bool, SyncError> {
        let dir = self.model_dir(src);
        let own = dir.join(version.to_string()).join("config.toml");
        let text = crate::config::read_config_file(&own).map_err(|e| {
            SyncError::Invalid(format!(
                "{src} version {version} has no readable config.toml ({e}); register the \
                 directory `infermesh train` wrote"
            ))
        })?;
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            SyncError::Invalid(format!("{}: {}", own.display(), e.message()))
        })?;
        table.insert("version_policy".into(), toml::Value::String("all".into()));
        let out = format!(
            "# Written by the registry sync from {src} version {version}; it is replaced when \
             the alias moves.\n{table}"
        );
        let path = dir.join("config.toml");
        if std::fs::read_to_string(&path).is_ok_and(|t| t == out) {
            return Ok(false);
        }
        atomic_write(&path, out.as_bytes())?;
        Ok(true)
    }

    /// After `keep` serves: removes every other version folder, records `keep` in the marker
    /// and refreshes the model config from it. Returns the versions removed.
    pub fn retire_others(&self, src: &RegistrySource, keep: u64) -> Result<Vec<u64>, SyncError> {
        let dir = self.model_dir(src);
        let mut removed = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if v != keep && e.path().is_dir() {
                std::fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
                removed.push(v);
            }
        }
        self.write_marker(src, keep)?;
        self.write_model_config(src, keep)?;
        removed.sort_unstable();
        Ok(removed)
    }

    /// Removes a staged version that did not load (never the one the marker says serves).
    pub fn discard(&self, src: &RegistrySource, version: u64) -> Result<(), SyncError> {
        if self.marker(src)?.is_some_and(|m| m.version == version) {
            return Ok(());
        }
        let target = self.model_dir(src).join(version.to_string());
        match std::fs::remove_dir_all(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&target)(e)),
        }
    }
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), SyncError> {
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::local::LocalRegistry;

    fn version_files(dir: &Path, threshold: f32) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("model.txt"), format!("model {threshold}")).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!("platform = \"lightgbm\"\nthreshold = {threshold}\n"),
        )
        .unwrap();
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn sources_parse_with_and_without_served_names() {
        let s: RegistrySource = "fraud@champion".parse().unwrap();
        assert_eq!(s.served, "fraud");
        assert_eq!(s.to_string(), "models:/fraud@champion");
        let s: RegistrySource = "scorer=models:/fraud/3".parse().unwrap();
        assert_eq!(
            (s.served.as_str(), &s.uri.reference),
            ("scorer", &ModelRef::Version(3))
        );
        assert_eq!(s.to_string(), "scorer=models:/fraud/3");
        for bad in ["fraud", "../x=fraud@a", "=fraud@a", "fraud@7"] {
            assert!(
                matches!(bad.parse::<RegistrySource>(), Err(SyncError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn repository_sources_come_from_registry_toml() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_repository_sources(tmp.path()).unwrap().is_empty());
        std::fs::write(
            tmp.path().join("registry.toml"),
            "[[model]]\nuri = \"models:/fraud@champion\"\n\n[[model]]\nuri = \"recs@prod\"\nname = \"recs2\"\n",
        )
        .unwrap();
        let got = read_repository_sources(tmp.path()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].served, "recs2");
        std::fs::write(tmp.path().join("registry.toml"), "[[model]]\nurl = \"x\"\n").unwrap();
        assert!(matches!(
            read_repository_sources(tmp.path()),
            Err(SyncError::Invalid(_))
        ));
    }

    #[test]
    fn fetch_stage_and_retire_move_one_version_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = LocalRegistry::new(tmp.path().join("reg"));
        let out = tmp.path().join("out");
        version_files(&out, 0.5);
        assert_eq!(reg.register("fraud", &out).unwrap(), 1);
        std::fs::remove_dir_all(&out).unwrap();
        version_files(&out, 0.7);
        assert_eq!(reg.register("fraud", &out).unwrap(), 2);
        reg.set_alias("fraud", "champion", 1).unwrap();

        let repo = tmp.path().join("repo");
        let sync = ModelSync::new(
            Registry::Local(reg.clone()),
            tmp.path().join("cache"),
            &repo,
        );
        let src: RegistrySource = "fraud@champion".parse().unwrap();
        let rt = runtime();
        assert_eq!(sync.marker(&src).unwrap(), None);
        let v = rt.block_on(sync.resolve(&src)).unwrap();
        assert_eq!(v, 1);
        let cached = rt.block_on(sync.fetch(&src, v)).unwrap();
        assert!(cached.join("model.txt").is_file());
        sync.stage(&src, v, &cached).unwrap();
        let cfg = std::fs::read_to_string(repo.join("fraud/config.toml")).unwrap();
        assert!(
            cfg.contains("version_policy = \"all\"") && cfg.contains("threshold = 0.5"),
            "{cfg}"
        );
        assert_eq!(sync.marker(&src).unwrap().unwrap().version, 1);

        // The alias moves: the new version is staged beside the old one, then the old retires.
        reg.set_alias("fraud", "champion", 2).unwrap();
        let v = rt.block_on(sync.resolve(&src)).unwrap();
        let cached = rt.block_on(sync.fetch(&src, v)).unwrap();
        sync.stage(&src, v, &cached).unwrap();
        assert!(repo.join("fraud/1").is_dir() && repo.join("fraud/2").is_dir());
        assert_eq!(sync.retire_others(&src, 2).unwrap(), vec![1]);
        assert!(!repo.join("fraud/1").exists());
        assert_eq!(sync.marker(&src).unwrap().unwrap().version, 2);
        let cfg = std::fs::read_to_string(repo.join("fraud/config.toml")).unwrap();
        assert!(cfg.contains("threshold = 0.7"), "{cfg}");
        // A discarded version never removes the one being served.
        sync.discard(&src, 2).unwrap();
        assert!(repo.join("fraud/2").is_dir());

        // The cache answers without the registry.
        std::fs::remove_dir_all(reg.root().join("fraud/1")).unwrap();
        assert!(rt.block_on(sync.fetch(&src, 1)).is_ok());
        assert!(matches!(
            rt.block_on(sync.fetch(&src, 9)),
            Err(SyncError::NotFound(_))
        ));
    }

    #[test]
    fn folders_it_does_not_own_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("fraud/1")).unwrap();
        let sync = ModelSync::new(
            Registry::Local(LocalRegistry::new(tmp.path().join("reg"))),
            tmp.path().join("cache"),
            &repo,
        );
        let src: RegistrySource = "fraud@champion".parse().unwrap();
        let e = sync.marker(&src).unwrap_err();
        assert!(e.to_string().contains("not managed"), "{e}");
        assert!(sync.stage(&src, 1, tmp.path()).is_err());
        assert!(repo.join("fraud/1").is_dir());
        // A missing alias is not found, not unreachable.
        let e = runtime().block_on(sync.resolve(&src)).unwrap_err();
        assert!(matches!(e, SyncError::NotFound(_)), "{e}");
    }

    #[test]
    fn the_marker_never_holds_tracking_credentials() {
        let tmp = tempfile::tempdir().unwrap();
        let client = crate::MlflowClient::new(
            "http://alice:pw-s3cret@127.0.0.1:5000/?token=tok-s3cret",
            crate::MlflowOptions::default(),
        )
        .unwrap();
        let repo = tmp.path().join("repo");
        let sync = ModelSync::new(Registry::Mlflow(client), tmp.path().join("cache"), &repo);
        assert_eq!(sync.registry_label(), "http://127.0.0.1:5000/");
        assert!(!format!("{sync:?}").contains("s3cret"));
        let cached = tmp.path().join("cached");
        version_files(&cached, 0.5);
        let src: RegistrySource = "fraud@champion".parse().unwrap();
        sync.stage(&src, 1, &cached).unwrap();
        let marker = std::fs::read_to_string(repo.join("fraud").join(MARKER)).unwrap();
        assert!(
            !marker.contains("s3cret") && !marker.contains("alice"),
            "{marker}"
        );
        assert!(marker.contains("127.0.0.1:5000"), "{marker}");
        // Nothing else written holds them either, file names (the cache hash) included.
        let mut stack = vec![tmp.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                assert!(!e.file_name().to_string_lossy().contains("s3cret"));
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let text = std::fs::read(e.path()).unwrap();
                    assert!(!String::from_utf8_lossy(&text).contains("s3cret"));
                }
            }
        }
    }
}
