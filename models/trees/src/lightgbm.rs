//! LightGBM text models (`Booster.save_model("model.txt")`).
//!
//! Supports numerical splits with every missing-value type (None, Zero, NaN), categorical
//! splits (bitsets), `average_output` (random forest mode) and the objectives `binary`,
//! `cross_entropy`, `regression` (and its l1/huber/fair/quantile/mape variants),
//! `poisson`/`gamma`/`tweedie` and `multiclass`. Linear trees are refused.

use std::collections::HashMap;

use crate::node::{CATEGORICAL, CatSet, DEFAULT_LEFT, Node, ZERO_MISSING, lightgbm_threshold};
use crate::{ModelFormat, Objective, Parts, TreeBuilder, TreeError};

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
fn parse_tree(
    kv: &HashMap<&str, &str>,
    ti: usize,
    cat_sets: &mut Vec<CatSet>,
    cat_bits: &mut Vec<u32>,
) -> Result<TreeBuilder, TreeError> {
    let num_leaves: usize = kv
        .get("num_leaves")
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err(format!("tree {ti} has no num_leaves")))?;
    if kv.get("is_linear").is_some_and(|s| s.trim() == "1") {
        return Err(unsupported("linear trees (linear_tree=true)"));
    }
    let shrinkage = 1.0; // already applied to the written leaf values
    let leaf_value: Vec<f64> = list(kv, "leaf_value", num_leaves, ti)?;
    let mut b = TreeBuilder::default();
    if num_leaves <= 1 {
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
    let num_cat: usize = kv
        .get("num_cat")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let (boundaries, bits): (Vec<u32>, Vec<u32>) = if num_cat > 0 {
        let boundaries: Vec<u32> = list(kv, "cat_boundaries", num_cat + 1, ti)?;
        let total = *boundaries.last().unwrap_or(&0) as usize;
        (boundaries, list(kv, "cat_threshold", total, ti)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let set_base = cat_sets.len() as u32;
    let bits_base = cat_bits.len() as u32;
    for w in boundaries.windows(2) {
        if w[1] < w[0] {
            return Err(err(format!("tree {ti}: cat_boundaries decrease")));
        }
        cat_sets.push(CatSet {
            start: bits_base + w[0],
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
            value = f32::from_bits(set_base + idx as u32);
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
            left: child(left[i])?,
            right: child(right[i])?,
        });
        b.covers.push(internal_count[i]);
    }
    for (l, v) in leaf_value.iter().enumerate() {
        b.nodes.push(Node::leaf((v * shrinkage) as f32));
        b.covers.push(leaf_count[l]);
    }
    // LightGBM numbers internal nodes in creation order, so a child can have a smaller index
    // than its parent. Renumber in pre-order so children always follow their parent.
    Ok(preorder(b))
}

fn preorder(b: TreeBuilder) -> TreeBuilder {
    let mut order = Vec::with_capacity(b.nodes.len());
    let mut stack = vec![0u32];
    let mut seen = vec![false; b.nodes.len()];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i as usize], true) {
            continue; // a malformed tree sharing nodes; the validator rejects what is left
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

pub(crate) fn parse(text: &str) -> Result<Parts, TreeError> {
    let mut header: HashMap<&str, &str> = HashMap::new();
    let mut blocks: Vec<HashMap<&str, &str>> = Vec::new();
    let mut in_tree = false;
    let mut average_output = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line == "end of trees" {
            break;
        }
        if line.starts_with("Tree=") {
            blocks.push(HashMap::new());
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
    if !text.starts_with("tree") {
        return Err(err("not a LightGBM text model (it must start with 'tree')"));
    }
    let max_feature_idx: i64 = header
        .get("max_feature_idx")
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err("no max_feature_idx"))?;
    let num_class: usize = header
        .get("num_class")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1);
    let per_iter: usize = header
        .get("num_tree_per_iteration")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(num_class);
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
    let groups = per_iter.max(1);
    let mut cat_sets = Vec::new();
    let mut cat_bits = Vec::new();
    let mut trees = Vec::with_capacity(blocks.len());
    let weight = if average_output && !blocks.is_empty() {
        (groups as f64 / blocks.len() as f64) as f32
    } else {
        1.0
    };
    for (ti, kv) in blocks.iter().enumerate() {
        let t = parse_tree(kv, ti, &mut cat_sets, &mut cat_bits)?;
        trees.push((t, (ti % groups) as u32, weight));
    }
    let feature_names = header
        .get("feature_names")
        .map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>());
    Ok(Parts {
        trees,
        cat_sets,
        cat_bits,
        num_features: (max_feature_idx + 1).max(0) as usize,
        num_groups: groups,
        base_margin: vec![0.0; groups],
        objective,
        objective_name,
        feature_names,
        format: ModelFormat::Lightgbm,
    })
}
