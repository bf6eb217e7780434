//! `infermesh llm serve` in process on port 0, with the real SmolLM2 GGUF and all-MiniLM-L6-v2
//! from the model cache (scripts/test.sh fetches both), driven through [`OllamaClient`] and
//! raw HTTP.

use std::path::PathBuf;
use std::time::Duration;

use infermesh_ollama::OllamaClient;
use infermesh_ollama::api::{ChatRequest, EmbedInput, EmbedRequest, GenerateRequest, Message};
use infermesh_ollama::server::{LlmServeArgs, RunningLlm, start};
use serde_json::{Value, json};

fn cache() -> PathBuf {
    let cache = infermesh_model_core_cache();
    for need in [
        "smollm2-135m-instruct/model.gguf",
        "all-MiniLM-L6-v2/config.json",
    ] {
        assert!(
            cache.join(need).is_file(),
            "{} is missing: scripts/test.sh fetches it (ensure_smollm2, ensure_minilm)",
            cache.join(need).display()
        );
    }
    cache
}

fn infermesh_model_core_cache() -> PathBuf {
    std::env::var_os("INFERMESH_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/infermesh/models")
        })
}

async fn server(max_queue: usize) -> RunningLlm {
    let args = LlmServeArgs {
        port: 0,
        model_cache: Some(cache()),
        max_queue,
        ..LlmServeArgs::default()
    };
    start(args.validate().expect("valid config"))
        .await
        .expect("the server starts")
}

fn greedy(n: u64) -> serde_json::Map<String, Value> {
    json!({"temperature": 0, "num_predict": n, "seed": 1})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

async fn post(addr: std::net::SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(&body)
        .send()
        .await
        .expect("the request is sent");
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ollama_api_answers_as_ollama_does() -> anyhow::Result<()> {
    let srv = server(4).await;
    let addr = srv.addr;
    let client = OllamaClient::new(&format!("http://{addr}"), Duration::from_secs(120))?;

    let root = reqwest::get(format!("http://{addr}/"))
        .await?
        .text()
        .await?;
    assert_eq!(root, "Ollama is running");
    assert!(!client.version().await?.version.is_empty());

    let tags = client.tags().await?;
    let names: Vec<&str> = tags.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["smollm2:135m", "all-minilm"]);
    for m in &tags.models {
        assert!(
            m.digest.starts_with("sha256:") && m.digest.len() == 71,
            "{}",
            m.digest
        );
        assert!(m.size > 1_000_000);
    }
    assert_eq!(tags.models[0].details.format, "gguf");
    assert_eq!(tags.models[0].details.family, "llama");
    assert_eq!(tags.models[0].details.parameter_size, "135M");
    assert_eq!(tags.models[0].details.quantization_level, "Q4_1");

    let show = client.show("smollm2:135m").await?;
    assert_eq!(show.capabilities, vec!["completion".to_string()]);
    assert!(show.template.contains("im_start"), "{}", show.template);
    assert_eq!(show.model_info["general.architecture"], json!("llama"));
    assert_eq!(
        client.show("all-minilm:latest").await?.capabilities,
        vec!["embedding".to_string()]
    );

    // Non-streamed generation: the counters and the context Ollama returns.
    let request = GenerateRequest {
        model: "smollm2:135m".into(),
        prompt: Some("Name one colour.".into()),
        options: Some(greedy(12)),
        ..GenerateRequest::default()
    };
    let whole = client.generate(&request).await?;
    assert!(whole.done);
    assert!(!whole.response.is_empty());
    let eval_count = whole.durations.eval_count.unwrap_or(0);
    assert!((1..=12).contains(&eval_count), "{eval_count}");
    assert!(whole.durations.prompt_eval_count.unwrap_or(0) > 5);
    assert!(whole.durations.eval_duration.unwrap_or(0) > 0);
    let context = whole.context.clone().unwrap_or_default();
    assert_eq!(
        context.len() as u64,
        whole.durations.prompt_eval_count.unwrap_or(0) + eval_count
    );
    assert!(matches!(
        whole.done_reason.as_deref(),
        Some("stop" | "length")
    ));

    // Streamed, the same greedy answer arrives as NDJSON chunks ending with the counters.
    let mut streamed = request.clone();
    streamed.stream = Some(true);
    let body = reqwest::Client::new()
        .post(format!("http://{addr}/api/generate"))
        .json(&streamed)
        .send()
        .await?;
    assert_eq!(
        body.headers()["content-type"].to_str()?,
        "application/x-ndjson"
    );
    let text = body.text().await?;
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(lines.len() >= 2, "{text}");
    let (last, chunks) = lines.split_last().unwrap_or((&Value::Null, &[]));
    assert_eq!(last["done"], json!(true));
    assert!(last["eval_count"].as_u64().is_some());
    assert!(chunks.iter().all(|c| c["done"] == json!(false)));
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["response"].as_str())
        .collect();
    assert_eq!(joined, whole.response);

    // Chat, non-streamed.
    let chat = client
        .chat(&ChatRequest {
            model: "smollm2:135m".into(),
            messages: vec![Message::new("user", "Say hello.")],
            options: Some(greedy(16)),
            ..ChatRequest::default()
        })
        .await?;
    assert_eq!(chat.message.role, "assistant");
    assert!(!chat.message.content.is_empty());
    assert!(chat.done);

    // Structured outputs: format "json" and a JSON schema, enforced while decoding.
    let schema = json!({"type": "object",
        "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                       "score": {"type": "number"}},
        "required": ["sentiment", "score"]});
    for format in [json!("json"), schema.clone()] {
        let answer = client
            .chat(&ChatRequest {
                model: "smollm2:135m".into(),
                messages: vec![Message::new(
                    "user",
                    "Classify the sentiment of this review. Answer with a JSON object with the keys \"sentiment\" and \"score\": 'The shoes fell apart in a week.'",
                )],
                format: Some(format.clone()),
                options: Some(greedy(256)),
                ..ChatRequest::default()
            })
            .await?;
        let value: Value = serde_json::from_str(&answer.message.content).map_err(|e| {
            anyhow::anyhow!("{e}: {:?} for format {format}", answer.message.content)
        })?;
        assert!(value.is_object(), "{value}");
        if format == schema {
            let label = value["sentiment"].as_str().unwrap_or_default();
            assert!(
                ["positive", "negative", "neutral"].contains(&label),
                "{value}"
            );
            assert!(value["score"].is_number(), "{value}");
        }
    }

    // A continuation from the returned context sees the earlier exchange.
    let more = client
        .generate(&GenerateRequest {
            model: "smollm2".into(),
            prompt: Some("And another?".into()),
            context: Some(context.clone()),
            options: Some(greedy(4)),
            ..GenerateRequest::default()
        })
        .await;
    assert!(
        matches!(&more, Err(e) if e.kind() == infermesh_common::error::ErrorKind::NotFound),
        "smollm2 means smollm2:latest, which this server does not have: {more:?}"
    );
    let more = client
        .generate(&GenerateRequest {
            model: "smollm2:135m".into(),
            prompt: Some("And another?".into()),
            context: Some(context.clone()),
            options: Some(greedy(4)),
            ..GenerateRequest::default()
        })
        .await?;
    assert!(
        more.durations.prompt_eval_count.unwrap_or(0) > context.len() as u64,
        "the context is part of the prompt"
    );

    // An empty prompt only loads the model.
    let (status, load) = post(addr, "/api/generate", json!({"model": "smollm2:135m"})).await;
    assert_eq!(status, 200);
    assert_eq!(load["done_reason"], json!("load"));
    let (_, unload) = post(
        addr,
        "/api/generate",
        json!({"model": "smollm2:135m", "keep_alive": 0}),
    )
    .await;
    assert_eq!(unload["done_reason"], json!("unload"));

    // Embeddings: unit vectors from MiniLM, in input order, optionally shortened.
    let e = client
        .embed(&EmbedRequest {
            model: "all-minilm".into(),
            input: EmbedInput::Many(vec!["a red dress".into(), "the stock market fell".into()]),
            truncate: None,
            dimensions: None,
            options: None,
            keep_alive: None,
        })
        .await?;
    assert_eq!(e.embeddings.len(), 2);
    for v in &e.embeddings {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    let reference = infermesh_text::SentenceEncoder::load(&cache().join("all-MiniLM-L6-v2"))?
        .embed(&["a red dress"])?;
    let mut reference = reference.into_iter().next().unwrap_or_default();
    infermesh_text::normalize(&mut reference);
    let cos: f32 = reference
        .iter()
        .zip(&e.embeddings[0])
        .map(|(a, b)| a * b)
        .sum();
    assert!(cos > 0.9999, "cosine to the encoder's own vector {cos}");
    let (status, short) = post(
        addr,
        "/api/embed",
        json!({"model": "all-minilm", "input": "x", "dimensions": 8}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(short["embeddings"][0].as_array().map(Vec::len), Some(8));
    let (status, legacy) = post(
        addr,
        "/api/embeddings",
        json!({"model": "all-minilm", "prompt": "a red dress"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(legacy["embedding"].as_array().map(Vec::len), Some(384));

    srv.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() -> anyhow::Result<()> {
    let srv = server(4).await;
    let addr = srv.addr;
    let cases = [
        (
            "/api/generate",
            json!({"model": "nope", "prompt": "hi"}),
            404,
            "not found",
        ),
        (
            "/api/chat",
            json!({"model": "nope:7b", "messages": []}),
            404,
            "not found",
        ),
        (
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": "hi", "options": {"temperature": "hot"}}),
            400,
            "temperature",
        ),
        (
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": "hi", "template": "{{ .Prompt }}"}),
            400,
            "template",
        ),
        (
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": "hi", "images": ["aGk="]}),
            400,
            "images",
        ),
        (
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": "hi", "suffix": "end"}),
            400,
            "insert",
        ),
        (
            "/api/chat",
            json!({"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}),
            400,
            "tools",
        ),
        (
            "/api/chat",
            json!({"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}], "think": true}),
            400,
            "thinking",
        ),
        (
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": "word ".repeat(200), "options": {"num_ctx": 64}}),
            400,
            "context window",
        ),
        (
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": "hi", "context": [999999]}),
            400,
            "token id",
        ),
        (
            "/api/embed",
            json!({"model": "smollm2:135m", "input": "hi"}),
            400,
            "does not support embeddings",
        ),
        (
            "/api/generate",
            json!({"model": "all-minilm", "prompt": "hi"}),
            400,
            "does not support generate",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": "x", "dimensions": 0}),
            400,
            "dimensions",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": "word ".repeat(700), "truncate": false}),
            400,
            "context length",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": 3}),
            400,
            "",
        ),
        ("/api/chat", json!({"messages": []}), 400, "model"),
        (
            "/api/chat",
            json!({"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}], "format": 3}),
            400,
            "invalid format",
        ),
        (
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": "hi", "format": {"type": "nonsense"}}),
            400,
            "",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (got, answer) = post(addr, path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{path} {body}: {answer}");
    }
    // Not JSON at all.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/chat"))
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.json::<Value>().await?["error"].is_string());
    // Over the body limit.
    let (status, answer) = post(
        addr,
        "/api/generate",
        json!({"model": "smollm2:135m", "prompt": "x".repeat(5 * 1024 * 1024)}),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    srv.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_a_client_that_leaves_frees_the_model() -> anyhow::Result<()> {
    // No waiting room: one generation at a time.
    let srv = server(0).await;
    let addr = srv.addr;
    let long = json!({"model": "smollm2:135m", "prompt": "Count from one to five hundred.",
                      "options": {"temperature": 0, "num_predict": 400}});
    let running = reqwest::Client::new()
        .post(format!("http://{addr}/api/generate"))
        .json(&long)
        .send()
        .await?;
    assert_eq!(running.status().as_u16(), 200);
    // The first generation is running (its first token was sent) and its reader is not
    // reading, so it cannot finish: a second request is refused at once.
    let (status, busy) = post(addr, "/api/generate", long.clone()).await;
    assert_eq!(status, 503, "{busy}");
    assert!(
        busy["error"]
            .as_str()
            .unwrap_or_default()
            .contains("server busy"),
        "{busy}"
    );
    // The client leaves: generation stops and the model takes the next request.
    drop(running);
    let short = json!({"model": "smollm2:135m", "prompt": "hi", "stream": false,
                       "options": {"temperature": 0, "num_predict": 2}});
    let mut answered = None;
    for _ in 0..100 {
        let (status, body) = post(addr, "/api/generate", short.clone()).await;
        if status == 200 {
            answered = Some(body);
            break;
        }
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered = answered.expect("the model is free again within 10 s of the client leaving");
    assert_eq!(answered["done"], json!(true));
    srv.shutdown().await?;
    Ok(())
}
