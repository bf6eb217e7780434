//! LightGBM text models (`Booster.save_model("model.txt")`).
//!
//! Supports numerical splits with every missing-value type (None, Zero, NaN), categorical
//! splits (bitsets), `average_output` (random forest mode) and the objectives `binary`,
//! `cross_entropy`, `regression` (and its l1/huber/fair/quantile/mape variants),
//! `poisson`/`gamma`/`tweedie` and `multiclass`. Linear trees are refused.

use std::collections::HashMap;

use crate::limits::Limit;
use crate::node::{CATEGORICAL, CatSet, DEFAULT_LEFT, Node, ZERO_MISSING, lightgbm_threshold};
use crate::{LoadLimits, ModelFormat, Objective, Parts, TreeBuilder, TreeError};

/// The format's name in errors.
const FMT: &str = "lightgbm";

fn err(message: impl Into<String>) -> TreeError {
    TreeError::Parse {
        format: "lightgbm",
        message: message.into(),
    }
}

fn unsupported(message: impl Into<String>) -> TreeError {
    TreeError::Unsupported {
        format: "lightgbm",
        message: message.into(),
    }
}

/// The count `key` holds, `None` when absent. A present value must be a non-negative integer:
/// a negative or garbled count is an error rather than a silent default.
fn count(kv: &HashMap<&str, &str>, key: &str, what: &str) -> Result<Option<usize>, TreeError> {
    let Some(v) = kv.get(key) else {
        return Ok(None);
    };
    v.trim()
        .parse::<usize>()
        .map(Some)
        .map_err(|_| err(format!("{what}{key}={} is not a count", v.trim())))
}

/// The `n` numbers of `key`. They are parsed first and counted after, so nothing is sized
/// by a declared count the text does not back.
fn list<T: std::str::FromStr>(
    kv: &HashMap<&str, &str>,
    key: &str,
    n: usize,
    ti: usize,
) -> Result<Vec<T>, TreeError> {
    let s = kv
        .get(key)
        .ok_or_else(|| err(format!("tree {ti} has no '{key}'")))?;
    let v: Vec<T> = s
        .split_whitespace()
        .map(|x| x.parse::<T>())
        .collect::<Result<_, _>>()
        .map_err(|_| err(format!("tree {ti}: '{key}' has a bad number")))?;
    if v.len() != n {
        return Err(err(format!(
            "tree {ti}: '{key}' has {} values, expected {n}",
            v.len()
        )));
    }
    Ok(v)
}

/// Parses one `Tree=` block into nodes: internal nodes first (LightGBM's order), then leaves.
/// `nodes_so_far` counts the nodes of the trees before it, against
/// [`LoadLimits::max_nodes`].
fn parse_tree(
    kv: &HashMap<&str, &str>,
    ti: usize,
    cat_sets: &mut Vec<CatSet>,
    cat_bits: &mut Vec<u32>,
    limits: &LoadLimits,
    nodes_so_far: &mut usize,
) -> Result<TreeBuilder, TreeError> {
    let num_leaves = count(kv, "num_leaves", &format!("tree {ti}: "))?
        .ok_or_else(|| err(format!("tree {ti} has no num_leaves")))?;
    if num_leaves == 0 {
        return Err(err(format!(
            "tree {ti}: num_leaves=0 (a tree has at least one leaf)"
        )));
    }
    if kv.get("is_linear").is_some_and(|s| s.trim() == "1") {
        return Err(unsupported("linear trees (linear_tree=true)"));
    }
    // num_leaves - 1 internal nodes and num_leaves leaves.
    let n_nodes = num_leaves.saturating_mul(2) - 1;
    *nodes_so_far = nodes_so_far.saturating_add(n_nodes);
    limits.check(Limit::Nodes, FMT, *nodes_so_far as u64, || {
        "node count (all trees)".into()
    })?;
    let shrinkage = 1.0; // already applied to the written leaf values
    let leaf_value: Vec<f64> = list(kv, "leaf_value", num_leaves, ti)?;
    let mut b = TreeBuilder::default();
    if num_leaves == 1 {
        b.nodes.push(Node::leaf((leaf_value[0] * shrinkage) as f32));
        b.covers.push(1.0);
        return Ok(b);
    }
    let ni = num_leaves - 1;
    let split_feature: Vec<u32> = list(kv, "split_feature", ni, ti)?;
    let threshold: Vec<f64> = list(kv, "threshold", ni, ti)?;
    let decision_type: Vec<u8> = list(kv, "decision_type", ni, ti)?;
    let left: Vec<i64> = list(kv, "left_child", ni, ti)?;
    let right: Vec<i64> = list(kv, "right_child", ni, ti)?;
    // Counts weight TreeSHAP's paths, as LightGBM's own pred_contrib does.
    let internal_count: Vec<f64> = list(kv, "internal_count", ni, ti)?;
    let leaf_count: Vec<f64> = list(kv, "leaf_count", num_leaves, ti)?;
    let num_cat = count(kv, "num_cat", &format!("tree {ti}: "))?.unwrap_or(0);
    // One set per categorical split, so at most one per internal node.
    if num_cat > ni {
        return Err(err(format!(
            "tree {ti}: num_cat={num_cat} but the tree has {ni} splits"
        )));
    }
    let (boundaries, bits): (Vec<u32>, Vec<u32>) = if num_cat > 0 {
        let boundaries: Vec<u32> = list(kv, "cat_boundaries", num_cat + 1, ti)?;
        if boundaries.windows(2).any(|w| w[1] < w[0]) {
            return Err(err(format!("tree {ti}: cat_boundaries decrease")));
        }
        let total = *boundaries.last().unwrap_or(&0) as usize;
        (boundaries, list(kv, "cat_threshold", total, ti)?)
    } else {
        (Vec::new(), Vec::new())
    };
    // Set and word indices are u32 in the node layout.
    let too_many = || err(format!("tree {ti}: too many categorical sets or words"));
    let set_base = u32::try_from(cat_sets.len()).map_err(|_| too_many())?;
    let bits_base = u32::try_from(cat_bits.len()).map_err(|_| too_many())?;
    for w in boundaries.windows(2) {
        cat_sets.push(CatSet {
            start: bits_base.checked_add(w[0]).ok_or_else(too_many)?,
            words: w[1] - w[0],
        });
    }
    cat_bits.extend(bits);

    // Children: >= 0 internal node, < 0 leaf ~index. Leaves are placed after internal nodes.
    let child = |c: i64| -> Result<u32, TreeError> {
        if c >= 0 {
            if c as usize >= ni {
                return Err(err(format!("tree {ti}: child {c} out of range")));
            }
            Ok(c as u32)
        } else {
            let leaf = (!c) as usize;
            if leaf >= num_leaves {
                return Err(err(format!("tree {ti}: leaf {leaf} out of range")));
            }
            Ok((ni + leaf) as u32)
        }
    };
    // Every node but the root must be the child of exactly one internal node, and every node
    // must hang from the root (checked after the walk below): then the nodes form one tree.
    // LightGBM's order is not topological, so this is checked here, before renumbering.
    let mut parent = vec![u32::MAX; ni + num_leaves];
    let mut link = |i: usize, c: i64| -> Result<u32, TreeError> {
        let k = child(c)?;
        if k == 0 {
            return Err(err(format!(
                "tree {ti} node {i} has the root as a child (a cycle)"
            )));
        }
        if k as usize == i {
            return Err(err(format!(
                "tree {ti} node {i} is its own child (a self-loop)"
            )));
        }
        let p = std::mem::replace(&mut parent[k as usize], i as u32);
        if p != u32::MAX {
            let name = if c < 0 {
                format!("leaf {}", !c)
            } else {
                format!("node {c}")
            };
            return Err(err(format!(
                "tree {ti} {name} has two parents (nodes {p} and {i})"
            )));
        }
        Ok(k)
    };
    for i in 0..ni {
        let dt = decision_type[i];
        let mut packed = split_feature[i];
        if packed > crate::node::FEATURE_MASK {
            return Err(err(format!("tree {ti}: feature index too large")));
        }
        let default_left = dt & 2 != 0;
        let value;
        if dt & 1 != 0 {
            packed |= CATEGORICAL;
            let idx = threshold[i] as i64;
            if idx < 0 || idx as usize >= num_cat {
                return Err(err(format!(
                    "tree {ti}: categorical split {i} names set {idx} of {num_cat}"
                )));
            }
            let set = set_base.checked_add(idx as u32).ok_or_else(too_many)?;
            value = f32::from_bits(set);
        } else {
            value = lightgbm_threshold(threshold[i]);
            match (dt >> 2) & 3 {
                // None: NaN is treated as 0.0, so it goes where 0.0 goes.
                0 => {
                    if 0.0 < value {
                        packed |= DEFAULT_LEFT;
                    }
                }
                // Zero: NaN and zero take the default direction.
                1 => {
                    packed |= ZERO_MISSING;
                    if default_left {
                        packed |= DEFAULT_LEFT;
                    }
                }
                // NaN: NaN takes the default direction.
                _ => {
                    if default_left {
                        packed |= DEFAULT_LEFT;
                    }
                }
            }
        }
        b.nodes.push(Node {
            value,
            packed,
            left: link(i, left[i])?,
            right: link(i, right[i])?,
        });
        b.covers.push(internal_count[i]);
    }
    for (l, v) in leaf_value.iter().enumerate() {
        b.nodes.push(Node::leaf((v * shrinkage) as f32));
        b.covers.push(leaf_count[l]);
    }
    // LightGBM numbers internal nodes in creation order, so a child can have a smaller index
    // than its parent. Renumber in pre-order so children always follow their parent.
    let n = b.nodes.len();
    let tree = preorder(b);
    if tree.nodes.len() != n {
        // With one parent per node, the nodes the root does not reach form a cycle.
        return Err(err(format!(
            "tree {ti}: {} of {n} nodes are not reachable from the root (a cycle)",
            n - tree.nodes.len()
        )));
    }
    Ok(tree)
}

fn preorder(b: TreeBuilder) -> TreeBuilder {
    let mut order = Vec::with_capacity(b.nodes.len());
    let mut stack = vec![0u32];
    let mut seen = vec![false; b.nodes.len()];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i as usize], true) {
            continue; // unreachable for checked trees (one parent per node); kept as a guard
        }
        order.push(i);
        let n = &b.nodes[i as usize];
        if !n.is_leaf() {
            stack.push(n.right);
            stack.push(n.left);
        }
    }
    let mut new_index = vec![u32::MAX; b.nodes.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old as usize] = new as u32;
    }
    let mut out = TreeBuilder::default();
    for &old in &order {
        let mut n = b.nodes[old as usize];
        if !n.is_leaf() {
            n.left = new_index[n.left as usize];
            n.right = new_index[n.right as usize];
        }
        out.nodes.push(n);
        out.covers.push(b.covers[old as usize]);
    }
    out
}

pub(crate) fn parse(text: &str, limits: &LoadLimits) -> Result<Parts, TreeError> {
    if !text.starts_with("tree") {
        return Err(err("not a LightGBM text model (it must start with 'tree')"));
    }
    let mut header: HashMap<&str, &str> = HashMap::new();
    let mut blocks: Vec<HashMap<&str, &str>> = Vec::new();
    let mut num_trees = 0usize;
    let mut in_tree = false;
    let mut average_output = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line == "end of trees" {
            break;
        }
        if line.starts_with("Tree=") {
            // Counted to the end for the error message, but no block is kept past the limit.
            num_trees += 1;
            if num_trees <= limits.max_trees {
                blocks.push(HashMap::new());
            }
            in_tree = true;
            continue;
        }
        if line == "average_output" {
            average_output = true;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match blocks.last_mut() {
            Some(b) if in_tree => {
                b.insert(k, v);
            }
            _ => {
                header.insert(k, v);
            }
        }
    }
    limits.check(Limit::Trees, FMT, num_trees as u64, || "tree count".into())?;
    let max_feature_idx: i64 = header
        .get("max_feature_idx")
        .ok_or_else(|| err("no max_feature_idx"))?
        .trim()
        .parse()
        .map_err(|_| err("max_feature_idx is not an integer"))?;
    // Bounded before anything is sized by it (the server keeps a name per feature).
    let num_features = u64::try_from(max_feature_idx)
        .map_err(|_| err(format!("max_feature_idx is negative ({max_feature_idx})")))?
        .saturating_add(1);
    limits.check(Limit::Features, FMT, num_features, || {
        "feature count (max_feature_idx + 1)".into()
    })?;
    let num_class = count(&header, "num_class", "")?.unwrap_or(1);
    let per_iter = count(&header, "num_tree_per_iteration", "")?.unwrap_or(num_class);
    for (key, v) in [
        ("num_class", num_class),
        ("num_tree_per_iteration", per_iter),
    ] {
        if v == 0 {
            return Err(err(format!("{key}=0 (a model has at least one output)")));
        }
        limits.check(Limit::Outputs, FMT, v as u64, || key.into())?;
    }
    let objective_line = header.get("objective").copied().unwrap_or("regression");
    let mut parts = objective_line.split_whitespace();
    let objective_name = parts.next().unwrap_or("regression").to_string();
    let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once(':')).collect();
    let objective = match objective_name.as_str() {
        "binary" => Objective::Sigmoid(
            params
                .get("sigmoid")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1.0),
        ),
        "cross_entropy" | "xentropy" => Objective::Sigmoid(1.0),
        "regression" | "regression_l2" | "regression_l1" | "l1" | "l2" | "mse" | "mae"
        | "huber" | "fair" | "quantile" | "mape" | "rmse" => Objective::Identity,
        "poisson" | "gamma" | "tweedie" => Objective::Exp,
        "multiclass" | "softmax" => Objective::Softmax,
        other => return Err(unsupported(format!("objective '{other}'"))),
    };
    if objective == Objective::Softmax && per_iter != num_class {
        return Err(err(
            "multiclass model with num_tree_per_iteration != num_class",
        ));
    }
    let groups = per_iter;
    let mut cat_sets = Vec::new();
    let mut cat_bits = Vec::new();
    let mut trees = Vec::with_capacity(blocks.len());
    let weight = if average_output && !blocks.is_empty() {
        (groups as f64 / blocks.len() as f64) as f32
    } else {
        1.0
    };
    let mut nodes_so_far = 0;
    for (ti, kv) in blocks.iter().enumerate() {
        let t = parse_tree(
            kv,
            ti,
            &mut cat_sets,
            &mut cat_bits,
            limits,
            &mut nodes_so_far,
        )?;
        trees.push((t, (ti % groups) as u32, weight));
    }
    let feature_names = match header.get("feature_names") {
        Some(s) => {
            let n = s.split_whitespace().count();
            limits.check(Limit::Features, FMT, n as u64, || {
                "feature_names count".into()
            })?;
            Some(s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        }
        None => None,
    };
    Ok(Parts {
        trees,
        cat_sets,
        cat_bits,
        // Bounded by max_features above, so it fits.
        num_features: usize::try_from(num_features).unwrap_or(usize::MAX),
        num_groups: groups,
        base_margin: vec![0.0; groups],
        objective,
        objective_name,
        feature_names,
        format: ModelFormat::Lightgbm,
    })
}
