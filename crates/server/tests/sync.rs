//! The sync protocol end to end: real servers, real sockets, the Rust client.

mod support;

use std::time::Duration;

use protosync_client::wire::{self, client_message, server_message};
use protosync_client::{Client, ClientConfig, ClientEvent, Connection, Received, op};
use protosync_protocol::{Codec, Frame};
use protosync_server::SyncConfig;
use serde_json::json;
use support::{Backing, Model, Node, WAIT, query, shown};

async fn sqlite_node() -> (Node, Backing) {
    let backing = Backing::sqlite();
    let node = Node::start(backing.store().await, SyncConfig::default()).await;
    (node, backing)
}

fn item(id: &str, owner: &str, priority: i32) -> wire::Operation {
    op::upsert(
        "work_items",
        id,
        json!({"ownerId": owner, "priority": priority, "title": id}),
    )
}

/// Waits for the next transition event (skipping other events).
async fn next_transition(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ClientEvent>,
) -> (wire::Transition, protosync_client::View) {
    loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a transition in time")
            .expect("client alive")
        {
            ClientEvent::Transition { transition, view } => return (transition, view),
            ClientEvent::Disconnected { reason } if reason.contains("inconsistent") => {
                panic!("{reason}")
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gets_its_result_then_every_change_in_order() {
    let (node, _backing) = sqlite_node().await;
    node.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": "a", "doc": {"ownerId": "ann", "priority": 1}}}]})).await;
    let (client, mut events) = Client::start(ClientConfig::new(&node.ws));
    let feed = query(
        "work_items",
        vec![("ownerId", "==", json!("ann"))],
        vec![("priority", "desc")],
        2,
    );
    client.subscribe("feed", feed);
    let (first, view) = next_transition(&mut events).await;
    assert_eq!((first.from_watermark, first.to_watermark), (0, 1));
    assert!(first.updates[0].reset);
    assert_eq!(
        first.updates[0].reset_reason,
        wire::ResetReason::NewSubscription as i32
    );
    assert_eq!(shown(&view, "feed"), [("a".to_owned(), 1)]);

    // b enters above a; c enters on top and pushes a out of the top-2 window.
    client.mutate(vec![item("b", "ann", 5)]).await.unwrap();
    let (t, view) = next_transition(&mut events).await;
    assert_eq!((t.from_watermark, t.to_watermark), (1, 2));
    assert_eq!(
        shown(&view, "feed"),
        [("b".to_owned(), 2), ("a".to_owned(), 1)]
    );
    client.mutate(vec![item("c", "ann", 9)]).await.unwrap();
    let (t, view) = next_transition(&mut events).await;
    assert_eq!(
        shown(&view, "feed"),
        [("c".to_owned(), 3), ("b".to_owned(), 2)]
    );
    assert_eq!(t.updates[0].removes, ["a"]);
    // Another owner's write does not reach this subscription.
    node.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": "z", "doc": {"ownerId": "bob", "priority": 99}}}]})).await;
    // Deleting c lets a back into the window (refilled from what the view kept).
    client
        .mutate(vec![op::delete("work_items", "c")])
        .await
        .unwrap();
    let (t, view) = next_transition(&mut events).await;
    assert_eq!(
        t.from_watermark, 3,
        "the bob write produced no transition for this client"
    );
    assert_eq!(t.to_watermark, 5);
    assert_eq!(
        shown(&view, "feed"),
        [("b".to_owned(), 2), ("a".to_owned(), 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_resolves_only_once_the_view_includes_it() {
    let (node, _backing) = sqlite_node().await;
    let (client, mut events) = Client::start(ClientConfig::new(&node.ws));
    client.subscribe_get("one", "work_items", "w1");
    next_transition(&mut events).await;
    let result = client.mutate(vec![item("w1", "ann", 3)]).await.unwrap();
    let view = client.view();
    assert!(view.watermark >= result.seq);
    assert_eq!(shown(&view, "one"), [("w1".to_owned(), result.seq)]);
    // A write no subscription sees still moves the watermark past it.
    let result = client.mutate(vec![item("other", "bob", 1)]).await.unwrap();
    assert!(client.view().watermark >= result.seq);
    let mut last_to = 0;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), events.recv()).await
    {
        if let ClientEvent::Transition { transition, .. } = event {
            assert!(transition.to_watermark >= last_to);
            last_to = transition.to_watermark;
        }
    }
    let rejected = client
        .mutate(vec![op::insert("work_items", "w1", json!({}))])
        .await
        .unwrap_err();
    assert!(
        matches!(rejected, protosync_client::MutationError::Rejected { ref code, .. } if code == "ALREADY_EXISTS"),
        "{rejected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_disconnect_sends_only_the_difference() {
    let (node, _backing) = sqlite_node().await;
    for i in 0..20 {
        node.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": format!("w{i:02}"), "doc": {"ownerId": "ann", "priority": i}}}]})).await;
    }
    let (client, mut events) = Client::start(ClientConfig::new(&node.ws));
    client.subscribe("all", query("work_items", vec![], vec![], 100));
    let (_, view) = next_transition(&mut events).await;
    assert_eq!(shown(&view, "all").len(), 20);
    client.reconnect();
    // While away (or at least racing the reconnect): one change, one delete.
    node.mutate(json!({"ops": [{"patch": {"collection": "work_items", "id": "w03", "fields": {"priority": 100}}}]})).await;
    node.mutate(json!({"ops": [{"delete": {"collection": "work_items", "id": "w04"}}]}))
        .await;
    let mut upserts = 0;
    let mut resets = 0;
    loop {
        let (t, view) = next_transition(&mut events).await;
        upserts += t.updates.iter().map(|u| u.upserts.len()).sum::<usize>();
        resets += t.updates.iter().filter(|u| u.reset).count();
        if view.watermark == 22 {
            let ids: Vec<String> = shown(&view, "all").into_iter().map(|(id, _)| id).collect();
            assert_eq!(ids.len(), 19);
            assert!(!ids.contains(&"w04".to_owned()));
            break;
        }
    }
    assert_eq!(resets, 0, "a resume is a diff, not a reset");
    assert_eq!(upserts, 1, "only the changed document is sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_work_like_json_frames() {
    let (node, _backing) = sqlite_node().await;
    let mut config = ClientConfig::new(&node.ws);
    config.codec = Codec::Binary;
    let (client, mut events) = Client::start(config);
    client.subscribe(
        "feed",
        query(
            "work_items",
            vec![("ownerId", "==", json!("ann"))],
            vec![],
            10,
        ),
    );
    next_transition(&mut events).await;
    let result = client.mutate(vec![item("w1", "ann", 1)]).await.unwrap();
    assert_eq!(
        shown(&client.view(), "feed"),
        [("w1".to_owned(), result.seq)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_error_and_the_connection_keeps_working() {
    let (node, _backing) = sqlite_node().await;
    let (mut connection, welcome) = Connection::connect(&node.ws, Codec::Json, None)
        .await
        .unwrap();
    assert_eq!(welcome.protocol_version, 1);
    let subscribe = |id: &str, collection: &str| {
        client_message::Message::Subscribe(wire::Subscribe {
            subscription_id: id.into(),
            target: Some(wire::subscribe::Target::Query(query(
                collection,
                vec![],
                vec![],
                10,
            ))),
            held: vec![],
        })
    };
    let cases: Vec<(Frame, &str)> = vec![
        (Frame::Text("{not json".into()), "BAD_FRAME"),
        (Frame::Text(r#"{"teleport": {}}"#.into()), "BAD_FRAME"),
        (Frame::Binary(vec![0xff, 0x00]), "BAD_FRAME"),
        (Codec::Json.encode_client(&wire::ClientMessage { message: Some(subscribe("s", "no_such_collection")) }), "UNKNOWN_COLLECTION"),
        (Codec::Json.encode_client(&wire::ClientMessage { message: Some(client_message::Message::Unsubscribe(wire::Unsubscribe { subscription_id: "nope".into() })) }), "UNKNOWN_SUBSCRIPTION"),
        (Codec::Json.encode_client(&wire::ClientMessage { message: Some(client_message::Message::Hello(wire::Hello { protocol_version: 1, ..Default::default() })) }), "UNEXPECTED_HELLO"),
        (Frame::Text(r#"{"subscribe": {"subscriptionId": "q", "query": {"collection": "work_items", "filter": [{"field": "nope", "op": "==", "value": 1}]}}}"#.into()), "INVALID_QUERY"),
        (Frame::Text(r#"{"mutate": {"requestId": "r1", "ops": [{"insert": {"collection": "work_items", "id": "x", "doc": {"priority": "high"}}}]}}"#.into()), "INVALID_DOCUMENT"),
    ];
    for (frame, code) in cases {
        connection.send_raw(frame.clone()).await.unwrap();
        let error = loop {
            match connection.receive().await.unwrap() {
                Received::Other(wire::ServerMessage {
                    message: Some(server_message::Message::Error(e)),
                }) => break e,
                Received::Other(wire::ServerMessage {
                    message: Some(server_message::Message::Heartbeat(_)),
                }) => continue,
                other => panic!("{frame:?}: expected an error, got {other:?}"),
            }
        };
        assert_eq!(error.code, code, "{frame:?}: {error:?}");
        assert!(!error.message.is_empty());
    }
    // A duplicate subscription id is refused; the first one keeps working.
    connection
        .send(subscribe("dup", "work_items"))
        .await
        .unwrap();
    assert!(matches!(
        connection.receive().await.unwrap(),
        Received::Transition(_)
    ));
    connection
        .send(subscribe("dup", "work_items"))
        .await
        .unwrap();
    match connection.receive().await.unwrap() {
        Received::Other(wire::ServerMessage {
            message: Some(server_message::Message::Error(e)),
        }) => {
            assert_eq!(
                (e.code.as_str(), e.subscription_id.as_str()),
                ("DUPLICATE_SUBSCRIPTION", "dup")
            );
        }
        other => panic!("{other:?}"),
    }
    connection
        .send(client_message::Message::Ping(wire::Ping {
            nonce: "still here".into(),
        }))
        .await
        .unwrap();
    match connection.receive().await.unwrap() {
        Received::Other(wire::ServerMessage {
            message: Some(server_message::Message::Pong(p)),
        }) => assert_eq!(p.nonce, "still here"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_the_socket_with_a_documented_code() {
    let (node, _backing) = sqlite_node().await;
    // Not a hello first.
    let mut connection = Connection::open(&node.ws, Codec::Json).await.unwrap();
    connection
        .send(client_message::Message::Ping(wire::Ping::default()))
        .await
        .unwrap();
    assert_close(&mut connection, 4001).await;
    // An unsupported protocol version.
    let mut connection = Connection::open(&node.ws, Codec::Json).await.unwrap();
    connection
        .send(client_message::Message::Hello(wire::Hello {
            protocol_version: 99,
            ..Default::default()
        }))
        .await
        .unwrap();
    match connection.receive().await.unwrap() {
        Received::Other(wire::ServerMessage {
            message: Some(server_message::Message::Error(e)),
        }) => {
            assert_eq!(e.code, "UPGRADE_REQUIRED");
            assert!(e.message.contains("1 to 1"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_close(&mut connection, 4010).await;
    // A frame over the limit.
    let (mut connection, _) = Connection::connect(&node.ws, Codec::Json, None)
        .await
        .unwrap();
    connection
        .send_raw(Frame::Text(format!(
            "{{\"ping\": {{\"nonce\": \"{}\"}}}}",
            "x".repeat(9 * 1024 * 1024)
        )))
        .await
        .ok();
    assert_close(&mut connection, 1009).await;
    // The server still serves.
    let (_connection, welcome) = Connection::connect(&node.ws, Codec::Json, None)
        .await
        .unwrap();
    assert!(!welcome.session_id.is_empty());
}

async fn assert_close(connection: &mut Connection, code: u16) {
    loop {
        match tokio::time::timeout(WAIT, connection.receive())
            .await
            .expect("closed in time")
        {
            Err(protosync_client::ConnectionError::Closed(Some((got, _)))) => {
                assert_eq!(got, code);
                return;
            }
            Err(other) => panic!("expected close code {code}, got {other:?}"),
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_reaches_a_subscriber_on_another() {
    let Some(backing) = Backing::postgres().await else {
        return;
    };
    let a = Node::start(backing.store().await, SyncConfig::default()).await;
    let b = Node::start(backing.store().await, SyncConfig::default()).await;
    let (client, mut events) = Client::start(ClientConfig::new(&b.ws));
    client.subscribe(
        "feed",
        query(
            "work_items",
            vec![("ownerId", "==", json!("ann"))],
            vec![("priority", "desc")],
            5,
        ),
    );
    next_transition(&mut events).await;
    for i in 0..5 {
        a.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": format!("w{i}"), "doc": {"ownerId": "ann", "priority": i}}}]})).await;
    }
    let mut seen = Vec::new();
    while client.view().watermark < 5 {
        let (t, _) = next_transition(&mut events).await;
        seen.push(t.to_watermark);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let model = Model::load(b.store()).await;
    let feed = wire::Subscribe {
        subscription_id: "feed".into(),
        target: Some(wire::subscribe::Target::Query(query(
            "work_items",
            vec![("ownerId", "==", json!("ann"))],
            vec![("priority", "desc")],
            5,
        ))),
        held: vec![],
    };
    assert_eq!(shown(&client.view(), "feed"), model.result_at(&feed, 5));
}

/// One client stops reading while another keeps up: the healthy one reaches
/// the head while the stalled one is still stalled, the server's queue for
/// the stalled one stays within its bound, and once the stalled client reads
/// again it catches up in a few coalesced transitions to the exact state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_slows_no_one_and_catches_up() {
    const COMMITS: usize = 300;
    const DOC_BYTES: usize = 64 * 1024;
    let backing = Backing::sqlite();
    let sync = SyncConfig {
        outbound_queue_frames: 4,
        ..SyncConfig::default()
    };
    let node = Node::start(backing.store().await, sync).await;
    let feed = query(
        "work_items",
        vec![("ownerId", "==", json!("ann"))],
        vec![],
        20,
    );

    let (healthy, mut healthy_events) = Client::start(ClientConfig::new(&node.ws));
    healthy.subscribe("feed", feed.clone());
    next_transition(&mut healthy_events).await;
    let (mut stalled, _) = Connection::connect(&node.ws, Codec::Json, None)
        .await
        .unwrap();
    stalled
        .send(client_message::Message::Subscribe(wire::Subscribe {
            subscription_id: "feed".into(),
            target: Some(wire::subscribe::Target::Query(feed.clone())),
            held: vec![],
        }))
        .await
        .unwrap();
    let mut view = protosync_client::View::default();
    match stalled.receive().await.unwrap() {
        Received::Transition(t) => view.apply(&t).unwrap(),
        other => panic!("{other:?}"),
    }

    // The stalled client reads nothing from here on.
    let title = "x".repeat(DOC_BYTES);
    for i in 0..COMMITS {
        node.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": format!("w{}", i % 20), "doc": {"ownerId": "ann", "priority": i, "title": title}}}]})).await;
    }
    let head = node.store().head().await.unwrap().0;
    tokio::time::timeout(WAIT, healthy.wait_for_watermark(head))
        .await
        .expect("the healthy client reaches the head while the other is stalled");
    let peak = node
        .state
        .metrics
        .peak_queued_frames_per_connection
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 4, "a connection's queue grew to {peak} frames");

    let mut transitions = 0;
    while view.watermark < head {
        match tokio::time::timeout(WAIT, stalled.receive())
            .await
            .expect("the stalled client catches up")
            .unwrap()
        {
            Received::Transition(t) => {
                view.apply(&t).unwrap();
                transitions += 1;
            }
            Received::Other(_) => {}
        }
    }
    assert!(
        transitions < COMMITS / 2,
        "news coalesced while the client was not reading ({transitions} transitions for {COMMITS} commits)"
    );
    let expected: Vec<(String, u64)> = shown(&healthy.view(), "feed");
    assert_eq!(shown(&view, "feed"), expected);
    assert_eq!(expected.len(), 20);
}

/// Reads SSE events (`id`, `event`, parsed `data`) from a streaming response.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    async fn next(&mut self) -> (String, String, serde_json::Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                };
                if let Some(data) = field("data:") {
                    return (
                        field("id:").unwrap_or_default(),
                        field("event:").unwrap_or_default(),
                        serde_json::from_str(&data).unwrap(),
                    );
                }
                continue; // a keep-alive comment
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("stream open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_transitions_and_resume_from_last_event_id() {
    let (node, _backing) = sqlite_node().await;
    node.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": "a", "doc": {"ownerId": "ann", "priority": 1}}}]})).await;
    let url = format!("{}/v1/subscribe", node.http);
    let query = json!({"collection": "work_items", "filter": [{"field": "ownerId", "op": "==", "value": "ann"}]}).to_string();
    let http = reqwest::Client::new();
    let response = http
        .get(&url)
        .query(&[("query", &query)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = EventReader {
        response,
        buffer: String::new(),
    };
    let (id, kind, data) = events.next().await;
    assert_eq!((id.as_str(), kind.as_str()), ("1", "transition"));
    assert_eq!(data["transition"]["updates"][0]["reset"], true);
    assert_eq!(data["transition"]["updates"][0]["upserts"][0]["id"], "a");
    node.mutate(json!({"ops": [{"patch": {"collection": "work_items", "id": "a", "fields": {"priority": 7}}}]})).await;
    let (id, _, data) = events.next().await;
    assert_eq!(id, "2");
    assert_eq!(data["transition"]["fromWatermark"], "1");
    assert_eq!(
        data["transition"]["updates"][0]["upserts"][0]["doc"]["priority"],
        7
    );
    drop(events);

    // Resume: the chain continues from the last event id.
    node.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": "b", "doc": {"ownerId": "ann"}}}]})).await;
    let response = http
        .get(&url)
        .query(&[("query", &query)])
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let mut events = EventReader {
        response,
        buffer: String::new(),
    };
    let (id, _, data) = events.next().await;
    assert_eq!(id, "3");
    assert_eq!(data["transition"]["fromWatermark"], "2");
    assert_eq!(
        data["transition"]["updates"][0]["resetReason"],
        "RESET_REASON_NO_HELD_STATE"
    );
    assert_eq!(
        data["transition"]["updates"][0]["order"]["ids"],
        json!(["a", "b"])
    );

    // Bad requests are refused before streaming.
    let response = http
        .get(&url)
        .query(&[("query", "{\"collection\": \"nope\"}")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNKNOWN_COLLECTION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_closes_live_connections_with_going_away() {
    let backing = Backing::sqlite();
    let engine = std::sync::Arc::new(
        protosync_engine::Engine::start(support::registry(), backing.store().await)
            .await
            .unwrap(),
    );
    let state = protosync_server::AppState::new(
        engine,
        SyncConfig::default(),
        protosync_auth::Authenticator::trusting(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = format!("ws://{}/v1/sync", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(protosync_server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let (mut connection, _) = Connection::connect(&ws, Codec::Json, None).await.unwrap();
    stop.send(()).unwrap();
    assert_close(&mut connection, 1001).await;
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops once connections closed")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_change_log_gets_a_reset_with_the_floor() {
    let backing = Backing::sqlite();
    let store = backing.store().await;
    let node = Node::start(store, SyncConfig::default()).await;
    let (client, mut events) = Client::start(ClientConfig::new(&node.ws));
    client.subscribe("feed", query("work_items", vec![], vec![], 10));
    client.mutate(vec![item("a", "ann", 1)]).await.unwrap();
    let held = client.view();
    client.shutdown();
    drop(client);
    while events.recv().await.is_some() {}
    for i in 0..3 {
        node.mutate(json!({"ops": [{"upsert": {"collection": "work_items", "id": format!("b{i}"), "doc": {}}}]})).await;
    }
    // Expire the whole log.
    let expiring = match &backing {
        Backing::Sqlite(dir) => protosync_store::sqlite::SqliteStore::open(
            &dir.path().join("data.db"),
            protosync_store::StoreOptions {
                change_log_retention: Duration::ZERO,
                ..Default::default()
            },
        )
        .unwrap(),
        Backing::Postgres(_) => unreachable!(),
    };
    let head = node.store().head().await.unwrap();
    let floor = loop {
        let floor = protosync_store::Store::prune(&expiring).await.unwrap();
        if floor == head {
            break floor;
        }
        tokio::task::yield_now().await;
    };
    let resume = wire::Resume {
        session_id: "s".into(),
        watermark: held.watermark,
        subscriptions: vec![wire::Subscribe {
            subscription_id: "feed".into(),
            target: Some(wire::subscribe::Target::Query(query(
                "work_items",
                vec![],
                vec![],
                10,
            ))),
            held: held.subscriptions["feed"].held(),
        }],
    };
    let (mut connection, welcome) = Connection::connect(&node.ws, Codec::Json, Some(resume))
        .await
        .unwrap();
    assert_eq!(
        (welcome.watermark, welcome.log_floor),
        (held.watermark, floor.0)
    );
    let Received::Transition(t) = connection.receive().await.unwrap() else {
        panic!("expected a transition")
    };
    assert_eq!(t.from_watermark, held.watermark);
    let update = &t.updates[0];
    assert!(update.reset);
    assert_eq!(
        update.reset_reason,
        wire::ResetReason::WatermarkTooOld as i32
    );
    assert_eq!(update.log_floor, floor.0);
    assert_eq!(update.order.as_ref().unwrap().ids, ["a", "b0", "b1", "b2"]);
}

/// Two frames answer a mutation: its result and the read-your-writes
/// transition. With Nagle's algorithm on, the second waits for the client's
/// delayed ACK of the first (~40 ms on Linux) however fast the server is.
/// Measured as a ratio in one run, not against a wall clock: the second
/// frame must follow the first within a small multiple of the time the
/// first one took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutations_second_frame_does_not_wait_for_a_delayed_ack() {
    const ROUNDS: usize = 40;
    let (node, _backing) = sqlite_node().await;
    let (mut connection, _) = Connection::connect(&node.ws, Codec::Json, None)
        .await
        .unwrap();
    connection
        .send(client_message::Message::Subscribe(wire::Subscribe {
            subscription_id: "all".into(),
            target: Some(wire::subscribe::Target::Query(query(
                "work_items",
                vec![],
                vec![],
                1,
            ))),
            held: vec![],
        }))
        .await
        .unwrap();
    assert!(matches!(
        connection.receive().await.unwrap(),
        Received::Transition(_)
    ));
    let (mut first, mut gap) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let sent = std::time::Instant::now();
        connection
            .send(client_message::Message::Mutate(wire::Mutate {
                request_id: format!("r{round}"),
                ops: vec![item("w", "ann", round as i32)],
                ..Default::default()
            }))
            .await
            .unwrap();
        let (mut result, mut transition) = (None, None);
        while result.is_none() || transition.is_none() {
            let received = tokio::time::timeout(WAIT, connection.receive())
                .await
                .expect("an answer in time")
                .unwrap();
            let at = sent.elapsed();
            match received {
                Received::Transition(_) => transition = Some(at),
                Received::Other(wire::ServerMessage {
                    message: Some(server_message::Message::MutationResult(_)),
                }) => result = Some(at),
                _ => {}
            }
        }
        let (a, b) = (result.unwrap(), transition.unwrap());
        first.push(a.min(b));
        gap.push(a.max(b) - a.min(b));
    }
    first.sort();
    gap.sort();
    let (first, gap) = (first[ROUNDS / 2], gap[ROUNDS / 2]);
    assert!(
        gap <= first * 4 + Duration::from_millis(2),
        "median gap between a mutation's two frames {gap:?}, median first frame {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_tell_an_idle_client_how_far_the_head_is() {
    let backing = Backing::sqlite();
    let node = Node::start(
        backing.store().await,
        SyncConfig {
            heartbeat_interval: Duration::from_millis(100),
            ..SyncConfig::default()
        },
    )
    .await;
    let (client, mut events) = Client::start(ClientConfig::new(&node.ws));
    client.subscribe_get("one", "work_items", "unrelated");
    next_transition(&mut events).await;
    let written = node
        .mutate(json!({"ops": [{"insert": {"collection": "work_items", "id": "other", "doc": {"ownerId": "bob"}}}]}))
        .await;
    let seq: u64 = written["seq"].as_str().unwrap().parse().unwrap();
    let head = loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Heartbeat { head_seq } if head_seq > 0 => break head_seq,
            _ => {}
        }
    };
    assert_eq!(head, seq, "the heartbeat names the newest commit");
    client.wait_for_watermark(head).await;
    assert_eq!(client.view().watermark, head);
}

/// A WebSocket written byte by byte, to send what no client library will.
struct RawSocket(tokio::net::TcpStream);

impl RawSocket {
    async fn open(ws_url: &str) -> RawSocket {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = ws_url
            .strip_prefix("ws://")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "GET /v1/sync HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawSocket(tcp)
    }

    /// One client frame: `first` is FIN/RSV/opcode, masked with a zero key.
    async fn frame(&mut self, first: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        assert!(payload.len() < 126);
        let mut bytes = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        bytes.extend_from_slice(payload);
        self.0.write_all(&bytes).await.unwrap();
    }

    /// Reads server frames until a close; its code.
    async fn close_code(&mut self) -> u16 {
        use tokio::io::AsyncReadExt;
        let read = async {
            loop {
                let first = self.0.read_u8().await.unwrap();
                let len = match self.0.read_u8().await.unwrap() & 0x7f {
                    126 => self.0.read_u16().await.unwrap() as usize,
                    127 => self.0.read_u64().await.unwrap() as usize,
                    n => n as usize,
                };
                let mut payload = vec![0; len];
                self.0.read_exact(&mut payload).await.unwrap();
                if first & 0x0f == 0x8 {
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a close frame in time")
    }
}

/// RFC 6455 section 7.4.1: invalid UTF-8 closes with 1007, other protocol
/// violations with 1002, each with a close frame (not a dropped socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_violations_get_their_close_codes() {
    let (node, _backing) = sqlite_node().await;
    let hello = br#"{"hello": {"protocolVersion": 1}}"#;
    let cases: [(&str, bool, u8, &[u8], u16); 5] = [
        ("invalid UTF-8 before hello", false, 0x81, b"\xff\xfe", 1007),
        (
            "invalid UTF-8",
            true,
            0x81,
            b"{\"ping\": {\"nonce\": \"\xc3\x28\"}}",
            1007,
        ),
        ("an orphan continuation", true, 0x80, b"{}", 1002),
        ("a reserved opcode", true, 0x83, b"{}", 1002),
        ("a reserved bit", true, 0xc1, b"{}", 1002),
    ];
    for (name, after_hello, first, payload, code) in cases {
        let mut socket = RawSocket::open(&node.ws).await;
        if after_hello {
            socket.frame(0x81, hello).await;
        }
        socket.frame(first, payload).await;
        assert_eq!(socket.close_code().await, code, "{name}");
    }
    // The server keeps serving everyone else.
    let (mut connection, _) = Connection::connect(&node.ws, Codec::Json, None)
        .await
        .unwrap();
    connection
        .send(client_message::Message::Ping(wire::Ping {
            nonce: "after".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(
        connection.receive().await.unwrap(),
        Received::Other(wire::ServerMessage {
            message: Some(server_message::Message::Pong(_))
        })
    ));
}
