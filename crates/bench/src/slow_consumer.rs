//! Does one client that stops reading hurt the others? The fan-out runs
//! twice on fresh servers: without, then with one extra subscriber that
//! subscribes with a tiny receive buffer and never reads again. Before the
//! measured commits, a fill phase writes large documents only that
//! subscriber sees, so its socket buffers and its outbound queue are full
//! (the server's write to it blocked) while the healthy subscribers are
//! measured. Both runs write the fill, so the slow subscriber is the only
//! difference.
//!
//! Afterwards the harness waits for the server to give up on the slow
//! connection (docs/protocol.md: close 4008 after 30 s of a blocked write),
//! watching the server's side of the TCP connection in /proc/net/tcp,
//! since a client that does not read cannot see a close frame.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protosync_client::ConnectionError;
use protosync_client::wire::{self, client_message};
use serde_json::{Value, json};

use crate::clients::{self, SyncSocket};
use crate::fanout::{Fanout, Plan};
use crate::server::{OWNER, ServerProcess};
use crate::stats;

/// The slow subscriber's socket receive buffer (the kernel doubles it and
/// clamps it to its minimum).
const SLOW_RECEIVE_BUFFER: u32 = 4096;
/// The collection and document only the slow subscriber watches; another
/// collection than the fan-out's, so no healthy subscriber's query sees it.
const PAD_COLLECTION: &str = "codex_worker_summary";
const PAD_DOC: &str = "slow-pad";
/// Size of one fill write, and how many: 6.4 MiB offered, more than the
/// socket buffers and the 32-frame outbound queue hold.
const PAD_BYTES: usize = 64 * 1024;
const FILL_COMMITS: usize = 100;
/// How long to wait, from the end of the fill, for the server to close the
/// slow connection: its 30 s write timeout, plus margin.
const CLOSE_DEADLINE: Duration = Duration::from_secs(50);
/// How long reading the slow socket's backlog may take once it is closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server's side of the slow connection is looked up.
const CLOSE_POLL: Duration = Duration::from_millis(250);
/// What the server logs when it gives up on a client that stopped reading
/// (crates/server/src/sync/connection.rs), just before it sends 4008.
const SLOW_CLOSE_LOG: &str = "closing a sync connection whose client stopped reading";
/// TCP_ESTABLISHED in /proc/net/tcp.
const TCP_ESTABLISHED: u8 = 0x01;

pub(crate) async fn run(plan: Plan) -> anyhow::Result<Value> {
    let (without, _) = measure_once(plan, false).await?;
    let (with, slow) = measure_once(plan, true).await?;
    let ratio = |p: &str| stats::ratio(&with["latency_ms"][p], &without["latency_ms"][p]);
    Ok(json!({
        "scenario": "slow-consumer",
        "store": plan.store.name(),
        "codec": format!("{:?}", plan.codec).to_lowercase(),
        "healthy_subscribers": plan.subscribers,
        "commits": plan.commits,
        "without_slow": without,
        "with_slow": with,
        "ratio_with_to_without": {"p50": ratio("p50"), "p99": ratio("p99")},
        "slow_subscriber": slow,
    }))
}

/// One fan-out run; with `slow`, also what happened to the slow subscriber.
async fn measure_once(plan: Plan, slow: bool) -> anyhow::Result<(Value, Value)> {
    let mut fanout = Fanout::open(plan).await?;
    let slow_socket = match slow {
        true => Some(open_slow(&fanout.server, plan).await?),
        false => None,
    };
    let bar = crate::progress::bar(FILL_COMMITS, format!("slow-consumer slow={slow}: fill"));
    let pad = "x".repeat(PAD_BYTES);
    for _ in 0..FILL_COMMITS {
        let op = json!({"upsert": {"collection": PAD_COLLECTION, "id": PAD_DOC, "doc": {"ownerId": OWNER, "currentRunId": pad}}});
        fanout.server.mutate(vec![op]).await?;
        bar.inc(1);
    }
    bar.finish();
    let filled = Instant::now();
    let server_side = slow_socket
        .as_ref()
        .map(super::clients::SyncSocket::local_addr)
        .transpose()?
        .map(|client| (fanout.server.addr, client));
    let queued_at_start = server_side
        .and_then(|(server, client)| tcp_state(server, client))
        .map(|(_, queued)| queued);
    let mut result = fanout.measure().await?;
    result["slow_subscriber_present"] = json!(slow);
    let outcome = match (slow_socket, server_side) {
        (Some(socket), Some((server, client))) => {
            let mut outcome = wait_closed(socket, server, client, filled).await;
            outcome["server_send_queue_bytes_when_measuring"] = json!(queued_at_start);
            outcome["server_logged_slow_consumer_closes"] =
                json!(fanout.server.log_lines_containing(SLOW_CLOSE_LOG));
            outcome
        }
        _ => Value::Null,
    };
    Ok((result, outcome))
}

/// A subscriber of the fan-out query and the pad document that reads its
/// welcome and then nothing more.
async fn open_slow(server: &ServerProcess, plan: Plan) -> anyhow::Result<SyncSocket> {
    let stream = clients::dial(server.addr, plan.subscribers, Some(SLOW_RECEIVE_BUFFER)).await?;
    let (mut socket, _) = SyncSocket::connect(server, stream, plan.codec, None).await?;
    let pad = wire::Subscribe {
        subscription_id: "pad".into(),
        target: Some(wire::subscribe::Target::Get(wire::Get {
            collection: PAD_COLLECTION.into(),
            id: PAD_DOC.into(),
        })),
        held: vec![],
    };
    for subscribe in [
        crate::fanout::subscription(crate::fanout::FANOUT_COLLECTION),
        pad,
    ] {
        socket
            .send(client_message::Message::Subscribe(subscribe))
            .await?;
    }
    Ok(socket)
}

/// Waits until the server's side of the connection leaves ESTABLISHED,
/// then reads the backlog to see how the connection ended.
async fn wait_closed(
    mut socket: SyncSocket,
    server: SocketAddr,
    client: SocketAddr,
    filled: Instant,
) -> Value {
    let deadline = filled + CLOSE_DEADLINE;
    let closed_after = loop {
        match tcp_state(server, client) {
            Some((TCP_ESTABLISHED, _)) if Instant::now() < deadline => {
                tokio::time::sleep(CLOSE_POLL).await;
            }
            Some((TCP_ESTABLISHED, _)) => break None,
            _ => break Some(filled.elapsed().as_secs_f64()),
        }
    };
    let ending = tokio::time::timeout(DRAIN_TIMEOUT, async {
        loop {
            if let Err(e) = socket.receive().await {
                return e;
            }
        }
    })
    .await;
    let (close_code, close_reason, ended) = match ending {
        Ok(ConnectionError::Closed(Some((code, reason)))) => {
            (json!(code), json!(reason), "close frame")
        }
        Ok(ConnectionError::Closed(None)) => (
            Value::Null,
            Value::Null,
            "connection ended without a close frame",
        ),
        Ok(other) => (Value::Null, json!(other.to_string()), "error"),
        Err(_) => (Value::Null, Value::Null, "still open"),
    };
    json!({
        "server_closed": closed_after.is_some(),
        "seconds_from_fill_to_server_close": closed_after,
        "close_code": close_code,
        "close_reason": close_reason,
        "how_it_ended_for_the_client": ended,
        "bytes_received_before_end": socket.bytes_received(),
    })
}

/// The state and send-queue bytes of the TCP socket `local` → `remote`
/// (the server's side when `local` is the server), from /proc/net/tcp;
/// `None` once the socket is gone.
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<(u8, u64)> {
    let hex = |addr: SocketAddr| match addr {
        // /proc/net/tcp prints the IPv4 address as the in-memory u32.
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let queued = u64::from_str_radix(fields.get(4)?.split(':').next()?, 16).ok()?;
        Some((state, queued))
    })
}
