//! `infermesh train anomaly` end to end on a generated table with planted anomalies: the
//! version it writes loads in the Isolation Forest family, the planted rows score lowest
//! (test ROC-AUC), the split is `train fraud`'s, and bad tables are refused.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use infermesh_training::anomaly::TrainAnomalyArgs;

fn args(data: &Path, out: &Path) -> TrainAnomalyArgs {
    TrainAnomalyArgs {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        drop: vec!["id".into()],
        label: Some("label".into()),
        contamination: "auto".into(),
        trees: 100,
        max_samples: "auto".into(),
        bootstrap: false,
        seed: 42,
        valid_fraction: 0.15,
        test_fraction: 0.15,
        split_column: None,
        separator: None,
        register: None,
        registry: data.with_file_name("registry"),
        alias: "challenger".into(),
        json: false,
    }
}

/// 3,000 rows around the origin and 60 far away (label 1), with an id column.
fn table(path: &Path) -> Result<()> {
    let mut s = String::from("id,amount,hour,ratio,label\n");
    let mut state = 9u64;
    let mut draw = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for i in 0..3060 {
        let far = i % 51 == 0;
        let k = if far { 8.0 } else { 1.0 };
        writeln!(
            s,
            "{i},{:.4},{:.4},{:.4},{}",
            draw() * k + if far { 5.0 } else { 0.0 },
            draw() * k,
            draw() * k,
            u8::from(far)
        )?;
    }
    std::fs::write(path, s)?;
    Ok(())
}

#[test]
fn planted_anomalies_score_lowest_and_the_version_loads() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("t.csv");
    table(&data)?;
    let out = tmp.path().join("v1");
    let mut a = args(&data, &out);
    a.contamination = "0.02".into();
    a.register = Some("spend-anomaly".into());
    let card = a.train()?;
    let auc = card["metrics"]["roc_auc"].as_f64().context("roc_auc")?;
    assert!(auc > 0.95, "test ROC-AUC {auc}");
    assert_eq!(
        card["features"],
        serde_json::json!(["amount", "hour", "ratio"])
    );
    // Fitted on train + validation (85%), tested on the rest.
    assert_eq!(
        card["fit_rows"].as_u64(),
        Some(3060 - card["metrics"]["test_rows"].as_u64().context("rows")?)
    );
    let flagged = card["train_scores"]["flagged_share"]
        .as_f64()
        .context("share")?;
    assert!((0.015..=0.025).contains(&flagged), "{flagged}");
    let forest = infermesh_anomaly::IsolationForest::load(
        &out.join(infermesh_anomaly::ARTIFACT_FILE),
        &infermesh_anomaly::LoadLimits::default(),
    )?;
    assert_eq!(forest.n_trees(), 100);
    assert!(forest.score_row(&[5.0, 0.0, 0.0])?.is_anomaly());
    assert!(!forest.score_row(&[0.0, 0.0, 0.0])?.is_anomaly());
    let config = std::fs::read_to_string(out.join("config.toml"))?;
    assert!(config.contains("platform = \"isolation-forest\""));
    assert_eq!(card["registered"]["version"], 1);
    // The fitted rows' drift profile: the three features, the fitted rows only.
    let profile = infermesh_training::drift::read_profile(&out.join("drift_reference.parquet"))?
        .context("a profile")?;
    let names: Vec<&str> = profile.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["amount", "hour", "ratio"]);
    assert_eq!(
        profile[0].1.len() as u64,
        card["fit_rows"].as_u64().context("rows")?
    );
    // The same seed writes the same forest.
    let again = tmp.path().join("v2");
    let mut b = args(&data, &again);
    b.contamination = "0.02".into();
    b.train()?;
    assert_eq!(
        std::fs::read(out.join(infermesh_anomaly::ARTIFACT_FILE))?,
        std::fs::read(again.join(infermesh_anomaly::ARTIFACT_FILE))?
    );
    Ok(())
}

#[test]
fn bad_tables_and_flags_are_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("t.csv");
    std::fs::write(&data, "id,amount,label\n1,2.5,0\n2,,1\n")?;
    let e = args(&data, &tmp.path().join("a"))
        .train()
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(
        matches!(&e, Err(m) if m.contains("column 'amount' row 2: missing")),
        "{e:?}"
    );
    std::fs::write(&data, "id,amount,label\n1,2.5,0\n2,3.5,2\n")?;
    let e = args(&data, &tmp.path().join("b"))
        .train()
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(matches!(&e, Err(m) if m.contains("is not 0 or 1")), "{e:?}");
    let mut a = args(&data, &tmp.path().join("c"));
    a.contamination = "0.9".into();
    a.label = None;
    std::fs::write(&data, "id,amount,label\n1,2.5,0\n2,3.5,1\n")?;
    assert!(a.train().is_err());
    let mut a = args(&data, &tmp.path().join("d"));
    a.drop = vec!["nope".into()];
    assert!(a.train().is_err());
    Ok(())
}
