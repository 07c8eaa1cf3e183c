//! The `protosync.v1.collection` message option, read from compiled descriptors.

use prost_reflect::{DynamicMessage, ExtensionDescriptor, MessageDescriptor, Value};

/// The text of `proto/protosync/v1/options.proto`, served to the compiler so a
/// schema can import it without keeping a copy.
pub const OPTIONS_PROTO: &str = include_str!("../../../proto/protosync/v1/options.proto");
pub(crate) const OPTIONS_PROTO_NAME: &str = "protosync/v1/options.proto";
pub(crate) const COLLECTION_EXTENSION: &str = "protosync.v1.collection";

/// The option as written in the schema, before any of it is checked.
#[derive(Debug, Default)]
pub(crate) struct RawCollectionOptions {
    pub name: String,
    pub indexes: Vec<RawIndex>,
    pub read: String,
    pub write: String,
    pub id_field: String,
    pub keep_history: bool,
}

#[derive(Debug)]
pub(crate) struct RawIndex {
    pub name: String,
    pub fields: Vec<String>,
}

/// Reads the collection option of `message`, if it has one.
pub(crate) fn collection_options(
    message: &MessageDescriptor,
    extension: &ExtensionDescriptor,
) -> Option<RawCollectionOptions> {
    let options = message.options();
    if !options.has_extension(extension) {
        return None;
    }
    let value = options.get_extension(extension);
    let opts = value.as_message()?;
    Some(RawCollectionOptions {
        name: string_field(opts, "name"),
        read: string_field(opts, "read"),
        write: string_field(opts, "write"),
        id_field: string_field(opts, "id_field"),
        keep_history: opts
            .get_field_by_name("keep_history")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        indexes: opts
            .get_field_by_name("indexes")
            .and_then(|v| v.as_list().map(<[Value]>::to_vec))
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_message)
            .map(|index| RawIndex {
                name: string_field(index, "name"),
                fields: index
                    .get_field_by_name("fields")
                    .and_then(|v| v.as_list().map(<[Value]>::to_vec))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
            })
            .collect(),
    })
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
