//! `infermesh train topics` and `infermesh eval topics`: a BERTopic-equivalent topic model
//! ([`infermesh_topics`]) fitted on a text column, and scored against known labels.
//!
//! Training embeds the texts with the sentence encoder in `--embedder` (candle, mean pooling
//! and L2 normalisation as sentence-transformers; batches sorted by length), or reads them
//! from `--embeddings` (a float32 `.npy`, one row per table row, as BERTopic's
//! `fit_transform(docs, embeddings)` takes them), fits the model, and writes a version
//! directory the server loads (platform `topics`): `topics.json` + `topics.safetensors`, a
//! copy of the encoder under `embedder/`, `config.toml` and `training_report.json`.
//!
//! Evaluation embeds a labelled table with the version's own `embedder/`, assigns topics with
//! `transform`, and reports the NMI and ARI of topics against labels (outliers counted as
//! one more cluster, as scikit-learn counts `-1`) and the outlier share.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use infermesh_text::SentenceEncoder;
use infermesh_topics::metrics::{adjusted_rand_index, normalized_mutual_info};
use infermesh_topics::{
    HdbscanParams, LoadLimits, Matrix, TopicError, TopicModel, TopicParams, UmapParams,
};
use serde::Serialize;

use crate::npy::{NpyError, read_f32_matrix, write_f32_matrix};
use crate::table::{TableError, TableSpec, parse_separator};

/// Errors of the topic jobs.
#[derive(Debug, thiserror::Error)]
pub enum TopicsJobError {
    /// The table could not be used.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The embeddings file could not be used.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// The topic model refused the data or parameters, or could not be saved or loaded.
    #[error(transparent)]
    Model(#[from] TopicError),
    /// The encoder could not be loaded or run.
    #[error("encoder: {0}")]
    Encoder(#[from] infermesh_text::TextError),
    /// Bad flags, data or files.
    #[error("{0}")]
    Invalid(String),
}

/// `--nr-topics` values: a number of topics (the outlier topic counted, as BERTopic counts
/// it) or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NrTopics {
    /// Merge to this many.
    Count(usize),
    /// BERTopic's `nr_topics="auto"`: merge the topics HDBSCAN groups.
    Auto,
}

fn parse_nr_topics(s: &str) -> Result<NrTopics, String> {
    match s {
        "auto" => Ok(NrTopics::Auto),
        _ => match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "'{s}' is neither a positive number of topics nor 'auto'"
            )),
            Ok(n) => Ok(NrTopics::Count(n)),
        },
    }
}

/// How the table is read (shared by train and eval).
#[derive(Debug, Clone, clap::Args)]
pub struct TopicsTable {
    /// The table (CSV, TSV or Parquet, read with Polars).
    #[arg(long)]
    pub data: PathBuf,
    /// Column holding the texts (an empty cell is an empty text).
    #[arg(long)]
    pub text_column: String,
    /// Field separator of text tables: one character or `tab`. Default: tab for .tsv/.tab
    /// files, comma otherwise (Parquet needs none).
    #[arg(long, value_parser = parse_separator)]
    pub separator: Option<u8>,
}

impl TopicsTable {
    fn spec(&self) -> TableSpec {
        TableSpec {
            path: self.data.clone(),
            separator: self.separator,
            has_header: true,
        }
    }
}

/// Flags of `infermesh train topics`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainTopicsArgs {
    /// The texts.
    #[command(flatten)]
    pub table: TopicsTable,
    /// The sentence encoder (Hugging Face / sentence-transformers layout, e.g.
    /// all-MiniLM-L6-v2: config.json, model.safetensors, tokenizer.json, 1_Pooling/). It
    /// embeds the texts (unless --embeddings) and is copied into the version as embedder/,
    /// so the server embeds requests the same way.
    #[arg(long)]
    pub embedder: PathBuf,
    /// Output: the model version directory, created (topics.json, topics.safetensors,
    /// embedder/, config.toml, training_report.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Precomputed embeddings: a float32 .npy of shape (rows of the table, the encoder's
    /// width), row i for the table's row i. Default: computed with --embedder.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Smallest topic (HDBSCAN's min_cluster_size, BERTopic's min_topic_size). Default 10.
    #[arg(long, default_value_t = 10)]
    pub min_topic_size: usize,
    /// HDBSCAN's min_samples. Default: --min-topic-size.
    #[arg(long)]
    pub min_samples: Option<usize>,
    /// Merge topics after fitting: a number of topics (the outlier topic counted), or `auto`
    /// (topics whose embeddings HDBSCAN groups are merged). Default: no merging.
    #[arg(long, value_parser = parse_nr_topics)]
    pub nr_topics: Option<NrTopics>,
    /// Seed of UMAP's fit (its transform keeps seed 42, umap-learn's transform_seed).
    /// Default 42.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// UMAP neighbours per row. Default 15 (BERTopic's).
    #[arg(long, default_value_t = 15)]
    pub n_neighbors: usize,
    /// UMAP layout dimensions. Default 5 (BERTopic's).
    #[arg(long, default_value_t = 5)]
    pub n_components: usize,
    /// UMAP min_dist. Default 0 (BERTopic's).
    #[arg(long, default_value_t = 0.0)]
    pub min_dist: f32,
    /// UMAP SGD epochs. Default: 500 up to 10,000 rows, else 200 (umap-learn's).
    #[arg(long)]
    pub n_epochs: Option<usize>,
    /// Keywords per topic. Default 10 (BERTopic's).
    #[arg(long, default_value_t = 10)]
    pub top_n_words: usize,
    /// Texts per forward pass of the encoder. Default 32.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Also write the embeddings fitted on to this float32 .npy (rows of the table, in
    /// order), to hand to --embeddings or to another topic model (e.g. BERTopic's
    /// `fit_transform(docs, embeddings)`).
    #[arg(long)]
    pub save_embeddings: Option<PathBuf>,
    /// Also write each table row's topic after fitting (and merging) to this CSV: a header
    /// `topic`, then one line per row in order, -1 for outliers.
    #[arg(long)]
    pub assignments: Option<PathBuf>,
}

/// What a training run reports (also written as `training_report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainTopicsReport {
    /// Texts fitted (rows of the table).
    pub documents: usize,
    /// Of which empty cells.
    pub empty_texts: usize,
    /// Embedding width.
    pub embedding_dim: usize,
    /// `"computed"` (with the encoder) or the `.npy` file read.
    pub embeddings: String,
    /// Topics found, the outlier topic not counted.
    pub topics: usize,
    /// Training documents left as outliers (topic -1).
    pub outliers: usize,
    /// Their share of the documents.
    pub outlier_share: f64,
    /// The parameters fitted with.
    pub params: TopicParams,
    /// `--nr-topics` as given (`null`, a number or `"auto"`).
    pub nr_topics: Option<String>,
    /// Seconds spent embedding (0 with --embeddings).
    pub embed_seconds: f64,
    /// Seconds spent fitting.
    pub fit_seconds: f64,
    /// Seconds in all.
    pub total_seconds: f64,
}

/// The texts of a table's column, empty cells as empty texts.
fn texts(table: &TopicsTable) -> Result<Vec<String>, TopicsJobError> {
    let t = table.spec().read()?;
    Ok(t.strings(&table.text_column)?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// Unit-length embeddings of `texts`, `batch` at a time in order of length (less padding),
/// with a progress bar when `progress`.
pub fn embed(
    encoder: &SentenceEncoder,
    texts: &[String],
    batch: usize,
    progress: bool,
) -> Result<Matrix, TopicsJobError> {
    let bar = if progress {
        let bar = ProgressBar::new(texts.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "embedding [{bar:30}] {pos}/{len} texts ({elapsed}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let dim = encoder.dim();
    let mut out = vec![0f32; texts.len() * dim];
    for chunk in order.chunks(batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        let rows = encoder.embed(&refs)?;
        for (&i, row) in chunk.iter().zip(rows) {
            out[i * dim..(i + 1) * dim].copy_from_slice(&row);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Matrix::new(texts.len(), dim, out)?)
}

fn io_error(path: &Path, e: std::io::Error) -> TopicsJobError {
    TopicsJobError::Invalid(format!("{}: {e}", path.display()))
}

/// Copies the encoder folder into `to` (files and sub-folders; links are followed).
fn copy_dir(from: &Path, to: &Path) -> Result<(), TopicsJobError> {
    let io = |p: &Path, e: std::io::Error| TopicsJobError::Invalid(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else if path.is_file() {
            std::fs::copy(&path, &target).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

impl TrainTopicsArgs {
    /// The fit's parameters from the flags.
    pub fn params(&self) -> TopicParams {
        let mut p = TopicParams {
            umap: UmapParams {
                n_neighbors: self.n_neighbors,
                n_components: self.n_components,
                min_dist: self.min_dist,
                n_epochs: self.n_epochs,
                seed: self.seed,
                ..UmapParams::default()
            },
            hdbscan: HdbscanParams {
                min_cluster_size: self.min_topic_size,
                min_samples: self.min_samples,
            },
            ..TopicParams::default()
        };
        p.ctfidf.top_n_words = self.top_n_words;
        if let Some(NrTopics::Count(n)) = self.nr_topics {
            p.nr_topics = Some(n);
        }
        p
    }

    /// Reads, embeds, fits and writes the version; returns the report.
    pub fn train(&self, progress: bool) -> Result<TrainTopicsReport, TopicsJobError> {
        let started = Instant::now();
        let params = self.params();
        params.umap.check()?;
        params.hdbscan.check()?;
        if self.top_n_words == 0 || self.batch_size == 0 {
            return Err(TopicsJobError::Invalid(
                "--top-n-words and --batch-size must be at least 1".into(),
            ));
        }
        let texts = texts(&self.table)?;
        if texts.is_empty() {
            return Err(TopicsJobError::Invalid(format!(
                "{}: no rows to fit",
                self.table.data.display()
            )));
        }
        let encoder = SentenceEncoder::load(&self.embedder)?;
        let embed_started = Instant::now();
        let (embeddings, source) = match &self.embeddings {
            Some(path) => {
                let (rows, cols, values) = read_f32_matrix(path)?;
                if rows != texts.len() || cols != encoder.dim() {
                    return Err(TopicsJobError::Invalid(format!(
                        "{}: shape ({rows}, {cols}); the table has {} rows and the encoder gives {}-d embeddings",
                        path.display(),
                        texts.len(),
                        encoder.dim()
                    )));
                }
                (Matrix::new(rows, cols, values)?, path.display().to_string())
            }
            None => (
                embed(&encoder, &texts, self.batch_size, progress)?,
                "computed".to_string(),
            ),
        };
        let embed_seconds = if self.embeddings.is_some() {
            0.0
        } else {
            embed_started.elapsed().as_secs_f64()
        };
        let fit_started = Instant::now();
        let mut model = TopicModel::fit(&texts, &embeddings, &params)?;
        if self.nr_topics == Some(NrTopics::Auto) {
            model.reduce_topics_auto(None)?;
        }
        let fit_seconds = fit_started.elapsed().as_secs_f64();
        if let Some(path) = &self.save_embeddings {
            write_f32_matrix(
                path,
                embeddings.rows(),
                embeddings.cols(),
                embeddings.as_slice(),
            )
            .map_err(|e| io_error(path, e))?;
        }
        if let Some(path) = &self.assignments {
            let mut csv = String::from("topic\n");
            for t in model.document_topics() {
                csv.push_str(&format!("{t}\n"));
            }
            std::fs::write(path, csv).map_err(|e| io_error(path, e))?;
        }
        model.save(&self.out)?;
        copy_dir(&self.embedder, &self.out.join("embedder"))?;
        let outliers = model.document_topics().iter().filter(|&&t| t < 0).count();
        let report = TrainTopicsReport {
            documents: texts.len(),
            empty_texts: texts.iter().filter(|t| t.is_empty()).count(),
            embedding_dim: embeddings.cols(),
            embeddings: source,
            topics: model.n_topics(),
            outliers,
            outlier_share: outliers as f64 / texts.len() as f64,
            params,
            nr_topics: self.nr_topics.map(|n| match n {
                NrTopics::Count(n) => n.to_string(),
                NrTopics::Auto => "auto".into(),
            }),
            embed_seconds,
            fit_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
        };
        let write = |name: &str, bytes: &[u8]| {
            let p = self.out.join(name);
            std::fs::write(&p, bytes)
                .map_err(|e| TopicsJobError::Invalid(format!("{}: {e}", p.display())))
        };
        write(
            "config.toml",
            b"# Written by `infermesh train topics`: serves this version.\nplatform = \"topics\"\n",
        )?;
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| TopicsJobError::Invalid(format!("report: {e}")))?;
        write("training_report.json", &json)?;
        Ok(report)
    }

    /// Runs the job and returns its summary for stdout.
    pub fn run(self) -> Result<String, TopicsJobError> {
        let r = self.train(true)?;
        Ok(format!(
            "topic model trained: {} documents, {} topics, {} outliers ({:.1}%), embedding {:.1} s, fit {:.1} s, {:.1} s in all; written to {}\n",
            r.documents,
            r.topics,
            r.outliers,
            100.0 * r.outlier_share,
            r.embed_seconds,
            r.fit_seconds,
            r.total_seconds,
            self.out.display()
        ))
    }
}

/// Flags of `infermesh eval topics`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalTopicsArgs {
    /// Model version directory written by `infermesh train topics` (its embedder/ embeds the
    /// texts).
    #[arg(long)]
    pub model: PathBuf,
    /// The labelled texts.
    #[command(flatten)]
    pub table: TopicsTable,
    /// Column holding the true label of each text (rows without one are left out).
    #[arg(long)]
    pub label_column: String,
    /// Texts per forward pass of the encoder. Default 32.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Precomputed embeddings of the table's rows (a float32 .npy, one row per table row,
    /// e.g. written by `train topics --save-embeddings`), used instead of embedding the
    /// texts with the version's embedder/.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Also write each scored row's assignment to this CSV: `topic,probability,label`, one
    /// line per labelled row in table order, topic -1 for outliers.
    #[arg(long)]
    pub assignments: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What an evaluation reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalTopicsReport {
    /// Labelled texts scored.
    pub documents: usize,
    /// Rows left out for an empty label.
    pub unlabelled: usize,
    /// Distinct labels.
    pub labels: usize,
    /// Distinct topics assigned (outliers not counted).
    pub topics_assigned: usize,
    /// Normalised mutual information of topics and labels (arithmetic normaliser, as
    /// scikit-learn's default).
    pub nmi: f64,
    /// Adjusted Rand index of topics and labels.
    pub ari: f64,
    /// Share of texts assigned no topic (-1).
    pub outlier_share: f64,
}

impl EvalTopicsArgs {
    /// Loads the model and its encoder, assigns the table's texts and scores them.
    pub fn evaluate(&self) -> Result<EvalTopicsReport, TopicsJobError> {
        let model = TopicModel::load(&self.model, &LoadLimits::default())?;
        let t = self.table.spec().read()?;
        let texts = t.strings(&self.table.text_column)?;
        let labels = t.strings(&self.label_column)?;
        let given = match &self.embeddings {
            Some(path) => {
                let (rows, cols, values) = read_f32_matrix(path)?;
                if rows != t.height() {
                    return Err(TopicsJobError::Invalid(format!(
                        "{}: {rows} rows; the table has {}",
                        path.display(),
                        t.height()
                    )));
                }
                Some(Matrix::new(rows, cols, values)?)
            }
            None => None,
        };
        let mut kept_texts = Vec::new();
        let mut kept_labels = Vec::new();
        let mut kept_rows = Vec::new();
        for (i, (text, label)) in texts.into_iter().zip(labels).enumerate() {
            if let Some(label) = label {
                kept_texts.push(text.unwrap_or_default());
                kept_labels.push(label);
                kept_rows.push(i);
            }
        }
        let unlabelled = t.height() - kept_labels.len();
        if kept_texts.is_empty() {
            return Err(TopicsJobError::Invalid(format!(
                "{}: no row has a label in '{}'",
                self.table.data.display(),
                self.label_column
            )));
        }
        let embeddings = match given {
            Some(all) => {
                let cols = all.cols();
                let mut values = Vec::with_capacity(kept_rows.len() * cols);
                for &i in &kept_rows {
                    values.extend_from_slice(all.row(i));
                }
                Matrix::new(kept_rows.len(), cols, values)?
            }
            None => {
                let encoder = SentenceEncoder::load(&self.model.join("embedder"))?;
                embed(&encoder, &kept_texts, self.batch_size, false)?
            }
        };
        let (topics, probabilities) = model.transform(Some(kept_texts.as_slice()), &embeddings)?;
        if let Some(path) = &self.assignments {
            let mut out = csv::Writer::from_path(path)
                .map_err(|e| TopicsJobError::Invalid(format!("{}: {e}", path.display())))?;
            let mut row = |fields: [&str; 3]| {
                out.write_record(fields)
                    .map_err(|e| TopicsJobError::Invalid(format!("{}: {e}", path.display())))
            };
            row(["topic", "probability", "label"])?;
            for ((topic, p), label) in topics.iter().zip(&probabilities).zip(&kept_labels) {
                row([&topic.to_string(), &p.to_string(), label])?;
            }
            out.flush().map_err(|e| io_error(path, e))?;
        }
        let mut ids = std::collections::BTreeMap::new();
        let truth: Vec<i64> = kept_labels
            .iter()
            .map(|l| {
                let next = ids.len() as i64;
                *ids.entry(l.clone()).or_insert(next)
            })
            .collect();
        let assigned: std::collections::BTreeSet<i64> =
            topics.iter().copied().filter(|&t| t >= 0).collect();
        Ok(EvalTopicsReport {
            documents: topics.len(),
            unlabelled,
            labels: ids.len(),
            topics_assigned: assigned.len(),
            nmi: normalized_mutual_info(&topics, &truth),
            ari: adjusted_rand_index(&topics, &truth),
            outlier_share: topics.iter().filter(|&&t| t < 0).count() as f64 / topics.len() as f64,
        })
    }

    /// Runs the evaluation and returns it for stdout (JSON with `--json`).
    pub fn run(self) -> Result<String, TopicsJobError> {
        let r = self.evaluate()?;
        if self.json {
            Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&r)
                    .map_err(|e| TopicsJobError::Invalid(e.to_string()))?
            ))
        } else {
            Ok(format!(
                "NMI {:.4}  ARI {:.4}  outliers {:.1}%  ({} texts, {} labels, {} topics assigned; {} rows without a label left out)\n",
                r.nmi,
                r.ari,
                100.0 * r.outlier_share,
                r.documents,
                r.labels,
                r.topics_assigned,
                r.unlabelled
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nr_topics_is_a_positive_count_or_auto() {
        assert_eq!(parse_nr_topics("auto"), Ok(NrTopics::Auto));
        assert_eq!(parse_nr_topics("7"), Ok(NrTopics::Count(7)));
        assert!(parse_nr_topics("0").is_err());
        assert!(parse_nr_topics("many").is_err());
    }
}
