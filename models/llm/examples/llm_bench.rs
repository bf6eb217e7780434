//! The infermesh side of `bench/llm.sh`: prompt processing, generation and time to first token
//! of the embedded LLM on prompts given as token ids, so that llama.cpp (`bench/llm_peer.py`)
//! evaluates exactly the same tokens.
//!
//! ```text
//! llm_bench tokenize MODEL.gguf PROMPTS.json            # chat prompts -> token ids (JSON)
//! llm_bench run MODEL.gguf TOKENS.json [WEIGHTS]        # one JSON line per prompt
//! ```
//!
//! `PROMPTS.json` is a list of `{"name", "messages": [{"role", "content"}], "num_predict"}`;
//! `tokenize` renders each through the model's chat template (generation prompt added), tokenizes
//! it, and prints the list with `prompt_ids` added, and the model's end-of-generation ids.
//! `run` loads the model with `WEIGHTS` (`as-stored`, the server's default, `q8_0` or `f32`),
//! warms it up with one short untimed generation, then generates greedily (no repeat penalty)
//! for each prompt, up to its `num_predict` tokens or an end-of-generation token, and prints the
//! library's own counters: prompt tokens / prompt evaluation time, generated tokens / the time
//! from the end of the prompt to the last token (every sampled token counted, the end token
//! included, as llama.cpp counts), and the time from the start of the request to the first
//! token's text reaching the caller. Threads: `RAYON_NUM_THREADS` (the engine's pool); kernels:
//! `INFERMESH_LLM_KERNELS` (`portable`, `avx2`, `vnni`; default the best the CPU has).

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use infermesh_llm::{
    ChatMessage, GenerateOptions, GenerateRequest, LlmModel, LoadLimits, Prompt, Weights,
};
use serde_json::{Value, json};

fn read_json(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    match serde_json::from_str(&text)? {
        Value::Array(items) => Ok(items),
        _ => bail!("{}: not a JSON list", path.display()),
    }
}

fn tokenize(model: &LlmModel, prompts: &Path) -> Result<()> {
    let mut out = Vec::new();
    for p in read_json(prompts)? {
        let messages: Vec<ChatMessage> = p["messages"]
            .as_array()
            .context("messages")?
            .iter()
            .map(|m| {
                ChatMessage::new(
                    m["role"].as_str().unwrap_or("user"),
                    m["content"].as_str().unwrap_or(""),
                )
            })
            .collect();
        let text = model.chat_prompt(&messages, true)?;
        let ids = model.tokenizer().encode(&text)?;
        let mut p = p.clone();
        p["prompt_ids"] = json!(ids);
        out.push(p);
    }
    let end = model.tokenizer().end_of_generation_ids();
    println!("{}", json!({"prompts": out, "end_of_generation_ids": end}));
    Ok(())
}

fn run(model: &mut LlmModel, tokens: &Path, weights: &str) -> Result<()> {
    let text = std::fs::read_to_string(tokens).with_context(|| tokens.display().to_string())?;
    let spec: Value = serde_json::from_str(&text)?;
    let warm = GenerateRequest::text(
        "Hello",
        GenerateOptions {
            num_predict: Some(4),
            ..GenerateOptions::greedy()
        },
    );
    model.generate(&warm, |_| ControlFlow::Continue(()))?;
    for p in spec["prompts"].as_array().context("prompts")? {
        let ids: Vec<u32> = serde_json::from_value(p["prompt_ids"].clone())?;
        let request = GenerateRequest {
            prompt: Prompt::Tokens(ids),
            options: GenerateOptions {
                num_predict: p["num_predict"].as_u64().map(|n| n as usize),
                ..GenerateOptions::greedy()
            },
            cancel: None,
            format: None,
        };
        let started = Instant::now();
        let mut first = None;
        let out = model.generate(&request, |_| {
            first.get_or_insert_with(|| started.elapsed());
            ControlFlow::Continue(())
        })?;
        let t = out.timings;
        let ttft = first.map_or(t.total_duration as f64 / 1e9, |d| d.as_secs_f64());
        println!(
            "{}",
            json!({
                "side": "infermesh",
                "weights": weights,
                "kernels": infermesh_llm::engine::quant::Kernels::current().name(),
                "name": p["name"],
                "prompt_tokens": t.prompt_eval_count,
                "prompt_seconds": t.prompt_eval_duration as f64 / 1e9,
                "gen_tokens": t.eval_count,
                "gen_seconds": t.eval_duration as f64 / 1e9,
                "ttft_seconds": ttft,
                "tokens": out.tokens,
            })
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "llm_bench tokenize MODEL.gguf PROMPTS.json | run MODEL.gguf TOKENS.json [as-stored|q8_0|f32]";
    let (Some(command), Some(model_path), Some(file)) = (args.first(), args.get(1), args.get(2))
    else {
        bail!("usage: {usage}");
    };
    let weights_name = args.get(3).map_or("as-stored", String::as_str);
    let weights = match weights_name {
        "as-stored" => Weights::AsStored,
        "q8_0" => Weights::Q8_0,
        "f32" => Weights::F32,
        other => bail!("weights '{other}': {usage}"),
    };
    let mut model = LlmModel::load_as(Path::new(model_path), &LoadLimits::default(), weights)?;
    match command.as_str() {
        "tokenize" => tokenize(&model, Path::new(file)),
        "run" => run(&mut model, Path::new(file), weights_name),
        _ => bail!("usage: {usage}"),
    }
}
