//! Every error answer is `{"error": {"code", "message", "path"?}}` with a
//! status that fits the code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protosync_engine::EngineError;
use serde_json::json;

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For invalid documents: the offending field.
    path: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            path: None,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::BadRequest(_)
            | EngineError::InvalidDocument { .. }
            | EngineError::InvalidQuery(_)
            | EngineError::InvalidCursor(_)
            | EngineError::DuplicateSubscription(_) => StatusCode::BAD_REQUEST,
            EngineError::UnknownCollection(_)
            | EngineError::NotFound { .. }
            | EngineError::UnknownSubscription(_) => StatusCode::NOT_FOUND,
            EngineError::AlreadyExists { .. } | EngineError::VersionConflict { .. } => {
                StatusCode::CONFLICT
            }
            EngineError::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            EngineError::Forbidden { code, .. } => match *code {
                "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
                "PERMISSION_DENIED" | "ORIGIN_NOT_ALLOWED" => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            },
            EngineError::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        let path = match &e {
            EngineError::InvalidDocument { error, .. } => Some(error.path.clone()),
            _ => None,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
            path,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(path) = self.path {
            error["path"] = json!(path);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}
