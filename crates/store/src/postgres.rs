//! The production store: Postgres, shareable by several engine processes.
//!
//! Seq order is commit order because every commit transaction starts by
//! locking the one counter row (`protosync_head`) and holds it until it
//! commits: the next transaction reads the head only after this one is
//! visible. A bare sequence would not give this (commits could become
//! visible out of order). One task per process commits waiting mutations in
//! groups, one transaction each ([`crate::group`]): one lock, one fsync and
//! four round trips for the whole group, which is what lets Postgres take
//! thousands of commits a second through one counter row.
//!
//! Other processes learn of commits through `NOTIFY protosync_commits`, sent
//! inside the commit. The notification is only a doorbell: payloads can be
//! lost while the listener reconnects, so the listener also re-reads the head
//! after every reconnect and on a slow timer, and readers always go to the log.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use protosync_query::{Execution, Page, Query, ScanRequest, ScanRow};
use protosync_schema::{Collection, Registry};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls};

use crate::group::{GroupAnswers, GroupKeys, GroupReads, GroupWrites, plan_group};
use crate::indexes::IndexChanges;
use crate::{
    Change, CommitOutcome, CommitRecord, Mutation, ReadAt, Revocation, RevocationSeq, Seq, Store,
    StoreError, StoreOptions, StoredDocument, Version, invalid_jti, now_ms,
};

/// Connections in the pool: reads, and the one that commits.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// The channel commits are announced on.
const NOTIFY_CHANNEL: &str = "protosync_commits";
/// How often the listener re-reads the head even without a notification, so
/// a lost notification delays a subscriber by at most this long.
const HEAD_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Wait before reconnecting a dropped listener connection.
const LISTEN_RECONNECT_DELAY: Duration = Duration::from_millis(250);
/// Mutations waiting for the committer; senders wait when it is full,
/// which is the backpressure on writers.
const COMMIT_QUEUE_LEN: usize = 4_096;
/// Mutations folded into one transaction at most: bounds the latency a
/// mutation waits behind others in its group.
const MAX_GROUP_COMMIT: usize = 256;

/// How long a group waits to fill up to the previous group's size. A lone
/// writer never waits (its groups have one mutation).
const GROUP_LINGER: Duration = Duration::from_millis(1);
/// Where a mutation's answer goes.
type Reply = oneshot::Sender<Result<CommitOutcome, StoreError>>;

const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
CREATE TABLE protosync_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret BYTEA NOT NULL CHECK (length(secret) = 32)
);
-- gen_random_uuid() draws from the server's strong random source: two of
-- them make 32 bytes (244 random bits).
INSERT INTO protosync_secret (id, secret)
VALUES (1, decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
"#,
    r#"
CREATE TABLE protosync_revocation_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO protosync_revocation_head (id, seq) VALUES (1, 0);
CREATE TABLE protosync_revocations (
    jti TEXT PRIMARY KEY,
    seq BIGINT NOT NULL UNIQUE,
    revoked_at_ms BIGINT NOT NULL,
    keep_until_ms BIGINT
);
CREATE INDEX protosync_revocations_by_keep_until ON protosync_revocations (keep_until_ms);
"#,
];

pub struct PostgresStore {
    pool: Pool,
    secret: [u8; 32],
    options: StoreOptions,
    commits: watch::Sender<Seq>,
    jobs: mpsc::Sender<(Mutation, Reply)>,
    background: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.background.iter().for_each(|task| task.abort());
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`), migrates the
    /// database and starts listening for other processes' commits.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        options: StoreOptions,
    ) -> Result<PostgresStore, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        migrate(&pool).await?;
        let head = read_head(&**pool.get().await?).await?;
        let secret: Vec<u8> = pool
            .get()
            .await?
            .query_one("SELECT secret FROM protosync_secret", &[])
            .await?
            .get(0);
        let secret = <[u8; 32]>::try_from(secret)
            .map_err(|_| StoreError::Internal("protosync_secret is not 32 bytes".into()))?;
        let (commits, _) = watch::channel(head);
        let listener = tokio::spawn(listen(config, commits.clone()));
        let (jobs, waiting) = mpsc::channel(COMMIT_QUEUE_LEN);
        let committer = tokio::spawn(commit_groups(pool.clone(), waiting, commits.clone()));
        Ok(PostgresStore {
            pool,
            secret,
            options,
            commits,
            jobs,
            background: [listener, committer],
        })
    }
}

/// Moves `commits` to `seq` unless it already knows a later one.
fn raise(commits: &watch::Sender<Seq>, seq: Seq) {
    commits.send_if_modified(|known| {
        let newer = seq > *known;
        if newer {
            *known = seq;
        }
        newer
    });
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the Postgres committer has stopped".into())
}

#[async_trait]
impl Store for PostgresStore {
    async fn sync_indexes(&self, registry: &Registry) -> Result<(), StoreError> {
        let collections: Vec<Arc<Collection>> = registry.collections().cloned().collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Holding the counter row keeps writers (in any process) out while
        // indexes are rebuilt, so no write misses an index entry.
        tx.execute("SELECT seq FROM protosync_head FOR UPDATE", &[])
            .await?;
        let existing: Vec<(String, String, String)> = tx
            .query(
                "SELECT collection, index_name, fingerprint FROM protosync_indexes",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let changes = IndexChanges::between(&existing, &collections);
        for (collection, index) in &changes.drop {
            tx.execute(
                "DELETE FROM protosync_index_entries WHERE collection = $1 AND index_name = $2",
                &[collection, index],
            )
            .await?;
            tx.execute(
                "DELETE FROM protosync_indexes WHERE collection = $1 AND index_name = $2",
                &[collection, index],
            )
            .await?;
        }
        for (collection, index) in changes.build {
            tracing::info!(collection = %collection.name, index = %index.name, "building index");
            let rows = tx
                .query(
                    "SELECT id, body FROM protosync_documents WHERE collection = $1",
                    &[&collection.name],
                )
                .await?;
            let insert = tx
                .prepare("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES ($1, $2, $3, $4)")
                .await?;
            for row in rows {
                let id: String = row.get(0);
                let body: Value = row.get(1);
                let key = protosync_query::key::index_key(index, &id, &body);
                tx.execute(&insert, &[&collection.name, &index.name, &key, &id])
                    .await?;
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
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((mutation, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn get(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<ReadAt<Option<StoredDocument>>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
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
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let seq = read_head(&*tx).await?;
        let mut execution = Execution::new(query);
        while let Some(request) = execution.next_request() {
            let rows = scan(&tx, &query.collection.name, request).await?;
            execution.accept(rows);
        }
        tx.commit().await?;
        Ok(ReadAt {
            seq,
            value: execution.finish(),
        })
    }

    async fn read_log(
        &self,
        after: Seq,
        max_commits: usize,
    ) -> Result<Vec<CommitRecord>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let floor: i64 = tx
            .query_one("SELECT log_floor FROM protosync_head", &[])
            .await?
            .get(0);
        if (after.0 as i64) < floor {
            return Err(StoreError::LogTruncated {
                floor: Seq(floor as u64),
            });
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
        let Some(last) = commits.last().map(|c| c.seq.0 as i64) else {
            return Ok(commits);
        };
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
        Ok(Seq(client
            .query_one("SELECT log_floor FROM protosync_head", &[])
            .await?
            .get::<_, i64>(0) as u64))
    }

    async fn prune(&self) -> Result<Seq, StoreError> {
        let now = now_ms();
        let log_cutoff = now - self.options.change_log_retention.as_millis() as i64;
        let idempotency_cutoff = now - self.options.idempotency_retention.as_millis() as i64;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let newest_expired: Option<i64> = tx
            .query_one(
                "SELECT MAX(seq) FROM protosync_commits WHERE committed_at_ms < $1",
                &[&log_cutoff],
            )
            .await?
            .get(0);
        if let Some(floor) = newest_expired {
            tx.execute("DELETE FROM protosync_changes WHERE seq <= $1", &[&floor])
                .await?;
            tx.execute("DELETE FROM protosync_commits WHERE seq <= $1", &[&floor])
                .await?;
            tx.execute(
                "UPDATE protosync_head SET log_floor = GREATEST(log_floor, $1)",
                &[&floor],
            )
            .await?;
        }
        tx.execute(
            "DELETE FROM protosync_idempotency WHERE created_at_ms < $1",
            &[&idempotency_cutoff],
        )
        .await?;
        tx.execute(
            "DELETE FROM protosync_revocations WHERE keep_until_ms < $1",
            &[&now],
        )
        .await?;
        let floor: i64 = tx
            .query_one("SELECT log_floor FROM protosync_head", &[])
            .await?
            .get(0);
        tx.commit().await?;
        Ok(Seq(floor as u64))
    }

    async fn revoke(
        &self,
        jti: &str,
        keep_until_ms: Option<i64>,
    ) -> Result<Revocation, StoreError> {
        if let Some(problem) = invalid_jti(jti) {
            return Err(StoreError::InvalidJti(problem));
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The counter row stays locked until this commits, so the next
        // revocation (from any process) takes the next seq only once this
        // one is visible: seq order is visibility order, and a reader that
        // follows the log by seq misses nothing. Revocations are rare; the
        // lock costs nothing that matters.
        let seq: i64 = tx
            .query_one(
                "UPDATE protosync_revocation_head SET seq = seq + 1 RETURNING seq",
                &[],
            )
            .await?
            .get(0);
        // Revoked again: the entry moves to the end of the log and keeps the
        // later time, where NULL (for good) wins (GREATEST would drop NULLs).
        let row = tx
            .query_one(
                "INSERT INTO protosync_revocations (jti, seq, revoked_at_ms, keep_until_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (jti) DO UPDATE SET seq = EXCLUDED.seq, keep_until_ms = CASE
                     WHEN protosync_revocations.keep_until_ms IS NULL OR EXCLUDED.keep_until_ms IS NULL THEN NULL
                     ELSE GREATEST(protosync_revocations.keep_until_ms, EXCLUDED.keep_until_ms) END
                 RETURNING revoked_at_ms, keep_until_ms",
                &[&jti, &seq, &now_ms(), &keep_until_ms],
            )
            .await?;
        tx.commit().await?;
        Ok(Revocation {
            seq: RevocationSeq(seq as u64),
            jti: jti.to_owned(),
            revoked_at_ms: row.get(0),
            keep_until_ms: row.get(1),
        })
    }

    async fn revocations_after(
        &self,
        after: RevocationSeq,
        max: usize,
    ) -> Result<Vec<Revocation>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, jti, revoked_at_ms, keep_until_ms FROM protosync_revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after.0 as i64), &(max as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Revocation {
                seq: RevocationSeq(r.get::<_, i64>(0) as u64),
                jti: r.get(1),
                revoked_at_ms: r.get(2),
                keep_until_ms: r.get(3),
            })
            .collect())
    }

    fn commits(&self) -> watch::Receiver<Seq> {
        self.commits.subscribe()
    }

    fn database_secret(&self) -> [u8; 32] {
        self.secret
    }
}

/// One statement's arguments, owned so a whole commit can be pipelined.
type Param = Box<dyn ToSql + Sync + Send>;

macro_rules! params {
    ($($value:expr),* $(,)?) => { vec![$(Box::new($value) as Param),*] };
}

async fn read_head(client: &impl tokio_postgres::GenericClient) -> Result<Seq, StoreError> {
    Ok(Seq(client
        .query_one("SELECT seq FROM protosync_head", &[])
        .await?
        .get::<_, i64>(0) as u64))
}

async fn scan(
    tx: &deadpool_postgres::Transaction<'_>,
    collection: &str,
    request: &ScanRequest,
) -> Result<Vec<ScanRow>, StoreError> {
    let rows = match request {
        ScanRequest::Index {
            index,
            lower,
            upper,
            reverse,
            limit,
        } => {
            let sql = format!(
                "SELECT d.id, d.version, d.seq, d.body, e.key FROM protosync_index_entries e
                 JOIN protosync_documents d ON d.collection = e.collection AND d.id = e.doc_id
                 WHERE e.collection = $1 AND e.index_name = $2 AND e.key >= $3 {} ORDER BY e.key {} LIMIT $5",
                if upper.is_some() { "AND e.key < $4" } else { "AND $4::bytea IS NULL" },
                if *reverse { "DESC" } else { "ASC" }
            );
            let statement = tx.prepare_cached(&sql).await?;
            tx.query(
                &statement,
                &[&collection, index, lower, upper, &(*limit as i64)],
            )
            .await?
        }
        ScanRequest::Collection { after_id, limit } => {
            let statement = tx
                .prepare_cached("SELECT id, version, seq, body FROM protosync_documents WHERE collection = $1 AND id > $2 ORDER BY id LIMIT $3")
                .await?;
            tx.query(
                &statement,
                &[
                    &collection,
                    &after_id.as_deref().unwrap_or(""),
                    &(*limit as i64),
                ],
            )
            .await?
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
    tx.execute("SELECT pg_advisory_xact_lock(7261500)", &[])
        .await?;
    // Checked first, not CREATE … IF NOT EXISTS, which logs a notice on every start.
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('protosync_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        tx.batch_execute("CREATE TABLE protosync_migrations (version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)").await?;
    }
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM protosync_migrations",
            &[],
        )
        .await?
        .get(0);
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database was migrated to version {applied} by a newer protosync; this one knows {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Internal(format!("migration {}: {e}", i + 1)))?;
        tx.execute(
            "INSERT INTO protosync_migrations (version, applied_at_ms) VALUES ($1, $2)",
            &[&(i as i32 + 1), &now_ms()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Keeps `commits` at the latest seq any process committed: LISTEN for
/// wake-ups, re-read the head after each (re)connect and on a timer.
async fn listen(config: tokio_postgres::Config, commits: watch::Sender<Seq>) {
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
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
        {
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
                Ok(seq) => raise(&commits, seq),
                Err(_) => break,
            }
        }
        driver.abort();
        tokio::time::sleep(LISTEN_RECONNECT_DELAY).await;
    }
}

/// Commits waiting mutations in groups. A group starts once the one before
/// it is committing: its begin, lock request and reads overlap that commit
/// (they queue on the counter row). It takes what is waiting, and waits up
/// to [`GROUP_LINGER`] for as many mutations as the group before had: the
/// writers answered by one commit come back together, and a group that
/// left without them would cost a whole transaction for one mutation.
async fn commit_groups(
    pool: Pool,
    mut jobs: mpsc::Receiver<(Mutation, Reply)>,
    commits: watch::Sender<Seq>,
) {
    let mut previous = 1;
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        let linger = tokio::time::Instant::now() + GROUP_LINGER;
        loop {
            while group.len() < MAX_GROUP_COMMIT
                && let Ok(job) = jobs.try_recv()
            {
                group.push(job);
            }
            if group.len() >= previous.min(MAX_GROUP_COMMIT) {
                break;
            }
            match tokio::time::timeout_at(linger, jobs.recv()).await {
                Ok(Some(job)) => group.push(job),
                _ => break,
            }
        }
        previous = group.len();
        let (committing, started) = oneshot::channel();
        let (pool, commits) = (pool.clone(), commits.clone());
        tokio::spawn(async move { commit_and_answer(&pool, group, &commits, committing).await });
        // Also returns when the group failed before committing.
        let _ = started.await;
    }
}

async fn commit_and_answer(
    pool: &Pool,
    group: Vec<(Mutation, Reply)>,
    commits: &watch::Sender<Seq>,
    committing: oneshot::Sender<()>,
) {
    let result = commit_group(
        pool,
        group.iter().map(|(mutation, _)| mutation),
        Some(committing),
    )
    .await;
    if matches!(
        result,
        Err(GroupFailure {
            committing: false,
            ..
        })
    ) && group.len() > 1
    {
        // A statement failed, so nothing of the group committed: retried
        // alone, a mutation that cannot be written fails alone.
        for (mutation, reply) in group {
            let result = commit_group(pool, std::iter::once(&mutation), None).await;
            deliver(result, vec![reply], commits);
        }
    } else {
        deliver(
            result,
            group.into_iter().map(|(_, reply)| reply).collect(),
            commits,
        );
    }
}

type GroupResult = Result<GroupAnswers, GroupFailure>;

struct GroupFailure {
    error: StoreError,
    /// The failure came at COMMIT: the group may have committed.
    committing: bool,
}

fn deliver(result: GroupResult, replies: Vec<Reply>, commits: &watch::Sender<Seq>) {
    match result {
        Ok((answers, head)) => {
            if let Some(head) = head {
                raise(commits, head);
            }
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(failure) => replies.into_iter().for_each(|reply| {
            let _ = reply.send(Err(failure.error.clone()));
        }),
    }
}

/// One transaction for a group of mutations in two round trips: begin,
/// lock the head and read the group's documents and idempotency records;
/// decide in memory; write every row and commit.
/// `committing` is told when the commit is sent.
async fn commit_group<'m>(
    pool: &Pool,
    mutations: impl Iterator<Item = &'m Mutation> + Clone,
    committing: Option<oneshot::Sender<()>>,
) -> GroupResult {
    let client = pool.get().await.map_err(|e| GroupFailure {
        error: e.into(),
        committing: false,
    })?;
    let result = async {
        let reads = read_group(&client, GroupKeys::of(mutations.clone()))
            .await
            .map_err(|error| GroupFailure {
                error,
                committing: false,
            })?;
        let (answers, writes) = plan_group(mutations, reads);
        if let Some(committing) = committing {
            let _ = committing.send(());
        }
        write_and_commit(&client, &writes).await?;
        Ok((answers, writes.head))
    }
    .await;
    if matches!(
        result,
        Err(GroupFailure {
            committing: false,
            ..
        })
    ) {
        // Leave no transaction open on a pooled connection.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn read_group(
    tx: &deadpool_postgres::Client,
    keys: GroupKeys,
) -> Result<GroupReads, StoreError> {
    let begin = tx.prepare_cached("BEGIN").await?;
    let lock = tx
        .prepare_cached("SELECT seq FROM protosync_head FOR UPDATE")
        .await?;
    let documents = tx
        .prepare_cached(
            "SELECT d.collection, d.id, d.version, d.seq, d.body FROM protosync_documents d
             JOIN unnest($1::text[], $2::text[]) AS k(collection, id) ON d.collection = k.collection AND d.id = k.id",
        )
        .await?;
    let records = tx
        .prepare_cached(
            "SELECT key, request_hash, outcome FROM protosync_idempotency WHERE key = ANY($1)",
        )
        .await?;
    let (collections, ids): (Vec<String>, Vec<String>) = keys.documents.into_iter().unzip();
    // Sent together; the reads run after the lock is held, so they see
    // every commit before this one.
    let (_, head, rows, recorded) = futures::future::try_join4(
        tx.execute(&begin, &[]),
        tx.query_one(&lock, &[]),
        tx.query(&documents, &[&collections, &ids]),
        tx.query(&records, &[&keys.idempotency]),
    )
    .await?;
    let stored = rows
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
    let recorded = recorded
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Ok(GroupReads {
        head: Seq(head.get::<_, i64>(0) as u64),
        stored,
        recorded,
    })
}

/// Every row of a group in a handful of array statements, then COMMIT, all
/// sent together (one round trip): a connection runs them in the order
/// sent. If a statement fails, Postgres rolls the transaction back and the
/// COMMIT only ends it.
async fn write_and_commit(
    tx: &deadpool_postgres::Client,
    writes: &GroupWrites,
) -> Result<(), GroupFailure> {
    let mut batch: Vec<(&str, Vec<Param>)> = Vec::new();
    if let Some(head) = writes.head {
        rows_to_write(writes, head, &mut batch);
    }
    batch.push(("COMMIT", params![]));
    let mut statements = Vec::with_capacity(batch.len());
    for (sql, _) in &batch {
        statements.push(tx.prepare_cached(sql).await.map_err(|e| GroupFailure {
            error: e.into(),
            committing: false,
        })?);
    }
    let arguments: Vec<Vec<&(dyn ToSql + Sync)>> = batch
        .iter()
        .map(|(_, values)| {
            values
                .iter()
                .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                .collect()
        })
        .collect();
    let mut results = futures::future::join_all(
        statements
            .iter()
            .zip(&arguments)
            .map(|(statement, arguments)| tx.execute(statement, arguments)),
    )
    .await;
    let commit = results.pop().expect("COMMIT is in the batch");
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(GroupFailure {
            error: e.into(),
            committing: false,
        });
    }
    commit.map(|_| ()).map_err(|e| GroupFailure {
        error: e.into(),
        committing: true,
    })
}

/// The statements that write a group's rows and move the head.
fn rows_to_write(writes: &GroupWrites, head: Seq, batch: &mut Vec<(&'static str, Vec<Param>)>) {
    if !writes.deleted.is_empty() {
        let (collections, ids): (Vec<String>, Vec<String>) = writes.deleted.iter().cloned().unzip();
        batch.push((
            "DELETE FROM protosync_documents d USING unnest($1::text[], $2::text[]) AS k(collection, id)
             WHERE d.collection = k.collection AND d.id = k.id",
            params![collections, ids],
        ));
    }
    if !writes.upserted.is_empty() {
        let rows = &writes.upserted;
        batch.push((
            "INSERT INTO protosync_documents (collection, id, version, seq, body)
             SELECT c, i, v, s, b::jsonb FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[]) AS t(c, i, v, s, b)
             ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version, seq = excluded.seq, body = excluded.body",
            params![
                column(rows, |r| r.0.clone()),
                column(rows, |r| r.1.clone()),
                column(rows, |r| r.2.0 as i64),
                column(rows, |r| r.3.0 as i64),
                column(rows, |r| r.4.clone()),
            ],
        ));
    }
    if !writes.index_touched.is_empty() {
        let rows = &writes.index_touched;
        batch.push((
            "DELETE FROM protosync_index_entries e USING unnest($1::text[], $2::text[], $3::bytea[]) AS k(collection, index_name, key)
             WHERE e.collection = k.collection AND e.index_name = k.index_name AND e.key = k.key",
            params![column(rows, |r| r.0.clone()), column(rows, |r| r.1.clone()), column(rows, |r| r.2.clone())],
        ));
    }
    if !writes.index_added.is_empty() {
        let rows = &writes.index_added;
        batch.push((
            "INSERT INTO protosync_index_entries (collection, index_name, key, doc_id)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])",
            params![
                column(rows, |r| r.0.clone()),
                column(rows, |r| r.1.clone()),
                column(rows, |r| r.2.clone()),
                column(rows, |r| r.3.clone())
            ],
        ));
    }
    let rows = &writes.changes;
    batch.push((
        "INSERT INTO protosync_changes (seq, ord, collection, id, version, body)
         SELECT s, o, c, i, v, b::jsonb FROM unnest($1::int8[], $2::int4[], $3::text[], $4::text[], $5::int8[], $6::text[]) AS t(s, o, c, i, v, b)",
        params![
            column(rows, |r| r.0.0 as i64),
            column(rows, |r| r.1),
            column(rows, |r| r.2.clone()),
            column(rows, |r| r.3.clone()),
            column(rows, |r| r.4.0 as i64),
            column(rows, |r| r.5.clone()),
        ],
    ));
    let committed_at = now_ms();
    let rows = &writes.commits;
    batch.push((
        "INSERT INTO protosync_commits (seq, committed_at_ms, idempotency_key) SELECT s, $2, k FROM unnest($1::int8[], $3::text[]) AS t(s, k)",
        params![column(rows, |r| r.0.0 as i64), committed_at, column(rows, |r| r.1.clone())],
    ));
    if !writes.idempotency.is_empty() {
        let rows = &writes.idempotency;
        batch.push((
            "INSERT INTO protosync_idempotency (key, request_hash, seq, outcome, created_at_ms)
             SELECT k, h, s, o, $5 FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[]) AS t(k, h, s, o)",
            params![column(rows, |r| r.0.clone()), column(rows, |r| r.1.clone()), column(rows, |r| r.2.0 as i64), column(rows, |r| r.3.clone()), committed_at],
        ));
    }
    batch.push(("UPDATE protosync_head SET seq = $1", params![head.0 as i64]));
    batch.push((
        "SELECT pg_notify($1, $2)",
        params![NOTIFY_CHANNEL.to_owned(), head.to_string()],
    ));
}

/// One column of `rows`, as an array parameter.
fn column<R, T>(rows: &[R], field: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}
