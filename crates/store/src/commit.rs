//! What a commit does to documents, decided as a pure function of the stored
//! documents and the operations. Both stores call this between reading the
//! documents a mutation touches and writing the outcome, inside one
//! transaction that holds the seq counter.
//!
//! Semantics (documented in docs/http-api.md):
//! - ops apply in order to a working copy; any rejected op rejects the whole
//!   mutation;
//! - `expectedVersion` is compared with the document's version at that point
//!   of the mutation (a document already written by an earlier op of the same
//!   mutation has the version this commit gives it);
//! - a document written by the commit gets exactly one new version, stored
//!   version + 1 (1 when created), however many ops touched it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protosync_query::key::index_key;
use protosync_schema::{Collection, Lookup, Verdict};
use serde_json::Value;

use crate::{
    MAX_DOCUMENT_BYTES, Mutation, OpResult, Rejection, StoreError, StoredDocument, Version,
    WriteKind,
};

/// A document's identity across the store.
pub type DocKey = (String, String);

/// What one commit writes for one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocWrite {
    /// The document's collection.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// Its new version (for a delete, the version deleted).
    pub version: Version,
    /// The new body; `None` deletes the document.
    pub body: Option<Value>,
    /// Index entries (index name, key) to remove.
    pub removed_index_keys: Vec<(String, Vec<u8>)>,
    /// Index entries (index name, key) to add.
    pub added_index_keys: Vec<(String, Vec<u8>)>,
}

/// Everything a store writes for one accepted mutation, decided before it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitPlan {
    /// One per document the mutation changed, in first-touched order.
    pub writes: Vec<DocWrite>,
    /// One per op, in op order: what [`CommitOutcome::results`](crate::CommitOutcome) holds.
    pub results: Vec<OpResult>,
}

/// The documents a mutation touches, each once, in first-touched order.
pub fn keys_to_read(mutation: &Mutation) -> Vec<DocKey> {
    let mut keys: Vec<DocKey> = Vec::new();
    for op in &mutation.ops {
        let key = (op.collection.name.clone(), op.id.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

struct Working {
    collection: Arc<Collection>,
    original: Option<StoredDocument>,
    current: Option<Value>,
    touched: bool,
}

impl Working {
    fn new_version(&self) -> Version {
        Version(self.original.as_ref().map_or(1, |d| d.version.0 + 1))
    }

    fn version_now(&self) -> Option<Version> {
        match (&self.current, self.touched) {
            (None, _) => None,
            (Some(_), true) => Some(self.new_version()),
            (Some(_), false) => self.original.as_ref().map(|d| d.version),
        }
    }
}

/// Applies the mutation's ops, in order, to the `stored` documents it touches (as
/// [`keys_to_read`] lists them; absent ones do not exist), checking versions, write access
/// and size. Any rejected op rejects the mutation with [`StoreError::Rejected`].
pub fn plan_commit(
    mutation: &Mutation,
    stored: &HashMap<DocKey, StoredDocument>,
) -> Result<CommitPlan, StoreError> {
    let loaded = stored.keys().cloned().collect();
    let known = Known {
        stored,
        loaded: &loaded,
        exhausted: true,
    };
    plan_commit_with(mutation, &known).map_err(|undecided| match undecided {
        Undecided::Refused(e) => e,
        Undecided::NeedsLookups(_) => unreachable!("an exhausted lookup is a denial"),
    })
}

/// What a commit knows of the documents its write rules look up (beyond
/// the ones it writes, which it sees as it changes them).
pub(crate) struct Known<'a> {
    /// Documents as the commit finds them.
    pub stored: &'a HashMap<DocKey, StoredDocument>,
    /// Keys whose state is loaded: one of them absent from `stored` does
    /// not exist.
    pub loaded: &'a HashSet<DocKey>,
    /// Nothing more will be loaded: a rule that asks for more is denied.
    pub exhausted: bool,
}

/// Why a commit was not planned.
#[derive(Debug)]
pub(crate) enum Undecided {
    /// Rejected (or failed): the answer.
    Refused(StoreError),
    /// A write rule looks up documents not loaded yet: load them and plan
    /// again. Never leaves the store.
    NeedsLookups(Vec<protosync_schema::DocKey>),
}

impl From<StoreError> for Undecided {
    fn from(e: StoreError) -> Self {
        Undecided::Refused(e)
    }
}

/// [`plan_commit`] with lookups: write rules see the documents of this
/// mutation as its earlier ops left them, and others as `known` has them.
pub(crate) fn plan_commit_with(
    mutation: &Mutation,
    known: &Known<'_>,
) -> Result<CommitPlan, Undecided> {
    let stored = known.stored;
    let order = keys_to_read(mutation);
    let mut working: HashMap<DocKey, Working> = HashMap::new();
    for op in &mutation.ops {
        let key = (op.collection.name.clone(), op.id.clone());
        working.entry(key.clone()).or_insert_with(|| {
            let original = stored.get(&key).cloned();
            Working {
                collection: op.collection.clone(),
                current: original.as_ref().map(|d| d.body.clone()),
                original,
                touched: false,
            }
        });
    }
    for (index, op) in mutation.ops.iter().enumerate() {
        let key = (op.collection.name.clone(), op.id.clone());
        let reject = |rejection| {
            Undecided::Refused(StoreError::Rejected {
                op: index,
                collection: key.0.clone(),
                id: key.1.clone(),
                rejection,
            })
        };
        let doc = &working[&key];
        // What the op would leave, before any precondition is judged: the
        // write rule runs first, so a caller who may not write a document
        // learns nothing about it (not its existence, not its version).
        let mut candidate: Option<Value> = match (&op.kind, &doc.current) {
            (WriteKind::Insert(body) | WriteKind::Upsert(body), _) => Some(body.clone()),
            (WriteKind::Patch(fields), Some(current)) => Some(fields.apply(current)),
            (WriteKind::Patch(_) | WriteKind::Delete, _) => None,
        };
        // Server times are set before the rule runs, so the rule judges the
        // document that will be stored.
        if let Some(next) = &mut candidate {
            doc.collection
                .stamp_server_times(next, doc.current.as_ref(), mutation.accepted_at_ms);
        }
        let prev = doc.original.as_ref().map(|d| &d.body);
        let touches_something = prev.is_some() || doc.current.is_some() || candidate.is_some();
        if touches_something {
            let mut lookups = |k: &protosync_schema::DocKey| {
                let key = (k.collection.clone(), k.id.clone());
                if let Some(doc) = working.get(&key) {
                    return doc.current.clone().map_or(Lookup::Absent, Lookup::Found);
                }
                match known.stored.get(&key) {
                    Some(doc) => Lookup::Found(doc.body.clone()),
                    None if known.loaded.contains(&key) => Lookup::Absent,
                    None => Lookup::Unknown,
                }
            };
            match mutation
                .access
                .verdict(index, op, prev, candidate.as_ref(), &mut lookups)
            {
                Verdict::Allow => {}
                Verdict::Needs(keys) if !known.exhausted => {
                    return Err(Undecided::NeedsLookups(keys));
                }
                Verdict::Deny | Verdict::Needs(_) => {
                    return Err(reject(Rejection::PermissionDenied));
                }
            }
        }
        let doc = working
            .get_mut(&key)
            .expect("every op's document is in the working set");
        if let Some(expected) = op.expected_version {
            let actual = doc.version_now();
            if actual != Some(expected) {
                return Err(reject(Rejection::VersionConflict { expected, actual }));
            }
        }
        doc.current = match (&op.kind, candidate) {
            (WriteKind::Insert(_), _) if doc.current.is_some() => {
                return Err(reject(Rejection::AlreadyExists));
            }
            (WriteKind::Insert(_) | WriteKind::Upsert(_), next) => next,
            (WriteKind::Patch(_), None) => return Err(reject(Rejection::NotFound)),
            (WriteKind::Patch(_), Some(merged)) => Some(
                doc.collection
                    .validate(&op.id, &merged)
                    .map_err(|e| reject(Rejection::InvalidDocument(e)))?,
            ),
            (WriteKind::Delete, _) if doc.current.is_none() => {
                return Err(reject(Rejection::NotFound));
            }
            (WriteKind::Delete, _) => None,
        };
        if let Some(body) = &doc.current {
            let bytes = body.to_string().len();
            if bytes > MAX_DOCUMENT_BYTES {
                return Err(reject(Rejection::DocumentTooLarge {
                    bytes,
                    limit: MAX_DOCUMENT_BYTES,
                }));
            }
        }
        doc.touched = true;
    }
    let results: Vec<OpResult> = mutation
        .ops
        .iter()
        .map(|op| {
            let doc = &working[&(op.collection.name.clone(), op.id.clone())];
            let version = match (&doc.current, &doc.original) {
                (None, Some(original)) => original.version,
                _ => doc.new_version(),
            };
            OpResult {
                id: op.id.clone(),
                version,
            }
        })
        .collect();
    let mut writes = Vec::new();
    for key in order {
        let doc = &working[&key];
        if doc.original.is_none() && doc.current.is_none() {
            continue; // created and deleted within the mutation: nothing to store
        }
        let keys_of = |body: Option<&Value>| -> Vec<(String, Vec<u8>)> {
            body.map(|b| {
                doc.collection
                    .indexes
                    .iter()
                    .map(|i| (i.name.clone(), index_key(i, &key.1, b)))
                    .collect()
            })
            .unwrap_or_default()
        };
        let old = keys_of(doc.original.as_ref().map(|d| &d.body));
        let new = keys_of(doc.current.as_ref());
        writes.push(DocWrite {
            collection: key.0.clone(),
            id: key.1.clone(),
            version: doc.new_version(),
            body: doc.current.clone(),
            removed_index_keys: old.iter().filter(|k| !new.contains(k)).cloned().collect(),
            added_index_keys: new.iter().filter(|k| !old.contains(k)).cloned().collect(),
        });
    }
    // Invariant: one result per op (callers zip them); each document is
    // written once, with the next version of the one stored (1 when none
    // was): the versioning rule of docs/http-api.md, which `plan_group`
    // chains later commits on. A delete is written only for a document that
    // was stored, so the change log never announces the removal of
    // something no reader could have seen.
    debug_assert_eq!(results.len(), mutation.ops.len());
    debug_assert!(writes.iter().enumerate().all(|(i, write)| {
        let key = (write.collection.clone(), write.id.clone());
        let before = stored.get(&key);
        let once = !writes[..i]
            .iter()
            .any(|w| w.collection == write.collection && w.id == write.id);
        let next = Version(before.map_or(1, |d| d.version.0 + 1));
        once && write.version == next && (write.body.is_some() || before.is_some())
    }));
    Ok(CommitPlan { writes, results })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::fixtures::{
        by_key, delete, expecting, index_entry, insert, mutation, note, patch, stored_note, upsert,
    };
    use crate::{Authorize, WriteOp};

    fn rejection(result: Result<CommitPlan, StoreError>) -> (usize, Rejection) {
        match result {
            Err(StoreError::Rejected { op, rejection, .. }) => (op, rejection),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn verdict(allowed: bool) -> protosync_schema::Verdict {
        if allowed {
            protosync_schema::Verdict::Allow
        } else {
            protosync_schema::Verdict::Deny
        }
    }

    fn versions(plan: &CommitPlan) -> Vec<u64> {
        plan.results.iter().map(|r| r.version.0).collect()
    }

    #[test]
    fn ops_on_one_document_apply_in_order_and_give_it_one_new_version() {
        let plan = plan_commit(
            &mutation(vec![
                insert("n1", note("ann", "draft", 1)),
                patch("n1", json!({ "text": "edited" })),
                patch("n1", json!({ "rank": 2 })),
            ]),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(plan.writes.len(), 1, "one write per document");
        assert_eq!(plan.writes[0].version, Version(1));
        assert_eq!(plan.writes[0].body, Some(note("ann", "edited", 2)));
        assert_eq!(
            versions(&plan),
            [1, 1, 1],
            "every op sees the one new version"
        );
    }

    #[test]
    fn a_stored_document_gets_the_next_version_and_expected_version_sees_earlier_ops() {
        let stored = by_key(vec![stored_note("n1", 3, 7, note("ann", "v3", 1))]);
        let accepted = plan_commit(
            &mutation(vec![
                expecting(3, upsert("n1", note("ann", "v4", 1))),
                // The upsert above already gave n1 the version this commit
                // writes: a later op of the mutation expects that one.
                expecting(4, patch("n1", json!({ "text": "v4 again" }))),
            ]),
            &stored,
        )
        .unwrap();
        assert_eq!(accepted.writes[0].version, Version(4));
        assert_eq!(versions(&accepted), [4, 4]);

        let conflict = plan_commit(
            &mutation(vec![
                upsert("n1", note("ann", "v4", 1)),
                expecting(3, patch("n1", json!({ "text": "stale" }))),
            ]),
            &stored,
        );
        assert_eq!(
            rejection(conflict),
            (
                1,
                Rejection::VersionConflict {
                    expected: Version(3),
                    actual: Some(Version(4)),
                }
            )
        );
    }

    #[test]
    fn delete_then_insert_of_one_id_writes_the_new_body_once_at_the_next_version() {
        let old = note("ann", "old", 1);
        let stored = by_key(vec![stored_note("n1", 2, 5, old.clone())]);
        let new = note("bob", "new", 9);
        let plan = plan_commit(
            &mutation(vec![delete("n1"), insert("n1", new.clone())]),
            &stored,
        )
        .unwrap();
        assert_eq!(plan.writes.len(), 1);
        let write = &plan.writes[0];
        assert_eq!(write.version, Version(3));
        assert_eq!(write.body, Some(new.clone()));
        assert_eq!(write.removed_index_keys, [index_entry("n1", &old)]);
        assert_eq!(write.added_index_keys, [index_entry("n1", &new)]);
    }

    #[test]
    fn a_document_created_and_deleted_in_one_mutation_writes_nothing() {
        let plan = plan_commit(
            &mutation(vec![insert("n1", note("ann", "brief", 1)), delete("n1")]),
            &HashMap::new(),
        )
        .unwrap();
        assert!(plan.writes.is_empty(), "{:?}", plan.writes);
        assert_eq!(plan.results.len(), 2);
    }

    #[test]
    fn a_delete_reports_the_deleted_version_and_drops_the_index_entry() {
        let body = note("ann", "gone", 1);
        let stored = by_key(vec![stored_note("n1", 4, 9, body.clone())]);
        let plan = plan_commit(&mutation(vec![delete("n1")]), &stored).unwrap();
        assert_eq!(versions(&plan), [4], "the version that was deleted");
        let write = &plan.writes[0];
        assert_eq!((write.version, &write.body), (Version(5), &None));
        assert_eq!(write.removed_index_keys, [index_entry("n1", &body)]);
        assert!(write.added_index_keys.is_empty());
    }

    #[test]
    fn index_entries_change_only_when_an_indexed_field_does() {
        let body = note("ann", "text", 1);
        let stored = by_key(vec![stored_note("n1", 1, 1, body.clone())]);
        let unindexed = plan_commit(
            &mutation(vec![patch("n1", json!({ "text": "other" }))]),
            &stored,
        )
        .unwrap();
        assert!(unindexed.writes[0].removed_index_keys.is_empty());
        assert!(unindexed.writes[0].added_index_keys.is_empty());

        let reranked =
            plan_commit(&mutation(vec![patch("n1", json!({ "rank": 5 }))]), &stored).unwrap();
        assert_eq!(
            reranked.writes[0].removed_index_keys,
            [index_entry("n1", &body)]
        );
        assert_eq!(
            reranked.writes[0].added_index_keys,
            [index_entry("n1", &note("ann", "text", 5))]
        );
    }

    #[test]
    fn each_kind_of_op_is_rejected_where_it_cannot_apply() {
        let stored = by_key(vec![stored_note("n1", 1, 1, note("ann", "here", 1))]);
        let cases: Vec<(WriteOp, Rejection)> = vec![
            (
                insert("n1", note("ann", "again", 1)),
                Rejection::AlreadyExists,
            ),
            (patch("n2", json!({ "text": "x" })), Rejection::NotFound),
            (delete("n2"), Rejection::NotFound),
            (
                expecting(1, upsert("n2", note("ann", "x", 1))),
                Rejection::VersionConflict {
                    expected: Version(1),
                    actual: None,
                },
            ),
        ];
        for (op, expected) in cases {
            // An accepted op first: the rejection names the op that failed
            // and the whole mutation is refused.
            let result = plan_commit(
                &mutation(vec![upsert("n3", note("ann", "fine", 1)), op.clone()]),
                &stored,
            );
            assert_eq!(rejection(result), (1, expected), "{op:?}");
        }
    }

    #[test]
    fn a_document_over_the_size_limit_is_rejected() {
        let big = note("ann", &"x".repeat(MAX_DOCUMENT_BYTES), 1);
        let result = plan_commit(&mutation(vec![insert("n1", big)]), &HashMap::new());
        assert!(matches!(
            rejection(result),
            (
                0,
                Rejection::DocumentTooLarge {
                    limit: MAX_DOCUMENT_BYTES,
                    ..
                }
            )
        ));
    }

    #[test]
    fn the_write_check_sees_prev_and_next_and_runs_before_any_precondition() {
        let stored_body = note("ann", "mine", 1);
        let stored = by_key(vec![stored_note("n1", 1, 1, stored_body.clone())]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let check = {
            let seen = seen.clone();
            Authorize(Arc::new(
                move |index, _op: &WriteOp, prev, next, _lookups| {
                    seen.lock()
                        .unwrap()
                        .push((index, prev.cloned(), next.cloned()));
                    verdict(next.and_then(|n| n.get("owner")) != Some(&json!("eve")))
                },
            ))
        };
        let allowed = Mutation {
            access: crate::WriteAccess::Checked(check.clone()),
            ..mutation(vec![patch("n1", json!({ "text": "ours" }))])
        };
        plan_commit(&allowed, &stored).unwrap();
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [(0, Some(stored_body), Some(note("ann", "ours", 1)))]
        );

        // Denied with a wrong expected version and on an id that exists: the
        // caller learns neither, only that it may not write.
        let denied = Mutation {
            access: crate::WriteAccess::Checked(check),
            ..mutation(vec![expecting(9, insert("n1", note("eve", "theirs", 1)))])
        };
        assert_eq!(
            rejection(plan_commit(&denied, &stored)),
            (0, Rejection::PermissionDenied)
        );
    }

    #[test]
    fn the_documents_to_read_are_each_listed_once_in_first_touched_order() {
        let keys = keys_to_read(&mutation(vec![
            delete("b"),
            delete("a"),
            delete("b"),
            delete("c"),
        ]));
        let ids: Vec<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }
}
