//! Reads, each inside the one transaction it is given, so that what it
//! returns is the state at the seq it reports: single documents, query
//! pages, the change log, the head and the log floor; and the decoding of
//! stored rows (bodies are JSON text in SQLite). Nothing here writes; the
//! writer thread uses the same row readers inside its own transaction.

use protosync_query::{Execution, LookedUp, Page, Query, ReadScope, ScanRequest, ScanRow, Step};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::change_log::{LogAssembly, check_reaches};
use crate::{Audit, Change, CommitRecord, ReadAt, Seq, StoreError, StoredDocument, Version};

pub(super) fn read_head(conn: &Connection) -> Result<Seq, StoreError> {
    Ok(Seq(conn
        .prepare_cached("SELECT seq FROM protosync_head")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64))
}

/// The oldest seq a log read may start after.
pub(super) fn read_floor(conn: &Connection) -> Result<Seq, StoreError> {
    Ok(Seq(conn
        .prepare_cached("SELECT log_floor FROM protosync_head")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64))
}

/// (id, version, seq, body) of a document row, as SQLite gives it.
type RawDocument = (String, i64, i64, String);

/// The document in columns `first..first + 4` of `row`: id, version, seq,
/// body.
fn raw_document_at(row: &Row<'_>, first: usize) -> rusqlite::Result<RawDocument> {
    Ok((
        row.get(first)?,
        row.get(first + 1)?,
        row.get(first + 2)?,
        row.get(first + 3)?,
    ))
}

fn decode((id, version, seq, body): RawDocument) -> Result<StoredDocument, StoreError> {
    Ok(StoredDocument {
        id,
        version: Version(version as u64),
        seq: Seq(seq as u64),
        body: parse_body(&body)?,
    })
}

pub(super) fn parse_body(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("stored document is not JSON: {e}")))
}

pub(super) fn read_document(
    conn: &Connection,
    collection: &str,
    id: &str,
) -> Result<Option<StoredDocument>, StoreError> {
    conn.prepare_cached(
        "SELECT id, version, seq, body FROM protosync_documents WHERE collection = ?1 AND id = ?2",
    )?
    .query_row(params![collection, id], |r| raw_document_at(r, 0))
    .optional()?
    .map(decode)
    .transpose()
}

pub(super) fn get(
    conn: &Connection,
    collection: &str,
    id: &str,
    scope: &ReadScope,
) -> Result<ReadAt<Option<StoredDocument>>, StoreError> {
    let seq = read_head(conn)?;
    let mut looked_up = LookedUp::default();
    let value = match read_document(conn, collection, id)? {
        Some(doc) => loop {
            match looked_up.verdict(scope, &doc.body) {
                Ok(true) => break Some(doc),
                // Not visible reads as absent: its existence is not revealed.
                Ok(false) => break None,
                Err(keys) => {
                    for key in keys {
                        let found = read_document(conn, &key.collection, &key.id)?;
                        looked_up.supply(key, found.map(|d| d.body));
                    }
                }
            }
        },
        None => None,
    };
    Ok(ReadAt {
        seq,
        value,
        looked_up,
    })
}

pub(super) fn query(conn: &Connection, query: &Query) -> Result<ReadAt<Page>, StoreError> {
    let seq = read_head(conn)?;
    let mut execution = Execution::new(query);
    loop {
        match execution.step() {
            Step::Fetch(request) => {
                let rows = scan(conn, &query.collection.name, request)?;
                execution.accept(rows);
            }
            Step::Lookup(keys) => {
                for key in keys {
                    let found = read_document(conn, &key.collection, &key.id)?;
                    execution.supply(key, found.map(|d| d.body));
                }
            }
            Step::Done => break,
        }
    }
    let (value, looked_up) = execution.finish();
    Ok(ReadAt {
        seq,
        value,
        looked_up,
    })
}

fn scan(
    conn: &Connection,
    collection: &str,
    request: &ScanRequest,
) -> Result<Vec<ScanRow>, StoreError> {
    let raw: Vec<(Option<Vec<u8>>, RawDocument)> = match request {
        ScanRequest::Index { index, lower, upper, reverse, limit } => {
            let sql = format!(
                "SELECT e.key, d.id, d.version, d.seq, d.body FROM protosync_index_entries e
                 JOIN protosync_documents d ON d.collection = e.collection AND d.id = e.doc_id
                 WHERE e.collection = ?1 AND e.index_name = ?2 AND e.key >= ?3 {} ORDER BY e.key {} LIMIT ?5",
                if upper.is_some() { "AND e.key < ?4" } else { "AND ?4 IS NULL" },
                if *reverse { "DESC" } else { "ASC" }
            );
            conn.prepare_cached(&sql)?
                .query_map(params![collection, index, lower, upper, *limit as i64], |r| {
                    Ok((Some(r.get(0)?), raw_document_at(r, 1)?))
                })?
                .collect::<Result<_, _>>()?
        }
        ScanRequest::Collection { after_id, limit } => conn
            .prepare_cached("SELECT id, version, seq, body FROM protosync_documents WHERE collection = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?
            .query_map(params![collection, after_id.as_deref().unwrap_or(""), *limit as i64], |r| Ok((None, raw_document_at(r, 0)?)))?
            .collect::<Result<_, _>>()?,
    };
    raw.into_iter()
        .map(|(index_key, doc)| {
            Ok(ScanRow {
                index_key,
                doc: decode(doc)?,
            })
        })
        .collect()
}

/// Up to `max_commits` commits after `after`, with their changes; the rows
/// are put together by [`LogAssembly`].
/// Kept versions of one document, oldest first, after `after`.
pub(super) fn history(
    conn: &Connection,
    collection: &str,
    id: &str,
    after: Seq,
    max: usize,
) -> Result<Vec<crate::HistoryEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, seq, committed_at_ms, actor, body FROM protosync_history
         WHERE collection = ?1 AND id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![collection, id, after.0 as i64, max as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (version, seq, committed_at_ms, actor, body) = row?;
        entries.push(crate::HistoryEntry {
            version: Version(version as u64),
            seq: Seq(seq as u64),
            committed_at_ms,
            actor,
            body: body.map(|b| parse_body(&b)).transpose()?,
        });
    }
    Ok(entries)
}

/// The head, then every document in `(collection, id)` order, into
/// `documents`; stops early when its reader is gone.
pub(super) fn snapshot(
    conn: &Connection,
    seq: tokio::sync::oneshot::Sender<Seq>,
    documents: &tokio::sync::mpsc::Sender<Result<(String, StoredDocument), StoreError>>,
) -> Result<(), StoreError> {
    let _ = seq.send(read_head(conn)?);
    let mut stmt = conn.prepare(
        "SELECT collection, id, version, seq, body FROM protosync_documents ORDER BY collection, id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let collection: String = row.get(0)?;
        let doc = decode(raw_document_at(row, 1)?)?;
        if documents.blocking_send(Ok((collection, doc))).is_err() {
            break;
        }
    }
    Ok(())
}

pub(super) fn read_log(
    conn: &Connection,
    after: Seq,
    max_commits: usize,
) -> Result<Vec<CommitRecord>, StoreError> {
    check_reaches(after, read_floor(conn)?)?;
    let commits = conn
        .prepare_cached(
            "SELECT seq, committed_at_ms, actor, request_id FROM protosync_commits WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after.0 as i64, max_commits as i64], |r| {
            Ok(CommitRecord {
                seq: Seq(r.get::<_, i64>(0)? as u64),
                committed_at_ms: r.get(1)?,
                audit: Audit {
                    actor: r.get(2)?,
                    request_id: r.get(3)?,
                },
                changes: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut log = LogAssembly::new(after, commits);
    let Some(last) = log.last() else {
        return Ok(log.finish());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT seq, collection, id, version, body FROM protosync_changes WHERE seq > ?1 AND seq <= ?2 ORDER BY seq, ord",
    )?;
    let mut rows = stmt.query(params![after.0 as i64, last.0 as i64])?;
    while let Some(row) = rows.next()? {
        let body: Option<String> = row.get(4)?;
        log.push(
            Seq(row.get::<_, i64>(0)? as u64),
            Change {
                collection: row.get(1)?,
                id: row.get(2)?,
                version: Version(row.get::<_, i64>(3)? as u64),
                body: body.map(|b| parse_body(&b)).transpose()?,
            },
        );
    }
    Ok(log.finish())
}
