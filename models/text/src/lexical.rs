//! A lexical head beside a transformer classifier: TF-IDF features of the raw text (word 1–2
//! grams and character 2–5 grams inside word boundaries) into a multinomial logistic
//! regression, whose log-probabilities are blended with the classifier's.
//!
//! Bank-statement lines are mostly merchant names, card numbers and abbreviations ("POS
//! PURCHASE ENGEN MITCHELL PARK"): character n-grams recognise a merchant seen in training in
//! whatever form it comes back, where a subword encoder sees unfamiliar pieces. The blend is
//! a weighted geometric mean of the two models' probabilities:
//!
//! `blended = log_softmax((1 - w) * log_softmax(classifier logits) + w * log_softmax(lexical
//! logits))`
//!
//! and a model with a lexical head hands out `blended` as its logits: they are
//! log-probabilities, so `softmax(logits) = exp(logits)` are the blended probabilities, and
//! the label is their argmax.
//!
//! The features follow scikit-learn's `TfidfVectorizer(sublinear_tf=True)` with analyzers
//! `word` (`ngram_range=(1, 2)`, token pattern `\b\w\w+\b`) and `char_wb`
//! (`ngram_range=(2, 5)`), concatenated as a `FeatureUnion` concatenates them: lower-cased
//! text, `1 + ln(tf)` term weights, smoothed idf `ln((1 + n) / (1 + df)) + 1`, each
//! analyzer's block scaled to unit L2 norm. It is written here, not taken from a crate:
//! linfa-preprocessing's vectoriser has no `char_wb` analyzer and no sublinear tf.
//! Word characters are Rust's `char::is_alphanumeric` plus `_` (Python's `\w`), and words
//! for `char_wb` are split on `char::is_whitespace`; the two can differ from Python's on
//! rare control characters.
//!
//! On disk, beside the classifier's own files: `lexical.json` (the feature settings, the
//! vocabulary of each analyzer and the blend weight) and `lexical.safetensors` (`idf` `[V]`,
//! `weight` `[labels, V]`, `bias` `[labels]`). Hugging Face tools ignore both files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{TextError, read};

/// File with the settings and vocabulary.
pub const CONFIG_FILE: &str = "lexical.json";
/// File with the idf weights and the linear layer.
pub const WEIGHTS_FILE: &str = "lexical.safetensors";

/// How a block of features cuts text into terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Analyzer {
    /// Runs of two or more word characters, as n-grams of `min..=max` words joined by a
    /// space.
    Word,
    /// Character n-grams of `min..=max` characters inside each whitespace-separated word
    /// padded with one space on each side.
    CharWb,
}

/// One block of features: an analyzer, its n-gram range and its vocabulary (term index =
/// position in `vocabulary`, offset by the blocks before it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// How text is cut into terms.
    pub analyzer: Analyzer,
    /// Shortest n-gram.
    pub min_n: usize,
    /// Longest n-gram.
    pub max_n: usize,
    /// Terms, sorted.
    pub vocabulary: Vec<String>,
}

impl Block {
    /// The terms of `text` (lower-cased first), with repeats.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let text = text.to_lowercase();
        match self.analyzer {
            Analyzer::Word => word_ngrams(&text, self.min_n, self.max_n),
            Analyzer::CharWb => char_wb_ngrams(&text, self.min_n, self.max_n),
        }
    }
}

/// `\b\w\w+\b` tokens, then n-grams of `min..=max` of them joined by a space.
fn word_ngrams(text: &str, min_n: usize, max_n: usize) -> Vec<String> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let tokens: Vec<&str> = text
        .split(|c: char| !is_word(c))
        .filter(|t| t.chars().count() >= 2)
        .collect();
    let mut out = Vec::new();
    for n in min_n.max(1)..=max_n {
        if n > tokens.len() {
            break;
        }
        out.extend(tokens.windows(n).map(|w| w.join(" ")));
    }
    out
}

/// scikit-learn's `char_wb`: each whitespace-separated word padded as `" word "`, its
/// character n-grams of `min..=max`; a padded word shorter than `n` gives itself once, and
/// no longer n-grams.
fn char_wb_ngrams(text: &str, min_n: usize, max_n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in min_n.max(1)..=max_n {
            if padded.len() <= n {
                out.push(padded.iter().collect());
                break;
            }
            out.extend(padded.windows(n).map(|w| w.iter().collect::<String>()));
        }
    }
    out
}

/// Longest n-gram a block may use (the trainer writes 2 for words and 5 for characters).
pub const MAX_NGRAM: usize = 16;

/// The fitted feature map: blocks, their term indices and the idf of every term.
#[derive(Debug, Clone)]
pub struct TfIdf {
    blocks: Vec<Block>,
    index: Vec<HashMap<String, u32>>,
    idf: Vec<f32>,
}

/// A sparse feature row: `(term index, value)` pairs, sorted by index.
pub type SparseRow = Vec<(u32, f32)>;

impl TfIdf {
    /// The blocks the project's lexical head uses: word 1–2 grams and `char_wb` 2–5 grams (the
    /// TF-IDF + logistic regression baseline of `bench/categorizer.sh`), before fitting.
    pub fn default_blocks() -> Vec<Block> {
        vec![
            Block {
                analyzer: Analyzer::Word,
                min_n: 1,
                max_n: 2,
                vocabulary: Vec::new(),
            },
            Block {
                analyzer: Analyzer::CharWb,
                min_n: 2,
                max_n: 5,
                vocabulary: Vec::new(),
            },
        ]
    }

    /// Learns each block's vocabulary (every term of `texts`) and the idf of each term.
    pub fn fit(blocks: Vec<Block>, texts: &[&str]) -> Result<TfIdf, TextError> {
        let n = texts.len() as f64;
        let mut fitted = Vec::with_capacity(blocks.len());
        let mut idf = Vec::new();
        for mut block in blocks {
            let mut df: BTreeMap<String, usize> = BTreeMap::new();
            for text in texts {
                let mut terms = block.terms(text);
                terms.sort_unstable();
                terms.dedup();
                for t in terms {
                    *df.entry(t).or_default() += 1;
                }
            }
            idf.extend(
                df.values()
                    .map(|&d| (((1.0 + n) / (1.0 + d as f64)).ln() + 1.0) as f32),
            );
            block.vocabulary = df.into_keys().collect();
            fitted.push(block);
        }
        Self::from_parts(fitted, idf)
    }

    /// A feature map from its blocks and the idf of every term (block by block).
    pub fn from_parts(blocks: Vec<Block>, idf: Vec<f32>) -> Result<TfIdf, TextError> {
        let mut total = 0;
        let mut index = Vec::with_capacity(blocks.len());
        for block in &blocks {
            // A text of L characters gives up to L terms per n: an unbounded range would make
            // one request cost L x (max_n - min_n) strings.
            if block.min_n == 0 || block.min_n > block.max_n || block.max_n > MAX_NGRAM {
                return Err(invalid(format!(
                    "n-gram range {}..={} is not within 1..={MAX_NGRAM}",
                    block.min_n, block.max_n
                )));
            }
            if total + block.vocabulary.len() > u32::MAX as usize {
                return Err(invalid("the vocabularies hold more than 2^32 terms".into()));
            }
            let map: HashMap<String, u32> = block
                .vocabulary
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), (total + i) as u32))
                .collect();
            if map.len() != block.vocabulary.len() {
                return Err(invalid("a vocabulary repeats a term".into()));
            }
            total += block.vocabulary.len();
            index.push(map);
        }
        if idf.len() != total {
            return Err(invalid(format!(
                "idf has {} values for {total} terms",
                idf.len()
            )));
        }
        Ok(TfIdf { blocks, index, idf })
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    /// Whether there are no features.
    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The blocks, vocabularies included.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The idf of every term.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    /// The features of `text`: per block, `(1 + ln tf) * idf` of the known terms, scaled to
    /// unit L2 norm (a block with no known term stays zero).
    pub fn transform(&self, text: &str) -> SparseRow {
        let mut row = SparseRow::new();
        for (block, index) in self.blocks.iter().zip(&self.index) {
            let mut tf: BTreeMap<u32, u32> = BTreeMap::new();
            for term in block.terms(text) {
                if let Some(&j) = index.get(&term) {
                    *tf.entry(j).or_default() += 1;
                }
            }
            let values: Vec<(u32, f32)> = tf
                .into_iter()
                .map(|(j, c)| (j, (1.0 + (c as f32).ln()) * self.idf[j as usize]))
                .collect();
            let norm = values.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.extend(values.into_iter().map(|(j, v)| (j, v / norm)));
            }
        }
        row
    }
}

/// Settings written in `lexical.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LexicalConfig {
    /// Weight `w` of the lexical model's log-probabilities in the blend.
    blend_weight: f32,
    /// The classifier's labels, in id order (must match `config.json`).
    labels: Vec<String>,
    /// Feature blocks with their vocabularies.
    blocks: Vec<Block>,
    /// The L2 strength the regression was fitted with (scikit-learn's `C`), for the record.
    #[serde(default)]
    c: Option<f64>,
}

/// A fitted lexical head: features, a linear layer and the blend weight.
#[derive(Debug, Clone)]
pub struct LexicalHead {
    tfidf: TfIdf,
    labels: Vec<String>,
    /// `[V, labels]`, row-major: a feature's row is contiguous, which is what a sparse row
    /// times the matrix reads.
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    blend_weight: f32,
    c: Option<f64>,
}

fn invalid(message: String) -> TextError {
    TextError::Invalid {
        what: CONFIG_FILE,
        message,
    }
}

impl LexicalHead {
    /// A head from its parts: `weight` is `[labels, V]` row-major (a linear layer's layout).
    pub fn new(
        tfidf: TfIdf,
        labels: Vec<String>,
        weight: &[f32],
        bias: Vec<f32>,
        blend_weight: f32,
        c: Option<f64>,
    ) -> Result<LexicalHead, TextError> {
        let (k, v) = (labels.len(), tfidf.len());
        if weight.len() != k * v || bias.len() != k {
            return Err(invalid(format!(
                "weight has {} values and bias {} for {k} labels x {v} features",
                weight.len(),
                bias.len()
            )));
        }
        if !(0.0..=1.0).contains(&blend_weight) {
            return Err(invalid(format!(
                "blend_weight {blend_weight} is outside [0, 1]"
            )));
        }
        let mut weight_t = vec![0f32; k * v];
        for c in 0..k {
            for j in 0..v {
                weight_t[j * k + c] = weight[c * v + j];
            }
        }
        Ok(LexicalHead {
            tfidf,
            labels,
            weight_t,
            bias,
            blend_weight,
            c,
        })
    }

    /// Loads the head in `dir` when `lexical.json` is there (`None` when it is not);
    /// `labels` are the classifier's, which the head's must equal.
    pub fn load_optional(dir: &Path, labels: &[String]) -> Result<Option<LexicalHead>, TextError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Ok(None);
        }
        let config: LexicalConfig =
            serde_json::from_slice(&read(&config_path)?).map_err(|e| invalid(e.to_string()))?;
        if config.labels != labels {
            return Err(invalid(format!(
                "its {} labels are not the classifier's {} labels in the same order",
                config.labels.len(),
                labels.len()
            )));
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| {
            TextError::Io {
                path: weights_path.clone(),
                message: e.to_string(),
            }
        })?;
        let get = |name: &str| -> Result<Vec<f32>, TextError> {
            tensors
                .get(name)
                .ok_or_else(|| invalid(format!("{WEIGHTS_FILE} has no tensor `{name}`")))?
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| invalid(format!("{WEIGHTS_FILE} `{name}`: {e}")))
        };
        let tfidf = TfIdf::from_parts(config.blocks, get("idf")?)?;
        Self::new(
            tfidf,
            config.labels,
            &get("weight")?,
            get("bias")?,
            config.blend_weight,
            config.c,
        )
        .map(Some)
    }

    /// Writes `lexical.json` and `lexical.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TextError> {
        let io = |path: &Path, e: &dyn std::fmt::Display| TextError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let config = LexicalConfig {
            blend_weight: self.blend_weight,
            labels: self.labels.clone(),
            blocks: self.tfidf.blocks.clone(),
            c: self.c,
        };
        let path = dir.join(CONFIG_FILE);
        let bytes = serde_json::to_vec(&config).map_err(|e| io(&path, &e))?;
        std::fs::write(&path, bytes).map_err(|e| io(&path, &e))?;
        let (k, v) = (self.labels.len(), self.tfidf.len());
        let tensors: HashMap<String, Tensor> = [
            ("idf", Tensor::from_slice(self.tfidf.idf(), v, &Device::Cpu)),
            (
                "weight",
                Tensor::from_vec(self.weight(), (k, v), &Device::Cpu),
            ),
            ("bias", Tensor::from_slice(&self.bias, k, &Device::Cpu)),
        ]
        .into_iter()
        .map(|(name, t)| t.map(|t| (name.to_string(), t)))
        .collect::<Result<_, _>>()?;
        let path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &path).map_err(|e| io(&path, &e))
    }

    /// The linear layer, `[labels, V]` row-major.
    pub fn weight(&self) -> Vec<f32> {
        let (k, v) = (self.labels.len(), self.tfidf.len());
        let mut w = vec![0f32; k * v];
        for j in 0..v {
            for c in 0..k {
                w[c * v + j] = self.weight_t[j * k + c];
            }
        }
        w
    }

    /// The feature map.
    pub fn tfidf(&self) -> &TfIdf {
        &self.tfidf
    }

    /// The weight of the lexical model in the blend.
    pub fn blend_weight(&self) -> f32 {
        self.blend_weight
    }

    /// The lexical model's own logits for `text`.
    pub fn logits(&self, text: &str) -> Vec<f32> {
        let k = self.labels.len();
        let mut out = self.bias.clone();
        for (j, x) in self.tfidf.transform(text) {
            let row = &self.weight_t[j as usize * k..(j as usize + 1) * k];
            for (o, w) in out.iter_mut().zip(row) {
                *o += x * w;
            }
        }
        out
    }

    /// Replaces the classifier's `logits` for `text` by the blended, normalised
    /// log-probabilities (see the module doc). Rows of another width are left alone.
    pub fn blend(&self, logits: &mut [f32], text: &str) {
        if logits.len() != self.labels.len() {
            return;
        }
        let lexical = log_softmax(&self.logits(text));
        let model = log_softmax(logits);
        let w = self.blend_weight;
        let mixed: Vec<f32> = model
            .iter()
            .zip(&lexical)
            .map(|(m, l)| (1.0 - w) * m + w * l)
            .collect();
        logits.copy_from_slice(&log_softmax(&mixed));
    }
}

/// `x - logsumexp(x)`, numerically stable.
pub fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
    x.iter().map(|v| v - lse).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn analyzers_cut_text_as_scikit_learn_does() {
        // Values from scikit-learn 1.9.1's `build_analyzer()` on the same strings.
        let words = word_ngrams("pos purchase a engen, c++ 07 oct", 1, 2);
        assert_eq!(
            words,
            [
                "pos",
                "purchase",
                "engen",
                "07",
                "oct",
                "pos purchase",
                "purchase engen",
                "engen 07",
                "07 oct"
            ]
        );
        let chars = char_wb_ngrams("ab  c", 2, 4);
        assert_eq!(
            chars,
            [" a", "ab", "b ", " ab", "ab ", " ab ", " c", "c ", " c "]
        );
        let chars = char_wb_ngrams("c", 4, 5);
        assert_eq!(chars, [" c "]);
    }

    #[test]
    fn transform_weights_terms_by_sublinear_tf_and_smoothed_idf_per_block() {
        let blocks = vec![Block {
            analyzer: Analyzer::Word,
            min_n: 1,
            max_n: 1,
            vocabulary: Vec::new(),
        }];
        let tfidf = TfIdf::fit(blocks, &["aa bb", "aa cc", "aa bb bb"]).unwrap();
        assert_eq!(tfidf.blocks()[0].vocabulary, ["aa", "bb", "cc"]);
        let idf = |df: f32| ((1.0 + 3.0) / (1.0 + df)).ln() + 1.0;
        assert!((tfidf.idf()[1] - idf(2.0)).abs() < 1e-6);
        let row = tfidf.transform("BB bb aa zz");
        let (a, b) = (idf(3.0), (1.0 + 2f32.ln()) * idf(2.0));
        let norm = (a * a + b * b).sqrt();
        assert_eq!(row.len(), 2);
        assert_eq!((row[0].0, row[1].0), (0, 1));
        assert!((row[0].1 - a / norm).abs() < 1e-6 && (row[1].1 - b / norm).abs() < 1e-6);
        assert!(tfidf.transform("zz").is_empty());
    }

    #[test]
    fn hostile_ngram_ranges_are_refused_at_load() {
        for (min_n, max_n) in [(1, 1_000_000), (0, 2), (3, 2), (1, MAX_NGRAM + 1)] {
            let blocks = vec![Block {
                analyzer: Analyzer::CharWb,
                min_n,
                max_n,
                vocabulary: vec!["ab".into()],
            }];
            let err = TfIdf::from_parts(blocks, vec![1.0])
                .unwrap_err()
                .to_string();
            assert!(err.contains("n-gram range"), "{min_n}..={max_n}: {err}");
        }
        let ok = vec![Block {
            analyzer: Analyzer::CharWb,
            min_n: 2,
            max_n: MAX_NGRAM,
            vocabulary: vec!["ab".into()],
        }];
        assert!(TfIdf::from_parts(ok, vec![1.0]).is_ok());
    }

    #[test]
    fn blend_is_the_weighted_geometric_mean_and_survives_a_save() {
        let tfidf = TfIdf::fit(TfIdf::default_blocks(), &["coffee shop", "fuel station"]).unwrap();
        let v = tfidf.len();
        let labels = vec!["drinks".to_string(), "fuel".to_string()];
        // Weight: +1 on every feature for label 0, -1 for label 1.
        let weight: Vec<f32> = (0..2 * v).map(|i| if i < v { 1.0 } else { -1.0 }).collect();
        let head =
            LexicalHead::new(tfidf, labels.clone(), &weight, vec![0.1, -0.1], 0.25, None).unwrap();
        let lexical = head.logits("coffee");
        assert!(lexical[0] > 0.1 && lexical[1] < -0.1);
        let mut logits = vec![0.0, 2.0];
        head.blend(&mut logits, "coffee");
        let (m, l) = (log_softmax(&[0.0, 2.0]), log_softmax(&lexical));
        let mixed: Vec<f32> = (0..2).map(|c| 0.75 * m[c] + 0.25 * l[c]).collect();
        let lse = mixed.iter().map(|x| x.exp()).sum::<f32>().ln();
        for c in 0..2 {
            assert!((logits[c] - (mixed[c] - lse)).abs() < 1e-6);
        }
        // The normalisation matters: the unnormalised geometric mean sums below 1.
        assert!(lse < -1e-3);
        let dir = tempfile::tempdir().unwrap();
        head.save(dir.path()).unwrap();
        let loaded = LexicalHead::load_optional(dir.path(), &labels)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.logits("fuel coffee"), head.logits("fuel coffee"));
        assert_eq!(loaded.weight(), weight);
        let err = LexicalHead::load_optional(dir.path(), &labels[..1]).unwrap_err();
        assert!(err.to_string().contains("labels"), "{err}");
        assert!(
            LexicalHead::load_optional(&dir.path().join("none"), &labels)
                .unwrap()
                .is_none()
        );
    }
}
