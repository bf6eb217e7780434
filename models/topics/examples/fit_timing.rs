//! Times `TopicModel::fit` and `transform` on synthetic 384-d embeddings:
//! `cargo run --release -p infermesh-topics --example fit_timing -- N` (default 20000), or
//! `-- FILE.npy` for a float32 `.npy` of embeddings (e.g. `train topics --save-embeddings`).
//! Prints the seconds of each stage's caller-visible step (fit, transform of 1,000 rows).
//! Environment: `SEED` (UMAP seed, default 42), `EPOCHS` and `NEG` (UMAP `n_epochs` and
//! `negative_sample_rate`), `ASSIGN=FILE` (writes the training topics, one per row under a
//! `topic` header, for `bench/topics_peer.py score`), `TEXTS=FILE` (the documents of a `.npy`,
//! one per line; otherwise short made-up ones), `UMAP_ONLY=1` (also times UMAP's fit alone).
//! Prints an FNV-1a hash of the layout's bits, so that a change meant to keep the layout
//! can be checked.

use std::time::Instant;

use anyhow::Result;
use infermesh_topics::{Matrix, TopicModel, TopicParams, Umap};

/// SplitMix64 draws for the fixture.
fn draw(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn data(n: usize, dim: usize, topics: usize, seed: u64) -> (Vec<String>, Matrix) {
    let mut s = 1u64;
    let centres: Vec<f32> = (0..topics * dim).map(|_| draw(&mut s) * 4.0).collect();
    let mut s = seed;
    let mut rows = Vec::with_capacity(n * dim);
    let mut texts = Vec::with_capacity(n);
    for i in 0..n {
        let t = i % topics;
        rows.extend((0..dim).map(|d| centres[t * dim + d] + draw(&mut s) * 3.0));
        texts.push(format!("word{t} term{t} other{} common text", i % 7));
    }
    (
        texts,
        Matrix::new(n, dim, rows).unwrap_or_else(|_| unreachable!()),
    )
}

/// A float32 C-order 2-d `.npy` (what `train topics --save-embeddings` writes).
fn read_npy(path: &str) -> Result<Matrix> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(bytes.starts_with(b"\x93NUMPY"), "{path}: not a .npy");
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + header_len])?;
    anyhow::ensure!(
        header.contains("'<f4'") && header.contains("False"),
        "{path}: {header}"
    );
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow::anyhow!("{path}: no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(dims.len() == 2, "{path}: shape {shape}");
    let values = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Matrix::new(dims[0], dims[1], values)?)
}

fn main() -> Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "20000".into());
    let (texts, emb) = if arg.ends_with(".npy") {
        let emb = read_npy(&arg)?;
        let texts: Vec<String> = match std::env::var("TEXTS") {
            Ok(path) => std::fs::read_to_string(path)?
                .lines()
                .map(str::to_string)
                .collect(),
            Err(_) => (0..emb.rows())
                .map(|i| format!("text{} common", i % 50))
                .collect(),
        };
        anyhow::ensure!(texts.len() == emb.rows(), "{} texts", texts.len());
        (texts, emb)
    } else {
        data(arg.parse()?, 384, 40, 7)
    };
    let n = emb.rows();
    let t = Instant::now();
    let mut params = TopicParams::default();
    params.umap.seed = std::env::var("SEED").map_or(Ok(42), |v| v.parse())?;
    if let Ok(v) = std::env::var("EPOCHS") {
        params.umap.n_epochs = Some(v.parse()?);
    }
    if let Ok(v) = std::env::var("NEG") {
        params.umap.negative_sample_rate = v.parse()?;
    }
    let model = TopicModel::fit(&texts, &emb, &params)?;
    println!(
        "fit {n} x 384: {:.1} s, {} topics",
        t.elapsed().as_secs_f64(),
        model.n_topics()
    );
    // FNV-1a over the layout's bits: a change that must keep the layout shows the same value.
    let layout = model
        .umap()
        .embedding_slice()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
            (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3)
        });
    println!("layout fnv {layout:016x}");
    if std::env::var("UMAP_ONLY").is_ok() {
        let t = Instant::now();
        Umap::fit(&emb, &params.umap)?;
        println!("umap alone: {:.2} s", t.elapsed().as_secs_f64());
    }
    if let Ok(path) = std::env::var("ASSIGN") {
        let mut csv = String::from("topic\n");
        for t in model.document_topics() {
            csv.push_str(&format!("{t}\n"));
        }
        std::fs::write(path, csv)?;
    }
    let (new_texts, new_emb) = data(1000, 384, 40, 8);
    let t = Instant::now();
    let (topics, _) = model.transform(Some(&new_texts), &new_emb)?;
    let outliers = topics.iter().filter(|&&t| t < 0).count();
    println!(
        "transform 1000: {:.2} s, {outliers} outliers",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
