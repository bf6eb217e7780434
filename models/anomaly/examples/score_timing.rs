//! Times Isolation Forest scoring for bench/anomaly.sh: `score_timing ARTIFACT ROWS.csv`
//! (a header, then numeric rows in the artifact's feature order). Prints one JSON line: the
//! median seconds of scoring one row (`score_row`, over 2,000 calls) and of scoring 100,000
//! rows (the CSV's rows repeated; `score_rows`) on one thread and on every thread (the rows
//! split across rayon's threads), medians of 5 runs each.

use std::time::Instant;

use anyhow::{Context, Result};
use infermesh_anomaly::{IsolationForest, LoadLimits};
use rayon::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let forest = IsolationForest::load(
        args.get(1).context("ARTIFACT")?.as_ref(),
        &LoadLimits::default(),
    )?;
    let text = std::fs::read_to_string(args.get(2).context("ROWS.csv")?)?;
    let f = forest.n_features();
    let mut rows: Vec<f32> = Vec::new();
    for line in text.lines().skip(1) {
        let vals: Vec<f32> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        anyhow::ensure!(
            vals.len() == f,
            "a row of {} values for {f} features",
            vals.len()
        );
        rows.extend(vals);
    }
    let n = rows.len() / f;
    anyhow::ensure!(n > 0, "no rows");
    let one: Vec<f64> = (0..2000)
        .map(|i| {
            let r = &rows[(i % n) * f..(i % n + 1) * f];
            let t = Instant::now();
            let s = forest.score_row(r).map(|s| s.score).unwrap_or(f64::NAN);
            std::hint::black_box(s);
            t.elapsed().as_secs_f64()
        })
        .collect();
    let big: Vec<f32> = (0..100_000)
        .flat_map(|i| rows[(i % n) * f..(i % n + 1) * f].iter().copied())
        .collect();
    let mut serial = Vec::new();
    let mut parallel = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut out = Vec::with_capacity(100_000);
        forest.score_rows(&big, &mut out)?;
        std::hint::black_box(&out);
        serial.push(t.elapsed().as_secs_f64());
        // As the server's batches: the rows split across the threads, each part scored by
        // score_rows.
        let t = Instant::now();
        let part = (100_000 / rayon::current_num_threads().max(1) + 1) * f;
        let parts: Vec<Vec<_>> = big
            .par_chunks(part)
            .map(|p| {
                let mut o = Vec::new();
                forest.score_rows(p, &mut o).map(|()| o)
            })
            .collect::<Result<_, _>>()?;
        std::hint::black_box(&parts);
        parallel.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"one_row_p50_seconds\": {}, \"rows_100k_seconds_1_thread\": {}, \"rows_100k_seconds_all_threads\": {}, \"threads\": {}}}",
        median(one),
        median(serial),
        median(parallel),
        rayon::current_num_threads()
    );
    Ok(())
}
