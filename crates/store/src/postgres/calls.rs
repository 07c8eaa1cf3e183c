//! Completed action calls on Postgres: the first record of a key wins
//! (`ON CONFLICT DO NOTHING`, then read back), so racing retries on any
//! process agree. Nothing here touches documents or commits.

use deadpool_postgres::Pool;

use crate::{CallRecord, StoreError, now_ms};

pub(super) async fn record_call(
    pool: &Pool,
    record: &CallRecord,
) -> Result<CallRecord, StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO protosync_action_calls (key, request_hash, outcome, created_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO NOTHING",
            &[&record.key, &record.request_hash, &record.outcome.to_string(), &now_ms()],
        )
        .await?;
    drop(client);
    recorded_call(pool, &record.key).await?.ok_or_else(|| {
        StoreError::Internal(format!(
            "call {:?} vanished after it was recorded",
            record.key
        ))
    })
}

pub(super) async fn recorded_call(
    pool: &Pool,
    key: &str,
) -> Result<Option<CallRecord>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT request_hash, outcome FROM protosync_action_calls WHERE key = $1",
            &[&key],
        )
        .await?;
    row.map(|r| crate::idempotency::call_record(key, r.get(0), r.get::<_, &str>(1)))
        .transpose()
}
