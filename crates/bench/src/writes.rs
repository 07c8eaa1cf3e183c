//! Commits per second through the engine (validation, rules off: a trusted
//! service), W writers each issuing mutations of K upserts back to back.
//! A run is short and this machine is shared, so it is repeated on fresh
//! stores and the median reported.

use std::sync::Arc;
use std::time::Instant;

use protosync_auth::Identity;
use protosync_engine::mutation::{OpBody, OpRequest};
use protosync_engine::{Engine, MutationRequest};
use serde_json::json;

use crate::stores::{self, BenchStore, StoreKind};

/// Runs measured per configuration; the median is the figure.
const ROUNDS: usize = 3;

pub(crate) async fn run(
    kind: StoreKind,
    writers: usize,
    ops: usize,
    mutations: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        rounds.push(measure(kind, writers, ops, mutations, round).await?);
    }
    let commits = writers * mutations;
    let rates: Vec<f64> = rounds
        .iter()
        .map(|seconds| commits as f64 / seconds)
        .collect();
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[ROUNDS / 2];
    Ok(json!({
        "scenario": "writes",
        "store": kind.name(),
        "writers": writers,
        "ops_per_mutation": ops,
        "commits": commits,
        "rounds_commits_per_second": rates,
        "commits_per_second": median,
        "documents_per_second": median * ops as f64,
    }))
}

/// One round on a fresh store; returns its seconds.
async fn measure(
    kind: StoreKind,
    writers: usize,
    ops: usize,
    mutations: usize,
    round: usize,
) -> anyhow::Result<f64> {
    let store: BenchStore = stores::open(kind).await?;
    let engine = Arc::new(Engine::start(stores::registry()?, store.store.clone()).await?);
    let service = Identity::Service {
        name: "bench".into(),
        collections: None,
        jti: None,
        expires_at: None,
    };
    let bar = crate::progress::bar(
        writers * mutations,
        format!(
            "writes {} {writers}w {ops}op, round {}",
            kind.name(),
            round + 1
        ),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let engine = engine.clone();
        let service = service.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            for m in 0..mutations {
                let ops = (0..ops)
                    .map(|o| {
                        OpRequest::Upsert(OpBody {
                            collection: "run_summary".into(),
                            id: format!("run-{w}-{}", (m * 7 + o) % 1000),
                            doc: Some(json!({"ownerId": "bench", "status": "RUN_STATUS_RUNNING", "eventCount": m})),
                            fields: None,
                            expected_version: None,
                        })
                    })
                    .collect();
                engine.mutate(&service, &MutationRequest { idempotency_key: None, ops }, None).await?;
                bar.inc(1);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish();
    Ok(seconds)
}
