//! An agent runtime, in miniature: it appends run and worker events to its
//! own log ([`log`]), folds them into the read models clients see
//! ([`read_models`]: `run_summary` and `codex_worker_summary` of the
//! example schema), and projects those through protosync's projection API
//! ([`projector`]), resuming from the checkpoint after a crash.
//!
//! The replay-parity test (`tests/replay_parity.rs`) holds the promise a
//! projector relies on: projecting the whole log from scratch leaves the
//! same documents as projecting it incrementally with duplicates, retries
//! out of order, a killed projector and a killed server in between.

pub mod log;
pub mod projector;
pub mod read_models;
