//! Every error answer is `{"error": {"code", "message", "path"?}}` with the
//! HTTP status its code declares (`protosync_core::ErrorCode`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protosync_core::ErrorCode;
use protosync_engine::EngineError;
use serde_json::json;

pub struct ApiError {
    code: ErrorCode,
    message: String,
    /// For invalid documents: the offending field.
    path: Option<String>,
    /// For `CHANGES_TRUNCATED`: the oldest seq the feed can start after.
    floor: Option<protosync_core::Seq>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            path: None,
            floor: None,
        }
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let path = match &e {
            EngineError::InvalidDocument { error, .. } => Some(error.path.clone()),
            _ => None,
        };
        let floor = match &e {
            EngineError::ChangesTruncated { floor } => Some(*floor),
            _ => None,
        };
        let error = ApiError {
            code: e.code(),
            message: e.to_string(),
            path,
            floor,
        };
        if error.status().is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(path) = self.path {
            error["path"] = json!(path);
        }
        if let Some(floor) = self.floor {
            error["floor"] = json!(floor.to_string());
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}
