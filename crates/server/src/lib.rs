//! The gateway: the HTTP API for services and one-shot reads, health and
//! readiness. It parses requests, calls the engine and renders answers and
//! errors; it holds no state of its own.

mod http;

use std::future::Future;
use std::sync::Arc;

use protosync_engine::Engine;
use tokio::net::TcpListener;

pub use http::router;

/// Serves `engine` on `listener` until `shutdown` completes, then finishes
/// in-flight requests.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(engine)).with_graceful_shutdown(shutdown).await
}
