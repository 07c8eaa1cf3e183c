//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer thread owns the only writable connection and group-commits:
//! it takes every mutation that is waiting and commits them in one
//! transaction, each with its own seq and outcome (`crate::group`), and
//! answers them all after that transaction commits. Reads run on the
//! blocking pool with read-only connections, each in one transaction, so a
//! query sees one snapshot.
//!
//! This file holds the store type and its [`Store`] impl, which only hands
//! each call to the module that does that job:
//!
//! - `connections`: opening the database, the writable connection's
//!   settings and the pool of read-only connections;
//! - `migrations`: the schema and bringing a database up to it;
//! - `writer`: the writer thread, its job queue and the commits watch;
//!   `group_commit`: one group's transaction;
//! - `reads`: snapshot reads (documents, queries, the change log, the head)
//!   and the decoding of stored rows;
//! - `projections`: projection stamps and checkpoints, read and written in
//!   a group's transaction, and the snapshot reads of the drift check;
//! - `indexes`, `retention`, `revocations`: building declared indexes,
//!   pruning, and the revocation log;
//! - `calls`: completed action calls under their idempotency keys.

mod calls;
mod connections;
mod declared_indexes;
mod group_commit;
mod migrations;
mod projections;
mod reads;
mod retention;
mod revocations;
mod writer;

use std::path::Path;

use async_trait::async_trait;
use protosync_query::{Page, Query, ReadScope};
use protosync_schema::Registry;
use tokio::sync::{mpsc, oneshot, watch};

use self::connections::Readers;
use self::writer::{Job, Writer};
use crate::{
    CallRecord, Checkpoint, CommitOutcome, CommitRecord, Mutation, ProjectedDocument, ReadAt,
    Revocation, RevocationSeq, Seq, Store, StoreError, StoreOptions, StoredDocument,
    refuse_invalid_jti,
};

/// A [`Store`] in one SQLite file, opened with [`SqliteStore::open`]. Its
/// writer thread stops once the store and every pending call are gone.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    secret: [u8; 32],
    readers: Readers,
    commits: watch::Receiver<Seq>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let mut conn = connections::open_writable(path)?;
        migrations::migrate(&mut conn)?;
        let head = reads::read_head(&conn)?;
        let secret = conn.query_row("SELECT secret FROM protosync_secret", [], |r| {
            r.get::<_, [u8; 32]>(0)
        })?;
        let (commits_tx, commits) = watch::channel(head);
        let (jobs, rx) = mpsc::channel(writer::WRITE_QUEUE_LEN);
        std::thread::Builder::new()
            .name("protosync-sqlite-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    options,
                    commits: commits_tx,
                }
                .run(rx);
            })
            .map_err(|e| {
                StoreError::Internal(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        Ok(SqliteStore {
            jobs,
            secret,
            readers: Readers::new(path),
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
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped".into())
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
        scope: &ReadScope,
    ) -> Result<ReadAt<Option<StoredDocument>>, StoreError> {
        let (collection, id, scope) = (collection.to_owned(), id.to_owned(), scope.clone());
        self.readers
            .read(move |tx| reads::get(tx, &collection, &id, &scope))
            .await
    }

    async fn query(&self, query: &Query) -> Result<ReadAt<Page>, StoreError> {
        let query = query.clone();
        self.readers.read(move |tx| reads::query(tx, &query)).await
    }

    async fn read_log(
        &self,
        after: Seq,
        max_commits: usize,
    ) -> Result<Vec<CommitRecord>, StoreError> {
        self.readers
            .read(move |tx| reads::read_log(tx, after, max_commits))
            .await
    }

    async fn head(&self) -> Result<Seq, StoreError> {
        self.readers.read(|tx| reads::read_head(tx)).await
    }

    async fn log_floor(&self) -> Result<Seq, StoreError> {
        self.readers.read(|tx| reads::read_floor(tx)).await
    }

    async fn checkpoint(&self, projector: &str) -> Result<Option<Checkpoint>, StoreError> {
        let projector = projector.to_owned();
        self.readers
            .read(move |tx| projections::checkpoint(tx, &projector))
            .await
    }

    async fn projected_documents(
        &self,
        projector: &str,
        after: Option<&(String, String)>,
        through: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<ProjectedDocument>, StoreError> {
        let (projector, after, through) = (projector.to_owned(), after.cloned(), through.cloned());
        self.readers
            .read(move |tx| {
                projections::projected_documents(
                    tx,
                    &projector,
                    after.as_ref(),
                    through.as_ref(),
                    max,
                )
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
        refuse_invalid_jti(jti)?;
        let jti = jti.to_owned();
        self.send(|tx| Job::Revoke(jti, keep_until_ms, tx)).await
    }

    async fn revocations_after(
        &self,
        after: RevocationSeq,
        max: usize,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.readers
            .read(move |tx| revocations::revocations_after(tx, after, max))
            .await
    }

    async fn recorded_call(&self, key: &str) -> Result<Option<CallRecord>, StoreError> {
        let key = key.to_owned();
        self.readers
            .read(move |tx| calls::recorded_call(tx, &key))
            .await
    }

    async fn record_call(&self, record: CallRecord) -> Result<CallRecord, StoreError> {
        self.send(|tx| Job::RecordCall(record, tx)).await
    }

    fn commits(&self) -> watch::Receiver<Seq> {
        self.commits.clone()
    }

    fn database_secret(&self) -> [u8; 32] {
        self.secret
    }
}
