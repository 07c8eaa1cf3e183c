//! Projection writes over HTTP, on SQLite and Postgres: the per-document
//! answer, the checkpoint, the drift check in pages, and the errors.

mod support;

use protosync_server::SyncConfig;
use protosync_store::projection::content_hash;
use serde_json::{Value, json};
use support::{Backing, Node, http_client};

async fn post(node: &Node, path: &str, body: Value) -> (u16, Value) {
    let response = http_client()
        .post(format!("{}{path}", node.http))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get(node: &Node, path: &str) -> Value {
    http_client()
        .get(format!("{}{path}", node.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn run(id: &str, seq: u64, title: &str) -> Value {
    json!({"collection": "run_summary", "id": id, "sourceSeq": seq.to_string(), "doc": {"title": title}})
}

/// The hash a projector computes: of the canonical body, every field
/// present (docs/projections.md).
fn hash(id: &str, title: &str) -> String {
    content_hash(&json!({
        "costUsd": 0.0, "eventCount": "0", "labels": {}, "lastEventSeq": "0", "ownerId": "",
        "runId": id, "status": "RUN_STATUS_UNSPECIFIED", "title": title
    }))
}

fn statuses(answer: &Value) -> Vec<&str> {
    answer["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect()
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect()
}

async fn batches_checkpoint_and_drift(backing: Backing) {
    let node = Node::start(backing.store().await, SyncConfig::default()).await;
    let apply = "/v1/projections/runtime/apply";
    let (status, first) = post(
        &node,
        apply,
        json!({"documents": [run("r1", 1, "one"), run("r2", 2, "two"), run("r3", 3, "three")]}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["applied", "applied", "applied"]);
    assert_eq!(
        first["documents"][0]["hash"],
        hash("r1", "one"),
        "the answer names the hash"
    );
    let (_, second) = post(
        &node,
        apply,
        json!({"documents": [
            run("r1", 1, "a retry"),
            run("r2", 5, "two"),
            {"collection": "run_summary", "id": "r3", "sourceSeq": 6, "deleted": true},
        ], "checkpoint": "9"}),
    )
    .await;
    assert_eq!(statuses(&second), ["stale", "unchanged", "applied"]);
    assert_eq!(second["documents"][0]["version"], "1");
    let checkpoint = get(&node, "/v1/projections/runtime").await;
    assert_eq!(
        (
            &checkpoint["sourceSeq"],
            &checkpoint["documents"],
            &checkpoint["applied"],
            &checkpoint["stale"],
            &checkpoint["unchanged"]
        ),
        (
            &json!("9"),
            &json!("2"),
            &json!("4"),
            &json!("1"),
            &json!("1")
        ),
        "{checkpoint}"
    );
    let never = get(&node, "/v1/projections/never").await;
    assert_eq!(never["sourceSeq"], "0");

    // Another writer edits r2 by hand; the projector expects r1, r2 and r4.
    node.mutate(json!({"ops": [{"upsert": {"collection": "run_summary", "id": "r2", "doc": {"title": "by hand"}}}]}))
        .await;
    let drift = "/v1/projections/runtime/drift";
    let expected = |id: &str, title: &str| json!({"collection": "run_summary", "id": id, "hash": hash(id, title)});
    let (status, page1) = post(
        &node,
        drift,
        json!({"expected": [expected("r1", "one"), expected("r2", "two")]}),
    )
    .await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(ids(&page1["differ"]), ["r2"]);
    assert!(ids(&page1["missing"]).is_empty() && ids(&page1["unexpected"]).is_empty());
    let (_, page2) = post(
        &node,
        drift,
        json!({"expected": [expected("r4", "four")], "after": page1["through"], "last": true}),
    )
    .await;
    assert_eq!(ids(&page2["missing"]), ["r4"], "{page2}");
    assert!(ids(&page2["differ"]).is_empty());

    // Errors, each with its code.
    let cases = [
        (
            json!({"documents": [{"collection": "run_summary", "id": "x", "doc": {}}]}),
            400,
            "BAD_REQUEST",
        ),
        (
            json!({"documents": [{"collection": "run_summary", "id": "x", "sourceSeq": 1, "doc": {}, "deleted": true}]}),
            400,
            "BAD_REQUEST",
        ),
        (
            json!({"documents": [{"collection": "run_summary", "id": "x", "sourceSeq": 1, "doc": {"eventCount": "many"}}]}),
            400,
            "INVALID_DOCUMENT",
        ),
        (
            json!({"documents": [{"collection": "nope", "id": "x", "sourceSeq": 1, "deleted": true}]}),
            404,
            "UNKNOWN_COLLECTION",
        ),
        (json!({"documents": []}), 400, "BAD_REQUEST"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = post(&node, apply, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    // A stale document first: the one refused is named by its place in
    // the batch, not among the documents that were to be written.
    let big = "x".repeat(1024 * 1024 + 1);
    let (status, answer) = post(
        &node,
        apply,
        json!({"documents": [run("r1", 1, "stale"), run("r9", 1, &big)]}),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (413, &json!("LIMIT_EXCEEDED"))
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("ops[1]: run_summary/r9"), "{message}");
    let (status, answer) = post(
        &node,
        "/v1/projections/billing/apply",
        json!({"documents": [run("r1", 7, "mine now")]}),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (409, &json!("PROJECTOR_CONFLICT"))
    );
    let (status, answer) = post(
        &node,
        "/v1/projections/bad%20name/apply",
        json!({"documents": [run("r9", 1, "x")]}),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("BAD_REQUEST"))
    );
    let (status, answer) = post(
        &node,
        drift,
        json!({"expected": [expected("r2", "two"), expected("r1", "one")]}),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("BAD_REQUEST")),
        "unsorted"
    );
}

async fn rebuild_and_swap(backing: Backing) {
    let node = Node::start(backing.store().await, SyncConfig::default()).await;
    let base = "/v1/projections/runtime";
    let (_, _) = post(
        &node,
        &format!("{base}/apply"),
        json!({"documents": [run("r1", 10, "one"), run("r2", 11, "two"), run("r3", 12, "three")]}),
    )
    .await;
    let (status, started) = post(&node, &format!("{base}/rebuild"), json!({})).await;
    assert_eq!(status, 200, "{started}");
    let g = started["generation"].as_str().unwrap().to_owned();
    let stage = format!("{base}/rebuild/{g}/stage");
    let (status, staged) = post(
        &node,
        &stage,
        json!({"documents": [run("r1", 1, "one"), run("r2", 2, "two, rebuilt")]}),
    )
    .await;
    assert_eq!((status, &staged["staged"]), (200, &json!("2")), "{staged}");
    // Interrupted here: the projector asks again and resumes after sourceSeq.
    let (_, resumed) = post(&node, &format!("{base}/rebuild"), json!({})).await;
    assert_eq!(
        (&resumed["generation"], &resumed["sourceSeq"]),
        (&json!(g), &json!("2"))
    );
    let checkpoint = get(&node, base).await;
    assert_eq!(checkpoint["rebuild"]["staged"], "2", "{checkpoint}");
    post(
        &node,
        &stage,
        json!({"documents": [run("r4", 3, "four")], "checkpoint": 5}),
    )
    .await;
    let before = get(&node, "/v1/collections/run_summary/docs/r2").await;
    assert_eq!(
        before["doc"]["title"], "two",
        "staged documents are not seen"
    );

    let (status, swapped) = post(&node, &format!("{base}/rebuild/{g}/swap"), json!({})).await;
    assert_eq!(status, 200, "{swapped}");
    assert_eq!(
        (&swapped["applied"], &swapped["unchanged"]),
        (&json!("3"), &json!("1"))
    );
    let seq: u64 = swapped["seq"].as_str().unwrap().parse().unwrap();
    let log = node
        .store()
        .read_log(protosync_core::Seq(seq - 1), 1)
        .await
        .unwrap();
    let mut changed: Vec<(&str, bool)> = log[0]
        .changes
        .iter()
        .map(|c| (c.id.as_str(), c.body.is_some()))
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        [("r2", true), ("r3", false), ("r4", true)],
        "one commit: r2 rewritten, r3 (not rebuilt) removed, r4 added, r1 untouched"
    );
    let checkpoint = get(&node, base).await;
    assert_eq!(
        (
            &checkpoint["sourceSeq"],
            &checkpoint["documents"],
            &checkpoint["rebuild"]
        ),
        (&json!("5"), &json!("3"), &Value::Null),
        "{checkpoint}"
    );
    // After a swap, old sourceSeqs of the previous life are no longer stale.
    let (_, next) = post(
        &node,
        &format!("{base}/apply"),
        json!({"documents": [run("r1", 6, "six")]}),
    )
    .await;
    assert_eq!(statuses(&next), ["applied"]);

    let (status, answer) = post(&node, &stage, json!({"documents": [run("r5", 1, "x")]})).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("UNKNOWN_REBUILD"))
    );
    let (_, again) = post(&node, &format!("{base}/rebuild"), json!({})).await;
    let g2 = again["generation"].as_str().unwrap().to_owned();
    assert_ne!(g2, g, "a new rebuild gets a new generation");
    let response = http_client()
        .delete(format!("{}{base}/rebuild/{g2}", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(get(&node, base).await["rebuild"], Value::Null, "abandoned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_and_swap() {
    rebuild_and_swap(Backing::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rebuild_and_swap() {
    let Some(backing) = Backing::postgres().await else {
        return;
    };
    rebuild_and_swap(backing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_projection_batches_checkpoint_and_drift() {
    batches_checkpoint_and_drift(Backing::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_projection_batches_checkpoint_and_drift() {
    let Some(backing) = Backing::postgres().await else {
        return;
    };
    batches_checkpoint_and_drift(backing).await;
}
