//! HTTP routes (docs/http-api.md).

mod changes;
mod cors;
pub(crate) mod error;
mod handlers;
pub(crate) mod metrics;
mod projections;
mod triggers;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use protosync_engine::limits::MAX_REQUEST_BYTES;

use crate::AppState;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/mutate", post(handlers::mutate))
        .route("/v1/query", post(handlers::query))
        .route(
            "/v1/collections/{collection}/docs/{id}",
            get(handlers::get_document),
        )
        .route(
            "/v1/collections/{collection}/docs/{id}/history",
            get(handlers::history),
        )
        .route("/v1/auth/revoke", post(handlers::revoke))
        .route("/v1/changes", get(changes::changes))
        .route("/v1/projections/{projector}", get(projections::checkpoint))
        .route(
            "/v1/projections/{projector}/apply",
            post(projections::apply),
        )
        .route(
            "/v1/projections/{projector}/drift",
            post(projections::drift),
        )
        .route(
            "/v1/projections/{projector}/rebuild",
            post(projections::start_rebuild),
        )
        .route(
            "/v1/projections/{projector}/rebuild/{generation}",
            delete(projections::abandon),
        )
        .route(
            "/v1/projections/{projector}/rebuild/{generation}/stage",
            post(projections::stage),
        )
        .route(
            "/v1/projections/{projector}/rebuild/{generation}/swap",
            post(projections::swap),
        )
        .route("/v1/schedules", get(handlers::schedules))
        .route("/v1/triggers", get(triggers::list))
        .route(
            "/v1/triggers/{service}/{method}/retry",
            post(triggers::retry),
        )
        .route(
            "/v1/actions/{service}/{method}",
            post(handlers::call_action),
        )
        .route("/v1/sync", get(crate::sync::upgrade))
        .route("/v1/subscribe", get(crate::sync::sse::subscribe))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(handlers::unknown_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::origins,
        ))
        .with_state(state)
}
