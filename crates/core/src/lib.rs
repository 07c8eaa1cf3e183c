//! The words every layer of protosync shares, each defined once:
//!
//! - [`Seq`], [`Version`] and [`Watermark`]: where a commit, a document and
//!   a client's view stand in the one history of a database;
//! - [`StoredDocument`]: a document as a store holds it;
//! - [`ErrorCode`]: every error a client can see, with its HTTP status and
//!   meaning (the tables in docs/http-api.md and docs/protocol.md list
//!   exactly these);
//! - [`proto3_json`]: reading proto3 JSON values that need more than serde.
//!
//! It depends on nothing of protosync's and does no I/O.

mod document;
mod error_code;
pub mod proto3_json;
mod sequence;

pub use document::StoredDocument;
pub use error_code::{ErrorCode, Transport};
pub use sequence::{Seq, Version, Watermark};
