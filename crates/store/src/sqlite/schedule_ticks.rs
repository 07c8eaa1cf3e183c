//! Schedule ticks on SQLite (the SQL is `crate::schedules`'s): claims and
//! finishes on the writer thread, the history in a read transaction.

use rusqlite::{Connection, OptionalExtension, params};

use crate::schedules::{CLAIM_TICK, FINISH_TICK, RUNS};
use crate::{StoreError, TickClaim, TickRun};

pub(super) fn claim_tick(conn: &Connection, claim: &TickClaim) -> Result<Option<u32>, StoreError> {
    let attempt: Option<i64> = conn
        .prepare_cached(CLAIM_TICK)?
        .query_row(
            params![
                claim.action,
                claim.tick_ms,
                claim.node,
                claim.lease_until_ms,
                claim.now_ms
            ],
            |r| r.get(0),
        )
        .optional()?;
    Ok(attempt.map(|a| a as u32))
}

pub(super) fn finish_tick(
    conn: &Connection,
    run: &TickRun,
    finished_at_ms: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(FINISH_TICK)?.execute(params![
        finished_at_ms,
        outcome,
        error,
        run.action,
        run.tick_ms,
        run.node,
        i64::from(run.attempt)
    ])?;
    Ok(())
}

pub(super) fn schedule_runs(conn: &Connection, max: usize) -> Result<Vec<TickRun>, StoreError> {
    conn.prepare_cached(RUNS)?
        .query_map([max as i64], |r| {
            Ok(TickRun {
                action: r.get(0)?,
                tick_ms: r.get(1)?,
                node: r.get(2)?,
                attempt: r.get::<_, i64>(3)? as u32,
                lease_until_ms: r.get(4)?,
                started_at_ms: r.get(5)?,
                finished_at_ms: r.get(6)?,
                outcome: r.get(7)?,
                error: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}
