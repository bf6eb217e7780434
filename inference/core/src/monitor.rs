//! The monitoring seam: what the serving core hands a model version's monitor (the inference
//! log, live drift) about the requests it answers, knowing neither.
//!
//! A [`MonitorFactory`] (given to the [`crate::ModelManager`]) gives each loaded version its
//! [`VersionMonitor`], or none. For every answered request the core asks the monitor which
//! rows it wants ([`VersionMonitor::select`], a cheap sampling decision), copies only those
//! rows' inputs before the request runs and their outputs after, as named columns
//! ([`Observation`]), and hands them over ([`VersionMonitor::record`]), never waiting on the
//! monitor: a monitor that cannot keep up drops rows, it does not slow requests down.
//!
//! Columns are named so that a logged table and the version's training table line up: a
//! numeric input of `F` values per row takes the family's `feature_names`
//! ([`LoadedVersion::feature_names`]) when there are `F` of them, else
//! `<input>` (one value per row) or `<input>_<j>`; an output likewise, `<output>` or
//! `<output>_<j>`. Raw text (BYTES inputs) is kept only when the model's `[monitoring]`
//! section allows it (`log_raw`); tensors wider than [`MAX_OBSERVED_WIDTH`] values per row
//! (embeddings) are left out.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

use crate::handle::LoadedVersion;
use crate::tensor::{InputValues, OutputTensor, TensorData, V2Request};

/// Widest tensor (values per row) a monitor sees; wider ones (embeddings) are left out.
pub const MAX_OBSERVED_WIDTH: usize = 64;

/// Gives each loaded model version its monitor.
pub trait MonitorFactory: Send + Sync + Debug {
    /// The monitor of `version` (None: the version is not watched). Called once per load, on
    /// the loading thread (it may read files beside the version).
    fn attach(&self, version: &LoadedVersion) -> Option<Arc<dyn VersionMonitor>>;
}

/// Which rows of a request a monitor keeps, and for what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Row indexes, ascending.
    pub rows: Vec<usize>,
    /// Per selected row: it goes to the inference log.
    pub log: Vec<bool>,
    /// Per selected row: it goes to the drift window.
    pub window: Vec<bool>,
}

impl Selection {
    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// One column of observed rows.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservedColumn {
    /// Numbers (missing: NaN).
    Number(Vec<f32>),
    /// Strings (raw text, labels).
    Text(Vec<String>),
    /// Booleans (BOOL outputs such as `is_anomaly`).
    Bool(Vec<bool>),
}

impl ObservedColumn {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            ObservedColumn::Number(v) => v.len(),
            ObservedColumn::Text(v) => v.len(),
            ObservedColumn::Bool(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The selected rows of one request: inputs then outputs, as named columns of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// When the request was answered.
    pub time: SystemTime,
    /// The request id, when the model's config allows logging it.
    pub request_id: Option<String>,
    /// Number of rows.
    pub rows: usize,
    /// Columns.
    pub columns: Vec<(String, ObservedColumn)>,
}

/// A version's monitor.
pub trait VersionMonitor: Send + Sync + Debug {
    /// The rows of a request of `rows` rows to keep (None or empty: none). Must be cheap: it
    /// runs on every request.
    fn select(&self, rows: usize) -> Option<Selection>;

    /// The selected rows, once the request has answered. Must not block.
    fn record(&self, observation: Observation, selection: &Selection);

    /// Whether raw text inputs and request ids may be kept (the model's `log_raw`).
    fn keeps_raw(&self) -> bool {
        false
    }
}

/// The names of `width` columns of tensor `tensor` (see the module doc).
fn column_names(tensor: &str, width: usize, names: Option<&[String]>) -> Vec<String> {
    match names {
        Some(n) if n.len() == width => n.to_vec(),
        _ if width == 1 => vec![tensor.to_string()],
        _ => (0..width).map(|j| format!("{tensor}_{j}")).collect(),
    }
}

/// Values per row of a tensor of `len` elements and `shape` over `rows` rows (None: it does
/// not have `rows` leading rows, or is too wide).
fn row_width(shape: &[i64], len: usize, rows: usize) -> Option<usize> {
    let lead = usize::try_from(*shape.first()?).ok()?;
    if lead != rows || rows == 0 || !len.is_multiple_of(rows) {
        return None;
    }
    let width = len / rows;
    (1..=MAX_OBSERVED_WIDTH).contains(&width).then_some(width)
}

/// The rows a request holds: the leading dimension of its first input.
pub fn request_rows(request: &V2Request) -> Option<usize> {
    let first = request.inputs.first()?;
    usize::try_from(*first.shape.first()?).ok()
}

/// A request's selected inputs, waiting for its outputs.
#[derive(Debug)]
pub struct Pending {
    monitor: Arc<dyn VersionMonitor>,
    selection: Selection,
    rows: usize,
    request_rows: usize,
    request_id: Option<String>,
    columns: Vec<(String, ObservedColumn)>,
    output_names: Option<Vec<String>>,
}

/// Starts observing `request` for `version`'s monitor: None when the version has no monitor,
/// the monitor wants none of its rows, or the request's inputs are not rows.
pub fn observe_request(
    version: &LoadedVersion,
    request: &V2Request,
    request_id: &str,
) -> Option<Pending> {
    let monitor = version.monitor()?;
    let rows = request_rows(request)?;
    let selection = monitor.select(rows).filter(|s| !s.is_empty())?;
    let feature_names = version.feature_names();
    let numeric_inputs = request
        .inputs
        .iter()
        .filter(|i| matches!(i.values, InputValues::Numeric(_)))
        .count();
    let raw = monitor.keeps_raw();
    let mut columns = Vec::new();
    for input in &request.inputs {
        match &input.values {
            InputValues::Numeric(v) => {
                let width = row_width(&input.shape, v.len(), rows)?;
                let names = column_names(
                    &input.name,
                    width,
                    feature_names.filter(|_| numeric_inputs == 1),
                );
                for (j, name) in names.into_iter().enumerate() {
                    let col = selection.rows.iter().map(|&r| v[r * width + j]).collect();
                    columns.push((name, ObservedColumn::Number(col)));
                }
            }
            InputValues::Bytes(v) if raw => {
                let width = row_width(&input.shape, v.len(), rows)?;
                for (j, name) in column_names(&input.name, width, None)
                    .into_iter()
                    .enumerate()
                {
                    let col = selection
                        .rows
                        .iter()
                        .map(|&r| String::from_utf8_lossy(&v[r * width + j]).into_owned())
                        .collect();
                    columns.push((name, ObservedColumn::Text(col)));
                }
            }
            InputValues::Bytes(_) => {}
        }
    }
    Some(Pending {
        monitor: monitor.clone(),
        rows: selection.rows.len(),
        request_rows: rows,
        selection,
        request_id: (raw && !request_id.is_empty()).then(|| request_id.to_string()),
        columns,
        output_names: None,
    })
}

/// Starts observing rows of `features` (row-major, `names.len()` per row) that a typed
/// service scores without a V2 request (the fraud API): None when the version has no monitor
/// or it wants none of them.
pub fn observe_rows(
    version: &LoadedVersion,
    names: &[String],
    features: &[f32],
) -> Option<Pending> {
    let width = names.len();
    if width == 0 || width > MAX_OBSERVED_WIDTH || !features.len().is_multiple_of(width) {
        return None;
    }
    let rows = features.len() / width;
    let mut pending = observe_answers(version, rows)?;
    pending.columns = names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let col = pending
                .selection
                .rows
                .iter()
                .map(|&r| features[r * width + j])
                .collect();
            (name.clone(), ObservedColumn::Number(col))
        })
        .collect();
    Some(pending)
}

/// Starts observing `rows` answers of a typed service whose inputs are not features (the
/// recommender's user ids, which are raw ids): only the outputs given to
/// [`Pending::finish`] are kept. None when the version has no monitor or it wants none.
pub fn observe_answers(version: &LoadedVersion, rows: usize) -> Option<Pending> {
    let monitor = version.monitor()?;
    let selection = monitor.select(rows).filter(|s| !s.is_empty())?;
    Some(Pending {
        monitor: monitor.clone(),
        rows: selection.rows.len(),
        request_rows: rows,
        selection,
        request_id: None,
        columns: Vec::new(),
        output_names: None,
    })
}

impl Pending {
    /// Only these outputs are kept (the ones the request asked for are all the answer holds,
    /// so this is for typed services that answer a part of the signature).
    pub fn only_outputs(mut self, names: Vec<String>) -> Self {
        self.output_names = Some(names);
        self
    }

    /// Adds the selected rows of `outputs` and hands the observation to the monitor. Outputs
    /// that are not one row per input row (or too wide) are left out.
    pub fn finish(mut self, outputs: &[OutputTensor]) {
        for out in outputs {
            if self
                .output_names
                .as_ref()
                .is_some_and(|n| !n.contains(&out.name))
            {
                continue;
            }
            let Some(width) = row_width(&out.shape, out.data.len(), self.request_rows) else {
                continue;
            };
            let names = column_names(&out.name, width, None);
            let rows = &self.selection.rows;
            for (j, name) in names.into_iter().enumerate() {
                let at = |r: usize| r * width + j;
                let col = match &out.data {
                    TensorData::Fp32(v) => {
                        ObservedColumn::Number(rows.iter().map(|&r| v[at(r)]).collect())
                    }
                    TensorData::Bool(v) => {
                        ObservedColumn::Bool(rows.iter().map(|&r| v[at(r)]).collect())
                    }
                    TensorData::Int64(v) => {
                        ObservedColumn::Number(rows.iter().map(|&r| v[at(r)] as f32).collect())
                    }
                    TensorData::Bytes(v) => ObservedColumn::Text(
                        rows.iter()
                            .map(|&r| String::from_utf8_lossy(&v[at(r)]).into_owned())
                            .collect(),
                    ),
                };
                self.columns.push((name, col));
            }
        }
        self.monitor.record(
            Observation {
                time: SystemTime::now(),
                request_id: self.request_id,
                rows: self.rows,
                columns: self.columns,
            },
            &self.selection,
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use infermesh_common::ServiceError;
    use infermesh_registry::ModelConfig;

    use crate::servable::{BatchUnit, Batching, BoxFuture, Description, Servable};
    use crate::tensor::{DataType, InputTensor, TensorMeta};

    /// Answers every request with a label, a score and a wide embedding per row.
    #[derive(Debug)]
    struct Echo(Description);

    impl Servable for Echo {
        fn description(&self) -> &Description {
            &self.0
        }
        fn infer(
            &self,
            request: V2Request,
        ) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>> {
            Box::pin(async move {
                let n = request_rows(&request).unwrap_or(0);
                Ok(vec![
                    OutputTensor {
                        name: "label".into(),
                        shape: vec![n as i64],
                        data: TensorData::Bytes((0..n).map(|i| format!("c{i}").into()).collect()),
                    },
                    OutputTensor {
                        name: "score".into(),
                        shape: vec![n as i64],
                        data: TensorData::Fp32((0..n).map(|i| i as f32 / 10.0).collect()),
                    },
                    OutputTensor {
                        name: "embedding".into(),
                        shape: vec![n as i64, 100],
                        data: TensorData::Fp32(vec![0.5; n * 100]),
                    },
                ])
            })
        }
        fn failure(&self) -> Option<String> {
            None
        }
        fn in_flight(&self) -> usize {
            0
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    /// Keeps every row and what it was handed.
    #[derive(Debug, Default)]
    struct Recorder {
        raw: bool,
        seen: Mutex<Vec<Observation>>,
    }

    impl VersionMonitor for Recorder {
        fn select(&self, rows: usize) -> Option<Selection> {
            Some(Selection {
                rows: (0..rows).collect(),
                log: vec![true; rows],
                window: vec![true; rows],
            })
        }
        fn record(&self, observation: Observation, _: &Selection) {
            self.seen.lock().unwrap().push(observation);
        }
        fn keeps_raw(&self) -> bool {
            self.raw
        }
    }

    fn version(raw: bool) -> (LoadedVersion, Arc<Recorder>) {
        let config = Arc::new(ModelConfig::from_toml("m", "platform = \"echo\"").unwrap());
        let description = Description {
            backend: "echo".into(),
            format: "echo".into(),
            inputs: vec![
                TensorMeta::new("text", "BYTES", vec![-1]),
                TensorMeta::new("x", "FP32", vec![-1, 2]),
            ],
            outputs: vec![],
            max_batch_size: 8,
            batching: Batching {
                unit: BatchUnit::Requests,
                max_batch_cost: 8,
                max_queue_cost: 8,
            },
            width: 2,
            parameters: vec![("feature_names".into(), "amount,hour".into())],
        };
        let recorder = Arc::new(Recorder {
            raw,
            ..Default::default()
        });
        let v = LoadedVersion::new(config, 1, 0, Arc::new(Echo(description)))
            .with_monitor(Some(recorder.clone() as Arc<dyn VersionMonitor>));
        (v, recorder)
    }

    fn request() -> V2Request {
        V2Request {
            inputs: vec![
                InputTensor {
                    name: "text".into(),
                    datatype: DataType::Bytes,
                    shape: vec![2],
                    values: InputValues::Bytes(vec![b"hello".to_vec(), b"world".to_vec()]),
                },
                InputTensor {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape: vec![2, 2],
                    values: InputValues::Numeric(vec![1.0, 2.0, 3.0, 4.0]),
                },
            ],
            outputs: vec![],
            parameters: Default::default(),
        }
    }

    #[tokio::test]
    async fn rows_are_observed_as_named_columns_without_raw_text_unless_allowed() {
        let (v, rec) = version(false);
        v.infer_with_id(request(), "req-1").await.unwrap();
        let seen = rec.seen.lock().unwrap().remove(0);
        assert_eq!(seen.rows, 2);
        assert_eq!(seen.request_id, None);
        let names: Vec<&str> = seen.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["amount", "hour", "label", "score"],
            "no text, no embedding"
        );
        assert_eq!(seen.columns[0].1, ObservedColumn::Number(vec![1.0, 3.0]));
        assert_eq!(seen.columns[1].1, ObservedColumn::Number(vec![2.0, 4.0]));
        assert_eq!(
            seen.columns[2].1,
            ObservedColumn::Text(vec!["c0".into(), "c1".into()])
        );

        let (v, rec) = version(true);
        v.infer_with_id(request(), "req-2").await.unwrap();
        let seen = rec.seen.lock().unwrap().remove(0);
        assert_eq!(seen.request_id.as_deref(), Some("req-2"));
        assert_eq!(seen.columns[0].0, "text");
        assert_eq!(
            seen.columns[0].1,
            ObservedColumn::Text(vec!["hello".into(), "world".into()])
        );
    }

    #[tokio::test]
    async fn a_request_whose_inputs_are_not_rows_is_not_observed() {
        let (v, rec) = version(true);
        let mut r = request();
        // Three texts beside two feature rows: no row structure to log.
        r.inputs[0].shape = vec![3];
        r.inputs[0].values = InputValues::Bytes(vec![b"a".to_vec(); 3]);
        r.inputs.swap(0, 1);
        v.infer(r).await.unwrap();
        assert!(rec.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn columns_take_the_feature_names_when_they_fit() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(column_names("x", 2, Some(&names)), names);
        assert_eq!(column_names("x", 3, Some(&names)), ["x_0", "x_1", "x_2"]);
        assert_eq!(column_names("score", 1, None), ["score"]);
    }

    #[test]
    fn row_width_needs_the_rows_leading_and_a_bounded_width() {
        assert_eq!(row_width(&[4, 3], 12, 4), Some(3));
        assert_eq!(row_width(&[4], 4, 4), Some(1));
        assert_eq!(row_width(&[1, 4], 4, 4), None);
        assert_eq!(row_width(&[2, 384], 768, 2), None);
        assert_eq!(row_width(&[0, 3], 0, 0), None);
        assert_eq!(row_width(&[-1, 3], 3, 1), None);
    }
}
