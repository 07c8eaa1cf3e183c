//! Comparing two schemas by field number: what an upgrade from the schema a
//! database last ran to a new one changes, and which of those changes would
//! break stored documents. Pure: two descriptor pools in, named changes out.

use std::collections::BTreeMap;
use std::fmt;

use prost_reflect::{Cardinality, DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};

use crate::SchemaError;
use crate::options::{self, COLLECTION_EXTENSION};

/// One difference between an old and a new schema that matters to stored
/// documents. Additive changes (new fields, collections, indexes) are not
/// listed: they need nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    /// A field number now has another type: stored values no longer fit.
    FieldRetyped {
        /// The collection.
        collection: String,
        /// The field's (new) name.
        field: String,
        /// The field number.
        number: u32,
        /// The old type, as written in the schema.
        old: String,
        /// The new type.
        new: String,
    },
    /// A field number is gone: stored documents may still hold its values.
    FieldRemoved {
        /// The collection.
        collection: String,
        /// The field's old name.
        field: String,
        /// The field number.
        number: u32,
    },
    /// A field number kept its type under another name: stored documents,
    /// kept by JSON name, still hold the old name (not migrated yet).
    FieldRenamed {
        /// The collection.
        collection: String,
        /// The field number.
        number: u32,
        /// The old JSON name.
        old: String,
        /// The new JSON name.
        new: String,
    },
    /// A message now declares another collection name: its stored documents
    /// stay under the old one.
    CollectionRenamed {
        /// The message's full name.
        message: String,
        /// The old collection name.
        old: String,
        /// The new collection name.
        new: String,
    },
    /// A collection is no longer declared: its stored documents are unreachable.
    CollectionDropped {
        /// The old collection name.
        collection: String,
    },
}

impl SchemaChange {
    /// Whether the change can lose or misread stored data (refused at
    /// start-up unless `--allow-breaking`). Every kind listed is, for now:
    /// a renamed field's stored values are not yet rewritten to its new name.
    pub fn is_breaking(&self) -> bool {
        true
    }
}

impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaChange::FieldRetyped {
                collection,
                field,
                number,
                old,
                new,
            } => write!(
                f,
                "{collection}: field {field} (number {number}) changed type: {old} → {new}"
            ),
            SchemaChange::FieldRemoved {
                collection,
                field,
                number,
            } => write!(
                f,
                "{collection}: field {field} (number {number}) was removed: stored documents may still hold it (reserve the number instead)"
            ),
            SchemaChange::FieldRenamed {
                collection,
                number,
                old,
                new,
            } => write!(
                f,
                "{collection}: field number {number} renamed: {old} → {new} (stored documents keep {old}: renames are not migrated yet)"
            ),
            SchemaChange::CollectionRenamed { message, old, new } => write!(
                f,
                "message {message}: collection renamed: {old} → {new} (its stored documents stay under {old})"
            ),
            SchemaChange::CollectionDropped { collection } => write!(
                f,
                "{collection}: collection no longer declared (its stored documents become unreachable)"
            ),
        }
    }
}

/// The changes from the recorded schema (an encoded `FileDescriptorSet`,
/// [`crate::Registry::descriptor_set`]) to `new`.
pub fn compare_recorded(
    recorded: &[u8],
    new: &DescriptorPool,
) -> Result<Vec<SchemaChange>, SchemaError> {
    let old = DescriptorPool::decode(recorded).map_err(|e| SchemaError::Recorded {
        reason: e.to_string(),
    })?;
    Ok(compare(&old, new))
}

/// The changes from `old` to `new`, by collection then field number.
/// Collections are matched by name, then by message name (a renamed
/// collection); fields by number at the top level of the document.
pub fn compare(old: &DescriptorPool, new: &DescriptorPool) -> Vec<SchemaChange> {
    let old_collections = collections(old);
    let new_collections = collections(new);
    let mut changes = Vec::new();
    for (name, old_message) in &old_collections {
        if let Some(new_message) = new_collections.get(name) {
            compare_fields(name, old_message, new_message, &mut changes);
            continue;
        }
        let renamed = new_collections
            .iter()
            .find(|(_, m)| m.full_name() == old_message.full_name());
        changes.push(match renamed {
            Some((new_name, _)) => SchemaChange::CollectionRenamed {
                message: old_message.full_name().to_owned(),
                old: name.clone(),
                new: new_name.clone(),
            },
            None => SchemaChange::CollectionDropped {
                collection: name.clone(),
            },
        });
    }
    changes
}

fn compare_fields(
    collection: &str,
    old: &MessageDescriptor,
    new: &MessageDescriptor,
    changes: &mut Vec<SchemaChange>,
) {
    for old_field in old.fields() {
        let number = old_field.number();
        let Some(new_field) = new.get_field(number) else {
            changes.push(SchemaChange::FieldRemoved {
                collection: collection.to_owned(),
                field: old_field.json_name().to_owned(),
                number,
            });
            continue;
        };
        let (old_type, new_type) = (type_text(&old_field), type_text(&new_field));
        if old_type != new_type {
            changes.push(SchemaChange::FieldRetyped {
                collection: collection.to_owned(),
                field: new_field.json_name().to_owned(),
                number,
                old: old_type,
                new: new_type,
            });
        } else if old_field.json_name() != new_field.json_name() {
            changes.push(SchemaChange::FieldRenamed {
                collection: collection.to_owned(),
                number,
                old: old_field.json_name().to_owned(),
                new: new_field.json_name().to_owned(),
            });
        }
    }
}

/// The collections of `pool`, by collection name.
fn collections(pool: &DescriptorPool) -> BTreeMap<String, MessageDescriptor> {
    let Some(extension) = pool.get_extension_by_name(COLLECTION_EXTENSION) else {
        return BTreeMap::new();
    };
    pool.all_messages()
        .filter_map(|m| Some((options::collection_options(&m, &extension)?.name, m)))
        .collect()
}

/// A field's type as the schema writes it (`repeated string`,
/// `map<string, int64>`, `example.v1.Status`): equal texts store alike.
fn type_text(field: &FieldDescriptor) -> String {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let key = entry.map_entry_key_field();
        let value = entry.map_entry_value_field();
        return format!(
            "map<{}, {}>",
            kind_text(&key.kind()),
            kind_text(&value.kind())
        );
    }
    let kind = kind_text(&field.kind());
    if field.cardinality() == Cardinality::Repeated {
        format!("repeated {kind}")
    } else {
        kind
    }
}

fn kind_text(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    fn schema(body: &str) -> DescriptorPool {
        let text = format!(
            "syntax = \"proto3\";\npackage t.v1;\nimport \"protosync/v1/options.proto\";\n{body}"
        );
        Registry::from_sources(&[("t.proto", &text)])
            .unwrap()
            .descriptor_pool()
            .clone()
    }

    const NOTE: &str = r#"message Note { option (protosync.v1.collection) = { name: "notes" };
        string id = 1; string body = 2; int64 rank = 3; }"#;

    #[test]
    fn an_unchanged_schema_and_additive_changes_list_nothing() {
        assert_eq!(compare(&schema(NOTE), &schema(NOTE)), []);
        let added = r#"message Note { option (protosync.v1.collection) = { name: "notes",
              indexes: { name: "by_rank", fields: ["rank"] } };
            string id = 1; string body = 2; int64 rank = 3; bool done = 4; }
            message Tag { option (protosync.v1.collection) = { name: "tags" }; string id = 1; }"#;
        assert_eq!(compare(&schema(NOTE), &schema(added)), []);
    }

    #[test]
    fn a_number_reused_with_another_type_is_breaking() {
        let retyped = r#"message Note { option (protosync.v1.collection) = { name: "notes" };
            string id = 1; string body = 2; repeated string rank = 3; }"#;
        let changes = compare(&schema(NOTE), &schema(retyped));
        assert_eq!(
            changes,
            [SchemaChange::FieldRetyped {
                collection: "notes".into(),
                field: "rank".into(),
                number: 3,
                old: "int64".into(),
                new: "repeated string".into(),
            }]
        );
        assert!(changes[0].is_breaking());
        assert!(changes[0].to_string().contains("int64 → repeated string"));
    }

    #[test]
    fn a_removed_number_is_breaking() {
        let removed = r#"message Note { option (protosync.v1.collection) = { name: "notes" };
            string id = 1; string body = 2; }"#;
        let changes = compare(&schema(NOTE), &schema(removed));
        assert_eq!(
            changes,
            [SchemaChange::FieldRemoved {
                collection: "notes".into(),
                field: "rank".into(),
                number: 3,
            }]
        );
        assert!(changes[0].is_breaking());
    }

    #[test]
    fn a_renamed_field_with_its_number_and_type_is_named() {
        let renamed = r#"message Note { option (protosync.v1.collection) = { name: "notes" };
            string id = 1; string text = 2; int64 rank = 3; }"#;
        let changes = compare(&schema(NOTE), &schema(renamed));
        assert_eq!(
            changes,
            [SchemaChange::FieldRenamed {
                collection: "notes".into(),
                number: 2,
                old: "body".into(),
                new: "text".into(),
            }]
        );
        assert!(
            changes[0].is_breaking(),
            "until stored documents are rewritten"
        );
    }

    #[test]
    fn a_renamed_or_dropped_collection_is_breaking() {
        let renamed = NOTE.replace("\"notes\"", "\"memos\"");
        let changes = compare(&schema(NOTE), &schema(&renamed));
        assert_eq!(
            changes,
            [SchemaChange::CollectionRenamed {
                message: "t.v1.Note".into(),
                old: "notes".into(),
                new: "memos".into(),
            }]
        );
        assert!(changes[0].is_breaking());
        let dropped = "message Note { string id = 1; }";
        assert_eq!(
            compare(&schema(NOTE), &schema(dropped)),
            [SchemaChange::CollectionDropped {
                collection: "notes".into()
            }]
        );
    }
}
