//! Skill extraction: a phrase matcher over the shipped taxonomy, the role spaCy's `PhraseMatcher` / an NER model
//! plays in Python resume parsers, plus an optional embedding pass for near misses.
//!
//! Everything here is hand-written; the taxonomy (`data/skills.tsv`) is generated from O*NET 29.2 Technology Skills
//! by `tools/gen_skills_taxonomy.py` (CC BY 4.0, attribution in `data/NOTICE.md`).
//!
//! # Tokens
//! Word tokens are runs of letters and digits with trailing `+` / `#` kept (`C++`, `C#`); every other visible
//! character is a punctuation token of its own. A punctuation token records whether it touches a word on its left
//! and right, so `Node.js` (glued dot), `.NET` (dot glued to the right only) and `CI/CD` are token sequences that
//! a sentence end ("... in Java. Net revenue ...") does not reproduce. Matching is case-insensitive on the token
//! text, so `node.js,` at the end of a sentence matches `Node.js`, and `C` never matches inside `C++` because
//! `c++` is one token.
//!
//! # Longest match first
//! Every alias is tokenised the same way and stored in a map from token sequence to skill. At each position the
//! longest sequence (up to the longest alias) that is in the map wins, and matching continues after it.
//!
//! # Ambiguous aliases
//! Some aliases are ordinary words or letters: `R`, `C`, `Go`, `ML`, `Excel`, `Word`, `Access`, `Swift`, ... The
//! rule, applied to single-token aliases:
//! * *short* (one or two characters, e.g. `R`, `C`, `Go`, `JS`): the text must have the alias's exact case **and**
//!   be in a skills-list context: a neighbouring token is `,` `;` `/` `(` `)` `:` `|` or the word `and` / `or`, and
//!   another unambiguous skill is matched within [`LIST_WINDOW`] tokens. "Python, R and SQL" matches R;
//!   "Go to market" and "Plan B" match nothing.
//! * *common words* ([`COMMON_WORDS`], e.g. `Excel`, `Access`, `Spark`): the exact case is required; at the start of a
//!   sentence, or next to another capitalised word (Title Case: "Project Management"), where capitals say nothing,
//!   the list context is required too.
//!
//! Such matches get confidence 0.9 instead of 1.0.
//!
//! # Near misses
//! With an [`Embedder`] ([`SkillMatcher::with_embeddings`]) the canonical names are embedded once. Candidate phrases
//! the exact pass did not cover are embedded and compared with them; the best cosine at or above
//! `min_similarity` gives a [`MatchSource::Similar`] span with that cosine as confidence, `uncertain` when below
//! `confident_similarity` (a later LLM step checks those). Candidates, kept simple on purpose:
//! * runs of 1-3 word tokens that each look like a name (a capital letter, digit, `+` or `#`), not at the start of
//!   a sentence unless the run is longer than one token;
//! * items of comma / semicolon / slash lists of 1-3 word tokens ("experience with fooDB, bar-ml, Baz").
//!
//! Stop words never form a single-token candidate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Single-token aliases that are also ordinary English words: matched case-sensitively (see the module docs).
pub const COMMON_WORDS: &[&str] = &[
    "access",
    "word",
    "project",
    "outlook",
    "teams",
    "publisher",
    "excel",
    "swift",
    "rust",
    "spark",
    "ruby",
    "react",
    "agile",
    "scrum",
    "chef",
    "puppet",
    "slack",
    "maya",
    "notes",
    "ant",
    "pig",
    "hive",
    "blink",
    "loom",
    "seesaw",
    "scheme",
    "zoom",
    "inventor",
    "bamboo",
    "bootstrap",
    "sheets",
    "slides",
    "dynamics",
    "chrome",
    "safari",
    "keynote",
    "domino",
    "audition",
    "groovy",
    "maven",
    "ada",
    "eiffel",
    "pascal",
    "prolog",
    "vue",
    "canva",
    "bash",
    "snort",
    "go",
    "node",
    "basic",
    "windows",
    "android",
    "stata",
];

/// How many tokens either side may hold the other skill that makes a short alias a list item.
pub const LIST_WINDOW: usize = 8;

const STOP_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "and",
    "or",
    "of",
    "in",
    "on",
    "at",
    "to",
    "for",
    "with",
    "by",
    "from",
    "as",
    "is",
    "are",
    "be",
    "we",
    "you",
    "our",
    "your",
    "i",
    "it",
    "this",
    "that",
    "these",
    "those",
    "etc",
    "e",
    "g",
    "ie",
    "eg",
    "s",
    "experience",
    "knowledge",
    "skills",
    "ability",
    "strong",
    "excellent",
    "including",
    "such",
    "other",
    "tools",
    "years",
    "year",
    "bs",
    "ba",
    "ms",
    "phd",
    "degree",
    "mba",
    "team",
    "teams",
    "work",
    "working",
    "equivalent",
    "practical",
    "preferred",
    "minimum",
    "qualifications",
    "responsibilities",
    "one",
    "two",
    "more",
    "plus",
    "using",
];

/// Errors from loading a taxonomy or running the embedding pass.
#[derive(Debug, thiserror::Error)]
pub enum TaxonomyError {
    /// A taxonomy line does not have the three tab-separated columns.
    #[error("taxonomy line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The embedder failed or returned vectors of the wrong shape.
    #[error("embedder: {0}")]
    Embedder(String),
}

/// Embeds texts as unit vectors. Implemented by the serving layer (e.g. MiniLM on candle) and by fakes in tests.
pub trait Embedder {
    /// One unit-length vector per text, all of the same dimension.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

/// One taxonomy row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkillEntry {
    /// The name spans report (e.g. "Microsoft Excel").
    pub canonical: String,
    /// Category (an O*NET commodity title or "Concepts (hand-written)").
    pub category: String,
    /// Other spellings (e.g. "Excel", "MS Excel").
    pub aliases: Vec<String>,
}

/// How a span was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MatchSource {
    /// The text spells the canonical name or an alias.
    Exact,
    /// An embedding of the text is close to the canonical name's.
    Similar,
}

/// A skill found in a text.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SkillSpan {
    /// Byte offset of the first byte in the original text.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// `text[start..end]`.
    pub text: String,
    /// Canonical skill name.
    pub skill: String,
    /// Taxonomy category.
    pub category: String,
    /// 1.0 for exact matches, 0.9 for ambiguous aliases in context, the cosine for similar ones.
    pub confidence: f32,
    /// Exact or similar.
    pub source: MatchSource,
    /// True for similar spans below the confident threshold: to be confirmed downstream.
    pub uncertain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ambiguity {
    None,
    Short,
    CommonWord,
}

#[derive(Debug, Clone)]
struct AliasTarget {
    skill: usize,
    /// The alias as written in the taxonomy, for the case-sensitive check.
    written: String,
    ambiguity: Ambiguity,
}

#[derive(Debug, Clone)]
struct Token {
    start: usize,
    end: usize,
    /// Lower-cased text; punctuation carries its glue: "." glued both sides, " ." only to the right, ". " left.
    key: String,
    word: bool,
    /// Starts a sentence: first word of the text, of a line, or after `.` `!` `?` `:` followed by space.
    sentence_start: bool,
}

/// Tokenizes as described in the module docs.
fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    let mut next_starts_sentence = true;
    while i < chars.len() {
        let (start, c) = chars[i];
        if c.is_whitespace() {
            if c == '\n' {
                next_starts_sentence = true;
            }
            i += 1;
            continue;
        }
        if c.is_alphanumeric() {
            let mut j = i;
            while j < chars.len() && chars[j].1.is_alphanumeric() {
                j += 1;
            }
            let mut suffix = 0;
            while j < chars.len() && suffix < 2 && matches!(chars[j].1, '+' | '#') {
                j += 1;
                suffix += 1;
            }
            let end = chars.get(j).map_or(text.len(), |&(b, _)| b);
            tokens.push(Token {
                start,
                end,
                key: text[start..end].to_lowercase(),
                word: true,
                sentence_start: next_starts_sentence,
            });
            next_starts_sentence = false;
            i = j;
            continue;
        }
        let end = chars.get(i + 1).map_or(text.len(), |&(b, _)| b);
        let left_glued =
            i > 0 && (chars[i - 1].1.is_alphanumeric() || matches!(chars[i - 1].1, '+' | '#'));
        let right_glued = chars.get(i + 1).is_some_and(|&(_, n)| n.is_alphanumeric());
        let mut key = String::new();
        if !left_glued {
            key.push(' ');
        }
        key.push(c);
        if !right_glued {
            key.push(' ');
        }
        tokens.push(Token {
            start,
            end,
            key,
            word: false,
            sentence_start: false,
        });
        if matches!(c, '.' | '!' | '?' | ':' | '•' | '*') && !right_glued {
            next_starts_sentence = true;
        }
        i += 1;
    }
    tokens
}

/// Is this punctuation token a list separator?
fn is_list_separator(t: &Token) -> bool {
    if t.word {
        return matches!(t.key.as_str(), "and" | "or");
    }
    matches!(
        t.key.trim(),
        "," | ";" | "/" | "(" | ")" | ":" | "|" | "、" | "，"
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[derive(Clone)]
struct EmbeddingIndex {
    embedder: Arc<dyn Embedder + Send + Sync>,
    /// Unit vectors of the canonical names, in `skills` order.
    skill_vectors: Vec<Vec<f32>>,
    min_similarity: f32,
    confident_similarity: f32,
}

impl std::fmt::Debug for EmbeddingIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingIndex")
            .field("skills", &self.skill_vectors.len())
            .field("min_similarity", &self.min_similarity)
            .field("confident_similarity", &self.confident_similarity)
            .finish()
    }
}

/// Default cosine at or above which a candidate becomes a similar span.
pub const DEFAULT_MIN_SIMILARITY: f32 = 0.75;
/// Default cosine below which a similar span is marked uncertain.
pub const DEFAULT_CONFIDENT_SIMILARITY: f32 = 0.85;
/// At most this many candidate phrases are embedded per text (bounds the cost of one request).
pub const MAX_CANDIDATES: usize = 256;

/// The phrase matcher. Build once ([`SkillMatcher::builtin`]), share, call [`SkillMatcher::extract`].
#[derive(Debug, Clone)]
pub struct SkillMatcher {
    skills: Vec<SkillEntry>,
    by_tokens: HashMap<Vec<String>, AliasTarget>,
    max_tokens: usize,
    embeddings: Option<EmbeddingIndex>,
}

/// The taxonomy shipped with the crate (generated from O*NET 29.2, CC BY 4.0).
pub const BUILTIN_TAXONOMY: &str = include_str!("../data/skills.tsv");

impl SkillMatcher {
    /// The matcher over the shipped taxonomy ([`BUILTIN_TAXONOMY`]).
    pub fn builtin() -> Result<Self, TaxonomyError> {
        Self::from_tsv(BUILTIN_TAXONOMY)
    }

    /// Parses a taxonomy: `canonical<TAB>category<TAB>alias|alias...`; `#` lines and blank lines are skipped.
    pub fn from_tsv(tsv: &str) -> Result<Self, TaxonomyError> {
        let mut entries = Vec::new();
        for (n, line) in tsv.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() < 2 || cols[0].trim().is_empty() {
                return Err(TaxonomyError::Parse {
                    line: n + 1,
                    reason: "expected canonical<TAB>category".into(),
                });
            }
            let aliases = cols
                .get(2)
                .map(|a| {
                    a.split('|')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            entries.push(SkillEntry {
                canonical: cols[0].trim().to_owned(),
                category: cols[1].trim().to_owned(),
                aliases,
            });
        }
        Ok(Self::new(entries))
    }

    /// Builds the matcher from entries. When two entries claim the same token sequence the first one keeps it.
    pub fn new(skills: Vec<SkillEntry>) -> Self {
        let mut by_tokens = HashMap::new();
        let mut max_tokens = 1;
        for (idx, entry) in skills.iter().enumerate() {
            for written in std::iter::once(&entry.canonical).chain(&entry.aliases) {
                let toks = tokenize(written);
                if toks.is_empty() {
                    continue;
                }
                let key: Vec<String> = toks.iter().map(|t| t.key.clone()).collect();
                let ambiguity = if toks.len() > 1 {
                    Ambiguity::None
                } else if written.chars().count() <= 2 {
                    Ambiguity::Short
                } else if COMMON_WORDS.contains(&key[0].as_str()) {
                    Ambiguity::CommonWord
                } else {
                    Ambiguity::None
                };
                max_tokens = max_tokens.max(key.len());
                by_tokens.entry(key).or_insert(AliasTarget {
                    skill: idx,
                    written: written.clone(),
                    ambiguity,
                });
            }
        }
        Self {
            skills,
            by_tokens,
            max_tokens,
            embeddings: None,
        }
    }

    /// The taxonomy entries.
    pub fn skills(&self) -> &[SkillEntry] {
        &self.skills
    }

    /// Looks a skill up by canonical name or alias (case-insensitive); returns the canonical entry.
    pub fn lookup(&self, name: &str) -> Option<&SkillEntry> {
        let key: Vec<String> = tokenize(name).into_iter().map(|t| t.key).collect();
        self.by_tokens.get(&key).map(|t| &self.skills[t.skill])
    }

    /// Enables the near-miss pass with default thresholds: embeds every canonical name once.
    pub fn with_embeddings(
        self,
        embedder: Arc<dyn Embedder + Send + Sync>,
    ) -> Result<Self, TaxonomyError> {
        self.with_embeddings_thresholds(
            embedder,
            DEFAULT_MIN_SIMILARITY,
            DEFAULT_CONFIDENT_SIMILARITY,
        )
    }

    /// As [`SkillMatcher::with_embeddings`] with explicit thresholds (`min_similarity <= confident_similarity`).
    pub fn with_embeddings_thresholds(
        mut self,
        embedder: Arc<dyn Embedder + Send + Sync>,
        min_similarity: f32,
        confident_similarity: f32,
    ) -> Result<Self, TaxonomyError> {
        let names: Vec<&str> = self.skills.iter().map(|s| s.canonical.as_str()).collect();
        let mut skill_vectors = Vec::with_capacity(names.len());
        for batch in names.chunks(64) {
            skill_vectors.extend(embed_checked(embedder.as_ref(), batch)?);
        }
        self.embeddings = Some(EmbeddingIndex {
            embedder,
            skill_vectors,
            min_similarity,
            confident_similarity,
        });
        Ok(self)
    }

    /// Exact matches only (no embedder call); never fails.
    pub fn extract_exact(&self, text: &str) -> Vec<SkillSpan> {
        let tokens = tokenize(text);
        self.exact_spans(text, &tokens)
            .into_iter()
            .map(|(_, _, span)| span)
            .collect()
    }

    /// Exact matches, plus similar ones when embeddings are enabled; spans sorted by start offset.
    pub fn extract(&self, text: &str) -> Result<Vec<SkillSpan>, TaxonomyError> {
        let tokens = tokenize(text);
        let exact = self.exact_spans(text, &tokens);
        let Some(index) = &self.embeddings else {
            return Ok(exact.into_iter().map(|(_, _, s)| s).collect());
        };
        let mut covered = vec![false; tokens.len()];
        for (a, b, _) in &exact {
            covered[*a..*b].iter_mut().for_each(|c| *c = true);
        }
        let candidates = candidate_phrases(text, &tokens, &covered);
        let mut spans: Vec<SkillSpan> = exact.into_iter().map(|(_, _, s)| s).collect();
        if !candidates.is_empty() {
            let phrases: Vec<&str> = candidates
                .iter()
                .map(|&(a, b)| &text[tokens[a].start..tokens[b - 1].end])
                .collect();
            let vectors = embed_checked(index.embedder.as_ref(), &phrases)?;
            let found: HashSet<&str> = spans.iter().map(|s| s.skill.as_str()).collect();
            let mut similar = Vec::new();
            for ((a, b), v) in candidates.iter().zip(&vectors) {
                let best = index
                    .skill_vectors
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i, cosine(v, s)))
                    .max_by(|x, y| x.1.total_cmp(&y.1));
                let Some((skill, cos)) = best else { continue };
                if cos < index.min_similarity
                    || found.contains(self.skills[skill].canonical.as_str())
                {
                    continue;
                }
                let (start, end) = (tokens[*a].start, tokens[b - 1].end);
                similar.push(SkillSpan {
                    start,
                    end,
                    text: text[start..end].to_owned(),
                    skill: self.skills[skill].canonical.clone(),
                    category: self.skills[skill].category.clone(),
                    confidence: cos,
                    source: MatchSource::Similar,
                    uncertain: cos < index.confident_similarity,
                });
            }
            spans.extend(similar);
            spans.sort_by_key(|s| s.start);
        }
        Ok(spans)
    }

    /// Longest-match-first pass; returns (first token, end token, span).
    fn exact_spans(&self, text: &str, tokens: &[Token]) -> Vec<(usize, usize, SkillSpan)> {
        let mut raw: Vec<(usize, usize, &AliasTarget)> = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let longest = (1..=self.max_tokens.min(tokens.len() - i))
                .rev()
                .find_map(|n| {
                    let key: Vec<String> = tokens[i..i + n].iter().map(|t| t.key.clone()).collect();
                    self.by_tokens.get(&key).map(|t| (n, t))
                });
            match longest {
                Some((n, target)) => {
                    raw.push((i, i + n, target));
                    i += n;
                }
                None => i += 1,
            }
        }
        // Unambiguous matches first: they are the context that ambiguous ones need.
        let anchors: Vec<usize> = raw
            .iter()
            .filter(|r| r.2.ambiguity == Ambiguity::None)
            .map(|r| r.0)
            .collect();
        let mut out = Vec::new();
        for (a, b, target) in raw {
            let (start, end) = (tokens[a].start, tokens[b - 1].end);
            let written = &text[start..end];
            let confidence = match target.ambiguity {
                Ambiguity::None => 1.0,
                Ambiguity::Short | Ambiguity::CommonWord => {
                    if written != target.written && written != self.skills[target.skill].canonical {
                        continue;
                    }
                    // In Title Case phrases ("Project Management") capitals say nothing: ask for a list there too.
                    // A neighbour opening the sentence is capitalised anyway and does not count.
                    let title_case_neighbour =
                        [a.checked_sub(1), Some(b)].into_iter().flatten().any(|k| {
                            tokens.get(k).is_some_and(|t| {
                                t.word
                                    && !t.sentence_start
                                    && text[t.start..t.end]
                                        .chars()
                                        .next()
                                        .is_some_and(char::is_uppercase)
                            })
                        });
                    let needs_list = target.ambiguity == Ambiguity::Short
                        || tokens[a].sentence_start
                        || title_case_neighbour;
                    if needs_list && !in_list_context(tokens, a, b, &anchors) {
                        continue;
                    }
                    0.9
                }
            };
            let skill = &self.skills[target.skill];
            out.push((
                a,
                b,
                SkillSpan {
                    start,
                    end,
                    text: written.to_owned(),
                    skill: skill.canonical.clone(),
                    category: skill.category.clone(),
                    confidence,
                    source: MatchSource::Exact,
                    uncertain: false,
                },
            ));
        }
        out
    }
}

fn in_list_context(tokens: &[Token], a: usize, b: usize, anchors: &[usize]) -> bool {
    let before = a.checked_sub(1).map(|p| &tokens[p]);
    let after = tokens.get(b);
    let separated = before.is_some_and(is_list_separator) || after.is_some_and(is_list_separator);
    let near = anchors
        .iter()
        .any(|&p| p != a && p + LIST_WINDOW >= a && p <= b + LIST_WINDOW);
    separated && near
}

fn embed_checked(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, TaxonomyError> {
    let vectors = embedder.embed(texts).map_err(TaxonomyError::Embedder)?;
    if vectors.len() != texts.len() {
        return Err(TaxonomyError::Embedder(format!(
            "{} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    if let Some(first) = vectors.first()
        && vectors.iter().any(|v| v.len() != first.len())
    {
        return Err(TaxonomyError::Embedder(
            "vectors of different dimensions".into(),
        ));
    }
    Ok(vectors)
}

/// A word token that looks like a name: a capital letter anywhere, a digit, `+` or `#`.
fn looks_like_name(word: &str) -> bool {
    word.chars()
        .any(|c| c.is_uppercase() || c.is_ascii_digit() || c == '+' || c == '#')
}

/// Punctuation glued on both sides ("-" in "bar-ml", "." in "foo.js"): part of a name.
fn is_glued(t: &Token) -> bool {
    !t.word && !t.key.contains(' ')
}

/// Candidate phrases (token ranges) for the similarity pass; see the module docs.
fn candidate_phrases(text: &str, tokens: &[Token], covered: &[bool]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut push = |a: usize, b: usize| {
        let words = tokens[a..b.max(a)].iter().filter(|t| t.word).count();
        if b <= a || words == 0 || words > 3 || b - a > 5 || covered[a..b].iter().any(|&c| c) {
            return;
        }
        if !tokens[a].word || !tokens[b - 1].word {
            return;
        }
        if words == 1
            && (STOP_WORDS.contains(&tokens[a].key.as_str()) || tokens[a].key.chars().count() < 2)
        {
            return;
        }
        if tokens[a..b]
            .iter()
            .all(|t| !t.word || t.key.chars().all(|c| c.is_ascii_digit()))
        {
            return;
        }
        let key: String = tokens[a..b]
            .iter()
            .map(|t| t.key.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if out.len() < MAX_CANDIDATES && seen.insert(key) {
            out.push((a, b));
        }
    };
    // Runs of name-like words (glued punctuation allowed inside).
    let mut i = 0;
    while i < tokens.len() {
        let name_like = |t: &Token| t.word && looks_like_name(&text[t.start..t.end]);
        if !name_like(&tokens[i]) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < tokens.len()
            && (name_like(&tokens[j])
                || is_glued(&tokens[j]) && tokens.get(j + 1).is_some_and(name_like))
        {
            j += 1;
        }
        let words = tokens[i..j].iter().filter(|t| t.word).count();
        let first = &text[tokens[i].start..tokens[i].end];
        // A lone capitalised word opening a sentence is usually just a capitalised word.
        let plain_capital = first.chars().skip(1).all(|c| c.is_lowercase());
        if words > 1 || !tokens[i].sentence_start || !plain_capital {
            if words <= 3 {
                push(i, j);
            } else {
                (i..j)
                    .filter(|&k| tokens[k].word)
                    .for_each(|k| push(k, k + 1));
            }
        }
        i = j;
    }
    // List items: split by separators and sentence ends, keep items of 1-3 words.
    let mut item_start = 0;
    for k in 0..=tokens.len() {
        let boundary = k == tokens.len()
            || is_list_separator(&tokens[k])
            || !tokens[k].word && !is_glued(&tokens[k])
            || tokens[k].sentence_start;
        if boundary {
            if item_start < k {
                push(item_start, k);
            }
            item_start = if k < tokens.len() && tokens[k].sentence_start {
                k
            } else {
                k + 1
            };
        }
    }
    out
}

/// One labelled text for [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalExample {
    /// Identifier shown in the per-example report.
    pub id: String,
    /// The text to extract from.
    pub text: String,
    /// Canonical names of the skills a person judged present.
    pub expected: Vec<String>,
}

/// Result of one example.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExampleResult {
    /// The example's id.
    pub id: String,
    /// Skills both predicted and expected.
    pub true_positives: Vec<String>,
    /// Predicted, not expected.
    pub false_positives: Vec<String>,
    /// Expected, not predicted.
    pub false_negatives: Vec<String>,
}

/// Micro-averaged scores over canonical skill names (each skill counted once per example).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Number of examples.
    pub examples: usize,
    /// Per-example detail.
    pub per_example: Vec<ExampleResult>,
}

/// Scores `matcher` on labelled examples. Names compare case-insensitively after mapping through the taxonomy, so
/// a label written as an alias counts as its canonical skill.
pub fn evaluate(
    matcher: &SkillMatcher,
    examples: &[EvalExample],
) -> Result<EvalReport, TaxonomyError> {
    evaluate_spans(matcher, examples, |_| true)
}

/// As [`evaluate`], counting only the extracted spans `keep` accepts (for example, without
/// the `uncertain` ones).
pub fn evaluate_spans(
    matcher: &SkillMatcher,
    examples: &[EvalExample],
    keep: impl Fn(&SkillSpan) -> bool,
) -> Result<EvalReport, TaxonomyError> {
    let canon = |name: &str| {
        matcher
            .lookup(name)
            .map_or_else(|| name.to_lowercase(), |e| e.canonical.to_lowercase())
    };
    let (mut tp, mut fp, mut fnn) = (0usize, 0usize, 0usize);
    let mut per_example = Vec::with_capacity(examples.len());
    for ex in examples {
        let predicted: HashSet<String> = matcher
            .extract(&ex.text)?
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.skill.to_lowercase())
            .collect();
        let expected: HashSet<String> = ex.expected.iter().map(|e| canon(e)).collect();
        let mut r = ExampleResult {
            id: ex.id.clone(),
            true_positives: predicted.intersection(&expected).cloned().collect(),
            false_positives: predicted.difference(&expected).cloned().collect(),
            false_negatives: expected.difference(&predicted).cloned().collect(),
        };
        r.true_positives.sort();
        r.false_positives.sort();
        r.false_negatives.sort();
        tp += r.true_positives.len();
        fp += r.false_positives.len();
        fnn += r.false_negatives.len();
        per_example.push(r);
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fnn);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Ok(EvalReport {
        precision,
        recall,
        f1,
        examples: examples.len(),
        per_example,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic fake: character trigrams of the lower-cased, space-padded text hashed (FNV-1a) into 256
    /// buckets, normalised. Spelling variants share most trigrams, unrelated words few.
    #[derive(Debug)]
    pub(crate) struct TrigramEmbedder;

    impl Embedder for TrigramEmbedder {
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
            Ok(texts
                .iter()
                .map(|t| {
                    let padded: Vec<char> = format!("  {}  ", t.to_lowercase()).chars().collect();
                    let mut v = vec![0.0f32; 256];
                    for w in padded.windows(3) {
                        let mut h: u32 = 0x811c_9dc5;
                        for c in w {
                            h ^= *c as u32;
                            h = h.wrapping_mul(0x0100_0193);
                        }
                        v[(h % 256) as usize] += 1.0;
                    }
                    let n = v
                        .iter()
                        .map(|x| x * x)
                        .sum::<f32>()
                        .sqrt()
                        .max(f32::MIN_POSITIVE);
                    v.iter_mut().for_each(|x| *x /= n);
                    v
                })
                .collect())
        }
    }

    #[derive(Debug)]
    struct FailingEmbedder;
    impl Embedder for FailingEmbedder {
        fn embed(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, String> {
            Err("model not loaded".into())
        }
    }

    pub(crate) fn small() -> SkillMatcher {
        SkillMatcher::from_tsv(
            "# test taxonomy\n\
             C++\tLanguages\tcpp\n\
             C\tLanguages\t\n\
             C#\tLanguages\tC sharp\n\
             .NET\tFrameworks\tdotnet\n\
             ASP.NET\tFrameworks\t\n\
             Node.js\tRuntimes\tNodeJS\n\
             CI/CD\tConcepts\tcontinuous integration\n\
             R\tLanguages\t\n\
             Go\tLanguages\tGolang\n\
             Python\tLanguages\t\n\
             JavaScript\tLanguages\tJS\n\
             SQL\tQuery\tStructured query language\n\
             Microsoft Excel\tSpreadsheets\tExcel\n\
             Microsoft SQL Server\tDatabases\tSQL Server\n\
             Kubernetes\tOrchestration\tk8s\n\
             PostgreSQL\tDatabases\tPostgres\n\
             TensorFlow\tML\t\n",
        )
        .expect("test taxonomy parses")
    }

    fn skills_of(spans: &[SkillSpan]) -> Vec<&str> {
        spans.iter().map(|s| s.skill.as_str()).collect()
    }

    #[test]
    fn punctuation_aware_tokens() {
        let m = small();
        let text = "Backend in C++ and C#, services on Node.js, deployed with CI/CD; some .NET and ASP.NET.";
        let spans = m.extract_exact(text);
        assert_eq!(
            skills_of(&spans),
            ["C++", "C#", "Node.js", "CI/CD", ".NET", "ASP.NET"]
        );
        for s in &spans {
            assert_eq!(&text[s.start..s.end], s.text);
            assert_eq!(s.source, MatchSource::Exact);
        }
        // Sentence end and case: "node.js," still matches, "c++" lower-case too, "C" never inside "C++".
        let spans = m.extract_exact("we use node.js, c++.");
        assert_eq!(skills_of(&spans), ["Node.js", "C++"]);
        assert_eq!(spans[0].text, "node.js");
        // A sentence break is not ".NET".
        assert!(m.extract_exact("It grew. Net revenue rose.").is_empty());
    }

    #[test]
    fn longest_match_wins() {
        let m = small();
        let spans = m.extract_exact("Administered Microsoft SQL Server and wrote SQL.");
        assert_eq!(skills_of(&spans), ["Microsoft SQL Server", "SQL"]);
        let spans = m.extract_exact("Structured Query Language, k8s and Postgres");
        assert_eq!(skills_of(&spans), ["SQL", "Kubernetes", "PostgreSQL"]);
    }

    #[test]
    fn ambiguous_short_aliases_need_case_and_list_context() {
        let m = small();
        assert_eq!(
            skills_of(&m.extract_exact("Languages: Python, R and Go.")),
            ["Python", "R", "Go"]
        );
        assert_eq!(
            skills_of(&m.extract_exact("Proficient in C, C++ and Python")),
            ["C", "C++", "Python"]
        );
        // Plain words: no list context, or wrong case.
        assert!(m.extract_exact("Go to market with a plan C.").is_empty());
        assert_eq!(skills_of(&m.extract_exact("Python, r and go")), ["Python"]);
        // Golang is unambiguous.
        assert_eq!(skills_of(&m.extract_exact("wrote golang services")), ["Go"]);
        // Common words: case-sensitive.
        assert_eq!(
            skills_of(&m.extract_exact("Advanced Excel skills")),
            ["Microsoft Excel"]
        );
        assert!(m.extract_exact("you will excel at this").is_empty());
        assert!(
            m.extract_exact("we use Excel Services daily").is_empty(),
            "Title Case neighbour needs a list"
        );
        assert_eq!(skills_of(&m.extract_exact("C、C++ を使用")), ["C", "C++"]);
        let r = m.extract_exact("Python, R");
        assert!((r[1].confidence - 0.9).abs() < 1e-6 && (r[0].confidence - 1.0).abs() < 1e-6);
    }

    #[test]
    fn similar_spans_come_from_embeddings() {
        let m = small()
            .with_embeddings(Arc::new(TrigramEmbedder))
            .expect("fake embedder");
        let text =
            "Built models in Tensorflow2, deployed on Kubernetess, wrote PostgresQL queries.";
        let exact = m.extract_exact(text);
        assert!(
            !skills_of(&exact).contains(&"TensorFlow"),
            "misspelling must not match exactly"
        );
        let spans = m.extract(text).expect("fake embedder never fails");
        let tf = spans
            .iter()
            .find(|s| s.skill == "TensorFlow")
            .expect("TensorFlow2 ~ TensorFlow");
        assert_eq!(tf.source, MatchSource::Similar);
        assert_eq!(tf.text, "Tensorflow2");
        assert!(tf.confidence >= DEFAULT_MIN_SIMILARITY && tf.confidence < 1.0);
        assert_eq!(tf.uncertain, tf.confidence < DEFAULT_CONFIDENT_SIMILARITY);
        let k8s = spans
            .iter()
            .find(|s| s.skill == "Kubernetes")
            .expect("Kubernetess ~ Kubernetes");
        assert_eq!(k8s.source, MatchSource::Similar);
        // Unrelated capitalised words produce nothing.
        assert!(spans.iter().all(|s| s.text != "Built"));
        // Thresholds: with an impossible minimum, no similar spans; with a low confident bar, none uncertain.
        let strict = small()
            .with_embeddings_thresholds(Arc::new(TrigramEmbedder), 0.999, 0.999)
            .expect("fake");
        assert!(
            strict
                .extract(text)
                .expect("ok")
                .iter()
                .all(|s| s.source == MatchSource::Exact)
        );
        let lax = small()
            .with_embeddings_thresholds(Arc::new(TrigramEmbedder), 0.6, 0.6)
            .expect("fake");
        assert!(lax.extract(text).expect("ok").iter().all(|s| !s.uncertain));
    }

    #[test]
    fn embedder_errors_surface() {
        assert!(matches!(
            small().with_embeddings(Arc::new(FailingEmbedder)),
            Err(TaxonomyError::Embedder(_))
        ));
    }

    #[test]
    fn builtin_taxonomy_loads_and_matches() {
        let m = SkillMatcher::builtin().expect("shipped taxonomy parses");
        assert!(
            (500..=1500).contains(&m.skills().len()),
            "{}",
            m.skills().len()
        );
        let text = "Experience with Python, SQL, JavaScript, k8s, Postgres and Amazon Web Services; MS Excel.";
        let found = skills_of(&m.extract_exact(text))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        for want in [
            "Python",
            "SQL",
            "JavaScript",
            "Kubernetes",
            "PostgreSQL",
            "AWS",
            "Microsoft Excel",
        ] {
            assert!(found.iter().any(|f| f == want), "{want} not in {found:?}");
        }
        assert_eq!(
            m.lookup("excel").map(|e| e.canonical.as_str()),
            Some("Microsoft Excel")
        );
    }

    #[test]
    fn bad_taxonomy_line_is_an_error() {
        assert!(matches!(
            SkillMatcher::from_tsv("only-one-column\n"),
            Err(TaxonomyError::Parse { line: 1, .. })
        ));
    }

    #[test]
    fn evaluation_is_micro_averaged() {
        let m = small();
        let examples = vec![
            EvalExample {
                id: "a".into(),
                text: "Python and SQL".into(),
                expected: vec!["Python".into(), "Go".into()],
            },
            EvalExample {
                id: "b".into(),
                text: "k8s".into(),
                expected: vec!["kubernetes".into()],
            },
        ];
        let r = evaluate(&m, &examples).expect("no embedder");
        // TP = python, kubernetes; FP = sql; FN = go.
        assert!((r.precision - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.recall - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.f1 - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.per_example[0].false_negatives, ["go"]);
        assert_eq!(r.per_example[0].false_positives, ["sql"]);
    }
}
