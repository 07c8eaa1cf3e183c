//! Durable storage: documents, commits, the change log and idempotency
//! records, behind one [`Store`] trait with two implementations.
//!
//! - [`sqlite::SqliteStore`]: embedded, zero setup; one writer thread that
//!   group-commits, reader connections on the blocking pool. WAL mode.
//! - [`postgres::PostgresStore`]: production; several engine processes may
//!   share one database.
//!
//! The invariant both keep: every commit gets a [`Seq`] that is gap-free and
//! strictly increasing, and commits become visible in seq order, so a reader
//! that sees seq N has seen every commit below N. Both serialize the
//! assignment of seqs through one counter row updated inside the commit.
//!
//! Completed action calls are kept here under their idempotency keys
//! ([`CallRecord`]), so a retry on any process gets the first outcome.
//!
//! Token revocations are kept here too, in their own small log (see
//! [`Revocation`]), so every process on one database refuses a revoked token
//! and a restart does not forget it.
//!
//! What a commit does to documents is decided once, in [`commit`], as a pure
//! function of the stored documents and the operations; the stores only read
//! and write rows. Query semantics live in `protosync_query`.
//!
//! Everything else the two stores agree on is written once too, in a module
//! named for it and free of database calls: `group` (deciding a group
//! commit), `change_log` (putting a log read back together), `migrations`
//! (which ones a database needs), `retention` (where a prune cuts),
//! `declared_indexes` (which declared indexes to build) and `idempotency`. Each
//! backend is a folder with one file per job: connections, migrations, the
//! committer, reads, wake-ups, index builds, pruning and revocations.

mod change_log;
pub mod commit;
mod declared_indexes;
mod error;
#[cfg(test)]
mod fixtures;
mod group;
mod idempotency;
mod migrations;
pub mod postgres;
pub mod projection;
mod retention;
mod schedules;
pub mod sqlite;
pub mod triggers;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protosync_query::{LookedUp, Page, Query, ReadScope};
/// A document a rule looks up.
pub use protosync_schema::DocKey as LookupKey;
use protosync_schema::{Collection, Lookup, PatchFields, Registry, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

pub use error::{Rejection, StoreError};
pub use projection::{
    Checkpoint, Projected, ProjectionMode, ProjectionWrite, Rebuild, SourceStamp, StagedDocument,
};
pub(crate) use protosync_core::{Seq, StoredDocument, Version};
pub use triggers::{ParkedChange, TriggerClaim, TriggerState};

/// A document's canonical JSON, in bytes, at most. Checked on every write,
/// including the result of a patch: documents travel whole to every
/// subscriber, so they must stay small enough to fan out.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// One write of a mutation, already validated against the schema.
#[derive(Debug, Clone)]
pub struct WriteOp {
    /// The collection written, with its indexes and rules.
    pub collection: Arc<Collection>,
    /// The document's id.
    pub id: String,
    /// What the op does, with its validated body or fields.
    pub kind: WriteKind,
    /// The write is rejected unless the stored document has this version.
    pub expected_version: Option<Version>,
}

/// What a [`WriteOp`] does to its document.
#[derive(Debug, Clone)]
pub enum WriteKind {
    /// Create; fails if the document exists.
    Insert(Value),
    /// Create or replace.
    Upsert(Value),
    /// Merge top-level fields into the existing document.
    Patch(PatchFields),
    /// Remove; fails if the document does not exist.
    Delete,
}

/// An atomic list of writes that becomes one commit.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The writes, applied in order; any rejected op rejects them all.
    pub ops: Vec<WriteOp>,
    /// Makes a retry return the first outcome; `None`: every call commits.
    pub idempotency: Option<IdempotencyKey>,
    /// Who decides what the mutation may write; no default, so a write that
    /// forgot its caller's rules does not compile.
    pub access: WriteAccess,
    /// When the server accepted the request, in milliseconds since the epoch:
    /// the time its server-time fields get (and the `now` of its write rule).
    pub accepted_at_ms: i64,
    /// `Some` for a projector's batch: each op carries its source stamp, and
    /// only the ops that are not stale or unchanged are written
    /// ([`projection`]). `None` for every other write.
    pub projection: Option<ProjectionWrite>,
    /// Who asked, kept with the commit for the change feed's audit trail.
    pub audit: Audit,
}

/// Who made a commit, as the change log keeps it beside the commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// The caller: a token's subject or an API key's name; `None` when
    /// unknown (an anonymous caller, a write from inside the server).
    pub actor: Option<String>,
    /// The request's id (the `X-Request-Id` header, or the sync
    /// protocol's request id), if it had one.
    pub request_id: Option<String>,
}

/// The longest actor or request id kept with a commit, in bytes; longer
/// ones are cut at a character boundary (they are for people reading an
/// audit trail, not keys).
pub const MAX_AUDIT_BYTES: usize = 256;

/// Who decides what a mutation may write.
#[derive(Debug, Clone)]
pub enum WriteAccess {
    /// A trusted service, already checked against the collections it may
    /// use: no rule applies.
    Trusted,
    /// Every op is checked inside the commit, with the stored document
    /// (`prev`) and the one the op would leave (`next`, `None` for a
    /// delete): only there are both known.
    Checked(Authorize),
}

impl WriteAccess {
    /// Whether op `index` may turn `prev` into `next`; `lookups` answers
    /// for the documents the write rule looks up.
    pub fn verdict(
        &self,
        index: usize,
        op: &WriteOp,
        prev: Option<&Value>,
        next: Option<&Value>,
        lookups: &mut dyn FnMut(&LookupKey) -> Lookup,
    ) -> Verdict {
        match self {
            WriteAccess::Trusted => Verdict::Allow,
            WriteAccess::Checked(check) => (check.0)(index, op, prev, next, lookups),
        }
    }
}

/// A write rule bound to one caller (see [`WriteCheck`]).
#[derive(Clone)]
pub struct Authorize(pub Arc<WriteCheck>);

/// A write check: (op index, op, prev, next, lookups) → verdict. Lookups
/// answer with canonical bodies, or `Unknown` for what is not loaded yet.
pub type WriteCheck = dyn Fn(
        usize,
        &WriteOp,
        Option<&Value>,
        Option<&Value>,
        &mut dyn FnMut(&LookupKey) -> Lookup,
    ) -> Verdict
    + Send
    + Sync;

impl std::fmt::Debug for Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorize(..)")
    }
}

/// A client's key for a mutation: a retry with the same key returns the first
/// outcome and writes nothing. `request_hash` tells a true retry from a
/// different request that reuses the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key as the caller sent it.
    pub key: String,
    /// A hash of the caller and the ops: a retry matches it; another request, or another
    /// caller, reusing the key does not.
    pub request_hash: String,
}

/// What a committed mutation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOutcome {
    /// The commit's seq: a reader at this watermark or later sees the mutation.
    pub seq: Seq,
    /// One per op, in op order: the document and its version after the commit
    /// (for a delete, the version that was deleted).
    pub results: Vec<OpResult>,
    /// True when this is the recorded outcome of an earlier request with the
    /// same idempotency key; nothing was written now.
    #[serde(default)]
    pub duplicate: bool,
    /// For a projection batch, one per op, in op order: what became of it.
    /// Empty for other mutations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projected: Vec<Projected>,
}

/// What one op of a committed mutation left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpResult {
    /// The document's id.
    pub id: String,
    /// Its version after the commit (for a delete, the version deleted).
    pub version: Version,
}

/// A document as of a read at `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadAt<T> {
    /// The last commit the read saw: the result is the state at this seq.
    pub seq: Seq,
    /// What was read.
    pub value: T,
    /// The documents the reader's rule looked up to decide, in the same
    /// snapshot (empty for rules without lookups).
    pub looked_up: LookedUp,
}

/// One document change of a commit: its state after the commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The document's collection.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// Its version after the commit (for a delete, the version deleted).
    pub version: Version,
    /// `None` when the commit deleted the document.
    pub body: Option<Value>,
}

/// A commit as the change log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRecord {
    /// The commit's seq.
    pub seq: Seq,
    /// When it committed, in milliseconds since the epoch (the store's clock).
    pub committed_at_ms: i64,
    /// Who made it.
    pub audit: Audit,
    /// One per document it wrote, in first-touched order.
    pub changes: Vec<Change>,
}

/// One kept version of a document (see [`Store::history`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The version.
    pub version: Version,
    /// The commit that wrote it.
    pub seq: Seq,
    /// When that commit committed, in milliseconds since the epoch.
    pub committed_at_ms: i64,
    /// Who made that commit, if known.
    pub actor: Option<String>,
    /// The body; `None` when this version is the deletion.
    pub body: Option<Value>,
}

/// Documents a snapshot read holds ahead of its reader: a slow reader
/// makes the snapshot wait, not grow.
pub const SNAPSHOT_CHANNEL_LEN: usize = 1_024;

/// Every document as of one seq (see [`Store::snapshot`]).
pub struct Snapshot {
    /// The seq the documents are consistent at.
    pub seq: Seq,
    /// (collection, document), in `(collection, id)` byte order; an error
    /// ends it.
    pub documents: tokio::sync::mpsc::Receiver<Result<(String, StoredDocument), StoreError>>,
}

/// A document a projector owns, as the drift check compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedDocument {
    /// The document's collection.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// The source seq of its last accepted write.
    pub source_seq: u64,
    /// The content hash of the body stored now; `None` when there is none.
    pub hash: Option<String>,
}

/// A completed action call, kept under its idempotency key so a retry gets
/// the same outcome without calling the backend again. Pruned with the
/// mutations' idempotency records ([`StoreOptions::idempotency_retention`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The caller's idempotency key, as sent.
    pub key: String,
    /// A hash of the caller, the action and the arguments: a retry matches
    /// it; another caller or other arguments reusing the key do not.
    pub request_hash: String,
    /// What the call returned (the dispatcher's encoding).
    pub outcome: Value,
}

/// A node's claim on one tick of a schedule, until its lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickClaim {
    /// The scheduled action's name.
    pub action: String,
    /// The tick, in milliseconds since the epoch.
    pub tick_ms: i64,
    /// The claiming node.
    pub node: String,
    /// Now, by the claiming node's clock (milliseconds since the epoch).
    pub now_ms: i64,
    /// Until when the claim holds; after it, another node may take the tick over.
    pub lease_until_ms: i64,
}

/// One tick of a schedule as the store keeps it: the run history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickRun {
    /// The scheduled action's name.
    pub action: String,
    /// The tick, in milliseconds since the epoch.
    pub tick_ms: i64,
    /// The node that holds (or last held) it.
    pub node: String,
    /// 1 for the first claim, +1 for each take-over after a lease expired.
    pub attempt: u32,
    /// When the current attempt's lease ends.
    pub lease_until_ms: i64,
    /// When the current attempt started.
    pub started_at_ms: i64,
    /// When it finished; `None` while running (or abandoned by a dead node).
    pub finished_at_ms: Option<i64>,
    /// `"ok"` or the error's code, once finished.
    pub outcome: Option<String>,
    /// The error's message, for failed runs.
    pub error: Option<String>,
}

/// How long the run history of schedules is kept: a week of ticks.
pub const SCHEDULE_RUN_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A position in the revocation log: every [`Store::revoke`] gets the next
/// one. Like [`Seq`], they become visible in order, so a reader that has
/// read up to N has seen every revocation up to N.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevocationSeq(pub u64);

/// A revoked token id, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Its position in the revocation log.
    pub seq: RevocationSeq,
    /// The token's `jti` claim.
    pub jti: String,
    /// When it was (last) revoked, in milliseconds since the epoch.
    pub revoked_at_ms: i64,
    /// After this (milliseconds since the epoch) no token with this `jti`
    /// can be valid any more, and [`Store::prune`] drops the entry. `None`:
    /// kept for good.
    pub keep_until_ms: Option<i64>,
}

/// The longest `jti` a revocation may name, in bytes: ids are UUIDs or
/// similar; this only stops a caller from storing megabytes.
pub const MAX_JTI_BYTES: usize = 256;

/// Settings every store honours.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long the change log keeps a commit; resumes from older watermarks
    /// get a fresh result instead. Default [`DEFAULT_CHANGE_LOG_RETENTION`], a day.
    pub change_log_retention: Duration,
    /// How long an idempotency key is remembered. Default
    /// [`DEFAULT_IDEMPOTENCY_RETENTION`], a day.
    pub idempotency_retention: Duration,
}

/// Default for [`StoreOptions::change_log_retention`]: a day covers a laptop
/// closed overnight.
pub const DEFAULT_CHANGE_LOG_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Default for [`StoreOptions::idempotency_retention`]: longer than any
/// client's retry window.
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            change_log_retention: DEFAULT_CHANGE_LOG_RETENTION,
            idempotency_retention: DEFAULT_IDEMPOTENCY_RETENTION,
        }
    }
}

/// The schema a database last ran ([`Store::record_schema`]), compared with
/// the next one at start-up (`protosync_schema::compare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSchema {
    /// The encoded `FileDescriptorSet` ([`Registry::descriptor_set`]).
    pub descriptor_set: Vec<u8>,
    /// Its [`Registry::fingerprint`].
    pub fingerprint: String,
    /// When it was recorded, in ms since the Unix epoch.
    pub recorded_at_ms: i64,
}

/// What the engine needs of a database: atomic commits with gap-free seqs, reads
/// consistent at one seq, the change log, and revocations. Every implementation passes the
/// same conformance suite (`tests/conformance.rs`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Brings declared indexes in line with `registry`: builds new or changed
    /// ones from the stored documents and drops the rest. Called at start-up.
    async fn sync_indexes(&self, registry: &Registry) -> Result<(), StoreError>;

    /// The schema the database last ran, if one was ever recorded.
    async fn recorded_schema(&self) -> Result<Option<RecordedSchema>, StoreError>;

    /// Records `registry` as the schema the database runs, replacing the
    /// last one. Called at start-up once the schema is accepted.
    async fn record_schema(&self, registry: &Registry) -> Result<(), StoreError>;

    /// Applies `mutation` atomically as one commit.
    async fn commit(&self, mutation: Mutation) -> Result<CommitOutcome, StoreError>;

    /// One document by id.
    async fn get(
        &self,
        collection: &str,
        id: &str,
        scope: &ReadScope,
    ) -> Result<ReadAt<Option<StoredDocument>>, StoreError>;

    /// One page of a query, consistent at one seq.
    async fn query(&self, query: &Query) -> Result<ReadAt<Page>, StoreError>;

    /// Up to `max_commits` commits after `after`, in seq order. Fails with
    /// [`StoreError::LogTruncated`] when the log no longer reaches back to `after`.
    async fn read_log(
        &self,
        after: Seq,
        max_commits: usize,
    ) -> Result<Vec<CommitRecord>, StoreError>;

    /// The latest committed seq.
    async fn head(&self) -> Result<Seq, StoreError>;

    /// A projector's checkpoint, consistent at one seq with its documents;
    /// `None` before its first batch.
    async fn checkpoint(&self, projector: &str) -> Result<Option<Checkpoint>, StoreError>;

    /// Up to `max` documents `projector` owns (its live stamps) after
    /// `after` and up to `through` (both `(collection, id)`, `None`: from the
    /// start, to the end), in `(collection, id)` byte order, each with the
    /// [`projection::content_hash`] of its stored body (`None` when the
    /// document was deleted by another writer). One snapshot.
    async fn projected_documents(
        &self,
        projector: &str,
        after: Option<&(String, String)>,
        through: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<ProjectedDocument>, StoreError>;

    /// `projector`'s rebuild in progress; with `start`, one is started when
    /// there is none (a new generation).
    async fn rebuild(&self, projector: &str, start: bool) -> Result<Option<Rebuild>, StoreError>;

    /// Stages `documents` into rebuild `generation` (no commit, no seq:
    /// nobody sees them until the swap), each kept at its highest source
    /// seq; the rebuild's source seq moves to the highest staged or
    /// `read_up_to`. [`StoreError::UnknownRebuild`] when that rebuild is
    /// not in progress.
    async fn stage(
        &self,
        projector: &str,
        generation: u64,
        documents: Vec<StagedDocument>,
        read_up_to: Option<u64>,
    ) -> Result<Rebuild, StoreError>;

    /// Up to `max` documents staged in rebuild `generation` after `after`,
    /// in `(collection, id)` byte order.
    async fn staged_documents(
        &self,
        projector: &str,
        generation: u64,
        after: Option<&(String, String)>,
        max: usize,
    ) -> Result<Vec<StagedDocument>, StoreError>;

    /// Drops rebuild `generation` and everything staged in it; the live
    /// documents stay as they are.
    async fn abandon_rebuild(&self, projector: &str, generation: u64) -> Result<(), StoreError>;

    /// Every document, in `(collection, id)` byte order, as of one seq, read
    /// in one snapshot that does not block writers (an export). The seq
    /// comes first; documents follow through a bounded channel
    /// ([`SNAPSHOT_CHANNEL_LEN`]) as the reader takes them.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Up to `max` kept versions of a document of a `keep_history`
    /// collection, in seq order, written after seq `after` (a document
    /// deleted and created again starts at version 1 again, so versions
    /// alone do not order them). Never pruned.
    async fn history(
        &self,
        collection: &str,
        id: &str,
        after: Seq,
        max: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// The oldest seq a log read may start after.
    async fn log_floor(&self) -> Result<Seq, StoreError>;

    /// Drops change-log entries and idempotency records older than their
    /// retention, and revocations past their `keep_until_ms`; returns the
    /// new log floor.
    async fn prune(&self) -> Result<Seq, StoreError>;

    /// Records that tokens with this `jti` are refused, until
    /// `keep_until_ms` (`None`: for good), and gives the revocation the next
    /// [`RevocationSeq`]. Revoking a `jti` again moves it to the end of the
    /// log and keeps the later of the two times (`None` wins). A `jti` that
    /// is empty, longer than [`MAX_JTI_BYTES`] or holds U+0000 (which
    /// Postgres text cannot hold) is refused on every store.
    async fn revoke(&self, jti: &str, keep_until_ms: Option<i64>)
    -> Result<Revocation, StoreError>;

    /// Up to `max` revocations recorded after `after`, in order. Pruned ones
    /// are gone; their tokens can no longer be valid.
    async fn revocations_after(
        &self,
        after: RevocationSeq,
        max: usize,
    ) -> Result<Vec<Revocation>, StoreError>;

    /// The completed action call recorded under `key`, if any (and not yet
    /// pruned).
    async fn recorded_call(&self, key: &str) -> Result<Option<CallRecord>, StoreError>;

    /// Records a completed call unless one is recorded under its key
    /// already, and returns the one that is recorded: the first wins, so
    /// two racing retries both answer with the same outcome.
    async fn record_call(&self, record: CallRecord) -> Result<CallRecord, StoreError>;

    /// Claims a tick: `Some(attempt)` when `claim.node` now holds it (the
    /// tick is new, or unfinished with its lease expired: a take-over);
    /// `None` when another node holds it or it has finished. Atomic across
    /// every process on the database: one holder per tick at a time.
    async fn claim_tick(&self, claim: TickClaim) -> Result<Option<u32>, StoreError>;

    /// Records the end of attempt `attempt` of a tick by its holder
    /// (`outcome` `"ok"` or an error code); a stale holder's report is ignored.
    async fn finish_tick(
        &self,
        run: &TickRun,
        finished_at_ms: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Up to `max` runs, newest tick first (pruned after
    /// [`SCHEDULE_RUN_RETENTION`]).
    async fn schedule_runs(&self, max: usize) -> Result<Vec<TickRun>, StoreError>;

    /// Claims or renews a trigger's lease: `Some(checkpoint)` when
    /// `claim.node` now holds it (first claim, at `claim.start`; its own
    /// lease; or another node's expired one); `None` while another node's
    /// lease runs. Atomic across every process on the database.
    async fn claim_trigger(&self, claim: TriggerClaim) -> Result<Option<Seq>, StoreError>;

    /// Moves a trigger's checkpoint forward to `to`, only when `node` holds
    /// it, parking `parked` in the same transaction; `false` (nothing
    /// written) when `node` lost the lease or the checkpoint is already there.
    async fn advance_trigger(
        &self,
        name: &str,
        node: &str,
        to: Seq,
        parked: Vec<ParkedChange>,
    ) -> Result<bool, StoreError>;

    /// Every trigger's state, by name.
    async fn trigger_states(&self) -> Result<Vec<TriggerState>, StoreError>;

    /// Up to `max` of a trigger's parked changes, in seq order.
    async fn parked_changes(&self, name: &str, max: usize)
    -> Result<Vec<ParkedChange>, StoreError>;

    /// Drops a parked change (delivered on retry); `false` if it was not parked.
    async fn resolve_parked(&self, name: &str, seq: Seq, id: &str) -> Result<bool, StoreError>;

    /// A watch on the latest seq this process knows to be committed: it moves
    /// after local commits and, for shared stores, on wake-ups from other
    /// writers. It may lag or skip values; the log is the truth.
    fn commits(&self) -> watch::Receiver<Seq>;

    /// 32 random bytes made when the database was created, the same for
    /// every process on it: the root of keys that must agree across a
    /// cluster (page cursors are sealed with one). Never sent to clients.
    fn database_secret(&self) -> [u8; 32];
}

/// Why a `jti` cannot be stored, if it cannot (see [`Store::revoke`]).
pub fn invalid_jti(jti: &str) -> Option<String> {
    if jti.is_empty() {
        Some("the jti is empty".into())
    } else if jti.len() > MAX_JTI_BYTES {
        Some(format!(
            "the jti is {} bytes; the limit is {MAX_JTI_BYTES}",
            jti.len()
        ))
    } else if jti.contains('\0') {
        Some("the jti holds U+0000".into())
    } else {
        None
    }
}

/// Fails with [`StoreError::InvalidJti`] for a `jti` no store can keep:
/// both stores refuse the same ones, before touching the database.
pub(crate) fn refuse_invalid_jti(jti: &str) -> Result<(), StoreError> {
    invalid_jti(jti).map_or(Ok(()), |problem| Err(StoreError::InvalidJti(problem)))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
