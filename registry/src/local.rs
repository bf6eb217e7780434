//! The local registry: MLflow's version and alias semantics over a directory, for when no
//! tracking server is configured (the embedded default, a laptop).
//!
//! It is a model repository ([`crate::repository`]) with one more file per model:
//!
//! ```text
//! <root>/<model>/<version>/...     # integer versions, as the server reads them
//! <root>/<model>/aliases.json      # {"champion": 3, "challenger": 4}
//! ```
//!
//! Versions are written to a temporary directory and renamed into place, so a reader never
//! sees half a version; `aliases.json` is replaced the same way. Writers take an exclusive
//! lock on `<root>/<model>/.lock`, so two registrations never get the same number.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::uri::valid_name;

/// Local registry failures.
#[derive(Debug, thiserror::Error)]
pub enum LocalRegistryError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A bad name, alias or version.
    #[error("{0}")]
    Invalid(String),
    /// No such model, version or alias.
    #[error("{0}")]
    NotFound(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalRegistryError + '_ {
    move |source| LocalRegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A registry directory.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    root: PathBuf,
}

/// The alias file of one model.
const ALIASES: &str = "aliases.json";

impl LocalRegistry {
    /// The registry at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf, LocalRegistryError> {
        if !valid_name(name) {
            return Err(LocalRegistryError::Invalid(format!(
                "model name '{name}' must be letters, digits, '_', '-' or '.'"
            )));
        }
        Ok(self.root.join(name))
    }

    /// The directory of one version.
    pub fn version_dir(&self, name: &str, version: u64) -> Result<PathBuf, LocalRegistryError> {
        Ok(self.model_dir(name)?.join(version.to_string()))
    }

    fn lock(&self, name: &str) -> Result<File, LocalRegistryError> {
        let dir = self.model_dir(name)?;
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        f.lock().map_err(io(&path))?;
        Ok(f)
    }

    /// The versions of `name`, ascending (none when the model does not exist).
    pub fn versions(&self, name: &str) -> Result<Vec<u64>, LocalRegistryError> {
        let dir = self.model_dir(name)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io(&dir))?;
            if let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok())
                && v > 0
                && e.path().is_dir()
            {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Copies the files of `from` (a directory) in as the next version of `name`; returns it.
    pub fn register(&self, name: &str, from: &Path) -> Result<u64, LocalRegistryError> {
        if !from.is_dir() {
            return Err(LocalRegistryError::NotFound(format!(
                "{} is not a directory",
                from.display()
            )));
        }
        let _lock = self.lock(name)?;
        let version = self.versions(name)?.last().copied().unwrap_or(0) + 1;
        let dir = self.model_dir(name)?;
        let tmp = dir.join(format!(".incoming-{version}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let copied = copy_tree(from, &tmp);
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let target = dir.join(version.to_string());
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        Ok(version)
    }

    /// Registers the version folder `from` as the next version of `name` (as
    /// [`LocalRegistry::register`]), gives the model folder the version's `config.toml` when
    /// it has none yet (the config a repository serves the model with), and points `alias` at
    /// the new version; returns it. What `train fraud` and `train anomaly` do with
    /// `--register`.
    pub fn register_as(
        &self,
        name: &str,
        from: &Path,
        alias: &str,
    ) -> Result<u64, LocalRegistryError> {
        check_alias(alias)?;
        let version = self.register(name, from)?;
        let model_config = self.model_dir(name)?.join("config.toml");
        let version_config = from.join("config.toml");
        if !model_config.exists() && version_config.is_file() {
            std::fs::copy(&version_config, &model_config).map_err(io(&model_config))?;
        }
        self.set_alias(name, alias, version)?;
        Ok(version)
    }

    /// The aliases of `name` (empty when it has none).
    pub fn aliases(&self, name: &str) -> Result<BTreeMap<String, u64>, LocalRegistryError> {
        let path = self.model_dir(name)?.join(ALIASES);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| LocalRegistryError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn write_aliases(
        &self,
        name: &str,
        aliases: &BTreeMap<String, u64>,
    ) -> Result<(), LocalRegistryError> {
        let dir = self.model_dir(name)?;
        let path = dir.join(ALIASES);
        let tmp = dir.join(format!(".{ALIASES}.{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        let text = serde_json::to_vec_pretty(aliases)
            .map_err(|e| LocalRegistryError::Invalid(e.to_string()))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Points `alias` of `name` at an existing `version`; returns the version it pointed at
    /// before, if any.
    pub fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
    ) -> Result<Option<u64>, LocalRegistryError> {
        check_alias(alias)?;
        let _lock = self.lock(name)?;
        if !self.versions(name)?.contains(&version) {
            return Err(LocalRegistryError::NotFound(format!(
                "model '{name}' has no version {version}"
            )));
        }
        let mut aliases = self.aliases(name)?;
        let before = aliases.insert(alias.to_string(), version);
        self.write_aliases(name, &aliases)?;
        Ok(before)
    }

    /// The version `alias` points at, if any.
    pub fn get_by_alias(&self, name: &str, alias: &str) -> Result<Option<u64>, LocalRegistryError> {
        Ok(self.aliases(name)?.get(alias).copied())
    }

    /// Removes an alias; returns the version it pointed at.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<Option<u64>, LocalRegistryError> {
        let _lock = self.lock(name)?;
        let mut aliases = self.aliases(name)?;
        let before = aliases.remove(alias);
        if before.is_some() {
            self.write_aliases(name, &aliases)?;
        }
        Ok(before)
    }
}

fn check_alias(alias: &str) -> Result<(), LocalRegistryError> {
    if !valid_name(alias)
        || alias.bytes().all(|b| b.is_ascii_digit())
        || alias.eq_ignore_ascii_case("latest")
    {
        return Err(LocalRegistryError::Invalid(format!(
            "alias '{alias}' must be letters, digits, '_', '-' or '.', not a number or 'latest'"
        )));
    }
    Ok(())
}

/// Deepest directory nesting [`copy_tree`] copies.
const MAX_COPY_DEPTH: usize = 64;

/// Copies the regular files and directories under `from` into `to` (created).
///
/// A symbolic link anywhere below `from` is refused (an error naming it), never followed:
/// a link to a parent directory would recurse forever, and one to `/etc/shadow` would copy
/// this machine's files into a registry or a model repository. Refusing rather than skipping
/// means a version never arrives silently without a file it links to; `cp -rL` the directory
/// first to register what the links point at. `from` itself may be a link (the caller named
/// it). Other special files (sockets, FIFOs) are skipped.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), LocalRegistryError> {
    copy_tree_at(from, to, 0)
}

fn copy_tree_at(from: &Path, to: &Path, depth: usize) -> Result<(), LocalRegistryError> {
    if depth > MAX_COPY_DEPTH {
        return Err(LocalRegistryError::Invalid(format!(
            "{} is more than {MAX_COPY_DEPTH} directories deep",
            from.display()
        )));
    }
    std::fs::create_dir_all(to).map_err(io(to))?;
    for e in std::fs::read_dir(from).map_err(io(from))? {
        let e = e.map_err(io(from))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        // The entry's own type: `DirEntry::file_type` does not follow links.
        let ft = e.file_type().map_err(io(&src))?;
        if ft.is_symlink() {
            return Err(LocalRegistryError::Invalid(format!(
                "{} is a symbolic link; links are not followed (copy what it points at, \
                 e.g. `cp -rL`, before registering)",
                src.display()
            )));
        } else if ft.is_dir() {
            copy_tree_at(&src, &dst, depth + 1)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn model_files(dir: &Path, text: &str) {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("model.txt"), text).unwrap();
        std::fs::write(dir.join("sub/card.json"), "{}").unwrap();
    }

    #[test]
    fn register_as_gives_the_model_its_config_once_and_checks_the_alias_first() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = LocalRegistry::new(tmp.path().join("reg"));
        let v1 = tmp.path().join("v1");
        model_files(&v1, "one");
        std::fs::write(v1.join("config.toml"), "platform = \"a\"\n").unwrap();
        assert_eq!(reg.register_as("m", &v1, "challenger").unwrap(), 1);
        let model_config = tmp.path().join("reg/m/config.toml");
        assert_eq!(
            std::fs::read_to_string(&model_config).unwrap(),
            "platform = \"a\"\n"
        );
        assert_eq!(reg.get_by_alias("m", "challenger").unwrap(), Some(1));
        // A later version's config does not replace the model's.
        std::fs::write(v1.join("config.toml"), "platform = \"b\"\n").unwrap();
        assert_eq!(reg.register_as("m", &v1, "challenger").unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&model_config).unwrap(),
            "platform = \"a\"\n"
        );
        // A bad alias registers nothing.
        assert!(reg.register_as("m", &v1, "bad alias!").is_err());
        assert_eq!(reg.versions("m").unwrap(), vec![1, 2]);
    }

    #[test]
    fn versions_count_up_and_aliases_move() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = LocalRegistry::new(tmp.path().join("reg"));
        assert!(reg.versions("fraud").unwrap().is_empty());
        let src = tmp.path().join("out");
        model_files(&src, "v1");
        assert_eq!(reg.register("fraud", &src).unwrap(), 1);
        model_files(&src, "v2");
        assert_eq!(reg.register("fraud", &src).unwrap(), 2);
        assert_eq!(reg.versions("fraud").unwrap(), vec![1, 2]);
        let v2 = reg.version_dir("fraud", 2).unwrap();
        assert_eq!(std::fs::read_to_string(v2.join("model.txt")).unwrap(), "v2");
        assert!(v2.join("sub/card.json").is_file());

        assert_eq!(reg.set_alias("fraud", "champion", 1).unwrap(), None);
        assert_eq!(reg.set_alias("fraud", "champion", 2).unwrap(), Some(1));
        assert_eq!(reg.get_by_alias("fraud", "champion").unwrap(), Some(2));
        assert_eq!(reg.get_by_alias("fraud", "challenger").unwrap(), None);
        assert_eq!(reg.delete_alias("fraud", "champion").unwrap(), Some(2));
        assert_eq!(reg.delete_alias("fraud", "champion").unwrap(), None);
        // Nothing but versions, aliases and the lock in the model directory.
        let mut names: Vec<String> = std::fs::read_dir(reg.root().join("fraud"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".lock", "1", "2", "aliases.json"]);
    }

    #[test]
    fn bad_names_versions_and_aliases_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = LocalRegistry::new(tmp.path());
        let src = tmp.path().join("out");
        model_files(&src, "v1");
        assert!(matches!(
            reg.register("../x", &src),
            Err(LocalRegistryError::Invalid(_))
        ));
        assert!(matches!(
            reg.register("fraud", &tmp.path().join("missing")),
            Err(LocalRegistryError::NotFound(_))
        ));
        reg.register("fraud", &src).unwrap();
        assert!(matches!(
            reg.set_alias("fraud", "champion", 9),
            Err(LocalRegistryError::NotFound(_))
        ));
        for bad in ["7", "latest", "a/b", ""] {
            assert!(matches!(
                reg.set_alias("fraud", bad, 1),
                Err(LocalRegistryError::Invalid(_))
            ));
        }
    }

    #[test]
    fn concurrent_registrations_get_distinct_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("out");
        model_files(&src, "x");
        let root = tmp.path().join("reg");
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (root, src) = (root.clone(), src.clone());
                std::thread::spawn(move || LocalRegistry::new(root).register("m", &src).unwrap())
            })
            .collect();
        let mut got: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn symlinks_are_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = LocalRegistry::new(tmp.path().join("reg"));
        let src = tmp.path().join("out");
        model_files(&src, "v1");
        // A loop: out/sub/up -> out.
        std::os::unix::fs::symlink(&src, src.join("sub/up")).unwrap();
        let e = reg.register("fraud", &src).unwrap_err();
        assert!(
            matches!(&e, LocalRegistryError::Invalid(m) if m.contains("symbolic link")),
            "{e}"
        );
        std::fs::remove_file(src.join("sub/up")).unwrap();
        // A link to a file outside.
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), src.join("leak")).unwrap();
        assert!(reg.register("fraud", &src).is_err());
        // Nothing half-copied is left behind.
        assert!(reg.versions("fraud").unwrap().is_empty());
        let names: Vec<String> = std::fs::read_dir(reg.root().join("fraud"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".lock"]);
        std::fs::remove_file(src.join("leak")).unwrap();
        assert_eq!(reg.register("fraud", &src).unwrap(), 1);
    }
}
