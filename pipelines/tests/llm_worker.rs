//! The LLM worker against stub LLMs: an answer that is malformed (not the asked-for JSON, or
//! not even the API's JSON), an LLM that is down (a closed port), one that never answers; each
//! fails clearly, is retried with backoff, then dead-lettered, all counted. And the cache:
//! identical reviews reach the LLM once.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    RedisPrefix, StubLlm, chat_answer, dead_addr, metric_sum, metrics_text, redis_url, silent_llm,
    stub_llm,
};
use infermesh_pipelines::llm::jobs::{JobInput, JobOutput, Sentiment};
use infermesh_pipelines::llm::sink::{JobOutcome, JobResult};
use infermesh_pipelines::llm::worker::{LlmWorkerArgs, RunningLlmWorker, start};

async fn worker(ollama_url: &str, redis_prefix: Option<&RedisPrefix>) -> RunningLlmWorker {
    let mut cfg = LlmWorkerArgs {
        ollama_url: ollama_url.to_string(),
        job_timeout_ms: 400,
        max_attempts: 3,
        backoff_ms: 50,
        redis_url: redis_prefix.map(|_| redis_url()),
        key_prefix: redis_prefix.map_or_else(|| "infermesh:llm:".into(), |p| p.0.clone()),
        ..LlmWorkerArgs::default()
    }
    .validate()
    .unwrap();
    cfg.metrics_addr = None;
    start(cfg, None).await.unwrap()
}

fn review(text: &str) -> JobInput {
    JobInput::ReviewSentiment {
        review_id: "r1".into(),
        text: text.into(),
    }
}

async fn run_to_end(w: &RunningLlmWorker, input: &JobInput) -> JobResult {
    let id = w.enqueue(input).await.unwrap();
    w.results
        .wait(&id, Duration::from_secs(20))
        .await
        .expect("the job finishes")
}

fn errors(text: &str, error: &str) -> f64 {
    metric_sum(
        text,
        "infermesh_llm_job_errors_total",
        &["kind=\"review_sentiment\"", &format!("error=\"{error}\"")],
    )
}

async fn assert_dead_lettered(llm: Option<&StubLlm>, url: &str, error_label: &str, says: &[&str]) {
    let w = worker(url, None).await;
    let before = metrics_text();
    let r = run_to_end(&w, &review("Terrible, broke in a day.")).await;
    let JobOutcome::Failed { error } = &r.outcome else {
        panic!("{error_label}: {:?}", r.outcome);
    };
    assert!(
        says.iter().any(|s| error.contains(s)),
        "{error_label}: {error}"
    );
    assert_eq!(r.attempts, 3, "{error_label}");
    if let Some(llm) = llm {
        assert_eq!(llm.count(), 3, "{error_label}: one call per attempt");
    }
    let dead = w.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.id, r.id);
    let after = metrics_text();
    let d =
        |m: &str, labels: &[&str]| metric_sum(&after, m, labels) - metric_sum(&before, m, labels);
    let kind = ["kind=\"review_sentiment\""];
    assert!(
        errors(&after, error_label) - errors(&before, error_label) >= 3.0,
        "{error_label}: every failed attempt counted"
    );
    assert!(d("infermesh_llm_job_retries_total", &kind) >= 2.0);
    assert!(d("infermesh_llm_job_dead_letters_total", &kind) >= 1.0);
    w.shutdown().await;
}

#[tokio::test]
async fn an_answer_that_is_not_the_asked_for_json_is_retried_then_dead_lettered() {
    let llm = stub_llm(200, chat_answer("I think this review is quite positive!")).await;
    assert_dead_lettered(
        Some(&llm),
        &llm.url(),
        "malformed_output",
        &["no JSON object"],
    )
    .await;
}

#[tokio::test]
async fn an_answer_that_is_not_the_apis_json_is_retried_then_dead_lettered() {
    let llm = stub_llm(200, "{\"model\": \"m\", \"message\": ".into()).await;
    assert_dead_lettered(
        Some(&llm),
        &llm.url(),
        "malformed_answer",
        &["malformed answer"],
    )
    .await;
}

#[tokio::test]
async fn an_llm_that_is_down_is_retried_then_dead_lettered() {
    let url = format!("http://{}", dead_addr());
    assert_dead_lettered(None, &url, "unreachable", &["cannot reach the LLM"]).await;
}

#[tokio::test]
async fn an_llm_that_never_answers_times_out_then_dead_letters() {
    let llm = silent_llm().await;
    assert_dead_lettered(Some(&llm), &llm.url(), "timeout", &["did not answer"]).await;
}

#[tokio::test]
async fn a_refused_request_is_not_retried() {
    let llm = stub_llm(400, "{\"error\": \"format is not supported\"}".into()).await;
    let w = worker(&llm.url(), None).await;
    let r = run_to_end(&w, &review("fine")).await;
    assert!(
        matches!(&r.outcome, JobOutcome::Failed { error } if error.contains("format is not supported"))
    );
    assert_eq!((r.attempts, llm.count()), (1, 1));
    w.shutdown().await;
}

#[tokio::test]
async fn identical_reviews_reach_the_llm_once() {
    let p = RedisPrefix::new();
    let llm = stub_llm(
        200,
        chat_answer("{\"label\": \"positive\", \"score\": 0.9}"),
    )
    .await;
    let w = worker(&llm.url(), Some(&p)).await;
    let expected = JobOutcome::Done {
        output: serde_json::to_value(JobOutput::ReviewSentiment {
            label: Sentiment::Positive,
            score: 0.9,
        })
        .unwrap(),
    };
    let first = run_to_end(&w, &review("Great phone, the battery lasts two days.")).await;
    assert_eq!(first.outcome, expected);
    assert_eq!(llm.count(), 1);
    // The same text again, and once more with invisible characters and a stray control
    // character: the sanitised prompt is the same, so is the cache key.
    for text in [
        "Great phone, the battery lasts two days.",
        "Great\u{200b} phone, the battery\u{7} lasts two days.\u{feff}",
    ] {
        let again = run_to_end(&w, &review(text)).await;
        assert_eq!(again.outcome, expected, "{text:?}");
    }
    assert_eq!(llm.count(), 1, "answered from the cache");
    // The answer is in Redis under the prefix, and the results too.
    let keys = p.keys();
    assert_eq!(
        keys.iter().filter(|k| k.contains(":cache:")).count(),
        1,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| k.contains(":result:")).count(),
        3,
        "{keys:?}"
    );
    // A different review is a miss.
    run_to_end(&w, &review("Awful.")).await;
    assert_eq!(llm.count(), 2);
    w.shutdown().await;
}

#[tokio::test]
async fn enqueue_returns_before_the_llm_answers_and_a_full_queue_refuses() {
    let llm = silent_llm().await;
    let mut cfg = LlmWorkerArgs {
        ollama_url: llm.url(),
        queue_depth: 2,
        job_timeout_ms: 5_000,
        ..LlmWorkerArgs::default()
    }
    .validate()
    .unwrap();
    cfg.metrics_addr = None;
    let w = start(cfg, None).await.unwrap();
    let started = std::time::Instant::now();
    // One runs (and hangs on the silent LLM), two wait, the fourth is refused.
    w.enqueue(&review("a")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while llm.count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    w.enqueue(&review("b")).await.unwrap();
    w.enqueue(&review("c")).await.unwrap();
    let err = w.enqueue(&review("d")).await.unwrap_err();
    assert_eq!(err.kind(), infermesh_common::ErrorKind::Overloaded);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "enqueue never waits on the LLM"
    );
    assert_eq!(llm.count(), 1, "concurrency 1");
}
