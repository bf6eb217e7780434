//! `POST /api/v1/resumes/rank`: JSON in front of `infermesh.v1.ResumeMatcher` for the resume
//! portal and the recruiter dashboard: a job description and resumes (text, or a PDF/DOCX
//! upload as base64) in; candidates ranked best first with their score breakdown out.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use base64::Engine;
use infermesh_common::ServiceError;
use infermesh_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{GatewayState, json_rejection, upstream_error, with_request_id};

/// Most resumes in one call.
pub const MAX_RESUMES: usize = 200;

/// One resume: exactly one of `text` and `document_base64`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeJson {
    /// The caller's id, echoed back.
    pub id: String,
    /// Plain text.
    #[serde(default)]
    pub text: Option<String>,
    /// A PDF, DOCX or text file, base64 (standard alphabet).
    #[serde(default)]
    pub document_base64: Option<String>,
}

/// Score weights (non-negative; they need not sum to 1).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsJson {
    /// Embedding similarity.
    pub semantic: f32,
    /// Required-skill coverage.
    pub skills: f32,
    /// Experience.
    pub experience: f32,
}

/// A ranking request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RankRequest {
    /// The job description.
    pub job_description: String,
    /// Resumes to rank.
    pub resumes: Vec<ResumeJson>,
    /// Candidates to return (default: all).
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Score weights (default: semantic 0.45, skills 0.40, experience 0.15).
    #[serde(default)]
    pub weights: Option<WeightsJson>,
    /// Embedding model (default: the server's).
    #[serde(default)]
    pub model: Option<String>,
    /// Its version (default: latest ready).
    #[serde(default)]
    pub version: Option<String>,
}

/// Why a candidate scored what it did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Breakdown {
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
    /// Years the job asks for.
    pub required_years: Option<f32>,
    /// Years the resume shows.
    pub resume_years: Option<f32>,
}

/// A ranked candidate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    /// The resume's id.
    pub id: String,
    /// Combined score in [0, 1].
    pub score: f32,
    /// How the resume was read: text, pdf, docx.
    pub document_type: String,
    /// The score's parts.
    pub breakdown: Breakdown,
}

/// The ranking.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankResponse {
    /// Best first.
    pub candidates: Vec<Candidate>,
    /// Skills found in the job description.
    pub required_skills: Vec<String>,
    /// Embedding model that answered.
    pub model: String,
    /// Its version.
    pub version: String,
}

fn to_proto(r: RankRequest) -> Result<pb::RankRequest, ServiceError> {
    if r.resumes.is_empty() || r.resumes.len() > MAX_RESUMES {
        return Err(ServiceError::invalid(format!(
            "send 1 to {MAX_RESUMES} resumes, got {}",
            r.resumes.len()
        )));
    }
    let resumes = r
        .resumes
        .into_iter()
        .map(|res| {
            let content = match (res.text, res.document_base64) {
                (Some(t), None) => pb::resume::Content::Text(t),
                (None, Some(b)) => pb::resume::Content::Document(
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .map_err(|e| {
                            ServiceError::invalid(format!(
                                "resume '{}': document_base64 is not base64: {e}",
                                res.id
                            ))
                        })?,
                ),
                _ => {
                    return Err(ServiceError::invalid(format!(
                        "resume '{}' needs exactly one of text and document_base64",
                        res.id
                    )));
                }
            };
            Ok(pb::Resume {
                id: res.id,
                content: Some(content),
            })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(pb::RankRequest {
        job_description: r.job_description,
        resumes,
        top_k: r.top_k.unwrap_or(0),
        weights: r.weights.map(|w| pb::ScoreWeights {
            semantic: w.semantic,
            skills: w.skills,
            experience: w.experience,
        }),
        model_name: r.model.unwrap_or_default(),
        model_version: r.version.unwrap_or_default(),
    })
}

/// Ranks resumes against a job description.
pub async fn rank(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Json<RankRequest>, JsonRejection>,
) -> Result<Json<RankResponse>, ServiceError> {
    let Json(req) = body.map_err(json_rejection)?;
    let msg = to_proto(req)?;
    let mut client = st.resumes.clone();
    let r = client
        .rank(with_request_id(&headers, msg))
        .await
        .map_err(|s| upstream_error("inference", s))?
        .into_inner();
    Ok(Json(RankResponse {
        candidates: r
            .candidates
            .into_iter()
            .map(|c| Candidate {
                id: c.id,
                score: c.score,
                document_type: c.document_type,
                breakdown: Breakdown {
                    semantic: c.semantic,
                    skill_coverage: c.skill_coverage,
                    experience: c.experience,
                    matched_skills: c.matched_skills,
                    missing_skills: c.missing_skills,
                    required_years: c.required_years,
                    resume_years: c.resume_years,
                },
            })
            .collect(),
        required_skills: r.required_skills,
        model: r.model_name,
        version: r.model_version,
    }))
}
