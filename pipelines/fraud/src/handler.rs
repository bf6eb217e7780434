//! The fraud pipeline's handler: a batch of `finance.transactions` values -> stream features
//! -> one model batch -> rules -> `fraud.alerts` (+ `user_avg_spend` to the feature store).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use infermesh_common::metrics_names::{
    FRAUD_ALERTS_TOTAL, FRAUD_LATE_EVENTS_TOTAL, FRAUD_RULE_HITS_TOTAL, FRAUD_SCORED_TOTAL,
};
use infermesh_common::telemetry::propagation;
use infermesh_features::types::{Value, value::Val};
use infermesh_features::write::RowWrite;
use infermesh_features::writer::FeatureWriter;
use infermesh_pipelines::bus::{BoxFuture, EventBus, Message};
use infermesh_pipelines::runtime::{Dedupe, Handler, Incoming, Outcome, Pending};
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::fraud_scoring_client::FraudScoringClient;
use infermesh_proto::v1::fraud_scoring_server::FraudScoring as _;
use tracing::Instrument;

use crate::alerts::{self, Alert};
use crate::event::{self, Parsed, Transaction};
use crate::stream::{StreamFeatures, StreamState, TxKey};

/// How transactions are scored.
#[derive(Debug, Clone)]
pub enum Scorer {
    /// The tree engine in this process (the model repository `serve` would load, hot reload
    /// included).
    InProcess(infermesh_server::fraud::FraudService),
    /// An inference server's `infermesh.v1.FraudScoring` over gRPC.
    Grpc(FraudScoringClient<tonic::transport::Channel>),
}

impl Scorer {
    /// Scores `req` as one batch.
    pub async fn score(
        &self,
        req: pb::ScoreBatchRequest,
    ) -> Result<Vec<pb::ScoreResponse>, tonic::Status> {
        let resp = match self {
            Scorer::InProcess(svc) => svc.score_batch(tonic::Request::new(req)).await?,
            Scorer::Grpc(client) => client.clone().score_batch(req).await?,
        };
        Ok(resp.into_inner().responses)
    }

    /// The `mode` label.
    pub fn mode(&self) -> &'static str {
        match self {
            Scorer::InProcess(_) => "in_process",
            Scorer::Grpc(_) => "grpc",
        }
    }
}

/// Reads the alert ids already on the alerts topic (see [`crate::alerts::produced_ids`]).
pub type Recover = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<String>, String>> + Send + Sync>;

/// What the handler needs.
pub struct FraudHandler {
    /// Stream features.
    pub state: StreamState,
    /// The model.
    pub scorer: Scorer,
    /// Model name (empty: the scorer's default).
    pub model: String,
    /// Reasons per alert.
    pub top_k_reasons: u32,
    /// Where alerts go.
    pub bus: Arc<dyn EventBus>,
    /// The alerts topic.
    pub alerts_topic: String,
    /// Alert ids already produced.
    pub produced: Dedupe,
    /// Re-reads the alerts topic's tail into `produced` when partitions are assigned.
    pub recover: Option<Recover>,
    /// Writes `user_spend:user_avg_spend`, if a feature store is configured.
    pub writer: Option<FeatureWriter>,
    /// Email jobs for the Celery workers, if configured.
    pub email: Option<crate::celery::CeleryQueue>,
    /// Transactions in one window span that fire the velocity rule.
    pub window_threshold: u64,
    /// The rule's name (e.g. `velocity_5_in_60s`).
    pub window_rule: String,
    /// Scale of precise decimals without a schema.
    pub decimal_scale: u32,
    /// Ids of the alerts handed to the bus and not acknowledged yet (a batch started meanwhile
    /// does not produce them again); starts empty.
    pub in_flight: Mutex<HashSet<String>>,
    /// Released once the last batch started has written its `user_avg_spend` rows (or given
    /// up), so that the next writes after it; starts empty.
    pub spend_turn: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for FraudHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FraudHandler")
            .field("state", &self.state)
            .field("scorer", &self.scorer.mode())
            .field("alerts_topic", &self.alerts_topic)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The model inputs of a transaction: its own numeric fields, then what the stream knows (the
/// stream's values win). Inputs a model does not take are dropped by the server.
pub fn model_inputs(t: &Transaction, s: Option<&StreamFeatures>) -> HashMap<String, f64> {
    let mut f: HashMap<String, f64> = t.extra.iter().map(|(k, v)| (k.clone(), *v)).collect();
    f.insert("amount".into(), t.amount);
    let hour = (t.created_at_ms.div_euclid(3_600_000)).rem_euclid(24) as f64;
    f.insert("hour_of_day".into(), hour);
    f.insert(
        "is_night".into(),
        f64::from(u8::from(!(6.0..23.0).contains(&hour))),
    );
    if let Some(s) = s {
        // Counts of the transactions before this one.
        f.insert("txn_count_1m".into(), s.user_1m.saturating_sub(1) as f64);
        f.insert("txn_count_1h".into(), s.user_1h.saturating_sub(1) as f64);
        f.insert("txn_count_24h".into(), s.user_24h.saturating_sub(1) as f64);
        if let Some(d) = s.device_1m {
            f.insert("device_txn_count_1m".into(), d.saturating_sub(1) as f64);
        }
        if let Some(d) = s.device_1h {
            f.insert("device_txn_count_1h".into(), d.saturating_sub(1) as f64);
        }
        f.insert("window_txn_count".into(), s.window_max as f64);
        if let Some(avg) = s.avg_spend_before.filter(|a| *a > 0.0) {
            f.insert("user_avg_spend".into(), avg);
            f.insert("amount_to_avg_ratio".into(), t.amount / avg);
        }
    }
    f
}

impl FraudHandler {
    /// A transaction's request. One that completes the window will be alerted whatever its
    /// probability, so it asks for reasons itself; the rest get them only over the model's
    /// threshold (`reasons_over_threshold_only`), since only alerts carry them.
    fn request(&self, t: &Transaction, s: Option<&StreamFeatures>) -> pb::ScoreRequest {
        let rule_hit = s.is_some_and(|s| s.window_max >= self.window_threshold);
        pb::ScoreRequest {
            transaction_id: t.transaction_id.clone(),
            features: model_inputs(t, s),
            user_id: t.user_id.clone(),
            device_id: t.device_id.clone().unwrap_or_default(),
            top_k_reasons: rule_hit.then_some(self.top_k_reasons),
            ..Default::default()
        }
    }

    fn spend_row(t: &Transaction, s: &StreamFeatures) -> RowWrite {
        RowWrite {
            view: "user_spend".into(),
            entity: vec![(
                "user_id".into(),
                Value {
                    val: Some(Val::StringVal(t.user_id.clone())),
                },
            )],
            features: vec![(
                "user_avg_spend".into(),
                Value {
                    val: Some(Val::DoubleVal(s.avg_spend_after)),
                },
            )],
            event_time: infermesh_features::Timestamp {
                seconds: t.created_at_ms.div_euclid(1000),
                nanos: (t.created_at_ms.rem_euclid(1000) * 1_000_000) as i32,
            },
        }
    }

    /// Parses the batch and submits it to the stream state (in batch order); the returned
    /// future awaits its features, scores, hands the alerts to the bus and resolves once the
    /// broker has them.
    async fn start_batch<'h>(&'h self, batch: &[Incoming]) -> Pending<'h> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut txs: Vec<(usize, Transaction)> = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            match event::parse(&item.delivery.message.payload, self.decimal_scale) {
                Ok(Parsed::Transaction(t)) => txs.push((i, *t)),
                Ok(Parsed::Skip(why)) => {
                    tracing::debug!(parent: &item.span, why, "not a new transaction");
                    outcomes[i] = Some(Outcome::Done);
                }
                Err(e) => {
                    outcomes[i] = Some(Outcome::Poison {
                        reason: e.reason(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        // The ordered part: the batch's place in the stream state (one user's transactions
        // counted in order) is taken here, by submitting it; Redis answers while later
        // batches are read and submitted. The returned future awaits the features, writes the
        // spend (after the batch before) and scores and alerts.
        let stream = (!txs.is_empty()).then(|| self.submit_stream(&txs));
        let (turn, my_turn) = tokio::sync::oneshot::channel::<()>();
        let previous_turn = self
            .spend_turn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(my_turn);
        let spans: Vec<tracing::Span> = txs.iter().map(|(i, _)| batch[*i].span.clone()).collect();
        Box::pin(async move {
            let stream = match stream {
                Some(update) => Self::stream_features(update, txs.len()).await,
                None => None,
            };
            if let Some(previous) = previous_turn {
                // Resolves (nothing is ever sent) once the batch before has written its rows
                // or was dropped.
                let _ = previous.await;
            }
            if let (Some(w), Some(stream)) = (&self.writer, &stream) {
                for ((_, t), s) in txs.iter().zip(stream) {
                    if s.fresh
                        && let Err(e) = w.try_push(Self::spend_row(t, s))
                    {
                        tracing::debug!(error = %e, "user_avg_spend not written");
                    }
                }
            }
            drop(turn);
            if !txs.is_empty() {
                let sends = self
                    .score_and_alert(&txs, stream.as_deref(), &spans, &mut outcomes)
                    .await;
                if !sends.is_empty() {
                    self.delivered(sends, &mut outcomes).await;
                }
            }
            outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Outcome::Retry("not processed".into())))
                .collect()
        })
    }

    /// Waits for the alerts handed to the bus: a delivered one is done (its email job queued,
    /// its id recorded), one the broker refused is retried.
    async fn delivered(&self, sends: Vec<AlertSend>, outcomes: &mut [Option<Outcome>]) {
        let results = join_all(sends.into_iter().map(|s| async move {
            let r = s.delivery.await;
            (s.index, s.alert, s.source, r)
        }))
        .await;
        let mut produced = Vec::with_capacity(results.len());
        for (i, a, source, r) in results {
            match r {
                Ok(()) => {
                    metrics::counter!(FRAUD_ALERTS_TOTAL, "source" => source).increment(1);
                    if let Some(email) = &self.email {
                        email.enqueue(&a);
                    }
                    produced.push(a.alert_id);
                    outcomes[i] = Some(Outcome::Done);
                }
                Err(e) => {
                    self.lock_in_flight().remove(&a.alert_id);
                    outcomes[i] = Some(Outcome::Retry(format!("alert not produced: {e}")));
                }
            }
        }
        // Recorded before they leave the in-flight set, so that a batch screening them in
        // between sees them in one or the other.
        self.produced.mark(&produced).await;
        let mut in_flight = self.lock_in_flight();
        for id in &produced {
            in_flight.remove(id);
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits `txs` to the stream state (their place in it is taken now).
    fn submit_stream(&self, txs: &[(usize, Transaction)]) -> crate::stream::StateUpdate {
        let keys: Vec<TxKey<'_>> = txs
            .iter()
            .map(|(_, t)| TxKey {
                transaction_id: &t.transaction_id,
                user_id: &t.user_id,
                device_id: t.device_id.as_deref(),
                ts_ms: t.created_at_ms,
                amount: t.amount,
            })
            .collect();
        self.state.submit(&keys)
    }

    /// The stream features of a submitted batch of `n`, or none when the state is unavailable
    /// (the transactions are scored without them, `features_degraded`).
    async fn stream_features(
        update: crate::stream::StateUpdate,
        n: usize,
    ) -> Option<Vec<StreamFeatures>> {
        match update
            .instrument(tracing::info_span!("stream_state", n))
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "stream state unavailable; scoring without it");
                None
            }
        }
    }

    /// Scores `txs` (with their stream features, `spans` their messages' spans) and hands
    /// their alerts to the bus; sets the outcome of every transaction that raises no alert to
    /// send (none, or produced before) and returns the sends.
    async fn score_and_alert(
        &self,
        txs: &[(usize, Transaction)],
        stream: Option<&[StreamFeatures]>,
        spans: &[tracing::Span],
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<AlertSend> {
        let features = |k: usize| stream.map(|s| &s[k]);
        let req = pb::ScoreBatchRequest {
            requests: txs
                .iter()
                .enumerate()
                .map(|(k, (_, t))| self.request(t, features(k)))
                .collect(),
            model_name: self.model.clone(),
            model_version: String::new(),
            top_k_reasons: Some(self.top_k_reasons),
            ignore_unknown_features: true,
            reasons_over_threshold_only: true,
        };
        let scored = match self
            .scorer
            .score(req)
            .instrument(tracing::info_span!("score", n = txs.len()))
            .await
        {
            Ok(r) if r.len() == txs.len() => r,
            Ok(r) => {
                let why = format!("{} scores for {} transactions", r.len(), txs.len());
                for (i, _) in txs {
                    outcomes[*i] = Some(Outcome::Retry(why.clone()));
                }
                return Vec::new();
            }
            Err(status) => {
                let why = format!("scoring failed: {status}");
                for (i, _) in txs {
                    outcomes[*i] = Some(Outcome::Retry(why.clone()));
                }
                return Vec::new();
            }
        };
        let degraded_stream = stream.is_none();
        let mut alerts: Vec<(usize, &tracing::Span, Alert)> = Vec::new();
        for (k, ((i, t), r)) in txs.iter().zip(&scored).enumerate() {
            let s = features(k);
            let degraded = degraded_stream || r.features_degraded;
            metrics::counter!(FRAUD_SCORED_TOTAL, "mode" => self.scorer.mode(),
                "degraded" => if degraded { "true" } else { "false" })
            .increment(1);
            if s.is_some_and(|s| s.late && s.fresh) {
                metrics::counter!(FRAUD_LATE_EVENTS_TOTAL).increment(1);
            }
            let mut rule_hits = Vec::new();
            if s.is_some_and(|s| s.window_max >= self.window_threshold) {
                rule_hits.push(self.window_rule.clone());
            }
            if alerts::source(r.is_fraud, &rule_hits).is_none() {
                outcomes[*i] = Some(Outcome::Done);
                continue;
            }
            if !rule_hits.is_empty() && s.is_some_and(|s| s.fresh) {
                metrics::counter!(FRAUD_RULE_HITS_TOTAL, "rule" => "velocity_window").increment(1);
            }
            let alert = Alert {
                alert_id: alerts::alert_id(
                    &t.transaction_id,
                    r.is_fraud.then_some(r.model_name.as_str()),
                    &rule_hits,
                ),
                transaction_id: t.transaction_id.clone(),
                user_id: t.user_id.clone(),
                device_id: t.device_id.clone(),
                amount: t.amount,
                currency: t.currency.clone(),
                merchant: t.merchant.clone(),
                probability: r.probability,
                is_fraud: r.is_fraud,
                threshold: r.threshold,
                reasons: alerts::reasons(r),
                rule_hits,
                model: r.model_name.clone(),
                version: r.model_version.clone(),
                features_degraded: degraded,
                created_at: rfc3339(t.created_at_ms),
                alerted_at_ms: now_ms(),
            };
            alerts.push((*i, &spans[k], alert));
        }
        if alerts.is_empty() {
            return Vec::new();
        }
        // Held by a batch in flight: done. The claim comes before the look at what was
        // produced, and a finishing batch records its ids before releasing them, so an id
        // released in between is seen as produced.
        let mut claimed = Vec::with_capacity(alerts.len());
        for (i, span, a) in alerts {
            if self.lock_in_flight().insert(a.alert_id.clone()) {
                claimed.push((i, span, a));
            } else {
                outcomes[i] = Some(Outcome::Done);
            }
        }
        let ids: Vec<String> = claimed.iter().map(|(_, _, a)| a.alert_id.clone()).collect();
        let seen = self.produced.seen(&ids).await;
        let mut sends = Vec::with_capacity(claimed.len());
        for ((i, span, a), seen) in claimed.into_iter().zip(seen) {
            // Produced before (a replay): done.
            if seen {
                self.lock_in_flight().remove(&a.alert_id);
                outcomes[i] = Some(Outcome::Done);
                continue;
            }
            let mut headers = vec![("message-id".to_string(), a.alert_id.clone())];
            propagation::inject(span, &mut headers);
            let msg = Message {
                key: Some(a.user_id.clone()),
                headers,
                payload: serde_json::to_vec(&a).unwrap_or_default(),
            };
            let source = alerts::source(a.is_fraud, &a.rule_hits).unwrap_or("model");
            let delivery = self
                .bus
                .enqueue(&self.alerts_topic, msg)
                .instrument(span.clone());
            sends.push(AlertSend {
                index: i,
                alert: a,
                source,
                delivery: Box::pin(delivery),
            });
        }
        sends
    }
}

/// An alert handed to the bus.
struct AlertSend {
    /// Its transaction's place in the batch.
    index: usize,
    alert: Alert,
    /// The `source` label.
    source: &'static str,
    delivery: BoxFuture<'static, Result<(), infermesh_pipelines::bus::BusError>>,
}

/// Reads of the alerts topic's tail tried on an assignment.
const RECOVER_ATTEMPTS: u32 = 3;

impl Handler for FraudHandler {
    fn handle<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move { self.start_batch(batch).await.await })
    }

    fn start<'h: 'b, 'b>(&'h self, batch: &'b [Incoming]) -> BoxFuture<'b, Pending<'h>> {
        Box::pin(self.start_batch(batch))
    }

    fn on_assigned(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(recover) = &self.recover else {
                return;
            };
            // Tried a few times: without it, alerts a killed member produced but had not
            // recorded would be produced again. Past that the pipeline goes on (a repeated
            // alert keeps its id, so it stays recognisable downstream; a stalled pipeline
            // alerts no one).
            for attempt in 1..=RECOVER_ATTEMPTS {
                match recover().await {
                    Ok(ids) => {
                        tracing::info!(
                            alerts = ids.len(),
                            "alert ids read back from the alerts topic"
                        );
                        self.produced.mark(&ids).await;
                        return;
                    }
                    Err(e) if attempt < RECOVER_ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "alerts topic not read back; again");
                        tokio::time::sleep(std::time::Duration::from_secs(attempt.into())).await;
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "alerts topic not read back; alerts produced just before a member died may repeat"
                    ),
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inputs_come_from_the_transaction_and_the_stream() {
        let t = Transaction {
            transaction_id: "t".into(),
            user_id: "u".into(),
            device_id: None,
            amount: 200.0,
            currency: None,
            merchant: None,
            category: None,
            // 03:00 UTC.
            created_at_ms: 3 * 3_600_000,
            extra: [
                ("merchant_risk".to_string(), 0.5),
                ("txn_count_1h".to_string(), 99.0),
            ]
            .into_iter()
            .collect(),
        };
        let s = StreamFeatures {
            fresh: true,
            user_1m: 1,
            user_1h: 3,
            user_24h: 7,
            device_1m: None,
            device_1h: None,
            window_max: 1,
            late: false,
            avg_spend_before: Some(50.0),
            avg_spend_after: 80.0,
        };
        let f = model_inputs(&t, Some(&s));
        assert_eq!(f["hour_of_day"], 3.0);
        assert_eq!(f["is_night"], 1.0);
        assert_eq!(f["merchant_risk"], 0.5);
        // The stream's count wins over the producer's.
        assert_eq!(f["txn_count_1h"], 2.0);
        assert_eq!(f["user_avg_spend"], 50.0);
        assert_eq!(f["amount_to_avg_ratio"], 4.0);
        assert!(!f.contains_key("device_txn_count_1m"));
        // Without the stream: the transaction's own fields only.
        let f = model_inputs(&t, None);
        assert_eq!(f["txn_count_1h"], 99.0);
        assert!(!f.contains_key("user_avg_spend"));
    }
}
