//! A Rust client for protosync's sync protocol (docs/protocol.md).
//!
//! - [`Connection`]: one WebSocket: hello/welcome, frames in and out,
//!   chunked transitions assembled. No retries; for protocol tests and tools.
//! - [`Client`]: what an application (or a backend service) holds: a view of
//!   its subscriptions kept live across reconnects (exponential backoff with
//!   jitter, resume with the documents it holds), and mutations that resolve
//!   only once the view includes them (read-your-writes), resent with their
//!   idempotency key after a reconnect.

mod client;
mod connection;
mod view;

pub use client::{CallError, Client, ClientConfig, ClientEvent, MutationError, op};
pub use connection::{Connection, ConnectionError, Incoming, Received};
pub use protosync_protocol::wire;
pub use view::{SubscriptionView, View, ViewDocument};
