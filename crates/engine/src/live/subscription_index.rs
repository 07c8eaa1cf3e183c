//! The subscription index: from a change to the connections it can affect.
//!
//! A subscription is filed under one key: the values of one equality (or
//! `in`) condition, the id of a get, or — with no equality condition — the
//! whole collection. Subscriptions filed by value also file the ids of the
//! documents they hold, so a document that stops matching (its new value
//! files it elsewhere) still reaches the subscriptions that held it.
//!
//! Work per change: one hash lookup per indexed field of its collection, plus
//! the affected subscriptions. Unaffected subscriptions cost nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protosync_query::key::KeyValue;
use protosync_schema::DocKey;
use protosync_schema::FieldPath;
use tokio::sync::Notify;

use super::LiveCommit;

/// A live view's number in the index, unique in this process; given by
/// [`SubscriptionIndex::connect`].
pub type ConnectionId = u64;
/// (connection, subscription number within it)
pub type SubscriptionKey = (ConnectionId, u64);

/// "Nothing pending" for [`Doorbell::dirty_from`].
const CLEAN: u64 = u64::MAX;

/// How the index reaches a connection: the lowest seq with news for it,
/// and a wake-up. Ringing never blocks and never allocates.
#[derive(Debug)]
pub struct Doorbell {
    dirty_from: AtomicU64,
    /// The highest seq ever rung: taking `dirty_from` keeps only the lowest,
    /// so a view checks this to not lose a ring beyond its target.
    highest: AtomicU64,
    notify: Notify,
}

impl Doorbell {
    fn new() -> Doorbell {
        Doorbell {
            dirty_from: AtomicU64::new(CLEAN),
            highest: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// Marks commits from `seq` on as news and wakes the connection.
    pub fn ring(&self, seq: u64) {
        self.highest.fetch_max(seq, Ordering::AcqRel);
        self.dirty_from.fetch_min(seq, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// The highest seq ever rung.
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::Acquire)
    }

    /// Takes the lowest seq with news, if any.
    pub fn take(&self) -> Option<u64> {
        match self.dirty_from.swap(CLEAN, Ordering::AcqRel) {
            CLEAN => None,
            seq => Some(seq),
        }
    }

    /// Puts back news that was taken but not handled.
    pub fn restore(&self, seq: u64) {
        self.dirty_from.fetch_min(seq, Ordering::AcqRel);
    }

    /// The lowest seq with news, without taking it.
    pub fn peek(&self) -> Option<u64> {
        match self.dirty_from.load(Ordering::Acquire) {
            CLEAN => None,
            seq => Some(seq),
        }
    }

    /// Waits for the next ring (or returns at once for one that came since the last wait).
    pub async fn rung(&self) {
        self.notify.notified().await;
    }
}

/// Where a subscription is filed.
#[derive(Debug, Clone)]
pub enum Filing {
    /// Every change in the collection.
    Collection(String),
    /// Changes whose `field` has one of `values` (encoded keys), and changes
    /// to documents the subscription holds.
    Values {
        /// The collection.
        collection: String,
        /// The field of the subscription's first equality (or `in`) condition.
        field: FieldPath,
        /// The condition's values, each as its order-preserving key.
        values: Vec<Vec<u8>>,
    },
    /// Changes to one document.
    Document {
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
    },
}

/// Encoded value of a field → the subscriptions filing under it.
type ByValue = HashMap<Vec<u8>, HashSet<SubscriptionKey>>;

#[derive(Default)]
struct CollectionIndex {
    whole: HashSet<SubscriptionKey>,
    /// field (display form) → (its path, value key → subscriptions)
    by_value: HashMap<String, (FieldPath, ByValue)>,
    /// document id → subscriptions (gets, and holders of value-filed ones)
    by_id: HashMap<String, HashSet<SubscriptionKey>>,
    /// document id → subscriptions whose read rule looked it up: a change
    /// to it can change what their readers may see.
    dependents: HashMap<String, HashSet<SubscriptionKey>>,
}

impl CollectionIndex {
    fn is_empty(&self) -> bool {
        self.whole.is_empty()
            && self.by_value.is_empty()
            && self.by_id.is_empty()
            && self.dependents.is_empty()
    }
}

#[derive(Default)]
struct Inner {
    collections: HashMap<String, CollectionIndex>,
    doorbells: HashMap<ConnectionId, Arc<Doorbell>>,
    next_connection: ConnectionId,
}

/// Every live subscription of this process, filed so that a commit finds the
/// connections it can affect without looking at the others (see the module docs).
/// Shared by the commit stream, which dispatches, and the live views, which file and
/// unfile.
#[derive(Default)]
pub struct SubscriptionIndex {
    inner: Mutex<Inner>,
}

impl SubscriptionIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough maps; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a connection: its number and the doorbell the index rings for it.
    pub fn connect(&self) -> (ConnectionId, Arc<Doorbell>) {
        let mut inner = self.lock();
        inner.next_connection += 1;
        let id = inner.next_connection;
        let doorbell = Arc::new(Doorbell::new());
        inner.doorbells.insert(id, doorbell.clone());
        (id, doorbell)
    }

    /// Forgets a connection's doorbell; its subscriptions must be unfiled by their owner.
    pub fn disconnect(&self, connection: ConnectionId) {
        self.lock().doorbells.remove(&connection);
    }

    /// Files a subscription under `filing`, so changes there ring its connection.
    pub fn file(&self, key: SubscriptionKey, filing: &Filing) {
        let mut inner = self.lock();
        match filing {
            Filing::Collection(collection) => {
                inner
                    .collections
                    .entry(collection.clone())
                    .or_default()
                    .whole
                    .insert(key);
            }
            Filing::Values {
                collection,
                field,
                values,
            } => {
                let index = inner.collections.entry(collection.clone()).or_default();
                let (_, by_value) = index
                    .by_value
                    .entry(field.to_string())
                    .or_insert_with(|| (field.clone(), HashMap::new()));
                for value in values {
                    by_value.entry(value.clone()).or_default().insert(key);
                }
            }
            Filing::Document { collection, id } => {
                inner
                    .collections
                    .entry(collection.clone())
                    .or_default()
                    .by_id
                    .entry(id.clone())
                    .or_default()
                    .insert(key);
            }
        }
    }

    /// Removes a subscription filed with `filing`, and its held ids.
    pub fn unfile(
        &self,
        key: SubscriptionKey,
        filing: &Filing,
        held: impl IntoIterator<Item = String>,
    ) {
        let mut inner = self.lock();
        let collection = match filing {
            Filing::Collection(c)
            | Filing::Values { collection: c, .. }
            | Filing::Document { collection: c, .. } => c,
        };
        let Some(index) = inner.collections.get_mut(collection) else {
            return;
        };
        match filing {
            Filing::Collection(_) => {
                index.whole.remove(&key);
            }
            Filing::Values { field, values, .. } => {
                let name = field.to_string();
                if let Some((_, by_value)) = index.by_value.get_mut(&name) {
                    for value in values {
                        remove_from(by_value, value, &key);
                    }
                    if by_value.is_empty() {
                        index.by_value.remove(&name);
                    }
                }
                for id in held {
                    remove_from(&mut index.by_id, &id, &key);
                }
            }
            Filing::Document { id, .. } => remove_from(&mut index.by_id, id, &key),
        }
        if index.is_empty() {
            inner.collections.remove(collection);
        }
    }

    /// Records which documents a value-filed subscription gained and lost.
    pub fn update_held(
        &self,
        key: SubscriptionKey,
        collection: &str,
        gained: &[String],
        lost: &[String],
    ) {
        let mut inner = self.lock();
        let index = inner.collections.entry(collection.to_owned()).or_default();
        for id in gained {
            index.by_id.entry(id.clone()).or_default().insert(key);
        }
        for id in lost {
            remove_from(&mut index.by_id, id, &key);
        }
    }

    /// Records which looked-up documents a subscription's read rule gained
    /// and lost as dependencies.
    pub fn update_dependencies(&self, key: SubscriptionKey, gained: &[DocKey], lost: &[DocKey]) {
        let mut inner = self.lock();
        for dep in gained {
            inner
                .collections
                .entry(dep.collection.clone())
                .or_default()
                .dependents
                .entry(dep.id.clone())
                .or_default()
                .insert(key);
        }
        for dep in lost {
            if let Some(index) = inner.collections.get_mut(&dep.collection) {
                remove_from(&mut index.dependents, &dep.id, &key);
                if index.is_empty() {
                    inner.collections.remove(&dep.collection);
                }
            }
        }
    }

    /// Rings the doorbell of every connection `commit` can affect.
    pub fn dispatch(&self, commit: &LiveCommit) {
        let inner = self.lock();
        let mut affected: HashSet<ConnectionId> = HashSet::new();
        for change in &commit.changes {
            let Some(index) = inner.collections.get(&change.collection) else {
                continue;
            };
            affected.extend(index.whole.iter().map(|k| k.0));
            if let Some(subs) = index.by_id.get(&change.id) {
                affected.extend(subs.iter().map(|k| k.0));
            }
            if let Some(subs) = index.dependents.get(&change.id) {
                affected.extend(subs.iter().map(|k| k.0));
            }
            if let Some(body) = &change.body {
                for (field, by_value) in index.by_value.values() {
                    let value = KeyValue::of_field(field, body).encoded();
                    if let Some(subs) = by_value.get(&value) {
                        affected.extend(subs.iter().map(|k| k.0));
                    }
                }
            }
        }
        for connection in affected {
            if let Some(doorbell) = inner.doorbells.get(&connection) {
                doorbell.ring(commit.seq.0);
            }
        }
    }

    /// Rings every connection from `seq` on (after the tailer had to skip).
    pub fn ring_all(&self, seq: u64) {
        for doorbell in self.lock().doorbells.values() {
            doorbell.ring(seq);
        }
    }
}

fn remove_from<K>(
    map: &mut HashMap<K::Owned, HashSet<SubscriptionKey>>,
    k: &K,
    key: &SubscriptionKey,
) where
    K: std::hash::Hash + Eq + ToOwned + ?Sized,
    K::Owned: std::hash::Hash + Eq + std::borrow::Borrow<K>,
{
    if let Some(set) = map.get_mut(k) {
        set.remove(key);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use protosync_core::{Seq, Version};
    use protosync_query::key::KeyValue;
    use protosync_schema::{FieldPath, Registry};
    use serde_json::json;

    use super::*;
    use crate::live::{LiveChange, LiveCommit};

    /// A commit rings only the connections whose subscriptions it can touch,
    /// however many others are filed.
    #[test]
    fn a_change_rings_only_the_subscriptions_it_can_affect() {
        let registry = Registry::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/schema"),
        )
        .unwrap();
        let items = registry.collection("work_items").unwrap();
        let owner = FieldPath::resolve(&items.message, "ownerId").unwrap();
        let index = SubscriptionIndex::default();
        let mut doorbells = Vec::new();
        for i in 0..10_000 {
            let (connection, doorbell) = index.connect();
            let value = KeyValue::String(format!("user{i}")).encoded();
            index.file(
                (connection, 1),
                &Filing::Values {
                    collection: "work_items".into(),
                    field: owner.clone(),
                    values: vec![value],
                },
            );
            doorbells.push(doorbell);
        }
        let (whole, whole_bell) = index.connect();
        index.file((whole, 1), &Filing::Collection("work_items".into()));
        let (other, other_bell) = index.connect();
        index.file((other, 1), &Filing::Collection("run_summary".into()));
        // user42's subscription also holds "moved", which now belongs to someone else.
        index.update_held((43, 1), "work_items", &["moved".to_owned()], &[]);
        let change = |id: &str, owner: &str| LiveChange {
            collection: "work_items".into(),
            id: id.into(),
            version: Version(1),
            body: Some(Arc::new(crate::live::LiveBody::new(
                json!({"ownerId": owner}),
            ))),
        };
        index.dispatch(&LiveCommit {
            seq: Seq(7),
            changes: vec![change("w1", "user7"), change("moved", "nobody")],
            bytes: 0,
        });
        let rung: Vec<usize> = doorbells
            .iter()
            .enumerate()
            .filter(|(_, d)| d.peek().is_some())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            rung,
            [7, 42],
            "the matching subscription and the one holding the moved document"
        );
        assert_eq!(doorbells[7].take(), Some(7));
        assert_eq!(
            whole_bell.peek(),
            Some(7),
            "a collection-wide subscription hears every change"
        );
        assert_eq!(
            other_bell.peek(),
            None,
            "another collection's subscription hears nothing"
        );
    }
}
