//! Generates from SmolLM2 (or the GGUF given as the first argument) with the weights as stored,
//! re-encoded to Q8_0 and dequantized to f32, and prints Ollama's counters and tokens/s for
//! prompt processing and generation, then generation tokens/s for a JSON question answered free
//! and with `format` ("json" and a schema: the cost of the token mask):
//!
//! ```text
//! cargo run --release -p infermesh-llm --example generate [-- MODEL.gguf [QUESTION]]
//! cargo run --release -p infermesh-llm --example generate -- --format-only [MODEL.gguf]
//! ```
//!
//! `--format-only` skips the plain runs and the re-encoded weights.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use infermesh_llm::{
    ChatMessage, Format, GenerateOptions, GenerateRequest, LlmModel, LoadLimits, Timings, Weights,
};

fn report(what: &str, t: &Timings) {
    println!(
        "{what}: prompt {} tokens in {:.3} s = {:.1} tokens/s; generation {} tokens in {:.3} s = {:.1} tokens/s; total {:.3} s",
        t.prompt_eval_count,
        t.prompt_eval_duration as f64 / 1e9,
        t.prompt_tokens_per_second(),
        t.eval_count,
        t.eval_duration as f64 / 1e9,
        t.eval_tokens_per_second(),
        t.total_duration as f64 / 1e9,
    );
}

fn load(path: &std::path::Path, weights: Weights) -> anyhow::Result<LlmModel> {
    let mut model = LlmModel::load_as(path, &LoadLimits::default(), weights)?;
    println!(
        "\n== weights {weights:?}: loaded {} in {:.3} s",
        path.display(),
        model.load_duration().as_secs_f64()
    );
    // Warm-up (first touch of the weights), not reported.
    let warm = GenerateRequest::text(
        "Hello",
        GenerateOptions {
            num_predict: Some(4),
            ..GenerateOptions::greedy()
        },
    );
    model.generate(&warm, |_| ControlFlow::Continue(()))?;
    Ok(model)
}

/// A question with a JSON answer, generated free, with `format: "json"` and with a schema.
/// The first constrained requests build the token trie and compile their grammars and are
/// reported alone; then the three kinds run in interleaved rounds (so that load from other
/// work on a shared machine hits them alike) and the best generation tokens/s of each is
/// printed.
fn formats(model: &mut LlmModel) -> anyhow::Result<()> {
    const ROUNDS: usize = 3;
    let prompt = model.chat_prompt(
        &[ChatMessage::new(
            "user",
            "Describe three animals as JSON: for each its name, legs, whether it can fly and a \
             one-sentence description.",
        )],
        true,
    )?;
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "animals": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "legs": {"type": "integer"},
                        "can_fly": {"type": "boolean"},
                        "description": {"type": "string"},
                    },
                    "required": ["name", "legs", "can_fly", "description"],
                },
            },
        },
        "required": ["animals"],
    });
    let mut generate = |what: &str, format: Option<Format>| -> anyhow::Result<f64> {
        let mut request = GenerateRequest::text(
            prompt.clone(),
            GenerateOptions {
                num_predict: Some(128),
                ..GenerateOptions::greedy()
            },
        );
        request.format = format;
        let started = std::time::Instant::now();
        let out = model.generate(&request, |_| ControlFlow::Continue(()))?;
        let shown: String = out.text.chars().take(100).collect();
        println!(
            "{what}: {shown:?}... [done_reason: {}, request {:.3} s]",
            out.done_reason.as_str(),
            started.elapsed().as_secs_f64()
        );
        report(what, &out.timings);
        Ok(out.timings.eval_tokens_per_second())
    };
    generate("format json, first request", Some(Format::Json))?;
    generate(
        "format schema, first request",
        Some(Format::JsonSchema(schema.clone())),
    )?;
    let kinds = [
        ("free", None),
        ("format json", Some(Format::Json)),
        ("format schema", Some(Format::JsonSchema(schema))),
    ];
    let mut best = [0.0f64; 3];
    for _ in 0..ROUNDS {
        for (i, (what, format)) in kinds.iter().enumerate() {
            best[i] = best[i].max(generate(what, format.clone())?);
        }
    }
    println!(
        "best generation tokens/s of {ROUNDS} rounds: free {:.1}, format json {:.1}, format schema {:.1}",
        best[0], best[1], best[2]
    );
    Ok(())
}

fn run(path: &std::path::Path, question: &str, weights: Weights) -> anyhow::Result<()> {
    let mut model = load(path, weights)?;

    let prompt = model.chat_prompt(&[ChatMessage::new("user", question)], true)?;
    let request = GenerateRequest::text(
        prompt,
        GenerateOptions {
            num_predict: Some(128),
            ..GenerateOptions::greedy()
        },
    );
    let out = model.generate(&request, |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
        ControlFlow::Continue(())
    })?;
    println!("\n[done_reason: {}]", out.done_reason.as_str());
    report("chat", &out.timings);

    // Prompt processing on a longer prompt (about 500 tokens), one token generated.
    let long =
        "The quick brown fox jumps over the lazy dog while the cat watches from the window. "
            .repeat(28);
    let request = GenerateRequest::text(
        long,
        GenerateOptions {
            num_predict: Some(1),
            ..GenerateOptions::greedy()
        },
    );
    let out = model.generate(&request, |_| ControlFlow::Continue(()))?;
    report("long prompt", &out.timings);
    formats(&mut model)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let format_only = args.next_if(|a| a == "--format-only").is_some();
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("INFERMESH_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/infermesh/models")
            });
        cache.join("smollm2-135m-instruct/model.gguf")
    });
    let question = args
        .next()
        .unwrap_or_else(|| "Explain in a few sentences why the sky is blue.".to_string());
    if format_only {
        return formats(&mut load(&path, Weights::AsStored)?);
    }
    for weights in [Weights::AsStored, Weights::Q8_0, Weights::F32] {
        run(&path, &question, weights)?;
    }
    Ok(())
}
