//! The sample review models `infermesh up` serves on a fresh machine: a topic model
//! (platform `topics`) and a sentiment classifier (platform `sentiment`), trained when the
//! sample repository is written, on product reviews this module generates.
//!
//! Why generated: a fresh machine has nothing but the all-MiniLM-L6-v2 weights in the model
//! cache, and the review data sets we evaluate on may not be copied into the project (their
//! licences). So the reviews are composed from templates written here, as the sample fraud
//! model and recommenders are: five product-review themes ([`THEMES`]: battery life, delivery,
//! screen, customer support, clothes sizing), each with subjects × positive and negative
//! predicates, a neutral opener and a closer that carries the sentiment. Every sentence names
//! its theme in its own words, so MiniLM embeddings cluster by theme and the topic model finds
//! the themes; every predicate says how the buyer feels, so a classifier can learn the label.
//! 160 reviews (32 per theme, 16 per label) keep training to seconds in a release build.
//!
//! [`write_sample_review_models`] trains each model with the project's own trainers
//! ([`crate::topics`], [`crate::sentiment`]) into a staging folder inside the model's
//! directory, renames it to version `1`, and writes the model's `config.toml` last: a model
//! directory without one is never picked up, so an interrupted run leaves nothing served.
//!
//! These are toy models for trying the platform: they know five themes and two labels, in
//! the sample's words. Train real ones with `infermesh train topics` / `train sentiment`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::categorizer::CategorizerError;
use crate::sentiment::TrainSentimentArgs;
use crate::topics::{TopicsJobError, TrainTopicsArgs};

/// One generated review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleReview {
    /// The review as a buyer would write it.
    pub text: String,
    /// `"negative"` or `"positive"`.
    pub sentiment: &'static str,
    /// The product-review theme it is about (a name in [`THEMES`]).
    pub theme: &'static str,
}

/// A theme's templates: subjects, and predicates that complete any subject.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// The theme's name (the `theme` column of the sample).
    pub name: &'static str,
    /// What the review is about, capitalised, singular (each predicate completes each).
    pub subjects: [&'static str; 4],
    /// Praise.
    pub positive: [&'static str; 4],
    /// Complaints.
    pub negative: [&'static str; 4],
}

/// The five themes of the sample.
pub const THEMES: [Theme; 5] = [
    Theme {
        name: "battery",
        subjects: [
            "The battery",
            "Battery life",
            "The battery on this phone",
            "This laptop's battery",
        ],
        positive: [
            "lasts two full days on a single charge",
            "easily gets me through a long workday with power to spare",
            "recharges to full in under an hour and holds the charge well",
            "is excellent, I rarely need to plug in the charger",
        ],
        negative: [
            "drains to zero before lunch even with light use",
            "dies within a few hours and takes forever to recharge",
            "is terrible, I have to carry the charger everywhere",
            "barely holds a charge after a few weeks",
        ],
    },
    Theme {
        name: "delivery",
        subjects: ["The delivery", "My order", "The parcel", "The package"],
        positive: [
            "arrived two days ahead of schedule and well packed",
            "came quickly, with tracking updates at every step of the shipping",
            "showed up on time and the box was in perfect condition",
            "was delivered the next morning, impressively fast shipping",
        ],
        negative: [
            "arrived three weeks late in a crushed box",
            "got lost in transit and the tracking never updated",
            "was left in the rain at the wrong address by the courier",
            "took forever to ship and came damaged",
        ],
    },
    Theme {
        name: "screen",
        subjects: [
            "The screen",
            "The display",
            "This monitor's panel",
            "The touchscreen",
        ],
        positive: [
            "is bright and sharp with vivid colours",
            "looks crisp and readable even in direct sunlight",
            "has great contrast and not a single dead pixel",
            "shows deep blacks and smooth motion at a high refresh rate",
        ],
        negative: [
            "is dim and washed out, unreadable outdoors",
            "arrived with dead pixels and backlight bleed",
            "flickers constantly and the colours look wrong",
            "cracked after a small drop and the glare is awful",
        ],
    },
    Theme {
        name: "support",
        subjects: [
            "Customer support",
            "The support team",
            "Customer service",
            "The help desk",
        ],
        positive: [
            "answered my question within minutes and solved the problem",
            "was friendly and sent a replacement right away",
            "handled my refund request quickly and politely",
            "patiently walked me through the fix on the phone",
        ],
        negative: [
            "never replied to my emails about the refund",
            "kept me on hold for an hour and then hung up on me",
            "was rude and refused to help with my warranty claim",
            "gave me the runaround and closed my ticket unresolved",
        ],
    },
    Theme {
        name: "sizing",
        subjects: ["This jacket", "The dress", "This shirt", "The sweater"],
        positive: [
            "fits perfectly and the size chart was accurate",
            "is true to size and comfortable around the shoulders",
            "fits like it was tailored, I ordered my usual size",
            "has a great fit and the sleeve length is just right",
        ],
        negative: [
            "runs two sizes too small and is tight across the chest",
            "is far too big even though I ordered my usual size",
            "fits badly and the sleeves are way too long",
            "shrank a full size after one wash and no longer fits",
        ],
    },
];

/// Openers, neutral as to sentiment.
const OPENERS: [&str; 4] = ["", "Honestly, ", "In short, ", "Update: "];
/// Closers carrying the sentiment.
const POSITIVE_CLOSERS: [&str; 4] = [".", "!", ". Very happy with it.", ". Would recommend."];
const NEGATIVE_CLOSERS: [&str; 4] = [".", "!", ". Very disappointed.", ". Would not buy again."];

/// Reviews per theme: every subject with every predicate of each label.
pub const REVIEWS_PER_THEME: usize = 32;

/// The sample reviews, deterministic: per theme, each subject with each positive and each
/// negative predicate (an opener and a closer chosen by position), themes interleaved.
pub fn sample_reviews() -> Vec<SampleReview> {
    let mut out = Vec::with_capacity(THEMES.len() * REVIEWS_PER_THEME);
    for i in 0..REVIEWS_PER_THEME {
        let positive = i % 2 == 0;
        let (s, p) = ((i / 2) % 4, (i / 8) % 4);
        for (t, theme) in THEMES.iter().enumerate() {
            let (predicates, closers, label) = if positive {
                (&theme.positive, &POSITIVE_CLOSERS, "positive")
            } else {
                (&theme.negative, &NEGATIVE_CLOSERS, "negative")
            };
            let opener = OPENERS[(s + p + t) % 4];
            let closer = closers[(s + 2 * p + t) % 4];
            let subject = theme.subjects[s];
            let subject = if opener.is_empty() {
                subject.to_string()
            } else {
                lowercase_first(subject)
            };
            out.push(SampleReview {
                text: format!("{opener}{subject} {}{closer}", predicates[p]),
                sentiment: label,
                theme: theme.name,
            });
        }
    }
    out
}

/// `subject` with its first letter lower-cased (it follows an opener; no subject starts
/// with a name).
fn lowercase_first(subject: &str) -> String {
    let mut chars = subject.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Writes the sample as CSV (columns `text`, `sentiment`, `theme`, a header row) to `path`.
pub fn write_sample_csv(path: &Path) -> Result<(), SampleModelsError> {
    let io = |e: std::io::Error| SampleModelsError::io(path, e);
    let mut w = csv::Writer::from_path(path).map_err(|e| io(e.into()))?;
    w.write_record(["text", "sentiment", "theme"])
        .map_err(|e| io(e.into()))?;
    for r in sample_reviews() {
        w.write_record([r.text.as_str(), r.sentiment, r.theme])
            .map_err(|e| io(e.into()))?;
    }
    w.flush().map_err(io)
}

/// Why the sample review models could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SampleModelsError {
    /// The sentence encoder is not where it was looked for.
    #[error(
        "all-MiniLM-L6-v2 is not in {0} (no model.safetensors): fetch it into the model cache (scripts/fetch_models.sh)"
    )]
    MissingEncoder(PathBuf),
    /// A file or folder could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Training the topic model failed.
    #[error("sample topic model: {0}")]
    Topics(#[from] TopicsJobError),
    /// The flags given to a trainer were refused (a bug here, not a user's error).
    #[error("sample {job} model's flags: {reason}")]
    Flags {
        /// `topics` or `sentiment`.
        job: &'static str,
        /// clap's message.
        reason: String,
    },
    /// Training the sentiment classifier failed.
    #[error("sample sentiment model: {0}")]
    Sentiment(#[from] CategorizerError),
}

impl SampleModelsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        SampleModelsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The topic model's repository config.
const TOPICS_CONFIG: &str = "# Sample topic model (UMAP, HDBSCAN, c-TF-IDF on all-MiniLM-L6-v2 embeddings) of\n\
# generated product reviews: battery, delivery, screen, support, sizing.\n\
platform = \"topics\"\n";

/// The sentiment model's repository config: the local classifier answers; the LLM zero-shot
/// path is named but off, as `infermesh up` runs no LLM unless asked.
const SENTIMENT_CONFIG: &str = "# Sample sentiment classifier (probe on all-MiniLM-L6-v2 + TF-IDF head) of generated\n\
# product reviews, labels negative / positive.\n\
platform = \"sentiment\"\n\
\n\
[llm]\n\
enabled = false\n\
model = \"smollm2:135m\"\n";

/// The sample models, in the order they are written.
pub const SAMPLE_REVIEW_MODELS: [&str; 2] = ["topics", "sentiment"];

/// Trains one sample model: `(data, minilm, out, progress)`.
type Trainer = fn(&Path, &Path, &Path, bool) -> Result<(), SampleModelsError>;

/// Each sample model's trainer and repository config, in [`SAMPLE_REVIEW_MODELS`]' order.
const TRAINERS: [(Trainer, &str); 2] = [
    (train_topics, TOPICS_CONFIG),
    (train_sentiment, SENTIMENT_CONFIG),
];

/// Smallest topic of the sample topic model: a theme has 32 reviews, so a theme is one topic
/// while a label within a theme (16) can still be one.
pub const SAMPLE_MIN_TOPIC_SIZE: usize = 10;

/// Writes the sample topic model (`topics`) and sentiment model (`sentiment`) into the
/// model repository `repo`, each unless present (`repo/<name>/config.toml` exists), trained
/// on [`sample_reviews`] with the sentence encoder in `minilm` (all-MiniLM-L6-v2: the topic
/// model's embedder, the classifier's base). Progress bars on stderr when `progress`. Returns
/// the names written.
pub fn write_sample_review_models(
    repo: &Path,
    minilm: &Path,
    progress: bool,
) -> Result<Vec<String>, SampleModelsError> {
    let todo: Vec<(&str, (Trainer, &str))> = SAMPLE_REVIEW_MODELS
        .into_iter()
        .zip(TRAINERS)
        .filter(|(name, _)| !repo.join(name).join("config.toml").exists())
        .collect();
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    if !minilm.join("model.safetensors").is_file() {
        return Err(SampleModelsError::MissingEncoder(minilm.to_path_buf()));
    }
    let data_dir = tempfile::tempdir().map_err(|e| SampleModelsError::io(repo, e))?;
    let data = data_dir.path().join("sample_reviews.csv");
    write_sample_csv(&data)?;
    let mut written = Vec::new();
    for (name, (train, config)) in todo {
        let model_dir = repo.join(name);
        std::fs::create_dir_all(&model_dir).map_err(|e| SampleModelsError::io(&model_dir, e))?;
        // Trained into a staging folder beside the version, removed if training fails: a
        // version never mixes two runs' files, and a process killed half-way leaves a
        // `.staging-*` folder and no config.toml.
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&model_dir)
            .map_err(|e| SampleModelsError::io(&model_dir, e))?;
        let out = staging.path().join("1");
        train(&data, minilm, &out, progress)?;
        let version = model_dir.join("1");
        if version.exists() {
            // Left by an earlier run that stopped before its config.toml: not a model yet.
            std::fs::remove_dir_all(&version).map_err(|e| SampleModelsError::io(&version, e))?;
        }
        std::fs::rename(&out, &version).map_err(|e| SampleModelsError::io(&version, e))?;
        // The config goes last: a half-written model directory is never picked up.
        let path = model_dir.join("config.toml");
        std::fs::write(&path, config).map_err(|e| SampleModelsError::io(&path, e))?;
        written.push(name.to_string());
    }
    Ok(written)
}

/// Parses `argv` (the subcommand's name first) into a job's flags, as the command line
/// would: the sample models get exactly the defaults `infermesh train ...` has.
fn parse_flags<T: clap::Args>(
    job: &'static str,
    argv: Vec<OsString>,
) -> Result<T, SampleModelsError> {
    let flags = |e: clap::Error| SampleModelsError::Flags {
        job,
        reason: e.to_string(),
    };
    let matches = T::augment_args(clap::Command::new(job))
        .try_get_matches_from(std::iter::once(OsString::from(job)).chain(argv))
        .map_err(flags)?;
    T::from_arg_matches(&matches).map_err(flags)
}

/// `infermesh train topics --data DATA --text-column text --embedder MINILM --out OUT
/// --min-topic-size 10` (the other flags as their defaults).
fn train_topics(
    data: &Path,
    minilm: &Path,
    out: &Path,
    progress: bool,
) -> Result<(), SampleModelsError> {
    let min_topic_size = SAMPLE_MIN_TOPIC_SIZE.to_string();
    let args: TrainTopicsArgs = parse_flags(
        "topics",
        vec![
            "--data".into(),
            data.into(),
            "--text-column".into(),
            "text".into(),
            "--embedder".into(),
            minilm.into(),
            "--out".into(),
            out.into(),
            "--min-topic-size".into(),
            min_topic_size.into(),
        ],
    )?;
    args.train(progress)?;
    Ok(())
}

/// `infermesh train sentiment --data DATA --text-column text --label-column sentiment
/// --base MINILM --out OUT --val-fraction 0.2` (the other flags as their defaults: the probe
/// on the frozen encoder blended with the TF-IDF head, no fine-tuning).
fn train_sentiment(
    data: &Path,
    minilm: &Path,
    out: &Path,
    progress: bool,
) -> Result<(), SampleModelsError> {
    let args: TrainSentimentArgs = parse_flags(
        "sentiment",
        vec![
            "--data".into(),
            data.into(),
            "--text-column".into(),
            "text".into(),
            "--label-column".into(),
            "sentiment".into(),
            "--base".into(),
            minilm.into(),
            "--out".into(),
            out.into(),
            // 32 validation rows rather than 16: the reported accuracy is less coarse. The
            // kept probe and lexical head are refitted on every row all the same.
            "--val-fraction".into(),
            "0.2".into(),
        ],
    )?;
    let mut params = args.resolved().into_params()?;
    params.progress = progress;
    let cfg = params.check().map_err(CategorizerError::from)?;
    crate::categorizer::train(&cfg)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    #[test]
    fn the_sample_is_deterministic_and_distinct() {
        let a = sample_reviews();
        assert_eq!(a, sample_reviews());
        assert_eq!(a.len(), THEMES.len() * REVIEWS_PER_THEME);
        let texts: HashSet<&str> = a.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts.len(), a.len(), "every review is a different text");
        assert!(
            a[0].text.starts_with("The battery lasts two full days"),
            "{:?}",
            a[0]
        );
        // Openers lower-case the subject; sentences end with a closer.
        assert!(a.iter().any(|r| r.text.starts_with("Honestly, the ")));
        assert!(a.iter().all(|r| r.text.ends_with(['.', '!'])));
    }

    #[test]
    fn every_theme_has_both_labels_in_equal_numbers() {
        let reviews = sample_reviews();
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for r in &reviews {
            assert!(["negative", "positive"].contains(&r.sentiment), "{r:?}");
            *counts.entry((r.theme, r.sentiment)).or_default() += 1;
        }
        assert_eq!(counts.len(), 10, "{counts:?}");
        assert!(
            counts.values().all(|&n| n == REVIEWS_PER_THEME / 2),
            "{counts:?}"
        );
        // Each predicate is used with each subject once: the wording varies within a theme.
        for theme in THEMES {
            for p in theme.positive.iter().chain(&theme.negative) {
                let uses = reviews.iter().filter(|r| r.text.contains(p)).count();
                assert_eq!(uses, 4, "{p}");
            }
            for s in theme.subjects {
                // "The battery" is the start of "The battery on this phone": a subject is
                // counted where its predicate follows it.
                let lower = lowercase_first(s);
                let uses = reviews
                    .iter()
                    .filter(|r| {
                        theme.positive.iter().chain(&theme.negative).any(|p| {
                            r.text.starts_with(&format!("{s} {p}"))
                                || r.text.contains(&format!("{lower} {p}"))
                        })
                    })
                    .count();
                assert_eq!(uses, 8, "{s}");
            }
        }
    }

    #[test]
    fn the_csv_holds_every_review_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reviews.csv");
        write_sample_csv(&path).unwrap();
        let mut r = csv::Reader::from_path(&path).unwrap();
        assert_eq!(
            r.headers().unwrap().iter().collect::<Vec<_>>(),
            ["text", "sentiment", "theme"]
        );
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        let sample = sample_reviews();
        assert_eq!(rows.len(), sample.len());
        for (row, want) in rows.iter().zip(&sample) {
            assert_eq!(
                (&row[0], &row[1], &row[2]),
                (want.text.as_str(), want.sentiment, want.theme)
            );
        }
    }

    #[test]
    fn nothing_is_trained_when_both_models_are_there_and_a_missing_encoder_is_named() {
        let repo = tempfile::tempdir().unwrap();
        let nowhere = repo.path().join("no-minilm");
        let e = write_sample_review_models(repo.path(), &nowhere, false).unwrap_err();
        assert!(matches!(e, SampleModelsError::MissingEncoder(_)), "{e}");
        assert!(e.to_string().contains("no-minilm"), "{e}");
        for name in SAMPLE_REVIEW_MODELS {
            std::fs::create_dir_all(repo.path().join(name)).unwrap();
            std::fs::write(repo.path().join(name).join("config.toml"), "").unwrap();
        }
        // Present models are not retrained, so the missing encoder is never looked at.
        assert!(
            write_sample_review_models(repo.path(), &nowhere, false)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_configs_name_their_platforms() {
        assert!(TOPICS_CONFIG.contains("platform = \"topics\"\n"));
        assert!(SENTIMENT_CONFIG.contains("platform = \"sentiment\"\n"));
        let llm = SENTIMENT_CONFIG.split("[llm]\n").nth(1).unwrap();
        assert!(llm.contains("enabled = false\n") && llm.contains("model = \"smollm2:135m\"\n"));
    }
}
