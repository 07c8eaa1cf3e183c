//! Shared by the sync tests: in-process nodes on real sockets, and the
//! reference model that replays the change log to say what any query
//! returned at any seq.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use protosync_client::wire;
use protosync_core::{Seq, StoredDocument, Version};
use protosync_engine::Engine;
use protosync_query::{Query, QueryRequest};
use protosync_schema::Registry;
use protosync_server::{AppState, SyncConfig};
use protosync_store::postgres::PostgresStore;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};
use protosync_testkit::{TestDatabase, example_schema_dir};
use serde_json::Value;

/// Runs each `async fn name(backing: Backing)` of the test file once on
/// SQLite and once on Postgres (skipped without a server), as
/// `sqlite::name` and `postgres::name`.
#[allow(unused_macros)] // not every test file runs on both stores
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backing::sqlite()).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() {
                   let Some(backing) = super::Backing::postgres().await else { return };
                   super::$name(backing).await
               } )*
        }
    };
}

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// An HTTP client whose requests fail after [`WAIT`] instead of hanging a
/// test run.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("a client with a timeout builds")
}

pub(crate) fn registry() -> Arc<Registry> {
    Arc::new(Registry::load_dir(&example_schema_dir()).unwrap())
}

/// An HS256 token provider: `name`, its issuer and audience, and the shared secret.
pub(crate) fn hs256_provider(
    name: &str,
    issuer: &str,
    audience: &str,
    secret: &str,
) -> protosync_auth::ProviderConfig {
    protosync_auth::ProviderConfig {
        name: name.into(),
        issuer: issuer.into(),
        audience: vec![audience.into()],
        algorithms: vec!["HS256".into()],
        secret: Some(secret.into()),
        jwks_url: None,
        jwks_file: None,
        public_key_pem: None,
        jwks_ttl_seconds: 600,
        jwks_min_refetch_seconds: 10,
        service_role: None,
        required_claims: None,
        max_token_age_seconds: None,
    }
}

/// A forwarded action request's `protosync-timestamp` (0 when absent or
/// unreadable) and `protosync-signature` (empty when absent), as a backend
/// reads them.
pub(crate) fn signature_headers(headers: &axum::http::HeaderMap) -> (u64, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = header(protosync_dispatch::signing::TIMESTAMP_HEADER)
        .parse()
        .unwrap_or(0);
    (
        timestamp,
        header(protosync_dispatch::signing::SIGNATURE_HEADER),
    )
}

/// A server on 127.0.0.1 for the life of the value.
pub(crate) struct Node {
    pub http: String,
    pub ws: String,
    pub state: AppState,
    /// The node's store, for checks against the change log (the engine
    /// hands it to no one).
    store: Arc<dyn Store>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    pub(crate) async fn start(store: Arc<dyn Store>, sync: SyncConfig) -> Node {
        Node::start_with_auth(store, sync, protosync_auth::Authenticator::trusting()).await
    }

    pub(crate) async fn start_with_auth(
        store: Arc<dyn Store>,
        sync: SyncConfig,
        auth: protosync_auth::Authenticator,
    ) -> Node {
        Node::start_with_schema(registry(), store, sync, auth).await
    }

    pub(crate) async fn start_with_schema(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        sync: SyncConfig,
        auth: protosync_auth::Authenticator,
    ) -> Node {
        Node::start_with_backends(registry, store, sync, auth, Default::default()).await
    }

    /// A node whose actions are forwarded to `backends`.
    pub(crate) async fn start_with_backends(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        sync: SyncConfig,
        auth: protosync_auth::Authenticator,
        backends: protosync_dispatch::Backends,
    ) -> Node {
        let engine = Arc::new(Engine::start(registry, store.clone()).await.unwrap());
        let state = AppState::new(engine, sync, auth).with_backends(backends);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(protosync_server::serve(listener, state.clone(), async {
            let _ = stop.await;
        }));
        Node {
            http: format!("http://{address}"),
            ws: format!("ws://{address}/v1/sync"),
            state,
            store,
            _shutdown: shutdown,
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) async fn mutate(&self, body: Value) -> Value {
        let response = http_client()
            .post(format!("{}/v1/mutate", self.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

/// Where the data lives for a test: a temp dir or a Postgres database.
pub(crate) enum Backing {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Backing {
    pub(crate) fn sqlite() -> Backing {
        Backing::Sqlite(tempfile::tempdir().unwrap())
    }

    pub(crate) async fn postgres() -> Option<Backing> {
        Some(Backing::Postgres(TestDatabase::create().await?))
    }

    /// A store on this data; each call is a separate "process".
    pub(crate) async fn store(&self) -> Arc<dyn Store> {
        match self {
            Backing::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("data.db"), StoreOptions::default()).unwrap(),
            ),
            Backing::Postgres(db) => Arc::new(
                PostgresStore::connect(&db.url, 8, StoreOptions::default())
                    .await
                    .unwrap(),
            ),
        }
    }
}

pub(crate) fn query(
    collection: &str,
    filter: Vec<(&str, &str, Value)>,
    order: Vec<(&str, &str)>,
    limit: u32,
) -> wire::Query {
    wire::Query {
        collection: collection.into(),
        filter: filter
            .into_iter()
            .map(|(f, op, v)| wire::Condition {
                field: f.into(),
                op: op.into(),
                value: Some(protosync_protocol::json_to_value(&v)),
            })
            .collect(),
        order_by: order
            .into_iter()
            .map(|(f, d)| wire::Order {
                field: f.into(),
                direction: d.into(),
            })
            .collect(),
        limit,
        cursor: String::new(),
    }
}

/// The store's history, replayed from its change log.
pub(crate) struct Model {
    registry: Arc<Registry>,
    /// seq → the documents after that commit: (collection, id) → doc
    states: BTreeMap<u64, BTreeMap<(String, String), StoredDocument>>,
}

impl Model {
    pub(crate) async fn load(store: &Arc<dyn Store>) -> Model {
        let mut states = BTreeMap::new();
        let mut current: BTreeMap<(String, String), StoredDocument> = BTreeMap::new();
        states.insert(0, current.clone());
        let mut after = Seq::ZERO;
        loop {
            let batch = store.read_log(after, 1000).await.unwrap();
            if batch.is_empty() {
                break;
            }
            for commit in batch {
                for change in commit.changes {
                    let key = (change.collection, change.id.clone());
                    match change.body {
                        Some(body) => current.insert(
                            key,
                            StoredDocument {
                                id: change.id,
                                version: change.version,
                                seq: commit.seq,
                                body,
                            },
                        ),
                        None => current.remove(&key),
                    };
                }
                after = commit.seq;
                states.insert(commit.seq.0, current.clone());
            }
        }
        Model {
            registry: registry(),
            states,
        }
    }

    pub(crate) fn head(&self) -> u64 {
        *self.states.keys().last().unwrap()
    }

    /// Every document after commit `seq`: (collection, id) → document.
    pub(crate) fn documents_at(&self, seq: u64) -> &BTreeMap<(String, String), StoredDocument> {
        &self.states[&seq]
    }

    /// (id, seq) the subscription showed at `seq`, in order.
    pub(crate) fn result_at(&self, subscribe: &wire::Subscribe, seq: u64) -> Vec<(String, u64)> {
        let state = &self.states[&seq];
        match subscribe.target.as_ref().unwrap() {
            wire::subscribe::Target::Get(get) => state
                .get(&(get.collection.clone(), get.id.clone()))
                .map(|d| vec![(d.id.clone(), d.seq.0)])
                .unwrap_or_default(),
            wire::subscribe::Target::Query(q) => {
                let request = QueryRequest {
                    collection: q.collection.clone(),
                    filter: q
                        .filter
                        .iter()
                        .map(|c| protosync_query::query::ConditionRequest {
                            field: c.field.clone(),
                            op: c.op.clone(),
                            value: protosync_protocol::value_to_json(c.value.as_ref().unwrap()),
                        })
                        .collect(),
                    order_by: q
                        .order_by
                        .iter()
                        .map(|o| protosync_query::query::OrderRequest {
                            field: o.field.clone(),
                            direction: Some(o.direction.clone()),
                        })
                        .collect(),
                    limit: Some(u64::from(q.limit)),
                    cursor: None,
                };
                let query = Query::compile(
                    &self.registry,
                    &request,
                    &protosync_query::CursorSeal::from_database_secret(&[0; 32]),
                    protosync_query::ReadScope::Everything,
                )
                .unwrap();
                let mut docs: Vec<&StoredDocument> = state
                    .iter()
                    .filter(|((c, _), d)| *c == q.collection && query.filter_matches(&d.body))
                    .map(|(_, d)| d)
                    .collect();
                docs.sort_by_key(|d| query.sort_key(d));
                docs.into_iter()
                    .take(query.limit)
                    .map(|d| (d.id.clone(), d.seq.0))
                    .collect()
            }
        }
    }
}

pub(crate) fn shown(view: &protosync_client::View, subscription: &str) -> Vec<(String, u64)> {
    view.subscriptions
        .get(subscription)
        .map(|s| {
            s.documents()
                .iter()
                .map(|d| (d.id.clone(), d.seq))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn unused(_: Version) {}

/// Whether a request reached the store bound by its caller's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    /// `query` or `get` with a rule's read scope.
    ReadByRule,
    /// `query` or `get` seeing everything (a trusted service).
    ReadEverything,
    /// `commit` checked op by op by the write rule.
    WriteByRule,
    /// `commit` of a trusted service.
    WriteTrusted,
}

/// A store that records, for every read and write it is asked for, whether
/// the caller's rules came with it; everything else passes through.
pub(crate) struct RecordingStore {
    inner: Arc<dyn Store>,
    pub reached: std::sync::Mutex<Vec<Reached>>,
}

impl RecordingStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> RecordingStore {
        RecordingStore {
            inner,
            reached: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn record(&self, reached: Reached) {
        self.reached.lock().unwrap().push(reached);
    }

    fn read(&self, scope: &protosync_query::ReadScope) {
        self.record(match scope {
            protosync_query::ReadScope::Everything => Reached::ReadEverything,
            protosync_query::ReadScope::Rule(_) => Reached::ReadByRule,
        });
    }
}

#[async_trait::async_trait]
impl Store for RecordingStore {
    async fn sync_indexes(&self, registry: &Registry) -> Result<(), protosync_store::StoreError> {
        self.inner.sync_indexes(registry).await
    }

    async fn commit(
        &self,
        mutation: protosync_store::Mutation,
    ) -> Result<protosync_store::CommitOutcome, protosync_store::StoreError> {
        self.record(match &mutation.access {
            protosync_store::WriteAccess::Trusted => Reached::WriteTrusted,
            protosync_store::WriteAccess::Checked(_) => Reached::WriteByRule,
        });
        self.inner.commit(mutation).await
    }

    async fn get(
        &self,
        collection: &str,
        id: &str,
        scope: &protosync_query::ReadScope,
    ) -> Result<protosync_store::ReadAt<Option<StoredDocument>>, protosync_store::StoreError> {
        self.read(scope);
        self.inner.get(collection, id, scope).await
    }

    async fn query(
        &self,
        query: &Query,
    ) -> Result<protosync_store::ReadAt<protosync_query::Page>, protosync_store::StoreError> {
        self.read(&query.scope);
        self.inner.query(query).await
    }

    async fn read_log(
        &self,
        after: Seq,
        max_commits: usize,
    ) -> Result<Vec<protosync_store::CommitRecord>, protosync_store::StoreError> {
        self.inner.read_log(after, max_commits).await
    }

    async fn head(&self) -> Result<Seq, protosync_store::StoreError> {
        self.inner.head().await
    }

    async fn history(
        &self,
        collection: &str,
        id: &str,
        after: Seq,
        max: usize,
    ) -> Result<Vec<protosync_store::HistoryEntry>, protosync_store::StoreError> {
        self.inner.history(collection, id, after, max).await
    }

    async fn snapshot(&self) -> Result<protosync_store::Snapshot, protosync_store::StoreError> {
        self.inner.snapshot().await
    }

    async fn checkpoint(
        &self,
        projector: &str,
    ) -> Result<Option<protosync_store::Checkpoint>, protosync_store::StoreError> {
        self.inner.checkpoint(projector).await
    }

    async fn rebuild(
        &self,
        projector: &str,
        start: bool,
    ) -> Result<Option<protosync_store::Rebuild>, protosync_store::StoreError> {
        self.inner.rebuild(projector, start).await
    }

    async fn stage(
        &self,
        projector: &str,
        generation: u64,
        documents: Vec<protosync_store::StagedDocument>,
        read_up_to: Option<u64>,
    ) -> Result<protosync_store::Rebuild, protosync_store::StoreError> {
        self.inner
            .stage(projector, generation, documents, read_up_to)
            .await
    }

    async fn staged_documents(
        &self,
        projector: &str,
        generation: u64,
        after: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<protosync_store::StagedDocument>, protosync_store::StoreError> {
        self.inner
            .staged_documents(projector, generation, after, max)
            .await
    }

    async fn abandon_rebuild(
        &self,
        projector: &str,
        generation: u64,
    ) -> Result<(), protosync_store::StoreError> {
        self.inner.abandon_rebuild(projector, generation).await
    }

    async fn projected_documents(
        &self,
        projector: &str,
        after: Option<&(String, String)>,
        through: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<protosync_store::ProjectedDocument>, protosync_store::StoreError> {
        self.inner
            .projected_documents(projector, after, through, max)
            .await
    }

    async fn log_floor(&self) -> Result<Seq, protosync_store::StoreError> {
        self.inner.log_floor().await
    }

    async fn prune(&self) -> Result<Seq, protosync_store::StoreError> {
        self.inner.prune().await
    }

    async fn recorded_schema(
        &self,
    ) -> Result<Option<protosync_store::RecordedSchema>, protosync_store::StoreError> {
        self.inner.recorded_schema().await
    }

    async fn record_schema(&self, registry: &Registry) -> Result<(), protosync_store::StoreError> {
        self.inner.record_schema(registry).await
    }

    async fn revoke(
        &self,
        jti: &str,
        keep_until_ms: Option<i64>,
    ) -> Result<protosync_store::Revocation, protosync_store::StoreError> {
        self.inner.revoke(jti, keep_until_ms).await
    }

    async fn revocations_after(
        &self,
        after: protosync_store::RevocationSeq,
        max: usize,
    ) -> Result<Vec<protosync_store::Revocation>, protosync_store::StoreError> {
        self.inner.revocations_after(after, max).await
    }

    async fn recorded_call(
        &self,
        key: &str,
    ) -> Result<Option<protosync_store::CallRecord>, protosync_store::StoreError> {
        self.inner.recorded_call(key).await
    }

    async fn claim_tick(
        &self,
        claim: protosync_store::TickClaim,
    ) -> Result<Option<u32>, protosync_store::StoreError> {
        self.inner.claim_tick(claim).await
    }

    async fn finish_tick(
        &self,
        run: &protosync_store::TickRun,
        finished_at_ms: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), protosync_store::StoreError> {
        self.inner
            .finish_tick(run, finished_at_ms, outcome, error)
            .await
    }

    async fn schedule_runs(
        &self,
        max: usize,
    ) -> Result<Vec<protosync_store::TickRun>, protosync_store::StoreError> {
        self.inner.schedule_runs(max).await
    }

    async fn claim_trigger(
        &self,
        claim: protosync_store::TriggerClaim,
    ) -> Result<Option<Seq>, protosync_store::StoreError> {
        self.inner.claim_trigger(claim).await
    }

    async fn advance_trigger(
        &self,
        name: &str,
        node: &str,
        to: Seq,
        parked: Vec<protosync_store::ParkedChange>,
    ) -> Result<bool, protosync_store::StoreError> {
        self.inner.advance_trigger(name, node, to, parked).await
    }

    async fn trigger_states(
        &self,
    ) -> Result<Vec<protosync_store::TriggerState>, protosync_store::StoreError> {
        self.inner.trigger_states().await
    }

    async fn parked_changes(
        &self,
        name: &str,
        max: usize,
    ) -> Result<Vec<protosync_store::ParkedChange>, protosync_store::StoreError> {
        self.inner.parked_changes(name, max).await
    }

    async fn resolve_parked(
        &self,
        name: &str,
        seq: Seq,
        id: &str,
    ) -> Result<bool, protosync_store::StoreError> {
        self.inner.resolve_parked(name, seq, id).await
    }

    async fn record_call(
        &self,
        record: protosync_store::CallRecord,
    ) -> Result<protosync_store::CallRecord, protosync_store::StoreError> {
        self.inner.record_call(record).await
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<Seq> {
        self.inner.commits()
    }

    fn database_secret(&self) -> [u8; 32] {
        self.inner.database_secret()
    }
}
