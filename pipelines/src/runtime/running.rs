//! A pipeline running in the background ([`Running`]): its task, its stop signal and its
//! Prometheus listener; every pipeline command returns one.

use crate::bus::{BoxFuture, BusError, EventBus, Subscription};

use super::{Dedupe, Handler, RunStats, RuntimeConfig, run};

/// The pipeline task could not be joined (it panicked or was cancelled), or its metrics
/// listener could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(pub String);

/// A pipeline running in the background: its task, told to stop through a watch, and its
/// Prometheus listener. Every pipeline command (`pipeline fraud|behavior|resumes`, `cdc
/// postgres`) returns one; `T` is what the task reports, `E` its error.
#[derive(Debug)]
pub struct Running<T, E> {
    /// Where /metrics listens (none when the caller serves the process's metrics).
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<T, E>>,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

impl<T: Send + 'static, E: From<TaskError> + Send + 'static> Running<T, E> {
    /// Serves /metrics on `metrics_addr` (when given), then spawns `body` with the stop signal
    /// (it resolves once a stop is asked for).
    pub async fn start<F, Fut>(
        metrics_addr: Option<std::net::SocketAddr>,
        body: F,
    ) -> Result<Self, E>
    where
        F: FnOnce(BoxFuture<'static, ()>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (metrics_addr, metrics) = match metrics_addr {
            Some(addr) => {
                let prometheus = infermesh_common::telemetry::install_prometheus()
                    .map_err(|e| E::from(TaskError(e.to_string())))?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| E::from(TaskError(format!("metrics port {addr}: {e}"))))?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| E::from(TaskError(e.to_string())))?;
                let stopped = infermesh_common::shutdown::triggered(rx.clone());
                let task = tokio::spawn(async move {
                    let _ =
                        infermesh_common::telemetry::serve_metrics(listener, prometheus, stopped)
                            .await;
                });
                (Some(bound), Some(task))
            }
            None => (None, None),
        };
        let stopped: BoxFuture<'static, ()> = Box::pin(infermesh_common::shutdown::triggered(rx));
        let task = tokio::spawn(body(stopped));
        Ok(Self {
            metrics_addr,
            stop,
            task,
            metrics,
        })
    }

    /// Asks the task to stop (a pipeline drains: the batch in hand finishes, offsets are
    /// committed) and returns what it reports.
    pub async fn shutdown(self) -> Result<T, E> {
        let _ = self.stop.send(true);
        let r = self
            .task
            .await
            .map_err(|e| E::from(TaskError(e.to_string())))?;
        if let Some(m) = self.metrics {
            m.abort();
        }
        r
    }

    /// What a command does: prints `{name}: metrics ADDR` on stdout (not `println!`, which
    /// panics on a closed pipe), runs until Ctrl-C or SIGTERM, then drains and logs what the
    /// task reports.
    pub async fn run_until_signalled(self, name: &str) -> Result<T, E>
    where
        T: std::fmt::Debug,
    {
        use std::io::Write as _;
        if let Some(addr) = self.metrics_addr {
            let _ = writeln!(std::io::stdout().lock(), "{name}: metrics {addr}");
        }
        let stats = self.wait(infermesh_common::shutdown::stop_signal()).await?;
        tracing::info!(?stats, "{name} stopped");
        Ok(stats)
    }

    /// Runs until `signal` resolves (then stops as [`Running::shutdown`]) or the task ends
    /// by itself (a fatal bus error).
    pub async fn wait(mut self, signal: impl std::future::Future<Output = ()>) -> Result<T, E> {
        tokio::pin!(signal);
        let ended = tokio::select! {
            () = &mut signal => None,
            r = &mut self.task => Some(r),
        };
        match ended {
            None => self.shutdown().await,
            Some(r) => {
                if let Some(m) = self.metrics {
                    m.abort();
                }
                r.map_err(|e| E::from(TaskError(e.to_string())))?
            }
        }
    }
}

impl<E: From<TaskError> + From<BusError> + Send + 'static> Running<RunStats, E> {
    /// Runs `handler` over `sub` in the background ([`run`] until a stop is asked for), then
    /// hands the handler to `finish` (a feature writer to flush, models to drop); logs
    /// `{name} consuming` with the metrics address.
    #[allow(clippy::too_many_arguments)]
    pub async fn consume<H, F, FF>(
        name: &'static str,
        rt: RuntimeConfig,
        mut sub: Box<dyn Subscription>,
        bus: std::sync::Arc<dyn EventBus>,
        dedupe: Dedupe,
        handler: H,
        metrics_addr: Option<std::net::SocketAddr>,
        finish: F,
    ) -> Result<Self, E>
    where
        H: Handler + 'static,
        F: FnOnce(H) -> FF + Send + 'static,
        FF: std::future::Future<Output = ()> + Send,
    {
        let p = Running::start(metrics_addr, move |stopped| async move {
            let r = run(&rt, sub.as_mut(), bus.as_ref(), &dedupe, &handler, stopped).await;
            finish(handler).await;
            Ok(r?)
        })
        .await?;
        tracing::info!(metrics_addr = ?p.metrics_addr, "{name} consuming");
        Ok(p)
    }
}
