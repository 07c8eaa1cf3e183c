//! Limits on what one request may carry. Exceeding one is an error
//! (`LIMIT_EXCEEDED`), never a truncation. Documented in docs/http-api.md.

/// Operations in one mutation: one mutation is one transaction, and a
/// transaction holds the commit lock while it runs.
pub const MAX_OPS_PER_MUTATION: usize = 500;
pub use protosync_store::MAX_DOCUMENT_BYTES;
/// A document id, in bytes.
pub const MAX_ID_BYTES: usize = 512;
/// An idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// A request body, in bytes (enforced by the gateway before parsing).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
