//! The commit stream: the one way changes reach subscribers.
//!
//! One tailer per process follows the store's change log in seq order. A
//! store's commit watch (local commits, Postgres NOTIFY, head polling) only
//! says when to read; what was committed is always read from the log, so a
//! lost wake-up delays a read and loses nothing. For each commit the tailer
//! rings the affected connections, then publishes its new tail; connections
//! read the commits themselves, from the in-memory buffer or, when they fall
//! further behind than it reaches, from the store.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protosync_store::{Seq, Store, StoreError};
use tokio::sync::watch;

use super::LiveCommit;
use super::index::SubscriptionIndex;

/// Recent commits kept in memory for connections catching up. Older ones are
/// read from the store's log.
pub const COMMIT_BUFFER_COMMITS: usize = 16_384;
/// Commits read from the log per round trip.
const TAIL_BATCH_COMMITS: usize = 1_000;
/// Wait before retrying when the store cannot be read.
const TAIL_RETRY_DELAY: Duration = Duration::from_millis(200);

pub struct CommitStream {
    store: Arc<dyn Store>,
    buffer: RwLock<VecDeque<Arc<LiveCommit>>>,
    tail: watch::Sender<Seq>,
}

impl CommitStream {
    /// Starts tailing from the store's current head.
    pub async fn start(
        store: Arc<dyn Store>,
        index: Arc<SubscriptionIndex>,
    ) -> Result<(Arc<CommitStream>, tokio::task::JoinHandle<()>), StoreError> {
        let head = store.head().await?;
        let (tail, _) = watch::channel(head);
        let stream = Arc::new(CommitStream {
            store,
            buffer: RwLock::new(VecDeque::new()),
            tail,
        });
        let task = tokio::spawn(stream.clone().run(index, head));
        Ok((stream, task))
    }

    /// The last seq the tailer has read and dispatched.
    pub fn tail(&self) -> watch::Receiver<Seq> {
        self.tail.subscribe()
    }

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
                            let commit = Arc::new(LiveCommit::from(record));
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
                            .unwrap_or_else(|p| p.into_inner())
                            .clear();
                        // Ring from the first commit skipped: sessions then find
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
        let mut buffer = self.buffer.write().unwrap_or_else(|p| p.into_inner());
        if buffer.len() == COMMIT_BUFFER_COMMITS {
            buffer.pop_front();
        }
        buffer.push_back(commit);
    }

    /// The commits in `(after, upto]`, in seq order. `upto` must not be past
    /// the tail. Fails with `LogTruncated` when the log no longer has them.
    pub async fn commits(&self, after: Seq, upto: Seq) -> Result<Vec<Arc<LiveCommit>>, StoreError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        {
            let buffer = self.buffer.read().unwrap_or_else(|p| p.into_inner());
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
                commits.push(Arc::new(LiveCommit::from(record)));
            }
        }
        Ok(commits)
    }
}
