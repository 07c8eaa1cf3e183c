//! What does an idle connection cost the server in memory? C connections
//! each authenticate, hold one subscription and then only ping; the
//! server's resident memory after they settle, less its memory with one
//! warm connection, divided by C. Target: ≤ 16 KiB per connection.

use std::time::Duration;

use protosync_protocol::Codec;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::clients;
use crate::server::{OWNER, ServerProcess};
use crate::stores::StoreKind;

/// Time for the server to finish the work connecting left behind (freed
/// buffers, allocator caches) before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// The document every idle connection's subscription holds.
const IDLE_DOC: &str = "idle";
/// Target memory per idle connection (issue #5).
const TARGET_BYTES_PER_CONNECTION: u64 = 16 * 1024;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub store: StoreKind,
    pub codec: Codec,
    pub connections: usize,
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<Value> {
    let server = ServerProcess::start(plan.store).await?;
    server
        .populate(
            "run_summary",
            std::iter::once((
                IDLE_DOC.to_owned(),
                json!({"ownerId": OWNER, "title": "idle"}),
            )),
            1,
        )
        .await?;
    let subscription = |_| vec![clients::get("idle", IDLE_DOC)];
    let warm = clients::open_many(
        &server,
        1,
        plan.codec,
        subscription,
        "idle: warm connection",
    )
    .await?;
    let (tx, _receipts) = mpsc::unbounded_channel();
    let _warm = clients::read_receipts(warm, 0, tx.clone());
    tokio::time::sleep(SETTLE).await;
    let before = server.rss_bytes()?;
    let meter = server.meter()?;
    let sockets = clients::open_many(
        &server,
        plan.connections,
        plan.codec,
        subscription,
        &format!("idle c={}: connect", plan.connections),
    )
    .await?;
    let connecting = meter.seconds();
    let _idle = clients::read_receipts(sockets, 1, tx);
    tokio::time::sleep(SETTLE).await;
    let after = server.rss_bytes()?;
    let per_connection = after.saturating_sub(before) / plan.connections.max(1) as u64;
    Ok(json!({
        "scenario": "idle",
        "store": plan.store.name(),
        "codec": format!("{:?}", plan.codec).to_lowercase(),
        "connections": plan.connections,
        "connect_seconds": connecting,
        "settle_seconds": SETTLE.as_secs_f64(),
        "rss_bytes_before": before,
        "rss_bytes_after": after,
        "bytes_per_connection": per_connection,
        "target_bytes_per_connection": TARGET_BYTES_PER_CONNECTION,
        "meets_target": per_connection <= TARGET_BYTES_PER_CONNECTION,
        "server": meter.report()?,
    }))
}
