//! Schedule ticks, the same SQL for both stores (both take `?N`-free
//! positional parameters through their own helpers): a tick is claimed by
//! an upsert that only takes over an unfinished tick whose lease has
//! expired, so at most one node holds a tick at a time. Nothing here
//! touches documents or commits.

/// Claims a tick; returns the attempt when the caller now holds it.
/// Parameters: action, tick_ms, node, lease_until_ms, now_ms.
pub(crate) const CLAIM_TICK: &str = "INSERT INTO protosync_schedule_runs
        (action, tick_ms, node, attempt, lease_until_ms, started_at_ms)
    VALUES ($1, $2, $3, 1, $4, $5)
    ON CONFLICT (action, tick_ms) DO UPDATE SET
        node = excluded.node,
        attempt = protosync_schedule_runs.attempt + 1,
        lease_until_ms = excluded.lease_until_ms,
        started_at_ms = excluded.started_at_ms
    WHERE protosync_schedule_runs.finished_at_ms IS NULL
        AND protosync_schedule_runs.lease_until_ms < excluded.started_at_ms
    RETURNING attempt";

/// Records a finished attempt, only by its holder.
/// Parameters: finished_at_ms, outcome, error, action, tick_ms, node, attempt.
pub(crate) const FINISH_TICK: &str = "UPDATE protosync_schedule_runs
    SET finished_at_ms = $1, outcome = $2, error = $3
    WHERE action = $4 AND tick_ms = $5 AND node = $6 AND attempt = $7 AND finished_at_ms IS NULL";

/// The newest runs. Parameter: the limit.
pub(crate) const RUNS: &str =
    "SELECT action, tick_ms, node, attempt, lease_until_ms, started_at_ms,
        finished_at_ms, outcome, error
    FROM protosync_schedule_runs ORDER BY tick_ms DESC, action LIMIT $1";

/// Drops runs of ticks older than the retention. Parameter: the cutoff.
pub(crate) const PRUNE_RUNS: &str = "DELETE FROM protosync_schedule_runs WHERE tick_ms < $1";
