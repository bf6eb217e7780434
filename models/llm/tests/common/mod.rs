//! Shared by the integration tests: the real SmolLM2 GGUF (which must be present: scripts/test.sh
//! fetches it) and a writer of small GGUF files for the hostile-file tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use infermesh_llm::{LlmModel, LoadLimits};

/// `$INFERMESH_MODEL_CACHE/smollm2-135m-instruct/model.gguf` (default cache
/// `~/.cache/infermesh/models`). Panics when missing: these tests fail rather than skip.
pub fn smollm2_path() -> PathBuf {
    let cache = std::env::var_os("INFERMESH_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/infermesh/models")
        });
    let path = cache.join("smollm2-135m-instruct/model.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `source scripts/common.sh; source scripts/fetch_models.sh; ensure_smollm2` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// One model shared by the tests of a binary (generation takes `&mut`, hence the mutex).
pub fn smollm2() -> MutexGuard<'static, LlmModel> {
    static MODEL: OnceLock<Mutex<LlmModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Mutex::new(
                LlmModel::load(&smollm2_path(), &LoadLimits::default()).expect("SmolLM2 loads"),
            )
        })
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A GGUF metadata value.
#[derive(Debug, Clone)]
pub enum V {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 file with `kvs` and F32 `tensors` (name, dims in GGUF order, values).
pub fn gguf_bytes(kvs: &[(&str, V)], tensors: &[(&str, Vec<u64>)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        put_str(&mut out, key);
        match value {
            V::U32(v) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            V::F32(v) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            V::Bool(v) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(u8::from(*v));
            }
            V::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            V::StrArray(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut out, s);
                }
            }
            V::I32Array(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for v in items {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut sizes = Vec::new();
    for (name, dims) in tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&0u32.to_le_bytes()); // F32
        out.extend_from_slice(&offset.to_le_bytes());
        // An absurd declared size (a hostile case) gets no data.
        let bytes = dims
            .iter()
            .try_fold(4u64, |a, d| a.checked_mul(*d))
            .filter(|&b| b <= 1 << 20)
            .unwrap_or(0);
        sizes.push(bytes);
        offset += bytes.div_ceil(32) * 32;
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    for bytes in sizes {
        let padded = bytes.div_ceil(32) * 32;
        out.extend(std::iter::repeat_n(0u8, padded as usize));
    }
    out
}

/// A small, well-formed file with a llama header, a byte-level tokenizer (every byte, a few
/// merges, two control tokens) and one tensor: enough to reach every parser.
pub fn tiny_gguf() -> Vec<u8> {
    tiny_gguf_with(|_| {})
}

/// [`tiny_gguf`] with its metadata changed by `edit` (entries replaced, added or removed) first.
pub fn tiny_gguf_with(edit: impl FnOnce(&mut Vec<(&'static str, V)>)) -> Vec<u8> {
    let alphabet: Vec<String> = (0..=255u8)
        .map(|b| {
            let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
            if printable {
                char::from(b).to_string()
            } else {
                String::new()
            }
        })
        .collect();
    // Non-printable bytes take U+0100 onwards, in byte order.
    let mut next = 256u32;
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    for s in alphabet {
        if s.is_empty() {
            tokens.push(char::from_u32(next).map(String::from).unwrap_or_default());
            next += 1;
        } else {
            tokens.push(s);
        }
    }
    tokens.extend([
        "he".to_string(),
        "ll".to_string(),
        "hell".to_string(),
        "Ġw".to_string(),
    ]);
    let mut types = vec![3, 3, 3];
    types.extend(std::iter::repeat_n(1, tokens.len() - 3));
    let merges = vec![
        "h e".to_string(),
        "l l".to_string(),
        "he ll".to_string(),
        "Ġ w".to_string(),
    ];
    let vocab = tokens.len() as u64;
    let mut kvs: Vec<(&'static str, V)> = vec![
        ("general.architecture", V::Str("llama".into())),
        ("llama.context_length", V::U32(64)),
        ("llama.embedding_length", V::U32(8)),
        ("llama.block_count", V::U32(0)),
        ("llama.attention.head_count", V::U32(2)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("llama.rope.dimension_count", V::U32(4)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("tokenizer.ggml.model", V::Str("gpt2".into())),
        ("tokenizer.ggml.pre", V::Str("smollm".into())),
        ("tokenizer.ggml.tokens", V::StrArray(tokens)),
        ("tokenizer.ggml.token_type", V::I32Array(types)),
        ("tokenizer.ggml.merges", V::StrArray(merges)),
        ("tokenizer.ggml.bos_token_id", V::U32(1)),
        ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ("tokenizer.ggml.add_bos_token", V::Bool(false)),
        (
            "tokenizer.chat_template",
            V::Str("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
        ),
    ];
    edit(&mut kvs);
    gguf_bytes(&kvs, &[("token_embd.weight", vec![8, vocab])])
}

/// Sets `key` to `value` in `kvs` (adding it when absent).
pub fn set(kvs: &mut Vec<(&'static str, V)>, key: &'static str, value: V) {
    kvs.retain(|(k, _)| *k != key);
    kvs.push((key, value));
}
