//! The revocation log on Postgres: recording a revoked `jti` with the next
//! [`RevocationSeq`], and reading the log in order. The `jti` is checked by
//! the caller (`PostgresStore::revoke`) before it gets here. Nothing here
//! touches documents, commits or the commit seq.

use deadpool_postgres::Pool;

use crate::{Revocation, RevocationSeq, StoreError, now_ms};

pub(super) async fn revoke(
    pool: &Pool,
    jti: &str,
    keep_until_ms: Option<i64>,
) -> Result<Revocation, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // The counter row stays locked until this commits, so the next
    // revocation (from any process) takes the next seq only once this
    // one is visible: seq order is visibility order, and a reader that
    // follows the log by seq misses nothing. Revocations are rare; the
    // lock costs nothing that matters.
    let seq: i64 = tx
        .query_one(
            "UPDATE protosync_revocation_head SET seq = seq + 1 RETURNING seq",
            &[],
        )
        .await?
        .get(0);
    // Revoked again: the entry moves to the end of the log and keeps the
    // later time, where NULL (for good) wins (GREATEST would drop NULLs).
    let row = tx
        .query_one(
            "INSERT INTO protosync_revocations (jti, seq, revoked_at_ms, keep_until_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (jti) DO UPDATE SET seq = EXCLUDED.seq, keep_until_ms = CASE
                 WHEN protosync_revocations.keep_until_ms IS NULL OR EXCLUDED.keep_until_ms IS NULL THEN NULL
                 ELSE GREATEST(protosync_revocations.keep_until_ms, EXCLUDED.keep_until_ms) END
             RETURNING revoked_at_ms, keep_until_ms",
            &[&jti, &seq, &now_ms(), &keep_until_ms],
        )
        .await?;
    tx.commit().await?;
    Ok(Revocation {
        seq: RevocationSeq(seq as u64),
        jti: jti.to_owned(),
        revoked_at_ms: row.get(0),
        keep_until_ms: row.get(1),
    })
}

pub(super) async fn revocations_after(
    pool: &Pool,
    after: RevocationSeq,
    max: usize,
) -> Result<Vec<Revocation>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT seq, jti, revoked_at_ms, keep_until_ms FROM protosync_revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&(after.0 as i64), &(max as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Revocation {
            seq: RevocationSeq(r.get::<_, i64>(0) as u64),
            jti: r.get(1),
            revoked_at_ms: r.get(2),
            keep_until_ms: r.get(3),
        })
        .collect())
}
