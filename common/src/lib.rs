//! Shared pieces of every infermesh service: the one error kind and its HTTP / gRPC mapping,
//! metric names, and telemetry (tracing, OTLP, Prometheus) set-up.

pub mod error;
pub mod limits;
pub mod metrics_names;
pub mod shutdown;
pub mod telemetry;

pub use error::{ErrorKind, ServiceError};
