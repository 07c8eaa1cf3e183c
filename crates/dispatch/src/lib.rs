//! Dispatch: the engine never runs user code, so what an app does on the
//! server side runs in its own backend, and this crate calls it.
//!
//! - [`backend`]: the configured backends (base URL, signing secret);
//! - [`signing`]: the request signature (HMAC-SHA256 over a timestamp and
//!   the body) every backend checks;
//! - `forward`: one signed POST with a timeout and a bounded answer;
//! - [`schedule`]: the scheduler, calling scheduled actions at their
//!   ticks once per cluster (claimed in the store, taken over after a lease);
//! - [`trigger`]: the triggers, forwarding committed changes from the
//!   change log, in seq order, from a checkpoint in the store;
//! - [`Dispatcher`] (`call`): an action call end to end — look the action
//!   up, validate the arguments, apply its allow rule, answer a retried
//!   idempotency key from the store, forward, validate the result.
//!
//! It speaks HTTP only to backends; it never touches SQL (the store keeps
//! completed calls) and never speaks to clients (the gateway does).

pub mod backend;
mod call;
mod error;
mod forward;
pub mod schedule;
pub mod signing;
pub mod trigger;

pub use backend::{Backend, BackendConfig, Backends};
pub use call::{CallOutcome, CallRequest, Dispatcher, MAX_RESULT_BYTES};
pub use error::CallError;
