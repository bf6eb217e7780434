//! Helpers of the pipelines' integration tests: the Redis to use, per-test key prefixes that
//! clean up after themselves, metrics reading, and stub LLM servers (malformed, silent, down).
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Redis the tests use: `INFERMESH_TEST_REDIS_URL` (scripts/test.sh sets it), else
/// `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("INFERMESH_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A key prefix of one test; its keys are deleted on drop (also when the test panics).
#[derive(Debug)]
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    /// Fails the test with a hint when there is no Redis to use.
    pub fn new() -> Self {
        drop(conn());
        Self(format!("infermesh-test:{}:", uuid::Uuid::new_v4()))
    }

    /// Every key under the prefix.
    pub fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut conn())
            .unwrap()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let keys = self.keys();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query(&mut conn()).unwrap();
        }
    }
}

/// A synchronous connection to the test Redis.
pub fn conn() -> redis::Connection {
    redis::Client::open(redis_url())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| {
            panic!(
                "no Redis at {} ({e}): set INFERMESH_TEST_REDIS_URL to one, or run scripts/test.sh, which starts one",
                redis_url()
            )
        })
}

/// A port nobody listens on.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// The process-wide Prometheus text (the recorder is installed once per test binary).
pub fn metrics_text() -> String {
    let h = infermesh_common::telemetry::install_prometheus().unwrap();
    h.run_upkeep();
    h.render()
}

/// The sum of `metric`'s samples whose line holds every one of `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(metric)
                && l[metric.len()..].starts_with(['{', ' '])
                && labels.iter().all(|lab| l.contains(lab))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A stub HTTP server answering every request with `status` and `body`; counts requests.
#[derive(Debug)]
pub struct StubLlm {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
}

impl StubLlm {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Starts a stub answering `body` with `status` (200: an Ollama chat answer...).
pub async fn stub_llm(status: u16, body: String) -> StubLlm {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            let body = body.clone();
            tokio::spawn(async move {
                if read_request(&mut sock).await.is_none() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    StubLlm { addr, requests }
}

/// Starts a server that accepts, reads the request, and never answers.
pub async fn silent_llm() -> StubLlm {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if read_request(&mut sock).await.is_some() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                drop(sock);
            });
        }
    });
    StubLlm { addr, requests }
}

/// Reads one HTTP request (headers and a content-length body).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
    }
}

/// An Ollama `/api/chat` answer whose message is `content`.
pub fn chat_answer(content: &str) -> String {
    serde_json::json!({
        "model": "stub", "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content}, "done": true, "done_reason": "stop"
    })
    .to_string()
}
