//! Every error answer is `{"error": {"code", "message", "path"?, "backendCode"?}}` with the
//! HTTP status its code declares (`protosync_core::ErrorCode`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protosync_core::ErrorCode;
use protosync_dispatch::CallError;
use protosync_engine::EngineError;
use serde_json::json;

pub struct ApiError {
    code: ErrorCode,
    message: String,
    /// For invalid documents and arguments: the offending field.
    path: Option<String>,
    /// For `CHANGES_TRUNCATED`: the oldest seq the feed can start after.
    floor: Option<protosync_core::Seq>,
    /// For `ACTION_FAILED` from a backend's error answer: its own code.
    backend_code: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            path: None,
            floor: None,
            backend_code: None,
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
            backend_code: None,
        };
        if error.status().is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        error
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        if e.code == ErrorCode::Internal {
            tracing::error!(error = %e, "call failed");
        }
        ApiError {
            code: e.code,
            message: e.message,
            path: e.path,
            floor: None,
            backend_code: e.backend_code,
        }
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
        if let Some(code) = self.backend_code {
            error["backendCode"] = json!(code);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}
