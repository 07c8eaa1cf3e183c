use protosync_core::ErrorCode;
use protosync_core::{Seq, Version};
use protosync_query::QueryError;
use protosync_schema::DocumentError;
use protosync_store::{Rejection, StoreError};

/// Every error a client can see, each with a stable code (docs/http-api.md): the variant
/// names its [`ErrorCode`] (see [`EngineError::code`]). `location` fields are `ops[i]: ` for
/// an error in a mutation's i-th op, and empty otherwise; messages start with them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// `BAD_REQUEST`: the request does not have the shape the API expects.
    #[error("{0}")]
    BadRequest(String),
    /// `UNKNOWN_COLLECTION`: the named collection is not in the schema.
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    /// `INVALID_DOCUMENT`: a document, a patch or a patch's result does not fit its message.
    #[error("{location}invalid document: {error}")]
    InvalidDocument {
        /// Which op, or empty.
        location: String,
        /// What does not fit, with the field's path.
        error: DocumentError,
    },
    /// `NOT_FOUND`: a patch or delete of a document that does not exist.
    #[error("{location}{collection}/{id} not found")]
    NotFound {
        /// Which op, or empty.
        location: String,
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
    },
    /// `ALREADY_EXISTS`: an insert of an id that is taken.
    #[error("{location}{collection}/{id} already exists")]
    AlreadyExists {
        /// Which op, or empty.
        location: String,
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
    },
    /// `VERSION_CONFLICT`: an op's expected version is not the document's.
    #[error("{location}{collection}/{id}: expected version {expected}, found {}", actual.map_or("no document".to_owned(), |v| format!("version {v}")))]
    VersionConflict {
        /// Which op, or empty.
        location: String,
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
        /// The version the op expected.
        expected: Version,
        /// The version the document has; `None` when there is no document.
        actual: Option<Version>,
    },
    /// `PERMISSION_DENIED`: the collection's write rule refused this write.
    #[error("{location}{collection}/{id}: permission denied by the collection's write rule")]
    PermissionDenied {
        /// Which op, or empty.
        location: String,
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
    },
    /// The caller is not allowed at all (no or bad credentials, a service
    /// key for another collection, a blocked origin…), with its own code.
    #[error("{message}")]
    Forbidden {
        /// The code it is answered with (`UNAUTHENTICATED`, `PERMISSION_DENIED`, …).
        code: ErrorCode,
        /// What was refused, for a person.
        message: String,
    },
    /// `LIMIT_EXCEEDED`: the request is over a documented limit (the message names it).
    #[error("{0}")]
    LimitExceeded(String),
    /// `IDEMPOTENCY_KEY_REUSED`: the key was used for a different request or by another
    /// caller.
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// `INVALID_QUERY`: the query does not fit the collection (field, operator, value, limit).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// `INVALID_CURSOR`: the cursor was not made by this database for this query's order.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// `DUPLICATE_SUBSCRIPTION`: the connection already has a subscription with this id.
    #[error("subscription {0:?} already exists on this connection")]
    DuplicateSubscription(String),
    /// `UNKNOWN_SUBSCRIPTION`: the connection has no subscription with this id.
    #[error("no subscription {0:?} on this connection")]
    UnknownSubscription(String),
    /// `PROJECTOR_CONFLICT`: a projection batch writes a document another
    /// projector owns.
    #[error("{0}")]
    ProjectorConflict(String),
    /// `UNKNOWN_REBUILD`: the projector has no rebuild in progress with
    /// that generation.
    #[error("{0}")]
    UnknownRebuild(String),
    /// `CHANGES_TRUNCATED`: the change feed was asked for commits older
    /// than the change log keeps.
    #[error(
        "the change log keeps commits after seq {floor} only; read after {floor} (and reload state from a query or an export)"
    )]
    ChangesTruncated {
        /// The log's floor: the oldest seq a read may start after.
        floor: Seq,
    },
    /// `UNAVAILABLE`: the database cannot be reached; the request may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// `INTERNAL`: a bug, or a database in a state protosync did not leave it in.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::BadRequest(_) => ErrorCode::BadRequest,
            EngineError::UnknownCollection(_) => ErrorCode::UnknownCollection,
            EngineError::InvalidDocument { .. } => ErrorCode::InvalidDocument,
            EngineError::NotFound { .. } => ErrorCode::NotFound,
            EngineError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            EngineError::VersionConflict { .. } => ErrorCode::VersionConflict,
            EngineError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            EngineError::Forbidden { code, .. } => *code,
            EngineError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            EngineError::IdempotencyKeyReused(_) => ErrorCode::IdempotencyKeyReused,
            EngineError::InvalidQuery(_) => ErrorCode::InvalidQuery,
            EngineError::InvalidCursor(_) => ErrorCode::InvalidCursor,
            EngineError::DuplicateSubscription(_) => ErrorCode::DuplicateSubscription,
            EngineError::UnknownSubscription(_) => ErrorCode::UnknownSubscription,
            EngineError::ProjectorConflict(_) => ErrorCode::ProjectorConflict,
            EngineError::UnknownRebuild(_) => ErrorCode::UnknownRebuild,
            EngineError::ChangesTruncated { .. } => ErrorCode::ChangesTruncated,
            EngineError::Unavailable(_) => ErrorCode::Unavailable,
            EngineError::Internal(_) => ErrorCode::Internal,
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
                    Rejection::OwnedByAnotherProjector { projector } => {
                        EngineError::ProjectorConflict(format!(
                            "{location}{collection}/{id} belongs to projector {projector:?}"
                        ))
                    }
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
            e @ StoreError::UnknownRebuild { .. } => EngineError::UnknownRebuild(e.to_string()),
            e @ StoreError::ProjectorMoved { .. } => EngineError::ProjectorConflict(e.to_string()),
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
