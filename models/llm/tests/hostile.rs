//! Hostile and broken model files: each is refused with a clear error, never a panic or an
//! allocation sized by the file.

mod common;

use std::io::Write;

use common::{V, gguf_bytes, set, smollm2_path, tiny_gguf, tiny_gguf_with};
use infermesh_llm::gguf::{read_content, scan};
use infermesh_llm::{GgufTokenizer, LlmError, LlmModel, LoadLimits};
use proptest::prelude::*;

fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("a temp file");
    f.write_all(bytes).expect("writes");
    f.flush().expect("flushes");
    f
}

fn load(bytes: &[u8]) -> Result<LlmModel, LlmError> {
    let f = write(bytes);
    LlmModel::load(f.path(), &LoadLimits::default())
}

fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&tensors.to_le_bytes());
    out.extend_from_slice(&kvs.to_le_bytes());
    out
}

#[test]
fn the_tiny_file_is_well_formed_and_its_tokenizer_works() {
    let f = write(&tiny_gguf());
    let (content, _) =
        read_content(f.path(), &LoadLimits::default()).expect("the tiny file parses");
    let tok =
        GgufTokenizer::from_gguf(&content, &LoadLimits::default()).expect("its tokenizer builds");
    let ids = tok.encode("hello world<|im_end|>").expect("encodes");
    let pieces: Vec<&str> = ids
        .iter()
        .map(|&i| tok.token_text(i).expect("in vocab"))
        .collect();
    assert_eq!(
        pieces,
        ["hell", "o", "Ġw", "o", "r", "l", "d", "<|im_end|>"]
    );
    assert_eq!(tok.decode(&ids), "hello world<|im_end|>");
    assert!(tok.is_end_of_generation(2) && tok.is_control(1) && !tok.is_end_of_generation(1));
    // No weights beyond the embedding: the model itself is refused, naming what is missing.
    let err = load(&tiny_gguf()).expect_err("no output norm");
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    assert!(err.to_string().contains("output_norm.weight"), "{err}");
}

#[test]
fn wrong_magic_versions_and_truncated_headers_are_refused() {
    let mut bad_magic = tiny_gguf();
    bad_magic[..4].copy_from_slice(b"GGML");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("three bytes", b"GGU".to_vec()),
        ("wrong magic", bad_magic),
        ("version 1", header(1, 0, 0)),
        ("version 99", header(99, 0, 0)),
        ("counts cut off", b"GGUF\x03\x00\x00\x00\x01".to_vec()),
        ("declares a tensor it lacks", header(3, 1, 0)),
    ];
    for (what, bytes) in cases {
        let err = load(&bytes).expect_err(what);
        assert!(
            matches!(err, LlmError::Malformed(_) | LlmError::Unsupported(_)),
            "{what}: {err}"
        );
    }
}

#[test]
fn huge_declared_counts_and_lengths_are_over_the_limits_before_allocation() {
    let over = |bytes: &[u8], what: &str| {
        let err = load(bytes).expect_err(what);
        assert!(matches!(err, LlmError::OverLimit { .. }), "{what}: {err}");
    };
    over(&header(3, u64::MAX, 0), "tensor count");
    over(&header(3, 0, u64::MAX), "metadata count");
    let mut long_key = header(3, 0, 1);
    long_key.extend_from_slice(&(1u64 << 40).to_le_bytes());
    over(&long_key, "key length");
    let mut long_array = header(3, 0, 1);
    long_array.extend_from_slice(&1u64.to_le_bytes());
    long_array.push(b'a');
    long_array.extend_from_slice(&9u32.to_le_bytes());
    long_array.extend_from_slice(&8u32.to_le_bytes());
    long_array.extend_from_slice(&u64::MAX.to_le_bytes());
    over(&long_array, "array length");
    // Within the limits but past the end of the file: truncated, not allocated.
    let mut short = header(3, 0, 1);
    short.extend_from_slice(&1000u64.to_le_bytes());
    short.extend_from_slice(b"abc");
    assert!(matches!(load(&short), Err(LlmError::Malformed(_))));
    let mut array_past_end = long_array[..long_array.len() - 8].to_vec();
    array_past_end.extend_from_slice(&100_000u64.to_le_bytes());
    assert!(matches!(load(&array_past_end), Err(LlmError::Malformed(_))));
}

#[test]
fn inconsistent_tensor_tables_and_alignment_are_refused() {
    let zero_alignment = gguf_bytes(&[("general.alignment", V::U32(0))], &[]);
    assert!(
        matches!(load(&zero_alignment), Err(LlmError::Malformed(_))),
        "candle would divide by it"
    );
    let overflow = gguf_bytes(&[], &[("t", vec![u64::MAX / 2, 4])]);
    assert!(matches!(load(&overflow), Err(LlmError::Malformed(_))));
    let mut past_end = gguf_bytes(&[], &[("t", vec![64])]);
    past_end.truncate(past_end.len() - 1);
    let err = load(&past_end).expect_err("tensor past the end");
    assert!(err.to_string().contains("past the end"), "{err}");
    let five_dims = gguf_bytes(&[], &[("t", vec![1, 1, 1, 1, 1])]);
    assert!(matches!(load(&five_dims), Err(LlmError::Malformed(_))));
}

#[test]
fn a_truncated_real_model_is_refused_at_every_cut() {
    let bytes = std::fs::read(smollm2_path()).expect("reads the model");
    let summary = {
        let f = write(&bytes[..]);
        scan(f.path(), &LoadLimits::default()).expect("the real file scans")
    };
    assert_eq!(
        (summary.version, summary.tensors, summary.metadata_entries),
        (3, 272, 33)
    );
    for cut in [
        4,
        24,
        1000,
        100_000,
        summary.data_offset as usize - 1,
        summary.data_offset as usize,
        bytes.len() - 1,
    ] {
        let err = load(&bytes[..cut]).expect_err("truncated");
        assert!(matches!(err, LlmError::Malformed(_)), "cut at {cut}: {err}");
    }
}

#[test]
fn limits_below_the_real_model_refuse_it() {
    let path = smollm2_path();
    let refuse = |limits: LoadLimits| {
        let err = LlmModel::load(&path, &limits).expect_err("over a limit");
        assert!(matches!(err, LlmError::OverLimit { .. }), "{err}");
    };
    refuse(LoadLimits {
        max_vocab: 1000,
        ..LoadLimits::default()
    });
    refuse(LoadLimits {
        max_array_len: 1000,
        ..LoadLimits::default()
    });
    refuse(LoadLimits {
        max_tensors: 10,
        ..LoadLimits::default()
    });
    refuse(LoadLimits {
        max_file_bytes: 1 << 20,
        ..LoadLimits::default()
    });
    refuse(LoadLimits {
        max_string_bytes: 100,
        ..LoadLimits::default()
    });
    refuse(LoadLimits {
        max_metadata_entries: 5,
        ..LoadLimits::default()
    });
}

#[test]
fn well_formed_files_with_unusable_tokenizers_or_models_are_refused_with_the_reason() {
    let tokenizer_error = |bytes: Vec<u8>| {
        let f = write(&bytes);
        let (content, _) = read_content(f.path(), &LoadLimits::default()).expect("parses");
        GgufTokenizer::from_gguf(&content, &LoadLimits::default()).expect_err("refused")
    };
    let err = tokenizer_error(tiny_gguf_with(|kv| {
        set(kv, "tokenizer.ggml.model", V::Str("llama".into()))
    }));
    assert!(matches!(err, LlmError::Unsupported(_)), "{err}");
    let err = tokenizer_error(tiny_gguf_with(|kv| {
        set(kv, "tokenizer.ggml.pre", V::Str("qwen2".into()))
    }));
    assert!(err.to_string().contains("qwen2"), "{err}");
    let unknown = V::StrArray(vec!["h e".into(), "x y".into()]);
    let err = tokenizer_error(tiny_gguf_with(|kv| {
        set(kv, "tokenizer.ggml.merges", unknown)
    }));
    assert!(matches!(err, LlmError::Tokenizer(_)), "{err}");
    let err = tokenizer_error(tiny_gguf_with(|kv| {
        set(
            kv,
            "tokenizer.ggml.merges",
            V::StrArray(vec!["nospace".into()]),
        )
    }));
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    let err = tokenizer_error(tiny_gguf_with(|kv| {
        set(kv, "tokenizer.ggml.eos_token_id", V::U32(1_000_000))
    }));
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    let err = tokenizer_error(tiny_gguf_with(|kv| {
        set(kv, "tokenizer.ggml.token_type", V::I32Array(vec![1; 3]))
    }));
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    let err = tokenizer_error(tiny_gguf_with(|kv| {
        kv.retain(|(k, _)| *k != "tokenizer.ggml.tokens")
    }));
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");
    let err = load(&tiny_gguf_with(|kv| {
        set(kv, "general.architecture", V::Str("gpt2".into()))
    }))
    .expect_err("gpt2");
    assert!(matches!(err, LlmError::Unsupported(_)), "{err}");
    // A RoPE dimension far past the head size: refused before anything is sized by it, by the
    // engine and on the mixture-of-experts path (candle's model would allocate positions x it).
    for experts in [0, 2] {
        let err = load(&tiny_gguf_with(|kv| {
            set(kv, "llama.rope.dimension_count", V::U32(u32::MAX / 2));
            set(kv, "llama.expert_count", V::U32(experts));
        }))
        .expect_err("a huge rope dimension");
        assert!(
            matches!(err, LlmError::Malformed(_) | LlmError::Unsupported(_)),
            "{experts} experts: {err}"
        );
    }
    let err = load(&tiny_gguf_with(|kv| {
        set(kv, "llama.block_count", V::U32(u32::MAX))
    }))
    .expect_err("more layers than tensors");
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    let err = load(&tiny_gguf_with(|kv| {
        set(kv, "llama.context_length", V::U32(0))
    }))
    .expect_err("no context");
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    let err = load(&tiny_gguf_with(|kv| {
        set(kv, "tokenizer.chat_template", V::Str("{% for %}".into()))
    }))
    .expect_err("bad template");
    assert!(matches!(err, LlmError::Template(_)), "{err}");
    let err = load(&tiny_gguf_with(|kv| {
        set(
            kv,
            "tokenizer.ggml.tokens",
            V::StrArray(vec!["a".into(); 5]),
        )
    }))
    .expect_err("vocabulary and embedding disagree");
    assert!(
        matches!(err, LlmError::Malformed(_) | LlmError::Tokenizer(_)),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any byte of the tiny file's header changed, or the file cut anywhere: an answer, never a panic.
    #[test]
    fn mutated_headers_never_panic(
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..6),
        cut in proptest::option::of(0usize..8192),
    ) {
        let mut bytes = tiny_gguf();
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.min(bytes.len()));
        }
        let f = write(&bytes);
        let limits = LoadLimits::default();
        if let Ok((content, _)) = read_content(f.path(), &limits) {
            let _ = GgufTokenizer::from_gguf(&content, &limits).map(|t| t.encode("hello world <|im_start|>"));
        }
        let _ = LlmModel::load(f.path(), &limits);
    }
}
