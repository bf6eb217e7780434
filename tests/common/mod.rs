//! What the root crate's integration tests share: a dependency-free HTTP/1.0 client for the
//! servers the `infermesh` binary starts, and a child process that cannot outlive its test.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request to `addr` (`host:port`) with an optional JSON body; returns the status and the
/// body. HTTP/1.0, so the server closes the connection after the (unchunked) answer.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::other(format!("not an HTTP answer: {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// The first Server-Sent Event named `event` on `path` of `addr`: its `id` and `data` lines.
/// Waits up to `within` for it.
pub fn first_sse_event(
    addr: &str,
    path: &str,
    event: &str,
    within: Duration,
) -> std::io::Result<(String, String)> {
    use std::io::BufRead;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(within))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let reader = std::io::BufReader::new(stream);
    let (mut name, mut id) = (String::new(), String::new());
    for line in reader.lines() {
        // Chunked transfer: size lines and blank chunk ends mix with the event's lines.
        let line = line?;
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:")
            && name == event
        {
            return Ok((id, v.trim().to_string()));
        }
    }
    Err(std::io::Error::other(format!("no {event} event on {path}")))
}

/// A child process, killed and reaped when dropped: also when the test fails half-way.
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
