//! The sentiment family's LLM arm under a stream of reviews with repeated texts: how many it
//! answers from the cache, how many LLM calls it makes (it must make exactly one per distinct
//! text), and the latency of a hit, a miss and a text that waited on an identical one in flight.
//!
//! The arm is the serving one ([`ZeroShotArm`]: sanitiser, cache, single flight, admission),
//! asked the way `SentimentServable::analyze` asks it. The LLM is the embedded SmolLM2
//! (`infermesh llm serve`, started in process from the model cache) unless `--url` names an
//! Ollama API or `--stub` asks for a counting stub that answers after `--stub-delay-ms`.
//! LLM calls are counted twice, independently: by where each answer came from, and by the
//! Ollama client's own metric (`infermesh_llm_client_requests_total{endpoint="generate"}`).
//!
//! ```sh
//! cargo run --release --example llm_cache_hit_rate -p infermesh-sentiment --features serving -- \
//!   [--reviews 2000] [--distinct 400] [--seed 42] [--concurrency 4] [--stub] [--url URL]
//! ```
//! (`bench/sentiment_cache.sh` runs it.) Exit status 1 when the calls differ from the distinct
//! texts of the stream or an answer fell back.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use infermesh_sentiment::serving::{LlmSettings, Origin, ZeroShotArm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
struct Args {
    /// Reviews in the stream.
    #[arg(long, default_value_t = 2000)]
    reviews: usize,
    /// Distinct texts they are drawn from (at most 1,440: the generator's combinations).
    #[arg(long, default_value_t = 400)]
    distinct: usize,
    /// Seed of the texts' order and the draws.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Reviews asked at once (the reviews pipeline runs 4 consumers by default).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// `[llm] max_in_flight`.
    #[arg(long, default_value_t = 4)]
    max_in_flight: usize,
    /// `[llm] timeout_ms`: the longest wait for one answer.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// An Ollama API to ask (a real Ollama or `infermesh llm serve`); default: the embedded
    /// LLM in process.
    #[arg(long, conflicts_with = "stub")]
    url: Option<String>,
    /// The model it serves.
    #[arg(long, default_value = "smollm2:135m")]
    model: String,
    /// The GGUF the embedded LLM serves; default: SmolLM2 in the model cache.
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Ask a counting stub instead of an LLM.
    #[arg(long)]
    stub: bool,
    /// The stub's answer time, in milliseconds.
    #[arg(long, default_value_t = 20)]
    stub_delay_ms: u64,
    /// A Redis for the cache (`[llm] cache_url`; keys under a prefix of this run, kept 10
    /// minutes); default: memory.
    #[arg(long)]
    cache_url: Option<String>,
}

/// splitmix64: a fixed, dependency-free sequence for a given seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `n` distinct review texts (product x aspect x verdict x closing), in a seeded order.
fn distinct_texts(n: usize, rng: &mut Rng) -> Vec<String> {
    const PRODUCTS: [&str; 6] = [
        "phone",
        "laptop",
        "headset",
        "kettle",
        "backpack",
        "smartwatch",
    ];
    const ASPECTS: [&str; 6] = [
        "battery",
        "screen",
        "build quality",
        "delivery",
        "sound",
        "price",
    ];
    const VERDICTS: [&str; 8] = [
        "is excellent, far better than I expected",
        "is fine for the money",
        "died after two days, very disappointing",
        "is awful and support never answered",
        "works as described",
        "broke within a week",
        "made me order a second one for my brother",
        "feels cheap and the box arrived crushed",
    ];
    const CLOSINGS: [&str; 5] = [
        "",
        " Would buy again.",
        " Returning it.",
        " Five stars.",
        " Not sure yet.",
    ];
    let mut all = Vec::new();
    for p in PRODUCTS {
        for a in ASPECTS {
            for v in VERDICTS {
                for c in CLOSINGS {
                    all.push(format!("The {a} of this {p} {v}.{c}"));
                }
            }
        }
    }
    // Fisher-Yates with the seeded generator.
    for i in (1..all.len()).rev() {
        all.swap(i, rng.below(i + 1));
    }
    all.truncate(n);
    all
}

/// A stub Ollama answering `/api/generate` after `delay`; counts calls.
async fn stub(delay: Duration) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let body =
                    serde_json::json!({"model": "stub", "created_at": "2026-01-01T00:00:00Z",
                    "response": "{\"label\": \"positive\", \"score\": 0.9}", "done": true})
                    .to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok((url, calls))
}

fn percentiles(times: &mut [Duration]) -> String {
    if times.is_empty() {
        return "-".into();
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(times[times.len() - 1])
    )
}

/// The sum of `metric`'s samples whose line holds every one of `labels`.
fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // An empty f64 sum is -0.0: printed as "-0".
        .sum::<f64>()
        + 0.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    use std::io::Write as _;
    let args = Args::parse();
    anyhow::ensure!(
        args.distinct >= 1 && args.reviews >= 1 && args.concurrency >= 1,
        "--reviews, --distinct and --concurrency must be at least 1"
    );
    let metrics = infermesh_common::telemetry::install_prometheus()?;
    let mut rng = Rng(args.seed);
    let texts = distinct_texts(args.distinct, &mut rng);
    anyhow::ensure!(
        texts.len() == args.distinct,
        "--distinct {} is more than the generator's {} texts",
        args.distinct,
        texts.len()
    );
    let stream: Vec<usize> = (0..args.reviews).map(|_| rng.below(texts.len())).collect();
    let distinct_in_stream = stream.iter().collect::<HashSet<_>>().len();

    let mut embedded = None;
    let mut stub_calls = None;
    let (url, llm) = match (&args.url, args.stub) {
        (Some(url), _) => (url.clone(), format!("{} at {url}", args.model)),
        (None, true) => {
            let (url, calls) = stub(Duration::from_millis(args.stub_delay_ms)).await?;
            stub_calls = Some(calls);
            (
                url,
                format!("a counting stub answering in {} ms", args.stub_delay_ms),
            )
        }
        (None, false) => {
            let gguf = args.gguf.clone().unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/infermesh/models/smollm2-135m-instruct/model.gguf")
            });
            let cfg = infermesh_ollama::server::LlmServeArgs {
                port: 0,
                embed_model: "none".into(),
                model: gguf.display().to_string(),
                name: Some(args.model.clone()),
                ..Default::default()
            }
            .validate()
            .with_context(|| format!("the embedded LLM cannot serve {}", gguf.display()))?;
            let running = infermesh_ollama::server::start(cfg).await?;
            let url = format!("http://{}", running.addr);
            embedded = Some(running);
            (
                url,
                format!("the embedded LLM ({}, in process)", args.model),
            )
        }
    };
    let mut settings = LlmSettings::new(&url, &args.model);
    settings.timeout = Duration::from_millis(args.timeout_ms);
    settings.max_in_flight = args.max_in_flight;
    if let Some(redis) = &args.cache_url {
        settings.cache.redis_url = Some(redis.clone());
        settings.cache.prefix = format!("infermesh-bench:{}:", std::process::id());
        settings.cache.ttl = Duration::from_secs(600);
        settings.cache.timeout = Duration::from_millis(250);
    }
    let backend = settings.cache.backend();
    let labels = vec!["negative".to_string(), "positive".to_string()];
    let arm = Arc::new(ZeroShotArm::new("bench", settings, &labels).map_err(anyhow::Error::msg)?);

    let stream = Arc::new(stream);
    let texts = Arc::new(texts);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (arm, stream, texts, next) = (arm.clone(), stream.clone(), texts.clone(), next.clone());
        let timeout = Duration::from_millis(args.timeout_ms);
        workers.spawn(async move {
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&t) = stream.get(i) else {
                    return seen;
                };
                let asked_at = Instant::now();
                let answer = arm
                    .ask(&texts[t], tokio::time::Instant::now() + timeout)
                    .await;
                seen.push((t, answer.map(|a| a.origin), asked_at.elapsed()));
            }
        });
    }
    let mut by_origin: HashMap<&str, Vec<Duration>> = HashMap::new();
    let mut fallbacks: HashMap<String, usize> = HashMap::new();
    let mut called: HashMap<usize, usize> = HashMap::new();
    while let Some(done) = workers.join_next().await {
        for (t, origin, took) in done? {
            match origin {
                Ok(Origin::Cache) => by_origin.entry("hit").or_default().push(took),
                Ok(Origin::Joined) => by_origin.entry("joined").or_default().push(took),
                Ok(Origin::Llm) => {
                    *called.entry(t).or_default() += 1;
                    by_origin.entry("miss").or_default().push(took);
                }
                Err(f) => *fallbacks.entry(f.as_str().to_string()).or_default() += 1,
            }
        }
    }
    let wall = started.elapsed();
    let text = metrics.render();
    let client_calls = metric_sum(
        &text,
        "infermesh_llm_client_requests_total",
        &["endpoint=\"generate\""],
    );
    let cache = |result: &str| {
        metric_sum(
            &text,
            "infermesh_llm_cache_requests_total",
            &["source=\"sentiment\"", &format!("result=\"{result}\"")],
        )
    };
    let count = |k: &str| by_origin.get(k).map_or(0, Vec::len);
    let (hits, joined) = (count("hit"), count("joined"));
    let calls: usize = called.values().sum();
    let twice = called.values().filter(|&&n| n > 1).count();
    let mut out = String::new();
    use std::fmt::Write as _;
    writeln!(
        out,
        "sentiment LLM arm, cache in {backend}: {} reviews drawn from {} distinct texts (seed {}; {} of them drawn), {} at once, against {llm}",
        args.reviews, args.distinct, args.seed, distinct_in_stream, args.concurrency
    )?;
    writeln!(
        out,
        "  hit rate {:.1}% ({hits} cache hits of {} reviews); {joined} waited on an identical call in flight; answered without a call of their own {:.1}%",
        100.0 * hits as f64 / args.reviews as f64,
        args.reviews,
        100.0 * (hits + joined) as f64 / args.reviews as f64,
    )?;
    writeln!(
        out,
        "  LLM calls {calls} (distinct texts drawn {distinct_in_stream}; texts called more than once {twice}); Ollama client generate requests {client_calls}{}",
        stub_calls.as_ref().map_or_else(String::new, |c| format!(
            "; stub received {}",
            c.load(Ordering::SeqCst)
        ))
    )?;
    writeln!(
        out,
        "  cache lookups (metric, source=\"sentiment\"): hit {} miss {} error {}",
        cache("hit"),
        cache("miss"),
        cache("error")
    )?;
    for (name, key) in [
        ("hit", "hit"),
        ("miss (LLM call)", "miss"),
        ("joined", "joined"),
    ] {
        let mut times = by_origin.remove(key).unwrap_or_default();
        writeln!(
            out,
            "  {name}: {} answers, {}",
            times.len(),
            percentiles(&mut times)
        )?;
    }
    writeln!(
        out,
        "  fallbacks {fallbacks:?}; wall {:.1} s ({:.1} reviews/s)",
        wall.as_secs_f64(),
        args.reviews as f64 / wall.as_secs_f64()
    )?;
    // Not `println!`: it panics when stdout is a closed pipe.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if let Some(llm) = embedded {
        llm.shutdown().await?;
    }
    let ok = calls == distinct_in_stream && client_calls == calls as f64 && fallbacks.is_empty();
    if !ok {
        let _ = writeln!(
            std::io::stderr().lock(),
            "FAILED: {calls} LLM calls ({client_calls} by the client's count) for \
             {distinct_in_stream} distinct texts, fallbacks {fallbacks:?}"
        );
        std::process::exit(1);
    }
    Ok(())
}
