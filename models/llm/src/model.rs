//! [`LlmModel`]: a GGUF llama model run by the crate's engine (candle's `quantized_llama` for
//! files the engine does not run), with its tokenizer and chat template, generating one request
//! at a time.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::io::{Cursor, Read, Seek};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;

use crate::engine::Engine;

use crate::chat::{CHATML, ChatMessage, ChatTemplate};
use crate::constrain::{Constrainer, FormatLimits, FormatMatcher};
use crate::generate::{
    DoneReason, Filtered, Format, GenerateOptions, GenerateOutput, GenerateRequest, Prompt,
    StopFilter, Timings, Utf8Assembler,
};
use crate::gguf::{LoadLimits, md_str, md_u64, read_content};
use crate::tokenizer::GgufTokenizer;
use crate::{LlmError, no_panic};

/// How weights are held in memory after loading.
///
/// The crate's engine ([`crate::engine`]) multiplies Q4_1 (and Q4_0, held as Q4_1) and Q8_0
/// weights by activations quantized per 32 values with AVX2 kernels, and f32 weights in f32.
/// [`Weights::F32`] is also exact: its greedy output equals an independent NumPy forward pass
/// on the dequantized weights token for token, where quantized activations flip near-ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// As stored in the file (least memory).
    #[default]
    AsStored,
    /// Matrices re-encoded to Q8_0 (about 1.5x the memory of Q4_1 as the engine holds it).
    Q8_0,
    /// Matrices dequantized to f32 (exact; about 5x the memory of Q4_1).
    F32,
}

/// What a model file says of itself, for listings such as Ollama's `/api/show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.architecture` (always `llama` here).
    pub architecture: String,
    /// `general.name`, if the file has one.
    pub name: Option<String>,
    /// `general.license`, if the file has one.
    pub license: Option<String>,
    /// Elements of every tensor in the file.
    pub parameter_count: u64,
    /// The GGML type holding most of the parameters as stored, e.g. `Q4_1`.
    pub file_type: String,
    /// The type the matrices are held as after loading ([`Weights`]).
    pub loaded_type: String,
    /// `llama.context_length` as declared.
    pub context_length: u64,
    /// `llama.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `llama.block_count`.
    pub block_count: Option<u64>,
    /// `llama.attention.head_count`.
    pub head_count: Option<u64>,
    /// `llama.attention.head_count_kv`.
    pub head_count_kv: Option<u64>,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// The chat template's source (`tokenizer.chat_template`, or ChatML when absent).
    pub chat_template: String,
}

impl ModelInfo {
    fn read(
        content: &gguf_file::Content,
        vocab_size: usize,
        template: &str,
        weights: Weights,
    ) -> Result<Self, LlmError> {
        let optional = |key: &str| match content.metadata.get(key) {
            Some(gguf_file::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let mut by_type: Vec<(GgmlDType, u64)> = Vec::new();
        let mut parameter_count = 0u64;
        for info in content.tensor_infos.values() {
            let n = info.shape.elem_count() as u64;
            parameter_count = parameter_count.saturating_add(n);
            match by_type.iter_mut().find(|(t, _)| *t == info.ggml_dtype) {
                Some((_, total)) => *total += n,
                None => by_type.push((info.ggml_dtype, n)),
            }
        }
        let file_type = by_type
            .iter()
            .max_by_key(|(_, n)| *n)
            .map(|(t, _)| ggml_type_name(*t))
            .unwrap_or_default();
        let loaded_type = match weights {
            Weights::AsStored => file_type.clone(),
            Weights::Q8_0 => "Q8_0".into(),
            Weights::F32 => "F32".into(),
        };
        Ok(Self {
            architecture: md_str(content, "general.architecture")?.to_string(),
            name: optional("general.name"),
            license: optional("general.license"),
            parameter_count,
            file_type,
            loaded_type,
            context_length: md_u64(content, "llama.context_length")?.unwrap_or(0),
            embedding_length: md_u64(content, "llama.embedding_length")?,
            block_count: md_u64(content, "llama.block_count")?,
            head_count: md_u64(content, "llama.attention.head_count")?,
            head_count_kv: md_u64(content, "llama.attention.head_count_kv")?,
            vocab_size,
            chat_template: template.to_string(),
        })
    }
}

/// GGML's own name of a type (`Q4_1`, `F32`, ...), as Ollama reports `quantization_level`.
fn ggml_type_name(t: GgmlDType) -> String {
    format!("{t:?}").to_uppercase()
}

/// A loaded model. Generation mutates the KV cache, so it takes `&mut self`; a server shares
/// one behind a mutex.
pub struct LlmModel {
    info: ModelInfo,
    backend: Backend,
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
    context_length: usize,
    load_duration: Duration,
    device: Device,
    format_limits: FormatLimits,
    /// Built on the first request with a `format`, then reused (with its grammar cache).
    constrainer: Option<Constrainer>,
}

// A server moves the model to its worker thread and shares it behind a mutex.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<LlmModel>();
};

impl std::fmt::Debug for LlmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmModel")
            .field("vocab_size", &self.tokenizer.vocab_size())
            .field("context_length", &self.context_length)
            .field("load_duration", &self.load_duration)
            .finish_non_exhaustive()
    }
}

impl LlmModel {
    /// Loads the GGUF file at `path` within `limits` (architecture "llama"), weights as stored.
    pub fn load(path: &Path, limits: &LoadLimits) -> Result<Self, LlmError> {
        Self::load_as(path, limits, Weights::AsStored)
    }

    /// Loads the GGUF file at `path` within `limits`, holding the weights as `weights` says.
    pub fn load_as(path: &Path, limits: &LoadLimits, weights: Weights) -> Result<Self, LlmError> {
        let started = Instant::now();
        let (content, mut reader) = read_content(path, limits)?;
        let arch = md_str(&content, "general.architecture")?;
        if arch != "llama" {
            return Err(LlmError::Unsupported(format!(
                "general.architecture = {arch:?} (only \"llama\" is run)"
            )));
        }
        let tokenizer = GgufTokenizer::from_gguf(&content, limits)?;
        let declared = md_u64(&content, "llama.context_length")?.ok_or_else(|| {
            LlmError::Unsupported("no llama.context_length in the metadata".into())
        })?;
        if declared == 0 {
            return Err(LlmError::Malformed("llama.context_length is 0".into()));
        }
        let context_length = usize::try_from(declared)
            .unwrap_or(usize::MAX)
            .min(limits.max_context);
        // The embedding table must cover the vocabulary, or a token id would index past it.
        match content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims().to_vec())
        {
            Some(dims) if dims.first() == Some(&tokenizer.vocab_size()) => {}
            Some(dims) => {
                return Err(LlmError::Malformed(format!(
                    "token_embd.weight is {dims:?} for a vocabulary of {}",
                    tokenizer.vocab_size()
                )));
            }
            None => return Err(LlmError::Malformed("no token_embd.weight tensor".into())),
        }
        let text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token_text(i))
                .unwrap_or("")
                .to_string()
        };
        let source = match content.metadata.get("tokenizer.chat_template") {
            Some(_) => md_str(&content, "tokenizer.chat_template")?.to_string(),
            None => CHATML.to_string(),
        };
        let template = ChatTemplate::new(&source, &text(tokenizer.bos()), &text(tokenizer.eos()))?;
        let info = ModelInfo::read(&content, tokenizer.vocab_size(), &source, weights)?;
        let device = Device::Cpu;
        let experts = md_u64(&content, "llama.expert_count")?.unwrap_or(0);
        let backend = no_panic("loading the weights", || {
            if experts <= 1 {
                return Engine::from_gguf(&content, &mut reader, weights, context_length)
                    .map(|engine| Backend::Engine(Box::new(engine)));
            }
            // A mixture of experts, which the engine does not run: candle's model, once the
            // numbers it sizes tables by are checked (it allocates positions x rope dimension
            // before reading a tensor).
            candle_can_run(&content)?;
            let target = match weights {
                Weights::AsStored => {
                    return ModelWeights::from_gguf(content, &mut reader, &device)
                        .map(|w| Backend::Candle(Box::new(w)))
                        .map_err(LlmError::from);
                }
                Weights::Q8_0 => GgmlDType::Q8_0,
                Weights::F32 => GgmlDType::F32,
            };
            let (content, mut memory) = reencode(content, &mut reader, target, &device)?;
            ModelWeights::from_gguf(content, &mut memory, &device)
                .map(|w| Backend::Candle(Box::new(w)))
                .map_err(LlmError::from)
        })?;
        Ok(Self {
            info,
            backend,
            tokenizer,
            template,
            context_length,
            load_duration: started.elapsed(),
            device,
            format_limits: FormatLimits::default(),
            constrainer: None,
        })
    }

    /// What the file says of the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The usable context window: the model's, capped by [`LoadLimits::max_context`].
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// How long [`Self::load`] took.
    pub fn load_duration(&self) -> Duration {
        self.load_duration
    }

    /// The bounds on a request's `format` (default [`FormatLimits::default`]).
    pub fn format_limits(&self) -> &FormatLimits {
        &self.format_limits
    }

    /// Sets the bounds on a request's `format`; grammars compiled under the old ones are
    /// dropped.
    pub fn set_format_limits(&mut self, limits: FormatLimits) {
        self.format_limits = limits;
        self.constrainer = None;
    }

    /// The matcher for `format`, building the constrainer on first use.
    fn start_format(&mut self, format: &Format) -> Result<FormatMatcher, LlmError> {
        let constrainer = match &mut self.constrainer {
            Some(c) => c,
            slot => slot.insert(Constrainer::new(
                &self.tokenizer,
                self.format_limits.clone(),
            )?),
        };
        constrainer.start(format)
    }

    /// The prompt text for `messages` through the model's chat template.
    pub fn chat_prompt(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, LlmError> {
        self.template.render(messages, add_generation_prompt)
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, LlmError> {
        let ids = match prompt {
            Prompt::Text(text) => self.tokenizer.encode(text)?,
            Prompt::Tokens(ids) => {
                let vocab = self.tokenizer.vocab_size();
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(LlmError::InvalidRequest(format!(
                        "token id {bad}, the vocabulary has {vocab}"
                    )));
                }
                ids.clone()
            }
        };
        if ids.is_empty() {
            return Err(LlmError::InvalidRequest("the prompt is empty".into()));
        }
        Ok(ids)
    }

    /// Generates a continuation of `request.prompt`, passing text to `on_token` as it is
    /// produced (whole UTF-8 characters only, never any part of a stop string). `on_token`
    /// returning `Break` ends generation with [`DoneReason::Cancelled`].
    ///
    /// The KV cache starts empty for every request. A prompt that does not fit `num_ctx` is
    /// refused; generation stops with [`DoneReason::Length`] when the window is full.
    ///
    /// With a `format`, its grammar is compiled (or taken from the cache) before the prompt is
    /// evaluated, every step samples only among the tokens it allows, and generation ends with
    /// [`DoneReason::Stop`] once the value is complete.
    pub fn generate(
        &mut self,
        request: &GenerateRequest,
        mut on_token: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerateOutput, LlmError> {
        let started = Instant::now();
        let options = &request.options;
        options.check()?;
        let num_ctx = options.num_ctx.min(self.context_length);
        let prompt = self.prompt_ids(&request.prompt)?;
        if prompt.len() >= num_ctx {
            return Err(LlmError::PromptTooLong {
                tokens: prompt.len(),
                num_ctx,
            });
        }
        let mut constraint = match &request.format {
            Some(format) => Some(self.start_format(format)?),
            None => None,
        };
        let cancelled = || {
            request
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
        };
        let mut output = GenerateOutput {
            text: String::new(),
            tokens: Vec::new(),
            prompt_tokens: prompt.clone(),
            done_reason: DoneReason::Cancelled,
            timings: Timings::default(),
        };

        self.backend.clear();
        let prompt_started = Instant::now();
        let mut logits = None;
        let mut pos = 0;
        for chunk in prompt.chunks(options.num_batch) {
            if cancelled() {
                output.timings.total_duration = nanos(started.elapsed());
                return Ok(output);
            }
            logits = Some(self.backend.forward(chunk, pos)?);
            pos += chunk.len();
        }
        output.timings.prompt_eval_count = prompt.len();
        output.timings.prompt_eval_duration = nanos(prompt_started.elapsed());
        let Some(mut logits) = logits else {
            return Err(LlmError::InvalidRequest("the prompt is empty".into()));
        };

        let eval_started = Instant::now();
        let mut sampler = sampler(options);
        let mut utf8 = Utf8Assembler::default();
        let mut stops = StopFilter::new(&options.stop);
        let mut history = prompt;
        let max_new = options.num_predict.unwrap_or(usize::MAX);
        let done = loop {
            if output.tokens.len() >= max_new || pos >= num_ctx {
                break DoneReason::Length;
            }
            if cancelled() {
                break DoneReason::Cancelled;
            }
            let next = self.sample(
                &mut sampler,
                &logits,
                options,
                &history,
                num_ctx,
                constraint.as_mut(),
            )?;
            output.tokens.push(next);
            history.push(next);
            if self.tokenizer.is_end_of_generation(next) {
                break DoneReason::Stop;
            }
            if let Some(c) = constraint.as_mut() {
                c.advance(next)?;
            }
            if !self.tokenizer.is_control(next) {
                let text = utf8.push(self.tokenizer.token_bytes(next));
                let (emit, stop) = match stops.push(&text) {
                    Filtered::Emit(t) => (t, false),
                    Filtered::Stop(t) => (t, true),
                };
                if !emit.is_empty() {
                    output.text.push_str(&emit);
                    if on_token(&emit).is_break() {
                        break DoneReason::Cancelled;
                    }
                }
                if stop {
                    break DoneReason::Stop;
                }
            }
            if constraint.as_ref().is_some_and(FormatMatcher::is_complete) {
                break DoneReason::Stop;
            }
            logits = self.backend.forward(&[next], pos)?;
            pos += 1;
        };
        if done != DoneReason::Cancelled {
            // Text held back as a possible stop string was none; a half character is dropped.
            utf8.finish();
            let rest = stops.finish();
            if !rest.is_empty() {
                output.text.push_str(&rest);
                let _ = on_token(&rest);
            }
        }
        output.done_reason = done;
        output.timings.eval_count = output.tokens.len();
        output.timings.eval_duration = nanos(eval_started.elapsed());
        output.timings.total_duration = nanos(started.elapsed());
        Ok(output)
    }

    fn sample(
        &self,
        sampler: &mut LogitsProcessor,
        logits: &Tensor,
        options: &GenerateOptions,
        history: &[u32],
        num_ctx: usize,
        constraint: Option<&mut FormatMatcher>,
    ) -> Result<u32, LlmError> {
        let logits = logits.clone();
        let logits = match constraint {
            Some(c) => {
                let mut values = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                c.mask(&mut values)?;
                let n = values.len();
                Tensor::from_vec(values, n, &self.device)?
            }
            None => logits,
        };
        let last_n = match options.repeat_last_n {
            -1 => num_ctx,
            n => usize::try_from(n).unwrap_or(0),
        };
        let logits = if options.repeat_penalty != 1.0 && last_n > 0 {
            let from = history.len().saturating_sub(last_n);
            candle_transformers::utils::apply_repeat_penalty(
                &logits,
                options.repeat_penalty,
                &history[from..],
            )?
        } else {
            logits
        };
        let min_p = options.min_p as f32;
        let next = sampler.sample_f(&logits, |probs| {
            if min_p > 0.0 {
                let max = probs.iter().copied().fold(0.0f32, f32::max);
                for p in probs.iter_mut() {
                    if *p < min_p * max {
                        *p = 0.0;
                    }
                }
            }
        })?;
        Ok(next)
    }
}

/// Refuses what candle's `quantized_llama` would size an allocation by without bounds: the
/// RoPE dimension must be the head size (embedding / heads), even and at most 1,024.
fn candle_can_run(content: &gguf_file::Content) -> Result<(), LlmError> {
    let get = |key: &str| md_u64(content, key).map(|v| v.unwrap_or(0));
    let (dim, heads, rope) = (
        get("llama.embedding_length")?,
        get("llama.attention.head_count")?,
        get("llama.rope.dimension_count")?,
    );
    let head_dim = dim.checked_div(heads).unwrap_or(0);
    if heads == 0
        || !dim.is_multiple_of(heads)
        || rope != head_dim
        || !rope.is_multiple_of(2)
        || rope > 1024
    {
        return Err(LlmError::Malformed(format!(
            "llama.rope.dimension_count {rope} for {heads} heads over an embedding of {dim}"
        )));
    }
    Ok(())
}

/// What runs the network: this crate's engine, or candle's model for files it does not run.
enum Backend {
    Engine(Box<Engine>),
    Candle(Box<ModelWeights>),
}

impl Backend {
    fn clear(&mut self) {
        match self {
            Self::Engine(e) => e.clear(),
            Self::Candle(w) => w.clear_kv_cache(),
        }
    }

    /// The next-token logits (one row) after `tokens` at positions from `pos`.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor, LlmError> {
        match self {
            Self::Engine(e) => {
                let logits = e.forward(tokens, pos)?;
                let n = logits.len();
                Ok(Tensor::from_vec(logits, n, &Device::Cpu)?)
            }
            Self::Candle(w) => {
                let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
                Ok(w.forward(&input, pos)?.squeeze(0)?)
            }
        }
    }
}

/// The same model with its matrices re-encoded as `target`, as an in-memory GGUF file.
fn reencode(
    content: gguf_file::Content,
    reader: &mut (impl Read + Seek),
    target: GgmlDType,
    device: &Device,
) -> Result<(gguf_file::Content, Cursor<Vec<u8>>), LlmError> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let stored = content.tensor(reader, name, device)?;
        let dims = stored.shape().dims().to_vec();
        let fits = dims.len() == 2 && dims[1] % target.block_size() == 0;
        let tensor = if fits && stored.dtype() != target {
            QTensor::quantize(&stored.dequantize(device)?, target)?
        } else {
            stored
        };
        tensors.push(tensor);
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let named: Vec<(&str, &QTensor)> = names
        .iter()
        .map(|n| n.as_str())
        .zip(tensors.iter())
        .collect();
    let mut memory = Cursor::new(Vec::new());
    gguf_file::write(&mut memory, &metadata, &named)?;
    memory.set_position(0);
    let content = gguf_file::Content::read(&mut memory)?;
    Ok((content, memory))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The sampler for `options`: argmax at temperature 0, else seeded top-k / top-p sampling.
fn sampler(options: &GenerateOptions) -> LogitsProcessor {
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let temperature = options.temperature;
    let top_p = options.top_p;
    let sampling = if temperature <= 0.0 {
        Sampling::ArgMax
    } else {
        match (options.top_k, top_p > 0.0 && top_p < 1.0) {
            (0, false) => Sampling::All { temperature },
            (0, true) => Sampling::TopP {
                p: top_p,
                temperature,
            },
            (k, false) => Sampling::TopK { k, temperature },
            (k, true) => Sampling::TopKThenTopP {
                k,
                p: top_p,
                temperature,
            },
        }
    };
    LogitsProcessor::from_sampling(seed, sampling)
}
