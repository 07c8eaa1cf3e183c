//! One group's transaction on Postgres: begin, lock the counter row and
//! read what the group touches; let [`crate::group`] decide every mutation
//! in memory; then write every row, move the head, ring NOTIFY and commit,
//! pipelined. This is the only code that writes documents, the change log
//! or the head. It decides nothing about a mutation itself and never
//! commits a transaction it did not begin under the counter-row lock.

use deadpool_postgres::{Client, Pool};
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;

use super::reads::document_at;
use super::wakeups::NOTIFY_CHANNEL;
use super::{projections, rebuilds};
use crate::group::{
    GroupAnswers, GroupKeys, GroupPlan, GroupReads, GroupWrites, MAX_LOOKUP_ROUNDS, plan_group,
};
use crate::{Mutation, Seq, StoreError, now_ms};

pub(super) type GroupResult = Result<GroupAnswers, GroupFailure>;

pub(super) struct GroupFailure {
    pub(super) error: StoreError,
    /// The failure came at COMMIT: the group may have committed.
    pub(super) committing: bool,
}

/// One statement's arguments, owned so a whole commit can be pipelined.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

macro_rules! params {
    ($($value:expr),* $(,)?) => { vec![$(Box::new($value) as $crate::postgres::group_commit::Param),*] };
}
pub(super) use params;

/// One transaction for a group of mutations in two round trips: begin,
/// lock the head and read the group's documents and idempotency records;
/// decide in memory; write every row and commit.
/// `committing` is told when the commit is sent.
pub(super) async fn commit_group<'m>(
    pool: &Pool,
    mutations: impl Iterator<Item = &'m Mutation> + Clone,
    committing: Option<oneshot::Sender<()>>,
) -> GroupResult {
    let client = pool.get().await.map_err(|e| GroupFailure {
        error: e.into(),
        committing: false,
    })?;
    let result = async {
        let reads = read_group(&client, GroupKeys::of(mutations.clone()))
            .await
            .map_err(|error| GroupFailure {
                error,
                committing: false,
            })?;
        let mut reads = reads;
        let mut round = 1;
        let (answers, writes) = loop {
            match plan_group(mutations.clone(), reads.clone(), round == MAX_LOOKUP_ROUNDS) {
                GroupPlan::Decided(answers, writes) => break (answers, *writes),
                // Read in the group's transaction, under the head lock: a
                // rule decides on the documents as this commit finds them.
                GroupPlan::NeedsLookups(keys) => {
                    read_lookups(&client, keys, &mut reads)
                        .await
                        .map_err(|error| GroupFailure {
                            error,
                            committing: false,
                        })?;
                    round += 1;
                }
            }
        };
        if let Some(committing) = committing {
            let _ = committing.send(());
        }
        write_and_commit(&client, &writes).await?;
        Ok((answers, writes.head))
    }
    .await;
    if matches!(
        result,
        Err(GroupFailure {
            committing: false,
            ..
        })
    ) {
        // Leave no transaction open on a pooled connection.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn read_group(tx: &Client, keys: GroupKeys) -> Result<GroupReads, StoreError> {
    let begin = tx.prepare_cached("BEGIN").await?;
    let lock = tx
        .prepare_cached("SELECT seq FROM protosync_head FOR UPDATE")
        .await?;
    let documents = tx
        .prepare_cached(
            "SELECT d.collection, d.id, d.version, d.seq, d.body FROM protosync_documents d
             JOIN unnest($1::text[], $2::text[]) AS k(collection, id) ON d.collection = k.collection AND d.id = k.id",
        )
        .await?;
    let records = tx
        .prepare_cached(
            "SELECT key, request_hash, outcome FROM protosync_idempotency WHERE key = ANY($1)",
        )
        .await?;
    let (collections, ids): (Vec<String>, Vec<String>) = keys.documents.into_iter().unzip();
    // Sent together; the reads run after the lock is held, so they see
    // every commit before this one.
    let (_, head, rows, recorded) = futures::future::try_join4(
        tx.execute(&begin, &[]),
        tx.query_one(&lock, &[]),
        tx.query(&documents, &[&collections, &ids]),
        tx.query(&records, &[&keys.idempotency]),
    )
    .await?;
    // Only projection batches have these; read after the lock like the rest.
    let (stamps, checkpoints) = if keys.projectors.is_empty() {
        Default::default()
    } else {
        futures::future::try_join(
            projections::read_stamps(tx, &keys.stamped),
            projections::read_checkpoints(tx, &keys.projectors),
        )
        .await?
    };
    let stored = rows
        .iter()
        .map(|r| {
            let doc = document_at(r, 1);
            ((r.get::<_, String>(0), doc.id.clone()), doc)
        })
        .collect();
    let loaded = collections.into_iter().zip(ids).collect();
    let recorded = recorded
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Ok(GroupReads {
        head: Seq(head.get::<_, i64>(0) as u64),
        stored,
        loaded,
        recorded,
        stamps,
        checkpoints,
    })
}

/// Reads the documents write rules looked up into `reads`.
async fn read_lookups(
    tx: &Client,
    keys: Vec<(String, String)>,
    reads: &mut GroupReads,
) -> Result<(), StoreError> {
    let documents = tx
        .prepare_cached(
            "SELECT d.collection, d.id, d.version, d.seq, d.body FROM protosync_documents d
             JOIN unnest($1::text[], $2::text[]) AS k(collection, id) ON d.collection = k.collection AND d.id = k.id",
        )
        .await?;
    let (collections, ids): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
    for row in tx.query(&documents, &[&collections, &ids]).await? {
        let doc = document_at(&row, 1);
        reads
            .stored
            .insert((row.get::<_, String>(0), doc.id.clone()), doc);
    }
    reads.loaded.extend(collections.into_iter().zip(ids));
    Ok(())
}

/// Every row of a group in a handful of array statements, then COMMIT, all
/// sent together (one round trip): a connection runs them in the order
/// sent. If a statement fails, Postgres rolls the transaction back and the
/// COMMIT only ends it.
async fn write_and_commit(tx: &Client, writes: &GroupWrites) -> Result<(), GroupFailure> {
    let mut batch: Vec<(&str, Vec<Param>)> = Vec::new();
    if let Some(head) = writes.head {
        rows_to_write(writes, head, &mut batch);
    }
    batch.push(("COMMIT", params![]));
    let mut statements = Vec::with_capacity(batch.len());
    for (sql, _) in &batch {
        statements.push(tx.prepare_cached(sql).await.map_err(|e| GroupFailure {
            error: e.into(),
            committing: false,
        })?);
    }
    let arguments: Vec<Vec<&(dyn ToSql + Sync)>> = batch
        .iter()
        .map(|(_, values)| {
            values
                .iter()
                .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                .collect()
        })
        .collect();
    let mut results = futures::future::join_all(
        statements
            .iter()
            .zip(&arguments)
            .map(|(statement, arguments)| tx.execute(statement, arguments)),
    )
    .await;
    let commit = results.pop().expect("COMMIT is in the batch");
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(GroupFailure {
            error: e.into(),
            committing: false,
        });
    }
    commit.map(|_| ()).map_err(|e| GroupFailure {
        error: e.into(),
        committing: true,
    })
}

/// The statements that write a group's rows and move the head.
fn rows_to_write(writes: &GroupWrites, head: Seq, batch: &mut Vec<(&'static str, Vec<Param>)>) {
    // Invariant: the head moves to the group's last commit, so the next
    // group (in any process) numbers its commits from there: no gap, no
    // seq given twice. `plan_group` asserts the whole run.
    debug_assert_eq!(writes.commits.last().map(|c| c.0), Some(head));
    if !writes.deleted.is_empty() {
        let (collections, ids): (Vec<String>, Vec<String>) = writes.deleted.iter().cloned().unzip();
        batch.push((
            "DELETE FROM protosync_documents d USING unnest($1::text[], $2::text[]) AS k(collection, id)
             WHERE d.collection = k.collection AND d.id = k.id",
            params![collections, ids],
        ));
    }
    if !writes.upserted.is_empty() {
        let rows = &writes.upserted;
        batch.push((
            "INSERT INTO protosync_documents (collection, id, version, seq, body)
             SELECT c, i, v, s, b::jsonb FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[]) AS t(c, i, v, s, b)
             ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version, seq = excluded.seq, body = excluded.body",
            params![
                column(rows, |r| r.0.clone()),
                column(rows, |r| r.1.clone()),
                column(rows, |r| r.2.0 as i64),
                column(rows, |r| r.3.0 as i64),
                column(rows, |r| r.4.clone()),
            ],
        ));
    }
    if !writes.index_touched.is_empty() {
        let rows = &writes.index_touched;
        batch.push((
            "DELETE FROM protosync_index_entries e USING unnest($1::text[], $2::text[], $3::bytea[]) AS k(collection, index_name, key)
             WHERE e.collection = k.collection AND e.index_name = k.index_name AND e.key = k.key",
            params![column(rows, |r| r.0.clone()), column(rows, |r| r.1.clone()), column(rows, |r| r.2.clone())],
        ));
    }
    if !writes.index_added.is_empty() {
        let rows = &writes.index_added;
        batch.push((
            "INSERT INTO protosync_index_entries (collection, index_name, key, doc_id)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])",
            params![
                column(rows, |r| r.0.clone()),
                column(rows, |r| r.1.clone()),
                column(rows, |r| r.2.clone()),
                column(rows, |r| r.3.clone())
            ],
        ));
    }
    let rows = &writes.changes;
    batch.push((
        "INSERT INTO protosync_changes (seq, ord, collection, id, version, body)
         SELECT s, o, c, i, v, b::jsonb FROM unnest($1::int8[], $2::int4[], $3::text[], $4::text[], $5::int8[], $6::text[]) AS t(s, o, c, i, v, b)",
        params![
            column(rows, |r| r.0.0 as i64),
            column(rows, |r| r.1),
            column(rows, |r| r.2.clone()),
            column(rows, |r| r.3.clone()),
            column(rows, |r| r.4.0 as i64),
            column(rows, |r| r.5.clone()),
        ],
    ));
    let committed_at = now_ms();
    let rows = &writes.commits;
    batch.push((
        "INSERT INTO protosync_commits (seq, committed_at_ms, idempotency_key, actor, request_id)
         SELECT s, $2, k, a, r FROM unnest($1::int8[], $3::text[], $4::text[], $5::text[]) AS t(s, k, a, r)",
        params![
            column(rows, |r| r.0.0 as i64),
            committed_at,
            column(rows, |r| r.1.clone()),
            column(rows, |r| r.2.actor.clone()),
            column(rows, |r| r.2.request_id.clone()),
        ],
    ));
    if !writes.idempotency.is_empty() {
        let rows = &writes.idempotency;
        batch.push((
            "INSERT INTO protosync_idempotency (key, request_hash, seq, outcome, created_at_ms)
             SELECT k, h, s, o, $5 FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[]) AS t(k, h, s, o)",
            params![column(rows, |r| r.0.clone()), column(rows, |r| r.1.clone()), column(rows, |r| r.2.0 as i64), column(rows, |r| r.3.clone()), committed_at],
        ));
    }
    projections::rows_to_write(writes, committed_at, batch);
    if !writes.history.is_empty() {
        let rows = &writes.history;
        batch.push((
            "INSERT INTO protosync_history (collection, id, version, seq, committed_at_ms, actor, body)
             SELECT c, i, v, s, $5, a, b::jsonb FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $6::text[], $7::text[]) AS t(c, i, v, s, a, b)",
            params![
                column(rows, |r| r.1.clone()),
                column(rows, |r| r.2.clone()),
                column(rows, |r| r.3.0 as i64),
                column(rows, |r| r.0.0 as i64),
                committed_at,
                column(rows, |r| r.5.clone()),
                column(rows, |r| r.4.clone()),
            ],
        ));
    }
    rebuilds::rows_to_write(writes, batch);
    batch.push(("UPDATE protosync_head SET seq = $1", params![head.0 as i64]));
    batch.push((
        "SELECT pg_notify($1, $2)",
        params![NOTIFY_CHANNEL.to_owned(), head.to_string()],
    ));
}

/// One column of `rows`, as an array parameter.
pub(super) fn column<R, T>(rows: &[R], field: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}
