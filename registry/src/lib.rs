//! Model repositories.
//!
//! A local repository is a Triton-style directory:
//!
//! ```text
//! <repo>/<model>/config.toml      # infermesh's own config (see [`config::TomlConfig`])
//! <repo>/<model>/config.pbtxt     # or a Triton FIL-backend config, served as it is
//! <repo>/<model>/<version>/...    # integer versions holding the artifact files
//! ```
//!
//! This crate reads configs and lists versions; it loads no model. The serving core diffs
//! successive [`repository::scan`] snapshots to load and retire versions.
//!
//! Registries name model versions by alias (`models:/fraud@champion`, [`uri`]): an MLflow
//! tracking server over its REST API ([`mlflow`]) or, with no tracking URI, a directory
//! ([`local`]). [`sync`] brings the version behind an alias into a local repository to serve.

pub mod config;
pub mod local;
pub mod mlflow;
pub mod pbtxt;
pub mod promote;
pub mod repository;
pub mod sync;
pub mod uri;

pub use config::{ConfigSource, ModelConfig, Monitoring, VersionPolicy, check_max};
pub use local::{LocalRegistry, LocalRegistryError};
pub use mlflow::{MlflowClient, MlflowError, MlflowOptions};
pub use promote::{Candidate, Gate, PromoteError, Promotion, Registry};
pub use repository::{ModelEntry, RepositorySnapshot, VersionEntry, scan, scan_model};
pub use sync::{ModelSync, RegistrySource, SyncError};
pub use uri::{ModelRef, ModelUri};

/// Errors reading a repository or a model's config.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The repository or a model directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// `config.toml` is not valid or names an unknown option.
    #[error("invalid config.toml for model '{model}': {message}")]
    Toml {
        /// The model.
        model: String,
        /// What is wrong.
        message: String,
    },
    /// `config.pbtxt` could not be parsed or is not a supported Triton config.
    #[error("invalid config.pbtxt for model '{model}': {message}")]
    Pbtxt {
        /// The model.
        model: String,
        /// What is wrong.
        message: String,
    },
    /// The model directory has neither config file.
    #[error("model '{0}' has no config.toml or config.pbtxt")]
    NoConfig(String),
}
