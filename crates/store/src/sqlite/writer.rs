//! The writer thread: the only code with the writable connection. It takes
//! jobs off its queue in batches, commits every run of waiting mutations as
//! one group (`group_commit`), runs the other writes (index builds,
//! pruning, revocations) between them in queue order, and moves the commits
//! watch once a group is durable. It reports a mutation committed only
//! after its group's transaction has committed. It runs on its own OS
//! thread, so its blocking SQLite calls never stall the async runtime.

use std::sync::Arc;

use protosync_schema::Collection;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use super::group_commit::commit_group;
use super::{declared_indexes, retention, revocations};
use crate::{CommitOutcome, Mutation, Revocation, Seq, StoreError, StoreOptions};

/// Mutations waiting for the writer thread; senders wait when it is full,
/// which is the backpressure on writers.
pub(super) const WRITE_QUEUE_LEN: usize = 4_096;
/// Mutations folded into one SQLite transaction at most: bounds the latency
/// a mutation waits behind others in its group.
const MAX_GROUP_COMMIT: usize = 256;

/// Where a mutation's answer goes.
type Reply = oneshot::Sender<Result<CommitOutcome, StoreError>>;

/// A write that needs nothing of the writer but its connection; it sends
/// its own answer.
pub(super) type Write = Box<dyn FnOnce(&mut Connection) + Send>;

/// A write for the writer thread, with where its answer goes.
pub(super) enum Job {
    Commit(Mutation, Reply),
    SyncIndexes(
        Vec<Arc<Collection>>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Prune(oneshot::Sender<Result<Seq, StoreError>>),
    Revoke(
        String,
        Option<i64>,
        oneshot::Sender<Result<Revocation, StoreError>>,
    ),
    /// Rebuild staging: runs between groups, in queue order.
    Write(Write),
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) options: StoreOptions,
    /// The last committed seq; only this thread moves it.
    pub(super) commits: watch::Sender<Seq>,
}

impl Writer {
    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_GROUP_COMMIT {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut commits = Vec::new();
            for job in batch {
                match job {
                    Job::Commit(mutation, reply) => commits.push((mutation, reply)),
                    other => {
                        self.group_commit(std::mem::take(&mut commits));
                        self.run_other(other);
                    }
                }
            }
            self.group_commit(commits);
        }
    }

    fn group_commit(&mut self, jobs: Vec<(Mutation, Reply)>) {
        if jobs.is_empty() {
            return;
        }
        match commit_group(&mut self.conn, jobs.iter().map(|(mutation, _)| mutation)) {
            Ok((answers, head)) => {
                if let Some(head) = head {
                    // Invariant: this thread is the only writer, so each
                    // group's head is above the last one; the watch never
                    // moves back, and readers that follow it miss nothing.
                    debug_assert!(head > *self.commits.borrow());
                    self.commits.send_replace(head);
                }
                for ((_, reply), answer) in jobs.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            // A statement failed and the transaction rolled back: retried
            // alone, a mutation that cannot be written fails alone.
            Err(_) if jobs.len() > 1 => jobs
                .into_iter()
                .for_each(|job| self.group_commit(vec![job])),
            Err(e) => jobs.into_iter().for_each(|(_, reply)| {
                let _ = reply.send(Err(e.clone()));
            }),
        }
    }

    fn run_other(&mut self, job: Job) {
        match job {
            Job::SyncIndexes(collections, reply) => {
                let _ = reply.send(declared_indexes::sync_indexes(&mut self.conn, &collections));
            }
            Job::Prune(reply) => {
                let _ = reply.send(retention::prune(&mut self.conn, &self.options));
            }
            Job::Revoke(jti, keep_until_ms, reply) => {
                let _ = reply.send(revocations::revoke(&mut self.conn, &jti, keep_until_ms));
            }
            Job::Write(write) => write(&mut self.conn),
            Job::Commit(..) => unreachable!("commits are grouped"),
        }
    }
}
