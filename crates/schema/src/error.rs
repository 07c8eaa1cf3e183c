use std::fmt;

/// Why a schema could not be loaded. Each variant names the file and, where the
/// compiler knows it, the line, so the message can be acted on directly.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema directory {dir}: {reason}")]
    Directory { dir: String, reason: String },
    #[error("schema directory {dir} contains no .proto files")]
    Empty { dir: String },
    #[error("{location}: {message}")]
    Compile { location: String, message: String },
    #[error("{location}: collection {collection}: {kind} rule: {message}")]
    Rule {
        location: String,
        collection: String,
        kind: String,
        message: String,
    },
    #[error("collection {collection} (message {message}): {problem}")]
    Collection {
        collection: String,
        message: String,
        problem: String,
    },
}

/// Why a document does not fit its message type. `path` names the offending
/// field in JSON notation (`owner.id`, `labels["k"]`, `items[3].name`), empty
/// for the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub path: String,
    pub message: String,
}

impl DocumentError {
    pub(crate) fn at(path: &str, message: impl Into<String>) -> Self {
        DocumentError {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DocumentError {}
