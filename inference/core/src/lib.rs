//! The serving core: what every protocol front end (KServe V2 REST/gRPC, typed gRPC) shares,
//! knowing no model family by name.
//!
//! - [`servable`]: the seam: [`Servable`], what a model family serves for one loaded version
//!   (V2 signature, inference on V2 tensors, batching, health), and [`Family`], the table
//!   entry from platform names to a loader;
//! - [`tensor`]: V2 tensors, the decoded request a family reads and the outputs it answers;
//! - [`queue`]: the budget queue (rows for tables, tokens for text), a plain struct
//!   unit-tested without threads;
//! - [`batcher`]: one backend thread per model version, woken by a condition variable, that
//!   drains the queue in batches capped in budget units and items, waiting up to
//!   `max_queue_delay` for a fuller batch; semaphore admission in front refuses at once when
//!   the queue's capacity is taken. Families run their compute through it;
//! - [`backends`]: the row backend of any tabular model (trees, Isolation Forest);
//! - [`handle`]: a loaded model version (config plus the family's servable);
//! - [`manager`]: the repository manager: scans, loads (through the [`Families`] table),
//!   hot-reloads and retires versions with an atomic swap of an immutable map, so an
//!   in-flight request keeps the version it started with;
//! - [`monitor`]: the seam to a version's monitor (inference log, live drift): the rows of
//!   answered requests it samples, as named columns;
//! - [`observe`]: request metrics with bounded labels, and the version lookup that records a
//!   refusal.

pub mod backends;
pub mod batcher;
pub mod handle;
pub mod manager;
pub mod monitor;
pub mod observe;
pub mod queue;
pub mod servable;
pub mod tensor;

pub use handle::LoadedVersion;
pub use manager::{ManagerConfig, ModelManager, ModelStatus, VersionStatus};
pub use monitor::{MonitorFactory, Observation, ObservedColumn, Selection, VersionMonitor};
pub use observe::{Protocol, record, record_unresolved};
pub use servable::{
    BatchUnit, Batching, BoxFuture, Description, Families, Family, LoadContext, Servable,
    family_limits, family_parameters,
};
pub use tensor::{
    InputTensor, InputValues, OutputTensor, Param, TensorData, TensorMeta, V2Request,
};
