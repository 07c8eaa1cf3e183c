//! Where pruning cuts, decided once for both stores from
//! [`StoreOptions`]: each store's `prune` deletes what lies before these
//! cutoffs. This module only computes times; it never deletes anything.

use crate::{StoreOptions, now_ms};

/// Times (milliseconds since the epoch) before which a prune drops rows.
pub(crate) struct Cutoffs {
    /// Revocations whose `keep_until_ms` is before this are dropped.
    pub now_ms: i64,
    /// Commits (and their changes) committed before this are dropped.
    pub change_log_ms: i64,
    /// Idempotency records created before this are dropped.
    pub idempotency_ms: i64,
}

impl Cutoffs {
    /// The cutoffs of a prune running now.
    pub(crate) fn now(options: &StoreOptions) -> Cutoffs {
        let now = now_ms();
        Cutoffs {
            now_ms: now,
            change_log_ms: now - options.change_log_retention.as_millis() as i64,
            idempotency_ms: now - options.idempotency_retention.as_millis() as i64,
        }
    }
}
