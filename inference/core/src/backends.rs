//! A [`Backend`] for any [`TabularModel`] (rows of `f32` features in, `num_outputs` values
//! per row out), batched by rows: what a tabular family (trees, Isolation Forest) hands the
//! batcher.

use std::sync::Arc;

use infermesh_common::ServiceError;
use infermesh_model_core::TabularModel;

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
    /// Starts the row batcher of `model`, version `version`, with the batching and admission
    /// of `config` (`max_batch_size` rows per batch, `max_queue_rows` admitted, small idle
    /// requests inline): what every tabular family serves with.
    pub fn for_rows(
        model: Arc<dyn TabularModel>,
        config: &infermesh_registry::ModelConfig,
        version: u64,
    ) -> Result<Self, String> {
        Batcher::start(
            Arc::new(TabularBackend::new(model)),
            crate::batcher::BatchConfig {
                model: config.name.clone(),
                version: version.to_string(),
                max_batch_cost: config.max_batch_size,
                max_batch_items: config.max_batch_size,
                max_queue_delay: config.max_queue_delay,
                max_queue_cost: config.max_queue_rows,
                inline_max_cost: crate::batcher::INLINE_MAX_ROWS,
            },
        )
        .map_err(|e| format!("cannot start the batcher thread: {e}"))
    }

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
