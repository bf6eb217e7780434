//! `infermesh features materialize`: a feature view's values from a CSV or Parquet file
//! (read with Polars) to the online store, as `feast materialize` loads a batch source: rows
//! in the event-time window, the latest per entity, each written only when newer than what
//! the store holds, in pipelined batches.
//!
//! Cells are read as text (CSV as written; Parquet columns cast by Polars) and converted to
//! each feature's type as the HTTP API converts values; Parquet datetime columns are read as
//! their instants. A row with a null join key or a cell of the wrong type stops the run with
//! its row number, before anything is written.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use infermesh_features::Timestamp;
use infermesh_features::registry::{FeatureRegistry, FeatureView};
use infermesh_features::store::OnlineStore;
use infermesh_features::types::value_type::Enum as ValueType;
use infermesh_features::value::{from_text, nanos_of, parse_time_text, parse_timestamp};
use infermesh_features::write::{RowWrite, write_rows};
use polars::prelude::*;

use crate::{FeatureServerError, RegistryArgs, StoreArgs};

/// `infermesh features materialize`.
#[derive(Debug, Clone, clap::Args)]
pub struct MaterializeArgs {
    /// Where feature definitions come from.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The rows: a CSV, TSV or Parquet file with the view's join keys (or entity names),
    /// its features and an event-time column.
    #[arg(long)]
    pub source: PathBuf,
    /// The feature view the file holds.
    #[arg(long)]
    pub view: String,
    /// The event-time column (default: the view's source timestamp field, else
    /// `event_timestamp`).
    #[arg(long)]
    pub timestamp_field: Option<String>,
    /// Only rows at or after this time (RFC 3339); default: all.
    #[arg(long)]
    pub start: Option<String>,
    /// Only rows at or before this time (RFC 3339); default: all.
    #[arg(long)]
    pub end: Option<String>,
    /// Rows written per pipelined round trip.
    #[arg(long, default_value_t = 1000)]
    pub batch_rows: usize,
    /// The online store (`--redis-url` is needed: a memory store would end with the run).
    #[command(flatten)]
    pub store: StoreArgs,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct MaterializeReport {
    /// The view.
    pub view: String,
    /// Rows in the file.
    pub rows_read: usize,
    /// Rows in the time window.
    pub rows_in_window: usize,
    /// Entities (the latest row of each) sent to the store.
    pub entities: usize,
    /// Of those, how many were newer than the store's and written.
    pub written: usize,
    /// Wall time.
    pub seconds: f64,
}

impl std::fmt::Display for MaterializeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "materialized view {}: {} rows read, {} in the window, {} entities, {} written \
             ({} not newer than the store's) in {:.2} s",
            self.view,
            self.rows_read,
            self.rows_in_window,
            self.entities,
            self.written,
            self.entities - self.written,
            self.seconds
        )
    }
}

/// Runs `infermesh features materialize`.
pub async fn run(args: MaterializeArgs) -> Result<MaterializeReport, FeatureServerError> {
    if args.store.redis_url.is_none() {
        return Err(FeatureServerError::Config(
            "materialize writes to Redis: give --redis-url (or INFERMESH_FEATURES_REDIS_URL)"
                .into(),
        ));
    }
    let store = args.store.open()?;
    let a = args.clone();
    let (registry, rows, read, in_window) = tokio::task::spawn_blocking(move || {
        let registry = a.registry.load()?;
        let (rows, read, in_window) = latest_rows(&registry, &a)?;
        Ok::<_, FeatureServerError>((registry, rows, read, in_window))
    })
    .await
    .map_err(|e| FeatureServerError::Serve(e.to_string()))??;
    let started = Instant::now();
    let written = write_all(
        &registry,
        store.as_ref(),
        &rows,
        args.batch_rows,
        !args.no_progress,
    )
    .await?;
    Ok(MaterializeReport {
        view: args.view,
        rows_read: read,
        rows_in_window: in_window,
        entities: rows.len(),
        written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes `rows` in batches of `batch` (a progress bar on stderr when asked).
pub async fn write_all(
    registry: &FeatureRegistry,
    store: &dyn OnlineStore,
    rows: &[RowWrite],
    batch: usize,
    progress: bool,
) -> Result<usize, FeatureServerError> {
    let bar = if progress {
        let b = ProgressBar::new(rows.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "writing [{bar:30}] {pos}/{len} entities ({elapsed}, eta {eta})",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let mut written = 0;
    for chunk in rows.chunks(batch.max(1)) {
        written += write_rows(registry, store, chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(written)
}

fn config(m: impl Into<String>) -> FeatureServerError {
    FeatureServerError::Config(m.into())
}

fn read_frame(path: &Path) -> Result<DataFrame, FeatureServerError> {
    let err = |e: &dyn std::fmt::Display| config(format!("--source {}: {e}", path.display()));
    if !path.is_file() {
        return Err(err(&"no such file"));
    }
    let s = path.to_str().ok_or_else(|| err(&"path is not UTF-8"))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let lf = match ext.as_deref() {
        Some("parquet" | "pq") => {
            LazyFrame::scan_parquet(PlRefPath::new(s), ScanArgsParquet::default())
        }
        _ => LazyCsvReader::new(PlRefPath::new(s))
            .with_separator(if matches!(ext.as_deref(), Some("tsv" | "tab")) {
                b'\t'
            } else {
                b','
            })
            .with_has_header(true)
            // Every cell as text: each is converted to its feature's type.
            .with_infer_schema_length(Some(0))
            .finish(),
    }
    .map_err(|e| err(&e))?;
    lf.collect().map_err(|e| err(&e))
}

/// A column's cells as text, or (for datetime columns) as instants.
enum Col {
    Text(StringChunked),
    Time(Vec<Option<Timestamp>>),
}

fn column(df: &DataFrame, name: &str) -> Result<Col, FeatureServerError> {
    let c = df
        .column(name)
        .map_err(|_| config(format!("the source has no column {name:?}")))?
        .as_materialized_series();
    if let DataType::Datetime(unit, _) = c.dtype() {
        let per_second: i64 = match unit {
            TimeUnit::Nanoseconds => 1_000_000_000,
            TimeUnit::Microseconds => 1_000_000,
            TimeUnit::Milliseconds => 1_000,
        };
        let ints = c
            .cast(&DataType::Int64)
            .map_err(|e| config(format!("column {name:?}: {e}")))?;
        let ints = ints
            .i64()
            .map_err(|e| config(format!("column {name:?}: {e}")))?;
        return Ok(Col::Time(
            ints.downcast_iter()
                .flat_map(|arr| arr.iter().map(|v| v.copied()))
                .map(|v| {
                    v.map(|v| Timestamp {
                        seconds: v.div_euclid(per_second),
                        nanos: (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as i32,
                    })
                })
                .collect(),
        ));
    }
    let text = c
        .cast(&DataType::String)
        .map_err(|e| config(format!("column {name:?}: {e}")))?;
    Ok(Col::Text(
        text.str()
            .map_err(|e| config(format!("column {name:?}: {e}")))?
            .clone(),
    ))
}

impl Col {
    fn text(&self, row: usize) -> Option<Cow<'_, str>> {
        match self {
            Col::Text(c) => c.get(row).map(Cow::Borrowed),
            Col::Time(v) => {
                v[row].map(|t| Cow::Owned(infermesh_features::value::format_timestamp(&t)))
            }
        }
    }

    fn time(&self, row: usize) -> Result<Option<Timestamp>, String> {
        match self {
            Col::Time(v) => Ok(v[row]),
            Col::Text(c) => match c.get(row).map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => parse_time_text(s).map(Some),
            },
        }
    }
}

/// The view's latest row per entity in the file's time window; also the rows read and the
/// rows in the window.
fn latest_rows(
    registry: &FeatureRegistry,
    a: &MaterializeArgs,
) -> Result<(Vec<RowWrite>, usize, usize), FeatureServerError> {
    let (_, view) = registry
        .view(&a.view)
        .ok_or_else(|| config(format!("no feature view {:?} in the registry", a.view)))?;
    let bound = |s: &Option<String>, flag: &str| {
        s.as_deref()
            .map(|s| parse_timestamp(s).map_err(|e| config(format!("{flag}: {e}"))))
            .transpose()
    };
    let (start, end) = (bound(&a.start, "--start")?, bound(&a.end, "--end")?);
    let df = read_frame(&a.source)?;
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let pick = |want: &[&str]| {
        want.iter()
            .find(|n| names.iter().any(|c| c == *n))
            .map(|n| (*n).to_owned())
    };
    let keys = view
        .join_keys
        .iter()
        .map(|jk| {
            let want = registry.key_column_names(view, &jk.name);
            let col = pick(&want).ok_or_else(|| {
                config(format!("the source has no join key column {:?}", jk.name))
            })?;
            Ok((jk.name.clone(), jk.value_type, column(&df, &col)?))
        })
        .collect::<Result<Vec<_>, FeatureServerError>>()?;
    let features = view
        .features
        .iter()
        .map(|f| Ok((f.name.clone(), f.value_type, column(&df, &f.name)?)))
        .collect::<Result<Vec<_>, FeatureServerError>>()?;
    let time_col = match &a.timestamp_field {
        Some(t) => t.clone(),
        None => {
            let mut want: Vec<&str> = view.timestamp_field.iter().map(String::as_str).collect();
            want.push("event_timestamp");
            pick(&want).ok_or_else(|| {
                config(format!(
                    "the source has no event-time column ({}); name it with --timestamp-field",
                    want.join(" or ")
                ))
            })?
        }
    };
    let time = column(&df, &time_col)?;
    let rows = df.height();
    let mut latest: HashMap<Vec<Cow<'_, str>>, (Timestamp, usize)> = HashMap::new();
    let mut in_window = 0;
    for r in 0..rows {
        let at = |e: String| config(format!("row {} of {}: {e}", r + 1, a.source.display()));
        let Some(t) = time.time(r).map_err(&at)? else {
            return Err(at(format!("the event time ({time_col}) is empty")));
        };
        if start.is_some_and(|s| nanos_of(&t) < nanos_of(&s))
            || end.is_some_and(|e| nanos_of(&t) > nanos_of(&e))
        {
            continue;
        }
        in_window += 1;
        let key = keys
            .iter()
            .map(|(name, _, c)| {
                c.text(r)
                    .ok_or_else(|| at(format!("join key {name:?} is empty")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match latest.get_mut(&key) {
            Some(seen) if nanos_of(&seen.0) > nanos_of(&t) => {}
            Some(seen) => *seen = (t, r),
            None => {
                latest.insert(key, (t, r));
            }
        }
    }
    let mut picked: Vec<(Timestamp, usize)> = latest.into_values().collect();
    picked.sort_by_key(|(_, r)| *r);
    let out = picked
        .into_iter()
        .map(|(t, r)| row_write(view, &keys, &features, r, t, &a.source))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out, rows, in_window))
}

type Columns = [(String, ValueType, Col)];

fn row_write(
    view: &FeatureView,
    keys: &Columns,
    features: &Columns,
    r: usize,
    t: Timestamp,
    source: &Path,
) -> Result<RowWrite, FeatureServerError> {
    let cell = |name: &str, ty: ValueType, c: &Col| {
        let text = c.text(r).unwrap_or_default();
        from_text(&text, ty).map_err(|e| {
            config(format!(
                "row {} of {}, {name:?}: {e}",
                r + 1,
                source.display()
            ))
        })
    };
    Ok(RowWrite {
        view: view.name.clone(),
        entity: keys
            .iter()
            .map(|(n, ty, c)| Ok((n.clone(), cell(n, *ty, c)?)))
            .collect::<Result<_, FeatureServerError>>()?,
        features: features
            .iter()
            .map(|(n, ty, c)| Ok((n.clone(), cell(n, *ty, c)?)))
            .collect::<Result<_, FeatureServerError>>()?,
        event_time: t,
    })
}
