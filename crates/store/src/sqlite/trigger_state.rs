//! Trigger delivery state on SQLite (the SQL is `crate::triggers`'s):
//! claims, checkpoints and parking on the writer thread, reads in a read
//! transaction.

use protosync_core::Seq;
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::triggers::{
    ADVANCE_TRIGGER, CLAIM_TRIGGER, PARK_CHANGE, PARKED, ParkedChange, RESOLVE_PARKED,
    TRIGGER_STATES, TriggerClaim, TriggerState,
};

pub(super) fn claim_trigger(
    conn: &Connection,
    claim: &TriggerClaim,
) -> Result<Option<Seq>, StoreError> {
    let checkpoint: Option<i64> = conn
        .prepare_cached(CLAIM_TRIGGER)?
        .query_row(
            params![
                claim.name,
                claim.start.0 as i64,
                claim.node,
                claim.lease_until_ms,
                claim.now_ms
            ],
            |r| r.get(0),
        )
        .optional()?;
    Ok(checkpoint.map(|c| Seq(c as u64)))
}

pub(super) fn advance_trigger(
    conn: &mut Connection,
    name: &str,
    node: &str,
    to: Seq,
    parked: Option<&ParkedChange>,
) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    let moved = tx
        .prepare_cached(ADVANCE_TRIGGER)?
        .execute(params![to.0 as i64, name, node])?
        > 0;
    if let (true, Some(p)) = (moved, parked) {
        tx.prepare_cached(PARK_CHANGE)?.execute(params![
            p.name,
            p.seq.0 as i64,
            p.id,
            i64::from(p.attempts),
            p.error,
            p.parked_at_ms
        ])?;
    }
    tx.commit()?;
    Ok(moved)
}

pub(super) fn trigger_states(conn: &Connection) -> Result<Vec<TriggerState>, StoreError> {
    conn.prepare_cached(TRIGGER_STATES)?
        .query_map([], |r| {
            Ok(TriggerState {
                name: r.get(0)?,
                checkpoint: Seq(r.get::<_, i64>(1)? as u64),
                node: r.get(2)?,
                lease_until_ms: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

pub(super) fn parked_changes(
    conn: &Connection,
    name: &str,
    max: usize,
) -> Result<Vec<ParkedChange>, StoreError> {
    conn.prepare_cached(PARKED)?
        .query_map(params![name, max as i64], |r| {
            Ok(ParkedChange {
                name: r.get(0)?,
                seq: Seq(r.get::<_, i64>(1)? as u64),
                id: r.get(2)?,
                attempts: r.get::<_, i64>(3)? as u32,
                error: r.get(4)?,
                parked_at_ms: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

pub(super) fn resolve_parked(
    conn: &Connection,
    name: &str,
    seq: Seq,
    id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(RESOLVE_PARKED)?
        .execute(params![name, seq.0 as i64, id])?
        > 0)
}
