//! Server-sent events for read-only clients: `GET /v1/subscribe` streams the
//! transitions of one subscription, each event's id its watermark, so a
//! reconnecting EventSource resumes with `Last-Event-ID`.
//!
//! An SSE client cannot say what it holds, so a resume sends the current
//! result as a reset (reason NO_HELD_STATE, or WATERMARK_TOO_OLD) that
//! continues the chain from the client's watermark. WebSocket clients resume
//! with a diff instead.

use protosync_core::ErrorCode;
use std::convert::Infallible;

use axum::extract::{Query as QueryParams, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use protosync_core::{Seq, Watermark};
use protosync_engine::TargetRequest;
use protosync_engine::live::view::ResetReason;
use protosync_protocol::{Codec, Frame};
use serde::Deserialize;

use super::{convert, transition};
use crate::AppState;
use crate::http::error::ApiError;

/// The subscription id SSE events carry.
pub const SSE_SUBSCRIPTION_ID: &str = "main";

/// The query string of `GET /v1/subscribe`: `query`, or `collection` and `id`; and
/// optionally `access_token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// A query as JSON, the shape of POST /v1/query.
    query: Option<String>,
    /// Or one document: collection and id.
    collection: Option<String>,
    id: Option<String>,
    /// A JWT, for EventSource clients that cannot set headers. Never an API
    /// key: query strings end up in access logs and proxies.
    access_token: Option<String>,
}

/// `GET /v1/subscribe`: authenticates (the Authorization header or `access_token`, not
/// both), opens a live view and streams its transitions as `transition` events.
pub async fn subscribe(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    QueryParams(params): QueryParams<Params>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let engine = state.engine.clone();
    let identity = match &params.access_token {
        Some(_) if headers.contains_key(axum::http::header::AUTHORIZATION) => {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "send credentials once: the Authorization header or access_token, not both",
            ));
        }
        Some(token) => state
            .auth
            .jwt_only(token)
            .await
            .map_err(crate::auth_error)?,
        None => state.identity(&headers, peer).await?,
    };
    let request = match (&params.query, &params.collection, &params.id) {
        (Some(text), None, None) => {
            TargetRequest::Query(serde_json::from_str(text).map_err(|e| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("invalid query parameter: {e}"),
                )
            })?)
        }
        (None, Some(collection), Some(id)) => TargetRequest::Get {
            collection: collection.clone(),
            id: id.clone(),
        },
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "pass either query=<JSON query> or collection=…&id=…",
            ));
        }
    };
    let target = engine.target(&identity, &request)?;
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let (start, reason) = match last_event {
        None => (Watermark::ZERO, ResetReason::NewSubscription),
        Some(text) => {
            let claimed = text.parse::<u64>().map(Seq).map_err(|_| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    "Last-Event-ID must be a watermark sent by this server",
                )
            })?;
            let point = engine.resume_point(claimed).await?;
            // An EventSource cannot say what it holds: a resume it may make
            // is still a reset, with this reason.
            (
                point.watermark,
                point.reset.unwrap_or(ResetReason::NoHeldState),
            )
        }
    };
    // A stream ends when its token expires, at `exp` exactly: the leeway is
    // for checking a token's claims, not for keeping it past its end. The
    // client reconnects with a fresh one.
    let expiry = identity.expires_at();
    if expiry.is_some_and(super::has_passed) {
        // Accepted within the leeway, but past its `exp`: a live stream
        // would end before its first event.
        return Err(crate::auth_error(protosync_auth::AuthError {
            code: ErrorCode::TokenExpired,
            message: "the token has expired".into(),
        })
        .into());
    }
    let mut view = engine.open_view(start);
    view.subscribe(SSE_SUBSCRIPTION_ID.to_owned(), target, None, reason)
        .await?;
    let keep_alive = KeepAlive::new().interval(state.sync.heartbeat_interval);
    let closing = state.closing.clone();
    let stream = futures::stream::unfold(
        (view, closing, false),
        move |(mut view, mut closing, done)| async move {
            if done {
                return None;
            }
            loop {
                if expiry.is_some_and(super::has_passed) {
                    return Some((Ok(expired_event()), (view, closing, true)));
                }
                if view.has_news() {
                    let event = match view.advance(Seq::ZERO, false).await {
                        Ok(Some(plan)) => transition_event(&plan),
                        Ok(None) => continue,
                        Err(e) => {
                            let error = convert::error(&e, "", SSE_SUBSCRIPTION_ID);
                            return Some((
                                Ok(Event::default().event("error").data(json_of(&error))),
                                (view, closing, true),
                            ));
                        }
                    };
                    return Some((Ok(event), (view, closing, false)));
                }
                tokio::select! {
                    _ = view.news() => {}
                    _ = async { closing.wait_for(|c| *c).await.is_ok() } => return None,
                    _ = super::sleep_until_epoch(expiry), if expiry.is_some() => {
                        return Some((Ok(expired_event()), (view, closing, true)));
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(keep_alive))
}

fn expired_event() -> Event {
    let expired = convert::error_message(
        ErrorCode::TokenExpired,
        "the token expired; reconnect with a fresh one",
        "",
        SSE_SUBSCRIPTION_ID,
        String::new(),
    );
    Event::default().event("error").data(json_of(&expired))
}

fn transition_event(plan: &protosync_engine::live::view::TransitionPlan) -> Event {
    let Some(Frame::Text(text)) = transition::frames(plan, Codec::Json, usize::MAX)
        .into_iter()
        .next()
    else {
        unreachable!("one JSON chunk")
    };
    Event::default()
        .id(plan.to.to_string())
        .event("transition")
        .data(text)
}

fn json_of(message: &protosync_protocol::wire::ServerMessage) -> String {
    match Codec::Json.encode_server(message) {
        Frame::Text(text) => text,
        Frame::Binary(_) => unreachable!("the JSON codec makes text"),
    }
}
