//! History of audited collections over HTTP, on SQLite and Postgres: every
//! version with its seq and actor, deletions included, kept past change-log
//! pruning; collections without `keep_history` and non-services refused.

mod support;

use std::sync::Arc;
use std::time::Duration;

use protosync_auth::{ApiKeyConfig, AuthConfig, Authenticator};
use protosync_schema::Registry;
use protosync_server::SyncConfig;
use protosync_store::postgres::PostgresStore;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};
use protosync_testkit::TestDatabase;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Node, http_client};

const SCHEMA: &str = r#"syntax = "proto3";
package test.audit.v1;
import "protosync/v1/options.proto";
message Policy {
  option (protosync.v1.collection) = { name: "policies" keep_history: true };
  string rule = 1;
  int64 limit = 2;
}
message Note {
  option (protosync.v1.collection) = { name: "notes" };
  string text = 1;
}
"#;

fn auth() -> Authenticator {
    let key = |name: &str, secret: &str| ApiKeyConfig {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        collections: None,
    };
    Authenticator::new(AuthConfig {
        api_keys: vec![key("billing", "k-billing"), key("ops", "k-ops")],
        ..AuthConfig::default()
    })
    .unwrap()
}

/// Change-log retention of zero: every prune drops the whole log.
fn forgetful() -> StoreOptions {
    StoreOptions {
        change_log_retention: Duration::ZERO,
        ..StoreOptions::default()
    }
}

async fn mutate(node: &Node, secret: &str, op: Value) -> Value {
    http_client()
        .post(format!("{}/v1/mutate", node.http))
        .bearer_auth(secret)
        .json(&json!({"ops": [op]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn history(node: &Node, secret: Option<&str>, path: &str) -> Value {
    let mut request = http_client().get(format!("{}/v1/collections/{path}", node.http));
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    request.send().await.unwrap().json().await.unwrap()
}

async fn every_version_is_kept_with_its_actor(store: Arc<dyn Store>) {
    let registry =
        Arc::new(Registry::from_sources(&[("test/audit/v1/audit.proto", SCHEMA)]).unwrap());
    let node =
        Node::start_with_schema(registry, store.clone(), SyncConfig::default(), auth()).await;
    let mut seqs = Vec::new();
    for (secret, op) in [
        (
            "k-billing",
            json!({"upsert": {"collection": "policies", "id": "p1", "doc": {"rule": "a", "limit": "5"}}}),
        ),
        (
            "k-ops",
            json!({"patch": {"collection": "policies", "id": "p1", "fields": {"limit": "9"}}}),
        ),
        (
            "k-billing",
            json!({"delete": {"collection": "policies", "id": "p1"}}),
        ),
        (
            "k-ops",
            json!({"upsert": {"collection": "policies", "id": "p1", "doc": {"rule": "b"}}}),
        ),
    ] {
        let answer = mutate(&node, secret, op).await;
        seqs.push(answer["seq"].as_str().unwrap().to_owned());
    }
    mutate(
        &node,
        "k-ops",
        json!({"upsert": {"collection": "notes", "id": "n", "doc": {}}}),
    )
    .await;
    // The change log is pruned away; history is not.
    let floor = store.prune().await.unwrap();
    assert!(floor.0 >= 5, "the log was pruned to {floor}");
    let kept = history(&node, Some("k-ops"), "policies/docs/p1/history").await;
    let versions = kept["versions"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str, bool)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap(),
                v["seq"].as_str().unwrap(),
                v["actor"].as_str().unwrap(),
                v["deleted"] == true,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("1", seqs[0].as_str(), "billing", false),
            ("2", seqs[1].as_str(), "ops", false),
            ("3", seqs[2].as_str(), "billing", true),
            ("1", seqs[3].as_str(), "ops", false),
        ],
        "{kept}"
    );
    assert_eq!(versions[1]["doc"]["limit"], "9");
    let later = history(
        &node,
        Some("k-ops"),
        &format!("policies/docs/p1/history?after={}", seqs[1]),
    )
    .await;
    assert_eq!(later["versions"].as_array().unwrap().len(), 2);
    let refused = history(&node, Some("k-ops"), "notes/docs/n/history").await;
    assert_eq!(
        refused["error"]["code"], "BAD_REQUEST",
        "notes keep no history"
    );
    let anonymous = history(&node, None, "policies/docs/p1/history").await;
    assert_eq!(anonymous["error"]["code"], "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_version_is_kept_with_its_actor() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data.db"), forgetful()).unwrap();
    every_version_is_kept_with_its_actor(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_version_is_kept_with_its_actor() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url, 4, forgetful())
        .await
        .unwrap();
    every_version_is_kept_with_its_actor(Arc::new(store)).await;
}
