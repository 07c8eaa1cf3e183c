//! The sync protocol over WebSocket at `/v1/sync` (docs/protocol.md).

mod connection;
pub mod convert;
mod handshake;
mod inbound;
mod mutation_budget;
mod outbound;
pub mod sse;
pub mod transition;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use protosync_protocol::{BINARY_SUBPROTOCOL, Codec, JSON_SUBPROTOCOL};

use crate::AppState;

/// A connection's socket read buffer. tungstenite's default (128 KiB) is
/// allocated per connection and zero-filled before every read: most of an
/// idle connection's memory, and the top cost of fan-out in profiles.
/// Client frames are small; a larger one still arrives whole (the buffer
/// grows for it).
const READ_BUFFER_BYTES: usize = 1024;

/// Timing and size limits of sync connections. The defaults suit production;
/// tests shorten the timers.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How often the server sends a heartbeat (and, when the client's
    /// watermark lags, an empty transition to move it on). Default 15 s.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing for this long is closed (4009). Default 60 s.
    pub idle_timeout: Duration,
    /// The first message must be a hello within this time (4001). Default 10 s.
    pub hello_timeout: Duration,
    /// A frame the client does not accept within this time closes the
    /// connection (4008): the client has stopped reading. Default 30 s.
    pub write_timeout: Duration,
    /// Frames waiting to be written per connection. While full, the
    /// connection builds no transitions; news coalesces into the next one. Default 32.
    pub outbound_queue_frames: usize,
    /// Mutations one connection may have in flight. Default 32.
    pub max_inflight_mutations: usize,
    /// Action calls one connection may have in flight. Each runs in its own
    /// task, so a slow backend delays only its own answers; the bound keeps
    /// one client from holding many backend requests open. Default 16.
    pub max_inflight_calls: usize,
    /// Largest frame a client may send, in bytes. Default
    /// [`MAX_REQUEST_BYTES`](protosync_engine::limits::MAX_REQUEST_BYTES), 8 MiB.
    pub max_frame_bytes: usize,
    /// Mutations per second one connection may send (bursts of twice that). Default 100.
    pub max_mutations_per_second: u32,
    /// Anonymous HTTP requests and sync connections per minute from one
    /// address (bursts of ten seconds' worth). Default 600.
    pub anonymous_requests_per_minute: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            outbound_queue_frames: 32,
            max_inflight_mutations: 32,
            max_inflight_calls: 16,
            max_frame_bytes: protosync_engine::limits::MAX_REQUEST_BYTES,
            max_mutations_per_second: 100,
            anonymous_requests_per_minute: 600,
        }
    }
}

/// Counters of the sync gateway, for metrics and for tests that check
/// memory stays bounded.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    /// WebSocket sync connections open now.
    pub connections: AtomicU64,
    /// Notified whenever a connection ends (shutdown waits on it).
    pub connection_ended: tokio::sync::Notify,
    /// Frames queued for writing, across connections.
    pub queued_frames: AtomicU64,
    /// The most frames ever queued for one connection.
    pub peak_queued_frames_per_connection: AtomicU64,
    /// Transitions sent on WebSockets since start (a chunked one counts once).
    pub transitions_sent: AtomicU64,
}

/// WebSocket close codes (docs/protocol.md).
pub mod close_code {
    /// The first message was not a hello, or none came in time.
    pub const HELLO_REQUIRED: u16 = 4001;
    /// The hello's token was refused.
    pub const UNAUTHENTICATED: u16 = 4003;
    /// The client stopped reading.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The client sent nothing for too long.
    pub const IDLE_TIMEOUT: u16 = 4009;
    /// The client speaks a protocol version this server does not.
    pub const UPGRADE_REQUIRED: u16 = 4010;
    /// A frame larger than the limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame that breaks RFC 6455 (an orphan continuation, a reserved
    /// opcode, reserved bits set, an unmasked client frame…).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
}

/// Upgrades to a sync connection; the `Origin` was checked for every route
/// (`http::cors`).
pub async fn upgrade(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The socket's credential is `Hello.token`; the upgrade's Authorization
    // header is not read (proxies add their own). But one that is there and
    // unreadable is refused as on HTTP, so garbage is never "no credentials".
    for value in headers.get_all(axum::http::header::AUTHORIZATION) {
        if let Err(e) = protosync_auth::authorization_header(&[value.as_bytes()]) {
            let error = crate::http::error::ApiError::from(crate::auth_error(e));
            return axum::response::IntoResponse::into_response(error);
        }
    }
    let config = state.sync.clone();
    let upgrade = upgrade
        .protocols([BINARY_SUBPROTOCOL, JSON_SUBPROTOCOL])
        .max_message_size(config.max_frame_bytes)
        .max_frame_size(config.max_frame_bytes)
        .read_buffer_size(READ_BUFFER_BYTES);
    let codec = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(BINARY_SUBPROTOCOL) => Codec::Binary,
        _ => Codec::Json,
    };
    upgrade.on_upgrade(move |socket| connection::run(socket, codec, state, peer))
}

/// Whether the moment `epoch_seconds` (a token's `exp`) has come: from then
/// on the token is expired on live connections and streams.
pub(crate) fn has_passed(epoch_seconds: u64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now >= std::time::Duration::from_secs(epoch_seconds)
}

/// Sleeps until `epoch_seconds` (forever when `None`).
pub(crate) async fn sleep_until_epoch(epoch_seconds: Option<u64>) {
    let Some(at) = epoch_seconds else {
        return std::future::pending().await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let wait = std::time::Duration::from_secs(at).saturating_sub(now);
    tokio::time::sleep(wait).await;
}
