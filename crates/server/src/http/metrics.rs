//! `GET /metrics`: gauges and counters in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

/// Figures the embedding binary adds (its allocator's): name, help, value.
pub type MemoryProbe = Arc<dyn Fn() -> Vec<(&'static str, &'static str, u64)> + Send + Sync>;

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (buffer_bytes, buffer_commits) = state.engine.commit_buffer();
    let sync = &state.metrics;
    let mut figures = vec![
        (
            "protosync_connections",
            "gauge",
            "Open sync connections (WebSocket).",
            sync.connections.load(Ordering::Relaxed),
        ),
        (
            "protosync_queued_frames",
            "gauge",
            "Frames waiting to be written, across connections.",
            sync.queued_frames.load(Ordering::Relaxed),
        ),
        (
            "protosync_transitions_sent_total",
            "counter",
            "Transitions sent since start.",
            sync.transitions_sent.load(Ordering::Relaxed),
        ),
        (
            "protosync_head_seq",
            "gauge",
            "The newest seq this process has read from the commit stream.",
            state.engine.tail().0,
        ),
        (
            "protosync_commit_buffer_bytes",
            "gauge",
            "Estimated bytes of the recent commits kept in memory.",
            buffer_bytes as u64,
        ),
        (
            "protosync_commit_buffer_commits",
            "gauge",
            "Recent commits kept in memory.",
            buffer_commits as u64,
        ),
    ];
    if let Some(probe) = &state.memory {
        figures.extend(probe().into_iter().map(|(n, h, v)| (n, "gauge", h, v)));
    }
    let mut text = String::new();
    for (name, kind, help, value) in figures {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
