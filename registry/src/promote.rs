//! Promotion: pointing an alias (`champion`) at a version, optionally gated on metrics
//! (`pr_auc>=champion`, `roc_auc>0.9`), the same over MLflow and the local registry.
//!
//! A version's metrics are, in MLflow, the latest values of its run's metrics; in the local
//! registry, the `metrics` object of the version's `card.json` (what `infermesh train` writes).
//! A gate that compares with an alias which does not exist yet passes (the first champion).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::local::{LocalRegistry, LocalRegistryError};
use crate::mlflow::{MlflowClient, MlflowError};

/// Promotion failures.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// From MLflow.
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
    /// From the local registry.
    #[error(transparent)]
    Local(#[from] LocalRegistryError),
    /// A bad gate or argument.
    #[error("{0}")]
    Invalid(String),
    /// No such version or alias.
    #[error("{0}")]
    NotFound(String),
    /// A gate did not hold; the alias was left where it was.
    #[error("gate failed, alias not moved: {0}")]
    GateFailed(String),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Le => a <= b,
            Op::Lt => a < b,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        }
    }
}

/// What a metric is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    /// A number.
    Value(f64),
    /// The same metric of the version an alias points at.
    Alias(String),
}

/// `METRIC OP (NUMBER | ALIAS)`, e.g. `pr_auc>=champion`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// Metric name.
    pub metric: String,
    /// Comparison.
    pub op: Op,
    /// Right-hand side.
    pub rhs: Rhs,
}

impl FromStr for Gate {
    type Err = PromoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            PromoteError::Invalid(format!(
                "gate '{s}': expected METRIC>=ALIAS or METRIC>=NUMBER (operators >=, >, <=, <)"
            ))
        };
        let (at, op, len) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
            .iter()
            .find_map(|(t, op)| s.find(t).map(|i| (i, *op, t.len())))
            .ok_or_else(bad)?;
        let metric = s[..at].trim();
        let rhs = s[at + len..].trim();
        let name_ok = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        };
        if !name_ok(metric) || rhs.is_empty() {
            return Err(bad());
        }
        let rhs = match rhs.parse::<f64>() {
            Ok(v) if v.is_finite() => Rhs::Value(v),
            Ok(_) => return Err(bad()),
            Err(_) if crate::uri::valid_name(rhs) => Rhs::Alias(rhs.to_string()),
            Err(_) => return Err(bad()),
        };
        Ok(Gate {
            metric: metric.to_string(),
            op,
            rhs,
        })
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rhs {
            Rhs::Value(v) => write!(f, "{}{}{v}", self.metric, self.op.as_str()),
            Rhs::Alias(a) => write!(f, "{}{}{a}", self.metric, self.op.as_str()),
        }
    }
}

/// One gate's check.
#[derive(Debug, Clone, PartialEq)]
pub struct GateCheck {
    /// The gate.
    pub gate: String,
    /// The candidate's value.
    pub candidate: f64,
    /// What it was compared with (`None`: the alias does not exist yet).
    pub against: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

/// Which version to promote.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// A version number.
    Version(u64),
    /// The version another alias points at (`--from challenger`).
    Alias(String),
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    /// Model.
    pub name: String,
    /// Alias moved.
    pub alias: String,
    /// Version it now points at.
    pub version: u64,
    /// Version it pointed at before.
    pub previous: Option<u64>,
    /// The gates' checks.
    pub checks: Vec<GateCheck>,
}

/// A registry: MLflow or a directory.
#[derive(Debug, Clone)]
pub enum Registry {
    /// An MLflow tracking server.
    Mlflow(MlflowClient),
    /// A local registry directory.
    Local(LocalRegistry),
}

impl Registry {
    /// The version `alias` of `name` points at.
    pub async fn alias_version(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<u64>, PromoteError> {
        Ok(match self {
            Registry::Mlflow(c) => match c.get_by_alias(name, alias).await? {
                Some(mv) => Some(mv.number()?),
                None => None,
            },
            Registry::Local(r) => r.get_by_alias(name, alias)?,
        })
    }

    /// The metrics of a version.
    pub async fn version_metrics(
        &self,
        name: &str,
        version: u64,
    ) -> Result<BTreeMap<String, f64>, PromoteError> {
        match self {
            Registry::Mlflow(c) => {
                let mv = match c.get_model_version(name, version).await {
                    Err(e) if e.is_not_found() => {
                        return Err(PromoteError::NotFound(format!(
                            "model '{name}' has no version {version}"
                        )));
                    }
                    r => r?,
                };
                if mv.run_id.is_empty() {
                    return Ok(BTreeMap::new());
                }
                let run = c.get_run(&mv.run_id).await?;
                Ok(run
                    .data
                    .metrics
                    .into_iter()
                    .map(|m| (m.key, m.value))
                    .collect())
            }
            Registry::Local(r) => {
                if !r.versions(name)?.contains(&version) {
                    return Err(PromoteError::NotFound(format!(
                        "model '{name}' has no version {version}"
                    )));
                }
                let card = r.version_dir(name, version)?.join("card.json");
                let text = match std::fs::read(&card) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(BTreeMap::new());
                    }
                    Err(e) => {
                        return Err(PromoteError::Invalid(format!("{}: {e}", card.display())));
                    }
                };
                let v: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| PromoteError::Invalid(format!("{}: {e}", card.display())))?;
                Ok(v["metrics"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                            .collect()
                    })
                    .unwrap_or_default())
            }
        }
    }

    async fn point(&self, name: &str, alias: &str, version: u64) -> Result<(), PromoteError> {
        match self {
            Registry::Mlflow(c) => c.set_alias(name, alias, version).await?,
            Registry::Local(r) => {
                r.set_alias(name, alias, version)?;
            }
        }
        Ok(())
    }

    /// Points `alias` at `candidate` when every gate holds; otherwise leaves it and fails
    /// with [`PromoteError::GateFailed`] listing the checks.
    pub async fn promote(
        &self,
        name: &str,
        alias: &str,
        candidate: &Candidate,
        gates: &[Gate],
    ) -> Result<Promotion, PromoteError> {
        if !crate::uri::valid_name(alias) {
            return Err(PromoteError::Invalid(format!("bad alias '{alias}'")));
        }
        let version = match candidate {
            Candidate::Version(v) => *v,
            Candidate::Alias(from) => self.alias_version(name, from).await?.ok_or_else(|| {
                PromoteError::NotFound(format!("model '{name}' has no alias '{from}'"))
            })?,
        };
        let metrics = self.version_metrics(name, version).await?;
        let previous = self.alias_version(name, alias).await?;
        let mut checks = Vec::new();
        for g in gates {
            let candidate = *metrics.get(&g.metric).ok_or_else(|| {
                PromoteError::GateFailed(format!(
                    "{name} version {version} has no metric '{}'",
                    g.metric
                ))
            })?;
            let against = match &g.rhs {
                Rhs::Value(v) => Some(*v),
                Rhs::Alias(a) => match self.alias_version(name, a).await? {
                    None => None,
                    Some(v) => Some(
                        *self
                            .version_metrics(name, v)
                            .await?
                            .get(&g.metric)
                            .ok_or_else(|| {
                                PromoteError::GateFailed(format!(
                                    "{name}@{a} (version {v}) has no metric '{}'",
                                    g.metric
                                ))
                            })?,
                    ),
                },
            };
            let passed = against.is_none_or(|b| g.op.holds(candidate, b));
            checks.push(GateCheck {
                gate: g.to_string(),
                candidate,
                against,
                passed,
            });
        }
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!(
                    "{} does not hold (candidate {}, against {})",
                    c.gate,
                    c.candidate,
                    c.against.map_or("-".into(), |a| a.to_string())
                )
            })
            .collect();
        if !failed.is_empty() {
            return Err(PromoteError::GateFailed(failed.join("; ")));
        }
        self.point(name, alias, version).await?;
        Ok(Promotion {
            name: name.to_string(),
            alias: alias.to_string(),
            version,
            previous,
            checks,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_and_print() {
        let g: Gate = "pr_auc>=champion".parse().unwrap();
        assert_eq!(g.metric, "pr_auc");
        assert_eq!(g.op, Op::Ge);
        assert_eq!(g.rhs, Rhs::Alias("champion".into()));
        assert_eq!(g.to_string(), "pr_auc>=champion");
        let g: Gate = " roc_auc > 0.9 ".parse().unwrap();
        assert_eq!((g.op, g.rhs), (Op::Gt, Rhs::Value(0.9)));
        let g: Gate = "latency_ms<=12.5".parse().unwrap();
        assert_eq!(g.op, Op::Le);
        for bad in [
            "pr_auc",
            ">=champion",
            "pr_auc>=",
            "pr auc>=1",
            "a>=NaN",
            "a>=b c",
        ] {
            assert!(bad.parse::<Gate>().is_err(), "{bad}");
        }
    }

    fn version(reg: &LocalRegistry, pr_auc: f64) -> u64 {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("model.txt"), "m").unwrap();
        std::fs::write(
            tmp.path().join("card.json"),
            serde_json::json!({"metrics": {"pr_auc": pr_auc}}).to_string(),
        )
        .unwrap();
        reg.register("fraud", tmp.path()).unwrap()
    }

    #[tokio::test]
    async fn local_promotion_is_gated_on_the_champion() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalRegistry::new(tmp.path());
        let reg = Registry::Local(local.clone());
        let gate: Vec<Gate> = vec!["pr_auc>=champion".parse().unwrap()];
        let v1 = version(&local, 0.70);
        // No champion yet: the gate passes.
        let p = reg
            .promote("fraud", "champion", &Candidate::Version(v1), &gate)
            .await
            .unwrap();
        assert_eq!((p.version, p.previous), (1, None));
        assert_eq!(p.checks[0].against, None);
        // A worse challenger is refused and the champion stays.
        let v2 = version(&local, 0.65);
        local.set_alias("fraud", "challenger", v2).unwrap();
        let from = Candidate::Alias("challenger".into());
        let e = reg
            .promote("fraud", "champion", &from, &gate)
            .await
            .unwrap_err();
        assert!(matches!(e, PromoteError::GateFailed(_)), "{e}");
        assert_eq!(
            reg.alias_version("fraud", "champion").await.unwrap(),
            Some(1)
        );
        // A better one moves it.
        let v3 = version(&local, 0.80);
        local.set_alias("fraud", "challenger", v3).unwrap();
        let p = reg
            .promote("fraud", "champion", &from, &gate)
            .await
            .unwrap();
        assert_eq!((p.version, p.previous), (3, Some(1)));
        assert_eq!(p.checks[0].against, Some(0.70));
        // Missing versions, aliases and metrics are clear errors.
        let e = reg
            .promote("fraud", "champion", &Candidate::Version(9), &[])
            .await
            .unwrap_err();
        assert!(matches!(e, PromoteError::NotFound(_)), "{e}");
        let e = reg
            .promote("fraud", "champion", &Candidate::Alias("nope".into()), &[])
            .await
            .unwrap_err();
        assert!(matches!(e, PromoteError::NotFound(_)), "{e}");
        let e = reg
            .promote(
                "fraud",
                "champion",
                &Candidate::Version(3),
                &["recall>0.5".parse().unwrap()],
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("recall"), "{e}");
    }
}
