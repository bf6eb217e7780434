//! The Rust side of `tools/bertopic_check.py`: fits TopicModel on the same texts and
//! embeddings BERTopic was fitted on and prints the agreement: topic count, ARI of the
//! training topics (against BERTopic and against the truth), keyword overlap of matched
//! topics, and transform of the held-out documents.
//!
//! `cargo run --release -p infermesh-topics --example bertopic_check -- DIR`

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use infermesh_topics::{Matrix, TopicModel, TopicParams, metrics::adjusted_rand_index};
use serde::Deserialize;

#[derive(Deserialize)]
struct Peer {
    truth: Vec<i64>,
    new_truth: Vec<i64>,
    topics: Vec<i64>,
    new_topics: Vec<i64>,
    keywords: HashMap<String, Vec<String>>,
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
        .collect::<Result<_, _>>()?;
    Ok(Matrix::from_rows(&rows)?)
}

fn lines(path: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::to_string)
        .collect())
}

/// For each of our topics, the peer topic most of its documents have.
fn matching(ours: &[i64], theirs: &[i64]) -> HashMap<i64, i64> {
    let mut votes: HashMap<i64, HashMap<i64, usize>> = HashMap::new();
    for (&a, &b) in ours.iter().zip(theirs) {
        *votes.entry(a).or_default().entry(b).or_default() += 1;
    }
    votes
        .into_iter()
        .map(|(a, v)| {
            (
                a,
                v.into_iter()
                    .max_by_key(|&(b, c)| (c, -b))
                    .map_or(-1, |x| x.0),
            )
        })
        .collect()
}

fn main() -> Result<()> {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        bail!("usage: bertopic_check DIR (written by tools/bertopic_check.py DIR)");
    };
    let peer: Peer = serde_json::from_str(&std::fs::read_to_string(dir.join("bertopic.json"))?)?;
    let texts = lines(&dir.join("texts.txt"))?;
    let embeddings = read_csv(&dir.join("embeddings.csv"))?;
    let new_texts = lines(&dir.join("new_texts.txt"))?;
    let new_embeddings = read_csv(&dir.join("new_embeddings.csv"))?;
    let t = Instant::now();
    let model = TopicModel::fit(&texts, &embeddings, &TopicParams::default())?;
    let fit_secs = t.elapsed().as_secs_f64();
    let ours = model.document_topics();
    println!(
        "fit {fit_secs:.2} s: {} topics, {} outliers (BERTopic: {} topics, {} outliers)",
        model.n_topics(),
        ours.iter().filter(|&&t| t == -1).count(),
        peer.keywords.keys().filter(|k| *k != "-1").count(),
        peer.topics.iter().filter(|&&t| t == -1).count()
    );
    println!(
        "training topics: ARI vs BERTopic {:.4}, vs truth {:.4} (BERTopic vs truth {:.4})",
        adjusted_rand_index(ours, &peer.topics),
        adjusted_rand_index(ours, &peer.truth),
        adjusted_rand_index(&peer.topics, &peer.truth)
    );
    let map = matching(ours, &peer.topics);
    let mut overlaps = Vec::new();
    for topic in model.topics().iter().filter(|t| t.id >= 0) {
        let theirs: HashSet<&str> = peer
            .keywords
            .get(&map[&topic.id].to_string())
            .map(|w| w.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let mine: HashSet<&str> = topic.keywords.iter().map(|k| k.0.as_str()).collect();
        overlaps.push(mine.intersection(&theirs).count());
        println!(
            "  {:<50} BERTopic topic {}: {}/10 keywords shared",
            topic.label,
            map[&topic.id],
            overlaps.last().unwrap_or(&0)
        );
    }
    let t = Instant::now();
    let (new_topics, _) = model.transform(Some(&new_texts), &new_embeddings)?;
    let tr_secs = t.elapsed().as_secs_f64();
    let same = new_topics
        .iter()
        .zip(&peer.new_topics)
        .filter(|(a, b)| map.get(a) == Some(b))
        .count();
    println!(
        "transform {} documents in {tr_secs:.3} s: {same} assigned to the matching BERTopic topic; ARI vs truth {:.4} (BERTopic {:.4})",
        new_topics.len(),
        adjusted_rand_index(&new_topics, &peer.new_truth),
        adjusted_rand_index(&peer.new_topics, &peer.new_truth)
    );
    Ok(())
}
