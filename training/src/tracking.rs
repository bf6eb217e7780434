//! What every training job does with MLflow once its version directory is written: log the
//! run's parameters and metrics, upload the directory as the run's `model` artifact, register
//! it (a model version whose `source` is `<artifact_uri>/model`, linked to the run), point an
//! alias at it, close the run, and leave `mlflow-run.json` in the directory (so `infermesh
//! register` and `promote` find the run).

use std::path::Path;

use infermesh_registry::MlflowClient;
use infermesh_registry::mlflow::{KeyValue, Metric, MlflowError, MlflowOptions, Run, RunStatus};
use serde_json::json;

/// A run's outcome: its id, artifact URI and the registered version, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// MLflow run id.
    pub run_id: String,
    /// The run's artifact URI.
    pub artifact_uri: String,
    /// Model name and version registered.
    pub registered: Option<(String, u64)>,
}

/// A client and the id of `experiment` (created when missing), on a runtime of its own, so a
/// synchronous job can talk to MLflow; a server that is down fails here, before training.
pub fn connect(
    uri: &str,
    experiment: &str,
) -> Result<(tokio::runtime::Runtime, MlflowClient, String), MlflowError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MlflowError::Invalid(format!("cannot start a runtime: {e}")))?;
    let client = MlflowClient::new(uri, MlflowOptions::from_env())?;
    let exp = rt.block_on(client.ensure_experiment(experiment))?;
    Ok((rt, client, exp))
}

/// Logs `params` and `metrics` on `run`, uploads `out` as its `model` artifact and, with
/// `register`, registers it and sets `alias`; the run ends FINISHED, or FAILED when a step
/// failed. Writes `mlflow-run.json` into `out`.
pub async fn log_version(
    client: &MlflowClient,
    run: &Run,
    params: &[KeyValue],
    metrics: &[Metric],
    out: &Path,
    register: Option<&str>,
    alias: &str,
) -> Result<Tracked, MlflowError> {
    let id = run.info.run_id.clone();
    let result = async {
        client.log_batch(&id, metrics, params, &[]).await?;
        client
            .upload_dir(&run.info.artifact_uri, "model", out)
            .await?;
        match register {
            Some(name) => {
                client.ensure_registered_model(name).await?;
                let source = format!("{}/model", run.info.artifact_uri.trim_end_matches('/'));
                let mv = client
                    .create_model_version(name, &source, Some(&id), &[], "")
                    .await?;
                let v = mv.number()?;
                client
                    .wait_model_version_ready(name, v, std::time::Duration::from_secs(60))
                    .await?;
                client.set_alias(name, alias, v).await?;
                Ok(Some((name.to_string(), v)))
            }
            None => Ok(None),
        }
    }
    .await;
    let status = if result.is_ok() {
        RunStatus::Finished
    } else {
        RunStatus::Failed
    };
    client.update_run(&id, status).await?;
    let registered = result?;
    let record =
        json!({"tracking_uri": client.uri(), "run_id": id, "artifact_uri": run.info.artifact_uri});
    let run_file = out.join(crate::promote::RUN_FILE);
    std::fs::write(&run_file, record.to_string()).map_err(|source| MlflowError::Io {
        path: run_file.clone(),
        source,
    })?;
    Ok(Tracked {
        run_id: id,
        artifact_uri: run.info.artifact_uri.clone(),
        registered,
    })
}

/// The numbers of a card's `metrics` object as MLflow metrics (step 0).
pub fn card_metrics(card: &serde_json::Value) -> Vec<Metric> {
    card["metrics"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_f64().map(|x| Metric::now(k.clone(), x, 0)))
        .collect()
}
