//! Projection writes, the part both stores share: deciding, inside a
//! commit, which documents of a projector's batch are applied, stale or
//! unchanged, and what that leaves in the stamps and the checkpoint.
//!
//! A projector is a trusted writer that derives documents from its own
//! event log. Every document it writes carries a [`SourceStamp`]: the
//! position in that log it reflects (`source_seq`) and a hash of its
//! canonical JSON ([`content_hash`]). A write at or below the stored
//! `source_seq` is stale, one with the stored hash is unchanged; neither
//! writes the document. The decision is made here, in memory, on the stamps
//! a store read under its commit lock; this module never touches a
//! database.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::commit::DocKey;
use crate::{Mutation, Rejection, StoreError, WriteKind, WriteOp};

/// The longest projector name, in bytes: it appears in URLs and rows.
pub const MAX_PROJECTOR_BYTES: usize = 128;

/// What a projector asks of one commit, beside its ops.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionWrite {
    /// The projector's name.
    pub projector: String,
    /// One per op of the mutation, in op order.
    pub stamps: Vec<SourceStamp>,
    /// The source seq the projector has read up to, when it is beyond its
    /// documents' (events that changed no document); the checkpoint moves
    /// to the highest of this, the batch's source seqs and where it was.
    pub checkpoint: Option<u64>,
    /// An incremental batch, or the swap that ends a rebuild.
    pub mode: ProjectionMode,
}

/// How a projection commit treats the stamps it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionMode {
    /// A batch from the projector's log: stale writes are no-ops.
    Incremental,
    /// The swap of a rebuild `generation`: the ops are the whole new set
    /// (every staged document, and a deletion of every owned one not
    /// staged), so nothing is stale and the checkpoint starts over from
    /// the rebuild's. Refused with [`StoreError::ProjectorMoved`] when the
    /// projector committed since its writes counted `writes_seen` (the
    /// set was read before that write and would miss it).
    Replace {
        /// The rebuild whose staging the commit ends.
        generation: u64,
        /// `applied + stale + unchanged` of the checkpoint the set was
        /// built against.
        writes_seen: u64,
    },
}

/// A rebuild of a projector's documents in progress: documents are staged
/// beside the live ones and swapped in with one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    /// Names this rebuild; a new one after a swap or an abandon gets the
    /// next, so a stale client cannot stage into it.
    pub generation: u64,
    /// When it started, in milliseconds since the epoch.
    pub started_at_ms: i64,
    /// The highest source seq staged (or declared) so far: where a resumed
    /// rebuild continues reading its log.
    pub source_seq: u64,
    /// Documents staged (tombstones included).
    pub staged: u64,
}

/// A document staged for a rebuild; `body` and `hash` are `None` for a
/// deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedDocument {
    /// The collection.
    pub collection: String,
    /// The id.
    pub id: String,
    /// The source seq of the state staged; a later staging of the same
    /// document with a lower one is ignored.
    pub source_seq: u64,
    /// The canonical body.
    pub body: Option<Value>,
    /// Its [`content_hash`].
    pub hash: Option<String>,
}

impl Checkpoint {
    /// Every write the projector has sent: a count that moves on every
    /// projection commit.
    pub fn writes(&self) -> u64 {
        self.applied + self.stale + self.unchanged
    }
}

/// Where a projected document stands in its projector's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    /// The position in the projector's log the document reflects.
    pub source_seq: u64,
    /// [`content_hash`] of the document; `None` for a deletion, whose
    /// stamp stays (a tombstone) so an older write retried later is stale.
    pub hash: Option<String>,
}

/// A stamp as a store keeps it: with the projector that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStamp {
    /// The projector that owns the document.
    pub projector: String,
    /// Its last accepted stamp.
    pub stamp: SourceStamp,
}

/// What became of one document of a projection batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Projected {
    /// Written (or deleted) by the commit.
    Applied,
    /// Its `source_seq` is not above the stored one: nothing written.
    Stale,
    /// Its hash is the stored one: the document is not written, its stamp
    /// moves to the new `source_seq`.
    Unchanged,
}

/// A projector's checkpoint, moved in the same commit as its documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The highest source seq the projector's documents reflect.
    pub source_seq: u64,
    /// When it last moved, in milliseconds since the epoch (the store's
    /// clock); 0 in a plan, set by the store when it writes.
    pub updated_at_ms: i64,
    /// Documents the projector owns now (live stamps); filled in on read.
    pub documents: u64,
    /// Documents applied, over the projector's life.
    pub applied: u64,
    /// Stale writes, over its life.
    pub stale: u64,
    /// Unchanged writes, over its life.
    pub unchanged: u64,
}

/// SHA-256, in lowercase hex, of `body` serialized with sorted keys and no
/// whitespace: the canonical JSON a projector hashes to compare with what
/// is stored (docs/projections.md).
pub fn content_hash(body: &Value) -> String {
    // serde_json maps keep keys sorted, so equal values serialize equally.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A projection batch decided against the stamps a commit found.
pub(crate) struct Decision {
    /// The mutation to plan: the applied ops only (a deletion of a
    /// document that does not exist writes nothing but its stamp).
    pub mutation: Mutation,
    /// For each op of `mutation`, its index in the batch: a rejection
    /// names the document as the caller numbered it.
    pub batch_index: Vec<usize>,
    /// One per op of the batch, in op order.
    pub projected: Vec<Projected>,
    /// The stamps to store, net per document.
    pub stamps: Vec<(DocKey, StoredStamp)>,
    /// The projector's checkpoint after the commit (its counts included).
    pub checkpoint: Checkpoint,
    /// The rebuild this commit ends, if it is a swap.
    pub finished: Option<u64>,
}

/// Decides `projection` (the ops of `mutation` with their stamps) against
/// the `stamps` stored for its documents, which documents `exists`, and the
/// projector's `checkpoint` before it. A document another projector owns
/// rejects the batch with [`Rejection::OwnedByAnotherProjector`].
pub(crate) fn decide(
    mutation: &Mutation,
    projection: &ProjectionWrite,
    stamps: &HashMap<DocKey, StoredStamp>,
    exists: impl Fn(&DocKey) -> bool,
    checkpoint: Option<&Checkpoint>,
) -> Result<Decision, StoreError> {
    // Invariant: one stamp per op; the engine builds both from one list.
    assert_eq!(mutation.ops.len(), projection.stamps.len());
    let mut now: HashMap<DocKey, StoredStamp> = HashMap::new();
    let mut live: HashMap<DocKey, bool> = HashMap::new();
    let mut ops: Vec<WriteOp> = Vec::new();
    let mut batch_index = Vec::new();
    let mut projected = Vec::with_capacity(mutation.ops.len());
    let mut checkpoint = checkpoint.cloned().unwrap_or_default();
    let replace = match projection.mode {
        ProjectionMode::Incremental => None,
        ProjectionMode::Replace {
            generation,
            writes_seen,
        } => {
            if checkpoint.writes() != writes_seen {
                return Err(StoreError::ProjectorMoved {
                    projector: projection.projector.clone(),
                });
            }
            checkpoint.source_seq = 0;
            Some(generation)
        }
    };
    for (index, (op, stamp)) in mutation.ops.iter().zip(&projection.stamps).enumerate() {
        let key = (op.collection.name.clone(), op.id.clone());
        let stored = now.get(&key).or_else(|| stamps.get(&key));
        if let Some(owner) = stored.filter(|s| s.projector != projection.projector) {
            return Err(StoreError::Rejected {
                op: index,
                collection: key.0,
                id: key.1,
                rejection: Rejection::OwnedByAnotherProjector {
                    projector: owner.projector.clone(),
                },
            });
        }
        let previous = stored.map(|s| &s.stamp);
        let outcome = match previous {
            Some(p) if replace.is_none() && stamp.source_seq <= p.source_seq => Projected::Stale,
            // A swap restores a document another writer deleted.
            Some(p)
                if stamp.hash == p.hash
                    && (replace.is_none() || stamp.hash.is_none() || exists(&key)) =>
            {
                Projected::Unchanged
            }
            _ => Projected::Applied,
        };
        projected.push(outcome);
        match outcome {
            Projected::Stale => {
                checkpoint.stale += 1;
                continue;
            }
            Projected::Unchanged => checkpoint.unchanged += 1,
            Projected::Applied => {
                checkpoint.applied += 1;
                let is_live = *live.entry(key.clone()).or_insert_with(|| exists(&key));
                let deletes = matches!(op.kind, WriteKind::Delete);
                if !deletes || is_live {
                    ops.push(op.clone());
                    batch_index.push(index);
                }
                live.insert(key.clone(), !deletes);
            }
        }
        checkpoint.source_seq = checkpoint.source_seq.max(stamp.source_seq);
        now.insert(
            key,
            StoredStamp {
                projector: projection.projector.clone(),
                stamp: stamp.clone(),
            },
        );
    }
    if let Some(read_up_to) = projection.checkpoint {
        checkpoint.source_seq = checkpoint.source_seq.max(read_up_to);
    }
    Ok(Decision {
        mutation: Mutation {
            ops,
            idempotency: None,
            access: mutation.access.clone(),
            accepted_at_ms: mutation.accepted_at_ms,
            projection: None,
            audit: mutation.audit.clone(),
        },
        batch_index,
        projected,
        stamps: now.into_iter().collect(),
        checkpoint,
        finished: replace,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::{delete, mutation, note, upsert};

    fn stamp(source_seq: u64, body: Option<&Value>) -> SourceStamp {
        SourceStamp {
            source_seq,
            hash: body.map(content_hash),
        }
    }

    fn batch(ops: Vec<(WriteOp, SourceStamp)>) -> (Mutation, ProjectionWrite) {
        let (ops, stamps): (Vec<_>, Vec<_>) = ops.into_iter().unzip();
        let projection = ProjectionWrite {
            projector: "p".into(),
            stamps,
            checkpoint: None,
            mode: ProjectionMode::Incremental,
        };
        (mutation(ops), projection)
    }

    fn stored(id: &str, projector: &str, stamp: SourceStamp) -> (DocKey, StoredStamp) {
        (
            ("notes".into(), id.into()),
            StoredStamp {
                projector: projector.into(),
                stamp,
            },
        )
    }

    #[test]
    fn a_write_is_stale_at_or_below_the_stored_source_seq_and_unchanged_with_the_stored_hash() {
        let (a, b) = (note("ann", "a", 1), note("ann", "b", 1));
        let stamps: HashMap<_, _> = [
            stored("n1", "p", stamp(5, Some(&a))),
            stored("n2", "p", stamp(5, Some(&a))),
            stored("n3", "p", stamp(5, Some(&a))),
        ]
        .into();
        let (m, p) = batch(vec![
            (upsert("n1", b.clone()), stamp(5, Some(&b))),
            (upsert("n2", a.clone()), stamp(6, Some(&a))),
            (upsert("n3", b.clone()), stamp(6, Some(&b))),
            (upsert("n4", b.clone()), stamp(1, Some(&b))),
        ]);
        let d = decide(&m, &p, &stamps, |_| true, None).unwrap();
        use Projected::*;
        assert_eq!(d.projected, [Stale, Unchanged, Applied, Applied]);
        let written: Vec<&str> = d.mutation.ops.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(written, ["n3", "n4"], "only applied documents are written");
        assert_eq!(
            d.batch_index,
            [2, 3],
            "each written op knows its place in the batch"
        );
        let mut stamped: Vec<(String, u64)> = d
            .stamps
            .iter()
            .map(|((_, id), s)| (id.clone(), s.stamp.source_seq))
            .collect();
        stamped.sort();
        // n2's stamp moves though its document is not written, so a retry
        // of an older write between 5 and 6 stays stale.
        assert_eq!(
            stamped,
            [("n2".into(), 6), ("n3".into(), 6), ("n4".into(), 1)]
        );
        assert_eq!(
            (
                d.checkpoint.source_seq,
                d.checkpoint.applied,
                d.checkpoint.stale
            ),
            (6, 2, 1)
        );
        assert_eq!(d.checkpoint.unchanged, 1);
    }

    #[test]
    fn a_deletion_leaves_a_tombstone_and_deletes_only_what_exists() {
        let a = note("ann", "a", 1);
        let (m, p) = batch(vec![
            (delete("gone"), stamp(3, None)),
            (delete("here"), stamp(3, None)),
            (upsert("gone", a.clone()), stamp(2, Some(&a))),
        ]);
        let d = decide(&m, &p, &HashMap::new(), |k| k.1 == "here", None).unwrap();
        use Projected::*;
        assert_eq!(d.projected, [Applied, Applied, Stale]);
        let written: Vec<&str> = d.mutation.ops.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(written, ["here"]);
        assert!(d.stamps.iter().all(|(_, s)| s.stamp.hash.is_none()));
    }

    #[test]
    fn a_document_of_another_projector_rejects_the_batch() {
        let a = note("ann", "a", 1);
        let stamps: HashMap<_, _> = [stored("n1", "other", stamp(1, Some(&a)))].into();
        let (m, p) = batch(vec![(upsert("n1", a.clone()), stamp(9, Some(&a)))]);
        let Err(StoreError::Rejected { rejection, .. }) = decide(&m, &p, &stamps, |_| true, None)
        else {
            panic!("expected a rejection");
        };
        assert_eq!(
            rejection,
            Rejection::OwnedByAnotherProjector {
                projector: "other".into()
            }
        );
    }

    #[test]
    fn the_checkpoint_takes_the_highest_of_where_it_was_the_batch_and_the_read_position() {
        let a = note("ann", "a", 1);
        let before = Checkpoint {
            source_seq: 10,
            applied: 4,
            ..Checkpoint::default()
        };
        let (m, mut p) = batch(vec![(upsert("n1", a.clone()), stamp(7, Some(&a)))]);
        let d = decide(&m, &p, &HashMap::new(), |_| false, Some(&before)).unwrap();
        assert_eq!((d.checkpoint.source_seq, d.checkpoint.applied), (10, 5));
        p.checkpoint = Some(20);
        let d = decide(&m, &p, &HashMap::new(), |_| false, Some(&before)).unwrap();
        assert_eq!(d.checkpoint.source_seq, 20);
    }

    #[test]
    fn a_swap_replaces_every_stamp_and_is_refused_if_the_projector_wrote_since_its_set_was_read() {
        let (a, b) = (note("ann", "a", 1), note("ann", "b", 1));
        let stamps: HashMap<_, _> = [
            stored("n1", "p", stamp(50, Some(&a))),
            stored("n2", "p", stamp(50, Some(&a))),
        ]
        .into();
        let before = Checkpoint {
            source_seq: 50,
            applied: 2,
            ..Checkpoint::default()
        };
        let (m, mut p) = batch(vec![
            (upsert("n1", b.clone()), stamp(7, Some(&b))),
            (upsert("n2", a.clone()), stamp(7, Some(&a))),
        ]);
        p.mode = ProjectionMode::Replace {
            generation: 3,
            writes_seen: 2,
        };
        let d = decide(&m, &p, &stamps, |_| true, Some(&before)).unwrap();
        use Projected::*;
        assert_eq!(
            d.projected,
            [Applied, Unchanged],
            "lower source seqs are not stale"
        );
        assert_eq!((d.checkpoint.source_seq, d.finished), (7, Some(3)));
        p.mode = ProjectionMode::Replace {
            generation: 3,
            writes_seen: 1,
        };
        assert!(matches!(
            decide(&m, &p, &stamps, |_| true, Some(&before)),
            Err(StoreError::ProjectorMoved { .. })
        ));
    }

    #[test]
    fn the_content_hash_does_not_depend_on_key_order() {
        let one: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,2]}}"#).unwrap();
        let two = json!({"a": {"x": [1, 2], "y": 2}, "b": 1});
        assert_eq!(content_hash(&one), content_hash(&two));
        assert_ne!(content_hash(&one), content_hash(&json!({"b": 2})));
    }
}
