//! The HTTP API, end to end over real sockets, against SQLite and Postgres.

use std::sync::Arc;

use protosync_engine::Engine;
use protosync_schema::Registry;
use protosync_store::postgres::PostgresStore;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};
use protosync_testkit::{TestDatabase, example_schema_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Server {
    base: String,
    http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Server {
    async fn start(store: Arc<dyn Store>, keep: Box<dyn std::any::Any + Send>) -> Server {
        let registry = Arc::new(Registry::load_dir(&example_schema_dir()).unwrap());
        let engine = Arc::new(Engine::start(registry, store).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let state = protosync_server::AppState::new(
            engine,
            protosync_server::SyncConfig::default(),
            protosync_auth::Authenticator::trusting(),
        );
        tokio::spawn(protosync_server::serve(listener, state, async {
            let _ = stop.await;
        }));
        Server {
            base,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
            _shutdown: shutdown,
            _keep: keep,
        }
    }

    async fn sqlite() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("data.db"), StoreOptions::default()).unwrap();
        Server::start(Arc::new(store), Box::new(dir)).await
    }

    async fn postgres() -> Option<Server> {
        let db = TestDatabase::create().await?;
        let store = PostgresStore::connect(&db.url, 4, StoreOptions::default())
            .await
            .unwrap();
        Some(Server::start(Arc::new(store), Box::new(db)).await)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn post_raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Server::sqlite().await).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() {
                   let Some(server) = super::Server::postgres().await else { return };
                   super::$name(server).await
               } )*
        }
    };
}

both_stores!(
    the_documented_scenario_works_end_to_end,
    bad_input_gets_a_clear_error_and_the_server_keeps_serving
);

fn work_item(id: &str, priority: i32, important: bool) -> Value {
    json!({"insert": {"collection": "work_items", "id": id, "doc": {"ownerId": "ann", "title": format!("item {id}"), "priority": priority, "important": important}}})
}

async fn the_documented_scenario_works_end_to_end(s: Server) {
    // insert
    let ops: Vec<Value> = (0..7)
        .map(|i| work_item(&format!("w{i}"), i % 4, i % 2 == 0))
        .collect();
    let (status, body) = s.post("/v1/mutate", json!({"ops": ops})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seq"], "1");
    assert_eq!(body["results"][6], json!({"id": "w6", "version": "1"}));

    // get
    let (status, body) = s.get("/v1/collections/work_items/docs/w3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            body["version"].as_str(),
            body["seq"].as_str(),
            body["doc"]["priority"].as_i64()
        ),
        (Some("1"), Some("1"), Some(3))
    );

    // query: filter, order, limit, cursor
    let query = json!({
        "collection": "work_items",
        "filter": [{"field": "ownerId", "op": "==", "value": "ann"}, {"field": "important", "op": "==", "value": true}],
        "orderBy": [{"field": "priority", "direction": "desc"}],
        "limit": 2
    });
    let mut pages = Vec::new();
    let mut request = query.clone();
    loop {
        let (status, body) = s.post("/v1/query", request.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["seq"], "1");
        pages.push(
            body["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
        );
        match body.get("nextCursor") {
            Some(cursor) => request["cursor"] = cursor.clone(),
            None => break,
        }
    }
    // important: w0 (p0), w2 (p2), w4 (p0), w6 (p2); by priority desc, ties by id desc
    assert_eq!(pages, vec![vec!["w6", "w2"], vec!["w4", "w0"]]);
    // A cursor with one character changed is refused, never a different page.
    let cursor = request["cursor"].as_str().unwrap().to_owned();
    for at in 0..cursor.len() {
        let mut edited = cursor.clone().into_bytes();
        edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
        let mut tampered = query.clone();
        tampered["cursor"] = json!(String::from_utf8(edited).unwrap());
        let (status, body) = s.post("/v1/query", tampered).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_CURSOR")),
            "character {at} of {cursor}: {body}"
        );
    }

    // patch with a stale expectedVersion
    let patch = |version: &str| json!({"ops": [{"patch": {"collection": "work_items", "id": "w3", "fields": {"priority": 9}, "expectedVersion": version}}]});
    let (status, body) = s.post("/v1/mutate", patch("1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["version"], "2");
    let (status, body) = s.post("/v1/mutate", patch("1")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "VERSION_CONFLICT");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected version 1, found version 2"),
        "{body}"
    );

    // idempotent retry: same seq, nothing written twice
    let keyed = json!({"idempotencyKey": "approve-w5", "ops": [{"patch": {"collection": "work_items", "id": "w5", "fields": {"important": true}}}]});
    let (_, first) = s.post("/v1/mutate", keyed.clone()).await;
    let (status, retry) = s.post("/v1/mutate", keyed.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            retry["seq"].clone(),
            retry["results"].clone(),
            retry["duplicate"].clone()
        ),
        (first["seq"].clone(), first["results"].clone(), json!(true))
    );
    let (_, doc) = s.get("/v1/collections/work_items/docs/w5").await;
    assert_eq!(doc["version"], "2", "the retry did not write again");
    assert_eq!(doc["seq"], first["seq"]);
    let (_, ready) = s.get("/readyz").await;
    assert_eq!(
        ready["seq"], first["seq"],
        "no commit after the first attempt"
    );
    // The same request spelled differently is still a retry.
    let respelled = json!({"idempotencyKey": "approve-w5", "ops": [{"patch": {"collection": "work_items", "id": "w5", "fields": {"important": true}}}]});
    let (_, again) = s.post("/v1/mutate", respelled).await;
    assert_eq!(
        (again["seq"].clone(), again["duplicate"].clone()),
        (first["seq"].clone(), json!(true))
    );
    let mut reused = keyed.clone();
    reused["ops"][0]["patch"]["fields"]["important"] = json!(false);
    let (status, body) = s.post("/v1/mutate", reused).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("IDEMPOTENCY_KEY_REUSED")
        )
    );

    // invalid document names the field
    let (status, body) = s
        .post("/v1/mutate", json!({"ops": [{"insert": {"collection": "work_items", "id": "bad", "doc": {"sender": {"email": 7}}}}]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "INVALID_DOCUMENT");
    assert_eq!(body["error"]["path"], "sender.email");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sender.email")
    );

    // insert of an existing id; delete
    let (status, body) = s
        .post("/v1/mutate", json!({"ops": [work_item("w1", 0, false)]}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ALREADY_EXISTS"))
    );
    let (status, _) = s
        .post(
            "/v1/mutate",
            json!({"ops": [{"delete": {"collection": "work_items", "id": "w1"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.get("/v1/collections/work_items/docs/w1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
}

async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving(s: Server) {
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str, &str)> = vec![
        ("/v1/mutate", b"{\"ops\": [".to_vec(), StatusCode::BAD_REQUEST, "BAD_REQUEST", "EOF"),
        ("/v1/mutate", b"[1,2]".to_vec(), StatusCode::BAD_REQUEST, "BAD_REQUEST", "invalid request body"),
        ("/v1/mutate", br#"{"ops": []}"#.to_vec(), StatusCode::BAD_REQUEST, "BAD_REQUEST", "at least one op"),
        ("/v1/mutate", br#"{"ops": [{"smash": {}}]}"#.to_vec(), StatusCode::BAD_REQUEST, "BAD_REQUEST", "unknown variant"),
        ("/v1/mutate", br#"{"ops": [{"insert": {"collection": "nope", "id": "x", "doc": {}}}]}"#.to_vec(), StatusCode::NOT_FOUND, "UNKNOWN_COLLECTION", "nope"),
        ("/v1/mutate", br#"{"ops": [{"upsert": {"collection": "work_items", "id": "", "doc": {}}}]}"#.to_vec(), StatusCode::BAD_REQUEST, "BAD_REQUEST", "id must not be empty"),
        ("/v1/mutate", br#"{"ops": [{"insert": {"collection": "work_items", "id": "x"}}]}"#.to_vec(), StatusCode::BAD_REQUEST, "BAD_REQUEST", "needs \"doc\""),
        ("/v1/mutate", br#"{"ops": [{"delete": {"collection": "work_items", "id": "x", "expectedVersion": -1}}]}"#.to_vec(), StatusCode::BAD_REQUEST, "BAD_REQUEST", "non-negative"),
        ("/v1/query", br#"{"collection": "work_items", "filter": [{"field": "nope", "op": "==", "value": 1}]}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_QUERY", "unknown field `nope`"),
        ("/v1/query", br#"{"collection": "work_items", "filter": [{"field": "priority", "op": "~", "value": 1}]}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_QUERY", "unknown op"),
        ("/v1/query", br#"{"collection": "work_items", "filter": [{"field": "priority", "op": "==", "value": "x"}]}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_QUERY", "expected a signed 64-bit integer"),
        ("/v1/query", br#"{"collection": "work_items", "limit": 100000}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_QUERY", "maximum of 1000"),
        ("/v1/query", br#"{"collection": "work_items", "cursor": "garbage!"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_CURSOR", "not a cursor"),
        ("/v1/query", br#"{"collection": "nope"}"#.to_vec(), StatusCode::NOT_FOUND, "UNKNOWN_COLLECTION", "nope"),
    ];
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let cases = cases.into_iter().chain([
        ("/v1/mutate", format!(r#"{{"ops": [{{"insert": {{"collection": "work_items", "id": "x", "doc": {{"labels": {}}}}}}}]}}"#, deep(10_000)).into_bytes(), StatusCode::BAD_REQUEST, "INVALID_DOCUMENT", "deeper than 100 levels"),
        ("/v1/query", format!(r#"{{"collection": "work_items", "filter": [{{"field": "priority", "op": "in", "value": {}}}]}}"#, deep(10_000)).into_bytes(), StatusCode::BAD_REQUEST, "INVALID_QUERY", "deeper than 100 levels"),
    ]);
    for (path, body, status, code, message) in cases {
        let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let (got_status, got) = s.post_raw(path, body).await;
        assert_eq!(got_status, status, "{text} => {got}");
        assert_eq!(got["error"]["code"], code, "{text} => {got}");
        assert!(
            got["error"]["message"].as_str().unwrap().contains(message),
            "{text} => {got}"
        );
    }
    // Too many ops and an oversized body are refused, not truncated.
    let ops: Vec<Value> = (0..501)
        .map(|i| json!({"delete": {"collection": "work_items", "id": format!("x{i}")}}))
        .collect();
    let (status, body) = s.post("/v1/mutate", json!({"ops": ops})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("LIMIT_EXCEEDED")),
        "{body}"
    );
    let huge = json!({"ops": [{"insert": {"collection": "work_items", "id": "big", "doc": {"title": "x".repeat(9 * 1024 * 1024)}}}]});
    let (status, body) = s.post("/v1/mutate", huge).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("LIMIT_EXCEEDED")),
        "{body}"
    );
    let big_doc = json!({"ops": [{"insert": {"collection": "work_items", "id": "big", "doc": {"title": "x".repeat(1024 * 1024 + 1)}}}]});
    let (status, body) = s.post("/v1/mutate", big_doc).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("LIMIT_EXCEEDED")),
        "{body}"
    );
    let (status, body) = s.get("/v1/nothing-here").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    let (status, body) = s.get("/v1/collections/work_items/docs/%FF").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BAD_REQUEST"))
    );
    let (status, body) = s.get("/v1/collections/nope/docs/x").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("UNKNOWN_COLLECTION"))
    );
    // Nothing was written by any of it, and the server still serves.
    let (status, ready) = s.get("/readyz").await;
    assert_eq!((status, ready["seq"].as_str()), (StatusCode::OK, Some("0")));
    let (status, body) = s
        .post("/v1/mutate", json!({"ops": [work_item("ok", 1, true)]}))
        .await;
    assert_eq!((status, body["seq"].as_str()), (StatusCode::OK, Some("1")));
    let (status, health) = s.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

/// hyper answers requests it cannot parse before any handler runs; those
/// answers carry the same JSON error shape as every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_too_large_to_parse_get_json_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::sqlite().await;
    let address = s.base.strip_prefix("http://").unwrap().to_owned();
    let long_path = format!("/v1/collections/work_items/docs/{}", "x".repeat(100_000));
    let big_header = "x".repeat(1024 * 1024);
    let requests = [
        (
            format!("GET {long_path} HTTP/1.1\r\nhost: x\r\n\r\n"),
            414,
            "LIMIT_EXCEEDED",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {big_header}\r\n\r\n"),
            431,
            "LIMIT_EXCEEDED",
        ),
        (
            "GET /he\x01llo HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
            400,
            "BAD_REQUEST",
        ),
    ];
    for (request, status, code) in requests {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        // The server may answer and close before it has read everything.
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap())
            .unwrap_or_else(|e| panic!("{e}: {answer}"));
        assert_eq!(body["error"]["code"], code, "{answer}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "the server keeps serving");
}
