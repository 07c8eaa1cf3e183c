//! Browser access: one `allowed_origins` list for CORS on the HTTP API,
//! SSE and the WebSocket; pages from other origins are refused before any
//! handler runs.

mod support;

use protosync_auth::{AuthConfig, Authenticator};
use protosync_server::SyncConfig;
use serde_json::json;
use support::{Backing, Node};

async fn node(allowed_origins: &[&str]) -> (Node, Backing) {
    let backing = Backing::sqlite();
    let auth = Authenticator::new(AuthConfig {
        trust_unauthenticated: true,
        allowed_origins: allowed_origins
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        ..AuthConfig::default()
    })
    .unwrap();
    let node = Node::start_with_auth(backing.store().await, SyncConfig::default(), auth).await;
    (node, backing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_page_gets_a_preflight_and_cors_headers() {
    let (node, _backing) = node(&["http://localhost:*"]).await;
    let http = support::http_client();
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/mutate", node.http))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    let response = http
        .post(format!("{}/v1/mutate", node.http))
        .header("origin", "http://localhost:5173")
        .json(&json!({"ops": [{"insert": {"collection": "work_items", "id": "w1", "doc": {"ownerId": "ann"}}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert!(
        response.headers()["vary"]
            .to_str()
            .unwrap()
            .contains("origin")
    );
}

/// A page on another site can send a `text/plain` POST without a preflight;
/// it must not run, even on a server that trusts unauthenticated requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_is_refused_and_writes_nothing() {
    let (node, _backing) = node(&["http://localhost:*"]).await;
    let http = support::http_client();
    let response = http
        .post(format!("{}/v1/mutate", node.http))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(r#"{"ops": [{"insert": {"collection": "work_items", "id": "w1", "doc": {}}}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ORIGIN_NOT_ALLOWED");
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/query", node.http))
        .header("origin", "http://localhost.evil.example:80")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 403);
    for path in [
        "/v1/subscribe?query=%7B%7D",
        "/v1/collections/work_items/docs/w1",
    ] {
        let response = http
            .get(format!("{}{path}", node.http))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    assert_eq!(
        node.store().head().await.unwrap().0,
        0,
        "nothing was written"
    );
    // Clients that are not browsers send no Origin and pass.
    let response = http
        .get(format!("{}/v1/collections/work_items/docs/w1", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_list_any_origin_may_call() {
    let (node, _backing) = node(&[]).await;
    let response = support::http_client()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/mutate", node.http))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}
