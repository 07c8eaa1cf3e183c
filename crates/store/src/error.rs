use protosync_schema::DocumentError;

use crate::{Seq, Version};

/// Why a store operation failed; the engine maps each to a client's error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The mutation was refused because of op `op` (0-based); nothing was written.
    #[error("ops[{op}] ({collection}/{id}): {rejection}")]
    Rejected {
        /// The op's index in the mutation.
        op: usize,
        /// Its document's collection.
        collection: String,
        /// Its document's id.
        id: String,
        /// Why it was refused.
        rejection: Rejection,
    },
    /// The idempotency key is recorded for a request with a different hash.
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// A log read asked for commits the retention window no longer keeps.
    #[error("the change log starts after seq {floor}")]
    LogTruncated {
        /// The log's floor: the oldest seq a read may start after.
        floor: Seq,
    },
    /// A rebuild swap found that the projector committed since its set was
    /// read; read it again and retry.
    #[error("projector {projector:?} committed during the swap")]
    ProjectorMoved {
        /// The projector.
        projector: String,
    },
    /// No rebuild of this generation is in progress for the projector.
    #[error("projector {projector:?} has no rebuild in progress with generation {generation}")]
    UnknownRebuild {
        /// The projector.
        projector: String,
        /// The generation asked for.
        generation: u64,
    },
    /// A revocation names a `jti` no store can keep (see `Store::revoke`).
    #[error("invalid jti: {0}")]
    InvalidJti(String),
    /// The database cannot be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database holds something this code did not write (a bug or a
    /// hand edit), or a migration failed.
    #[error("store error: {0}")]
    Internal(String),
}

/// Why one op of a mutation was refused (the whole mutation is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A patch or delete of a document that does not exist at that point.
    #[error("document not found")]
    NotFound,
    /// An insert of a document that exists at that point.
    #[error("document already exists")]
    AlreadyExists,
    /// The op's expected version is not the document's at that point.
    #[error("expected version {expected}, found {}", actual.map_or("no document".to_owned(), |v| format!("version {v}")))]
    VersionConflict {
        /// The version the op expected.
        expected: Version,
        /// The document's version; `None` when there is no document.
        actual: Option<Version>,
    },
    /// The result of a patch does not fit the message type.
    #[error("{0}")]
    InvalidDocument(DocumentError),
    /// The collection's write rule refused the op.
    #[error("permission denied by the collection's write rule")]
    PermissionDenied,
    /// A projection write of a document another projector owns.
    #[error("the document belongs to projector {projector:?}")]
    OwnedByAnotherProjector {
        /// The projector that owns it.
        projector: String,
    },
    /// The document the op leaves is larger than [`MAX_DOCUMENT_BYTES`](crate::MAX_DOCUMENT_BYTES).
    #[error("the document is {bytes} bytes; the limit is {limit}")]
    DocumentTooLarge {
        /// Its canonical JSON's size, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        limit: usize,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(format!("sqlite: {e}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// An error the database reported about a statement is ours to fix
    /// (Internal); anything else — a closed connection, a timeout — is the
    /// database being unreachable (Unavailable).
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db)
                if !db.code().code().starts_with("08") && !db.code().code().starts_with("57") =>
            {
                StoreError::Internal(format!("postgres: {}: {}", db.code().code(), db.message()))
            }
            _ => StoreError::Unavailable(format!("postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(format!("postgres pool: {e}"))
    }
}
