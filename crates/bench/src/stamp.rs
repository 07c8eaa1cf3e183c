//! One clock for the whole bench process. A writer stamps each write with
//! its commit number and the moment it issued it; a reader subtracts the
//! stamp from the moment it received the write. Writers and readers share
//! this process's monotonic clock, so no clock skew enters a latency.
//!
//! The same stamped document is what protosync stores and what the
//! baselines publish, so every system carries the same payload.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::server::OWNER;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the bench started, on the monotonic clock.
pub(crate) fn now_ms() -> f64 {
    EPOCH.elapsed().as_secs_f64() * 1000.0
}

/// A `run_summary` document carrying commit `commit`, stamped now. The
/// commit number goes in `eventCount`, the stamp in `title`.
pub(crate) fn document(commit: u64) -> Value {
    json!({"ownerId": OWNER, "eventCount": commit.to_string(), "title": format!("{:.4}", now_ms())})
}

/// The (commit, issued-at ms) of a stamped document's fields, as JSON
/// values (int64 comes back as a string in canonical JSON).
pub(crate) fn read(event_count: Option<&Value>, title: Option<&Value>) -> Option<(u64, f64)> {
    let commit = match event_count? {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_f64()? as u64,
        _ => return None,
    };
    let sent = title?.as_str()?.parse().ok()?;
    Some((commit, sent))
}

/// One subscriber's receipt of one commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Receipt {
    pub subscriber: usize,
    pub commit: u64,
    pub latency_ms: f64,
}

impl Receipt {
    /// A receipt of the stamped `(commit, sent)`, received now.
    pub(crate) fn now(subscriber: usize, (commit, sent): (u64, f64)) -> Receipt {
        Receipt {
            subscriber,
            commit,
            latency_ms: now_ms() - sent,
        }
    }
}

/// How long the receipts may stop flowing before collecting gives up on
/// the subscribers that have not seen the last commit.
const QUIET_TIMEOUT: Duration = Duration::from_secs(10);

/// Receipts until `subscribers` distinct subscribers have seen commit
/// `last` (coalescing may skip others, never the newest), or until nothing
/// arrives for [`QUIET_TIMEOUT`], or `deadline`.
pub(crate) async fn collect(
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
    subscribers: usize,
    last: u64,
    deadline: Instant,
    phase: &str,
) -> Vec<Receipt> {
    let bar = crate::progress::bar(subscribers, phase);
    let mut all = Vec::new();
    let mut done = HashSet::new();
    while done.len() < subscribers {
        let wait = QUIET_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, receipts.recv()).await {
            Ok(Some(receipt)) => {
                if receipt.commit == last && done.insert(receipt.subscriber) {
                    bar.inc(1);
                }
                all.push(receipt);
            }
            _ => break,
        }
    }
    bar.finish();
    all
}
