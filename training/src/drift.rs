//! `infermesh drift`: Evidently's `DataDriftPreset` between a reference and a current table
//! (CSV, TSV or Parquet, read with Polars), computed by `infermesh-drift`.
//!
//! Evidently sees pandas columns, so the tables are typed as pandas types them: a CSV column
//! is int64 when every cell is an integer (none missing), float64 when every present cell is
//! a number (an integer column with gaps is float64 too), bool for `True`/`False` cells,
//! else strings; pandas' missing-value tokens (`""`, `NA`, `NaN`, `null`, `None`, `n/a`, ...)
//! are missing. Parquet columns keep their types (integers with nulls become float64, as
//! pyarrow's `to_pandas` makes them); dates and other types are reported as skipped.
//!
//! Bad input: a current column missing from the reference, a numerical current column that
//! is text in the reference, a sample left empty once NaN, null and ±inf are dropped (an empty
//! window), an unknown test or one that does not apply to the column's type are errors naming
//! the column (Evidently raises on the same cases). An all-constant column is tested as
//! Evidently tests it (K-S p = 1, Wasserstein 0 over a standard deviation floored at 0.001,
//! one Jensen-Shannon bin). A string column with more than half of its values distinct is text
//! and skipped; many categories otherwise are counted, as Evidently counts them. Both tables
//! are read whole (Polars), so their size is bounded by memory, as Evidently's pandas tables.
//!
//! `infermesh drift profile` reduces a reference table to a profile (per column, its
//! distinct values with counts: `infermesh_drift::profile`), written as a Parquet file in a
//! long layout (`column, dtype, missing, number, integer, text, count`); `--reference` takes
//! a profile wherever it takes a table, with the same numbers as a result.

use std::path::{Path, PathBuf};

use infermesh_drift::profile::ColumnProfile;
use infermesh_drift::{DriftError, DriftOptions, DriftReport, StatTest, Values};

use crate::table::TableError;

mod pandas;
pub use pandas::{pandas_typed, read, typed};

/// Errors of `infermesh drift`.
#[derive(Debug, thiserror::Error)]
pub enum DriftJobError {
    /// A table could not be read.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A profile could not be written or read.
    #[error("{path}: {message}")]
    Profile {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A flag is missing or malformed.
    #[error("{0}")]
    Usage(String),
    /// The comparison was refused.
    #[error(transparent)]
    Drift(#[from] DriftError),
}

/// Compare a current table with a reference table, column by column, as Evidently 0.7's
/// DataDriftPreset does: the same column types, the same test per column (K-S or chi-square /
/// Z-test for a reference of up to 1,000 rows; normed Wasserstein or Jensen-Shannon above),
/// the same thresholds, and dataset drift when at least --drift-share of the columns drift.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DriftArgs {
    /// Write a reference profile instead of comparing (see `infermesh drift profile --help`).
    #[command(subcommand)]
    pub command: Option<DriftCommand>,
    /// The reference: a table (CSV, TSV or Parquet by extension), a profile written by
    /// `infermesh drift profile`, or a registered version, `models:/NAME@ALIAS` or
    /// `models:/NAME/VERSION`, whose drift_reference.parquet is used (from MLflow with
    /// --tracking-uri, else from the local --registry).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// The current table (same columns), or a folder whose Parquet files are read as one
    /// table (a day of the server's inference log: `<log-dir>/<model>/<version>/<day>`).
    #[arg(long)]
    pub current: Option<PathBuf>,
    /// Test only the current table's columns that the reference has too; the others are
    /// listed as skipped (for an inference log, whose `timestamp_ms`, `model` and `version`
    /// are not in a training profile). Without it such a column is an error.
    #[arg(long)]
    pub shared_columns: bool,
    /// MLflow tracking URI of a `models:/` reference.
    #[arg(long, visible_alias = "registry-uri", env = "INFERMESH_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// Local registry of a `models:/` reference (without --tracking-uri).
    #[arg(long, env = "INFERMESH_REGISTRY", default_value = "run/registry")]
    pub registry: PathBuf,
    /// Where a registered version's files are cached (default:
    /// ~/.cache/infermesh/registry, as `infermesh serve` caches them).
    #[arg(long)]
    pub registry_cache: Option<PathBuf>,
    /// With a `models:/` reference in MLflow: log the report on the run that made the
    /// version (metrics drift_share, drift_columns_drifted, drift_dataset_drift,
    /// drift_score.<column>; the JSON and HTML reports under drift/<UTC day>/).
    #[arg(long)]
    pub log_to_run: bool,
    /// Print the report as JSON (the fields of Evidently's DataDriftTable).
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page (the table, and per drifted
    /// column both samples' distributions side by side).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Test only these columns (comma-separated; default: every numerical and categorical
    /// column of the current table).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// One test for every column: ks, chisquare, z, wasserstein, jensenshannon or psi
    /// (default: chosen per column as Evidently chooses).
    #[arg(long)]
    pub method: Option<StatTest>,
    /// The test for numerical columns (ks, wasserstein, jensenshannon, psi).
    #[arg(long)]
    pub num_method: Option<StatTest>,
    /// The test for categorical columns (chisquare, z, jensenshannon, psi).
    #[arg(long)]
    pub cat_method: Option<StatTest>,
    /// One threshold for every column (default: the test's own: 0.05 for p-values, 0.1 for
    /// distances and PSI).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Share of drifted columns at which the dataset drifts.
    #[arg(long, default_value_t = 0.5)]
    pub drift_share: f64,
    /// Exit with status 3 when the dataset drifts (after printing the report), so a
    /// scheduler can gate on it as on `infermesh promote`'s gates.
    #[arg(long)]
    pub fail_on_drift: bool,
    /// Field separator of text tables (one character or `tab`; default: tab for .tsv,
    /// else comma).
    #[arg(long, value_parser = crate::table::parse_separator)]
    pub separator: Option<u8>,
    /// Test numeric columns together as one embedding, as Evidently's EmbeddingsDrift does:
    /// NAME=COL1,COL2,... (`PREFIX*` takes every current column starting with PREFIX);
    /// repeatable. Its columns are left out of the column-by-column table unless --columns
    /// names them. Needs the reference's rows (a table, not a profile).
    #[arg(long, value_name = "NAME=COLUMNS")]
    pub embeddings: Vec<String>,
    /// The embedding test: model (a domain classifier's ROC AUC, threshold 0.55), mmd
    /// (squared maximum mean discrepancy, 0.015), distance (between the mean rows, 0.2) or
    /// ratio (share of drifted components, 0.2). Default: model, bootstrapped when the
    /// reference has fewer than 1,000 rows (Evidently's default).
    #[arg(long)]
    pub embeddings_method: Option<String>,
    /// The embedding test's threshold (default: the method's).
    #[arg(long)]
    pub embeddings_threshold: Option<f64>,
    /// Decide by resampling instead of the threshold (model, mmd, distance; Evidently's
    /// bootstrap option).
    #[arg(long)]
    pub embeddings_bootstrap: Option<bool>,
    /// The distance method's distance: euclidean, cosine, cityblock or chebyshev.
    #[arg(long, default_value = "euclidean")]
    pub embeddings_distance: String,
}

/// `infermesh drift profile`.
#[derive(Debug, clap::Subcommand)]
pub enum DriftCommand {
    /// Reduce a reference table (CSV, TSV or Parquet) to a drift profile: per column its
    /// distinct values with their counts, as a Parquet file (e.g. beside a model version, so
    /// that drift runs do not reread the training set). `infermesh drift --reference
    /// PROFILE` gives the same numbers as with the table.
    Profile(ProfileArgs),
}

/// Arguments of `infermesh drift profile`.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The reference table.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the profile (Parquet).
    #[arg(long)]
    pub out: PathBuf,
    /// Profile only these columns (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Field separator of a text table (one character or `tab`).
    #[arg(long, value_parser = crate::table::parse_separator)]
    pub separator: Option<u8>,
}

impl ProfileArgs {
    /// Writes the profile; says what was written.
    pub fn run(&self) -> Result<String, DriftJobError> {
        let mut table = read(&self.data, self.separator)?;
        if let Some(cols) = &self.columns {
            for c in cols {
                if !table.iter().any(|(n, _)| n == c) {
                    return Err(DriftJobError::Usage(format!(
                        "{}: no column '{c}'",
                        self.data.display()
                    )));
                }
            }
            table.retain(|(n, _)| cols.contains(n));
        }
        let rows = table.first().map_or(0, |(_, v)| v.len());
        let profiles: Vec<(String, ColumnProfile)> = table
            .iter()
            .filter_map(|(n, v)| ColumnProfile::of(v).map(|p| (n.clone(), p)))
            .collect();
        write_profile(&self.out, &profiles)?;
        let distinct: usize = profiles.iter().map(|(_, p)| p.values.len()).sum();
        Ok(format!(
            "profiled {} columns of {rows} rows ({distinct} distinct values) into {}\n",
            profiles.len(),
            self.out.display()
        ))
    }
}

pub use infermesh_drift::file::REFERENCE_FILE;

/// Profiles `columns` of a loaded table (typed as pandas types it, so as `infermesh drift`
/// reads the same file), keeping only `rows` when given, into
/// `<out_dir>/drift_reference.parquet`. The training jobs pass the table they already read.
pub fn write_reference(
    table: &crate::table::Table,
    columns: &[String],
    rows: Option<&[usize]>,
    out_dir: &Path,
) -> Result<(), DriftJobError> {
    write_reference_with(table, columns, rows, &[], out_dir)
}

/// [`write_reference`] plus `extra` columns of the profiled rows (one value per kept row, in
/// table order): the model's outputs on them, for prediction drift.
pub fn write_reference_with(
    table: &crate::table::Table,
    columns: &[String],
    rows: Option<&[usize]>,
    extra: &[(String, Values)],
    out_dir: &Path,
) -> Result<(), DriftJobError> {
    let table = typed(table, columns)?;
    let mut profiles = Vec::with_capacity(columns.len());
    for name in columns {
        let Some((_, values)) = table.iter().find(|(n, _)| n == name) else {
            return Err(DriftJobError::Usage(format!(
                "no column '{name}' to profile"
            )));
        };
        let picked = match rows {
            Some(rows) => select(values, rows),
            None => values.clone(),
        };
        if let Some(p) = ColumnProfile::of(&picked) {
            profiles.push((name.clone(), p));
        }
    }
    for (name, values) in extra {
        if let Some(p) = ColumnProfile::of(values) {
            profiles.push((name.clone(), p));
        }
    }
    write_profile(&out_dir.join(REFERENCE_FILE), &profiles)
}

/// The values at `rows`.
fn select(values: &Values, rows: &[usize]) -> Values {
    fn pick<T: Clone>(v: &[T], rows: &[usize]) -> Vec<T> {
        rows.iter().filter_map(|&r| v.get(r).cloned()).collect()
    }
    match values {
        Values::Float(v) => Values::Float(pick(v, rows)),
        Values::Int(v) => Values::Int(pick(v, rows)),
        Values::Bool(v) => Values::Bool(pick(v, rows)),
        Values::Str(v) => Values::Str(pick(v, rows)),
        Values::Other { dtype, .. } => Values::Other {
            dtype: dtype.clone(),
            len: rows.len(),
        },
    }
}

impl From<infermesh_drift::file::ProfileFileError> for DriftJobError {
    fn from(e: infermesh_drift::file::ProfileFileError) -> Self {
        DriftJobError::Profile {
            path: e.path,
            message: e.message,
        }
    }
}

/// Writes profiles as one Parquet file (`infermesh_drift::file::write_profile`).
pub fn write_profile(
    path: &Path,
    profiles: &[(String, ColumnProfile)],
) -> Result<(), DriftJobError> {
    Ok(infermesh_drift::file::write_profile(path, profiles)?)
}

/// Reads a profile back as columns (`None`: the Parquet file is not a profile).
pub fn read_profile(path: &Path) -> Result<Option<Vec<(String, Values)>>, DriftJobError> {
    Ok(infermesh_drift::file::read_profile(path)?)
}

/// A reference: a profile when the file is one (`true`), else a table.
pub fn read_reference(
    path: &Path,
    separator: Option<u8>,
) -> Result<(Vec<(String, Values)>, bool), DriftJobError> {
    if is_parquet(path)
        && let Some(columns) = read_profile(path)?
    {
        return Ok((columns, true));
    }
    Ok((read(path, separator)?, false))
}

fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"))
}

impl DriftArgs {
    /// Reads both tables and runs the preset.
    pub fn report(&self) -> Result<DriftReport, DriftJobError> {
        self.report_resolved().map(|(report, _)| report)
    }

    /// [`DriftArgs::report`], and the registered version a `models:/` reference resolved to.
    fn report_resolved(
        &self,
    ) -> Result<
        (
            DriftReport,
            Option<crate::drift_registry::ResolvedReference>,
        ),
        DriftJobError,
    > {
        let (Some(reference), Some(current)) = (&self.reference, &self.current) else {
            return Err(DriftJobError::Usage(
                "infermesh drift needs --reference and --current".into(),
            ));
        };
        let registered = match reference.to_str() {
            Some(uri) if uri.starts_with("models:/") => {
                let cache = self.registry_cache.clone().unwrap_or_else(|| {
                    std::env::var_os("HOME")
                        .map_or_else(|| PathBuf::from("."), PathBuf::from)
                        .join(".cache/infermesh/registry")
                });
                Some(crate::drift_registry::resolve(
                    uri,
                    self.tracking_uri.as_deref(),
                    &self.registry,
                    &cache,
                )?)
            }
            _ => None,
        };
        if self.log_to_run && registered.is_none() {
            return Err(DriftJobError::Usage(
                "--log-to-run needs a models:/ reference".into(),
            ));
        }
        let current = match &registered {
            Some(r) => PathBuf::from(
                current
                    .to_string_lossy()
                    .replace("{version}", &r.version.to_string()),
            ),
            None => current.clone(),
        };
        // Both tables at once: each read alone leaves a core idle part of the time.
        let reference_path = registered
            .as_ref()
            .map_or(reference.as_path(), |r| &r.profile);
        let (reference, current) = rayon::join(
            || read_reference(reference_path, self.separator),
            || read(&current, self.separator),
        );
        let (reference, reference_is_profile) = reference?;
        let current = current?;
        let plots = self.html.is_some();
        let mut columns = self.columns.clone();
        let mut not_in_reference = Vec::new();
        if self.shared_columns && columns.is_none() {
            let (shared, other): (Vec<_>, Vec<_>) = current
                .iter()
                .map(|(n, _)| n.clone())
                .partition(|n| reference.iter().any(|(r, _)| r == n));
            if shared.is_empty() {
                return Err(DriftJobError::Usage(
                    "the current table shares no column with the reference".into(),
                ));
            }
            columns = Some(shared);
            not_in_reference = other;
        }
        let options = DriftOptions {
            columns,
            drift_share: self.drift_share,
            method: self.method,
            num_method: self.num_method,
            cat_method: self.cat_method,
            threshold: self.threshold,
            plots,
            ..DriftOptions::default()
        };
        let embeddings = self.embedding_columns(&current)?;
        let mut options = options;
        if !embeddings.is_empty() && options.columns.is_none() {
            // An embedding is tested as a whole, not column by column.
            options.columns = Some(
                current
                    .iter()
                    .map(|(n, _)| n.clone())
                    .filter(|n| !embeddings.iter().any(|(_, cols)| cols.contains(n)))
                    .collect(),
            );
        }
        let mut report =
            if embeddings.is_empty() || options.columns.as_ref().is_none_or(|c| !c.is_empty()) {
                infermesh_drift::data_drift(&reference, &current, &options)?
            } else {
                infermesh_drift::DriftReport {
                    dataset_drift: false,
                    share_of_drifted_columns: 0.0,
                    number_of_drifted_columns: 0,
                    number_of_columns: 0,
                    columns: Vec::new(),
                    skipped: Vec::new(),
                    embeddings: Vec::new(),
                }
            };
        if reference_is_profile && !embeddings.is_empty() {
            return Err(DriftJobError::Usage(
                "--embeddings needs the reference's rows (a table): a profile keeps each column's values apart".into(),
            ));
        }
        report.embeddings = self.embedding_drift(&reference, &current, embeddings)?;
        for column in not_in_reference {
            let values = current.iter().find(|(n, _)| *n == column).map(|(_, v)| v);
            report.skipped.push(infermesh_drift::Skipped {
                column,
                column_type: values.map_or(infermesh_drift::ColumnType::Unknown, |v| {
                    infermesh_drift::infer_column_type(v)
                }),
                reason: "not in the reference (--shared-columns)".into(),
            });
        }
        Ok((report, registered))
    }

    /// The `--embeddings` sets, their columns checked against the current table.
    fn embedding_columns(
        &self,
        current: &[(String, Values)],
    ) -> Result<Vec<(String, Vec<String>)>, DriftJobError> {
        let mut out = Vec::with_capacity(self.embeddings.len());
        for spec in &self.embeddings {
            let (name, cols) = spec.split_once('=').ok_or_else(|| {
                DriftJobError::Usage(format!("--embeddings {spec}: expected NAME=COL1,COL2,..."))
            })?;
            let mut columns = Vec::new();
            for c in cols.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if let Some(prefix) = c.strip_suffix('*') {
                    columns.extend(
                        current
                            .iter()
                            .map(|(n, _)| n)
                            .filter(|n| n.starts_with(prefix))
                            .cloned(),
                    );
                } else {
                    columns.push(c.to_string());
                }
            }
            if name.is_empty() || columns.is_empty() {
                return Err(DriftJobError::Usage(format!(
                    "--embeddings {spec}: a name and at least one column"
                )));
            }
            out.push((name.to_string(), columns));
        }
        Ok(out)
    }

    /// Each embedding's drift (Evidently's EmbeddingsDrift with the chosen method).
    fn embedding_drift(
        &self,
        reference: &[(String, Values)],
        current: &[(String, Values)],
        embeddings: Vec<(String, Vec<String>)>,
    ) -> Result<Vec<infermesh_drift::EmbeddingReport>, DriftJobError> {
        use infermesh_drift::embedding::{Distance, EmbeddingMethod, embedding_drift};
        let mut out = Vec::with_capacity(embeddings.len());
        for (name, columns) in embeddings {
            let rows = |table: &[(String, Values)],
                        side: &str|
             -> Result<Vec<f64>, DriftJobError> {
                let mut cols = Vec::with_capacity(columns.len());
                for c in &columns {
                    let v = table
                        .iter()
                        .find(|(n, _)| n == c)
                        .map(|(_, v)| v)
                        .ok_or_else(|| {
                            DriftJobError::Usage(format!(
                                "embedding '{name}': no column '{c}' in the {side}"
                            ))
                        })?;
                    let numbers: Vec<f64> = match v {
                        Values::Float(v) => v.clone(),
                        Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
                        other => {
                            return Err(DriftJobError::Usage(format!(
                                "embedding '{name}': column '{c}' of the {side} is {}, not numbers",
                                other.dtype()
                            )));
                        }
                    };
                    cols.push(numbers);
                }
                let n = cols.first().map_or(0, Vec::len);
                Ok((0..n)
                    .flat_map(|i| cols.iter().map(move |c| c[i]))
                    .collect())
            };
            let x = rows(reference, "reference")?;
            let y = rows(current, "current")?;
            let mut method = match &self.embeddings_method {
                Some(m) => EmbeddingMethod::named(m)?,
                None => EmbeddingMethod::default_for(x.len() / columns.len()),
            };
            if let EmbeddingMethod::Distance { dist, .. } = &mut method {
                *dist = Distance::parse(&self.embeddings_distance)?;
            }
            if let Some(t) = self.embeddings_threshold {
                method = method.with_threshold(t);
            }
            if let Some(b) = self.embeddings_bootstrap {
                method = method.with_bootstrap(b)?;
            }
            let bootstrap = match &method {
                EmbeddingMethod::Model { bootstrap, .. }
                | EmbeddingMethod::Mmd { bootstrap, .. }
                | EmbeddingMethod::Distance { bootstrap, .. } => bootstrap.unwrap_or(false),
                EmbeddingMethod::Ratio { .. } => false,
            };
            let drift = embedding_drift(&x, &y, columns.len(), Some(&method))?;
            out.push(infermesh_drift::EmbeddingReport {
                name,
                columns,
                threshold: method.threshold(),
                bootstrap,
                drift,
            });
        }
        Ok(out)
    }

    /// Runs it and renders the report (JSON with `--json`, else a table); or writes a
    /// profile.
    pub fn run(&self) -> Result<String, DriftJobError> {
        self.run_with_status().map(|(text, _)| text)
    }

    /// [`DriftArgs::run`], and whether `--fail-on-drift` should fail the run (the dataset
    /// drifted).
    pub fn run_with_status(&self) -> Result<(String, bool), DriftJobError> {
        if let Some(DriftCommand::Profile(args)) = &self.command {
            return args.run().map(|t| (t, false));
        }
        let (report, registered) = self.report_resolved()?;
        let failed = self.fail_on_drift
            && (report.dataset_drift || report.embeddings.iter().any(|e| e.drift.drift_detected));
        if let Some(path) = &self.html {
            let title = format!(
                "{} against {}",
                self.current.as_deref().unwrap_or(Path::new("")).display(),
                self.reference.as_deref().unwrap_or(Path::new("")).display()
            );
            std::fs::write(path, infermesh_drift::html::render(&report, &title)).map_err(|e| {
                DriftJobError::Profile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }
            })?;
        }
        let mut json = serde_json::to_string_pretty(&report.to_json())
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        json.push('\n');
        if let Some(r) = registered.as_ref().filter(|_| self.log_to_run) {
            let dir = tempfile::tempdir().map_err(|e| DriftJobError::Usage(e.to_string()))?;
            let path = dir.path().join("drift_report.json");
            std::fs::write(&path, &json).map_err(|e| DriftJobError::Usage(e.to_string()))?;
            let mut files = vec![path];
            files.extend(self.html.clone());
            crate::drift_registry::log_to_run(r, &report, &files)?;
        }
        if self.json {
            return Ok((json, failed));
        }
        Ok((render(&report), failed))
    }
}

fn render(report: &DriftReport) -> String {
    let mut out = format!(
        "dataset drift: {} ({} of {} columns drifted, share {:.3})\n",
        if report.dataset_drift { "yes" } else { "no" },
        report.number_of_drifted_columns,
        report.number_of_columns,
        report.share_of_drifted_columns
    );
    let width = report
        .columns
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&format!(
        "{:width$}  type  {:13}  {:>12}  {:>9}  drift\n",
        "column", "test", "score", "threshold"
    ));
    for (name, c) in &report.columns {
        out.push_str(&format!(
            "{name:width$}  {:4}  {:13}  {:>12.6}  {:>9}  {}\n",
            c.column_type.name(),
            c.stattest.name(),
            c.drift_score,
            c.threshold,
            if c.drift_detected { "yes" } else { "no" }
        ));
    }
    for e in &report.embeddings {
        out.push_str(&format!(
            "embedding {} ({} columns): {} score {:.6}, {} {}, drift {}\n",
            e.name,
            e.columns.len(),
            e.drift.method_name,
            e.drift.drift_score,
            if e.bootstrap {
                "bootstrapped, threshold"
            } else {
                "threshold"
            },
            e.threshold,
            if e.drift.drift_detected { "yes" } else { "no" }
        ));
    }
    for s in &report.skipped {
        out.push_str(&format!("skipped {}: {}\n", s.column, s.reason));
    }
    out
}
