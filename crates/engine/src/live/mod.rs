//! Live queries: how commits reach subscribers.
//!
//! - [`bodies`]: one shared copy of each state of a document, however many
//!   subscriptions hold it.
//! - [`commit_stream`]: one tailer per process reads the store's change log in
//!   seq order (the only way changes reach subscribers), keeps recent commits
//!   in memory and publishes how far it has read.
//! - [`subscription_index`]: the subscription index finds, per change, the connections
//!   whose subscriptions it can affect (by collection, by equality-filter
//!   values, by held document ids) and rings their doorbell. It never blocks
//!   on a connection and never builds a message.
//! - [`subscription`]: one subscription's view — its window of the result,
//!   maintained incrementally, refilled from the store when it runs short.
//! - [`view`]: one connection's subscriptions, advanced together from
//!   watermark to watermark; each connection does this at its own pace,
//!   coalescing whatever piled up, so a slow client delays no one else.

pub mod bodies;
pub mod commit_stream;
pub mod subscription;
pub mod subscription_index;
pub mod view;

use std::sync::{Arc, OnceLock};

use protosync_core::{Seq, Version};
use serde_json::Value;

/// A commit as the live path holds it: bodies shared by every subscriber.
#[derive(Debug)]
pub struct LiveCommit {
    /// The commit's seq.
    pub seq: Seq,
    /// Its document changes, in the order the commit wrote them.
    pub changes: Vec<LiveChange>,
    /// Estimated size in memory, for the commit buffer's byte budget.
    pub bytes: usize,
}

/// One document write of a [`LiveCommit`].
#[derive(Debug, Clone)]
pub struct LiveChange {
    /// The document's collection.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// The document's version after the write.
    pub version: Version,
    /// `None` when the commit deleted the document.
    pub body: Option<Arc<LiveBody>>,
}

/// A document body as the live path holds it: one copy shared by every
/// subscriber, with room for its wire encoding, made once by the first
/// connection that sends it and reused by all the others.
#[derive(Debug)]
pub struct LiveBody {
    value: Value,
    encoded: OnceLock<String>,
}

impl LiveBody {
    /// A body not yet encoded.
    pub fn new(value: Value) -> LiveBody {
        LiveBody {
            value,
            encoded: OnceLock::new(),
        }
    }

    /// The body as `encode` renders it, computed once per body. Every
    /// caller must pass the same encoding.
    pub fn encoded(&self, encode: impl FnOnce(&Value) -> String) -> &str {
        self.encoded.get_or_init(|| encode(&self.value))
    }
}

impl std::ops::Deref for LiveBody {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

impl PartialEq for LiveBody {
    fn eq(&self, other: &LiveBody) -> bool {
        self.value == other.value
    }
}

/// A document in a subscriber's view.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDocument {
    /// The document's id.
    pub id: String,
    /// Its version.
    pub version: Version,
    /// The commit that last wrote it: identifies this state of the document.
    pub seq: Seq,
    /// Its body, shared with every other holder of this state.
    pub body: Arc<LiveBody>,
}

impl LiveCommit {
    /// The live form of a commit read from the log, its bodies shared
    /// through `bodies`.
    pub fn from_record(
        record: protosync_store::CommitRecord,
        bodies: &bodies::SharedBodies,
    ) -> LiveCommit {
        let seq = record.seq;
        let mut bytes = std::mem::size_of::<LiveCommit>();
        let changes = record
            .changes
            .into_iter()
            .map(|c| {
                bytes += std::mem::size_of::<LiveChange>()
                    + c.collection.len()
                    + c.id.len()
                    + c.body.as_ref().map_or(0, |b| {
                        // Twice the value: once sent, a body also keeps its
                        // wire encoding, about as large as the value.
                        std::mem::size_of::<LiveBody>() + 2 * value_bytes(b)
                    });
                LiveChange {
                    body: c.body.map(|b| bodies.share(&c.collection, &c.id, seq, b)),
                    collection: c.collection,
                    id: c.id,
                    version: c.version,
                }
            })
            .collect();
        LiveCommit {
            seq,
            changes,
            bytes,
        }
    }
}

/// An estimate of a JSON value's size in memory: its node plus what it owns
/// (strings, entries, elements). Ignores allocator rounding and tree slack,
/// which a budget can absorb.
fn value_bytes(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value_bytes).sum(),
            Value::Object(entries) => entries
                .iter()
                .map(|(k, v)| std::mem::size_of::<String>() + k.len() + value_bytes(v))
                .sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
}
