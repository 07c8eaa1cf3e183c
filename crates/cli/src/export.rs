//! `protosync export`: every document, as of one seq, into one JSONL file
//! per collection plus `manifest.json` (docs/import-export.md). The
//! documents come from one store snapshot, which blocks no writer; the
//! manifest is written last, so a directory without one is not an export.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use protosync_store::StoreOptions;
use protosync_store::postgres::DEFAULT_POOL_SIZE;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::run::open_store;

/// The manifest's `format`: bumped when the layout changes.
pub(crate) const FORMAT: &str = "protosync-export/1";

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// sqlite:PATH or postgres://… (as for `serve`).
    #[arg(long, env = "PROTOSYNC_DATABASE")]
    database: String,
    /// The directory to write (created; files in it are replaced).
    #[arg(long)]
    out: PathBuf,
}

/// `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Manifest {
    pub format: String,
    /// The seq every file is consistent at, as a decimal string.
    pub seq: String,
    /// Random, per export: imports of this export name their batches with it.
    pub export_id: String,
    /// Collection → its file and document count.
    pub collections: BTreeMap<String, ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ManifestEntry {
    pub file: String,
    pub documents: u64,
}

pub(crate) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let store = open_store(&args.database, DEFAULT_POOL_SIZE, StoreOptions::default()).await?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut snapshot = store.snapshot().await?;
    let mut collections = BTreeMap::new();
    let mut current: Option<(String, BufWriter<std::fs::File>, u64)> = None;
    while let Some(item) = snapshot.documents.recv().await {
        let (collection, doc) = item?;
        if current
            .as_ref()
            .is_none_or(|(name, ..)| *name != collection)
        {
            finish(current.take(), &mut collections)?;
            let file = create(&args.out, &collection)?;
            current = Some((collection, file, 0));
        }
        let (_, file, count) = current.as_mut().expect("a file is open");
        serde_json::to_writer(&mut *file, &json!({"id": doc.id, "doc": doc.body}))?;
        file.write_all(b"\n")?;
        *count += 1;
    }
    finish(current, &mut collections)?;
    let total: u64 = collections
        .values()
        .map(|e: &ManifestEntry| e.documents)
        .sum();
    let manifest = Manifest {
        format: FORMAT.into(),
        seq: snapshot.seq.to_string(),
        export_id: format!("{:016x}", rand::random::<u64>()),
        collections,
    };
    let path = args.out.join("manifest.json");
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "exported {total} documents in {} collections at seq {} to {}",
        manifest.collections.len(),
        manifest.seq,
        args.out.display()
    );
    Ok(())
}

fn create(dir: &Path, collection: &str) -> anyhow::Result<BufWriter<std::fs::File>> {
    let path = dir.join(format!("{collection}.jsonl"));
    let file =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(BufWriter::new(file))
}

fn finish(
    current: Option<(String, BufWriter<std::fs::File>, u64)>,
    collections: &mut BTreeMap<String, ManifestEntry>,
) -> anyhow::Result<()> {
    if let Some((collection, mut file, documents)) = current {
        file.flush()?;
        collections.insert(
            collection.clone(),
            ManifestEntry {
                file: format!("{collection}.jsonl"),
                documents,
            },
        );
    }
    Ok(())
}
