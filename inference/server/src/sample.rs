//! The sample model repository that `infermesh up` serves: a fraud model the project trained
//! (`tools/gen_sample_fraud_model.py`), embedded in the binary, and two recommenders trained
//! at write time on a generated shop (a fraction of a second), so a fresh machine needs
//! nothing else.

use std::path::Path;

const CONFIG: &[u8] = include_bytes!("../../../deploy/sample-repository/fraud/config.toml");
const MODEL: &[u8] = include_bytes!("../../../deploy/sample-repository/fraud/1/model.json");

/// A gateway request body that scores one transaction with the sample model.
pub const EXAMPLE_SCORE_REQUEST: &str = r#"{"transaction_id":"tx-1001","features":{"amount":912.5,"hour_of_day":3,"is_night":1,"merchant_risk":0.41,"device_risk_score":0.35,"user_avg_spend":48.0,"amount_to_avg_ratio":19.0,"txn_count_1h":4,"txn_count_24h":9,"distance_from_home_km":240,"is_foreign":1,"card_present":0,"account_age_days":21,"failed_logins_24h":2,"new_device":1},"top_k":3}"#;

/// A fraud score request that leaves user_avg_spend and device_risk_score to the feature
/// store (read for its user_id and device_id when the server has one, as `infermesh up` does).
pub const EXAMPLE_STORE_SCORE_REQUEST: &str = r#"{"transaction_id":"tx-1002","user_id":"u7","device_id":"dev-3","features":{"amount":912.5,"hour_of_day":3,"is_night":1,"merchant_risk":0.41,"amount_to_avg_ratio":19.0,"txn_count_1h":4,"txn_count_24h":9,"distance_from_home_km":240,"is_foreign":1,"card_present":0,"account_age_days":21,"failed_logins_24h":2,"new_device":1},"top_k":3}"#;

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
        write_sample_fraud_reference(&model_dir.join("1"), SAMPLE_REFERENCE_ROWS, SAMPLE_SEED)?;
        // The config goes last: a half-written model directory is never picked up as a model.
        std::fs::write(model_dir.join("config.toml"), CONFIG)?;
        wrote = true;
    } else if model_dir.join("1/model.json").is_file()
        && !model_dir
            .join("1")
            .join(infermesh_drift::file::REFERENCE_FILE)
            .exists()
    {
        // A repository written before the sample model carried its drift reference.
        write_sample_fraud_reference(&model_dir.join("1"), SAMPLE_REFERENCE_ROWS, SAMPLE_SEED)?;
        wrote = true;
    }
    wrote |= write_sample_recommender(dir, "recs", 42)?;
    wrote |= write_sample_recommender(dir, "recs-next", 7)?;
    #[cfg(feature = "anomaly")]
    {
        wrote |= write_sample_anomaly_model(dir)?;
    }
    Ok(wrote)
}

/// The sample spending-anomaly model's features: a subset of [`SAMPLE_FRAUD_FEATURES`]
/// without missing values.
#[cfg(feature = "anomaly")]
pub const SAMPLE_ANOMALY_FEATURES: [&str; 5] = [
    "amount",
    "amount_to_avg_ratio",
    "hour_of_day",
    "txn_count_24h",
    "distance_from_home_km",
];

/// Rows the sample anomaly model is fitted on (and its drift reference profiles).
#[cfg(feature = "anomaly")]
const SAMPLE_ANOMALY_ROWS: usize = 4096;

/// Writes `anomaly` (platform `isolation-forest`) into the repository unless it is there: an
/// Isolation Forest (scikit-learn's defaults, contamination 1 %) fitted on
/// [`SAMPLE_ANOMALY_FEATURES`] of transactions from [`sample_fraud_rows`], with its drift
/// reference (the features plus its `score` and `is_anomaly` on those rows, as `infermesh
/// train anomaly` writes it). Returns whether it wrote it.
#[cfg(feature = "anomaly")]
pub fn write_sample_anomaly_model(dir: &Path) -> std::io::Result<bool> {
    use infermesh_anomaly::train::{Contamination, FitParams, fit};
    use infermesh_drift::Values;
    use infermesh_drift::profile::ColumnProfile;
    let model_dir = dir.join("anomaly");
    if model_dir.join("config.toml").exists() {
        return Ok(false);
    }
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let all = sample_fraud_rows(SAMPLE_ANOMALY_ROWS, SAMPLE_SEED + 1);
    let width = SAMPLE_FRAUD_FEATURES.len();
    let index: Vec<usize> = SAMPLE_ANOMALY_FEATURES
        .iter()
        .filter_map(|f| SAMPLE_FRAUD_FEATURES.iter().position(|g| g == f))
        .collect();
    let rows: Vec<f32> = all
        .chunks_exact(width)
        .flat_map(|r| index.iter().map(move |&j| r[j]))
        .collect();
    let names: Vec<String> = SAMPLE_ANOMALY_FEATURES.map(String::from).to_vec();
    let params = FitParams {
        contamination: Contamination::Share(0.01),
        seed: SAMPLE_SEED,
        ..FitParams::default()
    };
    let fitted = fit(&rows, names.len(), &names, &params).map_err(|e| other(&e))?;
    let mut scores = Vec::with_capacity(SAMPLE_ANOMALY_ROWS);
    fitted
        .forest
        .score_rows(&rows, &mut scores)
        .map_err(|e| other(&e))?;
    let version = model_dir.join("1");
    std::fs::create_dir_all(&version)?;
    std::fs::write(
        version.join(infermesh_anomaly::ARTIFACT_FILE),
        serde_json::to_vec(&fitted.artifact).map_err(|e| other(&e))?,
    )?;
    let mut profiles = Vec::with_capacity(names.len() + 2);
    for (j, name) in names.iter().enumerate() {
        let column: Vec<f64> = rows
            .chunks_exact(names.len())
            .map(|r| f64::from(r[j]))
            .collect();
        let values = if column.iter().all(|x| x.fract() == 0.0) {
            Values::Int(column.iter().map(|&x| x as i64).collect())
        } else {
            Values::Float(column)
        };
        profiles.extend(ColumnProfile::of(&values).map(|p| (name.clone(), p)));
    }
    let outputs = [
        (
            "score",
            Values::Float(scores.iter().map(|s| s.score).collect()),
        ),
        (
            "is_anomaly",
            Values::Bool(scores.iter().map(|s| Some(s.is_anomaly())).collect()),
        ),
    ];
    for (name, values) in outputs {
        profiles.extend(ColumnProfile::of(&values).map(|p| (name.to_string(), p)));
    }
    infermesh_drift::file::write_profile(
        &version.join(infermesh_drift::file::REFERENCE_FILE),
        &profiles,
    )
    .map_err(|e| other(&e))?;
    // The config goes last: a half-written model directory is never picked up as a model.
    std::fs::write(
        model_dir.join("config.toml"),
        "# The sample spending-anomaly model (infermesh up): an Isolation Forest on five\n\
         # transaction features (parameter feature_names), FP32 [N, 5] in; score, is_anomaly out.\n\
         platform = \"isolation-forest\"\n",
    )?;
    Ok(true)
}

/// Seed of the sample fraud model's drift reference rows.
const SAMPLE_SEED: u64 = 20_261_206;

/// Rows of the sample fraud model's drift reference.
pub const SAMPLE_REFERENCE_ROWS: usize = 20_000;

/// The sample fraud model's 16 features, in column order.
pub const SAMPLE_FRAUD_FEATURES: [&str; 16] = [
    "amount",
    "hour_of_day",
    "is_night",
    "merchant_risk",
    "device_risk_score",
    "user_avg_spend",
    "amount_to_avg_ratio",
    "txn_count_1h",
    "txn_count_24h",
    "distance_from_home_km",
    "is_foreign",
    "card_present",
    "account_age_days",
    "failed_logins_24h",
    "session_product_views",
    "new_device",
];

/// `n` synthetic transactions drawn as `tools/gen_sample_fraud_model.py` draws the sample
/// model's training set (the same distributions and missing rates; this generator's own
/// seeded draws), row-major over [`SAMPLE_FRAUD_FEATURES`] (NaN: missing).
pub fn sample_fraud_rows(n: usize, seed: u64) -> Vec<f32> {
    use rand::{RngExt, SeedableRng, rngs::StdRng};
    use rand_distr::{Beta, Distribution, Exp, LogNormal, Poisson};
    let mut rng = StdRng::seed_from_u64(seed);
    // The parameters are constants within each distribution's domain.
    let dist = |r: Result<LogNormal<f64>, _>| r.unwrap_or_else(|_| unreachable!());
    let user_avg_d = dist(LogNormal::new(3.6, 0.7));
    let ratio_d = dist(LogNormal::new(0.0, 0.8));
    let (Ok(merchant_d), Ok(device_d)) = (Beta::new(1.2, 8.0), Beta::new(1.0, 10.0)) else {
        unreachable!()
    };
    let (Ok(p06), Ok(p3), Ok(p015), Ok(p6)) = (
        Poisson::new(0.6),
        Poisson::new(3.0),
        Poisson::new(0.15),
        Poisson::new(6.0),
    ) else {
        unreachable!()
    };
    let (Ok(dist_d), Ok(age_d)) = (Exp::new(1.0 / 15.0), Exp::new(1.0 / 700.0)) else {
        unreachable!()
    };
    let mut out = Vec::with_capacity(n * SAMPLE_FRAUD_FEATURES.len());
    for _ in 0..n {
        let user_avg: f64 = user_avg_d.sample(&mut rng);
        let amount = user_avg * ratio_d.sample(&mut rng);
        let hour = f64::from(rng.random_range(0u8..24));
        let night = f64::from(u8::from(!(6.0..23.0).contains(&hour)));
        let merchant: f64 = merchant_d.sample(&mut rng);
        let device: f64 = device_d.sample(&mut rng);
        let c1h: f64 = p06.sample(&mut rng);
        let c24 = c1h + p3.sample(&mut rng);
        let distance: f64 = dist_d.sample(&mut rng);
        let flag = |rng: &mut StdRng, p: f64| f64::from(u8::from(rng.random::<f64>() < p));
        let foreign = flag(&mut rng, 0.06);
        let present = flag(&mut rng, 0.55);
        let age: f64 = age_d.sample(&mut rng);
        let fails: f64 = p015.sample(&mut rng);
        let views: f64 = p6.sample(&mut rng);
        let new_device = flag(&mut rng, 0.08);
        let ratio = amount / user_avg;
        let device = if rng.random::<f64>() < 0.05 {
            f64::NAN
        } else {
            device
        };
        let user_avg = if rng.random::<f64>() < 0.03 {
            f64::NAN
        } else {
            user_avg
        };
        out.extend(
            [
                amount, hour, night, merchant, device, user_avg, ratio, c1h, c24, distance,
                foreign, present, age, fails, views, new_device,
            ]
            .map(|x| x as f32),
        );
    }
    out
}

/// Writes `drift_reference.parquet` into a recommender's version folder: the profile of the
/// top-10 scores it answers its training users (`score_0` .. `score_9`), what live drift
/// compares the served scores with.
fn write_recs_reference(
    art: &infermesh_recs::RecsArtifact,
    version_dir: &Path,
) -> std::io::Result<()> {
    use infermesh_recs::recommender::{REFERENCE_K, REFERENCE_MAX_USERS, reference_scores};
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let columns: Vec<(String, infermesh_drift::Values)> =
        reference_scores(art, REFERENCE_K, REFERENCE_MAX_USERS)
            .map_err(|e| other(&e))?
            .into_iter()
            .map(|(n, s)| {
                (
                    n,
                    infermesh_drift::Values::Float(s.into_iter().map(f64::from).collect()),
                )
            })
            .collect();
    infermesh_drift::file::write_columns(
        &version_dir.join(infermesh_drift::file::REFERENCE_FILE),
        &columns,
    )
    .map_err(|e| other(&e))
}

/// Writes `drift_reference.parquet` into the sample fraud model's version folder: the profile
/// of `n` transactions from its training generator ([`sample_fraud_rows`]), each feature typed
/// as the training table would be (float64; whole-number features int64), plus the model's
/// own score on them as `output__0` (what the server's live drift compares the served
/// scores with: prediction drift).
pub fn write_sample_fraud_reference(
    version_dir: &Path,
    n: usize,
    seed: u64,
) -> std::io::Result<()> {
    use infermesh_drift::Values;
    use infermesh_drift::profile::ColumnProfile;
    let width = SAMPLE_FRAUD_FEATURES.len();
    let rows = sample_fraud_rows(n, seed);
    let mut profiles = Vec::with_capacity(width + 1);
    for (j, name) in SAMPLE_FRAUD_FEATURES.iter().enumerate() {
        let column: Vec<f64> = rows.chunks_exact(width).map(|r| f64::from(r[j])).collect();
        let whole = column.iter().all(|x| x.is_finite() && x.fract() == 0.0);
        let values = if whole {
            Values::Int(column.iter().map(|&x| x as i64).collect())
        } else {
            Values::Float(column)
        };
        if let Some(p) = ColumnProfile::of(&values) {
            profiles.push(((*name).to_string(), p));
        }
    }
    #[cfg(feature = "trees")]
    {
        use infermesh_model_core::TabularModel;
        let model = infermesh_trees::TreeEnsemble::from_xgboost_json(MODEL)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut scores = vec![0f32; n];
        model
            .predict(&rows, &mut scores)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let values = Values::Float(scores.into_iter().map(f64::from).collect());
        if let Some(p) = ColumnProfile::of(&values) {
            profiles.push(("output__0".to_string(), p));
        }
    }
    infermesh_drift::file::write_profile(
        &version_dir.join(infermesh_drift::file::REFERENCE_FILE),
        &profiles,
    )
    .map_err(|e| std::io::Error::other(e.to_string()))
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
    let invalid = |e: infermesh_recs::RecsError| std::io::Error::other(e.to_string());
    if model_dir.join("config.toml").exists() {
        // A repository written before the sample recommenders carried their drift reference.
        let version = model_dir.join("1");
        if version.join("recs.json").is_file()
            && !version.join(infermesh_drift::file::REFERENCE_FILE).exists()
        {
            let art = infermesh_recs::RecsArtifact::load(&version).map_err(invalid)?;
            write_recs_reference(&art, &version)?;
            return Ok(true);
        }
        return Ok(false);
    }
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
    write_recs_reference(&art, &model_dir.join("1"))?;
    std::fs::write(
        model_dir.join("config.toml"),
        "# Sample recommender (LightFM-style, WARP, 16 components) of a generated shop.\n\
         platform = \"recommender\"\n\
         [recommender]\n\
         max_k = 100\n\
         # A request without recent_items takes the user's session_product_views from the\n\
         # feature store (when the server has one).\n\
         [feature_store]\n\
         features = { recent_items = \"session_views:session_product_views\" }\n",
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
            // The drift reference of its scores: the top 10 of each training user.
            let profile = infermesh_drift::file::read_profile(
                &d.path()
                    .join(name)
                    .join("1")
                    .join(infermesh_drift::file::REFERENCE_FILE),
            )
            .unwrap()
            .unwrap();
            assert_eq!(profile.len(), 10);
            assert_eq!(profile[0].0, "score_0");
            assert_eq!(profile[0].1.len(), 51);
        }
        #[cfg(feature = "anomaly")]
        {
            let v = d.path().join("anomaly/1");
            let forest = infermesh_anomaly::IsolationForest::load(
                &v.join(infermesh_anomaly::ARTIFACT_FILE),
                &Default::default(),
            )
            .unwrap();
            assert_eq!(forest.n_features(), SAMPLE_ANOMALY_FEATURES.len());
            // Contamination 1 %: about 1 % of the generator's rows are flagged.
            let rows = sample_fraud_rows(2000, 99);
            let mut flagged = 0;
            for r in rows.chunks_exact(SAMPLE_FRAUD_FEATURES.len()) {
                let row = [r[0], r[6], r[1], r[8], r[9]];
                flagged += usize::from(forest.score_row(&row).unwrap().is_anomaly());
            }
            assert!((5..=60).contains(&flagged), "{flagged} of 2000 flagged");
            let profile =
                infermesh_drift::file::read_profile(&v.join(infermesh_drift::file::REFERENCE_FILE))
                    .unwrap()
                    .unwrap();
            let cols: Vec<&str> = profile.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(cols.last(), Some(&"is_anomaly"));
            assert_eq!(cols.len(), SAMPLE_ANOMALY_FEATURES.len() + 2);
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
