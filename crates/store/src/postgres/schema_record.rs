//! The recorded schema on Postgres: one row, replaced on each record.

use deadpool_postgres::Pool;

use crate::{RecordedSchema, StoreError, now_ms};

pub(super) async fn read(pool: &Pool) -> Result<Option<RecordedSchema>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT descriptor_set, fingerprint, recorded_at_ms FROM protosync_schema WHERE id = 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| RecordedSchema {
        descriptor_set: r.get(0),
        fingerprint: r.get(1),
        recorded_at_ms: r.get(2),
    }))
}

pub(super) async fn record(
    pool: &Pool,
    descriptor_set: &[u8],
    fingerprint: &str,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO protosync_schema (id, descriptor_set, fingerprint, recorded_at_ms) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET descriptor_set = EXCLUDED.descriptor_set,
                 fingerprint = EXCLUDED.fingerprint, recorded_at_ms = EXCLUDED.recorded_at_ms",
            &[&descriptor_set, &fingerprint, &now_ms()],
        )
        .await?;
    Ok(())
}
