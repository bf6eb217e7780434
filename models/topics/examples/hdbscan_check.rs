//! The Rust side of `tools/hdbscan_check.py`: clusters the rows the script clustered with
//! the hdbscan library and prints the agreement of labels (adjusted Rand index and exact
//! matches) and probabilities, for the training rows and for `approximate_predict`.
//!
//! `cargo run --release -p infermesh-topics --example hdbscan_check -- DIR`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use infermesh_topics::{Hdbscan, HdbscanParams, metrics::adjusted_rand_index};

fn read(path: &Path) -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .with_context(|| path.display().to_string())
        })
        .collect()
}

fn flat(rows: &[Vec<f64>]) -> Vec<f32> {
    rows.iter().flatten().map(|&v| v as f32).collect()
}

fn column(rows: &[Vec<f64>]) -> Vec<f64> {
    rows.iter().map(|r| r[0]).collect()
}

fn main() -> Result<()> {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        bail!("usage: hdbscan_check DIR (written by tools/hdbscan_check.py DIR)");
    };
    let cases: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hdbscan_cases.json"))?)?;
    for name in cases {
        let f = |s: &str| dir.join(format!("{name}.{s}.csv"));
        let train = read(&f("train"))?;
        let dim = train[0].len();
        let t = Instant::now();
        let h = Hdbscan::fit(&flat(&train), dim, &HdbscanParams::default())?;
        let fit_secs = t.elapsed().as_secs_f64();
        let pred = h.approximate_predict(&flat(&read(&f("new"))?))?;
        let (labels, probs) = (
            column(&read(&f("labels"))?),
            column(&read(&f("probabilities"))?),
        );
        let (plabels, pprobs) = (
            column(&read(&f("predicted"))?),
            column(&read(&f("predicted_probabilities"))?),
        );
        let ours: Vec<i64> = h.labels().to_vec();
        let theirs: Vec<i64> = labels.iter().map(|&v| v as i64).collect();
        let same = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
        let prob_diff = h
            .probabilities()
            .iter()
            .zip(&probs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        let exact: Vec<i64> = column(&read(&f("exact_labels"))?)
            .iter()
            .map(|&v| v as i64)
            .collect();
        let exact_diff = h
            .probabilities()
            .iter()
            .zip(column(&read(&f("exact_probabilities"))?))
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        println!(
            "{name}: against hdbscan's exact algorithm=\"generic\": ARI {:.6}, max |prob diff| {exact_diff:.2e}",
            adjusted_rand_index(&ours, &exact)
        );
        let ours_p: Vec<i64> = pred.iter().map(|p| p.0).collect();
        let theirs_p: Vec<i64> = plabels.iter().map(|&v| v as i64).collect();
        let same_p = ours_p.iter().zip(&theirs_p).filter(|(a, b)| a == b).count();
        let pdiff = pred
            .iter()
            .zip(&pprobs)
            .map(|(a, b)| (a.1 - b).abs())
            .fold(0f64, f64::max);
        println!(
            "{name}: fit {fit_secs:.2} s, {} clusters (hdbscan {}); training labels ARI {:.4}, identical {same}/{}, max |prob diff| {prob_diff:.2e}; approximate_predict ARI {:.4}, identical {same_p}/{}, max |prob diff| {pdiff:.2e}",
            h.n_clusters(),
            theirs.iter().max().map_or(0, |m| m + 1),
            adjusted_rand_index(&ours, &theirs),
            ours.len(),
            adjusted_rand_index(&ours_p, &theirs_p),
            ours_p.len(),
        );
    }
    Ok(())
}
