//! `GET /api/v1/recommendations/{user_id}?k=10[&recent=exclude|boost]`: JSON in front of
//! `infermesh.v1.Recommender/Recommend`, with the user's recent views passed along, a cache
//! of answers, the A/B arm the user is in, and a shadow model compared off the request path.
//!
//! A request:
//! 1. assigns the user's arm (sticky, [`crate::experiment`]), which names the model and
//!    version; without an experiment, `[recommendations] model` answers;
//! 2. looks the list up in the cache, keyed by experiment, arm, model, version, k and recent
//!    mode. For an arm on "latest" the version in the key is the one the server last
//!    answered with for that model (kept here), so a new version is picked up at the latest
//!    one TTL after it appears; the first request for such a model is a miss;
//! 3. on a miss, reads the user's last viewed items, calls the model, caches the answer;
//! 4. counts the served items as impressions of the arm (cached or not);
//! 5. spawns the shadow call, if the experiment has one, after the response is formed: its
//!    answer is only logged (overlap with the served items) and counted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use infermesh_common::{ServiceError, metrics_names as m};
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::recommender_client::RecommenderClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tracing::Instrument;

use crate::config::{Experiment, ModelRef, Settings};
use crate::store::{Counter, Store, counted};
use crate::{GatewayState, upstream_error, validate_id, with_request_id};

/// Items returned when the request gives no `k`.
pub const DEFAULT_K: u32 = 10;
/// Most items one request may ask for.
pub const MAX_K: u32 = 100;
/// Shadow calls in flight at once; beyond it a shadow call is skipped (and counted), so a
/// traffic spike never doubles the load on the inference server.
pub const MAX_SHADOW_IN_FLIGHT: usize = 32;

/// What to do with the user's recent views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecentMode {
    /// Never recommend them.
    Exclude,
    /// Raise their scores.
    Boost,
}

impl RecentMode {
    fn to_proto(mode: Option<Self>) -> pb::RecentItems {
        match mode {
            None => pb::RecentItems::Unspecified,
            Some(RecentMode::Exclude) => pb::RecentItems::Exclude,
            Some(RecentMode::Boost) => pb::RecentItems::Boost,
        }
    }
    fn key(mode: Option<Self>) -> &'static str {
        match mode {
            None => "none",
            Some(RecentMode::Exclude) => "exclude",
            Some(RecentMode::Boost) => "boost",
        }
    }
}

/// Query parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecsQuery {
    /// Items to return, 1 to 100 (default 10).
    #[serde(default)]
    pub k: Option<u32>,
    /// `exclude` or `boost` the user's recent views (default: they only shape the profile).
    #[serde(default)]
    pub recent: Option<RecentMode>,
}

/// How the items were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// From the user's own history.
    Personalised,
    /// A user without history, from their features.
    UserFeatures,
    /// An unknown user: the most popular items.
    Popularity,
    /// The server did not say.
    Unspecified,
}

impl From<pb::Strategy> for Strategy {
    fn from(s: pb::Strategy) -> Self {
        match s {
            pb::Strategy::Personalised => Strategy::Personalised,
            pb::Strategy::UserFeatures => Strategy::UserFeatures,
            pb::Strategy::Popularity => Strategy::Popularity,
            pb::Strategy::Unspecified => Strategy::Unspecified,
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemJson {
    /// Item id.
    pub item_id: String,
    /// Score (higher is better, comparable within one answer).
    pub score: f32,
}

/// The experiment and arm that served a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentArm {
    /// Experiment name.
    pub name: String,
    /// Arm name.
    pub arm: String,
}

/// `GET /api/v1/recommendations/{user_id}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecsResponse {
    /// The user.
    pub user_id: String,
    /// Best first.
    pub items: Vec<ItemJson>,
    /// Model that answered.
    pub model: String,
    /// Version that answered.
    pub version: String,
    /// How the items were chosen.
    pub strategy: Strategy,
    /// The user's experiment and arm, null without an experiment.
    pub experiment: Option<ExperimentArm>,
    /// Whether the list came from the cache.
    pub cached: bool,
}

/// A cached answer: what the model said and when it was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedRecs {
    /// Wall-clock store time, Unix milliseconds (shared by every gateway process).
    pub stored_at_ms: u64,
    /// The items.
    pub items: Vec<ItemJson>,
    /// Model that answered.
    pub model: String,
    /// Version that answered.
    pub version: String,
    /// How the items were chosen.
    pub strategy: Strategy,
}

/// Whether an entry stored at `stored_at_ms` is still served at `now_ms`. Clocks of gateway
/// processes differ a little, so an entry stamped slightly in the future is fresh too.
pub fn is_fresh(stored_at_ms: u64, now_ms: u64, ttl: Duration) -> bool {
    u128::from(now_ms.abs_diff(stored_at_ms)) < ttl.as_millis()
}

/// The cache field of one answer: `{experiment}:{arm}:{model}:{version}:{k}:{recent}` (`-`
/// for experiment and arm without an experiment).
pub fn cache_field(
    arm: Option<(&str, &str)>,
    target: &ModelRef,
    version: &str,
    k: u32,
    recent: Option<RecentMode>,
) -> String {
    let (e, a) = arm.unwrap_or(("-", "-"));
    format!(
        "{e}:{a}:{}:{version}:{k}:{}",
        target.model,
        RecentMode::key(recent)
    )
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The latest version each model answered with.
#[derive(Debug, Default)]
pub struct LatestVersions(Mutex<HashMap<String, String>>);

impl LatestVersions {
    /// The version `model` last answered with.
    pub fn get(&self, model: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .cloned()
    }
    /// Records an answer.
    pub fn set(&self, model: &str, version: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(model).map(String::as_str) != Some(version) {
            map.insert(model.to_string(), version.to_string());
        }
    }
}

/// Everything the recommendations and events routes share.
#[derive(Debug)]
pub struct RecsContext {
    /// The checked config file.
    pub settings: Settings,
    /// Cache, recent views, A/B counts.
    pub store: Store,
    /// Latest version per model.
    pub latest: LatestVersions,
    shadow_slots: Arc<tokio::sync::Semaphore>,
}

impl RecsContext {
    /// Context over `store`.
    pub fn new(settings: Settings, store: Store) -> Self {
        // Every result exported from the start (the hit rate is 0, not absent, before a hit).
        for result in ["hit", "miss", "error"] {
            metrics::counter!(m::GATEWAY_CACHE_REQUESTS_TOTAL, "result" => result).increment(0);
        }
        Self {
            settings,
            store,
            latest: LatestVersions::default(),
            shadow_slots: Arc::new(tokio::sync::Semaphore::new(MAX_SHADOW_IN_FLIGHT)),
        }
    }
}

fn cache_result(result: &'static str) {
    metrics::counter!(m::GATEWAY_CACHE_REQUESTS_TOTAL, "result" => result).increment(1);
}

async fn lookup(ctx: &RecsContext, user_id: &str, field: Option<&str>) -> Option<CachedRecs> {
    let Some(field) = field else {
        cache_result("miss");
        return None;
    };
    match ctx.store.get_recs(user_id, field).await {
        Ok(Some(raw)) => match serde_json::from_str::<CachedRecs>(&raw) {
            Ok(c) if is_fresh(c.stored_at_ms, now_ms(), ctx.settings.recs.cache_ttl) => {
                cache_result("hit");
                Some(c)
            }
            Ok(_) => {
                cache_result("miss");
                None
            }
            Err(e) => {
                // Written by another gateway version, say: a miss, overwritten below.
                tracing::warn!(error = %e, "unreadable cached recommendations");
                cache_result("miss");
                None
            }
        },
        Ok(None) => {
            cache_result("miss");
            None
        }
        Err(e) => {
            counted::<()>("get", Err(e));
            cache_result("error");
            None
        }
    }
}

fn recommend_request(
    user_id: &str,
    k: u32,
    recent_items: Vec<String>,
    mode: Option<RecentMode>,
    target: &ModelRef,
) -> pb::RecommendRequest {
    pb::RecommendRequest {
        user_id: user_id.to_string(),
        k,
        exclude_seen: None,
        filter: None,
        recent_items,
        recent_mode: RecentMode::to_proto(mode) as i32,
        user_features: Vec::new(),
        model_name: target.model.clone(),
        model_version: target.version.clone(),
    }
}

fn from_proto(r: pb::RecommendResponse, stored_at_ms: u64) -> CachedRecs {
    let strategy = r.strategy().into();
    CachedRecs {
        stored_at_ms,
        items: r
            .items
            .into_iter()
            .map(|i| ItemJson {
                item_id: i.item_id,
                score: i.score,
            })
            .collect(),
        model: r.model_name,
        version: r.model_version,
        strategy,
    }
}

/// The k best items for a user.
pub async fn recommend(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RecsQuery>, QueryRejection>,
) -> Result<Json<RecsResponse>, ServiceError> {
    let Path(user_id) = path.map_err(|e| ServiceError::invalid(e.body_text()))?;
    validate_id("user_id", &user_id)?;
    let Query(q) = query.map_err(|e| ServiceError::invalid(e.body_text()))?;
    let k = q.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ServiceError::invalid(format!(
            "k must be 1 to {MAX_K}, got {k}"
        )));
    }
    let ctx = &st.recs;
    let assigned = ctx
        .settings
        .experiment
        .as_ref()
        .map(|e| (e, e.assign(&user_id)));
    let target = assigned
        .map(|(_, a)| &a.target)
        .unwrap_or(&ctx.settings.recs.default_target);
    let names = assigned.map(|(e, a)| (e.name.as_str(), a.name.as_str()));
    let pinned = (!target.version.is_empty()).then(|| target.version.clone());
    let key_version = pinned.clone().or_else(|| ctx.latest.get(&target.model));
    let field = key_version
        .as_deref()
        .map(|v| cache_field(names, target, v, k, q.recent));

    let mut fetched_recent = None;
    let (answer, cached) = match lookup(ctx, &user_id, field.as_deref()).await {
        Some(hit) => (hit, true),
        None => {
            let recent =
                counted("recent_get", ctx.store.recent(&user_id).await).unwrap_or_default();
            let msg = recommend_request(&user_id, k, recent.clone(), q.recent, target);
            fetched_recent = Some(recent);
            let mut client = st.recommender.clone();
            let resp = client
                .recommend(with_request_id(&headers, msg))
                .await
                .map_err(|s| upstream_error("inference", s))?
                .into_inner();
            let answer = from_proto(resp, now_ms());
            let version = match pinned {
                Some(v) => v,
                None => {
                    ctx.latest.set(&target.model, &answer.version);
                    answer.version.clone()
                }
            };
            let field = cache_field(names, target, &version, k, q.recent);
            match serde_json::to_string(&answer) {
                Ok(value) => {
                    counted("put", ctx.store.put_recs(&user_id, &field, value).await);
                }
                Err(e) => tracing::error!(error = %e, "cannot encode recommendations"),
            }
            (answer, false)
        }
    };

    if let Some((e, a)) = assigned
        && !answer.items.is_empty()
    {
        let n = answer.items.len() as u64;
        metrics::counter!(
            m::AB_IMPRESSIONS_TOTAL,
            "experiment" => e.name.clone(),
            "arm" => a.name.clone()
        )
        .increment(n);
        counted(
            "counts_incr",
            ctx.store
                .incr(&e.name, &a.name, Counter::Impressions, n)
                .await,
        );
    }

    let response = RecsResponse {
        user_id,
        items: answer.items,
        model: answer.model,
        version: answer.version,
        strategy: answer.strategy,
        experiment: assigned.map(|(e, a)| ExperimentArm {
            name: e.name.clone(),
            arm: a.name.clone(),
        }),
        cached,
    };
    if let Some((e, _)) = assigned
        && let Some(shadow) = &e.shadow
    {
        ShadowCall {
            experiment: e,
            target: shadow,
            k,
            mode: q.recent,
            recent: fetched_recent,
        }
        .spawn(&st, &headers, &response);
    }
    Ok(Json(response))
}

fn shadow_outcome(experiment: &str, outcome: &'static str) {
    metrics::counter!(
        m::AB_SHADOW_REQUESTS_TOTAL,
        "experiment" => experiment.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}

/// What the shadow model is asked: the served request, sent to another model.
struct ShadowCall<'a> {
    experiment: &'a Experiment,
    target: &'a ModelRef,
    k: u32,
    mode: Option<RecentMode>,
    /// The recent items the served call used (None on a cache hit: read them in the task).
    recent: Option<Vec<String>>,
}

impl ShadowCall<'_> {
    /// Calls the shadow model in the background and logs how its list compares with the
    /// served one. Never touches the response.
    fn spawn(self, st: &GatewayState, headers: &HeaderMap, served: &RecsResponse) {
        let ShadowCall {
            experiment,
            target,
            k,
            mode,
            recent,
        } = self;
        let name = experiment.name.clone();
        let Ok(permit) = st.recs.shadow_slots.clone().try_acquire_owned() else {
            shadow_outcome(&name, "skipped");
            return;
        };
        let ctx = st.recs.clone();
        let mut client: RecommenderClient<Channel> = st.recommender.clone();
        let user_id = served.user_id.clone();
        let served_items: Vec<String> = served.items.iter().map(|i| i.item_id.clone()).collect();
        let served_model = format!("{}:{}", served.model, served.version);
        let shadow = target.clone();
        let request_id = headers.clone();
        let span = tracing::info_span!("shadow", experiment = %name, model = %shadow.model);
        let task = async move {
            let _permit = permit;
            let recent = match recent {
                Some(r) => r,
                None => counted("recent_get", ctx.store.recent(&user_id).await).unwrap_or_default(),
            };
            let msg = recommend_request(&user_id, k, recent, mode, &shadow);
            match client.recommend(with_request_id(&request_id, msg)).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let served: HashSet<&str> = served_items.iter().map(String::as_str).collect();
                    let overlap = resp
                        .items
                        .iter()
                        .filter(|i| served.contains(i.item_id.as_str()))
                        .count();
                    tracing::info!(
                        user_id,
                        served_model,
                        shadow_version = %resp.model_version,
                        served = served_items.len(),
                        shadow_items = resp.items.len(),
                        overlap,
                        "shadow answered"
                    );
                    shadow_outcome(&name, "ok");
                }
                Err(status) => {
                    tracing::warn!(user_id, %status, "shadow call failed");
                    shadow_outcome(&name, "error");
                }
            }
        };
        tokio::spawn(task.instrument(span));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_the_ttl() {
        let ttl = Duration::from_secs(300);
        assert!(is_fresh(1_000, 1_000, ttl));
        assert!(is_fresh(1_000, 1_000 + 299_999, ttl));
        assert!(!is_fresh(1_000, 1_000 + 300_000, ttl));
        // Another process's clock a little ahead: still fresh; far ahead: not.
        assert!(is_fresh(5_000, 1_000, ttl));
        assert!(!is_fresh(1_000_000, 1_000, ttl));
    }

    #[test]
    fn cache_fields_name_every_input() {
        let t = ModelRef {
            model: "recs".into(),
            version: String::new(),
        };
        assert_eq!(
            cache_field(Some(("recs-v2", "control")), &t, "3", 10, None),
            "recs-v2:control:recs:3:10:none"
        );
        assert_eq!(
            cache_field(None, &t, "3", 5, Some(RecentMode::Exclude)),
            "-:-:recs:3:5:exclude"
        );
    }

    #[test]
    fn cached_answers_round_trip() {
        let c = CachedRecs {
            stored_at_ms: 7,
            items: vec![ItemJson {
                item_id: "p1".into(),
                score: 0.5,
            }],
            model: "recs".into(),
            version: "1".into(),
            strategy: Strategy::UserFeatures,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"user_features\""), "{text}");
        assert_eq!(serde_json::from_str::<CachedRecs>(&text).unwrap(), c);
    }

    #[test]
    fn latest_versions_are_remembered() {
        let l = LatestVersions::default();
        assert_eq!(l.get("recs"), None);
        l.set("recs", "2");
        l.set("recs", "3");
        assert_eq!(l.get("recs").as_deref(), Some("3"));
    }
}
