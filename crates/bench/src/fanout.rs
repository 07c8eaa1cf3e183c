//! One writer, N WebSocket subscribers to the same query. Each mutation
//! carries the moment it was issued; each subscriber records when the
//! transition carrying it arrived. Writer and subscribers share this
//! process's clock, so the difference is the latency from issuing a
//! mutation to its receipt (commit, tail, fan-out, encode, socket, decode).

use std::sync::Arc;
use std::time::{Duration, Instant};

use protosync_auth::{Authenticator, Identity};
use protosync_client::wire::{self, client_message};
use protosync_client::{Connection, Received};
use protosync_engine::mutation::{OpBody, OpRequest};
use protosync_engine::{Engine, MutationRequest};
use protosync_protocol::Codec;
use protosync_server::{AppState, SyncConfig};
use serde_json::json;
use tokio::sync::mpsc;

use crate::BenchStore;

/// Commits before measuring: connections settle, caches warm.
const WARMUP_COMMITS: usize = 20;
/// Pause between measured commits, so each is measured on its own rather
/// than as one burst.
const COMMIT_INTERVAL: Duration = Duration::from_millis(5);

pub async fn run(store: BenchStore, subscribers: usize, commits: usize) -> anyhow::Result<serde_json::Value> {
    let engine = Arc::new(Engine::start(crate::registry()?, store.store.clone()).await?);
    let state = AppState::new(engine.clone(), SyncConfig::default(), Authenticator::trusting());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/v1/sync", listener.local_addr()?);
    tokio::spawn(protosync_server::serve(listener, state, std::future::pending()));
    let clock = Instant::now();
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<f64>();
    let total = WARMUP_COMMITS + commits;
    let mut ready = Vec::new();
    for _ in 0..subscribers {
        let (mut connection, _) = Connection::connect(&url, Codec::Json, None).await?;
        let query = wire::Query { collection: "run_summary".into(), limit: 1, order_by: vec![wire::Order { field: "eventCount".into(), direction: "desc".into() }], ..Default::default() };
        connection
            .send(client_message::Message::Subscribe(wire::Subscribe { subscription_id: "s".into(), target: Some(wire::subscribe::Target::Query(query)), held: vec![] }))
            .await?;
        let samples = samples_tx.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        ready.push(ready_rx);
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut seen = 0;
            while seen < total {
                let Ok(Received::Transition(t)) = connection.receive().await else { continue };
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                    continue;
                }
                for update in &t.updates {
                    for doc in &update.upserts {
                        let json = doc.doc.as_ref().map(protosync_protocol::struct_to_json).unwrap_or_default();
                        if let Some(sent) = json.get("title").and_then(|v| v.as_str()).and_then(|s| s.parse::<f64>().ok()) {
                            let _ = samples.send(clock.elapsed().as_secs_f64() * 1000.0 - sent);
                            seen += 1;
                        }
                    }
                }
            }
        });
    }
    for r in ready {
        r.await?;
    }
    let service = Identity::Service { name: "bench".into(), collections: None, jti: None, expires_at: None };
    for i in 0..total {
        let sent = clock.elapsed().as_secs_f64() * 1000.0;
        let op = OpRequest::Upsert(OpBody {
            collection: "run_summary".into(),
            id: "latest".into(),
            doc: Some(json!({"ownerId": "bench", "eventCount": i, "title": format!("{sent}")})),
            fields: None,
            expected_version: None,
        });
        engine.mutate(&service, &MutationRequest { idempotency_key: None, ops: vec![op] }).await?;
        tokio::time::sleep(COMMIT_INTERVAL).await;
    }
    drop(samples_tx);
    let mut samples = Vec::new();
    let expected = subscribers * total;
    let deadline = Instant::now() + Duration::from_secs(60);
    while samples.len() < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), samples_rx.recv()).await {
            Ok(Some(sample)) => samples.push(sample),
            _ => break,
        }
    }
    let received = samples.len();
    // Drop the warm-up: the first WARMUP_COMMITS receipts of each subscriber.
    let mut measured: Vec<f64> = samples.into_iter().skip(subscribers * WARMUP_COMMITS).collect();
    Ok(json!({
        "scenario": "fanout",
        "subscribers": subscribers,
        "commits": commits,
        "receipts_expected": expected,
        "receipts": received,
        "latency_ms": crate::percentiles(&mut measured),
        "note": "coalesced transitions deliver only the newest of several commits; receipts < expected means coalescing",
    }))
}
