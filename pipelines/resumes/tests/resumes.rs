//! `pipeline resumes` end to end in process: an inference server with all-MiniLM-L6-v2 (the
//! cache the README's test command fills) ranks resumes from `resume.uploaded` against jobs
//! from table `jobs` or the event; rows land in `resume_scores` (a database of the test's own on
//! the tests' PostgreSQL) and on `resume.scored`; bad events are dead-lettered with a reason.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use infermesh_pipeline_resumes::{ResumesHandler, ScoreStore, Scored, matcher, start_with};
use infermesh_pipelines::bus::{EventBus, InProcessBus, Message};
use infermesh_pipelines::runtime::{Dedupe, RuntimeConfig};
use sqlx::Connection as _;

fn minilm_dir() -> PathBuf {
    let dir = infermesh_server::sample::default_model_cache().join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not in {}: run scripts/test.sh (it fetches the weights once)",
        dir.display()
    );
    dir
}

async fn server(repo: &std::path::Path) -> infermesh_server::RunningServer {
    let m = repo.join("minilm");
    std::fs::create_dir_all(m.join("1")).unwrap();
    std::fs::write(m.join("config.toml"), "platform = \"bert-embedding\"\n").unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling",
    ] {
        std::os::unix::fs::symlink(minilm_dir().join(f), m.join("1").join(f)).unwrap();
    }
    let args = infermesh_server::ServeArgs {
        model_repository: repo.to_path_buf(),
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        http_port: 0,
        grpc_port: 0,
        metrics_port: 0,
        poll_interval: 0.0,
        max_request_bytes: 16 << 20,
        fraud_model: "fraud".into(),
        embedding_model: "minilm".into(),
        categorizer_model: "categorizer".into(),
        recommender_model: "recs".into(),
        enable_model_control: false,
        limits: Default::default(),
        registry: Default::default(),
        monitor: Default::default(),
        features: Default::default(),
    };
    infermesh_server::start(args.validate().unwrap())
        .await
        .unwrap()
}

/// A database of this test's own on the tests' PostgreSQL.
async fn database() -> (String, String) {
    let admin = std::env::var("INFERMESH_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .expect("the tests' PostgreSQL (scripts/test.sh starts one)");
    let db = format!("resumes_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut c)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    (format!("{base}/{db}"), admin)
}

const JOB: &str = "Senior backend engineer. We need 5+ years of experience building services in \
                   Python and Go, running on Kubernetes, with PostgreSQL and Redis.";
const STRONG: &str = "Senior software engineer with 7 years of experience. Built Python and Go \
                      microservices deployed on Kubernetes; PostgreSQL and Redis in production.";
const WEAK: &str = "Pastry chef with 3 years of experience in French bakeries, cakes and bread.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_resumes_are_ranked_stored_and_produced() {
    let repo = tempfile::tempdir().unwrap();
    let s = server(repo.path()).await;
    let (url, admin) = database().await;
    let store = ScoreStore::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO jobs (job_id, title, description) VALUES ('j1', 'Backend', $1)")
        .bind(JOB)
        .execute(&mut db)
        .await
        .unwrap();
    let objects = tempfile::tempdir().unwrap();
    std::fs::write(objects.path().join("weak.txt"), WEAK).unwrap();

    let bus = Arc::new(InProcessBus::new(1000, Duration::from_secs(60)));
    let sub = bus
        .subscribe("resume.uploaded", "pipeline-resumes")
        .await
        .unwrap();
    let mut scored = bus.subscribe("resume.scored", "t").await.unwrap();
    let mut dlq = bus.subscribe("resume.uploaded.dlq", "t").await.unwrap();
    let pipeline = start_with(
        RuntimeConfig::new("resumes"),
        sub,
        bus.clone(),
        Dedupe::memory(1000),
        ResumesHandler {
            matcher: matcher(&format!("http://{}", s.grpc_addr)).unwrap(),
            model: String::new(),
            timeout: Duration::from_secs(30),
            store: store.clone(),
            bus: bus.clone(),
            object_root: Some(objects.path().to_path_buf()),
        },
        None,
    )
    .await
    .unwrap();

    let send = |v: serde_json::Value| {
        let bus = bus.clone();
        async move {
            bus.publish(
                "resume.uploaded",
                Message::new("k", v.to_string().into_bytes()),
            )
            .await
            .unwrap();
        }
    };
    send(serde_json::json!({"resume_id": "r-strong", "job_id": "j1",
        "document_base64": base64::engine::general_purpose::STANDARD.encode(STRONG)}))
    .await;
    send(serde_json::json!({"resume_id": "r-weak", "job_id": "j1", "object_key": "weak.txt"}))
        .await;
    // The job in the event, not in the table.
    send(
        serde_json::json!({"resume_id": "r-inline", "job_id": "j2", "text": STRONG,
        "job_description": JOB}),
    )
    .await;
    // Poison: unknown job, a key leaving the root, malformed JSON.
    send(serde_json::json!({"resume_id": "r-x", "job_id": "nope", "text": STRONG})).await;
    send(serde_json::json!({"resume_id": "r-y", "job_id": "j1", "object_key": "../etc/passwd"}))
        .await;
    bus.publish("resume.uploaded", Message::new("k", b"{oops".to_vec()))
        .await
        .unwrap();

    let mut got: HashMap<String, Scored> = HashMap::new();
    while got.len() < 3 {
        let d = tokio::time::timeout(Duration::from_secs(60), scored.next())
            .await
            .expect("resume.scored")
            .unwrap();
        scored.ack(&d).await.unwrap();
        let s: Scored = serde_json::from_slice(&d.message.payload).unwrap();
        assert_eq!(d.message.key.as_deref(), Some(s.job_id.as_str()));
        got.insert(s.resume_id.clone(), s);
    }
    let (strong, weak) = (&got["r-strong"], &got["r-weak"]);
    assert!(strong.score > weak.score, "{strong:?} vs {weak:?}");
    assert!(
        strong
            .matched_skills
            .iter()
            .any(|s| s.contains("Kubernetes")),
        "{strong:?}"
    );
    assert_eq!(strong.model, "minilm");
    assert_eq!(got["r-inline"].job_id, "j2");
    assert!((got["r-inline"].score - strong.score).abs() < 1e-4);

    let mut reasons = Vec::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(20), dlq.next())
            .await
            .unwrap()
            .unwrap();
        dlq.ack(&d).await.unwrap();
        reasons.push(
            d.message
                .headers
                .iter()
                .find(|(k, _)| k == "x-infermesh-dlq-reason")
                .map(|(_, v)| v.clone())
                .unwrap(),
        );
    }
    reasons.sort();
    assert_eq!(reasons, ["invalid_value", "malformed_json", "unknown_job"]);

    // The rows, ranked by score within the job.
    let rows: Vec<(String, f32)> = sqlx::query_as(
        "SELECT resume_id, score FROM resume_scores WHERE job_id = 'j1' ORDER BY score DESC",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["r-strong", "r-weak"]
    );
    // A redelivery (a new message, same resume and job) rewrites its row.
    send(serde_json::json!({"resume_id": "r-weak", "job_id": "j1", "text": STRONG})).await;
    let d = tokio::time::timeout(Duration::from_secs(60), scored.next())
        .await
        .unwrap()
        .unwrap();
    scored.ack(&d).await.unwrap();
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resume_scores WHERE resume_id = 'r-weak'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(n, 1);
    let score: f32 =
        sqlx::query_scalar("SELECT score FROM resume_scores WHERE resume_id = 'r-weak'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!((score - strong.score).abs() < 1e-4);

    pipeline.shutdown().await.unwrap();
    drop(db);
    drop(store);
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    let db = url.rsplit_once('/').unwrap().1;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut c)
        .await;
}
