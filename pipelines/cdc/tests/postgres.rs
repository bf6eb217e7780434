//! `infermesh cdc postgres` against a real PostgreSQL with `wal_level=logical` (the machine's
//! when it runs it, else a throw-away cluster the test starts): the migration's partitioned
//! table, inserts/updates/deletes as Debezium envelopes in commit order, keys and message ids,
//! the slot confirmed only after delivery so a restart loses nothing, and a clear refusal of a
//! server without logical WAL.
#![allow(clippy::unwrap_used)]

mod pg;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use infermesh_cdc::{CdcConfig, CdcError, start_with};
use infermesh_pipelines::bus::{Delivery, EventBus, InProcessBus, Subscription};
use serde_json::Value;

use pg::LogicalPg;

fn config(pg: &LogicalPg) -> CdcConfig {
    config_for(&pg.url, &pg.tag)
}

fn config_for(url: &str, tag: &str) -> CdcConfig {
    CdcConfig {
        database_url: url.to_string(),
        schema: "public".into(),
        table: "transactions".into(),
        topic: "finance.transactions".into(),
        slot: format!("cdc_{tag}"),
        publication: format!("cdc_{tag}"),
        key_column: "user_id".into(),
        server_name: "shop".into(),
        migrate: true,
        partitions_ahead: 3,
        max_buffered_changes: 16,
    }
}

async fn read(sub: &mut dyn Subscription, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} change events arrived", out.len()))
            .unwrap();
        sub.ack(&d).await.unwrap();
        out.push(d);
    }
    out
}

fn header<'a>(d: &'a Delivery, k: &str) -> &'a str {
    d.message
        .headers
        .iter()
        .find(|(h, _)| h == k)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

fn payload(d: &Delivery) -> Value {
    serde_json::from_slice(&d.message.payload).unwrap()
}

async fn exec(c: &mut sqlx::PgConnection, sql: &str) {
    sqlx::raw_sql(sql).execute(c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_stream_as_debezium_envelopes_in_commit_order() {
    let pg = LogicalPg::start().await;
    let bus = Arc::new(InProcessBus::new(10_000, Duration::from_secs(30)));
    let mut sub = bus.subscribe("finance.transactions", "t").await.unwrap();
    let cfg = config(&pg);
    let cdc = start_with(cfg.clone(), bus.clone(), None).await.unwrap();
    assert!(cdc.prepared.slot_created && cdc.prepared.publication_created);

    let mut c = pg.connect().await;
    // Monthly partitions: the current month is its own partition; the index is on the parent.
    let parts: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'transactions'::regclass ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let month: String =
        sqlx::query_scalar("SELECT to_char(now(), '\"transactions_y\"YYYY\"m\"MM')")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(parts.contains(&month), "{parts:?} lacks {month}");
    assert!(parts.contains(&"transactions_default".to_string()));
    let indexed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = 'transactions' \
         AND indexdef LIKE '%(user_id, created_at)%')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert!(indexed);

    // One transaction of two rows (one in a month far from now: the default partition), then
    // an update and a delete.
    exec(
        &mut c,
        "BEGIN; \
         INSERT INTO transactions (transaction_id, user_id, device_id, amount, currency, merchant, category, created_at) \
           VALUES ('tx1', 'u1', 'd1', 1234.56, 'EUR', 'shop', 'grocery', '2026-12-07 09:00:00.123+00'); \
         INSERT INTO transactions (transaction_id, user_id, amount, created_at) \
           VALUES ('tx2', 'u2', -0.5, '1999-01-02 03:04:05+00'); \
         COMMIT;",
    )
    .await;
    exec(
        &mut c,
        "UPDATE transactions SET amount = 10 WHERE transaction_id = 'tx1'",
    )
    .await;
    exec(
        &mut c,
        "DELETE FROM transactions WHERE transaction_id = 'tx2'",
    )
    .await;

    let got = read(sub.as_mut(), 4).await;
    let ops: Vec<String> = got
        .iter()
        .map(|d| payload(d)["payload"]["op"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, ["c", "c", "u", "d"]);
    let keys: Vec<&str> = got
        .iter()
        .map(|d| d.message.key.as_deref().unwrap())
        .collect();
    // A delete carries the replica identity only (the primary key): no user_id to key by.
    assert_eq!(keys, ["u1", "u2", "u1", "tx2/1999-01-02 03:04:05+00"]);

    let first = payload(&got[0]);
    let after = &first["payload"]["after"];
    assert_eq!(after["transaction_id"], "tx1");
    assert_eq!(after["device_id"], "d1");
    // numeric(14,2) 1234.56: unscaled 123456 as big-endian two's complement, base64.
    assert_eq!(after["amount"], "AeJA");
    assert_eq!(after["currency"], "EUR");
    assert_eq!(after["created_at"], "2026-12-07T09:00:00.123Z");
    assert_eq!(first["payload"]["before"], Value::Null);
    let source = &first["payload"]["source"];
    assert_eq!(source["connector"], "postgresql");
    assert_eq!(source["name"], "shop");
    assert_eq!(
        source["table"], "transactions",
        "partitions publish as their root"
    );
    assert_eq!(source["schema"], "public");
    // The schema names the decimal's scale, as Debezium's does.
    let fields = first["schema"]["fields"].as_array().unwrap();
    let after_schema = fields.iter().find(|f| f["field"] == "after").unwrap();
    let amount = after_schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "amount")
        .unwrap();
    assert_eq!(amount["name"], "org.apache.kafka.connect.data.Decimal");
    assert_eq!(amount["parameters"]["scale"], "2");
    // Both rows of the first transaction carry its commit LSN; ids are unique.
    assert_eq!(source["lsn"], payload(&got[1])["payload"]["source"]["lsn"]);
    assert_eq!(payload(&got[1])["payload"]["after"]["amount"], "zg==");
    let ids: HashSet<&str> = got.iter().map(|d| header(d, "message-id")).collect();
    assert_eq!(ids.len(), 4);
    let delete = payload(&got[3]);
    assert_eq!(delete["payload"]["after"], Value::Null);
    assert_eq!(delete["payload"]["before"]["transaction_id"], "tx2");

    let stats = cdc.shutdown().await.unwrap();
    assert_eq!(stats.produced, 4);
    assert!(stats.confirmed_lsn > 0);
    pg.cleanup(&cfg.slot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_slot_and_loses_nothing() {
    let pg = LogicalPg::start().await;
    let bus = Arc::new(InProcessBus::new(100_000, Duration::from_secs(30)));
    let mut sub = bus.subscribe("finance.transactions", "t").await.unwrap();
    let cfg = config(&pg);
    let cdc = start_with(cfg.clone(), bus.clone(), None).await.unwrap();
    let mut c = pg.connect().await;
    let insert = |from: usize, to: usize| {
        let rows: Vec<String> = (from..to)
            .map(|i| format!("('r{i}', 'u{}', {i}.25, now())", i % 7))
            .collect();
        format!(
            "INSERT INTO transactions (transaction_id, user_id, amount, created_at) VALUES {}",
            rows.join(",")
        )
    };
    // 300 rows in one transaction: more than max_buffered_changes (16), so produced in parts
    // before the commit is confirmed.
    exec(&mut c, &insert(0, 300)).await;
    let _ = read(sub.as_mut(), 300).await;
    cdc.shutdown().await.unwrap();

    // Written while nothing streams.
    exec(&mut c, &insert(300, 400)).await;
    for i in 400..450 {
        exec(&mut c, &insert(i, i + 1)).await;
    }

    let cdc = start_with(cfg.clone(), bus.clone(), None).await.unwrap();
    assert!(!cdc.prepared.slot_created && !cdc.prepared.publication_created);
    let got = read(sub.as_mut(), 150).await;
    let tx: HashSet<String> = got
        .iter()
        .map(|d| {
            payload(d)["payload"]["after"]["transaction_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: HashSet<String> = (300..450).map(|i| format!("r{i}")).collect();
    assert_eq!(
        tx, want,
        "every row written while stopped arrives after the restart"
    );
    // Nothing more: the first 300 were confirmed and are not replayed.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), sub.next())
            .await
            .is_err()
    );
    cdc.shutdown().await.unwrap();
    pg.cleanup(&cfg.slot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_transaction_is_replayed_with_the_same_message_ids() {
    let pg = LogicalPg::start().await;
    // A bus that holds nothing: every produce is refused, so no commit is confirmed.
    let closed = Arc::new(InProcessBus::new(1, Duration::from_secs(30)));
    let mut blocker = closed.subscribe("finance.transactions", "t").await.unwrap();
    let cfg = config(&pg);
    let cdc = start_with(cfg.clone(), closed.clone(), None).await.unwrap();
    let mut c = pg.connect().await;
    exec(
        &mut c,
        "INSERT INTO transactions (transaction_id, user_id, amount) VALUES ('a', 'u', 1), ('b', 'u', 2)",
    )
    .await;
    // The first row fills the bus; the second cannot be produced, so the commit stays open.
    let first = tokio::time::timeout(Duration::from_secs(20), blocker.next())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = cdc.shutdown().await.unwrap();
    assert_eq!(
        stats.transactions, 0,
        "nothing confirmed while a change was not delivered"
    );

    let bus = Arc::new(InProcessBus::new(1000, Duration::from_secs(30)));
    let mut sub = bus.subscribe("finance.transactions", "t").await.unwrap();
    let cdc = start_with(cfg.clone(), bus.clone(), None).await.unwrap();
    let got = read(sub.as_mut(), 2).await;
    assert_eq!(header(&got[0], "message-id"), header(&first, "message-id"));
    assert_ne!(header(&got[0], "message-id"), header(&got[1], "message-id"));
    cdc.shutdown().await.unwrap();
    pg.cleanup(&cfg.slot).await;
}

#[tokio::test]
async fn a_server_without_logical_wal_is_refused_clearly() {
    let url = std::env::var("INFERMESH_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await else {
        panic!("the tests' PostgreSQL at {url} is not reachable (scripts/test.sh starts one)");
    };
    let level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&mut c)
        .await
        .unwrap();
    if level == "logical" {
        // Nothing to refuse on this server (the other tests stream from it).
        return;
    }
    let mut cfg = config_for(&url, "refused");
    cfg.migrate = false;
    let bus = Arc::new(InProcessBus::new(10, Duration::from_secs(1)));
    let r = start_with(cfg, bus, None).await;
    match r {
        Err(CdcError::Config(msg)) => assert!(msg.contains("wal_level=logical"), "{msg}"),
        other => panic!("expected a wal_level refusal, got {other:?}"),
    }
}
