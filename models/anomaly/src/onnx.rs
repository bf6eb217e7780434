//! Importing a scikit-learn `IsolationForest` exported by skl2onnx, so that existing models
//! move over unchanged: the file is read into the same [`IsolationForest`] the JSON artifact
//! gives, then scored by this crate's engine (ONNX Runtime is not needed to serve it).
//!
//! skl2onnx (1.x, `ai.onnx.ml` opsets 2 and 3) writes, per tree `i`:
//!
//! - `Gather(X, features_i, axis=1)`: the tree's `estimators_features_` columns;
//! - an `ai.onnx.ml.TreeEnsembleRegressor` over them whose only target per leaf is the leaf's
//!   node id (`BRANCH_LEQ` nodes, true branch = scikit-learn's left child);
//! - two `ai.onnx.ml.LabelEncoder`s on that id (through a `Cast` to int64, or on the float
//!   directly): leaf -> `n_node_samples` (compared with 2 by `Equal`/`Greater` to compute
//!   `c(n)`), and leaf -> the number of nodes on its path (its depth + 1, to which the
//!   graph adds `c(n) - 1`);
//!
//! then `scores = -(2 ^ -(sum_i path_i / (T c(max_samples)))) + (-offset)`: a `Div` by the
//! constant `T c(max_samples)`, `Neg`, `Pow` with base 2, `Neg`, and an `Add` of `-offset_`.
//!
//! The importer reads exactly that: the trees (node ids, modes, features, float32 thresholds,
//! which compare like the f32 rows the engine takes), `n_node_samples` per leaf (internal
//! nodes get the sum of their children), `max_samples` from the divisor, `offset` from the
//! last `Add`. It checks what it can against the structure (each leaf's depth must equal the
//! graph's depth table) and refuses any other graph with the reason; a hostile file is bounded
//! by [`LoadLimits`] as the JSON artifact is. The scores equal the graph's within float32
//! rounding (the graph computes in float32, this engine in f64).
//!
//! Written here: ONNX's messages are prost structs in `infermesh_model_core::onnx_proto`; no
//! crate imports skl2onnx's Isolation Forest graph.

use std::collections::HashMap;

use infermesh_model_core::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, data_type, type_proto,
};
use prost::Message;

use crate::{AnomalyError, FORMAT, IsolationForest, LoadLimits, RawForest, RawTree};

/// Largest `max_samples` the divisor is matched against (2^40 rows).
const MAX_SAMPLES_SEARCHED: u64 = 1 << 40;

fn invalid(m: impl Into<String>) -> AnomalyError {
    AnomalyError::Invalid(format!(
        "not a skl2onnx IsolationForest graph: {}",
        m.into()
    ))
}

/// Imports a skl2onnx export held in memory (see the module doc).
pub fn from_onnx(bytes: &[u8], limits: &LoadLimits) -> Result<IsolationForest, AnomalyError> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(AnomalyError::Invalid(format!(
            "the file is {} bytes, more than max_file_bytes ({})",
            bytes.len(),
            limits.max_file_bytes
        )));
    }
    // prost allocates in proportion to the bytes it decodes and bounds nesting.
    let model = ModelProto::decode(bytes)
        .map_err(|e| AnomalyError::Invalid(format!("not an ONNX model: {e}")))?;
    let graph = model.graph.as_ref().ok_or_else(|| invalid("no graph"))?;
    Graph::new(graph).forest(limits)
}

/// The graph with its lookups.
struct Graph<'a> {
    g: &'a GraphProto,
    consts: HashMap<&'a str, &'a TensorProto>,
    producer: HashMap<&'a str, &'a NodeProto>,
    consumers: HashMap<&'a str, Vec<&'a NodeProto>>,
}

impl<'a> Graph<'a> {
    fn new(g: &'a GraphProto) -> Self {
        let consts = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
        for n in &g.node {
            for o in &n.output {
                producer.insert(o.as_str(), n);
            }
            for i in &n.input {
                consumers.entry(i.as_str()).or_default().push(n);
            }
        }
        Self {
            g,
            consts,
            producer,
            consumers,
        }
    }

    /// The node producing `name` if it is an `op` node.
    fn made_by(&self, name: &str, op: &str) -> Option<&'a NodeProto> {
        self.producer.get(name).copied().filter(|n| n.op_type == op)
    }

    /// A constant's values as f64 (FLOAT, DOUBLE or INT64 initializers).
    fn values(&self, name: &str) -> Option<Vec<f64>> {
        tensor_values(self.consts.get(name)?)
    }

    /// A one-element constant.
    fn scalar(&self, name: &str) -> Option<f64> {
        match self.values(name)?.as_slice() {
            [x] => Some(*x),
            _ => None,
        }
    }

    /// `(-offset, divisor)` from the `scores` output's chain:
    /// `Add(Neg(Pow(2, Neg(Div(sum, divisor)))), -offset)`.
    fn decision(&self) -> Option<(f64, f64)> {
        self.g.output.iter().find_map(|out| {
            let add = self.made_by(&out.name, "Add")?;
            let (a, c) = (add.input.first()?, add.input.get(1)?);
            let minus_offset = self.scalar(c)?;
            let neg = self.made_by(a, "Neg")?;
            let pow = self.made_by(neg.input.first()?, "Pow")?;
            if self.scalar(pow.input.first()?)? != 2.0 {
                return None;
            }
            let neg = self.made_by(pow.input.get(1)?, "Neg")?;
            let div = self.made_by(neg.input.first()?, "Div")?;
            let divisor = self.scalar(div.input.get(1)?)?;
            Some((minus_offset, divisor))
        })
    }

    /// The leaf tables fed by a tree's output: `(n_node_samples, depth)`, each keyed by the
    /// leaf's target value.
    fn leaf_tables(&self, tree_out: &str) -> Result<(LeafTable, LeafTable), AnomalyError> {
        let mut encoders = Vec::new();
        for n in self.consumers.get(tree_out).into_iter().flatten() {
            match n.op_type.as_str() {
                "LabelEncoder" => encoders.push(*n),
                "Cast" => {
                    let to = attr(n, "to").map(|a| a.i);
                    if to != Some(i64::from(data_type::INT64)) {
                        continue;
                    }
                    for m in self
                        .consumers
                        .get(n.output[0].as_str())
                        .into_iter()
                        .flatten()
                    {
                        if m.op_type == "LabelEncoder" {
                            encoders.push(*m);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut samples = None;
        let mut depth = None;
        for e in encoders {
            let table = LeafTable::of(e)?;
            let out = e.output.first().map(String::as_str).unwrap_or_default();
            // The samples table is compared with 2 (c(n)'s cases); the depth table is added.
            let mut next: Vec<&NodeProto> = self.consumers.get(out).cloned().unwrap_or_default();
            if let [r] = next.as_slice()
                && r.op_type == "Reshape"
            {
                next = self
                    .consumers
                    .get(r.output.first().map(String::as_str).unwrap_or_default())
                    .cloned()
                    .unwrap_or_default();
            }
            if next
                .iter()
                .any(|n| n.op_type == "Equal" || n.op_type == "Greater")
            {
                samples = Some(table);
            } else {
                depth = Some(table);
            }
        }
        match (samples, depth) {
            (Some(s), Some(d)) => Ok((s, d)),
            _ => Err(invalid(format!(
                "the tree {tree_out} lacks its two LabelEncoder leaf tables (n_node_samples, depth)"
            ))),
        }
    }

    fn forest(&self, limits: &LoadLimits) -> Result<IsolationForest, AnomalyError> {
        let input = self.g.input.first().ok_or_else(|| invalid("no input"))?;
        let trees: Vec<&NodeProto> = self
            .g
            .node
            .iter()
            .filter(|n| n.op_type == "TreeEnsembleRegressor" && n.domain == "ai.onnx.ml")
            .collect();
        if trees.is_empty() || trees.len() > limits.max_trees {
            return Err(invalid(format!(
                "{} TreeEnsembleRegressor nodes is not within 1..={} (max_trees)",
                trees.len(),
                limits.max_trees
            )));
        }
        let (minus_offset, divisor) = self.decision().ok_or_else(|| {
            invalid("no output computed as -(2 ^ -(sum / divisor)) + constant (the scores)")
        })?;
        let max_samples = max_samples_for(divisor / trees.len() as f64).ok_or_else(|| {
            invalid(format!(
                "the divisor {divisor} is not {} trees times c(max_samples)",
                trees.len()
            ))
        })?;
        let width = input_width(self.g);
        let mut raw_trees = Vec::with_capacity(trees.len());
        let mut total_nodes = 0usize;
        let mut n_features = width.unwrap_or(0);
        for (i, t) in trees.iter().enumerate() {
            let x = t.input.first().map(String::as_str).unwrap_or_default();
            let features = match self.made_by(x, "Gather") {
                Some(g) if g.input.first() == Some(&input.name) => {
                    if attr(g, "axis").map_or(0, |a| a.i) != 1 {
                        return Err(invalid(format!("tree {i}: its Gather is not on axis 1")));
                    }
                    let idx = g.input.get(1).and_then(|n| self.values(n)).ok_or_else(|| {
                        invalid(format!("tree {i}: its Gather has no constant indices"))
                    })?;
                    idx.iter()
                        .map(|&v| {
                            (v >= 0.0 && v.fract() == 0.0 && v < limits.max_features as f64)
                                .then_some(v as usize)
                                .ok_or_else(|| invalid(format!("tree {i}: feature index {v}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?
                }
                _ if x == input.name => Vec::new(),
                _ => return Err(invalid(format!("tree {i} does not read the input columns"))),
            };
            if let Some(&m) = features.iter().max() {
                n_features = n_features.max(m + 1);
            }
            let out = t.output.first().map(String::as_str).unwrap_or_default();
            let (samples, depth) = self.leaf_tables(out)?;
            let raw = tree_arrays(t, &samples, &depth, limits.max_nodes - total_nodes)
                .map_err(|m| invalid(format!("tree {i}: {m}")))?;
            total_nodes += raw.children_left.len();
            raw_trees.push(RawTree {
                features: (!features.is_empty()).then_some(features),
                ..raw
            });
        }
        if n_features == 0 {
            return Err(invalid("the input's width is unknown"));
        }
        IsolationForest::from_raw(
            RawForest {
                format: FORMAT.into(),
                version: 1,
                n_features,
                feature_names: None,
                max_samples,
                offset: -minus_offset,
                trees: raw_trees,
            },
            limits,
        )
    }
}

/// A LabelEncoder's map from a leaf's target value to a float.
struct LeafTable(HashMap<i64, f64>);

impl LeafTable {
    fn of(e: &NodeProto) -> Result<Self, AnomalyError> {
        let values: Vec<f64> = attr(e, "values_floats")
            .map(|a| a.floats.iter().map(|&v| f64::from(v)).collect())
            .or_else(|| attr(e, "values_tensor").and_then(|a| tensor_values(a.t.as_ref()?)))
            .ok_or_else(|| invalid("a LabelEncoder without float values"))?;
        let keys: Vec<f64> = attr(e, "keys_int64s")
            .map(|a| a.ints.iter().map(|&v| v as f64).collect())
            .or_else(|| {
                attr(e, "keys_floats").map(|a| a.floats.iter().map(|&v| f64::from(v)).collect())
            })
            .or_else(|| attr(e, "keys_tensor").and_then(|a| tensor_values(a.t.as_ref()?)))
            .ok_or_else(|| invalid("a LabelEncoder without int64 or float keys"))?;
        if keys.len() != values.len() {
            return Err(invalid("a LabelEncoder with more keys than values"));
        }
        Ok(Self(
            keys.into_iter().map(|k| k as i64).zip(values).collect(),
        ))
    }
}

/// scikit-learn's tree arrays from one TreeEnsembleRegressor (at most `max_nodes` nodes).
fn tree_arrays(
    t: &NodeProto,
    samples: &LeafTable,
    depth: &LeafTable,
    max_nodes: usize,
) -> Result<RawTree, String> {
    let ints = |name: &str| attr(t, name).map(|a| a.ints.as_slice()).unwrap_or_default();
    let ids = ints("nodes_nodeids");
    let n = ids.len();
    if n == 0 || n > max_nodes {
        return Err(format!(
            "{n} nodes is not within 1..={max_nodes} (max_nodes)"
        ));
    }
    let modes = attr(t, "nodes_modes")
        .map(|a| a.strings.as_slice())
        .unwrap_or_default();
    let thresholds: Vec<f64> = match attr(t, "nodes_values") {
        Some(a) if !a.floats.is_empty() => a.floats.iter().map(|&v| f64::from(v)).collect(),
        _ => attr(t, "nodes_values_as_tensor")
            .and_then(|a| tensor_values(a.t.as_ref()?))
            .unwrap_or_default(),
    };
    let (features, yes, no, trees) = (
        ints("nodes_featureids"),
        ints("nodes_truenodeids"),
        ints("nodes_falsenodeids"),
        ints("nodes_treeids"),
    );
    if [
        modes.len(),
        thresholds.len(),
        features.len(),
        yes.len(),
        no.len(),
        trees.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err("its node attributes differ in length".into());
    }
    if trees.iter().any(|&v| v != trees[0]) {
        return Err("more than one tree in one TreeEnsembleRegressor".into());
    }
    let weights: Vec<f64> = match attr(t, "target_weights") {
        Some(a) if !a.floats.is_empty() => a.floats.iter().map(|&v| f64::from(v)).collect(),
        _ => attr(t, "target_weights_as_tensor")
            .and_then(|a| tensor_values(a.t.as_ref()?))
            .unwrap_or_default(),
    };
    let target_nodes = ints("target_nodeids");
    if weights.len() != target_nodes.len() {
        return Err("target_nodeids and target_weights differ in length".into());
    }
    let id = |v: i64| usize::try_from(v).ok().filter(|&v| v < n);
    let mut left = vec![-1i64; n];
    let mut right = vec![-1i64; n];
    let mut feature = vec![-2i64; n];
    let mut threshold = vec![-2.0f64; n];
    let mut leaf = vec![false; n];
    let mut seen = vec![false; n];
    for k in 0..n {
        let i = id(ids[k]).ok_or_else(|| format!("node id {} is not below {n}", ids[k]))?;
        if std::mem::replace(&mut seen[i], true) {
            return Err(format!("node id {i} appears twice"));
        }
        match modes[k].as_slice() {
            b"BRANCH_LEQ" => {
                let child =
                    |v: i64| id(v).ok_or_else(|| format!("node {i}: child {v} is not below {n}"));
                left[i] = child(yes[k])? as i64;
                right[i] = child(no[k])? as i64;
                feature[i] = features[k];
                threshold[i] = thresholds[k];
            }
            b"LEAF" => leaf[i] = true,
            m => {
                return Err(format!(
                    "node {i} has mode {}; skl2onnx's forests use BRANCH_LEQ and LEAF",
                    String::from_utf8_lossy(m)
                ));
            }
        }
    }
    // The leaf's target value keys the two tables.
    let mut key = vec![None; n];
    for (&node, &w) in target_nodes.iter().zip(&weights) {
        let i = id(node).ok_or_else(|| format!("target node {node} is not below {n}"))?;
        if w.fract() != 0.0 {
            return Err(format!("leaf {i}: target {w} is not a leaf id"));
        }
        key[i] = Some(w as i64);
    }
    // Depth by node, children after their parents (checked again when the tree is built).
    let mut level = vec![0usize; n];
    for i in 0..n {
        if !leaf[i] {
            for c in [left[i], right[i]] {
                let c = c as usize;
                if c > i {
                    level[c] = level[i] + 1;
                }
            }
        }
    }
    let mut n_node_samples = vec![0.0f64; n];
    for i in (0..n).rev() {
        if leaf[i] {
            let k = key[i].ok_or_else(|| format!("leaf {i} has no target"))?;
            let s = samples.0.get(&k).copied();
            let d = depth.0.get(&k).copied();
            let (Some(s), Some(d)) = (s, d) else {
                return Err(format!("leaf {i} is missing from its LabelEncoder tables"));
            };
            // The table counts the nodes on the leaf's path (its depth + 1).
            if d != (level[i] + 1) as f64 {
                return Err(format!(
                    "leaf {i} is at depth {} but the graph's path table says {d} nodes",
                    level[i]
                ));
            }
            n_node_samples[i] = s;
        } else {
            let (l, r) = (left[i] as usize, right[i] as usize);
            if l <= i || r <= i {
                return Err(format!("node {i}: its children do not come after it"));
            }
            n_node_samples[i] = n_node_samples[l] + n_node_samples[r];
        }
    }
    Ok(RawTree {
        features: None,
        children_left: left,
        children_right: right,
        feature,
        threshold,
        n_node_samples,
    })
}

/// The `max_samples` whose `c(max_samples)` is `c` (within float32 rounding), if any.
fn max_samples_for(c: f64) -> Option<u64> {
    if !(c.is_finite() && c >= 0.0) {
        return None;
    }
    // c(n) increases with n: the first n with c(n) >= c, or the one before it.
    let (mut lo, mut hi) = (1u64, MAX_SAMPLES_SEARCHED);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if crate::average_path_length(mid as f64) >= c {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let err = |n: u64| (crate::average_path_length(n as f64) - c).abs();
    let best = if lo > 1 && err(lo - 1) < err(lo) {
        lo - 1
    } else {
        lo
    };
    (err(best) <= 1e-5 * c.max(1.0)).then_some(best)
}

/// The width of the graph's first input, when fixed.
fn input_width(g: &GraphProto) -> Option<usize> {
    let t = g.input.first()?.r#type.as_ref()?;
    let Some(type_proto::Value::TensorType(t)) = &t.value else {
        return None;
    };
    let dim = t.shape.as_ref()?.dim.get(1)?;
    match dim.value {
        Some(infermesh_model_core::onnx_proto::tensor_shape_proto::dimension::Value::DimValue(
            v,
        )) => usize::try_from(v).ok().filter(|&v| v > 0),
        _ => None,
    }
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// A tensor's elements as f64: FLOAT, DOUBLE or INT64, from `raw_data` or the typed field.
fn tensor_values(t: &TensorProto) -> Option<Vec<f64>> {
    let raw = &t.raw_data;
    match t.data_type {
        data_type::FLOAT if !raw.is_empty() => Some(
            raw.chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        ),
        data_type::FLOAT => Some(t.float_data.iter().map(|&v| f64::from(v)).collect()),
        data_type::DOUBLE if !raw.is_empty() => Some(
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect(),
        ),
        data_type::DOUBLE => Some(t.double_data.clone()),
        data_type::INT64 if !raw.is_empty() => Some(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()) as f64)
                .collect(),
        ),
        data_type::INT64 => Some(t.int64_data.iter().map(|&v| v as f64).collect()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn max_samples_is_recovered_from_c() {
        for n in [1u64, 2, 3, 32, 128, 256, 10_000] {
            let c = f64::from(crate::average_path_length(n as f64) as f32);
            let got = max_samples_for(c).unwrap();
            assert!(
                (crate::average_path_length(got as f64) - c).abs() <= 1e-5 * c.max(1.0),
                "{n}: {got}"
            );
            if n < 10_000 {
                assert_eq!(got, n);
            }
        }
        assert_eq!(max_samples_for(f64::NAN), None);
        assert_eq!(max_samples_for(-1.0), None);
    }

    #[test]
    fn bytes_that_are_not_a_model_are_refused() {
        let limits = LoadLimits::default();
        for bytes in [&b""[..], b"\x08", b"not an onnx file at all", &[0xff; 64]] {
            let e = from_onnx(bytes, &limits).unwrap_err().to_string();
            assert!(
                e.contains("not an ONNX model") || e.contains("not a skl2onnx"),
                "{e}"
            );
        }
        let small = LoadLimits {
            max_file_bytes: 4,
            ..LoadLimits::default()
        };
        let e = from_onnx(&[0; 8], &small).unwrap_err().to_string();
        assert!(e.contains("max_file_bytes"), "{e}");
    }
}
