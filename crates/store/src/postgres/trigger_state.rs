//! Trigger delivery state on Postgres (the SQL is `crate::triggers`'s). The
//! claim is one upsert: Postgres locks the trigger's row, so two nodes
//! claiming it get one holder.

use deadpool_postgres::Pool;
use protosync_core::Seq;

use crate::StoreError;
use crate::triggers::{
    ADVANCE_TRIGGER, CLAIM_TRIGGER, PARK_CHANGE, PARKED, ParkedChange, RESOLVE_PARKED,
    TRIGGER_STATES, TriggerClaim, TriggerState,
};

pub(super) async fn claim_trigger(
    pool: &Pool,
    claim: &TriggerClaim,
) -> Result<Option<Seq>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            CLAIM_TRIGGER,
            &[
                &claim.name,
                &(claim.start.0 as i64),
                &claim.node,
                &claim.lease_until_ms,
                &claim.now_ms,
            ],
        )
        .await?;
    Ok(row.map(|r| Seq(r.get::<_, i64>(0) as u64)))
}

pub(super) async fn advance_trigger(
    pool: &Pool,
    name: &str,
    node: &str,
    to: Seq,
    parked: Option<&ParkedChange>,
) -> Result<bool, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let moved = tx
        .execute(ADVANCE_TRIGGER, &[&(to.0 as i64), &name, &node])
        .await?
        > 0;
    if let (true, Some(p)) = (moved, parked) {
        tx.execute(
            PARK_CHANGE,
            &[
                &p.name,
                &(p.seq.0 as i64),
                &p.id,
                &i64::from(p.attempts),
                &p.error,
                &p.parked_at_ms,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(moved)
}

pub(super) async fn trigger_states(pool: &Pool) -> Result<Vec<TriggerState>, StoreError> {
    let client = pool.get().await?;
    let rows = client.query(TRIGGER_STATES, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| TriggerState {
            name: r.get(0),
            checkpoint: Seq(r.get::<_, i64>(1) as u64),
            node: r.get(2),
            lease_until_ms: r.get(3),
        })
        .collect())
}

pub(super) async fn parked_changes(
    pool: &Pool,
    name: &str,
    max: usize,
) -> Result<Vec<ParkedChange>, StoreError> {
    let client = pool.get().await?;
    let rows = client.query(PARKED, &[&name, &(max as i64)]).await?;
    Ok(rows
        .iter()
        .map(|r| ParkedChange {
            name: r.get(0),
            seq: Seq(r.get::<_, i64>(1) as u64),
            id: r.get(2),
            attempts: r.get::<_, i64>(3) as u32,
            error: r.get(4),
            parked_at_ms: r.get(5),
        })
        .collect())
}

pub(super) async fn resolve_parked(
    pool: &Pool,
    name: &str,
    seq: Seq,
    id: &str,
) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .execute(RESOLVE_PARKED, &[&name, &(seq.0 as i64), &id])
        .await?
        > 0)
}
