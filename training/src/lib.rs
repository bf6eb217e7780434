//! Training jobs.
pub mod categorizer;
