//! A PostgreSQL with `wal_level=logical` for the CDC tests: `INFERMESH_TEST_LOGICAL_DATABASE_URL`
//! when set; else the tests' PostgreSQL (`INFERMESH_TEST_DATABASE_URL`, default
//! 127.0.0.1:5432) when it runs `wal_level=logical`; else a throw-away cluster this helper
//! starts (Debian's binaries, initdb in a temporary directory, as the postgres user when the
//! tests run as root, a free port) and stops when dropped. Each test gets a database of its
//! own and unique slot and publication names (slots are per cluster).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use sqlx::Connection as _;

/// A logical-replication PostgreSQL and a fresh database on it.
pub struct LogicalPg {
    /// URL of the fresh database.
    pub url: String,
    /// A unique suffix for slot and publication names.
    pub tag: String,
    cluster: Option<Cluster>,
}

struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = pg_cmd(&self.bin.join("pg_ctl"), self.as_postgres)
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn pg_cmd(bin: &std::path::Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wal_level(url: &str) -> Option<String> {
    let mut c = sqlx::PgConnection::connect(url).await.ok()?;
    sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&mut c)
        .await
        .ok()
}

fn start_cluster() -> (String, Cluster) {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL binaries in /usr/lib/postgresql (Debian package postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .max()
        .expect("an initdb under /usr/lib/postgresql/*/bin");
    let dir = tempfile::Builder::new()
        .prefix("infermesh-cdc-pg")
        .tempdir()
        .unwrap();
    let as_postgres = is_root();
    if as_postgres {
        assert!(
            Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap()
                .success()
        );
    }
    let data = dir.path().join("data");
    let out = pg_cmd(&bin.join("initdb"), as_postgres)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync"])
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {out:?}");
    let port = free_port();
    let opts = format!(
        "-h 127.0.0.1 -p {port} -k {} -F -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10",
        dir.path().display()
    );
    let out = pg_cmd(&bin.join("pg_ctl"), as_postgres)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.path().join("server.log"))
        .args(["-w", "-o", &opts, "start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_ctl start: {out:?}");
    (
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        Cluster {
            dir,
            bin,
            as_postgres,
        },
    )
}

impl LogicalPg {
    /// A fresh database on a logical-replication server.
    pub async fn start() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut cluster = None;
        let admin = match env("INFERMESH_TEST_LOGICAL_DATABASE_URL") {
            Some(u) => u,
            None => {
                let shared = env("INFERMESH_TEST_DATABASE_URL")
                    .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
                if wal_level(&shared).await.as_deref() == Some("logical") {
                    shared
                } else {
                    let (u, c) = start_cluster();
                    cluster = Some(c);
                    u
                }
            }
        };
        let tag = format!("t{}", uuid_like());
        let db = format!("cdc_{tag}");
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut c)
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        Self {
            url: format!("{base}/{db}"),
            tag,
            cluster,
        }
    }

    /// A connection to the fresh database.
    pub async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }

    /// Whether this helper started the cluster (and drops it).
    pub fn own_cluster(&self) -> bool {
        self.cluster.is_some()
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

impl LogicalPg {
    /// Drops `slot` (a slot left behind keeps WAL on a shared server) and the database.
    pub async fn cleanup(&self, slot: &str) {
        if self.cluster.is_some() {
            return;
        }
        let (base, db) = self.url.rsplit_once('/').unwrap();
        let mut c = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .unwrap();
        let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(slot)
            .execute(&mut c)
            .await;
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}
