//! Skill-extraction evaluation on hand-labelled Google job postings.
//!
//! Reads `$INFERMESH_DATA/job-postings-google/job_skills.csv` (default `INFERMESH_DATA=../shared/data`) and the
//! labels in `models/resume/data/skills_labeled.tsv` (row index, company, title, skills), joins them by row index
//! (checking the title), runs the built-in matcher over the postings' "Minimum Qualifications" and "Preferred
//! Qualifications" text, and prints micro-averaged precision / recall / F1 as JSON.
//!
//! With `--embeddings DIR` (a sentence encoder such as all-MiniLM-L6-v2, run on ONNX Runtime when its library
//! loads, else candle) the near-miss pass runs too, and three rows are reported: exact only, exact + confident
//! similar spans, exact + every similar span (the `uncertain` ones included).
//!
//! `cargo run --release -p infermesh-resume --example eval_skills [-- --details] [--embeddings DIR]`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use infermesh_resume::{
    Embedder, EvalExample, EvalReport, MatchSource, SkillMatcher, evaluate_spans,
};
use infermesh_text::{OnnxOptions, OnnxTask, OnnxTextModel, SentenceEncoder, TextModel};

/// A text model as the matcher's embedder.
struct ModelEmbedder(Box<dyn TextModel>);

impl Embedder for ModelEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let ids = self.0.tokenize(texts).map_err(|e| e.to_string())?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let mut rows = self.0.forward_tokens(&refs).map_err(|e| e.to_string())?;
        rows.iter_mut().for_each(|r| infermesh_text::normalize(r));
        Ok(rows)
    }
}

fn row(name: &str, report: &EvalReport) -> serde_json::Value {
    let (tp, fp, fnn) = report.per_example.iter().fold((0, 0, 0), |(a, b, c), e| {
        (
            a + e.true_positives.len(),
            b + e.false_positives.len(),
            c + e.false_negatives.len(),
        )
    });
    serde_json::json!({
        "matcher": name,
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fnn,
    })
}

const LABELS: &str = include_str!("../data/skills_labeled.tsv");

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let details = args.iter().any(|a| a == "--details");
    let embeddings = args
        .iter()
        .position(|a| a == "--embeddings")
        .map(|i| {
            args.get(i + 1)
                .map(PathBuf::from)
                .context("--embeddings needs a directory")
        })
        .transpose()?;
    let data =
        PathBuf::from(std::env::var("INFERMESH_DATA").unwrap_or_else(|_| "../shared/data".into()));
    let path = data.join("job-postings-google").join("job_skills.csv");
    let mut reader =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == name)
            .with_context(|| format!("column {name} missing"))
    };
    let (title, minq, prefq) = (
        col("Title")?,
        col("Minimum Qualifications")?,
        col("Preferred Qualifications")?,
    );
    let mut rows: HashMap<usize, (String, String)> = HashMap::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec?;
        let text = format!(
            "{}\n{}",
            rec.get(minq).unwrap_or(""),
            rec.get(prefq).unwrap_or("")
        );
        rows.insert(i, (rec.get(title).unwrap_or("").to_owned(), text));
    }

    let mut examples = Vec::new();
    for line in LABELS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 4 {
            bail!("label line without 4 columns: {line}");
        }
        let row: usize = cols[0]
            .parse()
            .with_context(|| format!("row index in {line}"))?;
        let Some((t, text)) = rows.get(&row) else {
            bail!("row {row} not in {}", path.display())
        };
        if t != cols[2] {
            bail!(
                "row {row}: title {t:?} does not match the label file's {:?}",
                cols[2]
            );
        }
        let expected = cols[3]
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        examples.push(EvalExample {
            id: row.to_string(),
            text: text.clone(),
            expected,
        });
    }

    let exact = SkillMatcher::builtin()?;
    let exact_report = evaluate_spans(&exact, &examples, |_| true)?;
    let mut rows = vec![row("exact (built-in taxonomy)", &exact_report)];
    let mut out = serde_json::json!({
        "postings": exact_report.examples,
        "text": "Minimum Qualifications + Preferred Qualifications",
    });
    let mut detail_report = exact_report;
    if let Some(dir) = embeddings {
        let model: Box<dyn TextModel> =
            match OnnxTextModel::load(&dir, OnnxTask::Embedding, OnnxOptions::default()) {
                Ok(m) => Box::new(m),
                Err(e) => {
                    eprintln!("onnxruntime unavailable ({e}); embedding on candle");
                    Box::new(SentenceEncoder::load(&dir)?)
                }
            };
        let started = Instant::now();
        let matcher = SkillMatcher::builtin()?.with_embeddings(Arc::new(ModelEmbedder(model)))?;
        let index_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let confident = evaluate_spans(&matcher, &examples, |s| !s.uncertain)?;
        let all = evaluate_spans(&matcher, &examples, |_| true)?;
        let per_posting_ms = started.elapsed().as_secs_f64() * 1e3 / (2.0 * examples.len() as f64);
        let similar = examples.iter().try_fold(0usize, |n, ex| {
            matcher.extract(&ex.text).map(|spans| {
                n + spans
                    .iter()
                    .filter(|s| s.source == MatchSource::Similar)
                    .count()
            })
        })?;
        rows.push(row("exact + confident similar spans", &confident));
        rows.push(row("exact + all similar spans (uncertain included)", &all));
        out["embedder"] = dir.display().to_string().into();
        out["taxonomy_embedding_seconds"] = index_seconds.into();
        out["extract_ms_per_posting"] = per_posting_ms.into();
        out["similar_spans"] = similar.into();
        detail_report = confident;
    }
    out["results"] = rows.into();
    if details {
        out["per_example"] = serde_json::to_value(&detail_report.per_example)?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
