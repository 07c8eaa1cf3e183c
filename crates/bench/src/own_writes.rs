//! How long does a client wait for its own write? One WebSocket client,
//! subscribed to the documents it writes, sends M mutations one after
//! another over the socket; for each, the time from sending it to its
//! `mutationResult`, and to the read-your-writes transition that makes it
//! visible (the later of the two frames is when an SDK resolves it). The
//! client is the user `bench`, so the write rule runs.

use std::time::Instant;

use protosync_client::Received;
use protosync_client::wire::{self, client_message, server_message};
use protosync_protocol::Codec;
use serde_json::{Value, json};

use crate::clients::{self, SyncSocket};
use crate::server::{OWNER, ServerProcess};
use crate::stores::StoreKind;

/// Mutations before the measured ones (connection and caches warm up).
const WARMUP: usize = 20;
/// One mutation per this interval: under the per-connection rate limit
/// (100 per second), so none waits behind another or is refused.
const PACE: std::time::Duration = std::time::Duration::from_millis(12);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) store: StoreKind,
    pub(crate) codec: Codec,
    pub(crate) mutations: usize,
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<Value> {
    let server = ServerProcess::start(plan.store).await?;
    let stream = clients::dial(server.addr, 0, None).await?;
    let (mut socket, _) = SyncSocket::connect(&server, stream, plan.codec, None).await?;
    let mine = wire::Query {
        collection: "work_items".into(),
        filter: vec![wire::Condition {
            field: "ownerId".into(),
            op: "==".into(),
            value: Some(protosync_protocol::json_to_value(&json!(OWNER))),
        }],
        limit: 10,
        ..Default::default()
    };
    socket.subscribe(vec![clients::query("mine", mine)]).await?;
    let meter = server.meter()?;
    let (mut result_ms, mut visible_ms) = (Vec::new(), Vec::new());
    let mut pace = tokio::time::interval(PACE);
    for i in 0..WARMUP + plan.mutations {
        pace.tick().await;
        let doc = json!({"ownerId": OWNER, "title": format!("write {i}")});
        let op = protosync_client::op::upsert("work_items", &format!("w{}", i % 10), doc);
        let sent = Instant::now();
        socket
            .send(client_message::Message::Mutate(wire::Mutate {
                request_id: i.to_string(),
                ops: vec![op],
                ..Default::default()
            }))
            .await?;
        let (mut seq, mut result_at, mut visible_at) = (None, None, None);
        let mut watermark = 0;
        while result_at.is_none() || visible_at.is_none() {
            match socket.receive().await? {
                Received::Transition(t) => watermark = watermark.max(t.to_watermark),
                Received::Other(wire::ServerMessage {
                    message: Some(server_message::Message::MutationResult(r)),
                }) => {
                    seq = Some(r.seq);
                    result_at = Some(sent.elapsed());
                }
                Received::Other(wire::ServerMessage {
                    message: Some(server_message::Message::Error(e)),
                }) => anyhow::bail!("mutation {i} refused: {}: {}", e.code, e.message),
                Received::Other(_) => {}
            }
            if seq.is_some_and(|s| watermark >= s) && visible_at.is_none() {
                visible_at = Some(sent.elapsed());
            }
        }
        if i >= WARMUP {
            result_ms.push(result_at.unwrap_or_default().as_secs_f64() * 1e3);
            visible_ms.push(visible_at.unwrap_or_default().as_secs_f64() * 1e3);
        }
    }
    Ok(json!({
        "scenario": "own-writes",
        "store": plan.store.name(),
        "codec": format!("{:?}", plan.codec).to_lowercase(),
        "mutations": plan.mutations,
        "result_ms": crate::stats::percentiles(&mut result_ms),
        "visible_ms": crate::stats::percentiles(&mut visible_ms),
        "server": meter.report()?,
    }))
}
