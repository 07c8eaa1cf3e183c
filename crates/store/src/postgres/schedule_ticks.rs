//! Schedule ticks on Postgres (the SQL is `crate::schedules`'s). The claim
//! is one upsert: Postgres locks the tick's row, so two nodes claiming the
//! same tick get one winner.

use deadpool_postgres::Pool;

use crate::schedules::{CLAIM_TICK, FINISH_TICK, RUNS};
use crate::{StoreError, TickClaim, TickRun};

pub(super) async fn claim_tick(pool: &Pool, claim: &TickClaim) -> Result<Option<u32>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            CLAIM_TICK,
            &[
                &claim.action,
                &claim.tick_ms,
                &claim.node,
                &claim.lease_until_ms,
                &claim.now_ms,
            ],
        )
        .await?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u32))
}

pub(super) async fn finish_tick(
    pool: &Pool,
    run: &TickRun,
    finished_at_ms: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            FINISH_TICK,
            &[
                &finished_at_ms,
                &outcome,
                &error,
                &run.action,
                &run.tick_ms,
                &run.node,
                &i64::from(run.attempt),
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn schedule_runs(pool: &Pool, max: usize) -> Result<Vec<TickRun>, StoreError> {
    let client = pool.get().await?;
    let rows = client.query(RUNS, &[&(max as i64)]).await?;
    Ok(rows
        .iter()
        .map(|r| TickRun {
            action: r.get(0),
            tick_ms: r.get(1),
            node: r.get(2),
            attempt: r.get::<_, i64>(3) as u32,
            lease_until_ms: r.get(4),
            started_at_ms: r.get(5),
            finished_at_ms: r.get(6),
            outcome: r.get(7),
            error: r.get(8),
        })
        .collect())
}
