//! Triggers end to end, on SQLite and Postgres, against a real backend
//! HTTP server: randomized commits (inserts, updates, deletes, some not
//! matching the filter) with the backend failing at random and the node
//! replaced midway; every matching change is delivered, in seq order, none
//! lost, duplicates under the same key; and a change that keeps failing
//! is parked after the documented number of attempts, then retried.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use protosync_dispatch::trigger::MAX_ATTEMPTS;
use protosync_dispatch::{Backend, Backends};
use protosync_schema::Registry;
use protosync_server::SyncConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Backing, Node, WAIT, http_client};

const SECRET: &str = "whsec_trigger_backend_secret";
const TRIGGER: &str = "hooks.v1.Hooks/Urgent";

const SCHEMA: &str = r#"
syntax = "proto3";
package hooks.v1;
import "protosync/v1/options.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/struct.proto";

message Note {
  option (protosync.v1.collection) = { name: "notes" };
  string text = 1;
  bool urgent = 2;
}

service Hooks {
  rpc Urgent(google.protobuf.Struct) returns (google.protobuf.Empty) {
    option (protosync.v1.action) = {
      backend: "app"
      timeout_ms: 1000
      trigger: { collection: "notes" filter: '[{"field":"urgent","op":"==","value":true}]' }
    };
  }
}
"#;

/// One request the backend got: its idempotency key, its args, and
/// whether it answered 2xx.
type Delivery = (String, Value, bool);

/// The backend: fails a request at random (seeded) but never a key's
/// fourth try, so nothing parks; ids starting with `doomed` fail while
/// `doom` is set.
#[derive(Clone)]
struct App {
    seen: Arc<Mutex<Vec<Delivery>>>,
    rng: Arc<Mutex<StdRng>>,
    fail_rate: f64,
    doom: Arc<Mutex<bool>>,
}

impl App {
    fn all(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(State(app): State<App>, raw: axum::body::Bytes) -> (StatusCode, axum::Json<Value>) {
    let body: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(body["caller"], "trigger");
    let key = body["idempotencyKey"].as_str().unwrap().to_owned();
    let args = body["args"].clone();
    let mut seen = app.seen.lock().unwrap();
    let failures = seen.iter().filter(|(k, _, ok)| *k == key && !ok).count();
    let doomed = args["id"].as_str().unwrap().starts_with("doomed") && *app.doom.lock().unwrap();
    let fail = doomed || (failures < 3 && app.rng.lock().unwrap().random_bool(app.fail_rate));
    seen.push((key, args, !fail));
    if fail {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"code": "FLAKY", "message": "try again"}})),
        )
    } else {
        (StatusCode::OK, axum::Json(json!({"result": {}})))
    }
}

async fn start_backend(seed: u64, fail_rate: f64) -> (App, String) {
    let app = App {
        seen: Arc::default(),
        rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
        fail_rate,
        doom: Arc::new(Mutex::new(true)),
    };
    let router = axum::Router::new()
        .route("/hooks/{service}/{method}", axum::routing::post(handle))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, url)
}

async fn node(backing: &Backing, url: &str) -> Node {
    let registry = Arc::new(Registry::from_sources(&[("hooks/v1/hooks.proto", SCHEMA)]).unwrap());
    let mut backends = Backends::default();
    backends.insert("app", Backend::new(url, SECRET).unwrap());
    Node::start_with_backends(
        registry,
        backing.store().await,
        SyncConfig::default(),
        protosync_auth::Authenticator::trusting(),
        backends,
    )
    .await
}

async fn status(node: &Node) -> Value {
    let all: Value = http_client()
        .get(format!("{}/v1/triggers", node.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["triggers"][0].clone()
}

/// Waits (polling, with a deadline) until `done` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, done: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn commit(node: &Node, op: Value) -> u64 {
    let written: Value = http_client()
        .post(format!("{}/v1/mutate", node.http))
        .json(&json!({"ops": [op]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    written["seq"].as_str().expect("committed").parse().unwrap()
}

async fn running(node: &Node) {
    until("the trigger to start", || async {
        status(node).await["status"] == "running"
    })
    .await;
}

/// 500 random single-document commits, the node replaced after 250.
async fn every_matching_change_is_delivered_in_seq_order(backing: Backing) {
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (app, url) = start_backend(seed, 0.3).await;
    *app.doom.lock().unwrap() = false;
    let mut current = node(&backing, &url).await;
    running(&current).await;
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut expected: Vec<(u64, String, &str)> = Vec::new();
    let mut unmatched = BTreeSet::new();
    for i in 0..500 {
        if i == 250 {
            drop(current);
            current = node(&backing, &url).await;
        }
        let id = format!("n{}", rng.random_range(0..40));
        let urgent = rng.random_bool(0.5);
        let (op, kind) = if live.contains(&id) && rng.random_bool(0.3) {
            (
                json!({"delete": {"collection": "notes", "id": id}}),
                "delete",
            )
        } else {
            let kind = if live.contains(&id) {
                "update"
            } else {
                "insert"
            };
            (
                json!({"upsert": {"collection": "notes", "id": id, "doc": {"text": format!("c{i}"), "urgent": urgent}}}),
                kind,
            )
        };
        let seq = commit(&current, op).await;
        if kind == "delete" {
            live.remove(&id);
        } else {
            live.insert(id.clone());
        }
        if kind == "delete" || urgent {
            expected.push((seq, id, kind));
        } else {
            unmatched.insert(format!("trigger:{TRIGGER}:{seq}:{id}"));
        }
    }
    let keys: Vec<String> = expected
        .iter()
        .map(|(s, id, _)| format!("trigger:{TRIGGER}:{s}:{id}"))
        .collect();
    until("every matching change", || async {
        let ok: BTreeSet<String> = app.all().into_iter().filter(|d| d.2).map(|d| d.0).collect();
        keys.iter().all(|k| ok.contains(k))
    })
    .await;
    let all = app.all();
    // In seq order: the first successful delivery of each key, in arrival order.
    let mut firsts = Vec::new();
    for (key, _, ok) in &all {
        if *ok && !firsts.contains(key) {
            firsts.push(key.clone());
        }
    }
    assert_eq!(
        firsts, keys,
        "delivered in seq order, none lost, nothing else"
    );
    let mut args_of: BTreeMap<&str, &Value> = BTreeMap::new();
    for (key, args, _) in &all {
        assert!(
            !unmatched.contains(key),
            "a change that does not match was delivered: {key}"
        );
        let first = args_of.entry(key).or_insert(args);
        assert_eq!(
            *first, args,
            "a duplicate carries the same change under its key"
        );
    }
    for ((seq, id, kind), key) in expected.iter().zip(&keys) {
        let args = args_of[key.as_str()];
        assert_eq!(
            (
                args["seq"].as_str(),
                args["id"].as_str(),
                args["op"].as_str()
            ),
            (
                Some(seq.to_string().as_str()),
                Some(id.as_str()),
                Some(*kind)
            )
        );
    }
    assert!(
        all.iter().any(|d| !d.2),
        "the backend failed some deliveries"
    );
    let state = status(&current).await;
    assert_eq!(state["parked"], json!([]));
}

/// A change the backend keeps failing is parked after MAX_ATTEMPTS and the
/// trigger moves on; a retry once the backend recovers delivers it.
async fn a_failing_change_is_parked_then_retried(backing: Backing) {
    let (app, url) = start_backend(1, 0.0).await;
    let n = node(&backing, &url).await;
    running(&n).await;
    let doomed = commit(
        &n,
        json!({"insert": {"collection": "notes", "id": "doomed", "doc": {"urgent": true}}}),
    )
    .await;
    let after = commit(
        &n,
        json!({"insert": {"collection": "notes", "id": "fine", "doc": {"urgent": true}}}),
    )
    .await;
    let fine = format!("trigger:{TRIGGER}:{after}:fine");
    until("the trigger to move past the parked change", || async {
        app.all().iter().any(|d| d.0 == fine && d.2)
    })
    .await;
    let doomed_key = format!("trigger:{TRIGGER}:{doomed}:doomed");
    let tries = app.all().iter().filter(|d| d.0 == doomed_key).count();
    assert_eq!(tries, MAX_ATTEMPTS as usize);
    let state = status(&n).await;
    let parked = state["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{state}");
    assert_eq!(parked[0]["seq"], doomed.to_string());
    assert_eq!(parked[0]["id"], "doomed");
    assert_eq!(parked[0]["attempts"], MAX_ATTEMPTS);

    *app.doom.lock().unwrap() = false;
    let retried: Value = http_client()
        .post(format!(
            "{}/v1/triggers/hooks.v1.Hooks/Urgent/retry",
            n.http
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried, json!({"delivered": 1, "failed": 0, "gone": 0}));
    assert!(app.all().iter().any(|d| d.0 == doomed_key && d.2));
    assert_eq!(status(&n).await["parked"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_matching_change_is_delivered_in_seq_order() {
    every_matching_change_is_delivered_in_seq_order(Backing::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_matching_change_is_delivered_in_seq_order() {
    if let Some(backing) = Backing::postgres().await {
        every_matching_change_is_delivered_in_seq_order(backing).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failing_change_is_parked_then_retried() {
    a_failing_change_is_parked_then_retried(Backing::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failing_change_is_parked_then_retried() {
    if let Some(backing) = Backing::postgres().await {
        a_failing_change_is_parked_then_retried(backing).await;
    }
}
