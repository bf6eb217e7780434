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
            _,
            "|",
            "gateway",
            "http",
            gateway,
            "metrics",
            _,
        ] => Some(Addrs {
            http: (*http).to_string(),
            grpc: (*grpc).to_string(),
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

#[test]
fn up_serves_the_sample_repository_and_the_gateway_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("model-repository");
    let no_models = dir.path().join("empty-model-cache");
    std::fs::create_dir(&no_models).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_infermesh"))
        .arg("--log-json")
        .arg("up")
        .arg("--model-repository")
        .arg(&repo)
        .arg("--model-cache")
        .arg(&no_models)
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
        // Nothing from the caller's environment changes what runs: logs at info, no OTLP
        // export, the working directory a temporary one.
        .env("RUST_LOG", "info")
        .env_remove("INFERMESH_OTLP_ENDPOINT")
        .current_dir(dir.path())
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
}
