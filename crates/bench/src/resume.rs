//! What does a reconnect cost? A client holds D documents (ten query
//! subscriptions of up to 1,000, the query limit), disconnects, and K
//! document writes happen while it is away. It then reconnects with a
//! resume that lists every held (id, seq); the server should send only
//! what changed. The same moment is measured with a fresh subscribe (a
//! full re-fetch) for comparison, and both views must end equal.
//!
//! Timing runs from dialling to the frame that makes the client caught up
//! (every subscription has its result at a watermark at or past the last
//! write); applying the transitions to a `View` (which checks the chain)
//! happens after the clock stops, so client bookkeeping is not counted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use protosync_client::wire::{self, client_message};
use protosync_client::{Received, View};
use protosync_protocol::Codec;
use serde_json::{Value, json};

use crate::clients::{self, SyncSocket};
use crate::server::{OWNER, ServerProcess};
use crate::stores::StoreKind;

/// Documents per subscription: the query limit.
const SHARD_SIZE: usize = 1000;
/// Writes are spread over the documents by this stride (a prime, so K ≤ D
/// writes touch K different documents).
const STRIDE: usize = 7919;
/// Up to this many writes are single-op commits; more are written
/// [`BATCH_OPS`] per commit so K = 100,000 takes seconds, not minutes.
const SINGLE_OP_LIMIT: usize = 10_000;
const BATCH_OPS: usize = 100;
/// Upserts per commit while creating the documents.
const POPULATE_OPS_PER_COMMIT: usize = 500;
/// How long a reconnect may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub store: StoreKind,
    pub codec: Codec,
    /// D: documents the client holds, a multiple of 1,000.
    pub documents: usize,
    /// K: document writes while the client is away.
    pub changes: usize,
}

fn doc_id(i: usize) -> String {
    format!("r{i:06}")
}

/// Shard `s`: the documents whose `lastEventSeq` is `s`, in id order.
fn shard(s: usize) -> wire::Subscribe {
    let condition = wire::Condition {
        field: "lastEventSeq".into(),
        op: "==".into(),
        value: Some(protosync_protocol::json_to_value(&json!(s.to_string()))),
    };
    clients::query(
        format!("shard-{s}"),
        wire::Query {
            collection: "run_summary".into(),
            filter: vec![condition],
            limit: SHARD_SIZE as u32,
            ..Default::default()
        },
    )
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<Value> {
    if plan.documents == 0 || !plan.documents.is_multiple_of(SHARD_SIZE) {
        bail!("resume needs a positive multiple of {SHARD_SIZE} documents");
    }
    let shards = plan.documents / SHARD_SIZE;
    let server = ServerProcess::start(plan.store).await?;
    let docs = (0..plan.documents).map(|i| (doc_id(i), json!({"ownerId": OWNER, "lastEventSeq": (i / SHARD_SIZE).to_string(), "title": "initial", "eventCount": "0"})));
    server
        .populate("run_summary", docs, POPULATE_OPS_PER_COMMIT)
        .await?;

    // The client subscribes, takes its view, and goes away.
    let subscriptions: Vec<wire::Subscribe> = (0..shards).map(shard).collect();
    let (held, _) = catch_up(
        &server,
        plan.codec,
        View::default(),
        None,
        subscriptions.clone(),
        0,
    )
    .await?;
    let resume = wire::Resume {
        session_id: String::new(),
        watermark: held.watermark,
        subscriptions: subscriptions
            .iter()
            .map(|s| wire::Subscribe {
                held: held.subscriptions[&s.subscription_id].held(),
                ..s.clone()
            })
            .collect(),
    };
    let hello_bytes = plan.codec.encode_client(&wire::ClientMessage {
        message: Some(client_message::Message::Hello(wire::Hello {
            resume: Some(resume.clone()),
            ..Default::default()
        })),
    });

    // K writes while it is away.
    let ops_per_commit = if plan.changes <= SINGLE_OP_LIMIT {
        1
    } else {
        BATCH_OPS
    };
    let bar = crate::progress::bar(plan.changes, format!("resume k={}: writes", plan.changes));
    let mut changed = BTreeSet::new();
    let mut last_seq = held.watermark;
    let mut commits = 0;
    for batch in (0..plan.changes).collect::<Vec<_>>().chunks(ops_per_commit) {
        let ops = batch
            .iter()
            .map(|&j| {
                let id = doc_id(j * STRIDE % plan.documents);
                changed.insert(id.clone());
                json!({"patch": {"collection": "run_summary", "id": id, "fields": {"eventCount": j.to_string(), "title": format!("changed by write {j}")}}})
            })
            .collect();
        last_seq = server.mutate(ops).await?;
        commits += 1;
        bar.inc(batch.len() as u64);
    }
    bar.finish();

    let (resumed_view, resumed) =
        catch_up(&server, plan.codec, held, Some(resume), vec![], last_seq).await?;
    let (fresh_view, fresh) = catch_up(
        &server,
        plan.codec,
        View::default(),
        None,
        subscriptions,
        last_seq,
    )
    .await?;
    let contents = |view: &View| -> Vec<(String, u64, Value)> {
        view.subscriptions
            .values()
            .flat_map(|s| s.documents())
            .map(|d| (d.id.clone(), d.seq, d.doc.clone()))
            .collect()
    };
    let changed_json_bytes: usize = fresh_view
        .subscriptions
        .values()
        .flat_map(|s| s.documents())
        .filter(|d| changed.contains(&d.id))
        .map(|d| serde_json::to_vec(&d.doc).map(|v| v.len()).unwrap_or(0))
        .sum();
    Ok(json!({
        "scenario": "resume",
        "store": plan.store.name(),
        "codec": format!("{:?}", plan.codec).to_lowercase(),
        "documents_held": plan.documents,
        "subscriptions": shards,
        "changes": plan.changes,
        "commits": commits,
        "ops_per_commit": ops_per_commit,
        "changed_documents": changed.len(),
        "changed_documents_json_bytes": changed_json_bytes,
        "resume_hello_bytes": hello_bytes_len(&hello_bytes),
        "resume": resumed,
        "fresh": fresh,
        "ratio_resume_bytes_to_changed_json": resumed["bytes_received"].as_f64().map(|b| b / changed_json_bytes.max(1) as f64),
        "ratio_resume_to_fresh": {
            "bytes": crate::stats::ratio(&resumed["bytes_received"], &fresh["bytes_received"]),
            "seconds": crate::stats::ratio(&resumed["seconds"], &fresh["seconds"]),
        },
        "resumed_view_matches_fresh": contents(&resumed_view) == contents(&fresh_view),
        "note": "bytes_received counts everything read from the socket (upgrade response, frame headers, payloads); the resume hello is sent, not received",
    }))
}

fn hello_bytes_len(frame: &protosync_protocol::Frame) -> usize {
    match frame {
        protosync_protocol::Frame::Text(text) => text.len(),
        protosync_protocol::Frame::Binary(bytes) => bytes.len(),
    }
}

/// Connects (resuming `view` with `resume`, or subscribing to
/// `subscriptions` afresh) and reads until every subscription has its
/// result at a watermark ≥ `target`. Returns the view, checked and brought
/// up to date, and what it cost.
async fn catch_up(
    server: &ServerProcess,
    codec: Codec,
    mut view: View,
    resume: Option<wire::Resume>,
    subscriptions: Vec<wire::Subscribe>,
    target: u64,
) -> anyhow::Result<(View, Value)> {
    // Resumed subscriptions move with the watermark; fresh ones must each
    // have had their first result.
    let fresh: BTreeSet<String> = subscriptions
        .iter()
        .map(|s| s.subscription_id.clone())
        .collect();
    let started = Instant::now();
    let meter = server.meter()?;
    let work = async {
        let stream = clients::dial(server.addr, 0, None).await?;
        let (mut socket, welcome) = SyncSocket::connect(server, stream, codec, resume).await?;
        for subscribe in subscriptions {
            socket
                .send(client_message::Message::Subscribe(subscribe))
                .await?;
        }
        let mut transitions = Vec::new();
        let mut answered = BTreeSet::new();
        loop {
            match socket.receive().await? {
                Received::Transition(t) => {
                    answered.extend(
                        t.updates
                            .iter()
                            .filter(|u| u.reset)
                            .map(|u| u.subscription_id.clone()),
                    );
                    let to = t.to_watermark;
                    transitions.push(t);
                    if to >= target && answered.is_superset(&fresh) {
                        break;
                    }
                }
                Received::Other(wire::ServerMessage {
                    message: Some(wire::server_message::Message::Error(e)),
                }) => bail!("{}: {}", e.code, e.message),
                Received::Other(_) => {}
            }
        }
        anyhow::Ok((socket, welcome, transitions))
    };
    let (socket, welcome, transitions) = tokio::time::timeout(CATCH_UP_TIMEOUT, work)
        .await
        .map_err(|_| anyhow!("no catch-up within {CATCH_UP_TIMEOUT:?}"))??;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.cpu_core_seconds()?;
    let bytes = socket.bytes_received();
    socket.close().await;
    // As the reference client does: a welcome at another watermark means
    // the server did not take ours.
    view.watermark = welcome.watermark;
    for transition in &transitions {
        view.apply(transition)
            .map_err(|e| anyhow!("the server's transition does not apply: {e}"))?;
    }
    let cost = json!({
        "seconds": seconds,
        "bytes_received": bytes,
        "transitions": transitions.len(),
        "documents_received": transitions.iter().flat_map(|t| &t.updates).map(|u| u.upserts.len()).sum::<usize>(),
        "server_cpu_core_seconds": cpu,
    });
    Ok((view, cost))
}
