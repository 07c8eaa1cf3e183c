//! The production store: Postgres, shareable by several engine processes.
//!
//! Seq order is commit order because every commit transaction starts by
//! locking the one counter row (`protosync_head`) and holds it until it
//! commits: the next transaction reads the head only after this one is
//! visible. A bare sequence would not give this (commits could become
//! visible out of order). One task per process commits waiting mutations in
//! groups, one transaction each (`crate::group`): one lock, one fsync and
//! four round trips for the whole group, which is what lets Postgres take
//! thousands of commits a second through one counter row.
//!
//! Other processes learn of commits through `NOTIFY protosync_commits`, sent
//! inside the commit. The notification is only a doorbell: payloads can be
//! lost while the listener reconnects, so the listener also re-reads the head
//! after every reconnect and on a slow timer, and readers always go to the log.
//!
//! This file holds the store type and its [`Store`] impl, which only hands
//! each call to the module that does that job:
//!
//! - `migrations`: the schema and bringing a database up to it;
//! - `committer`: the task that gathers waiting mutations into groups and
//!   answers them; `group_commit`: one group's transaction;
//! - `reads`: snapshot reads (documents, queries, the change log, the head);
//! - `wakeups`: the commits watch, NOTIFY and the listener;
//! - `projections`: projection stamps and checkpoints, read and written in
//!   a group's transaction, and the snapshot reads of the drift check;
//! - `rebuilds`: staging a projector's rebuild beside its live documents;
//! - `indexes`, `retention`, `revocations`: building declared indexes,
//!   pruning, and the revocation log;
//! - `calls`: completed action calls under their idempotency keys.

mod calls;
mod committer;
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
mod wakeups;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use protosync_query::{Page, Query, ReadScope};
use protosync_schema::{Collection, Registry};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::NoTls;

use crate::{
    CallRecord, Checkpoint, CommitOutcome, CommitRecord, HistoryEntry, Mutation, ProjectedDocument,
    ReadAt, Rebuild, RecordedSchema, Revocation, RevocationSeq, Seq, Snapshot, StagedDocument,
    Store, StoreError, StoreOptions, StoredDocument, refuse_invalid_jti,
};

/// Connections in the pool: reads, and the one that commits.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// A [`Store`] on a Postgres database, opened with
/// [`PostgresStore::connect`]. Its background tasks (the committer and the
/// commit listener) stop when it is dropped.
pub struct PostgresStore {
    pool: Pool,
    secret: [u8; 32],
    options: StoreOptions,
    commits: watch::Sender<Seq>,
    jobs: mpsc::Sender<committer::Job>,
    background: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.background
            .iter()
            .for_each(tokio::task::JoinHandle::abort);
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`), migrates the
    /// database and starts listening for other processes' commits.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        options: StoreOptions,
    ) -> Result<PostgresStore, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        migrations::migrate(&pool).await?;
        let head = reads::read_head(&**pool.get().await?).await?;
        let secret: Vec<u8> = pool
            .get()
            .await?
            .query_one("SELECT secret FROM protosync_secret", &[])
            .await?
            .get(0);
        let secret = <[u8; 32]>::try_from(secret)
            .map_err(|_| StoreError::Internal("protosync_secret is not 32 bytes".into()))?;
        let (commits, _) = watch::channel(head);
        let listener = tokio::spawn(wakeups::listen(config, commits.clone()));
        let (jobs, waiting) = mpsc::channel(committer::COMMIT_QUEUE_LEN);
        let committer = tokio::spawn(committer::commit_groups(
            pool.clone(),
            waiting,
            commits.clone(),
        ));
        Ok(PostgresStore {
            pool,
            secret,
            options,
            commits,
            jobs,
            background: [listener, committer],
        })
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the Postgres committer has stopped".into())
}

#[async_trait]
impl Store for PostgresStore {
    async fn sync_indexes(&self, registry: &Registry) -> Result<(), StoreError> {
        let collections: Vec<Arc<Collection>> = registry.collections().cloned().collect();
        declared_indexes::sync_indexes(&self.pool, &collections).await
    }

    async fn commit(&self, mutation: Mutation) -> Result<CommitOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((mutation, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn get(
        &self,
        collection: &str,
        id: &str,
        scope: &ReadScope,
    ) -> Result<ReadAt<Option<StoredDocument>>, StoreError> {
        reads::get(&self.pool, collection, id, scope).await
    }

    async fn query(&self, query: &Query) -> Result<ReadAt<Page>, StoreError> {
        reads::query(&self.pool, query).await
    }

    async fn read_log(
        &self,
        after: Seq,
        max_commits: usize,
    ) -> Result<Vec<CommitRecord>, StoreError> {
        reads::read_log(&self.pool, after, max_commits).await
    }

    async fn head(&self) -> Result<Seq, StoreError> {
        reads::read_head(&**self.pool.get().await?).await
    }

    async fn log_floor(&self) -> Result<Seq, StoreError> {
        reads::read_floor(&**self.pool.get().await?).await
    }

    async fn checkpoint(&self, projector: &str) -> Result<Option<Checkpoint>, StoreError> {
        projections::checkpoint(&self.pool, projector).await
    }

    async fn rebuild(&self, projector: &str, start: bool) -> Result<Option<Rebuild>, StoreError> {
        if start {
            return rebuilds::start(&self.pool, projector).await.map(Some);
        }
        rebuilds::read(&self.pool, projector).await
    }

    async fn stage(
        &self,
        projector: &str,
        generation: u64,
        documents: Vec<StagedDocument>,
        read_up_to: Option<u64>,
    ) -> Result<Rebuild, StoreError> {
        rebuilds::stage(&self.pool, projector, generation, &documents, read_up_to).await
    }

    async fn staged_documents(
        &self,
        projector: &str,
        generation: u64,
        after: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<StagedDocument>, StoreError> {
        rebuilds::staged(&self.pool, projector, generation, after, max).await
    }

    async fn abandon_rebuild(&self, projector: &str, generation: u64) -> Result<(), StoreError> {
        rebuilds::abandon(&self.pool, projector, generation).await
    }

    async fn projected_documents(
        &self,
        projector: &str,
        after: Option<&(String, String)>,
        through: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<ProjectedDocument>, StoreError> {
        projections::projected_documents(&self.pool, projector, after, through, max).await
    }

    async fn history(
        &self,
        collection: &str,
        id: &str,
        after: Seq,
        max: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        reads::history(&self.pool, collection, id, after, max).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        reads::snapshot_documents(&self.pool).await
    }

    async fn prune(&self) -> Result<Seq, StoreError> {
        retention::prune(&self.pool, &self.options).await
    }

    async fn revoke(
        &self,
        jti: &str,
        keep_until_ms: Option<i64>,
    ) -> Result<Revocation, StoreError> {
        refuse_invalid_jti(jti)?;
        revocations::revoke(&self.pool, jti, keep_until_ms).await
    }

    async fn recorded_schema(&self) -> Result<Option<RecordedSchema>, StoreError> {
        schema_record::read(&self.pool).await
    }

    async fn record_schema(&self, registry: &Registry) -> Result<(), StoreError> {
        schema_record::record(
            &self.pool,
            registry.descriptor_set(),
            registry.fingerprint(),
        )
        .await
    }

    async fn revocations_after(
        &self,
        after: RevocationSeq,
        max: usize,
    ) -> Result<Vec<Revocation>, StoreError> {
        revocations::revocations_after(&self.pool, after, max).await
    }

    async fn recorded_call(&self, key: &str) -> Result<Option<CallRecord>, StoreError> {
        calls::recorded_call(&self.pool, key).await
    }

    async fn claim_tick(&self, claim: crate::TickClaim) -> Result<Option<u32>, StoreError> {
        schedule_ticks::claim_tick(&self.pool, &claim).await
    }

    async fn finish_tick(
        &self,
        run: &crate::TickRun,
        finished_at_ms: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        schedule_ticks::finish_tick(&self.pool, run, finished_at_ms, outcome, error).await
    }

    async fn schedule_runs(&self, max: usize) -> Result<Vec<crate::TickRun>, StoreError> {
        schedule_ticks::schedule_runs(&self.pool, max).await
    }

    async fn claim_trigger(&self, claim: crate::TriggerClaim) -> Result<Option<Seq>, StoreError> {
        trigger_state::claim_trigger(&self.pool, &claim).await
    }

    async fn advance_trigger(
        &self,
        name: &str,
        node: &str,
        to: Seq,
        parked: Vec<crate::ParkedChange>,
    ) -> Result<bool, StoreError> {
        trigger_state::advance_trigger(&self.pool, name, node, to, &parked).await
    }

    async fn trigger_states(&self) -> Result<Vec<crate::TriggerState>, StoreError> {
        trigger_state::trigger_states(&self.pool).await
    }

    async fn parked_changes(
        &self,
        name: &str,
        max: usize,
    ) -> Result<Vec<crate::ParkedChange>, StoreError> {
        trigger_state::parked_changes(&self.pool, name, max).await
    }

    async fn resolve_parked(&self, name: &str, seq: Seq, id: &str) -> Result<bool, StoreError> {
        trigger_state::resolve_parked(&self.pool, name, seq, id).await
    }

    async fn record_call(&self, record: CallRecord) -> Result<CallRecord, StoreError> {
        calls::record_call(&self.pool, &record).await
    }

    fn commits(&self) -> watch::Receiver<Seq> {
        self.commits.subscribe()
    }

    fn database_secret(&self) -> [u8; 32] {
        self.secret
    }
}
