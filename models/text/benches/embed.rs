//! Sentence-embedding throughput and latency of all-MiniLM-L6-v2 on candle (CPU): batches of
//! 32 ~12-word sentences, and one sentence. Needs the weights in $INFERMESH_MODEL_CACHE
//! (scripts/test.sh fetches them).
//!
//! Beside them, what a categoriser's lexical head adds per text (`lexical/blend_1`): TF-IDF
//! features of a bank-statement line and the blend into 44 logits, with a head the size of the
//! one fitted on the bank file (word 1-2 + `char_wb` 2-5 grams over ~360 lines, 44 labels),
//! fitted here on generated lines with arbitrary weights (the cost does not depend on them).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infermesh_text::SentenceEncoder;
use infermesh_text::lexical::{LexicalHead, TfIdf};

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

const MERCHANTS: [&str; 12] = [
    "WOOLWORTHS",
    "CHECKERS HYPER",
    "ENGEN QUICKSHOP",
    "UBER TRIP",
    "NETFLIX.COM",
    "VODACOM PREPAID",
    "PICK N PAY",
    "TAKEALOT",
    "MR PRICE",
    "DISCHEM PHARMACY",
    "SHELL ULTRA CITY",
    "SPOTIFY P0A1B2",
];
const PLACES: [&str; 6] = [
    "CAPE TOWN",
    "SANDTON",
    "DURBAN",
    "PRETORIA",
    "STELLENBOSCH",
    "ONLINE",
];

/// A bank-statement-like line: channel, merchant, place and a card or reference number.
fn statement_line(i: usize) -> String {
    let channel = ["POS PURCHASE", "DEBIT ORDER", "CARD PURCHASE", "EFT"][i % 4];
    format!(
        "{channel} {} {} {:04} REF{:06}",
        MERCHANTS[(i * 5) % MERCHANTS.len()],
        PLACES[(i * 7) % PLACES.len()],
        (i * 7919) % 10_000,
        (i * 104_729) % 1_000_000
    )
}

fn bench_lexical(c: &mut Criterion) {
    let lines: Vec<String> = (0..360).map(statement_line).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let tfidf = TfIdf::fit(TfIdf::default_blocks(), &refs).unwrap_or_else(|e| panic!("{e}"));
    let labels: Vec<String> = (0..44).map(|k| format!("label_{k}")).collect();
    let v = tfidf.len();
    let weight: Vec<f32> = (0..44 * v)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let head = LexicalHead::new(tfidf, labels, &weight, vec![0.0; 44], 0.5, Some(10.0))
        .unwrap_or_else(|e| panic!("{e}"));
    // Unseen lines: other numbers, the same merchants.
    let texts: Vec<String> = (1000..1032).map(statement_line).collect();
    let logits: Vec<f32> = (0..44).map(|k| k as f32 / 44.0).collect();
    let mut g = c.benchmark_group("lexical");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("blend_1 ({v} features, 44 labels)"), |b| {
        let mut i = 0;
        b.iter(|| {
            let mut row = logits.clone();
            head.blend(&mut row, black_box(&texts[i % texts.len()]));
            i += 1;
            row
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_lexical);
criterion_main!(benches);
