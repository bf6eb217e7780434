//! The sample review models `infermesh up` writes, trained end to end on the generated
//! reviews with all-MiniLM-L6-v2 (from the model cache `scripts/test.sh` fills): both are
//! written as servable models, the topic model finds the themes, the sentiment classifier
//! learns the labels, and a second call writes nothing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use infermesh_topics::{LoadLimits, TopicModel};
use infermesh_training::categorizer::TrainingReport;
use infermesh_training::sample_reviews::{
    SAMPLE_MIN_TOPIC_SIZE, sample_reviews, write_sample_review_models,
};

/// all-MiniLM-L6-v2 in the model cache (`INFERMESH_MODEL_CACHE`, else
/// `~/.cache/infermesh/models`).
fn minilm_dir() -> PathBuf {
    let cache = match std::env::var_os("INFERMESH_MODEL_CACHE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/infermesh/models"),
    };
    let dir = cache.join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not in {}: run scripts/test.sh (it fetches the weights once)",
        dir.display()
    );
    dir
}

#[test]
fn writes_a_topic_and_a_sentiment_model_that_learned_the_sample_once() {
    let repo = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let written = write_sample_review_models(repo.path(), &minilm_dir(), false).unwrap();
    eprintln!(
        "sample review models trained in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(written, ["topics", "sentiment"]);

    // Servable: the repository's config.toml per model, the version beside it, nothing left
    // from staging.
    let topics_config = std::fs::read_to_string(repo.path().join("topics/config.toml")).unwrap();
    assert!(
        topics_config.contains("platform = \"topics\""),
        "{topics_config}"
    );
    let sentiment_config =
        std::fs::read_to_string(repo.path().join("sentiment/config.toml")).unwrap();
    assert!(
        sentiment_config.contains("platform = \"sentiment\"")
            && sentiment_config.contains("[llm]\nenabled = false\nmodel = \"smollm2:135m\""),
        "{sentiment_config}"
    );
    for f in [
        "topics/1/topics.json",
        "topics/1/topics.safetensors",
        "topics/1/embedder/model.safetensors",
        "topics/1/training_report.json",
        "sentiment/1/config.json",
        "sentiment/1/model.safetensors",
        "sentiment/1/tokenizer.json",
        "sentiment/1/training_report.json",
    ] {
        assert!(repo.path().join(f).is_file(), "{f} missing");
    }
    for name in ["topics", "sentiment"] {
        let entries: Vec<String> = std::fs::read_dir(repo.path().join(name))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            entries.iter().all(|e| e == "1" || e == "config.toml"),
            "{name}: {entries:?}"
        );
    }

    // The topic model found the themes: at least three topics, and the training reviews'
    // topics are mostly of one theme each (purity over the reviews not left as outliers).
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.path().join("topics/1/training_report.json")).unwrap(),
    )
    .unwrap();
    let reviews = sample_reviews();
    assert_eq!(report["documents"], reviews.len());
    assert_eq!(
        report["params"]["hdbscan"]["min_cluster_size"],
        SAMPLE_MIN_TOPIC_SIZE
    );
    let n_topics = report["topics"].as_u64().unwrap();
    let model = TopicModel::load(&repo.path().join("topics/1"), &LoadLimits::default()).unwrap();
    assert_eq!(model.n_topics() as u64, n_topics);
    let doc_topics = model.document_topics();
    assert_eq!(doc_topics.len(), reviews.len());
    let mut per_topic: BTreeMap<i64, BTreeMap<&str, usize>> = BTreeMap::new();
    for (t, r) in doc_topics.iter().zip(&reviews) {
        if *t >= 0 {
            *per_topic.entry(*t).or_default().entry(r.theme).or_default() += 1;
        }
    }
    let assigned: usize = per_topic.values().flat_map(|m| m.values()).sum();
    let majority: usize = per_topic
        .values()
        .map(|m| m.values().copied().max().unwrap_or(0))
        .sum();
    let purity = majority as f64 / assigned as f64;
    let outlier_share = 1.0 - assigned as f64 / reviews.len() as f64;
    eprintln!(
        "topics: {n_topics}, purity {purity:.3}, outliers {:.1}%, {per_topic:?}; embedding {:.1} s, fit {:.1} s",
        100.0 * outlier_share,
        report["embed_seconds"].as_f64().unwrap_or(f64::NAN),
        report["fit_seconds"].as_f64().unwrap_or(f64::NAN),
    );
    assert!(n_topics >= 3, "{report}");
    assert!(purity >= 0.8, "purity {purity}: {per_topic:?}");
    assert!(outlier_share <= 0.3, "outliers {outlier_share}: {report}");

    // The sentiment classifier learned the labels: its accuracy on the held-out validation
    // rows (the trainer's own report).
    let sentiment: TrainingReport = serde_json::from_slice(
        &std::fs::read(repo.path().join("sentiment/1/training_report.json")).unwrap(),
    )
    .unwrap();
    eprintln!(
        "sentiment: validation accuracy {:.3}, macro-F1 {:.3} on {} rows, {:.1} s; {:?}",
        sentiment.validation_accuracy,
        sentiment.validation_macro_f1,
        sentiment.validation_rows,
        sentiment.elapsed_seconds,
        sentiment.lexical
    );
    assert_eq!(
        sentiment.label_counts.keys().collect::<Vec<_>>(),
        ["negative", "positive"]
    );
    assert!(sentiment.validation_rows >= 30, "{sentiment:?}");
    assert!(sentiment.validation_accuracy >= 0.9, "{sentiment:?}");

    // A second call finds both models and writes nothing.
    let stamp = |p: &str| {
        std::fs::metadata(repo.path().join(p))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = (
        stamp("topics/config.toml"),
        stamp("sentiment/1/model.safetensors"),
    );
    assert!(
        write_sample_review_models(repo.path(), &minilm_dir(), false)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        before,
        (
            stamp("topics/config.toml"),
            stamp("sentiment/1/model.safetensors")
        )
    );

    // A model whose config.toml is missing (a run stopped before the end) is trained again,
    // the other left alone; a leftover version folder is replaced.
    std::fs::remove_file(repo.path().join("sentiment/config.toml")).unwrap();
    std::fs::write(
        repo.path().join("sentiment/1/stale.txt"),
        "from a stopped run",
    )
    .unwrap();
    let again = write_sample_review_models(repo.path(), &minilm_dir(), false).unwrap();
    assert_eq!(again, ["sentiment"]);
    assert!(repo.path().join("sentiment/config.toml").is_file());
    assert!(!repo.path().join("sentiment/1/stale.txt").exists());
    assert_eq!(stamp("topics/config.toml"), before.0);
}
