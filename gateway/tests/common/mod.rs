//! What the gateway's integration tests share: a real inference server on the sample
//! repository and a gateway in front of it, both on port 0, and the JSON error check.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use infermesh_gateway::GatewayArgs;
use serde_json::Value;

/// An inference server on a temporary sample repository.
pub struct Upstream {
    _repo: tempfile::TempDir,
    pub server: infermesh_server::RunningServer,
}

impl Upstream {
    /// The server's gRPC address as the gateway's `--inference-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.grpc_addr)
    }
}

/// Starts `infermesh serve` on the sample repository; with `minilm`, the cached
/// all-MiniLM-L6-v2 weights are linked in (the test fails with a hint when they are missing).
pub async fn upstream(minilm: bool) -> Upstream {
    let repo = tempfile::tempdir().unwrap();
    infermesh_server::sample::write_sample_repository(repo.path()).unwrap();
    if minilm {
        let cache = infermesh_server::sample::default_model_cache();
        assert!(
            infermesh_server::sample::link_minilm(repo.path(), &cache).unwrap(),
            "all-MiniLM-L6-v2 is not in {}: run scripts/test.sh (it fetches the weights once)",
            cache.display()
        );
    }
    let cfg = infermesh_server::ServeArgs {
        model_repository: repo.path().to_path_buf(),
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        http_port: 0,
        grpc_port: 0,
        metrics_port: 0,
        poll_interval: 0.0,
        max_request_bytes: 1 << 20,
        fraud_model: "fraud".into(),
        embedding_model: "minilm".into(),
        categorizer_model: "categorizer".into(),
        recommender_model: "recs".into(),
        enable_model_control: false,
        limits: Default::default(),
        registry: Default::default(),
        monitor: Default::default(),
        features: Default::default(),
    }
    .validate()
    .unwrap();
    let server = infermesh_server::start(cfg).await.unwrap();
    Upstream {
        _repo: repo,
        server,
    }
}

/// Starts a gateway in front of `inference_url`, with an optional gateway config (TOML text)
/// and an optional Redis `(url, key prefix)`.
pub async fn gateway(
    inference_url: String,
    config: Option<&str>,
    redis: Option<(&str, &str)>,
) -> infermesh_gateway::RunningGateway {
    let dir = tempfile::tempdir().unwrap();
    let config = config.map(|text| {
        let p = dir.path().join("gateway.toml");
        std::fs::write(&p, text).unwrap();
        p
    });
    let cfg = GatewayArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        metrics_port: 0,
        inference_url,
        timeout_ms: 2000,
        max_request_bytes: 16 * 1024,
        config,
        redis_url: redis.map(|(url, _)| url.to_string()),
        redis_timeout_ms: 100,
        redis_key_prefix: redis
            .map(|(_, p)| p.to_string())
            .unwrap_or_else(|| "infermesh:".into()),
        limits: Default::default(),
        kafka_brokers: None,
    }
    .validate()
    .unwrap();
    infermesh_gateway::start(cfg).await.unwrap()
}

/// Asserts an error answer: `status`, a JSON body whose `error` contains `contains`.
pub async fn expect_error(r: reqwest::Response, status: u16, contains: &str) {
    assert_eq!(r.status(), status);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains(contains), "'{msg}' lacks '{contains}'");
}

/// The Redis the tests that need one use: `INFERMESH_TEST_REDIS_URL` (scripts/test.sh sets it,
/// starting a throw-away redis-server when none answers on the default), else
/// `redis://127.0.0.1:6379`.
pub fn redis_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("INFERMESH_TEST_REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
    })
}

/// A port nobody listens on.
pub fn dead_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// The gateway's `/metrics` text.
pub async fn metrics_text(gw: &infermesh_gateway::RunningGateway) -> String {
    reqwest::get(format!("http://{}/metrics", gw.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples of `metric` whose line contains every label in `labels` (None when
/// there is none). The metrics recorder is process-wide: tests in the same binary add to it.
pub fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}
