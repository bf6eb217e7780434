//! Sequence classifiers in the Hugging Face layout: `BertForSequenceClassification` and
//! `DistilBertForSequenceClassification` checkpoints (`config.json`, `model.safetensors`,
//! `tokenizer.json`), served through [`TextModel`] with logits as output rows.
//!
//! The encoders are candle-transformers' [`BertModel`] and [`DistilBertModel`]; the heads
//! (BERT's pooler, DistilBERT's `pre_classifier`, the `classifier` layer) are written here
//! because candle ships none of them:
//!
//! * BERT: `logits = classifier(tanh(pooler.dense(h[CLS])))`
//! * DistilBERT: `logits = classifier(relu(pre_classifier(h[CLS])))`
//! * either, with `"classifier_pooling": "mean"` in `config.json`:
//!   `logits = classifier(mean(h))`, the mean over the attention mask as sentence-transformers
//!   pools (see [`ClassifierPooling`]).
//!
//! Note that candle's DistilBERT uses the tanh approximation of GELU where Hugging Face uses
//! the exact one: logits of checkpoints trained elsewhere differ slightly (~1e-3), those of
//! checkpoints trained by `infermesh-training` (which uses the same approximation) do not.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use candle_transformers::models::distilbert::{Config as DistilBertConfig, DistilBertModel};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::{TextError, TextModel, read, tokenize};

/// The classifier families this module loads, by their `config.json` `architectures[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `BertForSequenceClassification` (BERT, MiniLM, ...).
    Bert,
    /// `DistilBertForSequenceClassification`.
    DistilBert,
}

impl Architecture {
    /// The Hugging Face class name written in `config.json`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Bert => "BertForSequenceClassification",
            Architecture::DistilBert => "DistilBertForSequenceClassification",
        }
    }

    /// The architecture named `name` in `config.json`, if supported.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "BertForSequenceClassification" => Some(Architecture::Bert),
            "DistilBertForSequenceClassification" => Some(Architecture::DistilBert),
            _ => None,
        }
    }

    /// The tensor-name prefix of the encoder in a sequence-classification checkpoint.
    pub fn prefix(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::DistilBert => "distilbert",
        }
    }
}

/// What the classifier layer reads, `config.json`'s `classifier_pooling` (the key and values
/// ModernBERT's Hugging Face config uses for the same choice).
///
/// Hugging Face's `BertForSequenceClassification` and `DistilBertForSequenceClassification`
/// know only `Cls` and ignore the key: a `Mean` checkpoint (as `infermesh train categorizer
/// --pooling mean` writes) has the same tensors but means something else to them, so it
/// is served as trained only by infermesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierPooling {
    /// The `[CLS]` token through BERT's pooler (`tanh`) or DistilBERT's `pre_classifier`
    /// (`relu`): Hugging Face's head.
    #[default]
    Cls,
    /// The mean of the last hidden states over the attention mask, straight into the
    /// `classifier` layer (no pooler): the pooling sentence encoders such as MiniLM were
    /// trained with, which makes their features a good start for a new head.
    Mean,
}

impl ClassifierPooling {
    /// The value written in `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClassifierPooling::Cls => "cls",
            ClassifierPooling::Mean => "mean",
        }
    }
}

/// The fields of `config.json` this module reads besides the encoder's own.
#[derive(Debug, Deserialize)]
struct HeadConfig {
    #[serde(default)]
    classifier_pooling: ClassifierPooling,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    id2label: Option<HashMap<String, String>>,
    #[serde(default)]
    num_labels: Option<usize>,
    max_position_embeddings: usize,
}

/// Class labels in id order: `id2label` when present (ids must be exactly `0..n`), else
/// `LABEL_0..` for `num_labels` (Hugging Face's default of 2 when neither is given).
fn labels_of(head: &HeadConfig) -> Result<Vec<String>, TextError> {
    let invalid = |message: String| TextError::Invalid {
        what: "config.json",
        message,
    };
    match &head.id2label {
        Some(map) if !map.is_empty() => {
            let mut labels = vec![None; map.len()];
            for (id, label) in map {
                let i: usize = id
                    .parse()
                    .map_err(|_| invalid(format!("id2label key {id:?} is not an integer")))?;
                let slot = labels.get_mut(i).ok_or_else(|| {
                    invalid(format!("id2label ids must be 0..{}, found {i}", map.len()))
                })?;
                *slot = Some(label.clone());
            }
            let labels: Vec<String> = labels.into_iter().flatten().collect();
            if let Some(n) = head.num_labels
                && n != labels.len()
            {
                return Err(invalid(format!(
                    "num_labels is {n} but id2label has {} labels",
                    labels.len()
                )));
            }
            Ok(labels)
        }
        _ => {
            let n = head.num_labels.unwrap_or(2);
            if n == 0 {
                return Err(invalid("num_labels is 0".into()));
            }
            Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
        }
    }
}

enum Encoder {
    Bert(BertModel),
    DistilBert(DistilBertModel),
}

/// A BERT or DistilBERT sequence classifier. [`TextModel::forward_tokens`] returns logits
/// (apply [`softmax`] for probabilities), one row per sequence, columns in
/// [`TextModel::labels`] order.
pub struct TextClassifier {
    architecture: Architecture,
    encoder: Encoder,
    /// BERT's pooler or DistilBERT's `pre_classifier`; `None` with mean pooling.
    pre_head: Option<Linear>,
    classifier: Linear,
    tokenizer: Tokenizer,
    pad_id: u32,
    device: Device,
    labels: Vec<String>,
    max_len: usize,
}

impl std::fmt::Debug for TextClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextClassifier")
            .field("architecture", &self.architecture)
            .field("pooling", &self.pooling())
            .field("labels", &self.labels)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

fn invalid_config(e: impl std::fmt::Display) -> TextError {
    TextError::Invalid {
        what: "config.json",
        message: e.to_string(),
    }
}

/// Wraps a weight-loading failure so the message says which file was wrong.
fn invalid_weights(e: candle_core::Error) -> TextError {
    TextError::Invalid {
        what: "model.safetensors",
        message: e.to_string(),
    }
}

impl TextClassifier {
    /// Loads the classifier in `dir` (`config.json`, `model.safetensors`, `tokenizer.json`)
    /// on the CPU.
    pub fn load(dir: &Path) -> Result<TextClassifier, TextError> {
        Self::load_on(dir, Device::Cpu)
    }

    /// Loads the classifier in `dir` on `device`.
    pub fn load_on(dir: &Path, device: Device) -> Result<TextClassifier, TextError> {
        let config = read(&dir.join("config.json"))?;
        // Check the architecture before reading weights: an unsupported model is the more
        // useful error, and it is cheap.
        architecture_of(&config)?;
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(TextError::Io {
                path: tokenizer_path,
                message: "not found".into(),
            });
        }
        let weights = read(&dir.join("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(invalid_weights)?;
        let head: HeadConfig = serde_json::from_slice(&config).map_err(invalid_config)?;
        let tokenizer = tokenize::load_tokenizer(dir, head.max_position_embeddings)?;
        Self::from_parts(&config, vb, tokenizer)
    }

    /// Builds a classifier from `config.json` bytes, weights under Hugging Face names
    /// (`bert.*` / `distilbert.*`, `classifier.*`, ...) and a tokenizer (truncation is set to
    /// the model's maximum length). With a `VarMap`-backed `vb` this creates fresh weights,
    /// which is how tests build checkpoints.
    pub fn from_parts(
        config: &[u8],
        vb: VarBuilder,
        mut tokenizer: Tokenizer,
    ) -> Result<TextClassifier, TextError> {
        let architecture = architecture_of(config)?;
        let head: HeadConfig = serde_json::from_slice(config).map_err(invalid_config)?;
        let labels = labels_of(&head)?;
        let max_len = head.max_position_embeddings;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let device = vb.device().clone();
        let prefix = architecture.prefix();
        let cls = head.classifier_pooling == ClassifierPooling::Cls;
        let (encoder, pre_head, dim) = match architecture {
            Architecture::Bert => {
                let cfg: BertConfig = serde_json::from_slice(config).map_err(invalid_config)?;
                let enc = vb.pp(prefix);
                let model = BertModel::load(enc.clone(), &cfg).map_err(invalid_weights)?;
                let pooler = cls
                    .then(|| {
                        candle_nn::linear(
                            cfg.hidden_size,
                            cfg.hidden_size,
                            enc.pp("pooler").pp("dense"),
                        )
                    })
                    .transpose()
                    .map_err(invalid_weights)?;
                (Encoder::Bert(model), pooler, cfg.hidden_size)
            }
            Architecture::DistilBert => {
                let cfg: DistilBertConfig =
                    serde_json::from_slice(config).map_err(invalid_config)?;
                let model = DistilBertModel::load(vb.pp(prefix), &cfg).map_err(invalid_weights)?;
                let pre_classifier = cls
                    .then(|| candle_nn::linear(cfg.dim, cfg.dim, vb.pp("pre_classifier")))
                    .transpose()
                    .map_err(invalid_weights)?;
                (Encoder::DistilBert(model), pre_classifier, cfg.dim)
            }
        };
        let classifier =
            candle_nn::linear(dim, labels.len(), vb.pp("classifier")).map_err(invalid_weights)?;
        Ok(TextClassifier {
            architecture,
            encoder,
            pre_head,
            classifier,
            pad_id: tokenize::pad_id(&tokenizer),
            tokenizer,
            device,
            labels,
            max_len,
        })
    }

    /// Which family this classifier is.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// What its classifier layer reads.
    pub fn pooling(&self) -> ClassifierPooling {
        if self.pre_head.is_some() {
            ClassifierPooling::Cls
        } else {
            ClassifierPooling::Mean
        }
    }

    /// Logits of `texts`, one batch padded to its longest text.
    pub fn predict_logits(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, TextError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.tokenize(texts)?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.forward_tokens(&refs)
    }

    /// The most likely label of each text.
    pub fn predict_labels(&self, texts: &[&str]) -> Result<Vec<String>, TextError> {
        Ok(self
            .predict_logits(texts)?
            .iter()
            .map(|row| self.labels[argmax(row)].clone())
            .collect())
    }
}

/// Class labels of the classifier whose `config.json` is `config` (see [`labels_of`]).
pub(crate) fn labels_of_config(config: &[u8]) -> Result<Vec<String>, TextError> {
    labels_of(&serde_json::from_slice(config).map_err(invalid_config)?)
}

/// `classifier_pooling` of the classifier whose `config.json` is `config`.
pub(crate) fn pooling_of_config(config: &[u8]) -> Result<ClassifierPooling, TextError> {
    let head: HeadConfig = serde_json::from_slice(config).map_err(invalid_config)?;
    Ok(head.classifier_pooling)
}

/// `architectures[0]` of `config.json`, or a clear error naming what is supported.
pub(crate) fn architecture_of(config: &[u8]) -> Result<Architecture, TextError> {
    let head: HeadConfig = serde_json::from_slice(config).map_err(invalid_config)?;
    let name = head
        .architectures
        .first()
        .ok_or_else(|| TextError::Invalid {
            what: "config.json",
            message: "no `architectures` entry; expected BertForSequenceClassification or \
                  DistilBertForSequenceClassification"
                .into(),
        })?;
    Architecture::from_hf_name(name).ok_or_else(|| TextError::Invalid {
        what: "config.json",
        message: format!(
            "unsupported architecture {name:?}; expected BertForSequenceClassification or \
             DistilBertForSequenceClassification"
        ),
    })
}

impl TextModel for TextClassifier {
    fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    fn forward_tokens(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, TextError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mask) = tokenize::pad_batch(batch, self.pad_id, &self.device)?;
        let hidden = match &self.encoder {
            Encoder::Bert(model) => model.forward(&ids, &ids.zeros_like()?, Some(&mask))?,
            Encoder::DistilBert(model) => {
                // candle's DistilBERT masks where the mask is 1: the inverse of HF's.
                let (n, len) = mask.dims2()?;
                let masked = mask.eq(&mask.zeros_like()?)?.reshape((n, 1, 1, len))?;
                model.forward(&ids, &masked)?
            }
        };
        let features = match &self.pre_head {
            Some(pre_head) => {
                let cls = pre_head.forward(&hidden.narrow(1, 0, 1)?.squeeze(1)?)?;
                match self.architecture {
                    Architecture::Bert => cls.tanh()?,
                    Architecture::DistilBert => cls.relu()?,
                }
            }
            None => crate::mean_pool(&hidden, &mask)?,
        };
        Ok(self.classifier.forward(&features)?.to_vec2::<f32>()?)
    }

    fn output_width(&self) -> usize {
        self.labels.len()
    }

    fn max_len(&self) -> usize {
        self.max_len
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }
}

/// Probabilities from one row of logits (numerically stable; empty in, empty out).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Index of the largest value (the first on ties; 0 for an empty row).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] < p[1] && p[1] < p[2]);
        assert!((p[2] - 0.665_240_9).abs() < 1e-5);
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 0.0]);
        assert!((p[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn argmax_picks_the_first_largest() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn labels_follow_ids_and_default_to_label_n() {
        let head: HeadConfig = serde_json::from_str(
            r#"{"max_position_embeddings": 8, "id2label": {"1": "b", "0": "a", "2": "c"}}"#,
        )
        .unwrap();
        assert_eq!(labels_of(&head).unwrap(), ["a", "b", "c"]);
        let head: HeadConfig =
            serde_json::from_str(r#"{"max_position_embeddings": 8, "num_labels": 3}"#).unwrap();
        assert_eq!(labels_of(&head).unwrap(), ["LABEL_0", "LABEL_1", "LABEL_2"]);
        let head: HeadConfig = serde_json::from_str(
            r#"{"max_position_embeddings": 8, "id2label": {"0": "a", "5": "b"}}"#,
        )
        .unwrap();
        assert!(labels_of(&head).is_err());
    }

    #[test]
    fn unknown_architecture_is_named_in_the_error() {
        let err = architecture_of(
            br#"{"architectures": ["RobertaForSequenceClassification"], "max_position_embeddings": 8}"#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("RobertaForSequenceClassification"), "{msg}");
        assert!(msg.contains("BertForSequenceClassification"), "{msg}");
    }
}
