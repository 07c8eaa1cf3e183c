//! `protosync import`: an export directory (docs/import-export.md), or a
//! Convex snapshot ZIP (`convex.rs`), into a store. Every row is validated against the schema first; a bad row is
//! reported with its file and line and left out, never dropped silently,
//! and the command then fails saying how many. Valid rows are upserted in
//! batches, one commit each, several in flight. Each batch carries an
//! idempotency key made of the export's id, the file and its first line,
//! so running the same import again after an interruption writes only the
//! batches that had not committed (within the idempotency retention).

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use protosync_engine::mutation::{OpBody, OpRequest};
use protosync_engine::{Engine, Identity, MutationRequest};
use protosync_schema::Registry;
use protosync_store::StoreOptions;
use protosync_store::postgres::DEFAULT_POOL_SIZE;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::export::{FORMAT, Manifest};
use crate::run::{load_schema, open_store};
use crate::{convex, pg_table};

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
    #[arg(
        long,
        required_unless_present_any = ["from_convex", "from_postgres"],
        conflicts_with_all = ["from_convex", "from_postgres"]
    )]
    from: Option<PathBuf>,
    /// A Convex snapshot ZIP (`npx convex export --path FILE.zip`).
    #[arg(long, value_name = "FILE.zip", conflicts_with = "from_postgres")]
    from_convex: Option<PathBuf>,
    /// A Postgres database to read one table from (with --table, --id-column).
    #[arg(long, value_name = "URL", requires_all = ["table", "id_column"])]
    from_postgres: Option<String>,
    /// The table to read (`--from-postgres`), schema-qualified if need be.
    #[arg(long, requires = "from_postgres")]
    table: Option<String>,
    /// The column holding each row's document id (`--from-postgres`).
    #[arg(long, requires = "from_postgres")]
    id_column: Option<String>,
    /// The collection the table's rows go to (`--from-postgres`; default: the
    /// table's name).
    #[arg(long, requires = "from_postgres")]
    collection: Option<String>,
    /// Column → field (COLUMN=FIELD, `--from-postgres`); repeatable. Other
    /// columns keep their names (proto or JSON field names both fit).
    #[arg(long = "map", value_name = "COLUMN=FIELD", requires = "from_postgres")]
    column_map: Vec<String>,
    /// Convex table → collection (TABLE=COLLECTION, or COMPONENT/TABLE=…);
    /// repeatable. Default: the same name, else its snake_case.
    #[arg(
        long = "table-map",
        value_name = "TABLE=COLLECTION",
        requires = "from_convex"
    )]
    table_map: Vec<String>,
    /// Convex field → proto JSON field (FROM=TO for every table,
    /// TABLE.FROM=TO for one); repeatable. `_creationTime=FIELD` keeps the
    /// creation time as an RFC 3339 timestamp; unmapped, it is dropped.
    #[arg(long = "field-map", value_name = "FROM=TO", requires = "from_convex")]
    field_map: Vec<String>,
    /// Schema directory (default: the built-in example schema).
    #[arg(long, env = "PROTOSYNC_SCHEMA")]
    schema: Option<PathBuf>,
    /// Validate every row and report, without writing anything.
    #[arg(long)]
    dry_run: bool,
}

/// What the import did, counted as it goes.
#[derive(Default)]
pub(crate) struct Tally {
    rows: u64,
    written: u64,
    already: u64,
    bad: u64,
}

/// Where rows go: the schema to check them against, the engine to write
/// them with (none under `--dry-run`), and what has happened so far.
pub(crate) struct Sink {
    pub(crate) registry: Arc<Registry>,
    engine: Option<Arc<Engine>>,
    tally: Tally,
    progress: Progress,
}

pub(crate) async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let (registry, _) = load_schema(args.schema.as_deref())?;
    let registry = Arc::new(registry);
    let engine = if args.dry_run {
        None
    } else {
        let store = open_store(&args.database, DEFAULT_POOL_SIZE, StoreOptions::default()).await?;
        Some(Arc::new(Engine::start(registry.clone(), store).await?))
    };
    let mut sink = Sink {
        registry,
        engine,
        tally: Tally::default(),
        progress: Progress::new(0),
    };
    if let Some(zip) = &args.from_convex {
        let mapping = convex::Mapping::parse(&args.table_map, &args.field_map)?;
        convex::import(zip, &mapping, &mut sink).await?;
    } else if let (Some(url), Some(table), Some(id_column)) =
        (&args.from_postgres, &args.table, &args.id_column)
    {
        let source = pg_table::Source {
            url,
            table,
            id_column,
            collection: args.collection.as_deref().unwrap_or(table),
            columns: pairs("--map", &args.column_map)?,
        };
        pg_table::import(&source, &mut sink).await?;
    } else if let Some(dir) = &args.from {
        import_export_dir(dir, &mut sink).await?;
    } else {
        bail!("give --from DIR, --from-convex FILE.zip or --from-postgres URL");
    }
    sink.finish(args.dry_run)
}

/// protosync's own export directory: a manifest and one JSONL file per
/// collection of `{"id": "…", "doc": {…}}` rows.
async fn import_export_dir(dir: &Path, sink: &mut Sink) -> anyhow::Result<()> {
    let manifest_path = dir.join("manifest.json");
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
    sink.progress.total = manifest.collections.values().map(|e| e.documents).sum();
    for (collection, entry) in &manifest.collections {
        let path = dir.join(&entry.file);
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let key = format!("import:{}:{}", manifest.export_id, entry.file);
        sink.table(
            &entry.file,
            collection,
            &key,
            BufReader::new(file).lines(),
            1,
            row,
        )
        .await?;
    }
    Ok(())
}

impl Sink {
    /// Counts `rows` rows as bad without reading them, saying why.
    pub(crate) fn skip(&mut self, rows: u64, why: &str) {
        self.tally.rows += rows;
        self.tally.bad += rows;
        self.progress.note(why);
    }

    /// A line about the import that is not a bad row.
    pub(crate) fn note(&self, text: &str) {
        self.progress.note(text);
    }

    /// Adds rows still to come to the progress line's total.
    pub(crate) fn expect(&mut self, rows: u64) {
        self.progress.total += rows;
    }

    /// Imports rows into `collection`: each line (numbered from `first`) is
    /// turned into an id and a document by `parse`, validated, and upserted
    /// in batches keyed `KEY:FIRST_LINE`. Bad lines are reported as
    /// `LABEL:LINE: problem`.
    pub(crate) async fn table(
        &mut self,
        label: &str,
        collection: &str,
        key: &str,
        lines: impl Iterator<Item = std::io::Result<String>>,
        first: usize,
        parse: impl Fn(&str) -> Result<(String, Value), String>,
    ) -> anyhow::Result<()> {
        let Some(schema) = self.registry.collection(collection).cloned() else {
            let mut rows = 0;
            for line in lines {
                line.with_context(|| format!("cannot read {label}"))?;
                rows += 1;
            }
            self.skip(
                rows,
                &format!(
                    "{label}: collection {collection:?} is not in the schema; its {rows} rows are not imported"
                ),
            );
            return Ok(());
        };
        let mut batch: Vec<OpRequest> = Vec::new();
        let mut first_line = 0;
        let mut commits = JoinSet::new();
        for (index, line) in lines.enumerate() {
            let number = first + index;
            let line = line.with_context(|| format!("{label}:{number}"))?;
            self.tally.rows += 1;
            let checked = parse(&line).and_then(|(id, doc)| match schema.validate(&id, &doc) {
                Ok(doc) => Ok((id, doc)),
                Err(e) => Err(format!("{id}: {e}")),
            });
            match checked {
                Ok((id, doc)) => {
                    if batch.is_empty() {
                        first_line = number;
                    }
                    batch.push(OpRequest::Upsert(OpBody {
                        collection: collection.to_owned(),
                        id,
                        doc: Some(doc),
                        fields: None,
                        expected_version: None,
                    }));
                }
                Err(problem) => {
                    self.tally.bad += 1;
                    self.progress.note(&format!("{label}:{number}: {problem}"));
                }
            }
            if batch.len() == BATCH {
                let ops = std::mem::take(&mut batch);
                self.submit(&mut commits, format!("{key}:{first_line}"), ops)
                    .await?;
            }
        }
        if !batch.is_empty() {
            self.submit(&mut commits, format!("{key}:{first_line}"), batch)
                .await?;
        }
        while let Some(done) = commits.join_next().await {
            self.count(done)?;
        }
        self.progress.show(self.tally.rows, true);
        Ok(())
    }

    async fn submit(
        &mut self,
        commits: &mut JoinSet<Committed>,
        key: String,
        ops: Vec<OpRequest>,
    ) -> anyhow::Result<()> {
        let Some(engine) = self.engine.clone() else {
            return Ok(()); // --dry-run: checked, not written
        };
        while commits.len() >= IN_FLIGHT {
            if let Some(done) = commits.join_next().await {
                self.count(done)?;
            }
        }
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

    fn count(&mut self, done: Result<Committed, tokio::task::JoinError>) -> anyhow::Result<()> {
        let (rows, duplicate) = done
            .map_err(|e| anyhow!("a batch's task failed: {e}"))?
            .map_err(|e| {
                anyhow!(
                    "a batch was refused, and the import stopped there: {e} (run it again to resume)"
                )
            })?;
        if duplicate {
            self.tally.already += rows as u64;
        } else {
            self.tally.written += rows as u64;
        }
        let tally = &self.tally;
        self.progress
            .show(tally.written + tally.already + tally.bad, false);
        Ok(())
    }

    fn finish(self, dry_run: bool) -> anyhow::Result<()> {
        self.progress.done();
        let tally = self.tally;
        let verb = if dry_run { "checked" } else { "imported" };
        println!(
            "{verb} {} rows: {} written, {} already there from an earlier run, {} bad (listed above){}",
            tally.rows,
            tally.written,
            tally.already,
            tally.bad,
            if dry_run {
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
}

/// The first 8 bytes of a digest, in hex: enough to tell sources apart in
/// an idempotency key.
pub(crate) fn short_hex(hasher: sha2::Sha256) -> String {
    use sha2::Digest;
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `FROM=TO` flag values as a map.
pub(crate) fn pairs(
    flag: &str,
    items: &[String],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                Ok((from.to_owned(), to.to_owned()))
            }
            _ => bail!("{flag} {item:?}: expected FROM=TO"),
        })
        .collect()
}

/// One protosync JSONL row: `{"id": "…", "doc": {…}}`.
fn row(line: &str) -> Result<(String, Value), String> {
    let mut value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Some(id) = value.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return Err("no \"id\" string".into());
    };
    let Some(doc) = value.get_mut("doc").map(Value::take) else {
        return Err(format!("{id}: no \"doc\""));
    };
    Ok((id, doc))
}

type Committed = Result<(usize, bool), protosync_engine::EngineError>;

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
