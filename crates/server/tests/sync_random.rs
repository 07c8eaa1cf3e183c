//! Randomized: writers on every node, clients subscribed on random nodes,
//! dropped and resumed at random moments. Every transition every client
//! received must move its view to exactly the state the store had at the
//! transition's watermark (checked against a replay of the change log), the
//! transitions must form a strict chain, and the final views must equal the
//! store. The seed is printed; replay with PROTOSYNC_TEST_SEED.

mod support;

use std::sync::Arc;
use std::time::Duration;

use protosync_client::wire;
use protosync_client::{Client, ClientConfig, ClientEvent, op};
use protosync_server::SyncConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::{Backing, Model, Node, WAIT, query, shown};

const CLIENTS: usize = 4;
const WRITERS: usize = 2;
const MUTATIONS_PER_WRITER: usize = 120;
const CLIENT_MUTATIONS: usize = 8;
const RECONNECTS: usize = 16;
const IDS: usize = 40;
const OWNERS: [&str; 2] = ["ann", "bob"];

fn subscriptions(rng: &mut StdRng) -> Vec<wire::Subscribe> {
    let owner = OWNERS[rng.random_range(0..OWNERS.len())];
    let doc = format!("w{}", rng.random_range(0..IDS));
    let target = |q| Some(wire::subscribe::Target::Query(q));
    vec![
        wire::Subscribe {
            subscription_id: "window".into(),
            target: target(query(
                "work_items",
                vec![("ownerId", "==", json!(owner))],
                vec![("priority", "desc")],
                3,
            )),
            held: vec![],
        },
        wire::Subscribe {
            subscription_id: "range".into(),
            target: target(query(
                "work_items",
                vec![("priority", ">=", json!(2))],
                vec![("title", "asc")],
                4,
            )),
            held: vec![],
        },
        wire::Subscribe {
            subscription_id: "one".into(),
            target: Some(wire::subscribe::Target::Get(wire::Get {
                collection: "work_items".into(),
                id: doc,
            })),
            held: vec![],
        },
    ]
}

fn random_op(rng: &mut StdRng) -> serde_json::Value {
    let id = format!("w{}", rng.random_range(0..IDS));
    match rng.random_range(0..10) {
        0..=4 => json!({"upsert": {"collection": "work_items", "id": id, "doc": {
            "ownerId": OWNERS[rng.random_range(0..OWNERS.len())],
            "priority": rng.random_range(0..6),
            "title": format!("t{}", rng.random_range(0..5)),
        }}}),
        5..=7 => {
            json!({"patch": {"collection": "work_items", "id": id, "fields": {"priority": rng.random_range(0..6)}}})
        }
        _ => json!({"delete": {"collection": "work_items", "id": id}}),
    }
}

async fn run(backing: Backing, node_count: usize) {
    let seed = protosync_testkit::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nodes = Vec::new();
    for _ in 0..node_count {
        let sync = SyncConfig {
            heartbeat_interval: Duration::from_millis(200),
            ..SyncConfig::default()
        };
        nodes.push(Arc::new(Node::start(backing.store().await, sync).await));
    }
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let node = &nodes[rng.random_range(0..nodes.len())];
        let mut config = ClientConfig::new(&node.ws);
        config.initial_backoff = Duration::from_millis(10);
        let (client, mut events) = Client::start(config);
        let subs = subscriptions(&mut rng);
        for s in &subs {
            match s.target.as_ref().unwrap() {
                wire::subscribe::Target::Query(q) => {
                    client.subscribe(&s.subscription_id, q.clone());
                }
                wire::subscribe::Target::Get(g) => {
                    client.subscribe_get(&s.subscription_id, &g.collection, &g.id);
                }
            }
        }
        let log = tokio::spawn(async move {
            let mut log = Vec::new();
            while let Some(event) = events.recv().await {
                log.push(event);
            }
            log
        });
        clients.push((Arc::new(client), subs, log));
    }

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let nodes = nodes.clone();
        let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1));
        tasks.push(tokio::spawn(async move {
            for _ in 0..MUTATIONS_PER_WRITER {
                let node = &nodes[rng.random_range(0..nodes.len())];
                let ops: Vec<_> = (0..rng.random_range(1..3))
                    .map(|_| random_op(&mut rng))
                    .collect();
                node.mutate(json!({"ops": ops})).await;
                if rng.random_range(0..4) == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for (c, (client, _, _)) in clients.iter().enumerate() {
        let client = client.clone();
        let mut rng = StdRng::seed_from_u64(seed ^ (100 + c as u64));
        tasks.push(tokio::spawn(async move {
            for i in 0..CLIENT_MUTATIONS {
                let id = format!("c{c}-{i}");
                let result = client
                    .mutate(vec![op::upsert("work_items", &id, json!({"ownerId": OWNERS[rng.random_range(0..2)], "priority": rng.random_range(0..6)}))])
                    .await
                    .expect("upserts succeed");
                assert!(client.view().watermark >= result.seq, "read-your-writes: resolved before the view reached seq {}", result.seq);
            }
        }));
    }
    let chaos_clients: Vec<_> = clients.iter().map(|(c, _, _)| c.clone()).collect();
    let mut chaos_rng = StdRng::seed_from_u64(seed ^ 0xC4A05);
    tasks.push(tokio::spawn(async move {
        for _ in 0..RECONNECTS {
            tokio::time::sleep(Duration::from_millis(chaos_rng.random_range(1..15))).await;
            chaos_clients[chaos_rng.random_range(0..chaos_clients.len())].reconnect();
        }
    }));
    for task in tasks {
        tokio::time::timeout(WAIT * 2, task)
            .await
            .expect("the workload finishes in time")
            .unwrap();
    }

    let head = nodes[0].store().head().await.unwrap().0;
    let model = Model::load(nodes[0].store()).await;
    assert_eq!(model.head(), head);
    for (c, (client, subs, log)) in clients.into_iter().enumerate() {
        tokio::time::timeout(WAIT, client.wait_for_watermark(head))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: client {c} never reached seq {head}"));
        let view = client.view();
        client.shutdown();
        drop(client);
        let events = tokio::time::timeout(WAIT, log).await.unwrap().unwrap();
        let mut watermark = 0;
        let mut transitions = 0;
        for event in &events {
            match event {
                ClientEvent::Transition { transition, view } => {
                    transitions += 1;
                    assert_eq!(
                        transition.from_watermark, watermark,
                        "seed {seed}: client {c}: the chain broke"
                    );
                    assert!(transition.to_watermark >= transition.from_watermark);
                    watermark = transition.to_watermark;
                    for s in &subs {
                        if view.subscriptions.contains_key(&s.subscription_id) {
                            assert_eq!(
                                shown(view, &s.subscription_id),
                                model.result_at(s, watermark),
                                "seed {seed}: client {c}, subscription {} at seq {watermark} shows a state the store never had",
                                s.subscription_id
                            );
                        }
                    }
                }
                ClientEvent::Disconnected { reason } => assert!(
                    !reason.contains("inconsistent"),
                    "seed {seed}: client {c}: {reason}"
                ),
                ClientEvent::Error(e) => panic!("seed {seed}: client {c}: {e:?}"),
                ClientEvent::Heartbeat { head_seq } => assert!(
                    *head_seq <= head,
                    "seed {seed}: client {c}: a heartbeat's head {head_seq} is past the last commit {head}"
                ),
                ClientEvent::Connected { welcome } => assert_eq!(
                    welcome.watermark, watermark,
                    "seed {seed}: client {c}: resume not accepted"
                ),
            }
        }
        assert!(transitions > 0);
        assert_eq!(view.watermark, head);
        for s in &subs {
            assert_eq!(
                shown(&view, &s.subscription_id),
                model.result_at(s, head),
                "seed {seed}: client {c}: final {}",
                s.subscription_id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_random_disconnects_lose_duplicate_and_reorder_nothing() {
    run(Backing::sqlite(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_random_disconnects_lose_duplicate_and_reorder_nothing() {
    let Some(backing) = Backing::postgres().await else {
        return;
    };
    run(backing, 2).await;
}
