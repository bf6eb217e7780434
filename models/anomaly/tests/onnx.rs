//! A scikit-learn IsolationForest exported by skl2onnx (tests/fixtures/skl2onnx_iforest.onnx,
//! written by tools/gen_anomaly_onnx_fixture.py with the answers of scikit-learn and ONNX
//! Runtime) imported and scored here: the same scores as both, the same verdicts.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use infermesh_anomaly::{IsolationForest, LoadLimits, onnx::from_onnx};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn a_skl2onnx_export_scores_as_scikit_learn_and_onnx_runtime_do() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("skl2onnx_iforest.json")).unwrap())
            .unwrap();
    let forest =
        IsolationForest::load(&fixture("skl2onnx_iforest.onnx"), &LoadLimits::default()).unwrap();
    assert_eq!(
        forest.n_trees(),
        doc["n_estimators"].as_u64().unwrap() as usize
    );
    assert_eq!(forest.n_features(), 4);
    // offset_ as the graph stores it (float32).
    let offset = doc["offset"].as_f64().unwrap();
    assert!(
        (forest.offset() - offset).abs() < 1e-6,
        "{}",
        forest.offset()
    );

    let rows: Vec<f32> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| floats(r).into_iter().map(|x| x as f32))
        .collect();
    let mut got = Vec::new();
    forest.score_rows(&rows, &mut got).unwrap();
    let sk_score = floats(&doc["sklearn_score_samples"]);
    let sk_decision = floats(&doc["sklearn_decision_function"]);
    let ort_scores = floats(&doc["onnxruntime_scores"]);
    assert_eq!(got.len(), sk_score.len());
    for (i, s) in got.iter().enumerate() {
        assert!(
            (s.score - sk_score[i]).abs() < 1e-6,
            "row {i}: {} vs scikit-learn {}",
            s.score,
            sk_score[i]
        );
        assert!(
            (s.decision - sk_decision[i]).abs() < 1e-6,
            "row {i}: {} vs {}",
            s.decision,
            sk_decision[i]
        );
        // ONNX Runtime computes the graph in float32.
        assert!(
            (s.decision - ort_scores[i]).abs() < 1e-5,
            "row {i}: {} vs ONNX Runtime {}",
            s.decision,
            ort_scores[i]
        );
    }
    let verdicts: Vec<i64> = got
        .iter()
        .map(|s| if s.is_anomaly() { -1 } else { 1 })
        .collect();
    let sk_predict: Vec<i64> = doc["sklearn_predict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let ort_label: Vec<i64> = doc["onnxruntime_label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(verdicts, sk_predict);
    assert_eq!(verdicts, ort_label);
    assert!(
        verdicts.contains(&-1) && verdicts.contains(&1),
        "{verdicts:?}"
    );
}

#[test]
fn a_damaged_export_is_refused_with_its_reason() {
    let bytes = std::fs::read(fixture("skl2onnx_iforest.onnx")).unwrap();
    let limits = LoadLimits::default();
    // Cut short: not a protobuf any more.
    let e = from_onnx(&bytes[..bytes.len() / 2], &limits).unwrap_err();
    assert!(e.to_string().contains("not an ONNX model"), "{e}");
    // Limits hold as for the JSON artifact.
    let few = LoadLimits {
        max_trees: 3,
        ..LoadLimits::default()
    };
    let e = from_onnx(&bytes, &few).unwrap_err();
    assert!(e.to_string().contains("max_trees"), "{e}");
    let tiny = LoadLimits {
        max_nodes: 100,
        ..LoadLimits::default()
    };
    let e = from_onnx(&bytes, &tiny).unwrap_err();
    assert!(e.to_string().contains("max_nodes"), "{e}");
    // Another graph (the scores' Add renamed away): refused, not guessed.
    let text = bytes
        .windows(6)
        .position(|w| w == b"scores")
        .expect("the output is named scores");
    let mut renamed = bytes.clone();
    renamed[text..text + 6].copy_from_slice(b"scorez");
    let e = from_onnx(&renamed, &limits).unwrap_err();
    assert!(
        e.to_string()
            .contains("not a skl2onnx IsolationForest graph"),
        "{e}"
    );
}
