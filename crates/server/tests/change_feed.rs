//! The change feed over HTTP, on SQLite and Postgres: a consumer that
//! disconnects at random points, sometimes in the middle of a line, while
//! 1,000 commits are made by two services, sees every commit exactly once,
//! in order, with its actor and request id; collection filters and access;
//! the floor error.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use protosync_auth::{ApiKeyConfig, AuthConfig, Authenticator};
use protosync_server::SyncConfig;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Backing, Node, http_client};

/// Commits the writers make.
const COMMITS: u64 = 1_000;

fn key(name: &str, secret: &str, collections: Option<Vec<String>>) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        collections,
    }
}

fn auth() -> Authenticator {
    Authenticator::new(AuthConfig {
        api_keys: vec![
            key("runtime", "key-runtime", None),
            key("billing", "key-billing", None),
            key("runs-only", "key-runs", Some(vec!["run_summary".into()])),
        ],
        ..AuthConfig::default()
    })
    .unwrap()
}

async fn start(store: Arc<dyn Store>) -> Node {
    Node::start_with_auth(store, SyncConfig::default(), auth()).await
}

async fn feed(node: &Node, secret: &str, query: &str) -> reqwest::Response {
    http_client()
        .get(format!("{}/v1/changes?{query}", node.http))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
}

async fn mutate(node: &Node, secret: &str, request_id: &str, body: Value) -> Value {
    http_client()
        .post(format!("{}/v1/mutate", node.http))
        .bearer_auth(secret)
        .header("x-request-id", request_id)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn consumer_resumes_through_random_disconnects(backing: Backing) {
    let node = Arc::new(start(backing.store().await).await);
    let seed = protosync_testkit::seed();
    // Four writers, two services: seq → (actor, request id) as answered.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let node = node.clone();
        writers.push(tokio::spawn(async move {
            let (actor, secret) = if w % 2 == 0 {
                ("runtime", "key-runtime")
            } else {
                ("billing", "key-billing")
            };
            let mut made = Vec::new();
            for i in 0..COMMITS / 4 {
                let request_id = format!("w{w}-{i}");
                let answer = mutate(
                    &node,
                    secret,
                    &request_id,
                    json!({"ops": [{"upsert": {"collection": "work_items", "id": format!("w{w}-{}", i % 7), "doc": {"title": request_id}}}]}),
                )
                .await;
                let seq: u64 = answer["seq"].as_str().unwrap().parse().unwrap();
                made.push((seq, (actor.to_owned(), request_id)));
            }
            made
        }));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seen: Vec<(u64, String, String)> = Vec::new();
    let mut connections = 0;
    while seen.last().map_or(0, |s| s.0) < COMMITS {
        let after = seen.last().map_or(0, |s| s.0);
        let mut response = feed(&node, "key-runtime", &format!("after={after}")).await;
        assert_eq!(response.status().as_u16(), 200);
        connections += 1;
        // Leave after a random number of lines, or in the middle of one.
        let lines_wanted = rng.random_range(1..80);
        let cut_mid_line = rng.random_bool(0.3);
        let mut buffer = String::new();
        let mut lines = 0;
        'read: while let Some(chunk) = response.chunk().await.unwrap() {
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find('\n') {
                if lines == lines_wanted && cut_mid_line {
                    break 'read; // a partial line left unread is never counted
                }
                let line: Value = serde_json::from_str(&buffer[..end]).unwrap();
                buffer.drain(..=end);
                if line["type"] == "commit" {
                    let seq: u64 = line["seq"].as_str().unwrap().parse().unwrap();
                    seen.push((
                        seq,
                        line["actor"].as_str().unwrap().to_owned(),
                        line["requestId"].as_str().unwrap().to_owned(),
                    ));
                }
                lines += 1;
                if lines >= lines_wanted || seen.last().is_some_and(|s| s.0 >= COMMITS) {
                    break 'read;
                }
            }
        }
        drop(response);
    }
    let mut made = BTreeMap::new();
    for writer in writers {
        made.extend(writer.await.unwrap());
    }
    assert!(
        connections > 10,
        "seed {seed}: the consumer reconnected {connections} times"
    );
    let seqs: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        seqs,
        (1..=COMMITS).collect::<Vec<_>>(),
        "seed {seed}: every commit once, in order"
    );
    for (seq, actor, request_id) in &seen {
        assert_eq!(
            made.get(seq),
            Some(&(actor.clone(), request_id.clone())),
            "seed {seed}: commit {seq} names who made it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_feed_consumer_sees_every_commit_once_in_order_with_its_actor() {
    consumer_resumes_through_random_disconnects(Backing::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_consumer_sees_every_commit_once_in_order_with_its_actor() {
    let Some(backing) = Backing::postgres().await else {
        return;
    };
    consumer_resumes_through_random_disconnects(backing).await;
}

/// The first `n` lines of a feed response.
async fn lines(mut response: reqwest::Response, n: usize) -> Vec<Value> {
    let mut buffer = String::new();
    let mut lines = Vec::new();
    while lines.len() < n {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the feed stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find('\n') {
            lines.push(serde_json::from_str(&buffer[..end]).unwrap());
            buffer.drain(..=end);
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_filters_by_collection_and_refuses_what_the_caller_may_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data.db"), StoreOptions::default()).unwrap();
    let node = start(Arc::new(store)).await;
    mutate(
        &node,
        "key-runtime",
        "a",
        json!({"ops": [{"upsert": {"collection": "work_items", "id": "w", "doc": {}}}]}),
    )
    .await;
    mutate(
        &node,
        "key-runtime",
        "b",
        json!({"ops": [{"upsert": {"collection": "run_summary", "id": "r", "doc": {}}}]}),
    )
    .await;
    let only_runs = lines(
        feed(&node, "key-runtime", "collections=run_summary").await,
        1,
    )
    .await;
    assert_eq!(
        (&only_runs[0]["seq"], &only_runs[0]["requestId"]),
        (&json!("2"), &json!("b"))
    );
    // A key limited to run_summary sees only that, and may not ask for more.
    let limited = lines(feed(&node, "key-runs", "after=0").await, 1).await;
    assert_eq!(limited[0]["changes"][0]["collection"], "run_summary");
    let refused = feed(&node, "key-runs", "collections=work_items").await;
    assert_eq!(refused.status().as_u16(), 403);
    let anonymous: Value = http_client()
        .get(format!("{}/v1/changes", node.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        anonymous["error"]["code"], "PERMISSION_DENIED",
        "services only"
    );
    for (query, code) in [
        ("after=x", "BAD_REQUEST"),
        ("collections=nope", "UNKNOWN_COLLECTION"),
    ] {
        let answer: Value = feed(&node, "key-runtime", query)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["error"]["code"], code, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_behind_the_floor_gets_the_floor_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        change_log_retention: std::time::Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = Arc::new(SqliteStore::open(&dir.path().join("data.db"), options).unwrap());
    let node = start(store.clone()).await;
    for i in 0..3 {
        mutate(
            &node,
            "key-runtime",
            &format!("r{i}"),
            json!({"ops": [{"upsert": {"collection": "work_items", "id": "w", "doc": {}}}]}),
        )
        .await;
    }
    let floor = store.prune().await.unwrap();
    assert!(floor.0 > 0);
    let response = feed(&node, "key-runtime", "after=0").await;
    assert_eq!(response.status().as_u16(), 410);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (&answer["error"]["code"], &answer["error"]["floor"]),
        (&json!("CHANGES_TRUNCATED"), &json!(floor.to_string()))
    );
    let from_floor = feed(&node, "key-runtime", &format!("after={floor}")).await;
    assert_eq!(from_floor.status().as_u16(), 200);
}
