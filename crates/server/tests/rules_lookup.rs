//! A chat app written with rules alone: members of a channel may read and
//! write its messages, through `exists()` and `get()` lookups in the rules.
//! Membership is checked inside the commit for writes, in the read's
//! snapshot for queries, and live: a removed member loses the channel's
//! messages in the next transition.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use protosync_auth::{ApiKeyConfig, AuthConfig, Authenticator};
use protosync_client::{Client, ClientConfig, ClientEvent, op, wire};
use protosync_schema::Registry;
use protosync_server::SyncConfig;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Backing, Model, Node, WAIT, shown};

const SECRET: &str = "a-chat-test-secret-that-is-long-enough";
const ISSUER: &str = "https://chat.test";
const SERVICE_KEY: &str = "chat-service-key";

const SCHEMA: &str = r#"
syntax = "proto3";
package chat.v1;
import "protosync/v1/options.proto";

message Channel {
  option (protosync.v1.collection) = { name: "channels" read: "auth != null" };
  string title = 1;
  bool archived = 2;
}

// Id: "<channel_id>:<user_id>". Only services manage membership.
message Member {
  option (protosync.v1.collection) = { name: "members" read: "auth != null && doc.user_id == auth.sub" };
  string channel_id = 1;
  string user_id = 2;
}

message Message {
  option (protosync.v1.collection) = {
    name: "messages"
    indexes: { name: "by_channel" fields: ["channel_id"] }
    read: "auth != null && exists('members', doc.channel_id + ':' + auth.sub)"
    write: "auth != null && doc.author_id == auth.sub && exists('members', doc.channel_id + ':' + auth.sub) && !get('channels', doc.channel_id).archived"
  };
  string channel_id = 1;
  string author_id = 2;
  string body = 3;
}
"#;

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"iss": ISSUER, "aud": "chat", "sub": sub, "iat": now, "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn chat_node(backing: &Backing) -> Node {
    let registry = Arc::new(Registry::from_sources(&[("chat/v1/chat.proto", SCHEMA)]).unwrap());
    let auth = Authenticator::new(AuthConfig {
        providers: vec![support::hs256_provider("chat", ISSUER, "chat", SECRET)],
        api_keys: vec![ApiKeyConfig {
            name: "chat-service".into(),
            sha256: sha256(SERVICE_KEY),
            collections: None,
        }],
        ..AuthConfig::default()
    })
    .unwrap();
    let sync = SyncConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..SyncConfig::default()
    };
    Node::start_with_schema(registry, backing.store().await, sync, auth).await
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn mutate(node: &Node, bearer: &str, ops: Value) -> (u16, Value) {
    let response = support::http_client()
        .post(format!("{}/v1/mutate", node.http))
        .bearer_auth(bearer)
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn channel_feed(channel: &str) -> wire::Query {
    support::query(
        "messages",
        vec![("channelId", "==", json!(channel))],
        vec![],
        1000,
    )
}

fn message(id: &str, channel: &str, author: &str) -> Value {
    json!({"upsert": {"collection": "messages", "id": id, "doc": {"channelId": channel, "authorId": author, "body": id}}})
}

fn member(channel: &str, user: &str) -> Value {
    json!({"upsert": {"collection": "members", "id": format!("{channel}:{user}"), "doc": {"channelId": channel, "userId": user}}})
}

fn ids(view: &protosync_client::View, subscription: &str) -> Vec<String> {
    shown(view, subscription)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn removed_member_loses_the_channel_live_and_cannot_write(backing: Backing) {
    let node = chat_node(&backing).await;
    let (status, _) = mutate(
        &node,
        SERVICE_KEY,
        json!([
            {"upsert": {"collection": "channels", "id": "c1", "doc": {"title": "general"}}},
            member("c1", "ann"),
            member("c1", "bob"),
        ]),
    )
    .await;
    assert_eq!(status, 200);
    let start = |sub: &str| {
        let mut config = ClientConfig::new(&node.ws);
        config.token = Some(token(sub));
        let (client, events) = Client::start(config);
        client.subscribe("c1", channel_feed("c1"));
        (client, events)
    };
    let (ann, _ann_events) = start("ann");
    let (bob, mut bob_events) = start("bob");
    let (eve, _eve_events) = start("eve");

    // A member writes; members see it live; a non-member sees nothing.
    let written = bob
        .mutate(vec![op::upsert(
            "messages",
            "m1",
            json!({"channelId": "c1", "authorId": "bob", "body": "hi"}),
        )])
        .await
        .unwrap();
    tokio::time::timeout(WAIT, ann.wait_until(|v| ids(v, "c1") == ["m1"]))
        .await
        .expect("a member sees a member's message live");
    eve.wait_for_watermark(written.seq).await;
    assert!(
        ids(&eve.view(), "c1").is_empty(),
        "a non-member sees nothing"
    );
    let refused = eve
        .mutate(vec![op::upsert(
            "messages",
            "m-eve",
            json!({"channelId": "c1", "authorId": "eve", "body": "let me in"}),
        )])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().starts_with("PERMISSION_DENIED"),
        "{refused}"
    );

    // Bob is removed: he loses the channel in the next transition, can no
    // longer write, and his old message stays for the others.
    let (status, removal) = mutate(
        &node,
        SERVICE_KEY,
        json!([{"delete": {"collection": "members", "id": "c1:bob"}}]),
    )
    .await;
    assert_eq!(status, 200);
    let removed_at: u64 = removal["seq"].as_str().unwrap().parse().unwrap();
    let lost = loop {
        match tokio::time::timeout(WAIT, bob_events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Transition { transition, view }
                if transition.to_watermark >= removed_at =>
            {
                break view;
            }
            _ => {}
        }
    };
    assert!(
        ids(&lost, "c1").is_empty(),
        "the removal's transition takes the channel away"
    );
    let refused = bob
        .mutate(vec![op::upsert(
            "messages",
            "m2",
            json!({"channelId": "c1", "authorId": "bob", "body": "still here?"}),
        )])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().starts_with("PERMISSION_DENIED"),
        "{refused}"
    );
    let (status, _) = mutate(&node, &token("bob"), json!([message("m3", "c1", "bob")])).await;
    assert_eq!(status, 403, "over HTTP too");
    assert_eq!(ids(&ann.view(), "c1"), ["m1"]);

    // Reads over HTTP follow the same rules.
    let read = |who: &str| {
        let (http, url, bearer) = (
            support::http_client(),
            format!("{}/v1/collections/messages/docs/m1", node.http),
            token(who),
        );
        async move {
            http.get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!((read("ann").await, read("bob").await), (200, 404));

    // An archived channel takes no more messages, even from members.
    mutate(
        &node,
        SERVICE_KEY,
        json!([{"patch": {"collection": "channels", "id": "c1", "fields": {"archived": true}}}]),
    )
    .await;
    let (status, body) = mutate(&node, &token("ann"), json!([message("m4", "c1", "ann")])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
}

/// Membership flips at random while members write and clients reconnect;
/// at every watermark a client reaches, its view of each channel is exactly
/// the messages its user may read at that seq: never one more, never one
/// fewer. Writes are accepted exactly when the writer is a member then.
async fn views_follow_membership_at_every_watermark(backing: Backing) {
    const USERS: [&str; 3] = ["u0", "u1", "u2"];
    const CHANNELS: [&str; 2] = ["c0", "c1"];
    const STEPS: usize = 120;
    let node = chat_node(&backing).await;
    let seed = protosync_testkit::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let channels: Vec<Value> = CHANNELS
        .iter()
        .map(|c| json!({"upsert": {"collection": "channels", "id": c, "doc": {"title": c}}}))
        .collect();
    assert_eq!(mutate(&node, SERVICE_KEY, json!(channels)).await.0, 200);
    let mut clients = Vec::new();
    for user in USERS {
        let mut config = ClientConfig::new(&node.ws);
        config.token = Some(token(user));
        config.initial_backoff = Duration::from_millis(10);
        let (client, mut events) = Client::start(config);
        for channel in CHANNELS {
            client.subscribe(channel, channel_feed(channel));
        }
        let log = tokio::spawn(async move {
            let mut views = Vec::new();
            while let Some(event) = events.recv().await {
                if let ClientEvent::Transition { transition, view } = event {
                    views.push((transition.to_watermark, view));
                }
            }
            views
        });
        clients.push((user, client, log));
    }
    let mut members: BTreeSet<(String, String)> = BTreeSet::new();
    for step in 0..STEPS {
        let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
        let user = USERS[rng.random_range(0..USERS.len())];
        match rng.random_range(0..10) {
            0..3 => {
                let key = (channel.to_owned(), user.to_owned());
                let ops = if members.remove(&key) {
                    json!([{"delete": {"collection": "members", "id": format!("{channel}:{user}")}}])
                } else {
                    members.insert(key);
                    json!([member(channel, user)])
                };
                assert_eq!(mutate(&node, SERVICE_KEY, ops).await.0, 200, "seed {seed}");
            }
            _ => {
                let (status, body) = mutate(
                    &node,
                    &token(user),
                    json!([message(&format!("m{step}"), channel, user)]),
                )
                .await;
                let member = members.contains(&(channel.to_owned(), user.to_owned()));
                assert_eq!(
                    status,
                    if member { 200 } else { 403 },
                    "seed {seed}: step {step}: {user} writes to {channel} (member: {member}): {body}"
                );
            }
        }
        if rng.random_range(0..15) == 0 {
            clients[rng.random_range(0..clients.len())].1.reconnect();
        }
    }
    let head = node.store().head().await.unwrap().0;
    let model = Model::load(node.store()).await;
    for (user, client, log) in clients {
        tokio::time::timeout(WAIT, client.wait_for_watermark(head))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: {user} never reached {head}"));
        client.shutdown();
        drop(client);
        let views = tokio::time::timeout(WAIT, log).await.unwrap().unwrap();
        assert!(!views.is_empty());
        for (watermark, view) in views {
            let state = model.documents_at(watermark);
            for channel in CHANNELS {
                let member =
                    state.contains_key(&("members".to_owned(), format!("{channel}:{user}")));
                let expected: Vec<String> = state
                    .iter()
                    .filter(|((c, _), d)| {
                        c == "messages" && member && d.body["channelId"] == channel
                    })
                    .map(|((_, id), _)| id.clone())
                    .collect();
                let mut shown = ids(&view, channel);
                shown.sort();
                assert_eq!(
                    shown, expected,
                    "seed {seed}: {user}'s view of {channel} at watermark {watermark}"
                );
            }
        }
    }
}

both_stores!(
    removed_member_loses_the_channel_live_and_cannot_write,
    views_follow_membership_at_every_watermark,
);
