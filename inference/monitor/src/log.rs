//! The inference log: sampled rows of answered requests, written by one background thread as
//! Parquet files (Polars), one file per model version and roll period.
//!
//! Layout: `<dir>/<model>/<version>/<YYYY-MM-DD>/<HHMMSS>Z-<n>.parquet` (UTC, the time the
//! file's first row was answered), so a day's log of a version is one folder. Columns:
//! `timestamp_ms` (int64, Unix milliseconds, UTC), `model` (string), `version` (int64),
//! `request_id` (string, only where the model's `log_raw` allows ids), then the request's
//! columns as the serving core names them (features by their names, outputs by theirs; see
//! `infermesh_inference::monitor`): float32 for numbers (NaN: missing), boolean for BOOL
//! outputs, string for labels and, where allowed, raw text. A column whose name is taken gets `_2`, `_3`... appended.
//!
//! Bounds: requests hand rows over through a queue of [`QUEUE_BATCHES`] requests and never
//! wait (a full queue drops the rows, counted in `infermesh_inference_log_dropped_rows_total`);
//! a version's buffer is written once it holds `flush_rows` rows or its roll period is over;
//! after each write the oldest files are deleted until the directory's Parquet files fit
//! `max_bytes` (the newest file is kept). Files appear whole: each is written under a
//! temporary name and renamed.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use infermesh_common::metrics_names as m;
use infermesh_inference::{Observation, ObservedColumn};
use polars::prelude::*;

use crate::MonitorError;

/// Requests the log's queue holds.
pub const QUEUE_BATCHES: usize = 1024;

/// The inference log's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// The log directory.
    pub dir: PathBuf,
    /// Share of rows logged.
    pub sample_rate: f64,
    /// Period each file covers.
    pub roll: Duration,
    /// Rows a version's buffer holds before it is written early.
    pub flush_rows: usize,
    /// Most bytes the directory's Parquet files may hold.
    pub max_bytes: u64,
}

/// One request's logged rows.
#[derive(Debug)]
struct LogBatch {
    model: Arc<str>,
    version: u64,
    time_ms: i64,
    request_id: Option<String>,
    rows: usize,
    columns: Vec<(String, ObservedColumn)>,
}

#[derive(Debug)]
enum Msg {
    Batch(LogBatch),
    /// Write every buffer now, then answer.
    Flush(std::sync::mpsc::Sender<()>),
    /// Write every buffer and stop.
    Stop,
}

/// Counters a test (or the server's shutdown log line) reads.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Rows written.
    pub rows: AtomicU64,
    /// Files written.
    pub files: AtomicU64,
    /// Rows dropped.
    pub dropped: AtomicU64,
}

/// The log's writer thread and its queue.
#[derive(Debug)]
pub struct LogWriter {
    tx: SyncSender<Msg>,
    sample_rate: f64,
    stats: Arc<LogStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogWriter {
    /// Creates the directory, counts the files already there against `max_bytes`, and starts
    /// the writer thread.
    pub fn start(config: LogConfig) -> Result<Self, MonitorError> {
        let dir_err = |source| MonitorError::LogDir {
            path: config.dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(dir_err)?;
        let files = DiskIndex::scan(&config.dir).map_err(dir_err)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let stats = Arc::new(LogStats::default());
        let sample_rate = config.sample_rate;
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("inference-log".into())
            .spawn(move || {
                Writer {
                    config,
                    files,
                    buffers: BTreeMap::new(),
                    stats: thread_stats,
                }
                .run(rx)
            })
            .map_err(MonitorError::Thread)?;
        Ok(Self {
            tx,
            sample_rate,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A version's sink.
    pub(crate) fn sink(&self, model: Arc<str>, version: u64) -> LogSink {
        // Exported at 0 from the start (alerts compute rates on them).
        for reason in ["queue_full", "write_error"] {
            metrics::counter!(m::INFERENCE_LOG_DROPPED_ROWS_TOTAL,
                "model" => model.to_string(), "reason" => reason)
            .increment(0);
        }
        LogSink {
            tx: self.tx.clone(),
            model,
            version,
            sample_rate: self.sample_rate,
            stats: self.stats.clone(),
        }
    }

    /// Writes every buffered row now (waiting up to `timeout` for the writer): what a test
    /// or a shutdown does before reading the files.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = std::sync::mpsc::channel();
        let deadline = Instant::now() + timeout;
        if !self.send_by(Msg::Flush(ack), deadline) {
            return false;
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Rows and files written, rows dropped.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Queues a control message, retrying while the queue is full until `deadline`.
    fn send_by(&self, mut msg: Msg, deadline: Instant) -> bool {
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Buffers are written before the thread stops; sinks still held by loaded versions
        // then find the queue closed and count their rows as dropped.
        if !self.send_by(Msg::Stop, Instant::now() + Duration::from_secs(10)) {
            return;
        }
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

/// Where one version's sampled rows go.
#[derive(Debug)]
pub(crate) struct LogSink {
    tx: SyncSender<Msg>,
    model: Arc<str>,
    version: u64,
    sample_rate: f64,
    stats: Arc<LogStats>,
}

impl LogSink {
    /// A sink whose writer is gone (unit tests of the sampling).
    #[cfg(test)]
    pub(crate) fn detached(sample_rate: f64) -> Self {
        let (tx, _) = std::sync::mpsc::sync_channel(1);
        Self {
            tx,
            model: Arc::from("m"),
            version: 1,
            sample_rate,
            stats: Arc::default(),
        }
    }

    /// Share of rows logged.
    pub(crate) fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// Queues the rows of `observation` where `mask` is set; never waits.
    pub(crate) fn send(&self, observation: &Observation, mask: &[bool]) {
        let rows = mask.iter().filter(|&&b| b).count();
        let all = rows == observation.rows;
        let columns = observation
            .columns
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    if all {
                        c.clone()
                    } else {
                        crate::masked(c, mask)
                    },
                )
            })
            .collect();
        let time_ms = observation
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch = LogBatch {
            model: self.model.clone(),
            version: self.version,
            time_ms,
            request_id: observation.request_id.clone(),
            rows,
            columns,
        };
        let reason = match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "queue_full",
            Err(TrySendError::Disconnected(_)) => "stopped",
        };
        self.stats.dropped.fetch_add(rows as u64, Ordering::Relaxed);
        metrics::counter!(m::INFERENCE_LOG_DROPPED_ROWS_TOTAL,
            "model" => self.model.to_string(), "reason" => reason)
        .increment(rows as u64);
    }
}

/// A column being buffered.
#[derive(Debug)]
enum ColBuf {
    Num(Vec<f32>),
    Text(Vec<String>),
    Bool(Vec<bool>),
}

/// One version's rows waiting to be written.
#[derive(Debug)]
struct Buffer {
    opened: Instant,
    opened_ms: i64,
    /// The data columns' names as they came (the schema) and as written (deduplicated).
    names: Vec<String>,
    written_names: Vec<String>,
    time_ms: Vec<i64>,
    ids: Vec<Option<String>>,
    columns: Vec<ColBuf>,
}

impl Buffer {
    fn new(batch: &LogBatch) -> Self {
        let names: Vec<String> = batch.columns.iter().map(|(n, _)| n.clone()).collect();
        Self {
            opened: Instant::now(),
            opened_ms: batch.time_ms,
            written_names: dedupe(&names),
            names,
            time_ms: Vec::new(),
            ids: Vec::new(),
            columns: batch
                .columns
                .iter()
                .map(|(_, c)| match c {
                    ObservedColumn::Number(_) => ColBuf::Num(Vec::new()),
                    ObservedColumn::Text(_) => ColBuf::Text(Vec::new()),
                    ObservedColumn::Bool(_) => ColBuf::Bool(Vec::new()),
                })
                .collect(),
        }
    }

    /// Whether `batch` has this buffer's columns (names and kinds, in order).
    fn fits(&self, batch: &LogBatch) -> bool {
        self.names.len() == batch.columns.len()
            && self
                .names
                .iter()
                .zip(&self.columns)
                .zip(&batch.columns)
                .all(|((n, b), (bn, c))| {
                    n == bn
                        && matches!(
                            (b, c),
                            (ColBuf::Num(_), ObservedColumn::Number(_))
                                | (ColBuf::Text(_), ObservedColumn::Text(_))
                                | (ColBuf::Bool(_), ObservedColumn::Bool(_))
                        )
                })
    }

    fn append(&mut self, batch: LogBatch) {
        self.time_ms
            .extend(std::iter::repeat_n(batch.time_ms, batch.rows));
        self.ids
            .extend(std::iter::repeat_n(batch.request_id, batch.rows));
        for (buf, (_, col)) in self.columns.iter_mut().zip(batch.columns) {
            match (buf, col) {
                (ColBuf::Num(b), ObservedColumn::Number(v)) => b.extend(v),
                (ColBuf::Text(b), ObservedColumn::Text(v)) => b.extend(v),
                (ColBuf::Bool(b), ObservedColumn::Bool(v)) => b.extend(v),
                _ => {}
            }
        }
    }

    fn rows(&self) -> usize {
        self.time_ms.len()
    }
}

/// Names made unique: a name already taken (by an earlier column or a metadata column) gets
/// `_2`, `_3`... appended.
fn dedupe(names: &[String]) -> Vec<String> {
    let mut taken: std::collections::HashSet<String> =
        META_COLUMNS.iter().map(|s| (*s).to_string()).collect();
    names
        .iter()
        .map(|n| {
            let mut name = n.clone();
            let mut k = 2;
            while taken.contains(&name) {
                name = format!("{n}_{k}");
                k += 1;
            }
            taken.insert(name.clone());
            name
        })
        .collect()
}

/// The metadata columns every file starts with.
pub const META_COLUMNS: [&str; 4] = ["timestamp_ms", "model", "version", "request_id"];

/// The log's Parquet files, oldest first, and their total size.
#[derive(Debug, Default)]
struct DiskIndex {
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
}

impl DiskIndex {
    /// The Parquet files already under `dir`, oldest first (by modification time).
    fn scan(dir: &Path) -> std::io::Result<Self> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                let path = entry.path();
                if meta.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
                    found.push((modified, path, meta.len()));
                }
            }
        }
        found.sort();
        let mut index = Self::default();
        for (_, path, len) in found {
            index.bytes += len;
            index.files.push_back((path, len));
        }
        Ok(index)
    }

    /// Records a new file, then deletes the oldest until the total fits `max_bytes` (the
    /// newest file is always kept).
    fn add(&mut self, path: PathBuf, len: u64, max_bytes: u64) {
        self.bytes += len;
        self.files.push_back((path, len));
        while self.bytes > max_bytes && self.files.len() > 1 {
            let Some((old, old_len)) = self.files.pop_front() else {
                break;
            };
            match std::fs::remove_file(&old) {
                Ok(()) => {
                    metrics::counter!(m::INFERENCE_LOG_DELETED_FILES_TOTAL).increment(1);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %old.display(), error = %e, "cannot delete an old inference log file");
                }
            }
            self.bytes = self.bytes.saturating_sub(old_len);
            // An emptied day folder goes too (ignored when it is not empty).
            if let Some(parent) = old.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        metrics::gauge!(m::INFERENCE_LOG_BYTES).set(self.bytes as f64);
    }
}

/// The writer thread's state.
struct Writer {
    config: LogConfig,
    files: DiskIndex,
    buffers: BTreeMap<(Arc<str>, u64), Buffer>,
    stats: Arc<LogStats>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let tick = self.config.roll.min(Duration::from_secs(1));
        loop {
            match rx.recv_timeout(tick) {
                Ok(Msg::Batch(batch)) => self.take(batch),
                Ok(Msg::Flush(ack)) => {
                    self.write_all(|_| true);
                    let _ = ack.send(());
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.write_all(|_| true);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let (roll, flush_rows) = (self.config.roll, self.config.flush_rows);
            self.write_all(|b| b.rows() >= flush_rows || b.opened.elapsed() >= roll);
        }
    }

    fn take(&mut self, batch: LogBatch) {
        let key = (batch.model.clone(), batch.version);
        if self.buffers.get(&key).is_some_and(|b| !b.fits(&batch))
            && let Some(b) = self.buffers.remove(&key)
        {
            self.write(&key, b);
        }
        self.buffers
            .entry(key)
            .or_insert_with(|| Buffer::new(&batch))
            .append(batch);
    }

    fn write_all(&mut self, due: impl Fn(&Buffer) -> bool) {
        let keys: Vec<_> = self
            .buffers
            .iter()
            .filter(|(_, b)| b.rows() > 0 && due(b))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(b) = self.buffers.remove(&key) {
                self.write(&key, b);
            }
        }
    }

    fn write(&mut self, (model, version): &(Arc<str>, u64), buffer: Buffer) {
        let rows = buffer.rows() as u64;
        match self.write_file(model, *version, buffer) {
            Ok((path, len)) => {
                self.stats.rows.fetch_add(rows, Ordering::Relaxed);
                self.stats.files.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::INFERENCE_LOG_ROWS_TOTAL,
                    "model" => model.to_string(), "version" => version.to_string())
                .increment(rows);
                metrics::counter!(m::INFERENCE_LOG_FILES_TOTAL).increment(1);
                self.files.add(path, len, self.config.max_bytes);
            }
            Err(e) => {
                tracing::error!(model = %model, version, error = %e, rows, "cannot write the inference log; rows dropped");
                self.stats.dropped.fetch_add(rows, Ordering::Relaxed);
                metrics::counter!(m::INFERENCE_LOG_DROPPED_ROWS_TOTAL,
                    "model" => model.to_string(), "reason" => "write_error")
                .increment(rows);
            }
        }
    }

    fn write_file(
        &self,
        model: &str,
        version: u64,
        buffer: Buffer,
    ) -> Result<(PathBuf, u64), String> {
        let n = buffer.rows();
        let opened = UNIX_EPOCH + Duration::from_millis(buffer.opened_ms.max(0).unsigned_abs());
        let stamp = humantime::format_rfc3339_seconds(opened).to_string();
        // "2026-12-06T19:30:05Z": the day folder and the file's time.
        let (day, time) = stamp.split_at(10);
        let time: String = time.chars().filter(char::is_ascii_digit).collect();
        let dir = self
            .config
            .dir
            .join(model)
            .join(version.to_string())
            .join(day);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut k = 0;
        let path = loop {
            let p = dir.join(format!("{time}Z-{k}.parquet"));
            if !p.exists() {
                break p;
            }
            k += 1;
        };
        let mut columns = vec![
            Column::new(META_COLUMNS[0].into(), buffer.time_ms),
            Column::new(META_COLUMNS[1].into(), vec![model; n]),
            Column::new(META_COLUMNS[2].into(), vec![version as i64; n]),
        ];
        if buffer.ids.iter().any(Option::is_some) {
            columns.push(Column::new(META_COLUMNS[3].into(), buffer.ids));
        }
        for (name, col) in buffer.written_names.iter().zip(buffer.columns) {
            columns.push(match col {
                ColBuf::Num(v) => Column::new(name.into(), v),
                ColBuf::Text(v) => Column::new(name.into(), v),
                ColBuf::Bool(v) => Column::new(name.into(), v),
            });
        }
        let mut df = DataFrame::new_infer_height(columns).map_err(|e| e.to_string())?;
        let tmp = dir.join(format!(".{time}Z-{k}.parquet.tmp"));
        let mut write = || -> Result<u64, String> {
            let mut file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
            ParquetWriter::new(&mut file)
                .with_compression(ParquetCompression::Zstd(None))
                .finish(&mut df)
                .map_err(|e| e.to_string())?;
            file.sync_all().map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
            std::fs::metadata(&path)
                .map(|m| m.len())
                .map_err(|e| e.to_string())
        };
        match write() {
            Ok(len) => {
                tracing::debug!(file = %path.display(), rows = n, bytes = len, "inference log file written");
                Ok((path, len))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(format!("{}: {e}", path.display()))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_unique_past_the_metadata_columns() {
        let names = ["model", "score", "score", "a"].map(String::from);
        assert_eq!(dedupe(&names), ["model_2", "score", "score_2", "a"]);
    }

    #[test]
    fn old_files_go_once_the_directory_is_over_its_bound() {
        let d = tempfile::tempdir().unwrap();
        let mut index = DiskIndex::default();
        for i in 0..4 {
            let day = d.path().join(format!("day{i}"));
            std::fs::create_dir_all(&day).unwrap();
            let p = day.join("f.parquet");
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            index.add(p, 100, 250);
        }
        assert_eq!(index.files.len(), 2, "{:?}", index.files);
        assert_eq!(index.bytes, 200);
        assert!(!d.path().join("day0").exists(), "emptied folders go too");
        assert!(d.path().join("day3/f.parquet").exists());
        // The newest file stays even when it alone is over the bound.
        std::fs::create_dir_all(d.path().join("day4")).unwrap();
        let big = d.path().join("day4/f.parquet");
        std::fs::write(&big, vec![0u8; 1000]).unwrap();
        index.add(big, 1000, 250);
        assert_eq!(index.files.len(), 1);
        assert_eq!(DiskIndex::scan(d.path()).unwrap().bytes, 1000);
    }
}
