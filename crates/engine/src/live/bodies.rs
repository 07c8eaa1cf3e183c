//! Shared document bodies: one copy of each state of a document in memory,
//! however many subscriptions hold it.
//!
//! Commits carry one body per change, shared by every subscriber; but a
//! window filled from the store (a new subscription, a refill, a resume)
//! reads its documents afresh. Without sharing, 2,000 subscriptions over the
//! same 100 KiB documents held 2,000 copies each (and 2,000 encodings): 2.3
//! GiB instead of a few MiB. Bodies are keyed by (collection, id, seq): one
//! seq of a document is one state, so equal keys mean equal bodies.
//!
//! The table holds weak references: a body lives as long as a subscription
//! or the commit buffer holds it, and the table never keeps one alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use protosync_core::Seq;
use serde_json::Value;

use super::LiveBody;

/// Entries whose bodies were dropped are swept when the table has grown to
/// this many times its size after the last sweep, so sweeping costs O(1)
/// per insert on average and the table stays within a constant factor of
/// the bodies alive.
const SWEEP_GROWTH_FACTOR: usize = 2;
/// No sweep below this many entries: small tables are cheap as they are.
const MIN_SWEEP_ENTRIES: usize = 1024;

/// A weak table of the document bodies in memory, by (collection, id) and the seq that
/// wrote them: a body read again while a copy is alive is that copy, so memory grows
/// with distinct document states, not with subscriptions.
#[derive(Default)]
pub struct SharedBodies {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    bodies: HashMap<(String, String), (Seq, Weak<LiveBody>)>,
    swept_at: usize,
}

impl SharedBodies {
    /// The shared body of `collection`/`id` as written by commit `seq`:
    /// the one already in memory, or `body`, which becomes the shared one.
    pub fn share(&self, collection: &str, id: &str, seq: Seq, body: Value) -> Arc<LiveBody> {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (collection.to_owned(), id.to_owned());
        if let Some((known, weak)) = table.bodies.get(&key)
            && *known == seq
            && let Some(shared) = weak.upgrade()
        {
            return shared;
        }
        let shared = Arc::new(LiveBody::new(body));
        table.bodies.insert(key, (seq, Arc::downgrade(&shared)));
        if table.bodies.len() >= MIN_SWEEP_ENTRIES
            && table.bodies.len() >= table.swept_at * SWEEP_GROWTH_FACTOR
        {
            table.bodies.retain(|_, (_, weak)| weak.strong_count() > 0);
            table.swept_at = table.bodies.len();
        }
        shared
    }

    /// Entries in the table (alive or not yet swept), for tests.
    pub fn entries(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bodies
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_state_of_a_document_is_held_once() {
        let bodies = SharedBodies::default();
        let a = bodies.share("items", "x", Seq(3), json!({"n": 1}));
        let b = bodies.share("items", "x", Seq(3), json!({"n": 1}));
        assert!(Arc::ptr_eq(&a, &b), "the same state is shared");
        let newer = bodies.share("items", "x", Seq(4), json!({"n": 2}));
        assert!(!Arc::ptr_eq(&a, &newer), "another seq is another state");
        drop((a, b, newer));
        let again = bodies.share("items", "x", Seq(3), json!({"n": 1}));
        assert_eq!(
            Arc::strong_count(&again),
            1,
            "a dropped body is not kept alive"
        );
    }

    #[test]
    fn dropped_bodies_are_swept() {
        let bodies = SharedBodies::default();
        for i in 0..100_000 {
            bodies.share("items", &format!("d{i}"), Seq(1), json!({}));
        }
        assert!(
            bodies.entries() < 2 * MIN_SWEEP_ENTRIES,
            "{} entries for no live body",
            bodies.entries()
        );
    }
}
