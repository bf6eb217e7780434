//! The HTTP routes of `infermesh llm serve`, Ollama's paths and bodies.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use infermesh_common::error::ErrorKind;
use infermesh_common::metrics_names::{
    LLM_REQUEST_SECONDS, LLM_REQUESTS_TOTAL, LLM_TIME_TO_FIRST_TOKEN_SECONDS, LLM_TOKENS_TOTAL,
};
use infermesh_llm::{
    ChatMessage, Format, GenerateOutput, GenerateRequest, LlmError, ModelInfo, Prompt,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::embed::Embedder;
use super::engine::{CancelOnDrop, Engine, Event, Input, SubmitError, Work};
use super::{
    API_VERSION, DEFAULT_EMBED_NAME, FileFacts, LlmServeConfig, LlmServeError, load_model, options,
};
use crate::api::{
    self, ChatRequest, ChatResponse, Durations, ErrorResponse, GenerateResponse, ListedModel,
    Message, ModelDetails, PsResponse, RunningModel, ShowRequest, ShowResponse, TagsResponse,
    VersionResponse,
};

/// Everything the routes share.
#[derive(Debug)]
pub struct State {
    pub(super) addr: std::net::SocketAddr,
    name: String,
    engine: Engine,
    facts: FileFacts,
    num_ctx: usize,
    pub(super) max_body: usize,
    pub(super) embedder: Option<(Embedder, FileFacts)>,
}

impl State {
    /// Loads the LLM (and the embedding model) as `cfg` says.
    pub(super) fn load(cfg: LlmServeConfig) -> Result<Self, LlmServeError> {
        let load_err = |path: &std::path::Path, message: String| LlmServeError::Load {
            path: path.display().to_string(),
            message,
        };
        let model = load_model(&cfg)?;
        let num_ctx = model.context_length().min(cfg.num_ctx);
        let facts =
            FileFacts::of(&cfg.model_path).map_err(|e| load_err(&cfg.model_path, e.to_string()))?;
        let engine = Engine::start(model, cfg.max_queue)
            .map_err(|e| LlmServeError::Serve(format!("cannot start the model thread: {e}")))?;
        let embedder = match &cfg.embed_dir {
            Some(dir) => {
                let embedder = Embedder::load(dir).map_err(|e| load_err(dir, e.to_string()))?;
                let facts = FileFacts::of(&dir.join("model.safetensors"))
                    .map_err(|e| load_err(dir, e.to_string()))?;
                Some((embedder, facts))
            }
            None => None,
        };
        Ok(Self {
            addr: cfg.addr,
            name: cfg.name,
            engine,
            facts,
            num_ctx,
            max_body: cfg.max_request_bytes,
            embedder,
        })
    }

    /// Which model a request names: Ollama's rule, a name without a tag is `name:latest`.
    pub(super) fn resolve(&self, requested: &str) -> Result<Target, ApiError> {
        let full = |n: &str| {
            if n.contains(':') {
                n.to_string()
            } else {
                format!("{n}:latest")
            }
        };
        let requested = full(requested.trim());
        if requested == full(&self.name) {
            return Ok(Target::Llm);
        }
        if self.embedder.is_some() && requested == full(DEFAULT_EMBED_NAME) {
            return Ok(Target::Embedder);
        }
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model \"{requested}\" not found, try pulling it first"),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Llm,
    Embedder,
}

/// An error answer: `{"error": "..."}` with its status.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy, please try again.  maximum pending requests exceeded",
        )
    }

    fn from_llm(e: &LlmError) -> Self {
        let kind = match e.kind() {
            infermesh_llm::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            infermesh_llm::ErrorKind::Unavailable => ErrorKind::Unavailable,
            infermesh_llm::ErrorKind::Internal => ErrorKind::Internal,
        };
        if kind == ErrorKind::Internal {
            tracing::error!(error = %e, "generation failed");
            return Self::new(kind.http_status(), "internal error");
        }
        Self::new(kind.http_status(), e.to_string())
    }

    fn outcome(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 422 => "invalid_input",
            404 => "not_found",
            413 => "too_large",
            503 => "overloaded",
            _ => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorResponse {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// A whole JSON answer or an error, counted under `endpoint`.
pub(super) fn answer<T: Serialize>(
    endpoint: &'static str,
    started: Instant,
    result: Result<T, ApiError>,
) -> Response {
    match result {
        Ok(r) => {
            count(endpoint, "ok", started);
            axum::Json(r).into_response()
        }
        Err(e) => {
            count(endpoint, e.outcome(), started);
            e.into_response()
        }
    }
}

fn count(endpoint: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!(LLM_REQUESTS_TOTAL, "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(LLM_REQUEST_SECONDS, "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
}

/// The routes over `state`; `/metrics` renders `metrics` when given.
pub fn app(state: Arc<State>, metrics: Option<PrometheusHandle>) -> Router {
    let mut router = Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/pull", post(pull))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/embed", post(super::embed::embed))
        .route("/api/embeddings", post(super::embed::embeddings))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "404 page not found") });
    if let Some(handle) = metrics {
        router = router.route(
            "/metrics",
            get(move || {
                let h = handle.clone();
                async move { h.render() }
            }),
        );
    }
    router
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Reads a JSON body of at most `limit` bytes; errors are Ollama-style JSON.
pub(super) async fn read_json<T: DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {limit} bytes"),
        )
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad("missing request body"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(e.to_string()))
}

async fn version() -> axum::Json<VersionResponse> {
    axum::Json(VersionResponse {
        version: API_VERSION.into(),
    })
}

fn llm_details(info: &ModelInfo) -> ModelDetails {
    ModelDetails {
        parent_model: String::new(),
        format: "gguf".into(),
        family: info.architecture.clone(),
        families: Some(vec![info.architecture.clone()]),
        parameter_size: parameter_size(info.parameter_count),
        quantization_level: info.file_type.clone(),
    }
}

fn embed_details() -> ModelDetails {
    ModelDetails {
        parent_model: String::new(),
        format: "safetensors".into(),
        family: "bert".into(),
        families: Some(vec!["bert".into()]),
        parameter_size: "23M".into(),
        quantization_level: "F32".into(),
    }
}

/// `135M`, `1.2B`: Ollama's rounding of a parameter count.
fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{:.0}K", n / 1e3)
    }
}

fn listed(name: &str, facts: &FileFacts, details: ModelDetails) -> ListedModel {
    ListedModel {
        name: name.into(),
        model: name.into(),
        modified_at: facts.modified_at.clone(),
        size: facts.size,
        digest: facts.digest.clone(),
        details,
    }
}

async fn tags(AxumState(s): AxumState<Arc<State>>) -> axum::Json<TagsResponse> {
    let mut models = vec![listed(&s.name, &s.facts, llm_details(s.engine.info()))];
    if let Some((_, facts)) = &s.embedder {
        models.push(listed(DEFAULT_EMBED_NAME, facts, embed_details()));
    }
    axum::Json(TagsResponse { models })
}

async fn ps(AxumState(s): AxumState<Arc<State>>) -> axum::Json<PsResponse> {
    // Models stay loaded for the server's lifetime: they never expire.
    let never = "2318-01-01T00:00:00Z".to_string();
    let running = |m: ListedModel, context_length| RunningModel {
        name: m.name,
        model: m.model,
        size: m.size,
        digest: m.digest,
        details: m.details,
        expires_at: never.clone(),
        size_vram: 0,
        context_length: Some(context_length),
    };
    let mut models = vec![running(
        listed(&s.name, &s.facts, llm_details(s.engine.info())),
        s.num_ctx as u64,
    )];
    if let Some((e, facts)) = &s.embedder {
        models.push(running(
            listed(DEFAULT_EMBED_NAME, facts, embed_details()),
            e.max_len() as u64,
        ));
    }
    axum::Json(PsResponse { models })
}

async fn show(AxumState(s): AxumState<Arc<State>>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        let req: ShowRequest = read_json(body, s.max_body).await?;
        let name = req
            .model
            .or(req.name)
            .ok_or_else(|| ApiError::bad("model is required"))?;
        Ok::<_, ApiError>(match s.resolve(&name)? {
            Target::Llm => {
                let info = s.engine.info();
                let mut model_info = Map::new();
                let arch = &info.architecture;
                model_info.insert("general.architecture".into(), json!(arch));
                model_info.insert(
                    "general.parameter_count".into(),
                    json!(info.parameter_count),
                );
                if let Some(n) = &info.name {
                    model_info.insert("general.basename".into(), json!(n));
                }
                model_info.insert(format!("{arch}.context_length"), json!(info.context_length));
                for (key, v) in [
                    ("embedding_length", info.embedding_length),
                    ("block_count", info.block_count),
                    ("attention.head_count", info.head_count),
                    ("attention.head_count_kv", info.head_count_kv),
                ] {
                    if let Some(v) = v {
                        model_info.insert(format!("{arch}.{key}"), json!(v));
                    }
                }
                model_info.insert("tokenizer.ggml.model".into(), json!("gpt2"));
                model_info.insert(
                    "infermesh.weights_loaded_as".into(),
                    json!(info.loaded_type),
                );
                ShowResponse {
                    license: info.license.clone().unwrap_or_default(),
                    modelfile: format!("FROM {}\n", s.name),
                    parameters: format!("num_ctx {}", s.num_ctx),
                    template: info.chat_template.clone(),
                    details: llm_details(info),
                    model_info,
                    capabilities: vec!["completion".into()],
                    modified_at: s.facts.modified_at.clone(),
                }
            }
            Target::Embedder => {
                let (e, facts) = s
                    .embedder
                    .as_ref()
                    .ok_or_else(|| ApiError::bad("no embedder"))?;
                let mut model_info = Map::new();
                model_info.insert("general.architecture".into(), json!("bert"));
                model_info.insert("bert.embedding_length".into(), json!(e.width()));
                model_info.insert("bert.context_length".into(), json!(e.max_len()));
                ShowResponse {
                    license: "Apache-2.0".into(),
                    modelfile: format!("FROM {DEFAULT_EMBED_NAME}\n"),
                    details: embed_details(),
                    model_info,
                    capabilities: vec!["embedding".into()],
                    modified_at: facts.modified_at.clone(),
                    ..ShowResponse::default()
                }
            }
        })
    }
    .await;
    answer("show", started, result)
}

/// Models are never downloaded at run time: pulling one that is here succeeds at once,
/// pulling any other is a 404.
async fn pull(AxumState(s): AxumState<Arc<State>>, body: Body) -> Response {
    let result = async {
        let req: Value = read_json(body, s.max_body).await?;
        let name = req
            .get("model")
            .or_else(|| req.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad("model is required"))?;
        s.resolve(name)?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => axum::Json(json!({"status": "success"})).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) fn unsupported(name: &str, what: &str) -> ApiError {
    ApiError::bad(format!("\"{name}\" does not support {what}"))
}

/// Ollama's `format`: absent, `""`, `"json"` or a JSON schema object (compiled and enforced by
/// the model thread; an invalid schema is a 400 from there).
fn parse_format(format: Option<&Value>) -> Result<Option<Format>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Format::Json)),
        Some(schema @ Value::Object(_)) => Ok(Some(Format::JsonSchema(schema.clone()))),
        Some(other) => Err(ApiError::bad(format!(
            "invalid format {other}: use \"json\" or a JSON schema object"
        ))),
    }
}

fn wants_thinking(think: Option<&Value>) -> bool {
    match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Whether `keep_alive` asks to unload (0 or "0s"/"0m"...).
fn asks_unload(keep_alive: Option<&Value>) -> bool {
    match keep_alive {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse::<f64>()
            .is_ok_and(|v| v == 0.0),
        _ => false,
    }
}

/// How the answer is written: `/api/generate` (with `context` unless raw) or `/api/chat`.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Generate { context: bool },
    Chat,
}

impl Shape {
    fn endpoint(self) -> &'static str {
        match self {
            Shape::Generate { .. } => "generate",
            Shape::Chat => "chat",
        }
    }

    fn chunk(self, model: &str, text: &str) -> Value {
        match self {
            Shape::Generate { .. } => to_value(&GenerateResponse {
                model: model.into(),
                created_at: api::now(),
                response: text.into(),
                ..GenerateResponse::default()
            }),
            Shape::Chat => to_value(&ChatResponse {
                model: model.into(),
                created_at: api::now(),
                message: Message::new("assistant", text),
                ..ChatResponse::default()
            }),
        }
    }

    /// The last object: `text` is all of it without streaming, empty when streamed.
    fn last(
        self,
        model: &str,
        text: String,
        done_reason: &str,
        output: Option<&GenerateOutput>,
        load_duration: u64,
        total: u64,
    ) -> Value {
        let durations = output.map_or_else(
            || Durations {
                total_duration: Some(total),
                load_duration: Some(load_duration),
                ..Durations::default()
            },
            |o| Durations {
                total_duration: Some(total),
                load_duration: Some(load_duration),
                prompt_eval_count: Some(o.timings.prompt_eval_count as u64),
                prompt_eval_duration: Some(o.timings.prompt_eval_duration),
                eval_count: Some(o.timings.eval_count as u64),
                eval_duration: Some(o.timings.eval_duration),
            },
        );
        match self {
            Shape::Generate { context } => to_value(&GenerateResponse {
                model: model.into(),
                created_at: api::now(),
                response: text,
                done: true,
                done_reason: Some(done_reason.into()),
                context: output.filter(|_| context).map(|o| {
                    let mut ids = o.prompt_tokens.clone();
                    ids.extend(&o.tokens);
                    ids
                }),
                durations,
            }),
            Shape::Chat => to_value(&ChatResponse {
                model: model.into(),
                created_at: api::now(),
                message: Message::new("assistant", text),
                done: true,
                done_reason: Some(done_reason.into()),
                durations,
            }),
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn line(v: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn generate(AxumState(s): AxumState<Arc<State>>, body: Body) -> Response {
    let started = Instant::now();
    let prepared = async {
        let req: api::GenerateRequest = read_json(body, s.max_body).await?;
        if s.resolve(&req.model)? == Target::Embedder {
            return Err(unsupported(&req.model, "generate"));
        }
        if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(unsupported(&req.model, "images"));
        }
        if req.suffix.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(unsupported(&req.model, "insert"));
        }
        if req.template.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad(
                "template overrides are not supported: the model's own chat template is applied (or none with raw: true)",
            ));
        }
        if wants_thinking(req.think.as_ref()) {
            return Err(unsupported(&req.model, "thinking"));
        }
        let format = parse_format(req.format.as_ref())?;
        let opts = options::parse(req.options.as_ref(), options::defaults(s.num_ctx))
            .map_err(ApiError::bad)?;
        let prompt = req.prompt.clone().unwrap_or_default();
        let raw = req.raw.unwrap_or(false);
        let context = req.context.clone().filter(|c| !c.is_empty());
        if prompt.is_empty() && context.is_none() {
            return Ok(Err((req.model, req.keep_alive)));
        }
        let input = if raw {
            Input::Raw(prompt)
        } else {
            let mut messages = Vec::new();
            if let Some(system) = req.system.as_ref().filter(|s| !s.is_empty()) {
                messages.push(ChatMessage::new("system", system.clone()));
            }
            messages.push(ChatMessage::new("user", prompt));
            match context {
                Some(ids) => Input::Continue(ids, messages),
                None => Input::Chat(messages),
            }
        };
        Ok(Ok((req, input, opts, raw, format)))
    }
    .await;
    match prepared {
        Err(e) => {
            count("generate", e.outcome(), started);
            e.into_response()
        }
        Ok(Err((model, keep_alive))) => {
            // An empty prompt loads (or, with keep_alive 0, unloads) the model: it is always
            // loaded here, so this answers at once.
            let reason = if asks_unload(keep_alive.as_ref()) {
                "unload"
            } else {
                "load"
            };
            count("generate", "ok", started);
            let shape = Shape::Generate { context: false };
            axum::Json(shape.last(&model, String::new(), reason, None, 0, elapsed(started)))
                .into_response()
        }
        Ok(Ok((req, input, opts, raw, format))) => {
            let stream = req.stream.unwrap_or(true);
            let work = Work {
                input,
                request: GenerateRequest {
                    prompt: Prompt::Tokens(Vec::new()),
                    options: opts,
                    cancel: None,
                    format,
                },
            };
            respond(
                s,
                req.model,
                work,
                Shape::Generate { context: !raw },
                stream,
                started,
            )
            .await
        }
    }
}

pub(super) fn elapsed(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

async fn chat(AxumState(s): AxumState<Arc<State>>, body: Body) -> Response {
    let started = Instant::now();
    let prepared = async {
        let req: ChatRequest = read_json(body, s.max_body).await?;
        if s.resolve(&req.model)? == Target::Embedder {
            return Err(unsupported(&req.model, "chat"));
        }
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(unsupported(&req.model, "tools"));
        }
        if wants_thinking(req.think.as_ref()) {
            return Err(unsupported(&req.model, "thinking"));
        }
        if req
            .messages
            .iter()
            .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()))
        {
            return Err(unsupported(&req.model, "images"));
        }
        let format = parse_format(req.format.as_ref())?;
        let opts = options::parse(req.options.as_ref(), options::defaults(s.num_ctx))
            .map_err(ApiError::bad)?;
        Ok((req, opts, format))
    }
    .await;
    let (req, opts, format) = match prepared {
        Ok(v) => v,
        Err(e) => {
            count("chat", e.outcome(), started);
            return e.into_response();
        }
    };
    if req.messages.is_empty() {
        let reason = if asks_unload(req.keep_alive.as_ref()) {
            "unload"
        } else {
            "load"
        };
        count("chat", "ok", started);
        return axum::Json(Shape::Chat.last(
            &req.model,
            String::new(),
            reason,
            None,
            0,
            elapsed(started),
        ))
        .into_response();
    }
    let messages = req
        .messages
        .iter()
        .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
        .collect();
    let work = Work {
        input: Input::Chat(messages),
        request: GenerateRequest {
            prompt: Prompt::Tokens(Vec::new()),
            options: opts,
            cancel: None,
            format,
        },
    };
    respond(
        s,
        req.model,
        work,
        Shape::Chat,
        req.stream.unwrap_or(true),
        started,
    )
    .await
}

/// Queues `work` and answers: a stream of NDJSON chunks, or one object. Nothing is sent
/// until the first token (or the failure) is known, so a refused prompt is an HTTP error
/// status rather than an error line inside a 200 stream.
async fn respond(
    s: Arc<State>,
    model: String,
    work: Work,
    shape: Shape,
    stream: bool,
    started: Instant,
) -> Response {
    let endpoint = shape.endpoint();
    let (mut events, guard) = match s.engine.submit(work) {
        Ok(v) => v,
        Err(SubmitError::Busy) => {
            count(endpoint, "overloaded", started);
            return ApiError::busy().into_response();
        }
        Err(SubmitError::Stopped) => {
            count(endpoint, "unavailable", started);
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model thread stopped")
                .into_response();
        }
    };
    let load = s.engine.load_duration();
    let mut first = None;
    while first.is_none() {
        match events.recv().await {
            Some(Event::Started) => {}
            Some(Event::Text(t)) => {
                metrics::histogram!(LLM_TIME_TO_FIRST_TOKEN_SECONDS, "endpoint" => endpoint)
                    .record(started.elapsed().as_secs_f64());
                first = Some(Event::Text(t));
            }
            Some(Event::Done(Err(e))) => {
                let e = ApiError::from_llm(&e);
                count(endpoint, e.outcome(), started);
                return e.into_response();
            }
            Some(done @ Event::Done(Ok(_))) => first = Some(done),
            None => {
                count(endpoint, "internal", started);
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "generation ended")
                    .into_response();
            }
        }
    }
    let first = first.unwrap_or(Event::Started);
    if !stream {
        let mut text = String::new();
        let mut next = Some(first);
        loop {
            let event = match next.take() {
                Some(e) => e,
                None => match events.recv().await {
                    Some(e) => e,
                    None => break,
                },
            };
            match event {
                Event::Started => {}
                Event::Text(t) => text.push_str(&t),
                Event::Done(Ok(out)) => {
                    tokens(&out);
                    count(endpoint, "ok", started);
                    drop(guard);
                    let reason = out.done_reason.as_str();
                    return axum::Json(shape.last(
                        &model,
                        text,
                        reason,
                        Some(&out),
                        load,
                        elapsed(started),
                    ))
                    .into_response();
                }
                Event::Done(Err(e)) => {
                    let e = ApiError::from_llm(&e);
                    count(endpoint, e.outcome(), started);
                    return e.into_response();
                }
            }
        }
        count(endpoint, "internal", started);
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "generation ended")
            .into_response();
    }
    let state = StreamState {
        events,
        pending: Some(first),
        guard: Some(guard),
        model,
        shape,
        load,
        started,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        let event = match st.pending.take() {
            Some(e) => e,
            None => st.events.recv().await?,
        };
        let bytes = match event {
            Event::Started => Bytes::new(),
            Event::Text(t) => line(&st.shape.chunk(&st.model, &t)),
            Event::Done(Ok(out)) => {
                tokens(&out);
                count(st.shape.endpoint(), "ok", st.started);
                st.guard = None;
                line(&st.shape.last(
                    &st.model,
                    String::new(),
                    out.done_reason.as_str(),
                    Some(&out),
                    st.load,
                    elapsed(st.started),
                ))
            }
            Event::Done(Err(e)) => {
                let e = ApiError::from_llm(&e);
                count(st.shape.endpoint(), e.outcome(), st.started);
                line(&json!({"error": e.message}))
            }
        };
        Some((Ok::<_, Infallible>(bytes), st))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct StreamState {
    events: mpsc::Receiver<Event>,
    pending: Option<Event>,
    /// Cancels the generation when the response body is dropped (the client left).
    guard: Option<CancelOnDrop>,
    model: String,
    shape: Shape,
    load: u64,
    started: Instant,
}

fn tokens(out: &GenerateOutput) {
    metrics::counter!(LLM_TOKENS_TOTAL, "kind" => "prompt")
        .increment(out.timings.prompt_eval_count as u64);
    metrics::counter!(LLM_TOKENS_TOTAL, "kind" => "generated")
        .increment(out.timings.eval_count as u64);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sizes_read_as_ollamas() {
        assert_eq!(parameter_size(134_515_008), "135M");
        assert_eq!(parameter_size(1_711_376_384), "1.7B");
        assert_eq!(parameter_size(22_700), "23K");
    }

    #[test]
    fn keep_alive_zero_unloads() {
        assert!(asks_unload(Some(&json!(0))));
        assert!(asks_unload(Some(&json!("0s"))));
        assert!(asks_unload(Some(&json!("0"))));
        assert!(!asks_unload(Some(&json!("5m"))));
        assert!(!asks_unload(None));
    }

    #[test]
    fn thinking_requests() {
        assert!(!wants_thinking(None));
        assert!(!wants_thinking(Some(&json!(false))));
        assert!(wants_thinking(Some(&json!(true))));
        assert!(wants_thinking(Some(&json!("high"))));
    }
}
