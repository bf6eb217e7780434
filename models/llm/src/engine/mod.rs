//! The forward pass of a llama-architecture GGUF model, written for one request at a time on
//! CPU: f32 activations, weights as [`quant::Matrix`] (Q4_1, Q8_0 or f32), a key/value cache
//! that grows in place, and the q/k/v and gate/up products each done as one stacked matrix so
//! that a layer is four parallel products, not seven.
//!
//! Written by hand rather than run through candle's `quantized_llama`, which is kept as the
//! reference the tests compare against and as the path for files this engine does not run
//! (mixtures of experts): candle 0.11 has no SIMD Q4_1 kernel, multiplies a prompt one row at a
//! time, re-concatenates the whole KV cache on every token, and splits every small product over
//! rayon. The arithmetic follows candle's model exactly (RMS norm, interleaved RoPE with the
//! same f32 angles, grouped-query attention, SiLU-gated MLP, tied output embedding); with f32
//! weights the logits agree with it to float rounding (`tests/engine.rs`).

pub mod quant;

use std::io::{Read, Seek};

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use rayon::prelude::*;

use crate::LlmError;
use crate::gguf::md_u64;
use crate::model::Weights;
use quant::{BlockQ4_1, BlockQ8_0, Input, Matrix, MatrixData, QK, matmul};

/// The shape of the network, from the file's `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Hidden size.
    pub dim: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Feed-forward width.
    pub ffn_dim: usize,
    /// Layers.
    pub n_layer: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// RMS norm epsilon.
    pub eps: f32,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// Positions the cache may hold.
    pub max_positions: usize,
}

impl Config {
    /// The configuration of `content`, or why this engine does not run it
    /// ([`LlmError::Unsupported`] for a valid file of another kind, [`LlmError::Malformed`]
    /// for inconsistent numbers).
    pub fn read(content: &gguf_file::Content, max_positions: usize) -> Result<Self, LlmError> {
        let need = |key: &str| -> Result<usize, LlmError> {
            md_u64(content, key)?
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| LlmError::Unsupported(format!("no {key} in the metadata")))
        };
        if md_u64(content, "llama.expert_count")?.unwrap_or(0) > 1 {
            return Err(LlmError::Unsupported(
                "a mixture of experts (llama.expert_count > 1)".into(),
            ));
        }
        let dim = need("llama.embedding_length")?;
        let n_head = need("llama.attention.head_count")?;
        let n_kv_head = need("llama.attention.head_count_kv")?;
        let n_layer = need("llama.block_count")?;
        // The width of the feed-forward, from the first gate (files disagree on the key).
        let ffn_dim = content
            .tensor_infos
            .get("blk.0.ffn_gate.weight")
            .and_then(|t| t.shape.dims().first().copied())
            .unwrap_or(0);
        let rope_dim = need("llama.rope.dimension_count")?;
        let f32_of = |key: &str| match content.metadata.get(key) {
            Some(v) => v.to_f32().ok(),
            None => None,
        };
        let eps = f32_of("llama.attention.layer_norm_rms_epsilon").ok_or_else(|| {
            LlmError::Unsupported("no llama.attention.layer_norm_rms_epsilon".into())
        })?;
        let rope_base = f32_of("llama.rope.freq_base").unwrap_or(10000.0);
        if n_head == 0 || n_kv_head == 0 || dim == 0 || !dim.is_multiple_of(n_head) {
            return Err(LlmError::Malformed(format!(
                "{n_head} heads for an embedding of {dim}"
            )));
        }
        if !n_head.is_multiple_of(n_kv_head) {
            return Err(LlmError::Malformed(format!(
                "{n_head} query heads over {n_kv_head} key/value heads"
            )));
        }
        let head_dim = dim / n_head;
        if rope_dim != head_dim || !head_dim.is_multiple_of(2) {
            return Err(LlmError::Unsupported(format!(
                "RoPE over {rope_dim} of {head_dim} values per head"
            )));
        }
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .and_then(|t| t.shape.dims().first().copied())
            .ok_or_else(|| LlmError::Malformed("no token_embd.weight tensor".into()))?;
        Ok(Self {
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn_dim,
            n_layer,
            vocab,
            eps,
            rope_base,
            max_positions,
        })
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections stacked by rows.
    qkv: Matrix,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    /// Gate and up projections stacked by rows.
    gate_up: Matrix,
    down: Matrix,
}

/// Keys and values of one layer: `positions x (n_kv_head * head_dim)` each.
#[derive(Default)]
struct Cache {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Buffers reused from call to call.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    input: Input,
    a: Vec<f32>,
    b: Vec<f32>,
    attn: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// A loaded network with its KV cache.
pub struct Engine {
    config: Config,
    embedding: Matrix,
    /// `None`: the output projection is the embedding (tied).
    output: Option<Matrix>,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    cache: Vec<Cache>,
    /// Positions held in the cache.
    len: usize,
    scratch: Scratch,
    /// The engine's own threads (`RAYON_NUM_THREADS`, else one per core): a forward pass
    /// enters the pool once, so its many small products are split among workers without a
    /// hand-over from an outside thread each time.
    pool: std::sync::Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The f32 values of a 1-D tensor of `n` values.
fn vector(q: &QTensor, n: usize, name: &str) -> Result<Vec<f32>, LlmError> {
    if q.shape().elem_count() != n {
        return Err(LlmError::Malformed(format!(
            "{name} has {:?} for {n} values",
            q.shape().dims()
        )));
    }
    Ok(q.dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// A `rows x cols` matrix from a tensor, held as `weights` says: as stored keeps Q4_0/Q4_1
/// (as Q4_1), Q8_0 and f32/f16 (as f32), and re-encodes any other format to Q8_0.
fn matrix(
    q: &QTensor,
    rows: usize,
    cols: usize,
    name: &str,
    weights: Weights,
) -> Result<Matrix, LlmError> {
    let dims = q.shape().dims();
    if dims != [rows, cols] {
        return Err(LlmError::Malformed(format!(
            "{name} is {dims:?}, expected [{rows}, {cols}]"
        )));
    }
    let bad = || LlmError::Malformed(format!("{name}: data does not match its shape"));
    let dense = || -> Result<Matrix, LlmError> {
        let values = q
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Matrix::new(rows, cols, MatrixData::F32(values)).ok_or_else(bad)
    };
    let blocks = rows * cols / QK;
    let stored = match (q.dtype(), cols.is_multiple_of(QK)) {
        (GgmlDType::Q4_1, true) | (GgmlDType::Q4_0, true) => {
            let data = q.data()?;
            let (size, offset) = if q.dtype() == GgmlDType::Q4_1 {
                (20, 4)
            } else {
                (18, 2)
            };
            if data.len() != blocks * size {
                return Err(bad());
            }
            let parsed = data
                .chunks_exact(size)
                .map(|b| {
                    let d = f16_at(b, 0);
                    let m = if size == 20 { f16_at(b, 2) } else { -8.0 * d };
                    let mut qs = [0u8; 16];
                    qs.copy_from_slice(&b[offset..offset + 16]);
                    BlockQ4_1 { d, m, qs }
                })
                .collect();
            Matrix::new(rows, cols, MatrixData::Q4_1(parsed)).ok_or_else(bad)?
        }
        (GgmlDType::Q8_0, true) => {
            let data = q.data()?;
            if data.len() != blocks * 34 {
                return Err(bad());
            }
            let parsed = data
                .chunks_exact(34)
                .map(|b| BlockQ8_0 {
                    d: f16_at(b, 0),
                    qs: std::array::from_fn(|i| b[2 + i] as i8),
                })
                .collect();
            Matrix::new(rows, cols, MatrixData::Q8_0(parsed)).ok_or_else(bad)?
        }
        (GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16, _) | (_, false) => dense()?,
        _ => {
            let m = dense()?;
            m.to_q8_0().unwrap_or(m)
        }
    };
    Ok(match weights {
        Weights::AsStored => stored,
        Weights::Q8_0 => stored.to_q8_0().unwrap_or(stored),
        Weights::F32 => match stored.data() {
            MatrixData::F32(_) => stored,
            _ => stored.to_f32_matrix(),
        },
    })
}

impl Engine {
    /// Loads the network of `content` (read from `reader`), weights held as `weights`.
    pub fn from_gguf(
        content: &gguf_file::Content,
        reader: &mut (impl Read + Seek),
        weights: Weights,
        max_positions: usize,
    ) -> Result<Self, LlmError> {
        let config = Config::read(content, max_positions)?;
        let c = &config;
        let device = Device::Cpu;
        let mut tensor = |name: &str| -> Result<QTensor, LlmError> {
            if !content.tensor_infos.contains_key(name) {
                return Err(LlmError::Malformed(format!("no {name} tensor")));
            }
            Ok(content.tensor(reader, name, &device)?)
        };
        let q_rows = c.n_head * c.head_dim;
        let kv_rows = c.n_kv_head * c.head_dim;
        let embedding = matrix(
            &tensor("token_embd.weight")?,
            c.vocab,
            c.dim,
            "token_embd.weight",
            weights,
        )?;
        let output_norm = vector(&tensor("output_norm.weight")?, c.dim, "output_norm.weight")?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(matrix(
                &tensor("output.weight")?,
                c.vocab,
                c.dim,
                "output.weight",
                weights,
            )?)
        } else {
            None
        };
        // Grown as the tensors are found: the declared count is not trusted with an allocation.
        let mut layers = Vec::new();
        for l in 0..c.n_layer {
            let name = |s: &str| format!("blk.{l}.{s}.weight");
            let mut m = |s: &str, rows: usize, cols: usize| -> Result<Matrix, LlmError> {
                matrix(&tensor(&name(s))?, rows, cols, &name(s), weights)
            };
            let wq = m("attn_q", q_rows, c.dim)?;
            let wk = m("attn_k", kv_rows, c.dim)?;
            let wv = m("attn_v", kv_rows, c.dim)?;
            let wo = m("attn_output", c.dim, q_rows)?;
            let gate = m("ffn_gate", c.ffn_dim, c.dim)?;
            let up = m("ffn_up", c.ffn_dim, c.dim)?;
            let down = m("ffn_down", c.dim, c.ffn_dim)?;
            let attn_norm = vector(&tensor(&name("attn_norm"))?, c.dim, &name("attn_norm"))?;
            let ffn_norm = vector(&tensor(&name("ffn_norm"))?, c.dim, &name("ffn_norm"))?;
            layers.push(Layer {
                attn_norm,
                qkv: stack(&[&wq, &wk, &wv])?,
                wo,
                ffn_norm,
                gate_up: stack(&[&gate, &up])?,
                down,
            });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("infermesh-llm-{i}"))
            .build()
            .map_err(|e| LlmError::Unsupported(format!("no threads for the engine: {e}")))?;
        Ok(Self {
            pool: std::sync::Arc::new(pool),
            cache: (0..c.n_layer).map(|_| Cache::default()).collect(),
            config,
            embedding,
            output,
            output_norm,
            layers,
            len: 0,
            scratch: Scratch::default(),
        })
    }

    /// The network's shape.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The format the projection matrices are held in (`Q4_1`, `Q8_0`, `F32`).
    pub fn weight_type(&self) -> &'static str {
        self.layers
            .first()
            .map_or(self.embedding.type_name(), |l| l.gate_up.type_name())
    }

    /// Empties the KV cache (its memory is kept for the next request).
    pub fn clear(&mut self) {
        self.len = 0;
        for c in &mut self.cache {
            c.k.clear();
            c.v.clear();
        }
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` (the cache must hold exactly the
    /// positions before `pos`; `pos` 0 starts afresh) and returns the next-token logits after
    /// the last of them.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, LlmError> {
        let pool = std::sync::Arc::clone(&self.pool);
        pool.install(|| self.forward_in_pool(tokens, pos))
    }

    fn forward_in_pool(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, LlmError> {
        let c = self.config.clone();
        if tokens.is_empty() {
            return Err(LlmError::InvalidRequest("no tokens to evaluate".into()));
        }
        if pos == 0 {
            self.clear();
        }
        if pos != self.len {
            return Err(LlmError::InvalidRequest(format!(
                "position {pos} with {} positions cached",
                self.len
            )));
        }
        let end = pos + tokens.len();
        if end > c.max_positions {
            return Err(LlmError::InvalidRequest(format!(
                "{end} positions, the cache holds {}",
                c.max_positions
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(LlmError::InvalidRequest(format!(
                "token id {bad}, the vocabulary has {}",
                c.vocab
            )));
        }
        let t = tokens.len();
        let s = &mut self.scratch;
        s.x.clear();
        s.x.resize(t * c.dim, 0.0);
        for (row, &id) in s.x.chunks_mut(c.dim).zip(tokens) {
            self.embedding.row_into(id as usize, row);
        }
        rope_table(&c, pos, t, &mut s.cos, &mut s.sin);
        let q_dim = c.n_head * c.head_dim;
        let kv_dim = c.n_kv_head * c.head_dim;
        for (layer, cache) in self.layers.iter().zip(self.cache.iter_mut()) {
            // Attention.
            rms_norm(&s.x, &layer.attn_norm, c.eps, &mut s.h);
            s.input.set(&s.h, t, c.dim, layer.qkv.wants_quantized());
            matmul(&layer.qkv, &s.input, &mut s.a);
            let width = q_dim + 2 * kv_dim;
            for (k, row) in s.a.chunks_mut(width).enumerate() {
                let (q, rest) = row.split_at_mut(q_dim);
                let (key, value) = rest.split_at_mut(kv_dim);
                let half = c.head_dim / 2;
                let cos = &s.cos[k * half..(k + 1) * half];
                let sin = &s.sin[k * half..(k + 1) * half];
                for head in q.chunks_mut(c.head_dim).chain(key.chunks_mut(c.head_dim)) {
                    rope(head, cos, sin);
                }
                cache.k.extend_from_slice(key);
                cache.v.extend_from_slice(value);
            }
            attention(&c, cache, &s.a, width, pos, t, &mut s.attn);
            s.input.set(&s.attn, t, q_dim, layer.wo.wants_quantized());
            matmul(&layer.wo, &s.input, &mut s.b);
            for (x, y) in s.x.iter_mut().zip(&s.b) {
                *x += y;
            }
            // Feed-forward.
            rms_norm(&s.x, &layer.ffn_norm, c.eps, &mut s.h);
            s.input.set(&s.h, t, c.dim, layer.gate_up.wants_quantized());
            matmul(&layer.gate_up, &s.input, &mut s.a);
            s.h.clear();
            for row in s.a.chunks(2 * c.ffn_dim) {
                let (gate, up) = row.split_at(c.ffn_dim);
                s.h.extend(
                    gate.iter()
                        .zip(up)
                        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u),
                );
            }
            s.input
                .set(&s.h, t, c.ffn_dim, layer.down.wants_quantized());
            matmul(&layer.down, &s.input, &mut s.b);
            for (x, y) in s.x.iter_mut().zip(&s.b) {
                *x += y;
            }
        }
        self.len = end;
        let last = &s.x[(t - 1) * c.dim..];
        rms_norm(last, &self.output_norm, c.eps, &mut s.h);
        let output = self.output.as_ref().unwrap_or(&self.embedding);
        s.input.set(&s.h, 1, c.dim, output.wants_quantized());
        let mut logits = Vec::with_capacity(c.vocab);
        matmul(output, &s.input, &mut logits);
        Ok(logits)
    }
}

fn stack(parts: &[&Matrix]) -> Result<Matrix, LlmError> {
    let unequal = || LlmError::Malformed("projections of unequal widths".into());
    if let Some(m) = Matrix::stack(parts) {
        return Ok(m);
    }
    // Mixed formats in one file: all as Q8_0, or as f32 where a width is not a block multiple.
    let common: Vec<Matrix> = match parts.iter().map(|m| m.to_q8_0()).collect() {
        Some(q8) => q8,
        None => parts.iter().map(|m| m.to_f32_matrix()).collect(),
    };
    Matrix::stack(&common.iter().collect::<Vec<_>>()).ok_or_else(unequal)
}

/// candle's `rms_norm`: `x / sqrt(mean(x^2) + eps) * w`, per row of `w.len()` values.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.clear();
    for row in x.chunks(w.len()) {
        let sum2: f32 = row.iter().map(|v| v * v).sum();
        let scale = (sum2 / w.len() as f32 + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, g)| v / scale * g));
    }
}

/// cos and sin of every (position, pair) for `pos..pos + t`, computed as candle does (f32
/// inverse frequencies `1 / base^(2i/d)` times the f32 position).
fn rope_table(c: &Config, pos: usize, t: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
    let half = c.head_dim / 2;
    cos.clear();
    sin.clear();
    for p in pos..pos + t {
        for i in 0..half {
            let theta = 1.0 / c.rope_base.powf((2 * i) as f32 / c.head_dim as f32);
            let angle = p as f32 * theta;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
}

/// Interleaved RoPE (pairs `2i, 2i + 1`), as GGUF llama weights expect.
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// Causal grouped-query attention of the `t` new positions (their queries in `qkv`, rows of
/// `width`) over the cache, into `out` (`t x n_head * head_dim`).
fn attention(
    c: &Config,
    cache: &Cache,
    qkv: &[f32],
    width: usize,
    pos: usize,
    t: usize,
    out: &mut Vec<f32>,
) {
    let hd = c.head_dim;
    let kv_dim = c.n_kv_head * hd;
    let group = c.n_head / c.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    out.clear();
    out.resize(t * c.n_head * hd, 0.0);
    let one = |i: usize, dst: &mut [f32], scores: &mut Vec<f32>| {
        let (k, head) = (i / c.n_head, i % c.n_head);
        let q = &qkv[k * width + head * hd..k * width + (head + 1) * hd];
        let kv = (head / group) * hd;
        let head = quant::Head {
            keys: &cache.k,
            values: &cache.v,
            stride: kv_dim,
            offset: kv,
            positions: pos + k + 1,
            scale,
        };
        head.attend(q, scores, dst);
    };
    let work = t * c.n_head * (pos + t) * hd;
    if work < 256 * 1024 {
        let mut scores = Vec::new();
        for (i, dst) in out.chunks_mut(hd).enumerate() {
            one(i, dst, &mut scores);
        }
    } else {
        out.par_chunks_mut(hd)
            .enumerate()
            .for_each_init(Vec::new, |scores, (i, dst)| one(i, dst, scores));
    }
}
