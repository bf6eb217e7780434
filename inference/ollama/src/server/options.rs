//! Ollama's `options` object read into [`GenerateOptions`].
//!
//! Every option name Ollama documents is accepted. The ones this engine runs are checked for
//! type and range; the rest (GPU placement, threads, mmap, mirostat, penalties other than the
//! repeat penalty) are accepted and ignored, and a name Ollama does not know is ignored too,
//! as Ollama does (it logs "invalid option provided"). A wrong type is a 400.

use infermesh_llm::GenerateOptions;
use serde_json::Value;

use crate::api::Options;

/// Option names Ollama accepts that have no effect here.
const IGNORED: &[&str] = &[
    "numa",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    "embedding_only",
    "num_thread",
    "num_keep",
    "tfs_z",
    "typical_p",
    "presence_penalty",
    "frequency_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "penalize_newline",
];

/// The engine's defaults: Ollama's, with `num_ctx` at most the model's window.
pub(crate) fn defaults(num_ctx: usize) -> GenerateOptions {
    GenerateOptions {
        num_ctx,
        ..GenerateOptions::default()
    }
}

fn number(name: &str, v: &Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("option \"{name}\" must be a number, got {v}"))
}

fn integer(name: &str, v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| format!("option \"{name}\" must be an integer, got {v}")),
        _ => Err(format!("option \"{name}\" must be an integer, got {v}")),
    }
}

fn count(name: &str, v: &Value) -> Result<usize, String> {
    let n = integer(name, v)?;
    usize::try_from(n).map_err(|_| format!("option \"{name}\" must be >= 0, got {n}"))
}

/// `options` over `base`; the result is range-checked.
pub(crate) fn parse(
    options: Option<&Options>,
    base: GenerateOptions,
) -> Result<GenerateOptions, String> {
    let mut o = base;
    for (name, v) in options.into_iter().flatten() {
        if v.is_null() {
            continue; // the Python client sends unset options as null
        }
        match name.as_str() {
            "temperature" => o.temperature = number(name, v)?,
            "top_k" => o.top_k = count(name, v)?,
            "top_p" => o.top_p = number(name, v)?,
            "min_p" => o.min_p = number(name, v)?,
            "seed" => {
                let seed = integer(name, v)?;
                o.seed = u64::try_from(seed).ok(); // negative: a random seed, as in Ollama
            }
            "repeat_penalty" => o.repeat_penalty = number(name, v)? as f32,
            "repeat_last_n" => {
                let n = integer(name, v)?;
                o.repeat_last_n = i32::try_from(n)
                    .map_err(|_| format!("option \"repeat_last_n\" is out of range: {n}"))?;
            }
            "num_predict" => {
                // -1: no limit; -2: until the context is full. Both end at the window here.
                let n = integer(name, v)?;
                o.num_predict = usize::try_from(n).ok();
            }
            "num_ctx" => o.num_ctx = count(name, v)?.min(o.num_ctx.max(1)),
            "num_batch" => o.num_batch = count(name, v)?,
            "stop" => {
                let stops = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|s| {
                            s.as_str().map(str::to_string).ok_or_else(|| {
                                format!("option \"stop\" must be a list of strings, got {v}")
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(format!(
                            "option \"stop\" must be a list of strings, got {v}"
                        ));
                    }
                };
                o.stop = stops
                    .into_iter()
                    .filter(|s: &String| !s.is_empty())
                    .collect();
            }
            other if IGNORED.contains(&other) => {}
            other => tracing::debug!(option = other, "unknown option ignored"),
        }
    }
    o.check().map_err(|e| e.to_string())?;
    Ok(o)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<GenerateOptions, String> {
        let map = v.as_object().cloned().unwrap_or_default();
        parse(Some(&map), defaults(2048))
    }

    #[test]
    fn ollama_options_are_read() {
        let o = parse_json(
            json!({"temperature": 0, "top_k": 5, "top_p": 0.5, "seed": 42,
            "num_predict": 16, "stop": ["\n", "User:"], "repeat_penalty": 1.0,
            "num_gpu": 99, "mirostat": 0, "made_up": true, "num_thread": null}),
        )
        .unwrap();
        assert_eq!(o.temperature, 0.0);
        assert_eq!(o.top_k, 5);
        assert_eq!(o.top_p, 0.5);
        assert_eq!(o.seed, Some(42));
        assert_eq!(o.num_predict, Some(16));
        assert_eq!(o.stop, vec!["\n".to_string(), "User:".to_string()]);
        assert_eq!(o.repeat_penalty, 1.0);
    }

    #[test]
    fn defaults_and_special_values() {
        let o = parse(None, defaults(2048)).unwrap();
        assert_eq!(o.temperature, 0.8);
        assert_eq!(o.num_predict, None);
        assert_eq!(o.num_ctx, 2048);
        let o = parse_json(json!({"num_predict": -1, "seed": -1, "num_ctx": 100000})).unwrap();
        assert_eq!(o.num_predict, None);
        assert_eq!(o.seed, None);
        assert_eq!(o.num_ctx, 2048, "num_ctx is capped at the model's window");
    }

    #[test]
    fn wrong_types_and_ranges_are_refused() {
        for bad in [
            json!({"temperature": "hot"}),
            json!({"top_k": -1}),
            json!({"top_k": 1.5}),
            json!({"top_p": 2.0}),
            json!({"stop": [1]}),
            json!({"stop": {"a": 1}}),
            json!({"num_ctx": 0}),
            json!({"temperature": -1}),
        ] {
            assert!(parse_json(bad.clone()).is_err(), "{bad}");
        }
    }
}
