//! The store conformance suite: every test runs against SQLite and Postgres.

use std::sync::Arc;
use std::time::Duration;

use protosync_core::{Seq, Version};
use protosync_query::{Query, QueryRequest};
use protosync_schema::Registry;
use protosync_store::postgres::PostgresStore;
use protosync_store::sqlite::SqliteStore;
use protosync_store::{
    IdempotencyKey, MAX_JTI_BYTES, Mutation, Rejection, RevocationSeq, Store, StoreError,
    StoreOptions, WriteKind, WriteOp,
};
use protosync_testkit::{TestDatabase, example_schema_dir};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

enum Backing {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

struct Harness {
    store: Arc<dyn Store>,
    registry: Registry,
    backing: Backing,
}

impl Harness {
    fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::load_dir(&example_schema_dir()).unwrap();
        let store =
            SqliteStore::open(&dir.path().join("data.db"), StoreOptions::default()).unwrap();
        Harness {
            store: Arc::new(store),
            registry,
            backing: Backing::Sqlite(dir),
        }
    }

    async fn postgres() -> Option<Harness> {
        let db = TestDatabase::create().await?;
        let registry = Registry::load_dir(&example_schema_dir()).unwrap();
        let store = PostgresStore::connect(&db.url, 8, StoreOptions::default())
            .await
            .unwrap();
        Some(Harness {
            store: Arc::new(store),
            registry,
            backing: Backing::Postgres(db),
        })
    }

    /// Another store on the same data, as another process (or a restart) would open it.
    async fn open_again(&self, options: StoreOptions) -> Arc<dyn Store> {
        match &self.backing {
            Backing::Sqlite(dir) => {
                Arc::new(SqliteStore::open(&dir.path().join("data.db"), options).unwrap())
            }
            Backing::Postgres(db) => {
                Arc::new(PostgresStore::connect(&db.url, 8, options).await.unwrap())
            }
        }
    }

    async fn start(self) -> Harness {
        self.store.sync_indexes(&self.registry).await.unwrap();
        self
    }

    fn op(&self, collection: &str, id: &str, kind: WriteKind) -> WriteOp {
        WriteOp {
            collection: self.registry.collection(collection).unwrap().clone(),
            id: id.into(),
            kind,
            expected_version: None,
        }
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "JSON builders take the value, so a call site reads `json!({..})` without a borrow"
    )]
    fn insert(&self, collection: &str, id: &str, body: Value) -> WriteOp {
        let doc = self
            .registry
            .collection(collection)
            .unwrap()
            .validate(id, &body)
            .unwrap();
        self.op(collection, id, WriteKind::Insert(doc))
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "JSON builders take the value, so a call site reads `json!({..})` without a borrow"
    )]
    fn upsert(&self, collection: &str, id: &str, body: Value) -> WriteOp {
        let doc = self
            .registry
            .collection(collection)
            .unwrap()
            .validate(id, &body)
            .unwrap();
        self.op(collection, id, WriteKind::Upsert(doc))
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "JSON builders take the value, so a call site reads `json!({..})` without a borrow"
    )]
    fn patch(&self, collection: &str, id: &str, fields: Value) -> WriteOp {
        let patch = self
            .registry
            .collection(collection)
            .unwrap()
            .validate_patch(&fields)
            .unwrap();
        self.op(collection, id, WriteKind::Patch(patch))
    }

    async fn commit(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<protosync_store::CommitOutcome, StoreError> {
        self.store
            .commit(Mutation {
                ops,
                idempotency: None,
                access: protosync_store::WriteAccess::Trusted,
                accepted_at_ms: 0,
                projection: None,
                audit: Default::default(),
            })
            .await
    }

    fn query(&self, request: Value) -> Query {
        let request: QueryRequest = serde_json::from_value(request).unwrap();
        Query::compile(
            &self.registry,
            &request,
            &protosync_query::CursorSeal::from_database_secret(&self.store.database_secret()),
            protosync_query::ReadScope::Everything,
        )
        .unwrap()
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::sqlite().start().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(harness) = super::Harness::postgres().await else { return };
                    super::$name(harness.start().await).await
                }
            )*
        }
    };
}

conformance!(
    insert_then_get_returns_version_one_at_seq_one,
    insert_of_existing_id_is_rejected_and_writes_nothing,
    upsert_creates_then_replaces_with_the_next_version,
    patch_merges_fields_and_rejects_missing_documents,
    delete_removes_and_rejects_missing_documents,
    rejected_op_rejects_the_whole_mutation_without_using_a_seq,
    expected_version_is_checked,
    idempotent_retry_returns_the_first_outcome_and_writes_nothing,
    change_log_holds_each_commit_in_seq_order,
    seq_is_gap_free_under_concurrent_writers_on_two_store_instances,
    queries_agree_with_brute_force_evaluation,
    ordering_is_by_typed_value_not_text,
    data_survives_reopening,
    pruning_moves_the_log_floor_and_old_resumes_are_refused,
    changed_index_definitions_are_rebuilt_from_stored_documents,
    commits_watch_follows_commits,
    a_denied_op_rejects_the_mutation_and_writes_nothing,
    concurrent_mutations_of_the_same_documents_agree_with_their_change_log,
    a_mutation_the_database_cannot_store_fails_alone,
    revocations_are_read_in_order_and_survive_reopening,
    revocations_from_two_store_instances_get_distinct_gap_free_seqs,
    revocations_past_their_keep_until_are_pruned,
    revocations_of_unstorable_jtis_are_refused,
    the_database_secret_is_random_and_shared_by_every_process,
    a_recorded_call_is_kept_first_wins_across_processes_and_is_pruned,
    a_tick_has_one_holder_until_its_lease_expires_and_a_finished_tick_is_never_retaken,
    a_trigger_has_one_holder_whose_checkpoint_only_moves_forward_with_its_parked_changes,
    the_recorded_schema_is_the_last_one_recorded_and_survives_reopening,
);

#[path = "conformance/defaults.rs"]
mod defaults;

#[path = "conformance/projections.rs"]
mod projections;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn the_recorded_schema_is_the_last_one_recorded_and_survives_reopening(h: Harness) {
    assert_eq!(h.store.recorded_schema().await.unwrap(), None);
    let first = Registry::from_sources(&[(
        "a.proto",
        "syntax = \"proto3\"; package a.v1; message A { string id = 1; }",
    )])
    .unwrap();
    let before = now_ms();
    h.store.record_schema(&first).await.unwrap();
    h.store.record_schema(&h.registry).await.unwrap();
    let recorded = h
        .open_again(StoreOptions::default())
        .await
        .recorded_schema()
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(recorded.descriptor_set, h.registry.descriptor_set());
    assert_eq!(recorded.fingerprint, h.registry.fingerprint());
    assert!(recorded.recorded_at_ms >= before);
}

/// (jti, seq, keep_until_ms) of every revocation after `after`.
async fn revocations(store: &Arc<dyn Store>, after: u64) -> Vec<(String, u64, Option<i64>)> {
    store
        .revocations_after(RevocationSeq(after), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.jti, r.seq.0, r.keep_until_ms))
        .collect()
}

async fn revocations_are_read_in_order_and_survive_reopening(h: Harness) {
    let later = now_ms() + 3_600_000;
    let a = h.store.revoke("a", None).await.unwrap();
    let b = h.store.revoke("b", Some(later)).await.unwrap();
    assert_eq!(
        (a.seq, b.seq, b.keep_until_ms),
        (RevocationSeq(1), RevocationSeq(2), Some(later))
    );
    assert_eq!(
        revocations(&h.store, 1).await,
        [("b".to_owned(), 2, Some(later))]
    );
    // Revoked again: moved to the end of the log; the later time wins, and
    // "for good" beats any time.
    h.store.revoke("a", Some(later)).await.unwrap();
    h.store.revoke("b", Some(later + 1)).await.unwrap();
    h.store.revoke("b", Some(later - 1)).await.unwrap();
    let expected = [
        ("a".to_owned(), 3, None),
        ("b".to_owned(), 5, Some(later + 1)),
    ];
    assert_eq!(revocations(&h.store, 0).await, expected);
    let reopened = h.open_again(StoreOptions::default()).await;
    assert_eq!(revocations(&reopened, 0).await, expected);
    let c = reopened.revoke("c", None).await.unwrap();
    assert_eq!(c.seq, RevocationSeq(6), "seqs continue after a restart");
    assert_eq!(
        revocations(&h.store, 5).await,
        [("c".to_owned(), 6, None)],
        "another process's revocation is visible"
    );
}

async fn revocations_from_two_store_instances_get_distinct_gap_free_seqs(h: Harness) {
    let other = h.open_again(StoreOptions::default()).await;
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 {
                h.store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { store.revoke(&format!("jti-{i}"), None).await.unwrap() })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let seqs: Vec<u64> = revocations(&h.store, 0)
        .await
        .into_iter()
        .map(|(_, seq, _)| seq)
        .collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
}

async fn revocations_past_their_keep_until_are_pruned(h: Harness) {
    let now = now_ms();
    h.store.revoke("expired", Some(now - 1_000)).await.unwrap();
    h.store
        .revoke("fresh", Some(now + 3_600_000))
        .await
        .unwrap();
    h.store.revoke("for-good", None).await.unwrap();
    h.store.prune().await.unwrap();
    let kept: Vec<String> = revocations(&h.store, 0)
        .await
        .into_iter()
        .map(|(jti, _, _)| jti)
        .collect();
    assert_eq!(kept, ["fresh", "for-good"]);
    let next = h.store.revoke("next", None).await.unwrap();
    assert_eq!(next.seq, RevocationSeq(4), "pruning never reuses seqs");
}

async fn revocations_of_unstorable_jtis_are_refused(h: Harness) {
    for jti in [
        "".to_owned(),
        "a\0b".to_owned(),
        "x".repeat(MAX_JTI_BYTES + 1),
    ] {
        assert!(
            matches!(
                h.store.revoke(&jti, None).await,
                Err(StoreError::InvalidJti(_))
            ),
            "{jti:?}"
        );
    }
    let longest = "x".repeat(MAX_JTI_BYTES);
    h.store.revoke(&longest, None).await.unwrap();
    assert_eq!(revocations(&h.store, 0).await.len(), 1);
}

async fn the_database_secret_is_random_and_shared_by_every_process(h: Harness) {
    let secret = h.store.database_secret();
    assert_ne!(secret, [0; 32]);
    let again = h.open_again(StoreOptions::default()).await;
    assert_eq!(again.database_secret(), secret, "the same after a reopen");
    let other = match h.backing {
        Backing::Sqlite(_) => Harness::sqlite(),
        Backing::Postgres(_) => Harness::postgres().await.unwrap(),
    };
    assert_ne!(
        other.store.database_secret(),
        secret,
        "another database has its own"
    );
}

async fn a_denied_op_rejects_the_mutation_and_writes_nothing(h: Harness) {
    h.commit(vec![h.insert(
        "work_items",
        "mine",
        json!({"ownerId": "ann", "priority": 1}),
    )])
    .await
    .unwrap();
    // Allow only writes that keep ownerId "ann", seeing prev and next.
    let authorize =
        protosync_store::Authorize(
            std::sync::Arc::new(
                |_,
                 _,
                 prev: Option<&Value>,
                 next: Option<&Value>,
                 _lookups: &mut dyn FnMut(
                    &protosync_store::LookupKey,
                ) -> protosync_schema::Lookup| {
                    let owner = |d: Option<&Value>| d.map(|d| d["ownerId"].clone());
                    let allowed = prev.is_none_or(|p| p["ownerId"] == "ann")
                        && next.is_none_or(|n| n["ownerId"] == "ann")
                        && owner(prev) != Some(json!("x"));
                    if allowed {
                        protosync_schema::Verdict::Allow
                    } else {
                        protosync_schema::Verdict::Deny
                    }
                },
            ),
        );
    let ops = vec![
        h.patch("work_items", "mine", json!({"priority": 5})),
        h.patch("work_items", "mine", json!({"ownerId": "bob"})),
    ];
    let err = h
        .store
        .commit(Mutation {
            ops,
            idempotency: None,
            access: protosync_store::WriteAccess::Checked(authorize.clone()),
            accepted_at_ms: 0,
            projection: None,
            audit: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected {
                op: 1,
                rejection: Rejection::PermissionDenied,
                ..
            }
        ),
        "{err:?}"
    );
    let doc = h
        .store
        .get(
            "work_items",
            "mine",
            &protosync_query::ReadScope::Everything,
        )
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(
        (
            doc.version,
            doc.body["priority"].clone(),
            doc.body["ownerId"].clone()
        ),
        (Version(1), json!(1), json!("ann"))
    );
    assert_eq!(h.store.head().await.unwrap(), Seq(1));
    let ok = h
        .store
        .commit(Mutation {
            ops: vec![h.patch("work_items", "mine", json!({"priority": 5}))],
            idempotency: None,
            access: protosync_store::WriteAccess::Checked(authorize),
            accepted_at_ms: 0,
            projection: None,
            audit: Default::default(),
        })
        .await;
    assert_eq!(ok.unwrap().seq, Seq(2));
}

async fn insert_then_get_returns_version_one_at_seq_one(h: Harness) {
    let outcome = h
        .commit(vec![h.insert(
            "work_items",
            "w1",
            json!({"title": "hello", "priority": 3}),
        )])
        .await
        .unwrap();
    assert_eq!(outcome.seq, Seq(1));
    assert_eq!(outcome.results[0].version, Version(1));
    let read = h
        .store
        .get("work_items", "w1", &protosync_query::ReadScope::Everything)
        .await
        .unwrap();
    assert_eq!(read.seq, Seq(1));
    let doc = read.value.unwrap();
    assert_eq!((doc.version, doc.seq), (Version(1), Seq(1)));
    assert_eq!(doc.body["title"], "hello");
    assert_eq!(doc.body["priority"], 3);
    assert!(
        h.store
            .get(
                "work_items",
                "nope",
                &protosync_query::ReadScope::Everything
            )
            .await
            .unwrap()
            .value
            .is_none()
    );
    assert!(
        h.store
            .get(
                "proposed_actions",
                "w1",
                &protosync_query::ReadScope::Everything
            )
            .await
            .unwrap()
            .value
            .is_none(),
        "ids are per collection"
    );
}

async fn insert_of_existing_id_is_rejected_and_writes_nothing(h: Harness) {
    h.commit(vec![h.insert(
        "work_items",
        "w1",
        json!({"title": "first"}),
    )])
    .await
    .unwrap();
    let err = h
        .commit(vec![h.insert(
            "work_items",
            "w1",
            json!({"title": "second"}),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected {
                op: 0,
                rejection: Rejection::AlreadyExists,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        h.store
            .get("work_items", "w1", &protosync_query::ReadScope::Everything)
            .await
            .unwrap()
            .value
            .unwrap()
            .body["title"],
        "first"
    );
    assert_eq!(h.store.head().await.unwrap(), Seq(1));
}

async fn upsert_creates_then_replaces_with_the_next_version(h: Harness) {
    h.commit(vec![h.upsert(
        "work_items",
        "w1",
        json!({"title": "a", "priority": 1}),
    )])
    .await
    .unwrap();
    let outcome = h
        .commit(vec![h.upsert("work_items", "w1", json!({"title": "b"}))])
        .await
        .unwrap();
    assert_eq!(outcome.results[0].version, Version(2));
    let doc = h
        .store
        .get("work_items", "w1", &protosync_query::ReadScope::Everything)
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(doc.body["title"], "b");
    assert_eq!(
        doc.body["priority"], 0,
        "upsert replaces the whole document"
    );
    assert_eq!(doc.seq, Seq(2));
}

async fn patch_merges_fields_and_rejects_missing_documents(h: Harness) {
    h.commit(vec![h.insert(
        "work_items",
        "w1",
        json!({"title": "a", "priority": 1}),
    )])
    .await
    .unwrap();
    let outcome = h
        .commit(vec![h.patch("work_items", "w1", json!({"priority": 5}))])
        .await
        .unwrap();
    assert_eq!(outcome.results[0].version, Version(2));
    let doc = h
        .store
        .get("work_items", "w1", &protosync_query::ReadScope::Everything)
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(
        (doc.body["title"].as_str(), doc.body["priority"].as_i64()),
        (Some("a"), Some(5))
    );
    let err = h
        .commit(vec![h.patch(
            "work_items",
            "missing",
            json!({"priority": 5}),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected {
                rejection: Rejection::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
}

async fn delete_removes_and_rejects_missing_documents(h: Harness) {
    h.commit(vec![h.insert("work_items", "w1", json!({"title": "a"}))])
        .await
        .unwrap();
    let outcome = h
        .commit(vec![h.op("work_items", "w1", WriteKind::Delete)])
        .await
        .unwrap();
    assert_eq!(
        outcome.results[0].version,
        Version(1),
        "a delete reports the version it deleted"
    );
    assert!(
        h.store
            .get("work_items", "w1", &protosync_query::ReadScope::Everything)
            .await
            .unwrap()
            .value
            .is_none()
    );
    let err = h
        .commit(vec![h.op("work_items", "w1", WriteKind::Delete)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected {
                rejection: Rejection::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    // The index entry went with the document.
    let page = h.store.query(&h.query(json!({"collection": "work_items", "filter": [{"field": "ownerId", "op": "==", "value": ""}]}))).await.unwrap();
    assert!(page.value.documents.is_empty());
}

async fn rejected_op_rejects_the_whole_mutation_without_using_a_seq(h: Harness) {
    h.commit(vec![h.insert("work_items", "taken", json!({}))])
        .await
        .unwrap();
    let err = h
        .commit(vec![
            h.insert("work_items", "new", json!({"title": "x"})),
            h.insert("work_items", "taken", json!({})),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected { op: 1, .. }), "{err:?}");
    assert!(
        h.store
            .get("work_items", "new", &protosync_query::ReadScope::Everything)
            .await
            .unwrap()
            .value
            .is_none(),
        "the first op must not be applied"
    );
    let next = h
        .commit(vec![h.insert("work_items", "later", json!({}))])
        .await
        .unwrap();
    assert_eq!(next.seq, Seq(2), "the rejected mutation used no seq");
}

async fn expected_version_is_checked(h: Harness) {
    h.commit(vec![h.insert("work_items", "w1", json!({"priority": 1}))])
        .await
        .unwrap();
    h.commit(vec![h.patch("work_items", "w1", json!({"priority": 2}))])
        .await
        .unwrap();
    let mut stale = h.patch("work_items", "w1", json!({"priority": 9}));
    stale.expected_version = Some(Version(1));
    let err = h.commit(vec![stale]).await.unwrap_err();
    match err {
        StoreError::Rejected {
            rejection: Rejection::VersionConflict { expected, actual },
            ..
        } => {
            assert_eq!((expected, actual), (Version(1), Some(Version(2))));
        }
        other => panic!("{other:?}"),
    }
    let mut fresh = h.patch("work_items", "w1", json!({"priority": 9}));
    fresh.expected_version = Some(Version(2));
    assert_eq!(
        h.commit(vec![fresh]).await.unwrap().results[0].version,
        Version(3)
    );
    let mut create_only = h.upsert("work_items", "w2", json!({}));
    create_only.expected_version = Some(Version(1));
    assert!(matches!(
        h.commit(vec![create_only]).await.unwrap_err(),
        StoreError::Rejected {
            rejection: Rejection::VersionConflict { actual: None, .. },
            ..
        }
    ));
}

async fn idempotent_retry_returns_the_first_outcome_and_writes_nothing(h: Harness) {
    let key = |hash: &str| {
        Some(IdempotencyKey {
            key: "k-1".into(),
            request_hash: hash.into(),
        })
    };
    let first = h
        .store
        .commit(Mutation {
            ops: vec![h.insert("work_items", "w1", json!({}))],
            idempotency: key("h1"),
            access: protosync_store::WriteAccess::Trusted,
            accepted_at_ms: 0,
            projection: None,
            audit: Default::default(),
        })
        .await
        .unwrap();
    assert!(!first.duplicate);
    let retry = h
        .store
        .commit(Mutation {
            ops: vec![h.insert("work_items", "w1", json!({}))],
            idempotency: key("h1"),
            access: protosync_store::WriteAccess::Trusted,
            accepted_at_ms: 0,
            projection: None,
            audit: Default::default(),
        })
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.seq, &retry.results), (first.seq, &first.results));
    assert_eq!(
        h.store.head().await.unwrap(),
        first.seq,
        "the retry committed nothing"
    );
    let reused = h
        .store
        .commit(Mutation {
            ops: vec![h.insert("work_items", "w2", json!({}))],
            idempotency: key("other"),
            access: protosync_store::WriteAccess::Trusted,
            accepted_at_ms: 0,
            projection: None,
            audit: Default::default(),
        })
        .await;
    assert!(
        matches!(reused, Err(StoreError::IdempotencyKeyReused(_))),
        "{reused:?}"
    );
    assert!(
        h.store
            .get("work_items", "w2", &protosync_query::ReadScope::Everything)
            .await
            .unwrap()
            .value
            .is_none()
    );
}

async fn change_log_holds_each_commit_in_seq_order(h: Harness) {
    h.commit(vec![
        h.insert("work_items", "a", json!({"title": "1"})),
        h.insert("work_items", "b", json!({})),
    ])
    .await
    .unwrap();
    h.commit(vec![
        h.patch("work_items", "a", json!({"title": "2"})),
        h.patch("work_items", "a", json!({"priority": 4})),
    ])
    .await
    .unwrap();
    h.commit(vec![h.op("work_items", "b", WriteKind::Delete)])
        .await
        .unwrap();
    let log = h.store.read_log(Seq(0), 100).await.unwrap();
    let seqs: Vec<u64> = log.iter().map(|c| c.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let ids: Vec<&str> = log[0].changes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        log[1].changes.len(),
        1,
        "one change per document per commit"
    );
    assert_eq!(log[1].changes[0].version, Version(2));
    assert_eq!(log[1].changes[0].body.as_ref().unwrap()["priority"], 4);
    assert_eq!(log[2].changes[0].body, None);
    assert_eq!(
        h.store
            .read_log(Seq(1), 1)
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq.0)
            .collect::<Vec<_>>(),
        [2]
    );
    assert!(h.store.read_log(Seq(3), 10).await.unwrap().is_empty());
}

async fn seq_is_gap_free_under_concurrent_writers_on_two_store_instances(h: Harness) {
    const WRITERS: usize = 8;
    const COMMITS_EACH: usize = 25;
    let second = h.open_again(StoreOptions::default()).await;
    let stores = [h.store.clone(), second];
    let reader = h.store.clone();
    let tail = tokio::spawn(async move {
        // Tails the log while writers run: every read must continue exactly
        // where the last one ended.
        let mut seen = Vec::new();
        let mut after = Seq(0);
        while seen.len() < WRITERS * COMMITS_EACH {
            for commit in reader.read_log(after, 50).await.unwrap() {
                assert_eq!(commit.seq, after.next(), "gap or reorder after seq {after}");
                assert_eq!(commit.changes.len(), 1);
                after = commit.seq;
                seen.push(commit.changes[0].id.clone());
            }
            tokio::task::yield_now().await;
        }
        seen
    });
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = stores[w % 2].clone();
        let collection = h.registry.collection("work_items").unwrap().clone();
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..COMMITS_EACH {
                let id = format!("w{w}-{i}");
                let body = collection.validate(&id, &json!({"priority": i})).unwrap();
                let op = WriteOp {
                    collection: collection.clone(),
                    id,
                    kind: WriteKind::Insert(body),
                    expected_version: None,
                };
                seqs.push(
                    store
                        .commit(Mutation {
                            ops: vec![op],
                            idempotency: None,
                            access: protosync_store::WriteAccess::Trusted,
                            accepted_at_ms: 0,
                            projection: None,
                            audit: Default::default(),
                        })
                        .await
                        .unwrap()
                        .seq,
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for writer in writers {
        let seqs = writer.await.unwrap();
        assert!(
            seqs.windows(2).all(|p| p[0] < p[1]),
            "one writer's commits get increasing seqs"
        );
        all.extend(seqs);
    }
    all.sort();
    let expected: Vec<Seq> = (1..=(WRITERS * COMMITS_EACH) as u64).map(Seq).collect();
    assert_eq!(all, expected);
    let seen = tokio::time::timeout(Duration::from_secs(60), tail)
        .await
        .unwrap()
        .unwrap();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "the tail saw each commit once");
}

/// Random documents and random queries: every page of every query, read
/// through indexes and cursors, equals filtering and sorting everything in
/// memory.
async fn queries_agree_with_brute_force_evaluation(h: Harness) {
    let seed = protosync_testkit::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let owners = ["ann", "bob", "cy"];
    let mut docs = Vec::new();
    let mut ops = Vec::new();
    for i in 0..120 {
        let value = (
            rng.random_range(0..4usize),
            rng.random::<bool>(),
            rng.random_range(-3i32..4),
            rng.random_range(0i64..5),
        );
        let body = json!({
            "ownerId": owners[value.0 % 3],
            "important": value.1,
            "priority": value.2,
            "receivedAt": format!("2026-01-0{}T00:00:0{}.{}Z", 1 + value.3, value.3, i % 10),
            "title": format!("t{}", i % 7),
        });
        ops.push(h.insert("work_items", &format!("doc{i:03}"), body));
        if ops.len() == 40 {
            h.commit(std::mem::take(&mut ops)).await.unwrap();
        }
    }
    let all = h
        .store
        .query(&h.query(json!({"collection": "work_items", "limit": 1000})))
        .await
        .unwrap()
        .value
        .documents;
    assert_eq!(all.len(), 120);
    docs.extend(all);
    let fields = [
        ("ownerId", json!(["ann", "bob", "cy", "zed"])),
        ("important", json!([true, false])),
        ("priority", json!([-3, 0, 1, 2, 5])),
        (
            "receivedAt",
            json!(["2026-01-02T00:00:01.5Z", "2026-01-03T00:00:00Z"]),
        ),
    ];
    let ops_text = ["==", "!=", "<", "<=", ">", ">=", "in"];
    for case in 0..150 {
        let mut pick = |n: usize| rng.random_range(0..n);
        let mut filter = Vec::new();
        for _ in 0..pick(3) {
            let (field, values) = &fields[pick(fields.len())];
            let values = values.as_array().unwrap();
            let op = ops_text[pick(ops_text.len())];
            let value = if op == "in" {
                json!([values[pick(values.len())], values[pick(values.len())]])
            } else {
                values[pick(values.len())].clone()
            };
            filter.push(json!({"field": field, "op": op, "value": value}));
        }
        let mut order = Vec::new();
        for _ in 0..pick(3) {
            let (field, _) = &fields[pick(fields.len())];
            order.push(
                json!({"field": field, "direction": if pick(2) == 0 { "asc" } else { "desc" }}),
            );
        }
        let limit = 1 + pick(30);
        let request =
            json!({"collection": "work_items", "filter": filter, "orderBy": order, "limit": limit});
        let query = h.query(request.clone());
        let mut expected: Vec<_> = docs
            .iter()
            .filter(|d| query.filter_matches(&d.body))
            .collect();
        expected.sort_by_key(|d| query.sort_key(d));
        let expected: Vec<&str> = expected.iter().map(|d| d.id.as_str()).collect();
        let mut got = Vec::new();
        let mut request = request;
        loop {
            let page = h
                .store
                .query(&h.query(request.clone()))
                .await
                .unwrap()
                .value;
            assert!(page.documents.len() <= limit);
            got.extend(page.documents.iter().map(|d| d.id.clone()));
            match page.next_cursor {
                Some(cursor) => request["cursor"] = json!(cursor),
                None => break,
            }
            assert!(
                got.len() <= expected.len(),
                "case {case}: more results than expected for {request}"
            );
        }
        assert_eq!(
            got,
            expected,
            "seed {seed} case {case}: {request} (plan {:?})",
            protosync_query::Plan::choose(&query)
        );
    }
}

async fn ordering_is_by_typed_value_not_text(h: Harness) {
    let mut ops = Vec::new();
    for (id, count, updated) in [
        ("a", 9, "2026-01-01T00:00:01Z"),
        ("b", 10, "2026-01-01T00:00:00.500Z"),
        ("c", -2, "2026-01-01T00:00:00Z"),
    ] {
        ops.push(h.insert(
            "run_summary",
            id,
            json!({"eventCount": count, "updatedAt": updated, "status": "RUN_STATUS_RUNNING"}),
        ));
    }
    h.commit(ops).await.unwrap();
    let ids = |request: Value| {
        let query = h.query(request);
        let store = h.store.clone();
        async move {
            store
                .query(&query)
                .await
                .unwrap()
                .value
                .documents
                .into_iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(json!({"collection": "run_summary", "orderBy": [{"field": "eventCount", "direction": "desc"}]})).await, ["b", "a", "c"]);
    // Served by the by_status_updated index: timestamps order by instant.
    assert_eq!(
        ids(json!({"collection": "run_summary", "filter": [{"field": "status", "op": "==", "value": "RUN_STATUS_RUNNING"}], "orderBy": [{"field": "updatedAt"}]})).await,
        ["c", "b", "a"]
    );
    assert_eq!(ids(json!({"collection": "run_summary", "filter": [{"field": "eventCount", "op": ">", "value": "9"}]})).await, ["b"]);
}

async fn data_survives_reopening(h: Harness) {
    h.commit(vec![h.insert(
        "work_items",
        "w1",
        json!({"title": "kept", "ownerId": "ann"}),
    )])
    .await
    .unwrap();
    let reopened = h.open_again(StoreOptions::default()).await;
    let doc = reopened
        .get("work_items", "w1", &protosync_query::ReadScope::Everything)
        .await
        .unwrap();
    assert_eq!(
        (doc.seq, doc.value.unwrap().body["title"].clone()),
        (Seq(1), json!("kept"))
    );
    let page = reopened.query(&h.query(json!({"collection": "work_items", "filter": [{"field": "ownerId", "op": "==", "value": "ann"}]}))).await.unwrap();
    assert_eq!(page.value.documents.len(), 1);
    assert_eq!(reopened.read_log(Seq(0), 10).await.unwrap().len(), 1);
}

async fn pruning_moves_the_log_floor_and_old_resumes_are_refused(h: Harness) {
    for i in 0..3 {
        h.commit(vec![h.insert("work_items", &format!("w{i}"), json!({}))])
            .await
            .unwrap();
    }
    assert_eq!(
        h.store.prune().await.unwrap(),
        Seq(0),
        "default retention keeps everything fresh"
    );
    let expiring = h
        .open_again(StoreOptions {
            change_log_retention: Duration::ZERO,
            idempotency_retention: Duration::ZERO,
        })
        .await;
    // Commits are stamped in milliseconds; make sure the last one is in the past.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut floor = Seq(0);
    while floor != Seq(3) && tokio::time::Instant::now() < deadline {
        floor = expiring.prune().await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(floor, Seq(3));
    assert_eq!(h.store.log_floor().await.unwrap(), Seq(3));
    assert!(matches!(
        h.store.read_log(Seq(1), 10).await,
        Err(StoreError::LogTruncated { floor: Seq(3) })
    ));
    assert!(h.store.read_log(Seq(3), 10).await.unwrap().is_empty());
    let next = h
        .commit(vec![h.insert("work_items", "w9", json!({}))])
        .await
        .unwrap();
    assert_eq!(next.seq, Seq(4), "pruning never reuses seqs");
    assert_eq!(h.store.read_log(Seq(3), 10).await.unwrap().len(), 1);
}

async fn changed_index_definitions_are_rebuilt_from_stored_documents(h: Harness) {
    let schema = |fields: &str| {
        format!(
            "syntax = \"proto3\"; package t; import \"protosync/v1/options.proto\";
             message Item {{ option (protosync.v1.collection) = {{ name: \"items\" indexes: {{ name: \"i\" fields: [{fields}] }} }};
               string kind = 1; int32 rank = 2; }}"
        )
    };
    let v1 = Registry::from_sources(&[("t.proto", &schema("\"kind\""))]).unwrap();
    let v2 = Registry::from_sources(&[("t.proto", &schema("\"rank\""))]).unwrap();
    h.store.sync_indexes(&v1).await.unwrap();
    let items = v1.collection("items").unwrap();
    let ops = (0..5)
        .map(|i| {
            let id = format!("i{i}");
            let body = items
                .validate(
                    &id,
                    &json!({"kind": if i % 2 == 0 { "even" } else { "odd" }, "rank": 10 - i}),
                )
                .unwrap();
            WriteOp {
                collection: items.clone(),
                id,
                kind: WriteKind::Insert(body),
                expected_version: None,
            }
        })
        .collect();
    h.store
        .commit(Mutation {
            ops,
            idempotency: None,
            access: protosync_store::WriteAccess::Trusted,
            accepted_at_ms: 0,
            projection: None,
            audit: Default::default(),
        })
        .await
        .unwrap();
    h.store.sync_indexes(&v2).await.unwrap();
    let request: QueryRequest = serde_json::from_value(json!({"collection": "items", "filter": [{"field": "rank", "op": ">=", "value": 8}], "orderBy": [{"field": "rank"}]})).unwrap();
    let query = Query::compile(
        &v2,
        &request,
        &protosync_query::CursorSeal::from_database_secret(&h.store.database_secret()),
        protosync_query::ReadScope::Everything,
    )
    .unwrap();
    assert!(matches!(
        protosync_query::Plan::choose(&query),
        protosync_query::Plan::Index(_)
    ));
    let ids: Vec<String> = h
        .store
        .query(&query)
        .await
        .unwrap()
        .value
        .documents
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        ids,
        ["i2", "i1", "i0"],
        "the rebuilt index holds the documents written before it existed"
    );
}

async fn commits_watch_follows_commits(h: Harness) {
    let mut commits = h.store.commits();
    assert_eq!(*commits.borrow_and_update(), Seq(0));
    h.commit(vec![h.insert("work_items", "w1", json!({}))])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), commits.wait_for(|s| *s >= Seq(1)))
        .await
        .unwrap()
        .unwrap();
}

/// Concurrent writers of random mutations on a few shared documents (so the
/// stores commit them in groups, several touching the same document and
/// index entries): every accepted mutation has its own gap-free seq, the
/// change log replayed in seq order gives each document version + 1 per
/// commit and exactly the stored documents, and queries through the indexes
/// agree with the documents.
async fn concurrent_mutations_of_the_same_documents_agree_with_their_change_log(h: Harness) {
    const WRITERS: u64 = 8;
    const MUTATIONS_EACH: usize = 40;
    let seed = protosync_testkit::seed();
    let h = Arc::new(h);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let h = h.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + w);
            let mut answers = Vec::new();
            for m in 0..MUTATIONS_EACH {
                let mut ops = Vec::new();
                for _ in 0..rng.random_range(1..4) {
                    let id = format!("doc{}", rng.random_range(0..5));
                    let owner = ["ann", "bob"][rng.random_range(0..2)];
                    let body = json!({"ownerId": owner, "important": rng.random::<bool>(), "priority": rng.random_range(0..4)});
                    let mut op = match rng.random_range(0..5) {
                        0 => h.insert("work_items", &id, body),
                        1 | 2 => h.upsert("work_items", &id, body),
                        3 => h.patch("work_items", &id, json!({"priority": rng.random_range(0..4)})),
                        _ => h.op("work_items", &id, WriteKind::Delete),
                    };
                    if rng.random_range(0..4) == 0 {
                        op.expected_version = Some(Version(rng.random_range(1..4)));
                    }
                    ops.push(op);
                }
                // Some keys are shared by writers: the first request with a
                // key commits, a retry of the same request gets its outcome,
                // another request with it is refused.
                let idempotency = (rng.random_range(0..3) == 0).then(|| IdempotencyKey {
                    key: format!("key-{}", m % 10),
                    request_hash: format!("hash-{}", rng.random_range(0..2)),
                });
                answers.push(h.store.commit(Mutation { ops, idempotency, access: protosync_store::WriteAccess::Trusted, accepted_at_ms: 0, projection: None, audit: Default::default() }).await);
            }
            answers
        }));
    }
    let mut committed = Vec::new();
    for writer in writers {
        for answer in writer.await.unwrap() {
            match answer {
                Ok(outcome) if !outcome.duplicate => committed.push(outcome.seq),
                Ok(_) | Err(StoreError::Rejected { .. } | StoreError::IdempotencyKeyReused(_)) => {}
                Err(other) => panic!("seed {seed}: unexpected failure {other:?}"),
            }
        }
    }
    committed.sort();
    let expected: Vec<Seq> = (1..=committed.len() as u64).map(Seq).collect();
    assert_eq!(
        committed, expected,
        "seed {seed}: accepted mutations have gap-free seqs"
    );
    let log = h.store.read_log(Seq(0), 10_000).await.unwrap();
    assert_eq!(
        log.iter().map(|c| c.seq).collect::<Vec<_>>(),
        expected,
        "seed {seed}: the log holds every commit once"
    );
    let mut replayed: std::collections::BTreeMap<String, (Version, Value)> = Default::default();
    let mut versions: std::collections::HashMap<String, Version> = Default::default();
    for commit in &log {
        for change in &commit.changes {
            let next = versions
                .get(&change.id)
                .map_or(Version(1), |v| Version(v.0 + 1));
            let expected = if replayed.contains_key(&change.id) || change.body.is_none() {
                next
            } else {
                Version(1)
            };
            assert_eq!(
                change.version, expected,
                "seed {seed}: {} at seq {}",
                change.id, commit.seq
            );
            versions.insert(change.id.clone(), change.version);
            match &change.body {
                Some(body) => replayed.insert(change.id.clone(), (change.version, body.clone())),
                None => replayed.remove(&change.id),
            };
        }
    }
    let stored = h
        .store
        .query(&h.query(json!({"collection": "work_items", "limit": 100})))
        .await
        .unwrap()
        .value
        .documents;
    let stored: std::collections::BTreeMap<String, (Version, Value)> = stored
        .into_iter()
        .map(|d| (d.id, (d.version, d.body)))
        .collect();
    assert_eq!(
        stored, replayed,
        "seed {seed}: the documents are the replayed log"
    );
    for owner in ["ann", "bob"] {
        for request in [
            json!({"collection": "work_items", "filter": [{"field": "ownerId", "op": "==", "value": owner}], "orderBy": [{"field": "important"}, {"field": "priority"}], "limit": 100}),
            json!({"collection": "work_items", "filter": [{"field": "ownerId", "op": "==", "value": owner}], "orderBy": [{"field": "receivedAt"}], "limit": 100}),
        ] {
            let query = h.query(request.clone());
            let page = h.store.query(&query).await.unwrap().value.documents;
            let got: Vec<&str> = page.iter().map(|d| d.id.as_str()).collect();
            let mut expected: Vec<_> = page
                .iter()
                .filter(|d| query.filter_matches(&d.body))
                .collect();
            expected.sort_by_key(|d| query.sort_key(d));
            let expected: Vec<&str> = expected.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(got, expected, "seed {seed}: {request}");
            let matching = stored
                .iter()
                .filter(|(_, (_, body))| body["ownerId"] == owner)
                .count();
            assert_eq!(
                got.len(),
                matching,
                "seed {seed}: {request} through its index finds every matching document once"
            );
        }
    }
}

/// Postgres cannot store U+0000 in JSONB; SQLite can (validation refuses
/// it, so only a write that skips validation gets here). Committed among
/// others (so it lands in a group), such a mutation fails alone: every
/// other mutation commits, and after it the store goes on committing.
async fn a_mutation_the_database_cannot_store_fails_alone(h: Harness) {
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("w{i}");
            let op = if i == 5 {
                h.op(
                    "work_items",
                    &id,
                    WriteKind::Insert(json!({"title": "nul \u{0} inside"})),
                )
            } else {
                h.insert("work_items", &id, json!({"title": format!("t{i}")}))
            };
            h.commit(vec![op]).await
        }));
    }
    let mut seqs = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(outcome) => seqs.push(outcome.seq),
            Err(StoreError::Internal(message)) if i == 5 => {
                assert!(
                    h.store
                        .get("work_items", "w5", &protosync_query::ReadScope::Everything)
                        .await
                        .unwrap()
                        .value
                        .is_none(),
                    "{message}"
                );
            }
            Err(other) => panic!("w{i}: {other:?}"),
        }
    }
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).map(Seq).collect::<Vec<_>>(),
        "gap-free, the failed one took no seq"
    );
    let next = h
        .commit(vec![h.insert("work_items", "after", json!({}))])
        .await
        .unwrap();
    assert_eq!(next.seq, Seq(seqs.len() as u64 + 1));
}

/// Completed action calls: the first record of a key wins, also when
/// another process records the same key; the record survives reopening and
/// goes with the idempotency retention.
async fn a_recorded_call_is_kept_first_wins_across_processes_and_is_pruned(h: Harness) {
    use protosync_store::CallRecord;
    let record = |hash: &str, outcome: Value| CallRecord {
        key: "k1".into(),
        request_hash: hash.into(),
        outcome,
    };
    assert_eq!(h.store.recorded_call("k1").await.unwrap(), None);
    let first = record("h1", json!({"result": {"status": "sent"}, "seq": "0"}));
    assert_eq!(h.store.record_call(first.clone()).await.unwrap(), first);
    let other = h.open_again(StoreOptions::default()).await;
    let late = record("h2", json!({"result": {"status": "other"}}));
    assert_eq!(
        other.record_call(late).await.unwrap(),
        first,
        "a second record of the key keeps and returns the first"
    );
    assert_eq!(
        other.recorded_call("k1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(h.store.recorded_call("k2").await.unwrap(), None);
    let forgetful = h
        .open_again(StoreOptions {
            idempotency_retention: Duration::ZERO,
            ..StoreOptions::default()
        })
        .await;
    // Created at least a millisecond before the prune's cutoff.
    tokio::time::sleep(Duration::from_millis(5)).await;
    forgetful.prune().await.unwrap();
    assert_eq!(h.store.recorded_call("k1").await.unwrap(), None, "pruned");
}

/// Schedule ticks: one holder at a time across processes; an unfinished
/// tick is taken over only after its lease, with the next attempt; a
/// finished one never again; only the current holder's finish counts.
async fn a_tick_has_one_holder_until_its_lease_expires_and_a_finished_tick_is_never_retaken(
    h: Harness,
) {
    use protosync_store::TickClaim;
    let other = h.open_again(StoreOptions::default()).await;
    let claim = |node: &str, now_ms: i64| TickClaim {
        action: "a.S/M".into(),
        tick_ms: 1_000,
        node: node.into(),
        now_ms,
        lease_until_ms: now_ms + 100,
    };
    assert_eq!(
        h.store.claim_tick(claim("n1", 1_000)).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        other.claim_tick(claim("n2", 1_050)).await.unwrap(),
        None,
        "leased"
    );
    assert_eq!(
        other.claim_tick(claim("n2", 1_100)).await.unwrap(),
        None,
        "the lease's last ms"
    );
    assert_eq!(
        other.claim_tick(claim("n2", 1_101)).await.unwrap(),
        Some(2),
        "taken over"
    );
    let runs = h.store.schedule_runs(10).await.unwrap();
    let [run] = &runs[..] else { panic!("{runs:?}") };
    assert_eq!(
        (run.node.as_str(), run.attempt, run.finished_at_ms),
        ("n2", 2, None)
    );
    // The first holder, late, cannot finish what it no longer holds.
    let mut stale = run.clone();
    stale.node = "n1".into();
    stale.attempt = 1;
    h.store
        .finish_tick(&stale, 1_150, "ok", None)
        .await
        .unwrap();
    assert_eq!(
        h.store.schedule_runs(10).await.unwrap()[0].finished_at_ms,
        None
    );
    other
        .finish_tick(run, 1_160, "ACTION_FAILED", Some("no"))
        .await
        .unwrap();
    let done = &h.store.schedule_runs(10).await.unwrap()[0];
    assert_eq!(
        (
            done.finished_at_ms,
            done.outcome.as_deref(),
            done.error.as_deref()
        ),
        (Some(1_160), Some("ACTION_FAILED"), Some("no"))
    );
    assert_eq!(
        h.store.claim_tick(claim("n1", 9_999)).await.unwrap(),
        None,
        "finished"
    );
}

/// Triggers: one lease holder at a time across processes (renewable by
/// itself, taken over only after it expires); only the holder moves the
/// checkpoint, never backwards; a parked change is written with its
/// checkpoint and stays until resolved.
async fn a_trigger_has_one_holder_whose_checkpoint_only_moves_forward_with_its_parked_changes(
    h: Harness,
) {
    use protosync_store::{ParkedChange, TriggerClaim};
    let other = h.open_again(StoreOptions::default()).await;
    let claim = |node: &str, now_ms: i64| TriggerClaim {
        name: "t".into(),
        node: node.into(),
        start: Seq(7),
        now_ms,
        lease_until_ms: now_ms + 100,
    };
    assert_eq!(
        h.store.claim_trigger(claim("n1", 1_000)).await.unwrap(),
        Some(Seq(7)),
        "a new trigger starts where its first claim says"
    );
    assert_eq!(
        other.claim_trigger(claim("n2", 1_100)).await.unwrap(),
        None,
        "leased until its last ms"
    );
    assert!(
        h.store
            .advance_trigger("t", "n1", Seq(9), vec![])
            .await
            .unwrap()
    );
    assert!(
        !other
            .advance_trigger("t", "n2", Seq(20), vec![])
            .await
            .unwrap(),
        "not the holder"
    );
    assert!(
        !h.store
            .advance_trigger("t", "n1", Seq(8), vec![])
            .await
            .unwrap(),
        "never backwards"
    );
    assert_eq!(
        h.store.claim_trigger(claim("n1", 1_090)).await.unwrap(),
        Some(Seq(9)),
        "renewed by its holder"
    );
    assert_eq!(
        other.claim_trigger(claim("n2", 1_191)).await.unwrap(),
        Some(Seq(9)),
        "taken over after the lease"
    );
    let parked = ParkedChange {
        name: "t".into(),
        seq: Seq(10),
        id: "d1".into(),
        attempts: 5,
        error: "HTTP 500".into(),
        parked_at_ms: 1_200,
    };
    assert!(
        !h.store
            .advance_trigger("t", "n1", Seq(10), vec![parked.clone()])
            .await
            .unwrap(),
        "the old holder lost it"
    );
    assert!(h.store.parked_changes("t", 10).await.unwrap().is_empty());
    assert!(
        other
            .advance_trigger("t", "n2", Seq(10), vec![parked.clone()])
            .await
            .unwrap()
    );
    let states = h.store.trigger_states().await.unwrap();
    let [state] = &states[..] else {
        panic!("{states:?}")
    };
    assert_eq!(
        (state.name.as_str(), state.checkpoint, state.node.as_str()),
        ("t", Seq(10), "n2")
    );
    assert_eq!(h.store.parked_changes("t", 10).await.unwrap(), vec![parked]);
    assert!(h.store.parked_changes("u", 10).await.unwrap().is_empty());
    assert!(h.store.resolve_parked("t", Seq(10), "d1").await.unwrap());
    assert!(!other.resolve_parked("t", Seq(10), "d1").await.unwrap());
    assert!(h.store.parked_changes("t", 10).await.unwrap().is_empty());
}
