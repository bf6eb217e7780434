//! What the processor asks of the models: a [`SentimentScorer`] and a [`TopicAssigner`], small
//! object-safe async traits, with gRPC implementations ([`GrpcSentiment`], [`GrpcTopics`])
//! calling the inference server's typed services `infermesh.v1.Sentiment/Analyze` and
//! `infermesh.v1.Topics/Assign`, and in-memory ones ([`FixedSentiment`], [`FixedTopics`]) for
//! tests and demos. The pipelines crate links none of the model crates: only the generated
//! code of their `.proto` files ([`proto`]).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::bus::BoxFuture;

/// The generated code of `infermesh.v1.Sentiment` and `infermesh.v1.Topics` (clients, and the
/// server traits the tests implement).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod proto {
    tonic::include_proto!("infermesh.v1");
}

/// A text's sentiment.
#[derive(Debug, Clone, PartialEq)]
pub struct SentimentScore {
    /// The model's label (positive, negative, neutral, or as its training data named them).
    pub label: String,
    /// Confidence in the label, 0..=1.
    pub score: f32,
    /// Which model answered: "llm" or "classifier".
    pub source: String,
}

/// A text's topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicScore {
    /// The topic id; -1 for an outlier.
    pub id: i64,
    /// The topic's label.
    pub label: String,
    /// Its keywords, best first (what a theme-label job summarises).
    pub keywords: Vec<String>,
}

/// Why scoring failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service}: {message}")]
pub struct ScoreError {
    /// "sentiment" or "topics" (a metric label).
    pub service: &'static str,
    /// Whether trying again later may succeed (the server is down, slow or overloaded); when
    /// false the server refused this input, and the review is stored without that part.
    pub retryable: bool,
    /// What happened.
    pub message: String,
}

impl ScoreError {
    /// From a gRPC status of `service`.
    pub fn from_status(service: &'static str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let retryable = !matches!(
            status.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::PermissionDenied
                | Code::Unauthenticated
        );
        Self {
            service,
            retryable,
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

/// Scores sentiment, one result per text in order.
pub trait SentimentScorer: Send + Sync + std::fmt::Debug {
    /// The sentiment of each of `texts`.
    fn analyze<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<SentimentScore>, ScoreError>>;
}

/// Assigns topics, one result per text in order.
pub trait TopicAssigner: Send + Sync + std::fmt::Debug {
    /// The topic of each of `texts`.
    fn assign<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TopicScore>, ScoreError>>;
}

/// The inference server's gRPC endpoint at `url`, each call bounded by `timeout` (parsing
/// only: usable outside a Tokio runtime, as flag checks are).
pub fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("'{url}' is not a gRPC URL: {e}"))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .tcp_nodelay(true))
}

/// A lazily connected channel to [`endpoint`] (inside a Tokio runtime).
pub fn channel(url: &str, timeout: Duration) -> Result<Channel, String> {
    Ok(endpoint(url, timeout)?.connect_lazy())
}

/// `infermesh.v1.Sentiment/Analyze` on the inference server.
#[derive(Debug, Clone)]
pub struct GrpcSentiment {
    client: proto::sentiment_client::SentimentClient<Channel>,
    model: String,
}

impl GrpcSentiment {
    /// A client of model `model` ("" for the server's "sentiment") over `channel`.
    pub fn new(channel: Channel, model: impl Into<String>) -> Self {
        Self {
            client: proto::sentiment_client::SentimentClient::new(channel),
            model: model.into(),
        }
    }
}

fn count_mismatch(service: &'static str, asked: usize, got: usize) -> ScoreError {
    ScoreError {
        service,
        retryable: true,
        message: format!("{got} results for {asked} texts"),
    }
}

impl SentimentScorer for GrpcSentiment {
    fn analyze<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<SentimentScore>, ScoreError>> {
        Box::pin(async move {
            let req = proto::SentimentAnalyzeRequest {
                model: self.model.clone(),
                texts: texts.to_vec(),
                ..Default::default()
            };
            let resp = self
                .client
                .clone()
                .analyze(req)
                .await
                .map_err(|s| ScoreError::from_status("sentiment", &s))?
                .into_inner();
            if resp.results.len() != texts.len() {
                return Err(count_mismatch("sentiment", texts.len(), resp.results.len()));
            }
            Ok(resp
                .results
                .into_iter()
                .map(|r| SentimentScore {
                    label: r.label,
                    score: r.score,
                    source: r.source,
                })
                .collect())
        })
    }
}

/// `infermesh.v1.Topics/Assign` on the inference server.
#[derive(Debug, Clone)]
pub struct GrpcTopics {
    client: proto::topics_client::TopicsClient<Channel>,
    model: String,
}

impl GrpcTopics {
    /// A client of model `model` ("" for the server's "topics") over `channel`.
    pub fn new(channel: Channel, model: impl Into<String>) -> Self {
        Self {
            client: proto::topics_client::TopicsClient::new(channel),
            model: model.into(),
        }
    }
}

impl TopicAssigner for GrpcTopics {
    fn assign<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TopicScore>, ScoreError>> {
        Box::pin(async move {
            let req = proto::TopicsAssignRequest {
                model: self.model.clone(),
                texts: texts.to_vec(),
                ..Default::default()
            };
            let resp = self
                .client
                .clone()
                .assign(req)
                .await
                .map_err(|s| ScoreError::from_status("topics", &s))?
                .into_inner();
            if resp.assignments.len() != texts.len() {
                return Err(count_mismatch(
                    "topics",
                    texts.len(),
                    resp.assignments.len(),
                ));
            }
            Ok(resp
                .assignments
                .into_iter()
                .map(|a| TopicScore {
                    id: a.topic,
                    label: a.label,
                    keywords: a.keywords,
                })
                .collect())
        })
    }
}

/// A sentiment scorer by keyword, in memory: "positive" for texts with a word of
/// `positive_words`, "negative" for `negative_words`, else "neutral" (source "fixed").
#[derive(Debug, Clone, Default)]
pub struct FixedSentiment {
    /// Words that make a text positive.
    pub positive_words: Vec<String>,
    /// Words that make a text negative (checked first).
    pub negative_words: Vec<String>,
}

impl SentimentScorer for FixedSentiment {
    fn analyze<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<SentimentScore>, ScoreError>> {
        Box::pin(async move {
            Ok(texts
                .iter()
                .map(|t| {
                    let lower = t.to_lowercase();
                    let has = |words: &[String]| words.iter().any(|w| lower.contains(w.as_str()));
                    let label = if has(&self.negative_words) {
                        "negative"
                    } else if has(&self.positive_words) {
                        "positive"
                    } else {
                        "neutral"
                    };
                    SentimentScore {
                        label: label.into(),
                        score: 0.9,
                        source: "fixed".into(),
                    }
                })
                .collect())
        })
    }
}

/// A topic assigner in memory: the first topic one of whose keywords the text contains, else
/// the outlier topic -1.
#[derive(Debug, Clone, Default)]
pub struct FixedTopics {
    /// Topics `(id, label, keywords)`.
    pub topics: Vec<(i64, String, Vec<String>)>,
}

impl TopicAssigner for FixedTopics {
    fn assign<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TopicScore>, ScoreError>> {
        Box::pin(async move {
            Ok(texts
                .iter()
                .map(|t| {
                    let lower = t.to_lowercase();
                    self.topics
                        .iter()
                        .find(|(_, _, kw)| kw.iter().any(|k| lower.contains(k.as_str())))
                        .map(|(id, label, kw)| TopicScore {
                            id: *id,
                            label: label.clone(),
                            keywords: kw.clone(),
                        })
                        .unwrap_or(TopicScore {
                            id: -1,
                            label: "-1".into(),
                            keywords: Vec::new(),
                        })
                })
                .collect())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_retry_and_refusal() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::ResourceExhausted,
            tonic::Code::Internal,
        ] {
            assert!(ScoreError::from_status("topics", &tonic::Status::new(code, "x")).retryable);
        }
        for code in [tonic::Code::InvalidArgument, tonic::Code::NotFound] {
            assert!(!ScoreError::from_status("topics", &tonic::Status::new(code, "x")).retryable);
        }
    }

    #[tokio::test]
    async fn the_memory_scorers_answer_in_order() {
        let s = FixedSentiment {
            positive_words: vec!["great".into()],
            negative_words: vec!["broken".into()],
        };
        let texts = vec![
            "Great phone".to_string(),
            "Arrived broken".to_string(),
            "It is a phone".to_string(),
        ];
        let labels: Vec<String> = s
            .analyze(&texts)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.label)
            .collect();
        assert_eq!(labels, ["positive", "negative", "neutral"]);
        let t = FixedTopics {
            topics: vec![(0, "0_battery".into(), vec!["battery".into()])],
        };
        let ids: Vec<i64> = t
            .assign(&["battery died".to_string(), "nice".to_string()])
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [0, -1]);
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_and_a_dead_server_is_retryable() {
        assert!(endpoint("not a url", Duration::from_secs(1)).is_err());
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let ch = channel(&format!("http://{dead}"), Duration::from_millis(500)).unwrap();
        let err = GrpcSentiment::new(ch, "")
            .analyze(&["x".to_string()])
            .await
            .unwrap_err();
        assert!(err.retryable, "{err}");
        assert_eq!(err.service, "sentiment");
    }
}
