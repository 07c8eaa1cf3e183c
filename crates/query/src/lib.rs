//! The query model shared by the stores (which execute queries) and the engine
//! (which compiles them from requests and, later, matches live changes).
//!
//! - [`key`]: typed field values and their order-preserving byte encoding, the
//!   one definition of "how values compare" — index keys, filters, sort order
//!   and cursors all go through it, so an index scan and an in-memory
//!   evaluation can never disagree.
//! - [`query`]: a compiled query (filter, order, limit, cursor) and its parsing.
//! - [`cursor`]: page cursors, sealed with a key the database's processes share.
//! - [`plan`]: choosing an index or a collection scan for a query.
//! - [`execute`]: the scan loop every store drives with its own rows.

pub mod cursor;
pub mod execute;
pub mod key;
pub mod plan;
pub mod query;

pub use cursor::CursorSeal;
pub use execute::{Execution, Page, ScanRequest, ScanRow, Step};
pub use plan::Plan;
pub use query::{
    Condition, Direction, LookedUp, Op, OrderField, Query, QueryError, QueryRequest, ReadRule,
    ReadScope,
};
