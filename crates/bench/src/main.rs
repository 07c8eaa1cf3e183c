//! `protosync-bench`: measures protosync on this machine and writes one JSON
//! result file per scenario (docs/benchmarks.md). Every figure comes from a
//! run of this binary; tests never assert on time.
//!
//! First scenarios (issue #5 lists the rest):
//! - `writes`: commits per second for W concurrent writers of K-op
//!   mutations, on SQLite or Postgres, through the engine.
//! - `fanout`: one writer, N WebSocket subscribers to the same query;
//!   latency from issuing a mutation to each subscriber's receipt of it.

mod fanout;
mod writes;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use protosync_schema::Registry;
use protosync_store::postgres::PostgresStore;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};

#[derive(Parser)]
#[command(name = "protosync-bench")]
struct Cli {
    /// Where result files go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Commits per second.
    Writes {
        #[arg(long, value_enum, default_value = "sqlite")]
        store: StoreKind,
        #[arg(long, default_value_t = 1)]
        writers: usize,
        /// Operations per mutation.
        #[arg(long, default_value_t = 1)]
        ops: usize,
        /// Mutations per writer.
        #[arg(long, default_value_t = 2_000)]
        mutations: usize,
    },
    /// Commit-to-receipt latency for N subscribers of one query.
    Fanout {
        #[arg(long, value_enum, default_value = "sqlite")]
        store: StoreKind,
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Commits measured (after a warm-up).
        #[arg(long, default_value_t = 200)]
        commits: usize,
    },
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum StoreKind {
    Sqlite,
    Postgres,
}

/// A store for one run: a fresh SQLite file or a fresh Postgres database.
pub struct BenchStore {
    pub store: Arc<dyn Store>,
    _dir: Option<std::path::PathBuf>,
}

async fn open(kind: StoreKind) -> anyhow::Result<BenchStore> {
    match kind {
        StoreKind::Sqlite => {
            let dir = std::env::temp_dir().join(format!("protosync-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let store = SqliteStore::open(&dir.join("bench.db"), StoreOptions::default())?;
            Ok(BenchStore { store: Arc::new(store), _dir: Some(dir) })
        }
        StoreKind::Postgres => {
            let admin = std::env::var("PROTOSYNC_BENCH_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let name = format!("protosync_bench_{}", std::process::id());
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
            client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
            let url = match admin.rsplit_once('/') {
                Some((base, _)) => format!("{base}/{name}"),
                None => anyhow::bail!("PROTOSYNC_BENCH_POSTGRES_URL must name a database"),
            };
            let store = PostgresStore::connect(&url, 32, StoreOptions::default()).await?;
            Ok(BenchStore { store: Arc::new(store), _dir: None })
        }
    }
}

pub fn registry() -> anyhow::Result<Arc<Registry>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/schema");
    Ok(Arc::new(Registry::load_dir(&dir)?))
}

/// (p50, p95, p99, max) of `samples`, which it sorts.
pub fn percentiles(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples.get(((samples.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    serde_json::json!({"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": at(1.0), "samples": samples.len()})
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        std::fs::create_dir_all(&cli.out)?;
        let (name, result) = match cli.scenario {
            Scenario::Writes { store, writers, ops, mutations } => {
                let result = writes::run(open(store).await?, writers, ops, mutations).await?;
                (format!("writes-{store:?}-{writers}w-{ops}op").to_lowercase(), result)
            }
            Scenario::Fanout { store, subscribers, commits } => {
                let result = fanout::run(open(store).await?, subscribers, commits).await?;
                (format!("fanout-{store:?}-{subscribers}").to_lowercase(), result)
            }
        };
        let path = cli.out.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
        println!("{}", serde_json::to_string_pretty(&result)?);
        println!("written to {}", path.display());
        Ok(())
    })
}
