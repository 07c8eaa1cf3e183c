//! Projection requests: a trusted service's batch of derived documents,
//! each with the position in its own event log it reflects, turned into one
//! commit (`protosync_store::projection` decides which are written); its
//! checkpoint; the drift check between the documents a projector expects
//! and the ones stored; and rebuilds, staged beside the live documents and
//! swapped in with one commit.
//!
//! Only services may project: a projection bypasses write rules, and its
//! stamps are the projector's word about its own log.

use std::sync::Arc;

use protosync_auth::Identity;
use protosync_core::ErrorCode;
use protosync_core::{Seq, Version};
use protosync_schema::Registry;
use protosync_store::projection::{MAX_PROJECTOR_BYTES, content_hash};
use protosync_store::{
    CommitOutcome, Mutation, Projected, ProjectedDocument, ProjectionMode, ProjectionWrite,
    SourceStamp, StagedDocument, Store, WriteKind, WriteOp,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::EngineError;
use crate::limits::MAX_OPS_PER_MUTATION;
use crate::mutation::{check_id, uint64};

/// Expected documents one drift-check page may carry: a page is answered
/// from one bounded read of the store.
pub const MAX_DRIFT_PAGE: usize = 10_000;
/// Stored-but-not-expected documents one drift answer lists at most; the
/// answer says when there were more (`unexpectedTruncated`).
pub const MAX_DRIFT_UNEXPECTED: usize = 10_000;
/// The highest source seq a projector may send: stores keep it as a signed
/// 64-bit integer.
pub const MAX_SOURCE_SEQ: u64 = i64::MAX as u64;

/// `{"documents": [...], "checkpoint"?}`: one batch, one commit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectionRequest {
    /// 1 to [`MAX_OPS_PER_MUTATION`] projected documents or deletions.
    pub documents: Vec<ProjectedRequest>,
    /// The source seq the projector has read up to, when events beyond its
    /// documents' changed nothing; absent: the batch's highest.
    #[serde(
        default,
        deserialize_with = "uint64",
        skip_serializing_if = "Option::is_none"
    )]
    pub checkpoint: Option<u64>,
}

/// One projected document: `doc` to write it, `deleted: true` to remove it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectedRequest {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// The position in the projector's log this state reflects (uint64, at
    /// most [`MAX_SOURCE_SEQ`]).
    #[serde(deserialize_with = "required_uint64")]
    pub source_seq: u64,
    /// The whole document; absent for a deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
    /// True for a deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

fn required_uint64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    uint64(d)?.ok_or_else(|| serde::de::Error::custom("expected a non-negative integer"))
}

/// Refuses a projector name that cannot be one: empty, too long, or with
/// characters that are not letters, digits, `-`, `_`, `.` or `:`.
pub fn check_projector(projector: &str) -> Result<(), EngineError> {
    let fine = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if projector.is_empty() || projector.len() > MAX_PROJECTOR_BYTES || !projector.chars().all(fine)
    {
        return Err(EngineError::BadRequest(format!(
            "a projector name is 1 to {MAX_PROJECTOR_BYTES} letters, digits, '-', '_', '.' or ':'; got {projector:?}"
        )));
    }
    Ok(())
}

/// Only services project (see the module docs).
pub(crate) fn require_service(identity: &Identity) -> Result<(), EngineError> {
    match identity {
        Identity::Service { .. } => Ok(()),
        _ => Err(EngineError::Forbidden {
            code: ErrorCode::PermissionDenied,
            message: "projections are written and read by services only".into(),
        }),
    }
}

/// Validates a batch against the schema and the limits and makes it one
/// mutation whose ops carry their stamps.
pub fn prepare(
    registry: &Arc<Registry>,
    projector: &str,
    request: &ProjectionRequest,
    identity: &Identity,
) -> Result<Mutation, EngineError> {
    require_service(identity)?;
    check_projector(projector)?;
    if request.documents.is_empty() {
        return Err(EngineError::BadRequest(
            "a projection batch needs at least one document".into(),
        ));
    }
    if request.documents.len() > MAX_OPS_PER_MUTATION {
        return Err(EngineError::LimitExceeded(format!(
            "{} documents in one projection batch; the limit is {MAX_OPS_PER_MUTATION}",
            request.documents.len()
        )));
    }
    if let Some(checkpoint) = request.checkpoint {
        check_source_seq("checkpoint: ", checkpoint)?;
    }
    let mut ops = Vec::with_capacity(request.documents.len());
    let mut stamps = Vec::with_capacity(request.documents.len());
    for (index, item) in request.documents.iter().enumerate() {
        let (op, stamp) = prepare_item(registry, index, item)?;
        ops.push(op);
        stamps.push(stamp);
    }
    let accepted_at_ms = protosync_schema::now_ms();
    let access = crate::access::write_access(identity, &ops, registry, accepted_at_ms)?;
    Ok(Mutation {
        ops,
        idempotency: None,
        access,
        accepted_at_ms,
        projection: Some(ProjectionWrite {
            projector: projector.to_owned(),
            stamps,
            checkpoint: request.checkpoint,
            mode: ProjectionMode::Incremental,
        }),
        audit: crate::audit::audit(identity, None),
    })
}

/// Checks a batch like [`prepare`] and returns it as documents to stage.
pub(crate) fn prepare_staged(
    registry: &Arc<Registry>,
    projector: &str,
    request: &ProjectionRequest,
    identity: &Identity,
) -> Result<Vec<StagedDocument>, EngineError> {
    let mutation = prepare(registry, projector, request, identity)?;
    let stamps = mutation.projection.map(|p| p.stamps).unwrap_or_default();
    Ok(mutation
        .ops
        .into_iter()
        .zip(stamps)
        .map(|(op, stamp)| StagedDocument {
            collection: op.collection.name.clone(),
            id: op.id,
            source_seq: stamp.source_seq,
            body: match op.kind {
                WriteKind::Upsert(body) => Some(body),
                _ => None,
            },
            hash: stamp.hash,
        })
        .collect())
}

/// Documents one swap may write or delete at most (staged ones and owned
/// ones not staged): the swap is one commit, held in memory whole.
pub const MAX_SWAP_DOCUMENTS: usize = 100_000;
/// Times a swap is tried again when the projector committed while its set
/// was read; past them the caller gets `PROJECTOR_CONFLICT`.
const SWAP_ATTEMPTS: usize = 3;
/// Rows read per store call while reading a swap's sets.
const SWAP_READ_CHUNK: usize = 1_000;

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapOutcome {
    /// The commit's seq: clients see the old set before it, the new after.
    pub seq: Seq,
    /// Documents written or deleted.
    pub applied: u64,
    /// Documents already as staged.
    pub unchanged: u64,
}

/// Swaps rebuild `generation` in: one commit that writes every staged
/// document and deletes every document the projector owns that was not
/// staged.
pub(crate) async fn swap(
    store: &dyn Store,
    registry: &Arc<Registry>,
    identity: &Identity,
    projector: &str,
    generation: u64,
) -> Result<SwapOutcome, EngineError> {
    require_service(identity)?;
    check_projector(projector)?;
    for _ in 0..SWAP_ATTEMPTS {
        let mutation = swap_mutation(store, registry, identity, projector, generation).await?;
        match store.commit(mutation).await {
            Ok(committed) => {
                let applied = committed
                    .projected
                    .iter()
                    .filter(|p| **p == Projected::Applied)
                    .count();
                return Ok(SwapOutcome {
                    seq: committed.seq,
                    applied: applied as u64,
                    unchanged: (committed.projected.len() - applied) as u64,
                });
            }
            Err(protosync_store::StoreError::ProjectorMoved { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::ProjectorConflict(format!(
        "projector {projector:?} kept committing while its rebuild was swapped in; pause it and retry"
    )))
}

async fn swap_mutation(
    store: &dyn Store,
    registry: &Arc<Registry>,
    identity: &Identity,
    projector: &str,
    generation: u64,
) -> Result<Mutation, EngineError> {
    let too_many = || {
        EngineError::LimitExceeded(format!(
            "a swap writes at most {MAX_SWAP_DOCUMENTS} documents (staged and removed)"
        ))
    };
    // Read the checkpoint first: a write after it makes the commit refuse
    // the set, so the set is never older than what it is checked against.
    let writes_seen = store.checkpoint(projector).await?.map_or(0, |c| c.writes());
    let rebuild = store
        .rebuild(projector, false)
        .await?
        .filter(|r| r.generation == generation)
        .ok_or(protosync_store::StoreError::UnknownRebuild {
            projector: projector.to_owned(),
            generation,
        })?;
    let mut staged: Vec<StagedDocument> = Vec::new();
    loop {
        let after = staged.last().map(|d| (d.collection.clone(), d.id.clone()));
        let chunk = store
            .staged_documents(projector, generation, after.as_ref(), SWAP_READ_CHUNK)
            .await?;
        let done = chunk.len() < SWAP_READ_CHUNK;
        staged.extend(chunk);
        if staged.len() > MAX_SWAP_DOCUMENTS {
            return Err(too_many());
        }
        if done {
            break;
        }
    }
    let staged_keys: std::collections::HashSet<(String, String)> = staged
        .iter()
        .map(|d| (d.collection.clone(), d.id.clone()))
        .collect();
    let mut ops = Vec::new();
    let mut stamps = Vec::new();
    let collection = |name: &str| {
        registry
            .collection(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownCollection(name.to_owned()))
    };
    let mut owned_after: Option<(String, String)> = None;
    loop {
        let chunk = store
            .projected_documents(projector, owned_after.as_ref(), None, SWAP_READ_CHUNK)
            .await?;
        owned_after = chunk.last().map(|d| (d.collection.clone(), d.id.clone()));
        let done = chunk.len() < SWAP_READ_CHUNK;
        for owned in chunk {
            if staged_keys.contains(&(owned.collection.clone(), owned.id.clone())) {
                continue;
            }
            ops.push(WriteOp {
                collection: collection(&owned.collection)?,
                id: owned.id,
                kind: WriteKind::Delete,
                expected_version: None,
            });
            stamps.push(SourceStamp {
                source_seq: rebuild.source_seq,
                hash: None,
            });
        }
        if staged.len() + ops.len() > MAX_SWAP_DOCUMENTS {
            return Err(too_many());
        }
        if done {
            break;
        }
    }
    for d in staged {
        ops.push(WriteOp {
            collection: collection(&d.collection)?,
            id: d.id,
            kind: d.body.map_or(WriteKind::Delete, WriteKind::Upsert),
            expected_version: None,
        });
        stamps.push(SourceStamp {
            source_seq: d.source_seq,
            hash: d.hash,
        });
    }
    let accepted_at_ms = protosync_schema::now_ms();
    let access = crate::access::write_access(identity, &ops, registry, accepted_at_ms)?;
    Ok(Mutation {
        ops,
        idempotency: None,
        access,
        accepted_at_ms,
        projection: Some(ProjectionWrite {
            projector: projector.to_owned(),
            stamps,
            checkpoint: Some(rebuild.source_seq),
            mode: ProjectionMode::Replace {
                generation,
                writes_seen,
            },
        }),
        audit: crate::audit::audit(identity, None),
    })
}

fn check_source_seq(location: &str, seq: u64) -> Result<(), EngineError> {
    if seq > MAX_SOURCE_SEQ {
        return Err(EngineError::BadRequest(format!(
            "{location}sourceSeq {seq} is above the limit {MAX_SOURCE_SEQ}"
        )));
    }
    Ok(())
}

fn prepare_item(
    registry: &Registry,
    index: usize,
    item: &ProjectedRequest,
) -> Result<(WriteOp, SourceStamp), EngineError> {
    let location = format!("documents[{index}]: ");
    let bad = |message: &str| EngineError::BadRequest(format!("{location}{message}"));
    let collection = registry
        .collection(&item.collection)
        .ok_or_else(|| EngineError::UnknownCollection(item.collection.clone()))?
        .clone();
    check_id(&item.id).map_err(|m| bad(&m))?;
    check_source_seq(&location, item.source_seq)?;
    let (kind, hash) = match (&item.doc, item.deleted) {
        (Some(_), true) => {
            return Err(bad("a document is either \"doc\" or \"deleted\", not both"));
        }
        (None, false) => return Err(bad("needs \"doc\", or \"deleted\": true")),
        (None, true) => (WriteKind::Delete, None),
        (Some(doc), false) => {
            let body = collection.validate(&item.id, doc).map_err(|error| {
                EngineError::InvalidDocument {
                    location: location.clone(),
                    error,
                }
            })?;
            let hash = content_hash(&body);
            (WriteKind::Upsert(body), Some(hash))
        }
    };
    let op = WriteOp {
        collection,
        id: item.id.clone(),
        kind,
        expected_version: None,
    };
    let stamp = SourceStamp {
        source_seq: item.source_seq,
        hash,
    };
    Ok((op, stamp))
}

/// A document's key in the drift check: `{"collection", "id"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DocRef {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
}

/// A document the projector expects, with the hash it computed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDocument {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// The content hash of the document it expects (docs/projections.md).
    pub hash: String,
}

/// One page of the drift check: the expected documents after `after`, in
/// strictly increasing (collection, id) byte order; `last` for the final
/// page (the range then runs to the end).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftRequest {
    /// Up to [`MAX_DRIFT_PAGE`] expected documents.
    pub expected: Vec<ExpectedDocument>,
    /// The last key of the previous page; absent on the first.
    #[serde(default)]
    pub after: Option<DocRef>,
    /// True on the final page.
    #[serde(default)]
    pub last: bool,
}

/// What one drift-check page found, each list in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// Expected and stored, with another hash.
    pub differ: Vec<DocRef>,
    /// Expected and not stored (or deleted by another writer).
    pub missing: Vec<DocRef>,
    /// Stored for the projector and not expected.
    pub unexpected: Vec<DocRef>,
    /// More stored-but-unexpected documents than [`MAX_DRIFT_UNEXPECTED`]:
    /// the list stops there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unexpected_truncated: bool,
    /// Pass as `after` with the next page.
    pub through: Option<DocRef>,
}

/// Stored documents read per store call while walking a drift range.
const DRIFT_READ_CHUNK: usize = 1_000;

/// Compares one page of expected documents with the projector's stored
/// ones in the same key range.
pub(crate) async fn drift(
    store: &dyn Store,
    projector: &str,
    request: &DriftRequest,
) -> Result<DriftReport, EngineError> {
    check_projector(projector)?;
    if request.expected.len() > MAX_DRIFT_PAGE {
        return Err(EngineError::LimitExceeded(format!(
            "{} expected documents in one drift page; the limit is {MAX_DRIFT_PAGE}",
            request.expected.len()
        )));
    }
    let keys: Vec<DocRef> = request
        .expected
        .iter()
        .map(|e| DocRef {
            collection: e.collection.clone(),
            id: e.id.clone(),
        })
        .collect();
    let ordered = request.after.iter().chain(&keys).is_sorted_by(|a, b| a < b);
    if !ordered {
        return Err(EngineError::BadRequest(
            "expected documents must come in strictly increasing (collection, id) order, after \"after\""
                .into(),
        ));
    }
    let through = if request.last { None } else { keys.last() };
    let mut stored: Vec<ProjectedDocument> = Vec::new();
    let mut cursor = request
        .after
        .as_ref()
        .map(|k| (k.collection.clone(), k.id.clone()));
    let through_key = through.map(|k| (k.collection.clone(), k.id.clone()));
    let limit = request.expected.len() + MAX_DRIFT_UNEXPECTED + 1;
    loop {
        let chunk = store
            .projected_documents(
                projector,
                cursor.as_ref(),
                through_key.as_ref(),
                DRIFT_READ_CHUNK,
            )
            .await?;
        let full = chunk.len() == DRIFT_READ_CHUNK;
        cursor = chunk.last().map(|d| (d.collection.clone(), d.id.clone()));
        stored.extend(chunk);
        if !full || stored.len() >= limit {
            break;
        }
    }
    let mut report = compare(&request.expected, stored);
    report.through = match through {
        Some(key) => Some(key.clone()),
        None => keys.last().cloned().or_else(|| request.after.clone()),
    };
    Ok(report)
}

/// Merges two key-ordered lists.
fn compare(expected: &[ExpectedDocument], stored: Vec<ProjectedDocument>) -> DriftReport {
    let mut report = DriftReport::default();
    let mut stored = stored.into_iter().peekable();
    let key_of = |d: &ProjectedDocument| DocRef {
        collection: d.collection.clone(),
        id: d.id.clone(),
    };
    let note_unexpected = |report: &mut DriftReport, key: DocRef| {
        if report.unexpected.len() < MAX_DRIFT_UNEXPECTED {
            report.unexpected.push(key);
        } else {
            report.unexpected_truncated = true;
        }
    };
    for want in expected {
        let key = DocRef {
            collection: want.collection.clone(),
            id: want.id.clone(),
        };
        while let Some(d) = stored.next_if(|d| key_of(d) < key) {
            note_unexpected(&mut report, key_of(&d));
        }
        match stored.next_if(|d| key_of(d) == key) {
            Some(d) if d.hash.as_deref() == Some(want.hash.as_str()) => {}
            Some(d) if d.hash.is_some() => report.differ.push(key),
            _ => report.missing.push(key),
        }
    }
    for d in stored {
        note_unexpected(&mut report, key_of(&d));
    }
    report
}

/// What one projection commit did, document by document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionOutcome {
    /// The commit's seq.
    pub seq: Seq,
    /// One per document of the batch, in order.
    pub documents: Vec<ProjectedResult>,
}

/// What became of one document of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedResult {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// Applied, stale or unchanged.
    pub status: Projected,
    /// The document's version after the commit; 0 when there is none.
    pub version: Version,
    /// The content hash of the document as sent (canonical form), `None`
    /// for a deletion: what the drift check compares.
    pub hash: Option<String>,
}

/// Pairs each op of `mutation` with what the commit did to it.
pub(crate) fn outcome(mutation: &Mutation, committed: CommitOutcome) -> ProjectionOutcome {
    let stamps = mutation.projection.as_ref().map_or(&[][..], |p| &p.stamps);
    // Invariant: a projection commit answers one status and one result per op.
    assert_eq!(committed.projected.len(), mutation.ops.len());
    let documents = mutation
        .ops
        .iter()
        .zip(stamps)
        .zip(committed.results.iter().zip(committed.projected))
        .map(|((op, stamp), (result, status))| ProjectedResult {
            collection: op.collection.name.clone(),
            id: op.id.clone(),
            status,
            version: result.version,
            hash: stamp.hash.clone(),
        })
        .collect();
    ProjectionOutcome {
        seq: committed.seq,
        documents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(id: &str, hash: &str) -> ExpectedDocument {
        ExpectedDocument {
            collection: "c".into(),
            id: id.into(),
            hash: hash.into(),
        }
    }

    fn stored(id: &str, hash: Option<&str>) -> ProjectedDocument {
        ProjectedDocument {
            collection: "c".into(),
            id: id.into(),
            source_seq: 1,
            hash: hash.map(Into::into),
        }
    }

    fn ids(keys: &[DocRef]) -> Vec<&str> {
        keys.iter().map(|k| k.id.as_str()).collect()
    }

    #[test]
    fn the_drift_report_names_what_differs_is_missing_or_is_not_expected() {
        let report = compare(
            &[
                expected("a", "h"),
                expected("b", "h"),
                expected("d", "h"),
                expected("e", "h"),
            ],
            vec![
                stored("a", Some("h")),
                stored("b", Some("other")),
                stored("c", Some("h")),
                stored("e", None),
                stored("f", Some("h")),
            ],
        );
        assert_eq!(ids(&report.differ), ["b"]);
        assert_eq!(ids(&report.missing), ["d", "e"]);
        assert_eq!(ids(&report.unexpected), ["c", "f"]);
    }
}
