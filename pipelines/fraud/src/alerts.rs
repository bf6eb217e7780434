//! `fraud.alerts` values, their ids, and the recovery of ids already on the topic.
//!
//! An alert's id is derived from the transaction and what flagged it (the model's name and the
//! rules hit), so a replayed transaction produces the same id. Before producing, the pipeline
//! skips ids it knows were produced (the alert window: Redis or memory, marked once the broker
//! acknowledged). A process that died between the broker's acknowledgement and that mark would
//! produce the alert again after a restart; so when the group assigns partitions, the pipeline
//! first reads the alerts topic's recent tail ([`produced_ids`], `--alert-lookback-seconds`) and
//! marks every id found there, before it handles a message of the new partitions.
//!
//! The tail starts where the broker's time index says (ListOffsets by timestamp). A broker that
//! cannot look offsets up by time (librdkafka's MockCluster answers -1 to every such query)
//! would make that read empty and the recovery silently useless; so a partition without an
//! answer is read from at most `max_tail` messages before its end instead, and in both cases
//! only messages stamped within the lookback count.

use std::time::Duration;

use infermesh_proto::v1 as pb;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One reason: a feature's TreeSHAP contribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReason {
    /// Feature name.
    pub feature: String,
    /// Contribution to the margin (log-odds).
    pub contribution: f64,
    /// The feature's value (0 when missing).
    pub value: f64,
    /// The feature was missing.
    pub missing: bool,
}

/// A `fraud.alerts` value (ARCHITECTURE.md, "Events").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Idempotent id (see the module doc).
    pub alert_id: String,
    /// The transaction.
    pub transaction_id: String,
    /// Its user (the message key).
    pub user_id: String,
    /// Its device.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_id: Option<String>,
    /// Its amount.
    pub amount: f64,
    /// Its currency.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub currency: Option<String>,
    /// Its merchant.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub merchant: Option<String>,
    /// The model's fraud probability.
    pub probability: f64,
    /// probability > threshold.
    pub is_fraud: bool,
    /// The model's threshold.
    pub threshold: f64,
    /// Top TreeSHAP reasons.
    pub reasons: Vec<AlertReason>,
    /// Rules that fired (e.g. `velocity_5_in_60s`).
    pub rule_hits: Vec<String>,
    /// The model's name.
    pub model: String,
    /// The version that scored.
    pub version: String,
    /// Stream or store features were missing (Redis or the feature store down): scored on
    /// defaults.
    pub features_degraded: bool,
    /// The transaction's time, RFC 3339.
    pub created_at: String,
    /// When the alert was made, Unix ms.
    pub alerted_at_ms: i64,
}

/// What flagged a transaction: `model`, `rules` or `both`.
pub fn source(is_fraud: bool, rule_hits: &[String]) -> Option<&'static str> {
    match (is_fraud, rule_hits.is_empty()) {
        (true, true) => Some("model"),
        (false, false) => Some("rules"),
        (true, false) => Some("both"),
        (false, true) => None,
    }
}

/// The alert id of `transaction_id` flagged by `model` (when it flagged) and `rule_hits`:
/// 32 hex digits of SHA-256 over them.
pub fn alert_id(transaction_id: &str, model: Option<&str>, rule_hits: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(transaction_id.as_bytes());
    h.update([0]);
    if let Some(m) = model {
        h.update(b"model:");
        h.update(m.as_bytes());
    }
    let mut rules: Vec<&str> = rule_hits.iter().map(String::as_str).collect();
    rules.sort_unstable();
    for r in rules {
        h.update([0]);
        h.update(b"rule:");
        h.update(r.as_bytes());
    }
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The reasons of a score.
pub fn reasons(r: &pb::ScoreResponse) -> Vec<AlertReason> {
    r.reasons
        .iter()
        .map(|x| AlertReason {
            feature: x.feature.clone(),
            contribution: x.contribution,
            value: x.value,
            missing: x.missing,
        })
        .collect()
}

/// Alert ids on `topic` from messages stamped within `lookback` of now, read up to the high
/// watermarks as they are when called; a partition the broker cannot look up by time is read
/// from at most `max_tail` messages before its end (see the module doc). Blocking (run it on a
/// blocking thread).
pub fn produced_ids(
    cfg: &infermesh_pipelines::kafka::KafkaConfig,
    topic: &str,
    lookback: Duration,
    max_tail: i64,
) -> Result<Vec<String>, String> {
    let mut c = rdkafka::config::ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", format!("{}-recover", cfg.client_id))
        .set("group.id", format!("{}-recover", cfg.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in &cfg.options {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let since = std::time::SystemTime::now()
        .checked_sub(lookback)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut ask = TopicPartitionList::new();
    let mut marks = std::collections::HashMap::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        if high > low {
            marks.insert(*p, (low, high));
            ask.add_partition_offset(topic, *p, Offset::Offset(since))
                .map_err(|e| e.to_string())?;
        }
    }
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    let by_time = consumer
        .offsets_for_times(ask, timeout)
        .map_err(|e| format!("offsets by time of {topic}: {e}"))?;
    let mut found = std::collections::HashMap::new();
    for e in by_time.elements() {
        if let Offset::Offset(o) = e.offset()
            && o >= 0
        {
            found.insert(e.partition(), o);
        }
    }
    let mut assign = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for (p, (low, high)) in marks {
        let start = tail_start(found.get(&p).copied(), low, high, max_tail);
        if start < high {
            assign
                .add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| e.to_string())?;
            ends.insert(p, high);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assign).map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(format!("reading the tail of {topic} took over 60 s"));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(|e| e.to_string())?;
        // A message without a timestamp counts: better marked than produced twice.
        let recent = m.timestamp().to_millis().is_none_or(|t| t >= since);
        if recent
            && let Some(id) = m
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|v| {
                    v.get("alert_id")
                        .and_then(|x| x.as_str())
                        .map(str::to_string)
                })
        {
            ids.push(id);
        }
        if ends
            .get(&m.partition())
            .is_some_and(|h| m.offset() + 1 >= *h)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(ids)
}

/// Where a partition's tail is read from: the broker's answer by time when it gave one, else
/// `max_tail` messages before the end (never before the log start).
fn tail_start(by_time: Option<i64>, low: i64, high: i64, max_tail: i64) -> i64 {
    match by_time {
        Some(o) => o.clamp(low, high),
        None => high.saturating_sub(max_tail.max(0)).max(low),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_depend_on_what_flagged() {
        let hits = vec!["velocity_5_in_60s".to_string()];
        let a = alert_id("t1", Some("fraud"), &hits);
        assert_eq!(a, alert_id("t1", Some("fraud"), &hits));
        assert_eq!(a.len(), 32);
        assert_ne!(a, alert_id("t1", None, &hits));
        assert_ne!(a, alert_id("t2", Some("fraud"), &hits));
        assert_ne!(alert_id("t1", Some("fraud"), &[]), a);
        // Rule order does not matter.
        let two = ["a".to_string(), "b".to_string()];
        let owt = ["b".to_string(), "a".to_string()];
        assert_eq!(alert_id("t", None, &two), alert_id("t", None, &owt));
    }

    #[test]
    fn the_tail_starts_where_the_broker_says_else_max_tail_before_the_end() {
        assert_eq!(tail_start(Some(40), 10, 100, 5), 40);
        // An answer out of the log is clamped into it.
        assert_eq!(tail_start(Some(3), 10, 100, 5), 10);
        assert_eq!(tail_start(None, 10, 100, 5), 95);
        assert_eq!(tail_start(None, 10, 100, 1_000), 10);
        assert_eq!(tail_start(None, 0, 0, 5), 0);
    }

    #[test]
    fn source_names_what_flagged() {
        assert_eq!(source(true, &[]), Some("model"));
        assert_eq!(source(false, &["r".into()]), Some("rules"));
        assert_eq!(source(true, &["r".into()]), Some("both"));
        assert_eq!(source(false, &[]), None);
    }
}
