use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use protosync_core::ErrorCode;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use protosync_core::StoredDocument;
use protosync_dispatch::CallRequest;
use protosync_engine::limits::{MAX_JSON_DEPTH, MAX_REQUEST_BYTES, json_too_deep};
use protosync_engine::{Engine, Identity, MutationRequest};
use protosync_query::QueryRequest;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::AppState;

type Answer = Result<Json<Value>, ApiError>;

/// Parses a JSON body, answering in our error format instead of axum's.
/// JSON nested deeper than the limit is refused with `too_deep`'s code
/// before any parser recurses into it.
pub(super) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    too_deep: ErrorCode,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::LimitExceeded,
                format!("the request body is larger than {MAX_REQUEST_BYTES} bytes"),
            )
        } else {
            ApiError::new(ErrorCode::BadRequest, rejection.body_text())
        }
    })?;
    if json_too_deep(&bytes) {
        return Err(ApiError::new(
            too_deep,
            format!("the request nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid request body: {e}")))
}

pub(super) async fn mutate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let request: MutationRequest = parse(body, ErrorCode::InvalidDocument)?;
    let outcome = state
        .engine
        .mutate(&identity, &request, request_id(&headers))
        .await?;
    let results: Vec<Value> = outcome
        .results
        .iter()
        .map(|r| json!({"id": r.id, "version": r.version.to_string()}))
        .collect();
    let mut answer = json!({"seq": outcome.seq.to_string(), "results": results});
    if outcome.duplicate {
        answer["duplicate"] = json!(true);
    }
    Ok(Json(answer))
}

/// The caller's `X-Request-Id`, kept with its commit for the change feed;
/// `None` when absent or not visible ASCII.
pub(super) fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

pub(super) async fn query(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let request: QueryRequest = parse(body, ErrorCode::InvalidQuery)?;
    let read = state.engine.query(&identity, &request).await?;
    let documents: Vec<Value> = read
        .value
        .documents
        .iter()
        .map(|d| json!({"id": d.id, "version": d.version.to_string(), "doc": d.body}))
        .collect();
    let mut answer = json!({"seq": read.seq.to_string(), "documents": documents});
    if let Some(cursor) = read.value.next_cursor {
        answer["nextCursor"] = json!(cursor);
    }
    Ok(Json(answer))
}

pub(super) async fn get_document(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let Path((collection, id)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let read = state.engine.get(&identity, &collection, &id).await?;
    let StoredDocument {
        id, version, body, ..
    } = read.value;
    Ok(Json(
        json!({"id": id, "version": version.to_string(), "seq": read.seq.to_string(), "doc": body}),
    ))
}

/// `POST /v1/actions/{service}/{method}` with `{"args", "idempotencyKey"?}`:
/// the action's result, and the seq of the backend's writes when it gave one.
pub(super) async fn call_action(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let Path((service, method)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Call {
        #[serde(default = "empty_object")]
        args: Value,
        #[serde(default)]
        idempotency_key: Option<String>,
    }
    fn empty_object() -> Value {
        json!({})
    }
    let call: Call = parse(body, ErrorCode::InvalidArgument)?;
    let request = CallRequest {
        action: format!("{service}/{method}"),
        args: call.args,
        idempotency_key: call.idempotency_key,
    };
    let outcome = state.actions.call(&identity, &request).await?;
    let mut answer = json!({"result": outcome.result});
    if let Some(seq) = outcome.seq {
        answer["seq"] = json!(seq.to_string());
    }
    if outcome.duplicate {
        answer["duplicate"] = json!(true);
    }
    Ok(Json(answer))
}

/// `GET /v1/collections/{collection}/docs/{id}/history?after=SEQ`
pub(super) async fn history(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<axum::extract::Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let Path((collection, id)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let axum::extract::Query(params) =
        query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let after = match params.after.as_deref() {
        None => 0,
        Some(text) => text.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("after must be a seq (uint64), got {text:?}"),
            )
        })?,
    };
    let versions = state
        .engine
        .history(&identity, &collection, &id, protosync_core::Seq(after))
        .await?;
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut entry = json!({"version": v.version.to_string(), "seq": v.seq.to_string(),
                "committedAtMs": v.committed_at_ms.to_string(), "actor": v.actor});
            match &v.body {
                Some(body) => entry["doc"] = body.clone(),
                None => entry["deleted"] = json!(true),
            }
            entry
        })
        .collect();
    Ok(Json(json!({"id": id, "versions": versions})))
}

/// `?after=SEQ` of a history read.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryParams {
    #[serde(default)]
    after: Option<String>,
}

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(engine): State<Arc<Engine>>) -> Answer {
    let seq = engine.ready().await?;
    Ok(Json(json!({
        "status": "ready",
        "seq": seq.to_string(),
        "schemaFingerprint": engine.registry().fingerprint(),
    })))
}

/// `{"jti": "…", "expiresAt": …}`: refuse this token from now on, on every
/// node of the database (crate::revocations), including on live
/// connections (which lose it within a heartbeat). Services with access to
/// every collection only. Recorded in the store before it is answered: a
/// revocation that could not be stored is an error, never a silent
/// this-process-only one.
pub(super) async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let identity = state.identity(&headers, peer).await?;
    let everything = match &identity {
        Identity::Service {
            collections: None, ..
        } => true,
        Identity::Service {
            collections: Some(allowed),
            ..
        } => allowed.iter().any(|c| c == "*"),
        _ => false,
    };
    if !everything {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only a service with access to every collection may revoke tokens",
        ));
    }
    /// Seconds since the epoch, as a JSON number or a decimal string (the
    /// proto3 JSON forms of a uint64).
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum EpochSeconds {
        Number(u64),
        Text(String),
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Revoke {
        jti: String,
        /// The token's `exp`: once it (plus the leeway) has passed, the
        /// token cannot be valid and the revocation may be pruned. Absent:
        /// kept for good.
        #[serde(default)]
        expires_at: Option<EpochSeconds>,
    }
    let request: Revoke = parse(body, ErrorCode::BadRequest)?;
    let expires_at = match request.expires_at {
        None => None,
        Some(EpochSeconds::Number(seconds)) => Some(seconds),
        Some(EpochSeconds::Text(text)) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("expiresAt must be seconds since the epoch, got {text:?}"),
            )
        })?),
    };
    let keep_until_ms = expires_at.map(|exp| state.auth.revocation_needed_until_ms(exp));
    let stored = state.engine.revoke(&request.jti, keep_until_ms).await?;
    state
        .auth
        .remember_revocation(&stored.jti, stored.keep_until_ms);
    Ok(Json(json!({"revoked": stored.jti})))
}

pub(super) async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
