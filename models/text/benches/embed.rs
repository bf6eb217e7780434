//! Sentence-embedding throughput and latency of all-MiniLM-L6-v2 on candle (CPU): batches of
//! 32 ~12-word sentences, and one sentence. Needs the weights in $INFERMESH_MODEL_CACHE
//! (scripts/test.sh fetches them).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infermesh_text::SentenceEncoder;

fn model_dir() -> PathBuf {
    std::env::var("INFERMESH_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/infermesh/models")
        })
        .join("all-MiniLM-L6-v2")
}

const WORDS: [&str; 16] = [
    "payment",
    "card",
    "merchant",
    "engineer",
    "rust",
    "experience",
    "refund",
    "delivery",
    "quality",
    "service",
    "account",
    "transfer",
    "salary",
    "coffee",
    "hiking",
    "jacket",
];

fn sentence(i: usize) -> String {
    (0..12)
        .map(|j| WORDS[(i * 7 + j * 3) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench(c: &mut Criterion) {
    let enc = SentenceEncoder::load(&model_dir())
        .unwrap_or_else(|e| panic!("{e}: run scripts/test.sh first"));
    let batch: Vec<String> = (0..32).map(sentence).collect();
    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("minilm");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32));
    g.bench_function("embed_batch_32", |b| {
        b.iter(|| enc.embed(black_box(&refs)).ok())
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("embed_1", |b| {
        b.iter(|| enc.embed(black_box(&refs[..1])).ok())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
