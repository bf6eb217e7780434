//! `mockbroker`: librdkafka's mock cluster (`rdkafka::mocking::MockCluster`, the in-memory
//! Kafka-protocol cluster librdkafka ships for its own tests) as a process of its own, with the
//! topics of a `kafka init` plan created (the mock has no CreateTopics). Prints
//! `brokers HOST:PORT[,...]` on stdout once it listens, then serves until killed.
//!
//! `bench/stream.sh` runs the fraud pipeline on it (`STREAM_BROKER=mock`) beside the real
//! brokers, to tell the pipeline's own latency from the broker's: its log is an in-memory
//! array per partition, so a fetch costs the same on an empty topic and a long one, where the
//! Kafka-protocol brokers that build here list every stored batch of a partition on each fetch.
//! It is a test broker: no persistence, no replication, an empty fetch always waits its whole
//! `fetch.wait.max.ms`.

use anyhow::Context;
use clap::Parser;
use infermesh_pipelines::kafka::topics::TopicPlan;
use rdkafka::mocking::MockCluster;
use std::io::Write;

#[derive(Debug, Parser)]
struct Args {
    /// The topic plan whose topics (dead-letter topics included) are created.
    #[arg(long, default_value = "pipelines/config/kafka-topics.toml")]
    topics: std::path::PathBuf,
    /// Brokers in the mock cluster.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.topics)
        .with_context(|| format!("reading {}", args.topics.display()))?;
    let plan = TopicPlan::parse(&text)?;
    let mock = MockCluster::new(args.brokers).context("starting the mock cluster")?;
    for t in plan.resolve()? {
        mock.create_topic(&t.name, t.partitions, 1)
            .with_context(|| format!("creating {}", t.name))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "brokers {}", mock.bootstrap_servers())?;
    out.flush()?;
    drop(out);
    loop {
        std::thread::park();
    }
}
