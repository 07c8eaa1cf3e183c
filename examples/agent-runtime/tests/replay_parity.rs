//! Replay parity, on SQLite and Postgres: projecting the whole log from
//! scratch leaves the same documents, with the same hashes, as projecting
//! it incrementally through duplicates, retries that arrive out of order,
//! a projector killed at random points and a server killed with a batch in
//! flight; and a rebuild of the chaotic server from the whole log changes
//! nothing.

use std::sync::Arc;

use protosync_engine::Engine;
use protosync_example_agent_runtime::log::{Logged, simulate};
use protosync_example_agent_runtime::projector::{self, PROJECTOR, Projector};
use protosync_example_agent_runtime::read_models::Projected;
use protosync_schema::Registry;
use protosync_store::postgres::PostgresStore;
use protosync_store::projection::content_hash;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};
use protosync_testkit::{TestDatabase, example_schema_dir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Events in the simulated log.
const EVENTS: usize = 1_500;

/// Where a server's data lives, so a killed server can be started again on it.
enum Data {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Data {
    async fn store(&self) -> Arc<dyn Store> {
        match self {
            Data::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("data.db"), StoreOptions::default()).unwrap(),
            ),
            Data::Postgres(db) => Arc::new(
                PostgresStore::connect(&db.url, 4, StoreOptions::default())
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// A server on 127.0.0.1; dropping it kills it (its task is aborted, not
/// shut down: in-flight requests are cut off).
struct Server {
    base: String,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(data: &Data) -> Server {
        let registry = Arc::new(Registry::load_dir(&example_schema_dir()).unwrap());
        let engine = Arc::new(Engine::start(registry, data.store().await).await.unwrap());
        let state = protosync_server::AppState::new(
            engine,
            protosync_server::SyncConfig::default(),
            protosync_auth::Authenticator::trusting(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(protosync_server::serve(
            listener,
            state,
            std::future::pending(),
        ));
        Server { base, task }
    }

    /// Every document of the projected collections: (collection, id) → body.
    async fn documents(&self) -> Vec<(String, String, Value)> {
        let http = reqwest::Client::new();
        let mut all = Vec::new();
        for collection in ["run_summary", "codex_worker_summary"] {
            let mut cursor = Value::Null;
            loop {
                let mut request = json!({"collection": collection, "limit": 1000});
                if !cursor.is_null() {
                    request["cursor"] = cursor.clone();
                }
                let page: Value = http
                    .post(format!("{}/v1/query", self.base))
                    .json(&request)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for d in page["documents"].as_array().unwrap() {
                    all.push((
                        collection.to_owned(),
                        d["id"].as_str().unwrap().to_owned(),
                        d["doc"].clone(),
                    ));
                }
                cursor = page["nextCursor"].clone();
                if cursor.is_null() {
                    break;
                }
            }
        }
        all
    }

    async fn checkpoint(&self) -> Value {
        reqwest::get(format!("{}/v1/projections/{PROJECTOR}", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The whole log, in order, into an empty store.
async fn from_scratch(data: &Data, log: &[Logged]) -> Vec<(String, String, Value)> {
    let server = Server::start(data).await;
    let mut projector = Projector::resume(&server.base, log).await.unwrap();
    projector.run(log, 200).await.unwrap();
    server.documents().await
}

/// The same log through everything that goes wrong in production.
async fn with_chaos(data: &Data, log: &[Logged], seed: u64) -> Server {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start(data).await;
    let mut projector = Projector::resume(&server.base, log).await.unwrap();
    // Batches already applied, to send again later: a retry whose answer
    // was lost arrives after newer batches.
    let mut sent: Vec<Vec<Projected>> = Vec::new();
    let (mut kills, mut crashes, mut resends) = (0, 0, 0);
    for round in 0.. {
        if projector.position() >= log.len() as u64 {
            break;
        }
        let (batch, models) = projector.next_batch(log, rng.random_range(1..60));
        // Random trouble, and each kind at least once early on.
        let trouble = match round {
            3 => 0,
            6 => 6,
            9 => 10,
            _ => rng.random_range(0..100),
        };
        match trouble {
            // The projector dies before it learns the batch was applied,
            // or before it sends it at all; it starts again from the
            // checkpoint.
            0..6 => {
                if rng.random_bool(0.5) {
                    projector.send(&batch).await.unwrap();
                }
                drop(projector);
                projector = Projector::resume(&server.base, log).await.unwrap();
                kills += 1;
                continue;
            }
            // The server dies with the batch in flight: it may or may not
            // have committed. Both come back; the projector resumes.
            6..10 => {
                let request = {
                    let batch = batch.clone();
                    let base = server.base.clone();
                    tokio::spawn(async move {
                        let http = reqwest::Client::new();
                        projector::send(&http, &base, "apply", &batch).await
                    })
                };
                if rng.random_bool(0.5) {
                    tokio::task::yield_now().await;
                }
                drop(server);
                let _ = request.await;
                server = Server::start(data).await;
                projector = Projector::resume(&server.base, log).await.unwrap();
                crashes += 1;
                continue;
            }
            // A duplicate of the batch, right away.
            10..25 => {
                projector.send(&batch).await.unwrap();
                resends += 1;
            }
            _ => {}
        }
        projector.send(&batch).await.unwrap();
        // An old batch arrives late: every document in it is stale or
        // unchanged by now.
        if !sent.is_empty() && rng.random_bool(0.2) {
            let late = &sent[rng.random_range(0..sent.len())];
            let statuses = projector.send(late).await.unwrap();
            assert!(
                statuses.iter().all(|s| s != "applied"),
                "seed {seed}: a late retry applied something: {statuses:?}"
            );
            resends += 1;
        }
        projector.sent(&batch, models);
        sent.push(batch);
    }
    eprintln!("seed {seed}: {kills} projector kills, {crashes} server kills, {resends} resends");
    assert!(
        kills > 0 && crashes > 0 && resends > 0,
        "seed {seed}: the run must go through every kind of trouble"
    );
    server
}

async fn replay_parity(scratch: Data, chaos: Data) {
    let seed = protosync_testkit::seed();
    let log = simulate(seed, EVENTS);
    let expected = from_scratch(&scratch, &log).await;
    let server = with_chaos(&chaos, &log, seed).await;
    let got = server.documents().await;
    assert!(!expected.is_empty());
    assert_eq!(got.len(), expected.len(), "seed {seed}: the same documents");
    for (want, have) in expected.iter().zip(&got) {
        assert_eq!(want, have, "seed {seed}");
        assert_eq!(content_hash(&want.2), content_hash(&have.2));
    }
    let checkpoint = server.checkpoint().await;
    assert_eq!(checkpoint["sourceSeq"], EVENTS.to_string(), "{checkpoint}");
    assert_eq!(checkpoint["documents"], expected.len().to_string());

    // The drift check agrees: every expected document, by its hash.
    let expected_hashes: Vec<Value> = expected
        .iter()
        .map(|(c, id, body)| json!({"collection": c, "id": id, "hash": content_hash(body)}))
        .collect();
    let mut keys = expected_hashes.clone();
    keys.sort_by(|a, b| {
        (a["collection"].as_str(), a["id"].as_str())
            .cmp(&(b["collection"].as_str(), b["id"].as_str()))
    });
    let drift: Value = reqwest::Client::new()
        .post(format!("{}/v1/projections/{PROJECTOR}/drift", server.base))
        .json(&json!({"expected": keys, "last": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for list in ["differ", "missing", "unexpected"] {
        assert_eq!(drift[list], json!([]), "seed {seed}: {drift}");
    }

    // A rebuild from the whole log over the chaotic result swaps in
    // nothing new.
    let swapped = projector::rebuild(&server.base, &log, 500).await.unwrap();
    assert_eq!(swapped["applied"], "0", "seed {seed}: {swapped}");
    assert_eq!(server.documents().await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replay_from_scratch_equals_incremental_projection_through_crashes() {
    let dir = || Data::Sqlite(tempfile::tempdir().unwrap());
    replay_parity(dir(), dir()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replay_from_scratch_equals_incremental_projection_through_crashes() {
    let (Some(a), Some(b)) = (TestDatabase::create().await, TestDatabase::create().await) else {
        return;
    };
    replay_parity(Data::Postgres(a), Data::Postgres(b)).await;
}
