//! PostgreSQL to alert, without polling: rows inserted into `transactions` stream through
//! `infermesh cdc postgres` (logical replication) as Debezium envelopes, which the fraud
//! pipeline reads as transactions (same ids, amounts, times) and scores; the sixth transaction
//! of one user within a minute raises the velocity alert. The PostgreSQL is the machine's when
//! it runs `wal_level=logical`, else a throw-away cluster the test starts.
#![allow(clippy::unwrap_used)]

#[path = "../pipelines/cdc/tests/pg/mod.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use infermesh_cdc::{CdcConfig, start_with};
use infermesh_pipeline_fraud::event::{Parsed, parse};
use infermesh_pipelines::bus::{EventBus, InProcessBus};
use infermesh_server::local::{LocalConfig, LocalModels};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserted_rows_reach_the_fraud_pipeline_and_raise_alerts() {
    let pg = pg::LogicalPg::start().await;
    let bus = Arc::new(InProcessBus::new(10_000, Duration::from_secs(30)));
    // A second group on the input: what the fraud pipeline parses, checked field by field.
    let mut tap = bus.subscribe("finance.transactions", "tap").await.unwrap();
    let mut alerts = bus.subscribe("fraud.alerts", "t").await.unwrap();

    let repo = tempfile::tempdir().unwrap();
    infermesh_server::sample::write_sample_repository(repo.path()).unwrap();
    let local = LocalModels::open(LocalConfig {
        model_repository: repo.path().to_path_buf(),
        poll_interval: None,
        fraud_model: "fraud".into(),
        features: None,
    })
    .await
    .unwrap();
    let fraud = infermesh_pipeline_fraud::start_in_process(
        bus.clone(),
        infermesh_pipeline_fraud::handler::Scorer::InProcess(local.fraud()),
        None,
    )
    .await
    .unwrap();
    let cfg = CdcConfig {
        database_url: pg.url.clone(),
        schema: "public".into(),
        table: "transactions".into(),
        topic: "finance.transactions".into(),
        slot: format!("cdc_{}", pg.tag),
        publication: format!("cdc_{}", pg.tag),
        key_column: "user_id".into(),
        server_name: "shop".into(),
        migrate: true,
        partitions_ahead: 2,
        max_buffered_changes: 1024,
    };
    let cdc = start_with(cfg.clone(), bus.clone(), None).await.unwrap();

    let mut c = pg.connect().await;
    // Six payments of one user twelve seconds apart, each its own transaction.
    for i in 0..6 {
        sqlx::query(
            "INSERT INTO transactions (transaction_id, user_id, device_id, amount, currency, merchant, created_at) \
             VALUES ($1, 'u-cdc', 'd-cdc', $2::numeric, 'USD', 'm', now() - make_interval(secs => $3))",
        )
        .bind(format!("cdc-{i}"))
        .bind(format!("{}.99", 10 + i))
        .bind(f64::from(60 - 12 * i))
        .execute(&mut c)
        .await
        .unwrap();
    }

    for i in 0..6 {
        let d = tokio::time::timeout(Duration::from_secs(20), tap.next())
            .await
            .unwrap()
            .unwrap();
        tap.ack(&d).await.unwrap();
        let Parsed::Transaction(t) = parse(&d.message.payload, 2).unwrap() else {
            panic!("not a transaction");
        };
        assert_eq!(t.transaction_id, format!("cdc-{i}"));
        assert_eq!(t.user_id, "u-cdc");
        assert_eq!(t.device_id.as_deref(), Some("d-cdc"));
        assert!(
            (t.amount - (f64::from(10 + i) + 0.99)).abs() < 1e-9,
            "{}",
            t.amount
        );
        assert_eq!(t.currency.as_deref(), Some("USD"));
        let age_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - t.created_at_ms;
        let want = i64::from(60 - 12 * i) * 1000;
        assert!(
            (age_ms - want).abs() < 15_000,
            "created_at off: {age_ms} vs {want}"
        );
    }

    // The velocity rule: 5+ transactions of one user within 60 s, completed by the fifth
    // (cdc-4, 48 s after the first) and the sixth. The model may alert on others too.
    let mut velocity = Vec::new();
    while velocity.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(20), alerts.next())
            .await
            .expect("alerts for the velocity rule")
            .unwrap();
        alerts.ack(&d).await.unwrap();
        let alert: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
        assert_eq!(alert["user_id"], "u-cdc");
        if alert["rule_hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "velocity_5_in_60s")
        {
            velocity.push(alert["transaction_id"].as_str().unwrap().to_string());
        }
    }
    velocity.sort();
    assert_eq!(velocity, ["cdc-4", "cdc-5"]);
    cdc.shutdown().await.unwrap();
    fraud.shutdown().await.unwrap();
    pg.cleanup(&cfg.slot).await;
}
