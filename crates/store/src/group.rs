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

use std::collections::{HashMap, HashSet};

use crate::commit::{DocKey, Known, Undecided, keys_to_read, plan_commit_with};
use crate::idempotency::{encode_outcome, recorded_outcome};
use crate::projection::{Checkpoint, StoredStamp, decide};
use crate::{Audit, CommitOutcome, Mutation, OpResult, Seq, StoreError, StoredDocument, Version};

/// Each mutation's answer, in order, and the head after the group when
/// anything committed.
pub(crate) type GroupAnswers = (Vec<Result<CommitOutcome, StoreError>>, Option<Seq>);

/// Rounds of lookups one group may take: each loads what the group's
/// write rules asked for and decides the group again. A rule asks for at
/// most `MAX_LOOKUPS_PER_EVALUATION` documents, and every round answers
/// each pending rule at least one, so this many rounds answer them all;
/// a rule still asking after them is denied.
pub(crate) const MAX_LOOKUP_ROUNDS: usize = protosync_schema::MAX_LOOKUPS_PER_EVALUATION + 1;

/// What a store reads before a group is decided.
#[derive(Clone)]
pub(crate) struct GroupReads {
    pub head: Seq,
    /// The stored documents among [`GroupKeys::documents`] and the
    /// documents write rules looked up.
    pub stored: HashMap<DocKey, StoredDocument>,
    /// Every key read: one absent from `stored` does not exist.
    pub loaded: HashSet<DocKey>,
    /// Idempotency key → (request hash, recorded outcome), for the keys
    /// among [`GroupKeys::idempotency`] that are recorded.
    pub recorded: HashMap<String, (String, String)>,
    /// The stored stamps among [`GroupKeys::stamped`].
    pub stamps: HashMap<DocKey, StoredStamp>,
    /// The checkpoints of [`GroupKeys::projectors`] that exist.
    pub checkpoints: HashMap<String, Checkpoint>,
}

/// What a group needs read: every document and idempotency key, once.
pub(crate) struct GroupKeys {
    pub documents: Vec<DocKey>,
    pub idempotency: Vec<String>,
    /// The documents of projection batches, whose stamps are read.
    pub stamped: Vec<DocKey>,
    /// The projectors of the group's projection batches.
    pub projectors: Vec<String>,
}

impl GroupKeys {
    pub(crate) fn of<'m>(mutations: impl IntoIterator<Item = &'m Mutation>) -> GroupKeys {
        let mut documents = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut idempotency = Vec::new();
        let (mut stamped, mut projectors) = (Vec::new(), Vec::new());
        for mutation in mutations {
            for key in keys_to_read(mutation) {
                if mutation.projection.is_some() {
                    stamped.push(key.clone());
                }
                if seen.insert(key.clone()) {
                    documents.push(key);
                }
            }
            if let Some(projection) = &mutation.projection
                && !projectors.contains(&projection.projector)
            {
                projectors.push(projection.projector.clone());
            }
            if let Some(key) = &mutation.idempotency
                && !idempotency.contains(&key.key)
            {
                idempotency.push(key.key.clone());
            }
        }
        stamped.sort();
        stamped.dedup();
        GroupKeys {
            documents,
            idempotency,
            stamped,
            projectors,
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
    /// (seq, collection, id, version, body, actor) of every change to a
    /// collection that keeps its history.
    pub history: Vec<HistoryRow>,
    /// (seq, idempotency key, audit) of every commit.
    pub commits: Vec<(Seq, Option<String>, Audit)>,
    /// (key, request hash, seq, outcome).
    pub idempotency: Vec<(String, String, Seq, String)>,
    /// Projection stamps the group leaves, net per document: insert or
    /// replace.
    pub stamps: Vec<(DocKey, StoredStamp)>,
    /// Checkpoints the group leaves, net per projector: insert or replace.
    pub checkpoints: Vec<(String, Checkpoint)>,
    /// (projector, generation) of rebuilds the group swapped in: their
    /// staging is dropped in the same transaction.
    pub finished_rebuilds: Vec<(String, u64)>,
    /// The head after the group; `None` when nothing was committed.
    pub head: Option<Seq>,
}

/// (seq, collection, id, version, body, actor): one kept version.
pub(crate) type HistoryRow = (Seq, String, String, Version, Option<String>, Option<String>);

/// What deciding a group came to.
pub(crate) enum GroupPlan {
    /// One answer per mutation (in order) and the rows to write (boxed:
    /// they are large beside the other variant).
    Decided(Vec<Result<CommitOutcome, StoreError>>, Box<GroupWrites>),
    /// Write rules look up these documents: load them (in the group's
    /// transaction, into [`GroupReads`]) and decide again.
    NeedsLookups(Vec<DocKey>),
}

/// Decides every mutation of a group in order. `last_round`: no more
/// documents can be loaded, so a rule that asks for one is denied.
pub(crate) fn plan_group<'m>(
    mutations: impl IntoIterator<Item = &'m Mutation>,
    reads: GroupReads,
    last_round: bool,
) -> GroupPlan {
    let GroupReads {
        head,
        mut stored,
        loaded,
        mut recorded,
        mut stamps,
        mut checkpoints,
    } = reads;
    let (mut stamps_left, mut checkpoints_left) = (HashMap::new(), HashMap::new());
    // Lookups asked for this round. A mutation that asks is left out of
    // this round's decisions (it is decided in the next, with the
    // documents), and the rest are decided anyway to collect their
    // lookups too: usually one round loads all a group needs.
    let mut wanted: Vec<DocKey> = Vec::new();
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
        let known = Known {
            stored: &stored,
            loaded: &loaded,
            exhausted: last_round,
        };
        let decision = match &mutation.projection {
            None => None,
            Some(projection) => {
                let exists = |key: &DocKey| stored.contains_key(key);
                let before = checkpoints.get(&projection.projector);
                match decide(mutation, projection, &stamps, exists, before) {
                    Ok(decision) => Some((projection.projector.clone(), decision)),
                    Err(rejected) => {
                        answers.push(Err(rejected));
                        continue;
                    }
                }
            }
        };
        let to_plan = decision.as_ref().map_or(mutation, |(_, d)| &d.mutation);
        let plan = match plan_commit_with(to_plan, &known) {
            Ok(plan) => plan,
            Err(Undecided::Refused(StoreError::Rejected {
                op,
                collection,
                id,
                rejection,
            })) if decision.is_some() => {
                let batch_index = decision.as_ref().map(|(_, d)| &d.batch_index);
                answers.push(Err(StoreError::Rejected {
                    op: batch_index.and_then(|b| b.get(op).copied()).unwrap_or(op),
                    collection,
                    id,
                    rejection,
                }));
                continue;
            }
            Err(Undecided::Refused(rejected)) => {
                answers.push(Err(rejected));
                continue;
            }
            Err(Undecided::NeedsLookups(keys)) => {
                for key in keys {
                    let key = (key.collection, key.id);
                    if !wanted.contains(&key) {
                        wanted.push(key);
                    }
                }
                answers.push(Err(StoreError::Internal("undecided".into())));
                continue;
            }
        };
        // Accepted mutations take head+1, head+2, … in order; a rejected
        // one, or one answered from an idempotency record, takes none (see
        // the check after the loop).
        let seq = next.next();
        let mut outcome = CommitOutcome {
            seq,
            results: plan.results,
            duplicate: false,
            projected: Vec::new(),
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
            let body = write.body.as_ref().map(std::string::ToString::to_string);
            let audited = mutation
                .ops
                .iter()
                .any(|op| op.collection.keep_history && op.collection.name == key.0);
            if audited {
                writes.history.push((
                    seq,
                    key.0.clone(),
                    key.1.clone(),
                    write.version,
                    body.clone(),
                    mutation.audit.actor.clone(),
                ));
            }
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
        if let Some((projector, decision)) = decision {
            // One result per op of the batch, written or not: the version
            // each document has after the commit (0: none).
            outcome.results = mutation
                .ops
                .iter()
                .map(|op| OpResult {
                    id: op.id.clone(),
                    version: stored
                        .get(&(op.collection.name.clone(), op.id.clone()))
                        .map_or(Version(0), |d| d.version),
                })
                .collect();
            outcome.projected = decision.projected;
            for (key, stamp) in decision.stamps {
                stamps.insert(key.clone(), stamp.clone());
                stamps_left.insert(key, stamp);
            }
            if let Some(generation) = decision.finished {
                writes
                    .finished_rebuilds
                    .push((projector.clone(), generation));
            }
            checkpoints.insert(projector.clone(), decision.checkpoint.clone());
            checkpoints_left.insert(projector, decision.checkpoint);
        }
        if let Some((key, encoded)) = record {
            recorded.insert(key.key.clone(), (key.request_hash.clone(), encoded.clone()));
            writes
                .idempotency
                .push((key.key.clone(), key.request_hash.clone(), seq, encoded));
        }
        writes.commits.push((
            seq,
            mutation.idempotency.as_ref().map(|k| k.key.clone()),
            mutation.audit.clone(),
        ));
        answers.push(Ok(outcome));
    }
    for ((collection, id), state) in documents {
        match state {
            Some((version, seq, body)) => {
                writes.upserted.push((collection, id, version, seq, body));
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
    writes.stamps = stamps_left.into_iter().collect();
    writes.checkpoints = checkpoints_left.into_iter().collect();
    if !wanted.is_empty() {
        return GroupPlan::NeedsLookups(wanted);
    }
    writes.head = (next != head).then_some(next);
    assert_gap_free(head, &answers, &writes);
    GroupPlan::Decided(answers, Box::new(writes))
}

/// Invariant: the group's commits are head+1 … its new head with no gap
/// and no seq twice; each accepted mutation is answered with its own, in
/// order; every change and idempotency row belongs to one of them. The
/// stores move the head to `writes.head` and write these rows as they are,
/// so a gap here would be a gap in the durable log that every reader
/// follows. Checked in every build: it costs a pass over the group next to
/// a database transaction, and it runs before anything is written.
fn assert_gap_free(head: Seq, answers: &[Result<CommitOutcome, StoreError>], writes: &GroupWrites) {
    let taken = || writes.commits.iter().map(|(seq, ..)| *seq);
    assert!(
        taken()
            .zip(1..)
            .all(|(seq, offset)| seq == Seq(head.0 + offset)),
        "a group after seq {head} took seqs {:?}",
        taken().collect::<Vec<_>>()
    );
    let newest = writes.commits.last().map(|(seq, ..)| *seq);
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Arc;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{Value, json};

    use super::*;

    /// A group decided with nothing more to look up.
    fn decide<'m>(
        mutations: impl IntoIterator<Item = &'m Mutation>,
        reads: GroupReads,
    ) -> (Vec<Result<CommitOutcome, StoreError>>, GroupWrites) {
        match plan_group(mutations, reads, true) {
            GroupPlan::Decided(answers, writes) => (answers, *writes),
            GroupPlan::NeedsLookups(keys) => panic!("the last round asked for {keys:?}"),
        }
    }
    use crate::fixtures::{
        by_key, delete, expecting, index_entry, insert, mutation, note, notes, patch, stored_note,
        upsert,
    };
    use crate::{Authorize, IdempotencyKey, OpResult, Rejection, WriteKind, WriteOp};

    fn reads(head: u64, documents: Vec<StoredDocument>) -> GroupReads {
        let stored = by_key(documents);
        GroupReads {
            head: Seq(head),
            loaded: stored.keys().cloned().collect(),
            stored,
            recorded: HashMap::new(),
            stamps: HashMap::new(),
            checkpoints: HashMap::new(),
        }
    }

    fn keyed(key: &str, hash: &str, mutation: Mutation) -> Mutation {
        Mutation {
            idempotency: Some(IdempotencyKey {
                key: key.into(),
                request_hash: hash.into(),
            }),
            ..mutation
        }
    }

    fn seqs(answers: &[Result<CommitOutcome, StoreError>]) -> Vec<Option<u64>> {
        answers
            .iter()
            .map(|a| a.as_ref().ok().map(|o| o.seq.0))
            .collect()
    }

    #[test]
    fn accepted_mutations_take_consecutive_seqs_after_the_head_and_rejected_ones_take_none() {
        let group = [
            mutation(vec![insert("a", note("ann", "1", 1))]),
            mutation(vec![delete("missing")]),
            mutation(vec![insert("b", note("ann", "2", 1))]),
            mutation(vec![insert("a", note("ann", "again", 1))]),
            mutation(vec![insert("c", note("ann", "3", 1))]),
        ];
        let (answers, writes) = decide(&group, reads(10, Vec::new()));
        assert_eq!(seqs(&answers), [Some(11), None, Some(12), None, Some(13)]);
        let committed: Vec<u64> = writes.commits.iter().map(|(s, ..)| s.0).collect();
        assert_eq!(committed, [11, 12, 13]);
        assert_eq!(writes.head, Some(Seq(13)));
        let changed: Vec<(u64, &str)> = writes
            .changes
            .iter()
            .map(|c| (c.0.0, c.3.as_str()))
            .collect();
        assert_eq!(changed, [(11, "a"), (12, "b"), (13, "c")]);
    }

    #[test]
    fn a_group_with_nothing_accepted_writes_nothing_and_leaves_the_head() {
        let group = [
            mutation(vec![delete("missing")]),
            mutation(vec![patch("missing", json!({ "text": "x" }))]),
        ];
        let (answers, writes) = decide(&group, reads(4, Vec::new()));
        assert_eq!(seqs(&answers), [None, None]);
        assert_eq!(writes.head, None);
        assert!(writes.commits.is_empty() && writes.changes.is_empty());
        assert!(writes.upserted.is_empty() && writes.deleted.is_empty());
        assert!(writes.index_touched.is_empty() && writes.idempotency.is_empty());
    }

    #[test]
    fn later_mutations_of_a_group_see_what_earlier_ones_wrote() {
        let group = [
            mutation(vec![insert("a", note("ann", "first", 1))]),
            mutation(vec![expecting(1, patch("a", json!({ "text": "second" })))]),
        ];
        let (answers, writes) = decide(&group, reads(0, Vec::new()));
        let outcome = answers[1].as_ref().expect("the patch sees the insert");
        assert_eq!(
            outcome.results,
            [OpResult {
                id: "a".into(),
                version: Version(2)
            }]
        );
        // One row for the document, as the last commit left it; one change
        // per commit in the log.
        assert_eq!(
            writes.upserted,
            [(
                "notes".to_owned(),
                "a".to_owned(),
                Version(2),
                Seq(2),
                note("ann", "second", 1).to_string()
            )]
        );
        let versions: Vec<(u64, u64)> = writes.changes.iter().map(|c| (c.0.0, c.4.0)).collect();
        assert_eq!(versions, [(1, 1), (2, 2)]);
    }

    #[test]
    fn a_document_written_then_deleted_within_a_group_is_deleted_with_every_entry_it_had() {
        let original = note("ann", "old", 1);
        let moved = note("ann", "old", 5);
        let group = [
            mutation(vec![patch("a", json!({ "rank": 5 }))]),
            mutation(vec![delete("a")]),
        ];
        let (_, writes) = decide(
            &group,
            reads(3, vec![stored_note("a", 1, 3, original.clone())]),
        );
        assert!(writes.upserted.is_empty());
        assert_eq!(writes.deleted, [("notes".to_owned(), "a".to_owned())]);
        let touched: HashSet<Vec<u8>> = writes.index_touched.iter().map(|e| e.2.clone()).collect();
        assert_eq!(
            touched,
            HashSet::from([index_entry("a", &original).1, index_entry("a", &moved).1])
        );
        assert!(writes.index_added.is_empty());
    }

    #[test]
    fn an_index_entry_removed_and_restored_within_a_group_is_deleted_and_added_again() {
        let original = note("ann", "text", 1);
        let group = [
            mutation(vec![patch("a", json!({ "rank": 5 }))]),
            mutation(vec![patch("a", json!({ "rank": 1 }))]),
        ];
        let (_, writes) = decide(
            &group,
            reads(0, vec![stored_note("a", 1, 0, original.clone())]),
        );
        let (index, key) = index_entry("a", &original);
        assert!(
            writes
                .index_touched
                .contains(&("notes".into(), index.clone(), key.clone()))
        );
        assert_eq!(
            writes.index_added,
            [("notes".into(), index, key, "a".into())]
        );
    }

    #[test]
    fn a_key_repeated_within_a_group_is_answered_from_its_first_use_and_written_once() {
        let group = [
            keyed("k", "h", mutation(vec![insert("a", note("ann", "1", 1))])),
            keyed("k", "h", mutation(vec![insert("b", note("ann", "2", 1))])),
            keyed(
                "k",
                "other",
                mutation(vec![insert("c", note("ann", "3", 1))]),
            ),
        ];
        let (answers, writes) = decide(&group, reads(0, Vec::new()));
        let first = answers[0].as_ref().unwrap();
        let retry = answers[1].as_ref().unwrap();
        assert!(!first.duplicate && retry.duplicate);
        assert_eq!((retry.seq, &retry.results), (first.seq, &first.results));
        assert!(matches!(&answers[2], Err(StoreError::IdempotencyKeyReused(k)) if k == "k"));
        assert_eq!(
            writes.commits,
            [(Seq(1), Some("k".to_owned()), Audit::default())]
        );
        assert_eq!(writes.idempotency.len(), 1);
        assert_eq!(writes.changes.len(), 1);
    }

    #[test]
    fn a_key_recorded_before_the_group_is_answered_from_its_record_and_takes_no_seq() {
        let recorded = CommitOutcome {
            seq: Seq(2),
            results: vec![OpResult {
                id: "a".into(),
                version: Version(1),
            }],
            duplicate: false,
            projected: Vec::new(),
        };
        let mut reads = reads(5, Vec::new());
        reads.recorded.insert(
            "k".into(),
            ("h".into(), serde_json::to_string(&recorded).unwrap()),
        );
        let group = [
            keyed("k", "h", mutation(vec![insert("a", note("ann", "1", 1))])),
            mutation(vec![insert("b", note("ann", "2", 1))]),
        ];
        let (answers, writes) = decide(&group, reads);
        let retry = answers[0].as_ref().unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.seq, Seq(2));
        assert_eq!(seqs(&answers), [Some(2), Some(6)]);
        assert_eq!(writes.head, Some(Seq(6)));
        assert!(writes.idempotency.is_empty());
    }

    #[test]
    fn the_keys_to_read_name_each_document_and_idempotency_key_once() {
        let group = [
            keyed("k1", "h", mutation(vec![delete("b"), delete("a")])),
            keyed("k1", "h", mutation(vec![delete("a"), delete("c")])),
            keyed("k2", "h", mutation(vec![delete("b")])),
        ];
        let keys = GroupKeys::of(&group);
        let ids: Vec<&str> = keys.documents.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
        assert_eq!(keys.idempotency, ["k1", "k2"]);
    }

    /// What a mutation answered, comparable across the planner and the
    /// model: the outcome, or which op was rejected and why.
    type Answer = Result<CommitOutcome, String>;

    fn answer(result: &Result<CommitOutcome, StoreError>) -> Answer {
        match result {
            Ok(outcome) => Ok(outcome.clone()),
            Err(StoreError::Rejected { op, rejection, .. }) => {
                Err(format!("op {op}: {rejection:?}"))
            }
            Err(other) => Err(format!("{other:?}")),
        }
    }

    /// The documents, index entries, idempotency records, head and log a
    /// store holds, changed by a group's writes the way both stores change
    /// their tables.
    #[derive(Default)]
    struct Tables {
        head: Seq,
        documents: BTreeMap<String, StoredDocument>,
        entries: BTreeMap<(String, Vec<u8>), String>,
        recorded: HashMap<String, (String, String)>,
        log: BTreeMap<Seq, Vec<(String, Version, Option<Value>)>>,
    }

    impl Tables {
        fn reads(&self, group: &[Mutation]) -> GroupReads {
            let keys = GroupKeys::of(group);
            GroupReads {
                head: self.head,
                loaded: keys.documents.iter().cloned().collect(),
                stored: keys
                    .documents
                    .into_iter()
                    .filter_map(|key| Some((key.clone(), self.documents.get(&key.1)?.clone())))
                    .collect(),
                recorded: keys
                    .idempotency
                    .into_iter()
                    .filter_map(|key| Some((key.clone(), self.recorded.get(&key)?.clone())))
                    .collect(),
                stamps: HashMap::new(),
                checkpoints: HashMap::new(),
            }
        }

        fn write(&mut self, writes: GroupWrites) {
            // A document created and deleted within the group is among
            // `deleted` too; like SQL's DELETE, removing nothing is fine.
            for (_, id) in writes.deleted {
                self.documents.remove(&id);
            }
            for (_, id, version, seq, body) in writes.upserted {
                let body = serde_json::from_str(&body).unwrap();
                self.documents.insert(
                    id.clone(),
                    StoredDocument {
                        id,
                        version,
                        seq,
                        body,
                    },
                );
            }
            for (_, index, key) in writes.index_touched {
                self.entries.remove(&(index, key));
            }
            for (_, index, key, id) in writes.index_added {
                let clash = self.entries.insert((index, key), id);
                assert_eq!(clash, None, "an index entry added twice");
            }
            // A commit whose ops cancel out (created and deleted) is in
            // the log all the same, with no changes.
            for (seq, ..) in writes.commits {
                assert!(
                    self.log.insert(seq, Vec::new()).is_none(),
                    "seq {seq} twice"
                );
            }
            for (seq, ord, _, id, version, body) in writes.changes {
                let changes = self.log.get_mut(&seq).expect("a change has its commit");
                assert_eq!(changes.len(), ord as usize, "change ords run from 0");
                changes.push((id, version, body.map(|b| serde_json::from_str(&b).unwrap())));
            }
            for (key, hash, _, outcome) in writes.idempotency {
                let clash = self.recorded.insert(key, (hash, outcome));
                assert_eq!(clash, None, "an idempotency key recorded twice");
            }
            if let Some(head) = writes.head {
                self.head = head;
            }
        }

        /// The index entries the stored documents call for.
        fn entries_of_documents(&self) -> BTreeMap<(String, Vec<u8>), String> {
            self.documents
                .values()
                .map(|doc| (index_entry(&doc.id, &doc.body), doc.id.clone()))
                .collect()
        }
    }

    /// The semantics of docs/http-api.md written out plainly, one mutation
    /// at a time: what a group must agree with.
    #[derive(Default)]
    struct Model {
        head: u64,
        documents: BTreeMap<String, (Version, Seq, Value)>,
        recorded: HashMap<String, (String, CommitOutcome)>,
        log: BTreeMap<Seq, Vec<(String, Version, Option<Value>)>>,
    }

    impl Model {
        fn apply(&mut self, mutation: &Mutation) -> Answer {
            if let Some(key) = &mutation.idempotency
                && let Some((hash, outcome)) = self.recorded.get(&key.key)
            {
                if *hash != key.request_hash {
                    return Err(format!(
                        "{:?}",
                        StoreError::IdempotencyKeyReused(key.key.clone())
                    ));
                }
                return Ok(CommitOutcome {
                    duplicate: true,
                    ..outcome.clone()
                });
            }
            // Each touched document's body as the mutation goes, in
            // first-touched order.
            let mut working: Vec<(String, Option<Value>)> = Vec::new();
            for (index, op) in mutation.ops.iter().enumerate() {
                let stored = self.documents.get(&op.id);
                let at = working.iter().position(|(id, _)| *id == op.id);
                let current = match at {
                    Some(at) => working[at].1.clone(),
                    None => stored.map(|d| d.2.clone()),
                };
                let reject = |rejection| Err(format!("op {index}: {rejection:?}"));
                let next = match &op.kind {
                    WriteKind::Insert(body) | WriteKind::Upsert(body) => Some(body.clone()),
                    WriteKind::Patch(fields) => current.as_ref().map(|c| fields.apply(c)),
                    WriteKind::Delete => None,
                };
                let prev = stored.map(|d| &d.2);
                let touches = prev.is_some() || current.is_some() || next.is_some();
                let verdict = mutation
                    .access
                    .verdict(index, op, prev, next.as_ref(), &mut |_| {
                        protosync_schema::Lookup::Unknown
                    });
                if touches && verdict != protosync_schema::Verdict::Allow {
                    return reject(Rejection::PermissionDenied);
                }
                if let Some(expected) = op.expected_version {
                    let now = match (&current, at) {
                        (None, _) => None,
                        (Some(_), Some(_)) => Some(Version(stored.map_or(1, |d| d.0.0 + 1))),
                        (Some(_), None) => stored.map(|d| d.0),
                    };
                    if now != Some(expected) {
                        return reject(Rejection::VersionConflict {
                            expected,
                            actual: now,
                        });
                    }
                }
                let next = match (&op.kind, &current) {
                    (WriteKind::Insert(_), Some(_)) => return reject(Rejection::AlreadyExists),
                    (WriteKind::Patch(_) | WriteKind::Delete, None) => {
                        return reject(Rejection::NotFound);
                    }
                    (WriteKind::Patch(_), Some(_)) => {
                        Some(notes().validate(&op.id, &next.unwrap()).unwrap())
                    }
                    _ => next,
                };
                match at {
                    Some(at) => working[at].1 = next,
                    None => working.push((op.id.clone(), next)),
                }
            }
            let seq = Seq(self.head + 1);
            let version_of = |id: &str| {
                let stored = self.documents.get(id);
                let ends = &working.iter().find(|(w, _)| w == id).unwrap().1;
                match (ends, stored) {
                    (None, Some(stored)) => stored.0,
                    _ => Version(stored.map_or(1, |d| d.0.0 + 1)),
                }
            };
            let results = mutation
                .ops
                .iter()
                .map(|op| OpResult {
                    id: op.id.clone(),
                    version: version_of(&op.id),
                })
                .collect();
            let mut changes = Vec::new();
            for (id, body) in working {
                let stored = self.documents.get(&id);
                if stored.is_none() && body.is_none() {
                    continue;
                }
                let version = Version(stored.map_or(1, |d| d.0.0 + 1));
                changes.push((id.clone(), version, body.clone()));
                match body {
                    Some(body) => self.documents.insert(id, (version, seq, body)),
                    None => self.documents.remove(&id),
                };
            }
            self.head = seq.0;
            self.log.insert(seq, changes);
            let outcome = CommitOutcome {
                seq,
                results,
                duplicate: false,
                projected: Vec::new(),
            };
            if let Some(key) = &mutation.idempotency {
                self.recorded
                    .insert(key.key.clone(), (key.request_hash.clone(), outcome.clone()));
            }
            Ok(outcome)
        }
    }

    fn random_op(rng: &mut StdRng) -> WriteOp {
        let id = ["a", "b", "c"][rng.random_range(0..3)];
        let text = ["x", "y", "forbidden"][rng.random_range(0..3)];
        let body = note(
            ["ann", "bob"][rng.random_range(0..2)],
            text,
            rng.random_range(0..3),
        );
        let op = match rng.random_range(0..5) {
            0 => insert(id, body),
            1 => upsert(id, body),
            2 => patch(id, json!({ "text": text })),
            3 => patch(id, json!({ "rank": rng.random_range(0..3) })),
            _ => delete(id),
        };
        if rng.random_bool(0.25) {
            expecting(rng.random_range(1..4), op)
        } else {
            op
        }
    }

    fn random_mutation(rng: &mut StdRng, forbid: &Authorize) -> Mutation {
        let ops = (0..rng.random_range(1..4))
            .map(|_| random_op(rng))
            .collect();
        let mut mutation = mutation(ops);
        if rng.random_bool(0.3) {
            mutation.access = crate::WriteAccess::Checked(forbid.clone());
        }
        if rng.random_bool(0.3) {
            mutation = keyed(
                &format!("k{}", rng.random_range(0..40)),
                ["h1", "h2"][rng.random_range(0..2)],
                mutation,
            );
        }
        mutation
    }

    /// Groups of random mutations, decided together and written as the
    /// stores write them, end in the state, answers and log that the same
    /// mutations reach one at a time in the model.
    #[test]
    fn a_group_agrees_with_its_mutations_applied_one_at_a_time() {
        let seed = protosync_testkit::seed();
        let mut rng = StdRng::seed_from_u64(seed);
        let forbid = Authorize(Arc::new(|_, _, _, next: Option<&Value>, _lookups| {
            if next.and_then(|n| n.get("text")) == Some(&json!("forbidden")) {
                protosync_schema::Verdict::Deny
            } else {
                protosync_schema::Verdict::Allow
            }
        }));
        let (mut tables, mut model) = (Tables::default(), Model::default());
        for round in 0..300 {
            let group: Vec<Mutation> = (0..rng.random_range(1..9))
                .map(|_| random_mutation(&mut rng, &forbid))
                .collect();
            let (answers, writes) = decide(&group, tables.reads(&group));
            tables.write(writes);
            let expected: Vec<Answer> = group.iter().map(|m| model.apply(m)).collect();
            let context = format!("seed {seed} round {round}: {group:#?}");
            assert_eq!(
                answers.iter().map(answer).collect::<Vec<_>>(),
                expected,
                "{context}"
            );
            assert_eq!(tables.head, Seq(model.head), "{context}");
            let documents: BTreeMap<String, (Version, Seq, Value)> = tables
                .documents
                .values()
                .map(|d| (d.id.clone(), (d.version, d.seq, d.body.clone())))
                .collect();
            assert_eq!(documents, model.documents, "{context}");
            assert_eq!(tables.entries, tables.entries_of_documents(), "{context}");
            assert_eq!(tables.log, model.log, "{context}");
        }
    }
}
