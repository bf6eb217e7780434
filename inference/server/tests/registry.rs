//! Serving by alias: `--model fraud@champion` from the local registry and from a real MLflow
//! server (started by `scripts/test.sh`, `INFERMESH_TEST_MLFLOW_URI`). Alias moves swap the
//! served version under load with no failed request; a broken version and a registry that
//! goes down leave the old version serving, reported in the metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use infermesh_registry::mlflow::KeyValue;
use infermesh_registry::{LocalRegistry, MlflowClient, MlflowOptions};
use infermesh_server::registry::RegistryArgs;

/// A version directory as `infermesh train` writes one: artifact plus its own config.
fn version_dir(dir: &Path, threshold: f32, broken: bool) {
    std::fs::create_dir_all(dir).unwrap();
    if broken {
        std::fs::write(dir.join("model.json"), "{ not a model").unwrap();
    } else {
        std::fs::copy(sample_model_path(), dir.join("model.json")).unwrap();
    }
    std::fs::write(
        dir.join("config.toml"),
        format!("platform = \"xgboost\"\nmax_batch_size = 1024\nthreshold = {threshold}\n"),
    )
    .unwrap();
}

async fn start_registry(repo: &Path, registry: RegistryArgs) -> infermesh_server::RunningServer {
    let mut a = args(repo, 0.05, 1 << 20);
    a.registry = registry;
    infermesh_server::start(a.validate().unwrap())
        .await
        .unwrap()
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric_line(text: &str, name: &str, model: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("model=\"{model}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until `infermesh_registry_degraded{model}` reads `value`.
async fn wait_degraded(addr: std::net::SocketAddr, model: &str, value: f64, what: &str) {
    wait_for(
        async || {
            metric_line(&metrics(addr).await, "infermesh_registry_degraded", model) == Some(value)
        },
        what,
    )
    .await;
}

/// Version folders of a served model, ascending.
fn on_disk(repo: &Path, model: &str) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(repo.join(model))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_registry_alias_moves_swap_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = LocalRegistry::new(tmp.path().join("registry"));
    for (threshold, broken) in [(0.5, false), (0.25, false), (0.5, true)] {
        let out = tmp.path().join("out");
        version_dir(&out, threshold, broken);
        reg.register("fraud", &out).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
    }
    reg.set_alias("fraud", "champion", 1).unwrap();
    let repo = tmp.path().join("repo");
    let s = start_registry(
        &repo,
        RegistryArgs {
            models: vec!["fraud@champion".into()],
            registry: reg.root().to_path_buf(),
            registry_cache: Some(tmp.path().join("cache")),
            registry_poll_interval: 0.1,
            ..Default::default()
        },
    )
    .await;
    let base = format!("http://{}", s.http_addr);
    // Served before the ports opened.
    assert_eq!(served_version(&base, "fraud").await, "1");
    let load = Load::start(&base, "fraud", 4);

    // Forward, back to a lower version, then forward again.
    for v in [2u64, 1, 2] {
        reg.set_alias("fraud", "champion", v).unwrap();
        wait_for(
            async || served_version(&base, "fraud").await == v.to_string(),
            "the alias's version",
        )
        .await;
        wait_for(
            async || on_disk(&repo, "fraud") == [v],
            "the old version to retire",
        )
        .await;
    }
    // Each version runs with its own config (threshold 0.25 in version 2).
    let cfg: serde_json::Value = reqwest::get(format!("{base}/v2/models/fraud/versions/2/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(cfg.to_string().contains("0.25"), "{cfg}");

    // A version that does not load is discarded; version 2 keeps serving, degraded.
    reg.set_alias("fraud", "champion", 3).unwrap();
    wait_degraded(
        s.metrics_addr,
        "fraud",
        1.0,
        "the failed swap to be reported",
    )
    .await;
    assert_eq!(served_version(&base, "fraud").await, "2");
    assert_eq!(on_disk(&repo, "fraud"), [2]);
    // Back to a good version: in step again.
    reg.set_alias("fraud", "champion", 1).unwrap();
    wait_for(
        async || served_version(&base, "fraud").await == "1",
        "version 1",
    )
    .await;
    wait_degraded(s.metrics_addr, "fraud", 0.0, "degraded to clear").await;
    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "a request failed during alias swaps");
    assert!(ok > 20, "only {ok} requests");
    let m = metrics(s.metrics_addr).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("infermesh_registry_syncs_total")
                && l.contains("outcome=\"swapped\"")),
        "{m}"
    );
    assert_eq!(
        metric_line(&m, "infermesh_registry_served_version", "fraud"),
        Some(1.0)
    );
    s.shutdown().await.unwrap();

    // A restart serves what is on disk even with the registry gone.
    std::fs::remove_dir_all(reg.root()).unwrap();
    let s = start_registry(
        &repo,
        RegistryArgs {
            models: vec!["fraud@champion".into()],
            registry: reg.root().to_path_buf(),
            registry_cache: Some(tmp.path().join("cache")),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        served_version(&format!("http://{}", s.http_addr), "fraud").await,
        "1"
    );
    s.shutdown().await.unwrap();

    // A folder that serves another source, or a plain repository folder, is refused up
    // front; so are a name asked for twice and a bad spec.
    for (models, why) in [
        (
            vec!["fraud=other@champion"],
            "serves models:/fraud@champion",
        ),
        (vec!["fraud@champion", "fraud@prod"], "twice"),
        (vec!["fraud@7"], "bad model URI"),
    ] {
        let mut a = args(&repo, 0.0, 1 << 20);
        a.registry.models = models.into_iter().map(String::from).collect();
        let e = a.validate().map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    std::fs::remove_file(repo.join("fraud").join(infermesh_registry::sync::MARKER)).unwrap();
    let mut a = args(&repo, 0.0, 1 << 20);
    a.registry.models = vec!["fraud@champion".into()];
    let e = a.validate().map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("not managed by the registry"), "{e}");
}

/// A TCP forwarder to MLflow that can be switched off (connections dropped) and on again.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (u, c) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = l.accept().await else {
                    return;
                };
                if !u.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Self { addr, up, conns }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_alias_moves_swap_and_an_outage_keeps_serving() {
    let uri = std::env::var("INFERMESH_TEST_MLFLOW_URI").expect(
        "INFERMESH_TEST_MLFLOW_URI is not set: run scripts/test.sh, which starts an MLflow server",
    );
    let mlflow = MlflowClient::new(&uri, MlflowOptions::default()).unwrap();
    let name = format!("serve-{}", uuid::Uuid::new_v4().simple());
    let tmp = tempfile::tempdir().unwrap();
    let exp = mlflow.ensure_experiment(&name).await.unwrap();
    mlflow.ensure_registered_model(&name).await.unwrap();
    for threshold in [0.5, 0.25] {
        let out = tmp.path().join(format!("out-{threshold}"));
        version_dir(&out, threshold, false);
        let run = mlflow
            .create_run(&exp, "train", &[KeyValue::new("t", "1")], None)
            .await
            .unwrap();
        mlflow
            .upload_dir(&run.info.artifact_uri, "model", &out)
            .await
            .unwrap();
        let source = format!("{}/model", run.info.artifact_uri);
        let mv = mlflow
            .create_model_version(&name, &source, Some(&run.info.run_id), &[], "")
            .await
            .unwrap();
        mlflow
            .wait_model_version_ready(&name, mv.number().unwrap(), Duration::from_secs(30))
            .await
            .unwrap();
    }
    mlflow.set_alias(&name, "champion", 1).await.unwrap();

    let target = uri
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(target).await;
    let repo = tmp.path().join("repo");
    let s = start_registry(
        &repo,
        RegistryArgs {
            models: vec![format!("mlfraud=models:/{name}@champion")],
            registry_uri: Some(format!("http://{}", proxy.addr)),
            registry_cache: Some(tmp.path().join("cache")),
            registry_poll_interval: 0.2,
            ..Default::default()
        },
    )
    .await;
    let base = format!("http://{}", s.http_addr);
    assert_eq!(served_version(&base, "mlfraud").await, "1");
    let load = Load::start(&base, "mlfraud", 4);

    // MLflow goes away; the alias moves meanwhile. Version 1 keeps serving, degraded.
    proxy.set_up(false);
    mlflow.set_alias(&name, "champion", 2).await.unwrap();
    wait_for(
        async || {
            let m = metrics(s.metrics_addr).await;
            metric_line(&m, "infermesh_registry_reachable", "mlfraud") == Some(0.0)
                && metric_line(&m, "infermesh_registry_degraded", "mlfraud") == Some(1.0)
        },
        "the outage to be reported",
    )
    .await;
    assert_eq!(served_version(&base, "mlfraud").await, "1");
    // Back: the swap happens, no request failed.
    proxy.set_up(true);
    wait_for(
        async || served_version(&base, "mlfraud").await == "2",
        "version 2",
    )
    .await;
    wait_for(
        async || on_disk(&repo, "mlfraud") == [2],
        "version 1 to retire",
    )
    .await;
    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "a request failed during the outage or the swap");
    assert!(ok > 20, "only {ok} requests");
    let m = metrics(s.metrics_addr).await;
    assert_eq!(
        metric_line(&m, "infermesh_registry_degraded", "mlfraud"),
        Some(0.0)
    );
    assert_eq!(
        metric_line(&m, "infermesh_registry_reachable", "mlfraud"),
        Some(1.0)
    );
    s.shutdown().await.unwrap();
}
