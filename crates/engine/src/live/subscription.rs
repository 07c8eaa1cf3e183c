//! One subscription's view of its result, maintained change by change.
//!
//! A query subscription keeps a window: the first `limit` documents are what
//! the client sees; up to [`WINDOW_SLACK`] more are kept so a document
//! leaving the visible part can be replaced without a store read. `complete`
//! says the window holds every matching document. When the visible part can
//! no longer be filled from what is known, the subscription asks to be
//! refetched from the store.

use std::collections::HashMap;

use protosync_core::Seq;
use protosync_query::{LookedUp, Query};
use protosync_schema::DocKey;

use super::subscription_index::Filing;
use super::{LiveChange, LiveDocument};
use protosync_query::Op;

/// Extra documents kept beyond a window's limit, so most removals refill
/// without a store read.
pub const WINDOW_SLACK: usize = 16;

/// What a client asks a subscription to watch, before its access is known
/// (the engine turns it into a [`Target`] for one identity).
#[derive(Debug, Clone)]
pub enum TargetRequest {
    /// A query held open.
    Query(protosync_query::QueryRequest),
    /// One document by id.
    Get {
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
    },
}

/// What a subscription watches, as one reader may see it.
#[derive(Debug, Clone)]
pub enum Target {
    /// A query, its read scope included.
    Query(Query),
    /// One document, if the reader may see it.
    Get {
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
        /// What the reader may see of the collection: the document counts as absent when
        /// its read rule hides it.
        scope: protosync_query::ReadScope,
    },
}

impl Target {
    /// The collection it watches.
    pub fn collection(&self) -> &str {
        match self {
            Target::Query(q) => &q.collection.name,
            Target::Get { collection, .. } => collection,
        }
    }

    /// Where the subscription index files it.
    pub fn filing(&self) -> Filing {
        match self {
            Target::Get { collection, id, .. } => Filing::Document {
                collection: collection.clone(),
                id: id.clone(),
            },
            Target::Query(q) => {
                let equality = q.filter.iter().find(|c| matches!(c.op, Op::Eq | Op::In));
                match equality {
                    Some(c) => Filing::Values {
                        collection: q.collection.name.clone(),
                        field: c.field.clone(),
                        values: c
                            .values
                            .iter()
                            .map(protosync_query::key::KeyValue::encoded)
                            .collect(),
                    },
                    None => Filing::Collection(q.collection.name.clone()),
                }
            }
        }
    }

    /// The query the store runs to (re)fill the window: the client's limit
    /// plus slack.
    pub fn window_query(&self) -> Option<Query> {
        match self {
            Target::Query(q) => {
                let mut window = q.clone();
                window.limit = q.limit + WINDOW_SLACK;
                Some(window)
            }
            Target::Get { .. } => None,
        }
    }

    fn limit(&self) -> usize {
        match self {
            Target::Query(q) => q.limit,
            Target::Get { .. } => 1,
        }
    }
}

struct Entry {
    key: Vec<u8>,
    doc: LiveDocument,
}

/// One subscription of a live view: its target and its window of the result, kept up to
/// date change by change and consistent at `at`.
pub struct LiveSubscription {
    /// The id the client gave it, unique on its connection.
    pub id: String,
    /// What it watches, with the reader's access.
    pub target: Target,
    /// The seq this view is consistent at.
    pub at: Seq,
    entries: Vec<Entry>,
    complete: bool,
    /// Documents kept beyond the limit ([`WINDOW_SLACK`]; tests shrink it).
    slack: usize,
    /// What the read rule looked up at the last read: valid until a commit
    /// changes one of them. Changes are judged with these documents.
    looked_up: LookedUp,
    /// A document the rule looked up changed, or a change needs a lookup
    /// not loaded: the view is read afresh (with the rule's lookups in the
    /// read's snapshot) before the next transition.
    stale: bool,
}

/// Whether a change enters a subscription's view.
enum Admission {
    /// It does, at this sort key.
    Yes(Vec<u8>),
    No,
    /// The read rule needs a document not loaded: read the view afresh.
    Unknown,
}

impl LiveSubscription {
    /// A subscription whose view is `documents` (in order), read at `at`.
    pub fn new(
        id: String,
        target: Target,
        at: Seq,
        documents: Vec<LiveDocument>,
        complete: bool,
        looked_up: LookedUp,
    ) -> LiveSubscription {
        let mut subscription = LiveSubscription {
            id,
            target,
            at,
            entries: Vec::new(),
            complete: true,
            slack: WINDOW_SLACK,
            looked_up: LookedUp::default(),
            stale: false,
        };
        subscription.refill(at, documents, complete, looked_up);
        subscription
    }

    /// Replaces the view with a fresh read at `at`, whose rule looked up
    /// `looked_up`.
    pub fn refill(
        &mut self,
        at: Seq,
        documents: Vec<LiveDocument>,
        complete: bool,
        looked_up: LookedUp,
    ) {
        // Invariant: a refill reads at most a window's worth (`window_query`).
        debug_assert!(documents.len() <= self.capacity());
        self.entries = documents
            .into_iter()
            .map(|doc| Entry {
                key: self.key_of(&doc.id, &doc.body),
                doc,
            })
            .collect();
        self.complete = complete;
        self.at = at;
        self.looked_up = looked_up;
        self.stale = false;
    }

    /// The documents the read rule looked up: a change to any of them can
    /// change what the reader may see.
    pub fn dependencies(&self) -> Vec<DocKey> {
        self.looked_up.documents.keys().cloned().collect()
    }

    fn limit(&self) -> usize {
        self.target.limit()
    }

    fn key_of(&self, id: &str, body: &serde_json::Value) -> Vec<u8> {
        match &self.target {
            Target::Query(q) => q.sort_key_of(id, body),
            Target::Get { .. } => Vec::new(),
        }
    }

    fn admits(&self, change: &LiveChange) -> Admission {
        let Some(body) = change.body.as_ref() else {
            return Admission::No;
        };
        let (scope, key) = match &self.target {
            Target::Query(q) => {
                if !q.filter_matches(body) {
                    return Admission::No;
                }
                let key = q.sort_key_of(&change.id, body);
                if !q.is_after_cursor(&key) {
                    return Admission::No;
                }
                (&q.scope, key)
            }
            Target::Get { id, scope, .. } => {
                if *id != change.id {
                    return Admission::No;
                }
                (scope, Vec::new())
            }
        };
        match self.looked_up.verdict(scope, body) {
            Ok(true) => Admission::Yes(key),
            Ok(false) => Admission::No,
            Err(_) => Admission::Unknown,
        }
    }

    /// Applies one change of commit `seq` (which is newer than `at`).
    pub fn apply(&mut self, seq: Seq, change: &LiveChange) {
        if self.stale {
            return;
        }
        let key = DocKey {
            collection: change.collection.clone(),
            id: change.id.clone(),
        };
        if self.looked_up.documents.contains_key(&key) {
            // What the reader may see depends on this document: judge the
            // view again, whole, with its new state.
            self.stale = true;
            return;
        }
        if change.collection != self.target.collection() {
            return;
        }
        if let Target::Get { id, .. } = &self.target
            && *id != change.id
        {
            return;
        }
        let held = self.entries.iter().position(|e| e.doc.id == change.id);
        if let Some(i) = held {
            self.entries.remove(i);
        }
        let key = match self.admits(change) {
            Admission::Yes(key) => key,
            Admission::No => return,
            Admission::Unknown => {
                self.stale = true;
                return;
            }
        };
        let fits = self.complete || self.entries.last().is_some_and(|last| key < last.key);
        if !fits {
            // Past everything known: it is not in the visible window (or the
            // window is refetched because it ran short).
            return;
        }
        let doc = LiveDocument {
            id: change.id.clone(),
            version: change.version,
            seq,
            body: change.body.clone().expect("admitted changes have a body"),
        };
        let at = self.entries.partition_point(|e| e.key < key);
        self.entries.insert(at, Entry { key, doc });
        let capacity = self.capacity();
        if self.entries.len() > capacity {
            self.entries.truncate(capacity);
            self.complete = false;
        }
        // Invariant: the window is bounded (limit + slack) and in sort-key
        // order, which `visible` and the refill rule rely on.
        debug_assert!(self.entries.len() <= capacity);
        debug_assert!(self.entries.windows(2).all(|w| w[0].key < w[1].key));
    }

    /// Documents the view keeps: the visible ones and the slack. A refill
    /// reads exactly this many (see [`Target::window_query`]).
    fn capacity(&self) -> usize {
        self.limit() + self.slack
    }

    /// The visible part cannot be filled from what is known: read the store.
    pub fn needs_refill(&self) -> bool {
        self.stale || (!self.complete && self.entries.len() < self.limit())
    }

    /// What the client sees, in order.
    pub fn visible(&self) -> impl Iterator<Item = &LiveDocument> {
        self.entries.iter().take(self.limit()).map(|e| &e.doc)
    }

    /// Ids of every document the view keeps (visible or slack): a change to
    /// any of them can change the view.
    pub fn held_ids(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.doc.id.clone()).collect()
    }

    /// (id, seq) of what the client sees, in order.
    pub fn visible_state(&self) -> Vec<(String, Seq)> {
        self.visible().map(|d| (d.id.clone(), d.seq)).collect()
    }
}

/// What changed between two visible states of a subscription.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ViewDiff {
    /// Documents that entered the visible part or changed, in the new order.
    pub upserts: Vec<LiveDocument>,
    /// Ids that left the visible part.
    pub removes: Vec<String>,
    /// The new order, when membership or order changed.
    pub order: Option<Vec<String>>,
}

impl ViewDiff {
    /// Whether nothing changed (the client needs no update for this subscription).
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty() && self.order.is_none()
    }

    /// From `before` (what the client holds, in order) to `now`.
    pub fn between(before: &[(String, Seq)], now: &LiveSubscription) -> ViewDiff {
        let held: HashMap<&str, Seq> = before.iter().map(|(id, seq)| (id.as_str(), *seq)).collect();
        let upserts: Vec<LiveDocument> = now
            .visible()
            .filter(|d| held.get(d.id.as_str()) != Some(&d.seq))
            .cloned()
            .collect();
        let visible: Vec<String> = now.visible().map(|d| d.id.clone()).collect();
        let present: std::collections::HashSet<&str> = visible.iter().map(String::as_str).collect();
        let removes: Vec<String> = before
            .iter()
            .filter(|(id, _)| !present.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        let same_order =
            before.len() == visible.len() && before.iter().zip(&visible).all(|((a, _), b)| a == b);
        ViewDiff {
            upserts,
            removes,
            order: (!same_order).then_some(visible),
        }
    }

    /// Everything, as for a reset.
    pub fn full(now: &LiveSubscription) -> ViewDiff {
        ViewDiff {
            upserts: now.visible().cloned().collect(),
            removes: Vec::new(),
            order: Some(now.visible().map(|d| d.id.clone()).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveBody;
    use protosync_core::StoredDocument;
    use protosync_core::Version;
    use protosync_query::QueryRequest;
    use protosync_schema::Registry;
    use rand::{Rng, SeedableRng};
    use serde_json::json;
    use std::sync::Arc;

    /// Random changes against a brute-force model: after each commit the
    /// visible part equals the true first `limit` results, refilling from
    /// the model whenever the view asks to.
    #[test]
    fn windows_stay_exact_under_random_changes() {
        let registry = Registry::from_sources(&[(
            "t.proto",
            "syntax = \"proto3\"; package t; import \"protosync/v1/options.proto\";
             message Item { option (protosync.v1.collection) = { name: \"items\" }; int32 rank = 1; string group = 2; }",
        )])
        .unwrap();
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..300 {
            let limit = rng.random_range(1..4u64);
            let slack = round % 3;
            let request: QueryRequest = serde_json::from_value(json!({
                "collection": "items", "filter": [{"field": "group", "op": "==", "value": "a"}],
                "orderBy": [{"field": "rank", "direction": if round % 2 == 0 { "asc" } else { "desc" }}], "limit": limit
            }))
            .unwrap();
            let query = Query::compile(
                &registry,
                &request,
                &protosync_query::CursorSeal::from_database_secret(&[0; 32]),
                protosync_query::ReadScope::Everything,
            )
            .unwrap();
            let mut model: std::collections::BTreeMap<String, StoredDocument> = Default::default();
            let truth = |model: &std::collections::BTreeMap<String, StoredDocument>, n: usize| {
                let mut docs: Vec<StoredDocument> = model
                    .values()
                    .filter(|d| query.filter_matches(&d.body))
                    .cloned()
                    .collect();
                docs.sort_by_key(|d| query.sort_key(d));
                let complete = docs.len() <= n;
                docs.truncate(n);
                (docs, complete)
            };
            let capacity = limit as usize + slack;
            let mut sub = LiveSubscription::new(
                "s".into(),
                Target::Query(query.clone()),
                Seq(0),
                Vec::new(),
                true,
                LookedUp::default(),
            );
            sub.slack = slack;
            for seq in 1..120u64 {
                let id = format!("d{}", rng.random_range(0..40));
                let body = (rng.random_range(0..4) > 0).then(|| json!({"rank": rng.random_range(0..30), "group": if rng.random_bool(0.7) { "a" } else { "b" }}));
                match &body {
                    Some(b) => model.insert(
                        id.clone(),
                        StoredDocument {
                            id: id.clone(),
                            version: Version(1),
                            seq: Seq(seq),
                            body: b.clone(),
                        },
                    ),
                    None => model.remove(&id),
                };
                let change = LiveChange {
                    collection: "items".into(),
                    id,
                    version: Version(1),
                    body: body.map(|b| Arc::new(LiveBody::new(b))),
                };
                sub.apply(Seq(seq), &change);
                if sub.needs_refill() {
                    let (docs, complete) = truth(&model, capacity);
                    let docs = docs
                        .into_iter()
                        .map(|d| LiveDocument {
                            id: d.id,
                            version: d.version,
                            seq: d.seq,
                            body: Arc::new(LiveBody::new(d.body)),
                        })
                        .collect();
                    sub.refill(Seq(seq), docs, complete, LookedUp::default());
                }
                let expected: Vec<String> = truth(&model, limit as usize)
                    .0
                    .into_iter()
                    .map(|d| d.id)
                    .collect();
                let shown: Vec<String> = sub.visible().map(|d| d.id.clone()).collect();
                assert_eq!(shown, expected, "seed {seed} round {round} seq {seq}");
            }
        }
    }
}
