//! The tokenizer a GGUF file describes in its metadata (`tokenizer.ggml.*`), built as a
//! Hugging Face `tokenizers` byte-level BPE.
//!
//! Only `tokenizer.ggml.model = "gpt2"` (byte-level BPE) is built. The pre-tokenizer follows
//! llama.cpp's table for `tokenizer.ggml.pre` (llama-vocab.cpp): for "smollm" (and the
//! StarCoder family sharing its split) every `\p{N}` character is split off alone, then GPT-2's
//! regex splits the rest — in `tokenizers` terms `Digits(individual_digits)` then `ByteLevel`,
//! which is also SmolLM2's own tokenizer.json. Control tokens (`token_type` 3, e.g.
//! `<|im_start|>`) and user-defined ones (4) are added tokens, matched whole in the text.

use std::collections::HashSet;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::LlmError;
use crate::gguf::{LoadLimits, md_str, md_u64};

/// GGUF `token_type` of a control token (llama.cpp's LLAMA_TOKEN_TYPE_CONTROL).
const CONTROL: i64 = 3;
/// GGUF `token_type` of a user-defined token.
const USER_DEFINED: i64 = 4;

/// Control tokens that end a turn in the chat formats in use, beside the declared EOS.
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<|end|>",
];

/// A tokenizer built from GGUF metadata, with the token facts generation needs.
#[derive(Debug)]
pub struct GgufTokenizer {
    inner: Tokenizer,
    tokens: Vec<String>,
    /// The bytes each token stands for (byte-level alphabet undone; control tokens as written).
    bytes: Vec<Vec<u8>>,
    control: Vec<bool>,
    end_of_generation: HashSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the rest are moved to
/// U+0100 onwards in byte order.
fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\0');
            next += 1;
            c
        };
    }
    table
}

fn string_array<'a>(content: &'a Content, key: &str) -> Result<&'a [Value], LlmError> {
    match content.metadata.get(key) {
        Some(Value::Array(values)) => Ok(values),
        Some(_) => Err(LlmError::Malformed(format!("{key} is not an array"))),
        None => Err(LlmError::Unsupported(format!("no {key} in the metadata"))),
    }
}

fn as_string(value: &Value, key: &str) -> Result<String, LlmError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(LlmError::Malformed(format!("{key} holds a non-string"))),
    }
}

fn as_int(value: &Value, key: &str) -> Result<i64, LlmError> {
    Ok(match value {
        Value::I32(v) => i64::from(*v),
        Value::U32(v) => i64::from(*v),
        Value::I8(v) => i64::from(*v),
        Value::U8(v) => i64::from(*v),
        Value::I16(v) => i64::from(*v),
        Value::U16(v) => i64::from(*v),
        _ => return Err(LlmError::Malformed(format!("{key} holds a non-integer"))),
    })
}

impl GgufTokenizer {
    /// Builds the tokenizer from a parsed GGUF header, within `limits`.
    pub fn from_gguf(content: &Content, limits: &LoadLimits) -> Result<Self, LlmError> {
        let model = md_str(content, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(LlmError::Unsupported(format!(
                "tokenizer.ggml.model = {model:?} (only byte-level BPE, \"gpt2\", is built)"
            )));
        }
        let pre = match content.metadata.get("tokenizer.ggml.pre") {
            Some(_) => md_str(content, "tokenizer.ggml.pre")?,
            None => "default",
        };
        let split_digits = match pre {
            "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone"
            | "minerva-7b" => true,
            "gpt2" | "default" | "gpt-2" => false,
            other => {
                return Err(LlmError::Unsupported(format!(
                    "tokenizer.ggml.pre = {other:?} (built: smollm and its StarCoder family, gpt2)"
                )));
            }
        };

        let tokens = string_array(content, "tokenizer.ggml.tokens")?
            .iter()
            .map(|v| as_string(v, "tokenizer.ggml.tokens"))
            .collect::<Result<Vec<_>, _>>()?;
        if tokens.len() > limits.max_vocab {
            return Err(LlmError::OverLimit {
                what: "vocabulary size".into(),
                value: tokens.len() as u64,
                limit: limits.max_vocab as u64,
            });
        }
        if tokens.is_empty() {
            return Err(LlmError::Malformed("tokenizer.ggml.tokens is empty".into()));
        }
        let types = match content.metadata.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(_) => string_array(content, "tokenizer.ggml.token_type")?
                .iter()
                .map(|v| as_int(v, "tokenizer.ggml.token_type"))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if types.len() != tokens.len() {
            return Err(LlmError::Malformed(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let merges = string_array(content, "tokenizer.ggml.merges")?
            .iter()
            .map(|v| {
                let merge = as_string(v, "tokenizer.ggml.merges")?;
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| LlmError::Malformed(format!("merge {merge:?} has no space")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let id = |key: &str| -> Result<Option<u32>, LlmError> {
            match md_u64(content, key)? {
                None => Ok(None),
                Some(v) if v < tokens.len() as u64 => Ok(Some(v as u32)),
                Some(v) => Err(LlmError::Malformed(format!(
                    "{key} = {v}, the vocabulary has {}",
                    tokens.len()
                ))),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let add_bos = matches!(
            content.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );

        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| LlmError::Tokenizer(format!("building BPE: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        if split_digits {
            steps.push(Digits::new(true).into());
        }
        steps.push(byte_level.into());
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        inner.with_decoder(Some(byte_level));
        let added = |kind: i64, special: bool| {
            tokens
                .iter()
                .zip(&types)
                .filter(move |(_, t)| **t == kind)
                .map(move |(text, _)| AddedToken::from(text.clone(), special).normalized(false))
                .collect::<Vec<_>>()
        };
        inner
            .add_special_tokens(added(CONTROL, true))
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        inner
            .add_tokens(added(USER_DEFINED, false))
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;

        let alphabet = byte_level_alphabet();
        let mut reverse = std::collections::HashMap::with_capacity(256);
        for (b, c) in alphabet.iter().enumerate() {
            reverse.insert(*c, b as u8);
        }
        let bytes = tokens
            .iter()
            .zip(&types)
            .map(|(text, ty)| {
                if *ty == CONTROL || *ty == USER_DEFINED {
                    return text.as_bytes().to_vec();
                }
                text.chars()
                    .map(|c| reverse.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| text.as_bytes().to_vec())
            })
            .collect();
        let control: Vec<bool> = types.iter().map(|t| *t == CONTROL).collect();
        let mut end_of_generation: HashSet<u32> = eos.into_iter().chain(eot).collect();
        for (i, text) in tokens.iter().enumerate() {
            if control[i] && END_OF_TURN.contains(&text.as_str()) {
                end_of_generation.insert(i as u32);
            }
        }
        Ok(Self {
            inner,
            tokens,
            bytes,
            control,
            end_of_generation,
            bos,
            eos,
            add_bos,
        })
    }

    /// Token ids for `text`; control tokens written in the text (`<|im_start|>`) are matched
    /// whole, and BOS is prepended when the file asks for it (`tokenizer.ggml.add_bos_token`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, control tokens included as written; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The same as [`Self::decode`], through the `tokenizers` decoder (a cross-check).
    pub fn decode_with_tokenizers(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    /// The bytes token `id` stands for (empty for an id outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Whether `id` is a control token (not shown in generated text, as llama.cpp does).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether `id` ends generation (EOS, EOT, or a control token that ends a chat turn).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// The tokens that end generation ([`Self::is_end_of_generation`]), the declared EOS first,
    /// then in id order.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.end_of_generation.iter().copied().collect();
        ids.sort_unstable_by_key(|&id| (Some(id) != self.eos, id));
        ids
    }

    /// The id of a token spelled `text` in the vocabulary.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }

    /// The text of token `id` as the vocabulary spells it.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The BOS token's id, if declared.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS token's id, if declared.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_alphabet_is_a_bijection_with_gpt2s_space() {
        let table = byte_level_alphabet();
        let distinct: HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
    }
}
