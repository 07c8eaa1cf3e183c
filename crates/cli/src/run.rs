//! Starting the engine: dev (SQLite, example schema) and serve (configured).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Args;
use protosync_auth::Authenticator;
use protosync_dispatch::Backends;
use protosync_engine::{Engine, EngineOptions};
use protosync_schema::Registry;
use protosync_store::postgres::{DEFAULT_POOL_SIZE, PostgresStore};
use protosync_store::sqlite::SqliteStore;
use protosync_store::{Store, StoreOptions};

use crate::config::{FileConfig, parse_duration, parse_size};

const DEFAULT_LISTEN: &str = "127.0.0.1:4000";

/// Pages `dev` lets call it from a browser: any port on this machine, so a
/// dev server (Vite, Next.js) works, while a site on the internet cannot
/// drive the trusting dev server through the browser of whoever runs it.
const DEV_ALLOWED_ORIGINS: [&str; 3] =
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// The example schema, built in so `protosync dev` needs no files.
const EXAMPLE_SCHEMA: &[(&str, &str)] = &[
    (
        "example/inbox/v1/inbox.proto",
        include_str!("../../../examples/schema/example/inbox/v1/inbox.proto"),
    ),
    (
        "example/runtime/v1/runtime.proto",
        include_str!("../../../examples/schema/example/runtime/v1/runtime.proto"),
    ),
];

#[derive(Args)]
pub(crate) struct DevArgs {
    // `dev token` reads the same directory: keep the default in step with
    // `dev_token::TokenArgs::data_dir`.
    /// Where the SQLite database lives.
    #[arg(long, default_value = ".protosync")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Schema directory (default: the built-in example schema), reloaded when its files change.
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Start (or reload) even when the schema makes breaking changes to the
    /// one the database last ran; each is logged at warn.
    #[arg(long)]
    allow_breaking: bool,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// TOML config file; flags and PROTOSYNC_* variables override it.
    #[arg(long, env = "PROTOSYNC_CONFIG")]
    config: Option<PathBuf>,
    /// postgres://user:password@host:port/db, or sqlite:PATH.
    #[arg(long, env = "PROTOSYNC_DATABASE")]
    database: Option<String>,
    /// Schema directory.
    #[arg(long, env = "PROTOSYNC_SCHEMA")]
    schema: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, env = "PROTOSYNC_LISTEN")]
    listen: Option<String>,
    /// Postgres connections per process [default: 16].
    #[arg(long, env = "PROTOSYNC_POOL_SIZE")]
    pool_size: Option<usize>,
    /// How long the change log keeps commits [default: 24h].
    #[arg(long, env = "PROTOSYNC_CHANGE_LOG_RETENTION")]
    change_log_retention: Option<String>,
    /// How long idempotency keys are remembered [default: 24h].
    #[arg(long, env = "PROTOSYNC_IDEMPOTENCY_RETENTION")]
    idempotency_retention: Option<String>,
    /// Memory for recent commits kept for connections catching up, e.g.
    /// 64MiB [default: 64MiB]; older commits are read from the database.
    #[arg(long, env = "PROTOSYNC_COMMIT_BUFFER")]
    commit_buffer: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "PROTOSYNC_LOG_FORMAT")]
    log_format: Option<String>,
    /// Treat requests without credentials as trusted services. Never in
    /// production: anyone who reaches the port can read and write anything.
    #[arg(long, env = "PROTOSYNC_TRUST_UNAUTHENTICATED")]
    trust_unauthenticated: bool,
    /// Start even when the schema makes breaking changes to the one the
    /// database last ran; each is logged at warn.
    #[arg(long, env = "PROTOSYNC_ALLOW_BREAKING")]
    allow_breaking: bool,
}

/// The store at `database`: `sqlite:PATH` or `postgres://…`.
pub(crate) async fn open_store(
    database: &str,
    pool_size: usize,
    options: StoreOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(if let Some(path) = database.strip_prefix("sqlite:") {
        Arc::new(SqliteStore::open(Path::new(path), options)?)
    } else if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        Arc::new(PostgresStore::connect(database, pool_size, options).await?)
    } else {
        return Err(anyhow!(
            "database {database:?} is neither postgres://… nor sqlite:PATH"
        ));
    })
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<()> {
    init_logging("text")?;
    let (registry, schema_source) = load_schema(args.schema.as_deref())?;
    let path = args.data_dir.join("dev.db");
    let store = SqliteStore::open(&path, StoreOptions::default())
        .with_context(|| format!("cannot open {}", path.display()))?;
    println!("protosync dev");
    println!("  schema:    {schema_source}");
    println!("  data:      {} (SQLite)", path.display());
    println!(
        "  auth:      requests without a token are trusted; `protosync dev token --sub USER` mints an end user's token (dev only; see docs/auth.md)"
    );
    println!(
        "  origins:   {} (browser pages that may call it)",
        DEV_ALLOWED_ORIGINS.join(", ")
    );
    for action in registry.actions() {
        println!(
            "  note:      action {} answers ACTION_UNAVAILABLE: dev has no backends (use serve --config with [backends.{}])",
            action.name, action.backend
        );
    }
    for collection in registry.collections() {
        if collection.rules.read.is_none() || collection.rules.write.is_none() {
            let missing: Vec<&str> = [
                ("read", collection.rules.read.is_none()),
                ("write", collection.rules.write.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(k, _)| *k)
            .collect();
            println!(
                "  note:      {} has no {} rule: end users are denied it (services are not)",
                collection.name,
                missing.join(" or ")
            );
        }
    }
    let store: Arc<dyn Store> = Arc::new(store);
    crate::schema_history::accept(store.as_ref(), &registry, args.allow_breaking).await?;
    match &args.schema {
        None => {
            let auth = dev_auth(&args.data_dir)?;
            run(
                registry,
                store,
                &args.listen.to_string(),
                auth,
                EngineOptions::default(),
                Backends::default(),
            )
            .await
        }
        Some(dir) => dev_following(dir, registry, store, &args).await,
    }
}

fn dev_auth(data_dir: &Path) -> anyhow::Result<Authenticator> {
    Authenticator::new(protosync_auth::AuthConfig {
        trust_unauthenticated: true,
        providers: vec![crate::dev_token::provider(data_dir)?],
        allowed_origins: DEV_ALLOWED_ORIGINS.map(String::from).to_vec(),
        ..protosync_auth::AuthConfig::default()
    })
    .map_err(|e| anyhow!(e))
}

/// `dev` on a schema directory: serves it, and when its files change and
/// still compile, stops the gateway (every connection gets close 1001 and
/// resumes after reconnecting), starts an engine on the new schema (index
/// builds included) over the same database and listens again on the same
/// address. A change that does not compile is printed and the running
/// schema kept.
async fn dev_following(
    dir: &Path,
    mut registry: Registry,
    store: Arc<dyn Store>,
    args: &DevArgs,
) -> anyhow::Result<()> {
    let mut seen = crate::schema_watch::snapshot(dir).await;
    let mut address = args.listen.to_string();
    let mut reloaded: Option<String> = None;
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let engine = Engine::start_with(
            Arc::new(registry.clone()),
            store.clone(),
            EngineOptions::default(),
        )
        .await?;
        let listener = bind(&address).await?;
        address = listener.local_addr()?.to_string();
        match reloaded.take() {
            None => println!("  listening: http://{address}"),
            Some(description) => println!("  reloaded:  {description}"),
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(serve_engine(
            Arc::new(engine),
            listener,
            dev_auth(&args.data_dir)?,
            Backends::default(),
            async {
                let _ = stopped.await;
            },
        ));
        // The database recorded the running schema: a reload compares with it.
        let load = |dir: &Path| {
            let (next, description) = load_schema(Some(dir))?;
            let changes =
                protosync_schema::compare(registry.descriptor_pool(), next.descriptor_pool());
            crate::schema_history::refuse_breaking(&changes, args.allow_breaking)?;
            Ok((next, description))
        };
        tokio::select! {
            ended = &mut server => return ended?,
            () = &mut shutdown => {
                let _ = stop.send(());
                return server.await?;
            }
            (next, description, snapshot) = crate::schema_watch::next_schema(dir, seen.clone(), load) => {
                let _ = stop.send(());
                server.await??;
                store.record_schema(&next).await?;
                reloaded = Some(format!("{description}, fingerprint {}", next.fingerprint()));
                (registry, seen) = (next, snapshot);
            }
        }
    }
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    init_logging(
        args.log_format
            .as_deref()
            .or(file.log_format.as_deref())
            .unwrap_or("text"),
    )?;
    let schema = args.schema.or(file.schema).ok_or_else(|| {
        anyhow!("no schema: pass --schema DIR, set PROTOSYNC_SCHEMA or `schema` in the config file")
    })?;
    let database = args.database.or(file.database).ok_or_else(|| {
        anyhow!("no database: pass --database postgres://…, set PROTOSYNC_DATABASE or `database` in the config file")
    })?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let mut options = StoreOptions::default();
    if let Some(text) = args.change_log_retention.or(file.change_log_retention) {
        options.change_log_retention = parse_duration(&text).context("change_log_retention")?;
    }
    if let Some(text) = args.idempotency_retention.or(file.idempotency_retention) {
        options.idempotency_retention = parse_duration(&text).context("idempotency_retention")?;
    }
    let mut engine_options = EngineOptions::default();
    if let Some(text) = args.commit_buffer.or(file.commit_buffer) {
        engine_options.commit_buffer_bytes = parse_size(&text).context("commit_buffer")?;
    }
    let (registry, schema_source) = load_schema(Some(&schema))?;
    let pool_size = args
        .pool_size
        .or(file.pool_size)
        .unwrap_or(DEFAULT_POOL_SIZE);
    let store = open_store(&database, pool_size, options).await?;
    crate::schema_history::accept(store.as_ref(), &registry, args.allow_breaking).await?;
    let mut auth = file.auth.unwrap_or_default();
    auth.trust_unauthenticated |= args.trust_unauthenticated;
    if auth.providers.is_empty() && auth.api_keys.is_empty() && !auth.trust_unauthenticated {
        return Err(anyhow!(
            "no credentials are configured: add [auth] providers or api_keys to the config file (docs/auth.md), or pass --trust-unauthenticated on a private network"
        ));
    }
    if auth.trust_unauthenticated {
        tracing::warn!(
            "requests without credentials are trusted services (--trust-unauthenticated)"
        );
    }
    let auth = Authenticator::new(auth).map_err(|e| anyhow!(e))?;
    let backends = Backends::from_config(&file.backends).map_err(|e| anyhow!(e))?;
    backends.check(&registry).map_err(|e| anyhow!(e))?;
    tracing::info!(schema = %schema_source, "starting");
    run(registry, store, &listen, auth, engine_options, backends).await
}

pub(crate) async fn schema_check(
    schema: Option<&Path>,
    against: Option<&str>,
    allow_breaking: bool,
) -> anyhow::Result<()> {
    let (registry, source) = load_schema(schema)?;
    println!("{source}");
    println!("ok, fingerprint {}", registry.fingerprint());
    for collection in registry.collections() {
        let indexes: Vec<String> = collection
            .indexes
            .iter()
            .map(|i| {
                format!(
                    "{}({})",
                    i.name,
                    i.fields
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        println!(
            "  {} ({}) indexes: {}",
            collection.name,
            collection.message.full_name(),
            if indexes.is_empty() {
                "none".into()
            } else {
                indexes.join(" ")
            }
        );
    }
    if let Some(database) = against {
        let store = open_store(database, 1, StoreOptions::default()).await?;
        let changes = crate::schema_history::changes(store.as_ref(), &registry).await?;
        if changes.is_empty() {
            println!("against {database}: no breaking changes");
        } else {
            let all: Vec<&protosync_schema::SchemaChange> = changes.iter().collect();
            println!(
                "against {database}:\n  {}",
                crate::schema_history::list(&all, "\n  ")
            );
        }
        crate::schema_history::refuse_breaking(&changes, allow_breaking)?;
    }
    Ok(())
}

pub(crate) fn load_schema(dir: Option<&Path>) -> anyhow::Result<(Registry, String)> {
    let registry = match dir {
        Some(dir) => {
            Registry::load_dir(dir).map_err(|e| anyhow!("schema {}: {e}", dir.display()))?
        }
        None => Registry::from_sources(EXAMPLE_SCHEMA)
            .map_err(|e| anyhow!("built-in example schema: {e}"))?,
    };
    let names: Vec<&str> = registry.collections().map(|c| c.name.as_str()).collect();
    let source = match dir {
        Some(dir) => dir.display().to_string(),
        None => "built-in example (examples/schema)".to_owned(),
    };
    if names.is_empty() {
        return Err(anyhow!(
            "schema {source} declares no collections: mark a message with option (protosync.v1.collection)"
        ));
    }
    let noun = if names.len() == 1 {
        "collection"
    } else {
        "collections"
    };
    let description = format!("{source} ({} {noun}: {})", names.len(), names.join(", "));
    Ok((registry, description))
}

async fn run(
    registry: Registry,
    store: Arc<dyn Store>,
    listen: &str,
    auth: Authenticator,
    engine_options: EngineOptions,
    backends: Backends,
) -> anyhow::Result<()> {
    let engine = Arc::new(Engine::start_with(Arc::new(registry), store, engine_options).await?);
    let listener = bind(listen).await?;
    println!("  listening: http://{}", listener.local_addr()?);
    serve_engine(engine, listener, auth, backends, shutdown_signal()).await
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// The gateway over `engine` on `listener`, until `stop`.
async fn serve_engine(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    auth: Authenticator,
    backends: Backends,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "listening");
    let state =
        protosync_server::AppState::new(engine, protosync_server::SyncConfig::default(), auth)
            .with_memory_probe(crate::memory::probe())
            .with_backends(backends);
    protosync_server::serve(listener, state, stop).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

fn init_logging(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROTOSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => return Err(anyhow!("log format {other:?} is neither text nor json")),
    }
    Ok(())
}
