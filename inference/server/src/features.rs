//! Model inputs filled from the feature store: when the server has one (`--features-registry`
//! and `--features-redis-url`, or the store `infermesh up` shares in process) and a model's `[feature_store]` section maps its
//! inputs to Feast `view:feature` references, a typed request that leaves those inputs out has
//! them read for its entities (`user_id`, `device_id`, `entities`), within `--feature-timeout-ms`.
//!
//! A value the store has (PRESENT) fills the input; a missing entity, a null, or a value older
//! than its view's ttl leaves the input missing, which is the model's missing-value path. When
//! the store is down or slow past the deadline, every filled input stays missing, the response
//! says `features_degraded`, and `infermesh_features_degraded_total{model,reason}` counts it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_common::ServiceError;
use infermesh_common::metrics_names as m;
use infermesh_features::FeatureError;
use infermesh_features::online::{OnlineRequest, Wanted, get_online_features};
use infermesh_features::registry::FeatureRegistry;
use infermesh_features::serving::FieldStatus;
use infermesh_features::store::{OnlineStore, RedisStore};
use infermesh_features::types::Value;
use infermesh_features::types::value::Val;
use infermesh_features::value::from_text;

/// Default deadline for store reads on the scoring path, in milliseconds.
pub const DEFAULT_FEATURE_TIMEOUT_MS: f64 = 5.0;

/// The flags of the feature store the server reads model inputs from.
#[derive(Debug, Clone, clap::Args)]
pub struct FeatureStoreArgs {
    /// Feature definitions (Feast's `registry.db` or infermesh's TOML). Without it, models
    /// take their inputs from requests only.
    #[arg(long, env = "INFERMESH_FEATURES_REGISTRY")]
    pub features_registry: Option<PathBuf>,
    /// The Feast project (needed when the registry holds several).
    #[arg(long, env = "INFERMESH_FEATURES_PROJECT")]
    pub features_project: Option<String>,
    /// The online store's Redis (Feast's layout), where `feast materialize`, `infermesh
    /// features materialize` and the feature server's pushes write; needed with
    /// --features-registry.
    #[arg(long, env = "INFERMESH_FEATURES_REDIS_URL")]
    pub features_redis_url: Option<String>,
    /// Deadline for the store reads of one request, in milliseconds; past it the request is
    /// scored without the store's values (`features_degraded`).
    #[arg(long, env = "INFERMESH_FEATURE_TIMEOUT_MS", default_value_t = DEFAULT_FEATURE_TIMEOUT_MS)]
    pub feature_timeout_ms: f64,
}

impl Default for FeatureStoreArgs {
    fn default() -> Self {
        Self {
            features_registry: None,
            features_project: None,
            features_redis_url: None,
            feature_timeout_ms: DEFAULT_FEATURE_TIMEOUT_MS,
        }
    }
}

impl FeatureStoreArgs {
    /// Loads the registry and opens the store (Redis connects lazily); `None` without a
    /// registry. Must run inside a Tokio runtime.
    pub fn open(&self) -> Result<Option<Arc<FeatureSource>>, String> {
        let Some(path) = &self.features_registry else {
            return Ok(None);
        };
        if !self.feature_timeout_ms.is_finite() || self.feature_timeout_ms <= 0.0 {
            return Err(format!(
                "--feature-timeout-ms must be > 0, got {}",
                self.feature_timeout_ms
            ));
        }
        let timeout = Duration::from_secs_f64(self.feature_timeout_ms / 1000.0);
        let registry = FeatureRegistry::load(path, self.features_project.as_deref())
            .map_err(|e| e.to_string())?;
        // A store in this process's memory would hold nothing: no writer reaches it (only
        // `infermesh up` shares one in process, through `ServeConfig::feature_source`).
        let Some(url) = &self.features_redis_url else {
            return Err(
                "--features-registry needs --features-redis-url (the online store the models read)"
                    .into(),
            );
        };
        let store: Arc<dyn OnlineStore> = Arc::new(
            RedisStore::new(url, timeout.max(Duration::from_millis(1)), None)
                .map_err(|e| format!("--features-redis-url: {e}"))?,
        );
        Ok(Some(Arc::new(FeatureSource::new(
            Arc::new(registry),
            store,
            timeout,
        ))))
    }
}

/// A registry and store the server fills model inputs from.
#[derive(Debug)]
pub struct FeatureSource {
    registry: Arc<FeatureRegistry>,
    store: Arc<dyn OnlineStore>,
    timeout: Duration,
}

/// One request's side of a fill.
#[derive(Debug, Clone, Default)]
pub struct FillRequest<'a> {
    /// Its entities by join key (or entity name).
    pub entities: Vec<(&'a str, &'a str)>,
    /// The inputs it already carries.
    pub present: Vec<&'a str>,
}

/// What a fill found: per request, inputs and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filled {
    /// Per request, in order: the inputs the store had a current value for.
    pub values: Vec<Vec<(String, Value)>>,
    /// The store failed or missed the deadline: nothing was filled.
    pub degraded: bool,
}

impl FeatureSource {
    /// A source over `registry` and `store`, with `timeout` per request.
    pub fn new(
        registry: Arc<FeatureRegistry>,
        store: Arc<dyn OnlineStore>,
        timeout: Duration,
    ) -> Self {
        Self {
            registry,
            store,
            timeout,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn OnlineStore> {
        &self.store
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<FeatureRegistry> {
        &self.registry
    }

    /// Reads the inputs `mapping` (input -> `view:feature`) names that each request lacks.
    /// Requests are grouped by the join keys they give, one store read per group, all
    /// within the deadline. An entity value of the wrong type is INVALID_ARGUMENT.
    pub async fn fill(
        &self,
        model: &str,
        mapping: &BTreeMap<String, String>,
        requests: &[FillRequest<'_>],
    ) -> Result<Filled, ServiceError> {
        let mut out = Filled {
            values: vec![Vec::new(); requests.len()],
            degraded: false,
        };
        if mapping.is_empty() {
            return Ok(out);
        }
        let reg = &self.registry;
        // Per mapped input: its view's join keys (inputs of views the registry lacks are
        // a config error, answered as such).
        let mut inputs: Vec<(&str, &str, Vec<&str>)> = Vec::new();
        for (input, reference) in mapping {
            let view = reference.split_once(':').map_or("", |(v, _)| v);
            let (_, v) = reg.view(view).ok_or_else(|| {
                ServiceError::invalid(format!(
                    "model '{model}': [feature_store] {input} = {reference:?} names a view the feature registry lacks"
                ))
            })?;
            inputs.push((
                input,
                reference,
                v.join_keys.iter().map(|k| k.name.as_str()).collect(),
            ));
        }
        // Requests grouped by the join keys they give.
        let mut groups: BTreeMap<BTreeSet<&str>, Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            let keys: BTreeSet<&str> = r
                .entities
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| reg.join_key_of(k))
                .collect();
            groups.entry(keys).or_default().push(i);
        }
        let mut calls = Vec::new();
        for (keys, members) in &groups {
            let wanted: Vec<&(&str, &str, Vec<&str>)> = inputs
                .iter()
                .filter(|(input, _, jks)| {
                    jks.iter().all(|k| keys.contains(k))
                        && members
                            .iter()
                            .any(|&i| !requests[i].present.contains(input))
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let mut refs: Vec<String> = wanted.iter().map(|(_, r, _)| (*r).to_owned()).collect();
            refs.sort();
            refs.dedup();
            let needed: BTreeSet<&str> = wanted
                .iter()
                .flat_map(|(_, _, k)| k.iter().copied())
                .collect();
            let mut entities = Vec::new();
            for key in needed {
                let ty = reg.join_key_type(key);
                let mut column = Vec::with_capacity(members.len());
                for &i in members {
                    let raw = requests[i]
                        .entities
                        .iter()
                        .find(|(k, v)| reg.join_key_of(k) == key && !v.is_empty())
                        .map_or("", |(_, v)| *v);
                    let v = match ty {
                        infermesh_features::types::value_type::Enum::Invalid => {
                            from_text(raw, infermesh_features::types::value_type::Enum::String)
                        }
                        _ => from_text(raw, ty),
                    }
                    .map_err(|e| ServiceError::invalid(format!("entity {key}: {e}")))?;
                    column.push(v);
                }
                entities.push((key.to_owned(), column));
            }
            calls.push((
                members.clone(),
                wanted,
                OnlineRequest {
                    wanted: Wanted::Refs(refs),
                    entities,
                    full_feature_names: true,
                },
            ));
        }
        if calls.is_empty() {
            return Ok(out);
        }
        let started = Instant::now();
        let reads = futures::future::join_all(
            calls
                .iter()
                .map(|(_, _, req)| get_online_features(reg, self.store.as_ref(), req)),
        );
        let results = match tokio::time::timeout(self.timeout, reads).await {
            Ok(r) => r,
            Err(_) => {
                degrade(model, "timeout");
                out.degraded = true;
                return Ok(out);
            }
        };
        metrics::histogram!(m::FEATURE_FILL_SECONDS, "model" => model.to_owned())
            .record(started.elapsed().as_secs_f64());
        // The model's degraded counters exist (at 0) once it has read the store.
        for reason in ["timeout", "unavailable"] {
            metrics::counter!(m::FEATURES_DEGRADED_TOTAL, "model" => model.to_owned(), "reason" => reason)
                .increment(0);
        }
        for ((members, wanted, _), res) in calls.iter().zip(results) {
            let resp = match res {
                Ok(r) => r,
                // Whatever the store did (down, full, a value it cannot decode) degrades the
                // request to the missing-value path; a request or mapping error does not.
                Err(
                    FeatureError::Store(_)
                    | FeatureError::Write(_)
                    | FeatureError::Unavailable(_)
                    | FeatureError::Overloaded(_),
                ) => {
                    degrade(model, "unavailable");
                    out.degraded = true;
                    out.values.iter_mut().for_each(Vec::clear);
                    return Ok(out);
                }
                Err(e) => return Err(ServiceError::new(e.kind(), e.to_string())),
            };
            let names = resp
                .metadata
                .and_then(|m| m.feature_names)
                .map(|f| f.val)
                .unwrap_or_default();
            let column: HashMap<&str, usize> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i))
                .collect();
            for (input, reference, _) in wanted {
                let full = reference.replacen(':', "__", 1);
                let Some(&c) = column.get(full.as_str()) else {
                    continue;
                };
                let col = &resp.results[c];
                for (row, &i) in members.iter().enumerate() {
                    if requests[i].present.contains(input) {
                        continue;
                    }
                    if col.statuses.get(row) != Some(&(FieldStatus::Present as i32)) {
                        continue;
                    }
                    if let Some(v) = col.values.get(row).filter(|v| v.val.is_some()) {
                        out.values[i].push(((*input).to_owned(), v.clone()));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn degrade(model: &str, reason: &'static str) {
    tracing::warn!(
        model,
        reason,
        "feature store read failed; scoring without its values"
    );
    metrics::counter!(m::FEATURES_DEGRADED_TOTAL, "model" => model.to_owned(), "reason" => reason)
        .increment(1);
}

/// A stored value as a numeric model input (`None`: not a number).
pub fn number(v: &Value) -> Option<f64> {
    match v.val.as_ref()? {
        Val::DoubleVal(x) => Some(*x),
        Val::FloatVal(x) => Some(f64::from(*x)),
        Val::Int64Val(x) | Val::UnixTimestampVal(x) => Some(*x as f64),
        Val::Int32Val(x) => Some(f64::from(*x)),
        Val::BoolVal(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registry_needs_a_store_and_a_positive_deadline() {
        let args = |redis: Option<&str>, ms: f64| FeatureStoreArgs {
            features_registry: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../features/repo/features.toml"
            ))),
            features_redis_url: redis.map(str::to_owned),
            feature_timeout_ms: ms,
            ..FeatureStoreArgs::default()
        };
        assert!(
            FeatureStoreArgs::default()
                .open()
                .is_ok_and(|s| s.is_none())
        );
        let e = args(None, 5.0).open().err().unwrap_or_default();
        assert!(e.contains("--features-redis-url"), "{e}");
        let e = args(Some("redis://127.0.0.1:1"), 0.0)
            .open()
            .err()
            .unwrap_or_default();
        assert!(e.contains("--feature-timeout-ms"), "{e}");
        // Redis connects lazily: a store that is down still opens (and degrades requests).
        assert!(
            args(Some("redis://127.0.0.1:1"), 5.0)
                .open()
                .is_ok_and(|s| s.is_some())
        );
    }
}
