//! Triggers: each committed change of a trigger's collection that matches
//! its filter is forwarded to its action, at least once and in seq order.
//! Every node runs a deliverer per trigger; the store's lease lets one
//! deliver at a time. It reads the change log after the trigger's
//! checkpoint, delivers one change at a time, and moves the checkpoint
//! only after the backend answered (or the change was parked after
//! [`MAX_ATTEMPTS`]); a node that dies mid-delivery leaves the change to
//! the next holder, which sends it again with the same idempotency key.
//! Commits never wait for any of this.

use std::sync::Arc;
use std::time::Duration;

use protosync_auth::Identity;
use protosync_core::Seq;
use protosync_engine::EngineError;
use protosync_query::{Query, QueryRequest, ReadScope};
use protosync_schema::Action;
use protosync_store::{Change, ParkedChange, TriggerClaim};
use serde_json::{Value, json};

use crate::call::Dispatcher;
use crate::schedule::LEASE_MARGIN;

/// Failed deliveries of one change before it is parked and the trigger
/// moves on.
pub const MAX_ATTEMPTS: u32 = 5;

/// The wait after a change's first failed delivery; it doubles after each
/// further failure, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two deliveries of one change.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How long an idle deliverer waits for a commit before it looks again
/// (and renews its lease, or tries to take a dead node's over).
pub const IDLE_POLL: Duration = Duration::from_millis(250);

/// Commits read from the change log at a time.
pub const LOG_PAGE: usize = 100;

/// The idempotency key of one change delivered by one trigger.
pub fn trigger_key(trigger: &str, seq: Seq, id: &str) -> String {
    format!("trigger:{trigger}:{}:{id}", seq.0)
}

/// Runs the triggers of `dispatcher`'s schema as node `node` until dropped.
pub async fn run(dispatcher: Arc<Dispatcher>, node: String) {
    let mut deliverers = tokio::task::JoinSet::new();
    for action in dispatcher.engine().registry().actions() {
        let Some(filter) = compile(&dispatcher, action) else {
            continue;
        };
        let (dispatcher, action, node) = (dispatcher.clone(), action.clone(), node.clone());
        deliverers.spawn(deliver(dispatcher, action, filter, node));
    }
    while deliverers.join_next().await.is_some() {}
}

/// The trigger's filter as a query, or `None` (logged) if it is no trigger
/// or its filter does not fit its collection.
fn compile(dispatcher: &Dispatcher, action: &Action) -> Option<Query> {
    let trigger = action.trigger.as_ref()?;
    let request = json!({"collection": trigger.collection, "filter": trigger.filter});
    let compiled = serde_json::from_value::<QueryRequest>(request)
        .map_err(|e| e.to_string())
        .and_then(|request| {
            let engine = dispatcher.engine();
            Query::compile(
                engine.registry(),
                &request,
                engine.cursor_seal(),
                ReadScope::Everything,
            )
            .map_err(|e| e.to_string())
        });
    match compiled {
        Ok(query) => Some(query),
        Err(error) => {
            tracing::error!(trigger = %action.name, %error, "a trigger's filter does not compile; it does not run");
            None
        }
    }
}

/// Parked changes one retry request sends again, at most.
pub const MAX_RETRY: usize = 100;

/// What a retry of a trigger's parked changes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retried {
    /// Delivered (2xx) and no longer parked.
    pub delivered: usize,
    /// Still parked: the backend failed again.
    pub failed: usize,
    /// Still parked: the change log no longer holds their commit.
    pub gone: usize,
}

/// Sends each of the trigger `name`'s parked changes (up to
/// [`MAX_RETRY`], in seq order) once more, with its own idempotency key,
/// and unparks the delivered ones. The change is read back from the change
/// log, so a change parked longer than the log's retention cannot be
/// retried. `None` if `name` is not a trigger.
pub async fn retry_parked(
    dispatcher: &Dispatcher,
    name: &str,
) -> Result<Option<Retried>, EngineError> {
    let engine = dispatcher.engine();
    let Some(action) = engine.registry().actions().find(|a| a.name == name) else {
        return Ok(None);
    };
    let Some(trigger) = &action.trigger else {
        return Ok(None);
    };
    let collections = [trigger.collection.clone()];
    let mut retried = Retried::default();
    for parked in engine.parked_changes(name, MAX_RETRY).await? {
        let commit = match engine
            .changes(&service(), Seq(parked.seq.0 - 1), Some(&collections), 1)
            .await
        {
            Ok(page) => page.commits.into_iter().find(|c| c.seq == parked.seq),
            Err(EngineError::ChangesTruncated { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(change) = commit
            .as_ref()
            .and_then(|c| c.changes.iter().find(|ch| ch.id == parked.id))
        else {
            retried.gone += 1;
            continue;
        };
        let key = trigger_key(name, parked.seq, &parked.id);
        let answer = dispatcher
            .forward(
                action,
                "trigger",
                Value::Null,
                change_args(parked.seq, change),
                Some(&key),
            )
            .await;
        if answer.is_ok() {
            engine.resolve_parked(name, parked.seq, &parked.id).await?;
            retried.delivered += 1;
        } else {
            retried.failed += 1;
        }
    }
    Ok(Some(retried))
}

/// The identity the trigger reads the change log as.
fn service() -> Identity {
    Identity::Service {
        name: "trigger".into(),
        collections: None,
        jti: None,
        expires_at: None,
    }
}

/// One trigger's delivery loop on this node.
async fn deliver(dispatcher: Arc<Dispatcher>, action: Arc<Action>, filter: Query, node: String) {
    let Some(trigger) = &action.trigger else {
        return;
    };
    let engine = dispatcher.engine().clone();
    let service = service();
    let collections = [trigger.collection.clone()];
    let mut commits = engine.committed();
    loop {
        let Some(checkpoint) = renew(&dispatcher, &action, &node).await else {
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        };
        let page = match engine
            .changes(&service, checkpoint, Some(&collections), LOG_PAGE)
            .await
        {
            Ok(page) => page,
            Err(EngineError::ChangesTruncated { floor }) => {
                tracing::error!(trigger = %action.name, checkpoint = checkpoint.0, floor = floor.0,
                    "a trigger fell behind the change log's floor: it stopped and delivers nothing until an operator moves it");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(trigger = %action.name, error = %e, "reading the change log failed");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        let mut holding = true;
        let mut done = checkpoint;
        for commit in &page.commits {
            let mut parked = Vec::new();
            for change in commit.changes.iter().filter(|c| matches(&filter, c)) {
                match send(&dispatcher, &action, &node, commit.seq, change).await {
                    Sent::Delivered => {}
                    Sent::Failed(change) => parked.push(change),
                    Sent::LostLease => {
                        holding = false;
                        break;
                    }
                }
            }
            // The checkpoint moves per commit: a holder that dies inside
            // one leaves all of its changes to be sent again (same keys).
            holding = holding && advance(&engine, &action.name, &node, commit.seq, parked).await;
            if !holding {
                break;
            }
            done = commit.seq;
        }
        if holding && page.through > done {
            advance(&engine, &action.name, &node, page.through, Vec::new()).await;
        }
        if page.commits.is_empty() {
            let _ = tokio::time::timeout(IDLE_POLL, commits.changed()).await;
        }
    }
}

/// Claims or renews this node's lease on the trigger: its checkpoint while
/// this node holds it. A trigger the store has never seen starts at the
/// head: it delivers the changes committed after it was first run.
async fn renew(dispatcher: &Dispatcher, action: &Action, node: &str) -> Option<Seq> {
    let engine = dispatcher.engine();
    let now = now_ms();
    let lease = (action.timeout + LEASE_MARGIN).as_millis() as i64;
    let start = *engine.committed().borrow();
    let claim = TriggerClaim {
        name: action.name.clone(),
        node: node.to_owned(),
        start,
        now_ms: now,
        lease_until_ms: now + lease,
    };
    engine.claim_trigger(claim).await.unwrap_or_else(|e| {
        tracing::warn!(trigger = %action.name, error = %e, "claiming a trigger failed");
        None
    })
}

/// Whether the trigger delivers a change: its body meets the filter. A
/// delete has no body left to judge, so every delete of the collection is
/// delivered.
fn matches(filter: &Query, change: &Change) -> bool {
    change
        .body
        .as_ref()
        .is_none_or(|body| filter.filter_matches(body))
}

/// How one change's delivery ended.
enum Sent {
    Delivered,
    /// [`MAX_ATTEMPTS`] failures: the change to park.
    Failed(ParkedChange),
    /// Another node took the trigger over: this one stops delivering.
    LostLease,
}

/// Delivers one change, renewing the lease before each attempt and backing
/// off between failures.
async fn send(
    dispatcher: &Dispatcher,
    action: &Action,
    node: &str,
    seq: Seq,
    change: &Change,
) -> Sent {
    let key = trigger_key(&action.name, seq, &change.id);
    let args = change_args(seq, change);
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        if renew(dispatcher, action, node).await.is_none() {
            return Sent::LostLease;
        }
        let error = match dispatcher
            .forward(action, "trigger", Value::Null, args.clone(), Some(&key))
            .await
        {
            Ok(_) => return Sent::Delivered,
            Err(e) => format!("{}: {}", e.code.as_str(), e.message),
        };
        attempts += 1;
        if attempts >= MAX_ATTEMPTS {
            tracing::warn!(trigger = %action.name, seq = seq.0, id = %change.id, %error, "a trigger parked a change");
            return Sent::Failed(ParkedChange {
                name: action.name.clone(),
                seq,
                id: change.id.clone(),
                attempts,
                error,
                parked_at_ms: now_ms(),
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The action's arguments for one change. The change log keeps each
/// document's new body only, so `after` is the body the commit left
/// (null for a delete); version 1 is an insert.
fn change_args(seq: Seq, change: &Change) -> Value {
    let op = match (&change.body, change.version.0) {
        (None, _) => "delete",
        (Some(_), 1) => "insert",
        (Some(_), _) => "update",
    };
    json!({
        "collection": change.collection,
        "id": change.id,
        "op": op,
        "version": change.version.0.to_string(),
        "after": change.body.clone().unwrap_or(Value::Null),
        "seq": seq.0.to_string(),
    })
}

async fn advance(
    engine: &protosync_engine::Engine,
    name: &str,
    node: &str,
    to: Seq,
    parked: Vec<ParkedChange>,
) -> bool {
    engine
        .advance_trigger(name, node, to, parked)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(trigger = %name, error = %e, "moving a trigger's checkpoint failed");
            false
        })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
