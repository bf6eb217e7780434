//! `infermesh.v1.Recommender`: the k best items for a user, by name, for product APIs.
//! Exact top-k over the catalogue in the model version (see `infermesh_recs::serving`).

use std::time::Instant;

use infermesh_common::ServiceError;
use infermesh_inference::{LoadedVersion, OutputTensor, TensorData};
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::recommender_server::Recommender;
use infermesh_recs::serving::{RecsAnswer, RecsRequest, RecsServable};
use infermesh_recs::{RecentMode, Strategy};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::state::{AppState, Protocol, record};

/// Longest user or item id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most ids in one list of a request (filter, exclusions, recent items, features).
pub const MAX_LIST_LEN: usize = 10_000;

/// The typed recommender service.
#[derive(Debug, Clone)]
pub struct RecsService {
    state: AppState,
}

impl RecsService {
    /// The service over `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn check_list(what: &str, ids: &[String]) -> Result<(), ServiceError> {
    if ids.len() > MAX_LIST_LEN {
        return Err(ServiceError::invalid(format!(
            "{what}: {} ids, at most {MAX_LIST_LEN}",
            ids.len()
        )));
    }
    if let Some(id) = ids.iter().find(|i| i.len() > MAX_ID_BYTES) {
        return Err(ServiceError::invalid(format!(
            "{what}: id of {} bytes, at most {MAX_ID_BYTES}",
            id.len()
        )));
    }
    Ok(())
}

/// Checks a typed request and turns it into the core's.
pub fn to_request(r: pb::RecommendRequest) -> Result<RecsRequest, ServiceError> {
    if r.user_id.is_empty() || r.user_id.len() > MAX_ID_BYTES {
        return Err(ServiceError::invalid(format!(
            "user_id must be 1..={MAX_ID_BYTES} bytes"
        )));
    }
    if r.user_id.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "user_id must not contain control characters",
        ));
    }
    if r.k == 0 {
        return Err(ServiceError::invalid("k must be at least 1"));
    }
    let filter = r.filter.unwrap_or_default();
    check_list("filter.include", &filter.include)?;
    check_list("filter.exclude", &filter.exclude)?;
    check_list("filter.features", &filter.features)?;
    check_list("recent_items", &r.recent_items)?;
    check_list("user_features", &r.user_features)?;
    let recent_mode = match pb::RecentItems::try_from(r.recent_mode) {
        Ok(pb::RecentItems::Unspecified) => RecentMode::Context,
        Ok(pb::RecentItems::Exclude) => RecentMode::Exclude,
        Ok(pb::RecentItems::Boost) => RecentMode::Boost,
        Err(_) => {
            return Err(ServiceError::invalid(format!(
                "recent_mode {} is not a RecentItems value",
                r.recent_mode
            )));
        }
    };
    Ok(RecsRequest {
        user_id: r.user_id,
        k: r.k as usize,
        exclude_seen: r.exclude_seen.unwrap_or(true),
        include: filter.include,
        exclude: filter.exclude,
        item_features: filter.features,
        recent: r.recent_items,
        recent_mode,
        user_features: r.user_features,
    })
}

fn strategy(s: Strategy) -> pb::Strategy {
    match s {
        Strategy::Personalised => pb::Strategy::Personalised,
        Strategy::UserFeatures => pb::Strategy::UserFeatures,
        Strategy::Popularity => pb::Strategy::Popularity,
    }
}

#[tonic::async_trait]
impl Recommender for RecsService {
    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let name = if r.model_name.is_empty() {
            self.state.default_recommender_model.clone()
        } else {
            r.model_name.clone()
        };
        let version = r.model_version.clone();
        let span = tracing::info_span!("recommend", model = %name, version = %version, k = r.k);
        let handle = self
            .state
            .resolve(&name, &version, Protocol::Typed, started)
            .map_err(|e| e.to_status())?;
        let res = async {
            let (r, degraded) = self.recent_from_store(&handle, r).await?;
            let req = to_request(r)?;
            let answer = handle
                .family::<RecsServable>("recommender")?
                .recommend(req)
                .await?;
            Ok::<_, ServiceError>((handle.version, answer, degraded))
        }
        .instrument(span)
        .await;
        record(
            &name,
            &handle.version.to_string(),
            Protocol::Typed,
            started,
            res.as_ref().map(|_| ()),
        );
        let (v, answer, features_degraded) = res.map_err(|e| e.to_status())?;
        observe(&handle, &answer);
        Ok(Response::new(pb::RecommendResponse {
            items: answer
                .items
                .into_iter()
                .map(|(item_id, score)| pb::ScoredItem { item_id, score })
                .collect(),
            model_name: name,
            model_version: v.to_string(),
            strategy: strategy(answer.strategy) as i32,
            features_degraded,
        }))
    }
}

impl RecsService {
    /// `r` with its recent items read from the feature store when it carries none and the
    /// model maps `recent_items` (e.g. to `session_views:session_product_views`); and whether
    /// the store failed.
    async fn recent_from_store(
        &self,
        handle: &LoadedVersion,
        mut r: pb::RecommendRequest,
    ) -> Result<(pb::RecommendRequest, bool), ServiceError> {
        let mapping = &handle.config.feature_store.features;
        let Some(source) = self.state.features.as_ref() else {
            return Ok((r, false));
        };
        if !r.recent_items.is_empty() || !mapping.contains_key(RECENT_ITEMS) {
            return Ok((r, false));
        }
        // Only recent_items is filled here: other mapped inputs count as given.
        let ask = crate::features::FillRequest {
            entities: vec![("user_id", r.user_id.as_str())],
            present: mapping
                .keys()
                .map(String::as_str)
                .filter(|k| *k != RECENT_ITEMS)
                .collect(),
        };
        let filled = source
            .fill(&handle.name, mapping, std::slice::from_ref(&ask))
            .instrument(tracing::info_span!("feature_store"))
            .await?;
        let items = filled
            .values
            .into_iter()
            .flatten()
            .find(|(k, _)| k == RECENT_ITEMS);
        if let Some((_, v)) = items {
            match v.val {
                Some(infermesh_features::types::value::Val::StringListVal(l)) => {
                    r.recent_items = l.val;
                }
                _ => {
                    return Err(ServiceError::invalid(format!(
                        "model '{}': [feature_store] recent_items must map to a string list feature",
                        handle.name
                    )));
                }
            }
        }
        Ok((r, filled.degraded))
    }
}

/// The recommender's input the feature store can fill.
const RECENT_ITEMS: &str = "recent_items";

/// Hands the answer's scores to the version's monitor (inference log, live drift) as the V2
/// API answers them: the FP32 output, one row of k scores (`score_0` best first ...), so
/// typed and V2 requests fill the same columns. User and item ids are not kept.
fn observe(handle: &LoadedVersion, answer: &RecsAnswer) {
    let Some(pending) = infermesh_inference::monitor::observe_answers(handle, 1) else {
        return;
    };
    let Some(output) = handle
        .description()
        .outputs
        .iter()
        .find(|o| o.datatype == "FP32")
    else {
        return;
    };
    let scores: Vec<f32> = answer.items.iter().map(|(_, s)| *s).collect();
    pending.finish(&[OutputTensor {
        name: output.name.clone(),
        shape: vec![1, scores.len() as i64],
        data: TensorData::Fp32(scores),
    }]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req() -> pb::RecommendRequest {
        pb::RecommendRequest {
            user_id: "u1".into(),
            k: 10,
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_checked_and_defaulted() {
        let r = to_request(req()).unwrap();
        assert!(r.exclude_seen);
        assert_eq!(r.recent_mode, RecentMode::Context);
        let r = to_request(pb::RecommendRequest {
            exclude_seen: Some(false),
            recent_mode: pb::RecentItems::Boost as i32,
            ..req()
        })
        .unwrap();
        assert!(!r.exclude_seen);
        assert_eq!(r.recent_mode, RecentMode::Boost);
        for bad in [
            pb::RecommendRequest { k: 0, ..req() },
            pb::RecommendRequest {
                user_id: String::new(),
                ..req()
            },
            pb::RecommendRequest {
                user_id: "a\nb".into(),
                ..req()
            },
            pb::RecommendRequest {
                user_id: "x".repeat(MAX_ID_BYTES + 1),
                ..req()
            },
            pb::RecommendRequest {
                recent_mode: 9,
                ..req()
            },
            pb::RecommendRequest {
                recent_items: vec!["i".into(); MAX_LIST_LEN + 1],
                ..req()
            },
        ] {
            assert!(to_request(bad).is_err());
        }
    }
}
