//! Bounds on what loading a text model may take: the size of each artifact file, checked
//! from its metadata before any file is read, and the vocabularies (the tokenizer's and a
//! lexical head's), checked once they are parsed (their parse is bounded by the file size).

use std::path::Path;

use serde::Deserialize;

use crate::TextError;

/// Load limits of a text model, from the `[limits]` section of its `config.toml`; every field
/// is optional (missing ones keep their defaults) and unknown fields are an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextLoadLimits {
    /// Largest file in the version folder, in bytes. Default 4 GiB: BERT-large's f32
    /// `model.safetensors` is 1.3 GB, all-MiniLM-L6-v2's 90 MB.
    pub max_file_bytes: u64,
    /// Most entries in the tokenizer's vocabulary and in a lexical head's. Default 1,000,000
    /// (multilingual tokenizers have about 250,000; the lexical heads `infermesh train`
    /// writes have about 10,000 terms).
    pub max_vocabulary: usize,
}

impl Default for TextLoadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 << 30,
            max_vocabulary: 1_000_000,
        }
    }
}

impl TextLoadLimits {
    /// Refuses a version folder holding a file larger than `max_file_bytes` (links are
    /// measured by what they point to, which is what loading reads).
    pub fn check_files(&self, dir: &Path) -> Result<(), TextError> {
        let entries = std::fs::read_dir(dir).map_err(|e| TextError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() && meta.len() > self.max_file_bytes {
                return Err(TextError::Invalid {
                    what: "limits",
                    message: format!(
                        "{} is {} bytes, over the limit max_file_bytes = {}",
                        path.display(),
                        meta.len(),
                        self.max_file_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Refuses a vocabulary of `size` entries past `max_vocabulary`; `what` names it.
    pub fn check_vocabulary(&self, what: &str, size: usize) -> Result<(), TextError> {
        if size > self.max_vocabulary {
            return Err(TextError::Invalid {
                what: "limits",
                message: format!(
                    "{what} has {size} entries, over the limit max_vocabulary = {}",
                    self.max_vocabulary
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn files_and_vocabularies_past_the_limits_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model.safetensors"), vec![0u8; 2048]).unwrap();
        let small = TextLoadLimits {
            max_file_bytes: 1024,
            ..TextLoadLimits::default()
        };
        let err = small.check_files(d.path()).unwrap_err().to_string();
        assert!(err.contains("max_file_bytes = 1024"), "{err}");
        assert!(TextLoadLimits::default().check_files(d.path()).is_ok());
        let err = small
            .check_vocabulary("tokenizer.json", 2_000_000)
            .unwrap_err();
        assert!(err.to_string().contains("max_vocabulary"), "{err}");
        assert!(small.check_vocabulary("tokenizer.json", 30_522).is_ok());
    }
}
