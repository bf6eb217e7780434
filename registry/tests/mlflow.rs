//! The MLflow client against a real `mlflow server` (SQLite store, proxied local artifacts)
//! that `scripts/test.sh` installs and starts, passing its URI in `INFERMESH_TEST_MLFLOW_URI`.
//! Every test works in experiments and models of its own (uuid names), so they run in
//! parallel on one server. The readback test also writes what it logged to
//! `$INFERMESH_TEST_MLFLOW_RECORD` (when set), and `tests/mlflow/test_readback.py` checks it
//! with MLflow's own Python client.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use infermesh_registry::mlflow::{KeyValue, Metric, RunSearch, RunStatus};
use infermesh_registry::{MlflowClient, MlflowError, MlflowOptions};
use serde_json::json;

fn server() -> MlflowClient {
    let uri = std::env::var("INFERMESH_TEST_MLFLOW_URI").expect(
        "INFERMESH_TEST_MLFLOW_URI is not set: run scripts/test.sh, which installs and starts \
         an MLflow server for these tests",
    );
    MlflowClient::new(&uri, MlflowOptions::default()).unwrap()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn experiments_are_created_once_and_found_by_name() {
    let c = server();
    let name = unique("exp");
    assert!(c.experiment_by_name(&name).await.unwrap().is_none());
    let id = c.ensure_experiment(&name).await.unwrap();
    assert_eq!(c.ensure_experiment(&name).await.unwrap(), id);
    let e = c.experiment_by_name(&name).await.unwrap().unwrap();
    assert_eq!(
        (e.experiment_id.as_str(), e.name.as_str()),
        (id.as_str(), name.as_str())
    );
    // Creating it again is MLflow's RESOURCE_ALREADY_EXISTS, typed.
    let err = c.create_experiment(&name).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert!(matches!(
        c.create_experiment(" ").await,
        Err(MlflowError::Invalid(_))
    ));
}

#[tokio::test]
async fn runs_log_params_metrics_tags_and_are_searchable() {
    let c = server();
    let exp = c.ensure_experiment(&unique("runs")).await.unwrap();
    let parent = c.create_run(&exp, "parent", &[], None).await.unwrap();
    assert_eq!(parent.info.status, RunStatus::Running);
    let run = c
        .create_run(
            &exp,
            "trial-0",
            &[KeyValue::new("kind", "fraud")],
            Some(&parent.info.run_id),
        )
        .await
        .unwrap();
    let id = run.info.run_id.clone();
    c.log_param(&id, "learning_rate", "0.05").await.unwrap();
    c.set_tag(&id, "stage", "tuning").await.unwrap();
    for step in 0..5 {
        c.log_metric(
            &id,
            &Metric::now("valid_auc", 0.5 + step as f64 / 10.0, step),
        )
        .await
        .unwrap();
    }
    // A batch larger than one log-batch call takes (1000 entities): split by the client.
    let metrics: Vec<Metric> = (0..1500)
        .map(|i| Metric::now("loss", 1.0 / (i + 1) as f64, i))
        .collect();
    let params: Vec<KeyValue> = (0..150)
        .map(|i| KeyValue::new(format!("p{i}"), i.to_string()))
        .collect();
    c.log_batch(&id, &metrics, &params, &[KeyValue::new("batch", "yes")])
        .await
        .unwrap();
    // Parameters are write-once: a different value is MLflow's INVALID_PARAMETER_VALUE.
    let err = c.log_param(&id, "learning_rate", "0.1").await.unwrap_err();
    assert_eq!(err.code(), Some("INVALID_PARAMETER_VALUE"), "{err}");

    let info = c.update_run(&id, RunStatus::Finished).await.unwrap();
    assert_eq!(info.status, RunStatus::Finished);
    assert!(info.end_time.is_some());

    let got = c.get_run(&id).await.unwrap();
    assert_eq!(got.param("learning_rate"), Some("0.05"));
    assert_eq!(got.param("p149"), Some("149"));
    assert_eq!(got.tag("stage"), Some("tuning"));
    assert_eq!(got.tag("batch"), Some("yes"));
    assert_eq!(
        got.tag("mlflow.parentRunId"),
        Some(parent.info.run_id.as_str())
    );
    assert!((got.metric("valid_auc").unwrap() - 0.9).abs() < 1e-12);
    let history = c.metric_history(&id, "loss").await.unwrap();
    assert_eq!(history.len(), 1500);
    assert_eq!(history[1499].step, 1499);
    assert!((history[9].value - 0.1).abs() < 1e-12);

    let found = c
        .search_all_runs(&RunSearch {
            experiment_ids: vec![exp.clone()],
            filter: Some("tags.kind = 'fraud' and metrics.valid_auc > 0.8".into()),
            max_results: Some(1),
            ..RunSearch::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].info.run_id, id);
    let all = c
        .search_all_runs(&RunSearch {
            experiment_ids: vec![exp],
            max_results: Some(1),
            ..RunSearch::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        2,
        "paging with max_results 1 must follow the token"
    );

    let missing = c
        .get_run("0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
}

#[tokio::test]
async fn artifacts_go_up_and_come_back_whole() {
    let c = server();
    let exp = c.ensure_experiment(&unique("artifacts")).await.unwrap();
    let run = c.create_run(&exp, "a", &[], None).await.unwrap();
    let uri = run.info.artifact_uri.clone();
    assert!(uri.starts_with("mlflow-artifacts:"), "{uri}");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    std::fs::create_dir_all(src.join("nested/deeper")).unwrap();
    std::fs::write(src.join("model.txt"), "tree\n".repeat(1000)).unwrap();
    std::fs::write(src.join("nested/card.json"), r#"{"a": 1}"#).unwrap();
    std::fs::write(src.join("nested/deeper/x y.bin"), [0u8, 255, 7]).unwrap();
    assert_eq!(c.upload_dir(&uri, "model", &src).await.unwrap(), 3);

    let top = c.list_artifacts(&uri, "").await.unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!((top[0].path.as_str(), top[0].is_dir), ("model", true));
    let inner = c.list_artifacts(&uri, "model").await.unwrap();
    let names: Vec<_> = inner.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["model/model.txt", "model/nested"]);
    assert_eq!(inner[0].file_size, Some(5000));

    let dest = tmp.path().join("down");
    assert_eq!(c.download_dir(&uri, "model", &dest).await.unwrap(), 3);
    for rel in ["model.txt", "nested/card.json", "nested/deeper/x y.bin"] {
        assert_eq!(
            std::fs::read(dest.join(rel)).unwrap(),
            std::fs::read(src.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // An existing destination is refused; a missing directory leaves nothing behind.
    assert!(matches!(
        c.download_dir(&uri, "model", &dest).await,
        Err(MlflowError::Invalid(_))
    ));
    let nothing = tmp.path().join("nothing");
    let err = c
        .download_dir(&uri, "no-such-dir", &nothing)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!nothing.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn versions_and_aliases_move_and_missing_ones_are_typed() {
    let c = server();
    let name = unique("model");
    let exp = c.ensure_experiment(&unique("registry")).await.unwrap();
    let err = c.get_registered_model(&name).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    c.ensure_registered_model(&name).await.unwrap();
    c.ensure_registered_model(&name).await.unwrap();
    let mut versions = Vec::new();
    for i in 0..2 {
        let run = c
            .create_run(&exp, &format!("train-{i}"), &[], None)
            .await
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("model.txt"), format!("version {i}")).unwrap();
        c.upload_dir(&run.info.artifact_uri, "model", tmp.path())
            .await
            .unwrap();
        let source = format!("{}/model", run.info.artifact_uri);
        let mv = c
            .create_model_version(
                &name,
                &source,
                Some(&run.info.run_id),
                &[KeyValue::new("i", i.to_string())],
                "",
            )
            .await
            .unwrap();
        let mv = c
            .wait_model_version_ready(&name, mv.number().unwrap(), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(mv.source, source);
        versions.push(mv.number().unwrap());
    }
    assert_eq!(versions, vec![1, 2]);
    assert!(c.get_by_alias(&name, "champion").await.unwrap().is_none());
    c.set_alias(&name, "champion", 1).await.unwrap();
    c.set_alias(&name, "challenger", 2).await.unwrap();
    let champ = c.get_by_alias(&name, "champion").await.unwrap().unwrap();
    assert_eq!(champ.version, "1");
    assert!(champ.aliases.contains(&"champion".to_string()));
    c.set_alias(&name, "champion", 2).await.unwrap();
    assert_eq!(
        c.get_by_alias(&name, "champion")
            .await
            .unwrap()
            .unwrap()
            .version,
        "2"
    );
    let model = c.get_registered_model(&name).await.unwrap();
    assert_eq!(model.aliases.len(), 2);
    c.delete_alias(&name, "challenger").await.unwrap();
    c.delete_alias(&name, "challenger").await.unwrap();
    assert!(c.get_by_alias(&name, "challenger").await.unwrap().is_none());
    let all = c.search_model_versions(&name).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.version.as_str()).collect::<Vec<_>>(),
        ["1", "2"]
    );

    // The download URI of the champion brings its files back.
    let uri = c.model_version_download_uri(&name, 2).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    c.download_dir(&uri, "", &tmp.path().join("v2"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("v2/model.txt")).unwrap(),
        "version 1"
    );

    // Aliasing a version that does not exist is an MLflow error, not a panic.
    let err = c.set_alias(&name, "champion", 99).await.unwrap_err();
    assert!(matches!(err, MlflowError::Api { .. }), "{err}");
}

/// Logs a run and registers a model the way `infermesh train` does, then records it for the
/// MLflow Python client's readback (tests/mlflow/test_readback.py).
#[tokio::test]
async fn readback_record_for_the_python_client() {
    let c = server();
    let exp_name = unique("readback");
    let model_name = unique("readback-model");
    let exp = c.ensure_experiment(&exp_name).await.unwrap();
    let run = c
        .create_run(&exp, "readback", &[KeyValue::new("team", "fraud")], None)
        .await
        .unwrap();
    let id = run.info.run_id.clone();
    let metrics: Vec<Metric> = (0..10)
        .map(|i| Metric::now("valid_pr_auc", 0.5 + i as f64 * 0.01, i))
        .collect();
    c.log_batch(
        &id,
        &metrics,
        &[
            KeyValue::new("num_leaves", "31"),
            KeyValue::new("objective", "binary"),
        ],
        &[],
    )
    .await
    .unwrap();
    c.log_metric(&id, &Metric::now("test_pr_auc", 0.875, 0))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model.txt"), "tree\nversion=v4\n").unwrap();
    std::fs::write(tmp.path().join("card.json"), r#"{"threshold": 0.42}"#).unwrap();
    c.upload_dir(&run.info.artifact_uri, "model", tmp.path())
        .await
        .unwrap();
    c.update_run(&id, RunStatus::Finished).await.unwrap();
    c.ensure_registered_model(&model_name).await.unwrap();
    let mv = c
        .create_model_version(
            &model_name,
            &format!("{}/model", run.info.artifact_uri),
            Some(&id),
            &[],
            "",
        )
        .await
        .unwrap();
    c.set_alias(&model_name, "champion", mv.number().unwrap())
        .await
        .unwrap();
    if let Ok(dir) = std::env::var("INFERMESH_TEST_MLFLOW_RECORD") {
        std::fs::create_dir_all(&dir).unwrap();
        let record = json!({
            "experiment": exp_name,
            "run_id": id,
            "params": {"num_leaves": "31", "objective": "binary"},
            "tags": {"team": "fraud"},
            "metrics": {"test_pr_auc": 0.875, "valid_pr_auc": 0.5 + 9.0 * 0.01},
            "history": {"valid_pr_auc": (0..10).map(|i| 0.5 + i as f64 * 0.01).collect::<Vec<_>>()},
            "model": model_name,
            "alias": "champion",
            "version": mv.version,
            "files": {"model.txt": "tree\nversion=v4\n", "card.json": r#"{"threshold": 0.42}"#},
        });
        std::fs::write(
            std::path::Path::new(&dir).join("readback.json"),
            serde_json::to_vec_pretty(&record).unwrap(),
        )
        .unwrap();
    }
}

/// `promote` over MLflow: the gate reads the versions' run metrics, a failing gate leaves the
/// alias where it was.
#[tokio::test]
async fn promotion_is_gated_on_run_metrics() {
    use infermesh_registry::{Candidate, Gate, PromoteError, Registry};
    let c = server();
    let name = unique("promote");
    let exp = c.ensure_experiment(&unique("promote")).await.unwrap();
    c.ensure_registered_model(&name).await.unwrap();
    let mut versions = Vec::new();
    for pr_auc in [0.7, 0.6, 0.8] {
        let run = c.create_run(&exp, "t", &[], None).await.unwrap();
        c.log_metric(&run.info.run_id, &Metric::now("pr_auc", pr_auc, 0))
            .await
            .unwrap();
        let mv = c
            .create_model_version(
                &name,
                &format!("{}/model", run.info.artifact_uri),
                Some(&run.info.run_id),
                &[],
                "",
            )
            .await
            .unwrap();
        versions.push(mv.number().unwrap());
    }
    let reg = Registry::Mlflow(c.clone());
    let gate: Vec<Gate> = vec!["pr_auc>=champion".parse().unwrap()];
    let p = reg
        .promote(&name, "champion", &Candidate::Version(versions[0]), &gate)
        .await
        .unwrap();
    assert_eq!(p.previous, None);
    c.set_alias(&name, "challenger", versions[1]).await.unwrap();
    let from = Candidate::Alias("challenger".into());
    let e = reg
        .promote(&name, "champion", &from, &gate)
        .await
        .unwrap_err();
    assert!(matches!(e, PromoteError::GateFailed(_)), "{e}");
    assert_eq!(
        reg.alias_version(&name, "champion").await.unwrap(),
        Some(versions[0])
    );
    c.set_alias(&name, "challenger", versions[2]).await.unwrap();
    let p = reg.promote(&name, "champion", &from, &gate).await.unwrap();
    assert_eq!((p.version, p.previous), (versions[2], Some(versions[0])));
    assert_eq!(p.checks[0].against, Some(0.7));
}
