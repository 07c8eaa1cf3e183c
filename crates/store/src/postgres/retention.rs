//! Pruning on Postgres: drops change-log entries and idempotency records
//! older than their retention and revocations past their `keep_until_ms`,
//! and raises the log floor, in one transaction. Where the cutoffs lie is
//! decided in [`crate::retention`]. It never lowers the floor and never
//! drops a commit above it.

use deadpool_postgres::Pool;

use super::reads::read_floor;
use crate::retention::Cutoffs;
use crate::{Seq, StoreError, StoreOptions};

/// Prunes and returns the new log floor.
pub(super) async fn prune(pool: &Pool, options: &StoreOptions) -> Result<Seq, StoreError> {
    let cutoffs = Cutoffs::now(options);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let newest_expired: Option<i64> = tx
        .query_one(
            "SELECT MAX(seq) FROM protosync_commits WHERE committed_at_ms < $1",
            &[&cutoffs.change_log_ms],
        )
        .await?
        .get(0);
    if let Some(floor) = newest_expired {
        tx.execute("DELETE FROM protosync_changes WHERE seq <= $1", &[&floor])
            .await?;
        tx.execute("DELETE FROM protosync_commits WHERE seq <= $1", &[&floor])
            .await?;
        tx.execute(
            "UPDATE protosync_head SET log_floor = GREATEST(log_floor, $1)",
            &[&floor],
        )
        .await?;
    }
    tx.execute(
        "DELETE FROM protosync_idempotency WHERE created_at_ms < $1",
        &[&cutoffs.idempotency_ms],
    )
    .await?;
    tx.execute(
        "DELETE FROM protosync_action_calls WHERE created_at_ms < $1",
        &[&cutoffs.idempotency_ms],
    )
    .await?;
    tx.execute(
        "DELETE FROM protosync_revocations WHERE keep_until_ms < $1",
        &[&cutoffs.now_ms],
    )
    .await?;
    let floor = read_floor(&*tx).await?;
    tx.commit().await?;
    Ok(floor)
}
