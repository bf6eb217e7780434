//! The compute core of a topic model equivalent to BERTopic 0.17 on precomputed sentence
//! embeddings (f32 rows, e.g. 384-d all-MiniLM-L6-v2): UMAP to a few dimensions, HDBSCAN
//! clusters as topics, c-TF-IDF keywords per topic.
//!
//! No serving, no I/O runtime, no model download: the caller brings the texts and their
//! embeddings.

pub mod artifact;
pub mod ctfidf;
pub mod hdbscan;
pub mod knn;
mod matrix;
pub mod metrics;
pub mod model;
mod rng;
mod stop_words;
pub mod umap;

pub use artifact::LoadLimits;
pub use hdbscan::{Hdbscan, HdbscanParams};
pub use knn::Metric;
pub use matrix::Matrix;
pub use model::{MergeStrategy, OutlierStrategy, TopicInfo, TopicModel, TopicParams};
pub use umap::{Umap, UmapParams};

/// Why a fit, a prediction or an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Hyper-parameters that cannot be fitted.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// Inputs of the wrong shape or with non-finite values.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The artifact is not valid (or is past a load limit).
    #[error("invalid topic model artifact: {0}")]
    Invalid(String),
}
