//! The engine: what a request means, between the gateway and the store.
//!
//! - [`mutation`]: turns a mutation request into validated writes, checks
//!   limits, hashes it for idempotency and commits it.
//! - [`Engine`]: the entry point the gateway holds: mutate, query, get,
//!   readiness, and the background pruning of the change log.
//!
//! It never speaks HTTP or WebSocket, and never touches SQL.

pub mod access;
mod error;
pub mod limits;
pub mod live;
pub mod mutation;

use std::sync::Arc;
use std::time::Duration;

use protosync_query::{Page, Query, QueryRequest};
use protosync_schema::Registry;
use protosync_store::{CommitOutcome, ReadAt, Store, StoredDocument};

pub use error::EngineError;
use live::commit_stream::CommitStream;
use live::index::SubscriptionIndex;
pub use live::session::Session;
pub use mutation::MutationRequest;
pub use protosync_auth::Identity;

/// How often the change log and idempotency records are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub struct Engine {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    stream: Arc<CommitStream>,
    index: Arc<SubscriptionIndex>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.background.iter().for_each(|task| task.abort());
    }
}

impl Engine {
    /// Prepares the store for `registry` (builds changed indexes) and starts
    /// background pruning.
    pub async fn start(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
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
        let (stream, tailer) = CommitStream::start(store.clone(), index.clone()).await?;
        Ok(Engine {
            registry,
            store,
            stream,
            index,
            background: vec![pruner, tailer],
        })
    }

    /// A live session for one connection, starting at `watermark`.
    pub fn open_session(&self, watermark: protosync_store::Seq) -> Session {
        Session::new(
            self.store.clone(),
            self.stream.clone(),
            self.index.clone(),
            watermark,
        )
    }

    /// The commit stream's tail: the newest seq live sessions can reach.
    pub fn tail(&self) -> protosync_store::Seq {
        self.stream.tail_now()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn mutate(
        &self,
        identity: &Identity,
        request: &MutationRequest,
    ) -> Result<CommitOutcome, EngineError> {
        let mut mutation = mutation::prepare(&self.registry, request, &identity.principal())?;
        mutation.authorize = access::write_check(identity, &mutation.ops)?;
        Ok(self.store.commit(mutation).await?)
    }

    pub async fn query(
        &self,
        identity: &Identity,
        request: &QueryRequest,
    ) -> Result<ReadAt<Page>, EngineError> {
        let mut query = Query::compile(&self.registry, request)?;
        query.visibility = access::visibility(identity, &query.collection)?;
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
        let visibility = access::visibility(identity, schema)?;
        let read = self.store.get(collection, id).await?;
        match read
            .value
            .filter(|doc| visibility.as_ref().is_none_or(|v| (v.0)(&doc.body)))
        {
            Some(doc) => Ok(ReadAt {
                seq: read.seq,
                value: doc,
            }),
            None => Err(EngineError::NotFound {
                location: String::new(),
                collection: collection.to_owned(),
                id: id.to_owned(),
            }),
        }
    }

    /// `target` as `identity` may see it.
    pub fn restrict(
        &self,
        identity: &Identity,
        target: &live::subscription::Target,
    ) -> Result<live::subscription::Target, EngineError> {
        access::restrict(identity, target, &self.registry)
    }

    /// Ready when the store answers.
    pub async fn ready(&self) -> Result<protosync_store::Seq, EngineError> {
        Ok(self.store.head().await?)
    }
}
