//! Projection rows on Postgres: reading the stamps and checkpoints a group
//! decides on (inside its transaction, under the head lock), the
//! statements that write what it leaves, and the snapshot reads behind the
//! checkpoint and the drift check. Decides nothing: `crate::projection`
//! does.

use std::collections::HashMap;

use deadpool_postgres::{Client, Pool};
use tokio_postgres::Row;

use super::group_commit::{Param, column, params};
use super::reads::snapshot;
use crate::commit::DocKey;
use crate::group::GroupWrites;
use crate::projection::{Checkpoint, SourceStamp, StoredStamp, content_hash};
use crate::{ProjectedDocument, StoreError};

pub(super) async fn read_stamps(
    tx: &Client,
    keys: &[DocKey],
) -> Result<HashMap<DocKey, StoredStamp>, StoreError> {
    let read = tx
        .prepare_cached(
            "SELECT s.collection, s.id, s.projector, s.source_seq, s.hash FROM protosync_projection_stamps s
             JOIN unnest($1::text[], $2::text[]) AS k(collection, id) ON s.collection = k.collection AND s.id = k.id",
        )
        .await?;
    let (collections, ids): (Vec<String>, Vec<String>) = keys.iter().cloned().unzip();
    Ok(tx
        .query(&read, &[&collections, &ids])
        .await?
        .iter()
        .map(|r| {
            let stamp = StoredStamp {
                projector: r.get(2),
                stamp: SourceStamp {
                    source_seq: r.get::<_, i64>(3) as u64,
                    hash: r.get(4),
                },
            };
            ((r.get(0), r.get(1)), stamp)
        })
        .collect())
}

const COUNTS: &str = "SELECT projector, source_seq, updated_at_ms, applied, stale, unchanged FROM protosync_projections WHERE projector = ANY($1)";

fn counts(r: &Row) -> Checkpoint {
    Checkpoint {
        source_seq: r.get::<_, i64>(1) as u64,
        updated_at_ms: r.get(2),
        documents: 0,
        applied: r.get::<_, i64>(3) as u64,
        stale: r.get::<_, i64>(4) as u64,
        unchanged: r.get::<_, i64>(5) as u64,
    }
}

/// The checkpoints of `projectors` without their document counts (a
/// group only moves the rest).
pub(super) async fn read_checkpoints(
    tx: &Client,
    projectors: &[String],
) -> Result<HashMap<String, Checkpoint>, StoreError> {
    let read = tx.prepare_cached(COUNTS).await?;
    Ok(tx
        .query(&read, &[&projectors])
        .await?
        .iter()
        .map(|r| (r.get(0), counts(r)))
        .collect())
}

/// The statements that write the stamps and checkpoints a group leaves.
pub(super) fn rows_to_write(
    writes: &GroupWrites,
    committed_at: i64,
    batch: &mut Vec<(&'static str, Vec<Param>)>,
) {
    if !writes.stamps.is_empty() {
        let rows = &writes.stamps;
        batch.push((
            "INSERT INTO protosync_projection_stamps (collection, id, projector, source_seq, hash)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[])
             ON CONFLICT (collection, id) DO UPDATE SET projector = excluded.projector, source_seq = excluded.source_seq, hash = excluded.hash",
            params![
                column(rows, |r| r.0.0.clone()),
                column(rows, |r| r.0.1.clone()),
                column(rows, |r| r.1.projector.clone()),
                column(rows, |r| r.1.stamp.source_seq as i64),
                column(rows, |r| r.1.stamp.hash.clone()),
            ],
        ));
    }
    if !writes.checkpoints.is_empty() {
        let rows = &writes.checkpoints;
        batch.push((
            "INSERT INTO protosync_projections (projector, source_seq, updated_at_ms, applied, stale, unchanged)
             SELECT p, s, $3, a, st, u FROM unnest($1::text[], $2::int8[], $4::int8[], $5::int8[], $6::int8[]) AS t(p, s, a, st, u)
             ON CONFLICT (projector) DO UPDATE SET source_seq = excluded.source_seq, updated_at_ms = excluded.updated_at_ms,
               applied = excluded.applied, stale = excluded.stale, unchanged = excluded.unchanged",
            params![
                column(rows, |r| r.0.clone()),
                column(rows, |r| r.1.source_seq as i64),
                committed_at,
                column(rows, |r| r.1.applied as i64),
                column(rows, |r| r.1.stale as i64),
                column(rows, |r| r.1.unchanged as i64),
            ],
        ));
    }
}

/// The checkpoint with the count of documents the projector owns, in one
/// snapshot.
pub(super) async fn checkpoint(
    pool: &Pool,
    projector: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    let mut client = pool.get().await?;
    let tx = snapshot(&mut client).await?;
    let Some(row) = tx.query_opt(COUNTS, &[&vec![projector]]).await? else {
        return Ok(None);
    };
    let mut checkpoint = counts(&row);
    checkpoint.documents = tx
        .query_one(
            "SELECT count(*) FROM protosync_projection_stamps WHERE projector = $1 AND hash IS NOT NULL",
            &[&projector],
        )
        .await?
        .get::<_, i64>(0) as u64;
    Ok(Some(checkpoint))
}

pub(super) async fn projected_documents(
    pool: &Pool,
    projector: &str,
    after: Option<&DocKey>,
    through: Option<&DocKey>,
    max: usize,
) -> Result<Vec<ProjectedDocument>, StoreError> {
    let client = pool.get().await?;
    let (after_c, after_i) = after.cloned().unwrap_or_default();
    let (through_c, through_i) = (through.map(|k| &k.0), through.map(|k| &k.1));
    let rows = client
        .query(
            "SELECT s.collection, s.id, s.source_seq, d.body FROM protosync_projection_stamps s
             LEFT JOIN protosync_documents d ON d.collection = s.collection AND d.id = s.id
             WHERE s.projector = $1 AND s.hash IS NOT NULL AND (s.collection, s.id) > ($2, $3)
               AND ($4::text IS NULL OR (s.collection, s.id) <= ($4, $5::text))
             ORDER BY s.collection, s.id LIMIT $6",
            &[
                &projector,
                &after_c,
                &after_i,
                &through_c,
                &through_i,
                &(max as i64),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ProjectedDocument {
            collection: r.get(0),
            id: r.get(1),
            source_seq: r.get::<_, i64>(2) as u64,
            hash: r
                .get::<_, Option<serde_json::Value>>(3)
                .as_ref()
                .map(content_hash),
        })
        .collect())
}
