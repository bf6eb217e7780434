//! `infermesh drift` against a registered model version: `--reference models:/NAME@ALIAS`
//! (or `models:/NAME/VERSION`) resolves the version in MLflow (`--tracking-uri`) or the
//! local registry (`--registry`), brings its files into the registry cache once (as
//! `infermesh serve` does) and compares with its `drift_reference.parquet`; `{version}` in
//! `--current` becomes the resolved version (the server's inference log is per version:
//! `<log-dir>/<model>/{version}/<day>`). `--log-to-run` then logs the report on the run that
//! made the version in MLflow: metrics `drift_share`, `drift_columns_drifted`,
//! `drift_dataset_drift` (0/1) and `drift_score.<column>`, and the JSON (and HTML) report
//! under `drift/<UTC day>/` in its artifacts.

use std::path::{Path, PathBuf};

use infermesh_drift::DriftReport;
use infermesh_registry::mlflow::{Metric, MlflowOptions};
use infermesh_registry::promote::Registry;
use infermesh_registry::sync::{ModelSync, RegistrySource};
use infermesh_registry::{LocalRegistry, MlflowClient};

use crate::drift::DriftJobError;

/// A registered version the reference came from.
#[derive(Debug, Clone)]
pub struct ResolvedReference {
    /// The registry.
    pub registry: Registry,
    /// Registered model name.
    pub name: String,
    /// The version the URI resolved to.
    pub version: u64,
    /// Its `drift_reference.parquet`, in the registry cache.
    pub profile: PathBuf,
}

fn err(e: impl std::fmt::Display) -> DriftJobError {
    DriftJobError::Usage(e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, DriftJobError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("cannot start a runtime: {e}")))
}

/// Resolves `uri` (`models:/NAME@ALIAS` or `models:/NAME/VERSION`) and fetches the version
/// into `cache`.
pub fn resolve(
    uri: &str,
    tracking_uri: Option<&str>,
    registry: &Path,
    cache: &Path,
) -> Result<ResolvedReference, DriftJobError> {
    let src: RegistrySource = uri.parse().map_err(err)?;
    let registry = match tracking_uri.filter(|u| !u.is_empty()) {
        Some(u) => Registry::Mlflow(MlflowClient::new(u, MlflowOptions::from_env()).map_err(err)?),
        None => Registry::Local(LocalRegistry::new(registry)),
    };
    // Only the cache is written: the sync's repository side is never used here.
    let sync = ModelSync::new(registry.clone(), cache, cache.join("unused-repository"));
    let rt = runtime()?;
    let (version, dir) = rt.block_on(async {
        let version = sync.resolve(&src).await.map_err(err)?;
        let dir = sync.fetch(&src, version).await.map_err(err)?;
        Ok::<_, DriftJobError>((version, dir))
    })?;
    let profile = dir.join(infermesh_drift::file::REFERENCE_FILE);
    if !profile.is_file() {
        return Err(err(format!(
            "{uri} (version {version}) has no {}: train it with `infermesh train`, which writes one",
            infermesh_drift::file::REFERENCE_FILE
        )));
    }
    Ok(ResolvedReference {
        registry,
        name: src.uri.name,
        version,
        profile,
    })
}

/// An MLflow metric key for a column: characters MLflow refuses become `_`.
fn metric_key(column: &str) -> String {
    let clean: String = column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-. /".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("drift_score.{clean}")
}

/// Logs `report` (and the files in `files`: the JSON and HTML reports) on the MLflow run of
/// the resolved version.
pub fn log_to_run(
    reference: &ResolvedReference,
    report: &DriftReport,
    files: &[PathBuf],
) -> Result<String, DriftJobError> {
    let Registry::Mlflow(client) = &reference.registry else {
        return Err(err(
            "--log-to-run needs an MLflow registry (--tracking-uri): a local registry has no runs",
        ));
    };
    let rt = runtime()?;
    rt.block_on(async {
        let mv = client
            .get_model_version(&reference.name, reference.version)
            .await
            .map_err(err)?;
        if mv.run_id.is_empty() {
            return Err(err(format!(
                "{} version {} is not linked to a run",
                reference.name, reference.version
            )));
        }
        let run = client.get_run(&mv.run_id).await.map_err(err)?;
        let mut metrics = vec![
            Metric::now("drift_share", report.share_of_drifted_columns, 0),
            Metric::now(
                "drift_columns_drifted",
                report.number_of_drifted_columns as f64,
                0,
            ),
            Metric::now(
                "drift_dataset_drift",
                f64::from(u8::from(report.dataset_drift)),
                0,
            ),
        ];
        for (name, c) in &report.columns {
            metrics.push(Metric::now(metric_key(name), c.drift_score, 0));
        }
        // MLflow takes at most 1,000 metrics per batch.
        for chunk in metrics.chunks(1000) {
            client
                .log_batch(&mv.run_id, chunk, &[], &[])
                .await
                .map_err(err)?;
        }
        let day = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let dest = format!("drift/{}", &day[..10]);
        for f in files {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| err(format!("{}: no file name", f.display())))?;
            client
                .upload_file(&run.info.artifact_uri, &format!("{dest}/{name}"), f)
                .await
                .map_err(err)?;
        }
        Ok(mv.run_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_become_mlflow_metric_keys() {
        assert_eq!(metric_key("amount"), "drift_score.amount");
        assert_eq!(metric_key("a:b(c)"), "drift_score.a_b_c_");
    }
}
