//! The Rust side of `tools/umap_check.py`: reads `cases.json` and the input CSVs the script
//! wrote into a folder, lays each case out with this crate's UMAP and writes
//! `<case>.rust.csv` (the layout) and `<case>.rust.json` (seconds).
//!
//! `cargo run --release -p infermesh-topics --example umap_check -- DIR`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use infermesh_topics::{Matrix, Metric, Umap, UmapParams};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    case: String,
    data: String,
    seed: u64,
    n_components: usize,
    min_dist: f32,
    metric: Metric,
}

fn read_csv(path: &Path) -> Result<Matrix> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let rows: Vec<Vec<f32>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse::<f32>())
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()
        .with_context(|| path.display().to_string())?;
    Ok(Matrix::from_rows(&rows)?)
}

fn main() -> Result<()> {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        bail!("usage: umap_check DIR (written by tools/umap_check.py prepare DIR)");
    };
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    for c in cases {
        let data = read_csv(&dir.join(&c.data))?;
        let params = UmapParams {
            n_components: c.n_components,
            min_dist: c.min_dist,
            metric: c.metric,
            seed: c.seed,
            ..UmapParams::default()
        };
        let t = Instant::now();
        let umap = Umap::fit(&data, &params)?;
        let secs = t.elapsed().as_secs_f64();
        let emb = umap.embedding();
        let mut out = String::new();
        for i in 0..emb.rows() {
            let row: Vec<String> = emb.row(i).iter().map(|v| format!("{v:.9e}")).collect();
            out.push_str(&row.join(","));
            out.push('\n');
        }
        std::fs::write(dir.join(format!("{}.rust.csv", c.case)), out)?;
        std::fs::write(
            dir.join(format!("{}.rust.json", c.case)),
            format!("{{\"seconds\": {secs}}}"),
        )?;
        println!("{}: {secs:.2} s", c.case);
    }
    Ok(())
}
