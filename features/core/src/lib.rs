//! The feature store's core, below serving: Feast's data model and wire formats, so that a
//! Feast user's registry, Redis data and clients work against infermesh unchanged.
//!
//! - [`key`]: Redis keys (Feast's entity key serialisation v3 followed by the project name)
//!   and hash fields (`murmur3_x86_32("<view>:<feature>")`, `_ts:<view>`).
//! - [`value`]: Feast `Value`s: types, conversion from JSON as `feast serve` converts request
//!   values, and the JSON encoding of its responses.
//! - [`registry`]: feature views, entities, TTLs and feature services, read from Feast's own
//!   `registry.db` (the `feast.core.Registry` protobuf `feast apply` writes) or from an
//!   infermesh TOML for users without Feast.
//! - [`online`]: Feast's `get_online_features` over a registry and a store.
//! - [`store`]: the [`store::OnlineStore`] trait and its two stores: Redis in Feast's layout
//!   (what `feast materialize` writes and `get_online_features` reads) and memory (the same
//!   layout in this process, for `infermesh up` and tests).
//! - [`write`]: rows checked against their view and written in one pipelined batch.
//! - [`writer`]: the streaming writer: rows pushed one at a time, written in batches.
//!
//! The Feast messages are generated from infermesh's own `.proto` files in
//! `inference/proto/proto/feast` (written to Feast 0.67's names and field numbers; see
//! `docs/feast.md` for the contract and what was checked against Feast itself).

pub mod key;
pub mod online;
pub mod registry;
pub mod store;
pub mod value;
pub mod write;
pub mod writer;

pub use infermesh_proto::feast::core as registry_proto;
pub use infermesh_proto::feast::serving;
pub use infermesh_proto::feast::types;
pub use prost_types::{Duration as ProtoDuration, Timestamp};

use infermesh_common::ErrorKind;

/// Why a feature-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The request is malformed: an entity value of the wrong type, an empty or oversized
    /// entity list, a bad feature reference.
    #[error("{0}")]
    InvalidArgument(String),
    /// A feature view, feature, feature service or push source that the registry lacks.
    #[error("{0}")]
    NotFound(String),
    /// The registry file or TOML is not valid.
    #[error("invalid registry {path}: {message}")]
    Registry {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The feature view cannot serve now (Feast's materialisation state says so).
    #[error("{0}")]
    Unavailable(String),
    /// The online store failed (Redis down, a timeout) or is full.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The batch that held a streamed row failed in the store.
    #[error(transparent)]
    Write(std::sync::Arc<store::StoreError>),
    /// A bounded queue is full: refused now rather than held.
    #[error("{0}")]
    Overloaded(String),
}

impl FeatureError {
    /// The error's kind (its HTTP status and gRPC code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            FeatureError::InvalidArgument(_) => ErrorKind::InvalidInput,
            FeatureError::NotFound(_) => ErrorKind::NotFound,
            FeatureError::Registry { .. } => ErrorKind::Internal,
            FeatureError::Unavailable(_) => ErrorKind::Unavailable,
            FeatureError::Store(e) => e.kind(),
            FeatureError::Write(e) => e.kind(),
            FeatureError::Overloaded(_) => ErrorKind::Overloaded,
        }
    }
}
