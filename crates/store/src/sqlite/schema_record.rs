//! The recorded schema on SQLite: one row, replaced on each record.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{RecordedSchema, StoreError, now_ms};

pub(super) fn read(conn: &Connection) -> Result<Option<RecordedSchema>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT descriptor_set, fingerprint, recorded_at_ms FROM protosync_schema WHERE id = 1",
            [],
            |r| {
                Ok(RecordedSchema {
                    descriptor_set: r.get(0)?,
                    fingerprint: r.get(1)?,
                    recorded_at_ms: r.get(2)?,
                })
            },
        )
        .optional()?)
}

pub(super) fn record(
    conn: &Connection,
    descriptor_set: &[u8],
    fingerprint: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO protosync_schema (id, descriptor_set, fingerprint, recorded_at_ms) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET descriptor_set = excluded.descriptor_set,
             fingerprint = excluded.fingerprint, recorded_at_ms = excluded.recorded_at_ms",
        params![descriptor_set, fingerprint, now_ms()],
    )?;
    Ok(())
}
