//! Trains tiny categorisers on generated, clearly separable merchant strings and reloads them
//! through the serving loader.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use infermesh_text::TextModel;
use infermesh_text::classifier::{ClassifierPooling, TextClassifier, argmax};
use infermesh_text::lexical::LexicalHead;
use infermesh_training::categorizer::{
    CategorizerError, DataError, EvalArgs, ModelInit, TrainParams, TrainedCategorizer, evaluate,
    train,
};
use tokenizers::Tokenizer;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;

const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "dining",
        &["cafe", "pizza", "sushi", "burger", "bistro", "diner"],
    ),
    (
        "transport",
        &["uber", "taxi", "metro", "fuel", "parking", "train"],
    ),
    (
        "groceries",
        &["market", "grocer", "bakery", "butcher", "dairy", "produce"],
    ),
];
const FILLER: &[&str] = &["pos", "purchase", "card", "ref", "debit", "online", "store"];

/// Merchant-like strings: filler words around one category keyword (deterministic).
fn dataset(rows_per_class: usize) -> String {
    let mut csv = String::from("id,description,category\n");
    let mut k = 0usize;
    for (label, words) in CATEGORIES {
        for i in 0..rows_per_class {
            k += 1;
            let f1 = FILLER[(i * 3 + k) % FILLER.len()];
            let f2 = FILLER[(i * 5 + 1) % FILLER.len()];
            let w = words[(i * 7 + k) % words.len()];
            csv.push_str(&format!("{k},{f1} {w} {f2} {},{label}\n", 100 + i));
        }
    }
    csv
}

/// A BERT-style WordPiece tokenizer over the dataset's words, saved as `dir/tokenizer.json`.
fn write_tokenizer(dir: &Path) -> usize {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(FILLER.iter().map(|s| s.to_string()));
    for (_, words) in CATEGORIES {
        vocab.extend(words.iter().map(|s| s.to_string()));
    }
    vocab.extend((0..10).map(|d| d.to_string()));
    let vocab_path = dir.join("vocab.txt");
    std::fs::write(&vocab_path, vocab.join("\n")).unwrap();
    let wp = WordPiece::from_file(vocab_path.to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::default()))
        .unwrap();
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    vocab.len()
}

fn distilbert_params(dir: &Path, data: &str) -> TrainParams {
    let data_path = dir.join("train.csv");
    std::fs::write(&data_path, data).unwrap();
    write_tokenizer(dir);
    let mut p = TrainParams::new(
        data_path,
        "description",
        "category",
        ModelInit::DistilBert {
            layers: 2,
            hidden: 32,
            heads: 2,
            tokenizer_dir: dir.to_path_buf(),
        },
        dir.join("model"),
    );
    p.epochs = 30;
    p.batch_size = 16;
    p.val_fraction = 0.2;
    p.patience = 10;
    p
}

const PROBES: &[&str] = &[
    "pos sushi card 7",
    "uber ref 3",
    "bakery online",
    "store fuel debit 12",
    "metro",
];

/// The served model gives the trained one's logits on [`PROBES`], within `tol`.
fn assert_same_logits(served: &TextClassifier, trained: &TrainedCategorizer, tol: f32) {
    let expected = trained.predict_logits(PROBES).unwrap();
    let got = served.predict_logits(PROBES).unwrap();
    for (a, b) in got.iter().zip(&expected) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }
}

/// `infermesh eval categorizer --json --predictions` of the model in `model` on `dir`'s
/// training file; the report and the predictions file.
fn eval_train_rows(
    dir: &Path,
    model: &Path,
) -> (
    infermesh_training::categorizer::EvalReport,
    std::path::PathBuf,
) {
    let predictions = dir.join("predictions.csv");
    let report = EvalArgs {
        data: dir.join("train.csv"),
        text_column: "description".into(),
        label_column: "category".into(),
        model: model.to_path_buf(),
        json: true,
        predictions: Some(predictions.clone()),
    }
    .run()
    .unwrap();
    (report, predictions)
}

#[test]
fn tiny_distilbert_learns_separable_categories_and_reloads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = distilbert_params(dir.path(), &dataset(40)).check().unwrap();
    let outcome = train(&cfg).unwrap();
    let r = &outcome.report;
    assert_eq!(r.architecture, "DistilBertForSequenceClassification");
    assert!(r.validation_macro_f1 > 0.9, "{r:?}");
    assert_eq!(r.label_counts["dining"], 40);
    assert_eq!(r.validation_rows, 24);
    assert!(r.best_epoch >= 1 && r.best_epoch <= r.epochs_run);

    let out = dir.path().join("model");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training_report.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["id2label"]["0"], "dining");
    assert_eq!(config["label2id"]["transport"], 2);
    assert_eq!(config["num_labels"], 3);

    // The serving loader (candle-transformers' DistilBERT) gives the trainer's logits.
    let served = TextClassifier::load(&out).unwrap();
    assert_eq!(served.labels(), ["dining", "groceries", "transport"]);
    assert_same_logits(&served, &outcome.model, 1e-3);
    assert_eq!(
        served.predict_labels(PROBES).unwrap(),
        outcome.model.predict(PROBES).unwrap()
    );

    let (eval, predictions) = eval_train_rows(dir.path(), &out);
    assert_eq!(eval.n, 120);
    assert!(eval.macro_f1 > 0.9, "{eval:?}");
    // The predictions file holds every row, the served model's label for its text, a
    // probability of at least 1/3 (the top of 3 classes), and the report's accuracy.
    let mut rd = csv::Reader::from_path(&predictions).unwrap();
    assert_eq!(
        rd.headers().unwrap(),
        vec!["text", "label", "predicted", "probability"]
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 120);
    let texts: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    let served_labels = served.predict_labels(&texts).unwrap();
    let mut correct = 0;
    for (row, want) in rows.iter().zip(&served_labels) {
        assert_eq!(&row[2], want, "{row:?}");
        let p: f32 = row[3].parse().unwrap();
        assert!((1.0 / 3.0..=1.0).contains(&p), "{row:?}");
        correct += usize::from(row[1] == row[2]);
    }
    assert!((correct as f64 / 120.0 - eval.accuracy).abs() < 1e-12);
}

#[test]
fn training_is_deterministic_given_the_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut pa = distilbert_params(a.path(), &dataset(12));
    pa.epochs = 2;
    let mut pb = distilbert_params(b.path(), &dataset(12));
    pb.epochs = 2;
    let ra = train(&pa.check().unwrap()).unwrap();
    let rb = train(&pb.check().unwrap()).unwrap();
    assert_eq!(
        ra.model.predict_logits(PROBES).unwrap(),
        rb.model.predict_logits(PROBES).unwrap()
    );
    assert_eq!(ra.report.history, rb.report.history);
}

/// `--soup 2`: the written weights are the mean of two runs that share their start (seed 5)
/// and differ in split and shuffles (seeds 5 and 6), and the served soup gives the trained
/// one's logits.
#[test]
fn soup_writes_the_mean_of_its_members() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = distilbert_params(dir.path(), &dataset(12));
    p.epochs = 2;
    p.seed = 5;
    let mut a = p.clone();
    a.out = dir.path().join("a");
    let mut b = a.clone();
    b.seed = 6;
    b.init_seed = Some(5);
    b.out = dir.path().join("b");
    p.soup = 2;
    p.out = dir.path().join("soup");
    let soup = train(&p.check().unwrap()).unwrap();
    let seeds: Vec<u64> = soup.report.soup.iter().map(|m| m.seed).collect();
    assert_eq!(seeds, [5, 6]);
    train(&a.check().unwrap()).unwrap();
    train(&b.check().unwrap()).unwrap();
    let load = |name: &str| {
        let bytes = std::fs::read(dir.path().join(name).join("model.safetensors")).unwrap();
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap()
    };
    let (ts, ta, tb) = (load("soup"), load("a"), load("b"));
    assert_eq!(ts.len(), ta.len());
    let mut differing = 0;
    for (name, t) in &ts {
        let t = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let x = ta[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = tb[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        differing += usize::from(x != y);
        for ((s, x), y) in t.iter().zip(&x).zip(&y) {
            assert!((s - (x + y) / 2.0).abs() < 1e-6, "{name}: {s} vs {x}, {y}");
        }
    }
    assert!(differing > 0, "the members trained identically");
    let served = TextClassifier::load(&dir.path().join("soup")).unwrap();
    assert_same_logits(&served, &soup.model, 1e-4);
}

/// `--lexical-weight 0.5 --refit`: the lexical head is fitted on every row, written beside
/// the classifier, reported on validation, and blended the same way by the trainer, the
/// loader plus `LexicalHead::blend`, and `infermesh eval`.
#[test]
fn lexical_head_is_fitted_written_and_blended_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = distilbert_params(dir.path(), &dataset(12));
    // Two epochs: a classifier still unsure, so the blend visibly moves its logits.
    p.epochs = 2;
    p.refit = true;
    p.lexical_weight = 0.5;
    let outcome = train(&p.check().unwrap()).unwrap();
    let lexical = outcome.report.lexical.clone().unwrap();
    assert_eq!(lexical.rows, 36);
    assert!(lexical.features > 100, "{lexical:?}");
    assert_eq!((lexical.blend_weight, lexical.c), (0.5, 10.0));
    assert!((0.0..=1.0).contains(&lexical.validation_macro_f1_blend));
    // Every category keyword is in the training rows: the lexical head alone is right.
    assert!(lexical.validation_macro_f1_lexical > 0.9, "{lexical:?}");

    let out = dir.path().join("model");
    let served = TextClassifier::load(&out).unwrap();
    let head = LexicalHead::load_optional(&out, served.labels())
        .unwrap()
        .expect("lexical.json written");
    assert_eq!(head.blend_weight(), 0.5);
    let raw = served.predict_logits(PROBES).unwrap();
    let trained = outcome.model.predict_logits(PROBES).unwrap();
    let mut moved = 0;
    for ((mut row, want), text) in raw.into_iter().zip(&trained).zip(PROBES) {
        let before = row.clone();
        head.blend(&mut row, text);
        for (x, y) in row.iter().zip(want) {
            assert!((x - y).abs() < 1e-3, "{row:?} vs {want:?}");
        }
        moved += usize::from(before.iter().zip(&row).any(|(a, b)| (a - b).abs() > 1e-2));
        // Blended logits are log-probabilities.
        let total: f32 = row.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "{row:?}");
    }
    assert_eq!(moved, PROBES.len());
    // The head alone gets the rows it was fitted on right.
    let data = dataset(12);
    for line in data.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let logits = head.logits(fields[1]);
        assert_eq!(served.labels()[argmax(&logits)], fields[2], "{line}");
    }

    // `infermesh eval` reads the head too: its probabilities are the blend's.
    let (_, predictions) = eval_train_rows(dir.path(), &out);
    let mut rd = csv::Reader::from_path(&predictions).unwrap();
    for row in rd.records().take(10).map(Result::unwrap) {
        let blended = &outcome.model.predict_logits(&[&row[0]]).unwrap()[0];
        let best = argmax(blended);
        assert_eq!(&row[2], served.labels()[best]);
        let p: f32 = row[3].parse().unwrap();
        assert!(
            (p - blended[best].exp()).abs() < 1e-3,
            "{row:?} vs {blended:?}"
        );
    }

    // Training again into the same directory without a head removes the old one.
    let mut again = distilbert_params(dir.path(), &dataset(12));
    again.epochs = 1;
    train(&again.check().unwrap()).unwrap();
    assert!(!out.join("lexical.json").exists());
    assert!(!out.join("lexical.safetensors").exists());
}

/// A BERT base the test writes itself (random weights under bare `embeddings.*` /
/// `encoder.*` names, no pooler), fine-tuned for one epoch and served back.
#[test]
fn bert_from_a_base_directory_reloads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    let vocab = write_tokenizer(&base);
    let cfg = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    });
    std::fs::write(base.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let bert_cfg: candle_transformers::models::bert::Config = serde_json::from_value(cfg).unwrap();
    candle_transformers::models::bert::BertModel::load(vb, &bert_cfg).unwrap();
    vm.save(base.join("model.safetensors")).unwrap();

    let data = dir.path().join("train.csv");
    std::fs::write(&data, dataset(10)).unwrap();
    let mut p = TrainParams::new(
        data,
        "description",
        "category",
        ModelInit::Base { dir: base.clone() },
        dir.path().join("model"),
    );
    p.epochs = 1;
    p.lr = Some(1e-3);
    let outcome = train(&p.clone().check().unwrap()).unwrap();
    assert_eq!(outcome.report.architecture, "BertForSequenceClassification");
    let served = TextClassifier::load(&dir.path().join("model")).unwrap();
    assert_same_logits(&served, &outcome.model, 1e-3);
    let bytes = std::fs::read(dir.path().join("model/model.safetensors")).unwrap();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    assert!(tensors.contains_key("bert.encoder.layer.0.attention.self.query.weight"));
    assert!(tensors.contains_key("bert.pooler.dense.weight"));
    assert!(tensors.contains_key("classifier.weight"));

    // Prototype head + refit: the kept (and written) model is the one refit on every row.
    let mut q = p.clone();
    q.head_init = infermesh_training::categorizer::HeadInit::Prototype;
    q.refit = true;
    q.epochs = 2;
    q.out = dir.path().join("refit");
    let outcome = train(&q.check().unwrap()).unwrap();
    let r = &outcome.report;
    assert_eq!(r.refit_rows, Some(r.train_rows + r.validation_rows));
    assert_eq!(r.train_rows + r.validation_rows, 30);
    let served = TextClassifier::load(&dir.path().join("refit")).unwrap();
    assert_same_logits(&served, &outcome.model, 1e-3);
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("refit/training_report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["refit_rows"], 30);

    // Mean pooling: no pooler is written, config.json says so, and the served model gives
    // the trained one's logits.
    let mut m = p.clone();
    m.pooling = ClassifierPooling::Mean;
    m.head_init = infermesh_training::categorizer::HeadInit::Prototype;
    m.out = dir.path().join("mean");
    let outcome = train(&m.check().unwrap()).unwrap();
    let served = TextClassifier::load(&dir.path().join("mean")).unwrap();
    assert_eq!(served.pooling(), ClassifierPooling::Mean);
    assert_same_logits(&served, &outcome.model, 1e-3);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("mean/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["classifier_pooling"], "mean");
    let bytes = std::fs::read(dir.path().join("mean/model.safetensors")).unwrap();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    assert!(!tensors.contains_key("bert.pooler.dense.weight"));

    // Linear probe alone (epochs 0, `infermesh train categorizer`'s default with --base):
    // epoch 0 is the kept model, the one written is refitted on every row without being
    // asked (--refit off), and it serves as trained.
    let mut probe = p.clone();
    probe.pooling = ClassifierPooling::Mean;
    probe.head_init = infermesh_training::categorizer::HeadInit::Probe;
    probe.epochs = 0;
    probe.refit = false;
    probe.out = dir.path().join("probe");
    let outcome = train(&probe.clone().check().unwrap()).unwrap();
    let r = &outcome.report;
    assert_eq!((r.best_epoch, r.epochs_run, r.history.len()), (0, 0, 1));
    assert_eq!(r.head_init, "probe");
    assert_eq!(r.refit_rows, Some(30));
    assert!(r.history[0].train_loss.is_finite() && r.history[0].train_loss > 0.0);
    let served = TextClassifier::load(&dir.path().join("probe")).unwrap();
    assert_same_logits(&served, &outcome.model, 1e-3);
    // Probe then fine-tuning: epoch 0 is scored beside the fine-tuned epochs; a fine-tuned
    // epoch that wins is kept as trained on the training rows (no --refit), the probe is
    // refitted on every row.
    probe.epochs = 2;
    let r = train(&probe.check().unwrap()).unwrap().report;
    let epochs: Vec<usize> = r.history.iter().map(|h| h.epoch).collect();
    assert_eq!(epochs, [0, 1, 2]);
    assert_eq!(r.epochs_run, 2);
    let expected_refit = (r.best_epoch == 0).then_some(30);
    assert_eq!(r.refit_rows, expected_refit, "best epoch {}", r.best_epoch);

    // A base missing encoder tensors is refused by name.
    std::fs::write(base.join("model.safetensors"), b"not safetensors").unwrap();
    let err = train(&p.clone().check().unwrap()).unwrap_err();
    assert!(matches!(err, CategorizerError::Base { .. }), "{err}");
}

#[test]
fn bad_inputs_are_typed_errors_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let one_class = "description,category\npos cafe,dining\npos sushi,dining\n";
    let err = train(&distilbert_params(dir.path(), one_class).check().unwrap()).unwrap_err();
    assert!(
        matches!(err, CategorizerError::Data(DataError::OneClass { .. })),
        "{err}"
    );

    let err = train(&distilbert_params(dir.path(), "").check().unwrap()).unwrap_err();
    assert!(matches!(err, CategorizerError::Data(_)), "{err}");

    let mut p = distilbert_params(dir.path(), &dataset(3));
    p.text_column = "text".into();
    let err = train(&p.check().unwrap()).unwrap_err();
    assert!(
        matches!(err, CategorizerError::Data(DataError::MissingColumn { .. })),
        "{err}"
    );

    let empty_text = "description,category\npos cafe,dining\n ,transport\n";
    let err = train(&distilbert_params(dir.path(), empty_text).check().unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            CategorizerError::Data(DataError::EmptyText { row: 2, .. })
        ),
        "{err}"
    );

    let err = evaluate(
        &dir.path().join("no-model"),
        &dir.path().join("train.csv"),
        "description",
        "category",
    )
    .unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}
