//! Skill-extraction evaluation on hand-labelled Google job postings.
//!
//! Reads `$INFERMESH_DATA/job-postings-google/job_skills.csv` (default `INFERMESH_DATA=../shared/data`) and the
//! labels in `models/resume/data/skills_labeled.tsv` (row index, company, title, skills), joins them by row index
//! (checking the title), runs the built-in matcher (exact pass; no embedder here) over the postings' "Minimum
//! Qualifications" and "Preferred Qualifications" text, and prints micro-averaged precision / recall / F1 as JSON.
//!
//! `cargo run -p infermesh-resume --example eval_skills --release [-- --details]`

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use infermesh_resume::{EvalExample, SkillMatcher, evaluate};

const LABELS: &str = include_str!("../data/skills_labeled.tsv");

fn main() -> anyhow::Result<()> {
    let details = std::env::args().any(|a| a == "--details");
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

    let matcher = SkillMatcher::builtin()?;
    let report = evaluate(&matcher, &examples)?;
    let (tp, fp, fnn) = report.per_example.iter().fold((0, 0, 0), |(a, b, c), e| {
        (
            a + e.true_positives.len(),
            b + e.false_positives.len(),
            c + e.false_negatives.len(),
        )
    });
    let mut out = serde_json::json!({
        "postings": report.examples,
        "text": "Minimum Qualifications + Preferred Qualifications",
        "matcher": "exact (built-in taxonomy, no embedder)",
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fnn,
    });
    if details {
        out["per_example"] = serde_json::to_value(&report.per_example)?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
