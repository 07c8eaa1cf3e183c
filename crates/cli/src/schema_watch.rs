//! `protosync dev --schema DIR` follows its schema: the directory's `.proto`
//! files are polled, and a change that compiles is handed back to be
//! served; one that does not is reported and the running schema kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protosync_schema::Registry;
use sha2::{Digest, Sha256};

/// How often the schema directory is read for changes: fast enough that a
/// save is picked up before the next request, cheap for a few files.
pub(crate) const SCHEMA_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What the directory held when last read: a hash of every `.proto` file's
/// path and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot([u8; 32]);

/// Reads `dir` now (on the blocking pool: file reads block).
pub(crate) async fn snapshot(dir: &Path) -> Snapshot {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || read_snapshot(&dir))
        .await
        .unwrap_or(Snapshot([0; 32]))
}

fn read_snapshot(dir: &Path) -> Snapshot {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(std::fs::read(&file).unwrap_or_default());
        hash.update([0]);
    }
    Snapshot(hash.finalize().into())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

/// Waits until the files in `dir` differ from `seen` and compile, and
/// returns the new schema with its description. A change that does not
/// compile is printed (`load` gives the error) and waited past: the caller
/// keeps serving what it runs.
pub(crate) async fn next_schema(
    dir: &Path,
    mut seen: Snapshot,
    load: impl Fn(&Path) -> anyhow::Result<(Registry, String)>,
) -> (Registry, String, Snapshot) {
    let mut every = tokio::time::interval(SCHEMA_POLL_INTERVAL);
    loop {
        every.tick().await;
        let now = snapshot(dir).await;
        if now == seen {
            continue;
        }
        seen = now;
        match load(dir) {
            Ok((registry, description)) => return (registry, description, seen),
            Err(e) => println!("  refused:   {e:#} (still serving the previous schema)"),
        }
    }
}
