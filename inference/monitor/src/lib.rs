//! What the inference server watches of the requests it answers, behind the serving core's
//! monitoring seam ([`infermesh_inference::monitor`]):
//!
//! - [`log`]: the **inference log**. A sample of rows (`--log-sample-rate`), their features
//!   and outputs as named columns (no raw text or request ids unless the model's
//!   `[monitoring] log_raw` allows them), written by one background thread to Parquet files
//!   rolled by time (`--log-roll`), `<log-dir>/<model>/<version>/<YYYY-MM-DD>/<HHMMSS>Z-<n>.parquet`,
//!   the oldest deleted past `--log-max-bytes`. Requests never wait for it: rows it has no room
//!   for are dropped and counted. The schema is in `docs/inference-log.md`.
//! - [`live`]: **live drift**. Per model version with a `drift_reference.parquet` (the profile
//!   of its training rows, written by `infermesh train`), a window of its most recent rows
//!   (`--drift-window`), compared every `--drift-interval` seconds against the reference with
//!   the tests `infermesh drift` runs (Evidently's DataDriftPreset), into the gauges
//!   `infermesh_drift_score{model,version,feature,method}`, `infermesh_drift_detected{...}`,
//!   `infermesh_dataset_drift_share{model,version}` and `infermesh_dataset_drift{...}`.
//!
//! Memory is bounded by the flags: a request hands over at most [`MAX_LOG_ROWS_PER_REQUEST`]
//! logged rows plus its last `--drift-window` rows, the log's queue holds at most
//! [`log::QUEUE_BATCHES`] requests, a file buffer at most `--log-flush-rows` rows, and a
//! reference profile at most [`live::MAX_REFERENCE_VALUES`] values.

pub mod live;
pub mod log;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use infermesh_inference::monitor::{MonitorFactory, Observation, Selection, VersionMonitor};
use infermesh_inference::{LoadedVersion, ObservedColumn};
use infermesh_model_core::rng::{GAMMA, mix, unit_f64};

/// Most rows of one request that go to the inference log (a huge batch request is sampled
/// down to this many).
pub const MAX_LOG_ROWS_PER_REQUEST: usize = 4096;
/// Largest `--drift-window`.
pub const MAX_DRIFT_WINDOW: usize = 1_000_000;

/// Errors of the monitor's set-up.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A flag is out of range.
    #[error("{0}")]
    Config(String),
    /// The log directory cannot be used.
    #[error("inference log directory {path}: {source}")]
    LogDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A background thread could not start.
    #[error("cannot start the monitor's thread: {0}")]
    Thread(std::io::Error),
}

/// The server's monitoring flags.
#[derive(Debug, Clone, clap::Args)]
pub struct MonitorArgs {
    /// Inference log directory: a sample of each model's requests (features and outputs; raw
    /// text and request ids only where a model's `[monitoring] log_raw` allows) as Parquet
    /// files, <dir>/<model>/<version>/<YYYY-MM-DD>/<HHMMSS>Z-<n>.parquet. Unset: no log.
    #[arg(long, env = "INFERMESH_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Share of rows written to the inference log, from 0 to 1.
    #[arg(long, env = "INFERMESH_LOG_SAMPLE_RATE", default_value_t = 0.01)]
    pub log_sample_rate: f64,
    /// Seconds each log file covers before a new one starts.
    #[arg(long, env = "INFERMESH_LOG_ROLL", default_value_t = 3600)]
    pub log_roll: u64,
    /// Rows a model version's log buffer holds before it is written early.
    #[arg(long, env = "INFERMESH_LOG_FLUSH_ROWS", default_value_t = 65_536)]
    pub log_flush_rows: usize,
    /// Most bytes the log directory's Parquet files may hold; the oldest are deleted past it.
    #[arg(long, env = "INFERMESH_LOG_MAX_BYTES", default_value_t = 1 << 30)]
    pub log_max_bytes: u64,
    /// Seconds between live drift evaluations of each model version that has a
    /// drift_reference.parquet (fractions allowed); 0 turns live drift off.
    #[arg(long, env = "INFERMESH_DRIFT_INTERVAL", default_value_t = 60.0)]
    pub drift_interval: f64,
    /// Most recent rows of each version compared with its reference.
    #[arg(long, env = "INFERMESH_DRIFT_WINDOW", default_value_t = 1000)]
    pub drift_window: usize,
    /// Fewest rows a window needs before it is compared (fewer: no evaluation, counted as
    /// too_few_rows).
    #[arg(long, env = "INFERMESH_DRIFT_MIN_ROWS", default_value_t = 100)]
    pub drift_min_rows: usize,
}

impl Default for MonitorArgs {
    fn default() -> Self {
        Self {
            log_dir: None,
            log_sample_rate: 0.01,
            log_roll: 3600,
            log_flush_rows: 65_536,
            log_max_bytes: 1 << 30,
            drift_interval: 60.0,
            drift_window: 1000,
            drift_min_rows: 100,
        }
    }
}

/// Validated monitoring settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// The inference log, if on.
    pub log: Option<log::LogConfig>,
    /// Live drift, if on.
    pub drift: Option<live::DriftConfig>,
}

impl MonitorConfig {
    /// Nothing watched.
    pub fn off() -> Self {
        Self {
            log: None,
            drift: None,
        }
    }
}

impl MonitorArgs {
    /// Checks the flags.
    pub fn validate(self) -> Result<MonitorConfig, MonitorError> {
        let bad = |m: String| Err(MonitorError::Config(m));
        if !(0.0..=1.0).contains(&self.log_sample_rate) {
            return bad(format!(
                "--log-sample-rate must be within [0, 1], got {}",
                self.log_sample_rate
            ));
        }
        if self.log_roll == 0 {
            return bad("--log-roll must be at least 1 second".into());
        }
        if self.log_flush_rows == 0 || self.log_flush_rows > 1 << 24 {
            return bad(format!(
                "--log-flush-rows must be within [1, {}], got {}",
                1 << 24,
                self.log_flush_rows
            ));
        }
        if !self.drift_interval.is_finite() || self.drift_interval < 0.0 {
            return bad(format!(
                "--drift-interval must be >= 0 seconds, got {}",
                self.drift_interval
            ));
        }
        if self.drift_window == 0 || self.drift_window > MAX_DRIFT_WINDOW {
            return bad(format!(
                "--drift-window must be within [1, {MAX_DRIFT_WINDOW}], got {}",
                self.drift_window
            ));
        }
        if self.drift_min_rows == 0 || self.drift_min_rows > self.drift_window {
            return bad(format!(
                "--drift-min-rows must be within [1, --drift-window = {}], got {}",
                self.drift_window, self.drift_min_rows
            ));
        }
        let log = match self.log_dir {
            Some(dir) if self.log_sample_rate > 0.0 => Some(log::LogConfig {
                dir,
                sample_rate: self.log_sample_rate,
                roll: Duration::from_secs(self.log_roll),
                flush_rows: self.log_flush_rows,
                max_bytes: self.log_max_bytes,
            }),
            _ => None,
        };
        let drift = (self.drift_interval > 0.0).then(|| live::DriftConfig {
            interval: Duration::from_secs_f64(self.drift_interval),
            window: self.drift_window,
            min_rows: self.drift_min_rows,
        });
        Ok(MonitorConfig { log, drift })
    }
}

/// The server's monitor: the log writer and the drift evaluator, and the factory that gives
/// each loaded version its [`VersionWatch`].
#[derive(Debug)]
pub struct Monitoring {
    log: Option<log::LogWriter>,
    drift: Option<live::DriftEvaluator>,
    seed: AtomicU64,
}

impl Monitoring {
    /// Starts the threads `config` needs (none when everything is off).
    pub fn start(config: MonitorConfig) -> Result<Arc<Self>, MonitorError> {
        let log = config.log.map(log::LogWriter::start).transpose()?;
        let drift = config.drift.map(live::DriftEvaluator::start).transpose()?;
        let seed = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Arc::new(Self {
            log,
            drift,
            seed: AtomicU64::new(seed),
        }))
    }

    /// Whether anything is watched.
    pub fn is_on(&self) -> bool {
        self.log.is_some() || self.drift.is_some()
    }

    /// The inference log's writer, if on.
    pub fn log(&self) -> Option<&log::LogWriter> {
        self.log.as_ref()
    }

    /// The drift evaluator, if on.
    pub fn drift(&self) -> Option<&live::DriftEvaluator> {
        self.drift.as_ref()
    }
}

impl MonitorFactory for Monitoring {
    fn attach(&self, version: &LoadedVersion) -> Option<Arc<dyn VersionMonitor>> {
        let settings = version.config.monitoring;
        let model: Arc<str> = Arc::from(version.name.as_str());
        let log = self
            .log
            .as_ref()
            .filter(|_| settings.log)
            .map(|w| w.sink(model.clone(), version.version));
        let window = self
            .drift
            .as_ref()
            .filter(|_| settings.drift)
            .and_then(|d| d.watch(&version.name, version.version, version.dir()));
        if log.is_none() && window.is_none() {
            return None;
        }
        Some(Arc::new(VersionWatch {
            log,
            window,
            raw: settings.log_raw,
            rng: AtomicU64::new(self.seed.fetch_add(GAMMA, Ordering::Relaxed)),
        }))
    }
}

/// One version's monitor: its log sink and drift window.
#[derive(Debug)]
pub struct VersionWatch {
    log: Option<log::LogSink>,
    window: Option<Arc<live::DriftWindow>>,
    raw: bool,
    rng: AtomicU64,
}

impl VersionWatch {
    /// A uniform draw in [0, 1) (SplitMix64 over a shared counter: no lock).
    fn uniform(&self) -> f64 {
        let state = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        unit_f64(mix(state))
    }

    /// The logged rows of a request of `rows` rows: each row with probability `rate`
    /// (geometric gaps between picks, so a large request costs its picks, not its rows), at
    /// most [`MAX_LOG_ROWS_PER_REQUEST`].
    fn log_rows(&self, rows: usize, rate: f64) -> Vec<usize> {
        if rate >= 1.0 {
            return (0..rows.min(MAX_LOG_ROWS_PER_REQUEST)).collect();
        }
        let mut out = Vec::new();
        let ln_q = (1.0 - rate).ln();
        let mut at = 0usize;
        loop {
            // Rows skipped before the next pick: floor(ln U / ln(1 - p)).
            let u = self.uniform().max(f64::MIN_POSITIVE);
            let skip = (u.ln() / ln_q).floor();
            if !skip.is_finite() || skip >= (rows - at) as f64 {
                break;
            }
            at += skip as usize;
            out.push(at);
            at += 1;
            if at >= rows || out.len() >= MAX_LOG_ROWS_PER_REQUEST {
                break;
            }
        }
        out
    }
}

impl VersionMonitor for VersionWatch {
    fn select(&self, rows: usize) -> Option<Selection> {
        if rows == 0 {
            return None;
        }
        let logged = match &self.log {
            Some(sink) => self.log_rows(rows, sink.sample_rate()),
            None => Vec::new(),
        };
        let window_from = match &self.window {
            Some(w) => rows - rows.min(w.capacity()),
            None => rows,
        };
        if logged.is_empty() && window_from == rows {
            return None;
        }
        // The union of the logged rows and the last rows (the window's), ascending.
        let mut selection = Selection::default();
        let mut push = |r: usize, log: bool, window: bool| {
            selection.rows.push(r);
            selection.log.push(log);
            selection.window.push(window);
        };
        let mut l = logged.iter().copied().peekable();
        while let Some(&r) = l.peek() {
            if r >= window_from {
                break;
            }
            push(r, true, false);
            l.next();
        }
        for r in window_from..rows {
            let log = l.next_if_eq(&r).is_some();
            push(r, log, true);
        }
        Some(selection)
    }

    fn record(&self, observation: Observation, selection: &Selection) {
        if let Some(sink) = &self.log
            && selection.log.iter().any(|&b| b)
        {
            sink.send(&observation, &selection.log);
        }
        if let Some(w) = &self.window
            && selection.window.iter().any(|&b| b)
        {
            w.push(&observation, &selection.window);
        }
    }

    fn keeps_raw(&self) -> bool {
        self.raw
    }
}

/// The rows of `column` where `mask` is set.
pub(crate) fn masked(column: &ObservedColumn, mask: &[bool]) -> ObservedColumn {
    fn pick<T: Clone>(v: &[T], mask: &[bool]) -> Vec<T> {
        v.iter()
            .zip(mask)
            .filter(|(_, m)| **m)
            .map(|(x, _)| x.clone())
            .collect()
    }
    match column {
        ObservedColumn::Number(v) => ObservedColumn::Number(pick(v, mask)),
        ObservedColumn::Text(v) => ObservedColumn::Text(pick(v, mask)),
        ObservedColumn::Bool(v) => ObservedColumn::Bool(pick(v, mask)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn watch(rate: Option<f64>) -> VersionWatch {
        VersionWatch {
            log: rate.map(log::LogSink::detached),
            window: None,
            raw: false,
            rng: AtomicU64::new(7),
        }
    }

    #[test]
    fn log_sampling_keeps_about_the_rate_and_is_bounded() {
        let w = watch(Some(0.1));
        let rows = w.log_rows(20_000, 0.1);
        assert!(rows.windows(2).all(|p| p[0] < p[1]), "ascending, distinct");
        assert!(rows.iter().all(|&r| r < 20_000));
        assert!(
            (1500..2500).contains(&rows.len()),
            "about 10% of 20,000 rows, got {}",
            rows.len()
        );
        assert_eq!(w.log_rows(100_000, 0.5).len(), MAX_LOG_ROWS_PER_REQUEST);
        assert_eq!(w.log_rows(3, 1.0), [0, 1, 2]);
        let singles: usize = (0..10_000).map(|_| w.log_rows(1, 0.25).len()).sum();
        assert!(
            (2000..3000).contains(&singles),
            "one-row requests logged at the rate, got {singles} of 10,000"
        );
    }

    #[test]
    fn selection_is_the_union_of_logged_rows_and_the_window() {
        let w = watch(Some(1.0));
        let s = w.select(3).unwrap();
        assert_eq!(s.rows, [0, 1, 2]);
        assert_eq!(s.log, [true, true, true]);
        assert_eq!(s.window, [false, false, false]);
        assert!(watch(None).select(5).is_none());
        assert!(w.select(0).is_none());
    }

    #[test]
    fn flags_are_checked() {
        let ok = MonitorArgs::default().validate().unwrap();
        assert!(ok.log.is_none(), "no --log-dir: no log");
        assert_eq!(ok.drift.as_ref().unwrap().window, 1000);
        for bad in [
            MonitorArgs {
                log_sample_rate: 1.5,
                ..Default::default()
            },
            MonitorArgs {
                drift_interval: -1.0,
                ..Default::default()
            },
            MonitorArgs {
                drift_window: 0,
                ..Default::default()
            },
            MonitorArgs {
                drift_min_rows: 5000,
                ..Default::default()
            },
            MonitorArgs {
                log_roll: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
        let off = MonitorArgs {
            drift_interval: 0.0,
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(off, MonitorConfig::off());
    }
}
