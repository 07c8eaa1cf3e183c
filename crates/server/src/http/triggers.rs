//! `/v1/triggers`: each trigger's delivery state, and retrying its parked
//! changes. Services only: it names nodes and backend errors.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use protosync_core::ErrorCode;
use protosync_dispatch::trigger::{self, MAX_RETRY};
use protosync_engine::Identity;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::AppState;

type Answer = Result<Json<Value>, ApiError>;

async fn require_service(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    match state.identity(headers, peer).await? {
        Identity::Service { .. } => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only services may read or retry triggers",
        )),
    }
}

/// `GET /v1/triggers`: per trigger its checkpoint, lag behind the head,
/// holder, whether it fell behind the change log's floor, and up to
/// [`MAX_RETRY`] parked changes.
pub(super) async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Answer {
    require_service(&state, &headers, peer).await?;
    let engine = &state.engine;
    let head = *engine.committed().borrow();
    let floor = engine.log_floor().await?;
    let states = engine.trigger_states().await?;
    let mut triggers = Vec::new();
    for action in engine.registry().actions() {
        let Some(declared) = &action.trigger else {
            continue;
        };
        let mut entry = json!({
            "name": action.name,
            "collection": declared.collection,
            "filter": declared.filter,
            "status": "starting",
        });
        if let Some(stored) = states.iter().find(|s| s.name == action.name) {
            let parked: Vec<Value> = engine
                .parked_changes(&action.name, MAX_RETRY)
                .await?
                .iter()
                .map(|p| {
                    json!({
                        "seq": p.seq.0.to_string(),
                        "id": p.id,
                        "attempts": p.attempts,
                        "error": p.error,
                        "parkedAtMs": p.parked_at_ms.to_string(),
                    })
                })
                .collect();
            entry["checkpoint"] = json!(stored.checkpoint.0.to_string());
            entry["lag"] = json!(head.0.saturating_sub(stored.checkpoint.0).to_string());
            entry["node"] = json!(stored.node);
            entry["leaseUntilMs"] = json!(stored.lease_until_ms.to_string());
            entry["status"] = json!(if stored.checkpoint < floor {
                "behind_floor"
            } else {
                "running"
            });
            entry["parked"] = json!(parked);
        }
        triggers.push(entry);
    }
    Ok(Json(json!({
        "head": head.0.to_string(),
        "floor": floor.0.to_string(),
        "triggers": triggers,
    })))
}

/// `POST /v1/triggers/{service}/{method}/retry`: sends the trigger's parked
/// changes once more (see [`trigger::retry_parked`]).
pub(super) async fn retry(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((service, method)): Path<(String, String)>,
) -> Answer {
    require_service(&state, &headers, peer).await?;
    let name = format!("{service}/{method}");
    let retried = trigger::retry_parked(&state.actions, &name)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no trigger named {name:?}")))?;
    Ok(Json(json!({
        "delivered": retried.delivered,
        "failed": retried.failed,
        "gone": retried.gone,
    })))
}
