//! `streamload`: open-loop load on the fraud pipeline through Kafka. Produces transactions to
//! the input topic at `--rate` per second (0: as fast as the producer goes) for `--count`
//! transactions, every `--alert-every`-th one risky enough to alert, while a tail consumer of
//! the alerts topic times each alert from its transaction's send. Prints one JSON line: sent,
//! alerts, the achieved send rate, alert latency p50/p90/p99/max in ms, and the sustained
//! throughput (transactions per second from the first send to the last alert).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use infermesh_pipelines::bus::{EventBus, Message, Subscription};
use infermesh_pipelines::kafka::{KafkaBus, KafkaConfig};
use rdkafka::consumer::Consumer as _;

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap brokers.
    #[arg(long)]
    brokers: String,
    /// The pipeline's input topic.
    #[arg(long, default_value = "finance.transactions")]
    input: String,
    /// The pipeline's alerts topic.
    #[arg(long, default_value = "fraud.alerts")]
    alerts: String,
    /// Transactions per second; 0: as fast as the producer takes them.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Transactions to send.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Every n-th transaction is risky (alerted by the model); the others are ordinary.
    #[arg(long, default_value_t = 1)]
    alert_every: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// A tag making this run's transaction ids unique.
    #[arg(long, default_value = "bench")]
    tag: String,
    /// The tail consumer's `fetch.wait.max.ms` (unset: the pipelines' default).
    #[arg(long)]
    fetch_wait_ms: Option<u64>,
    /// A librdkafka property of the producer, KEY=VALUE (repeatable; e.g. `linger.ms=0`),
    /// applied after the pipelines' own settings.
    #[arg(long = "producer-option", value_name = "KEY=VALUE")]
    producer_options: Vec<String>,
    /// Longest wait for the last alert after the last send, seconds.
    #[arg(long, default_value_t = 60)]
    drain_seconds: u64,
    /// Also write each timed alert to FILE, one `SENT_MS LATENCY_MS` line (its send, in ms
    /// from the first timed send, and its latency), to see when the slow ones happen.
    #[arg(long, value_name = "FILE")]
    latencies: Option<std::path::PathBuf>,
}

/// One transaction. A risky one is over the sample model's threshold at every hour of the day,
/// for a user's first transaction as for later ones (the model takes `hour_of_day` and
/// `is_night` from `created_at`; without `session_product_views` its probability was 0.47 at
/// 23:00 UTC); an ordinary one stays under 0.05.
fn transaction(args: &Args, i: usize, now_ms: i64) -> (String, Vec<u8>) {
    let user = format!("u{}", i % args.users.max(1));
    let risky = i.is_multiple_of(args.alert_every.max(1));
    let v = serde_json::json!({
        "transaction_id": format!("{}-{i}", args.tag), "user_id": user,
        "device_id": format!("d{}", i % 997), "amount": if risky { 950.0 } else { 30.0 },
        "currency": "EUR", "merchant": "m", "category": "c", "created_at": now_ms,
        "merchant_risk": if risky { 0.6 } else { 0.05 },
        "device_risk_score": if risky { 0.5 } else { 0.02 }, "is_foreign": i32::from(risky),
        "card_present": i32::from(!risky), "new_device": i32::from(risky),
        "account_age_days": if risky { 10 } else { 1500 }, "failed_logins_24h": i32::from(risky) * 2,
        "session_product_views": if risky { 0 } else { 6 }
    });
    (user, v.to_string().into_bytes())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut producer_cfg = KafkaConfig::new(&args.brokers, "streamload");
    for kv in &args.producer_options {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--producer-option {kv:?} is not KEY=VALUE"))?;
        producer_cfg.options.push((k.into(), v.into()));
    }
    let producer = Arc::new(KafkaBus::new(producer_cfg)?);
    let mut tail_cfg = KafkaConfig::new(&args.brokers, "streamload-tail");
    if let Some(ms) = args.fetch_wait_ms {
        tail_cfg
            .options
            .push(("fetch.wait.max.ms".into(), ms.to_string()));
    }
    let tail = KafkaBus::new(tail_cfg)?;
    let mut sub = tail.subscribe_tail(&args.alerts)?;
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let expected = (0..args.count)
        .filter(|i| i.is_multiple_of(args.alert_every.max(1)))
        .count();
    // Wait for the tail's partition assignment before sending (a latest-offset consumer that
    // joins late would miss the first alerts).
    let warm = std::time::Instant::now();
    while sub.consumer().assignment().map_or(0, |a| a.count()) == 0 {
        let _ = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
        anyhow::ensure!(
            warm.elapsed() < Duration::from_secs(30),
            "the alerts tail got no partitions"
        );
    }
    // Untimed risky transactions first, one every 500 ms until an alert of one comes back on
    // the tail. A new idempotent producer fetches metadata and its producer id before its
    // first record leaves, which delayed the first hundreds of timed sends by up to ~0.9 s
    // (against tansu, the broker hop alone: p99 810 ms on 10,000 sends at 1k/s without this,
    // 23 ms with it); and a tail that has partitions may not have resolved its starting offset
    // yet, so sends right after it would be missed. A warm-up alert on the tail settles both.
    let warm_prefix = format!("{}-warm-up-", args.tag);
    let mut warmed = false;
    for k in 0..60 {
        let (key, value) = transaction(&args, 0, 0);
        let mut v: serde_json::Value = serde_json::from_slice(&value)?;
        v["transaction_id"] = format!("{warm_prefix}{k}").into();
        v["created_at"] = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64)
            .into();
        producer
            .publish(&args.input, Message::new(key, serde_json::to_vec(&v)?))
            .await
            .context("warm-up produce")?;
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(d)) = tokio::time::timeout_at(until, sub.next()).await {
            let back = serde_json::from_slice::<serde_json::Value>(&d.message.payload)
                .ok()
                .and_then(|v| {
                    v.get("transaction_id")?
                        .as_str()
                        .map(|t| t.starts_with(&warm_prefix))
                });
            if back == Some(true) {
                warmed = true;
                break;
            }
        }
        if warmed {
            break;
        }
    }
    anyhow::ensure!(warmed, "no warm-up alert came back in 30 s");
    let origin = Instant::now();
    let keep_each = args.latencies.is_some();
    let consumer = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut each: Vec<(f64, f64)> = Vec::new();
            let mut last = None;
            while (h.len() as usize) < expected {
                let d = match tokio::time::timeout(Duration::from_secs(120), sub.next()).await {
                    Ok(Ok(d)) => d,
                    _ => break,
                };
                let v: serde_json::Value = match serde_json::from_slice(&d.message.payload) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let Some(tx) = v.get("transaction_id").and_then(|t| t.as_str()) else {
                    continue;
                };
                let start = sent_at.lock().expect("sent").remove(tx);
                if let Some(t0) = start {
                    let took = t0.elapsed();
                    h.record(took.as_micros() as u64).expect("record");
                    if keep_each {
                        each.push((
                            t0.saturating_duration_since(origin).as_secs_f64() * 1e3,
                            took.as_secs_f64() * 1e3,
                        ));
                    }
                    last = Some(Instant::now());
                }
            }
            (h, last, each)
        })
    };
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..args.count {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let (key, value) = transaction(&args, i, now_ms);
        if i.is_multiple_of(args.alert_every.max(1)) {
            sent_at
                .lock()
                .expect("sent")
                .insert(format!("{}-{i}", args.tag), Instant::now());
        }
        let bus = producer.clone();
        let topic = args.input.clone();
        pending.push(tokio::spawn(async move {
            bus.publish(&topic, Message::new(key, value)).await
        }));
        if pending.len() >= 2000 {
            for p in pending.drain(..) {
                p.await?.context("produce")?;
            }
        }
    }
    for p in pending.drain(..) {
        p.await?.context("produce")?;
    }
    let sent_secs = started.elapsed().as_secs_f64();
    let (h, last, each) = tokio::time::timeout(Duration::from_secs(args.drain_seconds), consumer)
        .await
        .context("alerts did not all arrive")??;
    if let Some(path) = &args.latencies {
        let text: String = each
            .iter()
            .map(|(sent, took)| format!("{sent:.3} {took:.3}\n"))
            .collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let span = last.map_or(f64::NAN, |l| (l - started).as_secs_f64());
    println!(
        "{}",
        serde_json::json!({
            "sent": args.count, "alerts": h.len(), "expected_alerts": expected,
            "send_rate": args.count as f64 / sent_secs,
            "sustained_tx_per_s": args.count as f64 / span,
            "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": h.max() as f64 / 1000.0,
        })
    );
    Ok(())
}
