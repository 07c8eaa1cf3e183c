//! Documents as stored, with their version and commit sequence number.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The global sequence number of a commit. Gap-free and strictly increasing:
/// a reader that has seen seq N has seen every commit at or below N. Seq 0
/// means "before the first commit".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A document's version: 1 when created, +1 on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A document as a store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    pub id: String,
    pub version: Version,
    /// The commit that last wrote the document.
    pub seq: Seq,
    /// Canonical proto3 JSON.
    pub body: serde_json::Value,
}
