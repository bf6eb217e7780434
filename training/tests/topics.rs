//! `infermesh train topics` and `eval topics` end to end on a generated CSV of three themes,
//! embedded by all-MiniLM-L6-v2 (from the model cache `scripts/test.sh` fills): a fitted
//! model must find the themes (NMI and ARI against the theme labels), write a version the
//! server loads, and use `--embeddings` when given.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use infermesh_text::SentenceEncoder;
use infermesh_topics::{LoadLimits, TopicModel};
use infermesh_training::npy::write_f32_matrix;
use infermesh_training::topics::{EvalTopicsArgs, TrainTopicsArgs, embed};
use infermesh_training::{EvalCommand, TrainCommand};

#[derive(Debug, Parser)]
struct Train {
    #[command(flatten)]
    args: TrainTopicsArgs,
}

#[derive(Debug, Parser)]
struct Eval {
    #[command(flatten)]
    args: EvalTopicsArgs,
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    train: TrainCommand,
}

#[derive(Debug, Parser)]
struct EvalCli {
    #[command(subcommand)]
    eval: EvalCommand,
}

/// all-MiniLM-L6-v2 in the model cache (where `infermesh_server::sample::default_model_cache`
/// looks: `INFERMESH_MODEL_CACHE`, else `~/.cache/infermesh/models`).
fn minilm_dir() -> PathBuf {
    let cache = match std::env::var_os("INFERMESH_MODEL_CACHE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/infermesh/models"),
    };
    let dir = cache.join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not in {}: run scripts/test.sh (it fetches the weights once)",
        dir.display()
    );
    dir
}

const THEMES: [(&str, [&str; 5], [&str; 4]); 3] = [
    (
        "sport",
        ["striker", "goalkeeper", "referee", "midfielder", "coach"],
        [
            "scored a late goal in the football match",
            "was sent off during the league game",
            "celebrated the championship win with the fans",
            "trained on the pitch before the cup final",
        ],
    ),
    (
        "baking",
        ["baker", "pastry chef", "grandmother", "home cook", "chef"],
        [
            "baked a chocolate cake with butter and sugar",
            "kneaded the bread dough and let it rise in the oven",
            "whisked eggs and flour for the sponge recipe",
            "decorated the cupcakes with vanilla frosting",
        ],
    ),
    (
        "space",
        [
            "astronomer",
            "astronaut",
            "telescope team",
            "space agency",
            "physicist",
        ],
        [
            "observed a distant galaxy through the telescope",
            "launched a rocket to orbit the planet Mars",
            "discovered a comet passing near the sun",
            "studied the stars and black holes of the milky way",
        ],
    ),
];

/// 20 texts per theme (each subject with each predicate), interleaved, with a `theme` label.
fn corpus() -> (Vec<String>, Vec<&'static str>) {
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for i in 0..20 {
        for (label, subjects, predicates) in THEMES {
            texts.push(format!("The {} {}", subjects[i % 5], predicates[i / 5]));
            labels.push(label);
        }
    }
    (texts, labels)
}

fn write_csv(path: &Path, texts: &[String], labels: &[&str]) {
    let mut csv = String::from("id,text,theme\n");
    for (i, (t, l)) in texts.iter().zip(labels).enumerate() {
        csv.push_str(&format!("{i},\"{t}\",{l}\n"));
    }
    std::fs::write(path, csv).unwrap();
}

fn train_args(data: &Path, out: &Path, extra: &[&str]) -> TrainTopicsArgs {
    let minilm = minilm_dir();
    let mut argv = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--text-column",
        "text",
        "--embedder",
        minilm.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        // Above the 10 texts sharing two predicates (a sub-theme that some CPUs' float
        // rounding lets HDBSCAN split off), below the 20 of a theme.
        "--min-topic-size",
        "11",
        "--n-neighbors",
        "10",
    ];
    argv.extend_from_slice(extra);
    Train::try_parse_from(argv).unwrap().args
}

#[test]
fn trains_a_servable_version_that_finds_the_themes_and_evaluates_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("texts.csv");
    let (texts, labels) = corpus();
    write_csv(&data, &texts, &labels);
    let out = dir.path().join("v1");
    let report = train_args(&data, &out, &["--seed", "7"])
        .train(false)
        .unwrap();
    assert_eq!(report.documents, 60);
    assert_eq!(report.embedding_dim, 384);
    assert_eq!(report.embeddings, "computed");
    assert_eq!(report.params.hdbscan.min_cluster_size, 11);
    assert_eq!(report.params.umap.seed, 7);
    assert_eq!(report.topics, 3, "{report:?}");

    // The version the server loads: artifact, encoder copy, config, report.
    for f in [
        "topics.json",
        "topics.safetensors",
        "config.toml",
        "training_report.json",
        "embedder/config.json",
        "embedder/model.safetensors",
        "embedder/tokenizer.json",
        "embedder/1_Pooling/config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("platform = \"topics\""), "{config}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("training_report.json")).unwrap()).unwrap();
    assert_eq!(written["topics"], 3);
    assert_eq!(written["documents"], 60);

    // Evaluated against the theme labels, through the version's own embedder/.
    let eval = Eval::try_parse_from([
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--text-column",
        "text",
        "--label-column",
        "theme",
    ])
    .unwrap()
    .args;
    let r = eval.evaluate().unwrap();
    assert_eq!((r.documents, r.labels, r.unlabelled), (60, 3, 0));
    assert!(r.nmi > 0.8 && r.ari > 0.8, "{r:?}");
    assert!((0.0..=0.2).contains(&r.outlier_share), "{r:?}");
    let mut as_json = eval.clone();
    as_json.json = true;
    let json: serde_json::Value = serde_json::from_str(&as_json.run().unwrap()).unwrap();
    // serde_json's default float parsing may land one unit in the last place away.
    assert!(
        (json["nmi"].as_f64().unwrap() - r.nmi).abs() < 1e-12,
        "{json}"
    );
    let text = eval.run().unwrap();
    assert!(text.starts_with("NMI ") && text.contains("ARI "), "{text}");

    // --nr-topics merges after fitting: a count (the outlier topic counted, as BERTopic
    // counts it), or auto.
    let merged = train_args(
        &data,
        &dir.path().join("v2"),
        &["--seed", "7", "--nr-topics", "2"],
    )
    .train(false)
    .unwrap();
    assert_eq!(merged.params.nr_topics, Some(2));
    assert_eq!(
        merged.topics,
        2 - usize::from(merged.outliers > 0),
        "{merged:?}"
    );
    let auto = train_args(
        &data,
        &dir.path().join("v3"),
        &["--seed", "7", "--nr-topics", "auto"],
    )
    .train(false)
    .unwrap();
    assert_eq!(auto.nr_topics.as_deref(), Some("auto"));
    assert!((1..=3).contains(&auto.topics), "{auto:?}");

    // A label column that is not there is a clear error.
    let bad = Eval::try_parse_from([
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--text-column",
        "text",
        "--label-column",
        "topic",
    ])
    .unwrap()
    .args
    .evaluate()
    .unwrap_err()
    .to_string();
    assert!(bad.contains("no column 'topic'"), "{bad}");
}

#[test]
fn precomputed_embeddings_are_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("texts.csv");
    let (texts, labels) = corpus();
    write_csv(&data, &texts, &labels);
    let encoder = SentenceEncoder::load(&minilm_dir()).unwrap();
    let emb = embed(&encoder, &texts, 32, false).unwrap();
    let dim = emb.cols();
    // Sport texts are given the baking texts' embeddings, so the rows fitted differ from
    // what the encoder computes for this table.
    let mut rows = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let from = if *label == "sport" { i + 1 } else { i };
        rows.extend_from_slice(emb.row(from));
    }
    let npy = dir.path().join("emb.npy");
    write_f32_matrix(&npy, texts.len(), dim, &rows).unwrap();
    let out = dir.path().join("v1");
    let r = train_args(&data, &out, &["--embeddings", npy.to_str().unwrap()])
        .train(false)
        .unwrap();
    assert_eq!(r.embeddings, npy.display().to_string());
    assert_eq!(r.embed_seconds, 0.0);
    // The saved topic embeddings are the means of the rows fitted: weighted by the topic
    // sizes they sum to the file's rows, not to the computed ones.
    let model = TopicModel::load(&out, &LoadLimits::default()).unwrap();
    let te = model.topic_embeddings();
    let mut fitted = vec![0f64; dim];
    for t in model.topics() {
        for (f, v) in fitted.iter_mut().zip(te.row((t.id + 1) as usize)) {
            *f += t.size as f64 * f64::from(*v);
        }
    }
    let sum = |rows: &[f32]| -> Vec<f64> {
        let mut s = vec![0f64; dim];
        for row in rows.chunks_exact(dim) {
            for (a, v) in s.iter_mut().zip(row) {
                *a += f64::from(*v);
            }
        }
        s
    };
    let dist = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (from_file, computed) = (sum(&rows), sum(emb.as_slice()));
    assert!(
        dist(&from_file, &computed) > 1.0,
        "the two sets of rows differ"
    );
    assert!(
        dist(&fitted, &from_file) < 1e-3,
        "fitted on the file's rows"
    );

    // Rows that do not match the table, or the encoder's width, are refused.
    write_f32_matrix(&npy, 59, dim, &rows[..59 * dim]).unwrap();
    let e = train_args(&data, &out, &["--embeddings", npy.to_str().unwrap()])
        .train(false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shape (59, 384)") && e.contains("60 rows"),
        "{e}"
    );
    write_f32_matrix(&npy, 60, 2, &vec![0.5; 120]).unwrap();
    let e = train_args(&data, &out, &["--embeddings", npy.to_str().unwrap()])
        .train(false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("384-d"), "{e}");
}

/// `--save-embeddings` writes what `--embeddings` reads, and `--assignments` writes one topic
/// per row: a second fit on the saved file gives the same assignments, and `eval` on the saved
/// file writes the same per-row topics and probabilities as `eval` through the embedder.
#[test]
fn saved_embeddings_and_assignments_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("texts.csv");
    let (texts, labels) = corpus();
    write_csv(&data, &texts, &labels);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (npy, first, second) = (path("emb.npy"), path("first.csv"), path("second.csv"));
    let computed = train_args(
        &data,
        &dir.path().join("v1"),
        &["--save-embeddings", &npy, "--assignments", &first],
    )
    .train(false)
    .unwrap();
    assert_eq!(computed.embeddings, "computed");
    let (rows, cols, _) = infermesh_training::npy::read_f32_matrix(Path::new(&npy)).unwrap();
    assert_eq!((rows, cols), (60, 384));
    let given = train_args(
        &data,
        &dir.path().join("v2"),
        &["--embeddings", &npy, "--assignments", &second],
    )
    .train(false)
    .unwrap();
    assert_eq!(given.embeddings, npy);
    let first = std::fs::read_to_string(&first).unwrap();
    assert_eq!(first.lines().count(), 61, "a header and one line per row");
    assert_eq!(first.lines().next(), Some("topic"));
    assert_eq!(
        first.lines().skip(1).filter(|l| *l != "-1").count(),
        60 - computed.outliers
    );
    assert_eq!(first, std::fs::read_to_string(&second).unwrap());

    let eval = |extra: &[&str]| {
        let v1 = path("v1");
        let mut argv = vec![
            "eval",
            "--model",
            v1.as_str(),
            "--data",
            data.to_str().unwrap(),
            "--text-column",
            "text",
            "--label-column",
            "theme",
        ];
        argv.extend_from_slice(extra);
        Eval::try_parse_from(argv).unwrap().args.evaluate().unwrap()
    };
    let (a, b) = (path("eval_a.csv"), path("eval_b.csv"));
    let through_embedder = eval(&["--assignments", &a]);
    let from_file = eval(&["--embeddings", &npy, "--assignments", &b]);
    assert_eq!(through_embedder, from_file);
    let a = std::fs::read_to_string(&a).unwrap();
    assert_eq!(a.lines().next(), Some("topic,probability,label"));
    assert_eq!(a.lines().count(), 61);
    assert_eq!(a, std::fs::read_to_string(&b).unwrap());

    // A file whose rows do not match the table is refused.
    write_f32_matrix(Path::new(&npy), 59, 384, &vec![0.1; 59 * 384]).unwrap();
    let v1 = path("v1");
    let e = Eval::try_parse_from([
        "eval",
        "--model",
        v1.as_str(),
        "--data",
        data.to_str().unwrap(),
        "--text-column",
        "text",
        "--label-column",
        "theme",
        "--embeddings",
        npy.as_str(),
    ])
    .unwrap()
    .args
    .evaluate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("59 rows") && e.contains("60"), "{e}");
}

#[test]
fn help_states_what_each_job_does_and_its_defaults() {
    let mut train = Cli::command();
    let help = train
        .find_subcommand_mut("topics")
        .unwrap()
        .render_long_help()
        .to_string();
    for want in [
        "topic model",
        "--embedder",
        "--embeddings",
        "--min-topic-size",
        "Default 10",
        "auto",
        "--seed",
        "Default 42",
        "--n-neighbors",
        "Default 15",
        "--n-components",
        "Default 5",
    ] {
        assert!(
            help.contains(want),
            "train topics --help lacks {want:?}:\n{help}"
        );
    }
    let mut eval = EvalCli::command();
    let help = eval
        .find_subcommand_mut("topics")
        .unwrap()
        .render_long_help()
        .to_string();
    for want in ["NMI", "ARI", "outliers", "--label-column", "--json"] {
        assert!(
            help.contains(want),
            "eval topics --help lacks {want:?}:\n{help}"
        );
    }
    // Bad flag values are refused by the parser.
    assert!(
        Train::try_parse_from([
            "train",
            "--data",
            "x",
            "--text-column",
            "t",
            "--embedder",
            "e",
            "--out",
            "o",
            "--nr-topics",
            "zero"
        ])
        .is_err()
    );
}
