//! The request and response of one generation, in Ollama's terms, and the pure parts of the
//! generation loop: option checks, UTF-8 reassembly of token bytes, stop-string holding.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::LlmError;

/// What to continue: text (tokenized with the model's tokenizer, control tokens matched whole)
/// or token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Prompt text, e.g. the output of [`crate::ChatTemplate::render`].
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
}

/// Sampling and length options, named and defaulted as Ollama's `options`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// 0 is greedy (argmax). Default 0.8.
    pub temperature: f64,
    /// Keep the k most likely tokens; 0 keeps all. Default 40.
    pub top_k: usize,
    /// Nucleus sampling; 1.0 keeps all. Default 0.9.
    pub top_p: f64,
    /// Drop tokens less likely than `min_p` times the most likely one. Default 0.0.
    pub min_p: f64,
    /// Sampling seed; `None` draws one from the clock.
    pub seed: Option<u64>,
    /// Penalty on tokens seen in the last `repeat_last_n`; 1.0 is none. Default 1.1.
    pub repeat_penalty: f32,
    /// How far back the penalty looks: 0 disables it, -1 means `num_ctx`. Default 64.
    pub repeat_last_n: i32,
    /// Most tokens to generate; `None` (Ollama's -1) runs until the context is full.
    pub num_predict: Option<usize>,
    /// Context window (prompt plus generated tokens), capped at the model's. Default 4096.
    pub num_ctx: usize,
    /// Prompt tokens evaluated per forward pass: bounds the attention mask and activations of a
    /// long prompt. Default 512.
    pub num_batch: usize,
    /// Generation stops before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            seed: None,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            num_predict: None,
            num_ctx: 4096,
            num_batch: 512,
            stop: Vec::new(),
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding with no repeat penalty: the deterministic settings tests use.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..Self::default()
        }
    }

    /// Refuses values that have no meaning.
    pub fn check(&self) -> Result<(), LlmError> {
        let bad = |m: String| Err(LlmError::InvalidRequest(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature {} (must be >= 0)", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top_p {} (must be in [0, 1])", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} (must be in [0, 1])", self.min_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(format!(
                "repeat_penalty {} (must be > 0)",
                self.repeat_penalty
            ));
        }
        if self.repeat_last_n < -1 {
            return bad(format!(
                "repeat_last_n {} (must be >= -1)",
                self.repeat_last_n
            ));
        }
        if self.num_batch == 0 {
            return bad("num_batch 0".into());
        }
        if self.num_ctx == 0 {
            return bad("num_ctx 0".into());
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("an empty stop string".into());
        }
        Ok(())
    }
}

/// The shape the output must take, as Ollama's `format` field names it: enforced token by token
/// by masking the logits of every token the grammar does not allow (see [`crate::constrain`]).
///
/// The output is compact JSON (`{"a":1}`: no whitespace between tokens), and nothing follows the
/// closing bracket: generation ends with [`DoneReason::Stop`] as soon as the value is complete. If
/// `num_predict` or the context runs out first the value is cut off, as in Ollama.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// Ollama's `"json"`: any JSON object.
    Json,
    /// A JSON schema (an object): the output is an instance of it. A schema that is invalid,
    /// uses a keyword the compiler does not implement, or is over the [`crate::FormatLimits`]
    /// is refused with [`LlmError::InvalidRequest`].
    JsonSchema(serde_json::Value),
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// Sampling and length options.
    pub options: GenerateOptions,
    /// Set from another thread to stop between tokens (also between prompt chunks).
    pub cancel: Option<Arc<AtomicBool>>,
    /// The shape the output must take; `None` is free text.
    pub format: Option<Format>,
}

impl GenerateRequest {
    /// A request for `prompt` text with `options`.
    pub fn text(prompt: impl Into<String>, options: GenerateOptions) -> Self {
        Self {
            prompt: Prompt::Text(prompt.into()),
            options,
            cancel: None,
            format: None,
        }
    }

    /// The same request with its output constrained to `format`.
    pub fn with_format(self, format: Format) -> Self {
        Self {
            format: Some(format),
            ..self
        }
    }
}

/// Why generation ended, as Ollama's `done_reason` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `num_predict` tokens, or the context window is full.
    Length,
    /// The callback broke off or the cancel flag was set.
    Cancelled,
}

impl DoneReason {
    /// Ollama's spelling ("stop", "length"); "cancelled" has no Ollama twin (the client left).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Counts and durations as Ollama's final response reports them (durations in nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Prompt tokens evaluated.
    pub prompt_eval_count: usize,
    /// Time evaluating the prompt.
    pub prompt_eval_duration: u64,
    /// Tokens generated (the end-of-generation token included, as llama.cpp counts).
    pub eval_count: usize,
    /// Time generating them.
    pub eval_duration: u64,
    /// Time loading the model for this request: 0 here, since the model is loaded already; a
    /// server that loads on demand adds [`crate::LlmModel::load_duration`].
    pub load_duration: u64,
    /// The whole request, tokenization included.
    pub total_duration: u64,
}

impl Timings {
    /// Prompt tokens per second (0 when nothing was timed).
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_eval_count, self.prompt_eval_duration)
    }

    /// Generated tokens per second (0 when nothing was timed).
    pub fn eval_tokens_per_second(&self) -> f64 {
        per_second(self.eval_count, self.eval_duration)
    }
}

fn per_second(count: usize, nanos: u64) -> f64 {
    if nanos == 0 {
        0.0
    } else {
        count as f64 * 1e9 / nanos as f64
    }
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOutput {
    /// The text passed to the callback, concatenated.
    pub text: String,
    /// The generated token ids (the end-of-generation token included).
    pub tokens: Vec<u32>,
    /// The prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// Why it ended.
    pub done_reason: DoneReason,
    /// Counts and durations.
    pub timings: Timings,
}

/// Reassembles token bytes into text, releasing only whole UTF-8 characters: a character whose
/// bytes are split over tokens is held until its last byte arrives.
#[derive(Debug, Default)]
pub(crate) struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds `bytes`; returns the text now complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never be valid: one replacement character, go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Drops what is left at the end: only ever the first bytes of a character the generation
    /// stopped before finishing (invalid bytes were replaced as they came), which are no text.
    pub(crate) fn finish(&mut self) {
        self.pending.clear();
    }
}

/// Holds back text that could be the start of a stop string, so that a stop string split over
/// tokens never reaches the caller.
#[derive(Debug)]
pub(crate) struct StopFilter {
    stops: Vec<String>,
    held: String,
}

/// What [`StopFilter::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filtered {
    /// Text safe to emit; go on.
    Emit(String),
    /// A stop string was found: emit this text (what came before it) and stop.
    Stop(String),
}

impl StopFilter {
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.to_vec(),
            held: String::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> Filtered {
        self.held.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let before = self.held[..at].to_string();
            self.held.clear();
            return Filtered::Stop(before);
        }
        // The longest tail of `held` that begins some stop string stays held.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep].to_string();
        self.held.drain(..keep);
        Filtered::Emit(emit)
    }

    /// Text still held when generation ends for another reason: it was no stop string.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_characters_split_over_tokens_are_released_whole() {
        let mut a = Utf8Assembler::default();
        let snowman = "☃".as_bytes(); // 3 bytes
        assert_eq!(a.push(&snowman[..1]), "");
        assert_eq!(a.push(&snowman[1..2]), "");
        assert_eq!(a.push(&[snowman[2], b'x']), "☃x");
        let emoji = "😀".as_bytes(); // 4 bytes
        assert_eq!(a.push(&[b'a', emoji[0], emoji[1]]), "a");
        assert_eq!(a.push(&emoji[2..]), "😀");
        assert_eq!(a.push(&[0xff, b'b']), "\u{fffd}b");
        assert_eq!(a.push(&emoji[..2]), "");
        a.finish();
        assert_eq!(a.push(b"z"), "z");
    }

    #[test]
    fn a_stop_string_split_over_pushes_never_leaks() {
        let mut f = StopFilter::new(&["<END>".to_string(), "\n\n".to_string()]);
        assert_eq!(f.push("Hello <"), Filtered::Emit("Hello ".into()));
        assert_eq!(f.push("EN"), Filtered::Emit(String::new()));
        assert_eq!(f.push("D> and more"), Filtered::Stop(String::new()));
        let mut f = StopFilter::new(&["<END>".to_string()]);
        assert_eq!(f.push("a <E"), Filtered::Emit("a ".into()));
        assert_eq!(f.push("x"), Filtered::Emit("<Ex".into()));
        assert_eq!(f.push("tail <EN"), Filtered::Emit("tail ".into()));
        assert_eq!(f.finish(), "<EN");
        let mut f = StopFilter::new(&["\n\n".to_string()]);
        assert_eq!(f.push("one\n"), Filtered::Emit("one".into()));
        assert_eq!(f.push("\ntwo"), Filtered::Stop(String::new()));
    }

    #[test]
    fn options_out_of_range_are_refused() {
        assert!(GenerateOptions::default().check().is_ok());
        for bad in [
            GenerateOptions {
                temperature: -1.0,
                ..Default::default()
            },
            GenerateOptions {
                temperature: f64::NAN,
                ..Default::default()
            },
            GenerateOptions {
                top_p: 1.5,
                ..Default::default()
            },
            GenerateOptions {
                min_p: -0.1,
                ..Default::default()
            },
            GenerateOptions {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            GenerateOptions {
                repeat_last_n: -2,
                ..Default::default()
            },
            GenerateOptions {
                num_batch: 0,
                ..Default::default()
            },
            GenerateOptions {
                num_ctx: 0,
                ..Default::default()
            },
            GenerateOptions {
                stop: vec![String::new()],
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.check(), Err(LlmError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }
}
