//! The serving core: what every protocol front end (KServe V2 REST/gRPC, typed gRPC) shares.
//!
//! - [`queue`]: the budget queue (rows for tables, tokens for text), a plain struct
//!   unit-tested without threads;
//! - [`batcher`]: one backend thread per model version, woken by a condition variable, that
//!   drains the queue in batches capped in budget units and items, waiting up to
//!   `max_queue_delay` for a fuller batch; semaphore admission in front refuses at once when
//!   the queue's capacity is taken;
//! - [`backends`]: what a batch runs: a tabular model over rows, a text model over token ids;
//! - [`handle`]: a loaded model version (tabular: feature names, output mode; text: encoder or
//!   classifier with token limits);
//! - [`manager`]: the repository manager: scans, loads, hot-reloads and retires versions with
//!   an atomic swap of an immutable map, so an in-flight request keeps the version it started
//!   with.

pub mod backends;
pub mod batcher;
pub mod handle;
pub mod manager;
pub mod queue;
pub mod recs;

pub use handle::{
    Classified, EmbedOptions, LoadedVersion, OutputTensor, TabularVersion, TensorData, TextRows,
    TextVersion,
};
pub use manager::{ManagerConfig, ModelManager, ModelStatus, VersionStatus};
pub use recs::{RecsAnswer, RecsRequest, RecsVersion};
