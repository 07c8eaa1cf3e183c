//! `protosync import`: an export directory (docs/import-export.md) into a
//! store. Every row is validated against the schema first; a bad row is
//! reported with its file and line and left out, never dropped silently,
//! and the command then fails saying how many. Valid rows are upserted in
//! batches, one commit each, several in flight. Each batch carries an
//! idempotency key made of the export's id, the file and its first line,
//! so running the same import again after an interruption writes only the
//! batches that had not committed (within the idempotency retention).

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use protosync_engine::mutation::{OpBody, OpRequest};
use protosync_engine::{Engine, Identity, MutationRequest};
use protosync_store::StoreOptions;
use protosync_store::postgres::DEFAULT_POOL_SIZE;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::export::{FORMAT, Manifest};
use crate::run::{load_schema, open_store};

/// Documents per commit: the most one mutation may hold.
const BATCH: usize = protosync_engine::limits::MAX_OPS_PER_MUTATION;
/// Batches committing at once: enough to fill the store's group commits.
const IN_FLIGHT: usize = 8;

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// sqlite:PATH or postgres://… (as for `serve`).
    #[arg(long, env = "PROTOSYNC_DATABASE")]
    database: String,
    /// The export directory (with its manifest.json).
    #[arg(long)]
    from: PathBuf,
    /// Schema directory (default: the built-in example schema).
    #[arg(long, env = "PROTOSYNC_SCHEMA")]
    schema: Option<PathBuf>,
    /// Validate every row and report, without writing anything.
    #[arg(long)]
    dry_run: bool,
}

/// What the import did, counted as it goes.
#[derive(Default)]
struct Tally {
    rows: u64,
    written: u64,
    already: u64,
    bad: u64,
}

pub(crate) async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let manifest_path = args.from.join("manifest.json");
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not an export manifest", manifest_path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{}: format {:?}; this protosync reads {FORMAT:?}",
            manifest_path.display(),
            manifest.format
        );
    }
    let (registry, _) = load_schema(args.schema.as_deref())?;
    let registry = Arc::new(registry);
    let engine = if args.dry_run {
        None
    } else {
        let store = open_store(&args.database, DEFAULT_POOL_SIZE, StoreOptions::default()).await?;
        Some(Arc::new(Engine::start(registry.clone(), store).await?))
    };
    let total: u64 = manifest.collections.values().map(|e| e.documents).sum();
    let mut progress = Progress::new(total);
    let mut tally = Tally::default();
    for (collection, entry) in &manifest.collections {
        let path = args.from.join(&entry.file);
        let Some(schema) = registry.collection(collection) else {
            eprintln!(
                "{}: collection {collection:?} is not in the schema; its {} rows are not imported",
                entry.file, entry.documents
            );
            tally.bad += entry.documents;
            continue;
        };
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut batch: Vec<OpRequest> = Vec::new();
        let mut first_line = 0;
        let mut commits = JoinSet::new();
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let number = index + 1;
            let line = line.with_context(|| format!("{}:{number}", entry.file))?;
            tally.rows += 1;
            match row(&line, |id, doc| {
                schema.validate(id, doc).map_err(|e| e.to_string())
            }) {
                Ok((id, doc)) => {
                    if batch.is_empty() {
                        first_line = number;
                    }
                    batch.push(OpRequest::Upsert(OpBody {
                        collection: collection.clone(),
                        id,
                        doc: Some(doc),
                        fields: None,
                        expected_version: None,
                    }));
                }
                Err(problem) => {
                    tally.bad += 1;
                    progress.note(&format!("{}:{number}: {problem}", entry.file));
                }
            }
            if batch.len() == BATCH {
                let key = format!("import:{}:{}:{first_line}", manifest.export_id, entry.file);
                submit(
                    &engine,
                    &mut commits,
                    key,
                    std::mem::take(&mut batch),
                    &mut tally,
                    &mut progress,
                )
                .await?;
            }
        }
        if !batch.is_empty() {
            let key = format!("import:{}:{}:{first_line}", manifest.export_id, entry.file);
            submit(&engine, &mut commits, key, batch, &mut tally, &mut progress).await?;
        }
        while let Some(done) = commits.join_next().await {
            count(done, &mut tally, &mut progress)?;
        }
        progress.show(tally.rows, true);
    }
    progress.done();
    let verb = if args.dry_run { "checked" } else { "imported" };
    println!(
        "{verb} {} rows: {} written, {} already there from an earlier run, {} bad (listed above){}",
        tally.rows,
        tally.written,
        tally.already,
        tally.bad,
        if args.dry_run {
            "; nothing was written (--dry-run)"
        } else {
            ""
        }
    );
    if tally.bad > 0 {
        return Err(anyhow!(
            "{} rows were not imported; every other row was",
            tally.bad
        ));
    }
    Ok(())
}

/// One JSONL row: `{"id": "…", "doc": {…}}`, checked by `validate`.
fn row(
    line: &str,
    validate: impl Fn(&str, &Value) -> Result<Value, String>,
) -> Result<(String, Value), String> {
    let mut value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Some(id) = value.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return Err("no \"id\" string".into());
    };
    let Some(doc) = value.get_mut("doc").map(Value::take) else {
        return Err(format!("{id}: no \"doc\""));
    };
    let doc = validate(&id, &doc).map_err(|e| format!("{id}: {e}"))?;
    Ok((id, doc))
}

type Committed = Result<(usize, bool), protosync_engine::EngineError>;

async fn submit(
    engine: &Option<Arc<Engine>>,
    commits: &mut JoinSet<Committed>,
    key: String,
    ops: Vec<OpRequest>,
    tally: &mut Tally,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let Some(engine) = engine else {
        return Ok(()); // --dry-run: checked, not written
    };
    while commits.len() >= IN_FLIGHT {
        if let Some(done) = commits.join_next().await {
            count(done, tally, progress)?;
        }
    }
    let engine = engine.clone();
    commits.spawn(async move {
        let rows = ops.len();
        let request = MutationRequest {
            idempotency_key: Some(key),
            ops,
        };
        let identity = Identity::Service {
            name: "protosync import".into(),
            collections: None,
            jti: None,
            expires_at: None,
        };
        let outcome = engine.mutate(&identity, &request, None).await?;
        Ok((rows, outcome.duplicate))
    });
    Ok(())
}

fn count(
    done: Result<Committed, tokio::task::JoinError>,
    tally: &mut Tally,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let (rows, duplicate) = done
        .map_err(|e| anyhow!("a batch's task failed: {e}"))?
        .map_err(|e| {
            anyhow!(
                "a batch was refused, and the import stopped there: {e} (run it again to resume)"
            )
        })?;
    if duplicate {
        tally.already += rows as u64;
    } else {
        tally.written += rows as u64;
    }
    progress.show(tally.written + tally.already + tally.bad, false);
    Ok(())
}

/// A progress line with rate and ETA on a terminal (redrawn in place);
/// plain lines, at most one per [`PLAIN_EVERY`] rows, otherwise.
struct Progress {
    total: u64,
    started: Instant,
    terminal: bool,
    last_plain: u64,
}

/// Rows between two progress lines when stderr is not a terminal.
const PLAIN_EVERY: u64 = 50_000;

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            last_plain: 0,
        }
    }

    fn show(&mut self, done: u64, force: bool) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / seconds;
        let eta = (self.total.saturating_sub(done)) as f64 / rate.max(1.0);
        let text = format!("{done}/{} rows, {rate:.0}/s, {eta:.0}s left", self.total);
        if self.terminal {
            eprint!("\r{text}\x1b[K");
            let _ = std::io::stderr().flush();
        } else if force || done >= self.last_plain + PLAIN_EVERY {
            self.last_plain = done;
            eprintln!("{text}");
        }
    }

    /// A line about one row, above the progress line.
    fn note(&self, text: &str) {
        if self.terminal {
            eprint!("\r\x1b[K");
        }
        eprintln!("{text}");
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}
