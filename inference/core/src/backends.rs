//! The [`Backend`]s the batcher runs: tabular models (rows of `f32` features) and text models
//! (token ids).

use std::sync::Arc;

use infermesh_common::ServiceError;
use infermesh_model_core::TabularModel;
use infermesh_text::{TextError, TextModel};

use crate::batcher::{Backend, Batcher};

/// A tabular model batched by rows: a request is row-major features, whole rows; the reply
/// is `num_outputs` values per row.
#[derive(Debug)]
pub struct TabularBackend {
    model: Arc<dyn TabularModel>,
}

impl TabularBackend {
    /// Wraps `model`.
    pub fn new(model: Arc<dyn TabularModel>) -> Self {
        Self { model }
    }
}

impl Backend for TabularBackend {
    type Request = Vec<f32>;
    type Reply = Vec<f32>;

    fn run(&self, batch: &[&Vec<f32>]) -> Result<Vec<Vec<f32>>, ServiceError> {
        let nf = self.model.num_features().max(1);
        let k = self.model.num_outputs();
        let predict = |rows: &[f32]| {
            let mut out = vec![0f32; rows.len() / nf * k];
            self.model
                .predict(rows, &mut out)
                .map(|()| out)
                .map_err(|e| ServiceError::invalid(e.to_string()))
        };
        if let [one] = batch {
            return Ok(vec![predict(one)?]);
        }
        let total: usize = batch.iter().map(|r| r.len()).sum();
        let mut buf = Vec::with_capacity(total);
        for r in batch {
            buf.extend_from_slice(r);
        }
        let out = predict(&buf)?;
        let mut at = 0;
        Ok(batch
            .iter()
            .map(|r| {
                let n = r.len() / nf * k;
                let part = out[at..at + n].to_vec();
                at += n;
                part
            })
            .collect())
    }
}

impl Batcher<TabularBackend> {
    /// Predicts `features` (row-major, whole rows of the model's width): `num_outputs` values
    /// per row.
    pub async fn predict_rows(
        &self,
        features: Vec<f32>,
        num_features: usize,
    ) -> Result<Vec<f32>, ServiceError> {
        if num_features == 0 || !features.len().is_multiple_of(num_features) {
            return Err(ServiceError::invalid(format!(
                "{} values is not a whole number of rows of {num_features} features",
                features.len(),
            )));
        }
        let rows = features.len() / num_features;
        if rows == 0 {
            return Ok(Vec::new());
        }
        self.submit(features, rows, rows).await
    }
}

/// A text model batched by tokens: a request is the token ids of one or more texts; the
/// reply is one output row (embedding or logits) per text.
///
/// A batch is run as forward passes over sequences sorted by length, each holding at most
/// `max_items` sequences and `max_padded_tokens` tokens once padded, so one request with many
/// long texts never builds an attention tensor past that budget, and short texts are not
/// padded to a long one's length.
#[derive(Debug)]
pub struct TextBackend {
    model: Arc<dyn TextModel>,
    max_items: usize,
    max_padded_tokens: usize,
}

impl TextBackend {
    /// Wraps `model`; forward passes hold at most `max_items` sequences and
    /// `max_padded_tokens` padded tokens (one sequence at least).
    pub fn new(model: Arc<dyn TextModel>, max_items: usize, max_padded_tokens: usize) -> Self {
        Self {
            model,
            max_items: max_items.max(1),
            max_padded_tokens,
        }
    }

    /// One output row per sequence, in the order given.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ServiceError> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); seqs.len()];
        let mut at = 0;
        while at < order.len() {
            // Sorted longest first: the chunk's padded length is its first sequence's.
            let longest = seqs[order[at]].len().max(1);
            let fit = (self.max_padded_tokens / longest).clamp(1, self.max_items);
            let chunk = &order[at..(at + fit).min(order.len())];
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i]).collect();
            let rows = self.model.forward_tokens(&batch).map_err(text_error)?;
            if rows.len() != chunk.len() {
                return Err(ServiceError::internal(format!(
                    "text model answered {} of {} sequences",
                    rows.len(),
                    chunk.len()
                )));
            }
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
            at += chunk.len();
        }
        Ok(out)
    }
}

fn text_error(e: TextError) -> ServiceError {
    match e {
        TextError::Tokenizer(m) => ServiceError::invalid(format!("cannot tokenize: {m}")),
        other => ServiceError::internal(other),
    }
}

impl Backend for TextBackend {
    type Request = Vec<Vec<u32>>;
    type Reply = Vec<Vec<f32>>;

    fn run(&self, batch: &[&Vec<Vec<u32>>]) -> Result<Vec<Vec<Vec<f32>>>, ServiceError> {
        let seqs: Vec<&[u32]> = batch
            .iter()
            .flat_map(|r| r.iter().map(Vec::as_slice))
            .collect();
        let mut out = self.forward(&seqs)?.into_iter();
        Ok(batch
            .iter()
            .map(|r| out.by_ref().take(r.len()).collect())
            .collect())
    }
}

impl Batcher<TextBackend> {
    /// Runs tokenised texts: one output row per text. The request costs its token count.
    pub async fn run_texts(&self, ids: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, ServiceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: usize = ids.iter().map(Vec::len).sum();
        let n = ids.len();
        self.submit(ids, tokens.max(1), n).await
    }
}
