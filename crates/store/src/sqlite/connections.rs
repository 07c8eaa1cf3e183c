//! Connections to the SQLite file: the one writable connection, opened
//! with the settings commits rely on, and a pool of read-only connections
//! on which each read runs in one transaction. This module never decides
//! what is read or written; a read-only connection cannot write, and only
//! the writer thread ever holds the writable one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::StoreError;

/// WAL pages between the checkpoints the writer runs (SQLite's default is
/// 1,000). A checkpoint copies each changed page once however often it
/// changed, and commits rewrite the same few pages (the head, b-tree
/// roots), so rarer checkpoints copy less in all; the log grows to about
/// this many 4 KiB pages.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// How long a connection waits for a lock another connection holds before
/// its statement fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating it and its folder if needed) the database at `path` for
/// the writer, in WAL mode.
pub(super) fn open_writable(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode: a commit survives a process crash; a power loss
    // may lose the last commits but never corrupts (docs/operations.md).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    Ok(conn)
}

/// Read-only connections to one database, opened as needed and kept for
/// reuse up to [`MAX_IDLE_READERS`].
#[derive(Clone)]
pub(super) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl Readers {
    pub(super) fn new(path: &Path) -> Readers {
        Readers {
            idle: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
        }
    }

    /// Runs `read` in one read transaction on a pooled read-only connection.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.idle.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map_err(|_| poisoned())?.pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    conn.busy_timeout(BUSY_TIMEOUT)?;
                    conn
                }
            };
            let result = {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                let result = read(&tx);
                tx.finish()?;
                result
            };
            let mut idle = readers.lock().map_err(|_| poisoned())?;
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

fn poisoned() -> StoreError {
    StoreError::Internal("the SQLite reader pool lock is poisoned".into())
}
