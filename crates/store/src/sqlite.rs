//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer thread owns the only writable connection and group-commits:
//! it takes every mutation that is waiting and commits them in one
//! transaction, each with its own seq and outcome ([`crate::group`]), and
//! answers them all after that transaction commits. Reads run on the blocking pool with read-only connections, each
//! in one transaction, so a query sees one snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use protosync_query::{Execution, Page, Query, ScanRequest, ScanRow};
use protosync_schema::{Collection, Registry};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot, watch};

use crate::group::{GroupAnswers, GroupKeys, GroupReads, GroupWrites, plan_group};
use crate::indexes::IndexChanges;
use crate::{
    Change, CommitOutcome, CommitRecord, Mutation, ReadAt, Revocation, RevocationSeq, Seq, Store,
    StoreError, StoreOptions, StoredDocument, Version, invalid_jti, now_ms,
};

/// Mutations waiting for the writer thread; senders wait when it is full,
/// which is the backpressure on writers.
const WRITE_QUEUE_LEN: usize = 4_096;
/// Mutations folded into one SQLite transaction at most: bounds the latency
/// a mutation waits behind others in its group.
const MAX_GROUP_COMMIT: usize = 256;
/// WAL pages between the checkpoints the writer runs (SQLite's default is
/// 1,000). A checkpoint copies each changed page once however often it
/// changed, and commits rewrite the same few pages (the head, b-tree
/// roots), so rarer checkpoints copy less in all; the log grows to about
/// this many 4 KiB pages.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE protosync_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    log_floor INTEGER NOT NULL
);
INSERT INTO protosync_head (id, seq, log_floor) VALUES (1, 0, 0);
CREATE TABLE protosync_documents (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE TABLE protosync_indexes (
    collection TEXT NOT NULL,
    index_name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (collection, index_name)
);
CREATE TABLE protosync_index_entries (
    collection TEXT NOT NULL,
    index_name TEXT NOT NULL,
    key BLOB NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (collection, index_name, key)
) WITHOUT ROWID;
CREATE TABLE protosync_commits (
    seq INTEGER PRIMARY KEY,
    committed_at_ms INTEGER NOT NULL,
    idempotency_key TEXT
);
CREATE INDEX protosync_commits_by_time ON protosync_commits (committed_at_ms);
CREATE TABLE protosync_changes (
    seq INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT,
    PRIMARY KEY (seq, ord)
) WITHOUT ROWID;
CREATE TABLE protosync_idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX protosync_idempotency_by_time ON protosync_idempotency (created_at_ms);
"#,
    r#"
CREATE TABLE protosync_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret BLOB NOT NULL CHECK (length(secret) = 32)
);
INSERT INTO protosync_secret (id, secret) VALUES (1, randomblob(32));
"#,
    r#"
CREATE TABLE protosync_revocation_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO protosync_revocation_head (id, seq) VALUES (1, 0);
CREATE TABLE protosync_revocations (
    jti TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    revoked_at_ms INTEGER NOT NULL,
    keep_until_ms INTEGER
);
CREATE INDEX protosync_revocations_by_keep_until ON protosync_revocations (keep_until_ms);
"#,
];

/// Where a mutation's answer goes.
type Reply = oneshot::Sender<Result<CommitOutcome, StoreError>>;

enum Job {
    Commit(Mutation, Reply),
    SyncIndexes(
        Vec<Arc<Collection>>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Prune(oneshot::Sender<Result<Seq, StoreError>>),
    Revoke(
        String,
        Option<i64>,
        oneshot::Sender<Result<Revocation, StoreError>>,
    ),
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    secret: [u8; 32],
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    commits: watch::Receiver<Seq>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a commit survives a process crash; a power loss
        // may lose the last commits but never corrupts (docs/operations.md).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        migrate(&mut conn)?;
        let head = read_head(&conn)?;
        let secret = conn.query_row("SELECT secret FROM protosync_secret", [], |r| {
            r.get::<_, [u8; 32]>(0)
        })?;
        let (commits_tx, commits) = watch::channel(head);
        let (jobs, rx) = mpsc::channel(WRITE_QUEUE_LEN);
        std::thread::Builder::new()
            .name("protosync-sqlite-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    options,
                    commits: commits_tx,
                }
                .run(rx)
            })
            .map_err(|e| {
                StoreError::Internal(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        Ok(SqliteStore {
            jobs,
            secret,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
            commits,
        })
    }

    async fn send<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `read` in one read transaction on a pooled read-only connection.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
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
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
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

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped".into())
}

fn poisoned() -> StoreError {
    StoreError::Internal("the SQLite reader pool lock is poisoned".into())
}

#[async_trait]
impl Store for SqliteStore {
    async fn sync_indexes(&self, registry: &Registry) -> Result<(), StoreError> {
        let collections = registry.collections().cloned().collect();
        self.send(|tx| Job::SyncIndexes(collections, tx)).await
    }

    async fn commit(&self, mutation: Mutation) -> Result<CommitOutcome, StoreError> {
        self.send(|tx| Job::Commit(mutation, tx)).await
    }

    async fn get(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<ReadAt<Option<StoredDocument>>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.read(move |tx| {
            let seq = read_head(tx)?;
            Ok(ReadAt {
                seq,
                value: read_document(tx, &collection, &id)?,
            })
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<ReadAt<Page>, StoreError> {
        let query = query.clone();
        self.read(move |tx| {
            let seq = read_head(tx)?;
            let mut execution = Execution::new(&query);
            while let Some(request) = execution.next_request() {
                let rows = scan(tx, &query.collection.name, request)?;
                execution.accept(rows);
            }
            Ok(ReadAt {
                seq,
                value: execution.finish(),
            })
        })
        .await
    }

    async fn read_log(
        &self,
        after: Seq,
        max_commits: usize,
    ) -> Result<Vec<CommitRecord>, StoreError> {
        self.read(move |tx| {
            let floor: i64 = tx.query_row("SELECT log_floor FROM protosync_head", [], |r| r.get(0))?;
            if (after.0 as i64) < floor {
                return Err(StoreError::LogTruncated { floor: Seq(floor as u64) });
            }
            let mut commits: Vec<CommitRecord> = tx
                .prepare_cached("SELECT seq, committed_at_ms FROM protosync_commits WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
                .query_map(params![after.0 as i64, max_commits as i64], |r| {
                    Ok(CommitRecord { seq: Seq(r.get::<_, i64>(0)? as u64), committed_at_ms: r.get(1)?, changes: Vec::new() })
                })?
                .collect::<Result<_, _>>()?;
            let Some(last) = commits.last().map(|c| c.seq) else { return Ok(commits) };
            let mut stmt = tx.prepare_cached(
                "SELECT seq, collection, id, version, body FROM protosync_changes WHERE seq > ?1 AND seq <= ?2 ORDER BY seq, ord",
            )?;
            let mut rows = stmt.query(params![after.0 as i64, last.0 as i64])?;
            let mut at = 0;
            while let Some(row) = rows.next()? {
                let seq = Seq(row.get::<_, i64>(0)? as u64);
                while commits[at].seq < seq {
                    at += 1;
                }
                let body: Option<String> = row.get(4)?;
                commits[at].changes.push(Change {
                    collection: row.get(1)?,
                    id: row.get(2)?,
                    version: Version(row.get::<_, i64>(3)? as u64),
                    body: body.map(|b| parse_body(&b)).transpose()?,
                });
            }
            Ok(commits)
        })
        .await
    }

    async fn head(&self) -> Result<Seq, StoreError> {
        self.read(|tx| read_head(tx)).await
    }

    async fn log_floor(&self) -> Result<Seq, StoreError> {
        self.read(|tx| {
            Ok(Seq(
                tx.query_row("SELECT log_floor FROM protosync_head", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            ))
        })
        .await
    }

    async fn prune(&self) -> Result<Seq, StoreError> {
        self.send(Job::Prune).await
    }

    async fn revoke(
        &self,
        jti: &str,
        keep_until_ms: Option<i64>,
    ) -> Result<Revocation, StoreError> {
        if let Some(problem) = invalid_jti(jti) {
            return Err(StoreError::InvalidJti(problem));
        }
        let jti = jti.to_owned();
        self.send(|tx| Job::Revoke(jti, keep_until_ms, tx)).await
    }

    async fn revocations_after(
        &self,
        after: RevocationSeq,
        max: usize,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.read(move |tx| {
            tx.prepare_cached(
                "SELECT seq, jti, revoked_at_ms, keep_until_ms FROM protosync_revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![after.0 as i64, max as i64], |r| {
                Ok(Revocation {
                    seq: RevocationSeq(r.get::<_, i64>(0)? as u64),
                    jti: r.get(1)?,
                    revoked_at_ms: r.get(2)?,
                    keep_until_ms: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
        })
        .await
    }

    fn commits(&self) -> watch::Receiver<Seq> {
        self.commits.clone()
    }

    fn database_secret(&self) -> [u8; 32] {
        self.secret
    }
}

struct Writer {
    conn: Connection,
    options: StoreOptions,
    commits: watch::Sender<Seq>,
}

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_GROUP_COMMIT {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut commits = Vec::new();
            for job in batch {
                match job {
                    Job::Commit(mutation, reply) => commits.push((mutation, reply)),
                    other => {
                        self.group_commit(std::mem::take(&mut commits));
                        self.run_other(other);
                    }
                }
            }
            self.group_commit(commits);
        }
    }

    fn group_commit(&mut self, jobs: Vec<(Mutation, Reply)>) {
        if jobs.is_empty() {
            return;
        }
        match commit_group(&mut self.conn, jobs.iter().map(|(mutation, _)| mutation)) {
            Ok((answers, head)) => {
                if let Some(head) = head {
                    self.commits.send_replace(head);
                }
                for ((_, reply), answer) in jobs.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            // A statement failed and the transaction rolled back: retried
            // alone, a mutation that cannot be written fails alone.
            Err(_) if jobs.len() > 1 => jobs
                .into_iter()
                .for_each(|job| self.group_commit(vec![job])),
            Err(e) => jobs.into_iter().for_each(|(_, reply)| {
                let _ = reply.send(Err(e.clone()));
            }),
        }
    }

    fn run_other(&mut self, job: Job) {
        match job {
            Job::SyncIndexes(collections, reply) => {
                let _ = reply.send(sync_indexes(&mut self.conn, &collections));
            }
            Job::Prune(reply) => {
                let _ = reply.send(prune(&mut self.conn, &self.options));
            }
            Job::Revoke(jti, keep_until_ms, reply) => {
                let _ = reply.send(revoke(&mut self.conn, &jti, keep_until_ms));
            }
            Job::Commit(..) => unreachable!("commits are grouped"),
        }
    }
}

/// One SQLite transaction for a group of mutations (see [`crate::group`]).
/// Returns each mutation's answer and the new head, if anything committed.
fn commit_group<'m>(
    conn: &mut Connection,
    mutations: impl Iterator<Item = &'m Mutation> + Clone,
) -> Result<GroupAnswers, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let keys = GroupKeys::of(mutations.clone());
    let mut stored = HashMap::new();
    for (collection, id) in keys.documents {
        if let Some(doc) = read_document(&tx, &collection, &id)? {
            stored.insert((collection, id), doc);
        }
    }
    let mut recorded = HashMap::new();
    let mut lookup = tx
        .prepare_cached("SELECT request_hash, outcome FROM protosync_idempotency WHERE key = ?1")?;
    for key in keys.idempotency {
        if let Some(record) = lookup
            .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        {
            recorded.insert(key, record);
        }
    }
    drop(lookup);
    let (answers, writes) = plan_group(
        mutations,
        GroupReads {
            head: read_head(&tx)?,
            stored,
            recorded,
        },
    );
    if let Some(head) = writes.head {
        write_group(&tx, &writes, head)?;
    }
    tx.commit()?;
    Ok((answers, writes.head))
}

fn write_group(conn: &Connection, writes: &GroupWrites, head: Seq) -> Result<(), StoreError> {
    let mut delete =
        conn.prepare_cached("DELETE FROM protosync_documents WHERE collection = ?1 AND id = ?2")?;
    for (collection, id) in &writes.deleted {
        delete.execute(params![collection, id])?;
    }
    let mut upsert = conn.prepare_cached(
        "INSERT INTO protosync_documents (collection, id, version, seq, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version, seq = excluded.seq, body = excluded.body",
    )?;
    for (collection, id, version, seq, body) in &writes.upserted {
        upsert.execute(params![
            collection,
            id,
            version.0 as i64,
            seq.0 as i64,
            body
        ])?;
    }
    let mut remove_entry = conn.prepare_cached("DELETE FROM protosync_index_entries WHERE collection = ?1 AND index_name = ?2 AND key = ?3")?;
    for (collection, index, key) in &writes.index_touched {
        remove_entry.execute(params![collection, index, key])?;
    }
    let mut add_entry = conn.prepare_cached("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES (?1, ?2, ?3, ?4)")?;
    for (collection, index, key, id) in &writes.index_added {
        add_entry.execute(params![collection, index, key, id])?;
    }
    let mut change = conn.prepare_cached("INSERT INTO protosync_changes (seq, ord, collection, id, version, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for (seq, ord, collection, id, version, body) in &writes.changes {
        change.execute(params![
            seq.0 as i64,
            ord,
            collection,
            id,
            version.0 as i64,
            body
        ])?;
    }
    let committed_at = now_ms();
    let mut commit = conn.prepare_cached(
        "INSERT INTO protosync_commits (seq, committed_at_ms, idempotency_key) VALUES (?1, ?2, ?3)",
    )?;
    for (seq, key) in &writes.commits {
        commit.execute(params![seq.0 as i64, committed_at, key])?;
    }
    let mut record = conn.prepare_cached("INSERT INTO protosync_idempotency (key, request_hash, seq, outcome, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for (key, hash, seq, outcome) in &writes.idempotency {
        record.execute(params![key, hash, seq.0 as i64, outcome, committed_at])?;
    }
    conn.prepare_cached("UPDATE protosync_head SET seq = ?1")?
        .execute([head.0 as i64])?;
    Ok(())
}

fn read_head(conn: &Connection) -> Result<Seq, StoreError> {
    Ok(Seq(conn
        .prepare_cached("SELECT seq FROM protosync_head")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64))
}

fn read_document(
    conn: &Connection,
    collection: &str,
    id: &str,
) -> Result<Option<StoredDocument>, StoreError> {
    let row: Option<(i64, i64, String)> = conn
        .prepare_cached(
            "SELECT version, seq, body FROM protosync_documents WHERE collection = ?1 AND id = ?2",
        )?
        .query_row(params![collection, id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    row.map(|(version, seq, body)| {
        Ok(StoredDocument {
            id: id.to_owned(),
            version: Version(version as u64),
            seq: Seq(seq as u64),
            body: parse_body(&body)?,
        })
    })
    .transpose()
}

fn parse_body(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("stored document is not JSON: {e}")))
}

/// (index key, id, version, seq, body) of a scanned row, as SQLite gives it.
type RawRow = (Option<Vec<u8>>, String, i64, i64, String);

fn scan(
    conn: &Connection,
    collection: &str,
    request: &ScanRequest,
) -> Result<Vec<ScanRow>, StoreError> {
    let row_of =
        |r: &rusqlite::Row<'_>, key: Option<Vec<u8>>, first: usize| -> rusqlite::Result<RawRow> {
            Ok((
                key,
                r.get(first)?,
                r.get(first + 1)?,
                r.get(first + 2)?,
                r.get(first + 3)?,
            ))
        };
    let raw: Vec<RawRow> = match request {
        ScanRequest::Index { index, lower, upper, reverse, limit } => {
            let sql = format!(
                "SELECT e.key, d.id, d.version, d.seq, d.body FROM protosync_index_entries e
                 JOIN protosync_documents d ON d.collection = e.collection AND d.id = e.doc_id
                 WHERE e.collection = ?1 AND e.index_name = ?2 AND e.key >= ?3 {} ORDER BY e.key {} LIMIT ?5",
                if upper.is_some() { "AND e.key < ?4" } else { "AND ?4 IS NULL" },
                if *reverse { "DESC" } else { "ASC" }
            );
            conn.prepare_cached(&sql)?
                .query_map(params![collection, index, lower, upper, *limit as i64], |r| {
                    let key: Vec<u8> = r.get(0)?;
                    row_of(r, Some(key), 1)
                })?
                .collect::<Result<_, _>>()?
        }
        ScanRequest::Collection { after_id, limit } => conn
            .prepare_cached("SELECT id, version, seq, body FROM protosync_documents WHERE collection = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?
            .query_map(params![collection, after_id.as_deref().unwrap_or(""), *limit as i64], |r| row_of(r, None, 0))?
            .collect::<Result<_, _>>()?,
    };
    raw.into_iter()
        .map(|(index_key, id, version, seq, body)| {
            Ok(ScanRow {
                index_key,
                doc: StoredDocument {
                    id,
                    version: Version(version as u64),
                    seq: Seq(seq as u64),
                    body: parse_body(&body)?,
                },
            })
        })
        .collect()
}

fn sync_indexes(conn: &mut Connection, collections: &[Arc<Collection>]) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Vec<(String, String, String)> = tx
        .prepare("SELECT collection, index_name, fingerprint FROM protosync_indexes")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let changes = IndexChanges::between(&existing, collections);
    for (collection, index) in &changes.drop {
        tx.execute(
            "DELETE FROM protosync_index_entries WHERE collection = ?1 AND index_name = ?2",
            params![collection, index],
        )?;
        tx.execute(
            "DELETE FROM protosync_indexes WHERE collection = ?1 AND index_name = ?2",
            params![collection, index],
        )?;
    }
    for (collection, index) in changes.build {
        tracing::info!(collection = %collection.name, index = %index.name, "building index");
        let docs: Vec<(String, String)> = tx
            .prepare("SELECT id, body FROM protosync_documents WHERE collection = ?1")?
            .query_map([&collection.name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut insert = tx.prepare("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES (?1, ?2, ?3, ?4)")?;
        for (id, body) in docs {
            let key = protosync_query::key::index_key(index, &id, &parse_body(&body)?);
            insert.execute(params![collection.name, index.name, key, id])?;
        }
        tx.execute(
            "INSERT INTO protosync_indexes (collection, index_name, fingerprint) VALUES (?1, ?2, ?3)",
            params![collection.name, index.name, index.fingerprint()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn prune(conn: &mut Connection, options: &StoreOptions) -> Result<Seq, StoreError> {
    let now = now_ms();
    let log_cutoff = now - options.change_log_retention.as_millis() as i64;
    let idempotency_cutoff = now - options.idempotency_retention.as_millis() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let newest_expired: Option<i64> = tx.query_row(
        "SELECT MAX(seq) FROM protosync_commits WHERE committed_at_ms < ?1",
        [log_cutoff],
        |r| r.get(0),
    )?;
    if let Some(floor) = newest_expired {
        tx.execute("DELETE FROM protosync_changes WHERE seq <= ?1", [floor])?;
        tx.execute("DELETE FROM protosync_commits WHERE seq <= ?1", [floor])?;
        tx.execute(
            "UPDATE protosync_head SET log_floor = MAX(log_floor, ?1)",
            [floor],
        )?;
    }
    tx.execute(
        "DELETE FROM protosync_idempotency WHERE created_at_ms < ?1",
        [idempotency_cutoff],
    )?;
    tx.execute(
        "DELETE FROM protosync_revocations WHERE keep_until_ms < ?1",
        [now],
    )?;
    let floor: i64 = tx.query_row("SELECT log_floor FROM protosync_head", [], |r| r.get(0))?;
    tx.commit()?;
    Ok(Seq(floor as u64))
}

/// One revocation in its own transaction; the writer thread is the only
/// writer, so revocation seqs are assigned and become visible in order.
fn revoke(
    conn: &mut Connection,
    jti: &str,
    keep_until_ms: Option<i64>,
) -> Result<Revocation, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let seq: i64 = tx.query_row(
        "UPDATE protosync_revocation_head SET seq = seq + 1 RETURNING seq",
        [],
        |r| r.get(0),
    )?;
    // Revoked again: the entry moves to the end of the log (so every reader
    // sees the new time) and keeps the later time, where NULL (for good) wins.
    let revocation = tx.query_row(
        "INSERT INTO protosync_revocations (jti, seq, revoked_at_ms, keep_until_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (jti) DO UPDATE SET seq = excluded.seq, keep_until_ms = CASE
             WHEN protosync_revocations.keep_until_ms IS NULL OR excluded.keep_until_ms IS NULL THEN NULL
             ELSE MAX(protosync_revocations.keep_until_ms, excluded.keep_until_ms) END
         RETURNING revoked_at_ms, keep_until_ms",
        params![jti, seq, now_ms(), keep_until_ms],
        |r| {
            Ok(Revocation {
                seq: RevocationSeq(seq as u64),
                jti: jti.to_owned(),
                revoked_at_ms: r.get(0)?,
                keep_until_ms: r.get(1)?,
            })
        },
    )?;
    tx.commit()?;
    Ok(revocation)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS protosync_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)")?;
    let applied: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM protosync_migrations",
        [],
        |r| r.get(0),
    )?;
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database was migrated to version {applied} by a newer protosync; this one knows {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Internal(format!("migration {}: {e}", i + 1)))?;
        tx.execute(
            "INSERT INTO protosync_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            params![i as i64 + 1, now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(())
}
