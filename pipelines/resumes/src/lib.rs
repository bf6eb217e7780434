//! `infermesh pipeline resumes`: `resume.uploaded` -> text extraction and ranking against the
//! job (`infermesh.v1.ResumeMatcher/Rank` on the inference server: PDF, DOCX or text, embedding
//! similarity, required skills, experience) -> table `resume_scores` in PostgreSQL and the
//! `resume.scored` topic.
//!
//! An event is `{"resume_id", "job_id", one of "text" | "document_base64" | "object_key",
//! optional "job_description", "ts"}`. The job's description is the event's, else the `jobs`
//! table's (`pipelines/migrations/0004_resume_scores.sql`). `object_key` names a file under
//! `--object-root` (a mounted object store); keys that leave it are refused.
//!
//! It runs in the pipelines' runtime (`infermesh_pipelines::runtime`): at least once,
//! deduplicated by message id, the row upserted by (resume_id, job_id) so a redelivery rewrites
//! it, dead letters to `resume.uploaded.dlq` (`malformed_json`, `missing_field`,
//! `invalid_value`, `unknown_job`), graceful drain on SIGTERM, metrics on `--metrics-port`
//! (8086). A batch's resumes are ranked in one call per job.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::future::join_all;
use infermesh_common::metrics_names as m;
use infermesh_pipelines::bus::{BoxFuture, EventBus, Message, Subscription};
use infermesh_pipelines::kafka::{KafkaArgs, KafkaBus};
use infermesh_pipelines::runtime::{Dedupe, Handler, Incoming, Outcome, RunStats, RuntimeConfig};
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::resume_matcher_client::ResumeMatcherClient;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tonic::transport::Channel;

/// The topic scores go to.
pub const SCORED_TOPIC: &str = "resume.scored";
/// Largest resume (text, document or object), bytes.
pub const MAX_RESUME_BYTES: usize = 16 << 20;
/// Most resumes in one Rank call (the server's bound).
const MAX_PER_CALL: usize = 200;

/// Why the pipeline could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A flag is wrong.
    #[error("{0}")]
    Config(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] infermesh_pipelines::bus::BusError),
    /// The database refused.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Metrics or I/O set-up failed.
    #[error("{0}")]
    Io(String),
}

/// `infermesh pipeline resumes` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ResumesArgs {
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// gRPC address of the inference server (infermesh.v1.ResumeMatcher).
    #[arg(
        long,
        env = "INFERMESH_INFERENCE_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub inference_url: String,
    /// Embedding model the matcher uses; empty: the server's default.
    #[arg(long, default_value = "")]
    pub model: String,
    /// Deadline of one Rank call, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// PostgreSQL (postgres://user[:password]@host:port/db): tables `jobs` and `resume_scores`
    /// (created by the pipelines' migrations at start-up).
    #[arg(long, env = "INFERMESH_DATABASE_URL")]
    pub database_url: String,
    /// Directory `object_key` names files under (a mounted object store); unset: events with
    /// an object key are dead-lettered.
    #[arg(long, env = "INFERMESH_OBJECT_ROOT")]
    pub object_root: Option<PathBuf>,
    /// Redis for the dedupe window, shared by the group's processes; without it, memory.
    #[arg(long, env = "INFERMESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Address the metrics port listens on.
    #[arg(long, env = "INFERMESH_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Prometheus /metrics port (0 picks a free port, printed at start).
    #[arg(long, env = "INFERMESH_METRICS_PORT", default_value_t = 8086)]
    pub metrics_port: u16,
    /// Topic read.
    #[arg(long, default_value = "resume.uploaded")]
    pub input_topic: String,
    /// Consumer group.
    #[arg(
        long,
        env = "INFERMESH_RESUMES_GROUP",
        default_value = "pipeline-resumes"
    )]
    pub group: String,
    /// Most resumes handled as one batch.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// How long processed message ids are remembered, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub dedupe_ttl_seconds: u64,
}

/// A `resume.uploaded` value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uploaded {
    /// The resume.
    pub resume_id: String,
    /// The job it applies to.
    pub job_id: String,
    /// Plain text.
    #[serde(default)]
    pub text: Option<String>,
    /// A PDF, DOCX or text file, base64.
    #[serde(default)]
    pub document_base64: Option<String>,
    /// A file under `--object-root`.
    #[serde(default)]
    pub object_key: Option<String>,
    /// The job's description, when the event carries it.
    #[serde(default)]
    pub job_description: Option<String>,
    /// When it was uploaded, Unix ms.
    #[serde(default)]
    pub ts: Option<i64>,
}

/// A `resume.scored` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The resume.
    pub resume_id: String,
    /// The job.
    pub job_id: String,
    /// Combined score in [0, 1].
    pub score: f32,
    /// Embedding similarity part.
    pub semantic: f32,
    /// Required skills found / required.
    pub skill_coverage: f32,
    /// Experience part.
    pub experience: f32,
    /// Required skills the resume has.
    pub matched_skills: Vec<String>,
    /// Required skills it lacks.
    pub missing_skills: Vec<String>,
    /// Years the job asks for, when it says.
    pub required_years: Option<f32>,
    /// Years the resume shows, when it says.
    pub resume_years: Option<f32>,
    /// "text", "pdf" or "docx".
    pub document_type: String,
    /// Embedding model that answered.
    pub model: String,
    /// Its version.
    pub version: String,
    /// When it was scored, Unix ms.
    pub scored_at_ms: i64,
}

type Poison = (&'static str, String);

fn valid_id(field: &'static str, s: &str) -> Result<(), Poison> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        return Err((
            "invalid_value",
            format!("{field} must be 1..256 bytes, no controls"),
        ));
    }
    Ok(())
}

/// `key` under `root`, refused when it is absolute or climbs out.
fn object_path(root: &Path, key: &str) -> Result<PathBuf, Poison> {
    let rel = Path::new(key);
    if key.is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err((
            "invalid_value",
            format!("object_key {key:?} leaves the object root"),
        ));
    }
    Ok(root.join(rel))
}

impl Uploaded {
    /// Parses and checks a value.
    pub fn parse(payload: &[u8]) -> Result<Self, Poison> {
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| ("malformed_json", e.to_string()))?;
        for f in ["resume_id", "job_id"] {
            if v.get(f).is_none_or(serde_json::Value::is_null) {
                return Err(("missing_field", format!("{f} is required")));
            }
        }
        let u: Uploaded =
            serde_json::from_value(v).map_err(|e| ("invalid_value", e.to_string()))?;
        valid_id("resume_id", &u.resume_id)?;
        valid_id("job_id", &u.job_id)?;
        let given = [
            u.text.is_some(),
            u.document_base64.is_some(),
            u.object_key.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        match given {
            0 => Err((
                "missing_field",
                "one of text, document_base64, object_key is required".into(),
            )),
            1 => Ok(u),
            _ => Err((
                "invalid_value",
                "only one of text, document_base64, object_key".into(),
            )),
        }
    }

    /// The resume as the matcher takes it, read and bounded.
    pub async fn content(&self, root: Option<&Path>) -> Result<pb::resume::Content, Poison> {
        if let Some(t) = &self.text {
            if t.len() > MAX_RESUME_BYTES {
                return Err(("invalid_value", "text over 16 MiB".into()));
            }
            return Ok(pb::resume::Content::Text(t.clone()));
        }
        if let Some(b) = &self.document_base64 {
            if b.len() / 4 * 3 > MAX_RESUME_BYTES {
                return Err(("invalid_value", "document over 16 MiB".into()));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| ("invalid_value", format!("document_base64: {e}")))?;
            return Ok(pb::resume::Content::Document(bytes));
        }
        let key = self.object_key.as_deref().unwrap_or_default();
        let Some(root) = root else {
            return Err((
                "invalid_value",
                "object_key given but no --object-root".into(),
            ));
        };
        let path = object_path(root, key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| ("invalid_value", format!("object {key:?}: {e}")))?;
        if meta.len() > MAX_RESUME_BYTES as u64 {
            return Err(("invalid_value", format!("object {key:?} over 16 MiB")));
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| ("invalid_value", format!("object {key:?}: {e}")))?;
        Ok(pb::resume::Content::Document(bytes))
    }
}

/// Where scores are written.
#[derive(Debug, Clone)]
pub struct ScoreStore {
    pool: PgPool,
}

impl ScoreStore {
    /// A pool on `url`; nothing connects until the first query.
    pub fn connect_lazy(url: &str) -> Result<Self, PipelineError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(PipelineError::Config(
                "--database-url: not a PostgreSQL URL (postgres://user@host:port/db)".into(),
            ));
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(|e| PipelineError::Config(format!("--database-url: {e}")))?;
        Ok(Self { pool })
    }

    /// Runs the pipelines' migrations.
    pub async fn migrate(&self) -> Result<(), PipelineError> {
        infermesh_pipelines::db::MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The description of `job_id`, if the table has it.
    pub async fn job(&self, job_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT description FROM jobs WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Inserts or replaces the row of (resume, job).
    pub async fn upsert(&self, s: &Scored) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO resume_scores (resume_id, job_id, score, semantic, skill_coverage, experience, \
               matched_skills, missing_skills, required_years, resume_years, document_type, model, \
               model_version, scored_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, to_timestamp($14 / 1000.0)) \
             ON CONFLICT (resume_id, job_id) DO UPDATE SET score = EXCLUDED.score, \
               semantic = EXCLUDED.semantic, skill_coverage = EXCLUDED.skill_coverage, \
               experience = EXCLUDED.experience, matched_skills = EXCLUDED.matched_skills, \
               missing_skills = EXCLUDED.missing_skills, required_years = EXCLUDED.required_years, \
               resume_years = EXCLUDED.resume_years, document_type = EXCLUDED.document_type, \
               model = EXCLUDED.model, model_version = EXCLUDED.model_version, \
               scored_at = EXCLUDED.scored_at",
        )
        .bind(&s.resume_id)
        .bind(&s.job_id)
        .bind(s.score)
        .bind(s.semantic)
        .bind(s.skill_coverage)
        .bind(s.experience)
        .bind(&s.matched_skills)
        .bind(&s.missing_skills)
        .bind(s.required_years)
        .bind(s.resume_years)
        .bind(&s.document_type)
        .bind(&s.model)
        .bind(&s.version)
        .bind(s.scored_at_ms as f64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The pipeline's processing.
#[derive(Debug)]
pub struct ResumesHandler {
    /// The matcher.
    pub matcher: ResumeMatcherClient<Channel>,
    /// Embedding model; empty: the server's default.
    pub model: String,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Tables.
    pub store: ScoreStore,
    /// Where `resume.scored` goes.
    pub bus: Arc<dyn EventBus>,
    /// Object keys' root.
    pub object_root: Option<PathBuf>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A call's failure: the request's fault (each resume is then tried alone) or not.
enum CallError {
    Refused(String),
    Failed(String),
}

impl ResumesHandler {
    async fn rank(
        &self,
        job: &str,
        resumes: Vec<pb::Resume>,
    ) -> Result<pb::RankResponse, CallError> {
        let mut req = tonic::Request::new(pb::RankRequest {
            job_description: job.to_string(),
            resumes,
            top_k: 0,
            weights: None,
            model_name: self.model.clone(),
            model_version: String::new(),
        });
        req.set_timeout(self.timeout);
        match self.matcher.clone().rank(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                Err(CallError::Refused(s.message().to_string()))
            }
            Err(s) => Err(CallError::Failed(format!("{}: {}", s.code(), s.message()))),
        }
    }

    /// Scores `items` (index into the batch, event, content) against `job`; one outcome and,
    /// when scored, one result per item.
    async fn score_job(
        &self,
        job: &str,
        items: Vec<(usize, &Uploaded, pb::resume::Content)>,
        out: &mut [Option<Outcome>],
        scored: &mut Vec<(usize, Scored)>,
    ) {
        for chunk in items.chunks(MAX_PER_CALL) {
            let resumes: Vec<pb::Resume> = chunk
                .iter()
                .map(|(i, _, c)| pb::Resume {
                    id: i.to_string(),
                    content: Some(c.clone()),
                })
                .collect();
            let answers = match self.rank(job, resumes).await {
                Ok(r) => vec![(chunk.to_vec(), Ok(r))],
                // One bad document refuses the call: each alone, so only it is dead-lettered.
                Err(CallError::Refused(_)) if chunk.len() > 1 => {
                    let mut v = Vec::new();
                    for item in chunk {
                        let one = vec![pb::Resume {
                            id: item.0.to_string(),
                            content: Some(item.2.clone()),
                        }];
                        v.push((vec![item.clone()], self.rank(job, one).await));
                    }
                    v
                }
                Err(e) => vec![(chunk.to_vec(), Err(e))],
            };
            for (items, answer) in answers {
                match answer {
                    Ok(r) => {
                        let by_id: HashMap<&str, &pb::Candidate> =
                            r.candidates.iter().map(|c| (c.id.as_str(), c)).collect();
                        for (i, u, _) in items {
                            let Some(c) = by_id.get(i.to_string().as_str()) else {
                                out[i] = Some(Outcome::Retry("the matcher skipped it".into()));
                                continue;
                            };
                            scored.push((
                                i,
                                Scored {
                                    resume_id: u.resume_id.clone(),
                                    job_id: u.job_id.clone(),
                                    score: c.score,
                                    semantic: c.semantic,
                                    skill_coverage: c.skill_coverage,
                                    experience: c.experience,
                                    matched_skills: c.matched_skills.clone(),
                                    missing_skills: c.missing_skills.clone(),
                                    required_years: c.required_years,
                                    resume_years: c.resume_years,
                                    document_type: c.document_type.clone(),
                                    model: r.model_name.clone(),
                                    version: r.model_version.clone(),
                                    scored_at_ms: unix_ms(),
                                },
                            ));
                        }
                    }
                    Err(CallError::Refused(why)) => {
                        for (i, _, _) in items {
                            out[i] = Some(Outcome::Poison {
                                reason: "invalid_value",
                                detail: why.clone(),
                            });
                        }
                    }
                    Err(CallError::Failed(why)) => {
                        for (i, _, _) in items {
                            out[i] = Some(Outcome::Retry(why.clone()));
                        }
                    }
                }
            }
        }
    }

    async fn write(&self, s: &Scored) -> Outcome {
        if let Err(e) = self.store.upsert(s).await {
            return Outcome::Retry(format!("database: {e}"));
        }
        let payload = match serde_json::to_vec(s) {
            Ok(p) => p,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let mut msg = Message::new(s.job_id.clone(), payload);
        msg.headers
            .push(("message-id".into(), format!("{}:{}", s.resume_id, s.job_id)));
        msg.headers
            .push(("content-type".into(), "application/json".into()));
        match self.bus.publish(SCORED_TOPIC, msg).await {
            Ok(()) => {
                metrics::counter!(m::RESUMES_SCORED_TOTAL).increment(1);
                Outcome::Done
            }
            Err(e) => Outcome::Retry(format!("{SCORED_TOPIC}: {e}")),
        }
    }
}

impl Handler for ResumesHandler {
    fn handle<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut out: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
            let parsed: Vec<Result<Uploaded, Poison>> = batch
                .iter()
                .map(|inc| Uploaded::parse(&inc.delivery.message.payload))
                .collect();
            let contents = join_all(parsed.iter().map(|p| async move {
                match p {
                    Ok(u) => Some(u.content(self.object_root.as_deref()).await),
                    Err(_) => None,
                }
            }))
            .await;
            // Group by job description: the event's, else the jobs table's.
            let mut jobs: HashMap<String, Option<String>> = HashMap::new();
            let mut groups: HashMap<String, Vec<(usize, &Uploaded, pb::resume::Content)>> =
                HashMap::new();
            for (i, (p, c)) in parsed.iter().zip(contents).enumerate() {
                let u = match p {
                    Ok(u) => u,
                    Err((reason, detail)) => {
                        out[i] = Some(Outcome::Poison {
                            reason,
                            detail: detail.clone(),
                        });
                        continue;
                    }
                };
                let content = match c {
                    Some(Ok(c)) => c,
                    Some(Err((reason, detail))) => {
                        out[i] = Some(Outcome::Poison { reason, detail });
                        continue;
                    }
                    None => continue,
                };
                let description = match &u.job_description {
                    Some(d) if !d.trim().is_empty() => Some(d.clone()),
                    _ => match jobs.get(&u.job_id) {
                        Some(d) => d.clone(),
                        None => match self.store.job(&u.job_id).await {
                            Ok(d) => {
                                jobs.insert(u.job_id.clone(), d.clone());
                                d
                            }
                            Err(e) => {
                                out[i] = Some(Outcome::Retry(format!("database: {e}")));
                                continue;
                            }
                        },
                    },
                };
                let Some(description) = description else {
                    out[i] = Some(Outcome::Poison {
                        reason: "unknown_job",
                        detail: format!("job {:?} is neither in the event nor in jobs", u.job_id),
                    });
                    continue;
                };
                groups.entry(description).or_default().push((i, u, content));
            }
            let mut scored = Vec::new();
            for (job, items) in groups {
                self.score_job(&job, items, &mut out, &mut scored).await;
            }
            let written = join_all(scored.iter().map(|(_, s)| self.write(s))).await;
            for ((i, _), o) in scored.iter().zip(written) {
                out[*i] = Some(o);
            }
            out.into_iter()
                .map(|o| o.unwrap_or_else(|| Outcome::Retry("not processed".into())))
                .collect()
        })
    }
}

/// A running pipeline: `shutdown` drains it, `wait` runs it until a signal.
pub type RunningPipeline = infermesh_pipelines::runtime::Running<RunStats, PipelineError>;

impl From<infermesh_pipelines::runtime::TaskError> for PipelineError {
    fn from(e: infermesh_pipelines::runtime::TaskError) -> Self {
        PipelineError::Io(e.0)
    }
}

/// Starts the pipeline over any bus (tests, an in-process bus).
pub async fn start_with(
    rt: RuntimeConfig,
    sub: Box<dyn Subscription>,
    bus: Arc<dyn EventBus>,
    dedupe: Dedupe,
    handler: ResumesHandler,
    metrics_addr: Option<SocketAddr>,
) -> Result<RunningPipeline, PipelineError> {
    RunningPipeline::consume(
        "resumes pipeline",
        rt,
        sub,
        bus,
        dedupe,
        handler,
        metrics_addr,
        |_| async {},
    )
    .await
}

/// The matcher client of `url`.
pub fn matcher(url: &str) -> Result<ResumeMatcherClient<Channel>, PipelineError> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| PipelineError::Config(format!("--inference-url: {e}")))?
        .connect_lazy();
    Ok(ResumeMatcherClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20))
}

/// Starts the pipeline on Kafka.
pub async fn start(args: ResumesArgs) -> Result<RunningPipeline, PipelineError> {
    let store = ScoreStore::connect_lazy(&args.database_url)?;
    store.migrate().await?;
    let kcfg = args.kafka.config("infermesh-pipeline-resumes")?;
    let bus = Arc::new(KafkaBus::new(kcfg)?);
    let dedupe = match &args.redis_url {
        Some(url) => Dedupe::Redis {
            conn: infermesh_pipelines::llm::cache::redis_manager(url, Duration::from_secs(2))
                .map_err(|e| PipelineError::Config(format!("--redis-url: {e}")))?,
            prefix: format!("infermesh:resumes:msg:{}:", args.group),
            ttl: Duration::from_secs(args.dedupe_ttl_seconds.max(1)),
        },
        None => Dedupe::memory(1_000_000),
    };
    let sub = bus.subscribe_kafka(&args.input_topic, &args.group)?;
    let mut rt = RuntimeConfig::new("resumes");
    rt.max_batch = args.max_batch.max(1);
    start_with(
        rt,
        Box::new(sub),
        bus.clone(),
        dedupe,
        ResumesHandler {
            matcher: matcher(&args.inference_url)?,
            model: args.model.clone(),
            timeout: Duration::from_millis(args.timeout_ms.max(1)),
            store,
            bus,
            object_root: args.object_root.clone(),
        },
        Some(SocketAddr::new(args.host, args.metrics_port)),
    )
    .await
}

/// Runs until Ctrl-C or SIGTERM, printing the metrics address first.
pub async fn run(args: ResumesArgs) -> Result<(), PipelineError> {
    start(args)
        .await?
        .run_until_signalled("infermesh pipeline resumes")
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked_with_a_reason() {
        let reason = |s: &str| Uploaded::parse(s.as_bytes()).unwrap_err().0;
        assert_eq!(reason("{"), "malformed_json");
        assert_eq!(reason(r#"{"job_id":"j","text":"x"}"#), "missing_field");
        assert_eq!(reason(r#"{"resume_id":"r","job_id":"j"}"#), "missing_field");
        assert_eq!(
            reason(r#"{"resume_id":"r","job_id":"j","text":"x","object_key":"k"}"#),
            "invalid_value"
        );
        assert_eq!(
            reason(r#"{"resume_id":"","job_id":"j","text":"x"}"#),
            "invalid_value"
        );
        assert_eq!(
            reason(r#"{"resume_id":"r","job_id":"j","text":"x","extra":1}"#),
            "invalid_value"
        );
        assert!(Uploaded::parse(br#"{"resume_id":"r","job_id":"j","text":"x"}"#).is_ok());
    }

    #[test]
    fn object_keys_stay_under_the_root() {
        let root = Path::new("/objects");
        assert_eq!(
            object_path(root, "a/b.pdf").unwrap(),
            Path::new("/objects/a/b.pdf")
        );
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../x", ""] {
            assert!(object_path(root, bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn contents_are_bounded_and_decoded() {
        let u =
            Uploaded::parse(br#"{"resume_id":"r","job_id":"j","document_base64":"aGk="}"#).unwrap();
        assert_eq!(
            u.content(None).await.unwrap(),
            pb::resume::Content::Document(b"hi".to_vec())
        );
        let u =
            Uploaded::parse(br#"{"resume_id":"r","job_id":"j","document_base64":"!!"}"#).unwrap();
        assert_eq!(u.content(None).await.unwrap_err().0, "invalid_value");
        let u = Uploaded::parse(br#"{"resume_id":"r","job_id":"j","object_key":"x"}"#).unwrap();
        assert_eq!(u.content(None).await.unwrap_err().0, "invalid_value");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"resume text").unwrap();
        assert_eq!(
            u.content(Some(dir.path())).await.unwrap(),
            pb::resume::Content::Document(b"resume text".to_vec())
        );
    }
}
