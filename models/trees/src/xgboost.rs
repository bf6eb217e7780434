//! XGBoost models saved with `save_model` as JSON or UBJSON (both parse into a JSON value).
//!
//! Supports `gbtree` and `dart` boosters with numerical splits; objectives
//! `binary:logistic`, `binary:logitraw`, `reg:logistic`, `reg:squarederror` (and the other
//! identity-link regressions), `multi:softprob`, `multi:softmax`, and the log-link ones
//! (`count:poisson`, `reg:gamma`, `reg:tweedie`).

use serde_json::Value;

use crate::limits::Limit;
use crate::node::{DEFAULT_LEFT, Node};
use crate::{LoadLimits, ModelFormat, Objective, Parts, TreeBuilder, TreeError};

fn err(format: ModelFormat, message: impl Into<String>) -> TreeError {
    TreeError::Parse {
        format: if format == ModelFormat::XgboostUbj {
            "xgboost_ubj"
        } else {
            "xgboost_json"
        },
        message: message.into(),
    }
}

fn unsupported(format: ModelFormat, message: impl Into<String>) -> TreeError {
    TreeError::Unsupported {
        format: if format == ModelFormat::XgboostUbj {
            "xgboost_ubj"
        } else {
            "xgboost_json"
        },
        message: message.into(),
    }
}

/// A number that XGBoost may store as a JSON number or a string ("5E-1", "[5E-1]"), or an
/// array of those (one number per element).
fn numbers(v: &Value) -> Option<Vec<f64>> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| scalar_numbers(x).and_then(|v| v.first().copied()))
            .collect(),
        _ => scalar_numbers(v),
    }
}

/// [`numbers`] of a number or a string: not recursive, so no nesting in the file can make it
/// deep.
fn scalar_numbers(v: &Value) -> Option<Vec<f64>> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| vec![x]),
        Value::String(s) => {
            let s = s.trim().trim_start_matches('[').trim_end_matches(']');
            s.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.trim().parse::<f64>().ok())
                .collect()
        }
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn array<'a>(
    tree: &'a Value,
    key: &str,
    format: ModelFormat,
    ti: usize,
) -> Result<&'a Vec<Value>, TreeError> {
    tree.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| err(format, format!("tree {ti} has no '{key}' array")))
}

/// Parses tree `ti`; `nodes_so_far` counts the nodes of the trees before it, against
/// [`LoadLimits::max_nodes`].
fn parse_tree(
    tree: &Value,
    format: ModelFormat,
    ti: usize,
    limits: &LoadLimits,
    nodes_so_far: &mut usize,
) -> Result<TreeBuilder, TreeError> {
    let left = array(tree, "left_children", format, ti)?;
    *nodes_so_far = nodes_so_far.saturating_add(left.len());
    limits.check(Limit::Nodes, format.name(), *nodes_so_far as u64, || {
        "node count (all trees)".into()
    })?;
    let right = array(tree, "right_children", format, ti)?;
    let cond = array(tree, "split_conditions", format, ti)?;
    let index = array(tree, "split_indices", format, ti)?;
    let dleft = array(tree, "default_left", format, ti)?;
    let hess = array(tree, "sum_hessian", format, ti)?;
    let n = left.len();
    if [
        right.len(),
        cond.len(),
        index.len(),
        dleft.len(),
        hess.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err(err(
            format,
            format!("tree {ti}: node arrays differ in length"),
        ));
    }
    if let Some(types) = tree.get("split_type").and_then(Value::as_array)
        && types.iter().any(|t| int(t).unwrap_or(0) != 0)
    {
        return Err(unsupported(
            format,
            format!("tree {ti} has categorical splits (XGBoost categorical data)"),
        ));
    }
    // n is bounded: by the arrays already parsed and by max_nodes just above.
    let mut b = TreeBuilder {
        nodes: Vec::with_capacity(n),
        covers: Vec::with_capacity(n),
    };
    for i in 0..n {
        let l = int(&left[i]).ok_or_else(|| err(format, format!("tree {ti}: bad left child")))?;
        let value = numbers(&cond[i])
            .and_then(|v| v.first().copied())
            .ok_or_else(|| err(format, format!("tree {ti}: bad split condition")))?
            as f32;
        let cover = numbers(&hess[i])
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0);
        if l == -1 {
            b.nodes.push(Node::leaf(value));
        } else {
            let r =
                int(&right[i]).ok_or_else(|| err(format, format!("tree {ti}: bad right child")))?;
            let f =
                int(&index[i]).ok_or_else(|| err(format, format!("tree {ti}: bad split index")))?;
            let d = int(&dleft[i]).unwrap_or(0) != 0;
            if l < 0 || r < 0 || f < 0 || f > i64::from(crate::node::FEATURE_MASK) {
                return Err(err(
                    format,
                    format!("tree {ti} node {i}: negative or huge index"),
                ));
            }
            b.nodes.push(Node {
                value,
                packed: f as u32 | if d { DEFAULT_LEFT } else { 0 },
                left: l as u32,
                right: r as u32,
            });
        }
        b.covers.push(cover);
    }
    Ok(b)
}

pub(crate) fn parse(
    root: &Value,
    format: ModelFormat,
    limits: &LoadLimits,
) -> Result<Parts, TreeError> {
    let fmt = format.name();
    let learner = root
        .get("learner")
        .ok_or_else(|| err(format, "no 'learner' object"))?;
    let lmp = learner
        .get("learner_model_param")
        .ok_or_else(|| err(format, "no 'learner_model_param'"))?;
    let num_feature = lmp.get("num_feature").and_then(int).unwrap_or(0);
    let num_class = lmp.get("num_class").and_then(int).unwrap_or(0);
    // Bounded before anything is sized by them (the server keeps a name per feature; base
    // scores and outputs are per class).
    let num_feature = u64::try_from(num_feature)
        .map_err(|_| err(format, format!("num_feature is negative ({num_feature})")))?;
    limits.check(Limit::Features, fmt, num_feature, || "num_feature".into())?;
    let num_class = u64::try_from(num_class)
        .map_err(|_| err(format, format!("num_class is negative ({num_class})")))?;
    limits.check(Limit::Outputs, fmt, num_class, || "num_class".into())?;
    let num_target = lmp.get("num_target").and_then(int).unwrap_or(1);
    if num_target > 1 {
        return Err(unsupported(format, "multi-target models"));
    }
    let objective_name = learner
        .get("objective")
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| err(format, "no objective name"))?
        .to_string();
    let groups = if num_class > 1 { num_class as usize } else { 1 };
    let (objective, link): (Objective, fn(f64) -> f64) = match objective_name.as_str() {
        "binary:logistic" | "reg:logistic" => (Objective::Sigmoid(1.0), |p| (p / (1.0 - p)).ln()),
        // xgboost 3 stores logitraw's base_score as a margin already.
        "binary:logitraw" => (Objective::Identity, |p| p),
        "reg:squarederror"
        | "reg:linear"
        | "reg:pseudohubererror"
        | "reg:absoluteerror"
        | "reg:quantileerror"
        | "reg:squaredlogerror"
        | "binary:hinge" => (Objective::Identity, |p| p),
        "count:poisson" | "reg:gamma" | "reg:tweedie" => (Objective::Exp, f64::ln),
        "multi:softprob" => (Objective::Softmax, |p| p),
        "multi:softmax" => (Objective::ArgMax, |p| p),
        other => return Err(unsupported(format, format!("objective '{other}'"))),
    };
    let base = lmp
        .get("base_score")
        .and_then(numbers)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![0.5]);
    let base_margin: Vec<f64> = if base.len() == groups {
        base.iter().map(|&b| link(b)).collect()
    } else if base.len() == 1 {
        vec![link(base[0]); groups]
    } else {
        return Err(err(
            format,
            format!("base_score has {} values for {groups} outputs", base.len()),
        ));
    };
    if base_margin.iter().any(|m| !m.is_finite()) {
        return Err(err(format, "base_score is outside the objective's range"));
    }

    let booster = learner
        .get("gradient_booster")
        .ok_or_else(|| err(format, "no 'gradient_booster'"))?;
    let kind = booster
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("gbtree");
    let (model, weights) = match kind {
        "gbtree" => (booster.get("model"), None),
        "dart" => (
            booster.get("gbtree").and_then(|g| g.get("model")),
            booster.get("weight_drop").and_then(numbers),
        ),
        other => {
            return Err(unsupported(
                format,
                format!("booster '{other}' (gbtree and dart are)"),
            ));
        }
    };
    let model = model.ok_or_else(|| err(format, "no tree model"))?;
    let trees = model
        .get("trees")
        .and_then(Value::as_array)
        .ok_or_else(|| err(format, "no 'trees'"))?;
    limits.check(Limit::Trees, fmt, trees.len() as u64, || {
        "tree count".into()
    })?;
    let info = model.get("tree_info").and_then(Value::as_array);
    let mut out = Vec::with_capacity(trees.len());
    let mut nodes_so_far = 0;
    for (ti, t) in trees.iter().enumerate() {
        let group = match info.and_then(|i| i.get(ti)).and_then(int) {
            Some(g) => u32::try_from(g)
                .map_err(|_| err(format, format!("tree {ti} has group {g} (out of range)")))?,
            None => (ti % groups) as u32,
        };
        let weight = weights
            .as_ref()
            .and_then(|w| w.get(ti))
            .copied()
            .unwrap_or(1.0) as f32;
        let tree = parse_tree(t, format, ti, limits, &mut nodes_so_far)?;
        out.push((tree, group, weight));
    }
    let names = learner.get("feature_names").and_then(Value::as_array);
    if let Some(a) = names {
        limits.check(Limit::Features, fmt, a.len() as u64, || {
            "feature_names count".into()
        })?;
    }
    let feature_names = names
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty());
    // Bounded by max_features above, so it fits.
    let mut num_features = usize::try_from(num_feature).unwrap_or(usize::MAX);
    if num_features == 0 {
        num_features = feature_names.as_ref().map_or(0, Vec::len);
    }
    Ok(Parts {
        trees: out,
        cat_sets: Vec::new(),
        cat_bits: Vec::new(),
        num_features,
        num_groups: groups,
        base_margin,
        objective,
        objective_name,
        feature_names,
        format,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base_score_forms() {
        assert_eq!(numbers(&json!("5E-1")), Some(vec![0.5]));
        assert_eq!(numbers(&json!("[5E-1,2.5E-1]")), Some(vec![0.5, 0.25]));
        assert_eq!(numbers(&json!(0.5)), Some(vec![0.5]));
        assert_eq!(numbers(&json!("x")), None);
    }
}
