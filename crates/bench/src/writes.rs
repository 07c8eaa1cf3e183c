//! Commits per second through the engine (validation, rules off: a trusted
//! service), W writers each issuing mutations of K upserts back to back.

use std::sync::Arc;
use std::time::Instant;

use protosync_auth::Identity;
use protosync_engine::mutation::{OpBody, OpRequest};
use protosync_engine::{Engine, MutationRequest};
use serde_json::json;

use crate::stores::{self, BenchStore, StoreKind};

pub async fn run(kind: StoreKind, writers: usize, ops: usize, mutations: usize) -> anyhow::Result<serde_json::Value> {
    let store: BenchStore = stores::open(kind).await?;
    let engine = Arc::new(Engine::start(stores::registry()?, store.store.clone()).await?);
    let service = Identity::Service { name: "bench".into(), collections: None, jti: None, expires_at: None };
    let bar = crate::progress::bar(writers * mutations, format!("writes {} {writers}w {ops}op", kind.name()));
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
                engine.mutate(&service, &MutationRequest { idempotency_key: None, ops }).await?;
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
    let commits = writers * mutations;
    Ok(json!({
        "scenario": "writes",
        "store": kind.name(),
        "writers": writers,
        "ops_per_mutation": ops,
        "commits": commits,
        "seconds": seconds,
        "commits_per_second": commits as f64 / seconds,
        "documents_per_second": (commits * ops) as f64 / seconds,
    }))
}
