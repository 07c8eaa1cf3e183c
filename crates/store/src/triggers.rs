//! Trigger delivery state, the same SQL for both stores: one row per
//! trigger (its checkpoint, the seq up to which every change was delivered
//! or parked, and the node holding its lease) and the parked changes. The
//! claim is an upsert that only takes the row from another node once its
//! lease has expired, so one node delivers a trigger at a time; only the
//! holder moves the checkpoint. Nothing here touches documents or commits.

use protosync_core::Seq;

/// A node's claim on a trigger, until its lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerClaim {
    /// The trigger's name.
    pub name: String,
    /// The claiming node.
    pub node: String,
    /// Where a trigger the store has never seen starts (its first claim).
    pub start: Seq,
    /// Now, by the claiming node's clock (milliseconds since the epoch).
    pub now_ms: i64,
    /// Until when the claim holds; after it, another node may take over.
    pub lease_until_ms: i64,
}

/// A trigger's delivery state as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerState {
    /// The trigger's name.
    pub name: String,
    /// Every change up to this seq was delivered or parked.
    pub checkpoint: Seq,
    /// The node holding (or that last held) the lease.
    pub node: String,
    /// When that lease ends (milliseconds since the epoch).
    pub lease_until_ms: i64,
}

/// A change a trigger gave up on after its retries, kept until retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedChange {
    /// The trigger's name.
    pub name: String,
    /// The commit that made the change.
    pub seq: Seq,
    /// The changed document's id.
    pub id: String,
    /// How many deliveries failed.
    pub attempts: u32,
    /// The last failure's message.
    pub error: String,
    /// When it was parked (milliseconds since the epoch).
    pub parked_at_ms: i64,
}

/// Claims (or renews) a trigger's lease; returns its checkpoint when the
/// caller now holds it. Parameters: name, start, node, lease_until_ms, now_ms.
pub(crate) const CLAIM_TRIGGER: &str = "INSERT INTO protosync_trigger_state
        (name, checkpoint, node, lease_until_ms)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (name) DO UPDATE SET
        node = excluded.node,
        lease_until_ms = excluded.lease_until_ms
    WHERE protosync_trigger_state.node = excluded.node
        OR protosync_trigger_state.lease_until_ms < $5
    RETURNING checkpoint";

/// Moves a checkpoint forward, only by the lease's holder.
/// Parameters: checkpoint, name, node.
pub(crate) const ADVANCE_TRIGGER: &str = "UPDATE protosync_trigger_state SET checkpoint = $1
    WHERE name = $2 AND node = $3 AND checkpoint < $1";

/// Parks a change. Parameters: name, seq, id, attempts, error, parked_at_ms.
pub(crate) const PARK_CHANGE: &str = "INSERT INTO protosync_trigger_parked
        (name, seq, id, attempts, error, parked_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (name, seq, id) DO NOTHING";

/// Every trigger's state.
pub(crate) const TRIGGER_STATES: &str =
    "SELECT name, checkpoint, node, lease_until_ms FROM protosync_trigger_state ORDER BY name";

/// A trigger's parked changes in seq order. Parameters: name, limit.
pub(crate) const PARKED: &str = "SELECT name, seq, id, attempts, error, parked_at_ms
    FROM protosync_trigger_parked WHERE name = $1 ORDER BY seq, id LIMIT $2";

/// Drops a parked change once delivered. Parameters: name, seq, id.
pub(crate) const RESOLVE_PARKED: &str =
    "DELETE FROM protosync_trigger_parked WHERE name = $1 AND seq = $2 AND id = $3";
