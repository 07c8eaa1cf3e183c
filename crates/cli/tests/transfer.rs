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
