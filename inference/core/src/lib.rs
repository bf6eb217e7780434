//! The serving core: what every protocol front end (KServe V2 REST/gRPC, typed gRPC) shares.
//!
//! - [`queue`]: the row-budget queue, a plain struct unit-tested without threads;
//! - [`batcher`]: one backend thread per model version, woken by a condition variable, that
//!   drains the queue in batches of at most `max_batch_size` rows, waiting up to
//!   `max_queue_delay` for a fuller batch; semaphore admission in front refuses at once when
//!   the queue's row capacity is taken;
//! - [`handle`]: a loaded model version (model, batcher, feature names, output mode);
//! - [`manager`]: the repository manager: scans, loads, hot-reloads and retires versions with
//!   an atomic swap of an immutable map, so an in-flight request keeps the version it started
//!   with.

pub mod batcher;
pub mod handle;
pub mod manager;
pub mod queue;

pub use handle::{LoadedVersion, OutputTensor};
pub use manager::{ManagerConfig, ModelManager, ModelStatus, VersionStatus};
