//! The gateway: the HTTP API for services and one-shot reads, the sync
//! protocol over WebSocket, health and readiness. It parses requests, calls
//! the engine and renders answers and errors; the live state of a connection
//! lives in its engine session.

mod http;
pub mod sync;

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRef;
use axum::Router;
use protosync_engine::Engine;
use tokio::net::TcpListener;

pub use sync::{SyncConfig, SyncMetrics};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub sync: Arc<SyncConfig>,
    pub metrics: Arc<SyncMetrics>,
    /// Becomes true when the server starts shutting down: live connections
    /// close (1001) so the graceful shutdown can finish.
    pub closing: tokio::sync::watch::Receiver<bool>,
    close: Arc<tokio::sync::watch::Sender<bool>>,
}

impl FromRef<AppState> for Arc<Engine> {
    fn from_ref(state: &AppState) -> Arc<Engine> {
        state.engine.clone()
    }
}

impl AppState {
    pub fn new(engine: Arc<Engine>, sync: SyncConfig) -> AppState {
        let (close, closing) = tokio::sync::watch::channel(false);
        AppState { engine, sync: Arc::new(sync), metrics: Arc::new(SyncMetrics::default()), closing, close: Arc::new(close) }
    }
}

pub fn router(state: AppState) -> Router {
    http::router(state)
}

/// Serves on `listener` until `shutdown` completes, then closes live
/// connections and finishes in-flight requests.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let close = state.close.clone();
    let signal = async move {
        shutdown.await;
        close.send_replace(true);
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(signal).await
}
