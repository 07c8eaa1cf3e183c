//! Server-made values: an insert without an id gets a UUIDv7 the result
//! names, on HTTP and on the socket; server-time fields are set by the
//! server on create and on every update, whatever the writer sends.

#[macro_use]
mod support;

use protosync_client::{Client, ClientConfig, op};
use protosync_server::SyncConfig;
use serde_json::{Value, json};
use support::{Backing, Node};

async fn node(backing: &Backing) -> Node {
    Node::start(backing.store().await, SyncConfig::default()).await
}

/// A lower-case UUID of version 7 and the RFC 9562 variant.
fn assert_uuid_v7(id: &str) {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    assert_eq!(id.len(), 36, "{id}");
    assert!(
        hex.len() == 32 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{id}"
    );
    assert_eq!(&hex[12..13], "7", "{id}: version 7");
    assert!(
        matches!(&hex[16..17], "8" | "9" | "a" | "b"),
        "{id}: the RFC 9562 variant"
    );
}

async fn get(node: &Node, collection: &str, id: &str) -> Value {
    support::http_client()
        .get(format!(
            "{}/v1/collections/{collection}/docs/{id}",
            node.http
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn inserts_without_an_id_get_time_ordered_ids_on_every_transport(backing: Backing) {
    let node = node(&backing).await;
    let entry = json!({"ownerId": "ann", "workItemId": "w1", "comment": "good"});
    let over_http = node
        .mutate(json!({"ops": [{"insert": {"collection": "feedback_entries", "doc": entry}}]}))
        .await;
    let first = over_http["results"][0]["id"].as_str().unwrap().to_owned();
    assert_uuid_v7(&first);
    assert_eq!(
        get(&node, "feedback_entries", &first).await["doc"]["comment"],
        "good"
    );

    let (client, _events) = Client::start(ClientConfig::new(&node.ws));
    let over_socket = client
        .mutate(vec![
            op::insert_new("feedback_entries", entry.clone()),
            op::insert_new("feedback_entries", entry.clone()),
        ])
        .await
        .unwrap();
    let ids: Vec<&str> = over_socket.results.iter().map(|r| r.id.as_str()).collect();
    for id in &ids {
        assert_uuid_v7(id);
    }
    assert!(
        first.as_str() < ids[0] && ids[0] < ids[1],
        "ids made later sort later: {first} {ids:?}"
    );

    // A retry with the same key gets the first answer, with the first id.
    let keyed = json!({"idempotencyKey": "k1", "ops": [{"insert": {"collection": "feedback_entries", "doc": entry}}]});
    let once = node.mutate(keyed.clone()).await;
    let again = node.mutate(keyed).await;
    assert_eq!(again["results"], once["results"]);
    assert_eq!(again["duplicate"], true);

    // The id field names the id when the op does not.
    let named = node
        .mutate(json!({"ops": [{"insert": {"collection": "run_summary", "doc": {"runId": "r7"}}}]}))
        .await;
    assert_eq!(named["results"][0]["id"], "r7");

    // Only an insert may leave the id out.
    for kind in ["upsert", "patch", "delete"] {
        let body = match kind {
            "patch" => json!({"collection": "feedback_entries", "fields": {}}),
            "delete" => json!({"collection": "feedback_entries"}),
            _ => json!({"collection": "feedback_entries", "doc": {}}),
        };
        let refused = node.mutate(json!({"ops": [{ kind: body }]})).await;
        assert_eq!(refused["error"]["code"], "BAD_REQUEST", "{kind}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("id must not be empty"),
            "{refused}"
        );
    }
}

async fn server_times_are_set_on_create_and_update_and_cannot_be_forged(backing: Backing) {
    let node = node(&backing).await;
    let forged = "2001-01-01T00:00:00Z";
    let (client, _events) = Client::start(ClientConfig::new(&node.ws));
    let created = client
        .mutate(vec![op::insert_new(
            "feedback_entries",
            json!({"ownerId": "ann", "createdAt": forged}),
        )])
        .await
        .unwrap();
    let id = created.results[0].id.clone();
    let stored = get(&node, "feedback_entries", &id).await["doc"].clone();
    let created_at = stored["createdAt"].as_str().unwrap().to_owned();
    assert_ne!(
        created_at, forged,
        "the server's time replaces the writer's"
    );
    assert!(created_at.as_str() > "2026", "{created_at}");

    // Later writes keep the create time, whatever they send.
    client
        .mutate(vec![op::patch(
            "feedback_entries",
            &id,
            json!({"createdAt": forged, "comment": "edited"}),
        )])
        .await
        .unwrap();
    client
        .mutate(vec![op::upsert(
            "feedback_entries",
            &id,
            json!({"ownerId": "ann", "createdAt": null}),
        )])
        .await
        .unwrap();
    let after = get(&node, "feedback_entries", &id).await["doc"].clone();
    assert_eq!(after["createdAt"], created_at.as_str());

    // An update time moves on every write and cannot be set either.
    let action = json!({"ownerId": "ann", "preview": "send it", "updatedAt": forged});
    let made = node
        .mutate(json!({"ops": [{"insert": {"collection": "proposed_actions", "id": "a1", "doc": action}}]}))
        .await;
    assert_eq!(made["results"][0]["id"], "a1");
    let first = get(&node, "proposed_actions", "a1").await["doc"]["updatedAt"].clone();
    assert!(first.as_str().unwrap() > "2026", "{first}");
    node.mutate(json!({"ops": [{"patch": {"collection": "proposed_actions", "id": "a1", "fields": {"updatedAt": forged, "response": "later"}}}]}))
        .await;
    let second = get(&node, "proposed_actions", "a1").await["doc"]["updatedAt"].clone();
    assert!(
        second.as_str().unwrap() >= first.as_str().unwrap(),
        "{first} then {second}"
    );
}

both_stores!(
    inserts_without_an_id_get_time_ordered_ids_on_every_transport,
    server_times_are_set_on_create_and_update_and_cannot_be_forged,
);
