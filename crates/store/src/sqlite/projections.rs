//! Projection rows on SQLite: reading the stamps and checkpoints a group
//! decides on (inside its transaction), writing what it leaves, and the
//! snapshot reads behind the checkpoint and the drift check. Decides
//! nothing: `crate::projection` does.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::reads::parse_body;
use crate::commit::DocKey;
use crate::group::GroupWrites;
use crate::projection::{Checkpoint, SourceStamp, StoredStamp, content_hash};
use crate::{ProjectedDocument, StoreError};

pub(super) fn read_stamps(
    conn: &Connection,
    keys: &[DocKey],
) -> Result<HashMap<DocKey, StoredStamp>, StoreError> {
    let mut read = conn.prepare_cached(
        "SELECT projector, source_seq, hash FROM protosync_projection_stamps WHERE collection = ?1 AND id = ?2",
    )?;
    let mut stamps = HashMap::new();
    for key in keys {
        if let Some(stamp) = read
            .query_row(params![key.0, key.1], |r| {
                Ok(StoredStamp {
                    projector: r.get(0)?,
                    stamp: SourceStamp {
                        source_seq: r.get::<_, i64>(1)? as u64,
                        hash: r.get(2)?,
                    },
                })
            })
            .optional()?
        {
            stamps.insert(key.clone(), stamp);
        }
    }
    Ok(stamps)
}

/// The checkpoints of `projectors` without their document counts (a
/// group only moves the rest).
pub(super) fn read_checkpoints(
    conn: &Connection,
    projectors: &[String],
) -> Result<HashMap<String, Checkpoint>, StoreError> {
    let mut checkpoints = HashMap::new();
    for projector in projectors {
        if let Some(checkpoint) = read_counts(conn, projector)? {
            checkpoints.insert(projector.clone(), checkpoint);
        }
    }
    Ok(checkpoints)
}

fn read_counts(conn: &Connection, projector: &str) -> Result<Option<Checkpoint>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT source_seq, updated_at_ms, applied, stale, unchanged FROM protosync_projections WHERE projector = ?1",
        )?
        .query_row([projector], |r| {
            Ok(Checkpoint {
                source_seq: r.get::<_, i64>(0)? as u64,
                updated_at_ms: r.get(1)?,
                documents: 0,
                applied: r.get::<_, i64>(2)? as u64,
                stale: r.get::<_, i64>(3)? as u64,
                unchanged: r.get::<_, i64>(4)? as u64,
            })
        })
        .optional()?)
}

/// Writes the stamps and checkpoints a group leaves, in its transaction.
pub(super) fn write(
    conn: &Connection,
    writes: &GroupWrites,
    committed_at: i64,
) -> Result<(), StoreError> {
    let mut stamp = conn.prepare_cached(
        "INSERT OR REPLACE INTO protosync_projection_stamps (collection, id, projector, source_seq, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for ((collection, id), stored) in &writes.stamps {
        stamp.execute(params![
            collection,
            id,
            stored.projector,
            stored.stamp.source_seq as i64,
            stored.stamp.hash
        ])?;
    }
    let mut checkpoint = conn.prepare_cached(
        "INSERT OR REPLACE INTO protosync_projections (projector, source_seq, updated_at_ms, applied, stale, unchanged) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (projector, c) in &writes.checkpoints {
        checkpoint.execute(params![
            projector,
            c.source_seq as i64,
            committed_at,
            c.applied as i64,
            c.stale as i64,
            c.unchanged as i64
        ])?;
    }
    Ok(())
}

/// The checkpoint with the count of documents the projector owns, in the
/// reader's snapshot.
pub(super) fn checkpoint(
    conn: &Connection,
    projector: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    let Some(mut checkpoint) = read_counts(conn, projector)? else {
        return Ok(None);
    };
    checkpoint.documents = conn
        .prepare_cached(
            "SELECT count(*) FROM protosync_projection_stamps WHERE projector = ?1 AND hash IS NOT NULL",
        )?
        .query_row([projector], |r| r.get::<_, i64>(0))? as u64;
    Ok(Some(checkpoint))
}

pub(super) fn projected_documents(
    conn: &Connection,
    projector: &str,
    after: Option<&DocKey>,
    through: Option<&DocKey>,
    max: usize,
) -> Result<Vec<ProjectedDocument>, StoreError> {
    // Row-value comparisons on the (projector, collection, id) index; an
    // absent bound is the empty key below everything, or no upper bound.
    let (after_c, after_i) = after.cloned().unwrap_or_default();
    let mut read = conn.prepare_cached(
        "SELECT s.collection, s.id, s.source_seq, d.body FROM protosync_projection_stamps s
         LEFT JOIN protosync_documents d ON d.collection = s.collection AND d.id = s.id
         WHERE s.projector = ?1 AND s.hash IS NOT NULL AND (s.collection, s.id) > (?2, ?3)
           AND (?4 IS NULL OR (s.collection, s.id) <= (?4, ?5))
         ORDER BY s.collection, s.id LIMIT ?6",
    )?;
    let rows = read.query_map(
        params![
            projector,
            after_c,
            after_i,
            through.map(|k| &k.0),
            through.map(|k| &k.1),
            max as i64
        ],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        },
    )?;
    let mut documents = Vec::new();
    for row in rows {
        let (collection, id, source_seq, body) = row?;
        documents.push(ProjectedDocument {
            collection,
            id,
            source_seq: source_seq as u64,
            hash: body
                .map(|b| parse_body(&b))
                .transpose()?
                .as_ref()
                .map(content_hash),
        });
    }
    Ok(documents)
}
