//! Documents as stored.

use crate::{Seq, Version};

/// A document as a store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    /// Unique in its collection.
    pub id: String,
    /// 1 when created, +1 per commit that wrote it.
    pub version: Version,
    /// The commit that last wrote the document.
    pub seq: Seq,
    /// Canonical proto3 JSON.
    pub body: serde_json::Value,
}
