//! `infermesh register` and `infermesh promote`: add a model version directory to a registry
//! and point aliases (`challenger`, `champion`) at versions, in MLflow (with a tracking URI)
//! or in the local registry directory; promotion optionally gated on metrics
//! (`--require "pr_auc>=champion"`).

use std::path::PathBuf;

pub use infermesh_registry::PromoteError;
use infermesh_registry::mlflow::{KeyValue, Metric, MlflowOptions, RunStatus};
use infermesh_registry::{Candidate, Gate, LocalRegistry, MlflowClient, Promotion, Registry};

/// The exit status of `infermesh promote` when a gate does not hold (the alias did not
/// move), so a scheduler can tell "not better" from a failure.
pub const GATE_FAILED_EXIT: u8 = 3;

/// `infermesh promote NAME (--version V | --from ALIAS) [--alias champion] [--require GATE]...`
#[derive(Debug, Clone, clap::Args)]
pub struct PromoteArgs {
    /// Registered model name (e.g. fraud).
    pub name: String,
    /// The version to promote.
    #[arg(long, conflicts_with = "from", required_unless_present = "from")]
    pub version: Option<u64>,
    /// Promote the version this alias points at instead (e.g. challenger).
    #[arg(long)]
    pub from: Option<String>,
    /// The alias to move.
    #[arg(long, default_value = "champion")]
    pub alias: String,
    /// A gate that must hold, METRIC OP (ALIAS | NUMBER) with OP one of >=, >, <=, <:
    /// `pr_auc>=champion` compares with the version the alias points at (passes when there
    /// is none yet), `roc_auc>0.9` with a number. Repeatable; all must hold, or nothing moves
    /// and the command exits with status 3.
    #[arg(long = "require", value_name = "GATE")]
    pub require: Vec<String>,
    /// MLflow tracking URI (http://127.0.0.1:5000). Without it, the local registry is used.
    #[arg(long, visible_alias = "registry-uri", env = "INFERMESH_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// Local registry directory, used when there is no tracking URI.
    #[arg(long, env = "INFERMESH_REGISTRY", default_value = "run/registry")]
    pub registry: PathBuf,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `infermesh register NAME --dir DIR [--alias challenger]`
#[derive(Debug, Clone, clap::Args)]
pub struct RegisterArgs {
    /// Registered model name (created when missing).
    pub name: String,
    /// The model version directory to register (what `infermesh train` wrote).
    #[arg(long)]
    pub dir: PathBuf,
    /// Alias pointed at the new version (empty: none).
    #[arg(long, default_value = "challenger")]
    pub alias: String,
    /// MLflow tracking URI (http://127.0.0.1:5000). Without it, the local registry is used.
    #[arg(long, visible_alias = "registry-uri", env = "INFERMESH_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// MLflow experiment for the registration run, when the directory was not tracked.
    #[arg(long, default_value = "registrations")]
    pub experiment: String,
    /// Local registry directory, used when there is no tracking URI.
    #[arg(long, env = "INFERMESH_REGISTRY", default_value = "run/registry")]
    pub registry: PathBuf,
}

/// Where `infermesh train` records the MLflow run of a version directory it tracked (kept
/// beside the version, not uploaded with it).
pub const RUN_FILE: &str = "mlflow-run.json";

/// The metrics of a version directory's `card.json` (`metrics` object).
pub fn card_metrics(dir: &std::path::Path) -> Vec<(String, f64)> {
    std::fs::read(dir.join("card.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["metrics"].as_object().map(|m| {
                m.iter()
                    .filter_map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)))
                    .collect()
            })
        })
        .unwrap_or_default()
}

impl RegisterArgs {
    /// Registers; returns what to print.
    pub async fn run(&self) -> Result<String, PromoteError> {
        if !self.dir.is_dir() {
            return Err(PromoteError::NotFound(format!(
                "{} is not a directory",
                self.dir.display()
            )));
        }
        if !infermesh_registry::uri::valid_name(&self.name) {
            return Err(PromoteError::Invalid(format!(
                "bad model name '{}'",
                self.name
            )));
        }
        let version = match open_registry(self.tracking_uri.as_deref(), &self.registry)? {
            Registry::Local(r) => {
                let v = r.register(&self.name, &self.dir)?;
                let config = r.root().join(&self.name).join("config.toml");
                let own = self.dir.join("config.toml");
                if !config.exists() && own.is_file() {
                    std::fs::copy(&own, &config)
                        .map_err(|e| PromoteError::Invalid(format!("{}: {e}", config.display())))?;
                }
                if !self.alias.is_empty() {
                    r.set_alias(&self.name, &self.alias, v)?;
                }
                v
            }
            Registry::Mlflow(c) => {
                // The run that produced the directory, when `infermesh train` tracked it;
                // otherwise a registration run holding the files and the card's metrics.
                let tracked: Option<(String, String)> = std::fs::read(self.dir.join(RUN_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| {
                        Some((
                            v["run_id"].as_str()?.to_string(),
                            v["artifact_uri"].as_str()?.to_string(),
                        ))
                    });
                let (run_id, artifact_uri) = match tracked {
                    Some(t) => t,
                    None => {
                        let exp = c.ensure_experiment(&self.experiment).await?;
                        let run = c
                            .create_run(&exp, &format!("register-{}", self.name), &[], None)
                            .await?;
                        let id = run.info.run_id.clone();
                        let metrics: Vec<Metric> = card_metrics(&self.dir)
                            .into_iter()
                            .map(|(k, v)| Metric::now(k, v, 0))
                            .collect();
                        let tags = [KeyValue::new(
                            "infermesh.source_dir",
                            self.dir.display().to_string(),
                        )];
                        let done = async {
                            c.log_batch(&id, &metrics, &[], &tags).await?;
                            c.upload_dir(&run.info.artifact_uri, "model", &self.dir)
                                .await?;
                            Ok::<_, PromoteError>(())
                        }
                        .await;
                        let status = if done.is_ok() {
                            RunStatus::Finished
                        } else {
                            RunStatus::Failed
                        };
                        c.update_run(&id, status).await?;
                        done?;
                        (id, run.info.artifact_uri)
                    }
                };
                c.ensure_registered_model(&self.name).await?;
                let source = format!("{}/model", artifact_uri.trim_end_matches('/'));
                let mv = c
                    .create_model_version(&self.name, &source, Some(&run_id), &[], "")
                    .await?;
                let v = mv.number()?;
                c.wait_model_version_ready(&self.name, v, std::time::Duration::from_secs(60))
                    .await?;
                if !self.alias.is_empty() {
                    c.set_alias(&self.name, &self.alias, v).await?;
                }
                v
            }
        };
        Ok(format!(
            "{} version {version} registered{}\n",
            self.name,
            if self.alias.is_empty() {
                String::new()
            } else {
                format!(" as @{}", self.alias)
            }
        ))
    }
}

/// The registry a job uses: MLflow when a tracking URI is given, else the local directory.
pub fn open_registry(
    tracking_uri: Option<&str>,
    local: &std::path::Path,
) -> Result<Registry, PromoteError> {
    Ok(match tracking_uri.filter(|u| !u.is_empty()) {
        Some(uri) => Registry::Mlflow(MlflowClient::new(uri, MlflowOptions::from_env())?),
        None => Registry::Local(LocalRegistry::new(local)),
    })
}

impl PromoteArgs {
    /// Promotes; returns what to print.
    pub async fn run(&self) -> Result<String, PromoteError> {
        let gates = self
            .require
            .iter()
            .map(|g| g.parse::<Gate>())
            .collect::<Result<Vec<_>, _>>()?;
        let candidate = match (&self.version, &self.from) {
            (Some(v), _) => Candidate::Version(*v),
            (None, Some(a)) => Candidate::Alias(a.clone()),
            (None, None) => {
                return Err(PromoteError::Invalid(
                    "give --version V or --from ALIAS".into(),
                ));
            }
        };
        let reg = open_registry(self.tracking_uri.as_deref(), &self.registry)?;
        let p = reg
            .promote(&self.name, &self.alias, &candidate, &gates)
            .await?;
        Ok(if self.json {
            format!("{}\n", promotion_json(&p))
        } else {
            let mut s = format!(
                "{}@{} -> version {} (was {})\n",
                p.name,
                p.alias,
                p.version,
                p.previous.map_or("unset".into(), |v| v.to_string())
            );
            for c in &p.checks {
                s.push_str(&format!(
                    "  gate {}: candidate {} against {} (passed)\n",
                    c.gate,
                    c.candidate,
                    c.against.map_or("nothing yet".into(), |a| a.to_string())
                ));
            }
            s
        })
    }
}

fn promotion_json(p: &Promotion) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "alias": p.alias,
        "version": p.version,
        "previous": p.previous,
        "checks": p.checks.iter().map(|c| serde_json::json!({
            "gate": c.gate, "candidate": c.candidate, "against": c.against, "passed": c.passed,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PromoteArgs,
    }

    fn register(reg: &std::path::Path, pr_auc: f64) -> u64 {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("card.json"),
            serde_json::json!({"metrics": {"pr_auc": pr_auc}}).to_string(),
        )
        .unwrap();
        LocalRegistry::new(reg)
            .register("fraud", tmp.path())
            .unwrap()
    }

    #[tokio::test]
    async fn promotes_in_the_local_registry_with_a_gate() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = tmp.path().join("registry");
        register(&reg, 0.8);
        register(&reg, 0.7);
        let r = reg.to_str().unwrap();
        let run = |argv: &[&str]| {
            let mut full = vec!["promote"];
            full.extend_from_slice(argv);
            full.extend_from_slice(&["--registry", r]);
            Cli::try_parse_from(full).unwrap().args
        };
        let out = run(&["fraud", "--version", "1", "--require", "pr_auc>=champion"])
            .run()
            .await
            .unwrap();
        assert!(
            out.starts_with("fraud@champion -> version 1 (was unset)"),
            "{out}"
        );
        let e = run(&["fraud", "--version", "2", "--require", "pr_auc>=champion"])
            .run()
            .await
            .unwrap_err();
        assert!(matches!(e, PromoteError::GateFailed(_)), "{e}");
        let out = run(&["fraud", "--version", "2", "--alias", "challenger", "--json"])
            .run()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["version"], 2);
        let e = run(&["fraud", "--from", "challenger", "--require", "pr_auc>>1"])
            .run()
            .await
            .unwrap_err();
        assert!(matches!(e, PromoteError::Invalid(_)), "{e}");
        // --version and --from exclude each other; one is required.
        assert!(Cli::try_parse_from(["p", "fraud"]).is_err());
        assert!(Cli::try_parse_from(["p", "fraud", "--version", "1", "--from", "x"]).is_err());
    }

    #[tokio::test]
    async fn a_registry_that_is_down_is_a_clear_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let args = Cli::try_parse_from([
            "p",
            "fraud",
            "--version",
            "1",
            "--tracking-uri",
            &format!("http://127.0.0.1:{port}"),
        ])
        .unwrap()
        .args;
        let e = args.run().await.unwrap_err();
        assert!(e.to_string().contains("unreachable"), "{e}");
    }
}
