//! The `protosync` binary as a user runs it: real processes, real sockets.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use protosync_core::Seq;
use protosync_store::postgres::PostgresStore;
use protosync_store::{Store, StoreOptions};
use protosync_testkit::{TestDatabase, example_schema_dir};
use serde_json::{Value, json};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `protosync` process, killed on drop.
struct Node {
    child: Option<Child>,
    base: String,
    /// Its stdout after the `listening:` line.
    lines: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Node {
    fn start(args: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_protosync"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("PROTOSYNC_LOG", "warn")
            .spawn()
            .expect("protosync starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line.trim().to_owned());
            }
        });
        let base = loop {
            let line = lines
                .recv_timeout(START_TIMEOUT)
                .expect("protosync prints the URL it listens on");
            if let Some(url) = line.strip_prefix("listening: ") {
                break url.to_owned();
            }
        };
        Node {
            child: Some(child),
            base,
            lines: std::sync::Mutex::new(lines),
        }
    }

    /// The next line of stdout that starts with `prefix`.
    fn line_starting(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .lock()
                .unwrap()
                .recv_timeout(START_TIMEOUT)
                .unwrap_or_else(|_| panic!("protosync prints a line starting {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Sends SIGTERM and returns whether the process exited cleanly.
    fn terminate(mut self) -> bool {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().map(|s| s.success()).unwrap_or(false));
        });
        rx.recv_timeout(START_TIMEOUT)
            .expect("protosync stops after SIGTERM")
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path} {body}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn listen_arg() -> String {
    format!("127.0.0.1:{}", protosync_testkit::free_port())
}

#[tokio::test]
async fn dev_runs_on_sqlite_with_the_example_schema_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let node = Node::start(&["dev", "--data-dir", data, "--listen", &listen_arg()]);
    let (status, ready) = node.get("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    node.post("/v1/mutate", json!({"ops": [{"insert": {"collection": "run_summary", "id": "r1", "doc": {"status": "RUN_STATUS_RUNNING"}}}]})).await;
    assert!(node.terminate(), "SIGTERM stops dev cleanly");

    let node = Node::start(&["dev", "--data-dir", data, "--listen", &listen_arg()]);
    let (status, doc) = node.get("/v1/collections/run_summary/docs/r1").await;
    assert_eq!(status, 200);
    assert_eq!(doc["doc"]["runId"], "r1");
    assert_eq!(doc["doc"]["status"], "RUN_STATUS_RUNNING");
}

/// The schema fingerprint of the client's next welcome.
async fn next_welcome(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<protosync_client::ClientEvent>,
) -> String {
    let next = async {
        loop {
            match events.recv().await {
                Some(protosync_client::ClientEvent::Connected { welcome }) => {
                    return welcome.schema_fingerprint;
                }
                Some(_) => {}
                None => panic!("the client stopped"),
            }
        }
    };
    tokio::time::timeout(START_TIMEOUT, next)
        .await
        .expect("the client is welcomed")
}

const NOTES_V1: &str = r#"syntax = "proto3"; package notes.v1; import "protosync/v1/options.proto";
message Note { option (protosync.v1.collection) = { name: "notes" }; string title = 1; }
"#;

#[tokio::test]
async fn dev_reloads_a_changed_schema_and_keeps_running_on_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema");
    std::fs::create_dir_all(schema.join("notes/v1")).unwrap();
    let file = schema.join("notes/v1/notes.proto");
    std::fs::write(&file, NOTES_V1).unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&[
        "dev",
        "--data-dir",
        data.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--listen",
        &listen_arg(),
    ]);
    node.post(
        "/v1/mutate",
        json!({"ops": [{"insert": {"collection": "notes", "id": "n1", "doc": {"title": "kept"}}}]}),
    )
    .await;
    let fingerprint = |node: &Node| {
        let url = format!("{}/readyz", node.base);
        async move {
            let ready: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            ready["schemaFingerprint"].as_str().unwrap().to_owned()
        }
    };
    let first = fingerprint(&node).await;
    // A live client, to see what a reload looks like from the socket.
    let ws = format!("{}/v1/sync", node.base.replacen("http", "ws", 1));
    let (client, mut events) =
        protosync_client::Client::start(protosync_client::ClientConfig::new(&ws));
    client.subscribe(
        "notes",
        protosync_client::wire::Query {
            collection: "notes".into(),
            ..Default::default()
        },
    );
    assert_eq!(next_welcome(&mut events).await, first);

    // A broken schema is refused with the compiler's error; the old one runs on.
    std::fs::write(&file, NOTES_V1.replace("string title", "strin title")).unwrap();
    let refused = node.line_starting("refused:");
    assert!(
        refused.contains("notes.proto:2:") && refused.contains("strin"),
        "{refused}"
    );
    assert_eq!(fingerprint(&node).await, first);
    let (status, _) = node.get("/v1/collections/notes/docs/n1").await;
    assert_eq!(status, 200, "still serving");

    // A schema that compiles is served, on the same address and data.
    let v2 = NOTES_V1.replace("string title = 1;", "string title = 1; bool done = 2;")
        + "message Tag { option (protosync.v1.collection) = { name: \"tags\" }; string label = 1; }\n";
    std::fs::write(&file, v2).unwrap();
    let reloaded = node.line_starting("reloaded:");
    assert!(
        reloaded.contains("2 collections: notes, tags"),
        "{reloaded}"
    );
    let second = fingerprint(&node).await;
    assert_ne!(second, first);
    // The live client was closed, reconnected on its own and resumed: its
    // welcome names the new schema, and its view still holds the note.
    assert_eq!(next_welcome(&mut events).await, second);
    tokio::time::timeout(
        START_TIMEOUT,
        client.wait_until(|view| {
            view.subscriptions
                .get("notes")
                .is_some_and(|s| s.documents().iter().any(|d| d.id == "n1"))
        }),
    )
    .await
    .expect("the resumed subscription holds the note");
    node.post(
        "/v1/mutate",
        json!({"ops": [{"insert": {"collection": "tags", "id": "t1", "doc": {"label": "x"}}}]}),
    )
    .await;
    let (status, note) = node.get("/v1/collections/notes/docs/n1").await;
    assert_eq!((status, note["doc"]["title"].as_str()), (200, Some("kept")));
    assert!(node.terminate(), "SIGTERM still stops dev cleanly");
}

fn dev_token(data: &str, sub: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args(["dev", "token", "--sub", sub, "--data-dir", data])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_dev_token_makes_an_end_user_whose_rules_apply() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // Minted before and after the server starts: both use the directory's secret.
    let ann = dev_token(data, "ann");
    let node = Node::start(&["dev", "--data-dir", data, "--listen", &listen_arg()]);
    let bob = dev_token(data, "bob");
    let other = tempfile::tempdir().unwrap();
    let stranger = dev_token(other.path().to_str().unwrap(), "ann");
    let http = reqwest::Client::new();
    let mutate = |token: &str, owner: &str| {
        http.post(format!("{}/v1/mutate", node.base))
            .bearer_auth(token)
            .json(&json!({"ops": [{"insert": {"collection": "work_items", "id": format!("{owner}-1"), "doc": {"ownerId": owner}}}]}))
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    // work_items: only the owner may write and read (auth.sub == owner_id).
    assert_eq!(status(mutate(&ann, "ann").await.unwrap()), 200);
    assert_eq!(status(mutate(&bob, "ann").await.unwrap()), 403);
    assert_eq!(
        status(mutate(&stranger, "ann").await.unwrap()),
        401,
        "another directory's secret"
    );
    let read = |token: &str| {
        http.get(format!(
            "{}/v1/collections/work_items/docs/ann-1",
            node.base
        ))
        .bearer_auth(token)
        .send()
    };
    assert_eq!(status(read(&ann).await.unwrap()), 200);
    assert_eq!(status(read(&bob).await.unwrap()), 404);
}

/// `dev` trusts every request, so only pages on this machine may call it
/// from a browser.
#[tokio::test]
async fn dev_lets_local_pages_call_it_and_refuses_other_sites() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&[
        "dev",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        &listen_arg(),
    ]);
    let http = reqwest::Client::new();
    for (origin, status) in [
        ("http://localhost:5173", 204),
        ("http://127.0.0.1:3000", 204),
        ("https://evil.example", 403),
    ] {
        let response = http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/mutate", node.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{origin}");
    }
}

/// `/metrics` reports the gateway's gauges and the allocator's figures.
#[tokio::test]
async fn metrics_report_the_gateway_and_the_allocator() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&[
        "dev",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        &listen_arg(),
    ]);
    node.post(
        "/v1/mutate",
        json!({"ops": [{"insert": {"collection": "run_summary", "id": "r1", "doc": {}}}]}),
    )
    .await;
    let text = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("protosync_connections"), 0);
    assert!(value("protosync_allocator_allocated_bytes") > 0);
    assert!(
        value("protosync_allocator_resident_bytes")
            >= value("protosync_allocator_allocated_bytes") / 2
    );
    // The tailer reads the commit soon after it is acknowledged.
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let text = reqwest::get(format!("{}/metrics", node.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("\nprotosync_head_seq 1\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn serve_reads_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("protosync.toml");
    let schema = example_schema_dir();
    std::fs::write(
        &config,
        format!(
            "listen = \"{}\"\nschema = \"{}\"\ndatabase = \"sqlite:{}\"\nchange_log_retention = \"2h\"\n[auth]\ntrust_unauthenticated = true\n",
            listen_arg(),
            schema.display(),
            dir.path().join("data.db").display()
        ),
    )
    .unwrap();
    let node = Node::start(&["serve", "--config", config.to_str().unwrap()]);
    let (status, _) = node.get("/healthz").await;
    assert_eq!(status, 200);
}

#[test]
fn schema_check_names_the_file_and_line_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.proto"),
        "syntax = \"proto3\";\nmessage A {\n  strin x = 1;\n}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args(["schema", "check", "--schema"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.proto:3:"), "{stderr}");
    assert!(stderr.contains("strin"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args(["schema", "check", "--schema"])
        .arg(example_schema_dir())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("work_items (example.inbox.v1.WorkItem)")
    );
}

/// Two `protosync serve` processes on one Postgres, each taking concurrent
/// writes: a reader tailing the change log sees every commit exactly once,
/// with seqs 1, 2, 3, … and no gap, and each node learns of the other's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres_keep_seq_gap_free() {
    const WRITERS_PER_NODE: usize = 4;
    const MUTATIONS_EACH: usize = 30;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let schema = example_schema_dir();
    let nodes: Vec<Arc<Node>> = (0..2)
        .map(|_| {
            Arc::new(Node::start(&[
                "serve",
                "--database",
                &db.url,
                "--schema",
                schema.to_str().unwrap(),
                "--listen",
                &listen_arg(),
                "--pool-size",
                "4",
                "--trust-unauthenticated",
            ]))
        })
        .collect();
    let total = 2 * WRITERS_PER_NODE * MUTATIONS_EACH;
    let reader = PostgresStore::connect(&db.url, 2, StoreOptions::default())
        .await
        .unwrap();
    let tail = tokio::spawn(async move {
        let mut after = Seq(0);
        let mut ids = Vec::new();
        while ids.len() < total {
            for commit in reader.read_log(after, 100).await.unwrap() {
                assert_eq!(commit.seq, after.next(), "gap or reorder after seq {after}");
                after = commit.seq;
                ids.extend(commit.changes.into_iter().map(|c| c.id));
            }
            tokio::task::yield_now().await;
        }
        ids
    });
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let node = node.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..MUTATIONS_EACH {
                    let id = format!("n{n}-w{w}-{i}");
                    node.post("/v1/mutate", json!({"ops": [{"upsert": {"collection": "work_items", "id": id, "doc": {"priority": i}}}]})).await;
                }
            }));
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let ids = tokio::time::timeout(Duration::from_secs(60), tail)
        .await
        .expect("the tail sees every commit")
        .unwrap();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (ids.len(), unique.len()),
        (total, total),
        "every commit exactly once"
    );
    for node in &nodes {
        let (_, ready) = node.get("/readyz").await;
        assert_eq!(ready["seq"], total.to_string());
    }
    let page = nodes[1].post("/v1/query", json!({"collection": "work_items", "filter": [{"field": "priority", "op": "==", "value": 0}], "limit": 1000})).await;
    assert_eq!(
        page["documents"].as_array().unwrap().len(),
        2 * WRITERS_PER_NODE,
        "node 1 reads node 0's writes"
    );
}

#[tokio::test]
async fn schedules_lists_a_dev_servers_schedules_and_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema");
    std::fs::create_dir(&schema).unwrap();
    std::fs::write(
        schema.join("clock.proto"),
        r#"syntax = "proto3";
package clock.v1;
import "protosync/v1/options.proto";
import "google/protobuf/empty.proto";
message Note { option (protosync.v1.collection) = { name: "notes" }; string text = 1; }
service Clock {
  rpc Tick(google.protobuf.Empty) returns (google.protobuf.Empty) {
    option (protosync.v1.action) = { backend: "app" schedule: { cron: "* * * * * *" time_zone: "Asia/Tokyo" } };
  }
}
"#,
    )
    .unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&[
        "dev",
        "--schema",
        schema.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen_arg(),
    ]);
    // dev has no backends: each tick runs and is recorded as unavailable.
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    let listing = loop {
        let output = Command::new(env!("CARGO_BIN_EXE_protosync"))
            .args(["schedules", "--url", &node.base])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        if text.contains("ACTION_UNAVAILABLE") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run listed: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        listing.contains(r#"clock.v1.Clock/Tick  "* * * * * *" in Asia/Tokyo, catch-up skip"#),
        "{listing}"
    );
    assert!(listing.contains("attempt 1"), "{listing}");
    let refused = Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args(["schedules", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot reach"));
}
