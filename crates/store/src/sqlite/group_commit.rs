//! One group's transaction on SQLite: read, under the write lock, what the
//! group touches; let [`crate::group`] decide every mutation in memory;
//! write every row and move the head; commit. This is the only code that
//! writes documents, the change log or the head. It decides nothing about
//! a mutation itself and runs only on the writer thread.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::reads::{read_document, read_head};
use super::{projections, rebuilds};
use crate::group::{
    GroupAnswers, GroupKeys, GroupPlan, GroupReads, GroupWrites, MAX_LOOKUP_ROUNDS, plan_group,
};
use crate::{Mutation, Seq, StoreError, now_ms};

/// One SQLite transaction for a group of mutations (see [`crate::group`]).
/// Returns each mutation's answer and the new head, if anything committed.
#[allow(
    clippy::needless_pass_by_value,
    reason = "a cheap-to-clone iterator of borrows, replayed per lookup round; the same \
              signature as the Postgres committer's"
)]
pub(super) fn commit_group<'m>(
    conn: &mut Connection,
    mutations: impl Iterator<Item = &'m Mutation> + Clone,
) -> Result<GroupAnswers, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let keys = GroupKeys::of(mutations.clone());
    let mut stored = HashMap::new();
    let loaded = keys.documents.iter().cloned().collect();
    for (collection, id) in &keys.documents {
        if let Some(doc) = read_document(&tx, collection, id)? {
            stored.insert((collection.clone(), id.clone()), doc);
        }
    }
    let mut recorded = HashMap::new();
    let mut lookup = tx
        .prepare_cached("SELECT request_hash, outcome FROM protosync_idempotency WHERE key = ?1")?;
    for key in &keys.idempotency {
        if let Some(record) = lookup
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        {
            recorded.insert(key.clone(), record);
        }
    }
    drop(lookup);
    let mut reads = GroupReads {
        head: read_head(&tx)?,
        stored,
        loaded,
        recorded,
        stamps: projections::read_stamps(&tx, &keys.stamped)?,
        checkpoints: projections::read_checkpoints(&tx, &keys.projectors)?,
    };
    let mut round = 1;
    let (answers, writes) = loop {
        match plan_group(mutations.clone(), reads.clone(), round == MAX_LOOKUP_ROUNDS) {
            GroupPlan::Decided(answers, writes) => break (answers, *writes),
            // Read under the same write lock as the rest: a rule decides on
            // the documents as this commit finds them.
            GroupPlan::NeedsLookups(keys) => {
                for (collection, id) in keys {
                    if let Some(doc) = read_document(&tx, &collection, &id)? {
                        reads.stored.insert((collection.clone(), id.clone()), doc);
                    }
                    reads.loaded.insert((collection, id));
                }
                round += 1;
            }
        }
    };
    if let Some(head) = writes.head {
        write_group(&tx, &writes, head)?;
    }
    tx.commit()?;
    Ok((answers, writes.head))
}

fn write_group(conn: &Connection, writes: &GroupWrites, head: Seq) -> Result<(), StoreError> {
    // Invariant: the head moves to the group's last commit, so the next
    // group numbers its commits from there: no gap, no seq given twice.
    // `plan_group` asserts the whole run.
    debug_assert_eq!(writes.commits.last().map(|c| c.0), Some(head));
    let mut delete =
        conn.prepare_cached("DELETE FROM protosync_documents WHERE collection = ?1 AND id = ?2")?;
    for (collection, id) in &writes.deleted {
        delete.execute(params![collection, id])?;
    }
    let mut upsert = conn.prepare_cached(
        "INSERT INTO protosync_documents (collection, id, version, seq, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version, seq = excluded.seq, body = excluded.body",
    )?;
    for (collection, id, version, seq, body) in &writes.upserted {
        upsert.execute(params![
            collection,
            id,
            version.0 as i64,
            seq.0 as i64,
            body
        ])?;
    }
    let mut remove_entry = conn.prepare_cached("DELETE FROM protosync_index_entries WHERE collection = ?1 AND index_name = ?2 AND key = ?3")?;
    for (collection, index, key) in &writes.index_touched {
        remove_entry.execute(params![collection, index, key])?;
    }
    let mut add_entry = conn.prepare_cached("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES (?1, ?2, ?3, ?4)")?;
    for (collection, index, key, id) in &writes.index_added {
        add_entry.execute(params![collection, index, key, id])?;
    }
    let mut change = conn.prepare_cached("INSERT INTO protosync_changes (seq, ord, collection, id, version, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for (seq, ord, collection, id, version, body) in &writes.changes {
        change.execute(params![
            seq.0 as i64,
            ord,
            collection,
            id,
            version.0 as i64,
            body
        ])?;
    }
    let committed_at = now_ms();
    let mut commit = conn.prepare_cached(
        "INSERT INTO protosync_commits (seq, committed_at_ms, idempotency_key, actor, request_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (seq, key, audit) in &writes.commits {
        commit.execute(params![
            seq.0 as i64,
            committed_at,
            key,
            audit.actor,
            audit.request_id
        ])?;
    }
    let mut record = conn.prepare_cached("INSERT INTO protosync_idempotency (key, request_hash, seq, outcome, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for (key, hash, seq, outcome) in &writes.idempotency {
        record.execute(params![key, hash, seq.0 as i64, outcome, committed_at])?;
    }
    projections::write(conn, writes, committed_at)?;
    let mut history = conn.prepare_cached("INSERT INTO protosync_history (collection, id, version, seq, committed_at_ms, actor, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
    for (seq, collection, id, version, body, actor) in &writes.history {
        history.execute(params![
            collection,
            id,
            version.0 as i64,
            seq.0 as i64,
            committed_at,
            actor,
            body
        ])?;
    }
    rebuilds::write(conn, writes)?;
    conn.prepare_cached("UPDATE protosync_head SET seq = ?1")?
        .execute([head.0 as i64])?;
    Ok(())
}
