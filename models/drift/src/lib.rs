//! Data drift between a reference and a current table, number for number as Evidently 0.7.23's
//! `DataDriftPreset` (its `ValueDrift` per column and `DriftedColumnsCount`):
//!
//! - **column types** as Evidently infers them from the current table ([`infer_column_type`]):
//!   floats numerical; integers categorical up to 10 distinct values, else numerical;
//!   strings text when more than half the non-missing values are distinct, else categorical;
//!   booleans categorical;
//! - **missing values**: NaN, null and ±inf are dropped from both samples before a test (an
//!   empty sample is an error, as in Evidently);
//! - **the test per column** ([`default_stattest`]): with a reference of at most 1,000 rows,
//!   K-S (`ks`, p ≤ 0.05) for a numerical column of more than 5 values, else chi-square
//!   (`chisquare`, p < 0.05) above 2 values or the Z-test (`z`, p < 0.05); with a larger
//!   reference, the normed Wasserstein distance (`wasserstein`, ≥ 0.1) for a numerical column
//!   of more than 5 values, else Jensen-Shannon (`jensenshannon`, ≥ 0.1). `psi` (≥ 0.1) on
//!   request, and any test for any column through [`DriftOptions`];
//! - **dataset drift** when at least `drift_share` (0.5) of the columns drift.
//!
//! Text columns (Evidently runs a domain classifier on them) are listed as skipped, not
//! tested. Pure computation: the caller reads the tables (the CLI does it with Polars).

use std::collections::BTreeMap;

use rayon::prelude::*;
use rustc_hash::FxHashSet as HashSet;
use serde::Serialize;

#[cfg(feature = "parquet")]
pub mod embedding;
pub mod file;
pub mod html;
mod ks;
mod numpy;
pub mod profile;
mod sample;
mod sgd;
mod stattests;

use sample::distinct_up_to;
pub use sample::{Key, Sample};

/// A column as read, typed the way pandas would type it (what Evidently sees).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// float64 (also an integer column with missing values, as pandas reads it).
    Float(Vec<f64>),
    /// int64 without missing values.
    Int(Vec<i64>),
    /// bool.
    Bool(Vec<Option<bool>>),
    /// Strings (object dtype); `None` is missing.
    Str(Vec<Option<String>>),
    /// Any other type (dates, lists, ...): typed unknown, left out of the report.
    Other {
        /// The type's name.
        dtype: String,
        /// Number of rows.
        len: usize,
    },
}

impl Values {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
            Values::Other { len, .. } => *len,
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype name pandas would give it.
    pub fn dtype(&self) -> &str {
        match self {
            Values::Float(_) => "float64",
            Values::Int(_) => "int64",
            Values::Bool(_) => "bool",
            Values::Str(_) => "object",
            Values::Other { dtype, .. } => dtype,
        }
    }
}

/// What Evidently makes of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ColumnType {
    /// Numerical (`num`).
    #[serde(rename = "num")]
    Numerical,
    /// Categorical (`cat`).
    #[serde(rename = "cat")]
    Categorical,
    /// Free text (`text`): not tested here.
    #[serde(rename = "text")]
    Text,
    /// Anything else (Evidently leaves it out of the preset).
    #[serde(rename = "unknown")]
    Unknown,
}

impl ColumnType {
    /// Evidently's short name.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Numerical => "num",
            ColumnType::Categorical => "cat",
            ColumnType::Text => "text",
            ColumnType::Unknown => "unknown",
        }
    }
}

/// Evidently's `infer_column_type` (`evidently.core.datasets`), on the current table's column.
pub fn infer_column_type(values: &Values) -> ColumnType {
    match values {
        Values::Float(_) => ColumnType::Numerical,
        Values::Int(v) => {
            // Only "at most 10" matters: counting stops at 11.
            if distinct_up_to(v.iter().map(|&x| Key::Num(x as f64)), 11) <= 10 {
                ColumnType::Categorical
            } else {
                ColumnType::Numerical
            }
        }
        Values::Str(v) => {
            if v.iter().all(Option::is_none) {
                return ColumnType::Unknown;
            }
            // Text once more than half of the present values are distinct: counting stops there.
            let count = v.iter().flatten().count();
            let limit = count / 2 + 1;
            let mut seen: HashSet<&str> = HashSet::default();
            for s in v.iter().flatten() {
                seen.insert(s.as_str());
                if seen.len() >= limit {
                    break;
                }
            }
            if seen.len() as f64 > count as f64 * 0.5 {
                ColumnType::Text
            } else {
                ColumnType::Categorical
            }
        }
        // A boolean column with missing values is an object column of bools in pandas, which
        // Evidently types as unknown.
        Values::Bool(v) => {
            if v.iter().any(Option::is_none) {
                ColumnType::Unknown
            } else {
                ColumnType::Categorical
            }
        }
        Values::Other { .. } => ColumnType::Unknown,
    }
}

/// A drift test, by Evidently's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatTest {
    /// `ks`: two-sample Kolmogorov–Smirnov p-value (numerical only).
    Ks,
    /// `chisquare`: chi-square p-value (categorical).
    ChiSquare,
    /// `z`: two-proportion Z-test p-value (categorical).
    Z,
    /// `wasserstein`: Wasserstein distance over the reference's standard deviation
    /// (numerical only).
    Wasserstein,
    /// `jensenshannon`: Jensen-Shannon distance of the binned shares.
    JensenShannon,
    /// `psi`: population stability index of the binned shares.
    Psi,
}

impl StatTest {
    /// Every test, for `--help` and errors.
    pub const ALL: [StatTest; 6] = [
        StatTest::Ks,
        StatTest::ChiSquare,
        StatTest::Z,
        StatTest::Wasserstein,
        StatTest::JensenShannon,
        StatTest::Psi,
    ];

    /// Evidently's registered name.
    pub fn name(self) -> &'static str {
        match self {
            StatTest::Ks => "ks",
            StatTest::ChiSquare => "chisquare",
            StatTest::Z => "z",
            StatTest::Wasserstein => "wasserstein",
            StatTest::JensenShannon => "jensenshannon",
            StatTest::Psi => "psi",
        }
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            StatTest::Ks | StatTest::ChiSquare | StatTest::Z => 0.05,
            StatTest::Wasserstein | StatTest::JensenShannon | StatTest::Psi => 0.1,
        }
    }

    /// Whether the score says drift: p-values below (K-S: at or below) the threshold,
    /// distances at or above it.
    pub fn detected(self, score: f64, threshold: f64) -> bool {
        match self {
            StatTest::Ks => score <= threshold,
            StatTest::ChiSquare | StatTest::Z => score < threshold,
            StatTest::Wasserstein | StatTest::JensenShannon | StatTest::Psi => score >= threshold,
        }
    }

    /// Whether Evidently allows it for that column type.
    pub fn allows(self, column_type: ColumnType) -> bool {
        match self {
            StatTest::Ks | StatTest::Wasserstein => column_type == ColumnType::Numerical,
            StatTest::ChiSquare | StatTest::Z => column_type == ColumnType::Categorical,
            StatTest::JensenShannon | StatTest::Psi => {
                matches!(column_type, ColumnType::Numerical | ColumnType::Categorical)
            }
        }
    }
}

impl std::str::FromStr for StatTest {
    type Err = DriftError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StatTest::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| DriftError::UnknownStatTest(s.to_owned()))
    }
}

/// Errors of a drift run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DriftError {
    /// A test name Evidently does not register (or this crate does not compute).
    #[error("unknown drift test '{0}' (known: ks, chisquare, z, wasserstein, jensenshannon, psi)")]
    UnknownStatTest(String),
    /// A column of the current table is not in the reference.
    #[error("column '{0}' is in the current table but not in the reference")]
    MissingInReference(String),
    /// A column asked for is not in the current table.
    #[error("column '{0}' is not in the current table")]
    MissingInCurrent(String),
    /// Nothing left to test in a sample.
    #[error(
        "column '{column}': the {side} sample is empty once missing and infinite values are dropped"
    )]
    EmptyColumn {
        /// The column.
        column: String,
        /// `reference` or `current`.
        side: &'static str,
    },
    /// A numerical column holds something else on one side.
    #[error("column '{column}' is numerical in the current table but {dtype} in the {side} table")]
    NotNumeric {
        /// The column.
        column: String,
        /// `reference` or `current`.
        side: &'static str,
        /// What it is there.
        dtype: String,
    },
    /// A test asked for a column type it does not take.
    #[error("drift test '{test}' does not apply to {column_type} column '{column}'")]
    TestNotAllowed {
        /// The test.
        test: &'static str,
        /// The column.
        column: String,
        /// Its type.
        column_type: &'static str,
    },
    /// No column to test.
    #[error("no numerical or categorical column to test")]
    NoColumns,
    /// A threshold or share outside what makes sense.
    #[error("{0}")]
    BadOption(String),
}

/// What to test and how (Evidently's `DataDriftPreset` arguments). The defaults are
/// Evidently's.
#[derive(Debug, Clone)]
pub struct DriftOptions {
    /// Columns to test (None: every numerical and categorical column of the current table).
    pub columns: Option<Vec<String>>,
    /// Share of drifted columns at which the dataset drifts.
    pub drift_share: f64,
    /// A test for every column (`method`).
    pub method: Option<StatTest>,
    /// For numerical columns (`num_method`).
    pub num_method: Option<StatTest>,
    /// For categorical columns (`cat_method`).
    pub cat_method: Option<StatTest>,
    /// Per column (`per_column_method`).
    pub per_column_method: BTreeMap<String, StatTest>,
    /// A threshold for every column (`threshold`).
    pub threshold: Option<f64>,
    /// For numerical columns.
    pub num_threshold: Option<f64>,
    /// For categorical columns.
    pub cat_threshold: Option<f64>,
    /// Per column.
    pub per_column_threshold: BTreeMap<String, f64>,
    /// Keep both samples' distributions of every drifted column (for [`html::render`]).
    pub plots: bool,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self {
            columns: None,
            drift_share: 0.5,
            method: None,
            num_method: None,
            cat_method: None,
            per_column_method: BTreeMap::new(),
            threshold: None,
            num_threshold: None,
            cat_threshold: None,
            per_column_threshold: BTreeMap::new(),
            plots: false,
        }
    }
}

impl DriftOptions {
    /// Evidently's `DataDriftOptions.get_feature_stattest_func`: per column, then the
    /// all-columns method, then the type's.
    fn method_for(&self, column: &str, column_type: ColumnType) -> Option<StatTest> {
        self.per_column_method
            .get(column)
            .copied()
            .or(self.method)
            .or(match column_type {
                ColumnType::Numerical => self.num_method,
                ColumnType::Categorical => self.cat_method,
                _ => None,
            })
    }

    /// Evidently's `DataDriftOptions.get_threshold`: per column, then all, then the type's.
    fn threshold_for(&self, column: &str, column_type: ColumnType) -> Option<f64> {
        self.per_column_threshold
            .get(column)
            .copied()
            .or(self.threshold)
            .or(match column_type {
                ColumnType::Numerical => self.num_threshold,
                ColumnType::Categorical => self.cat_threshold,
                _ => None,
            })
    }
}

/// One column's result (Evidently's `ColumnDataDriftMetrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDrift {
    /// `num` or `cat`.
    pub column_type: ColumnType,
    /// The test's Evidently name.
    #[serde(serialize_with = "ser_test")]
    pub stattest: StatTest,
    /// The p-value or distance.
    pub drift_score: f64,
    /// The threshold used.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drift_detected: bool,
    /// Both samples' distributions, when asked for and the column drifted.
    #[serde(skip)]
    pub distribution: Option<Distribution>,
}

/// Two samples side by side for a plot: a label per bar, and each sample's share per bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// Bin ranges or values.
    pub labels: Vec<String>,
    /// Reference shares.
    pub reference: Vec<f64>,
    /// Current shares.
    pub current: Vec<f64>,
}

fn ser_test<S: serde::Serializer>(t: &StatTest, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

/// A column left out of the report, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The column.
    pub column: String,
    /// Its type.
    pub column_type: ColumnType,
    /// Why.
    pub reason: String,
}

/// The whole report: the fields of Evidently's `DataDriftTable` result.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftReport {
    /// Whether at least `drift_share` of the columns drifted.
    pub dataset_drift: bool,
    /// Drifted columns over tested columns.
    pub share_of_drifted_columns: f64,
    /// Drifted columns.
    pub number_of_drifted_columns: usize,
    /// Tested columns.
    pub number_of_columns: usize,
    /// Per tested column, in table order.
    pub columns: Vec<(String, ColumnDrift)>,
    /// Columns not tested (text; unknown types).
    pub skipped: Vec<Skipped>,
    /// Embeddings tested as a whole (Evidently's `EmbeddingsDrift`), by name; not counted in
    /// the dataset drift share.
    pub embeddings: Vec<EmbeddingReport>,
}

/// One embedding's drift in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingReport {
    /// The embedding's name.
    pub name: String,
    /// Its columns.
    pub columns: Vec<String>,
    /// The method's threshold (the bootstrap percentile decides instead when bootstrapped).
    pub threshold: f64,
    /// Whether the method was bootstrapped.
    pub bootstrap: bool,
    /// The result.
    pub drift: embedding::EmbeddingDrift,
}

impl DriftReport {
    /// The report as JSON: `{"dataset_drift", "share_of_drifted_columns",
    /// "number_of_drifted_columns", "number_of_columns", "columns": {name: {...}},
    /// "skipped_columns": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut columns = serde_json::Map::new();
        for (name, c) in &self.columns {
            columns.insert(
                name.clone(),
                serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
            );
        }
        let mut out = serde_json::json!({
            "dataset_drift": self.dataset_drift,
            "share_of_drifted_columns": self.share_of_drifted_columns,
            "number_of_drifted_columns": self.number_of_drifted_columns,
            "number_of_columns": self.number_of_columns,
            "columns": columns,
            "skipped_columns": self.skipped,
        });
        if !self.embeddings.is_empty()
            && let Some(o) = out.as_object_mut()
        {
            let e: serde_json::Map<String, serde_json::Value> = self
                .embeddings
                .iter()
                .map(|e| {
                    (
                        e.name.clone(),
                        serde_json::json!({
                            "drift_score": e.drift.drift_score,
                            "drift_detected": e.drift.drift_detected,
                            "method_name": e.drift.method_name,
                            "threshold": e.threshold,
                            "bootstrap": e.bootstrap,
                            "columns": e.columns.len(),
                        }),
                    )
                })
                .collect();
            o.insert("embeddings".into(), e.into());
        }
        out
    }
}

fn find<'a>(table: &'a [(String, Values)], name: &str) -> Option<&'a Values> {
    table.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Runs the preset: every column of `current` (or `options.columns`) that Evidently types as
/// numerical or categorical is tested against the same column of `reference`.
pub fn data_drift(
    reference: &[(String, Values)],
    current: &[(String, Values)],
    options: &DriftOptions,
) -> Result<DriftReport, DriftError> {
    if !(0.0..=1.0).contains(&options.drift_share) || options.drift_share.is_nan() {
        return Err(DriftError::BadOption(format!(
            "drift share must be within [0, 1], got {}",
            options.drift_share
        )));
    }
    let names: Vec<&str> = match &options.columns {
        Some(cols) => {
            for c in cols {
                if find(current, c).is_none() {
                    return Err(DriftError::MissingInCurrent(c.clone()));
                }
            }
            cols.iter().map(String::as_str).collect()
        }
        None => current.iter().map(|(n, _)| n.as_str()).collect(),
    };
    let mut tested = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        let cur = find(current, name).ok_or_else(|| DriftError::MissingInCurrent(name.into()))?;
        let column_type = infer_column_type(cur);
        match column_type {
            ColumnType::Numerical | ColumnType::Categorical => {}
            ColumnType::Text => {
                skipped.push(Skipped {
                    column: name.to_owned(),
                    column_type,
                    reason: "text column (Evidently tests text with a domain classifier, which this report does not run)".into(),
                });
                continue;
            }
            ColumnType::Unknown => {
                skipped.push(Skipped {
                    column: name.to_owned(),
                    column_type,
                    reason: format!("{} column that Evidently types as unknown", cur.dtype()),
                });
                continue;
            }
        }
        let reference_values =
            find(reference, name).ok_or_else(|| DriftError::MissingInReference(name.into()))?;
        tested.push((name, reference_values, cur, column_type));
    }
    // Columns are independent: one task each, results in table order.
    let columns = tested
        .into_par_iter()
        .map(|(name, reference_values, cur, column_type)| {
            column_drift(
                name,
                reference_values,
                cur,
                column_type,
                options.method_for(name, column_type),
                options.threshold_for(name, column_type),
                options.plots,
            )
            .map(|drift| (name.to_owned(), drift))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if columns.is_empty() {
        return Err(DriftError::NoColumns);
    }
    let drifted = columns.iter().filter(|(_, c)| c.drift_detected).count();
    let share = drifted as f64 / columns.len() as f64;
    Ok(DriftReport {
        dataset_drift: share >= options.drift_share,
        share_of_drifted_columns: share,
        number_of_drifted_columns: drifted,
        number_of_columns: columns.len(),
        columns,
        skipped,
        embeddings: Vec::new(),
    })
}

/// One column's drift (Evidently's `get_one_column_drift`): the samples cleaned of missing and
/// infinite values, the test chosen unless given, its threshold unless given.
pub fn column_drift(
    name: &str,
    reference: &Values,
    current: &Values,
    column_type: ColumnType,
    method: Option<StatTest>,
    threshold: Option<f64>,
    plot: bool,
) -> Result<ColumnDrift, DriftError> {
    let numerical = column_type == ColumnType::Numerical;
    let reference =
        Sample::clean(reference, numerical).map_err(|dtype| DriftError::NotNumeric {
            column: name.into(),
            side: "reference",
            dtype,
        })?;
    let current = Sample::clean(current, numerical).map_err(|dtype| DriftError::NotNumeric {
        column: name.into(),
        side: "current",
        dtype,
    })?;
    for (s, side) in [(&reference, "reference"), (&current, "current")] {
        if s.is_empty() {
            return Err(DriftError::EmptyColumn {
                column: name.into(),
                side,
            });
        }
    }
    let test = match method {
        Some(t) => {
            if !t.allows(column_type) {
                return Err(DriftError::TestNotAllowed {
                    test: t.name(),
                    column: name.into(),
                    column_type: column_type.name(),
                });
            }
            t
        }
        None => default_stattest(&reference, &current, column_type),
    };
    let threshold = threshold.unwrap_or_else(|| test.default_threshold());
    if threshold.is_nan() {
        return Err(DriftError::BadOption(format!(
            "column '{name}': threshold is NaN"
        )));
    }
    let score = match test {
        StatTest::Ks => ks::ks_2samp(reference.numbers(), current.numbers()).1,
        StatTest::Wasserstein => {
            stattests::wasserstein_norm(reference.numbers(), current.numbers())
        }
        StatTest::ChiSquare => stattests::chisquare(&reference, &current),
        StatTest::Z => stattests::z_test(&reference, &current),
        StatTest::JensenShannon => stattests::jensen_shannon(&reference, &current, numerical),
        StatTest::Psi => stattests::psi(&reference, &current, numerical),
    };
    let drift_detected = test.detected(score, threshold);
    Ok(ColumnDrift {
        column_type,
        stattest: test,
        drift_score: score,
        threshold,
        drift_detected,
        distribution: (plot && drift_detected)
            .then(|| stattests::distribution(&reference, &current, numerical)),
    })
}

/// Evidently's `_get_default_stattest` on the cleaned samples.
pub fn default_stattest(reference: &Sample, current: &Sample, column_type: ColumnType) -> StatTest {
    let small = reference.len() <= 1000;
    // Distinct values over both, counted only as far as the choice needs: "more than 5" for
    // a numerical column, "more than 2" for a categorical one with a small reference; a
    // categorical column with a large reference takes Jensen-Shannon whatever the count.
    let n_values = |limit| distinct_up_to(reference.keys().chain(current.keys()), limit);
    match (column_type, small) {
        (ColumnType::Numerical, _) => match n_values(6) {
            n if n > 5 && small => StatTest::Ks,
            n if n > 5 => StatTest::Wasserstein,
            _ if !small => StatTest::JensenShannon,
            n if n > 2 => StatTest::ChiSquare,
            _ => StatTest::Z,
        },
        (_, false) => StatTest::JensenShannon,
        (_, true) if n_values(3) > 2 => StatTest::ChiSquare,
        (_, true) => StatTest::Z,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[f64]) -> Values {
        Values::Float(v.to_vec())
    }

    #[test]
    fn types_follow_evidently() {
        assert_eq!(infer_column_type(&floats(&[1.0])), ColumnType::Numerical);
        assert_eq!(
            infer_column_type(&Values::Int((0..10).collect())),
            ColumnType::Categorical
        );
        assert_eq!(
            infer_column_type(&Values::Int((0..11).collect())),
            ColumnType::Numerical
        );
        let s = |v: &[&str]| Values::Str(v.iter().map(|x| Some((*x).to_owned())).collect());
        assert_eq!(infer_column_type(&s(&["a", "a", "b"])), ColumnType::Text);
        assert_eq!(
            infer_column_type(&s(&["a", "a", "b", "b"])),
            ColumnType::Categorical
        );
        assert_eq!(
            infer_column_type(&Values::Bool(vec![Some(true), None])),
            ColumnType::Unknown
        );
    }

    #[test]
    fn default_tests_follow_the_reference_size_and_values() {
        let num = |n: usize, distinct: usize| Sample::Num {
            values: (0..n).map(|i| (i % distinct) as f64).collect(),
            integer: false,
        };
        let t = |r: &Sample, ty| default_stattest(r, r, ty);
        assert_eq!(t(&num(1000, 6), ColumnType::Numerical), StatTest::Ks);
        assert_eq!(t(&num(1000, 5), ColumnType::Numerical), StatTest::ChiSquare);
        assert_eq!(t(&num(1000, 2), ColumnType::Numerical), StatTest::Z);
        assert_eq!(
            t(&num(1001, 6), ColumnType::Numerical),
            StatTest::Wasserstein
        );
        assert_eq!(
            t(&num(1001, 5), ColumnType::Numerical),
            StatTest::JensenShannon
        );
        assert_eq!(
            t(&num(1001, 2), ColumnType::Categorical),
            StatTest::JensenShannon
        );
    }

    #[test]
    fn missing_and_infinite_values_are_dropped_and_empty_is_an_error() {
        let r = floats(&[1.0, f64::NAN, f64::INFINITY, 2.0, 3.0]);
        let c = floats(&[1.0, 2.0, 3.0]);
        let d = column_drift("x", &r, &c, ColumnType::Numerical, None, None, false).expect("drift");
        // Three values once NaN and inf are gone: chi-square, and no drift.
        assert_eq!(d.stattest, StatTest::ChiSquare);
        assert!(!d.drift_detected);
        let e = column_drift(
            "x",
            &floats(&[f64::NAN]),
            &c,
            ColumnType::Numerical,
            None,
            None,
            false,
        );
        assert!(matches!(
            e,
            Err(DriftError::EmptyColumn {
                side: "reference",
                ..
            })
        ));
    }

    #[test]
    fn a_numerical_column_must_be_numbers_on_both_sides() {
        let r = Values::Str(vec![Some("a".into())]);
        let e = column_drift(
            "x",
            &r,
            &floats(&[1.0]),
            ColumnType::Numerical,
            None,
            None,
            false,
        );
        assert!(matches!(
            e,
            Err(DriftError::NotNumeric {
                side: "reference",
                ..
            })
        ));
    }

    #[test]
    fn tests_refuse_other_column_types() {
        let c = Values::Str(vec![Some("a".into()), Some("b".into())]);
        let e = column_drift(
            "x",
            &c,
            &c,
            ColumnType::Categorical,
            Some(StatTest::Ks),
            None,
            false,
        );
        assert!(matches!(e, Err(DriftError::TestNotAllowed { .. })));
    }

    #[test]
    fn the_dataset_drifts_at_the_share() {
        let same: Vec<f64> = (0..200).map(|i| f64::from(i % 50)).collect();
        let shifted: Vec<f64> = same.iter().map(|v| v + 30.0).collect();
        let table = |b: &[f64]| vec![("a".to_owned(), floats(&same)), ("b".to_owned(), floats(b))];
        let r =
            data_drift(&table(&same), &table(&shifted), &DriftOptions::default()).expect("report");
        assert_eq!(r.number_of_drifted_columns, 1);
        assert_eq!(r.share_of_drifted_columns, 0.5);
        assert!(r.dataset_drift);
        let strict = DriftOptions {
            drift_share: 0.6,
            ..DriftOptions::default()
        };
        let r = data_drift(&table(&same), &table(&shifted), &strict).expect("report");
        assert!(!r.dataset_drift);
        assert!(!r.columns[0].1.drift_detected);
    }

    #[test]
    fn text_columns_are_skipped_and_missing_ones_refused() {
        let text = Values::Str((0..10).map(|i| Some(format!("t{i}"))).collect());
        let num = floats(&(0..10).map(f64::from).collect::<Vec<_>>());
        let cur = vec![
            ("t".to_owned(), text.clone()),
            ("n".to_owned(), num.clone()),
        ];
        let r = data_drift(&cur, &cur, &DriftOptions::default()).expect("report");
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.number_of_columns, 1);
        let e = data_drift(&cur[..1], &cur, &DriftOptions::default());
        assert_eq!(e, Err(DriftError::MissingInReference("n".into())));
    }
}
