//! Per-port request limits that every server applies in front of its routes: a request
//! timeout and a bound on requests in flight, refused at once past it.
//!
//! Model admission (the batchers' budget queues) bounds work per model; these bound the port
//! itself, so slow or piled-up requests of any route (metadata, repository calls, typed
//! services) cannot hold connections and memory without limit. HTTP routes use
//! [`http_limits`] (an axum middleware); gRPC services use [`GrpcLimitsLayer`], which answers
//! with a gRPC status rather than an HTTP error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::ServiceError;

/// Default request timeout, in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: f64 = 60.0;
/// Default bound on requests in flight per port.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

/// The flags of [`PortLimits`], shared by every server command.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct PortLimitArgs {
    /// Longest one request may take, in seconds (fractions allowed), before it is answered
    /// HTTP 503 / gRPC DEADLINE_EXCEEDED.
    #[arg(long, env = "INFERMESH_REQUEST_TIMEOUT", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS)]
    pub request_timeout: f64,
    /// Requests in flight at once on each port; past it a request is refused at once with
    /// HTTP 429 / gRPC RESOURCE_EXHAUSTED.
    #[arg(long, env = "INFERMESH_MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,
}

impl Default for PortLimitArgs {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT_SECS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

impl PortLimitArgs {
    /// Checks the values.
    pub fn validate(self) -> Result<PortLimits, String> {
        if !self.request_timeout.is_finite() || self.request_timeout <= 0.0 {
            return Err(format!(
                "--request-timeout must be > 0 seconds, got {}",
                self.request_timeout
            ));
        }
        if self.max_concurrent_requests == 0
            || self.max_concurrent_requests > Semaphore::MAX_PERMITS
        {
            return Err(format!(
                "--max-concurrent-requests must be between 1 and {}, got {}",
                Semaphore::MAX_PERMITS,
                self.max_concurrent_requests
            ));
        }
        Ok(PortLimits {
            timeout: Duration::from_secs_f64(self.request_timeout),
            max_concurrent: self.max_concurrent_requests,
        })
    }
}

/// Validated per-port limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortLimits {
    /// Longest one request may take.
    pub timeout: Duration,
    /// Requests in flight at once on one port.
    pub max_concurrent: usize,
}

impl Default for PortLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs_f64(DEFAULT_REQUEST_TIMEOUT_SECS),
            max_concurrent: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

impl PortLimits {
    /// A guard for one port (each port gets its own count).
    pub fn guard(self) -> PortGuard {
        PortGuard {
            slots: Arc::new(Semaphore::new(self.max_concurrent)),
            limits: self,
        }
    }
}

/// The state of one port's limits: its in-flight count and timeout.
#[derive(Debug, Clone)]
pub struct PortGuard {
    slots: Arc<Semaphore>,
    limits: PortLimits,
}

impl PortGuard {
    /// Requests in flight on this port now.
    pub fn in_flight(&self) -> usize {
        self.limits.max_concurrent - self.slots.available_permits()
    }

    fn busy(&self) -> ServiceError {
        ServiceError::overloaded(format!(
            "this port is serving {} requests, its limit (--max-concurrent-requests); retry later",
            self.limits.max_concurrent
        ))
    }

    fn timed_out(&self) -> ServiceError {
        ServiceError::unavailable(format!(
            "the request took longer than {:?} (--request-timeout)",
            self.limits.timeout
        ))
    }
}

/// axum middleware: refuses past the port's in-flight bound (429) and answers 503 when a
/// request runs past the timeout (the handler's future is dropped).
pub async fn http_limits(
    axum::extract::State(guard): axum::extract::State<PortGuard>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(_slot) = guard.slots.clone().try_acquire_owned() else {
        return guard.busy().into_response();
    };
    match tokio::time::timeout(guard.limits.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => guard.timed_out().into_response(),
    }
}

/// A tower layer for tonic servers: the same limits as [`http_limits`], answered as gRPC
/// statuses (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED).
#[derive(Debug, Clone)]
pub struct GrpcLimitsLayer {
    guard: PortGuard,
}

impl GrpcLimitsLayer {
    /// A layer enforcing `guard`.
    pub fn new(guard: PortGuard) -> Self {
        Self { guard }
    }
}

impl<S> tower::Layer<S> for GrpcLimitsLayer {
    type Service = GrpcLimits<S>;
    fn layer(&self, inner: S) -> GrpcLimits<S> {
        GrpcLimits {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`GrpcLimitsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcLimits<S> {
    inner: S,
    guard: PortGuard,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GrpcLimits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = self.guard.clone();
        let Ok(slot) = guard.slots.clone().try_acquire_owned() else {
            let status = guard.busy().to_status();
            return Box::pin(async move { Ok(status.into_http()) });
        };
        // The ready service answers this call; its clone takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let res = tokio::time::timeout(guard.limits.timeout, inner.call(req)).await;
            drop(slot);
            match res {
                Ok(r) => r,
                Err(_) => {
                    Ok(tonic::Status::deadline_exceeded(guard.timed_out().message).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(limits: PortLimits, gate: Arc<tokio::sync::Notify>) -> (Router, PortGuard) {
        let guard = limits.guard();
        let router = Router::new()
            .route(
                "/wait",
                get(move || {
                    let gate = gate.clone();
                    async move {
                        gate.notified().await;
                        "done"
                    }
                }),
            )
            .route("/now", get(|| async { "now" }))
            .layer(axum::middleware::from_fn_with_state(
                guard.clone(),
                http_limits,
            ));
        (router, guard)
    }

    fn get_req(path: &str) -> axum::extract::Request {
        http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn refuses_past_the_in_flight_bound_and_frees_the_slot() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let limits = PortLimits {
            timeout: Duration::from_secs(600),
            max_concurrent: 1,
        };
        let (router, guard) = app(limits, gate.clone());
        let waiting = tokio::spawn(router.clone().oneshot(get_req("/wait")));
        while guard.in_flight() < 1 {
            tokio::task::yield_now().await;
        }
        let refused = router.clone().oneshot(get_req("/now")).await.unwrap();
        assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
        gate.notify_one();
        assert_eq!(
            waiting.await.unwrap().unwrap().status(),
            http::StatusCode::OK
        );
        assert_eq!(guard.in_flight(), 0);
        let ok = router.oneshot(get_req("/now")).await.unwrap();
        assert_eq!(ok.status(), http::StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_timeout_is_answered_503() {
        let limits = PortLimits {
            timeout: Duration::from_secs(5),
            max_concurrent: 4,
        };
        // Never notified: the handler would wait forever. With the clock paused, tokio
        // advances time to the timeout as soon as everything is idle.
        let (router, guard) = app(limits, Arc::new(tokio::sync::Notify::new()));
        let resp = router.oneshot(get_req("/wait")).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(guard.in_flight(), 0);
    }

    #[test]
    fn flags_are_checked() {
        assert!(PortLimitArgs::default().validate().is_ok());
        for (t, n) in [(0.0, 1), (f64::NAN, 1), (1.0, 0)] {
            let a = PortLimitArgs {
                request_timeout: t,
                max_concurrent_requests: n,
            };
            assert!(a.validate().is_err(), "{a:?}");
        }
    }
}
