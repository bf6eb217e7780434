//! The MLflow client against a server that closes idle keep-alive connections, as gunicorn
//! (2 s) and uvicorn (5 s) do: a write that follows a pause longer than the client's pool
//! idle timeout goes out on a new connection instead of one the server is dropping. (Seen
//! before the timeout: a tuned `train fraud` whose trials took longer than the server's
//! keep-alive failed its next `runs/log-batch` with "connection closed before message
//! completed".)
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use infermesh_registry::mlflow::POOL_IDLE_TIMEOUT;
use infermesh_registry::{MlflowClient, MlflowOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads one request (headers, then the body by its Content-Length); `None` when the
/// connection ends first.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while req.len() < head_end + len {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    Some(())
}

/// Answers each request with `200 {}`, keeping the connection alive; once a connection has
/// been idle for `idle` the server stops reading it and closes it `close_after` after its
/// last answer, whatever was sent meanwhile (a keep-alive close racing a request, made wide).
/// Returns the base URI and the count of connections accepted.
async fn closing_server(idle: Duration, close_after: Duration) -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut first = true;
                loop {
                    let next = if first {
                        read_request(&mut sock).await
                    } else {
                        tokio::time::timeout(idle, read_request(&mut sock))
                            .await
                            .ok()
                            .flatten()
                    };
                    first = false;
                    if next.is_none() {
                        tokio::time::sleep(close_after.saturating_sub(idle)).await;
                        return;
                    }
                    let out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn a_write_after_a_pause_does_not_reuse_a_connection_the_server_is_closing() {
    // The server stops reading a connection 300 ms after an answer and drops it 2.5 s after;
    // the client writes again 1.6 s after the first answer, past its pool's idle timeout.
    assert!(POOL_IDLE_TIMEOUT < Duration::from_millis(1600));
    let (uri, accepted) =
        closing_server(Duration::from_millis(300), Duration::from_millis(2500)).await;
    let c = MlflowClient::new(&uri, MlflowOptions::default()).unwrap();
    c.set_tag("r", "k", "v").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // On the first connection this write would wait for an answer that never comes and
    // fail when the server closes it: a write is not retried.
    c.set_tag("r", "k", "w").await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Back to back, the pooled connection is reused.
    c.set_tag("r", "k", "x").await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
