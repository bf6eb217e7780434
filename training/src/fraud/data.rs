//! Feature preparation for the fraud trainer, on tables loaded with Polars ([`crate::table`]):
//! the label column read as 0/1, dropped columns removed, numeric columns cast strictly
//! (nulls and empty cells become NaN, LightGBM's missing value), categorical columns encoded
//! as integer codes over their sorted levels, optional removal of exact duplicate rows, and a
//! stratified train / validation / test split by seed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use infermesh_model_core::rng::SplitMix64;

use crate::table::{Table, TableError};

/// Why the data cannot be trained on; raised before any training starts.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading the table or a column failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The data is unusable as it is.
    #[error("{0}")]
    Invalid(String),
}

/// A prepared feature matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Feature names, in column order.
    pub names: Vec<String>,
    /// Levels of each categorical feature (its code is the index).
    pub categorical: BTreeMap<String, Vec<String>>,
    /// Row-major values, NaN for missing.
    pub values: Vec<f64>,
    /// Labels.
    pub labels: Vec<bool>,
    /// Duplicate rows removed.
    pub duplicates_removed: usize,
    /// The table rows kept, in order, when duplicates were removed.
    pub kept_rows: Option<Vec<usize>>,
}

impl Prepared {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.names.len()
    }

    /// Indices of the categorical features.
    pub fn categorical_indices(&self) -> Vec<usize> {
        self.names
            .iter()
            .enumerate()
            .filter(|(_, n)| self.categorical.contains_key(*n))
            .map(|(i, _)| i)
            .collect()
    }

    /// The rows at `idx`: values and labels.
    pub fn take(&self, idx: &[usize]) -> (Vec<f64>, Vec<bool>) {
        let c = self.cols();
        let mut v = Vec::with_capacity(idx.len() * c);
        let mut l = Vec::with_capacity(idx.len());
        for &i in idx {
            v.extend_from_slice(&self.values[i * c..(i + 1) * c]);
            l.push(self.labels[i]);
        }
        (v, l)
    }
}

/// Reads a label cell: 0/1 (also `0.0`, `1.0`), true/false, yes/no.
fn label(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" | "yes" => Some(true),
        "0" | "0.0" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// Prepares `table` for training on `label_col`.
pub fn prepare(
    table: &Table,
    label_col: &str,
    drop: &[String],
    categorical: &[String],
    dedup: bool,
) -> Result<Prepared, DataError> {
    if table.height() == 0 {
        return Err(DataError::Invalid(format!(
            "{}: the table has no rows",
            table.path()
        )));
    }
    let columns = table.columns();
    for c in drop.iter().chain(categorical) {
        if !columns.contains(c) {
            return Err(DataError::Invalid(format!(
                "{}: no column '{c}' to drop or encode (columns: {})",
                table.path(),
                columns.join(", ")
            )));
        }
    }
    if drop.iter().any(|d| d == label_col) {
        return Err(DataError::Invalid(format!(
            "--drop names the label column '{label_col}'"
        )));
    }
    let raw_labels = table.strings(label_col)?;
    let mut labels = Vec::with_capacity(raw_labels.len());
    for (row, v) in raw_labels.iter().enumerate() {
        let v = v.as_deref().ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: label column '{label_col}' is empty on row {}",
                table.path(),
                row + 1
            ))
        })?;
        labels.push(label(v).ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: label column '{label_col}' must be 0/1 or true/false; row {} has '{v}'",
                table.path(),
                row + 1
            ))
        })?);
    }
    let names: Vec<String> = columns
        .iter()
        .filter(|c| *c != label_col && !drop.contains(c))
        .cloned()
        .collect();
    if names.is_empty() {
        return Err(DataError::Invalid("no feature columns left".into()));
    }
    let rows = table.height();
    let cols = names.len();
    let mut values = vec![f64::NAN; rows * cols];
    let mut levels_of = BTreeMap::new();
    for (j, name) in names.iter().enumerate() {
        if categorical.contains(name) {
            let cells = table.strings(name)?;
            let levels: Vec<String> = cells
                .iter()
                .flatten()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for (i, cell) in cells.iter().enumerate() {
                if let Some(c) = cell {
                    values[i * cols + j] = levels.binary_search(c).map_or(f64::NAN, |k| k as f64);
                }
            }
            levels_of.insert(name.clone(), levels);
        } else {
            for (i, v) in table.floats(name)?.into_iter().enumerate() {
                if let Some(v) = v {
                    if !v.is_finite() {
                        return Err(DataError::Invalid(format!(
                            "{}: column '{name}' row {}: {v} is not a finite number",
                            table.path(),
                            i + 1
                        )));
                    }
                    values[i * cols + j] = v;
                }
            }
        }
    }
    let mut prepared = Prepared {
        names,
        categorical: levels_of,
        values,
        labels,
        duplicates_removed: 0,
        kept_rows: None,
    };
    if dedup {
        prepared = dedup_rows(prepared);
    }
    let positives = prepared.labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == prepared.rows() {
        return Err(DataError::Invalid(format!(
            "{}: label column '{label_col}' has one class only ({} rows, {positives} positive)",
            table.path(),
            prepared.rows()
        )));
    }
    Ok(prepared)
}

/// Removes rows equal in every feature and the label to an earlier row.
fn dedup_rows(mut p: Prepared) -> Prepared {
    let c = p.cols();
    let mut seen = HashSet::with_capacity(p.rows());
    let mut keep = Vec::with_capacity(p.rows());
    for i in 0..p.rows() {
        let key: Vec<u64> = p.values[i * c..(i + 1) * c]
            .iter()
            // NaNs compare equal to each other here (all missing).
            .map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() })
            .chain([u64::from(p.labels[i])])
            .collect();
        if seen.insert(key) {
            keep.push(i);
        }
    }
    let removed = p.rows() - keep.len();
    let (values, labels) = p.take(&keep);
    p.values = values;
    p.labels = labels;
    p.duplicates_removed = removed;
    p.kept_rows = Some(keep);
    p
}

/// Row indices of a stratified split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows (early stopping, threshold).
    pub valid: Vec<usize>,
    /// Test rows (the reported metrics).
    pub test: Vec<usize>,
}

/// Splits rows so each part keeps the label's proportion: per class, a seeded shuffle, then
/// `round(n * test)` rows to test, `round(n * valid)` to validation, the rest to training.
/// Each part needs at least one row of each class.
pub fn stratified_split(
    labels: &[bool],
    valid: f64,
    test: f64,
    seed: u64,
) -> Result<Split, DataError> {
    if !(valid > 0.0 && test > 0.0 && valid + test < 1.0) {
        return Err(DataError::Invalid(format!(
            "validation ({valid}) and test ({test}) fractions must be > 0 and sum below 1"
        )));
    }
    let mut rng = SplitMix64::new(seed);
    let mut split = Split {
        train: Vec::new(),
        valid: Vec::new(),
        test: Vec::new(),
    };
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rng.shuffle(&mut idx);
        let n = idx.len();
        let n_test = ((n as f64 * test).round() as usize).max(1);
        let n_valid = ((n as f64 * valid).round() as usize).max(1);
        if n_test + n_valid >= n {
            return Err(DataError::Invalid(format!(
                "only {n} rows of class {} : too few for a train/validation/test split",
                u8::from(class)
            )));
        }
        split.test.extend_from_slice(&idx[..n_test]);
        split
            .valid
            .extend_from_slice(&idx[n_test..n_test + n_valid]);
        split.train.extend_from_slice(&idx[n_test + n_valid..]);
    }
    for part in [&mut split.train, &mut split.valid, &mut split.test] {
        part.sort_unstable();
    }
    Ok(split)
}

/// A split given by a column whose cells are `train`, `valid` (or `validation`) and `test`
/// (a time-based split, or one shared with another tool). With `dedup`, the rows kept are
/// `kept` (indices into the table); each part needs both classes.
pub fn split_from_column(
    table: &Table,
    column: &str,
    labels: &[bool],
    kept: Option<&[usize]>,
) -> Result<Split, DataError> {
    let cells = table.strings(column)?;
    let rows: Vec<usize> = kept.map_or_else(|| (0..cells.len()).collect(), <[usize]>::to_vec);
    let mut split = Split {
        train: Vec::new(),
        valid: Vec::new(),
        test: Vec::new(),
    };
    for (i, &row) in rows.iter().enumerate() {
        match cells[row]
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("train") => split.train.push(i),
            Some("valid" | "validation") => split.valid.push(i),
            Some("test") => split.test.push(i),
            other => {
                return Err(DataError::Invalid(format!(
                    "{}: split column '{column}' row {}: {:?} is not train, valid or test",
                    table.path(),
                    row + 1,
                    other.unwrap_or("")
                )));
            }
        }
    }
    for (name, part) in [
        ("train", &split.train),
        ("valid", &split.valid),
        ("test", &split.test),
    ] {
        let pos = part.iter().filter(|&&i| labels[i]).count();
        if pos == 0 || pos == part.len() {
            return Err(DataError::Invalid(format!(
                "split column '{column}': the {name} part needs both classes ({} rows, {pos} positive)",
                part.len()
            )));
        }
    }
    Ok(split)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::table::TableSpec;

    fn table(text: &str) -> (tempfile::TempDir, Table) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, text).unwrap();
        let t = TableSpec::new(&p).read().unwrap();
        (dir, t)
    }

    #[test]
    fn features_are_typed_encoded_and_deduplicated() {
        let (_d, t) = table(
            "time,amount,country,Class\n1,10.5,FR,0\n2,,DE,1\n3,7,,0\n3,7,,0\n4,1e3,FR,true\n",
        );
        let p = prepare(&t, "Class", &["time".into()], &["country".into()], false).unwrap();
        assert_eq!(p.names, ["amount", "country"]);
        assert_eq!(p.categorical["country"], ["DE", "FR"]);
        assert_eq!(p.rows(), 5);
        assert_eq!(p.values[0..2], [10.5, 1.0]);
        assert!(p.values[2].is_nan() && p.values[3] == 0.0);
        assert!(p.values[5].is_nan());
        assert_eq!(p.labels, [false, true, false, false, true]);
        assert_eq!(p.categorical_indices(), [1]);
        let d = prepare(&t, "Class", &["time".into()], &["country".into()], true).unwrap();
        assert_eq!((d.rows(), d.duplicates_removed), (4, 1));
    }

    #[test]
    fn bad_data_is_refused_before_training() {
        let (_d, t) = table("a,Class\n1,0\n2,0\n");
        let e = prepare(&t, "Class", &[], &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one class only"), "{e}");
        let (_d, t) = table("a,b\n1,0\n2,1\n");
        let e = prepare(&t, "Class", &[], &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column 'Class'"), "{e}");
        let (_d, t) = table("a,Class\nx,0\n2,1\n");
        let e = prepare(&t, "Class", &[], &[], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column 'a'") && e.contains("'x' is not a number"),
            "{e}"
        );
        let (_d, t) = table("a,Class\n1,maybe\n2,1\n");
        let e = prepare(&t, "Class", &[], &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1 has 'maybe'"), "{e}");
        let (_d, t) = table("a,Class\n");
        let e = prepare(&t, "Class", &[], &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no rows"), "{e}");
        let (_d, t) = table("a,Class\n1,0\n2,1\n");
        let e = prepare(&t, "Class", &["zz".into()], &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column 'zz'"), "{e}");
    }

    #[test]
    fn a_split_column_is_read_and_checked() {
        let (_d, t) = table(
            "a,part,y\n1,train,0\n2,train,1\n3,valid,0\n4,Validation,1\n5,test,0\n6,test,1\n6,test,1\n",
        );
        let p = prepare(&t, "y", &["part".into()], &[], true).unwrap();
        let s = split_from_column(&t, "part", &p.labels, p.kept_rows.as_deref()).unwrap();
        assert_eq!(
            (s.train, s.valid, s.test),
            (vec![0, 1], vec![2, 3], vec![4, 5])
        );
        let (_d, t) = table("a,part,y\n1,train,0\n2,train,1\n3,dev,0\n");
        let p = prepare(&t, "y", &["part".into()], &[], false).unwrap();
        let e = split_from_column(&t, "part", &p.labels, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"dev\" is not train"), "{e}");
        let (_d, t) = table("a,part,y\n1,train,0\n2,train,1\n3,valid,0\n4,test,1\n");
        let p = prepare(&t, "y", &["part".into()], &[], false).unwrap();
        let e = split_from_column(&t, "part", &p.labels, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("valid part needs both classes"), "{e}");
    }

    #[test]
    fn splits_are_stratified_disjoint_and_seeded() {
        let labels: Vec<bool> = (0..1000).map(|i| i % 10 == 0).collect();
        let s = stratified_split(&labels, 0.15, 0.15, 7).unwrap();
        assert_eq!(s.train.len() + s.valid.len() + s.test.len(), 1000);
        let pos = |v: &[usize]| v.iter().filter(|&&i| labels[i]).count();
        assert_eq!((pos(&s.test), pos(&s.valid), pos(&s.train)), (15, 15, 70));
        let all: HashSet<usize> = s
            .train
            .iter()
            .chain(&s.valid)
            .chain(&s.test)
            .copied()
            .collect();
        assert_eq!(all.len(), 1000);
        assert_eq!(s, stratified_split(&labels, 0.15, 0.15, 7).unwrap());
        assert_ne!(s, stratified_split(&labels, 0.15, 0.15, 8).unwrap());
        let few = [true, true, false, false, false, false];
        assert!(stratified_split(&few, 0.2, 0.2, 1).is_err());
        assert!(stratified_split(&labels, 0.5, 0.5, 1).is_err());
    }
}
