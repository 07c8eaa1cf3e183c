//! Shared by the sync tests: in-process nodes on real sockets, and the
//! reference model that replays the change log to say what any query
//! returned at any seq.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use protosync_client::wire;
use protosync_engine::Engine;
use protosync_query::{Query, QueryRequest};
use protosync_schema::Registry;
use protosync_server::{AppState, SyncConfig};
use protosync_store::postgres::PostgresStore;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Seq, Store, StoreOptions, StoredDocument, Version};
use protosync_testkit::{TestDatabase, example_schema_dir};
use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn registry() -> Arc<Registry> {
    Arc::new(Registry::load_dir(&example_schema_dir()).unwrap())
}

/// A server on 127.0.0.1 for the life of the value.
pub struct Node {
    pub http: String,
    pub ws: String,
    pub state: AppState,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    pub async fn start(store: Arc<dyn Store>, sync: SyncConfig) -> Node {
        Node::start_with_auth(store, sync, protosync_auth::Authenticator::trusting()).await
    }

    pub async fn start_with_auth(
        store: Arc<dyn Store>,
        sync: SyncConfig,
        auth: protosync_auth::Authenticator,
    ) -> Node {
        Node::start_with_schema(registry(), store, sync, auth).await
    }

    pub async fn start_with_schema(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        sync: SyncConfig,
        auth: protosync_auth::Authenticator,
    ) -> Node {
        let engine = Arc::new(Engine::start(registry, store).await.unwrap());
        let state = AppState::new(engine, sync, auth);
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
            _shutdown: shutdown,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.state.engine.store()
    }

    pub async fn mutate(&self, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/mutate", self.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

/// Where the data lives for a test: a temp dir or a Postgres database.
pub enum Backing {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Backing {
    pub fn sqlite() -> Backing {
        Backing::Sqlite(tempfile::tempdir().unwrap())
    }

    pub async fn postgres() -> Option<Backing> {
        Some(Backing::Postgres(TestDatabase::create().await?))
    }

    /// A store on this data; each call is a separate "process".
    pub async fn store(&self) -> Arc<dyn Store> {
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

pub fn query(
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
pub struct Model {
    registry: Arc<Registry>,
    /// seq → the documents after that commit: (collection, id) → doc
    states: BTreeMap<u64, BTreeMap<(String, String), StoredDocument>>,
}

impl Model {
    pub async fn load(store: &Arc<dyn Store>) -> Model {
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

    pub fn head(&self) -> u64 {
        *self.states.keys().last().unwrap()
    }

    /// (id, seq) the subscription showed at `seq`, in order.
    pub fn result_at(&self, subscribe: &wire::Subscribe, seq: u64) -> Vec<(String, u64)> {
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
                )
                .unwrap();
                let mut docs: Vec<&StoredDocument> = state
                    .iter()
                    .filter(|((c, _), d)| *c == q.collection && query.matches(d))
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

pub fn shown(view: &protosync_client::View, subscription: &str) -> Vec<(String, u64)> {
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

pub fn unused(_: Version) {}
