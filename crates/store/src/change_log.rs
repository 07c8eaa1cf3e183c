//! Reading the change log, the part both stores share: the floor check and
//! the stitching of change rows into [`CommitRecord`]s.
//!
//! A store reads, in one snapshot, the log floor, the commit rows after a
//! seq and then their change rows in `(seq, ord)` order, and hands them
//! here. This module never touches a database and never decides what a
//! commit contains; it only puts the rows back together.

use crate::{Change, CommitRecord, Seq, StoreError};

/// Fails with [`StoreError::LogTruncated`] when a log read after `after`
/// would start below `floor`, where pruned commits are gone.
pub(crate) fn check_reaches(after: Seq, floor: Seq) -> Result<(), StoreError> {
    if after < floor {
        return Err(StoreError::LogTruncated { floor });
    }
    Ok(())
}

/// Commits read from the log, filled with their changes row by row.
pub(crate) struct LogAssembly {
    commits: Vec<CommitRecord>,
    /// The commit the last change row went to: rows come in seq order.
    at: usize,
}

impl LogAssembly {
    /// Starts from the commit rows read after `after`, in seq order and
    /// still without changes.
    pub(crate) fn new(after: Seq, commits: Vec<CommitRecord>) -> LogAssembly {
        // Invariant: above its floor the log is gap-free, so the commits
        // after `after` are after+1, after+2, … The commit stream indexes
        // its buffer by seq and a resume replays from here: a gap would be
        // a commit some subscriber silently never sees. (Checked in debug
        // builds only: the rows come from the database, and a release build
        // passes them on as it always has rather than stop the process.)
        debug_assert!(
            is_contiguous_after(after, &commits),
            "the change log after seq {after} is not gap-free: {:?}",
            commits.iter().map(|c| c.seq).collect::<Vec<_>>()
        );
        LogAssembly { commits, at: 0 }
    }

    /// The last commit read, which bounds the change rows to read; `None`
    /// when there is none and the read is done.
    pub(crate) fn last(&self) -> Option<Seq> {
        self.commits.last().map(|c| c.seq)
    }

    /// Adds the next change row. Rows must come in `(seq, ord)` order and
    /// belong to the commits read, that is, at most [`LogAssembly::last`].
    pub(crate) fn push(&mut self, seq: Seq, change: Change) {
        while self.commits[self.at].seq < seq {
            self.at += 1;
        }
        // Invariant: change rows come in seq order and each has its commit
        // row (a commit writes both in one transaction; pruning drops both
        // up to the same seq), so each lands on exactly its own commit.
        debug_assert_eq!(
            self.commits[self.at].seq, seq,
            "a change row at seq {seq} is out of order or has no commit row"
        );
        self.commits[self.at].changes.push(change);
    }

    pub(crate) fn finish(self) -> Vec<CommitRecord> {
        self.commits
    }
}

/// True when `commits` are after+1, after+2, … with no gap.
fn is_contiguous_after(after: Seq, commits: &[CommitRecord]) -> bool {
    commits
        .iter()
        .zip(1..)
        .all(|(commit, offset)| commit.seq == Seq(after.0 + offset))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Version;

    fn commit(seq: u64) -> CommitRecord {
        CommitRecord {
            seq: Seq(seq),
            committed_at_ms: 0,
            audit: crate::Audit::default(),
            changes: Vec::new(),
        }
    }

    fn change(id: &str) -> Change {
        Change {
            collection: "tasks".into(),
            id: id.into(),
            version: Version(1),
            body: Some(json!({ "id": id })),
        }
    }

    #[test]
    fn change_rows_go_to_their_commits_in_order_and_commits_without_changes_stay_empty() {
        let mut log = LogAssembly::new(Seq(4), vec![commit(5), commit(6), commit(7)]);
        assert_eq!(log.last(), Some(Seq(7)));
        log.push(Seq(5), change("a"));
        log.push(Seq(5), change("b"));
        log.push(Seq(7), change("c"));
        let commits = log.finish();
        let ids = |c: &CommitRecord| c.changes.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&commits[0]), ["a", "b"]);
        assert!(commits[1].changes.is_empty());
        assert_eq!(ids(&commits[2]), ["c"]);
    }

    #[test]
    fn an_empty_read_has_no_last_commit() {
        let log = LogAssembly::new(Seq(9), Vec::new());
        assert_eq!(log.last(), None);
        assert!(log.finish().is_empty());
    }

    #[test]
    fn a_read_from_below_the_floor_is_refused_and_from_the_floor_allowed() {
        assert!(matches!(
            check_reaches(Seq(2), Seq(3)),
            Err(StoreError::LogTruncated { floor: Seq(3) })
        ));
        assert!(check_reaches(Seq(3), Seq(3)).is_ok());
    }

    #[test]
    fn contiguity_is_judged_from_the_seq_after_the_read_start() {
        assert!(is_contiguous_after(Seq(4), &[commit(5), commit(6)]));
        assert!(!is_contiguous_after(Seq(4), &[commit(6)]));
        assert!(!is_contiguous_after(Seq(4), &[commit(5), commit(7)]));
        assert!(!is_contiguous_after(Seq(4), &[commit(5), commit(5)]));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not gap-free")]
    fn a_gap_in_the_commits_read_is_caught_in_debug_builds() {
        LogAssembly::new(Seq(0), vec![commit(1), commit(3)]);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "out of order")]
    fn change_rows_out_of_seq_order_are_caught_in_debug_builds() {
        let mut log = LogAssembly::new(Seq(0), vec![commit(1), commit(2)]);
        log.push(Seq(2), change("a"));
        log.push(Seq(1), change("b"));
    }
}
