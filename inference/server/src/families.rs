//! The model families this server is built with: one line per family, each under its cargo
//! feature (all on by default). A model's `platform` (or a Triton `config.pbtxt`'s
//! `backend`) picks its family from this table; the core knows no family by name.

use infermesh_inference::Families;

/// Every family compiled into this build (an error only when two claim one platform).
pub fn compiled() -> Result<Families, String> {
    let families = vec![
        #[cfg(feature = "trees")]
        &infermesh_trees::serving::FAMILY,
        #[cfg(feature = "text")]
        &infermesh_text::serving::FAMILY,
        #[cfg(feature = "recs")]
        &infermesh_recs::serving::FAMILY,
        #[cfg(feature = "anomaly")]
        &infermesh_anomaly::serving::FAMILY,
        #[cfg(feature = "topics")]
        &infermesh_topics::serving::FAMILY,
        #[cfg(feature = "sentiment")]
        &infermesh_sentiment::serving::FAMILY,
    ];
    Families::new(families)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    #[test]
    fn every_platform_has_one_family() {
        let f = super::compiled().expect("distinct platforms");
        let p = f.platforms();
        let mut dedup = p.clone();
        dedup.dedup();
        assert_eq!(p, dedup);
        #[cfg(feature = "trees")]
        assert!(f.find("xgboost").is_some() && f.find("fil").is_some());
        assert!(f.find("pytorch").is_none());
    }
}
