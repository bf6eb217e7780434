//! The LLM arm of a sentiment version: its `[llm]` settings and [`ZeroShotArm`], which puts a
//! sanitised text to an Ollama-API LLM as a zero-shot question behind the output cache.
//!
//! One question per distinct text: an answer the LLM gave (and that validated) is cached under
//! the SHA-256 of the model, the system text, the sanitised prompt and the options with the
//! JSON schema ([`infermesh_ollama::cache::CacheKey`]), in this version's memory or in a Redis
//! every server shares; a later identical text is answered from there and validated again as
//! an LLM answer would be. Identical texts asked while the first is still out wait for that one
//! call (single flight in this process). The call runs in its own task, so an answer that comes
//! after the caller's deadline (a request's shorter `deadline_ms`) still fills the cache; it is
//! bounded by `timeout_ms` and holds one of `max_in_flight` slots while it runs. A failing
//! Redis is a miss, never an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infermesh_common::metrics_names::SENTIMENT_LLM_SECONDS;
use infermesh_ollama::api::{GenerateRequest, Options};
use infermesh_ollama::cache::{
    CacheConfig, CacheKey, OutputCache, SOURCE_SENTIMENT, check_redis_url,
};
use infermesh_ollama::sanitise::{EstimateCounter, Sanitiser};
use infermesh_ollama::{ClientError, DEFAULT_OLLAMA_URL, OLLAMA_URL_ENV, OllamaClient};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::Fallback;
use crate::zeroshot::{self, MAX_ANSWER_TOKENS};

/// Default `[llm] model`: the embedded server's default, under Ollama's name for it.
pub const DEFAULT_LLM_MODEL: &str = "smollm2:135m";
/// Default `[llm] timeout_ms`.
pub const DEFAULT_LLM_TIMEOUT_MS: u64 = 300;
/// Default `[llm] max_in_flight`.
pub const DEFAULT_LLM_MAX_IN_FLIGHT: usize = 4;
/// The environment variable naming the Redis of the answer cache when `[llm] cache_url` is
/// absent.
pub const LLM_CACHE_URL_ENV: &str = "INFERMESH_LLM_CACHE_URL";
/// Default `[llm] cache_entries`.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;
/// Default `[llm] cache_ttl_secs` (one day).
pub const DEFAULT_CACHE_TTL_SECS: u64 = 24 * 3600;
/// Default `[llm] cache_prefix` (the side channel's, so one Redis namespace holds both).
pub const DEFAULT_CACHE_PREFIX: &str = "infermesh:llm:";
/// Default `[llm] cache_timeout_ms`: a lookup spends at most this of the LLM's budget.
pub const DEFAULT_CACHE_TIMEOUT_MS: u64 = 50;

/// The `[llm]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmKeys {
    enabled: Option<bool>,
    url: Option<String>,
    model: Option<String>,
    timeout_ms: Option<u64>,
    max_in_flight: Option<usize>,
    max_tokens: Option<usize>,
    cache: Option<bool>,
    cache_url: Option<String>,
    cache_prefix: Option<String>,
    cache_ttl_secs: Option<u64>,
    cache_entries: Option<usize>,
    cache_timeout_ms: Option<u64>,
}

/// Where the arm keeps the LLM's answers.
#[derive(Clone, PartialEq)]
pub struct LlmCacheSettings {
    /// Whether answers are cached at all (`[llm] cache`, default true).
    pub enabled: bool,
    /// Redis shared by every server (`cache_url`, else `INFERMESH_LLM_CACHE_URL`); `None`:
    /// this version's memory.
    pub redis_url: Option<String>,
    /// Redis key prefix: keys are `<prefix>cache:<sha256>`.
    pub prefix: String,
    /// How long an answer is reused.
    pub ttl: Duration,
    /// Most answers held in memory (least recently used evicted first).
    pub max_entries: usize,
    /// Longest Redis call; past it a lookup is a miss.
    pub timeout: Duration,
}

impl Default for LlmCacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: None,
            prefix: DEFAULT_CACHE_PREFIX.into(),
            ttl: Duration::from_secs(DEFAULT_CACHE_TTL_SECS),
            max_entries: DEFAULT_CACHE_ENTRIES,
            timeout: Duration::from_millis(DEFAULT_CACHE_TIMEOUT_MS),
        }
    }
}

impl std::fmt::Debug for LlmCacheSettings {
    // The Redis URL may hold a password: only whether there is one is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmCacheSettings")
            .field("enabled", &self.enabled)
            .field("backend", &self.backend())
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl LlmCacheSettings {
    /// `off`, `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        match (self.enabled, &self.redis_url) {
            (false, _) => "off",
            (true, None) => "memory",
            (true, Some(_)) => "redis",
        }
    }
}

/// The LLM a version asks, from its `[llm]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmSettings {
    /// Whether the LLM is asked when a request does not say.
    pub enabled: bool,
    /// The Ollama API's base URL.
    pub url: String,
    /// The model it serves.
    pub model: String,
    /// Longest wait for an answer.
    pub timeout: Duration,
    /// LLM calls out at once.
    pub max_in_flight: usize,
    /// The sanitiser's token cap.
    pub max_tokens: usize,
    /// The answer cache.
    pub cache: LlmCacheSettings,
}

impl LlmSettings {
    /// Settings for the LLM at `url` serving `model`, every other key at its default (the
    /// cache in memory).
    pub fn new(url: &str, model: &str) -> Self {
        Self {
            enabled: true,
            url: url.to_string(),
            model: model.to_string(),
            timeout: Duration::from_millis(DEFAULT_LLM_TIMEOUT_MS),
            max_in_flight: DEFAULT_LLM_MAX_IN_FLIGHT,
            max_tokens: infermesh_ollama::sanitise::DEFAULT_MAX_TOKENS,
            cache: LlmCacheSettings::default(),
        }
    }

    /// Reads an `[llm]` section, refusing unknown keys and values out of range.
    pub fn parse(value: &toml::Value) -> Result<Self, String> {
        let keys: LlmKeys = value
            .clone()
            .try_into()
            .map_err(|e| format!("[llm]: {e}"))?;
        let in_range = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(format!("[llm] {key} = {v} is outside {lo}..={hi}"))
            }
        };
        let timeout_ms = in_range(
            "timeout_ms",
            keys.timeout_ms.unwrap_or(DEFAULT_LLM_TIMEOUT_MS),
            1,
            60_000,
        )?;
        let max_in_flight = in_range(
            "max_in_flight",
            keys.max_in_flight.unwrap_or(DEFAULT_LLM_MAX_IN_FLIGHT) as u64,
            1,
            1024,
        )? as usize;
        let max_tokens = in_range(
            "max_tokens",
            keys.max_tokens
                .unwrap_or(infermesh_ollama::sanitise::DEFAULT_MAX_TOKENS) as u64,
            1,
            8192,
        )? as usize;
        let url = keys.url.unwrap_or_else(|| {
            std::env::var(OLLAMA_URL_ENV).unwrap_or_else(|_| DEFAULT_OLLAMA_URL.to_string())
        });
        let model = keys.model.unwrap_or_else(|| DEFAULT_LLM_MODEL.to_string());
        if model.trim().is_empty() {
            return Err("[llm] model must not be empty".into());
        }
        let ttl = in_range(
            "cache_ttl_secs",
            keys.cache_ttl_secs.unwrap_or(DEFAULT_CACHE_TTL_SECS),
            1,
            30 * 24 * 3600,
        )?;
        let max_entries = in_range(
            "cache_entries",
            keys.cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES) as u64,
            1,
            1_000_000,
        )? as usize;
        let cache_timeout = in_range(
            "cache_timeout_ms",
            keys.cache_timeout_ms.unwrap_or(DEFAULT_CACHE_TIMEOUT_MS),
            1,
            10_000,
        )?;
        // An empty `cache_url` keeps the cache in memory whatever the environment says.
        let redis_url = match keys.cache_url {
            Some(u) => Some(u),
            None => std::env::var(LLM_CACHE_URL_ENV).ok(),
        }
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
        if let Some(u) = &redis_url {
            // Parsed only: the cache connects on first use.
            check_redis_url(u).map_err(|e| format!("[llm] cache_url: {e}"))?;
        }
        let prefix = keys
            .cache_prefix
            .unwrap_or_else(|| DEFAULT_CACHE_PREFIX.to_string());
        if prefix.len() > 256 {
            return Err("[llm] cache_prefix is longer than 256 bytes".into());
        }
        Ok(Self {
            enabled: keys.enabled.unwrap_or(true),
            url,
            model,
            timeout: Duration::from_millis(timeout_ms),
            max_in_flight,
            max_tokens,
            cache: LlmCacheSettings {
                enabled: keys.cache.unwrap_or(true),
                redis_url,
                prefix,
                ttl: Duration::from_secs(ttl),
                max_entries,
                timeout: Duration::from_millis(cache_timeout),
            },
        })
    }
}

/// The zero-shot request for one sanitised text: `system` and `schema` from
/// [`zeroshot::system_prompt`] and [`zeroshot::schema`] of the model's labels, greedy
/// decoding, at most [`MAX_ANSWER_TOKENS`] tokens, `stream: false`.
pub fn zero_shot_request(
    model: &str,
    system: &str,
    schema: &Value,
    sanitised: &str,
) -> GenerateRequest {
    let mut options = Options::new();
    options.insert("temperature".into(), Value::from(0));
    options.insert("num_predict".into(), Value::from(MAX_ANSWER_TOKENS));
    GenerateRequest {
        model: model.to_string(),
        prompt: Some(zeroshot::user_prompt(sanitised)),
        system: Some(system.to_string()),
        format: Some(schema.clone()),
        options: Some(options),
        stream: Some(false),
        ..GenerateRequest::default()
    }
}

/// The cache key of `request`: its model, system text, prompt, and options with the format
/// (the same shape the side channel's jobs hash).
pub fn cache_key(request: &GenerateRequest) -> CacheKey {
    let options = json!({
        "options": request.options.clone().map(Value::Object),
        "format": request.format,
    });
    CacheKey::new(
        &request.model,
        request.system.as_deref().unwrap_or_default(),
        request.prompt.as_deref().unwrap_or_default(),
        &options,
    )
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The cache (no LLM call).
    Cache,
    /// A call this request made.
    Llm,
    /// The call an identical text in flight made (no call of its own).
    Joined,
}

/// A checked answer and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Asked {
    /// The answer.
    pub answer: zeroshot::Answer,
    /// Where it came from.
    pub origin: Origin,
}

type Outcome = Option<Result<zeroshot::Answer, Fallback>>;

/// What a call's task needs, shared with the arm.
#[derive(Debug)]
struct Shared {
    /// The servable's name (the metrics' `model` label).
    name: String,
    client: OllamaClient,
    labels: Vec<String>,
    cache: Option<OutputCache>,
    /// Calls in flight by cache key: identical texts wait on the first.
    flights: Mutex<HashMap<CacheKey, watch::Receiver<Outcome>>>,
}

impl Shared {
    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, watch::Receiver<Outcome>>> {
        // Every edit completes before the guard drops: a poisoned map is consistent.
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One LLM call: its checked answer goes to the waiters, then (valid only) to the cache.
    async fn call(
        self: Arc<Self>,
        request: GenerateRequest,
        key: Option<CacheKey>,
        tx: watch::Sender<Outcome>,
        permit: OwnedSemaphorePermit,
    ) {
        let started = Instant::now();
        let answer = self.client.generate(&request).await;
        // The time of calls that answered (valid or not); a call out of time has none.
        if !matches!(answer, Err(ClientError::Timeout(_))) {
            metrics::histogram!(SENTIMENT_LLM_SECONDS, "model" => self.name.clone())
                .record(started.elapsed().as_secs_f64());
        }
        let checked = match answer {
            Ok(r) => zeroshot::parse_answer(&r.response, &self.labels)
                .map(|a| (a, r.response))
                .map_err(|e| {
                    tracing::debug!(model = %self.name, error = %e, "the LLM's sentiment answer was refused");
                    Fallback::Malformed
                }),
            Err(ClientError::Timeout(_)) => Err(Fallback::Timeout),
            Err(ClientError::Malformed(_)) => Err(Fallback::Malformed),
            Err(e) => {
                tracing::debug!(model = %self.name, error = %e, "the LLM did not answer");
                Err(Fallback::Unavailable)
            }
        };
        tx.send_replace(Some(checked.as_ref().map(|(a, _)| *a).map_err(|f| *f)));
        drop(permit);
        if let (Some(cache), Some(key), Ok((_, raw))) = (&self.cache, &key, &checked) {
            cache.put(key, raw).await;
        }
        // Removed last: a text arriving meanwhile joins this call (and reads its answer at
        // once) instead of calling again before the cache holds the answer.
        if let Some(key) = key {
            let mut flights = self.flights();
            if flights
                .get(&key)
                .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                flights.remove(&key);
            }
        }
    }
}

/// The LLM a version asks, ready to call: sanitiser, cache, single flight, admission.
#[derive(Debug)]
pub struct ZeroShotArm {
    settings: LlmSettings,
    sanitiser: Sanitiser,
    permits: Arc<Semaphore>,
    system: String,
    schema: Value,
    shared: Arc<Shared>,
}

impl ZeroShotArm {
    /// The arm of servable `name` (its metrics' `model` label) asking `settings`' LLM to pick
    /// one of `labels`.
    pub fn new(name: &str, settings: LlmSettings, labels: &[String]) -> Result<Self, String> {
        let client = OllamaClient::new(&settings.url, settings.timeout)
            .map_err(|e| format!("[llm] url: {e}"))?;
        let c = &settings.cache;
        let cache = if c.enabled {
            let cfg = CacheConfig {
                ttl: c.ttl,
                prefix: c.prefix.clone(),
                max_entries: c.max_entries,
                redis_timeout: c.timeout,
                source: SOURCE_SENTIMENT,
            };
            Some(match &c.redis_url {
                Some(url) => {
                    OutputCache::redis(url, cfg).map_err(|e| format!("[llm] cache_url: {e}"))?
                }
                None => OutputCache::memory(cfg),
            })
        } else {
            None
        };
        Ok(Self {
            sanitiser: Sanitiser::new(settings.max_tokens, Arc::new(EstimateCounter)),
            permits: Arc::new(Semaphore::new(settings.max_in_flight)),
            system: zeroshot::system_prompt(labels),
            schema: zeroshot::schema(labels),
            shared: Arc::new(Shared {
                name: name.to_string(),
                client,
                labels: labels.to_vec(),
                cache,
                flights: Mutex::new(HashMap::new()),
            }),
            settings,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// The LLM's checked answer for `text`, or why there is none, by `until`.
    pub async fn ask(&self, text: &str, until: tokio::time::Instant) -> Result<Asked, Fallback> {
        let clean = self.sanitiser.sanitise(text);
        if clean.text.trim().is_empty() {
            return Err(Fallback::InvalidInput);
        }
        let request = zero_shot_request(
            &self.settings.model,
            &self.system,
            &self.schema,
            &clean.text,
        );
        tokio::time::timeout_at(until, self.answer(request))
            .await
            .map_err(|_| Fallback::Timeout)?
    }

    async fn answer(&self, request: GenerateRequest) -> Result<Asked, Fallback> {
        let shared = &self.shared;
        let key = shared.cache.as_ref().map(|_| cache_key(&request));
        if let (Some(cache), Some(key)) = (&shared.cache, &key)
            && let Some(raw) = cache.get(key).await
        {
            // Checked as a fresh answer would be: a stored answer that no longer validates
            // (labels or parser changed, or a Redis written by something else) is a miss.
            match zeroshot::parse_answer(&raw, &shared.labels) {
                Ok(answer) => {
                    return Ok(Asked {
                        answer,
                        origin: Origin::Cache,
                    });
                }
                Err(e) => {
                    tracing::warn!(model = %shared.name, error = %e, "a cached LLM answer does not validate; asking the LLM");
                }
            }
        }
        let (mut rx, origin) = {
            let mut flights = shared.flights();
            match key.as_ref().and_then(|k| flights.get(k)) {
                Some(rx) => (rx.clone(), Origin::Joined),
                None => {
                    let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                        return Err(Fallback::Overloaded);
                    };
                    let (tx, rx) = watch::channel(None);
                    if let Some(k) = &key {
                        flights.insert(k.clone(), rx.clone());
                    }
                    tokio::spawn(Arc::clone(shared).call(request, key, tx, permit));
                    (rx, Origin::Llm)
                }
            }
        };
        let outcome = *rx
            .wait_for(Option::is_some)
            .await
            // The call's task ended without an answer (it panicked).
            .map_err(|_| Fallback::Unavailable)?;
        match outcome {
            Some(Ok(answer)) => Ok(Asked { answer, origin }),
            Some(Err(f)) => Err(f),
            None => Err(Fallback::Unavailable),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LlmSettings, String> {
        LlmSettings::parse(&toml::from_str::<toml::Value>(text).unwrap())
    }

    #[test]
    fn cache_keys_are_read_and_bounded() {
        let s = parse(
            "cache_url = \"redis://127.0.0.1:6379\"\ncache_prefix = \"x:\"\ncache_ttl_secs = 60\n\
             cache_entries = 5\ncache_timeout_ms = 20\n",
        )
        .unwrap();
        assert_eq!(s.cache.backend(), "redis");
        assert_eq!(
            (s.cache.prefix.as_str(), s.cache.ttl, s.cache.max_entries),
            ("x:", Duration::from_secs(60), 5)
        );
        assert_eq!(s.cache.timeout, Duration::from_millis(20));
        assert!(!format!("{s:?}").contains("6379"), "the URL is not shown");
        // An empty URL keeps the cache in memory; `cache = false` turns it off.
        assert_eq!(parse("cache_url = \"\"").unwrap().cache.backend(), "memory");
        assert_eq!(parse("cache = false").unwrap().cache.backend(), "off");
        for (bad, says) in [
            ("cache_ttl_secs = 0", "cache_ttl_secs"),
            ("cache_entries = 0", "cache_entries"),
            ("cache_timeout_ms = 0", "cache_timeout_ms"),
            ("cache_url = \"http://x\"", "cache_url"),
            ("cache_size = 3", "cache_size"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cache_key_covers_the_prompt_the_model_and_the_schema() {
        let labels = vec!["negative".to_string(), "positive".to_string()];
        let system = zeroshot::system_prompt(&labels);
        let schema = zeroshot::schema(&labels);
        let key = |model: &str, text: &str, schema: &Value| {
            cache_key(&zero_shot_request(model, &system, schema, text))
        };
        let k = key("m", "great phone", &schema);
        assert_eq!(k, key("m", "great phone", &schema));
        assert_ne!(k, key("m", "great phone!", &schema));
        assert_ne!(k, key("m2", "great phone", &schema));
        let three = zeroshot::schema(&["a".into(), "b".into(), "c".into()]);
        assert_ne!(k, key("m", "great phone", &three));
    }

    /// A stub Ollama that counts `/api/generate` calls and answers after `delay`.
    async fn stub(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then the body up to content-length.
                    loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .to_ascii_lowercase()
                                .lines()
                                .find_map(|l| {
                                    l.strip_prefix("content-length:")
                                        .map(str::trim)
                                        .and_then(|v| v.parse::<usize>().ok())
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let body = json!({"model": "m", "created_at": "2026-01-01T00:00:00Z",
                        "response": "{\"label\": \"positive\", \"score\": 0.75}", "done": true})
                    .to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        (url, calls)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_texts_make_one_call_and_late_answers_fill_the_cache() {
        let (url, calls) = stub(Duration::from_millis(300)).await;
        let labels = vec!["negative".to_string(), "positive".to_string()];
        let mut settings = LlmSettings::new(&url, "m");
        settings.timeout = Duration::from_secs(5);
        let arm = ZeroShotArm::new("s", settings, &labels).unwrap();
        let later = || tokio::time::Instant::now() + Duration::from_secs(5);
        // Three identical texts at once: one call, two of them wait for it.
        let asked = futures::future::join_all((0..3).map(|_| arm.ask("great", later()))).await;
        let mut origins: Vec<Origin> = asked.iter().map(|a| a.unwrap().origin).collect();
        origins.sort_by_key(|o| *o as u8);
        assert_eq!(origins, [Origin::Llm, Origin::Joined, Origin::Joined]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let a = arm.ask("great", later()).await.unwrap();
        assert_eq!(
            (a.origin, a.answer.label, a.answer.score),
            (Origin::Cache, 1, 0.75)
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A caller that gives up before the answer: the call goes on and fills the cache.
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert_eq!(arm.ask("fine", soon).await, Err(Fallback::Timeout));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let a = arm.ask("fine", later()).await.unwrap();
        assert_eq!(a.origin, Origin::Cache);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Nothing is left in flight.
        assert!(arm.shared.flights().is_empty());
    }
}
