//! The content-based part: TF-IDF vectors of item texts and cosine similarity between items
//! (scikit-learn's `TfidfVectorizer` defaults: lower-cased tokens of two or more word
//! characters, raw term counts, smoothed idf `ln((1 + n) / (1 + df)) + 1`, rows scaled to
//! unit length). Written by hand: it is forty lines, and no maintained crate computes
//! exactly these weights.
//!
//! A user's content profile is the normalised sum of the vectors of the items they
//! interacted with (recent ones weigh more); an item's content score is its cosine to that
//! profile, computed through an inverted index so only items sharing a term are touched.

use std::collections::HashMap;

use crate::RecsError;
use crate::data::{Csr, Duplicates};

/// Item TF-IDF vectors, unit length, and their inverted index.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// Items x terms.
    pub vectors: Csr,
    /// Terms x items (the transpose).
    postings: Csr,
}

/// Lower-cased tokens of two or more alphanumeric characters (`(?u)\b\w\w+\b`).
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| t.chars().count() >= 2)
        .map(str::to_lowercase)
}

impl Content {
    /// Vectors of `texts` (one per item; `None` for items without text, which get an
    /// empty vector). Returns the vocabulary size too.
    pub fn fit(texts: &[Option<&str>]) -> Result<(Self, usize), RecsError> {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut counts: Vec<(u32, u32, f32)> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let Some(text) = text else { continue };
            for t in tokens(text) {
                let next = vocab.len() as u32;
                let term = *vocab.entry(t).or_insert(next);
                counts.push((i as u32, term, 1.0));
            }
        }
        let mut tf = Csr::from_triplets(texts.len(), vocab.len(), &counts, Duplicates::Sum)?;
        let mut df = vec![0f32; vocab.len()];
        for &t in &tf.indices {
            df[t as usize] += 1.0;
        }
        let n = texts.len() as f32;
        let idf: Vec<f32> = df
            .iter()
            .map(|d| ((1.0 + n) / (1.0 + d)).ln() + 1.0)
            .collect();
        for (v, &t) in tf.values.iter_mut().zip(&tf.indices) {
            *v *= idf[t as usize];
        }
        unit_rows(&mut tf);
        Ok((Self::from_vectors(tf)?, vocab.len()))
    }

    /// Wraps stored vectors (checked).
    pub fn from_vectors(vectors: Csr) -> Result<Self, RecsError> {
        vectors.validate("content vectors")?;
        let postings = vectors.transpose();
        Ok(Self { vectors, postings })
    }

    /// Number of items.
    pub fn items(&self) -> usize {
        self.vectors.rows()
    }

    /// Cosine similarity of two items.
    pub fn similarity(&self, a: usize, b: usize) -> f32 {
        let (ta, va) = self.vectors.row(a);
        let (tb, vb) = self.vectors.row(b);
        let (mut i, mut j, mut s) = (0, 0, 0.0);
        while i < ta.len() && j < tb.len() {
            match ta[i].cmp(&tb[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    s += va[i] * vb[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        s
    }

    /// Cosine of every item to the weighted sum of `items`' vectors, into `out` (zero for
    /// items sharing no term). False when the profile is empty (no text among `items`).
    pub fn profile_scores(&self, items: &[(u32, f32)], out: &mut Vec<f32>) -> bool {
        out.clear();
        out.resize(self.items(), 0.0);
        let mut profile: HashMap<u32, f32> = HashMap::new();
        for &(i, w) in items {
            if i as usize >= self.items() {
                continue;
            }
            let (terms, vals) = self.vectors.row(i as usize);
            for (&t, &v) in terms.iter().zip(vals) {
                *profile.entry(t).or_insert(0.0) += w * v;
            }
        }
        let norm = profile.values().map(|v| v * v).sum::<f32>().sqrt();
        if norm == 0.0 {
            return false;
        }
        for (&t, &pv) in &profile {
            let (docs, vals) = self.postings.row(t as usize);
            for (&d, &v) in docs.iter().zip(vals) {
                out[d as usize] += pv / norm * v;
            }
        }
        true
    }
}

/// Scales each row to unit Euclidean length.
fn unit_rows(m: &mut Csr) {
    for r in 0..m.rows() {
        let (a, b) = (m.indptr[r] as usize, m.indptr[r + 1] as usize);
        let norm = m.values[a..b].iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            m.values[a..b].iter_mut().for_each(|v| *v /= norm);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_sklearn_s() {
        let t: Vec<String> = tokens("A Fleece-lined JACKET, 2x warm!").collect();
        assert_eq!(t, vec!["fleece", "lined", "jacket", "2x", "warm"]);
    }

    #[test]
    fn tfidf_matches_a_hand_computation() {
        // "red shirt" / "red red coat" / nothing: n = 3.
        let (c, vocab) = Content::fit(&[Some("red shirt"), Some("red red coat"), None]).unwrap();
        assert_eq!(vocab, 3);
        let idf_red = (4.0f32 / 3.0).ln() + 1.0; // df 2
        let idf_one = (4.0f32 / 2.0).ln() + 1.0; // df 1
        let (a_red, a_other) = (idf_red, idf_one);
        let na = (a_red * a_red + a_other * a_other).sqrt();
        let (b_red, b_coat) = (2.0 * idf_red, idf_one);
        let nb = (b_red * b_red + b_coat * b_coat).sqrt();
        let expected = (a_red / na) * (b_red / nb);
        assert!((c.similarity(0, 1) - expected).abs() < 1e-6);
        assert!((c.similarity(0, 0) - 1.0).abs() < 1e-6);
        assert_eq!(c.similarity(0, 2), 0.0);
        let mut out = Vec::new();
        assert!(c.profile_scores(&[(0, 1.0)], &mut out));
        assert!((out[1] - expected).abs() < 1e-6 && out[2] == 0.0);
        assert!(!c.profile_scores(&[(2, 1.0)], &mut out));
    }
}
