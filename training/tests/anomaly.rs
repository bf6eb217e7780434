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
        tracking_uri: None,
        experiment: "anomaly".into(),
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
    // The fitted rows' drift profile: the three features and the model's outputs on them
    // (prediction drift), the fitted rows only.
    let profile = infermesh_training::drift::read_profile(&out.join("drift_reference.parquet"))?
        .context("a profile")?;
    let names: Vec<&str> = profile.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["amount", "hour", "ratio", "score", "is_anomaly"]);
    let fit_rows = card["fit_rows"].as_u64().context("rows")?;
    for (name, values) in &profile {
        assert_eq!(values.len() as u64, fit_rows, "{name}");
    }
    let infermesh_drift::Values::Bool(flags) = &profile[4].1 else {
        panic!("is_anomaly is boolean: {:?}", profile[4].1.dtype());
    };
    let flagged_rows = flags.iter().filter(|f| **f == Some(true)).count() as f64;
    assert!((flagged_rows / fit_rows as f64 - flagged).abs() < 1e-9);
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

fn mlflow_uri() -> String {
    std::env::var("INFERMESH_TEST_MLFLOW_URI").expect(
        "INFERMESH_TEST_MLFLOW_URI is not set: run scripts/test.sh, which starts an MLflow server",
    )
}

#[test]
fn tracks_and_registers_in_mlflow() -> Result<()> {
    let uri = mlflow_uri();
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("t.csv");
    table(&data)?;
    let out = tmp.path().join("v1");
    let name = format!("anomaly-{}", uuid::Uuid::new_v4().simple());
    let mut a = args(&data, &out);
    a.tracking_uri = Some(uri.clone());
    a.experiment = name.clone();
    a.register = Some(name.clone());
    a.trees = 20;
    let card = a.train()?;
    assert_eq!(card["registered"]["name"], name.as_str());
    let version = card["registered"]["version"].as_u64().context("version")?;
    let run_id = card["run_id"].as_str().context("run id")?.to_string();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("mlflow-run.json"))?)?;
    assert_eq!(record["run_id"], run_id.as_str());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let c = infermesh_registry::MlflowClient::new(&uri, Default::default())?;
        let mv = c
            .get_by_alias(&name, "challenger")
            .await?
            .context("alias")?;
        assert_eq!(mv.number()?, version);
        assert_eq!(mv.run_id, run_id);
        let run = c.get_run(&run_id).await?;
        assert_eq!(
            run.info.status,
            infermesh_registry::mlflow::RunStatus::Finished
        );
        assert_eq!(run.metric("roc_auc"), card["metrics"]["roc_auc"].as_f64());
        assert_eq!(run.param("n_estimators"), Some("20"));
        assert_eq!(run.param("contamination"), Some("auto"));
        assert!(run.metric("train_score_p50").is_some());
        let down = tmp.path().join("down");
        let src = c.model_version_download_uri(&name, version).await?;
        c.download_dir(&src, "", &down).await?;
        assert_eq!(
            std::fs::read(down.join(infermesh_anomaly::ARTIFACT_FILE))?,
            std::fs::read(out.join(infermesh_anomaly::ARTIFACT_FILE))?
        );
        assert!(down.join("drift_reference.parquet").is_file());
        anyhow::Ok(())
    })
}
