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

use std::collections::HashMap;
use std::sync::Arc;

use protosync_query::key::index_key;
use protosync_schema::Collection;
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
    pub collection: String,
    pub id: String,
    pub version: Version,
    /// The new body; `None` deletes the document.
    pub body: Option<Value>,
    /// Index entries (index name, key) to remove and to add.
    pub removed_index_keys: Vec<(String, Vec<u8>)>,
    pub added_index_keys: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommitPlan {
    /// One per document the mutation changed, in first-touched order.
    pub writes: Vec<DocWrite>,
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

pub fn plan_commit(
    mutation: &Mutation,
    stored: &HashMap<DocKey, StoredDocument>,
) -> Result<CommitPlan, StoreError> {
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
        let doc = working
            .get_mut(&key)
            .expect("every op's document is in the working set");
        let reject = |rejection| StoreError::Rejected {
            op: index,
            collection: key.0.clone(),
            id: key.1.clone(),
            rejection,
        };
        // What the op would leave, before any precondition is judged: the
        // write rule runs first, so a caller who may not write a document
        // learns nothing about it (not its existence, not its version).
        let candidate: Option<Value> = match (&op.kind, &doc.current) {
            (WriteKind::Insert(body) | WriteKind::Upsert(body), _) => Some(body.clone()),
            (WriteKind::Patch(fields), Some(current)) => Some(fields.apply(current)),
            (WriteKind::Patch(_) | WriteKind::Delete, _) => None,
        };
        if let Some(authorize) = &mutation.authorize {
            let prev = doc.original.as_ref().map(|d| &d.body);
            let touches_something = prev.is_some() || doc.current.is_some() || candidate.is_some();
            if touches_something && !(authorize.0)(index, op, prev, candidate.as_ref()) {
                return Err(reject(Rejection::PermissionDenied));
            }
        }
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
