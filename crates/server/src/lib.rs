//! The gateway: the HTTP API for services and one-shot reads, the sync
//! protocol over WebSocket, health and readiness. It parses requests, calls
//! the engine and renders answers and errors; the live state of a connection
//! lives in its engine's live view.

pub(crate) mod http;
mod limiter;
mod listener;
pub mod revocations;
pub mod sync;

use protosync_core::ErrorCode;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use protosync_auth::Authenticator;
use protosync_dispatch::{Backends, Dispatcher};
use protosync_engine::Engine;
use tokio::net::TcpListener;

pub use http::metrics::MemoryProbe;
pub use sync::{SyncConfig, SyncMetrics};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine every request goes through.
    pub engine: Arc<Engine>,
    /// Who is calling, for every transport.
    pub auth: Arc<Authenticator>,
    /// Forwards action calls to the app's backends.
    pub actions: Arc<Dispatcher>,
    /// This process's name in the schedules' run history: random per start.
    pub node: String,
    anonymous: Arc<limiter::AnonymousLimiter>,
    /// Timers and limits of sync connections (and the anonymous rate limit).
    pub sync: Arc<SyncConfig>,
    /// The sync gateway's counters, shared with `/metrics`.
    pub metrics: Arc<SyncMetrics>,
    /// Becomes true when the server starts shutting down: live connections
    /// close (1001) so the graceful shutdown can finish.
    pub closing: tokio::sync::watch::Receiver<bool>,
    close: Arc<tokio::sync::watch::Sender<bool>>,
    /// The allocator's figures for `/metrics`, when the binary has them.
    memory: Option<MemoryProbe>,
}

impl FromRef<AppState> for Arc<Engine> {
    fn from_ref(state: &AppState) -> Arc<Engine> {
        state.engine.clone()
    }
}

impl AppState {
    /// The state of a gateway over `engine`, not yet closing, without
    /// allocator figures and without backends (every action call answers
    /// `ACTION_UNAVAILABLE` until [`AppState::with_backends`]).
    pub fn new(engine: Arc<Engine>, sync: SyncConfig, auth: Authenticator) -> AppState {
        let (close, closing) = tokio::sync::watch::channel(false);
        let anonymous = Arc::new(limiter::AnonymousLimiter::new(
            sync.anonymous_requests_per_minute,
        ));
        AppState {
            actions: Arc::new(Dispatcher::new(engine.clone(), Backends::default())),
            node: format!("node-{:08x}", rand::random::<u32>()),
            engine,
            auth: Arc::new(auth),
            anonymous,
            sync: Arc::new(sync),
            metrics: Arc::new(SyncMetrics::default()),
            closing,
            close: Arc::new(close),
            memory: None,
        }
    }

    /// Forwards action calls to `backends` (check them against the schema
    /// first with [`Backends::check`]).
    pub fn with_backends(mut self, backends: Backends) -> AppState {
        self.actions = Arc::new(Dispatcher::new(self.engine.clone(), backends));
        self
    }

    /// Adds the allocator's figures to `/metrics`.
    pub fn with_memory_probe(mut self, probe: MemoryProbe) -> AppState {
        self.memory = Some(probe);
        self
    }

    /// The identity of an HTTP request, from its Authorization header;
    /// anonymous requests count against their address's rate limit.
    pub(crate) async fn identity(
        &self,
        headers: &axum::http::HeaderMap,
        peer: std::net::SocketAddr,
    ) -> Result<protosync_auth::Identity, protosync_engine::EngineError> {
        // Every value, as bytes: an unreadable or repeated header is refused
        // by the authenticator, never taken for "no credentials".
        let values: Vec<&[u8]> = headers
            .get_all(axum::http::header::AUTHORIZATION)
            .iter()
            .map(axum::http::HeaderValue::as_bytes)
            .collect();
        let identity = self.auth.authorization(&values).await.map_err(auth_error)?;
        if identity == protosync_auth::Identity::Anonymous {
            self.admit_anonymous(peer)?;
        }
        Ok(identity)
    }

    pub(crate) fn admit_anonymous(
        &self,
        peer: std::net::SocketAddr,
    ) -> Result<(), protosync_engine::EngineError> {
        if self.anonymous.allow(peer.ip()) {
            Ok(())
        } else {
            Err(protosync_engine::EngineError::Forbidden {
                code: ErrorCode::RateLimited,
                message: format!(
                    "more than {} anonymous requests per minute from {}",
                    self.sync.anonymous_requests_per_minute,
                    peer.ip()
                ),
            })
        }
    }
}

pub(crate) fn auth_error(e: protosync_auth::AuthError) -> protosync_engine::EngineError {
    protosync_engine::EngineError::Forbidden {
        code: e.code,
        message: e.message,
    }
}

/// Every route of the gateway (HTTP API, `/v1/sync`, SSE, health, metrics) behind the
/// origin check; [`serve`] runs it, or an app can nest it in its own axum router.
pub fn router(state: AppState) -> Router {
    http::router(state)
}

/// Serves on `listener` until `shutdown` completes, then closes live
/// connections and finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Revocations from the store are loaded before the first request is
    // accepted, so a restart never lets a revoked token through.
    let revocations = revocations::follow(state.engine.clone(), state.auth.clone())
        .await
        .map_err(std::io::Error::other)?;
    // Scheduled actions run while the node serves, and stop with it.
    let _scheduler = AbortOnDrop(tokio::spawn(protosync_dispatch::schedule::run(
        state.actions.clone(),
        state.node.clone(),
    )));
    // So do triggers, from their checkpoints in the store.
    let _triggers = AbortOnDrop(tokio::spawn(protosync_dispatch::trigger::run(
        state.actions.clone(),
        state.node.clone(),
    )));
    let close = state.close.clone();
    let metrics = state.metrics.clone();
    let signal = async move {
        shutdown.await;
        close.send_replace(true);
    };
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Nagle's algorithm holds a frame written while the previous one is
    // unacknowledged until the peer's delayed ACK (~40 ms on Linux): a
    // mutation's result and its read-your-writes transition are two frames.
    let listener =
        axum::serve::ListenerExt::tap_io(listener::GatewayListener(listener), |socket| {
            if let Err(e) = socket.get_ref().set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY could not be set");
            }
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await?;
    // Upgraded connections outlive axum's graceful shutdown: give them time
    // to send their close frames before the process exits.
    let all_closed = async {
        loop {
            // Register before checking, so an end between the two is not missed.
            let ended = metrics.connection_ended.notified();
            if metrics
                .connections
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
            {
                return;
            }
            ended.await;
        }
    };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, all_closed).await;
    revocations.abort();
    Ok(())
}

/// Stops a background task when the server stops, on every way out.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The largest request head (request line and headers) hyper reads, in
/// bytes: its default buffer limit.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// How long shutdown waits for live connections to close.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
