//! The ONNX Runtime backend: the same Hugging Face checkpoints as the candle models, run by
//! ONNX Runtime through the `ort` crate (`load-dynamic`: the shared library is loaded at run
//! time, never downloaded by the build).
//!
//! There is no separate `model.onnx` to ship or keep in sync: the graph is exported from
//! `config.json` + `model.safetensors` to a temporary file when the model loads ([`export`]),
//! read by the engine and deleted, so a version folder serves on either backend. The library
//! comes from the `onnxruntime` PyPI wheel (`libonnxruntime.so.1.31.1`), which the project's
//! scripts unpack to `~/.cache/infermesh/onnxruntime/libonnxruntime.so`; `ORT_DYLIB_PATH`
//! points elsewhere.
//!
//! Supported: sentence encoders (mean or CLS pooling; [`crate::normalize`] after) and
//! `BertForSequenceClassification`. DistilBERT stays on candle.

pub mod export;
pub use infermesh_model_core::onnx_proto as proto;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tokenizers::Tokenizer;

use crate::classifier::{Architecture, architecture_of, labels_of_config, pooling_of_config};
use crate::{TextError, TextModel, read, read_pooling, tokenize};

pub use export::{Head, write_bert};

/// The ONNX Runtime release the scripts install (the `onnxruntime` wheel's library).
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// Where the ONNX Runtime shared library is looked for: `ORT_DYLIB_PATH` when set, else
/// `onnxruntime/libonnxruntime.so` under the infermesh cache (`INFERMESH_CACHE`, default
/// `~/.cache/infermesh`).
pub fn library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    cache_dir().join("onnxruntime").join("libonnxruntime.so")
}

/// The infermesh cache: `INFERMESH_CACHE`, default `~/.cache/infermesh`.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("INFERMESH_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/infermesh")
        })
}

/// `threads`, or every core when 0.
pub(crate) fn threads_or_all(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library from [`library_path`] on
/// first use. A missing or incompatible library is an error (every time), never a panic.
pub fn runtime() -> Result<&'static Environment, TextError> {
    RUNTIME
        .get_or_init(|| {
            let path = library_path();
            if !path.is_file() {
                return Err(format!(
                    "the ONNX Runtime library is not at {} (run scripts/setup.sh, or set \
                     ORT_DYLIB_PATH to libonnxruntime.so {ONNXRUNTIME_VERSION})",
                    path.display()
                ));
            }
            ort::init_from(&path)
                .map_err(|e| e.to_string())?
                .with_name("infermesh")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| TextError::Runtime(e.clone()))
}

/// Whether ONNX Runtime can be loaded (see [`runtime`]).
pub fn available() -> bool {
    runtime().is_ok()
}

/// ONNX Runtime session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnnxOptions {
    /// Threads inside one operator (ONNX Runtime's intra-op pool); 0 uses every core.
    pub intra_threads: usize,
    /// Dynamically quantise the encoder's linear layers to int8 (see
    /// [`export::write_bert`]); off by default: embeddings then differ from the f32
    /// model (cosine ~0.99, not the >= 0.9999 of the f32 path).
    pub int8: bool,
}

/// Which model an [`OnnxTextModel`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxTask {
    /// A sentence encoder (rows are unit embeddings).
    Embedding,
    /// A sequence classifier (rows are logits).
    Classifier,
}

fn ort_error(e: impl std::fmt::Display) -> TextError {
    TextError::Runtime(e.to_string())
}

/// A BERT-family model run by ONNX Runtime, behind the same [`TextModel`] trait as the
/// candle models (so the batcher, tokenisation and outputs are shared).
pub struct OnnxTextModel {
    session: Mutex<Session>,
    graph: ExportedGraph,
    threads: usize,
}

impl std::fmt::Debug for OnnxTextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxTextModel")
            .field("graph", &self.graph)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Lengths {
    max_position_embeddings: usize,
}

/// What every engine running the exported graph needs from a checkpoint folder: the graph's
/// head, the labels (classifiers), the longest input and the tokenizer.
pub(crate) struct Prepared {
    pub(crate) head: Head,
    pub(crate) labels: Vec<String>,
    pub(crate) max_len: usize,
    pub(crate) tokenizer: Tokenizer,
}

impl Prepared {
    /// Reads `config.json` (and the pooling config of encoders) and the tokenizer in `dir`.
    /// DistilBERT classifiers are refused: the exporter writes BERT graphs only.
    pub(crate) fn read(dir: &Path, task: OnnxTask) -> Result<Self, TextError> {
        let config = read(&dir.join("config.json"))?;
        let lengths: Lengths = serde_json::from_slice(&config).map_err(|e| TextError::Invalid {
            what: "config.json",
            message: e.to_string(),
        })?;
        let (head, labels) = match task {
            OnnxTask::Embedding => (Head::SentenceEmbedding(read_pooling(dir)?), Vec::new()),
            OnnxTask::Classifier => match architecture_of(&config)? {
                Architecture::Bert => (
                    Head::BertClassifier(pooling_of_config(&config)?),
                    labels_of_config(&config)?,
                ),
                Architecture::DistilBert => {
                    return Err(TextError::Invalid {
                        what: "config.json",
                        message: "DistilBertForSequenceClassification runs on the candle \
                                  engine only"
                            .into(),
                    });
                }
            },
        };
        let max_len = lengths.max_position_embeddings;
        let tokenizer = tokenize::load_tokenizer(dir, max_len)?;
        Ok(Self {
            head,
            labels,
            max_len,
            tokenizer,
        })
    }

    /// The loaded model's side of the graph, once the engine knows the graph's output width
    /// (checked against a classifier's labels).
    pub(crate) fn into_graph(
        self,
        task: OnnxTask,
        width: usize,
    ) -> Result<ExportedGraph, TextError> {
        if task == OnnxTask::Classifier && width != self.labels.len() {
            return Err(TextError::Invalid {
                what: "config.json",
                message: format!(
                    "{} labels but the classifier has {width} outputs",
                    self.labels.len()
                ),
            });
        }
        Ok(ExportedGraph {
            pad_id: tokenize::pad_id(&self.tokenizer),
            tokenizer: self.tokenizer,
            output: self.head.output_name(),
            width,
            max_len: self.max_len,
            labels: self.labels,
        })
    }
}

/// What an engine running the exported graph keeps beside its session: the tokenizer, the
/// output to read and its width, the longest input and the labels. The engines' shared half
/// of [`TextModel`].
pub(crate) struct ExportedGraph {
    pub(crate) tokenizer: Tokenizer,
    pub(crate) pad_id: u32,
    pub(crate) output: &'static str,
    pub(crate) width: usize,
    pub(crate) max_len: usize,
    pub(crate) labels: Vec<String>,
}

impl std::fmt::Debug for ExportedGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedGraph")
            .field("output", &self.output)
            .field("width", &self.width)
            .field("max_len", &self.max_len)
            .field("labels", &self.labels.len())
            .finish_non_exhaustive()
    }
}

impl ExportedGraph {
    /// `batch` padded for the graph's inputs.
    pub(crate) fn pad(&self, batch: &[&[u32]]) -> PaddedBatch {
        PaddedBatch::new(batch, self.pad_id)
    }

    /// The output of `n` sequences as rows, after checking its shape; `error` is the engine's
    /// error for a wrong one.
    pub(crate) fn rows(
        &self,
        n: usize,
        shape: &[i64],
        data: &[f32],
        error: fn(String) -> TextError,
    ) -> Result<Vec<Vec<f32>>, TextError> {
        if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != self.width {
            return Err(error(format!(
                "unexpected output shape {shape:?} for {n} sequences"
            )));
        }
        Ok(data.chunks(self.width).map(<[f32]>::to_vec).collect())
    }
}

/// A batch padded to its longest sequence (at least 1) as the exported graph's `input_ids`
/// and `attention_mask` (row-major `[n, len]`, int64).
pub(crate) struct PaddedBatch {
    pub(crate) n: usize,
    pub(crate) len: usize,
    pub(crate) ids: Vec<i64>,
    pub(crate) mask: Vec<i64>,
}

impl PaddedBatch {
    pub(crate) fn new(batch: &[&[u32]], pad_id: u32) -> Self {
        let n = batch.len();
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![i64::from(pad_id); n * len];
        let mut mask = vec![0i64; n * len];
        for (i, seq) in batch.iter().enumerate() {
            for (j, &t) in seq.iter().enumerate() {
                ids[i * len + j] = i64::from(t);
                mask[i * len + j] = 1;
            }
        }
        Self { n, len, ids, mask }
    }
}

/// The exported graph of the checkpoint in `dir` in a new temporary file (removed on drop).
///
/// Both engines read the graph from a file, not from a memory buffer: the export is
/// streamed to the file, so no encoded copy of the weights is held, and the engine's
/// reader does not run beside one. Loading MiniLM with ONNX Runtime peaked at 272 MiB
/// from an in-memory export and at 221 MiB from this file; OpenVINO's reader keeps about
/// three copies of the weights when it parses a buffer (370 MB against 200 MB from a
/// file). See BENCHMARKS.md.
pub(crate) fn export_to_tempfile(
    dir: &Path,
    head: Head,
    int8: bool,
) -> Result<tempfile::NamedTempFile, TextError> {
    let file = tempfile::Builder::new()
        .prefix("infermesh-graph-")
        .suffix(".onnx")
        .tempfile()
        .map_err(export::write_error)?;
    let mut out = std::io::BufWriter::new(file);
    write_bert(dir, head, int8, &mut out)?;
    out.into_inner()
        .map_err(|e| export::write_error(e.into_error()))
}

impl OnnxTextModel {
    /// Loads the checkpoint in `dir` (Hugging Face layout) for `task`: exports its graph to
    /// a temporary file and opens an ONNX Runtime session on it.
    pub fn load(dir: &Path, task: OnnxTask, options: OnnxOptions) -> Result<Self, TextError> {
        let env = runtime()?;
        let prepared = Prepared::read(dir, task)?;
        let graph = export_to_tempfile(dir, prepared.head, options.int8)?;
        let threads = threads_or_all(options.intra_threads);
        let session = Session::builder(env)
            .map_err(ort_error)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(ort_error)?
            .with_intra_threads(threads)
            .map_err(ort_error)?
            .with_inter_threads(1)
            .map_err(ort_error)?
            .commit_from_file(graph.path())
            .map_err(ort_error)?;
        drop(graph);
        let width = session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape().and_then(|s| s.last().copied()))
            .filter(|&w| w > 0)
            .map(|w| w as usize)
            .ok_or_else(|| TextError::Runtime("the exported graph has no output width".into()))?;
        Ok(Self {
            session: Mutex::new(session),
            graph: prepared.into_graph(task, width)?,
            threads,
        })
    }

    /// Threads of the session's intra-op pool.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl TextModel for OnnxTextModel {
    fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.graph.tokenizer
    }

    fn forward_tokens(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, TextError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let PaddedBatch { n, len, ids, mask } = self.graph.pad(batch);
        let ids = Tensor::from_array(([n, len], ids)).map_err(ort_error)?;
        let mask = Tensor::from_array(([n, len], mask)).map_err(ort_error)?;
        // ONNX Runtime sessions run concurrently in C, but ort's `run` takes `&mut`: one
        // batch at a time per model, which is what the batcher does anyway.
        let mut session = self
            .session
            .lock()
            .map_err(|_| TextError::Runtime("a previous run panicked".into()))?;
        let outputs = session
            .run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
            .map_err(ort_error)?;
        let (shape, data) = outputs[self.graph.output]
            .try_extract_tensor::<f32>()
            .map_err(ort_error)?;
        self.graph.rows(n, shape, data, TextError::Runtime)
    }

    fn output_width(&self) -> usize {
        self.graph.width
    }

    fn max_len(&self) -> usize {
        self.graph.max_len
    }

    fn labels(&self) -> &[String] {
        &self.graph.labels
    }
}
