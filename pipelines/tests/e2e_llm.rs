//! End to end with a real LLM: `infermesh llm serve` (SmolLM2-135M-Instruct, in process on
//! port 0) behind the queue, worker and Redis cache. The second identical job is answered from
//! the cache: the server's request counter does not move.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{RedisPrefix, metric_sum, metrics_text, redis_url};
use infermesh_ollama::server::{LlmServeArgs, RunningLlm};
use infermesh_pipelines::llm::jobs::{JobInput, JobOutput};
use infermesh_pipelines::llm::sink::{JobOutcome, JobResult};
use infermesh_pipelines::llm::worker::{LlmWorkerArgs, RunningLlmWorker, start};

fn gguf() -> PathBuf {
    let cache = std::env::var_os("INFERMESH_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/infermesh/models")
        });
    cache.join("smollm2-135m-instruct/model.gguf")
}

async fn llm() -> RunningLlm {
    let cfg = LlmServeArgs {
        port: 0,
        embed_model: "none".into(),
        model: gguf().display().to_string(),
        name: Some("smollm2:135m".into()),
        ..LlmServeArgs::default()
    }
    .validate()
    .expect("SmolLM2 is fetched (scripts/fetch_models.sh: ensure_smollm2)");
    infermesh_ollama::server::start(cfg).await.unwrap()
}

async fn worker(server: &RunningLlm, p: &RedisPrefix) -> RunningLlmWorker {
    let mut cfg = LlmWorkerArgs {
        ollama_url: format!("http://{}", server.addr),
        redis_url: Some(redis_url()),
        key_prefix: p.0.clone(),
        tokenizer: Some(gguf()),
        job_timeout_ms: 120_000,
        ..LlmWorkerArgs::default()
    }
    .validate()
    .unwrap();
    cfg.metrics_addr = None;
    start(cfg, None).await.unwrap()
}

fn chat_requests() -> f64 {
    metric_sum(
        &metrics_text(),
        "infermesh_llm_requests_total",
        &["endpoint=\"chat\""],
    )
}

async fn run(w: &RunningLlmWorker, input: &JobInput) -> JobResult {
    let id = w.enqueue(input).await.unwrap();
    w.results
        .wait(&id, Duration::from_secs(240))
        .await
        .expect("the job finishes")
}

#[tokio::test]
async fn a_theme_label_job_runs_once_then_comes_from_the_cache() {
    let p = RedisPrefix::new();
    let server = llm().await;
    let w = worker(&server, &p).await;
    let input = JobInput::ThemeLabel {
        topic_id: "t7".into(),
        keywords: ["battery", "charge", "hours", "drain", "charger"]
            .map(String::from)
            .to_vec(),
    };
    let before = chat_requests();
    let first = run(&w, &input).await;
    let JobOutcome::Done { output } = &first.outcome else {
        panic!("{:?}", first.outcome);
    };
    let out: JobOutput = serde_json::from_value(output.clone()).unwrap();
    let JobOutput::ThemeLabel { label } = &out else {
        panic!("{out:?}");
    };
    assert!(
        !label.is_empty() && label.split_whitespace().count() <= 6,
        "{label:?}"
    );
    assert_eq!(chat_requests() - before, 1.0, "one LLM call");
    let hits = || {
        metric_sum(
            &metrics_text(),
            "infermesh_llm_cache_requests_total",
            &["result=\"hit\""],
        )
    };
    let hits_before = hits();
    let second = run(&w, &input).await;
    assert_eq!(second.outcome, first.outcome);
    assert_eq!(
        chat_requests() - before,
        1.0,
        "the second came from the cache"
    );
    assert!(hits() > hits_before);
    w.shutdown().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_review_sentiment_job_runs_on_the_real_llm_with_a_json_schema() {
    let p = RedisPrefix::new();
    let server = llm().await;
    let w = worker(&server, &p).await;
    let input = JobInput::ReviewSentiment {
        review_id: "r1".into(),
        text: "I love this phone. The battery lasts two days and the screen is beautiful.".into(),
    };
    let before = chat_requests();
    let first = run(&w, &input).await;
    let JobOutcome::Done { output } = &first.outcome else {
        panic!("{:?}", first.outcome);
    };
    let out: JobOutput = serde_json::from_value(output.clone()).unwrap();
    assert!(matches!(out, JobOutput::ReviewSentiment { .. }), "{out:?}");
    let second = run(&w, &input).await;
    assert_eq!(second.outcome, first.outcome);
    assert_eq!(
        chat_requests() - before,
        1.0,
        "the second came from the cache"
    );
    w.shutdown().await;
    server.shutdown().await.unwrap();
}
