//! Identity and access end to end, with tokens minted by PyJWT (an
//! implementation independent of ours) and a JWKS served over HTTP.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protosync_auth::{ApiKeyConfig, AuthConfig, Authenticator, ProviderConfig};
use protosync_client::{Client, ClientConfig, ClientEvent, op};
use protosync_server::SyncConfig;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Backing, Node, WAIT, query, shown};

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";
const SERVICE_KEY: &str = "psk_runtime_service_key_for_tests";
const PROJECTOR_KEY: &str = "psk_projector_limited_to_run_summary";

struct Minted {
    jwks_v1: Value,
    jwks_v2: Value,
    better_auth_jwks: Value,
    tokens: BTreeMap<String, String>,
    /// When the tokens were minted, in seconds since the epoch: their
    /// `iat`, and `exp` relative to it (docs in mint_tokens.py).
    now: u64,
}

/// Mints the tests' tokens; `better_auth_url` is the base URL of the
/// Better Auth issuer the test serves.
fn mint(better_auth_url: &str) -> Minted {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mint_tokens.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(SECRET)
        .arg(better_auth_url)
        .output()
        .expect("python3 runs (scripts/test installs PyJWT)");
    assert!(
        output.status.success(),
        "minting tokens failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    Minted {
        jwks_v1: json["jwks_v1"].clone(),
        jwks_v2: json["jwks_v2"].clone(),
        better_auth_jwks: json["better_auth_jwks"].clone(),
        tokens: serde_json::from_value(json["tokens"].clone()).unwrap(),
        now: json["now"].as_u64().unwrap(),
    }
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves the issuers' key sets, which the test can swap (key rotation):
/// the idp's at `/jwks.json`, and Better Auth's where its jwt() plugin
/// publishes it, `/api/auth/jwks`. Returns the base URL, which is also the
/// Better Auth issuer's base URL.
async fn issuer_server(jwks: Arc<Mutex<Value>>, better_auth_jwks: Arc<Mutex<Value>>) -> String {
    let serve = |set: Arc<Mutex<Value>>| {
        axum::routing::get(move || {
            let set = set.clone();
            async move { axum::Json(set.lock().unwrap().clone()) }
        })
    };
    let app = axum::Router::new()
        .route("/jwks.json", serve(jwks))
        .route("/api/auth/jwks", serve(better_auth_jwks));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// The issuers of the tests, keys served from `base`; the Better Auth one
/// configured as docs/auth.md's recipe says.
fn config(base: &str) -> AuthConfig {
    let provider = |name: &str, issuer: &str, algorithms: &[&str]| ProviderConfig {
        name: name.into(),
        issuer: issuer.into(),
        audience: vec!["protosync".into()],
        algorithms: algorithms
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        secret: None,
        jwks_url: None,
        jwks_file: None,
        public_key_pem: None,
        jwks_ttl_seconds: 600,
        jwks_min_refetch_seconds: 0,
        service_role: None,
        required_claims: None,
        max_token_age_seconds: None,
    };
    AuthConfig {
        providers: vec![
            ProviderConfig {
                secret: Some(SECRET.into()),
                ..provider("bridge", "https://bridge.test", &["HS256"])
            },
            ProviderConfig {
                jwks_url: Some(format!("{base}/jwks.json")),
                ..provider("idp", "https://idp.test", &["RS256", "ES256", "EdDSA"])
            },
            // issuer: the base URL's origin, no trailing slash; audience:
            // the base URL; EdDSA; the JWKS under /api/auth/jwks.
            ProviderConfig {
                audience: vec![base.into()],
                jwks_url: Some(format!("{base}/api/auth/jwks")),
                ..provider("better-auth", base, &["EdDSA"])
            },
        ],
        api_keys: vec![
            ApiKeyConfig {
                name: "runtime".into(),
                sha256: sha256(SERVICE_KEY),
                collections: None,
            },
            ApiKeyConfig {
                name: "projector".into(),
                sha256: sha256(PROJECTOR_KEY),
                collections: Some(vec!["run_summary".into()]),
            },
        ],
        leeway_seconds: 0,
        ..AuthConfig::default()
    }
}

struct Setup {
    node: Node,
    minted: Minted,
    jwks: Arc<Mutex<Value>>,
    /// The issuers' base URL (and the Better Auth issuer).
    base: String,
    _backing: Backing,
}

async fn setup() -> Setup {
    setup_with(SyncConfig::default(), |_| {}).await
}

async fn setup_with(sync: SyncConfig, adjust: impl FnOnce(&mut AuthConfig)) -> Setup {
    setup_with_schema(support::registry(), sync, adjust).await
}

/// Serves the issuers' keys and mints tokens for them.
async fn issuers() -> (Minted, Arc<Mutex<Value>>, String) {
    let jwks = Arc::new(Mutex::new(Value::Null));
    let better_auth_jwks = Arc::new(Mutex::new(Value::Null));
    let base = issuer_server(jwks.clone(), better_auth_jwks.clone()).await;
    let minted = mint(&base);
    *jwks.lock().unwrap() = minted.jwks_v1.clone();
    *better_auth_jwks.lock().unwrap() = minted.better_auth_jwks.clone();
    (minted, jwks, base)
}

/// Tests' sync timers: heartbeats (and so revocation checks) every 200 ms.
fn test_sync(sync: &SyncConfig) -> SyncConfig {
    SyncConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..*sync
    }
}

async fn setup_with_schema(
    registry: Arc<protosync_schema::Registry>,
    sync: SyncConfig,
    adjust: impl FnOnce(&mut AuthConfig),
) -> Setup {
    let (minted, jwks, base) = issuers().await;
    let backing = Backing::sqlite();
    let mut auth = config(&base);
    adjust(&mut auth);
    let node = Node::start_with_schema(
        registry,
        backing.store().await,
        test_sync(&sync),
        Authenticator::new(auth).unwrap(),
    )
    .await;
    Setup {
        node,
        minted,
        jwks,
        base,
        _backing: backing,
    }
}

async fn http(node: &Node, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = support::http_client()
        .post(format!("{}{path}", node.http))
        .json(&body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn items_query() -> Value {
    json!({"collection": "work_items"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independently_minted_tokens_are_verified_and_bad_ones_refused_with_their_code() {
    let s = setup().await;
    for good in ["hs_ann", "rs", "es", "eddsa"] {
        let (status, body) = http(
            &s.node,
            "/v1/query",
            Some(&s.minted.tokens[good]),
            items_query(),
        )
        .await;
        assert_eq!(status, 200, "{good}: {body}");
    }
    let refused = [
        ("expired", 401, "TOKEN_EXPIRED"),
        ("not_yet_valid", 401, "TOKEN_NOT_YET_VALID"),
        ("wrong_issuer", 401, "TOKEN_INVALID_ISSUER"),
        ("wrong_audience", 401, "TOKEN_INVALID_AUDIENCE"),
        ("wrong_key", 401, "TOKEN_INVALID_SIGNATURE"),
        ("alg_none", 401, "TOKEN_INVALID"),
        ("hs_rs_confusion", 401, "TOKEN_INVALID"),
        ("tampered", 401, "TOKEN_INVALID_SIGNATURE"),
        ("unknown_kid", 401, "TOKEN_UNKNOWN_KEY"),
        ("rotated", 401, "TOKEN_UNKNOWN_KEY"),
    ];
    for (name, status, code) in refused {
        let (got, body) = http(
            &s.node,
            "/v1/query",
            Some(&s.minted.tokens[name]),
            items_query(),
        )
        .await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
    }
    // Rotation: the issuer publishes a new key; the next token with its kid
    // fetches the JWKS again, without a restart.
    *s.jwks.lock().unwrap() = s.minted.jwks_v2.clone();
    let (status, body) = http(
        &s.node,
        "/v1/query",
        Some(&s.minted.tokens["rotated"]),
        items_query(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&s.node, "/v1/query", Some("not-a-key"), items_query()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_filter_reads_and_a_denied_write_changes_nothing() {
    let s = setup().await;
    let (ann, bob) = (&s.minted.tokens["hs_ann"], &s.minted.tokens["hs_bob"]);
    let (status, _) = http(&s.node, "/v1/mutate", Some(SERVICE_KEY), json!({"ops": [
        {"upsert": {"collection": "work_items", "id": "a1", "doc": {"ownerId": "ann", "title": "ann's"}}},
        {"upsert": {"collection": "work_items", "id": "b1", "doc": {"ownerId": "bob", "title": "bob's"}}},
    ]}))
    .await;
    assert_eq!(status, 200);
    let (_, page) = http(&s.node, "/v1/query", Some(ann), items_query()).await;
    let ids: Vec<&str> = page["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1"], "ann sees only her own item");
    // A get of bob's item by ann is NOT_FOUND, exactly like a missing one.
    let response = support::http_client()
        .get(format!("{}/v1/collections/work_items/docs/b1", s.node.http))
        .bearer_auth(ann)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // Anonymous callers see nothing of a collection whose rule needs auth.
    let (status, page) = http(&s.node, "/v1/query", None, items_query()).await;
    assert_eq!(
        (status, page["documents"].as_array().unwrap().len()),
        (200, 0)
    );
    // Ann may not write an item as bob, nor take bob's: the whole mutation is refused.
    let (status, body) = http(
        &s.node,
        "/v1/mutate",
        Some(ann),
        json!({"ops": [
            {"upsert": {"collection": "work_items", "id": "a2", "doc": {"ownerId": "ann"}}},
            {"patch": {"collection": "work_items", "id": "b1", "fields": {"ownerId": "ann"}}},
        ]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ops[1]"),
        "{body}"
    );
    let (_, all) = http(&s.node, "/v1/query", Some(SERVICE_KEY), items_query()).await;
    let owners: Vec<(&str, &str)> = all["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap(),
                d["doc"]["ownerId"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        [("a1", "ann"), ("b1", "bob")],
        "the store is unchanged"
    );
    // Writes reveal nothing about a document the caller may not write:
    // not that it exists, not its version.
    for probe in [
        json!({"insert": {"collection": "work_items", "id": "b1", "doc": {"ownerId": "ann"}}}),
        json!({"patch": {"collection": "work_items", "id": "b1", "fields": {"title": "x"}, "expectedVersion": "7"}}),
        json!({"delete": {"collection": "work_items", "id": "b1"}}),
    ] {
        let (status, body) = http(&s.node, "/v1/mutate", Some(ann), json!({"ops": [probe]})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("PERMISSION_DENIED")),
            "{body}"
        );
    }
    let (status, body) = http(
        &s.node,
        "/v1/mutate",
        Some(ann),
        json!({"ops": [{"delete": {"collection": "work_items", "id": "nothing-here"}}]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    // Bob can write his own.
    let (status, _) = http(&s.node, "/v1/mutate", Some(bob), json!({"ops": [{"patch": {"collection": "work_items", "id": "b1", "fields": {"title": "mine"}}}]})).await;
    assert_eq!(status, 200);
    // A service key limited to run_summary cannot touch work_items.
    let (status, body) = http(
        &s.node,
        "/v1/mutate",
        Some(PROJECTOR_KEY),
        json!({"ops": [{"upsert": {"collection": "work_items", "id": "x", "doc": {}}}]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let (status, _) = http(&s.node, "/v1/mutate", Some(PROJECTOR_KEY), json!({"ops": [{"upsert": {"collection": "run_summary", "id": "r1", "doc": {"ownerId": "ann"}}}]})).await;
    assert_eq!(status, 200);
}

/// A live subscription of ann never shows bob's documents while writes flip
/// owners back and forth, across token refreshes, a switch of identity and
/// resumes; at every watermark it shows exactly ann's visible documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_views_follow_visibility_across_writes_refreshes_and_resumes() {
    let s = setup().await;
    let seed = protosync_testkit::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut config = ClientConfig::new(&s.node.ws);
    config.token = Some(s.minted.tokens["hs_ann"].clone());
    config.initial_backoff = Duration::from_millis(10);
    let (client, mut events) = Client::start(config);
    let log = tokio::spawn(async move {
        let mut log = Vec::new();
        while let Some(event) = events.recv().await {
            log.push(event);
        }
        log
    });
    client.subscribe("mine", query("work_items", vec![], vec![], 100));
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for step in 0..80 {
        let id = format!("w{}", rng.random_range(0..12));
        let owner = if rng.random_bool(0.5) { "ann" } else { "bob" };
        let (status, _) = http(&s.node, "/v1/mutate", Some(SERVICE_KEY), json!({"ops": [{"upsert": {"collection": "work_items", "id": id, "doc": {"ownerId": owner}}}]})).await;
        assert_eq!(status, 200);
        owners.insert(id, owner.to_owned());
        match step {
            20 => client.authenticate(&s.minted.tokens["hs_ann_again"]),
            35 | 60 => client.reconnect(),
            _ => {}
        }
    }
    let head = s.node.store().head().await.unwrap().0;
    tokio::time::timeout(WAIT, client.wait_for_watermark(head))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: never reached {head}"));
    let mine = |owner: &str| {
        owners
            .iter()
            .filter(|(_, o)| *o == owner)
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
    };
    let ids = |view: &protosync_client::View| {
        shown(view, "mine")
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&client.view()), mine("ann"), "seed {seed}");
    // Switch to bob: the same subscription now shows bob's documents.
    client.authenticate(&s.minted.tokens["hs_bob"]);
    let bobs = mine("bob");
    tokio::time::timeout(WAIT, client.wait_until(|view| ids(view) == bobs))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the view never switched to bob's documents"));
    client.shutdown();
    drop(client);
    let log = tokio::time::timeout(WAIT, log).await.unwrap().unwrap();
    // At every watermark the view held exactly one owner's documents as the
    // store had them then: ann's until the switch, bob's after, never mixed.
    let model = support::Model::load(s.node.store()).await;
    let owned = |owner: &str| {
        wire_subscribe(query(
            "work_items",
            vec![("ownerId", "==", json!(owner))],
            vec![],
            100,
        ))
    };
    let mut switched = false;
    let mut transitions = 0;
    for event in log {
        match event {
            ClientEvent::Transition { transition, view } => {
                transitions += 1;
                let shown_now = shown(&view, "mine");
                let ann = model.result_at(&owned("ann"), transition.to_watermark);
                let bob = model.result_at(&owned("bob"), transition.to_watermark);
                if !switched && shown_now == ann {
                    continue;
                }
                assert_eq!(
                    shown_now, bob,
                    "seed {seed}: at seq {} the view is neither ann's nor bob's",
                    transition.to_watermark
                );
                switched = true;
            }
            ClientEvent::Error(e) => panic!("seed {seed}: {e:?}"),
            ClientEvent::Disconnected { reason } => {
                assert!(!reason.contains("inconsistent"), "seed {seed}: {reason}");
            }
            ClientEvent::Connected { .. } | ClientEvent::Heartbeat { .. } => {}
        }
    }
    assert!(
        switched && transitions > 10,
        "seed {seed}: {transitions} transitions"
    );
}

fn wire_subscribe(q: protosync_client::wire::Query) -> protosync_client::wire::Subscribe {
    protosync_client::wire::Subscribe {
        subscription_id: "mine".into(),
        target: Some(protosync_client::wire::subscribe::Target::Query(q)),
        held: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_revoked_token_pauses_live_updates_until_a_fresh_one_arrives() {
    let s = setup().await;
    let mut config = ClientConfig::new(&s.node.ws);
    config.token = Some(s.minted.tokens["hs_short"].clone());
    let (client, mut events) = Client::start(config);
    client.subscribe("mine", query("work_items", vec![], vec![], 10));
    let error = loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Error(e) => break e,
            _ => continue,
        }
    };
    assert_eq!(error.code, "TOKEN_EXPIRED");
    let paused_at = client.view().watermark;
    http(&s.node, "/v1/mutate", Some(SERVICE_KEY), json!({"ops": [{"upsert": {"collection": "work_items", "id": "new", "doc": {"ownerId": "ann"}}}]})).await;
    let rejected = client
        .mutate(vec![op::upsert(
            "work_items",
            "x",
            json!({"ownerId": "ann"}),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(rejected, protosync_client::MutationError::Rejected { ref code, .. } if code == "TOKEN_EXPIRED"),
        "{rejected:?}"
    );
    assert_eq!(
        client.view().watermark,
        paused_at,
        "nothing is sent while the token is expired"
    );
    client.authenticate(&s.minted.tokens["hs_revocable"]);
    let head = s.node.store().head().await.unwrap().0;
    tokio::time::timeout(WAIT, client.wait_for_watermark(head))
        .await
        .expect("updates resume after a fresh token");
    assert_eq!(shown(&client.view(), "mine").len(), 1);
    // Revoke the new token: the live connection loses it at its next heartbeat.
    let (status, _) = http(
        &s.node,
        "/v1/auth/revoke",
        Some(SERVICE_KEY),
        json!({"jti": "revoke-me"}),
    )
    .await;
    assert_eq!(status, 200);
    let error = loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Error(e) => break e,
            _ => continue,
        }
    };
    assert_eq!(error.code, "TOKEN_REVOKED");
    let (status, body) = http(
        &s.node,
        "/v1/query",
        Some(&s.minted.tokens["hs_revocable"]),
        items_query(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("TOKEN_REVOKED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_anonymous_floods_and_mutation_bursts_are_limited_with_clear_codes() {
    let sync = SyncConfig {
        anonymous_requests_per_minute: 6,
        max_mutations_per_second: 1,
        ..SyncConfig::default()
    };
    let s = setup_with(sync, |auth| {
        auth.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    // A browser WebSocket from another origin is refused at the upgrade.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = s.node.ws.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    let mut request = s.node.ws.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://app.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
    // Anonymous requests from one address: a burst, then RATE_LIMITED.
    let mut codes = Vec::new();
    for _ in 0..12 {
        let (status, body) = http(&s.node, "/v1/query", None, items_query()).await;
        codes.push((
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        ));
    }
    assert_eq!(
        codes.iter().filter(|(s, _)| *s == 200).count(),
        10,
        "{codes:?}"
    );
    assert_eq!(codes.last().unwrap(), &(429, "RATE_LIMITED".to_owned()));
    // Credentials are not limited by the anonymous budget.
    let (status, _) = http(&s.node, "/v1/query", Some(SERVICE_KEY), items_query()).await;
    assert_eq!(status, 200);
    // Mutations on one connection beyond the rate get RATE_LIMITED; the connection lives on.
    let mut config = ClientConfig::new(&s.node.ws);
    config.token = Some(s.minted.tokens["hs_ann"].clone());
    let (client, _events) = Client::start(config);
    let mut results = Vec::new();
    for i in 0..4 {
        results.push(client.mutate(vec![op::upsert(
            "work_items",
            &format!("m{i}"),
            json!({"ownerId": "ann"}),
        )]));
    }
    let results = futures::future::join_all(results).await;
    let limited = results.iter().filter(|r| matches!(r, Err(protosync_client::MutationError::Rejected { code, .. }) if code == "RATE_LIMITED")).count();
    assert!(limited >= 1, "{results:?}");
    assert!(
        results.iter().filter(|r| r.is_ok()).count() >= 2,
        "{results:?}"
    );
}

fn epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JSON WebSocket client written from docs/protocol.md alone, to see the
/// server's messages exactly (the Rust client hides `authOk`).
struct Socket(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl Socket {
    /// Connects and sends a hello with `token`.
    async fn hello(node: &Node, token: &str) -> Socket {
        let (stream, _) = tokio_tungstenite::connect_async(node.ws.as_str())
            .await
            .unwrap();
        let mut socket = Socket(stream);
        socket
            .send(json!({"hello": {"protocolVersion": 1, "token": token}}))
            .await;
        socket
    }

    async fn send(&mut self, message: Value) {
        use futures::SinkExt;
        self.0
            .send(tokio_tungstenite::tungstenite::Message::Text(
                message.to_string().into(),
            ))
            .await
            .unwrap();
    }

    /// The next message that is not a heartbeat, or the close code.
    async fn next(&mut self) -> Result<Value, u16> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let frame = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a message in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message.get("heartbeat").is_none() {
                        return Ok(message);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(1006),
            }
        }
    }

    /// Reads up to the next `error` message, skipping everything else.
    async fn next_error(&mut self) -> Value {
        loop {
            let message = self.next().await.expect("an error before the close");
            if let Some(error) = message.get("error") {
                return error.clone();
            }
        }
    }
}

/// The status of a WebSocket upgrade of `/v1/sync` sent with `header`
/// (raw bytes: tungstenite will not send an unreadable one).
async fn upgrade_status(node: &Node, header: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = node.http.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "GET /v1/sync HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    .into_bytes();
    request.extend_from_slice(header);
    request.extend_from_slice(b"\r\n\r\n");
    tcp.write_all(&request).await.unwrap();
    let mut answer = vec![0; 12];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let status_line = String::from_utf8_lossy(&answer);
    status_line[9..12].parse().unwrap()
}

/// `GET /v1/subscribe` for one document, with optional query parameters
/// and Authorization header; the response, still streaming.
async fn sse(
    node: &Node,
    params: &[(&str, &str)],
    authorization: Option<reqwest::header::HeaderValue>,
) -> reqwest::Response {
    let mut request = support::http_client()
        .get(format!("{}/v1/subscribe", node.http))
        .query(&[("collection", "work_items"), ("id", "w1")])
        .query(params);
    if let Some(value) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    request.send().await.unwrap()
}

/// (status, error code) of an answer; a success has no code (and an SSE
/// stream's body is not read: it does not end).
async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    if response.status().is_success() {
        return (status, String::new());
    }
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_credentials_are_refused_on_every_transport_never_taken_for_absent() {
    use reqwest::header::{AUTHORIZATION, HeaderValue};
    let unreadable: &[u8] = b"Bearer \xe9.\xfc.\xf6";
    for trusting in [false, true] {
        let s = setup_with(SyncConfig::default(), |auth| {
            auth.trust_unauthenticated = trusting;
        })
        .await;
        let refused = (401, "UNAUTHENTICATED".to_owned());
        // HTTP: one unreadable header, or two headers.
        let response = support::http_client()
            .post(format!("{}/v1/query", s.node.http))
            .header(AUTHORIZATION, HeaderValue::from_bytes(unreadable).unwrap())
            .json(&items_query())
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response).await, refused, "trusting {trusting}");
        let response = support::http_client()
            .post(format!("{}/v1/query", s.node.http))
            .header(AUTHORIZATION, format!("Bearer {SERVICE_KEY}"))
            .header(AUTHORIZATION, format!("Bearer {SERVICE_KEY}"))
            .json(&items_query())
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response).await, refused, "trusting {trusting}");
        // SSE.
        let response = sse(
            &s.node,
            &[],
            Some(HeaderValue::from_bytes(unreadable).unwrap()),
        )
        .await;
        assert_eq!(error_code(response).await, refused, "trusting {trusting}");
        // The WebSocket upgrade refuses it too, though it reads no credentials.
        let mut header = b"Authorization: ".to_vec();
        header.extend_from_slice(unreadable);
        assert_eq!(upgrade_status(&s.node, &header).await, 401);
        assert_eq!(
            upgrade_status(&s.node, b"X-Nothing: here").await,
            101,
            "the raw upgrade is otherwise accepted"
        );
        // The socket's credential, Hello.token: refused, then close 4003.
        let mut socket = Socket::hello(&s.node, "é.ü.ö").await;
        let error = socket.next_error().await;
        assert_eq!(error["code"], "TOKEN_INVALID", "trusting {trusting}");
        assert_eq!(socket.next().await, Err(4003));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_access_token_takes_jwts_only_never_api_keys() {
    use reqwest::header::HeaderValue;
    let s = setup().await;
    let ann = s.minted.tokens["hs_ann"].clone();
    let response = sse(&s.node, &[("access_token", SERVICE_KEY)], None).await;
    assert_eq!(
        error_code(response).await,
        (401, "TOKEN_INVALID".to_owned()),
        "an API key in a URL is refused, even a valid one"
    );
    let response = sse(&s.node, &[("access_token", &ann)], None).await;
    assert_eq!(response.status(), 200);
    drop(response);
    let header = HeaderValue::from_str(&format!("Bearer {SERVICE_KEY}")).unwrap();
    let response = sse(&s.node, &[], Some(header.clone())).await;
    assert_eq!(response.status(), 200, "API keys are fine in the header");
    drop(response);
    let response = sse(&s.node, &[("access_token", &ann)], Some(header)).await;
    assert_eq!(
        error_code(response).await,
        (401, "UNAUTHENTICATED".to_owned()),
        "credentials twice are ambiguous"
    );
}

/// With a leeway of 30 s, a live connection still pauses at `exp`, and an
/// SSE stream ends there; a token past its `exp` but within the leeway is
/// accepted for one-shot requests and pauses a connection at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connection_pauses_at_exp_exactly_not_after_the_leeway() {
    const LEEWAY_SECONDS: u64 = 30;
    let s = setup_with(SyncConfig::default(), |auth| {
        auth.leeway_seconds = LEEWAY_SECONDS;
    })
    .await;
    let exp = s.minted.now + 3; // hs_short's, see mint_tokens.py
    // Well before exp + leeway: the pause would come at exp + 30 s.
    let in_time = Duration::from_secs(15);
    let short = s.minted.tokens["hs_short"].clone();
    let mut stream = sse(&s.node, &[("access_token", &short)], None).await;
    assert_eq!(stream.status(), 200);
    let sse_end = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("TOKEN_EXPIRED") {
                return (epoch_seconds(), stream.chunk().await.unwrap().is_none());
            }
        }
        panic!("the stream ended without TOKEN_EXPIRED: {text}");
    });
    let mut socket = Socket::hello(&s.node, &short).await;
    assert!(socket.next().await.unwrap().get("welcome").is_some());
    assert_eq!(
        socket.next().await.unwrap()["authOk"]["expiresAt"],
        exp.to_string()
    );
    socket
        .send(json!({"subscribe": {"subscriptionId": "s", "query": {"collection": "work_items"}}}))
        .await;
    let error = tokio::time::timeout(in_time, socket.next_error())
        .await
        .expect("the pause comes at exp, not exp + leeway");
    let paused_at = epoch_seconds();
    assert_eq!(error["code"], "TOKEN_EXPIRED", "{error}");
    assert!(paused_at >= exp, "paused at {paused_at}, before exp {exp}");
    socket
        .send(json!({"mutate": {"requestId": "m1", "ops": [{"upsert": {"collection": "work_items", "id": "x", "doc": {"ownerId": "ann"}}}]}}))
        .await;
    let refused = socket.next_error().await;
    assert_eq!(
        (refused["code"].as_str(), refused["requestId"].as_str()),
        (Some("TOKEN_EXPIRED"), Some("m1"))
    );
    let (ended_at, closed) = tokio::time::timeout(in_time, sse_end)
        .await
        .expect("the SSE stream ends at exp, not exp + leeway")
        .unwrap();
    assert!(ended_at >= exp && closed, "ended at {ended_at}, exp {exp}");

    // Past exp, within the leeway: fine for one request, never live.
    let lapsed = s.minted.tokens["hs_expired_within_leeway"].clone();
    let (status, body) = http(&s.node, "/v1/query", Some(&lapsed), items_query()).await;
    assert_eq!(status, 200, "{body}");
    let mut socket = Socket::hello(&s.node, &lapsed).await;
    let order: Vec<String> = [
        socket.next().await.unwrap(),
        socket.next().await.unwrap(),
        socket.next().await.unwrap(),
    ]
    .iter()
    .map(|m| {
        let name = m.as_object().unwrap().keys().next().unwrap().clone();
        match m.get("error") {
            Some(e) => format!("error {}", e["code"].as_str().unwrap()),
            None => name,
        }
    })
    .collect();
    assert_eq!(order, ["welcome", "authOk", "error TOKEN_EXPIRED"]);
    let response = sse(&s.node, &[("access_token", &lapsed)], None).await;
    assert_eq!(
        error_code(response).await,
        (401, "TOKEN_EXPIRED".to_owned())
    );
}

/// Revoked on node A, a token is refused by node B (another server on the
/// same database) within the documented bound, and by a node started
/// after both are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_node_on_the_database_and_survives_restarts() {
    let mut backings = vec![Backing::sqlite()];
    backings.extend(Backing::postgres().await);
    for backing in backings {
        let (minted, _jwks, base) = issuers().await;
        let start = |store| {
            Node::start_with_auth(
                store,
                test_sync(&SyncConfig::default()),
                Authenticator::new(config(&base)).unwrap(),
            )
        };
        let a = start(backing.store().await).await;
        let b = start(backing.store().await).await;
        let token = minted.tokens["hs_revocable"].clone();
        let mut live_on_b = Socket::hello(&b, &token).await;
        assert!(live_on_b.next().await.unwrap().get("welcome").is_some());
        assert!(live_on_b.next().await.unwrap().get("authOk").is_some());
        let exp = minted.now + 600; // hs_revocable's, see mint_tokens.py
        let (status, body) = http(
            &a,
            "/v1/auth/revoke",
            Some(SERVICE_KEY),
            json!({"jti": "revoke-me", "expiresAt": exp.to_string()}),
        )
        .await;
        assert_eq!((status, &body), (200, &json!({"revoked": "revoke-me"})));
        let revoked_at = std::time::Instant::now();
        let refused = (401, Some("TOKEN_REVOKED"));
        let (status, body) = http(&a, "/v1/query", Some(&token), items_query()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            refused,
            "at once on A"
        );
        // B: its next read of the store's revocations, then its next heartbeat.
        let bound = protosync_server::revocations::REVOCATION_REFRESH_INTERVAL
            + b.state.sync.heartbeat_interval;
        // (Plus slack for a loaded machine: the store read itself takes time.)
        let error = tokio::time::timeout(bound + Duration::from_secs(3), live_on_b.next_error())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "B did not pause the live connection within {bound:?}: {:?} after the revocation",
                    revoked_at.elapsed()
                )
            });
        assert_eq!(error["code"], "TOKEN_REVOKED", "{error}");
        let (status, body) = http(&b, "/v1/query", Some(&token), items_query()).await;
        assert_eq!((status, body["error"]["code"].as_str()), refused, "on B");
        // Kept until the token cannot be valid: exp + leeway (0 here), to the
        // end of that second.
        let stored = a
            .store()
            .revocations_after(protosync_store::RevocationSeq(0), 10)
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].keep_until_ms, Some((exp as i64 + 1) * 1000));
        // A restart of the whole cluster remembers it before the first request.
        drop((a, b, live_on_b));
        let c = start(backing.store().await).await;
        let (status, body) = http(&c, "/v1/query", Some(&token), items_query()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            refused,
            "after a restart"
        );
        let (status, _) = http(
            &c,
            "/v1/query",
            Some(&minted.tokens["hs_ann"]),
            items_query(),
        )
        .await;
        assert_eq!(status, 200, "other tokens are unaffected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_checks_its_body_and_takes_expires_at_as_number_or_string() {
    let s = setup().await;
    let revoke = |body: Value| http(&s.node, "/v1/auth/revoke", Some(SERVICE_KEY), body);
    for bad in [
        json!({"jti": ""}),
        json!({"jti": "a\u{0}b"}),
        json!({"jti": "x".repeat(protosync_store::MAX_JTI_BYTES + 1)}),
        json!({"jti": "j", "expiresAt": "soon"}),
        json!({"jti": "j", "expiresAt": -1}),
        json!({"jti": "j", "extra": true}),
    ] {
        let (status, body) = revoke(bad.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("BAD_REQUEST")),
            "{bad}: {body}"
        );
    }
    for good in [
        json!({"jti": "n", "expiresAt": 1767225600}),
        json!({"jti": "s", "expiresAt": "1767225600"}),
        json!({"jti": "f"}),
    ] {
        let (status, body) = revoke(good.clone()).await;
        assert_eq!(status, 200, "{good}: {body}");
    }
    let stored: Vec<(String, Option<i64>)> = s
        .node
        .store()
        .revocations_after(protosync_store::RevocationSeq(0), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.jti, r.keep_until_ms))
        .collect();
    let until = Some(1_767_225_601_000);
    assert_eq!(
        stored,
        [("n".into(), until), ("s".into(), until), ("f".into(), None)]
    );
}

/// The notes schema: notes belong to a user of one issuer, and its rules
/// compare the issuer as well as the subject (docs/auth.md, Rules).
fn notes_schema() -> Arc<protosync_schema::Registry> {
    const NOTES: &str = r#"syntax = "proto3";
package test.notes.v1;
import "protosync/v1/options.proto";
message Note {
  option (protosync.v1.collection) = {
    name: "notes"
    read: "auth != null && doc.owner_iss == auth.iss && doc.owner_id == auth.sub"
    write: "auth != null && doc.owner_iss == auth.iss && doc.owner_id == auth.sub"
  };
  string owner_iss = 1;
  string owner_id = 2;
  string text = 3;
}
"#;
    Arc::new(
        protosync_schema::Registry::from_sources(&[("test/notes/v1/notes.proto", NOTES)]).unwrap(),
    )
}

/// A Laravel-style bridge held to `jti` and a fresh `iat`, next to a Better
/// Auth issuer that mints neither a `jti` nor an `nbf`; rules that tell the
/// same `sub` of two issuers apart by `auth.iss`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_policy_is_per_provider_and_rules_can_scope_by_issuer() {
    let s = setup_with_schema(notes_schema(), SyncConfig::default(), |auth| {
        auth.required_claims = vec!["sub".into(), "jti".into()];
        let better_auth = auth
            .providers
            .iter_mut()
            .find(|p| p.name == "better-auth")
            .unwrap();
        better_auth.required_claims = Some(vec!["sub".into()]);
        let bridge = auth
            .providers
            .iter_mut()
            .find(|p| p.name == "bridge")
            .unwrap();
        bridge.max_token_age_seconds = Some(3600);
    })
    .await;
    let notes = || json!({"collection": "notes"});
    let code = |(status, body): (u16, Value)| {
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    let t = &s.minted.tokens;
    assert_eq!(
        code(http(&s.node, "/v1/query", Some(&t["hs_no_jti"]), notes()).await),
        (401, "TOKEN_MISSING_CLAIM".into()),
        "the bridge must send a jti"
    );
    assert_eq!(
        code(http(&s.node, "/v1/query", Some(&t["hs_old"]), notes()).await),
        (401, "TOKEN_TOO_OLD".into()),
        "the bridge's tokens must be fresh"
    );
    assert_eq!(
        code(http(&s.node, "/v1/query", Some(&t["better_auth_ann"]), notes()).await),
        (200, String::new()),
        "Better Auth needs no jti"
    );
    // Two users with the same sub, "ann", one per issuer.
    let (status, _) = http(&s.node, "/v1/mutate", Some(SERVICE_KEY), json!({"ops": [
        {"upsert": {"collection": "notes", "id": "bridge-ann", "doc": {"ownerIss": "https://bridge.test", "ownerId": "ann"}}},
        {"upsert": {"collection": "notes", "id": "better-auth-ann", "doc": {"ownerIss": s.base, "ownerId": "ann"}}},
    ]}))
    .await;
    assert_eq!(status, 200);
    let ids = |page: Value| -> Vec<String> {
        page["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, page) = http(&s.node, "/v1/query", Some(&t["hs_ann"]), notes()).await;
    assert_eq!(ids(page), ["bridge-ann"]);
    let (_, page) = http(&s.node, "/v1/query", Some(&t["better_auth_ann"]), notes()).await;
    assert_eq!(ids(page), ["better-auth-ann"]);
    let (status, body) = http(
        &s.node,
        "/v1/mutate",
        Some(&t["better_auth_ann"]),
        json!({"ops": [
            {"patch": {"collection": "notes", "id": "bridge-ann", "fields": {"text": "not yours"}}},
        ]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    // Idempotency keys are bound to the caller, and the caller is issuer
    // and sub: the other "ann" cannot replay the first one's request.
    let request = json!({"idempotencyKey": "k-1", "ops": [
        {"patch": {"collection": "notes", "id": "bridge-ann", "fields": {"text": "mine"}}},
    ]});
    let (status, body) = http(&s.node, "/v1/mutate", Some(&t["hs_ann"]), request.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&s.node, "/v1/mutate", Some(&t["better_auth_ann"]), request).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED")),
        "{body}"
    );
}

/// A token exactly as Better Auth's jwt() plugin mints it (EdDSA, a kid,
/// `aud` a string, the user's fields, no nbf or jti) against the provider
/// docs/auth.md's recipe configures, on HTTP and the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_better_auth_token_is_accepted_as_its_jwt_plugin_mints_it() {
    let s = setup().await;
    let token = s.minted.tokens["better_auth"].clone();
    let user = "7dSGkR3mW1qVx9LpT0aZcB";
    let (status, _) = http(
        &s.node,
        "/v1/mutate",
        Some(SERVICE_KEY),
        json!({"ops": [
            {"upsert": {"collection": "work_items", "id": "mine", "doc": {"ownerId": user}}},
            {"upsert": {"collection": "work_items", "id": "theirs", "doc": {"ownerId": "ann"}}},
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, page) = http(&s.node, "/v1/query", Some(&token), items_query()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["documents"][0]["id"], "mine");
    assert_eq!(page["documents"].as_array().unwrap().len(), 1);
    let mut socket = Socket::hello(&s.node, &token).await;
    assert!(socket.next().await.unwrap().get("welcome").is_some());
    assert_eq!(
        socket.next().await.unwrap()["authOk"]["expiresAt"],
        (s.minted.now + 15 * 60).to_string(),
        "Better Auth's tokens last 15 minutes"
    );
    // A refresh with a fresh token from its token endpoint is an Authenticate.
    socket
        .send(json!({"authenticate": {"token": s.minted.tokens["better_auth"]}}))
        .await;
    assert!(socket.next().await.unwrap().get("authOk").is_some());
}

/// docs/auth.md and protocol.md: an API key is a credential on the socket
/// too, limited to its collections and never expiring; an unknown one is
/// UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_on_the_socket_are_services_limited_to_their_collections() {
    let s = setup().await;
    let mut socket = Socket::hello(&s.node, PROJECTOR_KEY).await;
    assert!(socket.next().await.unwrap().get("welcome").is_some());
    let auth_ok = socket.next().await.unwrap();
    assert_eq!(
        auth_ok,
        json!({"authOk": {}}),
        "expiresAt 0: it does not expire"
    );
    socket
        .send(json!({"subscribe": {"subscriptionId": "items", "query": {"collection": "work_items"}}}))
        .await;
    let error = socket.next_error().await;
    assert_eq!(
        (error["code"].as_str(), error["subscriptionId"].as_str()),
        (Some("PERMISSION_DENIED"), Some("items"))
    );
    socket
        .send(json!({"authenticate": {"token": "not-a-key"}}))
        .await;
    assert_eq!(socket.next_error().await["code"], "UNAUTHENTICATED");
    socket
        .send(json!({"subscribe": {"subscriptionId": "runs", "query": {"collection": "run_summary"}}}))
        .await;
    let transition = socket.next().await.unwrap();
    assert!(
        transition.get("transition").is_some(),
        "the connection kept its identity: {transition}"
    );
    let mut refused = Socket::hello(&s.node, "not-a-key").await;
    assert_eq!(refused.next_error().await["code"], "UNAUTHENTICATED");
    assert_eq!(refused.next().await, Err(4003));
}

/// Every read and write an end user's request makes reaches the store with
/// that user's rules, on HTTP, the WebSocket and SSE alike; a service's
/// requests reach it unrestricted (so the recording tells them apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_requests_reach_the_store_only_with_their_rules() {
    use support::{Reached, RecordingStore};
    let (minted, _jwks, base) = issuers().await;
    let backing = Backing::sqlite();
    let recording = Arc::new(RecordingStore::new(backing.store().await));
    let node = Node::start_with_schema(
        support::registry(),
        recording.clone(),
        test_sync(&SyncConfig::default()),
        Authenticator::new(config(&base)).unwrap(),
    )
    .await;
    let ann = minted.tokens["hs_ann"].clone();
    let take = || std::mem::take(&mut *recording.reached.lock().unwrap());
    take();

    // HTTP: query, get, mutate.
    let (status, _) = http(&node, "/v1/mutate", Some(&ann), json!({"ops": [{"insert": {"collection": "work_items", "id": "w1", "doc": {"ownerId": "ann"}}}]})).await;
    assert_eq!(status, 200);
    let (status, _) = http(&node, "/v1/query", Some(&ann), items_query()).await;
    assert_eq!(status, 200);
    let response = support::http_client()
        .get(format!("{}/v1/collections/work_items/docs/w1", node.http))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let http_reached = take();

    // WebSocket: a query, a get, a mutation.
    let mut config = ClientConfig::new(&node.ws);
    config.token = Some(ann.clone());
    let (client, _events) = Client::start(config);
    client.subscribe("mine", query("work_items", vec![], vec![], 10));
    client.subscribe_get("one", "work_items", "w1");
    client
        .mutate(vec![protosync_client::op::patch(
            "work_items",
            "w1",
            json!({"title": "t"}),
        )])
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        client.wait_until(|view| view.subscriptions.len() == 2),
    )
    .await
    .unwrap();
    client.shutdown();
    let socket_reached = take();

    // SSE: a stream of one document, read up to its first event.
    let mut stream = sse(&node, &[], Some(format!("Bearer {ann}").parse().unwrap())).await;
    assert_eq!(stream.status(), 200);
    tokio::time::timeout(WAIT, stream.chunk())
        .await
        .unwrap()
        .unwrap();
    drop(stream);
    let sse_reached = take();

    for (transport, reached, expected) in [
        (
            "HTTP",
            &http_reached,
            &[Reached::WriteByRule, Reached::ReadByRule][..],
        ),
        (
            "WebSocket",
            &socket_reached,
            &[Reached::WriteByRule, Reached::ReadByRule][..],
        ),
        ("SSE", &sse_reached, &[Reached::ReadByRule][..]),
    ] {
        for kind in expected {
            assert!(reached.contains(kind), "{transport}: {reached:?}");
        }
        assert!(
            reached
                .iter()
                .all(|r| matches!(r, Reached::ReadByRule | Reached::WriteByRule)),
            "{transport}: an end user's request reached the store unrestricted: {reached:?}"
        );
    }
    let (status, _) = http(&node, "/v1/query", Some(SERVICE_KEY), items_query()).await;
    assert_eq!(status, 200);
    assert_eq!(
        take(),
        [Reached::ReadEverything],
        "a service reads everything"
    );
}
