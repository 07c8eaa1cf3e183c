//! The commit stream: the one way changes reach subscribers.
//!
//! One tailer per process follows the store's change log in seq order. A
//! store's commit watch (local commits, Postgres NOTIFY, head polling) only
//! says when to read; what was committed is always read from the log, so a
//! lost wake-up delays a read and loses nothing. For each commit the tailer
//! rings the affected connections, then publishes its new tail; connections
//! read the commits themselves, from the in-memory buffer or, when they fall
//! further behind than it reaches, from the store.
//!
//! The buffer is bounded by bytes (its commits' estimated size in memory),
//! not only by count: a few commits of large documents must not hold a
//! process's memory hostage. It evicts oldest first and never has a gap.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protosync_core::Seq;
use protosync_store::{Store, StoreError};
use tokio::sync::watch;

use super::LiveCommit;
use super::bodies::SharedBodies;
use super::subscription_index::SubscriptionIndex;

/// At most this many recent commits are kept in memory for connections
/// catching up, whatever their size. Older ones are read from the store's log.
pub const COMMIT_BUFFER_COMMITS: usize = 16_384;
/// Default budget of the in-memory commit buffer, in bytes (estimated size
/// of the buffered commits in memory): room for the last 16k commits of
/// ~4 KiB documents, and a ceiling a busy node's memory can count on.
pub const DEFAULT_COMMIT_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// Commits read from the log per round trip.
const TAIL_BATCH_COMMITS: usize = 1_000;
/// Wait before retrying when the store cannot be read.
const TAIL_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The one tailer of the store's change log in this process: it reads commits in seq
/// order, keeps the recent ones in a bounded buffer for connections catching up, hands
/// each to the subscription index and publishes how far it has read.
pub struct CommitStream {
    store: Arc<dyn Store>,
    bodies: SharedBodies,
    buffer: RwLock<CommitBuffer>,
    tail: watch::Sender<Seq>,
}

/// Recent commits, contiguous in seq, within a byte budget.
struct CommitBuffer {
    commits: VecDeque<Arc<LiveCommit>>,
    bytes: usize,
    budget_bytes: usize,
}

impl CommitBuffer {
    fn push(&mut self, commit: Arc<LiveCommit>) {
        // Invariant: the buffer has no gap, so a seq's position is its
        // offset from the first one (`commits` relies on it).
        debug_assert!(
            self.commits
                .back()
                .is_none_or(|last| last.seq.next() == commit.seq),
            "commit {} pushed after {:?}",
            commit.seq,
            self.commits.back().map(|c| c.seq)
        );
        self.bytes += commit.bytes;
        self.commits.push_back(commit);
        while self.bytes > self.budget_bytes || self.commits.len() > COMMIT_BUFFER_COMMITS {
            let Some(oldest) = self.commits.pop_front() else {
                break;
            };
            self.bytes -= oldest.bytes;
        }
    }

    fn clear(&mut self) {
        self.commits.clear();
        self.bytes = 0;
    }
}

impl CommitStream {
    /// Starts tailing from the store's current head, buffering recent
    /// commits within `buffer_bytes`.
    pub async fn start(
        store: Arc<dyn Store>,
        index: Arc<SubscriptionIndex>,
        buffer_bytes: usize,
    ) -> Result<(Arc<CommitStream>, tokio::task::JoinHandle<()>), StoreError> {
        let head = store.head().await?;
        let (tail, _) = watch::channel(head);
        let stream = Arc::new(CommitStream {
            store,
            bodies: SharedBodies::default(),
            buffer: RwLock::new(CommitBuffer {
                commits: VecDeque::new(),
                bytes: 0,
                budget_bytes: buffer_bytes,
            }),
            tail,
        });
        let task = tokio::spawn(stream.clone().run(index, head));
        Ok((stream, task))
    }

    /// The document bodies the live path shares (commits and windows).
    pub fn bodies(&self) -> &SharedBodies {
        &self.bodies
    }

    /// The last seq the tailer has read and dispatched.
    pub fn tail(&self) -> watch::Receiver<Seq> {
        self.tail.subscribe()
    }

    /// The last seq the tailer has read and dispatched, right now.
    pub fn tail_now(&self) -> Seq {
        *self.tail.borrow()
    }

    async fn run(self: Arc<Self>, index: Arc<SubscriptionIndex>, mut last: Seq) {
        let mut wakeups = self.store.commits();
        loop {
            let known = *wakeups.borrow_and_update();
            while last < known {
                match self.store.read_log(last, TAIL_BATCH_COMMITS).await {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(batch) => {
                        for record in batch {
                            // Invariant: the log is read in seq order without
                            // gaps (read_log's contract); the buffer and every
                            // view's chain of transitions rely on it.
                            debug_assert_eq!(
                                record.seq,
                                last.next(),
                                "the tailer skipped a commit"
                            );
                            let commit = Arc::new(LiveCommit::from_record(record, &self.bodies));
                            index.dispatch(&commit);
                            last = commit.seq;
                            self.remember(commit);
                        }
                        // Publish only after ringing: a connection that sees
                        // tail T has had its doorbell rung for every commit ≤ T.
                        self.tail.send_replace(last);
                    }
                    Err(StoreError::LogTruncated { floor }) => {
                        tracing::warn!(%last, %floor, "the commit tailer fell behind the change log's retention; resynchronizing every connection");
                        // The buffer must stay gap-free: start it afresh.
                        self.buffer
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .clear();
                        // Ring from the first commit skipped: views then find
                        // the log gone and re-read their subscriptions.
                        index.ring_all(last.0 + 1);
                        last = floor;
                        self.tail.send_replace(last);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the change log failed; retrying");
                        tokio::time::sleep(TAIL_RETRY_DELAY).await;
                    }
                }
            }
            if wakeups.changed().await.is_err() {
                return;
            }
        }
    }

    fn remember(&self, commit: Arc<LiveCommit>) {
        self.buffer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(commit);
    }

    /// The estimated bytes and the number of commits buffered now.
    pub fn buffered(&self) -> (usize, usize) {
        let buffer = self
            .buffer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (buffer.bytes, buffer.commits.len())
    }

    /// The commits in `(after, upto]`, in seq order. `upto` must not be past
    /// the tail. Fails with `LogTruncated` when the log no longer has them.
    pub async fn commits(&self, after: Seq, upto: Seq) -> Result<Vec<Arc<LiveCommit>>, StoreError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        {
            let buffer = &self
                .buffer
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .commits;
            if let Some(first) = buffer.front()
                && first.seq <= after.next()
            {
                let start = (after.0 + 1 - first.seq.0) as usize;
                return Ok(buffer
                    .iter()
                    .skip(start)
                    .take_while(|c| c.seq <= upto)
                    .cloned()
                    .collect());
            }
        }
        let mut commits = Vec::new();
        let mut last = after;
        while last < upto {
            let batch = self.store.read_log(last, TAIL_BATCH_COMMITS).await?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                if record.seq > upto {
                    return Ok(commits);
                }
                last = record.seq;
                commits.push(Arc::new(LiveCommit::from_record(record, &self.bodies)));
            }
        }
        Ok(commits)
    }
}
