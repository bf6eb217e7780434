//! `infermesh cdc postgres`: a table's inserts, updates and deletes streamed out of PostgreSQL's
//! logical replication (the streaming replication protocol, `pgoutput`; no polling) into a
//! topic as Debezium change events: `transactions` into `finance.transactions` for
//! `infermesh pipeline fraud`.
//!
//! At start-up it migrates the database (the pipelines' migrations: the partitioned
//! `transactions` table among them), creates the month partitions ahead, then the publication
//! (`publish_via_partition_root`, so a partition's rows come as the table's) and the
//! replication slot (`pgoutput`), each only if missing. The slot is where it resumes: a
//! transaction's changes are produced, their deliveries acknowledged by the broker, and only
//! then is the transaction's end LSN confirmed to PostgreSQL. A crash replays from the last
//! confirmed transaction; every replayed change carries the `message-id` it had the first time
//! (`<server>:<slot>:<commit LSN>:<ordinal>`), which the pipelines' dedupe window recognises.
//!
//! As Debezium's connector with `snapshot.mode=no_data` and `tombstones.on.delete=false`: rows
//! that existed before the slot are not replayed, and a delete is one `d` event with no
//! tombstone after it. Truncates are skipped (the connector's default).

pub mod debezium;
pub mod pgoutput;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::join_all;
use infermesh_common::metrics_names as m;
use infermesh_pipelines::bus::{BoxFuture, BusError, EventBus, Message};
use infermesh_pipelines::kafka::{KafkaArgs, KafkaBus};
use infermesh_pipelines::runtime::{Running, TaskError};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::debezium::{EnvelopeSchema, Op, Source, text_of};
use crate::pgoutput::{Change, Datum, Decoder, Relation};

/// Why CDC could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// A flag is wrong, or the database is not set up for logical replication.
    #[error("{0}")]
    Config(String),
    /// The database refused a set-up statement.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The replication stream failed.
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    /// The stream carried a message that cannot be decoded (nothing after it is produced).
    #[error(transparent)]
    Decode(#[from] pgoutput::DecodeError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Metrics or I/O set-up failed.
    #[error("{0}")]
    Io(String),
}

/// `infermesh cdc postgres` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CdcArgs {
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The database (postgres://user[:password]@host:port/db); the user needs the REPLICATION
    /// attribute (or superuser), the server `wal_level=logical`.
    #[arg(long, env = "INFERMESH_DATABASE_URL")]
    pub database_url: String,
    /// The table streamed, `name` or `schema.name`.
    #[arg(long, default_value = "transactions")]
    pub table: String,
    /// Topic the change events go to.
    #[arg(long, default_value = "finance.transactions")]
    pub topic: String,
    /// Replication slot (created if missing); default `infermesh_cdc_<table>`.
    #[arg(long)]
    pub slot: Option<String>,
    /// Publication (created if missing); default `infermesh_cdc_<table>`.
    #[arg(long)]
    pub publication: Option<String>,
    /// Column whose value keys each message (Debezium's `message.key.columns`): one user's
    /// transactions stay in one partition. Rows where it is null are keyed by primary key.
    #[arg(long, default_value = "user_id")]
    pub key_column: String,
    /// Logical server name, in every event's `source.name` and schema names (Debezium's
    /// `topic.prefix`).
    #[arg(long, default_value = "infermesh")]
    pub server_name: String,
    /// Do not run the pipelines' migrations at start-up.
    #[arg(long)]
    pub no_migrate: bool,
    /// Monthly partitions of `transactions` created ahead at start-up, the current month
    /// included.
    #[arg(long, default_value_t = 3)]
    pub partitions_ahead: u32,
    /// Most changes of one open transaction held before they are produced (its LSN is still
    /// confirmed only at commit).
    #[arg(long, default_value_t = 1024)]
    pub max_buffered_changes: usize,
    /// Address the metrics port listens on.
    #[arg(long, env = "INFERMESH_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Prometheus /metrics port (0 picks a free port, printed at start).
    #[arg(long, env = "INFERMESH_METRICS_PORT", default_value_t = 8088)]
    pub metrics_port: u16,
}

/// What the stream does, once the arguments are checked.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    /// The database.
    pub database_url: String,
    /// Schema of the table.
    pub schema: String,
    /// The table.
    pub table: String,
    /// Topic produced to.
    pub topic: String,
    /// Replication slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// Key column.
    pub key_column: String,
    /// Logical server name.
    pub server_name: String,
    /// Run the migrations.
    pub migrate: bool,
    /// Partitions ahead.
    pub partitions_ahead: u32,
    /// Changes of an open transaction held at most.
    pub max_buffered_changes: usize,
}

fn plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl CdcArgs {
    /// Checks the flags.
    pub fn config(&self) -> Result<CdcConfig, CdcError> {
        let (schema, table) = match self.table.split_once('.') {
            Some((s, t)) => (s.to_string(), t.to_string()),
            None => ("public".to_string(), self.table.clone()),
        };
        let default_name = format!("infermesh_cdc_{table}");
        let slot = self.slot.clone().unwrap_or_else(|| default_name.clone());
        let publication = self.publication.clone().unwrap_or(default_name);
        for (what, v) in [
            ("--table schema", &schema),
            ("--table", &table),
            ("--slot", &slot),
            ("--publication", &publication),
            ("--key-column", &self.key_column),
        ] {
            if !plain_identifier(v) {
                return Err(CdcError::Config(format!(
                    "{what} '{v}' must be letters, digits and _ (at most 63, not starting with a digit)"
                )));
            }
        }
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(CdcError::Config(
                "--database-url: not a PostgreSQL URL (postgres://user@host:port/db)".into(),
            ));
        }
        if self.max_buffered_changes == 0 {
            return Err(CdcError::Config(
                "--max-buffered-changes must be at least 1".into(),
            ));
        }
        Ok(CdcConfig {
            database_url: self.database_url.clone(),
            schema,
            table,
            topic: self.topic.clone(),
            slot: slot.to_ascii_lowercase(),
            publication,
            key_column: self.key_column.clone(),
            server_name: self.server_name.clone(),
            migrate: !self.no_migrate,
            partitions_ahead: self.partitions_ahead,
            max_buffered_changes: self.max_buffered_changes,
        })
    }
}

/// What set-up found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The publication was created now.
    pub publication_created: bool,
    /// The slot was created now.
    pub slot_created: bool,
    /// Month partitions created now.
    pub partitions_created: i32,
}

/// Migrates, creates partitions ahead, the publication and the slot, each only if missing.
pub async fn prepare(cfg: &CdcConfig) -> Result<Prepared, CdcError> {
    let mut db = PgConnection::connect(&cfg.database_url).await?;
    let wal_level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&mut db)
        .await?;
    if wal_level != "logical" {
        return Err(CdcError::Config(format!(
            "the database runs wal_level={wal_level}; logical replication needs wal_level=logical \
             (postgresql.conf, then a restart)"
        )));
    }
    if cfg.migrate {
        infermesh_pipelines::db::MIGRATOR.run(&mut db).await?;
    }
    let mut partitions_created = 0;
    if cfg.table == "transactions" {
        let has_fn: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'infermesh_transactions_partitions')",
        )
        .fetch_one(&mut db)
        .await?;
        if has_fn {
            partitions_created = sqlx::query_scalar(
                "SELECT infermesh_transactions_partitions(date_trunc('month', now())::date, $1)",
            )
            .bind(i32::try_from(cfg.partitions_ahead).unwrap_or(i32::MAX))
            .fetch_one(&mut db)
            .await?;
        }
    }
    let qualified = format!("\"{}\".\"{}\"", cfg.schema, cfg.table);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&qualified)
        .fetch_one(&mut db)
        .await?;
    if !exists {
        return Err(CdcError::Config(format!(
            "table {}.{} does not exist",
            cfg.schema, cfg.table
        )));
    }
    // The publication before the slot: the slot decodes with the catalog as of each change,
    // and a publication created after a change cannot publish it.
    let publication_created = {
        let found: Option<bool> =
            sqlx::query_scalar("SELECT pubviaroot FROM pg_publication WHERE pubname = $1")
                .bind(&cfg.publication)
                .fetch_optional(&mut db)
                .await?;
        match found {
            None => {
                sqlx::query(&format!(
                    "CREATE PUBLICATION \"{}\" FOR TABLE {qualified} \
                     WITH (publish = 'insert, update, delete', publish_via_partition_root = true)",
                    cfg.publication
                ))
                .execute(&mut db)
                .await?;
                true
            }
            Some(_) => {
                let has_table: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_publication_tables \
                     WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
                )
                .bind(&cfg.publication)
                .bind(&cfg.schema)
                .bind(&cfg.table)
                .fetch_one(&mut db)
                .await?;
                if !has_table {
                    return Err(CdcError::Config(format!(
                        "publication {} exists without table {}.{}",
                        cfg.publication, cfg.schema, cfg.table
                    )));
                }
                false
            }
        }
    };
    let slot_created = {
        let plugin: Option<Option<String>> = sqlx::query_scalar(
            "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&cfg.slot)
        .fetch_optional(&mut db)
        .await?;
        match plugin {
            None => {
                sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
                    .bind(&cfg.slot)
                    .execute(&mut db)
                    .await?;
                true
            }
            Some(Some(p)) if p == "pgoutput" => false,
            Some(p) => {
                return Err(CdcError::Config(format!(
                    "replication slot {} exists with plugin {p:?}, not pgoutput",
                    cfg.slot
                )));
            }
        }
    };
    let _ = db.close().await;
    Ok(Prepared {
        publication_created,
        slot_created,
        partitions_created,
    })
}

fn replication_config(cfg: &CdcConfig) -> Result<ReplicationConfig, CdcError> {
    let url = url::Url::parse(&cfg.database_url)
        .map_err(|e| CdcError::Config(format!("--database-url: {e}")))?;
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| CdcError::Config("--database-url: bad escape".into()))
    };
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let user = decode(url.username())?;
    let user = if user.is_empty() {
        "postgres".to_string()
    } else {
        user
    };
    let password = decode(url.password().unwrap_or(""))?;
    let database = decode(url.path().trim_start_matches('/'))?;
    let database = if database.is_empty() {
        user.clone()
    } else {
        database
    };
    // Plain TCP, as every PostgreSQL connection of infermesh (sqlx is built without TLS).
    let tls = match url
        .query_pairs()
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.into_owned())
        .as_deref()
    {
        None | Some("disable") | Some("prefer") | Some("allow") => TlsConfig::disabled(),
        Some(other) => {
            return Err(CdcError::Config(format!(
                "--database-url: sslmode={other} needs TLS, which infermesh's PostgreSQL \
                 connections do not do (disable, allow or prefer)"
            )));
        }
    };
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        cfg.slot.clone(),
        cfg.publication.clone(),
    )
    .with_port(url.port().unwrap_or(5432))
    .with_tls(tls)
    // Text output the envelope writer parses: ISO dates, UTC, floats round-tripping.
    .with_options("-c datestyle=ISO -c timezone=UTC -c extra_float_digits=3")
    .with_status_interval(Duration::from_secs(1))
    .with_wakeup_interval(Duration::from_secs(10))
    .with_buffer_size(4096)
    // A row of `transactions` is a few hundred bytes; 64 MiB bounds one message.
    .with_max_message_size(64 << 20)
    .with_application_name(format!("infermesh-cdc-{}", cfg.slot))
    // An observer makes the client track whether a confirmed LSN is still unsent, which a
    // graceful stop waits for (`feedback_pending_since`).
    .with_feedback_observer(pgwire_replication::FeedbackObserver::new(|_| {})))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a stream did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdcStats {
    /// Change events produced.
    pub produced: u64,
    /// Transactions whose end LSN was confirmed.
    pub transactions: u64,
    /// The last confirmed LSN.
    pub confirmed_lsn: u64,
}

/// A running stream.
#[derive(Debug)]
pub struct RunningCdc {
    /// Where /metrics listens (none when the caller serves the process's metrics).
    pub metrics_addr: Option<SocketAddr>,
    /// What set-up did.
    pub prepared: Prepared,
    running: Running<CdcStats, CdcError>,
}

impl From<TaskError> for CdcError {
    fn from(e: TaskError) -> Self {
        CdcError::Io(e.0)
    }
}

impl RunningCdc {
    /// Stops (an open transaction is dropped unconfirmed: it is replayed at the next start).
    pub async fn shutdown(self) -> Result<CdcStats, CdcError> {
        self.running.shutdown().await
    }

    /// Runs until `signal` resolves or the stream fails.
    pub async fn wait(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<CdcStats, CdcError> {
        self.running.wait(signal).await
    }
}

/// Prepares the database and starts streaming into `bus`; metrics on `metrics_addr` when
/// given.
pub async fn start_with(
    cfg: CdcConfig,
    bus: Arc<dyn EventBus>,
    metrics_addr: Option<SocketAddr>,
) -> Result<RunningCdc, CdcError> {
    let prepared = prepare(&cfg).await?;
    let repl = replication_config(&cfg)?;
    let client = ReplicationClient::connect(repl).await?;
    tracing::info!(
        table = %format!("{}.{}", cfg.schema, cfg.table),
        slot = %cfg.slot,
        topic = %cfg.topic,
        ?prepared,
        "cdc streaming"
    );
    let running = Running::start(metrics_addr, move |stopped| {
        stream(cfg, client, bus, stopped)
    })
    .await?;
    Ok(RunningCdc {
        metrics_addr: running.metrics_addr,
        prepared,
        running,
    })
}

/// Prepares and streams into Kafka.
pub async fn start(args: CdcArgs) -> Result<RunningCdc, CdcError> {
    let cfg = args.config()?;
    let kafka = args.kafka.config("infermesh-cdc")?;
    let bus: Arc<dyn EventBus> = Arc::new(KafkaBus::new(kafka)?);
    start_with(
        cfg,
        bus,
        Some(SocketAddr::new(args.host, args.metrics_port)),
    )
    .await
}

/// Runs until Ctrl-C or SIGTERM, printing the metrics address first.
pub async fn run(args: CdcArgs) -> Result<(), CdcError> {
    start(args)
        .await?
        .running
        .run_until_signalled("infermesh cdc postgres")
        .await?;
    Ok(())
}

/// The open transaction.
#[derive(Debug)]
struct Txn {
    final_lsn: u64,
    xid: u32,
    commit_ms: i64,
    ordinal: u64,
    pending: Vec<Message>,
}

/// Microseconds from 2000-01-01 (PostgreSQL's epoch) to Unix milliseconds.
fn pg_micros_to_unix_ms(us: i64) -> i64 {
    us / 1000 + 946_684_800_000
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Emitter {
    cfg: CdcConfig,
    db: String,
    target: HashMap<u32, EnvelopeSchema>,
}

impl Emitter {
    fn message(
        &self,
        rel: &Relation,
        op: Op,
        before: Option<&[Datum]>,
        after: Option<&[Datum]>,
        txn: &mut Txn,
    ) -> Option<Message> {
        let schema = self.target.get(&rel.oid)?;
        let row = after.or(before)?;
        let payload = schema.envelope(
            rel,
            op,
            before,
            after,
            &Source {
                server: &self.cfg.server_name,
                db: &self.db,
                commit_ms: txn.commit_ms,
                xid: txn.xid,
                lsn: txn.final_lsn,
            },
            unix_ms(),
        );
        let key = text_of(rel, row, &self.cfg.key_column)
            .map(str::to_string)
            .unwrap_or_else(|| {
                rel.columns
                    .iter()
                    .zip(row)
                    .filter(|(c, _)| c.key)
                    .map(|(_, d)| match d {
                        Datum::Text(s) => s.as_str(),
                        _ => "",
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            });
        let id = format!(
            "{}:{}:{}:{}",
            self.cfg.server_name,
            self.cfg.slot,
            Lsn::from_u64(txn.final_lsn),
            txn.ordinal
        );
        txn.ordinal += 1;
        let mut msg = Message::new(key, payload);
        msg.headers.push(("message-id".into(), id));
        msg.headers
            .push(("content-type".into(), "application/json".into()));
        metrics::counter!(m::CDC_CHANGES_TOTAL, "table" => self.cfg.table.clone(), "op" => op.letter())
            .increment(1);
        Some(msg)
    }
}

/// Produces `msgs`, retrying what fails (a broker away, a full queue) until every one is
/// acknowledged or `stop` is raised; returns false when stopped first.
async fn produce(
    bus: Arc<dyn EventBus>,
    topic: Arc<str>,
    msgs: Vec<Message>,
    stopped: futures::future::Shared<BoxFuture<'static, ()>>,
) -> bool {
    let (bus, topic) = (bus.as_ref(), topic.as_ref());
    let mut todo = msgs;
    let mut backoff = Duration::from_millis(50);
    loop {
        let results = join_all(todo.iter().map(|m| bus.publish(topic, m.clone()))).await;
        let mut failed = Vec::new();
        for (msg, r) in todo.into_iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cdc produce failed; retrying");
                failed.push(msg);
            }
        }
        if failed.is_empty() {
            return true;
        }
        tokio::select! {
            () = stopped.clone() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        todo = failed;
    }
}

/// Produces in flight, in commit order: each resolves to whether it was delivered (false: a
/// stop came first), the transaction's end LSN when it completes one (none for the first parts
/// of a large transaction), its change count, commit time and when its commit arrived.
type InFlight = futures::stream::FuturesOrdered<BoxFuture<'static, Produced>>;

struct Produced {
    delivered: bool,
    end_lsn: Option<Lsn>,
    changes: u64,
    commit_ms: i64,
    arrived: Instant,
}

/// Changes produced and not yet acknowledged, at most; past it the stream is not read until
/// acknowledgements come back (backpressure onto PostgreSQL, which keeps the WAL).
const MAX_IN_FLIGHT_CHANGES: usize = 8192;

async fn stream(
    cfg: CdcConfig,
    mut client: ReplicationClient,
    bus: Arc<dyn EventBus>,
    stopped: BoxFuture<'static, ()>,
) -> Result<CdcStats, CdcError> {
    use futures::StreamExt as _;
    let stopped = stopped.shared();
    let db = replication_config(&cfg)?.database;
    let mut em = Emitter {
        cfg,
        db,
        target: HashMap::new(),
    };
    let mut decoder = Decoder::new();
    let mut txn: Option<Txn> = None;
    let mut stats = CdcStats::default();
    let topic: Arc<str> = Arc::from(em.cfg.topic.as_str());
    // Transactions are produced without waiting for the previous one's acknowledgement; their
    // LSNs are confirmed in commit order as the acknowledgements come back.
    let mut in_flight: InFlight = futures::stream::FuturesOrdered::new();
    let mut in_flight_changes = 0usize;
    let send = |msgs: Vec<Message>, end_lsn: Option<Lsn>, commit_ms: i64| {
        let (bus, topic, stopped) = (bus.clone(), topic.clone(), stopped.clone());
        let changes = msgs.len() as u64;
        let arrived = Instant::now();
        let fut: BoxFuture<'static, Produced> = Box::pin(async move {
            let delivered = msgs.is_empty() || produce(bus, topic, msgs, stopped).await;
            Produced {
                delivered,
                end_lsn,
                changes,
                commit_ms,
                arrived,
            }
        });
        fut
    };
    let result = loop {
        let ev = tokio::select! {
            biased;
            () = stopped.clone() => break Ok(()),
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_changes = in_flight_changes.saturating_sub(done.changes as usize);
                if !done.delivered {
                    break Ok(());
                }
                stats.produced += done.changes;
                if let Some(end_lsn) = done.end_lsn {
                    if done.changes > 0 {
                        metrics::histogram!(m::CDC_PRODUCE_SECONDS)
                            .record(done.arrived.elapsed().as_secs_f64());
                        let lag = (unix_ms() - done.commit_ms).max(0) as f64 / 1000.0;
                        metrics::gauge!(m::CDC_REPLICATION_LAG_SECONDS).set(lag);
                    }
                    client.update_applied_lsn(end_lsn);
                    stats.transactions += 1;
                    stats.confirmed_lsn = end_lsn.as_u64();
                    metrics::gauge!(m::CDC_CONFIRMED_LSN).set(end_lsn.as_u64() as f64);
                }
                continue;
            }
            ev = client.recv(), if in_flight_changes < MAX_IN_FLIGHT_CHANGES => ev,
        };
        let ev = match ev {
            Ok(Some(ev)) => ev,
            Ok(None) => break Ok(()),
            Err(e) => break Err(CdcError::from(e)),
        };
        match ev {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                txn = Some(Txn {
                    final_lsn: final_lsn.as_u64(),
                    xid,
                    commit_ms: pg_micros_to_unix_ms(commit_time_micros),
                    ordinal: 0,
                    pending: Vec::new(),
                });
            }
            ReplicationEvent::XLogData { data, .. } => {
                let change = match decoder.decode(&data) {
                    Ok(c) => c,
                    Err(e) => break Err(e.into()),
                };
                let Some(t) = txn.as_mut() else {
                    continue;
                };
                let msg = match &change {
                    Change::Relation(oid) => {
                        if let Some(rel) = decoder.relation(*oid)
                            && rel.name == em.cfg.table
                            && rel.namespace == em.cfg.schema
                        {
                            em.target
                                .insert(*oid, EnvelopeSchema::new(&em.cfg.server_name, rel));
                        }
                        None
                    }
                    Change::Insert { relation, new } => decoder
                        .relation(*relation)
                        .and_then(|rel| em.message(rel, Op::Create, None, Some(new), t)),
                    Change::Update { relation, old, new } => decoder
                        .relation(*relation)
                        .and_then(|rel| em.message(rel, Op::Update, old.as_deref(), Some(new), t)),
                    Change::Delete { relation, old } => decoder
                        .relation(*relation)
                        .and_then(|rel| em.message(rel, Op::Delete, Some(old), None, t)),
                    Change::Truncate { .. } | Change::Other => None,
                };
                if let Some(msg) = msg {
                    t.pending.push(msg);
                    if t.pending.len() >= em.cfg.max_buffered_changes {
                        let batch = std::mem::take(&mut t.pending);
                        in_flight_changes += batch.len();
                        in_flight.push_back(send(batch, None, t.commit_ms));
                    }
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                let Some(t) = txn.take() else {
                    continue;
                };
                // Even a transaction with nothing to produce is confirmed in its turn.
                in_flight_changes += t.pending.len();
                in_flight.push_back(send(t.pending, Some(end_lsn), t.commit_ms));
            }
            ReplicationEvent::KeepAlive { .. }
            | ReplicationEvent::Message { .. }
            | ReplicationEvent::StoppedAt { .. } => {}
        }
    };
    // The last confirmed LSN goes out with the next status update (within a second): wait for
    // it, so a graceful stop replays nothing at the next start.
    let deadline = Instant::now() + Duration::from_secs(3);
    while client.feedback_pending_since().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.stop();
    let _ = client.shutdown().await;
    result.map(|()| stats)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: CdcArgs,
    }

    fn parse(extra: &[&str]) -> Result<CdcConfig, CdcError> {
        let mut argv = vec![
            "cdc",
            "--kafka-brokers",
            "127.0.0.1:9092",
            "--database-url",
            "postgres://u:p%40ss@db:5433/shop",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args.config()
    }

    #[test]
    fn defaults_and_names() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            (c.schema.as_str(), c.table.as_str(), c.slot.as_str()),
            ("public", "transactions", "infermesh_cdc_transactions")
        );
        assert_eq!(c.topic, "finance.transactions");
        let r = replication_config(&c).unwrap();
        assert_eq!(
            (
                r.host.as_str(),
                r.port,
                r.user.as_str(),
                r.password.as_str()
            ),
            ("db", 5433, "u", "p@ss")
        );
        assert_eq!(r.database, "shop");
        let c = parse(&["--table", "sales.orders", "--slot", "s1"]).unwrap();
        assert_eq!((c.schema.as_str(), c.table.as_str()), ("sales", "orders"));
        assert_eq!(c.publication, "infermesh_cdc_orders");
    }

    #[test]
    fn hostile_names_are_refused_before_any_sql() {
        for bad in [
            &["--table", "t; DROP TABLE x"][..],
            &["--slot", "a\"b"],
            &["--publication", ""],
            &["--key-column", "1x"],
            &["--max-buffered-changes", "0"],
        ] {
            assert!(matches!(parse(bad), Err(CdcError::Config(_))), "{bad:?}");
        }
        let mut c = parse(&[]).unwrap();
        c.database_url = "postgres://h/db?sslmode=bogus".into();
        assert!(replication_config(&c).is_err());
    }

    #[test]
    fn commit_times_are_unix_ms() {
        assert_eq!(pg_micros_to_unix_ms(0), 946_684_800_000);
        assert_eq!(pg_micros_to_unix_ms(1_000_000), 946_684_801_000);
    }
}
