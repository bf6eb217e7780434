//! Ollama's `format` on the real SmolLM2-135M-Instruct: the output is JSON, or an instance of
//! the schema, whatever the small model would have written unconstrained.

mod common;

use std::ops::ControlFlow;

use infermesh_llm::{
    ChatMessage, DoneReason, Format, GenerateOptions, GenerateOutput, GenerateRequest, LlmError,
    LlmModel,
};
use serde_json::{Value, json};

fn chat(model: &LlmModel, question: &str) -> String {
    model
        .chat_prompt(&[ChatMessage::new("user", question)], true)
        .expect("the template renders")
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        num_predict: Some(n),
        ..GenerateOptions::greedy()
    }
}

/// Generates, checking that the streamed pieces add up to the text.
fn run(model: &mut LlmModel, request: &GenerateRequest) -> GenerateOutput {
    let mut streamed = String::new();
    let out = model
        .generate(request, |piece| {
            streamed.push_str(piece);
            ControlFlow::Continue(())
        })
        .expect("generates");
    assert_eq!(streamed, out.text);
    out
}

/// The output parsed, after checking it ended because the value was complete.
fn parsed(out: &GenerateOutput) -> Value {
    eprintln!(
        "{} tokens, {:.1} tokens/s: {}",
        out.tokens.len(),
        out.timings.eval_tokens_per_second(),
        out.text
    );
    assert_eq!(
        out.done_reason,
        DoneReason::Stop,
        "ended before the value was complete: {:?}",
        out.text
    );
    serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", out.text))
}

fn sentiment_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number"},
        },
        "required": ["sentiment", "score"],
    })
}

#[test]
fn format_json_gives_an_object_and_ends_when_it_closes() {
    let mut model = common::smollm2();
    let prompt = chat(
        &model,
        "Describe a cat as a JSON object with exactly three keys: name, age and colour.",
    );
    let out = run(
        &mut model,
        &GenerateRequest::text(prompt, greedy(200)).with_format(Format::Json),
    );
    let value = parsed(&out);
    assert!(value.is_object(), "{value}");
    // Compact, nothing around the value, and no end-of-generation token was needed.
    assert!(
        out.text.starts_with('{') && out.text.ends_with('}'),
        "{:?}",
        out.text
    );
    let last = *out.tokens.last().expect("tokens");
    assert!(!model.tokenizer().is_end_of_generation(last));
}

#[test]
fn a_schema_gives_an_instance_of_it() {
    let mut model = common::smollm2();
    for review in [
        "The food was wonderful and the staff were so kind. We will come back!",
        "Cold soup, rude waiter, and we waited an hour. Never again.",
    ] {
        let prompt = chat(
            &model,
            &format!("Give the sentiment of this review and a score from -1 to 1: {review}"),
        );
        let out = run(
            &mut model,
            &GenerateRequest::text(prompt, greedy(100))
                .with_format(Format::JsonSchema(sentiment_schema())),
        );
        let value = parsed(&out);
        let sentiment = value["sentiment"].as_str().unwrap_or_default();
        assert!(
            ["positive", "negative", "neutral"].contains(&sentiment),
            "{value}"
        );
        assert!(value["score"].is_number(), "{value}");
    }
}

#[test]
fn integer_and_boolean_properties_have_their_types() {
    let mut model = common::smollm2();
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "legs": {"type": "integer", "minimum": 0},
            "can_fly": {"type": "boolean"},
        },
        "required": ["name", "legs", "can_fly"],
        "additionalProperties": false,
    });
    let prompt = chat(
        &model,
        "Tell me about the ostrich: its name, legs and whether it flies.",
    );
    let out = run(
        &mut model,
        &GenerateRequest::text(prompt, greedy(100)).with_format(Format::JsonSchema(schema)),
    );
    let value = parsed(&out);
    let object = value.as_object().expect("an object");
    assert_eq!(object.len(), 3, "{value}");
    assert!(
        value["name"]
            .as_str()
            .is_some_and(|s| s.chars().count() <= 40),
        "{value}"
    );
    assert!(value["legs"].as_u64().is_some(), "{value}");
    assert!(value["can_fly"].is_boolean(), "{value}");
}

#[test]
fn an_invalid_schema_is_refused_before_any_token() {
    let mut model = common::smollm2();
    let prompt = chat(&model, "Hello");
    for schema in [
        json!({"type": "frobnicate"}),
        json!(["not", "a", "schema"]),
        json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
    ] {
        let request = GenerateRequest::text(prompt.clone(), greedy(10))
            .with_format(Format::JsonSchema(schema.clone()));
        let mut called = false;
        let err = model
            .generate(&request, |_| {
                called = true;
                ControlFlow::Continue(())
            })
            .expect_err("refused");
        assert!(
            matches!(&err, LlmError::InvalidRequest(m) if m.starts_with("format: ")),
            "{schema}: {err}"
        );
        assert_eq!(err.kind(), infermesh_llm::ErrorKind::InvalidInput);
        assert!(!called);
    }
}

#[test]
fn unconstrained_generation_is_unchanged_by_constrained_requests() {
    let mut model = common::smollm2();
    let prompt = chat(&model, "Name three colours.");
    let free = GenerateRequest::text(prompt.clone(), greedy(24));
    let before = run(&mut model, &free);
    let constrained = run(
        &mut model,
        &GenerateRequest::text(prompt, greedy(24)).with_format(Format::Json),
    );
    assert_ne!(constrained.text, before.text);
    let after = run(&mut model, &free);
    assert_eq!(after.tokens, before.tokens);
    assert_eq!(after.text, before.text);
}

#[test]
fn sampled_output_stays_in_the_grammar() {
    let mut model = common::smollm2();
    let prompt = chat(
        &model,
        "Give the sentiment of: 'I love this phone, the battery lasts for days.'",
    );
    for seed in 1..=4 {
        let options = GenerateOptions {
            seed: Some(seed),
            num_predict: Some(100),
            ..GenerateOptions::default()
        };
        let out = run(
            &mut model,
            &GenerateRequest::text(prompt.clone(), options)
                .with_format(Format::JsonSchema(sentiment_schema())),
        );
        let value = parsed(&out);
        assert!(value["score"].is_number(), "seed {seed}: {value}");
    }
}

#[test]
fn running_out_of_tokens_cuts_the_value_with_length() {
    let mut model = common::smollm2();
    let prompt = chat(&model, "Describe a cat as JSON.");
    let out = run(
        &mut model,
        &GenerateRequest::text(prompt, greedy(3)).with_format(Format::Json),
    );
    assert_eq!((out.tokens.len(), out.done_reason), (3, DoneReason::Length));
    assert!(out.text.starts_with('{'), "{:?}", out.text);
}
