//! `protosync-bench`: measures protosync on this machine and writes one JSON
//! result file per run (docs/benchmarks.md). Every figure comes from a run
//! of this binary; tests never assert on time.
//!
//! Scenarios (issue #5):
//! - `writes`: commits per second for W concurrent writers of K-op
//!   mutations, on SQLite or Postgres, through the engine in-process.
//! - `fanout`: one writer, N WebSocket subscribers of one query; latency
//!   from issue to receipt, beside NATS and Postgres NOTIFY baselines.
//! - `selective`: S untouched subscriptions while 100 watched documents
//!   are written: commits/s, latency, server CPU per commit.
//! - `slow-consumer`: the fan-out without and with a subscriber that stops
//!   reading.
//! - `resume`: reconnecting after K writes, against a fresh subscribe.
//! - `idle`: server memory per idle connection.
//! - `own-writes`: a client's wait for its own write (result, then the
//!   read-your-writes transition).
//! - `lookup-rule`: fan-out to subscribers whose read rule looks up a
//!   document, against the same without the lookup.
//! - `all`: everything at the sizes, then `report`.
//! - `report`: `summary.md` and the fan-out plot from the result files.
//!
//! All but `writes` run the real `protosync serve` as a child process
//! (server.rs) and measure its CPU and memory apart from the clients.

mod baseline;
mod clients;
mod fanout;
mod idle;
mod own_writes;
mod plot;
mod progress;
mod report;
mod resume;
mod selective;
mod server;
mod slow_consumer;
mod stamp;
mod stats;
mod stores;
mod writes;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use protosync_protocol::Codec;
use serde_json::{Value, json};

use crate::stores::StoreKind;

#[derive(Parser)]
#[command(name = "protosync-bench")]
struct Cli {
    /// Where result files go.
    #[arg(long, default_value = "bench-results", global = true)]
    out: PathBuf,
    /// The store the server (or, for `writes`, the engine) runs on.
    #[arg(long, value_enum, default_value = "sqlite", global = true)]
    store: StoreKind,
    /// How WebSocket clients encode frames.
    #[arg(long, value_enum, default_value = "json", global = true)]
    codec: CodecArg,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    Json,
    Proto,
}

#[derive(Subcommand)]
enum Scenario {
    /// Commits per second through the engine.
    Writes {
        #[arg(long, default_value_t = 1)]
        writers: usize,
        /// Operations per mutation.
        #[arg(long, default_value_t = 1)]
        ops: usize,
        /// Mutations per writer.
        #[arg(long, default_value_t = 2_000)]
        mutations: usize,
    },
    /// Issue-to-receipt latency for N subscribers of one query, with the
    /// NATS and Postgres NOTIFY baselines; one result per N.
    Fanout {
        #[arg(long, value_delimiter = ',', default_value = "1,100")]
        subscribers: Vec<usize>,
        /// Commits measured (after a warm-up).
        #[arg(long, default_value_t = 200)]
        commits: usize,
    },
    /// Writes to watched documents among S untouched subscriptions; one
    /// result per S.
    Selective {
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        subscriptions: Vec<usize>,
        #[arg(long, default_value_t = 2_000)]
        commits: usize,
        /// Stop writing after this long even if fewer commits were made.
        #[arg(long, default_value_t = 15)]
        max_seconds: u64,
    },
    /// The fan-out without and with one subscriber that stops reading.
    SlowConsumer {
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        commits: usize,
    },
    /// Reconnect with resume after K writes, against a fresh subscribe; one
    /// result per K.
    Resume {
        /// Documents the client holds (a multiple of 1,000).
        #[arg(long, default_value_t = 10_000)]
        documents: usize,
        #[arg(long, value_delimiter = ',', default_value = "10,1000")]
        changes: Vec<usize>,
    },
    /// Server memory per idle connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// A client's wait for its own mutation: the result and the
    /// read-your-writes transition.
    OwnWrites {
        #[arg(long, default_value_t = 1_000)]
        mutations: usize,
    },
    /// Fan-out of one commit to N subscribers whose read rule does one
    /// `get`, against the same rule without it.
    LookupRule {
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        commits: usize,
    },
    /// Every scenario at the sizes, then `report`.
    All {
        /// Where the fan-out plot goes.
        #[arg(long, default_value = "docs/benchmarks-fanout.svg")]
        plot: PathBuf,
        /// Connections for the idle scenario.
        #[arg(long, default_value_t = 10_000)]
        idle_connections: usize,
    },
    /// Regenerates `summary.md` and the fan-out plot from the result files.
    Report {
        #[arg(long, default_value = "docs/benchmarks-fanout.svg")]
        plot: PathBuf,
    },
}

/// One measurement to make: the name of its result file and how to run it.
enum Run {
    Writes {
        store: StoreKind,
        writers: usize,
        ops: usize,
        mutations: usize,
    },
    Fanout(fanout::Plan),
    Selective(selective::Plan),
    SlowConsumer(fanout::Plan),
    Resume(resume::Plan),
    Idle(idle::Plan),
    OwnWrites(own_writes::Plan),
    LookupRule(fanout::Plan),
}

impl Run {
    fn name(&self) -> String {
        match self {
            Run::Writes {
                store,
                writers,
                ops,
                ..
            } => format!("writes-{}-{writers}w-{ops}op", store.name()),
            Run::Fanout(p) => format!("fanout-{}-{}", p.store.name(), p.subscribers),
            Run::Selective(p) => format!("selective-{}-{}", p.store.name(), p.subscriptions),
            Run::SlowConsumer(p) => format!("slow-consumer-{}-{}", p.store.name(), p.subscribers),
            Run::Resume(p) => format!("resume-{}-k{}", p.store.name(), p.changes),
            Run::Idle(p) => format!("idle-{}-{}", p.store.name(), p.connections),
            Run::OwnWrites(p) => format!("own-writes-{}", p.store.name()),
            Run::LookupRule(p) => format!("lookup-rule-{}-{}", p.store.name(), p.subscribers),
        }
    }

    async fn execute(self) -> anyhow::Result<Value> {
        match self {
            Run::Writes {
                store,
                writers,
                ops,
                mutations,
            } => writes::run(store, writers, ops, mutations).await,
            Run::Fanout(plan) => fanout::run(plan).await,
            Run::Selective(plan) => selective::run(plan).await,
            Run::SlowConsumer(plan) => slow_consumer::run(plan).await,
            Run::Resume(plan) => resume::run(plan).await,
            Run::Idle(plan) => idle::run(plan).await,
            Run::OwnWrites(plan) => own_writes::run(plan).await,
            Run::LookupRule(plan) => fanout::lookup_rule(plan).await,
        }
    }
}

/// The runs of `all`: the sizes, with commit counts that keep the
/// whole run near six minutes on two cores.
fn everything(store: StoreKind, codec: Codec, idle_connections: usize) -> Vec<Run> {
    let mut runs = Vec::new();
    for (kind, scale) in [(StoreKind::Sqlite, 2), (StoreKind::Postgres, 1)] {
        runs.push(Run::Writes {
            store: kind,
            writers: 1,
            ops: 1,
            mutations: 1_000 * scale,
        });
        runs.push(Run::Writes {
            store: kind,
            writers: 16,
            ops: 1,
            mutations: 1_000 * scale,
        });
        runs.push(Run::Writes {
            store: kind,
            writers: 1,
            ops: 100,
            mutations: 100 * scale,
        });
    }
    for subscribers in [1, 100, 1_000, 10_000] {
        runs.push(Run::Fanout(fanout::Plan {
            store,
            codec,
            subscribers,
            commits: 200,
        }));
    }
    // Commit to one subscriber has a target on each store.
    for other in [StoreKind::Sqlite, StoreKind::Postgres]
        .into_iter()
        .filter(|k| k.name() != store.name())
    {
        runs.push(Run::Fanout(fanout::Plan {
            store: other,
            codec,
            subscribers: 1,
            commits: 200,
        }));
    }
    for subscriptions in [1_000, 10_000, 100_000] {
        runs.push(Run::Selective(selective::Plan {
            store,
            codec,
            subscriptions,
            commits: 5_000,
            max_seconds: 15,
        }));
    }
    runs.push(Run::SlowConsumer(fanout::Plan {
        store,
        codec,
        subscribers: 1_000,
        commits: 100,
    }));
    for changes in [10, 1_000, 100_000] {
        runs.push(Run::Resume(resume::Plan {
            store,
            codec,
            documents: 10_000,
            changes,
        }));
    }
    runs.push(Run::Idle(idle::Plan {
        store,
        codec,
        connections: idle_connections,
    }));
    runs.push(Run::OwnWrites(own_writes::Plan {
        store,
        codec,
        mutations: 1_000,
    }));
    runs.push(Run::LookupRule(fanout::Plan {
        store,
        codec,
        subscribers: 1_000,
        commits: 200,
    }));
    runs
}

/// Runs each measurement and writes its result; in `all`, a failed run is
/// written as its error (the file says the size could not run here) and
/// the others go on.
async fn execute(out: &Path, runs: Vec<Run>, keep_going: bool) -> anyhow::Result<()> {
    for run in runs {
        let name = run.name();
        match run.execute().await {
            Ok(result) => {
                report::write(out, &name, &result)?;
            }
            Err(e) if keep_going => {
                eprintln!("{name} failed: {e:#}");
                report::write(out, &name, &json!({"run": name, "error": format!("{e:#}")}))?;
            }
            Err(e) => return Err(e.context(name)),
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before any child starts: the server inherits the limit.
    clients::raise_fd_limit()?;
    let codec = match cli.codec {
        CodecArg::Json => Codec::Json,
        CodecArg::Proto => Codec::Binary,
    };
    let store = cli.store;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let runs = match cli.scenario {
            Scenario::Writes {
                writers,
                ops,
                mutations,
            } => vec![Run::Writes {
                store,
                writers,
                ops,
                mutations,
            }],
            Scenario::Fanout {
                subscribers,
                commits,
            } => subscribers
                .into_iter()
                .map(|subscribers| {
                    Run::Fanout(fanout::Plan {
                        store,
                        codec,
                        subscribers,
                        commits,
                    })
                })
                .collect(),
            Scenario::Selective {
                subscriptions,
                commits,
                max_seconds,
            } => subscriptions
                .into_iter()
                .map(|subscriptions| {
                    Run::Selective(selective::Plan {
                        store,
                        codec,
                        subscriptions,
                        commits,
                        max_seconds,
                    })
                })
                .collect(),
            Scenario::SlowConsumer {
                subscribers,
                commits,
            } => vec![Run::SlowConsumer(fanout::Plan {
                store,
                codec,
                subscribers,
                commits,
            })],
            Scenario::Resume { documents, changes } => changes
                .into_iter()
                .map(|changes| {
                    Run::Resume(resume::Plan {
                        store,
                        codec,
                        documents,
                        changes,
                    })
                })
                .collect(),
            Scenario::Idle { connections } => vec![Run::Idle(idle::Plan {
                store,
                codec,
                connections,
            })],
            Scenario::OwnWrites { mutations } => vec![Run::OwnWrites(own_writes::Plan {
                store,
                codec,
                mutations,
            })],
            Scenario::LookupRule {
                subscribers,
                commits,
            } => vec![Run::LookupRule(fanout::Plan {
                store,
                codec,
                subscribers,
                commits,
            })],
            Scenario::All {
                plot,
                idle_connections,
            } => {
                execute(&cli.out, everything(store, codec, idle_connections), true).await?;
                return report::regenerate(&cli.out, &plot);
            }
            Scenario::Report { plot } => return report::regenerate(&cli.out, &plot),
        };
        execute(&cli.out, runs, false).await
    })
}
