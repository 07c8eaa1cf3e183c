//! Completed action calls on SQLite: recorded on the writer thread (first
//! record of a key wins), read in a read transaction. Nothing here touches
//! documents or commits.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{CallRecord, StoreError, now_ms};

pub(super) fn record_call(
    conn: &Connection,
    record: &CallRecord,
) -> Result<CallRecord, StoreError> {
    conn.execute(
        "INSERT INTO protosync_action_calls (key, request_hash, outcome, created_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO NOTHING",
        params![record.key, record.request_hash, record.outcome.to_string(), now_ms()],
    )?;
    recorded_call(conn, &record.key)?.ok_or_else(|| {
        StoreError::Internal(format!(
            "call {:?} vanished after it was recorded",
            record.key
        ))
    })
}

pub(super) fn recorded_call(
    conn: &Connection,
    key: &str,
) -> Result<Option<CallRecord>, StoreError> {
    let row = conn
        .prepare_cached("SELECT request_hash, outcome FROM protosync_action_calls WHERE key = ?1")?
        .query_row([key], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    row.map(|(request_hash, outcome)| crate::idempotency::call_record(key, request_hash, &outcome))
        .transpose()
}
