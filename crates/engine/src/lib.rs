//! The engine: what a request means, between the gateway and the store.
//!
//! - [`mutation`]: turns a mutation request into validated writes, checks
//!   limits, hashes it for idempotency and commits it.
//! - [`projection`]: a projector's batch as one commit, its checkpoint and
//!   the drift check.
//! - [`Engine`]: the entry point the gateway holds: mutate, query, get,
//!   readiness, and the background pruning of the change log.
//!
//! It never speaks HTTP or WebSocket, and never touches SQL.

pub mod access;
pub mod audit;
pub mod changes;
mod error;
pub mod limits;
pub mod live;
pub mod mutation;
pub mod projection;

use std::sync::Arc;
use std::time::Duration;

use protosync_core::{Seq, StoredDocument, Watermark};
use protosync_query::{CursorSeal, Page, QueryRequest};
use protosync_schema::Registry;
use protosync_store::{
    CallRecord, Checkpoint, CommitOutcome, ReadAt, Rebuild, Revocation, RevocationSeq, Store,
    TickClaim, TickRun,
};

pub use error::EngineError;
use live::commit_stream::CommitStream;
pub use live::subscription::{Target, TargetRequest};
use live::subscription_index::SubscriptionIndex;
pub use live::view::{LiveView, ResetReason};
pub use mutation::MutationRequest;
pub use protosync_auth::Identity;

/// Versions one history read returns at most; page on with `after`.
pub const MAX_HISTORY_PAGE: usize = 1_000;

/// How often the change log and idempotency records are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Where a live view that resumes from a claimed watermark starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// The watermark the view starts at: the claimed one, or 0 when the
    /// claim is ahead of this database.
    pub watermark: Watermark,
    /// The oldest watermark a resume can start from without a reset.
    pub floor: Seq,
    /// `Some` when the client's held state cannot be diffed: everything it
    /// holds is replaced.
    pub reset: Option<ResetReason>,
}

/// Settings of the engine's live path.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Budget of the in-memory buffer of recent commits, in bytes; commits
    /// beyond it are read from the store's log when a connection needs them. Default
    /// [`DEFAULT_COMMIT_BUFFER_BYTES`](live::commit_stream::DEFAULT_COMMIT_BUFFER_BYTES), 64 MiB.
    pub commit_buffer_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            commit_buffer_bytes: live::commit_stream::DEFAULT_COMMIT_BUFFER_BYTES,
        }
    }
}

/// The entry point the gateway holds, one per process: it owns the registry, the store,
/// the commit stream and the subscription index, and answers mutations, queries, gets
/// and live views with the caller's access applied. Dropping it stops its background
/// tasks.
pub struct Engine {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    cursor_seal: CursorSeal,
    stream: Arc<CommitStream>,
    index: Arc<SubscriptionIndex>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.background
            .iter()
            .for_each(tokio::task::JoinHandle::abort);
    }
}

impl Engine {
    /// Prepares the store for `registry` (builds changed indexes) and starts
    /// background pruning.
    pub async fn start(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
    ) -> Result<Engine, EngineError> {
        Engine::start_with(registry, store, EngineOptions::default()).await
    }

    /// [`Engine::start`] with explicit options.
    pub async fn start_with(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        store.sync_indexes(&registry).await?;
        let pruner = tokio::spawn({
            let store = store.clone();
            async move {
                let mut every = tokio::time::interval(PRUNE_INTERVAL);
                loop {
                    every.tick().await;
                    if let Err(e) = store.prune().await {
                        tracing::warn!(error = %e, "pruning the change log failed");
                    }
                }
            }
        });
        let index = Arc::new(SubscriptionIndex::default());
        let (stream, tailer) =
            CommitStream::start(store.clone(), index.clone(), options.commit_buffer_bytes).await?;
        Ok(Engine {
            registry,
            cursor_seal: CursorSeal::from_database_secret(&store.database_secret()),
            store,
            stream,
            index,
            background: vec![pruner, tailer],
        })
    }

    /// A live view for one connection, starting at `watermark`.
    pub fn open_view(&self, watermark: Watermark) -> LiveView {
        LiveView::new(
            self.store.clone(),
            self.stream.clone(),
            self.index.clone(),
            watermark,
        )
    }

    /// The commit stream's tail: the newest seq live views can reach.
    pub fn tail(&self) -> protosync_core::Seq {
        self.stream.tail_now()
    }

    /// The commit buffer's estimated bytes and commit count (for metrics
    /// and for tests of its budget).
    pub fn commit_buffer(&self) -> (usize, usize) {
        self.stream.buffered()
    }

    /// The schema this engine serves.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Seals and opens the page cursors of this database's queries.
    pub fn cursor_seal(&self) -> &CursorSeal {
        &self.cursor_seal
    }

    /// Checks a mutation against the schema, the limits and `identity`'s write access, and
    /// commits it atomically; a retry with the same idempotency key returns the first
    /// outcome.
    /// `request_id` is kept with the commit for the change feed.
    pub async fn mutate(
        &self,
        identity: &Identity,
        request: &MutationRequest,
        request_id: Option<&str>,
    ) -> Result<CommitOutcome, EngineError> {
        let mut mutation = mutation::prepare(&self.registry, request, identity)?;
        mutation.audit = audit::audit(identity, request_id);
        Ok(self.store.commit(mutation).await?)
    }

    /// Commits a projector's batch as one commit: each document applied,
    /// stale or unchanged, the checkpoint moved with them.
    pub async fn apply_projection(
        &self,
        identity: &Identity,
        projector: &str,
        request: &projection::ProjectionRequest,
        request_id: Option<&str>,
    ) -> Result<projection::ProjectionOutcome, EngineError> {
        let mut mutation = projection::prepare(&self.registry, projector, request, identity)?;
        mutation.audit = audit::audit(identity, request_id);
        let committed = self.store.commit(mutation.clone()).await?;
        Ok(projection::outcome(&mutation, committed))
    }

    /// The change feed: up to `max` commits after `after`, in seq order,
    /// with their audit records, for services only. With `collections`,
    /// each commit keeps only changes to those, and commits left with none
    /// are skipped; `through` says how far the read went either way. A
    /// service limited to some collections sees only those.
    pub async fn changes(
        &self,
        identity: &Identity,
        after: Seq,
        collections: Option<&[String]>,
        max: usize,
    ) -> Result<changes::ChangePage, EngineError> {
        changes::read(&*self.store, identity, after, collections, max).await
    }

    /// Up to [`MAX_HISTORY_PAGE`] kept versions of a document of a
    /// `keep_history` collection, in seq order, written after seq `after`.
    /// Services only: history is an audit trail, past every read rule.
    pub async fn history(
        &self,
        identity: &Identity,
        collection: &str,
        id: &str,
        after: Seq,
    ) -> Result<Vec<protosync_store::HistoryEntry>, EngineError> {
        let schema = self
            .registry
            .collection(collection)
            .ok_or_else(|| EngineError::UnknownCollection(collection.to_owned()))?;
        if !matches!(identity, Identity::Service { .. }) {
            return Err(EngineError::Forbidden {
                code: protosync_core::ErrorCode::PermissionDenied,
                message: "document history is for services only".into(),
            });
        }
        access::service_may_use(identity, collection)?;
        if !schema.keep_history {
            return Err(EngineError::BadRequest(format!(
                "collection {collection:?} does not keep history (set keep_history in its option)"
            )));
        }
        Ok(self
            .store
            .history(collection, id, after, MAX_HISTORY_PAGE)
            .await?)
    }

    /// A watch on the newest seq this process knows committed: a change
    /// feed waits on it for news.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<Seq> {
        self.store.commits()
    }

    /// A projector's checkpoint; `None` before its first batch.
    pub async fn checkpoint(
        &self,
        identity: &Identity,
        projector: &str,
    ) -> Result<Option<Checkpoint>, EngineError> {
        projection::require_service(identity)?;
        projection::check_projector(projector)?;
        Ok(self.store.checkpoint(projector).await?)
    }

    /// `projector`'s rebuild in progress; `start`: start one if there is
    /// none (resuming the one there is otherwise).
    pub async fn rebuild(
        &self,
        identity: &Identity,
        projector: &str,
        start: bool,
    ) -> Result<Option<Rebuild>, EngineError> {
        projection::require_service(identity)?;
        projection::check_projector(projector)?;
        Ok(self.store.rebuild(projector, start).await?)
    }

    /// Stages a batch into rebuild `generation`: validated like a batch,
    /// invisible until the swap.
    pub async fn stage(
        &self,
        identity: &Identity,
        projector: &str,
        generation: u64,
        request: &projection::ProjectionRequest,
    ) -> Result<Rebuild, EngineError> {
        let documents = projection::prepare_staged(&self.registry, projector, request, identity)?;
        Ok(self
            .store
            .stage(projector, generation, documents, request.checkpoint)
            .await?)
    }

    /// Swaps rebuild `generation` in with one commit.
    pub async fn swap(
        &self,
        identity: &Identity,
        projector: &str,
        generation: u64,
    ) -> Result<projection::SwapOutcome, EngineError> {
        projection::swap(
            &*self.store,
            &self.registry,
            identity,
            projector,
            generation,
        )
        .await
    }

    /// Drops rebuild `generation` and what it staged.
    pub async fn abandon_rebuild(
        &self,
        identity: &Identity,
        projector: &str,
        generation: u64,
    ) -> Result<(), EngineError> {
        projection::require_service(identity)?;
        projection::check_projector(projector)?;
        Ok(self.store.abandon_rebuild(projector, generation).await?)
    }

    /// One page of the drift check (see [`projection::DriftRequest`]).
    pub async fn drift(
        &self,
        identity: &Identity,
        projector: &str,
        request: &projection::DriftRequest,
    ) -> Result<projection::DriftReport, EngineError> {
        projection::require_service(identity)?;
        projection::drift(&*self.store, projector, request).await
    }

    /// One page of a query, filtered by what `identity` may read, consistent at one seq.
    pub async fn query(
        &self,
        identity: &Identity,
        request: &QueryRequest,
    ) -> Result<ReadAt<Page>, EngineError> {
        let query = access::query(identity, &self.registry, &self.cursor_seal, request)?;
        Ok(self.store.query(&query).await?)
    }

    /// One document; `NOT_FOUND` when it does not exist or the identity may
    /// not see it (its existence is not revealed).
    pub async fn get(
        &self,
        identity: &Identity,
        collection: &str,
        id: &str,
    ) -> Result<ReadAt<StoredDocument>, EngineError> {
        let schema = self
            .registry
            .collection(collection)
            .ok_or_else(|| EngineError::UnknownCollection(collection.to_owned()))?;
        let scope = access::read_scope(identity, schema, &self.registry)?;
        let read = self.store.get(collection, id, &scope).await?;
        match read.value {
            Some(doc) => Ok(ReadAt {
                seq: read.seq,
                value: doc,
                looked_up: read.looked_up,
            }),
            None => Err(EngineError::NotFound {
                location: String::new(),
                collection: collection.to_owned(),
                id: id.to_owned(),
            }),
        }
    }

    /// What `identity` may watch of `request`: the only way to make a
    /// subscription's target, so none exists without its reader's rules.
    pub fn target(
        &self,
        identity: &Identity,
        request: &TargetRequest,
    ) -> Result<Target, EngineError> {
        access::target(identity, &self.registry, &self.cursor_seal, request)
    }

    /// `target` as another identity may see it (a refreshed or switched
    /// token on a live connection).
    pub fn rescope(&self, identity: &Identity, target: &Target) -> Result<Target, EngineError> {
        access::rescope(identity, target, &self.registry)
    }

    /// Where a live view resuming from `claimed` starts (see [`ResumePoint`]).
    pub async fn resume_point(&self, claimed: Seq) -> Result<ResumePoint, EngineError> {
        let floor = self.store.log_floor().await?;
        let head = self.store.head().await?;
        let (watermark, reset) = if claimed > head {
            // Not a seq of this database (another one, or restored from backup).
            (Seq::ZERO, Some(ResetReason::UnknownWatermark))
        } else if claimed < floor {
            (claimed, Some(ResetReason::WatermarkTooOld { floor }))
        } else {
            (claimed, None)
        };
        Ok(ResumePoint {
            watermark: Watermark::at(watermark),
            floor,
            reset,
        })
    }

    /// Records a revocation of `jti` in the store, for every process on it.
    pub async fn revoke(
        &self,
        jti: &str,
        keep_until_ms: Option<i64>,
    ) -> Result<Revocation, EngineError> {
        Ok(self.store.revoke(jti, keep_until_ms).await?)
    }

    /// Up to `max` revocations recorded after `after`, in order.
    pub async fn revocations_after(
        &self,
        after: RevocationSeq,
        max: usize,
    ) -> Result<Vec<Revocation>, EngineError> {
        Ok(self.store.revocations_after(after, max).await?)
    }

    /// The completed action call recorded under idempotency key `key`.
    pub async fn recorded_call(&self, key: &str) -> Result<Option<CallRecord>, EngineError> {
        Ok(self.store.recorded_call(key).await?)
    }

    /// Records a completed action call; the first record of a key wins and
    /// is returned.
    pub async fn record_call(&self, record: CallRecord) -> Result<CallRecord, EngineError> {
        Ok(self.store.record_call(record).await?)
    }

    /// Claims a schedule's tick for a node (see [`Store::claim_tick`]).
    pub async fn claim_tick(&self, claim: TickClaim) -> Result<Option<u32>, EngineError> {
        Ok(self.store.claim_tick(claim).await?)
    }

    /// Records the end of a tick's attempt by its holder.
    pub async fn finish_tick(
        &self,
        run: &TickRun,
        finished_at_ms: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        Ok(self
            .store
            .finish_tick(run, finished_at_ms, outcome, error)
            .await?)
    }

    /// Up to `max` schedule runs, newest tick first.
    pub async fn schedule_runs(&self, max: usize) -> Result<Vec<TickRun>, EngineError> {
        Ok(self.store.schedule_runs(max).await?)
    }

    /// Claims or renews a trigger's lease (see [`Store::claim_trigger`]).
    pub async fn claim_trigger(
        &self,
        claim: protosync_store::TriggerClaim,
    ) -> Result<Option<Seq>, EngineError> {
        Ok(self.store.claim_trigger(claim).await?)
    }

    /// Moves a trigger's checkpoint (see [`Store::advance_trigger`]).
    pub async fn advance_trigger(
        &self,
        name: &str,
        node: &str,
        to: Seq,
        parked: Vec<protosync_store::ParkedChange>,
    ) -> Result<bool, EngineError> {
        Ok(self.store.advance_trigger(name, node, to, parked).await?)
    }

    /// Every trigger's stored state.
    pub async fn trigger_states(&self) -> Result<Vec<protosync_store::TriggerState>, EngineError> {
        Ok(self.store.trigger_states().await?)
    }

    /// Up to `max` of a trigger's parked changes, in seq order.
    pub async fn parked_changes(
        &self,
        name: &str,
        max: usize,
    ) -> Result<Vec<protosync_store::ParkedChange>, EngineError> {
        Ok(self.store.parked_changes(name, max).await?)
    }

    /// Drops a parked change once a retry delivered it.
    pub async fn resolve_parked(
        &self,
        name: &str,
        seq: Seq,
        id: &str,
    ) -> Result<bool, EngineError> {
        Ok(self.store.resolve_parked(name, seq, id).await?)
    }

    /// The change log's floor: the oldest seq a read after it can start from.
    pub async fn log_floor(&self) -> Result<Seq, EngineError> {
        Ok(self.store.log_floor().await?)
    }

    /// Ready when the store answers.
    pub async fn ready(&self) -> Result<protosync_core::Seq, EngineError> {
        Ok(self.store.head().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protosync_store::sqlite::SqliteStore;

    /// Large commits keep the buffer within its byte budget; the commits it
    /// evicted are still there for a connection that needs them, from the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_commit_buffer_stays_within_its_byte_budget() {
        const BUDGET: usize = 1024 * 1024;
        const COMMITS: usize = 30;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("data.db"), Default::default()).unwrap();
        let registry = Registry::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/schema"),
        )
        .unwrap();
        let engine = Engine::start_with(
            Arc::new(registry),
            Arc::new(store),
            EngineOptions {
                commit_buffer_bytes: BUDGET,
            },
        )
        .await
        .unwrap();
        let service = Identity::Service {
            name: "test".into(),
            collections: None,
            jti: None,
            expires_at: None,
        };
        let mut tail = engine.stream.tail();
        for i in 0..COMMITS {
            let request: MutationRequest = serde_json::from_value(serde_json::json!({"ops": [
                {"upsert": {"collection": "work_items", "id": format!("w{i}"),
                            "doc": {"title": "x".repeat(200 * 1024)}}}]}))
            .unwrap();
            let seq = engine.mutate(&service, &request, None).await.unwrap().seq;
            tail.wait_for(|t| *t >= seq).await.unwrap();
            let (bytes, _) = engine.commit_buffer();
            assert!(bytes <= BUDGET, "after commit {i}: {bytes} bytes buffered");
        }
        let (_, buffered) = engine.commit_buffer();
        assert!(
            (1..COMMITS).contains(&buffered),
            "{buffered} commits buffered: the oldest were evicted, the newest kept"
        );
        let all = engine
            .stream
            .commits(Seq::ZERO, engine.tail())
            .await
            .unwrap();
        let seqs: Vec<u64> = all.iter().map(|c| c.seq.0).collect();
        assert_eq!(seqs, (1..=COMMITS as u64).collect::<Vec<_>>());
    }
}
