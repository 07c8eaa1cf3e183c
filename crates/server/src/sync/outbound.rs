//! A connection's outbound queue and its writer: backpressure.
//!
//! Frames wait in a bounded queue (`SyncConfig::outbound_queue_frames`);
//! while it is full the connection builds no transitions, so news coalesces
//! into the next one instead of growing memory. The writer sends frames one
//! at a time; a frame the client does not take within the write timeout
//! ends the connection (4008). It never decides what to send.

use std::sync::atomic::Ordering;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use protosync_protocol::wire;
use protosync_protocol::{Codec, Frame};
use tokio::sync::mpsc;

use super::close_code;
use crate::AppState;

/// Kept small: every connection's queue allocates room for a block of them.
pub(super) enum Outbound {
    Message(Box<wire::ServerMessage>),
    /// Already encoded for this connection's codec.
    Frame(Frame),
    Close(u16, String),
}

/// Writes queued frames; a frame the client does not take in time ends the
/// connection (the client stopped reading).
pub(super) async fn write_frames(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    codec: Codec,
    state: AppState,
) {
    while let Some(item) = queue.recv().await {
        state.metrics.queued_frames.fetch_sub(1, Ordering::Relaxed);
        let frame = match item {
            Outbound::Message(message) => codec.encode_server(&message),
            Outbound::Frame(frame) => frame,
            Outbound::Close(code, reason) => {
                let _ = tokio::time::timeout(
                    state.sync.write_timeout,
                    sink.send(Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }))),
                )
                .await;
                break;
            }
        };
        let message = match frame {
            Frame::Text(text) => Message::Text(text.into()),
            Frame::Binary(bytes) => Message::Binary(bytes.into()),
        };
        match tokio::time::timeout(state.sync.write_timeout, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::info!("closing a sync connection whose client stopped reading");
                let close = Message::Close(Some(CloseFrame {
                    code: close_code::SLOW_CONSUMER,
                    reason: "the client stopped reading".into(),
                }));
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), sink.send(close)).await;
                break;
            }
        }
    }
    // Drain so the queued-frames gauge stays true.
    queue.close();
    while queue.recv().await.is_some() {
        state.metrics.queued_frames.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn enqueue(
    outbound: &mpsc::Sender<Outbound>,
    state: &AppState,
    item: Outbound,
) -> bool {
    state.metrics.queued_frames.fetch_add(1, Ordering::Relaxed);
    if outbound.send(item).await.is_err() {
        state.metrics.queued_frames.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    // Read after the send: before it, a frame waiting for room would count
    // as queued although the channel holds at most its capacity.
    let queued = (state.sync.outbound_queue_frames - outbound.capacity()) as u64;
    state
        .metrics
        .peak_queued_frames_per_connection
        .fetch_max(queued, Ordering::Relaxed);
    true
}
