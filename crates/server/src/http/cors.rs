//! Browser access: the `Origin` allow-list and CORS, for every route.
//!
//! One list (`[auth] allowed_origins`) decides which web pages may call the
//! server, on HTTP, SSE and the WebSocket alike. A request whose `Origin` is
//! not on it is refused before it reaches a handler: a browser sends some
//! cross-site requests without asking first (a `text/plain` POST), so
//! leaving the refusal to the browser's CORS check would still let them run.
//! Requests without `Origin` (servers, scripts, native apps) pass.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protosync_core::ErrorCode;

use super::error::ApiError;
use crate::AppState;

/// Request headers a page may send cross-origin.
const ALLOWED_HEADERS: &str = "authorization, content-type, last-event-id";
const ALLOWED_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE_SECONDS: &str = "600";

pub(super) async fn origins(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|origin| state.auth.origin_allowed(Some(origin)));
    if !allowed {
        return ApiError::new(
            ErrorCode::OriginNotAllowed,
            format!(
                "origin {:?} is not allowed",
                String::from_utf8_lossy(origin.as_bytes())
            ),
        )
        .into_response();
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECONDS),
        );
        response
    } else {
        next.run(request).await
    };
    allow(response.headers_mut(), origin);
    response
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}
