//! Scanning a local model repository into a snapshot the serving core can diff.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::{ModelConfig, RegistryError};

/// Everything found in a repository at one moment.
#[derive(Debug, Clone, Default)]
pub struct RepositorySnapshot {
    /// Models by name.
    pub models: BTreeMap<String, ModelEntry>,
}

/// One model directory.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Model name (directory name).
    pub name: String,
    /// The model directory.
    pub dir: PathBuf,
    /// The parsed config, or why it could not be read.
    pub config: Result<ModelConfig, String>,
    /// Fingerprint of the config file(s): changes when they are edited.
    pub config_fingerprint: u64,
    /// Versions the version policy selects, ascending.
    pub versions: Vec<VersionEntry>,
}

/// One version folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    /// The integer version.
    pub version: u64,
    /// Its folder.
    pub dir: PathBuf,
    /// Fingerprint of the folder's files (names, sizes, modification times): a changed
    /// artifact reloads the version.
    pub fingerprint: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Scans every model under `root`. Only an unreadable `root` is an error; a broken model is
/// reported in its entry so the others keep serving.
pub fn scan(root: &Path) -> Result<RepositorySnapshot, RegistryError> {
    let mut snap = RepositorySnapshot::default();
    for entry in std::fs::read_dir(root).map_err(io_err(root))? {
        let entry = entry.map_err(io_err(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        snap.models
            .insert(name.clone(), scan_model(&name, &entry.path()));
    }
    Ok(snap)
}

/// Scans one model directory.
pub fn scan_model(name: &str, dir: &Path) -> ModelEntry {
    let config = ModelConfig::read(name, dir).map_err(|e| e.to_string());
    let config_fingerprint = fingerprint_files(
        &["config.toml", "config.pbtxt"]
            .iter()
            .map(|f| dir.join(f))
            .collect::<Vec<_>>(),
    );
    let mut on_disk: Vec<(u64, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            // Versions are plain decimal integers; "01" or "+1" are not versions.
            let is_canonical = !fname.is_empty()
                && fname.bytes().all(|b| b.is_ascii_digit())
                && (fname == "0" || !fname.starts_with('0'));
            if is_canonical
                && e.path().is_dir()
                && let Ok(v) = fname.parse::<u64>()
            {
                on_disk.push((v, e.path()));
            }
        }
    }
    let versions = match &config {
        Ok(cfg) => {
            let numbers: Vec<u64> = on_disk.iter().map(|(v, _)| *v).collect();
            let selected = cfg.version_policy.select(&numbers);
            let mut out: Vec<VersionEntry> = on_disk
                .into_iter()
                .filter(|(v, _)| selected.contains(v))
                .map(|(version, dir)| VersionEntry {
                    version,
                    fingerprint: fingerprint_dir(&dir),
                    dir,
                })
                .collect();
            out.sort_by_key(|v| v.version);
            out
        }
        Err(_) => Vec::new(),
    };
    ModelEntry {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        config,
        config_fingerprint,
        versions,
    }
}

fn hash_metadata(md: &std::fs::Metadata, h: &mut impl Hasher) {
    md.len().hash(h);
    if let Ok(t) = md.modified() {
        t.hash(h);
    }
}

/// Hashes each path's size and modification time. A path that is a symbolic link also
/// hashes where it points and the size and time of what it resolves to: a re-pointed link
/// (a Kubernetes ConfigMap or git-sync swap) changes the fingerprint. Stating through a link
/// reads no content and cannot loop (the kernel answers `ELOOP`); nothing here walks into a
/// linked directory.
fn fingerprint_files(paths: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        p.hash(&mut h);
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.file_type().is_symlink() => {
                std::fs::read_link(p).ok().hash(&mut h);
                if let Ok(target) = std::fs::metadata(p) {
                    hash_metadata(&target, &mut h);
                }
            }
            Ok(md) => hash_metadata(&md, &mut h),
            Err(_) => {}
        }
    }
    h.finish()
}

/// Fingerprint of a version folder's files. The walk never enters a symbolic link to a
/// directory (a link to a parent would loop forever): a link is one entry, fingerprinted by
/// [`fingerprint_files`] like a file. `dir` itself may be a link.
fn fingerprint_dir(dir: &Path) -> u64 {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                // `DirEntry::file_type` is the entry's own type: a link is not followed.
                let is_real_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if is_real_dir {
                    stack.push(e.path());
                } else {
                    files.push(e.path());
                }
            }
        }
    }
    files.sort();
    fingerprint_files(&files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn scans_models_versions_and_broken_configs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            &r.join("a/config.toml"),
            "platform = \"xgboost\"\nversion_policy = { latest = 2 }",
        );
        for v in ["1", "2", "3", "07", "x"] {
            write(&r.join(format!("a/{v}/model.json")), "{}");
        }
        write(&r.join("b/config.toml"), "platform = [\"not\", \"a name\"]");
        write(&r.join("b/1/model.json"), "{}");
        std::fs::create_dir_all(r.join("c/1")).unwrap();
        std::fs::create_dir_all(r.join(".hidden")).unwrap();
        write(&r.join("README"), "not a model");

        let snap = scan(r).unwrap();
        assert_eq!(snap.models.keys().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        let a = &snap.models["a"];
        assert!(a.config.is_ok());
        assert_eq!(
            a.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(snap.models["b"].config.is_err());
        assert!(snap.models["b"].versions.is_empty());
        assert!(
            snap.models["c"]
                .config
                .as_ref()
                .unwrap_err()
                .contains("no config")
        );
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("m/1/model.json");
        write(&root.path().join("m/config.toml"), "platform = \"xgboost\"");
        write(&p, "{}");
        let before = scan_model("m", &root.path().join("m")).versions[0].fingerprint;
        write(&p, "{\"changed\": true}");
        let after = scan_model("m", &root.path().join("m")).versions[0].fingerprint;
        assert_ne!(before, after);
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(scan(Path::new("/definitely/not/here")).is_err());
    }

    #[test]
    fn fingerprints_do_not_walk_into_symlink_loops() {
        let root = tempfile::tempdir().unwrap();
        let m = root.path().join("m");
        write(&m.join("config.toml"), "platform = \"xgboost\"");
        write(&m.join("1/model.json"), "{}");
        // 1/loop -> the version folder itself, and 1/up -> the model folder: a walk that
        // followed either would never end.
        std::os::unix::fs::symlink(m.join("1"), m.join("1/loop")).unwrap();
        std::os::unix::fs::symlink("..", m.join("1/up")).unwrap();
        let started = std::time::Instant::now();
        let before = scan_model("m", &m).versions[0].fingerprint;
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Re-pointing a link is a change.
        std::fs::remove_file(m.join("1/up")).unwrap();
        std::os::unix::fs::symlink(".", m.join("1/up")).unwrap();
        assert_ne!(scan_model("m", &m).versions[0].fingerprint, before);
    }
}
