//! Reference profiles as files: one Parquet table in a long layout (`column, dtype, missing,
//! number, integer, text, count`: per column one row per distinct value, `number` for floats
//! and booleans, `integer` for integers, `text` for strings, and one `missing` row for its
//! missing values), written and read with Polars. What `infermesh drift profile` and the
//! training jobs write beside a version ([`REFERENCE_FILE`]), and what the server's live
//! drift reads.

use std::path::Path;

use polars::prelude::*;

use crate::Values;
use crate::profile::{ColumnProfile, ProfileDtype, ProfileValue};

/// The file a training job writes beside a model version: the profile of the rows it was
/// fitted on, for `infermesh drift --reference <version>/drift_reference.parquet` and the
/// server's live drift.
pub const REFERENCE_FILE: &str = "drift_reference.parquet";

/// A profile file that could not be written or read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct ProfileFileError {
    /// The file.
    pub path: String,
    /// Why.
    pub message: String,
}

/// The long layout's column names, in order.
const PROFILE_COLUMNS: [&str; 7] = [
    "column", "dtype", "missing", "number", "integer", "text", "count",
];

fn profile_error(path: &Path, e: impl std::fmt::Display) -> ProfileFileError {
    ProfileFileError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes profiles as one Parquet table in the long layout: per column one row per distinct
/// value (`number` for floats and booleans, `integer` for integers, `text` for strings) and
/// one `missing` row for its missing values.
pub fn write_profile(
    path: &Path,
    profiles: &[(String, ColumnProfile)],
) -> Result<(), ProfileFileError> {
    let mut column = Vec::new();
    let mut dtype = Vec::new();
    let mut missing = Vec::new();
    let mut number: Vec<Option<f64>> = Vec::new();
    let mut integer: Vec<Option<i64>> = Vec::new();
    let mut text: Vec<Option<String>> = Vec::new();
    let mut count = Vec::new();
    for (name, p) in profiles {
        let rows = p.values.iter().map(|(v, c)| (Some(v), *c));
        let rows = rows.chain((p.missing > 0).then_some((None, p.missing)));
        for (v, c) in rows {
            column.push(name.clone());
            dtype.push(p.dtype.name());
            missing.push(v.is_none());
            let (n, i, t) = match v {
                Some(ProfileValue::Float(x)) => (Some(*x), None, None),
                Some(ProfileValue::Bool(b)) => (Some(f64::from(u8::from(*b))), None, None),
                Some(ProfileValue::Int(x)) => (None, Some(*x), None),
                Some(ProfileValue::Str(s)) => (None, None, Some(s.clone())),
                None => (None, None, None),
            };
            number.push(n);
            integer.push(i);
            text.push(t);
            count.push(c);
        }
    }
    let mut df = DataFrame::new_infer_height(vec![
        Column::new(PROFILE_COLUMNS[0].into(), column),
        Column::new(PROFILE_COLUMNS[1].into(), dtype),
        Column::new(PROFILE_COLUMNS[2].into(), missing),
        Column::new(PROFILE_COLUMNS[3].into(), number),
        Column::new(PROFILE_COLUMNS[4].into(), integer),
        Column::new(PROFILE_COLUMNS[5].into(), text),
        Column::new(PROFILE_COLUMNS[6].into(), count),
    ])
    .map_err(|e| profile_error(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| profile_error(path, e))?;
    }
    let mut file = std::fs::File::create(path).map_err(|e| profile_error(path, e))?;
    ParquetWriter::new(&mut file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(|e| profile_error(path, e))?;
    Ok(())
}

/// Profiles `columns` (each as [`ColumnProfile::of`] reduces it; one it cannot profile is
/// left out) and writes them with [`write_profile`].
pub fn write_columns(path: &Path, columns: &[(String, Values)]) -> Result<(), ProfileFileError> {
    let profiles: Vec<(String, ColumnProfile)> = columns
        .iter()
        .filter_map(|(name, values)| ColumnProfile::of(values).map(|p| (name.clone(), p)))
        .collect();
    write_profile(path, &profiles)
}

/// Reads a profile back as columns of values (`None`: the Parquet file is not a profile).
pub fn read_profile(path: &Path) -> Result<Option<Vec<(String, Values)>>, ProfileFileError> {
    read_profile_at_most(path, MAX_PROFILE_VALUES)
}

/// [`read_profile`], refusing a profile that stands for more than `max_values` values (all
/// columns together) before expanding it.
pub fn read_profile_at_most(
    path: &Path,
    max_values: u64,
) -> Result<Option<Vec<(String, Values)>>, ProfileFileError> {
    let path_str = path
        .to_str()
        .ok_or_else(|| profile_error(path, "path is not UTF-8"))?;
    let df = LazyFrame::scan_parquet(PlRefPath::new(path_str), ScanArgsParquet::default())
        .and_then(LazyFrame::collect)
        .map_err(|e| profile_error(path, e))?;
    let names: Vec<String> = df
        .get_column_names()
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    if names != PROFILE_COLUMNS {
        return Ok(None);
    }
    let bad = |e: PolarsError| profile_error(path, e);
    let column = df
        .column("column")
        .and_then(|c| c.str().cloned())
        .map_err(bad)?;
    let dtype = df
        .column("dtype")
        .and_then(|c| c.str().cloned())
        .map_err(bad)?;
    let missing = df
        .column("missing")
        .and_then(|c| c.bool().cloned())
        .map_err(bad)?;
    let number = df
        .column("number")
        .and_then(|c| c.f64().cloned())
        .map_err(bad)?;
    let integer = df
        .column("integer")
        .and_then(|c| c.i64().cloned())
        .map_err(bad)?;
    let text = df
        .column("text")
        .and_then(|c| c.str().cloned())
        .map_err(bad)?;
    let count = df
        .column("count")
        .and_then(|c| c.u64().cloned())
        .map_err(bad)?;
    let mut out: Vec<(String, ColumnProfile)> = Vec::new();
    for row in 0..df.height() {
        let (Some(name), Some(dt), Some(c)) = (column.get(row), dtype.get(row), count.get(row))
        else {
            return Err(profile_error(
                path,
                format!("row {row}: missing column, dtype or count"),
            ));
        };
        let dt = ProfileDtype::from_name(dt)
            .ok_or_else(|| profile_error(path, format!("row {row}: unknown dtype '{dt}'")))?;
        if out.last().is_none_or(|(n, _)| n != name) {
            if out.iter().any(|(n, _)| n == name) {
                return Err(profile_error(path, format!("column '{name}' is split")));
            }
            out.push((
                name.to_owned(),
                ColumnProfile {
                    dtype: dt,
                    values: Vec::new(),
                    missing: 0,
                },
            ));
        }
        let Some((_, p)) = out.last_mut() else {
            continue;
        };
        if missing.get(row) == Some(true) {
            p.missing += c;
            continue;
        }
        let value = match dt {
            ProfileDtype::Float => number.get(row).map(ProfileValue::Float),
            ProfileDtype::Bool => number.get(row).map(|x| ProfileValue::Bool(x != 0.0)),
            ProfileDtype::Int => integer.get(row).map(ProfileValue::Int),
            ProfileDtype::Str => text.get(row).map(|s| ProfileValue::Str(s.to_owned())),
        };
        let value =
            value.ok_or_else(|| profile_error(path, format!("row {row}: no value for {dt:?}")))?;
        p.values.push((value, c));
    }
    // Bound what a profile may expand to before allocating it.
    let total: u64 = out
        .iter()
        .flat_map(|(_, p)| p.values.iter().map(|(_, c)| *c).chain([p.missing]))
        .fold(0u64, u64::saturating_add);
    if total > max_values {
        return Err(profile_error(
            path,
            format!("the profile counts {total} values, more than {max_values}"),
        ));
    }
    Ok(Some(
        out.into_iter().map(|(n, p)| (n, p.expand())).collect(),
    ))
}

/// Most values a profile may stand for, all columns together: it is expanded back into
/// columns (8 bytes a number), so this bounds that allocation at about 2 GB before it happens.
pub const MAX_PROFILE_VALUES: u64 = 250_000_000;
