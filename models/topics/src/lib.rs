//! The compute core of a topic model equivalent to BERTopic 0.17 on precomputed sentence
//! embeddings (f32 rows, e.g. 384-d all-MiniLM-L6-v2): UMAP to a few dimensions, HDBSCAN
//! clusters as topics, c-TF-IDF keywords per topic.
//!
//! No serving, no I/O runtime, no model download: the caller brings the texts and their
//! embeddings. [`TopicModel::fit`] / [`TopicModel::transform`] are BERTopic's
//! `fit_transform` / `transform` with `embeddings=`; [`TopicModel::topics`] its
//! `get_topic_info`; [`TopicModel::save`] / [`TopicModel::load`] the artifact of
//! [`artifact`] (JSON + safetensors, no pickle, bounded by [`LoadLimits`]).
//!
//! | piece | module | as |
//! |---|---|---|
//! | UMAP (fit + transform) | [`umap`] | umap-learn 0.5 (exact kNN) |
//! | HDBSCAN (+ `approximate_predict`) | [`hdbscan`] | the hdbscan library 0.8 (exact MST) |
//! | c-TF-IDF, keywords, MMR | [`ctfidf`] | BERTopic's `ClassTfidfTransformer`, `CountVectorizer`, `MaximalMarginalRelevance` |
//! | topics, merging, outliers, updates | [`model`] | BERTopic 0.17's `_reduce_to_n_topics`, `reduce_outliers`, `update_topics` |
//!
//! Checked against the Python peers with the scripts under `tools/` (see their docs):
//! `umap_check.py` (trustworthiness and neighbour agreement equal to umap-learn's within
//! the spread over seeds), `hdbscan_check.py` (labels ARI 1.0 / 0.998 against the library),
//! `bertopic_check.py` (ARI 0.99 against BERTopic's topics, the same keywords).
//!
//! Determinism: one seeded generator (SplitMix64, written here), an SGD layout on a fixed
//! schedule, per-row parallel kNN and spectral products: the same input and seeds give a
//! bit-identical model on one platform (whatever the thread count), and a loaded model
//! transforms bit-identically to the saved one.
//!
//! Scale: kNN, core distances and the MST are exact and O(N²) (N up to ~20k).
//!
//! Serving (feature `serving`, [`serving`]): platform `topics`, a version folder holding the
//! artifact and `embedder/` (the sentence encoder, loaded by the text family), KServe V2
//! `text` → `topic` / `probability`, and the typed `infermesh.v1.Topics` (`Assign`, `List`).

pub mod artifact;
pub mod ctfidf;
pub mod hdbscan;
pub mod knn;
mod matrix;
pub mod metrics;
pub mod model;
mod rng;
#[cfg(feature = "serving")]
pub mod serving;
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
