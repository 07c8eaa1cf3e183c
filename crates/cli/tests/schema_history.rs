//! The database records the schema it ran; `serve` and `schema check
//! --against` compare the next one with it, on SQLite and on Postgres.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use protosync_testkit::TestDatabase;

const START_TIMEOUT: Duration = Duration::from_secs(30);

const V1: &str = r#"syntax = "proto3"; package notes.v1; import "protosync/v1/options.proto";
message Note { option (protosync.v1.collection) = { name: "notes" }; string title = 1; int64 rank = 2; }
"#;

fn write_schema(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("notes.proto"), text).unwrap();
}

fn serve_args<'a>(database: &'a str, schema: &'a Path) -> Vec<&'a str> {
    vec![
        "serve",
        "--database",
        database,
        "--schema",
        schema.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--trust-unauthenticated",
    ]
}

/// `serve` until it listens (then stopped), or its refusal: Err(stderr).
fn serve(database: &str, schema: &Path, extra: &[&str]) -> Result<(), String> {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args(serve_args(database, schema))
        .args(extra)
        .env("PROTOSYNC_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim().starts_with("listening:"));
    if listening {
        child.kill().unwrap();
        child.wait().unwrap();
        return Ok(());
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "serve neither listened nor exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    Err(String::from_utf8_lossy(&output.stderr).into_owned())
}

fn check(database: &str, schema: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args(["schema", "check", "--schema", schema.to_str().unwrap()])
        .args(["--against", database])
        .args(extra)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn breaking_changes_are_refused_and_additive_ones_pass(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (v1, retyped, added) = (
        dir.path().join("v1"),
        dir.path().join("retyped"),
        dir.path().join("added"),
    );
    write_schema(&v1, V1);
    write_schema(&retyped, &V1.replace("int64 rank = 2", "string rank = 2"));
    write_schema(
        &added,
        &V1.replace("int64 rank = 2;", "int64 rank = 2; bool done = 3;"),
    );
    serve(database, &v1, &[]).expect("a first schema is recorded");

    let named = "notes: field rank (number 2) changed type: int64 → string";
    let refused = check(database, &retyped, &[]);
    assert!(!refused.status.success());
    assert!(stdout(&refused).contains(named), "{}", stdout(&refused));
    let allowed = check(database, &retyped, &["--allow-breaking"]);
    assert!(allowed.status.success());
    assert!(stdout(&allowed).contains(named), "still listed");

    let refusal = serve(database, &retyped, &[]).expect_err("a breaking change is refused");
    assert!(
        refusal.contains(named) && refusal.contains("--allow-breaking"),
        "{refusal}"
    );

    let additive = check(database, &added, &[]);
    assert!(additive.status.success(), "{}", stdout(&additive));
    assert!(stdout(&additive).contains("no breaking changes"));
    serve(database, &added, &[]).expect("an additive change starts");
    // The additive schema is now the recorded one: dropping its new field
    // is a removal, refused until allowed, and once allowed it is recorded.
    let removal = serve(database, &v1, &[]).expect_err("a removed field is refused");
    assert!(
        removal.contains("notes: field done (number 3) was removed"),
        "{removal}"
    );
    serve(database, &v1, &["--allow-breaking"]).expect("allowed");
    assert!(
        check(database, &v1, &[]).status.success(),
        "v1 recorded again"
    );
}

#[test]
fn sqlite_breaking_changes_are_refused_and_additive_ones_pass() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("data.db").display());
    breaking_changes_are_refused_and_additive_ones_pass(&database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_breaking_changes_are_refused_and_additive_ones_pass() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || breaking_changes_are_refused_and_additive_ones_pass(&url))
        .await
        .unwrap();
}

#[test]
fn dev_refuses_a_breaking_reload_and_serves_an_additive_one() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema");
    write_schema(&schema, V1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_protosync"))
        .args([
            "dev",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ])
        .args([
            "--schema",
            schema.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("PROTOSYNC_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread, so a line that never comes fails the test in time.
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.trim().to_owned());
        }
    });
    let line_starting = |prefix: &str| loop {
        let line = lines.recv_timeout(START_TIMEOUT).expect("dev prints it");
        if line.starts_with(prefix) {
            break line;
        }
    };
    line_starting("listening:");
    write_schema(&schema, &V1.replace("int64 rank = 2", "string rank = 2"));
    let refused = line_starting("refused:");
    assert!(
        refused.contains("notes: field rank (number 2) changed type: int64 → string"),
        "{refused}"
    );
    write_schema(
        &schema,
        &V1.replace("int64 rank = 2;", "int64 rank = 2; bool done = 3;"),
    );
    line_starting("reloaded:");
    child.kill().unwrap();
    child.wait().unwrap();
}
