//! `protosync export` and `protosync import` as a user runs them, on SQLite
//! and Postgres: export → import into an empty database → export again
//! gives the same files; a bad row is reported with its file and line and
//! the rest is imported; `--dry-run` writes nothing; running an import
//! again writes nothing twice.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use protosync_engine::{Engine, Identity, MutationRequest};
use protosync_schema::Registry;
use protosync_store::{Store, StoreOptions};
use protosync_testkit::{TestDatabase, example_schema_dir};
use serde_json::{Value, json};

fn protosync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args(args)
        .env("PROTOSYNC_LOG", "warn")
        .output()
        .expect("protosync runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Documents of every shape the example schema has: nested messages,
/// maps, enums, int64, timestamps, repeated fields, absent fields.
async fn fill(database: &str) {
    let store = open(database).await;
    let registry = Arc::new(Registry::load_dir(&example_schema_dir()).unwrap());
    let engine = Engine::start(registry, store).await.unwrap();
    let service = Identity::Service {
        name: "test".into(),
        collections: None,
        jti: None,
        expires_at: None,
    };
    for chunk in 0..6 {
        let ops: Vec<Value> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                if n % 2 == 0 {
                    json!({"upsert": {"collection": "run_summary", "id": format!("run-{n:04}"), "doc": {
                        "ownerId": format!("u{}", n % 7), "title": format!("run \"{n}\" ünïcode"),
                        "status": "RUN_STATUS_RUNNING", "eventCount": (n as i64 * 1_000_000_007).to_string(),
                        "startedAt": "2026-01-02T03:04:05.123Z", "costUsd": n as f64 / 3.0,
                        "labels": {"k": format!("v{n}"), "empty": ""}}}})
                } else {
                    json!({"upsert": {"collection": "codex_worker_summary", "id": format!("w-{n:04}"), "doc": {
                        "ownerId": "ops", "status": "WORKER_STATUS_IDLE", "host": {"hostname": format!("h{n}"), "region": "eu"}}}})
                }
            })
            .collect();
        let request: MutationRequest = serde_json::from_value(json!({ "ops": ops })).unwrap();
        engine.mutate(&service, &request, None).await.unwrap();
    }
}

async fn open(database: &str) -> Arc<dyn Store> {
    match database.strip_prefix("sqlite:") {
        Some(path) => Arc::new(
            protosync_store::sqlite::SqliteStore::open(Path::new(path), StoreOptions::default())
                .unwrap(),
        ),
        None => Arc::new(
            protosync_store::postgres::PostgresStore::connect(database, 4, StoreOptions::default())
                .await
                .unwrap(),
        ),
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

async fn round_trip(source: &str, target: &str) {
    fill(source).await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let said = ok(protosync(&[
        "export",
        "--database",
        source,
        "--out",
        first.to_str().unwrap(),
    ]));
    assert!(
        said.contains("exported 600 documents in 2 collections"),
        "{said}"
    );
    let manifest: Value = serde_json::from_str(&read(&first, "manifest.json")).unwrap();
    assert_eq!(manifest["collections"]["run_summary"]["documents"], 300);

    // A dry run checks everything and writes nothing.
    let dry = ok(protosync(&[
        "import",
        "--database",
        target,
        "--from",
        first.to_str().unwrap(),
        "--schema",
        example_schema_dir().to_str().unwrap(),
        "--dry-run",
    ]));
    assert!(dry.contains("checked 600 rows"), "{dry}");
    assert_eq!(
        open(target).await.head().await.unwrap().0,
        0,
        "--dry-run wrote nothing"
    );

    let imported = ok(protosync(&[
        "import",
        "--database",
        target,
        "--from",
        first.to_str().unwrap(),
        "--schema",
        example_schema_dir().to_str().unwrap(),
    ]));
    assert!(imported.contains("600 written"), "{imported}");
    let head = open(target).await.head().await.unwrap();
    // Again, as after an interruption: every batch is recognised.
    let again = ok(protosync(&[
        "import",
        "--database",
        target,
        "--from",
        first.to_str().unwrap(),
        "--schema",
        example_schema_dir().to_str().unwrap(),
    ]));
    assert!(again.contains("0 written, 600 already there"), "{again}");
    assert_eq!(
        open(target).await.head().await.unwrap(),
        head,
        "nothing written twice"
    );

    ok(protosync(&[
        "export",
        "--database",
        target,
        "--out",
        second.to_str().unwrap(),
    ]));
    for file in ["run_summary.jsonl", "codex_worker_summary.jsonl"] {
        assert_eq!(
            read(&first, file),
            read(&second, file),
            "{file} is the same after a round trip"
        );
    }
    let again: Value = serde_json::from_str(&read(&second, "manifest.json")).unwrap();
    assert_eq!(again["collections"], manifest["collections"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_export_import_export_gives_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("sqlite:{}", dir.path().join("a.db").display());
    let target = format!("sqlite:{}", dir.path().join("b.db").display());
    round_trip(&source, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_export_import_export_gives_the_same_files() {
    let (Some(a), Some(b)) = (TestDatabase::create().await, TestDatabase::create().await) else {
        return;
    };
    round_trip(&a.url, &b.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_row_is_reported_with_its_file_and_line_and_the_rest_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("run_summary.jsonl"),
        concat!(
            r#"{"id":"r1","doc":{"title":"fine"}}"#,
            "\n",
            r#"{"id":"r2","doc":{"eventCount":"many"}}"#,
            "\n",
            "not json\n",
            r#"{"id":"r4","doc":{"title":"fine too"}}"#,
            "\n",
        ),
    )
    .unwrap();
    std::fs::write(
        out.join("manifest.json"),
        r#"{"format":"protosync-export/1","seq":"4","exportId":"t","collections":{"run_summary":{"file":"run_summary.jsonl","documents":4}}}"#,
    )
    .unwrap();
    let target = format!("sqlite:{}", dir.path().join("b.db").display());
    let output = protosync(&[
        "import",
        "--database",
        &target,
        "--from",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success(), "bad rows fail the command");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("run_summary.jsonl:2: r2: "), "{stderr}");
    assert!(
        stderr.contains("eventCount"),
        "the field is named: {stderr}"
    );
    assert!(stderr.contains("run_summary.jsonl:3: not JSON"), "{stderr}");
    assert!(stderr.contains("2 rows were not imported"), "{stderr}");
    let store = open(&target).await;
    let scope = protosync_query::ReadScope::Everything;
    assert!(
        store
            .get("run_summary", "r4", &scope)
            .await
            .unwrap()
            .value
            .is_some()
    );
    assert!(
        store
            .get("run_summary", "r2", &scope)
            .await
            .unwrap()
            .value
            .is_none()
    );
}

/// A schema with what the example schema lacks: bytes, repeated fields and
/// repeated nested messages, for the Convex import.
const CHAT_SCHEMA: &str = r#"
syntax = "proto3";
package chat.v1;
import "google/protobuf/timestamp.proto";
import "protosync/v1/options.proto";

message User {
  option (protosync.v1.collection) = { name: "users" id_field: "user_id" };
  string user_id = 1;
  string name = 2;
  bytes avatar = 3;
  int64 karma = 4;
  google.protobuf.Timestamp joined_at = 5;
  repeated string tags = 6;
  Address address = 7;
}
message Address { string city = 1; string zip = 2; }

message ChatMessage {
  option (protosync.v1.collection) = { name: "chat_messages" id_field: "message_id" };
  string message_id = 1;
  string author_id = 2;
  string body = 3;
  repeated Attachment attachments = 4;
}
message Attachment { string name = 1; int64 size = 2; }

message Invoice {
  option (protosync.v1.collection) = { name: "invoices" id_field: "invoice_id" };
  string invoice_id = 1;
  int64 amount_cents = 2;
}
"#;

/// A ZIP laid out as `npx convex export` writes it.
fn convex_zip(path: &Path) {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let files: &[(&str, &str)] = &[
        (
            "_tables/documents.jsonl",
            "{\"name\":\"users\",\"id\":10001}\n{\"name\":\"chatMessages\",\"id\":10002}\n",
        ),
        (
            "users/documents.jsonl",
            concat!(
                r#"{"_id":"u1","_creationTime":1765100000123.25,"name":"Ada","avatar":"AAEC/w==","karma":"9007199254740993","tags":["a","b"],"address":{"city":"Paris","zip":null}}"#,
                "\n",
                r#"{"_id":"u2","_creationTime":1765100000200.5,"name":"Bob","karma":12,"tags":[],"address":null}"#,
                "\n",
                r#"{"_id":"u3","_creationTime":1765100000300.0,"name":"Eve","favouriteColour":"red"}"#,
                "\n",
                r#"{"_id":"u4","_creationTime":1765100000400.0,"name":null}"#,
                "\n",
            ),
        ),
        (
            "users/generated_schema.jsonl",
            concat!(
                "\"{_creationTime: normalfloat64, _id: string, name: string}\"\n",
                r#"{"u1":{"karma":"int64","avatar":"bytes"}}"#,
                "\n",
                r#"{"u2":{"karma":"int64"}}"#,
                "\n",
            ),
        ),
        (
            "chatMessages/documents.jsonl",
            concat!(
                r#"{"_id":"m1","_creationTime":1765100001000.0,"authorId":"u1","body":"hi","attachments":[{"name":"a.png","size":2048}]}"#,
                "\n",
            ),
        ),
        (
            "chatMessages/generated_schema.jsonl",
            "\"{}\"\n{\"m1\":{\"attachments.0.size\":\"int64\"}}\n",
        ),
        (
            "_components/billing/_tables/documents.jsonl",
            "{\"name\":\"invoices\",\"id\":10001}\n",
        ),
        (
            "_components/billing/invoices/documents.jsonl",
            "{\"_id\":\"i1\",\"_creationTime\":1765100002000.0,\"amountCents\":\"4200\"}\n",
        ),
        (
            "_storage/documents.jsonl",
            "{\"_id\":\"s1\",\"_creationTime\":1.0,\"sha256\":\"x\",\"size\":3}\n",
        ),
        ("_storage/s1", "abc"),
    ];
    for (name, text) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

async fn convex_import(database: &str, dir: &Path) {
    let schema = dir.join("schema");
    std::fs::create_dir_all(&schema).unwrap();
    std::fs::write(schema.join("chat.proto"), CHAT_SCHEMA).unwrap();
    let zip = dir.join("snapshot.zip");
    convex_zip(&zip);
    let args = [
        "import",
        "--database",
        database,
        "--schema",
        schema.to_str().unwrap(),
        "--from-convex",
        zip.to_str().unwrap(),
        "--field-map",
        "users._creationTime=joinedAt",
    ];
    let output = protosync(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a bad row fails the command");
    assert!(
        stderr.contains("users/documents.jsonl:3: u3: ") && stderr.contains("favouriteColour"),
        "the bad row is named by table, line and field: {stderr}"
    );
    assert!(stderr.contains("1 rows were not imported"), "{stderr}");
    assert!(
        stderr.contains("1 stored files are not imported"),
        "{stderr}"
    );
    let store = open(database).await;
    let scope = protosync_query::ReadScope::Everything;
    let body = |collection: &'static str, id: &'static str| {
        let store = store.clone();
        let scope = scope.clone();
        async move {
            store
                .get(collection, id, &scope)
                .await
                .unwrap()
                .value
                .map(|d| d.body)
        }
    };
    let u1 = body("users", "u1").await.expect("u1 imported");
    assert_eq!(u1["karma"], "9007199254740993", "int64 kept exactly");
    assert_eq!(u1["avatar"], "AAEC/w==");
    assert_eq!(u1["tags"], json!(["a", "b"]));
    assert_eq!(u1["address"]["city"], "Paris");
    assert_eq!(u1["joinedAt"], "2025-12-07T09:33:20.123Z");
    let u2 = body("users", "u2").await.expect("u2 imported");
    assert_eq!(u2["karma"], "12", "a number marked int64 becomes one");
    assert!(
        body("users", "u3").await.is_none(),
        "the bad row is left out"
    );
    assert!(
        body("users", "u4").await.is_some(),
        "nulls are absent fields"
    );
    let m1 = body("chat_messages", "m1")
        .await
        .expect("chatMessages → chat_messages");
    assert_eq!(m1["authorId"], "u1");
    assert_eq!(m1["attachments"][0]["size"], "2048");
    let i1 = body("invoices", "i1")
        .await
        .expect("the component's table is imported");
    assert_eq!(i1["amountCents"], "4200");
    assert!(i1.get("joinedAt").is_none());
    // The same ZIP again: every batch is recognised, nothing written twice.
    let again = protosync(&args);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains(" 0 written, 5 already there"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_convex_snapshot_zip_is_imported_and_its_bad_row_reported() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("c.db").display());
    convex_import(&database, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_convex_snapshot_zip_is_imported_and_its_bad_row_reported() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    convex_import(&db.url, dir.path()).await;
}

/// Rows of a table the test creates in its own database, one of them with
/// a status the schema does not have.
async fn postgres_table_import(target: &str) {
    let Some(source) = TestDatabase::create().await else {
        return;
    };
    let (client, connection) = tokio_postgres::connect(&source.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE legacy_runs (run_key text PRIMARY KEY, owner text, title text, \
             status text, event_count bigint, started_at timestamptz, cost_usd double precision, \
             labels jsonb);
             INSERT INTO legacy_runs SELECT 'run-' || lpad(n::text, 5, '0'), 'u' || (n % 7), \
             'run ' || n, CASE WHEN n = 777 THEN 'NOT_A_STATUS' ELSE 'RUN_STATUS_RUNNING' END, \
             n::bigint * 1000000007, timestamptz '2026-01-02 03:04:05.123+00' + n * interval '1 second', \
             n / 4.0, CASE WHEN n % 2 = 0 THEN jsonb_build_object('k', 'v' || n) END \
             FROM generate_series(1, 12000) n;",
        )
        .await
        .unwrap();
    let args = [
        "import",
        "--database",
        target,
        "--from-postgres",
        &source.url,
        "--table",
        "legacy_runs",
        "--id-column",
        "run_key",
        "--collection",
        "run_summary",
        "--map",
        "owner=ownerId",
    ];
    let output = protosync(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a bad row fails the command");
    assert!(
        stderr.contains("legacy_runs:777: run-00777: ") && stderr.contains("status"),
        "the bad row is named by its number and id: {stderr}"
    );
    assert!(stderr.contains("1 rows were not imported"), "{stderr}");
    let store = open(target).await;
    let scope = protosync_query::ReadScope::Everything;
    let get = async |id: &str| {
        store
            .get("run_summary", id, &scope)
            .await
            .unwrap()
            .value
            .map(|d| d.body)
    };
    let doc = get("run-11000").await.expect("a row of the third page");
    assert_eq!(doc["ownerId"], "u3", "mapped column");
    assert_eq!(doc["eventCount"], "11000000077000", "bigint as int64");
    assert_eq!(doc["startedAt"], "2026-01-02T06:07:25.123Z");
    assert_eq!(doc["costUsd"], 2750.0);
    assert_eq!(doc["labels"], json!({"k": "v11000"}));
    let first = get("run-00001").await.unwrap();
    assert_eq!(first["ownerId"], "u1");
    assert!(
        first.get("labels").is_none_or(|l| l == &json!({})),
        "a null column reads as the default: {first}"
    );
    assert!(get("run-00777").await.is_none(), "the bad row is left out");
    let again = protosync(&args);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains(" 0 written, 11999 already there"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_is_imported_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    postgres_table_import(&format!("sqlite:{}", dir.path().join("p.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_is_imported_into_postgres() {
    let Some(target) = TestDatabase::create().await else {
        return;
    };
    postgres_table_import(&target.url).await;
}
