//! Typed client code from a schema registry.
//!
//! This crate owns one job: turn a [`Registry`](protosync_schema::Registry)
//! (the app's compiled `.proto` schema) into TypeScript source text for the
//! `protosync` npm package. It reads descriptors only; it performs no I/O (the
//! CLI writes the files) and never looks at data.
//!
//! The output is deterministic: the same schema gives byte-identical text,
//! with a header naming the schema fingerprint, so a checked-in copy can be
//! compared in CI (`protosync codegen ts --check`).
//!
//! Types follow the proto3 JSON mapping exactly, as the server reads and
//! writes documents (see `docs/http-api.md`):
//!
//! | proto | read type (documents from the server) | input type (writes, filters) |
//! |---|---|---|
//! | `int64`, `uint64`, `sint64`, `fixed64`, `sfixed64` | `string` | `string \| number` |
//! | other integers | `number` | `number` |
//! | `float`, `double` | `number \| "NaN" \| "Infinity" \| "-Infinity"` | same |
//! | `bool`, `string` | `boolean`, `string` | same |
//! | `bytes` | `string` (base64) | same |
//! | enum | union of its value names | same |
//! | `google.protobuf.Timestamp` | `string` (RFC 3339) | same |
//! | `google.protobuf.Duration` | `string` (`"1.5s"`) | same |
//! | wrappers (`Int64Value`, …) | the wrapped type | same |
//! | `Struct`, `Value`, `ListValue` | `JsonObject`, `JsonValue`, `JsonValue[]` | same |
//! | `map<K, V>` | `{ [key: string]: V }` | same |
//! | `repeated T` | `T[]` | same |
//! | message, `optional`, oneof member | `?` (absent when unset) | `?`, or `null` to clear |
//! | plain scalar, repeated, map | always present (defaults included) | optional |
//!
//! A oneof becomes a union of objects in which at most one member is set.

mod typescript;

pub use typescript::{GENERATED_FILE_NAME, typescript};

/// What can stop generation: names in the schema that cannot become distinct
/// TypeScript identifiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodegenError {
    /// Two collections map to the same `api` key (`work_items` and `workItems`).
    #[error("collections {first:?} and {second:?} both become `api.{key}`")]
    CollectionKeyClash {
        /// The camelCase key both names map to.
        key: String,
        /// The first collection's name.
        first: String,
        /// The second collection's name.
        second: String,
    },
    /// A collection's camelCase name is a JavaScript reserved word or a name the file exports.
    #[error(
        "collection {collection:?} becomes `{key}`, which is reserved in the generated file; rename the collection"
    )]
    CollectionKeyReserved {
        /// The collection's name in the schema.
        collection: String,
        /// The camelCase key.
        key: String,
    },
    /// A service's api key is a reserved word, a collection's key, or another service's.
    #[error(
        "service {service:?} becomes `api.{key}`, which is taken or reserved in the generated file; rename the service"
    )]
    ServiceKeyTaken {
        /// The service's full name.
        service: String,
        /// The lower-camel-cased key.
        key: String,
    },
    /// Two generated names are the same (a message `WorkItemsTypes` and the types of `work_items`).
    #[error("the generated name `{name}` is both {first} and {second}; rename one of them")]
    NameClash {
        /// The TypeScript name.
        name: String,
        /// What first had it.
        first: String,
        /// What had it again.
        second: String,
    },
    /// An index's method name would shadow a method every collection has.
    #[error(
        "collection {collection:?}: index {index:?} becomes `{method}`, which is a built-in method; rename the index"
    )]
    IndexNameReserved {
        /// The collection.
        collection: String,
        /// The index name in the schema.
        index: String,
        /// The camelCase method name.
        method: String,
    },
}
