//! Keeps this process's revoked `jti`s in step with the store, so every node
//! on one database refuses a revoked token, and a restart remembers it.
//!
//! `POST /v1/auth/revoke` writes the revocation to the store first and only
//! then to this process's [`Authenticator`]; other processes read the store's
//! revocation log every [`REVOCATION_REFRESH_INTERVAL`]. So a revocation is
//! honoured on the node that took it at once, and on every other node within
//! that interval for new requests, plus one heartbeat interval for live
//! WebSockets (they check at each heartbeat). This module never decides who
//! may revoke; the handler does.

use std::sync::Arc;
use std::time::Duration;

use protosync_auth::Authenticator;
use protosync_store::{RevocationSeq, Store, StoreError};

/// How often each process reads revocations recorded by other processes:
/// the bound on how long another node of a cluster may still accept a token
/// revoked elsewhere. A read of an empty log tail is one indexed query, so
/// a few seconds costs nothing and keeps the window short.
pub const REVOCATION_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// Revocations read per query while catching up (at start-up, most).
const REVOCATION_BATCH: usize = 1_000;

/// Loads every revocation the store keeps into `auth`, then follows the log
/// in the background; the returned task runs until aborted. Fails when the
/// first load does: serving without it would accept revoked tokens.
pub async fn follow(
    store: Arc<dyn Store>,
    auth: Arc<Authenticator>,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let mut after = RevocationSeq::default();
    catch_up(&*store, &auth, &mut after).await?;
    Ok(tokio::spawn(async move {
        let mut every = tokio::time::interval(REVOCATION_REFRESH_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = catch_up(&*store, &auth, &mut after).await {
                // The revocations already known stay in force; the next tick retries.
                tracing::warn!(error = %e, "reading token revocations from the store failed");
            }
        }
    }))
}

/// Reads the revocations after `after` into `auth` and moves `after` on.
async fn catch_up(
    store: &dyn Store,
    auth: &Authenticator,
    after: &mut RevocationSeq,
) -> Result<(), StoreError> {
    loop {
        let batch = store.revocations_after(*after, REVOCATION_BATCH).await?;
        for revocation in &batch {
            auth.remember_revocation(&revocation.jti, revocation.keep_until_ms);
            *after = revocation.seq;
        }
        if batch.len() < REVOCATION_BATCH {
            break;
        }
    }
    auth.forget_expired_revocations(now_ms());
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
