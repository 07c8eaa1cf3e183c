//! The revocation log on SQLite: recording a revoked `jti` with the next
//! [`RevocationSeq`] (on the writer thread), and reading the log in order
//! (in a read transaction). The `jti` is checked by the caller
//! (`SqliteStore::revoke`) before it gets here. Nothing here touches
//! documents, commits or the commit seq.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::{Revocation, RevocationSeq, StoreError, now_ms};

/// One revocation in its own transaction; the writer thread is the only
/// writer, so revocation seqs are assigned and become visible in order.
pub(super) fn revoke(
    conn: &mut Connection,
    jti: &str,
    keep_until_ms: Option<i64>,
) -> Result<Revocation, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let seq: i64 = tx.query_row(
        "UPDATE protosync_revocation_head SET seq = seq + 1 RETURNING seq",
        [],
        |r| r.get(0),
    )?;
    // Revoked again: the entry moves to the end of the log (so every reader
    // sees the new time) and keeps the later time, where NULL (for good) wins.
    let revocation = tx.query_row(
        "INSERT INTO protosync_revocations (jti, seq, revoked_at_ms, keep_until_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (jti) DO UPDATE SET seq = excluded.seq, keep_until_ms = CASE
             WHEN protosync_revocations.keep_until_ms IS NULL OR excluded.keep_until_ms IS NULL THEN NULL
             ELSE MAX(protosync_revocations.keep_until_ms, excluded.keep_until_ms) END
         RETURNING revoked_at_ms, keep_until_ms",
        params![jti, seq, now_ms(), keep_until_ms],
        |r| {
            Ok(Revocation {
                seq: RevocationSeq(seq as u64),
                jti: jti.to_owned(),
                revoked_at_ms: r.get(0)?,
                keep_until_ms: r.get(1)?,
            })
        },
    )?;
    tx.commit()?;
    Ok(revocation)
}

pub(super) fn revocations_after(
    conn: &Connection,
    after: RevocationSeq,
    max: usize,
) -> Result<Vec<Revocation>, StoreError> {
    conn.prepare_cached(
        "SELECT seq, jti, revoked_at_ms, keep_until_ms FROM protosync_revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?
    .query_map(params![after.0 as i64, max as i64], |r| {
        Ok(Revocation {
            seq: RevocationSeq(r.get::<_, i64>(0)? as u64),
            jti: r.get(1)?,
            revoked_at_ms: r.get(2)?,
            keep_until_ms: r.get(3)?,
        })
    })?
    .collect::<Result<_, _>>()
    .map_err(StoreError::from)
}
