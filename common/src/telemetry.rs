//! Tracing and metrics set-up shared by the CLI's subcommands.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Errors of telemetry set-up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The tracing subscriber or OTLP exporter could not be built.
    #[error("tracing set-up failed: {0}")]
    Tracing(String),
    /// The Prometheus recorder could not be installed.
    #[error("metrics set-up failed: {0}")]
    Metrics(String),
}

/// How to log and trace.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// Log as JSON lines instead of text.
    pub json_logs: bool,
    /// OTLP gRPC endpoint (e.g. `http://127.0.0.1:4317`); traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported traces.
    pub service_name: String,
}

/// Keeps the OTLP pipeline alive; flushes spans when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global tracing subscriber (filter from `RUST_LOG`, default `info`), with an
/// OTLP layer when an endpoint is configured. Must be called within a Tokio runtime when OTLP
/// is on.
pub fn init_tracing(cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr: stdout carries only what a command prints for scripts (bound ports).
    let fmt_layer = if cfg.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let mut guard = TelemetryGuard::default();
    let otel_layer = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry::trace::TracerProvider as _;
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| TelemetryError::Tracing(e.to_string()))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("infermesh");
            guard.provider = Some(provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError::Tracing(e.to_string()))?;
    Ok(guard)
}

use tracing_subscriber::Layer as _;

/// Latency buckets (seconds) fit for sub-millisecond models up to slow remote calls.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

static PROMETHEUS: std::sync::Mutex<Option<PrometheusHandle>> = std::sync::Mutex::new(None);

/// Installs the global Prometheus recorder (histograms for `*_seconds` and batch sizes) once
/// per process and returns its handle, whose `render()` is the `/metrics` body. Later calls
/// (several services in one process, as `infermesh up` runs them, or tests) share it.
pub fn install_prometheus() -> Result<PrometheusHandle, TelemetryError> {
    let mut slot = PROMETHEUS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                // infermesh_batch_size and infermesh_pipeline_batch_size.
                Matcher::Suffix("_batch_size".into()),
                &[
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            )
        })
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| {
        TelemetryError::Metrics("another metrics recorder is already installed".into())
    })?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Serves `GET /metrics` from `handle` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let h = handle.clone();
            async move {
                h.run_upkeep();
                h.render()
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// W3C trace context (`traceparent`, `tracestate`) carried in message headers: a consumer's
/// span continues the producer's trace, and a producer stamps its own.
pub mod propagation {
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Headers<'a>(&'a [(String, String)]);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
    }

    struct Out<'a>(&'a mut Vec<(String, String)>);

    impl Injector for Out<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
            self.0.push((key.to_string(), value));
        }
    }

    /// Makes `span` a child of the trace context in `headers` (`traceparent`), if any: a
    /// malformed or absent header leaves the span a root.
    pub fn continue_trace(span: &tracing::Span, headers: &[(String, String)]) {
        let cx = TraceContextPropagator::new().extract(&Headers(headers));
        if opentelemetry::trace::TraceContextExt::span(&cx)
            .span_context()
            .is_valid()
        {
            let _ = span.set_parent(cx);
        }
    }

    /// Adds `span`'s trace context to `headers` (`traceparent`, and `tracestate` when set);
    /// nothing when no OpenTelemetry layer records spans.
    pub fn inject(span: &tracing::Span, headers: &mut Vec<(String, String)>) {
        let cx = span.context();
        TraceContextPropagator::new().inject_context(&cx, &mut Out(headers));
    }
}
