//! Tokenisation shared by every encoder: `tokenizer.json` (tokenizers crate) truncated at the
//! model's maximum length, no padding at tokenisation time (the serving queue budgets real
//! token counts, TEI-style), and dynamic padding per batch when the batch runs.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams};

use crate::TextError;

/// Loads `dir/tokenizer.json`, truncating at `max_len` tokens (special tokens included) and
/// never padding.
pub fn load_tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer, TextError> {
    let mut tokenizer =
        Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| TextError::Invalid {
            what: "tokenizer.json",
            message: e.to_string(),
        })?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(tokenizer_error)?;
    Ok(tokenizer)
}

/// A copy of `tokenizer` that cuts over-long texts on the left, keeping their end (TEI's
/// `truncation_direction: "Left"`), at the same maximum length; special tokens stay where the
/// post-processor puts them.
pub fn left_truncating(tokenizer: &Tokenizer) -> Result<Tokenizer, TextError> {
    let mut left = tokenizer.clone();
    let params = tokenizer
        .get_truncation()
        .cloned()
        .ok_or_else(|| TextError::Tokenizer("the tokenizer does not truncate".into()))?;
    left.with_truncation(Some(TruncationParams {
        direction: TruncationDirection::Left,
        ..params
    }))
    .map_err(tokenizer_error)?;
    Ok(left)
}

fn tokenizer_error(e: impl std::fmt::Display) -> TextError {
    TextError::Tokenizer(e.to_string())
}

/// The tokenizer's encodings of `texts`, with or without the special tokens.
fn encodings(
    tokenizer: &Tokenizer,
    texts: &[&str],
    add_special_tokens: bool,
) -> Result<Vec<Encoding>, TextError> {
    tokenizer
        .encode_batch(texts.to_vec(), add_special_tokens)
        .map_err(tokenizer_error)
}

/// Token ids of each text, with special tokens, truncated, unpadded.
pub fn encode(tokenizer: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>, TextError> {
    Ok(encodings(tokenizer, texts, true)?
        .into_iter()
        .map(|e| e.get_ids().to_vec())
        .collect())
}

/// As [`encode`], but a text longer than `max_len` tokens is [`TextError::TooLong`] (with its
/// full length) instead of being cut.
pub fn encode_exact(
    tokenizer: &Tokenizer,
    texts: &[&str],
    max_len: usize,
) -> Result<Vec<Vec<u32>>, TextError> {
    let encoded = encodings(tokenizer, texts, true)?;
    let mut out = Vec::with_capacity(encoded.len());
    for (index, e) in encoded.into_iter().enumerate() {
        if !e.get_overflowing().is_empty() {
            // The refusal names the full length: one more encoding, without truncation, of
            // this text only.
            let mut full = tokenizer.clone();
            full.with_truncation(None).map_err(tokenizer_error)?;
            let tokens = full
                .encode(texts[index], true)
                .map_err(tokenizer_error)?
                .len();
            return Err(TextError::TooLong {
                index,
                tokens,
                max: max_len,
            });
        }
        out.push(e.get_ids().to_vec());
    }
    Ok(out)
}

/// One token of a tokenised text, as TEI's `/tokenize` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Token {
    /// Vocabulary id.
    pub id: u32,
    /// The input's text the token covers, or the token itself for special tokens.
    pub text: String,
    /// A special token (`[CLS]`, `[SEP]`, ...), added by the tokenizer.
    pub special: bool,
    /// Byte offset of the covered text in the input (none for special tokens).
    pub start: Option<usize>,
    /// Byte offset just past it.
    pub stop: Option<usize>,
}

/// The tokens of each text as the model sees them (truncated as `tokenizer` is set), with the
/// byte span of the input each one covers; `add_special_tokens` adds `[CLS]`/`[SEP]`.
pub fn tokens(
    tokenizer: &Tokenizer,
    texts: &[&str],
    add_special_tokens: bool,
) -> Result<Vec<Vec<Token>>, TextError> {
    Ok(encodings(tokenizer, texts, add_special_tokens)?
        .iter()
        .zip(texts)
        .map(|(e, input)| {
            e.get_ids()
                .iter()
                .zip(e.get_tokens())
                .zip(e.get_offsets())
                .zip(e.get_special_tokens_mask())
                .map(|(((&id, token), &(start, stop)), &special)| {
                    let covered = input.get(start..stop).filter(|_| special == 0);
                    Token {
                        id,
                        text: covered.map_or_else(|| token.clone(), str::to_owned),
                        special: special != 0,
                        start: covered.map(|_| start),
                        stop: covered.map(|_| stop),
                    }
                })
                .collect()
        })
        .collect())
}

/// Pads `batch` to its longest sequence with `pad_id`: `(ids, attention_mask)`, both
/// `(n, len)` u32 tensors, the mask 1 on real tokens.
pub fn pad_batch(
    batch: &[&[u32]],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor, Tensor), TextError> {
    let n = batch.len();
    let len = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(n * len);
    let mut mask = Vec::with_capacity(n * len);
    for s in batch {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad_id, len - s.len()));
        mask.extend(std::iter::repeat_n(1u32, s.len()));
        mask.extend(std::iter::repeat_n(0u32, len - s.len()));
    }
    Ok((
        Tensor::from_vec(ids, (n, len), device)?,
        Tensor::from_vec(mask, (n, len), device)?,
    ))
}

/// The tokenizer's padding id (`[PAD]`), 0 when it has none.
pub fn pad_id(tokenizer: &Tokenizer) -> u32 {
    tokenizer
        .get_padding()
        .map(|p| p.pad_id)
        .or_else(|| tokenizer.token_to_id("[PAD]"))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A word-level tokenizer over `a b c d`, with `[CLS]`/`[SEP]` added, truncating at
    /// `max_len`.
    fn tiny(max_len: usize) -> Tokenizer {
        let json = serde_json::json!({
            "version": "1.0",
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}
                }
            },
            "decoder": null,
            "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {
                "[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "a": 4, "b": 5, "c": 6, "d": 7
            }}
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
        load_tokenizer(dir.path(), max_len).unwrap()
    }

    #[test]
    fn exact_encoding_refuses_what_truncation_would_cut() {
        let t = tiny(5);
        // Three words and the two special tokens fit exactly; four do not.
        assert_eq!(encode(&t, &["a b c"]).unwrap(), vec![vec![1, 4, 5, 6, 2]]);
        assert_eq!(
            encode_exact(&t, &["a b c", "d"], 5).unwrap(),
            vec![vec![1, 4, 5, 6, 2], vec![1, 7, 2]]
        );
        assert_eq!(encode(&t, &["a b c d a"]).unwrap()[0].len(), 5);
        let err = encode_exact(&t, &["a", "a b c d a"], 5).unwrap_err();
        assert!(
            matches!(
                err,
                TextError::TooLong {
                    index: 1,
                    tokens: 7,
                    max: 5
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("text 1 has 7 tokens"), "{err}");
    }

    #[test]
    fn left_truncation_keeps_the_end_and_the_special_tokens() {
        let right = tiny(5);
        let left = left_truncating(&right).unwrap();
        // "a b c d" is 4 words + 2 special tokens: one word goes, from its side.
        assert_eq!(
            encode(&right, &["a b c d"]).unwrap(),
            vec![vec![1, 4, 5, 6, 2]]
        );
        assert_eq!(
            encode(&left, &["a b c d"]).unwrap(),
            vec![vec![1, 5, 6, 7, 2]]
        );
        // Short texts are untouched, and the original keeps cutting on the right.
        assert_eq!(encode(&left, &["d a"]).unwrap(), vec![vec![1, 7, 4, 2]]);
        assert_eq!(
            right.get_truncation().unwrap().direction,
            TruncationDirection::Right
        );
        assert_eq!(left.get_truncation().unwrap().max_length, 5);
    }

    #[test]
    fn tokens_carry_their_byte_spans() {
        let t = tiny(8);
        let got = tokens(&t, &["a  b"], true).unwrap().remove(0);
        let want = |id, text: &str, span: Option<(usize, usize)>| Token {
            id,
            text: text.into(),
            special: span.is_none(),
            start: span.map(|s| s.0),
            stop: span.map(|s| s.1),
        };
        assert_eq!(
            got,
            vec![
                want(1, "[CLS]", None),
                want(4, "a", Some((0, 1))),
                want(5, "b", Some((3, 4))),
                want(2, "[SEP]", None),
            ]
        );
        let bare = tokens(&t, &["b"], false).unwrap().remove(0);
        assert_eq!(bare, vec![want(5, "b", Some((0, 1)))]);
    }

    #[test]
    fn pads_to_the_longest_with_a_mask() {
        let (ids, mask) = pad_batch(&[&[5, 6, 7], &[8]], 0, &Device::Cpu).unwrap();
        assert_eq!(
            ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![8, 0, 0]]
        );
        assert_eq!(
            mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1, 1], vec![1, 0, 0]]
        );
    }
}
