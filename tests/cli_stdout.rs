//! The `infermesh` binary's batch jobs and their stdout: a reader that has gone away
//! (`infermesh eval ... | head -1`) ends the output quietly instead of panicking, as
//! `println!` does on a closed pipe.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// 40 users in 4 groups, each liking 10 items of its group.
fn interactions(path: &Path) {
    let mut csv = String::from("user_id,item_id\n");
    for u in 0..40 {
        for i in (0..40).filter(|i| i % 4 == u % 4) {
            csv.push_str(&format!("u{u},p{i}\n"));
        }
    }
    std::fs::write(path, csv).unwrap();
}

fn train_recs(dir: &Path, out: &str, stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infermesh"))
        .args(["train", "recs", "--interactions"])
        .arg(dir.join("interactions.csv"))
        .args([
            "--epochs",
            "2",
            "--components",
            "4",
            "--threads",
            "1",
            "--out",
        ])
        .arg(dir.join(out))
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_the_output_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    interactions(&dir.path().join("interactions.csv"));

    // Read normally, the job prints its summary.
    let open = train_recs(dir.path(), "open", Stdio::piped());
    assert!(open.status.success(), "{open:?}");
    let text = String::from_utf8(open.stdout).unwrap();
    assert!(text.starts_with("recommender trained: 40 users"), "{text}");

    // A pipe whose read end is closed before the job starts: every write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let closed = train_recs(dir.path(), "closed", Stdio::from(writer));
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(closed.status.success(), "{closed:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The job's work is done all the same.
    assert!(
        dir.path()
            .join("closed")
            .read_dir()
            .unwrap()
            .next()
            .is_some()
    );
}

#[test]
fn a_server_keeps_serving_when_its_stdout_is_closed() {
    use std::io::{BufRead, BufReader};
    let repo = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_infermesh"))
            .args([
                "--log-json",
                "serve",
                "--host",
                "127.0.0.1",
                "--model-repository",
            ])
            .arg(repo.path())
            .args([
                "--http-port",
                "0",
                "--grpc-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The server logs (stderr) that it listens, then writes its banner to the closed stdout.
    let mut log = String::new();
    let mut http_addr = None;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("inference server listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            http_addr = v["fields"]["http_addr"].as_str().map(str::to_string);
            break;
        }
    }
    assert!(log.contains("inference server listening"), "{log}");
    let http_addr = http_addr.unwrap_or_else(|| panic!("no http_addr logged: {log}"));
    // Past the banner, the server still answers (waited for, not slept on; the bound only
    // ends a wait that would never end).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let answer = loop {
        let answer = common::http(&http_addr, "GET", "/v2/health/live", None);
        if matches!(answer, Ok((200, _)))
            || child.try_wait().unwrap().is_some()
            || std::time::Instant::now() >= deadline
        {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let exited = child.try_wait().unwrap();
    child.kill().ok();
    child.wait().unwrap();
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    assert!(exited.is_none(), "the server stopped: {exited:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(matches!(answer, Ok((200, _))), "{answer:?}\n{log}");
}
