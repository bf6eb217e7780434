//! The sample model repository that `infermesh up` serves: a fraud model the project trained
//! (`tools/gen_sample_fraud_model.py`), embedded in the binary, and two recommenders trained
//! at write time on a generated shop (a fraction of a second), so a fresh machine needs
//! nothing else.

use std::path::Path;

const CONFIG: &[u8] = include_bytes!("../../../deploy/sample-repository/fraud/config.toml");
const MODEL: &[u8] = include_bytes!("../../../deploy/sample-repository/fraud/1/model.json");

/// A gateway request body that scores one transaction with the sample model.
pub const EXAMPLE_SCORE_REQUEST: &str = r#"{"transaction_id":"tx-1001","features":{"amount":912.5,"hour_of_day":3,"is_night":1,"merchant_risk":0.41,"device_risk_score":0.35,"user_avg_spend":48.0,"amount_to_avg_ratio":19.0,"txn_count_1h":4,"txn_count_24h":9,"distance_from_home_km":240,"is_foreign":1,"card_present":0,"account_age_days":21,"failed_logins_24h":2,"new_device":1},"top_k":3}"#;

/// A V2 REST request body embedding two sentences with `minilm`.
pub const EXAMPLE_EMBED_REQUEST: &str = r#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["A man is eating food.","A man is eating a piece of bread."]}]}"#;

/// A gateway request body ranking two resumes against a job description.
pub const EXAMPLE_RANK_REQUEST: &str = r#"{"job_description":"Backend engineer, 4+ years of experience with Python, Kubernetes and PostgreSQL.","resumes":[{"id":"r1","text":"Pastry chef, 10 years in bakeries."},{"id":"r2","text":"Software engineer since 2018: Python services on Kubernetes, PostgreSQL, Redis."}],"top_k":2}"#;

/// A V2 REST request body for the sample model: one row of its 16 features, one missing.
pub fn example_v2_request() -> String {
    r#"{"inputs":[{"name":"input__0","shape":[1,16],"datatype":"FP32","data":[[912.5,3,1,0.41,0.35,48.0,19.0,4,9,240,1,0,21,2,null,1]]}]}"#
        .to_string()
}

/// Writes the sample repository into `dir`: the fraud model and two recommenders (`recs`
/// and `recs-next`, see [`write_sample_recommender`]), each unless already there. Returns
/// whether anything was written.
pub fn write_sample_repository(dir: &Path) -> std::io::Result<bool> {
    let mut wrote = false;
    let model_dir = dir.join("fraud");
    if !model_dir.join("config.toml").exists() {
        std::fs::create_dir_all(model_dir.join("1"))?;
        std::fs::write(model_dir.join("1").join("model.json"), MODEL)?;
        // The config goes last: a half-written model directory is never picked up as a model.
        std::fs::write(model_dir.join("config.toml"), CONFIG)?;
        wrote = true;
    }
    wrote |= write_sample_recommender(dir, "recs", 42)?;
    wrote |= write_sample_recommender(dir, "recs-next", 7)?;
    Ok(wrote)
}

/// Item categories of the sample shop.
const CATEGORIES: [(&str, &str); 4] = [
    ("jackets", "waterproof fleece jacket for hiking"),
    ("bikes", "carbon road bike with disc brakes"),
    ("tents", "lightweight two person camping tent"),
    ("shoes", "trail running shoes with grip"),
];

/// The sample shop's interactions: users `u1`..`u50` each prefer one category (`u % 4`) and
/// viewed 12 items, 10 of them from that category; items `p1`..`p120` are in category
/// `p % 4` and carry it as a feature and in their text. Deterministic.
pub fn sample_recs_dataset() -> infermesh_recs::DatasetBuilder {
    let mut b = infermesh_recs::DatasetBuilder::new();
    for p in 1..=120usize {
        let (cat, text) = CATEGORIES[p % 4];
        let id = format!("p{p}");
        b.item_feature(&id, &format!("category:{cat}"), 1.0);
        b.item_text(&id, &format!("{text} model {p}"));
    }
    for u in 1..=50usize {
        let user = format!("u{u}");
        let home = u % 4;
        b.user_feature(&user, &format!("segment:{}", CATEGORIES[home].0), 1.0);
        for n in 0..12usize {
            let cat = if n < 10 { home } else { (home + 1 + n) % 4 };
            // The (u, n)-th item of category `cat`: p = cat + 4 * j, j in 1..=29.
            let j = 1 + (u * 7 + n * 5) % 29;
            b.interaction(&user, &format!("p{}", cat + 4 * j), 1.0);
        }
    }
    // A user with features only (cold start).
    b.user_feature("newcomer", "segment:tents", 1.0);
    b
}

/// Trains the sample recommender with `seed` and writes it as model `name`, version 1,
/// unless present. Returns whether it was written.
pub fn write_sample_recommender(dir: &Path, name: &str, seed: u64) -> std::io::Result<bool> {
    let model_dir = dir.join(name);
    if model_dir.join("config.toml").exists() {
        return Ok(false);
    }
    let invalid = |e: infermesh_recs::RecsError| std::io::Error::other(e.to_string());
    let data = sample_recs_dataset().build().map_err(invalid)?;
    let hyper = infermesh_recs::Hyper {
        components: 16,
        seed,
        ..infermesh_recs::Hyper::default()
    };
    let opts = infermesh_recs::FitOptions {
        epochs: 20,
        threads: 1,
        content_weight: 0.3,
    };
    let art = infermesh_recs::fit(&data, hyper, opts, |_, _| {}).map_err(invalid)?;
    art.save(&model_dir.join("1")).map_err(invalid)?;
    std::fs::write(
        model_dir.join("config.toml"),
        "# Sample recommender (LightFM-style, WARP, 16 components) of a generated shop.\n\
         platform = \"recommender\"\n\
         [recommender]\n\
         max_k = 100\n",
    )?;
    Ok(true)
}

pub use infermesh_model_core::default_model_cache;

/// Files of a Hugging Face sentence-transformers folder that serving reads.
const MINILM_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "1_Pooling",
];

/// Adds all-MiniLM-L6-v2 as model `minilm` (platform `bert-embedding`, version 1, files linked
/// from `cache/all-MiniLM-L6-v2`) unless the repository has it already. Returns whether it
/// was added: false also when the cache does not hold the model (run
/// `scripts/fetch_models.sh`); nothing is ever downloaded here.
pub fn link_minilm(dir: &Path, cache: &Path) -> std::io::Result<bool> {
    let src = cache.join("all-MiniLM-L6-v2");
    let model_dir = dir.join("minilm");
    if model_dir.join("config.toml").exists() || !src.join("model.safetensors").is_file() {
        return Ok(false);
    }
    let version = model_dir.join("1");
    std::fs::create_dir_all(&version)?;
    for f in MINILM_FILES {
        let link = version.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(src.join(f), link)?;
        }
    }
    // The config goes last: a half-written model directory is never picked up as a model.
    std::fs::write(
        model_dir.join("config.toml"),
        "# all-MiniLM-L6-v2 sentence embeddings (384 dimensions), linked from the model cache.\n\
         platform = \"bert-embedding\"\n",
    )?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_keeps_existing() {
        let d = tempfile::tempdir().unwrap();
        assert!(write_sample_repository(d.path()).unwrap());
        assert!(d.path().join("fraud/1/model.json").is_file());
        std::fs::write(
            d.path().join("fraud/config.toml"),
            "platform = \"lightgbm\"",
        )
        .unwrap();
        assert!(!write_sample_repository(d.path()).unwrap());
        let kept = std::fs::read_to_string(d.path().join("fraud/config.toml")).unwrap();
        assert!(kept.contains("lightgbm"));
        let req: serde_json::Value = serde_json::from_str(EXAMPLE_SCORE_REQUEST).unwrap();
        assert_eq!(req["transaction_id"], "tx-1001");
        let v2: serde_json::Value = serde_json::from_str(&example_v2_request()).unwrap();
        assert_eq!(v2["inputs"][0]["shape"][1], 16);
        for name in ["recs", "recs-next"] {
            let art = infermesh_recs::RecsArtifact::load(&d.path().join(name).join("1")).unwrap();
            assert_eq!(art.items.len(), 120);
            assert_eq!(art.users.len(), 51);
            assert!(art.content.is_some());
        }
    }

    #[test]
    fn minilm_is_linked_only_from_a_filled_cache() {
        let repo = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        assert!(!link_minilm(repo.path(), cache.path()).unwrap());
        assert!(!repo.path().join("minilm").exists());
        let m = cache.path().join("all-MiniLM-L6-v2");
        std::fs::create_dir_all(m.join("1_Pooling")).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::write(m.join(f), f).unwrap();
        }
        assert!(link_minilm(repo.path(), cache.path()).unwrap());
        let linked = std::fs::read_to_string(repo.path().join("minilm/1/tokenizer.json")).unwrap();
        assert_eq!(linked, "tokenizer.json");
        let cfg = std::fs::read_to_string(repo.path().join("minilm/config.toml")).unwrap();
        assert!(cfg.contains("bert-embedding"));
        assert!(!link_minilm(repo.path(), cache.path()).unwrap());
    }
}
