use protosync_schema::DocumentError;

use crate::{Seq, Version};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The mutation was refused because of op `op` (0-based); nothing was written.
    #[error("ops[{op}] ({collection}/{id}): {rejection}")]
    Rejected {
        op: usize,
        collection: String,
        id: String,
        rejection: Rejection,
    },
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// A log read asked for commits the retention window no longer keeps.
    #[error("the change log starts after seq {floor}")]
    LogTruncated { floor: Seq },
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("document not found")]
    NotFound,
    #[error("document already exists")]
    AlreadyExists,
    #[error("expected version {expected}, found {}", actual.map_or("no document".to_owned(), |v| format!("version {v}")))]
    VersionConflict {
        expected: Version,
        actual: Option<Version>,
    },
    #[error("{0}")]
    InvalidDocument(DocumentError),
    #[error("permission denied by the collection's write rule")]
    PermissionDenied,
    #[error("the document is {bytes} bytes; the limit is {limit}")]
    DocumentTooLarge { bytes: usize, limit: usize },
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
