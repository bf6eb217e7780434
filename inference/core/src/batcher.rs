//! Dynamic batching for one model version: semaphore admission, the [`BudgetQueue`], and a
//! backend thread that runs batches.
//!
//! The batcher is generic over a [`Backend`]: tabular models budget rows, text models budget
//! tokens (TEI's token-budget batching), with the same admission, queue and thread. The
//! backend runs on its own OS thread (as TEI's backends do): model code is synchronous and
//! CPU-bound, and a dedicated thread keeps it off the async workers without a `spawn_blocking`
//! hop per batch. Large batches fan out inside the model (rayon, or candle's matmuls).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use infermesh_common::{ErrorKind, ServiceError, metrics_names as m};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::queue::{BudgetQueue, Cancellable, Entry};

/// Runs batches of requests for one model version. Synchronous; called from the batcher's
/// thread (or, for small idle requests, inline on the caller's).
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// One request's payload.
    type Request: Send + std::fmt::Debug + 'static;
    /// One request's answer.
    type Reply: Send + std::fmt::Debug + 'static;
    /// Answers every request of `batch`, in order (one reply per request).
    fn run(&self, batch: &[&Self::Request]) -> Result<Vec<Self::Reply>, ServiceError>;
}

/// Batching limits of one model version.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Model name, for metrics and logs.
    pub model: String,
    /// Version, for metrics and logs.
    pub version: String,
    /// Largest batch in budget units (rows, or tokens for text).
    pub max_batch_cost: usize,
    /// Largest batch in items (rows or texts).
    pub max_batch_items: usize,
    /// Longest wait for a fuller batch.
    pub max_queue_delay: Duration,
    /// Budget units admitted at once (queued plus running); past it requests are refused.
    pub max_queue_cost: usize,
    /// Requests of at most this cost run inline on the caller's thread when the model is idle
    /// (0: never; text models keep their long forward passes off the async workers).
    pub inline_max_cost: usize,
}

/// A request waiting in the queue.
#[derive(Debug)]
pub struct Job<B: Backend> {
    request: B::Request,
    reply: oneshot::Sender<Result<B::Reply, ServiceError>>,
    // Held until the reply is sent: admission counts a request until its batch finishes.
    _permit: OwnedSemaphorePermit,
}

impl<B: Backend> Job<B> {
    /// Frees the request's admission permits, then replies: once a caller has its answer,
    /// its cost no longer counts against the capacity.
    fn answer(self, result: Result<B::Reply, ServiceError>) {
        let Job { reply, _permit, .. } = self;
        drop(_permit);
        let _ = reply.send(result);
    }
}

impl<B: Backend> Cancellable for Job<B> {
    fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }
}

#[derive(Debug)]
struct State<B: Backend> {
    queue: BudgetQueue<Job<B>>,
    closed: bool,
}

#[derive(Debug)]
struct Shared<B: Backend> {
    state: Mutex<State<B>>,
    wake: Condvar,
    /// Held while a batch runs, by the backend thread or by an inline run: one batch at a
    /// time per model version, whoever runs it.
    running: Mutex<()>,
    /// Set when the backend panicked: its state can no longer be trusted, so the version
    /// refuses new work and reports itself failed until it is reloaded.
    failed: OnceLock<String>,
}

impl<B: Backend> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        // A panic while holding this lock can only come from a bug in the queue code; the
        // state stays consistent (plain counters and a deque), so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Largest tabular request (rows) run inline on the caller's thread when the model is idle.
pub const INLINE_MAX_ROWS: usize = 16;

/// Admission, queue and backend thread of one model version. Dropping it closes the queue
/// and waits for the thread to finish what was queued and exit (see the `Drop` impl).
#[derive(Debug)]
pub struct Batcher<B: Backend> {
    cfg: BatchConfig,
    shared: Arc<Shared<B>>,
    backend: Arc<B>,
    admission: Arc<Semaphore>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<B: Backend> Batcher<B> {
    /// Starts the backend thread for `backend`.
    pub fn start(backend: Arc<B>, cfg: BatchConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: BudgetQueue::default(),
                closed: false,
            }),
            wake: Condvar::new(),
            running: Mutex::new(()),
            failed: OnceLock::new(),
        });
        let thread_backend = backend.clone();
        let thread_shared = shared.clone();
        let thread_cfg = cfg.clone();
        let thread = std::thread::Builder::new()
            .name(format!("batcher-{}-{}", cfg.model, cfg.version))
            .spawn(move || backend_loop(thread_backend, thread_shared, thread_cfg))?;
        let admission = Arc::new(Semaphore::new(cfg.max_queue_cost));
        // Exported at 0 from the start, so that rates and alerts on it see the model before its
        // first refusal.
        metrics::counter!(m::ADMISSION_REJECTED_TOTAL, "model" => cfg.model.clone()).increment(0);
        Ok(Self {
            cfg,
            shared,
            backend,
            admission,
            thread: Some(thread),
        })
    }

    /// Budget units (rows or tokens) admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.cfg.max_queue_cost - self.admission.available_permits()
    }

    /// The limits this batcher runs with.
    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// Why the backend can no longer serve (it panicked), if it cannot.
    pub fn failure(&self) -> Option<&str> {
        self.shared.failed.get().map(String::as_str)
    }

    /// Runs `request` (costing `cost` budget units, `items` rows or texts) through the
    /// queue. Refused at once with `Overloaded` when its cost does not fit in the admission
    /// capacity.
    pub async fn submit(
        &self,
        request: B::Request,
        cost: usize,
        items: usize,
    ) -> Result<B::Reply, ServiceError> {
        if let Some(why) = self.failure() {
            return Err(failed_error(&self.cfg, why));
        }
        // A request costing more than the whole capacity would be refused forever: that is
        // the caller's request, not the server's load, so it is not "retry later".
        if cost > self.cfg.max_queue_cost {
            return Err(ServiceError::new(
                ErrorKind::TooLarge,
                format!(
                    "this request costs {cost} (rows or tokens) but model '{}' admits at most \
                     {} at once; split it into smaller requests",
                    self.cfg.model, self.cfg.max_queue_cost
                ),
            ));
        }
        let permit = u32::try_from(cost)
            .ok()
            .and_then(|n| self.admission.clone().try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            metrics::counter!(m::ADMISSION_REJECTED_TOTAL, "model" => self.cfg.model.clone())
                .increment(1);
            return Err(ServiceError::overloaded(format!(
                "model '{}' is at capacity ({} queued or running, limit {}, this request {cost}); retry later",
                self.cfg.model,
                self.in_flight(),
                self.cfg.max_queue_cost
            )));
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(ServiceError::unavailable("model version is being unloaded"));
            }
            // Run to completion when uncontended: nothing queued, no batch running, no
            // batching delay asked for, and a request small enough not to hold this worker
            // thread for long. This skips the hand-off to the backend thread (tens of
            // microseconds, more than a small tree model's whole prediction); contended
            // requests queue and batch as usual.
            if cost <= self.cfg.inline_max_cost
                && st.queue.is_empty()
                && self.cfg.max_queue_delay.is_zero()
                && let Ok(running) = self.shared.running.try_lock()
            {
                drop(st);
                metrics::histogram!(m::BATCH_SIZE, "model" => self.cfg.model.clone())
                    .record(items as f64);
                let res = run_guarded(&*self.backend, &[&request], &self.shared, &self.cfg);
                drop(running);
                drop(permit);
                return res.and_then(|v| {
                    v.into_iter()
                        .next()
                        .ok_or_else(|| ServiceError::internal("backend returned no reply"))
                });
            }
            st.queue.push(Entry {
                cost,
                items,
                enqueued: Instant::now(),
                item: Job {
                    request,
                    reply: tx,
                    _permit: permit,
                },
            });
            metrics::gauge!(m::QUEUE_DEPTH, "model" => self.cfg.model.clone())
                .set(st.queue.cost() as f64);
        }
        self.shared.wake.notify_one();
        rx.await
            .map_err(|_| ServiceError::internal("batcher dropped a request without answering"))?
    }
}

/// Closes the queue and joins the backend thread, which answers what was queued (a batch
/// already running finishes) and drops its handle on the backend. So the backend is freed
/// before `drop` returns, here or on that thread, never by a thread left running after its
/// owner is gone. That matters for native engines: ONNX Runtime and OpenVINO tear down
/// static state from exit handlers, and a detached thread still freeing an ONNX Runtime session when
/// `main` returns raced them (SIGSEGV in `ov::ICompiledModel`'s destructor during exit).
/// The wait is at most the queued work, which admission bounds.
impl<B: Backend> Drop for Batcher<B> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // The thread never owns a `Batcher`; the check only keeps a future change from
            // turning that into a self-join deadlock.
            if thread.thread().id() != std::thread::current().id() {
                // A panic in the thread was already reported by its hook.
                let _ = thread.join();
            }
        }
    }
}

fn backend_loop<B: Backend>(backend: Arc<B>, shared: Arc<Shared<B>>, cfg: BatchConfig) {
    let labels = [("model", cfg.model.clone())];
    let depth = metrics::gauge!(m::QUEUE_DEPTH, &labels);
    let batch_size = metrics::histogram!(m::BATCH_SIZE, &labels);
    let queue_wait = metrics::histogram!(m::QUEUE_WAIT_SECONDS, &labels);
    loop {
        let batch = {
            let mut st = shared.lock();
            loop {
                st.queue.prune_cancelled();
                if st.queue.is_empty() {
                    if st.closed {
                        return;
                    }
                    st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                if st.closed
                    || st.queue.cost() >= cfg.max_batch_cost
                    || cfg.max_queue_delay.is_zero()
                {
                    break;
                }
                let deadline = st.queue.oldest().unwrap_or_else(Instant::now) + cfg.max_queue_delay;
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = shared
                    .wake
                    .wait_timeout(st, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            let batch = st.queue.next_batch(cfg.max_batch_cost, cfg.max_batch_items);
            depth.set(st.queue.cost() as f64);
            batch
        };
        if batch.is_empty() {
            continue;
        }
        // Wait out an inline run, then drop what was abandoned meanwhile.
        let _running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        let batch: Vec<_> = batch
            .into_iter()
            .filter(|e| !e.item.is_cancelled())
            .collect();
        if batch.is_empty() {
            continue;
        }
        let now = Instant::now();
        let items: usize = batch.iter().map(|e| e.items).sum();
        batch_size.record(items as f64);
        for e in &batch {
            queue_wait.record(now.duration_since(e.enqueued).as_secs_f64());
        }
        let _span =
            tracing::debug_span!("batch", model = %cfg.model, version = %cfg.version, items)
                .entered();
        let requests: Vec<&B::Request> = batch.iter().map(|e| &e.item.request).collect();
        let result = run_guarded(&*backend, &requests, &shared, &cfg);
        drop(requests);
        if shared.failed.get().is_some() {
            // Nothing queued behind a panicked batch may reach the backend again.
            let mut st = shared.lock();
            let rest = st.queue.next_batch(usize::MAX, usize::MAX);
            depth.set(st.queue.cost() as f64);
            drop(st);
            let why = shared.failed.get().map(String::as_str).unwrap_or("");
            for e in rest {
                e.item.answer(Err(failed_error(&cfg, why)));
            }
        }
        match result {
            Ok(replies) if replies.len() == batch.len() => {
                for (e, r) in batch.into_iter().zip(replies) {
                    e.item.answer(Ok(r));
                }
            }
            Ok(replies) => {
                let err = ServiceError::internal(format!(
                    "backend answered {} of {} requests",
                    replies.len(),
                    batch.len()
                ));
                for e in batch {
                    e.item.answer(Err(err.clone()));
                }
            }
            Err(err) => {
                for e in batch {
                    e.item.answer(Err(err.clone()));
                }
            }
        }
    }
}

/// Runs one batch, turning a panic in the backend into an internal error for the batch and
/// a failed batcher (the panic message goes to the log, never to the client).
fn run_guarded<B: Backend>(
    backend: &B,
    batch: &[&B::Request],
    shared: &Shared<B>,
    cfg: &BatchConfig,
) -> Result<Vec<B::Reply>, ServiceError> {
    match catch_unwind(AssertUnwindSafe(|| backend.run(batch))) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let reason = format!("the model's backend panicked: {what}");
            tracing::error!(model = %cfg.model, version = %cfg.version, %reason,
                "model version failed; it serves again once reloaded");
            metrics::counter!(m::MODEL_LOAD_EVENTS_TOTAL, "model" => cfg.model.clone(),
                "version" => cfg.version.clone(), "event" => "failed")
            .increment(1);
            let _ = shared.failed.set(reason);
            Err(ServiceError::internal(format!(
                "model '{}' version {} failed while running this request",
                cfg.model, cfg.version
            )))
        }
    }
}

fn failed_error(cfg: &BatchConfig, why: &str) -> ServiceError {
    ServiceError::unavailable(format!(
        "model '{}' version {} is not ready: {why}",
        cfg.model, cfg.version
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backends::TabularBackend;
    use infermesh_common::ErrorKind;
    use infermesh_model_core::{ModelError, TabularModel, Task};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Sums each row; records batch sizes; optionally sleeps to hold the backend busy.
    #[derive(Debug)]
    struct SumModel {
        batches: Mutex<Vec<usize>>,
        threads: Mutex<Vec<String>>,
        sleep: Duration,
        calls: AtomicUsize,
        /// While true, `predict` waits (tests release it to prove a caller did not wait).
        gate: (Mutex<bool>, std::sync::Condvar),
    }

    impl TabularModel for SumModel {
        fn num_features(&self) -> usize {
            2
        }
        fn feature_names(&self) -> Option<&[String]> {
            None
        }
        fn num_outputs(&self) -> usize {
            1
        }
        fn task(&self) -> Task {
            Task::Regression
        }
        fn format(&self) -> &'static str {
            "test"
        }
        fn predict(&self, rows: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            {
                let mut closed = self.gate.0.lock().unwrap();
                while *closed {
                    closed = self.gate.1.wait(closed).unwrap();
                }
            }
            assert!(rows.first() != Some(&-1.0), "test model told to panic");
            let name = std::thread::current().name().unwrap_or("").to_string();
            self.threads.lock().unwrap().push(name);
            std::thread::sleep(self.sleep);
            self.batches.lock().unwrap().push(rows.len() / 2);
            for (o, r) in out.iter_mut().zip(rows.chunks(2)) {
                *o = r[0] + r[1];
            }
            Ok(())
        }
        fn contributions(&self, _row: &[f32]) -> Result<Vec<f32>, ModelError> {
            Err(ModelError::Unsupported("test".into()))
        }
    }

    fn model(sleep_ms: u64) -> Arc<SumModel> {
        Arc::new(SumModel {
            batches: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            sleep: Duration::from_millis(sleep_ms),
            calls: AtomicUsize::new(0),
            gate: (Mutex::new(false), std::sync::Condvar::new()),
        })
    }

    impl SumModel {
        fn hold(&self, closed: bool) {
            *self.gate.0.lock().unwrap() = closed;
            self.gate.1.notify_all();
        }
    }

    fn cfg(max_batch: usize, delay_ms: u64, cap: usize) -> BatchConfig {
        BatchConfig {
            model: "m".into(),
            version: "1".into(),
            max_batch_cost: max_batch,
            max_batch_items: usize::MAX,
            max_queue_delay: Duration::from_millis(delay_ms),
            max_queue_cost: cap,
            inline_max_cost: INLINE_MAX_ROWS,
        }
    }

    fn start(m: &Arc<SumModel>, c: BatchConfig) -> Batcher<TabularBackend> {
        let model: Arc<dyn TabularModel> = m.clone();
        Batcher::start(Arc::new(TabularBackend::new(model)), c).unwrap()
    }

    #[tokio::test]
    async fn answers_each_request_with_its_own_rows() {
        let b = start(&model(0), cfg(8, 0, 64));
        let out = b.predict_rows(vec![1.0, 2.0, 3.0, 4.0], 2).await.unwrap();
        assert_eq!(out, vec![3.0, 7.0]);
        let err = b.predict_rows(vec![1.0, 2.0, 3.0], 2).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_batched_and_split_back() {
        let m = model(0);
        let b = Arc::new(start(&m, cfg(64, 20, 1024)));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let x = i as f32;
                (i, b.predict_rows(vec![x, 1.0, x, 2.0], 2).await.unwrap())
            }));
        }
        for t in tasks {
            let (i, out) = t.await.unwrap();
            let x = i as f32;
            assert_eq!(out, vec![x + 1.0, x + 2.0]);
        }
        let batches = m.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 32);
        assert!(batches.len() < 16, "expected batching, got {batches:?}");
        assert!(batches.iter().all(|&b| b <= 64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_capacity_requests_are_refused_at_once() {
        let m = model(0);
        m.hold(true);
        let b = Arc::new(start(&m, cfg(4, 0, 4)));
        let b1 = b.clone();
        let first = tokio::spawn(async move { b1.predict_rows(vec![0.0; 8], 2).await });
        // Wait until the first request holds its permits.
        while b.in_flight() < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The model is held shut, so an answer now proves the refusal did not wait for it.
        let err = b.predict_rows(vec![0.0; 2], 2).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert!(!first.is_finished(), "refusal must not wait for capacity");
        m.hold(false);
        assert!(first.await.unwrap().is_ok());
        // Capacity is back once the batch finished.
        assert!(b.predict_rows(vec![0.0; 2], 2).await.is_ok());
        // A request bigger than the whole capacity can never run: 413, not "retry later".
        let err = b.predict_rows(vec![0.0; 10], 2).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::TooLarge);
        assert!(err.message.contains("at most 4"), "{}", err.message);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_requests_never_reach_the_model() {
        // The busy request holds the model long enough that a loaded machine still aborts
        // the queued one before it ends.
        let m = model(1000);
        let b = Arc::new(start(&m, cfg(1, 0, 64)));
        let b1 = b.clone();
        let busy = tokio::spawn(async move { b1.predict_rows(vec![0.0, 0.0], 2).await });
        // Wait until the busy request is inside the model.
        while m.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Queued behind the busy batch (admitted: both hold their permits), then abandoned.
        let b2 = b.clone();
        let abandoned = tokio::spawn(async move { b2.predict_rows(vec![5.0, 5.0], 2).await });
        while b.in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        assert_eq!(
            m.calls.load(Ordering::SeqCst),
            1,
            "still busy with the first"
        );
        busy.await.unwrap().unwrap();
        assert_eq!(b.predict_rows(vec![1.0, 1.0], 2).await.unwrap(), vec![2.0]);
        assert_eq!(m.calls.load(Ordering::SeqCst), 2);
        assert_eq!(settled_in_flight(&b).await, 0);
    }

    /// `in_flight` once it stops moving: the worker releases a request's permit just after
    /// answering it, so on a loaded machine the caller can see the answer first (bounded wait).
    async fn settled_in_flight<B: Backend>(b: &Batcher<B>) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while b.in_flight() != 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        b.in_flight()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_small_requests_run_inline_and_contended_ones_queue() {
        let m = model(50);
        let b = Arc::new(start(&m, cfg(8, 0, 64)));
        // Idle: runs on the caller's thread.
        b.predict_rows(vec![1.0, 1.0], 2).await.unwrap();
        // Busy (a 50 ms inline run holds the model): the next request goes to the backend.
        let b1 = b.clone();
        let first = tokio::spawn(async move { b1.predict_rows(vec![1.0, 2.0], 2).await });
        while m.calls.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(b.predict_rows(vec![3.0, 4.0], 2).await.unwrap(), vec![7.0]);
        assert_eq!(first.await.unwrap().unwrap(), vec![3.0]);
        // More rows than the inline limit always queue.
        b.predict_rows(vec![0.0; 2 * (INLINE_MAX_ROWS + 1)], 2)
            .await
            .unwrap();
        let threads = m.threads.lock().unwrap().clone();
        assert!(!threads[0].starts_with("batcher-"), "{threads:?}");
        assert!(threads[2].starts_with("batcher-"), "{threads:?}");
        assert!(threads[3].starts_with("batcher-"), "{threads:?}");
        assert_eq!(settled_in_flight(&b).await, 0);
    }

    /// Dropping the batcher while its thread runs a batch waits for that batch, and the
    /// backend is freed by the time `drop` returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_batcher_waits_for_its_thread_and_frees_the_backend() {
        let m = model(300);
        let model_dyn: Arc<dyn TabularModel> = m.clone();
        let backend = Arc::new(TabularBackend::new(model_dyn));
        let weak = Arc::downgrade(&backend);
        let b = Arc::new(Batcher::start(backend, cfg(64, 0, 64)).unwrap());
        let b1 = b.clone();
        // More rows than INLINE_MAX_ROWS: queued, run by the batcher's thread.
        let busy = tokio::spawn(async move { b1.predict_rows(vec![1.0; 40], 2).await });
        while m.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        busy.abort();
        let _ = busy.await;
        assert_eq!(Arc::strong_count(&b), 1);
        drop(b);
        assert_eq!(weak.strong_count(), 0, "the backend outlived its batcher");
        assert_eq!(
            *m.batches.lock().unwrap(),
            vec![20],
            "the running batch finished"
        );
        assert!(m.threads.lock().unwrap()[0].starts_with("batcher-"));
    }

    /// A panic in the backend answers its batch with an internal error, fails the batcher
    /// (the reason says why) and refuses everything after it, queued or new; the thread
    /// survives and exits cleanly on drop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_backend_fails_the_version_and_answers_everyone() {
        for inline in [true, false] {
            let m = model(0);
            let b = Arc::new(start(&m, cfg(64, 0, 1024)));
            assert!(b.failure().is_none());
            // Inline on an idle model for one row; past INLINE_MAX_ROWS on the thread.
            let rows = if inline { 1 } else { INLINE_MAX_ROWS + 1 };
            let mut bad = vec![0.0; 2 * rows];
            bad[0] = -1.0;
            let err = if inline {
                b.predict_rows(bad, 2).await.unwrap_err()
            } else {
                // Hold the model so a second request queues behind the panicking one.
                m.hold(true);
                let b1 = b.clone();
                let first = tokio::spawn(async move { b1.predict_rows(bad, 2).await });
                while m.calls.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let b2 = b.clone();
                let second =
                    tokio::spawn(async move { b2.predict_rows(vec![1.0; 2 * rows], 2).await });
                while b.in_flight() < 2 * rows {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                m.hold(false);
                let queued_err = second.await.unwrap().unwrap_err();
                assert_eq!(queued_err.kind, ErrorKind::Unavailable, "{queued_err:?}");
                first.await.unwrap().unwrap_err()
            };
            assert_eq!(err.kind, ErrorKind::Internal, "inline={inline}");
            let why = b.failure().expect("the batcher is failed");
            assert!(why.contains("told to panic"), "{why}");
            let after = b.predict_rows(vec![1.0, 1.0], 2).await.unwrap_err();
            assert_eq!(after.kind, ErrorKind::Unavailable);
            assert!(after.message.contains("panicked"), "{}", after.message);
            assert_eq!(settled_in_flight(&b).await, 0);
        }
    }

    #[tokio::test]
    async fn dropping_the_batcher_finishes_queued_work() {
        let m = model(0);
        let b = start(&m, cfg(8, 0, 64));
        let fut = b.predict_rows(vec![1.0, 1.0], 2);
        let out = fut.await.unwrap();
        drop(b);
        assert_eq!(out, vec![2.0]);
    }
}
