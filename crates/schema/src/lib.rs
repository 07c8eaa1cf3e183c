//! The schema registry: an app's `.proto` files are its schema.
//!
//! This crate compiles a schema directory with protox (no `protoc`), finds every
//! message marked with the `protosync.v1.collection` option, resolves its indexes
//! and keeps its access rules, and validates documents against their message
//! type, turning them into canonical proto3 JSON. It also finds the actions
//! (rpcs with the `protosync.v1.action` option) and validates their
//! arguments and results the same way.
//!
//! It owns nothing stateful and performs no I/O beyond reading the schema files.

mod action;
mod collection;
mod error;
mod evolution;
mod options;
mod registry;
mod rule_check;
mod rules;
mod server_time;
mod timestamp;
mod validate;

pub use action::{
    Action, ActionSchedule, ActionTrigger, CatchUp, DEFAULT_ACTION_TIMEOUT, MAX_ACTION_TIMEOUT,
};
pub use collection::{Collection, CollectionName, FieldPath, FieldType, IndexDef, Rules};
pub use error::{DocumentError, SchemaError};
pub use evolution::{SchemaChange, compare, compare_recorded};
pub use options::OPTIONS_PROTO;
pub use registry::Registry;
pub use rules::{DocKey, Lookup, MAX_LOOKUPS_PER_EVALUATION, Rule, RuleInput, Verdict, now_ms};
pub use server_time::{ServerTime, ServerTimeField, timestamp_text};
pub use timestamp::timestamp_form_error;
pub use validate::{Document, PatchFields};
