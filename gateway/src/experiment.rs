//! A/B assignment and `GET /api/v1/experiments`.
//!
//! Assignment is sticky without storing anything: a user's arm is a function of the salt and
//! the user id only, so every gateway process, before and after restarts, puts the same user
//! in the same arm, and an analyst can recompute it:
//!
//! ```text
//! h      = SHA-256(utf8(salt + ":" + user_id))
//! bucket = u64_big_endian(h[0..8]) mod total_weight
//! arm    = the first arm whose cumulative weight exceeds bucket (arms in file order)
//! ```
//!
//! (Python: `int.from_bytes(hashlib.sha256(f"{salt}:{user}".encode()).digest()[:8], "big") %
//! total`.) SHA-256 rather than a faster non-cryptographic hash because it is the one every
//! language has in its standard library; the modulo bias is below total / 2^64.

use axum::Json;
use axum::extract::State;
use infermesh_common::ServiceError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::GatewayState;
use crate::config::{Arm, Experiment};
use crate::store::{Counter, counter_field};

/// The user's bucket in `[0, total)`.
pub fn bucket(salt: &str, user_id: &str, total: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(user_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % total.max(1)
}

impl Experiment {
    /// Sum of the arms' weights.
    pub fn total_weight(&self) -> u64 {
        self.arms.iter().map(|a| u64::from(a.weight)).sum()
    }

    /// The arm `user_id` is in (always the same one for the same salt and arms).
    pub fn assign(&self, user_id: &str) -> &Arm {
        let b = bucket(&self.salt, user_id, self.total_weight());
        let mut cumulative = 0u64;
        for arm in &self.arms {
            cumulative += u64::from(arm.weight);
            if b < cumulative {
                return arm;
            }
        }
        // Unreachable when weights are positive (checked at start-up); the control arm is
        // the safe answer anyway.
        &self.arms[0]
    }
}

/// One arm with its counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArmCounts {
    /// Arm name.
    pub name: String,
    /// Model serving it.
    pub model: String,
    /// Its version ("" = latest).
    pub version: String,
    /// Share of users, relative to the other arms.
    pub weight: u32,
    /// Items served.
    pub impressions: u64,
    /// Clicks on them.
    pub clicks: u64,
}

/// A shadow model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShadowJson {
    /// Model name.
    pub model: String,
    /// Version ("" = latest).
    pub version: String,
}

/// An experiment and its counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExperimentCounts {
    /// Name.
    pub name: String,
    /// Assignment salt.
    pub salt: String,
    /// The route it runs on.
    pub route: String,
    /// Arms, the control first.
    pub arms: Vec<ArmCounts>,
    /// Shadow model, if any.
    pub shadow: Option<ShadowJson>,
}

/// `GET /api/v1/experiments`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExperimentsResponse {
    /// Every configured experiment.
    pub experiments: Vec<ExperimentCounts>,
}

/// Lists the experiments with their persisted impression and click counts (all gateway
/// processes' when they share Redis).
pub async fn list(
    State(st): State<GatewayState>,
) -> Result<Json<ExperimentsResponse>, ServiceError> {
    let mut experiments = Vec::new();
    if let Some(e) = &st.recs.settings.experiment {
        let counts = st.recs.store.counts(&e.name).await.map_err(|err| {
            crate::store::counted::<()>("counts_get", Err(err));
            ServiceError::unavailable("experiment counts are unavailable: the store did not answer")
        })?;
        let get = |arm: &str, c: Counter| counts.get(&counter_field(arm, c)).copied().unwrap_or(0);
        experiments.push(ExperimentCounts {
            name: e.name.clone(),
            salt: e.salt.clone(),
            route: "/api/v1/recommendations/{user_id}".into(),
            arms: e
                .arms
                .iter()
                .map(|a| ArmCounts {
                    name: a.name.clone(),
                    model: a.target.model.clone(),
                    version: a.target.version.clone(),
                    weight: a.weight,
                    impressions: get(&a.name, Counter::Impressions),
                    clicks: get(&a.name, Counter::Clicks),
                })
                .collect(),
            shadow: e.shadow.as_ref().map(|s| ShadowJson {
                model: s.model.clone(),
                version: s.version.clone(),
            }),
        });
    }
    Ok(Json(ExperimentsResponse { experiments }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ModelRef;

    fn experiment(weights: &[u32]) -> Experiment {
        Experiment {
            name: "e".into(),
            salt: "2026-11".into(),
            arms: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Arm {
                    name: format!("arm{i}"),
                    target: ModelRef {
                        model: "m".into(),
                        version: String::new(),
                    },
                    weight: *w,
                })
                .collect(),
            shadow: None,
        }
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // What the module doc's Python line computes.
        let want = {
            let d = Sha256::digest(b"2026-11:u1");
            u64::from_be_bytes(d[..8].try_into().unwrap()) % 100
        };
        assert_eq!(bucket("2026-11", "u1", 100), want);
        // A fixed value, so a change of the scheme cannot pass unnoticed.
        assert_eq!(bucket("salt", "user-42", 1_000_000), 313_567);
    }

    #[test]
    fn assignment_is_sticky() {
        let e = experiment(&[90, 10]);
        for i in 0..1000 {
            let u = format!("user-{i}");
            assert_eq!(e.assign(&u).name, e.assign(&u).name);
            // An equal copy (another process) agrees.
            assert_eq!(e.clone().assign(&u).name, e.assign(&u).name);
        }
        // Another salt reshuffles.
        let mut other = e.clone();
        other.salt = "other".into();
        let moved = (0..1000)
            .filter(|i| {
                let u = format!("user-{i}");
                e.assign(&u).name != other.assign(&u).name
            })
            .count();
        assert!(moved > 100, "{moved}");
    }

    #[test]
    fn split_follows_the_weights() {
        for weights in [&[90u32, 10][..], &[50, 50], &[1, 1, 1], &[70, 20, 10]] {
            let e = experiment(weights);
            let n = 10_000;
            let mut hits = vec![0usize; weights.len()];
            for i in 0..n {
                let arm = e.assign(&format!("u{i}"));
                let idx = e.arms.iter().position(|a| a.name == arm.name).unwrap();
                hits[idx] += 1;
            }
            let total: u32 = weights.iter().sum();
            for (h, w) in hits.iter().zip(weights) {
                let want = f64::from(*w) / f64::from(total);
                let got = *h as f64 / n as f64;
                // 4 standard errors of a proportion over 10k draws is at most 0.02.
                assert!((got - want).abs() < 0.02, "{weights:?}: {hits:?}");
            }
        }
    }

    #[test]
    fn one_arm_takes_everyone() {
        let e = experiment(&[3]);
        assert!((0..100).all(|i| e.assign(&format!("u{i}")).name == "arm0"));
    }
}
