//! Every hand-made hostile model under `tests/hostile/` is refused at load with its reason
//! (the table below, which `tests/hostile/README.md` mirrors), and the hostile shapes too
//! large to commit (a 100k-node chain, a file over the size limit) are generated here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use infermesh_model_core::TabularModel;
use infermesh_trees::{LoadLimits, ModelFormat, TreeEnsemble, TreeError};

fn hostile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Case directory, and a fragment the refusal's message must contain.
const CASES: &[(&str, &str)] = &[
    ("self_loop", "node 0 is its own child (a self-loop)"),
    (
        "shared_child",
        "has node 1 as both children (a node with two parents)",
    ),
    ("two_parents", "node 3 has two parents (nodes 1 and 2)"),
    ("cycle", "node 1 has child 0 before it (a possible cycle"),
    ("child_out_of_range", "node 0 has child 7 out of range"),
    (
        "huge_num_feature",
        "num_feature 4294967295 is over the limit max_features = 100000",
    ),
    (
        "huge_num_class",
        "num_class 4294967295 is over the limit max_outputs = 10000",
    ),
    ("negative_num_feature", "num_feature is negative (-1)"),
    (
        "unknown_objective",
        "unsupported xgboost_json model: objective 'reg:made_up'",
    ),
    ("deep_json", "recursion limit exceeded"),
    (
        "lightgbm_zero_leaves",
        "num_leaves=0 (a tree has at least one leaf)",
    ),
    (
        "lightgbm_short_arrays",
        "'leaf_value' has 2 values, expected 3",
    ),
    (
        "lightgbm_huge_num_leaves",
        "node count (all trees) 199999999999 is over the limit max_nodes = 50000000",
    ),
    ("lightgbm_negative_num_class", "num_class=-1 is not a count"),
    (
        "lightgbm_huge_max_feature_idx",
        "feature count (max_feature_idx + 1) 4294967295 is over the limit max_features = 100000",
    ),
    (
        "lightgbm_shared_leaf",
        "leaf 0 has two parents (nodes 0 and 1)",
    ),
    (
        "lightgbm_cycle",
        "4 of 7 nodes are not reachable from the root (a cycle)",
    ),
    (
        "ubj_huge_length",
        "declared length 9223372036854775807 exceeds the",
    ),
    ("ubj_huge_string", "declared length 2147483647 exceeds the"),
    ("ubj_deep", "nesting deeper than 128 levels"),
];

/// The one model file of case directory `dir`, and its format (from the file name, as the
/// server picks it).
fn case_file(dir: &str) -> (PathBuf, ModelFormat) {
    for format in [
        ModelFormat::XgboostJson,
        ModelFormat::XgboostUbj,
        ModelFormat::Lightgbm,
    ] {
        let p = hostile().join(dir).join(format.default_file_name());
        if p.is_file() {
            return (p, format);
        }
    }
    panic!("tests/hostile/{dir} has no model file");
}

#[test]
fn every_hostile_file_is_refused_with_its_reason() {
    for (dir, reason) in CASES {
        let (path, format) = case_file(dir);
        let start = Instant::now();
        let err = match TreeEnsemble::load(&path, format) {
            Ok(_) => panic!("{dir}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(reason), "{dir}: {err:?} lacks {reason:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{dir}: slow refusal"
        );
        assert!(
            std::fs::metadata(&path).unwrap().len() <= 1024,
            "{dir}: hostile files stay small"
        );
    }
}

#[test]
fn the_table_and_the_readme_list_every_case_directory() {
    let readme = std::fs::read_to_string(hostile().join("README.md")).unwrap();
    let mut dirs: Vec<String> = std::fs::read_dir(hostile())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut table: Vec<String> = CASES.iter().map(|(d, _)| d.to_string()).collect();
    table.sort();
    assert_eq!(dirs, table);
    for d in &dirs {
        assert!(readme.contains(&format!("`{d}/")), "README.md lacks {d}");
    }
}

/// The models the hostile files were made from, each differing from these in one defect:
/// these load, so each refusal is for that defect.
const XGB_BASE: &str = r#"{"learner": {"learner_model_param": {"num_feature": "2",
    "num_class": "0", "num_target": "1", "base_score": "5E-1"},
    "objective": {"name": "binary:logistic"}, "gradient_booster": {"name": "gbtree",
    "model": {"tree_info": [0], "trees": [{"left_children": [1, -1, -1],
    "right_children": [2, -1, -1], "split_indices": [0, 0, 0],
    "split_conditions": [0.5, -1.0, 1.0], "default_left": [1, 0, 0],
    "sum_hessian": [2.0, 1.0, 1.0]}]}}}}"#;

const LGB_BASE: &str = "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\n\
    label_index=0\nmax_feature_idx=1\nobjective=binary sigmoid:1\nfeature_names=a b\n\n\
    Tree=0\nnum_leaves=3\nnum_cat=0\nsplit_feature=0 1\nthreshold=0.5 0.25\n\
    decision_type=2 2\nleft_child=1 -1\nright_child=-2 -3\nleaf_value=0.1 -0.2 0.3\n\
    leaf_count=10 5 5\ninternal_count=20 10\nis_linear=0\nshrinkage=1\n\n\nend of trees\n";

#[test]
fn the_unbroken_base_models_load() {
    let x = TreeEnsemble::from_xgboost_json(XGB_BASE.as_bytes()).unwrap();
    let mut out = [0f32; 1];
    x.predict(&[0.0, 0.0], &mut out).unwrap();
    let l = TreeEnsemble::from_lightgbm_text(LGB_BASE).unwrap();
    l.predict(&[0.0, 0.0], &mut out).unwrap();
    assert!(
        (out[0] - 1.0 / (1.0 + (-0.1f32).exp())).abs() < 1e-6,
        "{out:?}"
    );
}

/// An XGBoost JSON model whose one tree is a chain of `depth` splits (each left child a leaf).
fn xgb_chain(depth: usize) -> Vec<u8> {
    let n = 2 * depth + 1;
    let (mut left, mut right) = (vec![-1i64; n], vec![-1i64; n]);
    for k in 0..depth {
        left[2 * k] = (2 * k + 1) as i64;
        right[2 * k] = (2 * k + 2) as i64;
    }
    let v = serde_json::json!({"learner": {
        "learner_model_param": {"num_feature": "1", "num_class": "0", "base_score": "5E-1"},
        "objective": {"name": "reg:squarederror"},
        "gradient_booster": {"name": "gbtree", "model": {"trees": [{
            "left_children": left, "right_children": right,
            "split_indices": vec![0; n],
            "split_conditions": (0..n).map(|i| i as f64).collect::<Vec<_>>(),
            "default_left": vec![0; n], "sum_hessian": vec![1.0; n]}]}}}});
    serde_json::to_vec(&v).unwrap()
}

/// A LightGBM model whose one tree is a chain of `depth` splits.
fn lgb_chain(depth: usize) -> String {
    let nums = |f: &dyn Fn(usize) -> String, n: usize| (0..n).map(f).collect::<Vec<_>>().join(" ");
    // Internal node k: left is leaf k, right is node k + 1 (the last one's right is a leaf).
    let right = |k: usize| {
        if k + 1 < depth {
            (k + 1).to_string()
        } else {
            format!("-{}", depth + 1)
        }
    };
    format!(
        "tree\nversion=v4\nnum_class=1\nmax_feature_idx=0\nobjective=regression\n\n\
         Tree=0\nnum_leaves={}\nsplit_feature={}\nthreshold={}\ndecision_type={}\n\
         left_child={}\nright_child={}\nleaf_value={}\nleaf_count={}\ninternal_count={}\n\n\
         end of trees\n",
        depth + 1,
        nums(&|_| "0".into(), depth),
        nums(&|k| k.to_string(), depth),
        nums(&|_| "2".into(), depth),
        nums(&|k| format!("-{}", k + 1), depth),
        nums(&right, depth),
        nums(&|k| k.to_string(), depth + 1),
        nums(&|_| "1".into(), depth + 1),
        nums(&|_| "2".into(), depth),
    )
}

#[test]
fn a_100k_node_chain_is_refused_quickly_for_its_depth() {
    let depth = 50_000; // 100,001 nodes
    for (bytes, format) in [
        (xgb_chain(depth), ModelFormat::XgboostJson),
        (lgb_chain(depth).into_bytes(), ModelFormat::Lightgbm),
    ] {
        let start = Instant::now();
        let err = TreeEnsemble::from_bytes(&bytes, format)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tree 0 depth 257 is over the limit max_depth = 256"),
            "{format:?}: {err}"
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{format:?}");
    }
}

#[test]
fn chains_at_the_depth_limit_load_predict_and_explain() {
    let limits = LoadLimits::default();
    for (bytes, format) in [
        (xgb_chain(limits.max_depth), ModelFormat::XgboostJson),
        (
            lgb_chain(limits.max_depth).into_bytes(),
            ModelFormat::Lightgbm,
        ),
    ] {
        let m = TreeEnsemble::from_bytes(&bytes, format).unwrap();
        assert!(!m.uses_dense_layout());
        let mut out = [0f32; 1];
        m.predict(&[1e9], &mut out).unwrap();
        let phi = m.contributions(&[1e9]).unwrap();
        let sum: f32 = phi.iter().sum();
        assert!((sum - out[0]).abs() < 1e-3, "{format:?}: {sum} vs {out:?}");
    }
}

#[test]
fn each_limit_is_named_with_the_value_and_the_bound() {
    let json = fixtures().join("xgb_multi_softprob.json");
    let txt = fixtures().join("lgb_multiclass.txt");
    let ubj = fixtures().join("xgb_binary_logistic.ubj");
    let size = std::fs::metadata(&ubj).unwrap().len();
    let d = LoadLimits::default;
    for (limits, path, format, expect) in [
        (
            LoadLimits {
                max_file_bytes: 1000,
                ..d()
            },
            &ubj,
            ModelFormat::XgboostUbj,
            format!("xgboost_ubj model: file size {size} is over the limit max_file_bytes = 1000"),
        ),
        (
            LoadLimits {
                max_features: 3,
                ..d()
            },
            &json,
            ModelFormat::XgboostJson,
            "num_feature 6 is over the limit max_features = 3".into(),
        ),
        (
            LoadLimits {
                max_outputs: 2,
                ..d()
            },
            &txt,
            ModelFormat::Lightgbm,
            "num_class 3 is over the limit max_outputs = 2".into(),
        ),
        (
            LoadLimits {
                max_trees: 5,
                ..d()
            },
            &txt,
            ModelFormat::Lightgbm,
            "tree count 30 is over the limit max_trees = 5".into(),
        ),
        (
            LoadLimits {
                max_trees: 5,
                ..d()
            },
            &json,
            ModelFormat::XgboostJson,
            "tree count 30 is over the limit max_trees = 5".into(),
        ),
        (
            LoadLimits {
                max_nodes: 10,
                ..d()
            },
            &txt,
            ModelFormat::Lightgbm,
            "is over the limit max_nodes = 10".into(),
        ),
        (
            LoadLimits {
                max_depth: 2,
                ..d()
            },
            &json,
            ModelFormat::XgboostJson,
            "tree 0 depth 3 is over the limit max_depth = 2".into(),
        ),
    ] {
        let err = TreeEnsemble::load_with_limits(path, format, &limits).unwrap_err();
        assert!(matches!(err, TreeError::Limit { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&expect), "{msg:?} lacks {expect:?}");
        // The in-memory constructors apply the same limits.
        let bytes = std::fs::read(path).unwrap();
        let err = TreeEnsemble::from_bytes_with_limits(&bytes, format, &limits).unwrap_err();
        assert!(
            err.to_string().contains(limits_name(&expect)),
            "{err} / {expect}"
        );
    }
}

fn limits_name(msg: &str) -> &str {
    let start = msg.find("max_").unwrap();
    let end = msg[start..].find(' ').map_or(msg.len(), |e| start + e);
    &msg[start..end]
}

/// The size is taken from the file's metadata before anything is read: a sparse file far
/// past the limit is refused with its full size (reading stops at the limit, which would
/// report limit + 1).
#[test]
fn an_oversized_file_is_refused_from_its_metadata() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile-oversized");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.json");
    let size = 8u64 << 30;
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let start = Instant::now();
    let err = TreeEnsemble::load(&path, ModelFormat::XgboostJson).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        err.to_string().contains(&format!(
            "file size {size} is over the limit max_file_bytes"
        )),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// Non-finite thresholds and leaf values are not refused (they cannot break a walk: NaN
/// thresholds send every row right), and prediction and TreeSHAP stay panic-free on them.
#[test]
fn non_finite_numbers_load_and_predict_without_panicking() {
    let xgb = XGB_BASE
        .replace("[0.5, -1.0, 1.0]", r#"["NaN", "inf", "-inf"]"#)
        .replace("[2.0, 1.0, 1.0]", r#"["NaN", 1.0, 1.0]"#);
    let lgb = LGB_BASE
        .replace("threshold=0.5 0.25", "threshold=nan inf")
        .replace("leaf_value=0.1 -0.2 0.3", "leaf_value=inf -inf nan");
    for (bytes, format) in [
        (xgb.into_bytes(), ModelFormat::XgboostJson),
        (lgb.into_bytes(), ModelFormat::Lightgbm),
    ] {
        let m = TreeEnsemble::from_bytes(&bytes, format).unwrap();
        let mut out = [0f32; 3];
        m.predict(&[0.0, 0.0, f32::NAN, 1.0, 7.0, f32::INFINITY], &mut out)
            .unwrap();
        m.contributions(&[0.3, f32::NAN]).unwrap();
    }
}
