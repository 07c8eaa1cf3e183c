use protosync_query::QueryError;
use protosync_schema::DocumentError;
use protosync_store::{Rejection, StoreError, Version};

/// Every error a client can see, each with a stable code (docs/http-api.md).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    #[error("{location}invalid document: {error}")]
    InvalidDocument {
        location: String,
        error: DocumentError,
    },
    #[error("{location}{collection}/{id} not found")]
    NotFound {
        location: String,
        collection: String,
        id: String,
    },
    #[error("{location}{collection}/{id} already exists")]
    AlreadyExists {
        location: String,
        collection: String,
        id: String,
    },
    #[error("{location}{collection}/{id}: expected version {expected}, found {}", actual.map_or("no document".to_owned(), |v| format!("version {v}")))]
    VersionConflict {
        location: String,
        collection: String,
        id: String,
        expected: Version,
        actual: Option<Version>,
    },
    #[error("{location}{collection}/{id}: permission denied by the collection's write rule")]
    PermissionDenied {
        location: String,
        collection: String,
        id: String,
    },
    /// The caller is not allowed at all (no or bad credentials, a service
    /// key for another collection, a blocked origin…), with its own code.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{0}")]
    LimitExceeded(String),
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    #[error("subscription {0:?} already exists on this connection")]
    DuplicateSubscription(String),
    #[error("no subscription {0:?} on this connection")]
    UnknownSubscription(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::BadRequest(_) => "BAD_REQUEST",
            EngineError::UnknownCollection(_) => "UNKNOWN_COLLECTION",
            EngineError::InvalidDocument { .. } => "INVALID_DOCUMENT",
            EngineError::NotFound { .. } => "NOT_FOUND",
            EngineError::AlreadyExists { .. } => "ALREADY_EXISTS",
            EngineError::VersionConflict { .. } => "VERSION_CONFLICT",
            EngineError::PermissionDenied { .. } => "PERMISSION_DENIED",
            EngineError::Forbidden { code, .. } => code,
            EngineError::LimitExceeded(_) => "LIMIT_EXCEEDED",
            EngineError::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            EngineError::InvalidQuery(_) => "INVALID_QUERY",
            EngineError::InvalidCursor(_) => "INVALID_CURSOR",
            EngineError::DuplicateSubscription(_) => "DUPLICATE_SUBSCRIPTION",
            EngineError::UnknownSubscription(_) => "UNKNOWN_SUBSCRIPTION",
            EngineError::Unavailable(_) => "UNAVAILABLE",
            EngineError::Internal(_) => "INTERNAL",
        }
    }
}

pub(crate) fn op_location(op: usize) -> String {
    format!("ops[{op}]: ")
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected {
                op,
                collection,
                id,
                rejection,
            } => {
                let location = op_location(op);
                match rejection {
                    Rejection::NotFound => EngineError::NotFound {
                        location,
                        collection,
                        id,
                    },
                    Rejection::AlreadyExists => EngineError::AlreadyExists {
                        location,
                        collection,
                        id,
                    },
                    Rejection::VersionConflict { expected, actual } => {
                        EngineError::VersionConflict {
                            location,
                            collection,
                            id,
                            expected,
                            actual,
                        }
                    }
                    Rejection::InvalidDocument(error) => {
                        EngineError::InvalidDocument { location, error }
                    }
                    Rejection::PermissionDenied => EngineError::PermissionDenied {
                        location,
                        collection,
                        id,
                    },
                    Rejection::DocumentTooLarge { bytes, limit } => {
                        EngineError::LimitExceeded(format!(
                            "{location}{collection}/{id} would be {bytes} bytes; documents are limited to {limit} bytes"
                        ))
                    }
                }
            }
            StoreError::IdempotencyKeyReused(key) => EngineError::IdempotencyKeyReused(key),
            StoreError::LogTruncated { floor } => {
                EngineError::Internal(format!("change log truncated at {floor}"))
            }
            StoreError::InvalidJti(m) => EngineError::BadRequest(format!("invalid jti: {m}")),
            StoreError::Unavailable(m) => EngineError::Unavailable(m),
            StoreError::Internal(m) => EngineError::Internal(m),
        }
    }
}

impl From<QueryError> for EngineError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::UnknownCollection(name) => EngineError::UnknownCollection(name),
            QueryError::Invalid(m) => EngineError::InvalidQuery(m),
            QueryError::InvalidCursor(m) => EngineError::InvalidCursor(m),
        }
    }
}
