//! The scheduler: calls each scheduled action at its cron's ticks, once per
//! cluster. Every node runs one; a tick is claimed in the store (one holder
//! at a time) with a lease of the action's timeout plus [`LEASE_MARGIN`]. A
//! node that dies mid-call leaves its lease to expire, and another node
//! takes the tick over and calls again with the same idempotency key (the
//! tick's), so a backend that honours keys sees each tick's effect once.
//!
//! Catch-up: at start, a schedule whose last recorded tick is followed by
//! missed ticks runs the first of them once (`CATCH_UP_ONCE`) or none
//! (`CATCH_UP_SKIP`), then follows the clock. The scheduler never blocks
//! on a call: each attempt runs in its own task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use protosync_schema::{Action, CatchUp};
use protosync_store::{TickClaim, TickRun};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::call::Dispatcher;

/// Added to an action's timeout to make a tick's lease: a call that ends
/// at its timeout still finishes (and records) within its lease.
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// How often the scheduler looks for abandoned ticks to take over, at most
/// this long between looks.
pub const TAKE_OVER_SCAN: Duration = Duration::from_millis(500);

/// Runs read back per scan for take-overs and catch-up: enough to cover
/// every schedule's recent ticks; older abandoned ticks are left as they are
/// (visible in the history, not retried).
pub const RECENT_RUNS: usize = 1_000;

/// The idempotency key of one tick: the action and the tick's time.
pub fn tick_key(action: &str, tick_ms: i64) -> String {
    format!("schedule:{action}:{tick_ms}")
}

/// Runs the schedules of `dispatcher`'s schema as node `node` until dropped
/// (abort the task to stop it; its calls in flight stop with it).
pub async fn run(dispatcher: Arc<Dispatcher>, node: String) {
    let actions: Vec<Arc<Action>> = dispatcher
        .engine()
        .registry()
        .actions()
        .filter(|a| a.schedule.is_some())
        .cloned()
        .collect();
    if actions.is_empty() {
        return;
    }
    let mut attempts = JoinSet::new();
    let mut next = start_points(&dispatcher, &actions, &node, &mut attempts).await;
    loop {
        let now = now_ms();
        for action in &actions {
            let Some(schedule) = &action.schedule else {
                continue;
            };
            let Some(due) = next.get(&action.name).copied() else {
                continue;
            };
            if due > now {
                continue;
            }
            // After a stall, only the latest due tick runs (as after downtime with skip).
            let mut tick = due;
            while let Some(following) = schedule.next_after(tick).filter(|t| *t <= now) {
                tick = following;
            }
            attempt(&dispatcher, action, tick, &node, &mut attempts);
            if let Some(following) = schedule.next_after(tick) {
                next.insert(action.name.clone(), following);
            } else {
                next.remove(&action.name);
            }
        }
        take_over(&dispatcher, &actions, &node, &mut attempts).await;
        while attempts.try_join_next().is_some() {}
        let soonest = next.values().min().copied().unwrap_or(i64::MAX);
        let wait = (soonest - now_ms()).clamp(0, TAKE_OVER_SCAN.as_millis() as i64);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// Each schedule's next tick, after running its catch-up tick if it has one.
async fn start_points(
    dispatcher: &Arc<Dispatcher>,
    actions: &[Arc<Action>],
    node: &str,
    attempts: &mut JoinSet<()>,
) -> BTreeMap<String, i64> {
    let runs = dispatcher
        .engine()
        .schedule_runs(RECENT_RUNS)
        .await
        .unwrap_or_default();
    let now = now_ms();
    let mut next = BTreeMap::new();
    for action in actions {
        let Some(schedule) = &action.schedule else {
            continue;
        };
        let last = runs
            .iter()
            .filter(|r| r.action == action.name)
            .map(|r| r.tick_ms)
            .max();
        if let (CatchUp::Once, Some(last)) = (schedule.catch_up, last)
            && let Some(missed) = schedule.next_after(last).filter(|t| *t < now)
        {
            attempt(dispatcher, action, missed, node, attempts);
        }
        if let Some(tick) = schedule.next_after(now - 1) {
            next.insert(action.name.clone(), tick);
        }
    }
    next
}

/// Takes over recent ticks whose holder's lease expired unfinished.
async fn take_over(
    dispatcher: &Arc<Dispatcher>,
    actions: &[Arc<Action>],
    node: &str,
    attempts: &mut JoinSet<()>,
) {
    let Ok(runs) = dispatcher.engine().schedule_runs(RECENT_RUNS).await else {
        return;
    };
    let now = now_ms();
    for run in runs {
        if run.finished_at_ms.is_some() || run.lease_until_ms >= now {
            continue;
        }
        if let Some(action) = actions.iter().find(|a| a.name == run.action) {
            attempt(dispatcher, action, run.tick_ms, node, attempts);
        }
    }
}

/// Claims `tick` and, if this node now holds it, calls the backend in a task.
fn attempt(
    dispatcher: &Arc<Dispatcher>,
    action: &Arc<Action>,
    tick_ms: i64,
    node: &str,
    attempts: &mut JoinSet<()>,
) {
    let (dispatcher, action, node) = (dispatcher.clone(), action.clone(), node.to_owned());
    attempts.spawn(async move {
        let now = now_ms();
        let lease = (action.timeout + LEASE_MARGIN).as_millis() as i64;
        let claim = TickClaim {
            action: action.name.clone(),
            tick_ms,
            node: node.clone(),
            now_ms: now,
            lease_until_ms: now + lease,
        };
        let attempt = match dispatcher.engine().claim_tick(claim).await {
            Ok(Some(attempt)) => attempt,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(action = %action.name, tick_ms, error = %e, "claiming a tick failed");
                return;
            }
        };
        let key = tick_key(&action.name, tick_ms);
        // A clock has no arguments to give: the request message's defaults.
        let args = action.validate_args(&json!({})).unwrap_or_else(|_| json!({}));
        let answer = dispatcher
            .forward(&action, "schedule", Value::Null, args, Some(&key))
            .await;
        let (outcome, error) = match &answer {
            Ok(_) => ("ok".to_owned(), None),
            Err(e) => (e.code.as_str().to_owned(), Some(e.message.clone())),
        };
        if let Some(message) = &error {
            tracing::warn!(action = %action.name, tick_ms, attempt, %message, "a scheduled call failed");
        }
        let run = TickRun {
            action: action.name.clone(),
            tick_ms,
            node,
            attempt,
            lease_until_ms: now + lease,
            started_at_ms: now,
            finished_at_ms: None,
            outcome: None,
            error: None,
        };
        if let Err(e) = dispatcher
            .engine()
            .finish_tick(&run, now_ms(), &outcome, error.as_deref())
            .await
        {
            tracing::warn!(action = %action.name, tick_ms, error = %e, "recording a tick failed");
        }
    });
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
