//! Projection writes on every store: stale and unchanged writes, the
//! checkpoint moving in the same commit, ownership, and the reads behind
//! the drift check.

use std::collections::BTreeMap;
use std::sync::Arc;

use protosync_core::{Seq, Version};
use protosync_query::ReadScope;
use protosync_store::projection::content_hash;
use protosync_store::{
    CommitOutcome, Mutation, Projected, ProjectionWrite, Rejection, SourceStamp, StagedDocument,
    Store, StoreError, StoreOptions, WriteAccess, WriteKind,
};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::Harness;

/// One projected document: `None` deletes it.
type Item<'a> = (&'a str, u64, Option<Value>);

impl Harness {
    /// A projection batch of `run_summary` documents for `projector`.
    fn projection(&self, projector: &str, items: &[Item<'_>]) -> Mutation {
        let mut ops = Vec::new();
        let mut stamps = Vec::new();
        for (id, source_seq, body) in items {
            let (kind, hash) = match body {
                Some(body) => {
                    let doc = self
                        .registry
                        .collection("run_summary")
                        .unwrap()
                        .validate(id, body)
                        .unwrap();
                    let hash = content_hash(&doc);
                    (WriteKind::Upsert(doc), Some(hash))
                }
                None => (WriteKind::Delete, None),
            };
            ops.push(self.op("run_summary", id, kind));
            stamps.push(SourceStamp {
                source_seq: *source_seq,
                hash,
            });
        }
        Mutation {
            ops,
            idempotency: None,
            access: WriteAccess::Trusted,
            accepted_at_ms: 0,
            projection: Some(ProjectionWrite {
                projector: projector.into(),
                stamps,
                checkpoint: None,
                mode: protosync_store::ProjectionMode::Incremental,
            }),
            audit: Default::default(),
        }
    }

    async fn project(&self, projector: &str, items: &[Item<'_>]) -> CommitOutcome {
        self.store
            .commit(self.projection(projector, items))
            .await
            .unwrap()
    }

    async fn body(&self, id: &str) -> Option<Value> {
        self.store
            .get("run_summary", id, &ReadScope::Everything)
            .await
            .unwrap()
            .value
            .map(|d| d.body)
    }
}

/// The state a run summary has at source seq `seq` of the simulated log:
/// a function of (id, seq), as a projection of a fixed log is.
fn state(id: &str, seq: u64) -> Option<Value> {
    (!seq.is_multiple_of(5))
        .then(|| json!({"title": format!("{id} at {}", seq / 2), "eventCount": seq / 2}))
}

pub(super) async fn stale_and_unchanged_writes_leave_the_document_and_the_checkpoint_moves_with_the_commit(
    h: Harness,
) {
    let first = h
        .project(
            "runs",
            &[("r1", 5, state("r1", 5 + 1)), ("r2", 3, state("r2", 3))],
        )
        .await;
    assert_eq!(first.projected, [Projected::Applied, Projected::Applied]);
    let before = h.body("r1").await;
    let second = h
        .project(
            "runs",
            &[
                ("r1", 5, Some(json!({"title": "a retry of seq 5"}))),
                ("r2", 4, state("r2", 3)),
                ("r3", 1, None),
            ],
        )
        .await;
    assert_eq!(
        second.projected,
        [Projected::Stale, Projected::Unchanged, Projected::Applied]
    );
    assert_eq!(h.body("r1").await, before, "a stale write writes nothing");
    assert_eq!(
        second.results.iter().map(|r| r.version).collect::<Vec<_>>(),
        [Version(1), Version(1), Version(0)],
        "each document's version after the commit (0: none)"
    );
    let log = h.store.read_log(first.seq, 10).await.unwrap();
    assert_eq!(log.len(), 1, "one commit for the batch");
    assert!(
        log[0].changes.is_empty(),
        "neither the stale, the unchanged nor the deletion of nothing is a change: {:?}",
        log[0].changes
    );
    // r2 at source seq 4 was unchanged, and its stamp moved: a retry of
    // seq 4 with other content is stale now.
    let third = h
        .project(
            "runs",
            &[
                ("r2", 4, Some(json!({"title": "late"}))),
                ("r3", 1, state("r3", 1)),
            ],
        )
        .await;
    assert_eq!(third.projected, [Projected::Stale, Projected::Stale]);
    assert_eq!(
        h.body("r3").await,
        None,
        "a deletion's tombstone holds off older writes"
    );
    let checkpoint = h.store.checkpoint("runs").await.unwrap().unwrap();
    assert_eq!(
        (
            checkpoint.source_seq,
            checkpoint.documents,
            checkpoint.applied,
            checkpoint.stale,
            checkpoint.unchanged
        ),
        (5, 2, 3, 3, 1)
    );
    assert!(checkpoint.updated_at_ms > 0);
    assert_eq!(h.store.checkpoint("never").await.unwrap(), None);
}

pub(super) async fn a_document_of_another_projector_refuses_the_batch_and_writes_nothing(
    h: Harness,
) {
    h.project("runs", &[("r1", 1, state("r1", 1))]).await;
    let head = h.store.head().await.unwrap();
    let refused = h
        .store
        .commit(h.projection(
            "other",
            &[("r9", 1, state("r9", 1)), ("r1", 2, state("r1", 2))],
        ))
        .await;
    let Err(StoreError::Rejected { op, rejection, .. }) = refused else {
        panic!("expected a rejection, got {refused:?}");
    };
    assert_eq!(
        (op, rejection),
        (
            1,
            Rejection::OwnedByAnotherProjector {
                projector: "runs".into()
            }
        )
    );
    assert_eq!(h.store.head().await.unwrap(), head, "no seq taken");
    assert_eq!(h.body("r9").await, None);
    assert_eq!(h.store.checkpoint("other").await.unwrap(), None);
}

/// Batches of a random log's states, duplicated and shuffled, sent by
/// several writers through two store instances at once: whatever order
/// they commit in, each document ends at its newest source seq, every
/// write is counted once, and the checkpoint is the highest seq sent.
pub(super) async fn projection_batches_in_any_order_leave_the_newest_state_of_each_document(
    h: Harness,
) {
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ids: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
    let mut writes: Vec<(String, u64)> = Vec::new();
    for _ in 0..300 {
        let id = ids[rng.random_range(0..ids.len())].clone();
        writes.push((id, rng.random_range(1..60)));
    }
    let newest: BTreeMap<String, u64> = writes.iter().fold(BTreeMap::new(), |mut m, (id, s)| {
        let e = m.entry(id.clone()).or_insert(0);
        *e = (*e).max(*s);
        m
    });
    let h = Arc::new(h);
    let other = h.open_again(StoreOptions::default()).await;
    let mut tasks = Vec::new();
    for (writer, chunk) in writes.chunks(20).enumerate() {
        let (h, chunk) = (h.clone(), chunk.to_vec());
        let store: Arc<dyn Store> = if writer % 2 == 0 {
            h.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let items: Vec<Item<'_>> = chunk
                .iter()
                .map(|(id, s)| (id.as_str(), *s, state(id, *s)))
                .collect();
            store
                .commit(h.projection("runs", &items))
                .await
                .unwrap()
                .projected
                .len()
        }));
    }
    let mut answered = 0;
    for task in tasks {
        answered += task.await.unwrap();
    }
    assert_eq!(answered, writes.len());
    for (id, seq) in &newest {
        let expected = state(id, *seq).map(|body| {
            h.registry
                .collection("run_summary")
                .unwrap()
                .validate(id, &body)
                .unwrap()
        });
        assert_eq!(h.body(id).await, expected, "seed {seed}: {id} at {seq}");
    }
    let checkpoint = h.store.checkpoint("runs").await.unwrap().unwrap();
    assert_eq!(
        checkpoint.applied + checkpoint.stale + checkpoint.unchanged,
        writes.len() as u64,
        "seed {seed}"
    );
    assert_eq!(checkpoint.source_seq, *newest.values().max().unwrap());
    let live = newest.iter().filter(|(id, s)| state(id, **s).is_some());
    assert_eq!(checkpoint.documents, live.count() as u64, "seed {seed}");
}

pub(super) async fn projected_documents_are_read_in_key_ranges_with_the_hash_of_the_stored_body(
    h: Harness,
) {
    let items: Vec<(String, u64, Option<Value>)> = (0..7)
        .map(|i| (format!("r{i}"), i + 1, state("x", 1)))
        .collect();
    let items: Vec<Item<'_>> = items
        .iter()
        .map(|(id, s, b)| (id.as_str(), *s, b.clone()))
        .collect();
    h.project("runs", &items).await;
    h.project("runs", &[("r6", 10, None)]).await;
    h.project("others", &[("q1", 1, state("q", 1))]).await;
    // Another writer changes one projected document and deletes another.
    h.commit(vec![
        h.upsert("run_summary", "r1", json!({"title": "edited by hand"})),
        h.op("run_summary", "r2", WriteKind::Delete),
    ])
    .await
    .unwrap();
    let all = h
        .store
        .projected_documents("runs", None, None, 100)
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["r0", "r1", "r2", "r3", "r4", "r5"],
        "r6 is a tombstone"
    );
    let projected_hash = content_hash(
        &h.registry
            .collection("run_summary")
            .unwrap()
            .validate("r0", &state("x", 1).unwrap())
            .unwrap(),
    );
    assert_eq!(all[0].hash.as_deref(), Some(projected_hash.as_str()));
    assert_ne!(all[1].hash.as_deref(), Some(projected_hash.as_str()));
    assert_eq!(all[2].hash, None, "deleted by another writer");
    assert_eq!(all[3].source_seq, 4);
    let key = |id: &str| ("run_summary".to_owned(), id.to_owned());
    let range = h
        .store
        .projected_documents("runs", Some(&key("r1")), Some(&key("r4")), 100)
        .await
        .unwrap();
    let ids: Vec<&str> = range.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["r2", "r3", "r4"], "after r1, through r4");
    let limited = h
        .store
        .projected_documents("runs", Some(&key("r1")), None, 2)
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(h.store.head().await.unwrap(), Seq(4));
}

fn staged(id: &str, source_seq: u64, title: Option<&str>) -> StagedDocument {
    let body = title.map(|t| json!({"runId": id, "title": t}));
    StagedDocument {
        collection: "run_summary".into(),
        id: id.into(),
        source_seq,
        hash: body.as_ref().map(content_hash),
        body,
    }
}

pub(super) async fn a_rebuild_stages_unseen_resumes_and_takes_a_new_generation_after_it_ends(
    h: Harness,
) {
    h.project("runs", &[("r1", 9, state("r1", 9))]).await;
    let live = h.body("r1").await;
    assert_eq!(h.store.rebuild("runs", false).await.unwrap(), None);
    let started = h.store.rebuild("runs", true).await.unwrap().unwrap();
    let resumed = h.store.rebuild("runs", true).await.unwrap().unwrap();
    assert_eq!(
        started, resumed,
        "starting again resumes the one in progress"
    );
    let g = started.generation;
    let head = h.store.head().await.unwrap();
    let after = h
        .store
        .stage(
            "runs",
            g,
            vec![
                staged("r1", 3, Some("rebuilt")),
                staged("r2", 4, Some("new")),
            ],
            Some(20),
        )
        .await
        .unwrap();
    assert_eq!((after.staged, after.source_seq), (2, 20));
    // A lower source seq staged later is ignored; a higher one replaces.
    h.store
        .stage(
            "runs",
            g,
            vec![staged("r1", 2, Some("older")), staged("r2", 5, None)],
            None,
        )
        .await
        .unwrap();
    let all = h.store.staged_documents("runs", g, None, 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|d| (d.id.as_str(), d.source_seq, d.body.is_some()))
            .collect::<Vec<_>>(),
        [("r1", 3, true), ("r2", 5, false)]
    );
    let key = ("run_summary".to_owned(), "r1".to_owned());
    let rest = h
        .store
        .staged_documents("runs", g, Some(&key), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        h.store.head().await.unwrap(),
        head,
        "staging commits nothing"
    );
    assert_eq!(h.body("r1").await, live, "and nobody sees it");
    let wrong = h
        .store
        .stage("runs", g + 1, vec![staged("r9", 1, None)], None)
        .await;
    assert!(
        matches!(wrong, Err(StoreError::UnknownRebuild { .. })),
        "{wrong:?}"
    );
    h.store.abandon_rebuild("runs", g).await.unwrap();
    assert_eq!(h.store.rebuild("runs", false).await.unwrap(), None);
    assert!(matches!(
        h.store.staged_documents("runs", g, None, 10).await,
        Err(StoreError::UnknownRebuild { .. })
    ));
    let next = h.store.rebuild("runs", true).await.unwrap().unwrap();
    assert_eq!(
        (next.generation, next.staged),
        (g + 1, 0),
        "a new generation, empty"
    );
    assert_eq!(h.body("r1").await, live);
}

pub(super) async fn a_swap_commits_the_new_set_and_drops_the_staging_or_is_refused_if_the_projector_moved(
    h: Harness,
) {
    h.project(
        "runs",
        &[("r1", 9, state("r1", 9)), ("r2", 9, state("r2", 9))],
    )
    .await;
    let g = h
        .store
        .rebuild("runs", true)
        .await
        .unwrap()
        .unwrap()
        .generation;
    h.store
        .stage("runs", g, vec![staged("r1", 4, Some("rebuilt"))], None)
        .await
        .unwrap();
    let swap = |writes_seen| {
        let mut m = h.projection(
            "runs",
            &[
                ("r1", 4, Some(json!({"title": "rebuilt"}))),
                ("r2", 4, None),
            ],
        );
        if let Some(p) = &mut m.projection {
            p.mode = protosync_store::ProjectionMode::Replace {
                generation: g,
                writes_seen,
            };
            p.checkpoint = Some(4);
        }
        m
    };
    let moved = h.store.commit(swap(1)).await;
    assert!(
        matches!(moved, Err(StoreError::ProjectorMoved { .. })),
        "{moved:?}"
    );
    let done = h.store.commit(swap(2)).await.unwrap();
    assert_eq!(done.projected, [Projected::Applied, Projected::Applied]);
    let log = h.store.read_log(Seq(done.seq.0 - 1), 1).await.unwrap();
    assert_eq!(log[0].changes.len(), 2, "one commit moves the whole set");
    assert_eq!(h.body("r2").await, None);
    assert_eq!(
        h.store.rebuild("runs", false).await.unwrap(),
        None,
        "the staging went with it"
    );
    let checkpoint = h.store.checkpoint("runs").await.unwrap().unwrap();
    assert_eq!((checkpoint.source_seq, checkpoint.documents), (4, 1));
}

conformance!(
    a_rebuild_stages_unseen_resumes_and_takes_a_new_generation_after_it_ends,
    a_swap_commits_the_new_set_and_drops_the_staging_or_is_refused_if_the_projector_moved,
    stale_and_unchanged_writes_leave_the_document_and_the_checkpoint_moves_with_the_commit,
    a_document_of_another_projector_refuses_the_batch_and_writes_nothing,
    projection_batches_in_any_order_leave_the_newest_state_of_each_document,
    projected_documents_are_read_in_key_ranges_with_the_hash_of_the_stored_body,
);
