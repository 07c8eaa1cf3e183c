//! Where a run's data lives: a fresh SQLite file or a fresh Postgres
//! database, so no run sees another's documents or change log. Owns the
//! naming of bench databases; never drops anything but its own.

use std::path::PathBuf;
use std::sync::Arc;

use clap::ValueEnum;
use protosync_schema::Registry;
use protosync_store::postgres::PostgresStore;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// The Postgres server that bench databases are created on and the NOTIFY
/// baseline runs against.
pub(crate) fn admin_url() -> String {
    std::env::var("PROTOSYNC_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates (dropping any leftover) the database `protosync_bench_<pid>` and
/// returns its URL. One name per bench process: runs are sequential, and a
/// crashed run's database is replaced by the next run of the same pid.
pub(crate) async fn fresh_postgres_database() -> anyhow::Result<String> {
    let admin = admin_url();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let name = format!("protosync_bench_{}", std::process::id());
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    match admin.rsplit_once('/') {
        Some((base, _)) => Ok(format!("{base}/{name}")),
        None => anyhow::bail!("PROTOSYNC_BENCH_POSTGRES_URL must name a database"),
    }
}

/// A store opened in this process (the `writes` scenario measures the
/// store through the engine, without a gateway).
pub(crate) struct BenchStore {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn open(kind: StoreKind) -> anyhow::Result<BenchStore> {
    match kind {
        StoreKind::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("protosync-bench-")
                .tempdir()?;
            let store = SqliteStore::open(&dir.path().join("bench.db"), StoreOptions::default())?;
            Ok(BenchStore {
                store: Arc::new(store),
                _dir: Some(dir),
            })
        }
        StoreKind::Postgres => {
            let url = fresh_postgres_database().await?;
            let store = PostgresStore::connect(&url, 32, StoreOptions::default()).await?;
            Ok(BenchStore {
                store: Arc::new(store),
                _dir: None,
            })
        }
    }
}

/// The example schema the server and the engine load.
pub(crate) fn schema_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/schema")
}

pub(crate) fn registry() -> anyhow::Result<Arc<Registry>> {
    Ok(Arc::new(Registry::load_dir(&schema_dir())?))
}
