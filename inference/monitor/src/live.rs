//! Live drift: each watched version's most recent rows against the profile of its training
//! rows (`drift_reference.parquet` beside the version, written by `infermesh train`), every
//! interval, on one background thread.
//!
//! A version is watched when live drift is on, its config's `[monitoring] drift` is not off,
//! and its folder holds a readable profile of at most [`MAX_REFERENCE_VALUES`] values; the
//! profile's columns (at most [`MAX_WATCHED_COLUMNS`]) are the ones watched, matched by name
//! to the columns the serving core observes (feature names, output names: a profile that
//! holds the model's outputs on its training rows gives prediction drift too). The window is
//! a ring of the last `window` rows: memory is `window` values per watched column.
//!
//! Each evaluation types the window's columns as the reference's (an int64 reference column
//! stays int64 while every value is a whole number, as pandas would read the logged table),
//! then runs, column by column, what `infermesh drift` runs (`infermesh_drift::column_drift`:
//! Evidently's column typing on the current window, its choice of test and threshold), so a
//! window gives the numbers `infermesh drift --reference <profile>` gives on the same rows.
//! Unlike a batch report, a column that cannot be tested in this window (all missing, never
//! observed, text) is left out of the share instead of failing the evaluation. A window of
//! fewer than `min_rows` rows is not evaluated (counted as `too_few_rows`). Gauges of a
//! retired version keep their last values until the process restarts (the `metrics` facade
//! has no way to remove a series); its `infermesh_drift_window_rows` drops to 0.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use infermesh_common::metrics_names as m;
use infermesh_drift::file::{REFERENCE_FILE, read_profile_at_most};
use infermesh_drift::{ColumnDrift, ColumnType, Values, column_drift, infer_column_type};
use infermesh_inference::{Observation, ObservedColumn};

use crate::MonitorError;

/// Most values a version's reference profile may stand for (all columns together), so a
/// server holds at most this many reference values (8 bytes each) per watched version.
pub const MAX_REFERENCE_VALUES: u64 = 50_000_000;
/// Most columns watched per version.
pub const MAX_WATCHED_COLUMNS: usize = 256;
/// Evidently's default dataset-drift share.
pub const DRIFT_SHARE: f64 = 0.5;

/// Live drift's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Time between evaluations.
    pub interval: Duration,
    /// Rows in each window.
    pub window: usize,
    /// Fewest rows a window needs to be evaluated.
    pub min_rows: usize,
}

/// The evaluator thread and the windows it evaluates.
#[derive(Debug)]
pub struct DriftEvaluator {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    config: DriftConfig,
    windows: Mutex<Vec<Weak<DriftWindow>>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// One evaluation of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Rows in the window.
    pub rows: usize,
    /// Per tested column, in reference order (empty when the window had too few rows).
    pub columns: Vec<(String, ColumnDrift)>,
    /// Drifted columns over tested columns.
    pub share: f64,
    /// Whether the share reached [`DRIFT_SHARE`].
    pub dataset_drift: bool,
}

impl DriftEvaluator {
    /// Starts the evaluator thread.
    pub fn start(config: DriftConfig) -> Result<Self, MonitorError> {
        let inner = Arc::new(Inner {
            config,
            windows: Mutex::new(Vec::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let t = inner.clone();
        let thread = std::thread::Builder::new()
            .name("live-drift".into())
            .spawn(move || t.run())
            .map_err(MonitorError::Thread)?;
        Ok(Self {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The window of a version whose folder `dir` holds a drift reference (None: no
    /// reference, or one that cannot be used, which is logged and counted).
    pub(crate) fn watch(
        &self,
        model: &str,
        version: u64,
        dir: Option<&Path>,
    ) -> Option<Arc<DriftWindow>> {
        let path = dir?.join(REFERENCE_FILE);
        if !path.is_file() {
            return None;
        }
        // Exported at 0 from the start (an alert computes its increase).
        metrics::counter!(m::DRIFT_REFERENCE_ERRORS_TOTAL,
            "model" => model.to_string(), "version" => version.to_string())
        .increment(0);
        let refused = |reason: String| {
            tracing::warn!(model, version, file = %path.display(), %reason, "drift reference not used; no live drift for this version");
            metrics::counter!(m::DRIFT_REFERENCE_ERRORS_TOTAL,
                "model" => model.to_string(), "version" => version.to_string())
            .increment(1);
            None
        };
        let mut reference = match read_profile_at_most(&path, MAX_REFERENCE_VALUES) {
            Ok(Some(r)) => r,
            Ok(None) => return refused("not a drift profile".into()),
            Err(e) => return refused(e.to_string()),
        };
        reference.retain(|(_, v)| !matches!(v, Values::Other { .. }));
        if reference.len() > MAX_WATCHED_COLUMNS {
            tracing::warn!(
                model,
                version,
                columns = reference.len(),
                kept = MAX_WATCHED_COLUMNS,
                "drift reference has more columns than are watched; the first are"
            );
            reference.truncate(MAX_WATCHED_COLUMNS);
        }
        if reference.is_empty() {
            return refused("the profile has no column to watch".into());
        }
        let window = Arc::new(DriftWindow::new(
            model,
            version,
            reference,
            self.inner.config.window,
        ));
        tracing::info!(
            model,
            version,
            columns = window.reference.len(),
            window = window.capacity,
            "live drift watches this version"
        );
        if let Ok(mut w) = self.inner.windows.lock() {
            w.retain(|w| w.strong_count() > 0);
            w.push(Arc::downgrade(&window));
        }
        Some(window)
    }

    /// Evaluates every watched window now (what the thread does each interval), returning
    /// what it found.
    pub fn evaluate_now(&self) -> Vec<Evaluation> {
        self.inner.evaluate_all()
    }

    /// The settings.
    pub fn config(&self) -> &DriftConfig {
        &self.inner.config
    }
}

impl Drop for DriftEvaluator {
    fn drop(&mut self) {
        if let Ok(mut s) = self.inner.stop.lock() {
            *s = true;
        }
        self.inner.wake.notify_all();
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn run(&self) {
        let mut next = Instant::now() + self.config.interval;
        loop {
            let Ok(mut stop) = self.stop.lock() else {
                return;
            };
            while !*stop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                match self.wake.wait_timeout(stop, next - now) {
                    Ok((s, _)) => stop = s,
                    Err(_) => return,
                }
            }
            if *stop {
                return;
            }
            drop(stop);
            self.evaluate_all();
            next = Instant::now() + self.config.interval;
        }
    }

    fn evaluate_all(&self) -> Vec<Evaluation> {
        let live: Vec<Arc<DriftWindow>> = match self.windows.lock() {
            Ok(mut w) => {
                w.retain(|w| w.strong_count() > 0);
                w.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return Vec::new(),
        };
        live.iter()
            .filter_map(|w| w.evaluate(self.config.min_rows))
            .collect()
    }
}

/// A ring column.
#[derive(Debug)]
enum RingCol {
    Num(Vec<f32>),
    Text(Vec<Option<String>>),
}

#[derive(Debug)]
struct Ring {
    cols: Vec<RingCol>,
    /// Next slot written.
    head: usize,
    /// Rows held.
    len: usize,
}

/// A watched version: its reference columns and the ring of its last rows.
#[derive(Debug)]
pub struct DriftWindow {
    model: String,
    version: u64,
    reference: Vec<(String, Values)>,
    capacity: usize,
    ring: Mutex<Ring>,
}

impl DriftWindow {
    fn new(model: &str, version: u64, reference: Vec<(String, Values)>, capacity: usize) -> Self {
        let cols = reference
            .iter()
            .map(|(_, v)| match v {
                Values::Str(_) => RingCol::Text(vec![None; capacity]),
                _ => RingCol::Num(vec![f32::NAN; capacity]),
            })
            .collect();
        Self {
            model: model.to_string(),
            version,
            reference,
            capacity,
            ring: Mutex::new(Ring {
                cols,
                head: 0,
                len: 0,
            }),
        }
    }

    /// Rows the window holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds the rows of `observation` where `mask` is set (older rows fall out).
    pub(crate) fn push(&self, observation: &Observation, mask: &[bool]) {
        // Where each watched column is in the observation (None: it is not there).
        let at: Vec<Option<&ObservedColumn>> = self
            .reference
            .iter()
            .map(|(name, _)| {
                observation
                    .columns
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| c)
            })
            .collect();
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        for (row, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
            let slot = ring.head;
            for (col, src) in ring.cols.iter_mut().zip(&at) {
                match col {
                    RingCol::Num(v) => {
                        v[slot] = match src {
                            Some(ObservedColumn::Number(x)) => x.get(row).copied(),
                            Some(ObservedColumn::Bool(x)) => {
                                x.get(row).map(|&b| f32::from(u8::from(b)))
                            }
                            _ => None,
                        }
                        .unwrap_or(f32::NAN);
                    }
                    RingCol::Text(v) => {
                        v[slot] = match src {
                            Some(ObservedColumn::Text(x)) => x.get(row).cloned(),
                            _ => None,
                        };
                    }
                }
            }
            ring.head = (slot + 1) % self.capacity;
            ring.len = (ring.len + 1).min(self.capacity);
        }
    }

    /// The window's rows as columns typed like the reference's (oldest first).
    fn snapshot(&self) -> (usize, Vec<Values>) {
        let Ok(ring) = self.ring.lock() else {
            return (0, Vec::new());
        };
        let n = ring.len;
        let start = (ring.head + self.capacity - n) % self.capacity;
        let order = |i: usize| (start + i) % self.capacity;
        let columns = ring
            .cols
            .iter()
            .zip(&self.reference)
            .map(|(col, (_, reference))| match col {
                RingCol::Num(v) => {
                    let values: Vec<f64> = (0..n).map(|i| f64::from(v[order(i)])).collect();
                    typed_like(reference, values)
                }
                RingCol::Text(v) => Values::Str((0..n).map(|i| v[order(i)].clone()).collect()),
            })
            .collect();
        (n, columns)
    }

    /// Compares the window with the reference and publishes the gauges (None: too few rows).
    fn evaluate(&self, min_rows: usize) -> Option<Evaluation> {
        let started = Instant::now();
        let version = self.version.to_string();
        let labels = [("model", self.model.clone()), ("version", version.clone())];
        let (rows, current) = self.snapshot();
        metrics::gauge!(m::DRIFT_WINDOW_ROWS, &labels).set(rows as f64);
        if rows < min_rows {
            metrics::counter!(m::DRIFT_EVALUATIONS_TOTAL, "model" => self.model.clone(),
                "version" => version, "outcome" => "too_few_rows")
            .increment(1);
            return None;
        }
        let mut columns = Vec::new();
        for ((name, reference), current) in self.reference.iter().zip(&current) {
            let column_type = infer_column_type(current);
            if !matches!(column_type, ColumnType::Numerical | ColumnType::Categorical) {
                continue;
            }
            match column_drift(name, reference, current, column_type, None, None, false) {
                Ok(d) => columns.push((name.clone(), d)),
                Err(e) => {
                    tracing::debug!(model = %self.model, version = self.version, column = %name, error = %e, "column not tested in this window");
                }
            }
        }
        let drifted = columns.iter().filter(|(_, c)| c.drift_detected).count();
        let share = if columns.is_empty() {
            0.0
        } else {
            drifted as f64 / columns.len() as f64
        };
        let dataset_drift = !columns.is_empty() && share >= DRIFT_SHARE;
        for (name, c) in &columns {
            let l = [
                ("model", self.model.clone()),
                ("version", version.clone()),
                ("feature", name.clone()),
                ("method", c.stattest.name().to_string()),
            ];
            metrics::gauge!(m::DRIFT_SCORE, &l).set(c.drift_score);
            metrics::gauge!(m::DRIFT_DETECTED, &l).set(f64::from(u8::from(c.drift_detected)));
        }
        metrics::gauge!(m::DATASET_DRIFT_SHARE, &labels).set(share);
        metrics::gauge!(m::DATASET_DRIFT, &labels).set(f64::from(u8::from(dataset_drift)));
        metrics::counter!(m::DRIFT_EVALUATIONS_TOTAL, "model" => self.model.clone(),
            "version" => version, "outcome" => "ok")
        .increment(1);
        metrics::histogram!(m::DRIFT_EVALUATION_SECONDS).record(started.elapsed().as_secs_f64());
        Some(Evaluation {
            model: self.model.clone(),
            version: self.version,
            rows,
            columns,
            share,
            dataset_drift,
        })
    }
}

impl Drop for DriftWindow {
    fn drop(&mut self) {
        metrics::gauge!(m::DRIFT_WINDOW_ROWS, "model" => self.model.clone(),
            "version" => self.version.to_string())
        .set(0.0);
    }
}

/// Window values typed as the reference column is: int64 while every value is a whole
/// number (none missing), bool for a bool reference, else float64.
fn typed_like(reference: &Values, values: Vec<f64>) -> Values {
    match reference {
        Values::Int(_)
            if values
                .iter()
                .all(|x| x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15) =>
        {
            Values::Int(values.iter().map(|&x| x as i64).collect())
        }
        Values::Bool(_) => Values::Bool(
            values
                .iter()
                .map(|&x| (!x.is_nan()).then_some(x != 0.0))
                .collect(),
        ),
        _ => Values::Float(values),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn obs(columns: Vec<(&str, ObservedColumn)>) -> Observation {
        Observation {
            time: SystemTime::now(),
            request_id: None,
            rows: columns.first().map_or(0, |(_, c)| c.len()),
            columns: columns
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
        }
    }

    #[test]
    fn the_window_keeps_the_last_rows_typed_like_the_reference() {
        let reference = vec![
            ("a".to_string(), Values::Int(vec![1, 2, 3])),
            ("b".to_string(), Values::Float(vec![0.5])),
            ("label".to_string(), Values::Str(vec![Some("x".into())])),
        ];
        let w = DriftWindow::new("m", 1, reference, 3);
        w.push(
            &obs(vec![
                ("a", ObservedColumn::Number(vec![1.0, 2.0, 3.0, 4.0])),
                ("b", ObservedColumn::Number(vec![0.1, 0.2, 0.3, 0.4])),
            ]),
            &[true, true, false, true],
        );
        let (n, cols) = w.snapshot();
        assert_eq!(n, 3);
        assert_eq!(cols[0], Values::Int(vec![1, 2, 4]));
        let Values::Float(b) = &cols[1] else {
            panic!("float column expected")
        };
        assert_eq!(b.len(), 3);
        assert!((b[2] - 0.4).abs() < 1e-6);
        assert_eq!(
            cols[2],
            Values::Str(vec![None, None, None]),
            "never observed"
        );
        // A row with a fraction makes the int column float64, as pandas would read it.
        w.push(
            &obs(vec![("a", ObservedColumn::Number(vec![2.5]))]),
            &[true],
        );
        let (_, cols) = w.snapshot();
        assert_eq!(cols[0], Values::Float(vec![2.0, 4.0, 2.5]));
    }

    #[test]
    fn a_shifted_window_drifts_and_an_unshifted_one_does_not() {
        // A reference of 2,000 values uniform on [0, 1): Wasserstein (normed) is the test.
        let reference: Vec<f64> = (0..2000).map(|i| (i as f64 + 0.5) / 2000.0).collect();
        let w = DriftWindow::new(
            "m",
            3,
            vec![("x".to_string(), Values::Float(reference))],
            500,
        );
        let same: Vec<f32> = (0..500).map(|i| (i as f32 + 0.5) / 500.0).collect();
        let mask = vec![true; 500];
        w.push(&obs(vec![("x", ObservedColumn::Number(same))]), &mask);
        assert!(w.evaluate(600).is_none(), "fewer rows than the minimum");
        let e = w.evaluate(100).unwrap();
        assert_eq!(e.columns.len(), 1);
        assert_eq!(e.columns[0].1.stattest.name(), "wasserstein");
        assert!(!e.dataset_drift, "{e:?}");
        let shifted: Vec<f32> = (0..500).map(|i| 0.5 + (i as f32 + 0.5) / 500.0).collect();
        w.push(&obs(vec![("x", ObservedColumn::Number(shifted))]), &mask);
        let e = w.evaluate(100).unwrap();
        assert!(e.dataset_drift, "{e:?}");
        assert_eq!(e.share, 1.0);
        assert!(e.columns[0].1.drift_score > 0.1);
    }
}
