//! Rebuild staging on SQLite: starting a rebuild, staging documents and
//! abandoning (on the writer thread, each in its own transaction), reading
//! what is staged (in a read transaction), and dropping a swapped rebuild's
//! staging inside the swap's group transaction. Staged documents are not
//! documents: no seq, no change log, nobody sees them.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::reads::parse_body;
use crate::commit::DocKey;
use crate::group::GroupWrites;
use crate::projection::{Rebuild, StagedDocument};
use crate::{StoreError, now_ms};

fn unknown(projector: &str, generation: u64) -> StoreError {
    StoreError::UnknownRebuild {
        projector: projector.to_owned(),
        generation,
    }
}

pub(super) fn read(conn: &Connection, projector: &str) -> Result<Option<Rebuild>, StoreError> {
    let Some((generation, started_at_ms, source_seq)) = conn
        .prepare_cached(
            "SELECT generation, started_at_ms, source_seq FROM protosync_projection_rebuilds WHERE projector = ?1 AND active = 1",
        )?
        .query_row([projector], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get::<_, i64>(2)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let staged: i64 = conn
        .prepare_cached("SELECT count(*) FROM protosync_projection_staging WHERE projector = ?1")?
        .query_row([projector], |r| r.get(0))?;
    Ok(Some(Rebuild {
        generation: generation as u64,
        started_at_ms,
        source_seq: source_seq as u64,
        staged: staged as u64,
    }))
}

pub(super) fn start(conn: &mut Connection, projector: &str) -> Result<Rebuild, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // A finished or abandoned rebuild's row stays, inactive, so the next
    // one takes the next generation.
    tx.execute(
        "INSERT INTO protosync_projection_rebuilds (projector, generation, active, started_at_ms, source_seq) VALUES (?1, 1, 1, ?2, 0)
         ON CONFLICT (projector) DO UPDATE SET generation = generation + 1, active = 1, started_at_ms = excluded.started_at_ms, source_seq = 0
         WHERE active = 0",
        params![projector, now_ms()],
    )?;
    let rebuild = read(&tx, projector)?
        .ok_or_else(|| StoreError::Internal("a started rebuild is not there".into()))?;
    tx.commit()?;
    Ok(rebuild)
}

pub(super) fn stage(
    conn: &mut Connection,
    projector: &str,
    generation: u64,
    documents: &[StagedDocument],
    read_up_to: Option<u64>,
) -> Result<Rebuild, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if read(&tx, projector)?.map(|r| r.generation) != Some(generation) {
        return Err(unknown(projector, generation));
    }
    let mut put = tx.prepare_cached(
        "INSERT INTO protosync_projection_staging (projector, collection, id, source_seq, body, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (projector, collection, id) DO UPDATE SET source_seq = excluded.source_seq, body = excluded.body, hash = excluded.hash
         WHERE excluded.source_seq > protosync_projection_staging.source_seq",
    )?;
    let mut highest = read_up_to.unwrap_or(0);
    for d in documents {
        highest = highest.max(d.source_seq);
        put.execute(params![
            projector,
            d.collection,
            d.id,
            d.source_seq as i64,
            d.body.as_ref().map(ToString::to_string),
            d.hash
        ])?;
    }
    drop(put);
    tx.execute(
        "UPDATE protosync_projection_rebuilds SET source_seq = MAX(source_seq, ?2) WHERE projector = ?1",
        params![projector, highest as i64],
    )?;
    let rebuild = read(&tx, projector)?.ok_or_else(|| unknown(projector, generation))?;
    tx.commit()?;
    Ok(rebuild)
}

pub(super) fn staged(
    conn: &Connection,
    projector: &str,
    generation: u64,
    after: Option<&DocKey>,
    max: usize,
) -> Result<Vec<StagedDocument>, StoreError> {
    if read(conn, projector)?.map(|r| r.generation) != Some(generation) {
        return Err(unknown(projector, generation));
    }
    let (after_c, after_i) = after.cloned().unwrap_or_default();
    let mut read = conn.prepare_cached(
        "SELECT collection, id, source_seq, body, hash FROM protosync_projection_staging
         WHERE projector = ?1 AND (collection, id) > (?2, ?3) ORDER BY collection, id LIMIT ?4",
    )?;
    let rows = read.query_map(params![projector, after_c, after_i, max as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut documents = Vec::new();
    for row in rows {
        let (collection, id, source_seq, body, hash) = row?;
        documents.push(StagedDocument {
            collection,
            id,
            source_seq: source_seq as u64,
            body: body.map(|b| parse_body(&b)).transpose()?,
            hash,
        });
    }
    Ok(documents)
}

pub(super) fn abandon(
    conn: &mut Connection,
    projector: &str,
    generation: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if read(&tx, projector)?.map(|r| r.generation) != Some(generation) {
        return Err(unknown(projector, generation));
    }
    finish(&tx, projector, generation)?;
    tx.commit()?;
    Ok(())
}

fn finish(conn: &Connection, projector: &str, generation: u64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM protosync_projection_staging WHERE projector = ?1")?
        .execute([projector])?;
    conn.prepare_cached(
        "UPDATE protosync_projection_rebuilds SET active = 0 WHERE projector = ?1 AND generation = ?2",
    )?
    .execute(params![projector, generation as i64])?;
    Ok(())
}

/// Drops the staging of the rebuilds a group swapped in, in its transaction.
pub(super) fn write(conn: &Connection, writes: &GroupWrites) -> Result<(), StoreError> {
    for (projector, generation) in &writes.finished_rebuilds {
        finish(conn, projector, *generation)?;
    }
    Ok(())
}
