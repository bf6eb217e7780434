//! Constrained decoding for Ollama's `format` field: the output must be JSON (`"json"`: any
//! object) or an instance of a JSON schema, enforced token by token. Before every sampling step
//! the logits of the tokens the grammar does not allow next are set to -inf (before the repeat
//! penalty and the sampler, as llama.cpp applies its grammar); the sampled token then advances
//! the grammar. Generation ends when the grammar is complete, without waiting for an EOS token.
//!
//! The grammar engine is `llguidance` (guidance-ai, MIT; also llama.cpp's optional LLGuidance
//! backend and one of vLLM's and SGLang's structured-output backends). It compiles a schema
//! straight to an Earley grammar over a lazily built lexer and computes each mask by walking a
//! trie of the vocabulary's token bytes (`toktrie`): compiling SmolLM2's sentiment schema takes
//! about a millisecond, a mask tens of microseconds, and recursive schemas (`$ref` cycles) work.
//! `outlines-core` (the other maintained Rust crate) turns a schema into one regular expression
//! and builds a vocabulary-wide DFA index for it before the first token: regular languages
//! only (recursion cut to a fixed depth), and an index whose size and build time grow with the
//! schema. Every bound llguidance offers is set from [`FormatLimits`]; schemas are also checked
//! for size and depth before they reach it.
//!
//! Output is compact (`{"a":1}`): llguidance's `whitespace_flexible` is off, so no whitespace
//! may be generated between JSON tokens. With it on, the grammar allows any run of whitespace
//! before, between and after values, where a small model can loop until `num_predict` is spent.
//!
//! Keywords llguidance does not implement (`uniqueItems`, `contains`, ...) are refused rather
//! than ignored: the output could otherwise fail the caller's own validation. Only local `$ref`s
//! (`#/...`) are resolved (the crate's `referencing` feature, for remote ones, is off).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};

use crate::generate::Format;
use crate::tokenizer::GgufTokenizer;
use crate::{LlmError, no_panic};

/// Bounds on what one `format` may cost: checked before compiling (schema size and depth) and
/// handed to llguidance (grammar size, lexer work per compile and per token, lexer states).
#[derive(Debug, Clone, PartialEq)]
pub struct FormatLimits {
    /// Longest schema, as compact JSON text. Default 64 KiB.
    pub max_schema_bytes: usize,
    /// Deepest nesting of objects and arrays in the schema document. Default 32.
    pub max_schema_depth: usize,
    /// Largest compiled grammar, in symbols (llguidance's `max_grammar_size`). Default 100,000.
    pub max_grammar_size: usize,
    /// Lexer work allowed while compiling (llguidance's `initial_lexer_fuel`, about 50,000 a
    /// millisecond). Default 1,000,000.
    pub compile_fuel: u64,
    /// Lexer work allowed for one token mask (`step_lexer_fuel`, about 14,000 a millisecond).
    /// Default 200,000.
    pub step_fuel: u64,
    /// Most lexer states one grammar may build (`max_lexer_states`; 1-2 kB each, kept while the
    /// grammar is cached). Default 20,000.
    pub max_lexer_states: usize,
    /// A compile that took longer is refused. Measured after the fact: the fuel and size limits
    /// are what bound the work; this catches a host much slower than they assume. Default 2 s.
    pub max_compile_time: Duration,
    /// Compiled grammars kept for reuse, keyed by schema text, least recently used dropped
    /// first; 0 keeps none. Default 16.
    pub cache_entries: usize,
}

impl Default for FormatLimits {
    fn default() -> Self {
        Self {
            max_schema_bytes: 64 << 10,
            max_schema_depth: 32,
            max_grammar_size: 100_000,
            compile_fuel: 1_000_000,
            step_fuel: 200_000,
            max_lexer_states: 20_000,
            max_compile_time: Duration::from_secs(2),
            cache_entries: 16,
        }
    }
}

/// The schema Ollama's `format: "json"` stands for: llama.cpp's JSON grammar, whose root is an
/// object.
fn json_object_schema() -> Value {
    json!({"type": "object"})
}

/// How llguidance lays out the JSON it allows: compact separators, no free whitespace.
fn layout() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ",",
        "key_separator": ":",
    })
}

fn refuse(message: String) -> LlmError {
    LlmError::InvalidRequest(format!("format: {message}"))
}

/// llguidance's error text on one line, bounded (it can quote a whole grammar).
fn short(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}

/// Refuses a schema that is not an object or is nested deeper than `max_depth`; walks with an
/// explicit stack, so a hostile depth cannot overflow ours.
fn check_shape(schema: &Value, max_depth: usize) -> Result<(), LlmError> {
    if !schema.is_object() {
        return Err(refuse(format!(
            "a schema must be a JSON object, not {}",
            kind_of(schema)
        )));
    }
    let mut stack = vec![(schema, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > max_depth {
            return Err(refuse(format!(
                "the schema is nested deeper than {max_depth} levels"
            )));
        }
        match value {
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compiles formats for one model's vocabulary and keeps the recent ones. Built once per
/// [`crate::LlmModel`], on the first request with a format (the token trie and its slices take
/// a moment for a 49k vocabulary).
pub(crate) struct Constrainer {
    factory: ParserFactory,
    limits: FormatLimits,
    /// Fresh matchers by schema text, most recently used last.
    cache: VecDeque<Cached>,
    /// Grammars compiled (cache misses), for tests.
    compiled: usize,
}

/// A compiled grammar. Matchers cloned from it share its lexer's state cache (states built for
/// one request serve the next), so one that fails mid-generation (its lexer over
/// `max_lexer_states`, say) marks the entry, and the next request compiles afresh.
struct Cached {
    key: String,
    matcher: Matcher,
    failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Constrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constrainer")
            .field(
                "vocab_size",
                &self.factory.tok_env().tok_trie().vocab_size(),
            )
            .field("limits", &self.limits)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Constrainer {
    /// A token trie of `tokenizer`'s vocabulary (control tokens marked special, so no grammar
    /// can produce them as text; the end-of-generation tokens are its EOS) and a parser
    /// factory bounded by `limits`.
    pub(crate) fn new(tokenizer: &GgufTokenizer, limits: FormatLimits) -> Result<Self, LlmError> {
        let eog = tokenizer.end_of_generation_ids();
        let Some(&eos) = eog.first() else {
            return Err(LlmError::Unsupported(
                "the model declares no end-of-generation token, which `format` needs".into(),
            ));
        };
        let vocab = u32::try_from(tokenizer.vocab_size())
            .map_err(|_| LlmError::Unsupported("a vocabulary over 2^32 tokens".into()))?;
        let words: Vec<Vec<u8>> = (0..vocab)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id);
                if tokenizer.is_control(id) {
                    let mut word = Vec::with_capacity(bytes.len() + 1);
                    word.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    word.extend_from_slice(bytes);
                    word
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let info = TokRxInfo {
            tok_bos: tokenizer.bos(),
            ..TokRxInfo::new(vocab, eos)
        };
        let trie = no_panic("building the token trie", || {
            Ok(TokTrie::from(&info, &words).with_eos_tokens(&eog))
        })?;
        // Greedy tokenization is only used for forced tokens, which this loop never takes: every
        // token is sampled through the mask.
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| LlmError::Unsupported(format!("building the grammar engine: {e}")))?;
        factory.quiet();
        let bounds = factory.limits_mut();
        bounds.max_grammar_size = limits.max_grammar_size;
        bounds.initial_lexer_fuel = limits.compile_fuel;
        bounds.step_lexer_fuel = limits.step_fuel;
        bounds.max_lexer_states = limits.max_lexer_states;
        bounds.verbose_errors = false;
        Ok(Self {
            factory,
            limits,
            cache: VecDeque::new(),
            compiled: 0,
        })
    }

    /// A matcher at the start of `format`'s grammar: from the cache, or compiled within the
    /// limits. Refusals are [`LlmError::InvalidRequest`] naming the problem.
    pub(crate) fn start(&mut self, format: &Format) -> Result<FormatMatcher, LlmError> {
        let schema = match format {
            Format::Json => json_object_schema(),
            Format::JsonSchema(schema) => {
                check_shape(schema, self.limits.max_schema_depth)?;
                schema.clone()
            }
        };
        let key = schema.to_string();
        if key.len() > self.limits.max_schema_bytes {
            return Err(refuse(format!(
                "the schema is {} bytes, over the limit of {}",
                key.len(),
                self.limits.max_schema_bytes
            )));
        }
        if let Some(at) = self.cache.iter().position(|c| c.key == key) {
            let entry = self.cache.remove(at).expect("the position was just found");
            if !entry.failed.load(Ordering::Relaxed) {
                let matcher = FormatMatcher::new(entry.matcher.clone(), entry.failed.clone());
                self.cache.push_back(entry);
                return Ok(matcher);
            }
        }
        let matcher = self.compile(schema)?;
        let failed = Arc::new(AtomicBool::new(false));
        if self.limits.cache_entries > 0 {
            if self.cache.len() >= self.limits.cache_entries {
                self.cache.pop_front();
            }
            self.cache.push_back(Cached {
                key,
                matcher: matcher.clone(),
                failed: failed.clone(),
            });
        }
        Ok(FormatMatcher::new(matcher, failed))
    }

    fn compile(&mut self, mut schema: Value) -> Result<Matcher, LlmError> {
        // The layout options travel inside the schema (llguidance reads `x-guidance`); one the
        // caller sent is replaced, so output stays compact.
        if let Value::Object(map) = &mut schema {
            map.insert("x-guidance".into(), layout());
        }
        let started = Instant::now();
        // llguidance catches panics in its compiler and reports them as errors.
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(schema))
            .map_err(|e| refuse(format!("the schema does not compile: {}", short(&e))))?;
        let matcher = Matcher::new(Ok(parser));
        let took = started.elapsed();
        self.compiled += 1;
        if let Some(error) = matcher.get_error() {
            return Err(refuse(format!("the schema does not compile: {error}")));
        }
        if took > self.limits.max_compile_time {
            return Err(refuse(format!(
                "the schema took {:.1} s to compile, over the limit of {:.1} s",
                took.as_secs_f64(),
                self.limits.max_compile_time.as_secs_f64()
            )));
        }
        // A grammar nothing satisfies (`{"enum": []}`, say) has no first token. The probe is a
        // clone, so the matcher cached and handed out has never computed anything.
        match matcher.clone().compute_mask() {
            Ok(mask) if !mask.is_zero() => Ok(matcher),
            Ok(_) => Err(refuse("no output satisfies the schema".into())),
            Err(e) => Err(refuse(format!(
                "the schema does not compile: {}",
                short(&e)
            ))),
        }
    }
}

/// One request's position in its format's grammar.
pub(crate) struct FormatMatcher {
    matcher: Matcher,
    /// Tokens consumed, for error messages.
    consumed: usize,
    /// Set on failure: the cached grammar this came from is not reused.
    failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for FormatMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormatMatcher")
            .field("consumed", &self.consumed)
            .field("complete", &self.is_complete())
            .finish_non_exhaustive()
    }
}

impl FormatMatcher {
    fn new(matcher: Matcher, failed: Arc<AtomicBool>) -> Self {
        Self {
            matcher,
            consumed: 0,
            failed,
        }
    }

    fn failed(&self, error: &impl std::fmt::Display) -> LlmError {
        self.failed.store(true, Ordering::Relaxed);
        refuse(format!(
            "the grammar failed after {} tokens: {}",
            self.consumed,
            short(error)
        ))
    }

    /// Sets the logit of every token the grammar does not allow next to -inf (ids past the
    /// vocabulary too).
    pub(crate) fn mask(&mut self, logits: &mut [f32]) -> Result<(), LlmError> {
        let allowed = self.matcher.compute_mask().map_err(|e| self.failed(&e))?;
        // Few tokens are allowed at most steps: keep those, fill the rest.
        let mut kept = Vec::new();
        allowed.iter_set_entries(|id| {
            if let Some(&logit) = logits.get(id) {
                kept.push((id, logit));
            }
        });
        logits.fill(f32::NEG_INFINITY);
        for (id, logit) in kept {
            logits[id] = logit;
        }
        Ok(())
    }

    /// Advances the grammar by the sampled `token`.
    pub(crate) fn advance(&mut self, token: u32) -> Result<(), LlmError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| self.failed(&e))?;
        self.consumed += 1;
        Ok(())
    }

    /// Whether the grammar is complete: nothing but an end-of-generation token may follow.
    pub(crate) fn is_complete(&self) -> bool {
        !self.matcher.is_error() && self.matcher.is_stopped()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    use super::*;
    use crate::gguf::{LoadLimits, read_content};

    /// SmolLM2's tokenizer, read from the GGUF the integration tests use (which must be present:
    /// these tests fail rather than skip).
    fn tokenizer() -> &'static GgufTokenizer {
        static TOKENIZER: OnceLock<GgufTokenizer> = OnceLock::new();
        TOKENIZER.get_or_init(|| {
            let cache = std::env::var_os("INFERMESH_MODEL_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/infermesh/models")
                });
            let path = cache.join("smollm2-135m-instruct/model.gguf");
            let limits = LoadLimits::default();
            let (content, _) = read_content(&path, &limits).unwrap_or_else(|e| {
                panic!(
                    "{} is needed (scripts/fetch_models.sh): {e}",
                    path.display()
                )
            });
            GgufTokenizer::from_gguf(&content, &limits).expect("the tokenizer builds")
        })
    }

    fn constrainer(limits: FormatLimits) -> Constrainer {
        Constrainer::new(tokenizer(), limits).expect("the constrainer builds")
    }

    fn schema(value: Value) -> Format {
        Format::JsonSchema(value)
    }

    fn sentiment() -> Format {
        schema(json!({
            "type": "object",
            "properties": {
                "sentiment": {"enum": ["positive", "negative", "neutral"]},
                "score": {"type": "number"},
            },
            "required": ["sentiment", "score"],
        }))
    }

    /// Whether `token` is allowed next.
    fn allows(m: &mut FormatMatcher, token: u32) -> bool {
        let mut logits = vec![0.0f32; tokenizer().vocab_size()];
        m.mask(&mut logits).expect("the mask computes");
        logits[token as usize].is_finite()
    }

    /// Feeds `text`, tokenized as the model would, checking that each token is allowed first.
    fn feed(m: &mut FormatMatcher, text: &str) {
        for token in tokenizer().encode(text).expect("encodes") {
            assert!(
                allows(m, token),
                "{:?} is masked after {} tokens of {text:?}",
                tokenizer().token_text(token),
                m.consumed
            );
            m.advance(token).expect("an allowed token advances");
        }
    }

    fn id(text: &str) -> u32 {
        tokenizer()
            .token_id(text)
            .unwrap_or_else(|| panic!("{text:?} is in SmolLM2's vocabulary"))
    }

    fn refusal(c: &mut Constrainer, format: &Format) -> String {
        match c.start(format) {
            Err(LlmError::InvalidRequest(message)) => message,
            Err(other) => panic!("{format:?}: {other}, not InvalidRequest"),
            Ok(_) => panic!("{format:?} was accepted"),
        }
    }

    #[test]
    fn an_instance_of_the_schema_passes_the_mask_and_completes_the_grammar() {
        let mut c = constrainer(FormatLimits::default());
        let mut m = c.start(&sentiment()).expect("compiles");
        feed(&mut m, r#"{"sentiment":"negative","score":-0.25"#);
        assert!(!m.is_complete());
        // The value is not over: no end-of-generation token yet.
        assert!(!allows(&mut m, id("<|im_end|>")));
        feed(&mut m, "}");
        assert!(m.is_complete());
    }

    #[test]
    fn what_the_schema_forbids_is_masked() {
        let mut c = constrainer(FormatLimits::default());
        let mut m = c.start(&sentiment()).expect("compiles");
        // Compact output: no leading whitespace, no text, no control token.
        for forbidden in ["Ġ", "Ċ", "The", "[", "<|im_start|>", "<|im_end|>"] {
            assert!(!allows(&mut m, id(forbidden)), "{forbidden:?} at the start");
        }
        assert!(allows(&mut m, id("{")));
        feed(&mut m, r#"{"sentiment":""#);
        // Only the enum's values: "pos" begins one, "happy" none.
        assert!(allows(&mut m, id("pos")));
        assert!(!allows(&mut m, id("happy")));
        feed(&mut m, r#"positive","score":"#);
        // A number, not a string.
        assert!(!allows(&mut m, id("\"")));
        assert!(allows(&mut m, id("1")));
        feed(&mut m, "1");
        assert!(allows(&mut m, id("}")));
        assert!(!allows(&mut m, id("Ġ")));
    }

    #[test]
    fn integers_and_booleans_are_held_to_their_type() {
        let mut c = constrainer(FormatLimits::default());
        let format = schema(json!({
            "type": "object",
            "properties": {"count": {"type": "integer"}, "done": {"type": "boolean"}},
            "required": ["count", "done"],
            "additionalProperties": false,
        }));
        let mut m = c.start(&format).expect("compiles");
        feed(&mut m, r#"{"count":12"#);
        assert!(!allows(&mut m, id(".")), "an integer has no fraction");
        feed(&mut m, r#","done":"#);
        assert!(!allows(&mut m, id("1")));
        assert!(!allows(&mut m, id("\"")));
        feed(&mut m, "true}");
        assert!(m.is_complete());
    }

    #[test]
    fn a_recursive_schema_nests_through_its_ref() {
        let mut c = constrainer(FormatLimits::default());
        let format = schema(json!({
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "v": {"type": "integer"},
                        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    },
                    "required": ["v"],
                    "additionalProperties": false,
                },
            },
            "$ref": "#/$defs/node",
        }));
        let mut m = c.start(&format).expect("compiles");
        feed(
            &mut m,
            r#"{"v":1,"kids":[{"v":2,"kids":[{"v":3,"kids":[]}]},{"v":4"#,
        );
        feed(&mut m, r#",""#);
        // After "v" the only key left is "kids".
        assert!(allows(&mut m, id("k")));
        assert!(!allows(&mut m, id("v")));
        feed(&mut m, r#"kids":[]}]}"#);
        assert!(m.is_complete());
    }

    #[test]
    fn format_json_is_any_object_written_compactly() {
        let mut c = constrainer(FormatLimits::default());
        let mut m = c.start(&Format::Json).expect("compiles");
        assert!(!allows(&mut m, id("[")), "the root is an object");
        assert!(!allows(&mut m, id("\"")));
        feed(&mut m, r#"{"a":[1,2.5,{"b":null}],"c":"x y","d":false"#);
        assert!(!allows(&mut m, id("Ġ")), "no space between tokens");
        assert!(!m.is_complete());
        feed(&mut m, "}");
        assert!(m.is_complete());
    }

    #[test]
    fn invalid_and_oversized_schemas_are_refused_with_the_reason() {
        let mut c = constrainer(FormatLimits::default());
        let message = refusal(&mut c, &schema(json!("object")));
        assert!(message.contains("must be a JSON object"), "{message}");
        let message = refusal(&mut c, &schema(json!({"type": "frobnicate"})));
        assert!(message.contains("does not compile"), "{message}");
        let message = refusal(
            &mut c,
            &schema(json!({"type": "array", "uniqueItems": true})),
        );
        assert!(message.contains("uniqueItems"), "{message}");
        let message = refusal(&mut c, &schema(json!({"enum": []})));
        assert!(message.starts_with("format: "), "{message}");

        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"type": "array", "items": deep});
        }
        let message = refusal(&mut c, &schema(deep));
        assert!(message.contains("deeper than 32"), "{message}");
        let values: Vec<String> = (0..10_000).map(|i| format!("value-{i}")).collect();
        let message = refusal(&mut c, &schema(json!({"enum": values})));
        assert!(message.contains("over the limit of 65536"), "{message}");

        // The grammar-size bound reaches llguidance.
        let mut small = constrainer(FormatLimits {
            max_grammar_size: 10,
            ..FormatLimits::default()
        });
        let message = refusal(&mut small, &sentiment());
        assert!(message.contains("does not compile"), "{message}");
        assert_eq!(small.cache.len(), 0, "refusals are not cached");
    }

    #[test]
    fn compiled_grammars_are_cached_by_schema_and_the_least_recent_is_dropped() {
        let mut c = constrainer(FormatLimits {
            cache_entries: 2,
            ..FormatLimits::default()
        });
        let mut first = c.start(&sentiment()).expect("compiles");
        let mut again = c.start(&sentiment()).expect("cached");
        assert_eq!(c.compiled, 1);
        // Matchers from the cache are independent.
        feed(&mut first, r#"{"sentiment":"neutral","score":0}"#);
        assert!(first.is_complete());
        assert!(!again.is_complete());
        feed(&mut again, r#"{"sentiment":"positive","score":1}"#);
        assert!(again.is_complete());

        c.start(&Format::Json).expect("compiles");
        c.start(&sentiment()).expect("cached");
        c.start(&schema(json!({"type": "object", "properties": {}})))
            .expect("compiles");
        assert_eq!(c.compiled, 3);
        // Format::Json was the least recently used of the two kept.
        c.start(&sentiment()).expect("cached");
        assert_eq!(c.compiled, 3);
        c.start(&Format::Json).expect("compiles again");
        assert_eq!(c.compiled, 4);
    }

    #[test]
    fn a_grammar_that_fails_mid_generation_is_compiled_afresh_next_time() {
        // The sentiment grammar's lexer needs about 30 states for its first token and more
        // than 50 within a few tokens.
        let mut c = constrainer(FormatLimits {
            max_lexer_states: 50,
            ..FormatLimits::default()
        });
        let mut m = c.start(&sentiment()).expect("compiles");
        let mut logits = vec![0.0f32; tokenizer().vocab_size()];
        let tokens = tokenizer()
            .encode(r#"{"sentiment":"negative","score":-0.25}"#)
            .expect("encodes");
        let error = tokens
            .iter()
            .find_map(|&t| m.mask(&mut logits).and_then(|()| m.advance(t)).err())
            .expect("the lexer runs out of states");
        assert!(
            matches!(&error, LlmError::InvalidRequest(e) if e.contains("too many states")),
            "{error}"
        );
        assert_eq!(c.compiled, 1);
        c.start(&sentiment()).expect("compiles again");
        assert_eq!(c.compiled, 2);
        c.start(&sentiment()).expect("cached");
        assert_eq!(c.compiled, 2);
    }

    #[test]
    fn the_mask_costs_little_next_to_a_forward_pass() {
        // A forward pass of SmolLM2-135M takes milliseconds on a CPU; the mask, applied to all
        // 49,152 logits, and the advance must stay well under that. Prints the figures
        // (`cargo test --release -p infermesh-llm --lib the_mask_costs -- --nocapture`).
        let mut c = constrainer(FormatLimits::default());
        let text = r#"{"sentiment":"negative","score":-0.25}"#;
        let tokens = tokenizer().encode(text).expect("encodes");
        let mut logits = vec![0.0f32; tokenizer().vocab_size()];
        let mut per_token = Vec::new();
        for _ in 0..20 {
            let mut m = c.start(&sentiment()).expect("cached after the first");
            for &token in &tokens {
                let started = Instant::now();
                m.mask(&mut logits).expect("masks");
                m.advance(token).expect("advances");
                per_token.push(started.elapsed());
            }
            assert!(m.is_complete());
        }
        per_token.sort();
        let mean = per_token.iter().sum::<Duration>() / per_token.len() as u32;
        let median = per_token[per_token.len() / 2];
        eprintln!(
            "mask + advance per token over {} tokens: mean {mean:?}, median {median:?}, max {:?}",
            per_token.len(),
            per_token[per_token.len() - 1]
        );
        // Generous for an unoptimised build on a loaded machine; rebuilding the trie or the
        // grammar per token would cost hundreds of milliseconds.
        assert!(mean < Duration::from_millis(20), "mean {mean:?}");
    }
}
