//! Test fixtures for the planners' unit tests (`commit`, `group`): one
//! small collection with an index, and builders for its writes and stored
//! documents. Compiled only for tests.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use protosync_schema::{Collection, Registry};
use serde_json::{Value, json};

use crate::commit::DocKey;
use crate::{Mutation, Seq, StoredDocument, Version, WriteKind, WriteOp};

const NOTES_PROTO: &str = r#"syntax = "proto3";
package test.notes.v1;
import "protosync/v1/options.proto";
message Note {
  option (protosync.v1.collection) = {
    name: "notes"
    indexes: { name: "by_owner_rank" fields: ["owner", "rank"] }
  };
  string owner = 1;
  string text = 2;
  int32 rank = 3;
}
"#;

static NOTES: LazyLock<Arc<Collection>> = LazyLock::new(|| {
    let registry = Registry::from_sources(&[("test/notes/v1/notes.proto", NOTES_PROTO)])
        .expect("the test schema compiles");
    registry
        .collection("notes")
        .expect("the test schema declares notes")
        .clone()
});

/// The `notes` collection, indexed by (owner, rank).
pub(crate) fn notes() -> Arc<Collection> {
    NOTES.clone()
}

/// A note's canonical body.
pub(crate) fn note(owner: &str, text: &str, rank: i32) -> Value {
    notes()
        .validate("", &json!({ "owner": owner, "text": text, "rank": rank }))
        .expect("a valid note")
}

fn op(id: &str, kind: WriteKind) -> WriteOp {
    WriteOp {
        collection: notes(),
        id: id.into(),
        kind,
        expected_version: None,
    }
}

pub(crate) fn insert(id: &str, body: Value) -> WriteOp {
    op(id, WriteKind::Insert(body))
}

pub(crate) fn upsert(id: &str, body: Value) -> WriteOp {
    op(id, WriteKind::Upsert(body))
}

/// A patch of the top-level `fields` of a note.
#[allow(
    clippy::needless_pass_by_value,
    reason = "JSON builders take the value, so a call site reads `json!({..})` without a borrow"
)]
pub(crate) fn patch(id: &str, fields: Value) -> WriteOp {
    let fields = notes().validate_patch(&fields).expect("valid patch fields");
    op(id, WriteKind::Patch(fields))
}

pub(crate) fn delete(id: &str) -> WriteOp {
    op(id, WriteKind::Delete)
}

/// `op`, rejected unless the document has `version` when it runs.
pub(crate) fn expecting(version: u64, op: WriteOp) -> WriteOp {
    WriteOp {
        expected_version: Some(Version(version)),
        ..op
    }
}

/// A mutation of `ops` without an idempotency key or a write check.
pub(crate) fn mutation(ops: Vec<WriteOp>) -> Mutation {
    Mutation {
        ops,
        idempotency: None,
        access: crate::WriteAccess::Trusted,
        accepted_at_ms: 0,
        projection: None,
        audit: crate::Audit::default(),
    }
}

/// A stored note.
pub(crate) fn stored_note(id: &str, version: u64, seq: u64, body: Value) -> StoredDocument {
    StoredDocument {
        id: id.into(),
        version: Version(version),
        seq: Seq(seq),
        body,
    }
}

/// `documents` (all notes) as a planner reads them.
pub(crate) fn by_key(documents: Vec<StoredDocument>) -> HashMap<DocKey, StoredDocument> {
    documents
        .into_iter()
        .map(|doc| (("notes".to_owned(), doc.id.clone()), doc))
        .collect()
}

/// The index entry of `body` for the note `id`.
pub(crate) fn index_entry(id: &str, body: &Value) -> (String, Vec<u8>) {
    let index = &notes().indexes[0];
    (
        index.name.clone(),
        protosync_query::key::index_key(index, id, body),
    )
}
