//! Ranking resumes against a job description, hand-written: the score is a weighted sum of three parts that each
//! lie in `[0, 1]`, and every part is returned so a recruiter (or the product API) can see why a candidate ranks
//! where it does.
//!
//! * **semantic**: texts are cut into windows of [`CHUNK_WORDS`] words overlapping by [`CHUNK_OVERLAP`]. The job
//!   description becomes one vector, the re-normalised mean of its chunk embeddings (a JD is one requirement profile);
//!   a resume scores the *maximum* cosine of that vector with any of its chunks (the relevant experience is often one
//!   section of a long resume, and a mean over chunks would punish long resumes). Negative cosines count as 0.
//! * **skills**: required skills are the skills the [`SkillMatcher`] finds in the JD (exact spans and confident
//!   similar spans; uncertain ones are left out). Coverage is matched / required; 1.0 when the JD names none
//!   (nothing to tell candidates apart by).
//! * **experience**: years required (the largest lower bound among "N+ years", "N-M years", "N to M years" in the JD)
//!   against the resume's years (the largest of explicit "N years" statements, "since YYYY", and the span from the
//!   earliest to the latest year of "YYYY - YYYY|present" ranges): `min(resume / required, 1)`, 0.5 when the resume
//!   states nothing. Seniority keywords (intern < junior < mid < senior < lead/staff/principal < head/director)
//!   score 1 when the resume's level reaches the JD's and lose a third per level short. The part is the mean of
//!   the sub-scores the JD asks for, 1.0 when it asks for neither.
//!
//! Candidates are sorted by score, highest first; ties keep input order.

use crate::skills::{Embedder, MatchSource, SkillMatcher, SkillSpan, TaxonomyError};

/// Words per chunk for the semantic score.
pub const CHUNK_WORDS: usize = 200;
/// Words shared by consecutive chunks.
pub const CHUNK_OVERLAP: usize = 50;
/// Texts embedded per embedder call.
const EMBED_BATCH: usize = 32;

/// One resume to rank.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumeInput {
    /// Caller's identifier, returned as is.
    pub id: String,
    /// Extracted resume text (see [`crate::document::extract_text`]).
    pub text: String,
}

/// Weights of the three score parts. The combined score divides by their sum, so they need not sum to 1; the
/// defaults do.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Weights {
    /// Embedding similarity of JD and resume.
    pub semantic: f32,
    /// Fraction of the JD's skills found in the resume.
    pub skills: f32,
    /// Years and seniority.
    pub experience: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            semantic: 0.45,
            skills: 0.4,
            experience: 0.15,
        }
    }
}

/// Why a candidate scored what it did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreBreakdown {
    /// Semantic part in `[0, 1]`.
    pub semantic: f32,
    /// Skill coverage in `[0, 1]`.
    pub skill_coverage: f32,
    /// Experience part in `[0, 1]`.
    pub experience: f32,
    /// Required skills found in the resume (canonical names, JD order).
    pub matched_skills: Vec<String>,
    /// Required skills not found.
    pub missing_skills: Vec<String>,
    /// Years the JD asks for, if it says.
    pub required_years: Option<f32>,
    /// Years the resume shows, if it says.
    pub resume_years: Option<f32>,
    /// Seniority level the JD names (0 intern .. 5 head/director).
    pub required_seniority: Option<u8>,
    /// Seniority level the resume names.
    pub resume_seniority: Option<u8>,
}

/// A ranked resume.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RankedCandidate {
    /// The input's id.
    pub id: String,
    /// Position in the input slice.
    pub index: usize,
    /// Weighted score in `[0, 1]`.
    pub score: f32,
    /// The parts of the score.
    pub breakdown: ScoreBreakdown,
}

/// Ranks `resumes` against the job description `jd`, best first (ties by input order).
///
/// Fails only when the embedder (here or inside `matcher`) fails.
pub fn rank(
    jd: &str,
    resumes: &[ResumeInput],
    embedder: &dyn Embedder,
    matcher: &SkillMatcher,
    weights: &Weights,
) -> Result<Vec<RankedCandidate>, TaxonomyError> {
    let year = current_year();
    let jd_chunks = chunk_words(jd, CHUNK_WORDS, CHUNK_OVERLAP);
    let jd_vector = normalise(mean(&embed_all(embedder, &jd_chunks)?));
    let required = skill_names(&matcher.extract(jd)?);
    let required_years = required_years(jd);
    let required_seniority = seniority(jd);

    let mut ranked = Vec::with_capacity(resumes.len());
    for (index, resume) in resumes.iter().enumerate() {
        let chunks = chunk_words(&resume.text, CHUNK_WORDS, CHUNK_OVERLAP);
        let semantic = embed_all(embedder, &chunks)?
            .iter()
            .map(|v| dot(&jd_vector, v))
            .fold(0.0f32, f32::max)
            .clamp(0.0, 1.0);

        let have = skill_names(&matcher.extract(&resume.text)?);
        let (matched, missing): (Vec<String>, Vec<String>) =
            required.iter().cloned().partition(|s| have.contains(s));
        let skill_coverage = if required.is_empty() {
            1.0
        } else {
            matched.len() as f32 / required.len() as f32
        };

        let resume_years = resume_years(&resume.text, year);
        let resume_seniority = seniority(&resume.text);
        let mut parts = Vec::new();
        if let Some(req) = required_years {
            parts.push(match resume_years {
                Some(y) if req > 0.0 => (y / req).min(1.0),
                Some(_) => 1.0,
                None => 0.5,
            });
        }
        if let Some(req) = required_seniority {
            parts.push(match resume_seniority {
                Some(r) if r >= req => 1.0,
                Some(r) => 1.0 - f32::from((req - r).min(3)) / 3.0,
                None => 0.5,
            });
        }
        let experience = if parts.is_empty() {
            1.0
        } else {
            parts.iter().sum::<f32>() / parts.len() as f32
        };

        let total = weights.semantic + weights.skills + weights.experience;
        let score = if total > 0.0 {
            (weights.semantic * semantic
                + weights.skills * skill_coverage
                + weights.experience * experience)
                / total
        } else {
            0.0
        };
        ranked.push(RankedCandidate {
            id: resume.id.clone(),
            index,
            score,
            breakdown: ScoreBreakdown {
                semantic,
                skill_coverage,
                experience,
                matched_skills: matched,
                missing_skills: missing,
                required_years,
                resume_years,
                required_seniority,
                resume_seniority,
            },
        });
    }
    // Stable sort: equal scores keep input order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(ranked)
}

/// Canonical names of the spans a ranking trusts (exact, or similar and not uncertain), first occurrence order.
fn skill_names(spans: &[SkillSpan]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in spans {
        if (s.source == MatchSource::Exact || !s.uncertain) && !out.contains(&s.skill) {
            out.push(s.skill.clone());
        }
    }
    out
}

/// Windows of `size` words, consecutive windows sharing `overlap` words; one (possibly empty) chunk at least.
pub fn chunk_words(text: &str, size: usize, overlap: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let size = size.max(1);
    let step = size.saturating_sub(overlap).max(1);
    if words.len() <= size {
        return vec![words.join(" ")];
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + size).min(words.len());
        chunks.push(words[start..end].join(" "));
        if end == words.len() {
            break;
        }
        start += step;
    }
    chunks
}

fn embed_all(embedder: &dyn Embedder, texts: &[String]) -> Result<Vec<Vec<f32>>, TaxonomyError> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(EMBED_BATCH) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs).map_err(TaxonomyError::Embedder)?;
        if vectors.len() != refs.len() {
            return Err(TaxonomyError::Embedder(format!(
                "{} vectors for {} texts",
                vectors.len(),
                refs.len()
            )));
        }
        out.extend(vectors);
    }
    Ok(out)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mean(vectors: &[Vec<f32>]) -> Vec<f32> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut m = vec![0.0f32; dim];
    for v in vectors {
        m.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    m
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = dot(&v, &v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs as f64 / (365.2425 * 86_400.0)) as i32
}

/// Lower-cased words, numbers (with a trailing `+`) and dashes, for the experience parser.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '+' && !cur.is_empty() {
            cur.extend(c.to_lowercase());
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if matches!(c, '-' | '–' | '—') {
                out.push("-".to_owned());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn number(word: &str) -> Option<f32> {
    let n: f32 = word.trim_end_matches('+').parse().ok()?;
    (0.0..=60.0).contains(&n).then_some(n)
}

fn is_years(word: &str) -> bool {
    matches!(word, "year" | "years" | "yrs" | "yr")
}

/// Every "N years" / "N+ years" / "N-M years" / "N to M years" as (lower bound, upper bound).
fn year_mentions(w: &[String]) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    for k in 1..w.len() {
        if !is_years(&w[k]) {
            continue;
        }
        let Some(hi) = number(&w[k - 1]) else {
            continue;
        };
        let lo = (k >= 3 && matches!(w[k - 2].as_str(), "-" | "to"))
            .then(|| number(&w[k - 3]))
            .flatten();
        out.push((lo.unwrap_or(hi), hi));
    }
    out
}

/// Years of experience a job description asks for: the largest lower bound it states.
pub fn required_years(jd: &str) -> Option<f32> {
    year_mentions(&words(jd))
        .into_iter()
        .map(|(lo, _)| lo)
        .reduce(f32::max)
}

/// Years of experience a resume shows: the largest of "N years", "since YYYY" and the span of "YYYY - YYYY|present"
/// ranges, measured against `current_year`.
pub fn resume_years(text: &str, current_year: i32) -> Option<f32> {
    let w = words(text);
    let mut best: Option<f32> = year_mentions(&w)
        .into_iter()
        .map(|(_, hi)| hi)
        .reduce(f32::max);
    let year_of = |s: &str| {
        s.parse::<i32>()
            .ok()
            .filter(|y| (1950..=current_year).contains(y))
    };
    let mut first_start: Option<i32> = None;
    let mut last_end: Option<i32> = None;
    for k in 0..w.len() {
        if w[k] == "since"
            && let Some(y) = w.get(k + 1).and_then(|s| year_of(s))
        {
            best = Some(best.map_or(0.0, |b: f32| b).max((current_year - y) as f32));
        }
        if let Some(start) = year_of(&w[k])
            && matches!(w.get(k + 1).map(String::as_str), Some("-" | "to"))
        {
            let end = match w.get(k + 2).map(String::as_str) {
                Some("present" | "current" | "now" | "today") => Some(current_year),
                Some(s) => year_of(s).filter(|&e| e >= start),
                None => None,
            };
            if let Some(end) = end {
                first_start = Some(first_start.map_or(start, |f| f.min(start)));
                last_end = Some(last_end.map_or(end, |l| l.max(end)));
            }
        }
    }
    if let (Some(s), Some(e)) = (first_start, last_end) {
        best = Some(best.map_or(0.0, |b: f32| b).max((e - s) as f32));
    }
    best
}

/// Highest seniority keyword in a text: 0 intern, 1 junior/entry/graduate, 2 mid/intermediate, 3 senior, 4 lead /
/// staff / principal, 5 head / director / vp.
pub fn seniority(text: &str) -> Option<u8> {
    words(text)
        .iter()
        .filter_map(|w| match w.as_str() {
            "intern" | "internship" => Some(0),
            "junior" | "jr" | "entry" | "graduate" => Some(1),
            "mid" | "intermediate" => Some(2),
            "senior" | "sr" => Some(3),
            "lead" | "staff" | "principal" => Some(4),
            "head" | "director" | "vp" => Some(5),
            _ => None,
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skills::tests::{TrigramEmbedder, small};

    fn resume(id: &str, text: &str) -> ResumeInput {
        ResumeInput {
            id: id.into(),
            text: text.into(),
        }
    }

    #[test]
    fn experience_parsing() {
        assert_eq!(
            required_years("5+ years of experience in Python"),
            Some(5.0)
        );
        assert_eq!(
            required_years("3-5 years of experience; 2 years with SQL"),
            Some(3.0)
        );
        assert_eq!(required_years("3 to 5 years"), Some(3.0));
        assert_eq!(required_years("no numbers here"), None);
        assert_eq!(resume_years("Developer since 2015", 2026), Some(11.0));
        assert_eq!(
            resume_years("Acme 2012 - 2016; Beta 2018 – present", 2026),
            Some(14.0)
        );
        assert_eq!(resume_years("7 years building APIs", 2026), Some(7.0));
        assert_eq!(resume_years("born 1990", 2026), None);
        assert_eq!(seniority("Senior Software Engineer"), Some(3));
        assert_eq!(seniority("Junior analyst, later Staff engineer"), Some(4));
        assert_eq!(seniority("engineer"), None);
    }

    #[test]
    fn chunks_overlap() {
        let text: String = (0..450).map(|i| format!("w{i} ")).collect();
        let chunks = chunk_words(&text, 200, 50);
        assert_eq!(chunks.len(), 3);
        assert!(chunks[0].starts_with("w0 ") && chunks[0].ends_with("w199"));
        assert!(chunks[1].starts_with("w150 "));
        assert!(chunks[2].ends_with("w449"));
        assert_eq!(chunk_words("", 200, 50), vec![String::new()]);
    }

    #[test]
    fn ranks_by_skills_semantics_and_experience() {
        let jd = "Senior backend engineer. 5+ years of experience. Python, Kubernetes and PostgreSQL required.";
        let resumes = vec![
            resume("weak", "Pastry chef, 2 years, croissants and sourdough."),
            resume(
                "strong",
                "Senior engineer since 2015: Python services on k8s with Postgres.",
            ),
            resume("partial", "Junior developer, 1 year of Python."),
        ];
        let ranked = rank(
            jd,
            &resumes,
            &TrigramEmbedder,
            &small(),
            &Weights::default(),
        )
        .expect("fake embedder");
        let order: Vec<&str> = ranked.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["strong", "partial", "weak"]);
        let strong = &ranked[0].breakdown;
        assert_eq!(
            strong.matched_skills,
            ["Python", "Kubernetes", "PostgreSQL"]
        );
        assert!(strong.missing_skills.is_empty());
        assert!((strong.skill_coverage - 1.0).abs() < 1e-6);
        assert_eq!(strong.required_years, Some(5.0));
        assert!((strong.experience - 1.0).abs() < 1e-6);
        let partial = &ranked[1].breakdown;
        assert_eq!(partial.missing_skills, ["Kubernetes", "PostgreSQL"]);
        assert!(partial.experience < 0.5);
        assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(ranked.iter().all(|r| (0.0..=1.0).contains(&r.score)));
    }

    #[test]
    fn ties_keep_input_order_and_weights_matter() {
        let jd = "Python developer";
        let resumes = vec![
            resume("a", "Python developer"),
            resume("b", "Python developer"),
        ];
        let ranked = rank(
            jd,
            &resumes,
            &TrigramEmbedder,
            &small(),
            &Weights::default(),
        )
        .expect("fake");
        assert_eq!((ranked[0].index, ranked[1].index), (0, 1));
        // Only skills weighted: a resume without the skill scores 0 even if text is similar.
        let only_skills = Weights {
            semantic: 0.0,
            skills: 1.0,
            experience: 0.0,
        };
        let resumes = vec![resume("x", "Pithon developer"), resume("y", "Python")];
        let ranked = rank(jd, &resumes, &TrigramEmbedder, &small(), &only_skills).expect("fake");
        assert_eq!(ranked[0].id, "y");
        assert!(ranked[1].score.abs() < 1e-6);
        let w: Weights = serde_json::from_str("{}").expect("defaults");
        assert!((w.semantic + w.skills + w.experience - 1.0).abs() < 1e-6);
    }
}
