//! The repository manager over a table of families: loading, reloading, failures, pins.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use infermesh_common::ErrorKind;
use infermesh_inference::{Families, Family, ManagerConfig, ModelManager};
use infermesh_model_core::{ModelError, TabularModel, Task};
use infermesh_trees::serving::TreeServable;

fn trees() -> Families {
    Families::new(vec![&infermesh_trees::serving::FAMILY]).unwrap()
}

fn sample_model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/sample-repository/fraud/1/model.json")
}

#[test]
fn broken_versions_are_reported_kept_and_retried_when_changed() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m");
    std::fs::create_dir_all(m.join("1")).unwrap();
    std::fs::write(m.join("config.toml"), "platform = \"xgboost\"").unwrap();
    std::fs::write(m.join("1/model.json"), "{ broken").unwrap();
    let mgr = ModelManager::open(ManagerConfig {
        repository: d.path().to_path_buf(),
        poll_interval: None,
        families: trees(),
        monitor: None,
    })
    .unwrap();
    let first = mgr.model("m").unwrap();
    assert!(!first.is_ready());
    assert!(first.versions[&1].error.is_some());
    // An unchanged broken folder is not reloaded on the next poll: same status object.
    mgr.reconcile();
    assert!(Arc::ptr_eq(&first, &mgr.model("m").unwrap()));
    assert_eq!(mgr.get("m", None).unwrap_err().kind, ErrorKind::Unavailable);
    // Fixing the artifact is picked up.
    std::fs::copy(sample_model(), m.join("1/model.json")).unwrap();
    mgr.reconcile();
    assert!(mgr.model("m").unwrap().is_ready());
    assert_eq!(mgr.get("m", Some("1")).unwrap().version, 1);
    // A broken reload keeps the previous artifact serving and reports the failure.
    std::fs::write(m.join("1/model.json"), "{ broken again").unwrap();
    mgr.reconcile();
    let st = mgr.model("m").unwrap();
    assert!(st.is_ready());
    assert!(st.versions[&1].error.is_some());
    // An explicit load retries; failing again, it still keeps the working artifact.
    let res = mgr.load_model("m");
    assert!(res.is_ok(), "a version still serves: {res:?}");
    assert!(mgr.model("m").unwrap().versions[&1].error.is_some());
    assert!(mgr.get("m", None).is_ok());
    assert!(mgr.load_model("../x").is_err());
    assert_eq!(
        mgr.unload_model("ghost").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

/// A model that panics on a negative input.
#[derive(Debug)]
struct Panicky;

impl TabularModel for Panicky {
    fn num_features(&self) -> usize {
        1
    }
    fn feature_names(&self) -> Option<&[String]> {
        None
    }
    fn num_outputs(&self) -> usize {
        1
    }
    fn task(&self) -> Task {
        Task::Regression
    }
    fn format(&self) -> &'static str {
        "test"
    }
    fn predict(&self, rows: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        assert!(rows[0] >= 0.0, "negative input reached the model");
        out.copy_from_slice(rows);
        Ok(())
    }
    fn contributions(&self, _row: &[f32]) -> Result<Vec<f32>, ModelError> {
        Err(ModelError::Unsupported("test".into()))
    }
}

/// A family of its own, registered in the table like any other: the core serves it knowing
/// nothing about it.
static PANICKY: Family = Family {
    name: "panicky",
    platforms: &["panicky"],
    load: |cx| {
        let mut config = cx.config.clone();
        config.platform = "xgboost".into();
        Ok(Arc::new(TreeServable::new(
            &config,
            cx.version,
            Arc::new(Panicky),
        )?))
    },
    grpc: None,
    file_descriptor_set: None,
};

/// A version whose backend panicked is not ready: the model falls back to the next ready
/// version, the index says why, and a request for it by number is UNAVAILABLE.
#[tokio::test]
async fn a_version_whose_backend_panicked_is_not_ready() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m");
    for v in ["1", "2"] {
        std::fs::create_dir_all(m.join(v)).unwrap();
    }
    std::fs::write(
        m.join("config.toml"),
        "platform = \"panicky\"\nversion_policy = \"all\"",
    )
    .unwrap();
    let mgr = ModelManager::open(ManagerConfig {
        repository: d.path().to_path_buf(),
        poll_interval: None,
        families: Families::new(vec![&PANICKY, &infermesh_trees::serving::FAMILY]).unwrap(),
        monitor: None,
    })
    .unwrap();
    let v2 = mgr.get("m", Some("2")).unwrap();
    let tab = v2.family::<TreeServable>("tabular").unwrap();
    assert_eq!(tab.predict_raw(vec![2.0]).await.unwrap(), vec![2.0]);
    let err = tab.predict_raw(vec![-1.0]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    let status = mgr.model("m").unwrap();
    assert!(status.versions[&2].ready().is_none());
    let reason = status.versions[&2].reason().unwrap();
    assert!(
        reason.contains("negative input reached the model"),
        "{reason}"
    );
    assert_eq!(status.latest_ready().unwrap().version, 1);
    assert_eq!(mgr.get("m", None).unwrap().version, 1);
    let err = mgr.get("m", Some("2")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("panicked"), "{}", err.message);
    let row = mgr.index().into_iter().find(|e| e.version == "2").unwrap();
    assert_eq!(row.state, "UNAVAILABLE");
    assert!(row.reason.contains("panicked"), "{}", row.reason);
}

/// A platform no family of the table serves is that model's error, named in the index; the
/// other models serve.
#[test]
fn unknown_platforms_fail_their_model_only() {
    let d = tempfile::tempdir().unwrap();
    for (name, platform) in [("good", "xgboost"), ("odd", "pytorch")] {
        let m = d.path().join(name);
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::write(m.join("config.toml"), format!("platform = \"{platform}\"")).unwrap();
        std::fs::copy(sample_model(), m.join("1/model.json")).unwrap();
    }
    let mgr = ModelManager::open(ManagerConfig {
        repository: d.path().to_path_buf(),
        poll_interval: None,
        families: trees(),
        monitor: None,
    })
    .unwrap();
    assert!(mgr.get("good", None).is_ok());
    let row = mgr
        .index()
        .into_iter()
        .find(|e| e.name == "odd" && e.version == "1")
        .unwrap();
    assert!(
        row.reason.contains("'pytorch' is not served by this build"),
        "{}",
        row.reason
    );
    assert!(row.reason.contains("xgboost"), "{}", row.reason);
}

#[test]
fn pins_choose_the_default_version_and_versions_keep_their_own_config() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m");
    std::fs::create_dir_all(m.join("1")).unwrap();
    std::fs::write(
        m.join("config.toml"),
        "platform = \"xgboost\"\nversion_policy = \"all\"\nthreshold = 0.5",
    )
    .unwrap();
    std::fs::copy(sample_model(), m.join("1/model.json")).unwrap();
    let mgr = ModelManager::open(ManagerConfig {
        repository: d.path().to_path_buf(),
        poll_interval: None,
        families: trees(),
        monitor: None,
    })
    .unwrap();
    assert_eq!(mgr.get("m", None).unwrap().version, 1);
    // Version 2 carries its own config: it wins over the model-level one.
    std::fs::create_dir_all(m.join("2")).unwrap();
    std::fs::copy(sample_model(), m.join("2/model.json")).unwrap();
    std::fs::write(
        m.join("2/config.toml"),
        "platform = \"xgboost\"\nthreshold = 0.9",
    )
    .unwrap();
    mgr.pin("m", Some(1));
    let st = mgr.refresh_model("m").unwrap();
    assert!(st.versions[&2].loaded.is_some());
    // Pinned: still version 1, although 2 is higher and ready.
    assert_eq!(mgr.get("m", None).unwrap().version, 1);
    assert_eq!(mgr.get("m", Some("2")).unwrap().version, 2);
    assert_eq!(
        mgr.get("m", Some("1"))
            .unwrap()
            .family::<TreeServable>("tabular")
            .unwrap()
            .output_mode()
            .threshold,
        0.5
    );
    assert_eq!(
        mgr.get("m", Some("2"))
            .unwrap()
            .family::<TreeServable>("tabular")
            .unwrap()
            .output_mode()
            .threshold,
        0.9
    );
    mgr.pin("m", Some(2));
    assert_eq!(mgr.get("m", None).unwrap().version, 2);
    // A pin on a version that is gone falls back to the highest ready one.
    mgr.pin("m", Some(7));
    assert_eq!(mgr.get("m", None).unwrap().version, 2);
    mgr.pin("m", None);
    assert_eq!(mgr.pinned("m"), None);
    // Refreshing a removed folder retires the model; an unloaded one stays unloaded.
    std::fs::remove_dir_all(m.join("2")).unwrap();
    assert_eq!(mgr.refresh_model("m").unwrap().versions.len(), 1);
    mgr.unload_model("m").unwrap();
    assert!(mgr.refresh_model("m").is_err());
    assert!(mgr.model("m").is_err());
}
