//! The embedded default's feature store (`infermesh up`): the platform's shared features
//! (`features/repo/features.toml`) in memory, holding values for the sample users and devices.

use std::time::SystemTime;

use infermesh_features::Timestamp;
use infermesh_features::registry::FeatureRegistry;
use infermesh_features::types::value::Val;
use infermesh_features::types::{StringList, Value};
use infermesh_features::write::{RowWrite, write_rows};

use crate::{FeatureServerError, FeatureState};

/// The shared features' definitions, as `features/repo/features.toml` has them.
pub const SAMPLE_REGISTRY: &str = include_str!("../../repo/features.toml");

/// The sample users (the sample recommender's `u1`..`u50`) and devices (`dev-1`..`dev-20`).
pub const SAMPLE_USERS: usize = 50;
/// Sample devices.
pub const SAMPLE_DEVICES: usize = 20;

/// The sample registry.
pub fn sample_registry() -> Result<FeatureRegistry, FeatureServerError> {
    FeatureRegistry::from_toml(SAMPLE_REGISTRY, None)
        .map_err(|e| FeatureServerError::Config(format!("the sample feature registry: {e}")))
}

fn v(val: Val) -> Value {
    Value { val: Some(val) }
}

/// Writes the sample values, stamped now: per user `user_avg_spend` and the last products
/// viewed (`session_product_views`), per device `device_risk_score`. Deterministic values.
/// Returns the rows written.
pub async fn seed(state: &FeatureState) -> Result<usize, FeatureServerError> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let t = Timestamp {
        seconds: now,
        nanos: 0,
    };
    let mut rows = Vec::new();
    for u in 1..=SAMPLE_USERS {
        let user = vec![("user_id".to_owned(), v(Val::StringVal(format!("u{u}"))))];
        rows.push(RowWrite {
            view: "user_spend".into(),
            entity: user.clone(),
            features: vec![(
                "user_avg_spend".into(),
                v(Val::DoubleVal(20.0 + ((u * 37) % 180) as f64 + 0.5)),
            )],
            event_time: t,
        });
        // Products of the user's preferred category (`u % 4`, as the sample recommender's
        // data has them), most recent first.
        let views: Vec<String> = (0..3)
            .map(|j| format!("p{}", u % 4 + 4 * (1 + (u + 5 * j) % 29)))
            .collect();
        rows.push(RowWrite {
            view: "session_views".into(),
            entity: user,
            features: vec![(
                "session_product_views".into(),
                v(Val::StringListVal(StringList { val: views })),
            )],
            event_time: t,
        });
    }
    for d in 1..=SAMPLE_DEVICES {
        rows.push(RowWrite {
            view: "device_risk".into(),
            entity: vec![("device_id".into(), v(Val::StringVal(format!("dev-{d}"))))],
            features: vec![(
                "device_risk_score".into(),
                v(Val::DoubleVal(((d * 13) % 20) as f64 / 20.0)),
            )],
            event_time: t,
        });
    }
    let registry = state.registry();
    Ok(write_rows(&registry, state.store().as_ref(), &rows).await?)
}
