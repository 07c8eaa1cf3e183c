//! Positions in a database's history.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The global sequence number of a commit. Gap-free and strictly increasing:
/// a reader that has seen seq N has seen every commit at or below N. Seq 0
/// means "before the first commit".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first commit.
    pub const ZERO: Seq = Seq(0);

    /// The seq of the commit after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A document's version: 1 when created, +1 on every commit that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The seq a client's view is consistent at: it reflects every commit up to
/// this seq and none after. All subscriptions of one connection share one
/// watermark and move from one to the next together, never backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Watermark(Seq);

impl Watermark {
    /// A fresh view: nothing seen yet.
    pub const ZERO: Watermark = Watermark(Seq::ZERO);

    /// A view consistent at `seq`.
    pub fn at(seq: Seq) -> Watermark {
        Watermark(seq)
    }

    /// The last commit the view reflects.
    pub fn seq(self) -> Seq {
        self.0
    }
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
