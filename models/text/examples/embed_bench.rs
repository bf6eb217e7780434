//! Side-by-side MiniLM benchmark, infermesh side: the same measurements as bench/text_peer.py
//! (ONNX Runtime) on the same corpus, printed as one JSON object with the same keys.
//!
//! ```text
//! cargo run --release -p infermesh-text --example embed_bench -- \
//!     --model ~/.cache/infermesh/models/all-MiniLM-L6-v2 --corpus FILE --threads 2 \
//!     [--engine candle|onnxruntime|onnxruntime-int8|openvino-f32|openvino-bf16|all]
//! ```
//!
//! One JSON line per engine (default `all`): candle, ONNX Runtime through `ort` on the graph
//! infermesh exports from the same safetensors (library from `ORT_DYLIB_PATH` or the cache, see
//! `infermesh_text::onnx::library_path`), `onnxruntime-int8` (the same graph with dynamically
//! quantised int8 linear layers), and OpenVINO on the same graph in f32 and in bf16 (library
//! from `OPENVINO_DYLIB_PATH` or the cache; bf16 only on a CPU with native bf16).
//!
//! - correctness first: the texts of tests/fixtures/minilm_reference.json, in one padded batch
//!   and one by one, must have cosine >= 0.9999 with the reference embeddings (exit 1 if not);
//! - throughput: the corpus (one sentence a line; bench/text_peer.py --write-corpus writes it) in
//!   batches of 32, 5 passes after a 2-batch warm-up, median sentences/s;
//! - single-sentence latency: 20 warm-up calls, then 300 calls on sentence i % corpus length,
//!   p50 / p99 by nearest rank.
//!
//! Tokenisation is inside every timing. candle and gemm
//! size their thread pools from `RAYON_NUM_THREADS` when first used, so when that variable does
//! not already equal `--threads` the example runs itself again with it set (no `unsafe`
//! `set_var`) before anything is loaded.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use infermesh_text::openvino::Precision;
use infermesh_text::{
    OnnxOptions, OnnxTask, OnnxTextModel, OpenVinoOptions, OpenVinoTextModel, SentenceEncoder,
    TextModel, cosine,
};
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn Error>>;

const BATCH: usize = 32;
const PASSES: usize = 5;
const WARMUP: usize = 20;
const SINGLE_CALLS: usize = 300;
const MIN_COSINE: f32 = 0.9999;

struct Args {
    model: PathBuf,
    corpus: PathBuf,
    threads: usize,
    engines: Vec<String>,
}

/// Tokenises and embeds `texts` as one padded batch (unit vectors, as served).
fn embed(enc: &dyn TextModel, texts: &[&str]) -> Res<Vec<Vec<f32>>> {
    let ids = enc.tokenize(texts)?;
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let mut rows = enc.forward_tokens(&refs)?;
    rows.iter_mut().for_each(|r| infermesh_text::normalize(r));
    Ok(rows)
}

fn parse_args() -> Res<Args> {
    let mut model = None;
    let mut corpus = None;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut engines = vec![
        "candle".to_string(),
        "onnxruntime".to_string(),
        "onnxruntime-int8".to_string(),
        "openvino-f32".to_string(),
        "openvino-bf16".to_string(),
    ];
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--corpus" => corpus = Some(PathBuf::from(value()?)),
            "--threads" => threads = value()?.parse()?,
            "--engine" => {
                let v = value()?;
                if v != "all" {
                    engines = vec![v];
                }
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: embed_bench --model DIR --corpus FILE \
                     [--threads N] [--engine candle|onnxruntime|onnxruntime-int8|\
                     openvino-f32|openvino-bf16|all]"
                )
                .into());
            }
        }
    }
    Ok(Args {
        model: model.ok_or("--model DIR is required")?,
        corpus: corpus.ok_or("--corpus FILE is required")?,
        threads,
        engines,
    })
}

/// The smallest cosine between our embeddings and the reference, over one padded batch of all
/// the fixture's texts and each text alone.
fn min_cosine(enc: &dyn TextModel) -> Res<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let sentences = fixture["sentences"]
        .as_array()
        .ok_or("fixture: no sentences")?;
    let mut texts = Vec::new();
    let mut want = Vec::new();
    for s in sentences {
        texts.push(s["text"].as_str().ok_or("fixture: text")?);
        let e: Option<Vec<f32>> = s["embedding"].as_array().and_then(|a| {
            a.iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
        });
        want.push(e.ok_or("fixture: embedding")?);
    }
    let batch = embed(enc, &texts)?;
    let mut worst = 1.0f32;
    for (i, text) in texts.iter().enumerate() {
        let alone = embed(enc, &[*text])?;
        for got in [&batch[i], &alone[0]] {
            let c = cosine(got, &want[i]);
            if c < MIN_COSINE {
                eprintln!(
                    "MISMATCH sentence {i} ({:?}): cosine {c}",
                    text.chars().take(40).collect::<String>()
                );
            }
            worst = worst.min(c);
        }
    }
    Ok(worst)
}

fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

fn main() -> Res<()> {
    let args = parse_args()?;
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let want_threads = args.threads.to_string();
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() != Some(want_threads.as_str()) {
        let status = Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env("RAYON_NUM_THREADS", &want_threads)
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }

    let sentences: Vec<String> = std::fs::read_to_string(&args.corpus)
        .map_err(|e| format!("{}: {e}", args.corpus.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if sentences.is_empty() {
        return Err(format!("{}: no sentences", args.corpus.display()).into());
    }
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    for engine in &args.engines {
        let enc: Box<dyn TextModel> = match engine.as_str() {
            "candle" => Box::new(SentenceEncoder::load(&args.model)?),
            "onnxruntime" | "onnxruntime-int8" => Box::new(OnnxTextModel::load(
                &args.model,
                OnnxTask::Embedding,
                OnnxOptions {
                    intra_threads: args.threads,
                    int8: engine == "onnxruntime-int8",
                },
            )?),
            "openvino-f32" | "openvino-bf16" => Box::new(OpenVinoTextModel::load(
                &args.model,
                OnnxTask::Embedding,
                OpenVinoOptions {
                    threads: args.threads,
                    precision: if engine == "openvino-bf16" {
                        Precision::Bf16
                    } else {
                        Precision::F32
                    },
                },
            )?),
            other => return Err(format!("unknown engine {other} (see --help)").into()),
        };
        run(engine, enc.as_ref(), &refs, args.threads)?;
    }
    Ok(())
}

fn run(engine: &str, enc: &dyn TextModel, refs: &[&str], threads: usize) -> Res<()> {
    let worst = min_cosine(enc)?;
    eprintln!("{engine}: min cosine vs reference {worst:.9}");
    // int8 trades fidelity for speed: it is held to 0.95, the f32 engines to 0.9999.
    let floor = if engine.ends_with("int8") {
        0.95
    } else {
        MIN_COSINE
    };
    if worst < floor {
        eprintln!("FAILED: cosine below {floor}");
        std::process::exit(1);
    }

    for chunk in refs.chunks(BATCH).take(2) {
        embed(enc, chunk)?;
    }
    let mut rates = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        let t = Instant::now();
        for chunk in refs.chunks(BATCH) {
            embed(enc, chunk)?;
        }
        rates.push(refs.len() as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let rate = rates[PASSES / 2];

    for i in 0..WARMUP {
        embed(enc, &refs[i % refs.len()..][..1])?;
    }
    let mut lat = Vec::with_capacity(SINGLE_CALLS);
    for i in 0..SINGLE_CALLS {
        let one = &refs[i % refs.len()..][..1];
        let t = Instant::now();
        embed(enc, one)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);

    let round = |x: f64, digits: i32| (x * 10f64.powi(digits)).round() / 10f64.powi(digits);
    println!(
        "{}",
        json!({
            "engine": format!("infermesh-{engine}"),
            "ort_version": engine.starts_with("onnxruntime").then_some(infermesh_text::onnx::ONNXRUNTIME_VERSION),
            "openvino_version": engine.starts_with("openvino").then_some(infermesh_text::openvino::OPENVINO_VERSION),
            "graph": match engine {
                "candle" => "candle-bert-f32",
                "onnxruntime-int8" => "infermesh-export-int8-dynamic",
                "openvino-bf16" => "infermesh-export-f32-run-bf16",
                _ => "infermesh-export-f32",
            },
            "threads": threads,
            "batch32_sentences_per_s_median": round(rate, 2),
            "single_p50_ms": round(nearest_rank(&lat, 0.50), 3),
            "single_p99_ms": round(nearest_rank(&lat, 0.99), 3),
            "min_cosine_vs_reference": round(f64::from(worst), 9),
        })
    );
    Ok(())
}
