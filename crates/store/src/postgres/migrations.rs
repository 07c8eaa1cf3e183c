//! The Postgres schema, as an ordered list of migrations, and bringing a
//! database up to it at start-up. Runs only from `PostgresStore::connect`;
//! a migration, once released, is never edited (databases in the field
//! have run it): a change is a new entry at the end.

use deadpool_postgres::Pool;

use crate::{StoreError, now_ms};

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
    r#"
CREATE TABLE protosync_projection_stamps (
    collection TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    projector TEXT COLLATE "C" NOT NULL,
    source_seq BIGINT NOT NULL,
    hash TEXT,
    PRIMARY KEY (collection, id)
);
CREATE INDEX protosync_projection_stamps_by_projector ON protosync_projection_stamps (projector, collection, id);
CREATE TABLE protosync_projections (
    projector TEXT COLLATE "C" PRIMARY KEY,
    source_seq BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    applied BIGINT NOT NULL,
    stale BIGINT NOT NULL,
    unchanged BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE protosync_projection_rebuilds (
    projector TEXT COLLATE "C" PRIMARY KEY,
    generation BIGINT NOT NULL,
    active BOOLEAN NOT NULL,
    started_at_ms BIGINT NOT NULL,
    source_seq BIGINT NOT NULL
);
CREATE TABLE protosync_projection_staging (
    projector TEXT COLLATE "C" NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    source_seq BIGINT NOT NULL,
    body TEXT,
    hash TEXT,
    PRIMARY KEY (projector, collection, id)
);
"#,
    r#"
CREATE TABLE protosync_action_calls (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX protosync_action_calls_by_time ON protosync_action_calls (created_at_ms);
"#,
    r#"
ALTER TABLE protosync_commits ADD COLUMN actor TEXT, ADD COLUMN request_id TEXT;
"#,
    r#"
CREATE TABLE protosync_history (
    collection TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    committed_at_ms BIGINT NOT NULL,
    actor TEXT,
    body JSONB,
    PRIMARY KEY (collection, id, seq)
);
"#,
    r#"
CREATE TABLE protosync_schedule_runs (
    action TEXT NOT NULL,
    tick_ms BIGINT NOT NULL,
    node TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (action, tick_ms)
);
CREATE INDEX protosync_schedule_runs_by_tick ON protosync_schedule_runs (tick_ms);
"#,
    r#"
CREATE TABLE protosync_trigger_state (
    name TEXT PRIMARY KEY,
    checkpoint BIGINT NOT NULL,
    node TEXT NOT NULL,
    lease_until_ms BIGINT NOT NULL
);
CREATE TABLE protosync_trigger_parked (
    name TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    error TEXT NOT NULL,
    parked_at_ms BIGINT NOT NULL,
    PRIMARY KEY (name, seq, id)
);
"#,
    // The schema the database last ran, to compare the next one with.
    r#"
CREATE TABLE protosync_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    descriptor_set BYTEA NOT NULL,
    fingerprint TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);
"#,
];

pub(super) async fn migrate(pool: &Pool) -> Result<(), StoreError> {
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
    for (version, sql) in crate::migrations::pending(applied.into(), MIGRATIONS)? {
        tx.batch_execute(sql)
            .await
            .map_err(|e| crate::migrations::failed(version, e))?;
        tx.execute(
            "INSERT INTO protosync_migrations (version, applied_at_ms) VALUES ($1, $2)",
            &[&(version as i32), &now_ms()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
