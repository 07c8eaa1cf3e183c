//! Projection routes (docs/projections.md): a projector's batch, its
//! checkpoint, the drift check and rebuilds. The engine decides; this only reads
//! requests and shapes answers.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use protosync_core::ErrorCode;
use protosync_engine::projection::{DriftRequest, ProjectionRequest};
use protosync_store::Rebuild;
use serde_json::{Value, json};

use super::error::ApiError;
use super::handlers::{parse, request_id};
use crate::AppState;

type Answer = Result<Json<Value>, ApiError>;

fn projector(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(projector) = path.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    Ok(projector)
}

/// `POST /v1/projections/{projector}/apply`
pub(super) async fn apply(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let projector = projector(path)?;
    let request: ProjectionRequest = parse(body, ErrorCode::InvalidDocument)?;
    let outcome = state
        .engine
        .apply_projection(&identity, &projector, &request, request_id(&headers))
        .await?;
    let documents: Vec<Value> = outcome
        .documents
        .iter()
        .map(|d| {
            json!({"collection": d.collection, "id": d.id, "status": d.status,
                   "version": d.version.to_string(), "hash": d.hash})
        })
        .collect();
    Ok(Json(
        json!({"seq": outcome.seq.to_string(), "documents": documents}),
    ))
}

/// `GET /v1/projections/{projector}`
pub(super) async fn checkpoint(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let projector = projector(path)?;
    let checkpoint = state
        .engine
        .checkpoint(&identity, &projector)
        .await?
        .unwrap_or_default();
    let rebuild = state.engine.rebuild(&identity, &projector, false).await?;
    Ok(Json(json!({
        "rebuild": rebuild.as_ref().map(rebuild_json),
        "projector": projector,
        "sourceSeq": checkpoint.source_seq.to_string(),
        "updatedAtMs": checkpoint.updated_at_ms.to_string(),
        "documents": checkpoint.documents.to_string(),
        "applied": checkpoint.applied.to_string(),
        "stale": checkpoint.stale.to_string(),
        "unchanged": checkpoint.unchanged.to_string(),
    })))
}

/// `POST /v1/projections/{projector}/drift`
pub(super) async fn drift(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let projector = projector(path)?;
    let request: DriftRequest = parse(body, ErrorCode::BadRequest)?;
    let report = state.engine.drift(&identity, &projector, &request).await?;
    Ok(Json(serde_json::to_value(report).map_err(|e| {
        ApiError::new(ErrorCode::Internal, e.to_string())
    })?))
}

fn rebuild_json(rebuild: &Rebuild) -> Value {
    json!({
        "generation": rebuild.generation.to_string(),
        "startedAtMs": rebuild.started_at_ms.to_string(),
        "sourceSeq": rebuild.source_seq.to_string(),
        "staged": rebuild.staged.to_string(),
    })
}

fn generation(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, u64), ApiError> {
    let Path((projector, generation)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let generation = generation.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("a rebuild generation is a uint64, got {generation:?}"),
        )
    })?;
    Ok((projector, generation))
}

/// `POST /v1/projections/{projector}/rebuild`: starts a rebuild, or
/// answers the one in progress (to resume it).
pub(super) async fn start_rebuild(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let projector = projector(path)?;
    let rebuild = state.engine.rebuild(&identity, &projector, true).await?;
    Ok(Json(rebuild.as_ref().map(rebuild_json).unwrap_or_default()))
}

/// `POST /v1/projections/{projector}/rebuild/{generation}/stage`
pub(super) async fn stage(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let (projector, generation) = generation(path)?;
    let request: ProjectionRequest = parse(body, ErrorCode::InvalidDocument)?;
    let rebuild = state
        .engine
        .stage(&identity, &projector, generation, &request)
        .await?;
    Ok(Json(rebuild_json(&rebuild)))
}

/// `POST /v1/projections/{projector}/rebuild/{generation}/swap`
pub(super) async fn swap(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let (projector, generation) = generation(path)?;
    let swapped = state.engine.swap(&identity, &projector, generation).await?;
    Ok(Json(json!({
        "seq": swapped.seq.to_string(),
        "applied": swapped.applied.to_string(),
        "unchanged": swapped.unchanged.to_string(),
    })))
}

/// `DELETE /v1/projections/{projector}/rebuild/{generation}`
pub(super) async fn abandon(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let (projector, generation) = generation(path)?;
    state
        .engine
        .abandon_rebuild(&identity, &projector, generation)
        .await?;
    Ok(Json(json!({"abandoned": generation.to_string()})))
}
