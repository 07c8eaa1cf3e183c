//! The production store: Postgres, shareable by several engine processes.
//!
//! Seq order is commit order because every commit starts by updating the one
//! counter row (`protosync_head`) and holds that row lock until it commits:
//! the next writer gets its seq only after this commit is visible. A bare
//! sequence would not give this (commits could become visible out of order).
//!
//! Other processes learn of commits through `NOTIFY protosync_commits`, sent
//! inside the commit. The notification is only a doorbell: payloads can be
//! lost while the listener reconnects, so the listener also re-reads the head
//! after every reconnect and on a slow timer, and readers always go to the log.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use protosync_query::{Execution, Page, Query, ScanRequest, ScanRow};
use protosync_schema::{Collection, Registry};
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls};

use crate::commit::{keys_to_read, plan_commit};
use crate::idempotency::{encode_outcome, recorded_outcome};
use crate::indexes::IndexChanges;
use crate::{
    now_ms, Change, CommitOutcome, CommitRecord, Mutation, ReadAt, Seq, Store, StoreError, StoreOptions, StoredDocument,
    Version,
};

/// Connections in the pool: enough for concurrent commits (which queue on
/// the counter row anyway) and reads.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// The channel commits are announced on.
const NOTIFY_CHANNEL: &str = "protosync_commits";
/// How often the listener re-reads the head even without a notification, so
/// a lost notification delays a subscriber by at most this long.
const HEAD_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Wait before reconnecting a dropped listener connection.
const LISTEN_RECONNECT_DELAY: Duration = Duration::from_millis(250);

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE protosync_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    log_floor BIGINT NOT NULL
);
INSERT INTO protosync_head (id, seq, log_floor) VALUES (1, 0, 0);
CREATE TABLE protosync_documents (
    collection TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE TABLE protosync_indexes (
    collection TEXT NOT NULL,
    index_name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (collection, index_name)
);
CREATE TABLE protosync_index_entries (
    collection TEXT COLLATE "C" NOT NULL,
    index_name TEXT COLLATE "C" NOT NULL,
    key BYTEA NOT NULL,
    doc_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (collection, index_name, key)
);
CREATE TABLE protosync_commits (
    seq BIGINT PRIMARY KEY,
    committed_at_ms BIGINT NOT NULL,
    idempotency_key TEXT
);
CREATE INDEX protosync_commits_by_time ON protosync_commits (committed_at_ms);
CREATE TABLE protosync_changes (
    seq BIGINT NOT NULL,
    ord INTEGER NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    body JSONB,
    PRIMARY KEY (seq, ord)
);
CREATE TABLE protosync_idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    seq BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX protosync_idempotency_by_time ON protosync_idempotency (created_at_ms);
"#];

pub struct PostgresStore {
    pool: Pool,
    options: StoreOptions,
    commits: watch::Sender<Seq>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`), migrates the
    /// database and starts listening for other processes' commits.
    pub async fn connect(url: &str, pool_size: usize, options: StoreOptions) -> Result<PostgresStore, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
        let manager = Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        migrate(&pool).await?;
        let head = read_head(&**pool.get().await?).await?;
        let (commits, _) = watch::channel(head);
        let listener = tokio::spawn(listen(config, commits.clone()));
        Ok(PostgresStore { pool, options, commits, listener })
    }

    fn announce(&self, seq: Seq) {
        self.commits.send_if_modified(|known| {
            let newer = seq > *known;
            if newer {
                *known = seq;
            }
            newer
        });
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn sync_indexes(&self, registry: &Registry) -> Result<(), StoreError> {
        let collections: Vec<Arc<Collection>> = registry.collections().cloned().collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Holding the counter row keeps writers (in any process) out while
        // indexes are rebuilt, so no write misses an index entry.
        tx.execute("SELECT seq FROM protosync_head FOR UPDATE", &[]).await?;
        let existing: Vec<(String, String, String)> = tx
            .query("SELECT collection, index_name, fingerprint FROM protosync_indexes", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let changes = IndexChanges::between(&existing, &collections);
        for (collection, index) in &changes.drop {
            tx.execute("DELETE FROM protosync_index_entries WHERE collection = $1 AND index_name = $2", &[collection, index]).await?;
            tx.execute("DELETE FROM protosync_indexes WHERE collection = $1 AND index_name = $2", &[collection, index]).await?;
        }
        for (collection, index) in changes.build {
            tracing::info!(collection = %collection.name, index = %index.name, "building index");
            let rows = tx.query("SELECT id, body FROM protosync_documents WHERE collection = $1", &[&collection.name]).await?;
            let insert = tx
                .prepare("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES ($1, $2, $3, $4)")
                .await?;
            for row in rows {
                let id: String = row.get(0);
                let body: Value = row.get(1);
                let key = protosync_query::key::index_key(index, &id, &body);
                tx.execute(&insert, &[&collection.name, &index.name, &key, &id]).await?;
            }
            tx.execute(
                "INSERT INTO protosync_indexes (collection, index_name, fingerprint) VALUES ($1, $2, $3)",
                &[&collection.name, &index.name, &index.fingerprint()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn commit(&self, mutation: Mutation) -> Result<CommitOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Check the key before taking the counter lock (a retry needs no
        // lock) and again after (a concurrent first attempt may have won).
        if let Some(outcome) = recorded(&tx, &mutation).await? {
            return outcome;
        }
        // The counter row is this commit's lock; the reads that follow are
        // pipelined behind it (one round trip), and run once it is held.
        let keys = keys_to_read(&mutation);
        let (collections, ids): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        let bump = tx.prepare_cached("UPDATE protosync_head SET seq = seq + 1 RETURNING seq").await?;
        let read = tx
            .prepare_cached(
                "SELECT d.collection, d.id, d.version, d.seq, d.body FROM protosync_documents d
                 JOIN unnest($1::text[], $2::text[]) AS k(collection, id) ON d.collection = k.collection AND d.id = k.id",
            )
            .await?;
        let (seq_row, rows) = futures::future::try_join(tx.query_one(&bump, &[]), tx.query(&read, &[&collections, &ids])).await?;
        if let Some(outcome) = recorded(&tx, &mutation).await? {
            return outcome;
        }
        let seq = Seq(seq_row.get::<_, i64>(0) as u64);
        let stored: HashMap<_, _> = rows
            .iter()
            .map(|r| {
                let doc = StoredDocument {
                    id: r.get(1),
                    version: Version(r.get::<_, i64>(2) as u64),
                    seq: Seq(r.get::<_, i64>(3) as u64),
                    body: r.get(4),
                };
                ((r.get::<_, String>(0), doc.id.clone()), doc)
            })
            .collect();
        let plan = plan_commit(&mutation, &stored)?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO protosync_documents (collection, id, version, seq, body) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version, seq = excluded.seq, body = excluded.body",
            )
            .await?;
        let delete = tx.prepare_cached("DELETE FROM protosync_documents WHERE collection = $1 AND id = $2").await?;
        let remove_key = tx
            .prepare_cached("DELETE FROM protosync_index_entries WHERE collection = $1 AND index_name = $2 AND key = $3")
            .await?;
        let add_key = tx
            .prepare_cached("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES ($1, $2, $3, $4)")
            .await?;
        let change = tx
            .prepare_cached("INSERT INTO protosync_changes (seq, ord, collection, id, version, body) VALUES ($1, $2, $3, $4, $5, $6)")
            .await?;
        let record_commit = tx.prepare_cached("INSERT INTO protosync_commits (seq, committed_at_ms, idempotency_key) VALUES ($1, $2, $3)").await?;
        let record_key = tx
            .prepare_cached("INSERT INTO protosync_idempotency (key, request_hash, seq, outcome, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
            .await?;
        let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        // Every write of the commit goes out pipelined (one round trip): they
        // are independent (removed and added index keys are disjoint) and a
        // connection runs them in the order sent.
        let seq_param = seq.0 as i64;
        let mut batch: Vec<(&tokio_postgres::Statement, Vec<Param>)> = Vec::new();
        for (ord, write) in plan.writes.iter().enumerate() {
            let version = write.version.0 as i64;
            match &write.body {
                Some(body) => batch.push((&upsert, params![write.collection.clone(), write.id.clone(), version, seq_param, body.clone()])),
                None => batch.push((&delete, params![write.collection.clone(), write.id.clone()])),
            }
            for (index, key) in &write.removed_index_keys {
                batch.push((&remove_key, params![write.collection.clone(), index.clone(), key.clone()]));
            }
            for (index, key) in &write.added_index_keys {
                batch.push((&add_key, params![write.collection.clone(), index.clone(), key.clone(), write.id.clone()]));
            }
            batch.push((&change, params![seq_param, ord as i32, write.collection.clone(), write.id.clone(), version, write.body.clone()]));
        }
        let idempotency_key = mutation.idempotency.as_ref().map(|k| k.key.clone());
        batch.push((&record_commit, params![seq_param, now_ms(), idempotency_key]));
        let outcome = CommitOutcome { seq, results: plan.results, duplicate: false };
        if let Some(key) = &mutation.idempotency {
            batch.push((&record_key, params![key.key.clone(), key.request_hash.clone(), seq_param, encode_outcome(&outcome)?, now_ms()]));
        }
        batch.push((&notify, params![NOTIFY_CHANNEL.to_owned(), seq.to_string()]));
        let arguments: Vec<Vec<&(dyn ToSql + Sync)>> =
            batch.iter().map(|(_, values)| values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect()).collect();
        futures::future::try_join_all(batch.iter().zip(&arguments).map(|((statement, _), arguments)| tx.execute(*statement, arguments))).await?;
        tx.commit().await?;
        self.announce(seq);
        Ok(outcome)
    }

    async fn get(&self, collection: &str, id: &str) -> Result<ReadAt<Option<StoredDocument>>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let seq = read_head(&*tx).await?;
        let row = tx
            .query_opt("SELECT version, seq, body FROM protosync_documents WHERE collection = $1 AND id = $2", &[&collection, &id])
            .await?;
        tx.commit().await?;
        Ok(ReadAt {
            seq,
            value: row.map(|r| StoredDocument {
                id: id.to_owned(),
                version: Version(r.get::<_, i64>(0) as u64),
                seq: Seq(r.get::<_, i64>(1) as u64),
                body: r.get(2),
            }),
        })
    }

    async fn query(&self, query: &Query) -> Result<ReadAt<Page>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let seq = read_head(&*tx).await?;
        let mut execution = Execution::new(query);
        while let Some(request) = execution.next_request() {
            let rows = scan(&tx, &query.collection.name, request).await?;
            execution.accept(rows);
        }
        tx.commit().await?;
        Ok(ReadAt { seq, value: execution.finish() })
    }

    async fn read_log(&self, after: Seq, max_commits: usize) -> Result<Vec<CommitRecord>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let floor: i64 = tx.query_one("SELECT log_floor FROM protosync_head", &[]).await?.get(0);
        if (after.0 as i64) < floor {
            return Err(StoreError::LogTruncated { floor: Seq(floor as u64) });
        }
        let after_param = after.0 as i64;
        let mut commits: Vec<CommitRecord> = tx
            .query(
                "SELECT seq, committed_at_ms FROM protosync_commits WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_param, &(max_commits as i64)],
            )
            .await?
            .iter()
            .map(|r| CommitRecord { seq: Seq(r.get::<_, i64>(0) as u64), committed_at_ms: r.get(1), changes: Vec::new() })
            .collect();
        let Some(last) = commits.last().map(|c| c.seq.0 as i64) else { return Ok(commits) };
        let rows = tx
            .query(
                "SELECT seq, collection, id, version, body FROM protosync_changes WHERE seq > $1 AND seq <= $2 ORDER BY seq, ord",
                &[&after_param, &last],
            )
            .await?;
        tx.commit().await?;
        let mut at = 0;
        for row in rows {
            let seq = Seq(row.get::<_, i64>(0) as u64);
            while commits[at].seq < seq {
                at += 1;
            }
            commits[at].changes.push(Change {
                collection: row.get(1),
                id: row.get(2),
                version: Version(row.get::<_, i64>(3) as u64),
                body: row.get(4),
            });
        }
        Ok(commits)
    }

    async fn head(&self) -> Result<Seq, StoreError> {
        read_head(&**self.pool.get().await?).await
    }

    async fn log_floor(&self) -> Result<Seq, StoreError> {
        let client = self.pool.get().await?;
        Ok(Seq(client.query_one("SELECT log_floor FROM protosync_head", &[]).await?.get::<_, i64>(0) as u64))
    }

    async fn prune(&self) -> Result<Seq, StoreError> {
        let now = now_ms();
        let log_cutoff = now - self.options.change_log_retention.as_millis() as i64;
        let idempotency_cutoff = now - self.options.idempotency_retention.as_millis() as i64;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let newest_expired: Option<i64> = tx
            .query_one("SELECT MAX(seq) FROM protosync_commits WHERE committed_at_ms < $1", &[&log_cutoff])
            .await?
            .get(0);
        if let Some(floor) = newest_expired {
            tx.execute("DELETE FROM protosync_changes WHERE seq <= $1", &[&floor]).await?;
            tx.execute("DELETE FROM protosync_commits WHERE seq <= $1", &[&floor]).await?;
            tx.execute("UPDATE protosync_head SET log_floor = GREATEST(log_floor, $1)", &[&floor]).await?;
        }
        tx.execute("DELETE FROM protosync_idempotency WHERE created_at_ms < $1", &[&idempotency_cutoff]).await?;
        let floor: i64 = tx.query_one("SELECT log_floor FROM protosync_head", &[]).await?.get(0);
        tx.commit().await?;
        Ok(Seq(floor as u64))
    }

    fn commits(&self) -> watch::Receiver<Seq> {
        self.commits.subscribe()
    }
}

/// One statement's arguments, owned so a whole commit can be pipelined.
type Param = Box<dyn ToSql + Sync + Send>;

macro_rules! params {
    ($($value:expr),* $(,)?) => { vec![$(Box::new($value) as Param),*] };
}
use params;

async fn recorded(
    tx: &deadpool_postgres::Transaction<'_>,
    mutation: &Mutation,
) -> Result<Option<Result<CommitOutcome, StoreError>>, StoreError> {
    let Some(key) = &mutation.idempotency else { return Ok(None) };
    let row = tx.query_opt("SELECT request_hash, outcome FROM protosync_idempotency WHERE key = $1", &[&key.key]).await?;
    Ok(row.map(|r| recorded_outcome(&key.key, &key.request_hash, r.get(0), r.get(1))))
}

async fn read_head(client: &impl tokio_postgres::GenericClient) -> Result<Seq, StoreError> {
    Ok(Seq(client.query_one("SELECT seq FROM protosync_head", &[]).await?.get::<_, i64>(0) as u64))
}

async fn scan(tx: &deadpool_postgres::Transaction<'_>, collection: &str, request: &ScanRequest) -> Result<Vec<ScanRow>, StoreError> {
    let rows = match request {
        ScanRequest::Index { index, lower, upper, reverse, limit } => {
            let sql = format!(
                "SELECT d.id, d.version, d.seq, d.body, e.key FROM protosync_index_entries e
                 JOIN protosync_documents d ON d.collection = e.collection AND d.id = e.doc_id
                 WHERE e.collection = $1 AND e.index_name = $2 AND e.key >= $3 {} ORDER BY e.key {} LIMIT $5",
                if upper.is_some() { "AND e.key < $4" } else { "AND $4::bytea IS NULL" },
                if *reverse { "DESC" } else { "ASC" }
            );
            let statement = tx.prepare_cached(&sql).await?;
            tx.query(&statement, &[&collection, index, lower, upper, &(*limit as i64)]).await?
        }
        ScanRequest::Collection { after_id, limit } => {
            let statement = tx
                .prepare_cached("SELECT id, version, seq, body FROM protosync_documents WHERE collection = $1 AND id > $2 ORDER BY id LIMIT $3")
                .await?;
            tx.query(&statement, &[&collection, &after_id.as_deref().unwrap_or(""), &(*limit as i64)]).await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| ScanRow {
            index_key: (r.len() > 4).then(|| r.get(4)),
            doc: StoredDocument {
                id: r.get(0),
                version: Version(r.get::<_, i64>(1) as u64),
                seq: Seq(r.get::<_, i64>(2) as u64),
                body: r.get(3),
            },
        })
        .collect())
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Two processes starting together must not both migrate.
    tx.execute("SELECT pg_advisory_xact_lock(7261500)", &[]).await?;
    // Checked first, not CREATE … IF NOT EXISTS, which logs a notice on every start.
    let exists: bool = tx.query_one("SELECT to_regclass('protosync_migrations') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        tx.batch_execute("CREATE TABLE protosync_migrations (version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)").await?;
    }
    let applied: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM protosync_migrations", &[]).await?.get(0);
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database was migrated to version {applied} by a newer protosync; this one knows {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql).await.map_err(|e| StoreError::Internal(format!("migration {}: {e}", i + 1)))?;
        tx.execute("INSERT INTO protosync_migrations (version, applied_at_ms) VALUES ($1, $2)", &[&(i as i32 + 1), &now_ms()])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Keeps `commits` at the latest seq any process committed: LISTEN for
/// wake-ups, re-read the head after each (re)connect and on a timer.
async fn listen(config: tokio_postgres::Config, commits: watch::Sender<Seq>) {
    let raise = |seq: Seq| {
        commits.send_if_modified(|known| {
            let newer = seq > *known;
            if newer {
                *known = seq;
            }
            newer
        });
    };
    loop {
        let connected = config.connect(NoTls).await;
        let (client, mut connection) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "commit listener cannot connect; retrying");
                tokio::time::sleep(LISTEN_RECONNECT_DELAY).await;
                continue;
            }
        };
        let (wakeups_tx, mut wakeups) = tokio::sync::mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if wakeups_tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "commit listener connection failed");
                        break;
                    }
                }
            }
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            driver.abort();
            tokio::time::sleep(LISTEN_RECONNECT_DELAY).await;
            continue;
        }
        let mut poll = tokio::time::interval(HEAD_POLL_INTERVAL);
        loop {
            tokio::select! {
                wakeup = wakeups.recv() => if wakeup.is_none() { break },
                _ = poll.tick() => {}
            }
            while wakeups.try_recv().is_ok() {}
            match read_head(&client).await {
                Ok(seq) => raise(seq),
                Err(_) => break,
            }
        }
        driver.abort();
        tokio::time::sleep(LISTEN_RECONNECT_DELAY).await;
    }
}
