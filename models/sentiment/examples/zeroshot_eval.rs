//! Scores an LLM's zero-shot sentiment answers on a labelled CSV, exactly as the sentiment
//! family asks them (sanitised text, the labels as a JSON-schema enum, greedy): accuracy,
//! macro-F1, how many answers were valid, and the latency of a call. `bench/sentiment.sh`
//! runs it against `infermesh llm serve` for the LLM arm of the comparison.
//!
//! ```sh
//! cargo run --release -p infermesh-sentiment --features serving --example zeroshot_eval -- \
//!   --data test.csv --text-column description --label-column label \
//!   --url http://127.0.0.1:11434 --model smollm2:135m [--predictions FILE] [--limit N]
//! ```
//!
//! An invalid or failed answer counts as wrong (what the classifier would then answer is
//! the serving path's business, not this measurement's). Labels are the distinct values of
//! the label column, sorted.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use infermesh_ollama::OllamaClient;
use infermesh_ollama::sanitise::{EstimateCounter, Sanitiser};
use infermesh_sentiment::serving::zero_shot_request;
use infermesh_sentiment::zeroshot;

#[derive(Debug, Parser)]
struct Args {
    /// CSV with a header row.
    #[arg(long)]
    data: PathBuf,
    /// Column of the texts.
    #[arg(long)]
    text_column: String,
    /// Column of the labels.
    #[arg(long)]
    label_column: String,
    /// The Ollama API.
    #[arg(long, default_value = "http://127.0.0.1:11434")]
    url: String,
    /// The model it serves.
    #[arg(long, default_value = "smollm2:135m")]
    model: String,
    /// Longest wait for one answer, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// Score only the first N rows (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Write every row's answer here (columns text, label, predicted, probability), as
    /// `infermesh eval sentiment --predictions` does.
    #[arg(long)]
    predictions: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut reader = csv::Reader::from_path(&args.data)
        .with_context(|| format!("cannot read {}", args.data.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no column {name:?} in {}", args.data.display()))
    };
    let (tc, lc) = (col(&args.text_column)?, col(&args.label_column)?);
    let mut rows = Vec::new();
    for record in reader.records() {
        let r = record?;
        rows.push((r[tc].to_string(), r[lc].to_string()));
        if args.limit > 0 && rows.len() == args.limit {
            break;
        }
    }
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r.1.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let client = OllamaClient::new(&args.url, Duration::from_millis(args.timeout_ms))?;
    let sanitiser = Sanitiser::new(512, Arc::new(EstimateCounter));
    let system = zeroshot::system_prompt(&labels);
    let schema = zeroshot::schema(&labels);
    let mut predicted = Vec::with_capacity(rows.len());
    let mut latencies = Vec::with_capacity(rows.len());
    let mut invalid = 0usize;
    let started = Instant::now();
    for (i, (text, _)) in rows.iter().enumerate() {
        let clean = sanitiser.sanitise(text);
        let request = zero_shot_request(&args.model, &system, &schema, &clean.text);
        let t = Instant::now();
        let answer = client.generate(&request).await;
        latencies.push(t.elapsed().as_secs_f64());
        match answer
            .map_err(|e| e.to_string())
            .and_then(|r| zeroshot::parse_answer(&r.response, &labels).map_err(|e| e.to_string()))
        {
            Ok(a) => predicted.push((labels[a.label].clone(), a.score)),
            Err(e) => {
                invalid += 1;
                eprintln!("row {i}: {e}");
                predicted.push((String::new(), 0.0));
            }
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{} / {} rows", i + 1, rows.len());
        }
    }
    let n = rows.len().max(1);
    let correct = rows
        .iter()
        .zip(&predicted)
        .filter(|(r, p)| r.1 == p.0)
        .count();
    let macro_f1 = labels
        .iter()
        .map(|l| {
            let tp = rows
                .iter()
                .zip(&predicted)
                .filter(|(r, p)| &r.1 == l && &p.0 == l)
                .count() as f64;
            let fp = rows
                .iter()
                .zip(&predicted)
                .filter(|(r, p)| &r.1 != l && &p.0 == l)
                .count() as f64;
            let fn_ = rows
                .iter()
                .zip(&predicted)
                .filter(|(r, p)| &r.1 == l && &p.0 != l)
                .count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fn_)
            }
        })
        .sum::<f64>()
        / labels.len().max(1) as f64;
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    if let Some(path) = &args.predictions {
        let mut w = csv::Writer::from_path(path)?;
        w.write_record(["text", "label", "predicted", "probability"])?;
        for ((text, label), (p, score)) in rows.iter().zip(&predicted) {
            w.write_record([
                text.as_str(),
                label.as_str(),
                p.as_str(),
                &score.to_string(),
            ])?;
        }
        w.flush()?;
    }
    println!(
        "{}",
        serde_json::json!({
            "model": args.model, "n": rows.len(), "labels": labels,
            "accuracy": correct as f64 / n as f64, "macro_f1": macro_f1,
            "valid_answers": rows.len() - invalid,
            "latency_seconds": {"p50": q(0.5), "p90": q(0.9), "max": q(1.0)},
            "elapsed_seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
