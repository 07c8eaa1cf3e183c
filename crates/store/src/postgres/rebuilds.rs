//! Rebuild staging on Postgres: starting a rebuild, staging documents and
//! abandoning (each in its own transaction, which locks the rebuild's row),
//! reading what is staged (in one snapshot), and the statements that drop a
//! swapped rebuild's staging inside the swap's group transaction. Staged
//! documents are not documents: no seq, no change log, nobody sees them.

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;

use super::group_commit::{Param, params};
use super::reads::snapshot;
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

async fn read_in(
    client: &impl GenericClient,
    projector: &str,
    lock: bool,
) -> Result<Option<Rebuild>, StoreError> {
    let sql = if lock {
        "SELECT generation, started_at_ms, source_seq FROM protosync_projection_rebuilds WHERE projector = $1 AND active FOR UPDATE"
    } else {
        "SELECT generation, started_at_ms, source_seq FROM protosync_projection_rebuilds WHERE projector = $1 AND active"
    };
    let Some(row) = client.query_opt(sql, &[&projector]).await? else {
        return Ok(None);
    };
    let staged: i64 = client
        .query_one(
            "SELECT count(*) FROM protosync_projection_staging WHERE projector = $1",
            &[&projector],
        )
        .await?
        .get(0);
    Ok(Some(Rebuild {
        generation: row.get::<_, i64>(0) as u64,
        started_at_ms: row.get(1),
        source_seq: row.get::<_, i64>(2) as u64,
        staged: staged as u64,
    }))
}

pub(super) async fn read(pool: &Pool, projector: &str) -> Result<Option<Rebuild>, StoreError> {
    let mut client = pool.get().await?;
    let tx = snapshot(&mut client).await?;
    read_in(&*tx, projector, false).await
}

pub(super) async fn start(pool: &Pool, projector: &str) -> Result<Rebuild, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // A finished or abandoned rebuild's row stays, inactive, so the next
    // one takes the next generation.
    tx.execute(
        "INSERT INTO protosync_projection_rebuilds AS r (projector, generation, active, started_at_ms, source_seq) VALUES ($1, 1, true, $2, 0)
         ON CONFLICT (projector) DO UPDATE SET generation = r.generation + 1, active = true, started_at_ms = excluded.started_at_ms, source_seq = 0
         WHERE NOT r.active",
        &[&projector, &now_ms()],
    )
    .await?;
    let rebuild = read_in(&*tx, projector, true)
        .await?
        .ok_or_else(|| StoreError::Internal("a started rebuild is not there".into()))?;
    tx.commit().await?;
    Ok(rebuild)
}

pub(super) async fn stage(
    pool: &Pool,
    projector: &str,
    generation: u64,
    documents: &[StagedDocument],
    read_up_to: Option<u64>,
) -> Result<Rebuild, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if read_in(&*tx, projector, true).await?.map(|r| r.generation) != Some(generation) {
        return Err(unknown(projector, generation));
    }
    let column = |f: &dyn Fn(&StagedDocument) -> Option<String>| -> Vec<Option<String>> {
        documents.iter().map(f).collect()
    };
    let collections = column(&|d| Some(d.collection.clone()));
    let ids = column(&|d| Some(d.id.clone()));
    let bodies = column(&|d| d.body.as_ref().map(ToString::to_string));
    let hashes = column(&|d| d.hash.clone());
    let seqs: Vec<i64> = documents.iter().map(|d| d.source_seq as i64).collect();
    // The highest source seq per document wins, also within one batch.
    tx.execute(
        "INSERT INTO protosync_projection_staging AS s (projector, collection, id, source_seq, body, hash)
         SELECT DISTINCT ON (c, i) $1, c, i, q, b, h FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::text[]) AS t(c, i, q, b, h)
         ORDER BY c, i, q DESC
         ON CONFLICT (projector, collection, id) DO UPDATE SET source_seq = excluded.source_seq, body = excluded.body, hash = excluded.hash
         WHERE excluded.source_seq > s.source_seq",
        &[&projector, &collections, &ids, &seqs, &bodies, &hashes],
    )
    .await?;
    let highest = seqs
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(read_up_to.unwrap_or(0) as i64);
    tx.execute(
        "UPDATE protosync_projection_rebuilds SET source_seq = GREATEST(source_seq, $2) WHERE projector = $1",
        &[&projector, &highest],
    )
    .await?;
    let rebuild = read_in(&*tx, projector, false)
        .await?
        .ok_or_else(|| unknown(projector, generation))?;
    tx.commit().await?;
    Ok(rebuild)
}

pub(super) async fn staged(
    pool: &Pool,
    projector: &str,
    generation: u64,
    after: Option<&DocKey>,
    max: usize,
) -> Result<Vec<StagedDocument>, StoreError> {
    let mut client = pool.get().await?;
    let tx = snapshot(&mut client).await?;
    if read_in(&*tx, projector, false).await?.map(|r| r.generation) != Some(generation) {
        return Err(unknown(projector, generation));
    }
    let (after_c, after_i) = after.cloned().unwrap_or_default();
    let rows = tx
        .query(
            "SELECT collection, id, source_seq, body, hash FROM protosync_projection_staging
             WHERE projector = $1 AND (collection, id) > ($2, $3) ORDER BY collection, id LIMIT $4",
            &[&projector, &after_c, &after_i, &(max as i64)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let body: Option<String> = r.get(3);
            Ok(StagedDocument {
                collection: r.get(0),
                id: r.get(1),
                source_seq: r.get::<_, i64>(2) as u64,
                body: body
                    .map(|b| serde_json::from_str(&b))
                    .transpose()
                    .map_err(|e| StoreError::Internal(format!("a staged body is not JSON: {e}")))?,
                hash: r.get(4),
            })
        })
        .collect()
}

const DROP_STAGING: &str = "DELETE FROM protosync_projection_staging WHERE projector = $1";
const DEACTIVATE: &str = "UPDATE protosync_projection_rebuilds SET active = false WHERE projector = $1 AND generation = $2";

pub(super) async fn abandon(
    pool: &Pool,
    projector: &str,
    generation: u64,
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if read_in(&*tx, projector, true).await?.map(|r| r.generation) != Some(generation) {
        return Err(unknown(projector, generation));
    }
    tx.execute(DROP_STAGING, &[&projector]).await?;
    tx.execute(DEACTIVATE, &[&projector, &(generation as i64)])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The statements that drop the staging of the rebuilds a group swapped in.
pub(super) fn rows_to_write(writes: &GroupWrites, batch: &mut Vec<(&'static str, Vec<Param>)>) {
    for (projector, generation) in &writes.finished_rebuilds {
        batch.push((DROP_STAGING, params![projector.clone()]));
        batch.push((DEACTIVATE, params![projector.clone(), *generation as i64]));
    }
}
