//! The OpenVINO backend: the graph [`crate::onnx::export`] writes from the safetensors, run by
//! OpenVINO's CPU plugin through the `openvino` crate (`runtime-linking`: the shared library is
//! loaded at run time, never downloaded by the build).
//!
//! Why a third engine: on CPUs with native bfloat16 arithmetic (AVX-512 BF16 or AMX),
//! OpenVINO (oneDNN kernels) runs the encoder's matrix products in bf16 with f32
//! accumulation, about twice the f32 multiply rate, while ONNX Runtime's CPU kernels have no
//! bf16 path on x86. On all-MiniLM-L6-v2 the bf16 embeddings stay within cosine 0.99995 of the
//! f64 NumPy reference for every fixture sentence (the parity bar is 0.9999), and throughput is
//! about 1.6x ONNX Runtime's f32 (BENCHMARKS.md). Where the CPU has no bf16, OpenVINO runs f32
//! and brings nothing over ONNX Runtime, so `auto` takes it only on bf16 CPUs.
//!
//! The libraries come from the `openvino` PyPI wheel, which the project's scripts unpack to
//! `~/.cache/infermesh/openvino/` (`libopenvino_c.so` and what it needs: the runtime, the CPU
//! plugin, the ONNX front end, TBB); `OPENVINO_DYLIB_PATH` points elsewhere.
//!
//! Supported: what the ONNX Runtime engine runs (sentence encoders, `BertForSequenceClassification`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::onnx::{
    ExportedGraph, OnnxTask, PaddedBatch, Prepared, cache_dir, export_to_tempfile, threads_or_all,
};
use crate::{TextError, TextModel};
use openvino::{
    CompiledModel, Core, DeviceType, ElementType, InferRequest, PropertyKey, RwPropertyKey, Shape,
    Tensor,
};

/// The OpenVINO release the scripts install (the `openvino` wheel's libraries).
pub const OPENVINO_VERSION: &str = "2026.4.1";

/// The CPU plugin's cache of per-shape executors (`CPU_RUNTIME_CACHE_CAPACITY`, 5000 by
/// default). Text batches come in many shapes (texts x padded length); with the default, and
/// oneDNN's own primitive cache at its default of 1024, a process serving MiniLM grew by about
/// 0.4 MB per new shape, past 900 MB after 1,400 shapes. With 16 here and oneDNN's cache at
/// 128 (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`, an environment variable oneDNN reads once: the
/// `infermesh` binary sets it at start) memory stays flat and throughput is unchanged
/// (BENCHMARKS.md).
const RUNTIME_CACHE: (&str, &str) = ("CPU_RUNTIME_CACHE_CAPACITY", "16");

/// Where OpenVINO's C library is looked for: `OPENVINO_DYLIB_PATH` when set, else
/// `openvino/libopenvino_c.so` under the infermesh cache (`INFERMESH_CACHE`, default
/// `~/.cache/infermesh`).
pub fn library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENVINO_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    cache_dir().join("openvino").join("libopenvino_c.so")
}

/// What the loaded library offers: whether its CPU plugin computes in bf16 natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    /// The CPU plugin lists `BF16` among its optimisation capabilities.
    pub bf16: bool,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Loads OpenVINO from [`library_path`] on first use and reads the CPU's capabilities. A
/// missing or incompatible library is an error (every time), never a panic.
pub fn runtime() -> Result<Runtime, TextError> {
    RUNTIME
        .get_or_init(|| {
            let path = library_path();
            if !path.exists() {
                return Err(format!(
                    "the OpenVINO library is not at {} (run scripts/setup.sh, or set \
                     OPENVINO_DYLIB_PATH to libopenvino_c.so {OPENVINO_VERSION})",
                    path.display()
                ));
            }
            openvino_sys::library::load_from(&path)?;
            let core = Core::new().map_err(|e| e.to_string())?;
            let caps = core
                .get_property(&DeviceType::CPU, &PropertyKey::DeviceCapabilities)
                .map_err(|e| e.to_string())?;
            Ok(Runtime {
                bf16: caps.split_whitespace().any(|c| c == "BF16"),
            })
        })
        .clone()
        .map_err(TextError::OpenVino)
}

/// The arithmetic OpenVINO runs the encoder in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// bf16 where the CPU computes it natively, f32 elsewhere.
    #[default]
    Auto,
    /// bf16 matrix products with f32 accumulation; an error on a CPU without native bf16.
    Bf16,
    /// f32 throughout (the ONNX Runtime engine's arithmetic).
    F32,
}

/// OpenVINO settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenVinoOptions {
    /// Inference threads; 0 uses every core.
    pub threads: usize,
    /// Arithmetic.
    pub precision: Precision,
}

fn ov_error(e: impl std::fmt::Display) -> TextError {
    TextError::OpenVino(e.to_string())
}

/// A BERT-family model run by OpenVINO, behind the same [`TextModel`] trait as the other
/// engines.
pub struct OpenVinoTextModel {
    session: Mutex<Session>,
    graph: ExportedGraph,
    threads: usize,
    bf16: bool,
}

/// The OpenVINO objects of one model (`Send`, not `Sync`: behind a mutex). Field order is drop
/// order: the request before the compiled model before the core.
struct Session {
    request: InferRequest,
    _compiled: CompiledModel,
    _core: Core,
}

impl std::fmt::Debug for OpenVinoTextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenVinoTextModel")
            .field("graph", &self.graph)
            .field("threads", &self.threads)
            .field("bf16", &self.bf16)
            .finish_non_exhaustive()
    }
}

impl OpenVinoTextModel {
    /// Loads the checkpoint in `dir` (Hugging Face layout) for `task`: exports its graph and
    /// compiles it for the CPU.
    ///
    /// The graph goes through a temporary file, not a memory buffer (see
    /// `onnx::export_to_tempfile`).
    pub fn load(dir: &Path, task: OnnxTask, options: OpenVinoOptions) -> Result<Self, TextError> {
        let runtime = runtime()?;
        let bf16 = match options.precision {
            Precision::Auto => runtime.bf16,
            Precision::Bf16 if !runtime.bf16 => {
                return Err(TextError::OpenVino(
                    "precision \"bf16\" needs a CPU with native bf16 (AVX-512 BF16 or AMX); \
                     this one has neither"
                        .into(),
                ));
            }
            Precision::Bf16 => true,
            Precision::F32 => false,
        };
        let prepared = Prepared::read(dir, task)?;
        let graph = export_to_tempfile(dir, prepared.head, false)?;
        let threads = threads_or_all(options.threads);
        let mut core = Core::new().map_err(ov_error)?;
        let threads_text = threads.to_string();
        core.set_properties(
            &DeviceType::CPU,
            [
                (
                    RwPropertyKey::HintInferencePrecision,
                    if bf16 { "bf16" } else { "f32" },
                ),
                (RwPropertyKey::InferenceNumThreads, threads_text.as_str()),
                (RwPropertyKey::HintPerformanceMode, "LATENCY"),
                (
                    RwPropertyKey::Other(RUNTIME_CACHE.0.into()),
                    RUNTIME_CACHE.1,
                ),
            ],
        )
        .map_err(ov_error)?;
        let path = graph
            .path()
            .to_str()
            .ok_or_else(|| TextError::OpenVino("the temporary directory is not UTF-8".into()))?;
        let model = core.read_model_from_file(path, "").map_err(ov_error)?;
        drop(graph);
        let width = model
            .get_output_by_index(0)
            .and_then(|o| o.get_partial_shape())
            .map_err(ov_error)
            .and_then(|s| {
                s.get_dimensions()
                    .last()
                    .filter(|d| !d.is_dynamic())
                    .map(|d| d.get_min())
                    .filter(|&w| w > 0)
                    .map(|w| w as usize)
                    .ok_or_else(|| {
                        TextError::OpenVino("the exported graph has no output width".into())
                    })
            })?;
        let graph = prepared.into_graph(task, width)?;
        let mut compiled = core
            .compile_model(&model, DeviceType::CPU)
            .map_err(ov_error)?;
        drop(model);
        let request = compiled.create_infer_request().map_err(ov_error)?;
        Ok(Self {
            session: Mutex::new(Session {
                request,
                _compiled: compiled,
                _core: core,
            }),
            graph,
            threads,
            bf16,
        })
    }

    /// Inference threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether the matrix products run in bf16.
    pub fn bf16(&self) -> bool {
        self.bf16
    }
}

fn i64_tensor(n: usize, len: usize, values: &[i64]) -> Result<Tensor, TextError> {
    let shape = Shape::new(&[n as i64, len as i64]).map_err(ov_error)?;
    let mut tensor = Tensor::new(ElementType::I64, &shape).map_err(ov_error)?;
    tensor
        .get_data_mut::<i64>()
        .map_err(ov_error)?
        .copy_from_slice(values);
    Ok(tensor)
}

impl TextModel for OpenVinoTextModel {
    fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.graph.tokenizer
    }

    fn forward_tokens(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, TextError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let PaddedBatch { n, len, ids, mask } = self.graph.pad(batch);
        let ids = i64_tensor(n, len, &ids)?;
        let mask = i64_tensor(n, len, &mask)?;
        // One request per model: the batcher runs one batch at a time per model anyway.
        let mut session = self
            .session
            .lock()
            .map_err(|_| TextError::OpenVino("a previous run panicked".into()))?;
        let request = &mut session.request;
        request.set_tensor("input_ids", &ids).map_err(ov_error)?;
        request
            .set_tensor("attention_mask", &mask)
            .map_err(ov_error)?;
        request.infer().map_err(ov_error)?;
        let out = request.get_tensor(self.graph.output).map_err(ov_error)?;
        let shape = out.get_shape().map_err(ov_error)?.get_dimensions().to_vec();
        let data = out.get_data::<f32>().map_err(ov_error)?;
        self.graph.rows(n, &shape, data, TextError::OpenVino)
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
