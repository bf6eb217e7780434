//! Gradient-boosted tree ensembles for serving: XGBoost JSON and UBJSON, LightGBM text
//! models; batch prediction over a flat node array, parallel across rows; exact
//! path-dependent TreeSHAP.
//!
//! Loading normalises every format to one [`node::Node`] layout and one objective
//! ([`Objective`]), so prediction and explanation code is shared. Predictions match the
//! libraries' own within 1e-5 (see `tests/parity.rs` and the fixtures made by
//! `tools/gen_tree_fixtures.py`).
//!
//! Loading is hardened against hostile files: the file size and every declared count are
//! checked against [`LoadLimits`] before anything is allocated for them, every tree is
//! checked to be a proper binary tree (children in range, one parent each, no cycles) within
//! [`LoadLimits::max_depth`], and no loader recursion depends on the file beyond a fixed
//! nesting bound. `tests/hostile/` holds one refused file per case.

pub mod dense;
pub mod lightgbm;
mod limits;
pub mod node;
#[cfg(feature = "serving")]
pub mod serving;
pub mod shap;
pub mod ubjson;
pub mod xgboost;

use std::io::Read;
use std::path::Path;

use infermesh_model_core::{ModelError, TabularModel, Task, check_shapes};
use rayon::prelude::*;

use limits::Limit;
pub use limits::LoadLimits;
use node::{CatSet, Node, leaf_value};

/// Errors loading a model.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The artifact is malformed.
    #[error("malformed {format} model: {message}")]
    Parse {
        /// The format being read.
        format: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The artifact is valid but uses something not supported.
    #[error("unsupported {format} model: {message}")]
    Unsupported {
        /// The format being read.
        format: &'static str,
        /// What is unsupported.
        message: String,
    },
    /// A size or count in the artifact is over a [`LoadLimits`] bound; nothing was
    /// allocated for it.
    #[error("{format} model: {what} {value} is over the limit {limit} = {max}")]
    Limit {
        /// The format being read.
        format: &'static str,
        /// The [`LoadLimits`] field, e.g. `max_features`.
        limit: &'static str,
        /// What the artifact declares, in its own terms (e.g. `num_feature`, `tree 3 depth`).
        what: String,
        /// The declared value.
        value: u64,
        /// The bound.
        max: u64,
    },
}

impl From<TreeError> for ModelError {
    fn from(e: TreeError) -> Self {
        ModelError::Load(e.to_string())
    }
}

/// Artifact formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// XGBoost `save_model("*.json")`.
    XgboostJson,
    /// XGBoost `save_model("*.ubj")`.
    XgboostUbj,
    /// LightGBM `save_model("*.txt")`.
    Lightgbm,
}

impl ModelFormat {
    /// Triton FIL's `model_type` names.
    pub fn from_triton_model_type(s: &str) -> Option<Self> {
        match s {
            "xgboost_json" => Some(Self::XgboostJson),
            "xgboost_ubj" => Some(Self::XgboostUbj),
            "lightgbm" => Some(Self::Lightgbm),
            _ => None,
        }
    }

    /// The usual file name.
    pub fn default_file_name(self) -> &'static str {
        match self {
            Self::XgboostJson => "model.json",
            Self::XgboostUbj => "model.ubj",
            Self::Lightgbm => "model.txt",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::XgboostJson => "xgboost_json",
            Self::XgboostUbj => "xgboost_ubj",
            Self::Lightgbm => "lightgbm",
        }
    }
}

/// How margins become predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Identity (regression, raw margins).
    Identity,
    /// `1 / (1 + exp(-k * margin))` (binary classification; LightGBM's `sigmoid:k`).
    Sigmoid(f64),
    /// Softmax over groups (multiclass probabilities).
    Softmax,
    /// Index of the largest margin (XGBoost `multi:softmax`).
    ArgMax,
    /// `exp(margin)` (Poisson, Gamma, Tweedie).
    Exp,
}

/// A loaded tree ensemble.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    nodes: Vec<Node>,
    /// Per node: cover (XGBoost `sum_hessian`, LightGBM data count), for TreeSHAP.
    covers: Vec<f64>,
    roots: Vec<u32>,
    /// Output group of each tree.
    tree_group: Vec<u32>,
    /// Weight of each tree (1, or DART weights, or 1/n for averaged forests).
    tree_weight: Vec<f32>,
    /// Max depth of each tree (the dense layout).
    tree_depth: Vec<u32>,
    cat_sets: Vec<CatSet>,
    cat_bits: Vec<u32>,
    num_features: usize,
    num_groups: usize,
    base_margin: Vec<f64>,
    objective: Objective,
    objective_name: String,
    feature_names: Option<Vec<String>>,
    format: ModelFormat,
    task: Task,
    /// The perfect-tree layout, when every tree qualifies.
    dense: Option<dense::DenseForest>,
    /// Cover-weighted mean output of each tree (TreeSHAP's bias), computed once at load.
    tree_expected: Vec<f64>,
    /// TreeSHAP weights ([`shap::FastShap`]), built on the first explanation.
    shap_weights: std::sync::OnceLock<shap::FastShap>,
}

/// Rows per parallel work item in batch prediction.
const BLOCK_ROWS: usize = 256;
/// Below this many rows, prediction stays on the calling thread.
const PARALLEL_MIN_ROWS: usize = 256;

/// A tree under construction by a format loader: nodes with children relative to the tree.
#[derive(Debug, Default)]
pub(crate) struct TreeBuilder {
    pub nodes: Vec<Node>,
    pub covers: Vec<f64>,
}

/// Everything a format loader produces.
#[derive(Debug)]
pub(crate) struct Parts {
    pub trees: Vec<(TreeBuilder, u32, f32)>,
    pub cat_sets: Vec<CatSet>,
    pub cat_bits: Vec<u32>,
    pub num_features: usize,
    pub num_groups: usize,
    pub base_margin: Vec<f64>,
    pub objective: Objective,
    pub objective_name: String,
    pub feature_names: Option<Vec<String>>,
    pub format: ModelFormat,
}

impl TreeEnsemble {
    /// Reads and parses the file at `path` within [`LoadLimits::default`].
    pub fn load(path: &Path, format: ModelFormat) -> Result<Self, TreeError> {
        Self::load_with_limits(path, format, &LoadLimits::default())
    }

    /// Reads and parses the file at `path`, refusing anything over `limits`. The file's size
    /// is checked before it is read, and reading stops past the bound, so a file that grows
    /// meanwhile (or a device that never ends) cannot exhaust memory either.
    pub fn load_with_limits(
        path: &Path,
        format: ModelFormat,
        limits: &LoadLimits,
    ) -> Result<Self, TreeError> {
        let io = |source| TreeError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let size_ok =
            |n: u64| limits.check(Limit::FileBytes, format.name(), n, || "file size".into());
        size_ok(len)?;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io)?;
        size_ok(bytes.len() as u64)?;
        Self::from_bytes_with_limits(&bytes, format, limits)
    }

    /// Parses an artifact held in memory within [`LoadLimits::default`].
    pub fn from_bytes(bytes: &[u8], format: ModelFormat) -> Result<Self, TreeError> {
        Self::from_bytes_with_limits(bytes, format, &LoadLimits::default())
    }

    /// Parses an artifact held in memory, refusing anything over `limits`.
    pub fn from_bytes_with_limits(
        bytes: &[u8],
        format: ModelFormat,
        limits: &LoadLimits,
    ) -> Result<Self, TreeError> {
        match format {
            ModelFormat::XgboostJson => Self::from_xgboost_json_with_limits(bytes, limits),
            ModelFormat::XgboostUbj => Self::from_xgboost_ubj_with_limits(bytes, limits),
            ModelFormat::Lightgbm => {
                let text = std::str::from_utf8(bytes).map_err(|e| TreeError::Parse {
                    format: "lightgbm",
                    message: format!("not UTF-8 text: {e}"),
                })?;
                Self::from_lightgbm_text_with_limits(text, limits)
            }
        }
    }

    /// Parses an XGBoost JSON model within [`LoadLimits::default`].
    pub fn from_xgboost_json(bytes: &[u8]) -> Result<Self, TreeError> {
        Self::from_xgboost_json_with_limits(bytes, &LoadLimits::default())
    }

    /// Parses an XGBoost JSON model, refusing anything over `limits`. Nesting is bounded by
    /// serde_json's recursion limit (128), which stays on.
    pub fn from_xgboost_json_with_limits(
        bytes: &[u8],
        limits: &LoadLimits,
    ) -> Result<Self, TreeError> {
        let fmt = ModelFormat::XgboostJson;
        limits.check(Limit::FileBytes, fmt.name(), bytes.len() as u64, || {
            "size in bytes".into()
        })?;
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| TreeError::Parse {
            format: fmt.name(),
            message: e.to_string(),
        })?;
        Self::assemble(xgboost::parse(&v, fmt, limits)?, limits)
    }

    /// Parses an XGBoost UBJSON model within [`LoadLimits::default`].
    pub fn from_xgboost_ubj(bytes: &[u8]) -> Result<Self, TreeError> {
        Self::from_xgboost_ubj_with_limits(bytes, &LoadLimits::default())
    }

    /// Parses an XGBoost UBJSON model, refusing anything over `limits`. Declared lengths are
    /// bounded by the bytes left and nesting by [`ubjson::MAX_DEPTH`].
    pub fn from_xgboost_ubj_with_limits(
        bytes: &[u8],
        limits: &LoadLimits,
    ) -> Result<Self, TreeError> {
        let fmt = ModelFormat::XgboostUbj;
        limits.check(Limit::FileBytes, fmt.name(), bytes.len() as u64, || {
            "size in bytes".into()
        })?;
        let v = ubjson::parse(bytes).map_err(|message| TreeError::Parse {
            format: fmt.name(),
            message,
        })?;
        Self::assemble(xgboost::parse(&v, fmt, limits)?, limits)
    }

    /// Parses a LightGBM text model within [`LoadLimits::default`].
    pub fn from_lightgbm_text(text: &str) -> Result<Self, TreeError> {
        Self::from_lightgbm_text_with_limits(text, &LoadLimits::default())
    }

    /// Parses a LightGBM text model, refusing anything over `limits`.
    pub fn from_lightgbm_text_with_limits(
        text: &str,
        limits: &LoadLimits,
    ) -> Result<Self, TreeError> {
        let fmt = ModelFormat::Lightgbm;
        limits.check(Limit::FileBytes, fmt.name(), text.len() as u64, || {
            "size in bytes".into()
        })?;
        Self::assemble(lightgbm::parse(text, limits)?, limits)
    }

    /// Validates a loader's output and lays it out for prediction. Everything a hostile file
    /// could get wrong is refused here, once, so prediction and TreeSHAP can index without
    /// checks: counts within `limits`, every tree a proper binary tree (see [`check_tree`]),
    /// features and category sets in range.
    fn assemble(p: Parts, limits: &LoadLimits) -> Result<Self, TreeError> {
        let fmt = p.format.name();
        let bad = |message: String| TreeError::Parse {
            format: fmt,
            message,
        };
        // The loaders check these before allocating; checked again so no loader can miss one.
        limits.check(Limit::Features, fmt, p.num_features as u64, || {
            "feature count".into()
        })?;
        limits.check(Limit::Outputs, fmt, p.num_groups as u64, || {
            "output count".into()
        })?;
        limits.check(Limit::Trees, fmt, p.trees.len() as u64, || {
            "tree count".into()
        })?;
        if p.num_features == 0 {
            return Err(bad("the model has no features".into()));
        }
        if p.num_groups == 0 {
            return Err(bad("the model has no outputs".into()));
        }
        if p.base_margin.len() != p.num_groups {
            return Err(bad("base score does not match the number of outputs".into()));
        }
        let total: usize = p.trees.iter().map(|(t, _, _)| t.nodes.len()).sum();
        limits.check(Limit::Nodes, fmt, total as u64, || {
            "node count (all trees)".into()
        })?;
        // Node indices are u32 and share the range of the packed feature index.
        if total >= node::FEATURE_MASK as usize {
            return Err(bad("too many nodes".into()));
        }
        if let Some(names) = &p.feature_names {
            limits.check(Limit::Features, fmt, names.len() as u64, || {
                "feature_names count".into()
            })?;
        }
        for (i, s) in p.cat_sets.iter().enumerate() {
            if s.start as usize + s.words as usize > p.cat_bits.len() {
                return Err(bad(format!("category set {i} out of range")));
            }
        }
        let mut e = TreeEnsemble {
            nodes: Vec::with_capacity(total),
            covers: Vec::with_capacity(total),
            roots: Vec::with_capacity(p.trees.len()),
            tree_group: Vec::with_capacity(p.trees.len()),
            tree_weight: Vec::with_capacity(p.trees.len()),
            tree_depth: Vec::with_capacity(p.trees.len()),
            cat_sets: p.cat_sets,
            cat_bits: p.cat_bits,
            num_features: p.num_features,
            num_groups: p.num_groups,
            base_margin: p.base_margin,
            objective: p.objective,
            objective_name: p.objective_name,
            feature_names: p.feature_names,
            format: p.format,
            task: Task::Regression,
            dense: None,
            tree_expected: Vec::new(),
            shap_weights: std::sync::OnceLock::new(),
        };
        let mut scratch = TreeScratch::default();
        for (ti, (tree, group, weight)) in p.trees.into_iter().enumerate() {
            if group as usize >= e.num_groups {
                return Err(bad(format!(
                    "tree {ti} belongs to output {group} of {}",
                    e.num_groups
                )));
            }
            if tree.covers.len() != tree.nodes.len() {
                return Err(bad(format!(
                    "tree {ti} has {} covers for {} nodes",
                    tree.covers.len(),
                    tree.nodes.len()
                )));
            }
            let depth = check_tree(&tree.nodes, ti, &e, limits, &mut scratch)?;
            let offset = e.nodes.len() as u32;
            e.nodes.extend(tree.nodes.into_iter().map(|mut node| {
                if !node.is_leaf() {
                    node.left += offset;
                    node.right += offset;
                }
                node
            }));
            e.covers.extend(tree.covers);
            e.roots.push(offset);
            e.tree_group.push(group);
            e.tree_weight.push(weight);
            e.tree_depth.push(depth);
        }
        e.tree_expected = e
            .roots
            .iter()
            .map(|&r| shap::expected_value(&e, r as usize))
            .collect();
        e.dense = dense::DenseForest::build(
            &e.nodes,
            &e.roots,
            &e.tree_depth,
            &e.tree_group,
            &e.tree_weight,
        );
        e.task = match (e.objective, e.num_groups) {
            (Objective::Sigmoid(_), 1) => Task::BinaryClassification,
            (Objective::Softmax, k) => Task::Multiclass { classes: k },
            (Objective::ArgMax, _) => Task::Regression,
            _ if e.num_groups == 1 => Task::Regression,
            (_, k) => Task::Multiclass { classes: k },
        };
        Ok(e)
    }

    /// The TreeSHAP weights, built on first use (about 1.5 ms for 100 trees of depth 6; at
    /// most [`shap::DEFAULT_TABLE_BUDGET`] bytes, 1.3 MB for those).
    pub(crate) fn shap_weights(&self) -> &shap::FastShap {
        self.shap_weights.get_or_init(|| shap::FastShap::new(self))
    }

    /// Number of trees.
    pub fn num_trees(&self) -> usize {
        self.roots.len()
    }

    /// The objective as the artifact names it (e.g. `binary:logistic`, `binary`).
    pub fn objective(&self) -> &str {
        &self.objective_name
    }

    /// Number of raw output groups (classes for multiclass, else 1).
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    /// Raw margins (base score included) of `rows` into `out` (`n_rows * num_groups()`).
    pub fn predict_margin(&self, rows: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        let n = check_shapes(rows, self.num_features, out, self.num_groups)?;
        self.for_blocks(rows, out, n, self.num_groups, |e, r, o| {
            e.margins_block(r, o)
        });
        Ok(())
    }

    fn for_blocks(
        &self,
        rows: &[f32],
        out: &mut [f32],
        n: usize,
        width: usize,
        f: impl Fn(&Self, &[f32], &mut [f32]) + Sync,
    ) {
        if n < PARALLEL_MIN_ROWS {
            f(self, rows, out);
        } else {
            rows.par_chunks(BLOCK_ROWS * self.num_features)
                .zip(out.par_chunks_mut(BLOCK_ROWS * width))
                .for_each(|(r, o)| f(self, r, o));
        }
    }

    /// Margins of a block of rows, tree-major so each tree's nodes stay in cache.
    fn margins_block(&self, rows: &[f32], out: &mut [f32]) {
        let nf = self.num_features;
        let k = self.num_groups;
        let n = rows.len() / nf;
        if n == 1 && k == 1 {
            // The single-row path: no allocation.
            if let Some(d) = &self.dense {
                out[0] = (d.sum_one(rows) + self.base_margin[0]) as f32;
                return;
            }
            let mut sum = 0f64;
            for (t, &root) in self.roots.iter().enumerate() {
                let v = leaf_value(&self.nodes, root, rows, &self.cat_sets, &self.cat_bits);
                sum += f64::from(v * self.tree_weight[t]);
            }
            out[0] = (sum + self.base_margin[0]) as f32;
            return;
        }
        let mut acc = vec![0f64; n * k];
        if let Some(d) = &self.dense {
            d.accumulate(rows, nf, k, &mut acc);
        } else {
            self.accumulate_general(rows, &mut acc);
        }
        for (r, o) in out.chunks_exact_mut(k).enumerate() {
            for g in 0..k {
                o[g] = (acc[r * k + g] + self.base_margin[g]) as f32;
            }
        }
    }

    /// Tree outputs of `rows` added into `acc` with the general node traversal.
    fn accumulate_general(&self, rows: &[f32], acc: &mut [f64]) {
        let nf = self.num_features;
        let k = self.num_groups;
        for (t, &root) in self.roots.iter().enumerate() {
            let g = self.tree_group[t] as usize;
            let w = self.tree_weight[t];
            for (r, row) in rows.chunks_exact(nf).enumerate() {
                let v = leaf_value(&self.nodes, root, row, &self.cat_sets, &self.cat_bits);
                acc[r * k + g] += f64::from(v * w);
            }
        }
    }

    /// Whether batch prediction uses the perfect-tree layout (see [`dense`]).
    pub fn uses_dense_layout(&self) -> bool {
        self.dense.is_some()
    }

    /// Predictions of a block: margins, then the objective's transform.
    fn predict_block(&self, rows: &[f32], out: &mut [f32]) {
        let k = self.num_groups;
        match self.objective {
            Objective::ArgMax => {
                let n = rows.len() / self.num_features;
                let mut m = vec![0f32; n * k];
                self.margins_block(rows, &mut m);
                for (o, row) in out.iter_mut().zip(m.chunks_exact(k)) {
                    let mut best = 0;
                    for (i, v) in row.iter().enumerate() {
                        if *v > row[best] {
                            best = i;
                        }
                    }
                    *o = best as f32;
                }
            }
            obj => {
                self.margins_block(rows, out);
                match obj {
                    Objective::Identity | Objective::ArgMax => {}
                    Objective::Sigmoid(s) => {
                        for v in out.iter_mut() {
                            *v = (1.0 / (1.0 + (-s * f64::from(*v)).exp())) as f32;
                        }
                    }
                    Objective::Exp => {
                        for v in out.iter_mut() {
                            *v = f64::from(*v).exp() as f32;
                        }
                    }
                    Objective::Softmax => {
                        for row in out.chunks_exact_mut(k) {
                            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                            let mut sum = 0f64;
                            for v in row.iter_mut() {
                                let e = f64::from(*v - max).exp();
                                *v = e as f32;
                                sum += e;
                            }
                            for v in row.iter_mut() {
                                *v = (f64::from(*v) / sum) as f32;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Outputs per row of [`TabularModel::predict`].
    fn outputs(&self) -> usize {
        if self.objective == Objective::ArgMax {
            1
        } else {
            self.num_groups
        }
    }
}

/// Per-tree buffers of [`check_tree`], reused across the trees of an ensemble.
#[derive(Debug, Default)]
struct TreeScratch {
    /// Parent of each node, [`NO_NODE`] for none yet.
    parent: Vec<u32>,
    /// Depth of each node reachable from the root, [`NO_NODE`] for unreachable ones.
    depth: Vec<u32>,
}

/// "None" in [`TreeScratch`]; no tree has this many nodes (see `FEATURE_MASK`).
const NO_NODE: u32 = u32::MAX;

/// Checks that `nodes` (one tree, children relative to it, root 0) is a proper binary tree
/// and returns its depth (of the deepest leaf reachable from the root).
///
/// Every child must be in range and come after its parent, which rules out self-loops and
/// cycles (XGBoost allocates children after their parent; LightGBM's loader renumbers in
/// pre-order), and no node may have two parents, which rules out shared subtrees (a DAG
/// makes every walk exponential). Nodes without a parent are allowed: XGBoost keeps nodes
/// deleted by pruning in its arrays, unreachable. One forward pass, no recursion: with
/// children after parents, a node's depth is known before its children are seen.
fn check_tree(
    nodes: &[Node],
    ti: usize,
    e: &TreeEnsemble,
    limits: &LoadLimits,
    s: &mut TreeScratch,
) -> Result<u32, TreeError> {
    let fmt = e.format.name();
    let bad = |message: String| TreeError::Parse {
        format: fmt,
        message,
    };
    let n = nodes.len();
    if n == 0 {
        return Err(bad(format!("tree {ti} has no nodes")));
    }
    s.parent.clear();
    s.parent.resize(n, NO_NODE);
    s.depth.clear();
    s.depth.resize(n, NO_NODE);
    s.depth[0] = 0;
    let mut max_depth = 0;
    for (i, node) in nodes.iter().enumerate() {
        let d = s.depth[i];
        if node.is_leaf() {
            if d != NO_NODE {
                max_depth = max_depth.max(d);
            }
            continue;
        }
        if node.feature() >= e.num_features {
            return Err(bad(format!(
                "tree {ti} node {i} splits on feature {} of {}",
                node.feature(),
                e.num_features
            )));
        }
        if node.packed & node::CATEGORICAL != 0 && node.value.to_bits() as usize >= e.cat_sets.len()
        {
            return Err(bad(format!(
                "tree {ti} node {i} names a missing category set"
            )));
        }
        if node.left == node.right {
            return Err(bad(format!(
                "tree {ti} node {i} has node {} as both children (a node with two parents)",
                node.left
            )));
        }
        for c in [node.left, node.right] {
            let cu = c as usize;
            if cu >= n {
                return Err(bad(format!(
                    "tree {ti} node {i} has child {c} out of range (the tree has {n} nodes)"
                )));
            }
            if cu == i {
                return Err(bad(format!(
                    "tree {ti} node {i} is its own child (a self-loop)"
                )));
            }
            if cu < i {
                return Err(bad(format!(
                    "tree {ti} node {i} has child {c} before it (a possible cycle: children \
                     must follow their parent)"
                )));
            }
            let p = s.parent[cu];
            if p != NO_NODE {
                return Err(bad(format!(
                    "tree {ti} node {c} has two parents (nodes {p} and {i})"
                )));
            }
            s.parent[cu] = i as u32;
            if d != NO_NODE {
                let cd = d + 1;
                limits.check(Limit::Depth, fmt, u64::from(cd), || {
                    format!("tree {ti} depth")
                })?;
                s.depth[cu] = cd;
            }
        }
    }
    Ok(max_depth)
}

impl TabularModel for TreeEnsemble {
    fn num_features(&self) -> usize {
        self.num_features
    }

    fn feature_names(&self) -> Option<&[String]> {
        self.feature_names.as_deref()
    }

    /// 1 for binary and regression and `multi:softmax` (the class index), K for K-class
    /// probabilities.
    fn num_outputs(&self) -> usize {
        self.outputs()
    }

    fn task(&self) -> Task {
        self.task
    }

    fn format(&self) -> &'static str {
        self.format.name()
    }

    fn predict(&self, rows: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        let k = self.outputs();
        let n = check_shapes(rows, self.num_features, out, k)?;
        self.for_blocks(rows, out, n, k, |e, r, o| e.predict_block(r, o));
        Ok(())
    }

    fn contributions(&self, row: &[f32]) -> Result<Vec<f32>, ModelError> {
        if row.len() != self.num_features {
            return Err(ModelError::InvalidInput(format!(
                "row has {} values, the model has {} features",
                row.len(),
                self.num_features
            )));
        }
        Ok(shap::contributions(self, row))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bench_model(file: &str, format: ModelFormat) -> TreeEnsemble {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bench")
            .join(file);
        TreeEnsemble::load(&p, format).unwrap()
    }

    /// Every dense-layout path (fixed-width NaN-free lanes, NaN-aware lanes, the tail) sums
    /// exactly what the general node traversal sums (which the parity fixtures check against
    /// the libraries).
    #[test]
    fn dense_paths_equal_the_general_traversal() {
        for (file, fmt) in [
            ("xgb_bench.json", ModelFormat::XgboostJson),
            ("lgb_bench.txt", ModelFormat::Lightgbm),
        ] {
            let m = bench_model(file, fmt);
            let d = m.dense.as_ref().unwrap();
            let nf = m.num_features;
            let n = 77; // 9 lane groups and a tail
            let mut rows: Vec<f32> = (0..n * nf)
                .map(|i| ((i * 7919 % 613) as f32 - 306.0) / 90.0)
                .collect();
            for with_nan in [false, true] {
                if with_nan {
                    rows[5] = f32::NAN;
                    rows[nf * 40 + 3] = f32::NAN;
                }
                let mut dense = vec![0f64; n];
                d.accumulate(&rows, nf, 1, &mut dense);
                let mut general = vec![0f64; n];
                m.accumulate_general(&rows, &mut general);
                for (a, b) in dense.iter().zip(&general) {
                    assert!((a - b).abs() < 1e-9, "{file} nan={with_nan}: {a} vs {b}");
                }
            }
        }
    }
}
