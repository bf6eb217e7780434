//! The tokenizer built from SmolLM2's GGUF metadata against a reference: token ids from the Hugging
//! Face `tokenizers` Python package on the same vocabulary and merges with llama.cpp's "smollm"
//! split (tests/peer_tokenizer.py writes tests/fixtures/tokenizer_peer.json; 397 strings:
//! unicode, digits, whitespace runs, code, chat markers).

mod common;

use infermesh_llm::gguf::read_content;
use infermesh_llm::{GgufTokenizer, LoadLimits};

fn smollm2_tokenizer() -> GgufTokenizer {
    let (content, _) =
        read_content(&common::smollm2_path(), &LoadLimits::default()).expect("SmolLM2 parses");
    GgufTokenizer::from_gguf(&content, &LoadLimits::default()).expect("its tokenizer builds")
}

#[test]
fn token_ids_equal_the_reference_and_decode_round_trips() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/tokenizer_peer.json")).expect("json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let tok = smollm2_tokenizer();
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        let got = tok.encode(text).expect("encodes");
        if got != want {
            mismatches.push((text.to_string(), got.clone(), want));
        }
        assert_eq!(tok.decode(&got), text, "round trip");
        assert_eq!(
            tok.decode_with_tokenizers(&got).expect("decodes"),
            text,
            "tokenizers' decoder agrees"
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ: {:?}",
        mismatches.len(),
        cases.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}

#[test]
fn smollm2_special_tokens_are_whole_and_digits_split() {
    let tok = smollm2_tokenizer();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert!(
        tok.is_end_of_generation(2) && tok.is_end_of_generation(0) && !tok.is_end_of_generation(1)
    );
    let ids = tok
        .encode("<|im_start|>user\n2024<|im_end|>")
        .expect("encodes");
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    let digits: Vec<&str> = ids[1..ids.len() - 1]
        .iter()
        .map(|&i| tok.token_text(i).expect("known"))
        .collect();
    assert_eq!(digits, ["user", "Ċ", "2", "0", "2", "4"]);
    // add_bos_token is false in SmolLM2's metadata: nothing is prepended.
    assert_eq!(tok.encode("Hi").expect("encodes").len(), 1);
}
