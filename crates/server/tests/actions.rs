//! Actions end to end, on SQLite and Postgres: clients call over the socket
//! and over HTTP, protosync forwards to a real backend HTTP server started
//! here, which checks each request's signature, records it, may write
//! through the service API and answers with the seq of its writes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use protosync_auth::{AuthConfig, Authenticator};
use protosync_client::{CallError, Client, ClientConfig, op};
use protosync_dispatch::{Backend, Backends, signing};
use protosync_schema::Registry;
use protosync_server::SyncConfig;
use serde_json::{Value, json};
use support::{Backing, Node, WAIT, http_client};

const SECRET: &str = "an-actions-test-secret-long-enough";
const ISSUER: &str = "https://inbox.test";
const BACKEND_SECRET: &str = "whsec_backend_secret_for_tests";

const SCHEMA: &str = r#"
syntax = "proto3";
package inbox.v1;
import "protosync/v1/options.proto";

message Note {
  option (protosync.v1.collection) = {
    name: "notes"
    read: "auth != null && doc.owner_id == auth.sub"
  };
  string owner_id = 1;
  string text = 2;
}

message ConfirmRequest { string command_id = 1; string owner_id = 2; int64 attempt = 3; }
message ConfirmResponse { string status = 1; string note_id = 2; }
message Empty {}

service Inbox {
  rpc Confirm(ConfirmRequest) returns (ConfirmResponse) {
    option (protosync.v1.action) = { backend: "app" allow: "auth != null && args.owner_id == auth.sub" };
  }
  rpc Fail(Empty) returns (Empty) { option (protosync.v1.action) = { backend: "app" allow: "true" }; }
  rpc Hang(Empty) returns (Empty) { option (protosync.v1.action) = { backend: "app" allow: "true" }; }
  rpc Slow(Empty) returns (Empty) { option (protosync.v1.action) = { backend: "app" allow: "true" timeout_ms: 300 }; }
  rpc Misfit(Empty) returns (ConfirmResponse) { option (protosync.v1.action) = { backend: "app" allow: "true" }; }
  rpc Ahead(Empty) returns (Empty) { option (protosync.v1.action) = { backend: "app" allow: "true" }; }
  rpc Gone(Empty) returns (Empty) { option (protosync.v1.action) = { backend: "gone" allow: "true" }; }
  rpc ServicesOnly(Empty) returns (Empty) { option (protosync.v1.action) = { backend: "app" }; }
}
"#;

/// A request as the backend received it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    timestamp: u64,
    signature: String,
    raw: Vec<u8>,
    body: Value,
}

/// The app's backend: records every request (after checking its
/// signature), and answers per method.
#[derive(Clone, Default)]
struct AppBackend {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Where it writes (the node's HTTP base), set once the node is up.
    node: Arc<Mutex<Option<String>>>,
    /// `Hang` and `Slow` answer only once this is notified.
    release: Arc<tokio::sync::Notify>,
}

impl AppBackend {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn calls_of(&self, method: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with(method))
            .count()
    }
}

async fn handle(
    State(app): State<AppBackend>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp: u64 = header(signing::TIMESTAMP_HEADER).parse().unwrap_or(0);
    let signature = header(signing::SIGNATURE_HEADER);
    let now = epoch_seconds();
    if !signing::verify(BACKEND_SECRET.as_bytes(), timestamp, &raw, &signature, now) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": "BAD_SIGNATURE", "message": "no"}})),
        );
    }
    let body: Value = serde_json::from_slice(&raw).unwrap();
    app.seen.lock().unwrap().push(Seen {
        path: format!("{service}/{method}"),
        timestamp,
        signature,
        raw: raw.to_vec(),
        body: body.clone(),
    });
    let ok = |answer: Value| (StatusCode::OK, axum::Json(answer));
    match method.as_str() {
        "Confirm" => {
            let args = &body["args"];
            let node = app.node.lock().unwrap().clone().unwrap();
            let id = args["commandId"].as_str().unwrap().to_owned();
            let written: Value = http_client()
                .post(format!("{node}/v1/mutate"))
                .json(&json!({"ops": [{"upsert": {"collection": "notes", "id": id,
                    "doc": {"ownerId": args["ownerId"], "text": "confirmed"}}}]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ok(json!({"result": {"status": "sent", "noteId": id}, "seq": written["seq"]}))
        }
        "Fail" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(
                json!({"error": {"code": "MAILBOX_FULL", "message": "the mailbox is full"}}),
            ),
        ),
        "Hang" | "Slow" => {
            app.release.notified().await;
            ok(json!({"result": {}}))
        }
        "Misfit" => ok(json!({"result": {"status": 7}})),
        "Ahead" => ok(json!({"result": {}, "seq": "999999"})),
        _ => ok(json!({"result": {}})),
    }
}

fn epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn start_backend() -> (AppBackend, String) {
    let app = AppBackend::default();
    let router = axum::Router::new()
        .route("/hooks/{service}/{method}", axum::routing::post(handle))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, url)
}

/// A port nothing listens on: bound, then closed.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn token(sub: &str) -> String {
    let now = epoch_seconds();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"iss": ISSUER, "aud": "inbox", "sub": sub, "iat": now, "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn auth() -> Authenticator {
    Authenticator::new(AuthConfig {
        providers: vec![support::hs256_provider("inbox", ISSUER, "inbox", SECRET)],
        // The backend writes without credentials: a trusted service here.
        trust_unauthenticated: true,
        ..AuthConfig::default()
    })
    .unwrap()
}

struct Setup {
    node: Node,
    backend: AppBackend,
    backend_url: String,
    gone_url: String,
}

async fn setup(backing: &Backing, sync: SyncConfig) -> Setup {
    let (backend, backend_url) = start_backend().await;
    let gone_url = closed_port_url().await;
    let node = node(backing, sync, &backend_url, &gone_url).await;
    *backend.node.lock().unwrap() = Some(node.http.clone());
    Setup {
        node,
        backend,
        backend_url,
        gone_url,
    }
}

async fn node(backing: &Backing, sync: SyncConfig, backend_url: &str, gone_url: &str) -> Node {
    let registry = Arc::new(Registry::from_sources(&[("inbox/v1/inbox.proto", SCHEMA)]).unwrap());
    let mut backends = Backends::default();
    backends.insert("app", Backend::new(backend_url, BACKEND_SECRET).unwrap());
    backends.insert("gone", Backend::new(gone_url, BACKEND_SECRET).unwrap());
    backends.check(&registry).unwrap();
    Node::start_with_backends(registry, backing.store().await, sync, auth(), backends).await
}

fn client(node: &Node, sub: &str) -> Client {
    let mut config = ClientConfig::new(node.ws.clone());
    config.token = Some(token(sub));
    Client::start(config).0
}

/// `POST /v1/actions/inbox.v1.Inbox/{method}` as `bearer` (none: a trusted service).
async fn http_call(node: &Node, method: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http_client()
        .post(format!("{}/v1/actions/inbox.v1.Inbox/{method}", node.http))
        .json(&body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn rejected_code(error: &CallError) -> (&str, &str, &str) {
    match error {
        CallError::Rejected {
            code,
            path,
            backend_code,
            ..
        } => (code, path, backend_code),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backing::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backing) = super::Backing::postgres().await else { return };
                    super::$name(backing).await
                }
            )*
        }
    };
}

on_both_stores!(
    a_call_reaches_the_backend_signed_with_identity_and_resolves_after_its_writes,
    a_denied_or_invalid_call_never_reaches_the_backend,
    a_retried_idempotency_key_returns_the_first_result_without_calling_again,
    backend_failures_get_their_codes_and_never_block_other_traffic,
);

async fn a_call_reaches_the_backend_signed_with_identity_and_resolves_after_its_writes(
    backing: Backing,
) {
    let s = setup(&backing, SyncConfig::default()).await;
    // On Postgres the backend writes through another node of the database:
    // this node learns of the write from the store, possibly after the
    // backend's answer. (SQLite is one process: the same node.)
    let writer = match &backing {
        Backing::Postgres(_) => {
            Some(node(&backing, SyncConfig::default(), &s.backend_url, &s.gone_url).await)
        }
        Backing::Sqlite(_) => None,
    };
    if let Some(writer) = &writer {
        *s.backend.node.lock().unwrap() = Some(writer.http.clone());
    }
    let ann = client(&s.node, "ann");
    ann.subscribe("notes", support::query("notes", vec![], vec![], 0));
    let result = tokio::time::timeout(
        WAIT,
        ann.call(
            "inbox.v1.Inbox/Confirm",
            json!({"command_id": "cmd-1", "ownerId": "ann", "attempt": 2}),
            Some("confirm-cmd-1"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(result.seq > 0, "the backend's write seq comes back");
    assert_eq!(
        protosync_protocol::struct_to_json(result.result.as_ref().unwrap()),
        json!({"status": "sent", "noteId": "cmd-1"})
    );
    // Read-your-writes: resolved only once the view holds the backend's write.
    let view = ann.view();
    assert!(view.watermark >= result.seq);
    let notes = &view.subscriptions["notes"];
    assert!(
        notes.documents().iter().any(|d| d.id == "cmd-1"),
        "{view:?}"
    );

    let seen = s.backend.seen();
    let [call] = &seen[..] else {
        panic!("one request: {seen:?}")
    };
    assert_eq!(call.path, "inbox.v1.Inbox/Confirm");
    let body = &call.body;
    assert_eq!(body["action"], "inbox.v1.Inbox/Confirm");
    assert_eq!(
        body["args"],
        json!({"commandId": "cmd-1", "ownerId": "ann", "attempt": "2"}),
        "validated, canonical proto3 JSON"
    );
    assert_eq!(body["auth"]["sub"], "ann");
    assert_eq!(body["auth"]["iss"], ISSUER);
    assert_eq!(body["caller"], "client");
    assert_eq!(body["idempotencyKey"], "confirm-cmd-1");
    assert_eq!(body["requestId"].as_str().unwrap().len(), 32);
    // The signature covers the timestamp and the exact body.
    let key = BACKEND_SECRET.as_bytes();
    assert!(signing::verify(
        key,
        call.timestamp,
        &call.raw,
        &call.signature,
        call.timestamp
    ));
    let mut tampered = call.raw.clone();
    tampered[10] ^= 1;
    assert!(!signing::verify(
        key,
        call.timestamp,
        &tampered,
        &call.signature,
        call.timestamp
    ));
    let stale = call.timestamp + signing::TOLERANCE_SECONDS + 1;
    assert!(!signing::verify(
        key,
        call.timestamp,
        &call.raw,
        &call.signature,
        stale
    ));

    // Over HTTP, a service: caller "service", auth null, the seq as a string.
    let (status, answer) = http_call(
        &s.node,
        "Confirm",
        None,
        json!({"args": {"commandId": "cmd-2", "ownerId": "bob"}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["noteId"], "cmd-2");
    assert!(answer["seq"].as_str().unwrap().parse::<u64>().unwrap() > result.seq);
    let seen = s.backend.seen();
    assert_eq!(seen[1].body["caller"], "service");
    assert_eq!(seen[1].body["auth"], Value::Null);
    assert_eq!(seen[1].body["idempotencyKey"], Value::Null);
}

async fn a_denied_or_invalid_call_never_reaches_the_backend(backing: Backing) {
    let s = setup(&backing, SyncConfig::default()).await;
    let bob = client(&s.node, "bob");
    let denied = bob
        .call(
            "inbox.v1.Inbox/Confirm",
            json!({"commandId": "c", "ownerId": "ann"}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&denied).0, "ACTION_DENIED");
    let services_only = bob
        .call("inbox.v1.Inbox/ServicesOnly", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(
        rejected_code(&services_only).0,
        "ACTION_DENIED",
        "no rule denies end users"
    );
    let invalid = bob
        .call("inbox.v1.Inbox/Confirm", json!({"attempt": "soon"}), None)
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&invalid).0, "INVALID_ARGUMENT");
    assert_eq!(rejected_code(&invalid).1, "attempt");
    let unknown = bob
        .call("inbox.v1.Inbox/Nope", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&unknown).0, "UNKNOWN_ACTION");

    let bearer = token("bob");
    let (status, answer) = http_call(
        &s.node,
        "Confirm",
        Some(&bearer),
        json!({"args": {"commandId": "c", "ownerId": "ann"}}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("ACTION_DENIED"))
    );
    let (status, answer) = http_call(
        &s.node,
        "Confirm",
        Some(&bearer),
        json!({"args": {"ownerId": "bob", "nope": 1}}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    assert_eq!(answer["error"]["path"], "nope");
    let (status, answer) = http_call(&s.node, "Confirm", None, json!({"argz": {}})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    let (status, answer) = http_call(&s.node, "Confirm", None, json!({"idempotencyKey": ""})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    let long = "k".repeat(257);
    let (status, answer) =
        http_call(&s.node, "Confirm", None, json!({"idempotencyKey": long})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("LIMIT_EXCEEDED"))
    );

    assert!(s.backend.seen().is_empty(), "{:?}", s.backend.seen());
}

async fn a_retried_idempotency_key_returns_the_first_result_without_calling_again(
    backing: Backing,
) {
    let s = setup(&backing, SyncConfig::default()).await;
    let ann = client(&s.node, "ann");
    let args = json!({"commandId": "c1", "ownerId": "ann"});
    let first = ann
        .call("inbox.v1.Inbox/Confirm", args.clone(), Some("send-once"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    // Spelled differently, the same call.
    let again = ann
        .call(
            "inbox.v1.Inbox/Confirm",
            json!({"command_id": "c1", "ownerId": "ann", "attempt": 0}),
            Some("send-once"),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.result.clone(), again.seq),
        (first.result.clone(), first.seq)
    );
    assert_eq!(s.backend.calls_of("Confirm"), 1);

    let other_args = ann
        .call(
            "inbox.v1.Inbox/Confirm",
            json!({"commandId": "c2", "ownerId": "ann"}),
            Some("send-once"),
        )
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&other_args).0, "IDEMPOTENCY_KEY_REUSED");
    // Bound to the caller: a service with the same key and args is another call.
    let (status, answer) = http_call(
        &s.node,
        "Confirm",
        None,
        json!({"args": args, "idempotencyKey": "send-once"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    assert_eq!(s.backend.calls_of("Confirm"), 1);

    // Another node on the same data (a restart, or the next node of the
    // cluster) still answers from the store, over HTTP too.
    let other = node(&backing, SyncConfig::default(), &s.backend_url, &s.gone_url).await;
    let (status, answer) = http_call(
        &other,
        "Confirm",
        Some(&token("ann")),
        json!({"args": args, "idempotencyKey": "send-once"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["seq"], first.seq.to_string());
    assert_eq!(s.backend.calls_of("Confirm"), 1);

    // A failed call is not recorded: its retry calls the backend again.
    for _ in 0..2 {
        let failed = ann
            .call("inbox.v1.Inbox/Fail", json!({}), Some("fail-key"))
            .await
            .unwrap_err();
        assert_eq!(rejected_code(&failed).0, "ACTION_FAILED");
    }
    assert_eq!(s.backend.calls_of("Fail"), 2);
}

async fn backend_failures_get_their_codes_and_never_block_other_traffic(backing: Backing) {
    let sync = SyncConfig {
        max_inflight_calls: 2,
        ..SyncConfig::default()
    };
    let s = setup(&backing, sync).await;
    let ann = Arc::new(client(&s.node, "ann"));

    let failed = ann
        .call("inbox.v1.Inbox/Fail", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(
        rejected_code(&failed),
        ("ACTION_FAILED", "", "MAILBOX_FULL")
    );
    let CallError::Rejected { message, .. } = &failed else {
        unreachable!()
    };
    assert_eq!(message, "the mailbox is full", "the backend's own message");
    let misfit = ann
        .call("inbox.v1.Inbox/Misfit", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&misfit).0, "ACTION_FAILED");
    assert_eq!(rejected_code(&misfit).1, "status", "the result's field");
    let ahead = ann
        .call("inbox.v1.Inbox/Ahead", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(
        rejected_code(&ahead).0,
        "ACTION_FAILED",
        "a seq the database never reached"
    );
    let gone = ann
        .call("inbox.v1.Inbox/Gone", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&gone).0, "ACTION_UNAVAILABLE");
    let (status, answer) = http_call(&s.node, "Gone", None, json!({})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("ACTION_UNAVAILABLE"))
    );
    let (status, answer) = http_call(&s.node, "Fail", None, json!({})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (502, Some("ACTION_FAILED"))
    );
    assert_eq!(answer["error"]["backendCode"], "MAILBOX_FULL");

    // The backend never answers Slow within its 300 ms timeout.
    let slow = ann
        .call("inbox.v1.Inbox/Slow", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&slow).0, "ACTION_TIMEOUT");

    // Two calls hang in the backend: the connection's bound is reached...
    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let ann = ann.clone();
            tokio::spawn(async move { ann.call("inbox.v1.Inbox/Hang", json!({}), None).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.backend.calls_of("Hang") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hanging calls never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = ann
        .call("inbox.v1.Inbox/Hang", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(rejected_code(&third).0, "LIMIT_EXCEEDED");
    // ...and the same connection's mutations, and other clients' calls, go on.
    let written = ann
        .mutate(vec![op::upsert("notes", "n1", json!({"ownerId": "ann"}))])
        .await;
    assert!(
        written.is_err_and(|e| e.to_string().contains("PERMISSION_DENIED")),
        "answered"
    );
    let bob = client(&s.node, "bob");
    bob.call(
        "inbox.v1.Inbox/Confirm",
        json!({"commandId": "b1", "ownerId": "bob"}),
        None,
    )
    .await
    .unwrap();
    for call in &hanging {
        assert!(!call.is_finished(), "still waiting on the backend");
    }
    s.backend.release.notify_waiters();
    for call in hanging {
        call.await.unwrap().unwrap();
    }
}
