//! The committer: the one task per process that takes waiting mutations
//! off the queue, gathers them into groups, has each group committed in
//! one transaction (`group_commit`) and answers every mutation only after
//! that transaction is durable. It never reads or writes a row itself and
//! never tells a mutation it committed before its group's COMMIT has
//! returned.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, watch};

use super::group_commit::{GroupFailure, GroupResult, commit_group};
use super::wakeups::raise;
use crate::{CommitOutcome, Mutation, Seq, StoreError};

/// Mutations waiting for the committer; senders wait when it is full,
/// which is the backpressure on writers.
pub(super) const COMMIT_QUEUE_LEN: usize = 4_096;
/// Mutations folded into one transaction at most: bounds the latency a
/// mutation waits behind others in its group.
const MAX_GROUP_COMMIT: usize = 256;

/// How long a group waits to fill up to the previous group's size. A lone
/// writer never waits (its groups have one mutation).
const GROUP_LINGER: Duration = Duration::from_millis(1);
/// Where a mutation's answer goes.
type Reply = oneshot::Sender<Result<CommitOutcome, StoreError>>;
/// A mutation waiting for the committer, and where its answer goes.
pub(super) type Job = (Mutation, Reply);

/// Commits waiting mutations in groups. A group starts once the one before
/// it is committing: its begin, lock request and reads overlap that commit
/// (they queue on the counter row). It takes what is waiting, and waits up
/// to [`GROUP_LINGER`] for as many mutations as the group before had: the
/// writers answered by one commit come back together, and a group that
/// left without them would cost a whole transaction for one mutation.
pub(super) async fn commit_groups(
    pool: Pool,
    mut jobs: mpsc::Receiver<Job>,
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
    group: Vec<Job>,
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
