//! Reads, each in one read-only snapshot so that what it returns is the
//! state at the seq it reports: single documents, query pages, the change
//! log, the head and the log floor; and the decoding of document rows.
//! Nothing here writes or takes a lock that a commit waits on.

use deadpool_postgres::{Pool, Transaction};
use protosync_query::{Execution, LookedUp, Page, Query, ReadScope, ScanRequest, ScanRow, Step};
use tokio_postgres::{GenericClient, IsolationLevel, Row};

use crate::change_log::{LogAssembly, check_reaches};
use crate::{Audit, Change, CommitRecord, ReadAt, Seq, StoreError, StoredDocument, Version};

/// Starts a read-only transaction that sees one snapshot throughout.
pub(super) async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

pub(super) async fn read_head(client: &impl GenericClient) -> Result<Seq, StoreError> {
    Ok(Seq(client
        .query_one("SELECT seq FROM protosync_head", &[])
        .await?
        .get::<_, i64>(0) as u64))
}

/// The oldest seq a log read may start after.
pub(super) async fn read_floor(client: &impl GenericClient) -> Result<Seq, StoreError> {
    Ok(Seq(client
        .query_one("SELECT log_floor FROM protosync_head", &[])
        .await?
        .get::<_, i64>(0) as u64))
}

/// The document in columns `first..first + 4` of `row`: id, version, seq,
/// body.
pub(super) fn document_at(row: &Row, first: usize) -> StoredDocument {
    StoredDocument {
        id: row.get(first),
        version: Version(row.get::<_, i64>(first + 1) as u64),
        seq: Seq(row.get::<_, i64>(first + 2) as u64),
        body: row.get(first + 3),
    }
}

/// Kept versions of one document, oldest first, after `after`.
pub(super) async fn history(
    pool: &Pool,
    collection: &str,
    id: &str,
    after: Seq,
    max: usize,
) -> Result<Vec<crate::HistoryEntry>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT version, seq, committed_at_ms, actor, body FROM protosync_history
             WHERE collection = $1 AND id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            &[&collection, &id, &(after.0 as i64), &(max as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| crate::HistoryEntry {
            version: Version(r.get::<_, i64>(0) as u64),
            seq: Seq(r.get::<_, i64>(1) as u64),
            committed_at_ms: r.get(2),
            actor: r.get(3),
            body: r.get(4),
        })
        .collect())
}

/// The head, then every document in `(collection, id)` order, from one
/// repeatable-read snapshot (which blocks no writer), streamed through a
/// bounded channel by a task that ends when the reader is gone.
pub(super) async fn snapshot_documents(pool: &Pool) -> Result<crate::Snapshot, StoreError> {
    let mut client = pool.get().await?;
    let (seq_tx, seq) = tokio::sync::oneshot::channel();
    let (documents_tx, documents) = tokio::sync::mpsc::channel(crate::SNAPSHOT_CHANNEL_LEN);
    tokio::spawn(async move {
        let read = async {
            let tx = snapshot(&mut client).await?;
            let _ = seq_tx.send(read_head(&*tx).await?);
            let rows = tx
                .query_raw(
                    "SELECT collection, id, version, seq, body FROM protosync_documents ORDER BY collection, id",
                    std::iter::empty::<i64>(),
                )
                .await?;
            futures::pin_mut!(rows);
            while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                let item = (row.get::<_, String>(0), document_at(&row, 1));
                if documents_tx.send(Ok(item)).await.is_err() {
                    break;
                }
            }
            Ok::<_, StoreError>(())
        };
        if let Err(e) = read.await {
            let _ = documents_tx.send(Err(e)).await;
        }
    });
    let seq = seq.await.map_err(|_| {
        StoreError::Internal("the snapshot read ended before it read the head".into())
    })?;
    Ok(crate::Snapshot { seq, documents })
}

pub(super) async fn get(
    pool: &Pool,
    collection: &str,
    id: &str,
    scope: &ReadScope,
) -> Result<ReadAt<Option<StoredDocument>>, StoreError> {
    let mut client = pool.get().await?;
    let tx = snapshot(&mut client).await?;
    let seq = read_head(&*tx).await?;
    let mut looked_up = LookedUp::default();
    let value = match read_document(&tx, collection, id).await? {
        Some(doc) => loop {
            match looked_up.verdict(scope, &doc.body) {
                Ok(true) => break Some(doc),
                // Not visible reads as absent: its existence is not revealed.
                Ok(false) => break None,
                Err(keys) => {
                    for key in keys {
                        let found = read_document(&tx, &key.collection, &key.id).await?;
                        looked_up.supply(key, found.map(|d| d.body));
                    }
                }
            }
        },
        None => None,
    };
    tx.commit().await?;
    Ok(ReadAt {
        seq,
        value,
        looked_up,
    })
}

/// One document, in the transaction's snapshot.
async fn read_document(
    tx: &Transaction<'_>,
    collection: &str,
    id: &str,
) -> Result<Option<StoredDocument>, StoreError> {
    let row = tx
        .query_opt("SELECT id, version, seq, body FROM protosync_documents WHERE collection = $1 AND id = $2", &[&collection, &id])
        .await?;
    Ok(row.map(|r| document_at(&r, 0)))
}

pub(super) async fn query(pool: &Pool, query: &Query) -> Result<ReadAt<Page>, StoreError> {
    let mut client = pool.get().await?;
    let tx = snapshot(&mut client).await?;
    let seq = read_head(&*tx).await?;
    let mut execution = Execution::new(query);
    loop {
        match execution.step() {
            Step::Fetch(request) => {
                let rows = scan(&tx, &query.collection.name, request).await?;
                execution.accept(rows);
            }
            Step::Lookup(keys) => {
                for key in keys {
                    let found = read_document(&tx, &key.collection, &key.id).await?;
                    execution.supply(key, found.map(|d| d.body));
                }
            }
            Step::Done => break,
        }
    }
    tx.commit().await?;
    let (value, looked_up) = execution.finish();
    Ok(ReadAt {
        seq,
        value,
        looked_up,
    })
}

async fn scan(
    tx: &Transaction<'_>,
    collection: &str,
    request: &ScanRequest,
) -> Result<Vec<ScanRow>, StoreError> {
    let rows = match request {
        ScanRequest::Index {
            index,
            lower,
            upper,
            reverse,
            limit,
        } => {
            let sql = format!(
                "SELECT d.id, d.version, d.seq, d.body, e.key FROM protosync_index_entries e
                 JOIN protosync_documents d ON d.collection = e.collection AND d.id = e.doc_id
                 WHERE e.collection = $1 AND e.index_name = $2 AND e.key >= $3 {} ORDER BY e.key {} LIMIT $5",
                if upper.is_some() { "AND e.key < $4" } else { "AND $4::bytea IS NULL" },
                if *reverse { "DESC" } else { "ASC" }
            );
            let statement = tx.prepare_cached(&sql).await?;
            tx.query(
                &statement,
                &[&collection, index, lower, upper, &(*limit as i64)],
            )
            .await?
        }
        ScanRequest::Collection { after_id, limit } => {
            let statement = tx
                .prepare_cached("SELECT id, version, seq, body FROM protosync_documents WHERE collection = $1 AND id > $2 ORDER BY id LIMIT $3")
                .await?;
            tx.query(
                &statement,
                &[
                    &collection,
                    &after_id.as_deref().unwrap_or(""),
                    &(*limit as i64),
                ],
            )
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| ScanRow {
            index_key: (r.len() > 4).then(|| r.get(4)),
            doc: document_at(r, 0),
        })
        .collect())
}

/// Up to `max_commits` commits after `after`, with their changes; the rows
/// are put together by [`LogAssembly`].
pub(super) async fn read_log(
    pool: &Pool,
    after: Seq,
    max_commits: usize,
) -> Result<Vec<CommitRecord>, StoreError> {
    let mut client = pool.get().await?;
    let tx = snapshot(&mut client).await?;
    check_reaches(after, read_floor(&*tx).await?)?;
    let after_param = after.0 as i64;
    let commits = tx
        .query(
            "SELECT seq, committed_at_ms, actor, request_id FROM protosync_commits WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after_param, &(max_commits as i64)],
        )
        .await?
        .iter()
        .map(|r| CommitRecord {
            seq: Seq(r.get::<_, i64>(0) as u64),
            committed_at_ms: r.get(1),
            audit: Audit {
                actor: r.get(2),
                request_id: r.get(3),
            },
            changes: Vec::new(),
        })
        .collect();
    let mut log = LogAssembly::new(after, commits);
    let Some(last) = log.last() else {
        return Ok(log.finish());
    };
    let rows = tx
        .query(
            "SELECT seq, collection, id, version, body FROM protosync_changes WHERE seq > $1 AND seq <= $2 ORDER BY seq, ord",
            &[&after_param, &(last.0 as i64)],
        )
        .await?;
    tx.commit().await?;
    for row in rows {
        log.push(
            Seq(row.get::<_, i64>(0) as u64),
            Change {
                collection: row.get(1),
                id: row.get(2),
                version: Version(row.get::<_, i64>(3) as u64),
                body: row.get(4),
            },
        );
    }
    Ok(log.finish())
}
