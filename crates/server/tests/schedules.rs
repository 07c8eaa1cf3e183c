//! Schedules end to end: a one-second cron on two nodes sharing one
//! Postgres database, calling a real backend HTTP server. Each tick is
//! claimed once; the node holding a tick whose call hangs is killed, and
//! the other node takes the tick over after its lease with the same
//! idempotency key; nothing else is called twice.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use protosync_dispatch::{Backend, Backends, signing};
use protosync_schema::Registry;
use protosync_server::SyncConfig;
use serde_json::{Value, json};
use support::{Backing, Node, WAIT, http_client};

const SECRET: &str = "whsec_schedule_backend_secret";

const SCHEMA: &str = r#"
syntax = "proto3";
package clock.v1;
import "protosync/v1/options.proto";
import "google/protobuf/empty.proto";

message Note {
  option (protosync.v1.collection) = { name: "notes" };
  string text = 1;
}

service Clock {
  rpc Tick(google.protobuf.Empty) returns (google.protobuf.Empty) {
    option (protosync.v1.action) = {
      backend: "app"
      timeout_ms: 1000
      schedule: { cron: "* * * * * *" time_zone: "Europe/Paris" CATCH_UP }
    };
  }
}
"#;

/// Every delivery the backend got: (idempotency key, caller), in order;
/// with `hang_first`, the first one never answers.
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<Vec<(String, String)>>>, bool);

impl Deliveries {
    fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// Checks the signature, records the delivery; the first one ever never
/// answers (the node holding it is killed meanwhile).
async fn handle(
    State(seen): State<Deliveries>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> axum::Json<Value> {
    let (timestamp, signature) = support::signature_headers(&headers);
    assert!(
        signing::verify(SECRET.as_bytes(), timestamp, &raw, &signature, timestamp),
        "every scheduled call is signed"
    );
    let body: Value = serde_json::from_slice(&raw).unwrap();
    let hang_first = seen.1;
    let first = {
        let mut seen = seen.0.lock().unwrap();
        seen.push((
            body["idempotencyKey"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body["caller"].as_str().unwrap_or_default().to_owned(),
        ));
        seen.len() == 1
    };
    if first && hang_first {
        std::future::pending::<()>().await;
    }
    axum::Json(json!({"result": {}}))
}

async fn start_backend(hang_first: bool) -> (Deliveries, String) {
    let seen = Deliveries(Arc::default(), hang_first);
    let router = axum::Router::new()
        .route("/hooks/{service}/{method}", axum::routing::post(handle))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (seen, url)
}

async fn node(backing: &Backing, url: &str, catch_up: &str) -> Node {
    let schema = SCHEMA.replace("CATCH_UP", catch_up);
    let registry = Arc::new(Registry::from_sources(&[("clock/v1/clock.proto", &schema)]).unwrap());
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

async fn history(node: &Node) -> Value {
    http_client()
        .get(format!("{}/v1/schedules", node.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (polling the backend's record, with a deadline) until `done` holds.
async fn until(seen: &Deliveries, what: &str, done: impl Fn(&[(String, String)]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&seen.all()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            seen.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_fires_once_across_two_nodes_and_a_killed_nodes_tick_is_retried_with_its_key() {
    let Some(backing) = Backing::postgres().await else {
        return;
    };
    let (seen, url) = start_backend(true).await;
    let a = node(&backing, &url, "").await;
    let b = node(&backing, &url, "").await;
    until(&seen, "the first tick", |d| !d.is_empty()).await;
    let hung_key = seen.all()[0].0.clone();

    // Kill the node that holds the hung tick.
    let runs = history(&a).await;
    let tick_ms = hung_key.rsplit(':').next().unwrap().to_owned();
    let holder = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tickMs"] == tick_ms.as_str())
        .map(|r| r["node"].as_str().unwrap().to_owned())
        .expect("the hung tick is in the history");
    let (survivor, killed) = if a.state.node == holder {
        (b, a)
    } else {
        (a, b)
    };
    let killed_name = killed.state.node.clone();
    drop(killed);

    // About ten ticks later the survivor has taken the hung tick over.
    until(&seen, "ten more ticks and the take-over", |d| {
        d.len() >= 12 && d.iter().filter(|(k, _)| *k == hung_key).count() == 2
    })
    .await;
    let deliveries = seen.all();
    assert!(deliveries.iter().all(|(_, caller)| caller == "schedule"));
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in &deliveries {
        *per_key.entry(key.as_str()).or_default() += 1;
    }
    for (key, count) in &per_key {
        let expected = if *key == hung_key { 2 } else { 1 };
        assert_eq!(
            *count, expected,
            "{key} was delivered {count} times: {deliveries:?}"
        );
    }
    assert!(
        per_key
            .keys()
            .all(|k| k.starts_with("schedule:clock.v1.Clock/Tick:"))
    );

    let history = history(&survivor).await;
    assert_eq!(history["schedules"][0]["timeZone"], "Europe/Paris");
    let runs = history["runs"].as_array().unwrap();
    let retried = runs
        .iter()
        .find(|r| r["tickMs"] == tick_ms.as_str())
        .unwrap();
    assert_eq!(retried["attempt"], 2, "{retried}");
    assert_eq!(retried["node"], survivor.state.node.as_str());
    assert_eq!(retried["outcome"], "ok");
    let mut ticks: Vec<&str> = runs.iter().map(|r| r["tickMs"].as_str().unwrap()).collect();
    let before = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), before, "one run per tick");
    assert!(
        runs.iter()
            .all(|r| r["node"] != killed_name.as_str() || r["outcome"] == "ok"),
        "the killed node left only finished runs"
    );
}

/// The tick in an idempotency key `schedule:<action>:<tick_ms>`.
fn tick_of(key: &str) -> i64 {
    key.rsplit(':').next().unwrap().parse().unwrap()
}

/// After a downtime of a few ticks, `CATCH_UP_ONCE` runs the first missed
/// tick once and `CATCH_UP_SKIP` none; both then follow the clock.
async fn catch_up_after_downtime(backing: Backing) {
    for (policy, runs_missed) in [
        ("catch_up: CATCH_UP_SKIP", false),
        ("catch_up: CATCH_UP_ONCE", true),
    ] {
        let (seen, url) = start_backend(false).await;
        let first = node(&backing, &url, policy).await;
        until(&seen, "two ticks", |d| d.len() >= 2).await;
        drop(first);
        let stopped_ms = tick_of(&seen.all().last().unwrap().0);
        // Down for about three ticks (the old node may finish one more call).
        tokio::time::sleep(Duration::from_millis(3_200)).await;
        let before_restart = seen.all().len();
        let restarted_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let _second = node(&backing, &url, policy).await;
        until(&seen, "a tick after the restart", |d| {
            d[before_restart..]
                .iter()
                .any(|(k, _)| tick_of(k) >= restarted_ms)
        })
        .await;
        // A tick the old node was calling when it went away is taken over
        // with its own key once its lease expires: a retry, not a catch-up.
        let all = seen.all();
        let before: std::collections::HashSet<&String> =
            all[..before_restart].iter().map(|(k, _)| k).collect();
        let after: Vec<i64> = all[before_restart..]
            .iter()
            .filter(|(k, _)| !before.contains(k))
            .map(|(k, _)| tick_of(k))
            .collect();
        let missed: Vec<&i64> = after.iter().filter(|t| **t < restarted_ms).collect();
        if runs_missed {
            assert_eq!(missed.len(), 1, "{policy}: one catch-up run: {after:?}");
            assert!(
                *missed[0] > stopped_ms,
                "{policy}: a missed tick, not a done one"
            );
        } else {
            assert!(missed.is_empty(), "{policy}: no catch-up: {after:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catch_up_after_downtime() {
    catch_up_after_downtime(Backing::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catch_up_after_downtime() {
    let Some(backing) = Backing::postgres().await else {
        return;
    };
    catch_up_after_downtime(backing).await;
}
