//! Resume screening, pure compute: what `infermesh.v1.ResumeMatcher/Rank` and the `resumes` pipeline call.
//!
//! * [`document`]: text out of uploaded bytes (PDF, DOCX or UTF-8 text), with typed errors for what users upload
//!   (encrypted, scanned, corrupt, too large, unsupported).
//! * [`skills`]: a phrase matcher over the shipped O*NET-derived taxonomy (`data/skills.tsv`), with an optional
//!   embedding pass for near misses, and an evaluation helper.
//! * [`matching`]: ranking resumes against a job description (embedding similarity, skill coverage, experience).
//!
//! The crate knows nothing of tokio, tonic or candle: embeddings come in through the [`Embedder`] trait.

pub mod document;
pub mod matching;
pub mod skills;

pub use document::{DocumentError, DocumentKind, ExtractedDocument, extract_text};
pub use matching::{RankedCandidate, ResumeInput, ScoreBreakdown, Weights, rank};
pub use skills::{
    Embedder, EvalExample, EvalReport, ExampleResult, MatchSource, SkillEntry, SkillMatcher,
    SkillSpan, TaxonomyError, evaluate, evaluate_spans,
};
