//! A LightFM-style hybrid recommender: training, evaluation and exact top-k serving.
//!
//! * [`model`]: the LightFM formulation (users and items as sums of feature embeddings with
//!   per-feature biases; WARP, BPR and logistic losses; Adagrad and Adadelta; Hogwild threads).
//! * [`eval`]: precision@k, recall@k and AUC exactly as `lightfm.evaluation` defines them.
//! * [`content`]: TF-IDF item vectors and cosine similarity, the content-based part.
//! * [`recommender`]: the served model: hybrid blend, cold start, popularity, filters.
//! * [`store`]: the model version on disk (`recs.json` + `model.safetensors`).
//!
//! [`DatasetBuilder`] maps string ids to indices the way LightFM's `Dataset` does, and
//! [`fit`] trains a model version from it. Pure compute: no I/O runtime, no async.

pub mod content;
pub mod data;
pub mod eval;
pub mod model;
pub mod recommender;
#[cfg(feature = "serving")]
pub mod serving;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

pub use content::Content;
pub use data::{Csr, Duplicates, Features, IdMap, Interactions};
pub use eval::{RankingMetrics, evaluate};
pub use model::{EpochStats, Factors, Hyper, LightFm, Loss, Schedule, TrainData};
pub use recommender::{
    Query, RecentMode, Recommendation, Recommender, ServeOptions, Strategy, UnknownUser,
};
pub use store::{Blend, RecsArtifact, TrainingInfo};

/// Errors of the recommender.
#[derive(Debug, thiserror::Error)]
pub enum RecsError {
    /// Bad data or parameters from the caller.
    #[error("{0}")]
    Invalid(String),
    /// An unknown user where the options say so.
    #[error("{0}")]
    NotFound(String),
    /// A model version that cannot be read.
    #[error("cannot load the recommender: {0}")]
    Load(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Training produced NaN or infinite parameters.
    #[error("training diverged (non-finite parameters): lower the learning rate")]
    Diverged,
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RecsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        RecsError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Interactions, features and texts keyed by string ids, before training.
#[derive(Debug, Clone, Default)]
pub struct DatasetBuilder {
    users: IdMap,
    items: IdMap,
    interactions: Vec<(u32, u32, f32)>,
    user_side: Vec<(u32, String, f32)>,
    item_side: Vec<(u32, String, f32)>,
    texts: HashMap<u32, String>,
}

/// A built dataset: ids, interactions, feature matrices and item texts.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// User ids.
    pub users: IdMap,
    /// Item ids.
    pub items: IdMap,
    /// Users x items.
    pub interactions: Interactions,
    /// User features (identity + side).
    pub user_features: Features,
    /// Item features (identity + side).
    pub item_features: Features,
    /// Text per item, if any.
    pub item_texts: Vec<Option<String>>,
}

impl DatasetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user to the catalogue (no interaction).
    pub fn user(&mut self, user: &str) -> u32 {
        self.users.insert(user)
    }

    /// Adds an item to the catalogue (no interaction).
    pub fn item(&mut self, item: &str) -> u32 {
        self.items.insert(item)
    }

    /// An interaction: `value > 0` a positive weighing `value`, otherwise a known negative.
    pub fn interaction(&mut self, user: &str, item: &str, value: f32) {
        let (u, i) = (self.users.insert(user), self.items.insert(item));
        self.interactions.push((u, i, value));
    }

    /// A side feature of a user.
    pub fn user_feature(&mut self, user: &str, feature: &str, weight: f32) {
        let u = self.users.insert(user);
        self.user_side.push((u, feature.to_string(), weight));
    }

    /// A side feature of an item.
    pub fn item_feature(&mut self, item: &str, feature: &str, weight: f32) {
        let i = self.items.insert(item);
        self.item_side.push((i, feature.to_string(), weight));
    }

    /// The text of an item (content-based part); repeated calls append.
    pub fn item_text(&mut self, item: &str, text: &str) {
        let i = self.items.insert(item);
        let t = self.texts.entry(i).or_default();
        if !t.is_empty() {
            t.push(' ');
        }
        t.push_str(text);
    }

    /// Builds the matrices: identity features plus side features, rows normalised to sum 1
    /// (LightFM `Dataset`'s defaults).
    pub fn build(self) -> Result<Dataset, RecsError> {
        if self.users.is_empty() || self.items.is_empty() {
            return Err(RecsError::Invalid("no users or no items".into()));
        }
        let interactions =
            Interactions::new(self.users.len(), self.items.len(), &self.interactions)?;
        if interactions.positives() == 0 {
            return Err(RecsError::Invalid("no positive interactions".into()));
        }
        let user_features = Features::build(self.users.len(), true, &self.user_side, true)?;
        let item_features = Features::build(self.items.len(), true, &self.item_side, true)?;
        let mut item_texts = vec![None; self.items.len()];
        for (i, t) in self.texts {
            item_texts[i as usize] = Some(t);
        }
        Ok(Dataset {
            users: self.users,
            items: self.items,
            interactions,
            user_features,
            item_features,
            item_texts,
        })
    }
}

/// Training options besides the hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Passes over the interactions.
    pub epochs: usize,
    /// Threads (0: all cores).
    pub threads: usize,
    /// Content weight when the dataset has item texts (ignored without).
    pub content_weight: f32,
}

/// Trains a model version on `data`; `on_epoch(epoch, stats)` runs after each epoch.
pub fn fit(
    data: &Dataset,
    hyper: Hyper,
    opts: FitOptions,
    mut on_epoch: impl FnMut(usize, EpochStats),
) -> Result<RecsArtifact, RecsError> {
    if opts.epochs == 0 {
        return Err(RecsError::Invalid("epochs must be at least 1".into()));
    }
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        opts.threads
    };
    let mut model = LightFm::new(hyper, data.user_features.len(), data.item_features.len())?;
    let train = TrainData {
        interactions: &data.interactions,
        user_features: &data.user_features.matrix,
        item_features: &data.item_features.matrix,
    };
    let started = Instant::now();
    for epoch in 1..=opts.epochs {
        let stats = model.fit_epoch(train, threads)?;
        on_epoch(epoch, stats);
    }
    let fit_seconds = started.elapsed().as_secs_f64();
    let (content, vocabulary) = if data.item_texts.iter().any(Option::is_some) {
        let texts: Vec<Option<&str>> = data.item_texts.iter().map(|t| t.as_deref()).collect();
        let (c, v) = Content::fit(&texts)?;
        (Some(c), v)
    } else {
        (None, 0)
    };
    let blend = Blend {
        content_weight: if content.is_some() {
            opts.content_weight
        } else {
            0.0
        },
        ..Blend::default()
    };
    blend.check()?;
    Ok(RecsArtifact {
        hyper,
        blend,
        training: TrainingInfo {
            epochs: opts.epochs,
            threads,
            positives: data.interactions.positives(),
            interactions: data.interactions.matrix.nnz(),
            fit_seconds,
            vocabulary,
        },
        users: data.users.clone(),
        items: data.items.clone(),
        user_features: data.user_features.clone(),
        item_features: data.item_features.clone(),
        factors: model.factors(),
        seen: data.interactions.positive_matrix(),
        popularity: data.interactions.item_popularity(),
        content,
    })
}

/// How an evaluation mapped the test file onto the model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// LightFM's metrics.
    pub metrics: RankingMetrics,
    /// Test pairs whose user or item the model does not know (left out).
    pub unknown_test_pairs: usize,
    /// Train pairs whose user or item the model does not know (left out).
    pub unknown_train_pairs: usize,
}

/// Evaluates the collaborative scores of a model on `(user, item)` test positives,
/// excluding `train` positives from the ranking, as `lightfm.evaluation` does with
/// `train_interactions`.
pub fn evaluate_pairs(
    rec: &Recommender,
    train: &[(String, String)],
    test: &[(String, String)],
    k: usize,
) -> Result<EvalReport, RecsError> {
    let art = rec.artifact();
    let to_csr = |pairs: &[(String, String)]| -> Result<(Csr, usize), RecsError> {
        let mut unknown = 0;
        let mut t = Vec::with_capacity(pairs.len());
        for (u, i) in pairs {
            match (art.users.get(u), art.items.get(i)) {
                (Some(u), Some(i)) => t.push((u, i, 1.0)),
                _ => unknown += 1,
            }
        }
        Ok((
            Csr::from_triplets(art.users.len(), art.items.len(), &t, Duplicates::Max)?,
            unknown,
        ))
    };
    let (train_m, unknown_train_pairs) = to_csr(train)?;
    let (test_m, unknown_test_pairs) = to_csr(test)?;
    let metrics = evaluate(&|u, out| rec.cf_scores(u, out), &train_m, &test_m, k)?;
    Ok(EvalReport {
        metrics,
        unknown_test_pairs,
        unknown_train_pairs,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Users `u0..u29`, items `i0..i39`: users of a group like the group's items, items
    /// carry their group as a feature and a text naming it.
    fn dataset() -> Dataset {
        let mut b = DatasetBuilder::new();
        for u in 0..30 {
            let g = u % 2;
            for i in 0..40 {
                if i % 2 == g && (u * 7 + i) % 3 != 0 {
                    b.interaction(&format!("u{u}"), &format!("i{i}"), 1.0);
                }
            }
            b.user_feature(&format!("u{u}"), &format!("group:{g}"), 1.0);
        }
        for i in 0..40 {
            let g = i % 2;
            b.item_feature(&format!("i{i}"), &format!("group:{g}"), 1.0);
            let word = if g == 0 { "fleece jacket" } else { "road bike" };
            b.item_text(&format!("i{i}"), word);
        }
        // A user with features and no history (cold start).
        b.user_feature("newbie", "group:1", 1.0);
        b.build().unwrap()
    }

    fn trained() -> Recommender {
        let data = dataset();
        let art = fit(
            &data,
            Hyper::default(),
            FitOptions {
                epochs: 20,
                threads: 1,
                content_weight: 0.3,
            },
            |_, _| {},
        )
        .unwrap();
        Recommender::new(
            art.clone(),
            ServeOptions {
                blend: art.blend,
                max_k: 100,
                unknown_user: UnknownUser::Popularity,
            },
        )
        .unwrap()
    }

    fn ids(rec: &Recommender, r: &Recommendation) -> Vec<String> {
        r.items
            .iter()
            .map(|(i, _)| rec.item_id(*i).to_string())
            .collect()
    }

    fn group_of(id: &str) -> usize {
        id[1..].parse::<usize>().unwrap() % 2
    }

    #[test]
    fn personalised_items_come_from_the_user_s_group_and_exclude_seen() {
        let rec = trained();
        let r = rec
            .recommend(&Query {
                user: "u3",
                k: 5,
                exclude_seen: true,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(r.strategy, Strategy::Personalised);
        assert_eq!(r.items.len(), 5);
        let seen = rec.artifact().seen.row(3).0.to_vec();
        for (i, id) in r.items.iter().map(|x| x.0).zip(ids(&rec, &r)) {
            assert!(!seen.contains(&i), "seen item {id} recommended");
            assert_eq!(group_of(&id), 1, "{id}");
        }
        assert!(r.items.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn cold_start_uses_features_then_popularity() {
        let rec = trained();
        let r = rec
            .recommend(&Query {
                user: "newbie",
                k: 5,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(r.strategy, Strategy::UserFeatures);
        assert!(ids(&rec, &r).iter().all(|id| group_of(id) == 1));
        let features = vec!["group:0".to_string()];
        let r = rec
            .recommend(&Query {
                user: "stranger",
                k: 5,
                user_features: &features,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(r.strategy, Strategy::UserFeatures);
        assert!(ids(&rec, &r).iter().all(|id| group_of(id) == 0));
        let include: Vec<String> = vec!["i5".into(), "i6".into(), "i7".into()];
        let r = rec
            .recommend(&Query {
                user: "stranger",
                k: 2,
                include: &include,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(r.strategy, Strategy::Popularity);
        let pop = &rec.artifact().popularity;
        let best = include
            .iter()
            .map(|id| rec.artifact().items.get(id).unwrap())
            .max_by(|a, b| pop[*a as usize].total_cmp(&pop[*b as usize]).then(b.cmp(a)))
            .unwrap();
        assert_eq!(r.items[0].0, best);
        assert_eq!(r.items[0].1, pop[best as usize]);
    }

    #[test]
    fn filters_recent_items_and_bad_requests() {
        let rec = trained();
        let features = vec!["group:0".to_string()];
        let r = rec
            .recommend(&Query {
                user: "u1",
                k: 3,
                item_features: &features,
                ..Query::default()
            })
            .unwrap();
        assert!(ids(&rec, &r).iter().all(|id| group_of(id) == 0));
        // The best item, then the same request with it as a recent view.
        let plain = rec
            .recommend(&Query {
                user: "u1",
                k: 1,
                exclude_seen: true,
                ..Query::default()
            })
            .unwrap();
        let top = vec![ids(&rec, &plain)[0].clone()];
        let r = rec
            .recommend(&Query {
                user: "u1",
                k: 10,
                exclude_seen: true,
                recent: &top,
                recent_mode: RecentMode::Exclude,
                ..Query::default()
            })
            .unwrap();
        assert!(!ids(&rec, &r).contains(&top[0]));
        // Boost lifts a low-ranked item.
        let all = rec
            .recommend(&Query {
                user: "u1",
                k: 40,
                ..Query::default()
            })
            .unwrap();
        let last = vec![ids(&rec, &all).last().unwrap().clone()];
        let boosted = rec
            .recommend(&Query {
                user: "u1",
                k: 40,
                recent: &last,
                recent_mode: RecentMode::Boost,
                ..Query::default()
            })
            .unwrap();
        let pos = ids(&rec, &boosted)
            .iter()
            .position(|x| *x == last[0])
            .unwrap();
        assert!(pos < 39, "boost did not move it: {pos}");
        for k in [0, 101] {
            assert!(matches!(
                rec.recommend(&Query {
                    user: "u1",
                    k,
                    ..Query::default()
                }),
                Err(RecsError::Invalid(_))
            ));
        }
        let unknown = vec!["nope".to_string()];
        let err = rec
            .recommend(&Query {
                user: "u1",
                k: 3,
                include: &unknown,
                ..Query::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
        assert!(
            rec.recommend(&Query {
                user: "u1",
                k: 3,
                item_features: &unknown,
                ..Query::default()
            })
            .is_err()
        );
        // Unknown ids among recent and excluded items are ignored.
        assert!(
            rec.recommend(&Query {
                user: "u1",
                k: 3,
                recent: &unknown,
                exclude: &unknown,
                recent_mode: RecentMode::Exclude,
                ..Query::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn unknown_users_can_be_refused() {
        let rec = trained();
        let strict = Recommender::new(
            rec.artifact().clone(),
            ServeOptions {
                unknown_user: UnknownUser::NotFound,
                ..*rec.options()
            },
        )
        .unwrap();
        let r = strict.recommend(&Query {
            user: "stranger",
            k: 3,
            ..Query::default()
        });
        assert!(matches!(r, Err(RecsError::NotFound(_))), "{r:?}");
    }

    #[test]
    fn content_blend_changes_scores_only_with_texts_and_weight() {
        let rec = trained();
        assert!(rec.artifact().content.is_some());
        assert_eq!(rec.options().blend.content_weight, 0.3);
        let c = rec.artifact().content.as_ref().unwrap();
        // Same-group items share their text exactly.
        let at = |id: &str| rec.artifact().items.get(id).unwrap() as usize;
        assert!((c.similarity(at("i0"), at("i2")) - 1.0).abs() < 1e-6);
        assert_eq!(c.similarity(at("i0"), at("i1")), 0.0);
        let q = Query {
            user: "u2",
            k: 40,
            ..Query::default()
        };
        let blended = rec.recommend(&q).unwrap();
        let cf_only = Recommender::new(
            rec.artifact().clone(),
            ServeOptions {
                blend: Blend {
                    content_weight: 0.0,
                    ..rec.options().blend
                },
                ..*rec.options()
            },
        )
        .unwrap()
        .recommend(&q)
        .unwrap();
        assert_ne!(blended.items, cf_only.items);
    }

    #[test]
    fn save_and_load_round_trip_and_refuse_corruption() {
        let rec = trained();
        let dir = tempfile::tempdir().unwrap();
        rec.artifact().save(dir.path()).unwrap();
        let back = RecsArtifact::load(dir.path()).unwrap();
        assert_eq!(&back, rec.artifact());
        // A truncated tensors file is a load error, not a panic.
        let path = dir.path().join(store::TENSORS_FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            RecsArtifact::load(dir.path()),
            Err(RecsError::Load(_))
        ));
        std::fs::write(dir.path().join(store::META_FILE), b"{}").unwrap();
        assert!(RecsArtifact::load(dir.path()).is_err());
    }

    #[test]
    fn evaluation_of_a_trained_model_beats_chance() {
        // 200 users in 4 taste groups of 25 items each; a user likes a random 60% of their
        // group's items; one in five of those pairs is held out.
        let mut rng = infermesh_model_core::rng::SplitMix64::new(9);
        let mut b = DatasetBuilder::new();
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for i in 0..100 {
            b.item(&format!("i{i}"));
        }
        for u in 0..200 {
            let g = u % 4;
            for i in (g * 25)..(g * 25 + 25) {
                if rng.next_f64() < 0.6 {
                    let pair = (format!("u{u}"), format!("i{i}"));
                    if rng.next_f64() < 0.2 {
                        b.user(&pair.0);
                        test.push(pair);
                    } else {
                        b.interaction(&pair.0, &pair.1, 1.0);
                        train.push(pair);
                    }
                }
            }
        }
        let art = fit(
            &b.build().unwrap(),
            Hyper::default(),
            FitOptions {
                epochs: 10,
                threads: 1,
                content_weight: 0.0,
            },
            |_, _| {},
        )
        .unwrap();
        let rec = Recommender::new(
            art,
            ServeOptions {
                blend: Blend::default(),
                max_k: 10,
                unknown_user: UnknownUser::Popularity,
            },
        )
        .unwrap();
        let r = evaluate_pairs(&rec, &train, &test, 5).unwrap();
        assert_eq!(r.unknown_test_pairs, 0);
        assert_eq!(r.metrics.test_interactions, test.len());
        // A random ranking has AUC 0.5 and precision@5 ~ 3 / 88; ranking the user's group
        // first (without knowing which group items they like) gives ~3 / 13.
        assert!(r.metrics.auc > 0.9, "{r:?}");
        assert!(r.metrics.precision_at_k > 0.15, "{r:?}");
        // Unknown ids are counted, not failed.
        let extra = vec![("ghost".to_string(), "i1".to_string())];
        let r = evaluate_pairs(&rec, &train, &extra, 5).unwrap();
        assert_eq!(r.unknown_test_pairs, 1);
    }
}
