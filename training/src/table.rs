//! Tables for training jobs, loaded with Polars: CSV, TSV (or any one-byte separator, with
//! or without a header row) and Parquet, chosen by extension or flag.
//!
//! Text tables are read with every column as a string (no type guessing: an id column of
//! digits stays an id), and numeric columns are cast on request, strictly, so a bad value is
//! an error naming the column rather than a silent null. Headerless files name their
//! columns `column_1`, `column_2`, ... as Polars does.

use std::path::{Path, PathBuf};

use polars::prelude::*;

/// Errors reading a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read or parsed.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A column the job needs is not there.
    #[error("{path}: no column '{column}' (columns: {available})")]
    MissingColumn {
        /// The file.
        path: String,
        /// The column asked for.
        column: String,
        /// The columns present.
        available: String,
    },
    /// A value could not be read as the type the column needs.
    #[error("{path}: column '{column}': {message}")]
    BadValue {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// Why.
        message: String,
    },
    /// A flag is malformed.
    #[error("{0}")]
    Flag(String),
}

/// Where a table is and how to parse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// The file.
    pub path: PathBuf,
    /// Field separator for text files (`None`: tab for `.tsv` / `.tab`, else comma).
    pub separator: Option<u8>,
    /// Whether a text file starts with a header row.
    pub has_header: bool,
}

/// Parses a separator flag: one ASCII character, or `tab` / `\t`.
pub fn parse_separator(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!(
            "separator must be one ASCII character or 'tab', got '{s}'"
        )),
    }
}

fn is_parquet(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("parquet" | "pq")
    )
}

impl TableSpec {
    /// A table at `path` with a header row and the separator its extension implies.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            separator: None,
            has_header: true,
        }
    }

    fn read_error(&self, e: impl std::fmt::Display) -> TableError {
        TableError::Read {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Reads the table (all columns).
    pub fn read(&self) -> Result<Table, TableError> {
        let path_str = self.path.to_str().ok_or_else(|| TableError::Read {
            path: self.path.display().to_string(),
            message: "path is not UTF-8".into(),
        })?;
        if self.path.is_dir() {
            return self.read_parquet_folder();
        }
        if !self.path.is_file() {
            return Err(self.read_error("no such file"));
        }
        let lf = if is_parquet(&self.path) {
            LazyFrame::scan_parquet(PlRefPath::new(path_str), ScanArgsParquet::default())
                .map_err(|e| self.read_error(e))?
        } else {
            let sep = self.separator.unwrap_or_else(|| {
                match self.path.extension().and_then(|e| e.to_str()) {
                    Some("tsv" | "tab") => b'\t',
                    _ => b',',
                }
            });
            LazyCsvReader::new(PlRefPath::new(path_str))
                .with_separator(sep)
                .with_has_header(self.has_header)
                .with_infer_schema_length(Some(0))
                .finish()
                .map_err(|e| self.read_error(e))?
        };
        let df = lf.collect().map_err(|e| self.read_error(e))?;
        Ok(Table {
            path: self.path.display().to_string(),
            df,
        })
    }
}

impl TableSpec {
    /// A folder's Parquet files (`*.parquet`, not hidden, in name order) as one table: a day
    /// of the server's inference log, say. The files must have the same columns.
    fn read_parquet_folder(&self) -> Result<Table, TableError> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| self.read_error(e))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| self.read_error(e))?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if path.is_file() && is_parquet(&path) && !hidden {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(self.read_error("a folder with no .parquet file"));
        }
        let frames = files
            .iter()
            .map(|f| {
                let s = f
                    .to_str()
                    .ok_or_else(|| self.read_error("path is not UTF-8"))?;
                LazyFrame::scan_parquet(PlRefPath::new(s), ScanArgsParquet::default())
                    .map_err(|e| self.read_error(format!("{}: {e}", f.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let df = concat(frames, UnionArgs::default())
            .and_then(LazyFrame::collect)
            .map_err(|e| self.read_error(e))?;
        Ok(Table {
            path: self.path.display().to_string(),
            df,
        })
    }
}

/// A loaded table.
#[derive(Debug, Clone)]
pub struct Table {
    path: String,
    df: DataFrame,
}

impl Table {
    /// The file it was read from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Number of rows.
    pub fn height(&self) -> usize {
        self.df.height()
    }

    /// Column names in order.
    pub fn columns(&self) -> Vec<String> {
        self.df
            .get_column_names()
            .into_iter()
            .map(|c| c.to_string())
            .collect()
    }

    /// Column `name` as Polars holds it (strings for text tables, typed for Parquet).
    pub fn frame_column(&self, name: &str) -> Result<&Column, TableError> {
        self.column(name)
    }

    fn column(&self, name: &str) -> Result<&Column, TableError> {
        self.df.column(name).map_err(|_| TableError::MissingColumn {
            path: self.path.clone(),
            column: name.to_string(),
            available: self.columns().join(", "),
        })
    }

    fn bad(&self, column: &str, e: impl std::fmt::Display) -> TableError {
        TableError::BadValue {
            path: self.path.clone(),
            column: column.to_string(),
            message: e.to_string(),
        }
    }

    /// Column `name` as trimmed strings (`None` for nulls and empty cells); numbers in a
    /// Parquet file are formatted.
    pub fn strings(&self, name: &str) -> Result<Vec<Option<String>>, TableError> {
        let col = self
            .column(name)?
            .cast(&DataType::String)
            .map_err(|e| self.bad(name, e))?;
        let ca = col.str().map_err(|e| self.bad(name, e))?;
        Ok(ca
            .iter()
            .map(|v| v.map(str::trim).filter(|s| !s.is_empty()).map(String::from))
            .collect())
    }

    /// Column `name` as numbers (`None` for nulls and empty cells); a value that is not a
    /// number is an error.
    pub fn floats(&self, name: &str) -> Result<Vec<Option<f64>>, TableError> {
        let col = self.column(name)?;
        if matches!(col.dtype(), DataType::String) {
            return self
                .strings(name)?
                .into_iter()
                .enumerate()
                .map(|(row, v)| {
                    v.map(|s| {
                        s.parse::<f64>().map_err(|_| {
                            self.bad(name, format!("row {}: '{s}' is not a number", row + 1))
                        })
                    })
                    .transpose()
                })
                .collect();
        }
        let col = col
            .strict_cast(&DataType::Float64)
            .map_err(|e| self.bad(name, e))?;
        let ca = col.f64().map_err(|e| self.bad(name, e))?;
        Ok(ca.iter().collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_tsv_headerless_and_parquet_read_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("x.csv");
        std::fs::write(&csv, "user,item,rating\n007,a,4\n8,b,\n").unwrap();
        let t = TableSpec::new(&csv).read().unwrap();
        assert_eq!(t.height(), 2);
        assert_eq!(
            t.strings("user").unwrap(),
            vec![Some("007".into()), Some("8".into())]
        );
        assert_eq!(t.floats("rating").unwrap(), vec![Some(4.0), None]);

        let tsv = dir.path().join("x.base");
        std::fs::write(&tsv, "1\t10\t5\t881250949\n2\t20\t3\t891717742\n").unwrap();
        let t = TableSpec {
            path: tsv,
            separator: Some(b'\t'),
            has_header: false,
        }
        .read()
        .unwrap();
        assert_eq!(t.columns()[0], "column_1");
        assert_eq!(t.floats("column_3").unwrap(), vec![Some(5.0), Some(3.0)]);

        let pq = dir.path().join("x.parquet");
        let mut df = df!("user" => [1i64, 2], "rating" => [4.5f64, 1.0]).unwrap();
        let mut f = std::fs::File::create(&pq).unwrap();
        ParquetWriter::new(&mut f).finish(&mut df).unwrap();
        let t = TableSpec::new(&pq).read().unwrap();
        assert_eq!(
            t.strings("user").unwrap(),
            vec![Some("1".into()), Some("2".into())]
        );
        assert_eq!(t.floats("rating").unwrap(), vec![Some(4.5), Some(1.0)]);
    }

    #[test]
    fn missing_files_columns_and_bad_numbers_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TableSpec::new(dir.path().join("none.csv")).read(),
            Err(TableError::Read { .. })
        ));
        let csv = dir.path().join("x.csv");
        std::fs::write(&csv, "user,rating\nu,four\n").unwrap();
        let t = TableSpec::new(&csv).read().unwrap();
        let e = t.strings("item").unwrap_err().to_string();
        assert!(
            e.contains("no column 'item'") && e.contains("user, rating"),
            "{e}"
        );
        let e = t.floats("rating").unwrap_err().to_string();
        assert!(e.contains("'four' is not a number"), "{e}");
        assert_eq!(parse_separator("tab"), Ok(b'\t'));
        assert_eq!(parse_separator("|"), Ok(b'|'));
        assert!(parse_separator("ab").is_err());
    }
}
