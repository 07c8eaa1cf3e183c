//! Group commit: several mutations committed in one database transaction,
//! each with its own seq and its own outcome.
//!
//! A store reads, under its commit lock, the head, every document the group
//! touches and the idempotency records of its keys ([`GroupReads`]); this
//! module decides every mutation in memory, in order, each seeing the
//! documents as the earlier ones left them, and folds what the accepted ones
//! write into one set of rows ([`GroupWrites`]). A rejected mutation takes
//! no seq, so seqs stay gap-free. The store then writes those rows and bumps
//! the head once. Decisions are made before anything is written, so a
//! rejection never needs a rollback; only a failing statement does, and that
//! fails the transaction, never just one of its mutations.

use std::collections::HashMap;

use crate::commit::{DocKey, keys_to_read, plan_commit};
use crate::idempotency::{encode_outcome, recorded_outcome};
use crate::{CommitOutcome, Mutation, Seq, StoreError, StoredDocument, Version};

/// Each mutation's answer, in order, and the head after the group when
/// anything committed.
pub(crate) type GroupAnswers = (Vec<Result<CommitOutcome, StoreError>>, Option<Seq>);

/// What a store reads before a group is decided.
pub(crate) struct GroupReads {
    pub head: Seq,
    /// The stored documents among [`GroupKeys::documents`].
    pub stored: HashMap<DocKey, StoredDocument>,
    /// Idempotency key → (request hash, recorded outcome), for the keys
    /// among [`GroupKeys::idempotency`] that are recorded.
    pub recorded: HashMap<String, (String, String)>,
}

/// What a group needs read: every document and idempotency key, once.
pub(crate) struct GroupKeys {
    pub documents: Vec<DocKey>,
    pub idempotency: Vec<String>,
}

impl GroupKeys {
    pub fn of<'m>(mutations: impl IntoIterator<Item = &'m Mutation>) -> GroupKeys {
        let mut documents = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut idempotency = Vec::new();
        for mutation in mutations {
            for key in keys_to_read(mutation) {
                if seen.insert(key.clone()) {
                    documents.push(key);
                }
            }
            if let Some(key) = &mutation.idempotency
                && !idempotency.contains(&key.key)
            {
                idempotency.push(key.key.clone());
            }
        }
        GroupKeys {
            documents,
            idempotency,
        }
    }
}

/// The rows a group writes: the net effect on documents and index entries,
/// and every commit's change-log, commit and idempotency rows. Bodies are
/// canonical JSON text, serialized once.
#[derive(Debug, Default)]
pub(crate) struct GroupWrites {
    /// (collection, id, version, seq, body) of documents the group leaves
    /// existing: insert or replace.
    pub upserted: Vec<(String, String, Version, Seq, String)>,
    /// Documents the group leaves deleted.
    pub deleted: Vec<DocKey>,
    /// Index entries (collection, index, key) the group touched: all are
    /// deleted first, then `index_added` inserted, so an entry removed and
    /// re-added within the group is neither lost nor duplicated.
    pub index_touched: Vec<(String, String, Vec<u8>)>,
    /// Index entries (collection, index, key, document id) the group leaves.
    pub index_added: Vec<(String, String, Vec<u8>, String)>,
    /// (seq, ord, collection, id, version, body): the change log.
    pub changes: Vec<(Seq, i32, String, String, Version, Option<String>)>,
    /// (seq, idempotency key) of every commit.
    pub commits: Vec<(Seq, Option<String>)>,
    /// (key, request hash, seq, outcome).
    pub idempotency: Vec<(String, String, Seq, String)>,
    /// The head after the group; `None` when nothing was committed.
    pub head: Option<Seq>,
}

/// Decides every mutation of a group in order. Returns one answer per
/// mutation (in order) and the rows to write.
pub(crate) fn plan_group<'m>(
    mutations: impl IntoIterator<Item = &'m Mutation>,
    reads: GroupReads,
) -> (Vec<Result<CommitOutcome, StoreError>>, GroupWrites) {
    let GroupReads {
        head,
        mut stored,
        mut recorded,
    } = reads;
    let mut answers = Vec::new();
    let mut writes = GroupWrites::default();
    let mut next = head;
    // Net effect per document and index entry, last write wins.
    let mut documents: HashMap<DocKey, Option<(Version, Seq, String)>> = HashMap::new();
    let mut entries: HashMap<(String, String, Vec<u8>), Option<String>> = HashMap::new();
    for mutation in mutations {
        if let Some(key) = &mutation.idempotency
            && let Some((hash, outcome)) = recorded.get(&key.key)
        {
            answers.push(recorded_outcome(&key.key, &key.request_hash, hash, outcome));
            continue;
        }
        let plan = match plan_commit(mutation, &stored) {
            Ok(plan) => plan,
            Err(rejected) => {
                answers.push(Err(rejected));
                continue;
            }
        };
        // Accepted mutations take head+1, head+2, … in order; a rejected
        // one, or one answered from an idempotency record, takes none (see
        // the check after the loop).
        let seq = next.next();
        let outcome = CommitOutcome {
            seq,
            results: plan.results,
            duplicate: false,
        };
        let record = match &mutation.idempotency {
            Some(key) => match encode_outcome(&outcome) {
                Ok(encoded) => Some((key, encoded)),
                Err(e) => {
                    answers.push(Err(e));
                    continue;
                }
            },
            None => None,
        };
        next = seq;
        for (ord, write) in plan.writes.into_iter().enumerate() {
            let key = (write.collection, write.id);
            let body = write.body.as_ref().map(|b| b.to_string());
            writes.changes.push((
                seq,
                ord as i32,
                key.0.clone(),
                key.1.clone(),
                write.version,
                body.clone(),
            ));
            for (index, entry) in write.removed_index_keys {
                entries.insert((key.0.clone(), index, entry), None);
            }
            for (index, entry) in write.added_index_keys {
                entries.insert((key.0.clone(), index, entry), Some(key.1.clone()));
            }
            match write.body {
                Some(value) => {
                    stored.insert(
                        key.clone(),
                        StoredDocument {
                            id: key.1.clone(),
                            version: write.version,
                            seq,
                            body: value,
                        },
                    );
                }
                None => {
                    stored.remove(&key);
                }
            }
            documents.insert(key, body.map(|text| (write.version, seq, text)));
        }
        if let Some((key, encoded)) = record {
            recorded.insert(key.key.clone(), (key.request_hash.clone(), encoded.clone()));
            writes
                .idempotency
                .push((key.key.clone(), key.request_hash.clone(), seq, encoded));
        }
        writes
            .commits
            .push((seq, mutation.idempotency.as_ref().map(|k| k.key.clone())));
        answers.push(Ok(outcome));
    }
    for ((collection, id), state) in documents {
        match state {
            Some((version, seq, body)) => {
                writes.upserted.push((collection, id, version, seq, body))
            }
            None => writes.deleted.push((collection, id)),
        }
    }
    for ((collection, index, entry), doc) in entries {
        if let Some(id) = doc {
            writes
                .index_added
                .push((collection.clone(), index.clone(), entry.clone(), id));
        }
        writes.index_touched.push((collection, index, entry));
    }
    writes.head = (next != head).then_some(next);
    assert_gap_free(head, &answers, &writes);
    (answers, writes)
}

/// Invariant: the group's commits are head+1 … its new head with no gap
/// and no seq twice; each accepted mutation is answered with its own, in
/// order; every change and idempotency row belongs to one of them. The
/// stores move the head to `writes.head` and write these rows as they are,
/// so a gap here would be a gap in the durable log that every reader
/// follows. Checked in every build: it costs a pass over the group next to
/// a database transaction, and it runs before anything is written.
fn assert_gap_free(head: Seq, answers: &[Result<CommitOutcome, StoreError>], writes: &GroupWrites) {
    let taken = || writes.commits.iter().map(|(seq, _)| *seq);
    assert!(
        taken()
            .zip(1..)
            .all(|(seq, offset)| seq == Seq(head.0 + offset)),
        "a group after seq {head} took seqs {:?}",
        taken().collect::<Vec<_>>()
    );
    let newest = writes.commits.last().map(|(seq, _)| *seq);
    assert_eq!(writes.head, newest, "the head after a group");
    let answered = answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .filter(|outcome| !outcome.duplicate)
        .map(|outcome| outcome.seq);
    assert!(
        answered.eq(taken()),
        "a group's answers disagree with its commits"
    );
    let last = writes.head.unwrap_or(head);
    let belongs = |seq: Seq| head < seq && seq <= last;
    assert!(
        writes.changes.iter().all(|change| belongs(change.0))
            && writes.changes.is_sorted_by_key(|change| change.0)
            && writes.idempotency.iter().all(|record| belongs(record.2)),
        "a group wrote a change or an idempotency record outside its commits {head}..={last}"
    );
}
