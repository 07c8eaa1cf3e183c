//! Why a call did not return a result, with the code the caller gets.

use protosync_core::ErrorCode;
use protosync_engine::EngineError;

/// A failed call: its stable code (`ACTION_DENIED`, `ACTION_FAILED`, …), a
/// message for a person, and, where they apply, the argument's field and
/// the backend's own code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The code the caller gets.
    pub code: ErrorCode,
    /// What went wrong; for a backend's error answer, the backend's message.
    pub message: String,
    /// For `INVALID_ARGUMENT` (and a result that does not fit): the field.
    pub path: Option<String>,
    /// For `ACTION_FAILED` from a backend's error answer: the backend's code.
    pub backend_code: Option<String>,
}

impl CallError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> CallError {
        CallError {
            code,
            message: message.into(),
            path: None,
            backend_code: None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

impl From<EngineError> for CallError {
    fn from(e: EngineError) -> CallError {
        CallError::new(e.code(), e.to_string())
    }
}
