//! `infermesh train fraud` end to end on generated transactions: the written version loads in
//! the tree engine and the server's config reader, its card's metrics are the test split's,
//! bad data is refused before anything is written, and registration works against the local
//! registry and against the real MLflow server scripts/test.sh starts
//! (`INFERMESH_TEST_MLFLOW_URI`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use clap::Parser;
use infermesh_model_core::rng::SplitMix64;
use infermesh_training::fraud::{FraudJobError, TrainFraudArgs};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainFraudArgs,
}

fn args(extra: &[&str]) -> TrainFraudArgs {
    let mut argv = vec!["train-fraud", "--quiet"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().args
}

/// The generated table's flags (label, dropped id, categorical merchant, one thread) plus
/// `extra`.
fn tx_args(csv: &Path, out: &Path, extra: &[&str]) -> TrainFraudArgs {
    let (csv, out) = (csv.to_str().unwrap(), out.to_str().unwrap());
    let mut argv = vec![
        "--data",
        csv,
        "--label",
        "is_fraud",
        "--drop",
        "tx_id",
        "--categorical",
        "merchant",
        "--out",
        out,
        "--threads",
        "1",
    ];
    argv.extend_from_slice(extra);
    args(&argv)
}

/// `rows` transactions: fraud is likelier with a high amount, a risky merchant category and a
/// new device; `hour` is noise; some amounts are missing; ids are unique.
fn transactions(path: &Path, rows: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut out = String::from("tx_id,amount,merchant,new_device,hour,is_fraud\n");
    let merchants = ["grocery", "travel", "crypto", "fuel"];
    for i in 0..rows {
        let amount = (rng.next_f64() * 6.0).exp();
        let m = rng.below(4);
        let new_device = u8::from(rng.next_f64() < 0.2);
        let hour = rng.below(24);
        let logit =
            -5.0 + 0.6 * amount.ln() + [0.0, 0.8, 2.0, 0.2][m] + 1.5 * f64::from(new_device);
        let fraud = rng.next_f64() < 1.0 / (1.0 + (-logit).exp());
        let amount_cell = if i % 50 == 0 {
            String::new()
        } else {
            format!("{amount:.2}")
        };
        out.push_str(&format!(
            "tx{i},{amount_cell},{},{new_device},{hour},{}\n",
            merchants[m],
            u8::from(fraud)
        ));
    }
    std::fs::write(path, out).unwrap();
}

/// The MLflow server scripts/test.sh started.
fn mlflow_uri() -> String {
    std::env::var("INFERMESH_TEST_MLFLOW_URI").expect(
        "INFERMESH_TEST_MLFLOW_URI is not set: run scripts/test.sh, which starts an MLflow server",
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The model card a training run wrote into `out`.
fn read_card(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("card.json")).unwrap()).unwrap()
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    transactions(&csv, 4000, 11);
    (dir, csv)
}

#[test]
fn trains_a_servable_version_with_a_card() {
    let (dir, csv) = data_dir();
    let out = dir.path().join("v1");
    let a = tx_args(&csv, &out, &[]);
    let r = a.train().unwrap();
    assert_eq!(r.rows, 4000);
    assert_eq!(r.split.iter().sum::<usize>(), 4000);
    assert!(r.best_iteration >= 1);
    let pr_auc = r.test["pr_auc"].as_f64().unwrap();
    let positives = r.test["positives"].as_f64().unwrap();
    let prevalence = positives / r.test["rows"].as_f64().unwrap();
    // Learnable signal: well above the no-skill PR-AUC (the prevalence).
    assert!(
        pr_auc > 2.0 * prevalence,
        "PR-AUC {pr_auc} vs prevalence {prevalence}"
    );
    assert!(r.test["roc_auc"].as_f64().unwrap() > 0.75);

    // The version: the tree engine reads model.txt with the feature names, the server's
    // config reader accepts config.toml, the card holds what the report says.
    let model = infermesh_trees::TreeEnsemble::from_lightgbm_text(
        &std::fs::read_to_string(out.join("model.txt")).unwrap(),
    )
    .unwrap();
    use infermesh_model_core::TabularModel;
    assert_eq!(
        model.feature_names().unwrap(),
        ["amount", "merchant", "new_device", "hour"]
    );
    let model_dir = dir.path().join("repo/fraud");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::copy(out.join("config.toml"), model_dir.join("config.toml")).unwrap();
    // The drift reference: every feature, over the training rows.
    let profile = infermesh_training::drift::read_profile(&out.join("drift_reference.parquet"))
        .unwrap()
        .unwrap();
    let names: Vec<&str> = profile.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["amount", "merchant", "new_device", "hour"]);
    assert_eq!(profile[0].1.len(), r.split[0]);
    let cfg = infermesh_registry::ModelConfig::read("fraud", &model_dir).unwrap();
    assert_eq!(cfg.platform, "lightgbm");
    let card = read_card(&out);
    assert_eq!(card["metrics"]["pr_auc"], r.test["pr_auc"]);
    assert_eq!(card["categorical"]["merchant"][2], "grocery");
    assert_eq!(card["best_iteration"], r.best_iteration);

    // Same seed, same split, same model.
    let again = dir.path().join("v1-again");
    let a2 = TrainFraudArgs {
        out: again.clone(),
        ..a.clone()
    };
    a2.train().unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("model.txt")).unwrap(),
        std::fs::read_to_string(again.join("model.txt")).unwrap()
    );
    // An existing non-empty output is refused.
    assert!(matches!(a.train(), Err(FraudJobError::Invalid(_))));
}

#[test]
fn bad_data_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases: [(&str, &str); 4] = [
        ("amount,is_fraud\n1,0\n2,0\n3,0\n", "one class only"),
        ("amount,label\n1,0\n2,1\n", "no column 'is_fraud'"),
        ("amount,is_fraud\nlots,0\n2,1\n", "'lots' is not a number"),
        ("amount,is_fraud\n", "no rows"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let csv = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&csv, text).unwrap();
        let e = args(&[
            "--data",
            csv.to_str().unwrap(),
            "--label",
            "is_fraud",
            "--out",
            out.to_str().unwrap(),
        ])
        .train()
        .unwrap_err()
        .to_string();
        assert!(e.contains(needle), "case {i}: '{e}' lacks '{needle}'");
        assert!(!out.exists());
    }
    let e = args(&[
        "--data",
        dir.path().join("none.csv").to_str().unwrap(),
        "--label",
        "y",
        "--out",
        out.to_str().unwrap(),
    ])
    .train()
    .unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
    // A tracking server that is down fails before training, writing nothing.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_d, csv) = data_dir();
    let e = args(&[
        "--data",
        csv.to_str().unwrap(),
        "--label",
        "is_fraud",
        "--out",
        out.to_str().unwrap(),
        "--tracking-uri",
        &format!("http://127.0.0.1:{port}"),
        "--register",
        "fraud",
    ])
    .train()
    .unwrap_err();
    assert!(matches!(e, FraudJobError::Mlflow(_)), "{e}");
    assert!(!out.exists());
}

#[test]
fn registers_into_the_local_registry_as_challenger() {
    let (dir, csv) = data_dir();
    let registry = dir.path().join("registry");
    for v in 1..=2 {
        let out = dir.path().join(format!("out{v}"));
        let r = tx_args(
            &csv,
            &out,
            &[
                "--seed",
                &v.to_string(),
                "--register",
                "fraud",
                "--registry",
                registry.to_str().unwrap(),
            ],
        )
        .train()
        .unwrap();
        assert_eq!(r.registered, Some(("fraud".to_string(), v)));
    }
    let reg = infermesh_registry::LocalRegistry::new(&registry);
    assert_eq!(reg.versions("fraud").unwrap(), vec![1, 2]);
    assert_eq!(reg.get_by_alias("fraud", "challenger").unwrap(), Some(2));
    // The registry is a model repository the server scans.
    let snap = infermesh_registry::scan(&registry).unwrap();
    assert!(snap.models.contains_key("fraud"), "{snap:?}");
}

#[test]
fn tracks_and_registers_in_mlflow() {
    let uri = mlflow_uri();
    let (dir, csv) = data_dir();
    let name = format!("fraud-{}", uuid::Uuid::new_v4().simple());
    let out = dir.path().join("out");
    let r = tx_args(
        &csv,
        &out,
        &[
            "--tracking-uri",
            &uri,
            "--experiment",
            &name,
            "--register",
            &name,
        ],
    )
    .train()
    .unwrap();
    let (reg_name, version) = r.registered.clone().unwrap();
    assert_eq!(reg_name, name);
    runtime().block_on(async {
        let c = infermesh_registry::MlflowClient::new(&uri, Default::default()).unwrap();
        let mv = c.get_by_alias(&name, "challenger").await.unwrap().unwrap();
        assert_eq!(mv.number().unwrap(), version);
        assert_eq!(Some(mv.run_id.clone()), r.run_id);
        let run = c.get_run(&mv.run_id).await.unwrap();
        assert_eq!(
            run.info.status,
            infermesh_registry::mlflow::RunStatus::Finished
        );
        assert_eq!(run.metric("pr_auc"), r.test["pr_auc"].as_f64());
        assert_eq!(run.param("num_leaves"), Some("31"));
        let history = c
            .metric_history(&mv.run_id, "valid_pr_auc_by_round")
            .await
            .unwrap();
        assert!(history.len() >= r.best_iteration);
        let down = dir.path().join("down");
        let src = c.model_version_download_uri(&name, version).await.unwrap();
        c.download_dir(&src, "", &down).await.unwrap();
        assert_eq!(
            std::fs::read(down.join("model.txt")).unwrap(),
            std::fs::read(out.join("model.txt")).unwrap()
        );
    });
}

/// `--tune` flags small enough for a test: 6 trials, 3 at random, pruning after 3 rounds.
const TUNE: [&str; 10] = [
    "--tune",
    "6",
    "--tune-startup",
    "3",
    "--prune-warmup",
    "3",
    "--prune-min-trials",
    "2",
    "--num-iterations",
    "80",
];

#[test]
fn tuning_is_seeded_and_keeps_the_best_trial() {
    let (dir, csv) = data_dir();
    let run = |out: &str| {
        let mut extra = TUNE.to_vec();
        extra.extend(["--early-stopping", "15"]);
        tx_args(&csv, &dir.path().join(out), &extra)
            .train()
            .unwrap();
        read_card(&dir.path().join(out))
    };
    let (a, b) = (run("a"), run("b"));
    let t = &a["tuning"];
    assert_eq!(t["trials"], 6);
    // One thread, deterministic LightGBM, seeded sampler: the same search twice.
    assert_eq!(t["history"], b["tuning"]["history"]);
    assert_eq!(a["params"], b["params"]);
    let history = t["history"].as_array().unwrap();
    let best = t["best_valid_pr_auc"].as_f64().unwrap();
    for h in history {
        if h["pruned"] == false {
            assert!(h["value"].as_f64().unwrap() <= best);
        }
    }
    let best_trial = &history[t["best_trial"].as_u64().unwrap() as usize];
    assert_eq!(best_trial["value"].as_f64().unwrap(), best);
    // The final model keeps exactly the best trial's rounds (trained on train + validation).
    assert_eq!(a["best_iteration"], best_trial["best_iteration"]);
    assert_eq!(a["params"]["bagging_freq"], "1");
    assert!(a["metrics"]["pr_auc"].as_f64().unwrap() > 0.0);
}

#[test]
fn tuning_logs_nested_mlflow_runs_and_registers_the_best() {
    let uri = mlflow_uri();
    let (dir, csv) = data_dir();
    let name = format!("tune-{}", uuid::Uuid::new_v4().simple());
    let out = dir.path().join("out");
    let mut extra = TUNE.to_vec();
    extra.extend([
        "--tracking-uri",
        &uri,
        "--experiment",
        &name,
        "--register",
        &name,
    ]);
    let r = tx_args(&csv, &out, &extra).train().unwrap();
    let card = read_card(&out);
    let parent = r.run_id.clone().unwrap();
    runtime().block_on(async {
        use infermesh_registry::mlflow::{RunSearch, RunStatus};
        let c = infermesh_registry::MlflowClient::new(&uri, Default::default()).unwrap();
        let exp = c.experiment_by_name(&name).await.unwrap().unwrap();
        let trials = c
            .search_all_runs(&RunSearch {
                experiment_ids: vec![exp.experiment_id],
                filter: Some(format!("tags.mlflow.parentRunId = '{parent}'")),
                ..RunSearch::default()
            })
            .await
            .unwrap();
        assert_eq!(trials.len(), 6);
        let history = card["tuning"]["history"].as_array().unwrap();
        for run in &trials {
            let n: usize = run.tag("trial_number").unwrap().parse().unwrap();
            let h = &history[n];
            assert_eq!(h["run_id"].as_str(), Some(run.info.run_id.as_str()));
            assert_eq!(run.metric("valid_pr_auc"), h["value"].as_f64());
            let pruned = h["pruned"] == true;
            assert_eq!(
                run.tag("trial_state"),
                Some(if pruned { "PRUNED" } else { "COMPLETE" })
            );
            assert_eq!(
                run.info.status,
                if pruned {
                    RunStatus::Killed
                } else {
                    RunStatus::Finished
                }
            );
        }
        // The parent run holds the final model: the best trial's parameters, registered.
        let p = c.get_run(&parent).await.unwrap();
        assert_eq!(p.info.status, RunStatus::Finished);
        assert_eq!(
            p.param("learning_rate"),
            card["params"]["learning_rate"].as_str()
        );
        assert_eq!(p.param("tune_trials"), Some("6"));
        let mv = c.get_by_alias(&name, "challenger").await.unwrap().unwrap();
        assert_eq!(mv.run_id, parent);
        assert_eq!(Some(mv.number().unwrap()), r.registered.map(|(_, v)| v));
    });
}
