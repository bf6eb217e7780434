//! `infermesh.v1.ResumeMatcher`: ranks resumes (text, or PDF/DOCX uploads) against a job
//! description with a score breakdown: embedding similarity over chunks, required skills
//! matched and missing, experience.
//!
//! The ranking itself is `infermesh_resume::rank` (pure compute). Its embeddings come from the
//! served embedding model through that version's token-budget batcher, so resume ranking
//! shares admission and batching with every other caller of the model. Skills are matched
//! exactly against the shipped taxonomy here (the embedding near-miss pass embeds up to a few
//! hundred candidate phrases per text, too slow to run per resume on a request path).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use infermesh_common::ServiceError;
use infermesh_inference::LoadedVersion;
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::resume_matcher_server::ResumeMatcher;
use infermesh_resume::{DocumentKind, Embedder, ResumeInput, SkillMatcher, Weights};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::state::{AppState, Protocol, record};

/// Most resumes in one Rank call.
pub const MAX_RESUMES: usize = 500;
/// Largest uploaded document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = infermesh_resume::document::DEFAULT_MAX_BYTES;

/// The typed resume-matching service.
#[derive(Debug, Clone)]
pub struct ResumeService {
    state: AppState,
}

impl ResumeService {
    /// A service over `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn taxonomy() -> Result<&'static SkillMatcher, ServiceError> {
    static MATCHER: OnceLock<Result<SkillMatcher, String>> = OnceLock::new();
    MATCHER
        .get_or_init(|| SkillMatcher::builtin().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(ServiceError::internal)
}

/// Embeds through a served version's batcher, from a blocking thread. Keeps the first
/// serving error so an overload is reported as such, not as a ranking failure.
struct BatchedEmbedder {
    version: Arc<LoadedVersion>,
    runtime: tokio::runtime::Handle,
    error: Mutex<Option<ServiceError>>,
}

impl Embedder for BatchedEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let owned = texts.iter().map(|t| t.to_string()).collect();
        let res = crate::text::text_family(&self.version)
            .and_then(|text| self.runtime.block_on(text.run(owned)));
        res.map_err(|e| {
            let message = e.message.clone();
            self.error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
            message
        })
    }
}

fn weights(w: Option<pb::ScoreWeights>) -> Result<Weights, ServiceError> {
    let Some(w) = w else {
        return Ok(Weights::default());
    };
    let parts = [w.semantic, w.skills, w.experience];
    if parts.iter().any(|x| !x.is_finite() || *x < 0.0) || parts.iter().sum::<f32>() <= 0.0 {
        return Err(ServiceError::invalid(
            "weights must be finite, non-negative and not all zero",
        ));
    }
    Ok(Weights {
        semantic: w.semantic,
        skills: w.skills,
        experience: w.experience,
    })
}

fn document_type(kind: DocumentKind) -> &'static str {
    match kind {
        DocumentKind::Pdf => "pdf",
        DocumentKind::Docx => "docx",
        DocumentKind::Text => "text",
    }
}

/// Reads every resume's text: plain text as is, uploads through the PDF/DOCX extractor.
fn read_resumes(
    resumes: Vec<pb::Resume>,
) -> Result<(Vec<ResumeInput>, Vec<&'static str>), ServiceError> {
    let mut inputs = Vec::with_capacity(resumes.len());
    let mut kinds = Vec::with_capacity(resumes.len());
    for (i, r) in resumes.into_iter().enumerate() {
        let id = if r.id.is_empty() { i.to_string() } else { r.id };
        let (text, kind) = match r.content {
            Some(pb::resume::Content::Text(t)) => (t, "text"),
            Some(pb::resume::Content::Document(bytes)) => {
                let doc = infermesh_resume::extract_text(&bytes, MAX_DOCUMENT_BYTES)
                    .map_err(|e| ServiceError::invalid(format!("resume '{id}': {e}")))?;
                (doc.text, document_type(doc.kind))
            }
            None => {
                return Err(ServiceError::invalid(format!(
                    "resume '{id}' has neither text nor a document"
                )));
            }
        };
        if text.trim().is_empty() {
            return Err(ServiceError::invalid(format!("resume '{id}' is empty")));
        }
        inputs.push(ResumeInput { id, text });
        kinds.push(kind);
    }
    Ok((inputs, kinds))
}

async fn rank(
    handle: Arc<LoadedVersion>,
    r: pb::RankRequest,
) -> Result<pb::RankResponse, ServiceError> {
    let text = crate::text::text_family(&handle)?;
    if text.is_classifier() {
        return Err(ServiceError::invalid(format!(
            "model '{}' is a classifier; ResumeMatcher needs an embedding model",
            handle.name
        )));
    }
    let weights = weights(r.weights)?;
    let top_k = r.top_k as usize;
    let jd = r.job_description;
    let resumes = r.resumes;
    let embedder = BatchedEmbedder {
        version: handle.clone(),
        runtime: tokio::runtime::Handle::current(),
        error: Mutex::new(None),
    };
    // Document parsing and the ranking loop are CPU work and call the batcher synchronously:
    // a blocking thread, never an async worker.
    let (ranked, kinds, required) = tokio::task::spawn_blocking(move || {
        let matcher = taxonomy()?;
        let (inputs, kinds) = read_resumes(resumes)?;
        let required: Vec<String> = {
            let mut seen = Vec::new();
            for s in matcher.extract_exact(&jd) {
                if !seen.contains(&s.skill) {
                    seen.push(s.skill);
                }
            }
            seen
        };
        let ranked =
            infermesh_resume::rank(&jd, &inputs, &embedder, matcher, &weights).map_err(|e| {
                embedder
                    .error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_else(|| ServiceError::internal(e))
            })?;
        Ok::<_, ServiceError>((ranked, kinds, required))
    })
    .await
    .map_err(ServiceError::internal)??;
    let take = if top_k == 0 { ranked.len() } else { top_k };
    Ok(pb::RankResponse {
        candidates: ranked
            .into_iter()
            .take(take)
            .map(|c| pb::Candidate {
                document_type: kinds[c.index].to_string(),
                id: c.id,
                score: c.score,
                semantic: c.breakdown.semantic,
                skill_coverage: c.breakdown.skill_coverage,
                experience: c.breakdown.experience,
                matched_skills: c.breakdown.matched_skills,
                missing_skills: c.breakdown.missing_skills,
                required_years: c.breakdown.required_years,
                resume_years: c.breakdown.resume_years,
            })
            .collect(),
        required_skills: required,
        model_name: handle.name.clone(),
        model_version: handle.version.to_string(),
    })
}

#[tonic::async_trait]
impl ResumeMatcher for ResumeService {
    async fn rank(
        &self,
        req: Request<pb::RankRequest>,
    ) -> Result<Response<pb::RankResponse>, Status> {
        let r = req.into_inner();
        let started = Instant::now();
        let name = if r.model_name.is_empty() {
            self.state.default_embedding_model.clone()
        } else {
            r.model_name.clone()
        };
        if r.job_description.trim().is_empty() {
            return Err(ServiceError::invalid("job_description is empty").into());
        }
        if r.resumes.is_empty() || r.resumes.len() > MAX_RESUMES {
            return Err(ServiceError::invalid(format!(
                "{} resumes; send between 1 and {MAX_RESUMES}",
                r.resumes.len()
            ))
            .into());
        }
        let version = r.model_version.clone();
        let handle = self
            .state
            .resolve(&name, &version, Protocol::Typed, started)?;
        let v = handle.version.to_string();
        let span =
            tracing::info_span!("resume_rank", n = r.resumes.len(), model = %name, version = %v);
        let res = rank(handle, r).instrument(span).await;
        record(
            &name,
            &v,
            Protocol::Typed,
            started,
            res.as_ref().map(|_| ()),
        );
        Ok(Response::new(res?))
    }
}
