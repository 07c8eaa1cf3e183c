//! The SQLite schema, as an ordered list of migrations, and bringing a
//! database up to it when it is opened. Runs only from
//! `SqliteStore::open`, before the writer thread starts; a migration, once
//! released, is never edited (databases in the field have run it): a
//! change is a new entry at the end.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::{StoreError, now_ms};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE protosync_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    log_floor INTEGER NOT NULL
);
INSERT INTO protosync_head (id, seq, log_floor) VALUES (1, 0, 0);
CREATE TABLE protosync_documents (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE TABLE protosync_indexes (
    collection TEXT NOT NULL,
    index_name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (collection, index_name)
);
CREATE TABLE protosync_index_entries (
    collection TEXT NOT NULL,
    index_name TEXT NOT NULL,
    key BLOB NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (collection, index_name, key)
) WITHOUT ROWID;
CREATE TABLE protosync_commits (
    seq INTEGER PRIMARY KEY,
    committed_at_ms INTEGER NOT NULL,
    idempotency_key TEXT
);
CREATE INDEX protosync_commits_by_time ON protosync_commits (committed_at_ms);
CREATE TABLE protosync_changes (
    seq INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT,
    PRIMARY KEY (seq, ord)
) WITHOUT ROWID;
CREATE TABLE protosync_idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX protosync_idempotency_by_time ON protosync_idempotency (created_at_ms);
"#,
    r#"
CREATE TABLE protosync_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret BLOB NOT NULL CHECK (length(secret) = 32)
);
INSERT INTO protosync_secret (id, secret) VALUES (1, randomblob(32));
"#,
    r#"
CREATE TABLE protosync_revocation_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO protosync_revocation_head (id, seq) VALUES (1, 0);
CREATE TABLE protosync_revocations (
    jti TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    revoked_at_ms INTEGER NOT NULL,
    keep_until_ms INTEGER
);
CREATE INDEX protosync_revocations_by_keep_until ON protosync_revocations (keep_until_ms);
"#,
    r#"
CREATE TABLE protosync_projection_stamps (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    projector TEXT NOT NULL,
    source_seq INTEGER NOT NULL,
    hash TEXT,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE INDEX protosync_projection_stamps_by_projector ON protosync_projection_stamps (projector, collection, id);
CREATE TABLE protosync_projections (
    projector TEXT PRIMARY KEY,
    source_seq INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    applied INTEGER NOT NULL,
    stale INTEGER NOT NULL,
    unchanged INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE protosync_projection_rebuilds (
    projector TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    active INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    source_seq INTEGER NOT NULL
);
CREATE TABLE protosync_projection_staging (
    projector TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    source_seq INTEGER NOT NULL,
    body TEXT,
    hash TEXT,
    PRIMARY KEY (projector, collection, id)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE protosync_action_calls (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX protosync_action_calls_by_time ON protosync_action_calls (created_at_ms);
"#,
    r#"
ALTER TABLE protosync_commits ADD COLUMN actor TEXT;
ALTER TABLE protosync_commits ADD COLUMN request_id TEXT;
"#,
    r#"
CREATE TABLE protosync_history (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    actor TEXT,
    body TEXT,
    PRIMARY KEY (collection, id, seq)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE protosync_schedule_runs (
    action TEXT NOT NULL,
    tick_ms INTEGER NOT NULL,
    node TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (action, tick_ms)
);
CREATE INDEX protosync_schedule_runs_by_tick ON protosync_schedule_runs (tick_ms);
"#,
    r#"
CREATE TABLE protosync_trigger_state (
    name TEXT PRIMARY KEY,
    checkpoint INTEGER NOT NULL,
    node TEXT NOT NULL,
    lease_until_ms INTEGER NOT NULL
);
CREATE TABLE protosync_trigger_parked (
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    parked_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, seq, id)
);
"#,
    // The schema the database last ran, to compare the next one with.
    r#"
CREATE TABLE protosync_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    descriptor_set BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL
);
"#,
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS protosync_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)")?;
    let applied: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM protosync_migrations",
        [],
        |r| r.get(0),
    )?;
    for (version, sql) in crate::migrations::pending(applied, MIGRATIONS)? {
        tx.execute_batch(sql)
            .map_err(|e| crate::migrations::failed(version, e))?;
        tx.execute(
            "INSERT INTO protosync_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            params![version as i64, now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(())
}
