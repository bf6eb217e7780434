//! Serving: exact top-k over the whole catalogue for one request.
//!
//! Item representations are computed once at load (`items x k` floats and a bias each), so a
//! request costs one user representation, one pass of dot products over the catalogue (a
//! loop the compiler vectorises), optional content scores through the inverted index, and a
//! partial selection of the k best. No approximation: the answer is the exact argmax.

use crate::RecsError;
use crate::data::normalized;
use crate::model::score_all;
use crate::store::{Blend, RecsArtifact};

/// What to do with the request's recent items besides shaping the content profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecentMode {
    /// Only shape the content profile.
    #[default]
    Context,
    /// Never recommend them.
    Exclude,
    /// Add `recent_boost` standard deviations to their scores.
    Boost,
}

/// What happens to a user the model does not know and who brings no known features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownUser {
    /// The most popular items within the request's filter.
    #[default]
    Popularity,
    /// A not-found error.
    NotFound,
}

/// How the items were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// From the user's own (trained) representation.
    Personalised,
    /// A user without history, from their features (cold start).
    UserFeatures,
    /// The most popular items within the filter.
    Popularity,
}

impl Strategy {
    /// Lower-case name for JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Personalised => "personalised",
            Strategy::UserFeatures => "user_features",
            Strategy::Popularity => "popularity",
        }
    }
}

/// One recommendation request.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    /// The user id.
    pub user: &'a str,
    /// Items wanted.
    pub k: usize,
    /// Leave out the user's training items.
    pub exclude_seen: bool,
    /// Only these items (empty: all). Unknown ids are refused.
    pub include: &'a [String],
    /// Never these (unknown ids ignored).
    pub exclude: &'a [String],
    /// Only items with all these item features. Unknown names are refused.
    pub item_features: &'a [String],
    /// Recently viewed items, most recent first (unknown ids ignored).
    pub recent: &'a [String],
    /// What recent items do.
    pub recent_mode: RecentMode,
    /// Features of a user without history (unknown names ignored).
    pub user_features: &'a [String],
}

/// Serving options (config can override the model's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeOptions {
    /// Score blend.
    pub blend: Blend,
    /// Largest k accepted.
    pub max_k: usize,
    /// Unknown users.
    pub unknown_user: UnknownUser,
}

/// The answer: item indices (see [`Recommender::item_id`]) with scores, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// `(item index, score)`, best first.
    pub items: Vec<(u32, f32)>,
    /// How they were chosen.
    pub strategy: Strategy,
}

/// A loaded model version, ready to answer.
#[derive(Debug)]
pub struct Recommender {
    art: RecsArtifact,
    item_emb: Vec<f32>,
    item_bias: Vec<f32>,
    options: ServeOptions,
}

/// The k of [`reference_scores`] in the drift references the jobs write (the typed API's
/// and the gateway's usual list length).
pub const REFERENCE_K: usize = 10;
/// Most training users a drift reference scores.
pub const REFERENCE_MAX_USERS: usize = 100_000;

/// The drift reference of a recommender's scores: for each training user, the top-`k`
/// scores the server answers by default (seen items left out, no filter, the trained blend),
/// best first, as the columns `score_0` .. `score_{k-1}` the server's monitor observes. At
/// most `max_users` users (the first ones). A user with fewer than `k` candidates gets
/// missing (NaN) scores past its last one.
pub fn reference_scores(
    art: &RecsArtifact,
    k: usize,
    max_users: usize,
) -> Result<Vec<(String, Vec<f32>)>, RecsError> {
    let rec = Recommender::new(
        art.clone(),
        ServeOptions {
            blend: art.blend,
            max_k: k.max(1),
            unknown_user: UnknownUser::Popularity,
        },
    )?;
    let users = &art.users.ids()[..art.users.len().min(max_users)];
    let mut columns = vec![Vec::with_capacity(users.len()); k];
    for user in users {
        let r = rec.recommend(&Query {
            user,
            k,
            exclude_seen: true,
            include: &[],
            exclude: &[],
            item_features: &[],
            recent: &[],
            recent_mode: RecentMode::Context,
            user_features: &[],
        })?;
        for (j, column) in columns.iter_mut().enumerate() {
            column.push(r.items.get(j).map_or(f32::NAN, |(_, s)| *s));
        }
    }
    Ok(columns
        .into_iter()
        .enumerate()
        .map(|(j, c)| (format!("score_{j}"), c))
        .collect())
}

impl Recommender {
    /// Prepares `art` for serving with `options`.
    pub fn new(art: RecsArtifact, options: ServeOptions) -> Result<Self, RecsError> {
        options.blend.check()?;
        if options.max_k == 0 {
            return Err(RecsError::Invalid("max_k must be at least 1".into()));
        }
        let (item_emb, item_bias) = art.factors.item_matrix(&art.item_features.matrix);
        Ok(Self {
            art,
            item_emb,
            item_bias,
            options,
        })
    }

    /// The artifact.
    pub fn artifact(&self) -> &RecsArtifact {
        &self.art
    }

    /// The options in force.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// Catalogue size.
    pub fn num_items(&self) -> usize {
        self.art.items.len()
    }

    /// The id of item index `i`.
    pub fn item_id(&self, i: u32) -> &str {
        self.art.items.id(i)
    }

    /// Every item's collaborative score for a known user (evaluation).
    pub fn cf_scores(&self, user: usize, out: &mut Vec<f32>) {
        let (cols, vals) = self.art.user_features.matrix.row(user);
        let repr = self
            .art
            .factors
            .user_repr(cols.iter().copied().zip(vals.iter().copied()));
        score_all(&repr, &self.item_emb, &self.item_bias, out);
    }

    /// The k best items for `q`.
    pub fn recommend(&self, q: &Query<'_>) -> Result<Recommendation, RecsError> {
        if q.k == 0 || q.k > self.options.max_k {
            return Err(RecsError::Invalid(format!(
                "k must be in 1..={}, got {}",
                self.options.max_k, q.k
            )));
        }
        let n = self.num_items();
        // Candidates.
        let mut allowed = if q.include.is_empty() {
            vec![true; n]
        } else {
            let mut a = vec![false; n];
            let mut unknown = Vec::new();
            for id in q.include {
                match self.art.items.get(id) {
                    Some(i) => a[i as usize] = true,
                    None => unknown.push(id.as_str()),
                }
            }
            if !unknown.is_empty() {
                return Err(RecsError::Invalid(format!(
                    "unknown item ids in the filter: {}",
                    preview(&unknown)
                )));
            }
            a
        };
        if !q.item_features.is_empty() {
            let mut wanted = Vec::with_capacity(q.item_features.len());
            for name in q.item_features {
                wanted.push(
                    self.art.item_features.side_index(name).ok_or_else(|| {
                        RecsError::Invalid(format!("unknown item feature '{name}'"))
                    })?,
                );
            }
            for (i, a) in allowed.iter_mut().enumerate() {
                if *a {
                    *a = wanted
                        .iter()
                        .all(|&f| self.art.item_features.matrix.contains(i, f));
                }
            }
        }
        for id in q.exclude {
            if let Some(i) = self.art.items.get(id) {
                allowed[i as usize] = false;
            }
        }
        let recent: Vec<u32> = q
            .recent
            .iter()
            .filter_map(|id| self.art.items.get(id))
            .collect();
        if q.recent_mode == RecentMode::Exclude {
            for &i in &recent {
                allowed[i as usize] = false;
            }
        }

        // The user.
        let user = self.art.users.get(q.user).map(|u| u as usize);
        let history: &[u32] = user.map_or(&[], |u| self.art.seen.row(u).0);
        if q.exclude_seen {
            for &i in history {
                allowed[i as usize] = false;
            }
        }
        let (repr, strategy) = match user {
            Some(u) if !history.is_empty() => {
                let (cols, vals) = self.art.user_features.matrix.row(u);
                let repr = self
                    .art
                    .factors
                    .user_repr(cols.iter().copied().zip(vals.iter().copied()));
                (Some(repr), Strategy::Personalised)
            }
            _ => {
                let row = match user {
                    Some(u) => self.art.user_features.side_row(u),
                    None => normalized(
                        q.user_features
                            .iter()
                            .filter_map(|f| self.art.user_features.side_index(f))
                            .map(|f| (f, 1.0))
                            .collect(),
                    ),
                };
                if row.is_empty() {
                    if user.is_none() && self.options.unknown_user == UnknownUser::NotFound {
                        return Err(RecsError::NotFound(format!("unknown user '{}'", q.user)));
                    }
                    (None, Strategy::Popularity)
                } else {
                    (
                        Some(self.art.factors.user_repr(row)),
                        Strategy::UserFeatures,
                    )
                }
            }
        };

        // Scores.
        let mut scores = Vec::with_capacity(n);
        match &repr {
            None => scores.extend_from_slice(&self.art.popularity),
            Some(repr) => {
                score_all(repr, &self.item_emb, &self.item_bias, &mut scores);
                self.blend_content(history, &recent, &mut scores);
            }
        }
        if q.recent_mode == RecentMode::Boost && !recent.is_empty() {
            let boost = self.options.blend.recent_boost * std_dev(&scores).max(f32::EPSILON);
            for &i in &recent {
                scores[i as usize] += boost;
            }
        }
        Ok(Recommendation {
            items: top_k(&scores, &allowed, q.k),
            strategy,
        })
    }

    /// Mixes in the content score: `cf_weight * z(cf) + content_weight * z(content)`, when
    /// the model has item texts, a content weight, and the user a profile.
    fn blend_content(&self, history: &[u32], recent: &[u32], scores: &mut [f32]) {
        let blend = &self.options.blend;
        let Some(content) = &self.art.content else {
            return;
        };
        if blend.content_weight == 0.0 {
            return;
        }
        let profile: Vec<(u32, f32)> = history
            .iter()
            .map(|&i| (i, 1.0))
            .chain(recent.iter().map(|&i| (i, blend.recent_weight)))
            .collect();
        let mut ct = Vec::new();
        if !content.profile_scores(&profile, &mut ct) {
            return;
        }
        standardise(scores);
        standardise(&mut ct);
        for (s, c) in scores.iter_mut().zip(&ct) {
            *s = blend.cf_weight * *s + blend.content_weight * c;
        }
    }
}

fn preview(ids: &[&str]) -> String {
    let mut s = ids
        .iter()
        .take(5)
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > 5 {
        s.push_str(&format!(" and {} more", ids.len() - 5));
    }
    s
}

fn std_dev(xs: &[f32]) -> f32 {
    let n = xs.len().max(1) as f32;
    let mean = xs.iter().sum::<f32>() / n;
    (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n).sqrt()
}

/// `(x - mean) / std` in place (centred only when constant).
fn standardise(xs: &mut [f32]) {
    let n = xs.len().max(1) as f32;
    let mean = xs.iter().sum::<f32>() / n;
    let sd = std_dev(xs);
    for x in xs.iter_mut() {
        *x = if sd > 0.0 { (*x - mean) / sd } else { 0.0 };
    }
}

/// The `k` allowed indices with the highest scores, best first; ties go to the lower index.
pub fn top_k(scores: &[f32], allowed: &[bool], k: usize) -> Vec<(u32, f32)> {
    let mut cand: Vec<(u32, f32)> = scores
        .iter()
        .zip(allowed)
        .enumerate()
        .filter(|(_, (s, a))| **a && !s.is_nan())
        .map(|(i, (s, _))| (i as u32, *s))
        .collect();
    let better = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if cand.len() > k {
        cand.select_nth_unstable_by(k - 1, better);
        cand.truncate(k);
    }
    cand.sort_unstable_by(better);
    cand
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_exact_with_ties_by_index() {
        let scores = [0.5, 2.0, 2.0, -1.0, 3.0, f32::NAN];
        let allowed = [true, true, true, true, false, true];
        assert_eq!(top_k(&scores, &allowed, 2), vec![(1, 2.0), (2, 2.0)]);
        assert_eq!(top_k(&scores, &allowed, 10).len(), 4);
        assert!(top_k(&scores, &[false; 6], 3).is_empty());
    }

    #[test]
    fn standardise_centres_and_scales() {
        let mut xs = [1.0, 2.0, 3.0];
        standardise(&mut xs);
        assert!((xs[0] + xs[2]).abs() < 1e-6 && xs[1].abs() < 1e-6);
        assert!((std_dev(&xs) - 1.0).abs() < 1e-5);
        let mut c = [4.0, 4.0];
        standardise(&mut c);
        assert_eq!(c, [0.0, 0.0]);
    }
}
