//! The recommender family behind the serving seam ([`infermesh_inference::Servable`]):
//! platform `recommender` (`recs.json` + `model.safetensors`, written by `infermesh train
//! recs`), BYTES user ids in and the k best items out; [`RecsServable`] is what the typed
//! Recommender API calls.
//!
//! A request is one exact top-k over the catalogue: microseconds for thousands of items, so
//! it runs on the async worker; catalogues above [`INLINE_MAX_WORK`] multiply-adds go to the
//! blocking pool. There is no batcher (one request is one matrix-vector product already);
//! admission is a bounded count of requests computing at once, refused past it.
//!
//! Config keys (`config.toml`):
//!
//! ```toml
//! [recommender]
//! max_k = 1000                     # largest k a request may ask for (<= 100,000)
//! max_in_flight = 1024             # requests computing at once (<= 1,048,576)
//! unknown_users = "popularity"     # or "not_found"
//! content_weight = 0.3             # blend overrides (default: the model's recs.json)
//! [limits]                         # RecsLoadLimits: max_file_bytes
//! ```

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use infermesh_common::{ServiceError, metrics_names as m};
use infermesh_inference::tensor::text_input;
use infermesh_inference::{
    BatchUnit, Batching, BoxFuture, Description, Family, InputTensor, InputValues, LoadContext,
    OutputTensor, Servable, TensorData, TensorMeta, V2Request, family_limits, family_parameters,
};
use infermesh_registry::{ModelConfig, check_max};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::store::RecsLoadLimits;
use crate::{
    Blend, Query, RecentMode, Recommender, RecsArtifact, RecsError, ServeOptions, Strategy,
    UnknownUser,
};

/// The recommender family: one registration line in the serving binary's table.
pub static FAMILY: Family = Family {
    name: "recs",
    platforms: &["recommender"],
    load,
    grpc: None,
    file_descriptor_set: None,
};

fn load(cx: &LoadContext<'_>) -> Result<Arc<dyn Servable>, String> {
    Ok(Arc::new(RecsServable::load(cx.config, cx.dir)?))
}

/// What the recommender does with a user it does not know who brings no known features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownUsers {
    /// The most popular items within the request's filter (cold start).
    #[default]
    Popularity,
    /// NOT_FOUND / 404.
    NotFound,
}

/// Serving options of a `recommender` model (`[recommender]` in `config.toml`); the blend
/// weights left unset keep the values the model was trained with (`recs.json`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommenderOptions {
    /// Largest `k` a request may ask for. Default 1000.
    #[serde(default = "default_max_k")]
    pub max_k: usize,
    /// Requests computing at once; past it requests are refused (RESOURCE_EXHAUSTED).
    /// Default 1024.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Unknown users. Default popularity.
    #[serde(default)]
    pub unknown_users: UnknownUsers,
    /// Weight of the collaborative score.
    pub cf_weight: Option<f32>,
    /// Weight of the content (TF-IDF) score.
    pub content_weight: Option<f32>,
    /// Weight of a recent item in the content profile.
    pub recent_weight: Option<f32>,
    /// Boost of recent items, in standard deviations of the user's scores.
    pub recent_boost: Option<f32>,
}

fn default_max_k() -> usize {
    1000
}

fn default_max_in_flight() -> usize {
    1024
}

impl Default for RecommenderOptions {
    fn default() -> Self {
        Self {
            max_k: default_max_k(),
            max_in_flight: default_max_in_flight(),
            unknown_users: UnknownUsers::Popularity,
            cf_weight: None,
            content_weight: None,
            recent_weight: None,
            recent_boost: None,
        }
    }
}

/// Largest `max_k`: 100,000 items per answer.
pub const MAX_K_LIMIT: usize = 100_000;
/// Largest `max_in_flight`: 1,048,576 requests.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecsKeys {
    recommender: Option<RecommenderOptions>,
}

impl RecommenderOptions {
    /// Reads the `[recommender]` section of `config` (defaults when absent), refusing
    /// unknown keys and values out of range.
    pub fn parse(config: &ModelConfig) -> Result<Self, String> {
        let keys: RecsKeys = family_parameters(config)?;
        let r = keys.recommender.unwrap_or_default();
        check_max("recommender max_k", r.max_k, MAX_K_LIMIT)?;
        check_max(
            "recommender max_in_flight",
            r.max_in_flight,
            MAX_IN_FLIGHT_LIMIT,
        )?;
        if r.max_k == 0 || r.max_in_flight == 0 {
            return Err("recommender max_k and max_in_flight must be at least 1".into());
        }
        let weights = [
            r.cf_weight,
            r.content_weight,
            r.recent_weight,
            r.recent_boost,
        ];
        if weights.iter().flatten().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("recommender weights must be finite and >= 0".into());
        }
        Ok(r)
    }
}

/// Default `k` of a V2 recommender request without a `k` input.
pub const DEFAULT_RECS_K: usize = 10;

/// Largest `items x components` scored on the async worker itself.
pub const INLINE_MAX_WORK: usize = 2_000_000;

/// One recommendation request, with owned strings.
#[derive(Debug, Clone, Default)]
pub struct RecsRequest {
    /// The user.
    pub user_id: String,
    /// Items wanted.
    pub k: usize,
    /// Leave out the user's training items.
    pub exclude_seen: bool,
    /// Only these items (empty: all).
    pub include: Vec<String>,
    /// Never these items.
    pub exclude: Vec<String>,
    /// Only items with all these features.
    pub item_features: Vec<String>,
    /// Recently viewed items, most recent first.
    pub recent: Vec<String>,
    /// What recent items do.
    pub recent_mode: RecentMode,
    /// Features of a user without history.
    pub user_features: Vec<String>,
}

/// The answer: item ids with scores, best first, and how they were chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct RecsAnswer {
    /// `(item id, score)`, best first.
    pub items: Vec<(String, f32)>,
    /// How they were chosen.
    pub strategy: Strategy,
}

/// A recommender version ready to serve.
#[derive(Debug)]
pub struct RecsServable {
    rec: Arc<Recommender>,
    admission: Arc<Semaphore>,
    model: String,
    /// Set when the model panicked: it refuses work until reloaded.
    failed: Arc<OnceLock<String>>,
    options: RecommenderOptions,
    input_name: String,
    output_name: String,
    max_users: usize,
    description: Description,
}

impl RecsServable {
    /// Loads the version in `dir` with the options of `config`.
    pub fn load(config: &ModelConfig, dir: &Path) -> Result<Self, String> {
        let limits: RecsLoadLimits = family_limits(config)?;
        let art = RecsArtifact::load_with_limits(dir, &limits).map_err(|e| e.to_string())?;
        Self::new(config, art)
    }

    /// Wraps a loaded artifact (loaders and tests).
    pub fn new(config: &ModelConfig, art: RecsArtifact) -> Result<Self, String> {
        let options = RecommenderOptions::parse(config)?;
        let trained = art.blend;
        let rec =
            Recommender::new(art, serve_options(&options, trained)).map_err(|e| e.to_string())?;
        let input_name = config.input_name_or("user_id").to_string();
        let output_name = config.output_name_or("item_id").to_string();
        let o = rec.options();
        let description = Description {
            backend: "infermesh-recs".into(),
            format: "recommender".into(),
            inputs: vec![
                TensorMeta::new(&input_name, "BYTES", vec![-1]),
                TensorMeta::new("k", "INT32", vec![1]),
            ],
            outputs: vec![
                TensorMeta::new(&output_name, "BYTES", vec![-1, -1]),
                TensorMeta::new("score", "FP32", vec![-1, -1]),
            ],
            max_batch_size: config.max_batch_size,
            batching: Batching {
                unit: BatchUnit::Requests,
                max_batch_cost: 1,
                max_queue_cost: options.max_in_flight,
            },
            width: rec.num_items(),
            parameters: vec![
                ("model_type".into(), "recommender".into()),
                ("items".into(), rec.num_items().to_string()),
                ("users".into(), rec.artifact().users.len().to_string()),
                (
                    "components".into(),
                    rec.artifact().factors.components.to_string(),
                ),
                ("max_k".into(), o.max_k.to_string()),
                ("cf_weight".into(), o.blend.cf_weight.to_string()),
                ("content_weight".into(), o.blend.content_weight.to_string()),
            ],
        };
        // Exported at 0 from the start (rates and alerts see the model before a refusal).
        metrics::counter!(m::ADMISSION_REJECTED_TOTAL, "model" => config.name.clone()).increment(0);
        Ok(Self {
            rec: Arc::new(rec),
            admission: Arc::new(Semaphore::new(options.max_in_flight)),
            model: config.name.clone(),
            failed: Arc::new(OnceLock::new()),
            options,
            input_name,
            output_name,
            max_users: config.max_batch_size,
            description,
        })
    }

    /// The model.
    pub fn recommender(&self) -> &Recommender {
        &self.rec
    }

    /// The serving options of the config.
    pub fn options(&self) -> &RecommenderOptions {
        &self.options
    }

    /// The k best items for `req`.
    pub async fn recommend(&self, req: RecsRequest) -> Result<RecsAnswer, ServiceError> {
        if let Some(why) = self.failed.get() {
            return Err(ServiceError::unavailable(format!(
                "model '{}' is not ready: {why}",
                self.model
            )));
        }
        let Ok(_permit) = self.admission.clone().try_acquire_owned() else {
            metrics::counter!(m::ADMISSION_REJECTED_TOTAL, "model" => self.model.clone())
                .increment(1);
            return Err(ServiceError::overloaded(format!(
                "model '{}' has too many requests in flight",
                self.model
            )));
        };
        let rec = self.rec.clone();
        let work = rec.num_items() * rec.artifact().factors.components;
        let (failed, model) = (self.failed.clone(), self.model.clone());
        let guarded = move || match catch_unwind(AssertUnwindSafe(|| answer(&rec, &req))) {
            Ok(result) => result,
            Err(_) => {
                let reason = "the recommender panicked".to_string();
                tracing::error!(model = %model, %reason, "model version failed; it serves again once reloaded");
                let _ = failed.set(reason);
                Err(ServiceError::internal(format!(
                    "model '{model}' failed while running this request"
                )))
            }
        };
        if work <= INLINE_MAX_WORK {
            guarded()
        } else {
            tokio::task::spawn_blocking(guarded)
                .await
                .map_err(ServiceError::internal)?
        }
    }
}

fn answer(rec: &Recommender, req: &RecsRequest) -> Result<RecsAnswer, ServiceError> {
    let q = Query {
        user: &req.user_id,
        k: req.k,
        exclude_seen: req.exclude_seen,
        include: &req.include,
        exclude: &req.exclude,
        item_features: &req.item_features,
        recent: &req.recent,
        recent_mode: req.recent_mode,
        user_features: &req.user_features,
    };
    let r = rec.recommend(&q).map_err(|e| match e {
        RecsError::Invalid(m) => ServiceError::invalid(m),
        RecsError::NotFound(m) => ServiceError::not_found(m),
        other => ServiceError::internal(other),
    })?;
    Ok(RecsAnswer {
        items: r
            .items
            .into_iter()
            .map(|(i, s)| (rec.item_id(i).to_string(), s))
            .collect(),
        strategy: r.strategy,
    })
}

/// The config's options over the model's trained blend.
pub fn serve_options(o: &RecommenderOptions, trained: Blend) -> ServeOptions {
    ServeOptions {
        blend: Blend {
            cf_weight: o.cf_weight.unwrap_or(trained.cf_weight),
            content_weight: o.content_weight.unwrap_or(trained.content_weight),
            recent_weight: o.recent_weight.unwrap_or(trained.recent_weight),
            recent_boost: o.recent_boost.unwrap_or(trained.recent_boost),
        },
        max_k: o.max_k,
        unknown_user: match o.unknown_users {
            UnknownUsers::Popularity => UnknownUser::Popularity,
            UnknownUsers::NotFound => UnknownUser::NotFound,
        },
    }
}

impl RecsServable {
    /// V2 for recommenders: BYTES user ids in; BYTES `item_id` and FP32 `score`, both
    /// `[n, k]`, out (training items excluded). A user with fewer than k candidates gets
    /// empty ids and zero scores in the remaining cells.
    async fn infer_v2(&self, inputs: Vec<InputTensor>) -> Result<Vec<OutputTensor>, ServiceError> {
        let (users, k) = recs_input(inputs, &self.input_name)?;
        if users.len() > self.max_users {
            return Err(ServiceError::invalid(format!(
                "{} users in one request; this model takes at most {} (max_batch_size)",
                users.len(),
                self.max_users
            )));
        }
        let k = k.unwrap_or(DEFAULT_RECS_K);
        // `k` sizes the answer (users x k cells): check it against the model's bound before
        // anything is allocated from it.
        let max_k = self.options.max_k;
        if k > max_k {
            return Err(ServiceError::invalid(format!(
                "k = {k} is more than this model's max_k ({max_k})"
            )));
        }
        let mut ids = Vec::with_capacity(users.len() * k);
        let mut scores = Vec::with_capacity(users.len() * k);
        for user_id in &users {
            let a = self
                .recommend(RecsRequest {
                    user_id: user_id.clone(),
                    k,
                    exclude_seen: true,
                    ..Default::default()
                })
                .await?;
            let got = a.items.len();
            for (id, s) in a.items {
                ids.push(id.into_bytes());
                scores.push(s);
            }
            ids.extend(std::iter::repeat_n(Vec::new(), k - got));
            scores.extend(std::iter::repeat_n(0.0, k - got));
        }
        let shape = vec![users.len() as i64, k as i64];
        Ok(vec![
            OutputTensor {
                name: self.output_name.clone(),
                shape: shape.clone(),
                data: TensorData::Bytes(ids),
            },
            OutputTensor {
                name: "score".into(),
                shape,
                data: TensorData::Fp32(scores),
            },
        ])
    }
}

impl Servable for RecsServable {
    fn description(&self) -> &Description {
        &self.description
    }

    fn infer(&self, request: V2Request) -> BoxFuture<'_, Result<Vec<OutputTensor>, ServiceError>> {
        Box::pin(self.infer_v2(request.inputs))
    }

    fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    fn in_flight(&self) -> usize {
        self.options
            .max_in_flight
            .saturating_sub(self.admission.available_permits())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Checks a recommender's inputs: BYTES `input_name` (user ids, `[n]` or `[n, 1]`) and an
/// optional numeric `k` with one element (a whole number >= 1). Returns the ids and `k`.
fn recs_input(
    inputs: Vec<InputTensor>,
    input_name: &str,
) -> Result<(Vec<String>, Option<usize>), ServiceError> {
    let mut users = None;
    let mut k = None;
    for input in inputs {
        if input.name == input_name {
            users = Some(text_input(vec![input], input_name)?);
        } else if input.name == "k" {
            let InputValues::Numeric(v) = input.values else {
                return Err(ServiceError::invalid("input 'k' must be an integer tensor"));
            };
            let [x] = v.as_slice() else {
                return Err(ServiceError::invalid(format!(
                    "input 'k' must hold one value, got {}",
                    v.len()
                )));
            };
            if !(x.fract() == 0.0 && *x >= 1.0 && *x <= u32::MAX as f32) {
                return Err(ServiceError::invalid(format!(
                    "input 'k' must be a whole number >= 1, got {x}"
                )));
            }
            k = Some(*x as usize);
        } else {
            return Err(ServiceError::invalid(format!(
                "unexpected input '{}': the model's inputs are '{input_name}' and optional 'k'",
                input.name
            )));
        }
    }
    let users = users.ok_or_else(|| {
        ServiceError::invalid(format!("missing input '{input_name}' (BYTES user ids)"))
    })?;
    Ok((users, k))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{DatasetBuilder, FitOptions, Hyper, fit};
    use infermesh_inference::tensor::DataType;

    fn version(max_in_flight: usize) -> RecsServable {
        let mut b = DatasetBuilder::new();
        for u in 0..10 {
            for i in 0..20 {
                if (u + i) % 3 == 0 {
                    b.interaction(&format!("u{u}"), &format!("i{i}"), 1.0);
                }
            }
        }
        let art = fit(
            &b.build().unwrap(),
            Hyper::default(),
            FitOptions {
                epochs: 2,
                threads: 1,
                content_weight: 0.0,
            },
            |_, _| {},
        )
        .unwrap();
        let cfg = ModelConfig::from_toml(
            "recs",
            &format!("platform = \"recommender\"\n[recommender]\nmax_k = 5\nmax_in_flight = {max_in_flight}\n"),
        )
        .unwrap();
        RecsServable::new(&cfg, art).unwrap()
    }

    #[tokio::test]
    async fn answers_with_ids_and_maps_errors_to_kinds() {
        let v = version(4);
        let a = v
            .recommend(RecsRequest {
                user_id: "u1".into(),
                k: 3,
                exclude_seen: true,
                ..RecsRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(a.items.len(), 3);
        assert_eq!(a.strategy, Strategy::Personalised);
        assert!(a.items.iter().all(|(id, _)| id.starts_with('i')));
        let e = v
            .recommend(RecsRequest {
                user_id: "u1".into(),
                k: 6,
                ..RecsRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, infermesh_common::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn admission_refuses_past_max_in_flight() {
        let v = version(1);
        let _held = v.admission.clone().try_acquire_owned().unwrap();
        let e = v
            .recommend(RecsRequest {
                user_id: "u1".into(),
                k: 1,
                ..RecsRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, infermesh_common::ErrorKind::Overloaded);
        assert_eq!(v.in_flight(), 1);
    }

    #[test]
    fn recs_input_reads_users_and_an_optional_k() {
        let users = InputTensor {
            name: "user_id".into(),
            datatype: DataType::Bytes,
            shape: vec![2],
            values: InputValues::Bytes(vec![b"u1".to_vec(), b"u2".to_vec()]),
        };
        let k = |v: Vec<f32>| InputTensor {
            name: "k".into(),
            datatype: DataType::Int32,
            shape: vec![v.len() as i64],
            values: InputValues::Numeric(v),
        };
        let (ids, kk) = recs_input(vec![users.clone(), k(vec![5.0])], "user_id").unwrap();
        assert_eq!(ids, vec!["u1".to_string(), "u2".to_string()]);
        assert_eq!(kk, Some(5));
        assert_eq!(recs_input(vec![users.clone()], "user_id").unwrap().1, None);
        for bad in [vec![0.0], vec![2.5], vec![1.0, 2.0]] {
            assert!(recs_input(vec![users.clone(), k(bad)], "user_id").is_err());
        }
        assert!(recs_input(vec![k(vec![3.0])], "user_id").is_err());
        let mut other = users.clone();
        other.name = "x".into();
        assert!(recs_input(vec![users, other], "user_id").is_err());
    }

    #[test]
    fn options_are_read_checked_and_defaulted() {
        let cfg = |t: &str| ModelConfig::from_toml("recs", t).unwrap();
        let o = RecommenderOptions::parse(&cfg("platform = \"recommender\"\n")).unwrap();
        assert_eq!(o, RecommenderOptions::default());
        let o = RecommenderOptions::parse(&cfg(
            "platform = \"recommender\"\n[recommender]\nmax_k = 50\nunknown_users = \"not_found\"\ncontent_weight = 0.5\n",
        ))
        .unwrap();
        assert_eq!(o.max_k, 50);
        assert_eq!(o.unknown_users, UnknownUsers::NotFound);
        assert_eq!(o.content_weight, Some(0.5));
        for bad in [
            "[recommender]\nmax_k = 0\n",
            "[recommender]\ncf_weight = -1.0\n",
            "[recommender]\nunknown_users = \"guess\"\n",
            "[recommender]\nmax_kk = 5\n",
            "[recommender]\nmax_k = 100001\n",
            "[recommender]\nmax_in_flight = 1048577\n",
            "threshold = 0.5\n",
        ] {
            let c = cfg(&format!("platform = \"recommender\"\n{bad}"));
            assert!(RecommenderOptions::parse(&c).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_overrides_the_trained_blend() {
        let o = RecommenderOptions {
            content_weight: Some(0.7),
            unknown_users: UnknownUsers::NotFound,
            ..RecommenderOptions::default()
        };
        let s = serve_options(&o, Blend::default());
        assert_eq!(s.blend.content_weight, 0.7);
        assert_eq!(s.blend.cf_weight, 1.0);
        assert_eq!(s.unknown_user, UnknownUser::NotFound);
    }
}
