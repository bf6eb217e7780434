//! `infermesh up` end to end, as a user runs it: the built binary writes the sample model
//! repository into a temporary directory, serves it and runs the gateway in one process, every
//! port 0 (the bound ones are read from its banner). One score through the gateway and one
//! KServe V2 inference against the server must give the probability xgboost itself computed
//! for deploy/sample-repository/fraud/example.json; SIGTERM then stops both, cleanly.
//!
//! The model cache is an empty directory: `minilm` is optional for `up` (served only when the
//! cache holds all-MiniLM-L6-v2) and loading it would only make this test slower.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::http;
use serde_json::{Value, json};

/// How long `up` may take to write the repository (it trains two small recommenders), load
/// the models and answer ready. Only a bound for a start that never comes: the test goes on as
/// soon as both services are ready.
const START: Duration = Duration::from_secs(120);
/// How long `up` may take to stop after SIGTERM.
const STOP: Duration = Duration::from_secs(30);

/// The `up` process: killed and reaped when dropped, also when the test fails half-way. `up`
/// runs both services in this one process (no children of its own).
struct Up {
    child: Child,
    /// Everything it logged to stderr so far, read by `reader` until the stream ends.
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Up {
    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The whole log, once the process has exited (its stderr is then at its end).
    fn final_log(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log()
    }

    /// Fails the test with what the process logged when it has exited.
    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "infermesh up exited ({status}) {when}; its log:\n{}",
                self.final_log()
            );
        }
    }

    /// Waits (bounded) for the process to exit on its own.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses `up`'s banner names.
#[derive(Debug)]
struct Addrs {
    http: String,
    grpc: String,
    metrics: String,
    gateway: String,
}

/// `infermesh up: inference http A grpc B metrics C | gateway http D metrics E`.
fn parse_banner(line: &str) -> Option<Addrs> {
    let rest = line.strip_prefix("infermesh up: inference http ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [
            http,
            "grpc",
            grpc,
            "metrics",
            metrics,
            "|",
            "gateway",
            "http",
            gateway,
            "metrics",
            _,
        ] => Some(Addrs {
            http: (*http).to_string(),
            grpc: (*grpc).to_string(),
            metrics: (*metrics).to_string(),
            gateway: (*gateway).to_string(),
        }),
        _ => None,
    }
}

/// Polls `GET path` on `addr` until it answers 200; fails the test (with the process's log)
/// when `up` exits or `deadline` passes first.
fn wait_ready(up: &mut Up, addr: &str, path: &str, deadline: Instant) {
    loop {
        let last = http(addr, "GET", path, None);
        if matches!(last, Ok((200, _))) {
            return;
        }
        up.assert_running(&format!("before {addr}{path} answered"));
        assert!(
            Instant::now() < deadline,
            "{addr}{path} not ready within {START:?} (last answer {last:?}); log:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Log lines (JSON, `--log-json`) at level ERROR, and panics.
fn errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("panicked")
                || serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"] == "ERROR")
        })
        .collect()
}

/// The features of deploy/sample-repository/fraud/example.json and xgboost's probability.
fn example() -> (serde_json::Map<String, Value>, f64) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sample-repository/fraud/example.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (
        v["features"].as_object().unwrap().clone(),
        v["probability"].as_f64().unwrap(),
    )
}

/// Starts `infermesh up` in `dir` on port 0 everywhere with `extra` flags and `envs`, and
/// reads its banner up to the line of addresses: the process, those addresses, what it
/// printed and when it started.
fn start_up(
    dir: &Path,
    repo: &Path,
    cache: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Up, Addrs, String, Instant) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_infermesh"))
        .arg("--log-json")
        .arg("up")
        .arg("--model-repository")
        .arg(repo)
        .arg("--model-cache")
        .arg(cache)
        .args(["--host", "127.0.0.1"])
        .args([
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(["--gateway-port", "0", "--gateway-metrics-port", "0"])
        .args(["--features-port", "0"])
        .args(extra)
        .envs(envs.iter().copied())
        // Nothing from the caller's environment changes what runs: logs at info, no OTLP
        // export, the working directory a temporary one.
        .env("RUST_LOG", "info")
        .env_remove("INFERMESH_OTLP_ENDPOINT")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let (tx, banner) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut up = Up {
        child,
        log,
        reader: Some(reader),
    };

    // The banner: what `up` wrote, then the bound addresses.
    let deadline = started + START;
    let mut printed = String::new();
    let addrs = loop {
        match banner.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
                if let Some(a) = parse_banner(&line) {
                    break a;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                up.assert_running("before printing its addresses");
                assert!(
                    Instant::now() < deadline,
                    "no addresses from infermesh up within {START:?}; stdout:\n{printed}\nlog:\n{}",
                    up.log()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                up.assert_running("with its stdout closed");
                panic!("infermesh up closed its stdout; stdout:\n{printed}");
            }
        }
    };
    // The rest of the banner (written at once, ending with how to stop).
    while !printed.contains("Ctrl-C stops them all.") {
        match banner.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                up.assert_running("while printing its banner");
                assert!(
                    Instant::now() < deadline,
                    "no end of the banner within {START:?}; stdout:\n{printed}"
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    (up, addrs, printed, started)
}

#[test]
fn up_serves_the_sample_repository_and_the_gateway_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("model-repository");
    let no_models = dir.path().join("empty-model-cache");
    std::fs::create_dir(&no_models).unwrap();
    let log_dir = dir.path().join("inference-log");
    let log_dir_arg = log_dir.to_str().unwrap();
    // Live drift every half second from two rows on, and every row logged.
    let monitor = [
        "--drift-interval",
        "0.5",
        "--drift-min-rows",
        "2",
        "--log-dir",
        log_dir_arg,
        "--log-sample-rate",
        "1",
    ];
    let (mut up, addrs, printed, started) = start_up(dir.path(), &repo, &no_models, &monitor, &[]);
    let deadline = started + START;
    assert!(repo.join("fraud/1/drift_reference.parquet").is_file());
    assert!(
        printed.contains(&format!(
            "wrote the sample model repository to {}",
            repo.display()
        )),
        "{printed}"
    );
    assert!(!printed.contains("added minilm"), "{printed}");
    assert!(repo.join("fraud/config.toml").is_file());
    assert!(repo.join("recs/config.toml").is_file());
    for addr in [&addrs.http, &addrs.grpc, &addrs.gateway] {
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addrs:?}"
        );
    }

    wait_ready(&mut up, &addrs.http, "/v2/health/ready", deadline);
    wait_ready(&mut up, &addrs.gateway, "/readyz", deadline);

    let (features, want) = example();

    // Through the gateway: JSON features by name.
    let body = json!({"transaction_id": "up-1", "features": features, "top_k": 3}).to_string();
    let (status, text) = http(&addrs.gateway, "POST", "/api/v1/fraud/score", Some(&body)).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["transaction_id"], "up-1", "{v}");
    assert_eq!(v["model"], "fraud", "{v}");
    assert_eq!(v["version"], "1", "{v}");
    let p = v["probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{v}");
    assert!((p - want).abs() < 1e-5, "gateway: {p}, xgboost: {want}");
    assert_eq!(v["is_fraud"], p > v["threshold"].as_f64().unwrap(), "{v}");
    assert_eq!(v["reasons"].as_array().unwrap().len(), 3, "{v}");

    // KServe V2 against the server: one row, the features in the model's own order (what
    // `up` wrote: the xgboost model's feature_names).
    let model: Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("fraud/1/model.json")).unwrap())
            .unwrap();
    let row: Vec<Value> = model["learner"]["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| features[name.as_str().unwrap()].clone())
        .collect();
    assert_eq!(row.len(), 16);
    let body = json!({"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": [row]}]})
        .to_string();
    let (status, text) = http(&addrs.http, "POST", "/v2/models/fraud/infer", Some(&body)).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model_name"], "fraud", "{v}");
    assert_eq!(v["model_version"], "1", "{v}");
    let out = &v["outputs"][0];
    assert_eq!(out["shape"], json!([1]), "{v}");
    let p2 = out["data"][0].as_f64().unwrap();
    assert!((p2 - want).abs() < 1e-5, "server: {p2}, xgboost: {want}");

    // Live drift: the two scored rows (gateway and V2) against the sample model's reference,
    // exported on the inference metrics port.
    let want_gauges = [
        r#"infermesh_drift_score{model="fraud",version="1",feature="amount","#,
        r#"infermesh_drift_score{model="fraud",version="1",feature="output__0","#,
        r#"infermesh_dataset_drift_share{model="fraud",version="1"}"#,
        r#"infermesh_drift_window_rows{model="fraud",version="1"} 2"#,
    ];
    let gauges_by = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = http(&addrs.metrics, "GET", "/metrics", None).unwrap();
        assert_eq!(status, 200);
        if want_gauges.iter().all(|g| text.contains(g)) {
            break;
        }
        up.assert_running("while waiting for the drift gauges");
        assert!(
            Instant::now() < gauges_by,
            "no drift gauges on /metrics within 20 s:\n{}",
            text.lines()
                .filter(|l| l.contains("drift"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The feature store: Feast's HTTP API over the in-memory store `up` seeds, and the
    // gateway's fraud route filling the two store-held inputs for the user and device
    // (u7: 20 + 7*37 % 180 + 0.5; dev-3: 3*13 % 20 / 20).
    let store = printed
        .lines()
        .find_map(|l| {
            l.strip_prefix("feature store ")
                .and_then(|r| r.split("grpc+http ").nth(1))
        })
        .unwrap_or_else(|| panic!("no feature store line in the banner:\n{printed}"))
        .trim()
        .to_string();
    let body = json!({"entities": {"user_id": ["u7"], "device_id": ["dev-3"]},
                      "feature_service": "fraud_features"})
    .to_string();
    let (status, text) = http(&store, "POST", "/get-online-features", Some(&body)).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["metadata"]["feature_names"],
        json!([
            "user_id",
            "device_id",
            "user_avg_spend",
            "device_risk_score"
        ]),
        "{v}"
    );
    assert_eq!(v["results"][2]["values"], json!([99.5]), "{v}");
    let mut partial = features.clone();
    partial.remove("user_avg_spend");
    partial.remove("device_risk_score");
    let body = json!({"transaction_id": "up-2", "features": partial, "top_k": 16,
                      "user_id": "u7", "device_id": "dev-3"})
    .to_string();
    let (status, text) = http(&addrs.gateway, "POST", "/api/v1/fraud/score", Some(&body)).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["features_degraded"], json!(false), "{v}");
    let filled: std::collections::HashMap<&str, f64> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r["feature"].as_str()?, r["value"].as_f64()?)))
        .collect();
    assert_eq!(filled.get("user_avg_spend"), Some(&99.5), "{v}");
    // The model's inputs are f32: 0.95 comes back as 0.949999988.
    assert!(
        filled
            .get("device_risk_score")
            .is_some_and(|x| (x - 0.95).abs() < 1e-6),
        "{v}"
    );

    // A transaction posted to the gateway goes through the in-process bus to the fraud
    // pipeline (the store fills the user's spend and device risk), and its alert comes back on
    // the SSE stream (replayed from the feed's ring: the empty Last-Event-ID asks for all).
    let tx = json!({"transaction_id": "up-tx-1", "user_id": "u7", "device_id": "dev-3",
        "amount": 912.5, "created_at": "2026-12-07T03:00:00Z", "merchant_risk": 0.41,
        "distance_from_home_km": 240, "is_foreign": 1, "card_present": 0,
        "account_age_days": 21, "failed_logins_24h": 2, "new_device": 1})
    .to_string();
    let (status, text) = http(&addrs.gateway, "POST", "/api/v1/transactions", Some(&tx)).unwrap();
    assert_eq!(status, 202, "{text}");
    let (id, data) = common::first_sse_event(
        &addrs.gateway,
        "/api/v1/fraud/alerts/stream?last_event_id=",
        "alert",
        Duration::from_secs(30),
    )
    .unwrap();
    let alert: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(alert["transaction_id"], json!("up-tx-1"), "{alert}");
    assert_eq!(alert["is_fraud"], json!(true), "{alert}");
    assert_eq!(alert["features_degraded"], json!(false), "{alert}");
    assert_eq!(
        alert["reasons"].as_array().map(Vec::len),
        Some(3),
        "{alert}"
    );
    assert_eq!(id, "0:1", "the feed position after the first alert");
    let (status, text) = http(&addrs.gateway, "POST", "/api/v1/transactions", Some("[1]")).unwrap();
    assert_eq!(status, 400, "{text}");

    // SIGTERM (as Ctrl-C) stops both services and the process, with success.
    let pid = up.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = up.wait_exit(STOP);
    let log = if status.is_some() {
        up.final_log()
    } else {
        up.log()
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGTERM: {status:?}; log:\n{log}"
    );
    let errors = errors(&log);
    assert!(errors.is_empty(), "errors logged:\n{}", errors.join("\n"));
    // The inference log was written at shutdown: one file of the fraud model, both rows.
    let day_dirs: Vec<_> = std::fs::read_dir(log_dir.join("fraud/1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(day_dirs.len(), 1, "{day_dirs:?}");
    let files: Vec<_> = std::fs::read_dir(&day_dirs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(
        bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
        "a Parquet file"
    );
}

/// The model cache the README's test command fills (all-MiniLM-L6-v2, SmolLM2).
fn model_cache() -> std::path::PathBuf {
    std::env::var_os("INFERMESH_MODEL_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/infermesh/models")
        })
}

/// `infermesh up` with the real model cache: it trains the sample topic and sentiment models
/// on the project's sample reviews, serves them with the embedded LLM, and the gateway's
/// `POST /api/v1/reviews` goes through the in-process bus and pipeline into PostgreSQL.
#[test]
fn up_serves_review_intelligence_with_the_model_cache() {
    let cache = model_cache();
    assert!(
        cache.join("all-MiniLM-L6-v2/model.safetensors").is_file()
            && cache.join("smollm2-135m-instruct/model.gguf").is_file(),
        "the model cache {} lacks MiniLM or SmolLM2: run scripts/test.sh (it fetches them once)",
        cache.display()
    );
    let database = std::env::var("INFERMESH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("model-repository");
    let (mut up, addrs, printed, started) = start_up(
        dir.path(),
        &repo,
        &cache,
        &["--llm-port", "0"],
        &[("INFERMESH_DATABASE_URL", database.as_str())],
    );
    // Training and loading MiniLM twice take a while in a debug build.
    let deadline = started + 4 * START;
    assert!(
        printed.contains("trained topics and sentiment on the sample reviews"),
        "{printed}"
    );
    wait_ready(&mut up, &addrs.http, "/v2/models/sentiment/ready", deadline);
    wait_ready(&mut up, &addrs.http, "/v2/models/topics/ready", deadline);
    wait_ready(&mut up, &addrs.gateway, "/readyz", deadline);

    let texts = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": [
        "The battery died after two hours, very disappointing.",
        "Delivery was quick and the parcel arrived in perfect shape."]}]})
    .to_string();
    let (status, text) = http(
        &addrs.http,
        "POST",
        "/v2/models/sentiment/infer",
        Some(&texts),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["outputs"][0]["data"],
        json!(["negative", "positive"]),
        "{v}"
    );
    assert_eq!(
        v["outputs"][2]["data"],
        json!(["classifier", "classifier"]),
        "{v}"
    );
    let (status, text) =
        http(&addrs.http, "POST", "/v2/models/topics/infer", Some(&texts)).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let topics = v["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(topics.len(), 2, "{v}");
    assert_ne!(topics[0], topics[1], "two themes, two topics: {v}");

    // The embedded LLM answers Ollama's API.
    let llm = printed
        .lines()
        .find_map(|l| l.strip_prefix("embedded LLM (Ollama API, smollm2:135m): http "))
        .unwrap_or_else(|| panic!("no LLM address in\n{printed}"))
        .to_string();
    let (status, text) = http(&llm, "GET", "/api/tags", None).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("smollm2:135m"), "{text}");

    // A review through the gateway: 202 at once, then a row in PostgreSQL.
    let id = format!(
        "up-test-{}-{}",
        std::process::id(),
        started.elapsed().as_nanos()
    );
    let body = json!({"review_id": id, "product_id": "p1", "rating": 1,
                      "text": "The battery died after two hours, very disappointing."})
    .to_string();
    let (status, text) = http(&addrs.gateway, "POST", "/api/v1/reviews", Some(&body)).unwrap();
    assert_eq!(status, 202, "{text}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let row = runtime.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&database)
            .await
            .unwrap();
        let poll_until = Instant::now() + Duration::from_secs(60);
        let row = loop {
            let row: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT review_id, sentiment_label, topic_id FROM reviews WHERE review_id = $1",
            )
            .bind(&id)
            .fetch_optional(&pool)
            .await
            .unwrap();
            if let Some(row) = row {
                break row;
            }
            assert!(
                Instant::now() < poll_until,
                "review {id} never reached PostgreSQL"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // The topic's theme-label job runs on the embedded LLM; its label is written back to
        // topic_labels and to the review's row (or the row took it at insert).
        let topic = row.2.unwrap_or(-1);
        assert!(
            topic >= 0,
            "a battery review is in a topic, not an outlier: {row:?}"
        );
        let poll_until = Instant::now() + Duration::from_secs(180);
        let label = loop {
            let labelled: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT t.label, r.topic_label FROM reviews r \
                 JOIN topic_labels t ON t.topic_id = r.topic_id WHERE r.review_id = $1",
            )
            .bind(&id)
            .fetch_optional(&pool)
            .await
            .unwrap();
            if let Some((label, row_label)) = &labelled
                && row_label.as_deref() == Some(label.as_str())
            {
                break label.clone();
            }
            assert!(
                Instant::now() < poll_until,
                "the topic of review {id} never got the LLM's label: {labelled:?}\n{}",
                up.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        sqlx::query("DELETE FROM reviews WHERE review_id = $1")
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
        // The next run labels the topic again (the sample models are retrained per run).
        sqlx::query("DELETE FROM topic_labels WHERE topic_id = $1")
            .bind(topic)
            .execute(&pool)
            .await
            .unwrap();
        (row, label)
    });
    let (row, label) = row;
    assert_eq!(row.1.as_deref(), Some("negative"), "{row:?}");
    assert!(row.2.is_some(), "{row:?}");
    assert!(
        !label.is_empty() && label.split_whitespace().count() <= 6,
        "{label:?}"
    );

    let pid = up.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = up.wait_exit(STOP);
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGTERM: {status:?}; log:\n{}",
        up.log()
    );
}
