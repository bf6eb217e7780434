//! `infermesh kafka init`: the platform's topics from a TOML file (the embedded
//! `pipelines/config/kafka-topics.toml` by default), created idempotently through Kafka's
//! CreateTopics API.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use super::KafkaConfig;
use crate::bus::BusError;

/// The embedded topic plan.
pub const DEFAULT_TOPICS: &str = include_str!("../../config/kafka-topics.toml");

/// Settings every topic starts from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic configs.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `retention.ms` of dead-letter topics.
    pub dlq_retention_ms: i64,
}

/// One topic of the plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Its name.
    pub name: String,
    /// Partitions (default: the defaults').
    pub partitions: Option<i32>,
    /// Replication factor (default: the defaults').
    pub replication_factor: Option<i32>,
    /// Topic configs, over the defaults'.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// A pipeline consumes it: create `<name>.dlq` too.
    #[serde(default)]
    pub dlq: bool,
    /// An append-only audit log: its cleanup policy must be `delete` (never `compact`).
    #[serde(default)]
    pub audit: bool,
}

/// A topic plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicPlan {
    /// Settings every topic starts from.
    pub defaults: Defaults,
    /// The topics.
    pub topics: Vec<TopicSpec>,
}

/// One topic to create, every setting resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTopic {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic configs.
    pub config: BTreeMap<String, String>,
}

/// What `kafka init` did with a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created now.
    Created,
    /// Was there already (left as it is).
    Exists,
}

impl TopicPlan {
    /// Parses and checks a plan.
    pub fn parse(text: &str) -> Result<Self, BusError> {
        let plan: TopicPlan =
            toml::from_str(text).map_err(|e| BusError::Backend(format!("topic plan: {e}")))?;
        plan.resolve()?;
        Ok(plan)
    }

    /// Every topic with its settings, dead-letter topics included, in plan order.
    pub fn resolve(&self) -> Result<Vec<ResolvedTopic>, BusError> {
        let bad = |m: String| Err(BusError::Backend(format!("topic plan: {m}")));
        let mut out: Vec<ResolvedTopic> = Vec::new();
        for t in &self.topics {
            if t.name.is_empty()
                || t.name.len() > 249
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return bad(format!("{:?} is not a valid Kafka topic name", t.name));
            }
            let partitions = t.partitions.unwrap_or(self.defaults.partitions);
            let replication_factor = t
                .replication_factor
                .unwrap_or(self.defaults.replication_factor);
            if partitions < 1 || replication_factor < 1 {
                return bad(format!(
                    "{}: partitions and replication_factor must be at least 1",
                    t.name
                ));
            }
            let mut config = self.defaults.config.clone();
            config.extend(t.config.clone());
            if t.audit {
                let policy = config
                    .get("cleanup.policy")
                    .map_or("delete", String::as_str);
                if policy != "delete" {
                    return bad(format!(
                        "{} is an append-only audit log: cleanup.policy must be \"delete\", not {policy:?}",
                        t.name
                    ));
                }
            }
            if out.iter().any(|o| o.name == t.name) {
                return bad(format!("{} is listed twice", t.name));
            }
            let topic = ResolvedTopic {
                name: t.name.clone(),
                partitions,
                replication_factor,
                config,
            };
            if t.dlq {
                let mut dlq = topic.clone();
                dlq.name = format!("{}.dlq", t.name);
                dlq.config.insert(
                    "retention.ms".into(),
                    self.defaults.dlq_retention_ms.to_string(),
                );
                dlq.config.insert("cleanup.policy".into(), "delete".into());
                out.push(topic);
                out.push(dlq);
            } else {
                out.push(topic);
            }
        }
        Ok(out)
    }
}

/// Creates every topic of `plan` that does not exist yet; returns each topic's outcome.
pub async fn init_topics(
    cfg: &KafkaConfig,
    plan: &TopicPlan,
) -> Result<Vec<(ResolvedTopic, TopicOutcome)>, BusError> {
    let topics = plan.resolve()?;
    let mut client_cfg = rdkafka::config::ClientConfig::new();
    client_cfg
        .set("bootstrap.servers", &cfg.brokers)
        .set("client.id", &cfg.client_id);
    for (k, v) in &cfg.options {
        client_cfg.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = client_cfg
        .create()
        .map_err(|e| BusError::Backend(e.to_string()))?;
    let configs: Vec<Vec<(String, String)>> = topics
        .iter()
        .map(|t| {
            t.config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&configs)
        .map(|(t, cfgs)| {
            cfgs.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication_factor),
                ),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| BusError::Backend(format!("CreateTopics: {e}")))?;
    let mut out = Vec::with_capacity(topics.len());
    for (t, r) in topics.into_iter().zip(results) {
        match r {
            Ok(_) => out.push((t, TopicOutcome::Created)),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((t, TopicOutcome::Exists)),
            Err((name, code)) => {
                return Err(BusError::Backend(format!("creating {name}: {code}")));
            }
        }
    }
    Ok(out)
}

/// `infermesh kafka init` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Kafka.
    #[command(flatten)]
    pub kafka: super::KafkaArgs,
    /// The topic plan (TOML); default: the embedded plan (pipelines/config/kafka-topics.toml).
    #[arg(long, env = "INFERMESH_KAFKA_TOPICS")]
    pub topics: Option<std::path::PathBuf>,
    /// Print the plan without connecting.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `kafka init`: one line per topic (`created` or `exists`, partitions, replication and
/// configs).
pub async fn run_init(args: &InitArgs) -> Result<String, BusError> {
    let text = match &args.topics {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| BusError::Backend(format!("{}: {e}", p.display())))?,
        None => DEFAULT_TOPICS.to_string(),
    };
    let plan = TopicPlan::parse(&text)?;
    let line = |t: &ResolvedTopic, what: &str| {
        let cfg: Vec<String> = t.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{what:8} {} partitions={} replication={} {}\n",
            t.name,
            t.partitions,
            t.replication_factor,
            cfg.join(" ")
        )
    };
    if args.dry_run {
        return Ok(plan.resolve()?.iter().map(|t| line(t, "plan")).collect());
    }
    let cfg = args.kafka.config("infermesh-kafka-init")?;
    let done = init_topics(&cfg, &plan).await?;
    Ok(done
        .iter()
        .map(|(t, o)| {
            line(
                t,
                match o {
                    TopicOutcome::Created => "created",
                    TopicOutcome::Exists => "exists",
                },
            )
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_plan_makes_the_platform_topics_and_their_dead_letters() {
        let plan = TopicPlan::parse(DEFAULT_TOPICS).unwrap();
        let topics = plan.resolve().unwrap();
        let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        for t in [
            "finance.transactions",
            "finance.transactions.dlq",
            "fraud.alerts",
            "user.behavior",
            "user.behavior.dlq",
            "reviews.submitted",
            "reviews.submitted.dlq",
            "resume.uploaded",
            "resume.uploaded.dlq",
            "resume.scored",
            "marketplace.orders",
            "marketplace.orders.dlq",
        ] {
            assert!(names.contains(&t), "{t} missing from {names:?}");
        }
        let alerts = topics.iter().find(|t| t.name == "fraud.alerts").unwrap();
        assert_eq!(alerts.config["cleanup.policy"], "delete");
        assert_eq!(alerts.config["retention.ms"], "31536000000");
        assert!(!names.contains(&"fraud.alerts.dlq"));
        let dlq = topics
            .iter()
            .find(|t| t.name == "finance.transactions.dlq")
            .unwrap();
        assert_eq!(dlq.partitions, 12);
        assert_eq!(dlq.config["retention.ms"], "2592000000");
    }

    #[test]
    fn an_audit_log_may_not_be_compacted_and_names_are_checked() {
        let base = "[defaults]\npartitions = 1\nreplication_factor = 1\ndlq_retention_ms = 1\n";
        let compacted = format!(
            "{base}[[topics]]\nname = \"fraud.alerts\"\naudit = true\nconfig = {{ \"cleanup.policy\" = \"compact,delete\" }}\n"
        );
        let err = TopicPlan::parse(&compacted).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{err}");
        let bad_name = format!("{base}[[topics]]\nname = \"a/b\"\n");
        assert!(TopicPlan::parse(&bad_name).is_err());
        let twice = format!("{base}[[topics]]\nname = \"a\"\n[[topics]]\nname = \"a\"\n");
        assert!(TopicPlan::parse(&twice).is_err());
        let zero = format!("{base}[[topics]]\nname = \"a\"\npartitions = 0\n");
        assert!(TopicPlan::parse(&zero).is_err());
        let unknown = format!("{base}[[topics]]\nname = \"a\"\nretention = 1\n");
        assert!(TopicPlan::parse(&unknown).is_err());
    }
}
