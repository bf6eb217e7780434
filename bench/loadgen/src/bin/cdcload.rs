//! PostgreSQL insert to alert on the gateway's SSE stream: inserts rows into `transactions` at a
//! fixed rate (each its own committed transaction, users taking turns so that after the first
//! `--users * 5` rows every row completes the 5-in-60 s velocity window and is alerted), reads
//! `GET /api/v1/fraud/alerts/stream`, and times each alert from its insert's commit. Prints one
//! JSON line: p50/p99/max in ms, alerts seen of those expected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use sqlx::Connection as _;

#[derive(Debug, Parser)]
struct Args {
    /// The database `infermesh cdc postgres` streams.
    #[arg(long)]
    database_url: String,
    /// The gateway (http://HOST:PORT).
    #[arg(long)]
    gateway: String,
    /// Inserts per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Rows inserted.
    #[arg(long, default_value_t = 4000)]
    count: usize,
    /// Users taking turns.
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// Transaction id prefix.
    #[arg(long, default_value = "cdc")]
    tag: String,
    /// How long to wait for the last alerts, seconds.
    #[arg(long, default_value_t = 30)]
    drain_seconds: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let warmup = args.users * 5;
    let expected = args.count.saturating_sub(warmup);
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/fraud/alerts/stream", args.gateway))
        .send()
        .await
        .context("SSE stream")?;
    anyhow::ensure!(resp.status().is_success(), "SSE stream: {}", resp.status());
    let reader_sent = sent.clone();
    let tag = format!("\"{}-", args.tag);
    let warm_tag = format!("\"{}-warm-", args.tag);
    let warmed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_warmed = warmed.clone();
    let reader = tokio::spawn(async move {
        let mut resp = resp;
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let now = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                if data.contains(&warm_tag) {
                    reader_warmed.store(true, std::sync::atomic::Ordering::SeqCst);
                    continue;
                }
                if !data.contains(&tag) {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                    continue;
                };
                let Some(tx) = v["transaction_id"].as_str() else {
                    continue;
                };
                let at = reader_sent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(tx);
                if let Some(at) = at {
                    let _ = h.record((now - at).as_micros() as u64);
                }
            }
            if h.len() as usize >= expected {
                break;
            }
        }
        h
    });
    let mut db = sqlx::PgConnection::connect(&args.database_url)
        .await
        .context("database")?;
    // Untimed rows of one user, one every 200 ms, until an alert of theirs (the fifth row in
    // the window) comes back on the stream: every process on the path (cdc, the pipeline's
    // group, the gateway's tail) is then past its start-up.
    for k in 0..300 {
        if warmed.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        sqlx::query(
            "INSERT INTO transactions (transaction_id, user_id, device_id, amount, currency, merchant, category) \
             VALUES ($1, $2, 'd', 25.00, 'EUR', 'm', 'c')",
        )
        .bind(format!("{}-warm-{k}", args.tag))
        .bind(format!("{}-warm-user", args.tag))
        .execute(&mut db)
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(
        warmed.load(std::sync::atomic::Ordering::SeqCst),
        "no warm-up alert came back in 60 s"
    );
    let started = Instant::now();
    for i in 0..args.count {
        let due = started + Duration::from_secs_f64(i as f64 / args.rate.max(1) as f64);
        tokio::time::sleep_until(due.into()).await;
        let tx = format!("{}-{i}", args.tag);
        let user = format!("{}-u{}", args.tag, i % args.users.max(1));
        // Timed from the insert's start (recorded first, so an alert can never beat it).
        if i >= warmup {
            sent.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(tx.clone(), Instant::now());
        }
        sqlx::query(
            "INSERT INTO transactions (transaction_id, user_id, device_id, amount, currency, merchant, category) \
             VALUES ($1, $2, 'd', 25.00, 'EUR', 'm', 'c')",
        )
        .bind(&tx)
        .bind(&user)
        .execute(&mut db)
        .await?;
    }
    let h = tokio::time::timeout(Duration::from_secs(args.drain_seconds), reader)
        .await
        .ok()
        .and_then(Result::ok);
    let Some(h) = h else {
        anyhow::bail!("alerts stopped arriving");
    };
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "tag": args.tag, "rate": args.rate, "inserted": args.count,
            "alerts": h.len(), "expected_alerts": expected,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
        })
    );
    Ok(())
}
