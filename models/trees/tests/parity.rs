//! Predictions and TreeSHAP contributions equal xgboost's and lightgbm's own (within 1e-5) on
//! every committed fixture (`tools/gen_tree_fixtures.py`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use infermesh_model_core::{TabularModel, Task};
use infermesh_trees::{ModelFormat, TreeEnsemble};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [fixtures(), fixtures().join("bench")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with(".expected.json") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 18, "fixtures are missing: {out:?}");
    out
}

fn row(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().map_or(f32::NAN, |f| f as f32))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

#[test]
fn every_fixture_matches_its_library() {
    for case in cases() {
        let c: Value = serde_json::from_str(&std::fs::read_to_string(&case).unwrap()).unwrap();
        let format = ModelFormat::from_triton_model_type(c["format"].as_str().unwrap()).unwrap();
        let model = TreeEnsemble::load(&fixtures().join(c["model"].as_str().unwrap()), format)
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let inputs: Vec<Vec<f32>> = c["inputs"].as_array().unwrap().iter().map(row).collect();
        let k = model.num_outputs();
        // Batch prediction.
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let mut out = vec![0f32; inputs.len() * k];
        model.predict(&flat, &mut out).unwrap();
        for (i, exp) in c["predict"].as_array().unwrap().iter().enumerate() {
            let exp = row(exp);
            assert_eq!(exp.len(), k, "{}: outputs per row", case.display());
            for (j, e) in exp.iter().enumerate() {
                let got = out[i * k + j];
                assert!(
                    close(f64::from(got), f64::from(*e)),
                    "{} row {i} out {j}: {got} vs {e}",
                    case.display()
                );
            }
            // Single-row path agrees with the batch path.
            let mut one = vec![0f32; k];
            model.predict(&inputs[i], &mut one).unwrap();
            assert_eq!(one, out[i * k..(i + 1) * k], "{} row {i}", case.display());
        }
        // Exact TreeSHAP.
        for (i, exp) in c["contribs"].as_array().unwrap().iter().enumerate() {
            let exp = row(exp);
            let got = model.contributions(&inputs[i]).unwrap();
            assert_eq!(got.len(), exp.len(), "{}", case.display());
            for (j, (g, e)) in got.iter().zip(&exp).enumerate() {
                assert!(
                    close(f64::from(*g), f64::from(*e)),
                    "{} row {i} contrib {j}: {g} vs {e}",
                    case.display()
                );
            }
        }
    }
}

#[test]
fn json_and_ubj_load_the_same_model() {
    let j = TreeEnsemble::load(
        &fixtures().join("bench/xgb_bench.json"),
        ModelFormat::XgboostJson,
    )
    .unwrap();
    let u = TreeEnsemble::load(
        &fixtures().join("bench/xgb_bench.ubj"),
        ModelFormat::XgboostUbj,
    )
    .unwrap();
    assert_eq!(j.num_trees(), 100);
    assert_eq!(u.num_trees(), 100);
    assert_eq!(j.objective(), "binary:logistic");
    assert_eq!(j.task(), Task::BinaryClassification);
    assert_eq!(j.feature_names().unwrap()[29], "f29");
    // Both prediction layouts are covered by the fixtures: numeric-only ensembles use the
    // perfect-tree layout, categorical / zero-as-missing ones the general traversal.
    assert!(j.uses_dense_layout());
    let cat =
        TreeEnsemble::load(&fixtures().join("lgb_binary.txt"), ModelFormat::Lightgbm).unwrap();
    assert!(!cat.uses_dense_layout());
    let zero = TreeEnsemble::load(
        &fixtures().join("lgb_binary_zero_as_missing.txt"),
        ModelFormat::Lightgbm,
    )
    .unwrap();
    assert!(!zero.uses_dense_layout());
    let lgb = TreeEnsemble::load(
        &fixtures().join("bench/lgb_bench.txt"),
        ModelFormat::Lightgbm,
    )
    .unwrap();
    assert!(lgb.uses_dense_layout());
    let rows: Vec<f32> = (0..3000)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
        .collect();
    let (mut a, mut b) = (vec![0f32; 100], vec![0f32; 100]);
    j.predict(&rows, &mut a).unwrap();
    u.predict(&rows, &mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn large_batches_run_in_parallel_and_agree_with_single_rows() {
    let m = TreeEnsemble::load(
        &fixtures().join("bench/lgb_bench.txt"),
        ModelFormat::Lightgbm,
    )
    .unwrap();
    assert_eq!(m.feature_names().unwrap().len(), 30);
    let n = 5000;
    let rows: Vec<f32> = (0..n * 30)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 150.0)
        .collect();
    let mut out = vec![0f32; n];
    m.predict(&rows, &mut out).unwrap();
    for i in (0..n).step_by(97) {
        let mut one = [0f32];
        m.predict(&rows[i * 30..(i + 1) * 30], &mut one).unwrap();
        assert_eq!(one[0], out[i]);
    }
}

#[test]
fn bad_artifacts_and_inputs_are_errors_not_panics() {
    for (bytes, fmt) in [
        (&b"{}"[..], ModelFormat::XgboostJson),
        (b"{\"learner\": 1}", ModelFormat::XgboostJson),
        (b"not json", ModelFormat::XgboostJson),
        (b"\x00\x01", ModelFormat::XgboostUbj),
        (b"tree\nversion=v4\n", ModelFormat::Lightgbm),
        (b"hello", ModelFormat::Lightgbm),
        (b"\xff\xfe", ModelFormat::Lightgbm),
    ] {
        assert!(TreeEnsemble::from_bytes(bytes, fmt).is_err());
    }
    // Every truncation of a real model fails cleanly or loads a valid one.
    let text = std::fs::read_to_string(fixtures().join("lgb_binary.txt")).unwrap();
    for cut in (0..text.len()).step_by(997) {
        let _ = TreeEnsemble::from_lightgbm_text(&text[..cut]);
    }
    let ubj = std::fs::read(fixtures().join("xgb_binary_logistic.ubj")).unwrap();
    for cut in (0..ubj.len()).step_by(331) {
        let _ = TreeEnsemble::from_xgboost_ubj(&ubj[..cut]);
    }
    // A tree pointing at a feature past num_feature is refused at load.
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("xgb_binary_logistic.json")).unwrap(),
    )
    .unwrap();
    v["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"][0] = 999.into();
    let err = TreeEnsemble::from_xgboost_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(err.to_string().contains("feature 999"), "{err}");
    // A child cycle is refused.
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("xgb_binary_logistic.json")).unwrap(),
    )
    .unwrap();
    v["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"][1] = 0.into();
    assert!(TreeEnsemble::from_xgboost_json(&serde_json::to_vec(&v).unwrap()).is_err());

    let m = TreeEnsemble::load(&fixtures().join("lgb_binary.txt"), ModelFormat::Lightgbm).unwrap();
    let mut out = [0f32; 1];
    assert!(m.predict(&[0.0; 4], &mut out).is_err());
    assert!(m.predict(&[0.0; 10], &mut out).is_err());
    assert!(m.contributions(&[0.0; 3]).is_err());
}
