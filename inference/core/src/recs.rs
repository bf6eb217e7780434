//! A loaded recommender version: the model, its serving options, and admission.
//!
//! A request is one exact top-k over the catalogue: microseconds for thousands of items, so
//! it runs on the async worker; catalogues above [`INLINE_MAX_WORK`] multiply-adds go to the
//! blocking pool. There is no batcher (one request is one matrix-vector product already);
//! admission is a bounded count of requests computing at once, refused past it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use infermesh_common::{ServiceError, metrics_names as m};
use infermesh_recs::store::RecsLoadLimits;
use infermesh_recs::{
    Blend, Query, RecentMode, Recommender, RecsArtifact, RecsError, ServeOptions, Strategy,
    UnknownUser,
};
use infermesh_registry::{ModelConfig, RecommenderOptions, UnknownUsers};
use tokio::sync::Semaphore;

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
pub struct RecsVersion {
    rec: Arc<Recommender>,
    admission: Arc<Semaphore>,
    model: String,
    /// Set when the model panicked: it refuses work until reloaded.
    failed: Arc<OnceLock<String>>,
}

impl RecsVersion {
    /// Loads the version in `dir` with the options of `config`.
    pub fn load(config: &ModelConfig, dir: &Path) -> Result<Self, String> {
        let limits: RecsLoadLimits = crate::handle::family_limits(config)?;
        let art = RecsArtifact::load_with_limits(dir, &limits).map_err(|e| e.to_string())?;
        Self::new(config, art)
    }

    /// Wraps a loaded artifact (loaders and tests).
    pub fn new(config: &ModelConfig, art: RecsArtifact) -> Result<Self, String> {
        let options = serve_options(&config.recommender, art.blend);
        let rec = Recommender::new(art, options).map_err(|e| e.to_string())?;
        Ok(Self {
            rec: Arc::new(rec),
            admission: Arc::new(Semaphore::new(config.recommender.max_in_flight)),
            model: config.name.clone(),
            failed: Arc::new(OnceLock::new()),
        })
    }

    /// The model.
    pub fn recommender(&self) -> &Recommender {
        &self.rec
    }

    /// Requests computing now.
    pub fn in_flight(&self, max: usize) -> usize {
        max.saturating_sub(self.admission.available_permits())
    }

    /// Why this version can no longer serve (the model panicked), if so.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// The k best items for `req`.
    pub async fn recommend(&self, req: RecsRequest) -> Result<RecsAnswer, ServiceError> {
        if let Some(why) = self.failure() {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use infermesh_recs::{DatasetBuilder, FitOptions, Hyper, fit};

    fn version(max_in_flight: usize) -> RecsVersion {
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
        RecsVersion::new(&cfg, art).unwrap()
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
        assert_eq!(v.in_flight(1), 1);
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
