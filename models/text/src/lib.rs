//! Transformer text encoders on candle.
//!
//! [`SentenceEncoder`] is a BERT-family encoder (all-MiniLM-L6-v2 and friends, Hugging Face
//! layout: `config.json`, `model.safetensors`, `tokenizer.json`, optional
//! `1_Pooling/config.json`) with sentence-transformers pooling: mean over the attention mask
//! (or CLS), then L2 normalisation ([`normalize`], applied by the caller, so a server can
//! also hand out the pooled vector as TEI's `normalize: false` does). Batches are padded to
//! their longest text (dynamic padding) and truncated at the model's maximum length, or
//! refused when longer ([`TextModel::tokenize_exact`], TEI's `truncate: false`). Weights are
//! read from local files only; nothing is fetched at run time.
//!
//! Three engines sit behind the [`TextModel`] trait: candle (this module and [`classifier`]),
//! ONNX Runtime ([`onnx`]) and OpenVINO ([`openvino`]); the last two run the graph
//! [`onnx::export`] writes from the same safetensors.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::Tokenizer;

pub mod classifier;
pub mod lexical;
pub mod limits;
pub mod onnx;
pub mod openvino;
#[cfg(feature = "serving")]
pub mod serving;
pub mod tokenize;

pub use classifier::TextClassifier;
pub use onnx::{OnnxOptions, OnnxTask, OnnxTextModel};
pub use openvino::{OpenVinoOptions, OpenVinoTextModel};

/// A text model the serving engine batches: tokenisation apart from the forward pass, so a
/// queue can budget real token counts before any tensor work (as TEI's router does).
///
/// Object-safe; `&self` everywhere, callable from many threads.
pub trait TextModel: Send + Sync + std::fmt::Debug {
    /// The model's `tokenizer.json`, set to truncate at [`TextModel::max_len`] and never pad.
    fn tokenizer(&self) -> &Tokenizer;
    /// Token ids of each text (special tokens included), truncated at [`TextModel::max_len`],
    /// unpadded.
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TextError> {
        tokenize::encode(self.tokenizer(), texts)
    }
    /// As [`TextModel::tokenize`], but a text longer than [`TextModel::max_len`] is
    /// [`TextError::TooLong`] instead of being cut (TEI's `truncate: false`).
    fn tokenize_exact(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TextError> {
        tokenize::encode_exact(self.tokenizer(), texts, self.max_len())
    }
    /// One output row per sequence: for encoders the pooled sentence vector, before
    /// normalisation (sentence-transformers' Pooling module; [`normalize`] is its Normalize
    /// module); for classifiers the logits. The batch is padded to its longest sequence.
    fn forward_tokens(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, TextError>;
    /// Values per output row (embedding width, or number of labels).
    fn output_width(&self) -> usize;
    /// Longest input in tokens.
    fn max_len(&self) -> usize;
    /// Class labels in id order, for classifiers; empty for encoders.
    fn labels(&self) -> &[String] {
        &[]
    }
}

/// Errors loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A model file is missing or unreadable.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A config or tokenizer file is malformed.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// Tokenisation failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A text is longer than the model takes, and truncation was not allowed.
    #[error("text {index} has {tokens} tokens; this model takes at most {max} (truncation is off)")]
    TooLong {
        /// Position of the text in the request.
        index: usize,
        /// Its length in tokens, special tokens included.
        tokens: usize,
        /// The model's limit.
        max: usize,
    },
    /// The tensor computation failed.
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// ONNX Runtime could not be loaded, or an inference session failed.
    #[error("onnxruntime: {0}")]
    Runtime(String),
    /// OpenVINO could not be loaded, or a compile or inference failed.
    #[error("openvino: {0}")]
    OpenVino(String),
}

/// How token vectors become one sentence vector (sentence-transformers' pooling config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the tokens the attention mask keeps.
    Mean,
    /// The first ([CLS]) token.
    Cls,
}

#[derive(Debug, serde::Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// A sentence embedding model.
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    pad_id: u32,
    device: Device,
    pooling: Pooling,
    dim: usize,
    max_len: usize,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("pooling", &self.pooling)
            .field("dim", &self.dim)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

/// The sentence-transformers pooling of the model in `dir` (`1_Pooling/config.json`; mean
/// when the file is absent).
pub fn read_pooling(dir: &Path) -> Result<Pooling, TextError> {
    match std::fs::read(dir.join("1_Pooling/config.json")) {
        Ok(bytes) => {
            let p: PoolingConfig =
                serde_json::from_slice(&bytes).map_err(|e| TextError::Invalid {
                    what: "1_Pooling/config.json",
                    message: e.to_string(),
                })?;
            Ok(if p.pooling_mode_cls_token && !p.pooling_mode_mean_tokens {
                Pooling::Cls
            } else {
                Pooling::Mean
            })
        }
        Err(_) => Ok(Pooling::Mean),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TextError> {
    std::fs::read(path).map_err(|e| TextError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl SentenceEncoder {
    /// Loads the model in `dir` on the CPU.
    pub fn load(dir: &Path) -> Result<Self, TextError> {
        Self::load_on(dir, Device::Cpu)
    }

    /// Loads the model in `dir` on `device`.
    pub fn load_on(dir: &Path, device: Device) -> Result<Self, TextError> {
        let config: BertConfig =
            serde_json::from_slice(&read(&dir.join("config.json"))?).map_err(|e| {
                TextError::Invalid {
                    what: "config.json",
                    message: e.to_string(),
                }
            })?;
        let pooling = read_pooling(dir)?;
        let weights = read(&dir.join("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
        let model = BertModel::load(vb, &config)?;
        let max_len = config.max_position_embeddings;
        let tokenizer = tokenize::load_tokenizer(dir, max_len)?;
        Ok(Self {
            model,
            pad_id: tokenize::pad_id(&tokenizer),
            tokenizer,
            device,
            pooling,
            dim: config.hidden_size,
            max_len,
        })
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest input in tokens; longer texts are truncated.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token counts of `texts` after truncation (for token-budget batching).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, TextError> {
        Ok(self.tokenize(texts)?.iter().map(Vec::len).collect())
    }

    /// Unit-length sentence embeddings of `texts`, one batch padded to its longest text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, TextError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.tokenize(texts)?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let mut rows = self.forward_tokens(&refs)?;
        rows.iter_mut().for_each(|r| normalize(r));
        Ok(rows)
    }
}

impl TextModel for SentenceEncoder {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn forward_tokens(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, TextError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mask) = tokenize::pad_batch(batch, self.pad_id, &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => mean_pool(&hidden, &mask)?,
        };
        Ok(pooled.to_vec2::<f32>()?)
    }

    fn output_width(&self) -> usize {
        self.dim
    }

    fn max_len(&self) -> usize {
        self.max_len
    }
}

/// The mean of `hidden` `(n, len, dim)` over the positions where `mask` `(n, len)` is 1:
/// `(n, dim)`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor, candle_core::Error> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
    let sum = hidden.broadcast_mul(&m)?.sum(1)?; // (n, dim)
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?; // (n, 1)
    sum.broadcast_div(&count)
}

/// Scales `v` to unit length in place, as sentence-transformers' Normalize module does (a zero
/// vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }

    #[test]
    fn missing_model_is_a_clear_error() {
        let err = SentenceEncoder::load(Path::new("/nonexistent/model")).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
