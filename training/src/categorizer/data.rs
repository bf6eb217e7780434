//! Labelled text from CSV, checked before any training starts, and the stratified
//! train / validation split.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use infermesh_model_core::rng::SplitMix64;

/// Why a data file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be opened or read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file is not valid CSV.
    #[error("{path}: invalid CSV: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file has no data rows.
    #[error("{path}: no data rows")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A requested column is not in the header.
    #[error("{path}: no column {column:?} (columns: {available:?})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The header.
        available: Vec<String>,
    },
    /// A row has an empty (or whitespace-only) text.
    #[error("{path}: row {row} has an empty text")]
    EmptyText {
        /// The file.
        path: PathBuf,
        /// 1-based data row (the header is row 0).
        row: usize,
    },
    /// A row has an empty label.
    #[error("{path}: row {row} has an empty label")]
    EmptyLabel {
        /// The file.
        path: PathBuf,
        /// 1-based data row.
        row: usize,
    },
    /// Every row has the same label: there is nothing to learn.
    #[error("{path}: only one class ({label:?}); a categoriser needs at least two")]
    OneClass {
        /// The file.
        path: PathBuf,
        /// The only label.
        label: String,
    },
    /// Too few rows to hold out a validation set.
    #[error("no class has two or more rows, so no validation rows can be held out")]
    NoValidation,
}

/// Texts and their labels, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledTexts {
    /// The texts.
    pub texts: Vec<String>,
    /// The label of each text.
    pub labels: Vec<String>,
}

impl LabelledTexts {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Rows per label, labels sorted.
    pub fn label_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for l in &self.labels {
            *counts.entry(l.clone()).or_insert(0) += 1;
        }
        counts
    }

    fn subset(&self, idx: &[usize]) -> Self {
        Self {
            texts: idx.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i].clone()).collect(),
        }
    }
}

/// Reads `text_column` and `label_column` of the CSV file at `path` (header row required).
///
/// Rejects a missing file or column, a file without rows, and empty texts or labels; texts
/// and labels are trimmed. Whether there are enough classes is the caller's concern
/// ([`check_trainable`]): an evaluation set may hold a single class.
pub fn read_csv(
    path: &Path,
    text_column: &str,
    label_column: &str,
) -> Result<LabelledTexts, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let csv_err = |e: csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                available: header.clone(),
            })
    };
    let (ti, li) = (column(text_column)?, column(label_column)?);
    let mut out = LabelledTexts::default();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(csv_err)?;
        let row = i + 1;
        let text = record.get(ti).unwrap_or("").trim();
        let label = record.get(li).unwrap_or("").trim();
        if text.is_empty() {
            return Err(DataError::EmptyText {
                path: path.to_path_buf(),
                row,
            });
        }
        if label.is_empty() {
            return Err(DataError::EmptyLabel {
                path: path.to_path_buf(),
                row,
            });
        }
        out.texts.push(text.to_string());
        out.labels.push(label.to_string());
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Rejects training data with a single class.
pub fn check_trainable(data: &LabelledTexts, path: &Path) -> Result<(), DataError> {
    let counts = data.label_counts();
    if counts.len() < 2 {
        return Err(DataError::OneClass {
            path: path.to_path_buf(),
            label: counts.into_keys().next().unwrap_or_default(),
        });
    }
    Ok(())
}

/// Splits `data` per class: of each class with `n >= 2` rows, `round(n * val_fraction)`
/// rows (at least 1, at most `n - 1`) go to validation, chosen by `seed`; classes with one
/// row stay in training. Both parts keep file order.
pub fn stratified_split(
    data: &LabelledTexts,
    val_fraction: f64,
    seed: u64,
) -> Result<(LabelledTexts, LabelledTexts), DataError> {
    let mut by_class: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in data.labels.iter().enumerate() {
        by_class.entry(l.as_str()).or_default().push(i);
    }
    let mut rng = SplitMix64::new(seed);
    let mut val = Vec::new();
    for idx in by_class.values_mut() {
        let n = idx.len();
        if n < 2 {
            continue;
        }
        // Rounded share of the class, kept within [1, n - 1] so every class with two or
        // more rows is both trained on and validated.
        let k = ((n as f64 * val_fraction).round() as usize).clamp(1, n - 1);
        rng.shuffle(idx);
        val.extend_from_slice(&idx[..k]);
    }
    if val.is_empty() {
        return Err(DataError::NoValidation);
    }
    val.sort_unstable();
    let mut is_val = vec![false; data.len()];
    for &i in &val {
        is_val[i] = true;
    }
    let train: Vec<usize> = (0..data.len()).filter(|&i| !is_val[i]).collect();
    Ok((data.subset(&train), data.subset(&val)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(content: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        f
    }

    #[test]
    fn reads_the_named_columns_trimmed() {
        let f = write("id,desc,cat\n1, Coffee Shop ,dining\n2,\"Uber, trip\",transport\n");
        let d = read_csv(f.path(), "desc", "cat").unwrap();
        assert_eq!(d.texts, ["Coffee Shop", "Uber, trip"]);
        assert_eq!(d.labels, ["dining", "transport"]);
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let f = write("desc,cat\n");
        assert!(matches!(
            read_csv(f.path(), "desc", "cat"),
            Err(DataError::Empty { .. })
        ));
        let f = write("");
        assert!(read_csv(f.path(), "desc", "cat").is_err());
        let f = write("desc,cat\na,x\n");
        let err = read_csv(f.path(), "text", "cat").unwrap_err();
        assert!(matches!(err, DataError::MissingColumn { ref column, .. } if column == "text"));
        assert!(err.to_string().contains("desc"), "{err}");
        let f = write("desc,cat\na,x\n  ,y\n");
        assert!(matches!(
            read_csv(f.path(), "desc", "cat"),
            Err(DataError::EmptyText { row: 2, .. })
        ));
        let f = write("desc,cat\na,x\nb,x\n");
        let d = read_csv(f.path(), "desc", "cat").unwrap();
        assert!(matches!(
            check_trainable(&d, f.path()),
            Err(DataError::OneClass { .. })
        ));
        assert!(matches!(
            read_csv(Path::new("/nonexistent.csv"), "a", "b"),
            Err(DataError::Io { .. })
        ));
    }

    #[test]
    fn split_is_stratified_and_seeded() {
        let mut d = LabelledTexts::default();
        for i in 0..100 {
            d.texts.push(format!("t{i}"));
            d.labels
                .push(if i % 4 == 0 { "a" } else { "b" }.to_string());
        }
        d.texts.push("lonely".into());
        d.labels.push("c".into());
        let (train, val) = stratified_split(&d, 0.2, 7).unwrap();
        assert_eq!(val.label_counts()["a"], 5);
        assert_eq!(val.label_counts()["b"], 15);
        assert!(!val.label_counts().contains_key("c"));
        assert_eq!(train.len() + val.len(), d.len());
        let (_, again) = stratified_split(&d, 0.2, 7).unwrap();
        assert_eq!(val, again);
        let (_, other) = stratified_split(&d, 0.2, 8).unwrap();
        assert_ne!(val.texts, other.texts);
    }
}
