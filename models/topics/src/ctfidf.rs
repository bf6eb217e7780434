//! c-TF-IDF as BERTopic 0.17's `ClassTfidfTransformer` computes it, with the tokenisation
//! of scikit-learn's `CountVectorizer` and BERTopic's keyword extraction.
//!
//! - A class (topic) is the concatenation of its documents. Before counting, BERTopic
//!   (`language="english"`) replaces `\n`, `\t` by spaces and deletes every character outside
//!   `[A-Za-z0-9 ]` (so "don't" counts as "dont"); [`VectorizerParams::ascii_preprocessing`].
//! - Tokens: lowercase, then the runs of 2 or more word characters (`(?u)\b\w\w+\b`),
//!   stop words dropped ([`StopWords::English`] is scikit-learn's list; BERTopic's own default
//!   keeps them, most users set `stop_words="english"`, so it is the default here).
//! - `tf[c, t]` = the count of `t` in class `c` over the class's total (L1-normalised rows);
//!   `idf[t] = ln(1 + A / f_t)` with `f_t` the count of `t` over all classes and `A` the mean
//!   number of tokens per class truncated to an integer (`int(X.sum(axis=1).mean())`);
//!   `bm25_weighting`: `idf = ln(1 + (A - f_t + 0.5) / (f_t + 0.5))`;
//!   `reduce_frequent_words`: `sqrt(tf)`. c-TF-IDF = `tf * idf`.
//! - Keywords of a topic: its 30 best words by c-TF-IDF (positive ones), then either the first
//!   `top_n_words`, or, when the caller gives a [`KeywordEmbedder`] and a `diversity`,
//!   BERTopic's `MaximalMarginalRelevance`: the words are embedded, the topic is embedded as
//!   the words joined by spaces, MMR picks `top_n_words` of them, and they are kept in
//!   c-TF-IDF order. Without an embedder MMR is skipped (there is nothing to measure
//!   similarity with).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::stop_words;

/// Stop words removed from the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StopWords {
    /// Keep every token (BERTopic's own default `CountVectorizer()`).
    None,
    /// scikit-learn's English list (`stop_words="english"`).
    #[default]
    English,
}

/// How texts become tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorizerParams {
    /// Stop words to drop.
    pub stop_words: StopWords,
    /// BERTopic's English preprocessing of the class documents (keep `[A-Za-z0-9 ]` only).
    pub ascii_preprocessing: bool,
}

impl Default for VectorizerParams {
    fn default() -> Self {
        Self {
            stop_words: StopWords::English,
            ascii_preprocessing: true,
        }
    }
}

/// c-TF-IDF weighting and keyword options (BERTopic's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtfidfParams {
    /// BM25-style idf.
    pub bm25_weighting: bool,
    /// Square root of the term frequencies.
    pub reduce_frequent_words: bool,
    /// Keywords per topic.
    pub top_n_words: usize,
    /// MMR diversity in `[0, 1]` (BERTopic's `MaximalMarginalRelevance(diversity=0.1)`);
    /// applied only when a [`KeywordEmbedder`] is given.
    pub diversity: Option<f32>,
}

impl Default for CtfidfParams {
    fn default() -> Self {
        Self {
            bm25_weighting: false,
            reduce_frequent_words: false,
            top_n_words: 10,
            diversity: None,
        }
    }
}

/// Embeds keywords for MMR: one vector per text, all of one length. Any
/// `Fn(&[String]) -> Result<Vec<Vec<f32>>, String>` is one.
pub trait KeywordEmbedder {
    /// The embeddings of `texts`, in order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

impl<F: Fn(&[String]) -> Result<Vec<Vec<f32>>, String>> KeywordEmbedder for F {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self(texts)
    }
}

/// BERTopic's `_preprocess_text` for `language="english"`.
pub fn preprocess(doc: &str) -> String {
    doc.chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect()
}

/// `CountVectorizer`'s analyzer: lowercase, runs of two or more word characters
/// (alphanumeric or `_`), stop words dropped.
pub fn tokenize(text: &str, stop_words: StopWords) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| t.chars().count() >= 2)
        .filter(|t| stop_words == StopWords::None || !stop_words::is_english(t))
        .map(str::to_string)
        .collect()
}

/// Token counts per class over a vocabulary that grows as documents come.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassCounts {
    words: Vec<String>,
    index: HashMap<String, u32>,
    counts: Vec<BTreeMap<u32, u64>>,
}

impl ClassCounts {
    /// Empty counts for `n_classes` classes.
    pub fn new(n_classes: usize) -> Self {
        Self {
            counts: vec![BTreeMap::new(); n_classes],
            ..Self::default()
        }
    }

    /// Rebuilds counts from a vocabulary and per-class `(word index, count)` lists (the
    /// artifact loader); refuses repeated words and indices outside the vocabulary.
    pub(crate) fn from_parts(
        words: Vec<String>,
        counts: Vec<BTreeMap<u32, u64>>,
    ) -> Result<Self, String> {
        let mut index = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if index.insert(w.clone(), i as u32).is_some() {
                return Err(format!("the word {w:?} is in the vocabulary twice"));
            }
        }
        if counts
            .iter()
            .flat_map(|c| c.keys())
            .any(|&k| k as usize >= words.len())
        {
            return Err("a count names a word outside the vocabulary".into());
        }
        Ok(Self {
            words,
            index,
            counts,
        })
    }

    /// Counts `tokens` into class `class` (which must exist).
    pub fn add(&mut self, class: usize, tokens: impl IntoIterator<Item = String>) {
        for t in tokens {
            let id = self.intern(t);
            *self.counts[class].entry(id).or_default() += 1;
        }
    }

    /// The index of `word` in the vocabulary, which takes it as its next word when it is new
    /// (so the vocabulary stays in order of first appearance); counts nothing.
    pub(crate) fn intern(&mut self, word: String) -> u32 {
        match self.index.get(&word) {
            Some(&id) => id,
            None => {
                let id = self.words.len() as u32;
                self.index.insert(word.clone(), id);
                self.words.push(word);
                id
            }
        }
    }

    /// [`ClassCounts::intern`] of each of a document's words, in order.
    pub(crate) fn intern_all(&mut self, words: Vec<String>) -> Vec<u32> {
        words.into_iter().map(|w| self.intern(w)).collect()
    }

    /// Counts the words `ids` (from [`ClassCounts::intern`]) into class `class` (which must
    /// exist).
    pub(crate) fn add_ids(&mut self, class: usize, ids: &[u32]) {
        let counts = &mut self.counts[class];
        for &id in ids {
            *counts.entry(id).or_default() += 1;
        }
    }

    /// Drops every count and leaves `n_classes` empty classes; the vocabulary stays.
    pub(crate) fn reset_classes(&mut self, n_classes: usize) {
        self.counts = vec![BTreeMap::new(); n_classes];
    }

    /// Adds an empty class at the end.
    pub fn push_class(&mut self) {
        self.counts.push(BTreeMap::new());
    }

    /// Rebuilds the classes: new class `j` sums the old classes `i` with `map[i] == j`
    /// (`map.len()` = old class count, `n_new` new classes).
    pub fn regroup(&mut self, map: &[usize], n_new: usize) {
        let mut out = vec![BTreeMap::new(); n_new];
        for (old, &new) in map.iter().enumerate() {
            for (&w, &c) in &self.counts[old] {
                *out[new].entry(w).or_default() += c;
            }
        }
        self.counts = out;
    }

    /// The vocabulary, in order of first appearance.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Per class, `(word index, count)` in word-index order.
    pub fn counts(&self) -> &[BTreeMap<u32, u64>] {
        &self.counts
    }

    /// The index of `word`.
    pub fn word_index(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }
}

/// The fitted idf and the c-TF-IDF rows of each class.
#[derive(Debug, Clone, PartialEq)]
pub struct Ctfidf {
    /// idf per word of the vocabulary (0 for a word no class counts).
    pub idf: Vec<f64>,
    /// Per class, `(word index, c-TF-IDF)` for the words it counts.
    pub rows: Vec<Vec<(u32, f64)>>,
    reduce_frequent_words: bool,
}

impl Ctfidf {
    /// `ClassTfidfTransformer.fit(X).transform(X)` on the class counts. `present` names the
    /// classes BERTopic would have rows for (the mean tokens per class is over them; empty:
    /// all classes), so an empty outlier class does not change the idf.
    pub fn fit(counts: &ClassCounts, params: &CtfidfParams, present: &[bool]) -> Self {
        let n_words = counts.words.len();
        let mut df = vec![0f64; n_words];
        let mut total = 0f64;
        for class in &counts.counts {
            for (&w, &c) in class {
                df[w as usize] += c as f64;
                total += c as f64;
            }
        }
        let n_classes = if present.is_empty() {
            counts.counts.len()
        } else {
            present.iter().filter(|&&p| p).count()
        };
        let avg = (total / n_classes.max(1) as f64).trunc();
        let idf: Vec<f64> = df
            .iter()
            .map(|&f| {
                if f == 0.0 {
                    0.0
                } else if params.bm25_weighting {
                    (1.0 + (avg - f + 0.5) / (f + 0.5)).ln()
                } else {
                    (avg / f + 1.0).ln()
                }
            })
            .collect();
        let mut out = Self {
            idf,
            rows: Vec::new(),
            reduce_frequent_words: params.reduce_frequent_words,
        };
        out.rows = counts
            .counts
            .iter()
            .map(|c| out.transform_counts(c))
            .collect();
        out
    }

    /// The c-TF-IDF row of one bag of words under the fitted idf (words outside it ignored).
    pub fn transform_counts(&self, counts: &BTreeMap<u32, u64>) -> Vec<(u32, f64)> {
        let known: Vec<(u32, f64)> = counts
            .iter()
            .filter(|(w, _)| (**w as usize) < self.idf.len())
            .map(|(&w, &c)| (w, c as f64))
            .collect();
        let sum: f64 = known.iter().map(|(_, c)| c).sum();
        if sum == 0.0 {
            return Vec::new();
        }
        known
            .into_iter()
            .map(|(w, c)| {
                let tf = c / sum;
                let tf = if self.reduce_frequent_words {
                    tf.sqrt()
                } else {
                    tf
                };
                (w, tf * self.idf[w as usize])
            })
            .collect()
    }
}

/// Cosine similarity of two sparse rows sorted by index.
pub(crate) fn sparse_cosine(a: &[(u32, f64)], b: &[(u32, f64)]) -> f64 {
    let (mut i, mut j, mut dot) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    let na = a.iter().map(|v| v.1 * v.1).sum::<f64>().sqrt();
    let nb = b.iter().map(|v| v.1 * v.1).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Dense cosine similarity (0 when either vector is zero).
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The keywords of one c-TF-IDF row (see the module doc); ties in weight go to the word that
/// sorts first.
pub fn keywords(
    row: &[(u32, f64)],
    words: &[String],
    params: &CtfidfParams,
    embedder: Option<&dyn KeywordEmbedder>,
) -> Result<Vec<(String, f64)>, String> {
    let mut ranked: Vec<(u32, f64)> = row.iter().copied().filter(|&(_, v)| v > 0.0).collect();
    ranked.sort_by(|x, y| {
        y.1.total_cmp(&x.1)
            .then_with(|| words[x.0 as usize].cmp(&words[y.0 as usize]))
    });
    ranked.truncate(params.top_n_words.max(30));
    let candidates: Vec<(String, f64)> = ranked
        .into_iter()
        .map(|(w, v)| (words[w as usize].clone(), v))
        .collect();
    let top_n = params.top_n_words;
    match (embedder, params.diversity) {
        (Some(embedder), Some(diversity)) if candidates.len() > 1 => {
            let texts: Vec<String> = candidates.iter().map(|c| c.0.clone()).collect();
            let word_emb = embedder.embed(&texts)?;
            let topic_emb = embedder.embed(&[texts.join(" ")])?;
            if word_emb.len() != texts.len() || topic_emb.len() != 1 {
                return Err(format!(
                    "the keyword embedder gave {} and {} vectors for {} words and 1 topic",
                    word_emb.len(),
                    topic_emb.len(),
                    texts.len()
                ));
            }
            let chosen = mmr(&topic_emb[0], &word_emb, f64::from(diversity), top_n);
            Ok(candidates
                .into_iter()
                .enumerate()
                .filter(|(i, _)| chosen.contains(i))
                .map(|(_, c)| c)
                .collect())
        }
        _ => Ok(candidates.into_iter().take(top_n).collect()),
    }
}

/// Maximal marginal relevance (BERTopic's `mmr`): indices of `top_n` words, the first the most
/// similar to the topic, each next maximising `(1 - diversity) sim(word, topic) - diversity
/// max sim(word, chosen)`.
fn mmr(topic: &[f32], words: &[Vec<f32>], diversity: f64, top_n: usize) -> Vec<usize> {
    let to_topic: Vec<f64> = words.iter().map(|w| cosine(w, topic)).collect();
    let argmax = |it: &mut dyn Iterator<Item = (usize, f64)>| {
        it.fold(None, |best: Option<(usize, f64)>, (i, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
    };
    let Some((first, _)) = argmax(&mut to_topic.iter().copied().enumerate()) else {
        return Vec::new();
    };
    let mut chosen = vec![first];
    let mut candidates: Vec<usize> = (0..words.len()).filter(|&i| i != first).collect();
    while chosen.len() < top_n && !candidates.is_empty() {
        let scored = candidates.iter().enumerate().map(|(at, &c)| {
            let redundancy = chosen
                .iter()
                .map(|&k| cosine(&words[c], &words[k]))
                .fold(f64::MIN, f64::max);
            (at, (1.0 - diversity) * to_topic[c] - diversity * redundancy)
        });
        let Some((at, _)) = argmax(&mut scored.collect::<Vec<_>>().into_iter()) else {
            break;
        };
        chosen.push(candidates.remove(at));
    }
    chosen
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_count_vectorizer() {
        assert_eq!(
            tokenize("The CAT's hat, a_b x 42 é café", StopWords::English),
            vec!["cat", "hat", "a_b", "42", "café"]
        );
        assert_eq!(tokenize("the cat", StopWords::None), vec!["the", "cat"]);
        assert_eq!(preprocess("don't\tstop-me\nnow é!"), "dont stopme now ");
        assert!(stop_words::ENGLISH.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(stop_words::ENGLISH.len(), 318);
        assert!(
            stop_words::ENGLISH
                .iter()
                .all(|w| stop_words::is_english(w))
        );
        assert!(!stop_words::is_english("flour") && !stop_words::is_english(""));
    }

    /// Two classes: "apple apple banana" and "banana cherry". By hand: counts
    /// [[2, 1, 0], [0, 1, 1]]; A = int((3 + 2) / 2) = 2; f = [2, 2, 1];
    /// idf = [ln(1 + 2/2), ln(2), ln(1 + 2/1)] = [ln 2, ln 2, ln 3];
    /// tf = [[2/3, 1/3, 0], [0, 1/2, 1/2]].
    #[test]
    fn ctfidf_matches_the_hand_computation() {
        let mut counts = ClassCounts::new(2);
        counts.add(0, tokenize("apple apple banana", StopWords::English));
        counts.add(1, tokenize("banana cherry", StopWords::English));
        let c = Ctfidf::fit(&counts, &CtfidfParams::default(), &[]);
        let (ln2, ln3) = (2f64.ln(), 3f64.ln());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(
            close(c.idf[0], ln2) && close(c.idf[1], ln2) && close(c.idf[2], ln3),
            "{:?}",
            c.idf
        );
        assert_eq!(c.rows[0].len(), 2);
        assert!(close(c.rows[0][0].1, 2.0 / 3.0 * ln2));
        assert!(close(c.rows[0][1].1, 1.0 / 3.0 * ln2));
        assert!(close(c.rows[1][0].1, 0.5 * ln2));
        assert!(close(c.rows[1][1].1, 0.5 * ln3));
        let kw = keywords(&c.rows[1], counts.words(), &CtfidfParams::default(), None).unwrap();
        assert_eq!(
            kw.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
            vec!["cherry", "banana"]
        );
        // BM25: idf = ln(1 + (A - f + 0.5) / (f + 0.5)).
        let bm25 = Ctfidf::fit(
            &counts,
            &CtfidfParams {
                bm25_weighting: true,
                ..CtfidfParams::default()
            },
            &[],
        );
        assert!(close(bm25.idf[2], (1.0 + 1.5 / 1.5f64).ln()));
        assert!(close(bm25.idf[0], (1.0 + 0.5 / 2.5f64).ln()));
        // reduce_frequent_words: sqrt(tf).
        let r = Ctfidf::fit(
            &counts,
            &CtfidfParams {
                reduce_frequent_words: true,
                ..CtfidfParams::default()
            },
            &[],
        );
        assert!(close(r.rows[1][1].1, 0.5f64.sqrt() * ln3));
        // Merging the classes sums their counts.
        counts.regroup(&[0, 0], 1);
        assert_eq!(
            counts.counts()[0].values().copied().collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
    }

    #[test]
    fn mmr_trades_relevance_for_diversity() {
        // Word 0 and 1 are near-duplicates close to the topic; word 2 is different.
        let words = vec![vec![1.0, 0.0], vec![0.99, 0.05], vec![0.6, 0.8]];
        let topic = [1.0, 0.0];
        assert_eq!(mmr(&topic, &words, 0.0, 2), vec![0, 1]);
        assert_eq!(mmr(&topic, &words, 0.9, 2), vec![0, 2]);
        let embed = |t: &[String]| -> Result<Vec<Vec<f32>>, String> {
            Ok(t.iter()
                .map(|w| match w.as_str() {
                    "alpha" => vec![1.0, 0.0],
                    "alphas" => vec![0.99, 0.05],
                    "beta" => vec![0.6, 0.8],
                    _ => vec![1.0, 0.0],
                })
                .collect())
        };
        let words: Vec<String> = ["alpha", "alphas", "beta"].map(String::from).to_vec();
        let row = vec![(0, 0.9), (1, 0.8), (2, 0.1)];
        let params = CtfidfParams {
            top_n_words: 2,
            diversity: Some(0.9),
            ..CtfidfParams::default()
        };
        let kw = keywords(&row, &words, &params, Some(&embed)).unwrap();
        assert_eq!(
            kw.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
            vec!["alpha", "beta"]
        );
        let kw = keywords(&row, &words, &params, None).unwrap();
        assert_eq!(
            kw.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
            vec!["alpha", "alphas"]
        );
    }
}
