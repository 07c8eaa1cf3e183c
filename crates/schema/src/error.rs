use std::fmt;

/// Why a schema could not be loaded. Each variant names the file and, where the
/// compiler knows it, the line, so the message can be acted on directly.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The schema directory, or a file in it, cannot be read.
    #[error("cannot read schema directory {dir}: {reason}")]
    Directory {
        /// The directory given.
        dir: String,
        /// The I/O error.
        reason: String,
    },
    /// The schema directory has no `.proto` file at all.
    #[error("schema directory {dir} contains no .proto files")]
    Empty {
        /// The directory given.
        dir: String,
    },
    /// The schema a database recorded cannot be decoded.
    #[error("the database's recorded schema cannot be read: {reason}")]
    Recorded {
        /// The decoder's message.
        reason: String,
    },
    /// The `.proto` files do not compile.
    #[error("{location}: {message}")]
    Compile {
        /// `file:line:column`, or just the file when the compiler gives no position.
        location: String,
        /// The compiler's message.
        message: String,
    },
    /// A read or write rule does not fit the schema: an unknown field, collection or
    /// function, or a comparison that can never hold.
    #[error("{location}: collection {collection}: {kind} rule: {message}")]
    Rule {
        /// `file:line:column` of the offending part of the rule, or just the file.
        location: String,
        /// The collection whose rule it is.
        collection: String,
        /// `read` or `write`.
        kind: String,
        /// What is wrong, for a person.
        message: String,
    },
    /// A message's `protosync.v1.collection` option is wrong: a bad or taken name, a bad
    /// index, a rule that does not compile.
    #[error("collection {collection} (message {message}): {problem}")]
    Collection {
        /// The collection's name as declared.
        collection: String,
        /// The full name of the message that declares it.
        message: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An rpc's `protosync.v1.action` option is wrong: no backend, a bad
    /// timeout, a rule that does not compile or does not fit the arguments.
    #[error("action {action}: {problem}")]
    Action {
        /// `<full service name>/<Method>`.
        action: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Why a document does not fit its message type. `path` names the offending
/// field in JSON notation (`owner.id`, `labels["k"]`, `items[3].name`), empty
/// for the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// The offending field in JSON notation; empty for the whole document.
    pub path: String,
    /// What is wrong with it, for a person.
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
