//! Shared helpers: a temp repository with the sample fraud model and a server on port 0.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use infermesh_server::{RunningServer, ServeArgs};

pub const FRAUD_FEATURES: usize = 16;

/// all-MiniLM-L6-v2 in the model cache the README's test command fills; a missing model
/// fails the test with what to run.
pub fn minilm_dir() -> PathBuf {
    let dir = infermesh_server::sample::default_model_cache().join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not in {}: run scripts/test.sh (it fetches the weights once)",
        dir.display()
    );
    dir
}

pub fn sample_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sample-repository/fraud/1/model.json")
}

/// A repository holding the sample fraud model (version 1).
pub fn sample_repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    infermesh_server::sample::write_sample_repository(d.path()).unwrap();
    d
}

/// Flags for a server on port 0 over `repo`.
pub fn args(repo: &Path, poll: f64, max_request_bytes: usize) -> ServeArgs {
    ServeArgs {
        model_repository: repo.to_path_buf(),
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        http_port: 0,
        grpc_port: 0,
        metrics_port: 0,
        poll_interval: poll,
        max_request_bytes,
        fraud_model: "fraud".into(),
        embedding_model: "minilm".into(),
        categorizer_model: "categorizer".into(),
        recommender_model: "recs".into(),
        // The repository tests load and unload models through the API.
        enable_model_control: true,
        limits: Default::default(),
        registry: Default::default(),
        monitor: Default::default(),
        features: Default::default(),
    }
}

pub async fn start(repo: &Path, poll: f64, max_request_bytes: usize) -> RunningServer {
    let cfg = args(repo, poll, max_request_bytes).validate().unwrap();
    infermesh_server::start(cfg).await.unwrap()
}

/// A row of the sample model's 16 features.
pub fn row(seed: u32) -> Vec<f32> {
    let s = seed as f32;
    vec![
        120.0 + 37.0 * s,
        (s * 5.0) % 24.0,
        if (s as u32).is_multiple_of(3) {
            1.0
        } else {
            0.0
        },
        0.1 + 0.03 * s,
        0.05 + 0.02 * s,
        60.0,
        2.0 + s,
        s % 4.0,
        3.0 + s,
        10.0 * s,
        (s as u32 % 2) as f32,
        1.0,
        400.0 - 10.0 * s,
        0.0,
        5.0,
        0.0,
    ]
}

/// The sample model's own prediction for `rows`, computed in process.
pub fn direct_predict(rows: &[f32]) -> Vec<f32> {
    use infermesh_model_core::TabularModel;
    let m = infermesh_trees::TreeEnsemble::load(
        &sample_model_path(),
        infermesh_trees::ModelFormat::XgboostJson,
    )
    .unwrap();
    let mut out = vec![0f32; rows.len() / m.num_features()];
    m.predict(rows, &mut out).unwrap();
    out
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The server's Prometheus page.
pub async fn metrics_text(s: &RunningServer) -> String {
    reqwest::get(format!("http://{}/metrics", s.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GET `url` and parse the body as JSON (panics on transport errors: tests only).
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// V2 BYTES elements as `raw_input_contents` carries them (and tritonclient sends them):
/// each one a little-endian u32 length, then its bytes.
pub fn raw_bytes<T: AsRef<[u8]>>(elements: &[T]) -> Vec<u8> {
    let mut raw = Vec::new();
    for e in elements {
        let e = e.as_ref();
        raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
        raw.extend_from_slice(e);
    }
    raw
}

/// Polls `cond` every 25 ms for up to 10 s.
pub async fn wait_for(mut cond: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Closed-loop load on a model's V2 REST route: `workers` clients sending one row each,
/// back to back, counting answers that are not 200.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(base: &str, model: &str, workers: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let c = reqwest::Client::new();
        let url = format!("{base}/v2/models/{model}/infer");
        let workers = (0..workers)
            .map(|w| {
                let (stop, ok, failed, c, url) =
                    (stop.clone(), ok.clone(), failed.clone(), c.clone(), url.clone());
                tokio::spawn(async move {
                    let body = serde_json::json!({"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": row(w)}]});
                    while !stop.load(Ordering::Relaxed) {
                        let resp = c.post(&url).json(&body).send().await.unwrap();
                        if resp.status() == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("failed: {}", resp.text().await.unwrap());
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            workers,
        }
    }

    /// Stops the workers; returns (answered, failed).
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// POSTs `body` as JSON and returns the JSON answer.
pub async fn post_json(url: &str, body: &serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The version a V2 inference on `model` answers with.
pub async fn served_version(base: &str, model: &str) -> String {
    let body = serde_json::json!({"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": row(1)}]});
    let v = post_json(&format!("{base}/v2/models/{model}/infer"), &body).await;
    v["model_version"].as_str().unwrap_or_default().to_string()
}
