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
//! - `rebuilds`: staging a projector's rebuild beside its live documents;
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
mod rebuilds;
mod retention;
mod revocations;
mod schedule_ticks;
mod schema_record;
mod trigger_state;
mod writer;

use std::path::Path;

use async_trait::async_trait;
use protosync_query::{Page, Query, ReadScope};
use protosync_schema::Registry;
use tokio::sync::{mpsc, oneshot, watch};

use self::connections::Readers;
use self::writer::{Job, Writer};
use crate::{
    CallRecord, Checkpoint, CommitOutcome, CommitRecord, HistoryEntry, Mutation, ProjectedDocument,
    ReadAt, Rebuild, RecordedSchema, Revocation, RevocationSeq, Seq, Snapshot, StagedDocument,
    Store, StoreError, StoreOptions, StoredDocument, refuse_invalid_jti,
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

    /// Runs `write` on the writer thread, between groups.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.send(|tx| {
            Job::Write(Box::new(move |conn| {
                let _ = tx.send(write(conn));
            }))
        })
        .await
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

    async fn history(
        &self,
        collection: &str,
        id: &str,
        after: Seq,
        max: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.readers
            .read(move |tx| reads::history(tx, &collection, &id, after, max))
            .await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (seq_tx, seq) = oneshot::channel();
        let (documents_tx, documents) = mpsc::channel(crate::SNAPSHOT_CHANNEL_LEN);
        let readers = self.readers.clone();
        tokio::spawn(async move {
            let errors = documents_tx.clone();
            let read = readers
                .read(move |tx| reads::snapshot(tx, seq_tx, &documents_tx))
                .await;
            if let Err(e) = read {
                let _ = errors.send(Err(e)).await;
            }
        });
        let seq = seq.await.map_err(|_| {
            StoreError::Internal("the snapshot read ended before it read the head".into())
        })?;
        Ok(Snapshot { seq, documents })
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

    async fn rebuild(&self, projector: &str, start: bool) -> Result<Option<Rebuild>, StoreError> {
        let projector = projector.to_owned();
        if start {
            return self
                .write(move |conn| rebuilds::start(conn, &projector).map(Some))
                .await;
        }
        self.readers
            .read(move |tx| rebuilds::read(tx, &projector))
            .await
    }

    async fn stage(
        &self,
        projector: &str,
        generation: u64,
        documents: Vec<StagedDocument>,
        read_up_to: Option<u64>,
    ) -> Result<Rebuild, StoreError> {
        let projector = projector.to_owned();
        self.write(move |conn| {
            rebuilds::stage(conn, &projector, generation, &documents, read_up_to)
        })
        .await
    }

    async fn staged_documents(
        &self,
        projector: &str,
        generation: u64,
        after: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<StagedDocument>, StoreError> {
        let (projector, after) = (projector.to_owned(), after.cloned());
        self.readers
            .read(move |tx| rebuilds::staged(tx, &projector, generation, after.as_ref(), max))
            .await
    }

    async fn abandon_rebuild(&self, projector: &str, generation: u64) -> Result<(), StoreError> {
        let projector = projector.to_owned();
        self.write(move |conn| rebuilds::abandon(conn, &projector, generation))
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

    async fn recorded_schema(&self) -> Result<Option<RecordedSchema>, StoreError> {
        self.readers.read(|tx| schema_record::read(tx)).await
    }

    async fn record_schema(&self, registry: &Registry) -> Result<(), StoreError> {
        let (set, fingerprint) = (
            registry.descriptor_set().to_vec(),
            registry.fingerprint().to_owned(),
        );
        self.write(move |conn| schema_record::record(conn, &set, &fingerprint))
            .await
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

    async fn claim_tick(&self, claim: crate::TickClaim) -> Result<Option<u32>, StoreError> {
        self.write(move |conn| schedule_ticks::claim_tick(conn, &claim))
            .await
    }

    async fn finish_tick(
        &self,
        run: &crate::TickRun,
        finished_at_ms: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let (run, outcome, error) = (run.clone(), outcome.to_owned(), error.map(str::to_owned));
        self.write(move |conn| {
            schedule_ticks::finish_tick(conn, &run, finished_at_ms, &outcome, error.as_deref())
        })
        .await
    }

    async fn schedule_runs(&self, max: usize) -> Result<Vec<crate::TickRun>, StoreError> {
        self.readers
            .read(move |tx| schedule_ticks::schedule_runs(tx, max))
            .await
    }

    async fn claim_trigger(&self, claim: crate::TriggerClaim) -> Result<Option<Seq>, StoreError> {
        self.write(move |conn| trigger_state::claim_trigger(conn, &claim))
            .await
    }

    async fn advance_trigger(
        &self,
        name: &str,
        node: &str,
        to: Seq,
        parked: Vec<crate::ParkedChange>,
    ) -> Result<bool, StoreError> {
        let (name, node) = (name.to_owned(), node.to_owned());
        self.write(move |conn| trigger_state::advance_trigger(conn, &name, &node, to, &parked))
            .await
    }

    async fn trigger_states(&self) -> Result<Vec<crate::TriggerState>, StoreError> {
        self.readers
            .read(|tx| trigger_state::trigger_states(tx))
            .await
    }

    async fn parked_changes(
        &self,
        name: &str,
        max: usize,
    ) -> Result<Vec<crate::ParkedChange>, StoreError> {
        let name = name.to_owned();
        self.readers
            .read(move |tx| trigger_state::parked_changes(tx, &name, max))
            .await
    }

    async fn resolve_parked(&self, name: &str, seq: Seq, id: &str) -> Result<bool, StoreError> {
        let (name, id) = (name.to_owned(), id.to_owned());
        self.write(move |conn| trigger_state::resolve_parked(conn, &name, seq, &id))
            .await
    }

    async fn record_call(&self, record: CallRecord) -> Result<CallRecord, StoreError> {
        self.write(move |conn| calls::record_call(conn, &record))
            .await
    }

    fn commits(&self) -> watch::Receiver<Seq> {
        self.commits.clone()
    }

    fn database_secret(&self) -> [u8; 32] {
        self.secret
    }
}
