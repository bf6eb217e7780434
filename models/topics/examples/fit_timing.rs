//! Times `TopicModel::fit` and `transform` on synthetic 384-d embeddings:
//! `cargo run --release -p infermesh-topics --example fit_timing -- N` (default 20000).
//! Prints the seconds of each stage's caller-visible step (fit, transform of 1,000 rows).

use std::time::Instant;

use anyhow::Result;
use infermesh_topics::{Matrix, TopicModel, TopicParams};

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

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(20_000), |a| a.parse())?;
    let (texts, emb) = data(n, 384, 40, 7);
    let t = Instant::now();
    let model = TopicModel::fit(&texts, &emb, &TopicParams::default())?;
    println!(
        "fit {n} x 384: {:.1} s, {} topics",
        t.elapsed().as_secs_f64(),
        model.n_topics()
    );
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
