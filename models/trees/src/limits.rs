//! Bounds on what a model file may ask the loader to build.
//!
//! Every count a file declares (features, outputs, trees, nodes, depth) is checked against
//! [`LoadLimits`] before anything is allocated for it, and the file's size is checked before
//! it is read, so a hostile or corrupt file is refused with a [`crate::TreeError::Limit`]
//! instead of exhausting memory or the stack.

use serde::Deserialize;

use crate::TreeError;

/// Bounds applied while loading a tree ensemble; [`LoadLimits::default`] suits every model
/// the libraries produce in practice. Deserializes from a config table in which every field
/// is optional (missing fields keep their defaults) and unknown fields are an error.
///
/// ```
/// # use infermesh_trees::LoadLimits;
/// let limits: LoadLimits = serde_json::from_str(r#"{"max_depth": 64}"#).unwrap();
/// assert_eq!(limits.max_depth, 64);
/// assert_eq!(limits.max_trees, LoadLimits::default().max_trees);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadLimits {
    /// Largest artifact file, in bytes; the size is read from the file's metadata before the
    /// file is read. Default 1 GiB. XGBoost files are parsed into a document tree first, which
    /// can take up to about 32 times the file (a one-byte UBJSON number becomes a 32-byte
    /// value; JSON needs two bytes a value), so this also bounds the memory a load can take:
    /// lower it on machines with less than ~32 GiB to spare for a load.
    pub max_file_bytes: u64,
    /// Most input features (XGBoost `num_feature`, LightGBM `max_feature_idx + 1`, and the
    /// length of `feature_names`). Default 100,000. The server keeps a name and an index entry
    /// per feature and every request row is this wide, so a file claiming billions of
    /// features is refused here rather than when those are built.
    pub max_features: usize,
    /// Most output groups (classes of a multiclass model). Default 10,000. Base scores,
    /// per-row outputs and TreeSHAP's per-group buffers are this wide.
    pub max_outputs: usize,
    /// Most trees. Default 100,000 (e.g. 1,000 boosting rounds of a 100-class model).
    pub max_trees: usize,
    /// Most nodes over all trees. Default 50,000,000: at 24 bytes a node (the node and its
    /// cover) that is 1.2 GB resident. Large production ensembles have a few million nodes
    /// (1,000 trees of depth 10 are at most about 2 M), so this leaves an order of magnitude
    /// of headroom while bounding what a hostile file can make the loader build.
    pub max_nodes: usize,
    /// Deepest tree (edges from the root to the deepest leaf). Default 256. XGBoost's
    /// `max_depth` is usually at most 20 (its default is 6), but LightGBM grows trees
    /// leaf-wise with no depth bound by default (`max_depth=-1`), so trees with thousands of
    /// leaves can be a hundred or more deep; 256 passes those. The reference TreeSHAP, which
    /// explains the trees the fast tables do not cover, does work per leaf and keeps a path
    /// buffer that grow with the square of the depth (the buffer is about 1 MB at 256), so
    /// this also bounds what one explanation costs.
    pub max_depth: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 1 << 30,
            max_features: 100_000,
            max_outputs: 10_000,
            max_trees: 100_000,
            max_nodes: 50_000_000,
            max_depth: 256,
        }
    }
}

impl LoadLimits {
    /// `Ok` when `value` (what the artifact calls `what`) is within `limit`, else the error
    /// naming the limit, the value and the bound.
    pub(crate) fn check(
        &self,
        limit: Limit,
        format: &'static str,
        value: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), TreeError> {
        let max = limit.bound(self);
        if value > max {
            return Err(TreeError::Limit {
                format,
                limit: limit.name(),
                what: what(),
                value,
                max,
            });
        }
        Ok(())
    }
}

/// Which [`LoadLimits`] field a count exceeded, with the field's name for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    FileBytes,
    Features,
    Outputs,
    Trees,
    Nodes,
    Depth,
}

impl Limit {
    /// The [`LoadLimits`] field's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::FileBytes => "max_file_bytes",
            Self::Features => "max_features",
            Self::Outputs => "max_outputs",
            Self::Trees => "max_trees",
            Self::Nodes => "max_nodes",
            Self::Depth => "max_depth",
        }
    }

    /// The bound `limits` sets.
    pub(crate) fn bound(self, limits: &LoadLimits) -> u64 {
        let b = match self {
            Self::FileBytes => return limits.max_file_bytes,
            Self::Features => limits.max_features,
            Self::Outputs => limits.max_outputs,
            Self::Trees => limits.max_trees,
            Self::Nodes => limits.max_nodes,
            Self::Depth => limits.max_depth,
        };
        u64::try_from(b).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_partial_tables_and_refuses_unknown_fields() {
        let l: LoadLimits = serde_json::from_str(r#"{"max_depth": 32}"#).unwrap();
        assert_eq!(
            l,
            LoadLimits {
                max_depth: 32,
                ..LoadLimits::default()
            }
        );
        let e = serde_json::from_str::<LoadLimits>(r#"{"max_deph": 32}"#).unwrap_err();
        assert!(e.to_string().contains("max_deph"), "{e}");
    }
}
