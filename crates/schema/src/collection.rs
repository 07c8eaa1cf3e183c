//! A collection as declared in the schema: its message type, indexes, rules.

use std::fmt;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

/// A collection's name, as used in the API (`work_items`).
pub type CollectionName = str;

/// One collection of the schema.
#[derive(Debug, Clone)]
pub struct Collection {
    /// Its name in the API: lower case letters, digits and `_`, at most 63 characters.
    pub name: String,
    /// The proto message type of its documents.
    pub message: MessageDescriptor,
    /// Its declared secondary indexes, in declaration order.
    pub indexes: Vec<IndexDef>,
    /// Its read and write rules.
    pub rules: Rules,
    /// The string field that mirrors the document id, if the schema names one.
    pub id_field: Option<FieldPath>,
    /// The Timestamp fields the server sets on writes, in field order.
    pub server_times: Vec<crate::ServerTimeField>,
    /// Every version of its documents is kept (`keep_history`), with the
    /// seq and actor that wrote it, and never pruned.
    pub keep_history: bool,
}

/// The access rules of a collection, compiled at schema load. `None` denies
/// end users (services are not bound by rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Which documents an end user may see (`auth`, `doc`).
    pub read: Option<crate::Rule>,
    /// Which writes an end user may make (`auth`, `doc` after, `prev` before).
    pub write: Option<crate::Rule>,
}

/// A declared secondary index: fields in key order. The document id is the
/// implicit last key part, so every index key is unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// The index's name, unique in its collection (lower case letters, digits and `_`).
    pub name: String,
    /// The indexed fields, in key order.
    pub fields: Vec<FieldPath>,
}

impl IndexDef {
    /// A stable text of the definition; when it changes, the index is rebuilt.
    pub fn fingerprint(&self) -> String {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("{}:{}", f, f.ty.fingerprint()))
            .collect();
        format!("v1|{}|{}", self.name, fields.join(","))
    }
}

/// The type of a field that can be compared, ordered and indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// bool.
    Bool,
    /// int32, int64, sint*, sfixed*.
    Int,
    /// uint32, uint64, fixed*.
    UInt,
    /// float, double.
    Float,
    /// string, compared by UTF-8 bytes.
    String,
    /// bytes (base64 in JSON), compared by bytes.
    Bytes,
    /// Compared by the value's number, so declaration order is sort order.
    Enum(EnumDescriptor),
    /// google.protobuf.Timestamp, compared by time.
    Timestamp,
    /// google.protobuf.Duration, compared by length.
    Duration,
}

impl FieldType {
    /// Changes whenever index keys of this type would change: for enums,
    /// the type and its numbering (keys hold enum numbers).
    fn fingerprint(&self) -> String {
        match self {
            FieldType::Enum(e) => {
                let values: Vec<String> = e
                    .values()
                    .map(|v| format!("{}={}", v.name(), v.number()))
                    .collect();
                format!("enum {}({})", e.full_name(), values.join(","))
            }
            other => other.tag().to_owned(),
        }
    }

    fn tag(&self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::UInt => "uint",
            FieldType::Float => "float",
            FieldType::String => "string",
            FieldType::Bytes => "bytes",
            FieldType::Enum(_) => "enum",
            FieldType::Timestamp => "timestamp",
            FieldType::Duration => "duration",
        }
    }
}

/// A path to a comparable field inside a document, by JSON names
/// (`priority`, `owner.id`), with the field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<String>,
    /// The type of the field at the end of the path.
    pub ty: FieldType,
    /// What the field reads as when a document lacks it: its proto3
    /// default when it has no presence (a document stored before the field
    /// was added), else `Null`.
    absent: Value,
}

impl FieldPath {
    /// Resolves a dotted path of proto or JSON field names against `message`.
    /// Every segment but the last must be a singular message field; the last
    /// must be a comparable scalar.
    pub fn resolve(message: &MessageDescriptor, path: &str) -> Result<FieldPath, String> {
        let mut current = message.clone();
        let mut segments = Vec::new();
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let field = find_field(&current, part)
                .ok_or_else(|| format!("unknown field `{part}` in {}", current.full_name()))?;
            segments.push(field.json_name().to_owned());
            let shown = segments.join(".");
            if field.is_list() || field.is_map() {
                return Err(format!(
                    "`{shown}` is a repeated or map field; only singular fields can be compared"
                ));
            }
            let last = i + 1 == parts.len();
            match (field.kind(), last) {
                (Kind::Message(m), false) if !is_well_known(&m) => current = m,
                (_, false) => {
                    return Err(format!(
                        "`{shown}` is not a message, so it has no field `{}`",
                        parts[i + 1]
                    ));
                }
                (kind, true) => {
                    let ty = comparable_type(&kind).ok_or_else(|| {
                        format!(
                            "`{shown}` has type {} which cannot be compared; use one of its fields",
                            kind_name(&kind)
                        )
                    })?;
                    let absent = default_json(&field).unwrap_or(Value::Null);
                    return Ok(FieldPath {
                        segments,
                        ty,
                        absent,
                    });
                }
            }
        }
        Err("empty field path".to_owned())
    }

    /// The field's value in a canonical document. Absent, it reads as its
    /// proto3 default when it has no presence (as protobuf reads it); a
    /// field with presence (`optional`, a oneof member, a Timestamp), or
    /// one inside an absent message, reads as `Null`.
    pub fn lookup<'a>(&'a self, doc: &'a Value) -> &'a Value {
        let mut current = doc;
        for (i, segment) in self.segments.iter().enumerate() {
            match current.get(segment) {
                Some(v) => current = v,
                None if i + 1 == self.segments.len() => return &self.absent,
                None => return &Value::Null,
            }
        }
        current
    }

    /// The path's field names (JSON names), outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

/// The proto3 default of a field without presence, as canonical proto3 JSON
/// writes it; `None` for a field with presence (a message, `optional`, a
/// oneof member), which is absent when unset.
pub(crate) fn default_json(field: &FieldDescriptor) -> Option<Value> {
    if field.is_map() {
        return Some(Value::Object(serde_json::Map::new()));
    }
    if field.is_list() {
        return Some(Value::Array(Vec::new()));
    }
    if field.supports_presence() {
        return None;
    }
    Some(match field.kind() {
        Kind::Bool => Value::Bool(false),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
            Value::from(0)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            Value::String("0".to_owned())
        }
        Kind::Float | Kind::Double => Value::from(0.0),
        Kind::String | Kind::Bytes => Value::String(String::new()),
        Kind::Enum(e) => match e.get_value(0) {
            Some(zero) => Value::String(zero.name().to_owned()),
            None => Value::from(0),
        },
        Kind::Message(_) => return None,
    })
}

pub(crate) fn find_field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_json_name(name)
        .or_else(|| message.get_field_by_name(name))
}

pub(crate) fn is_well_known(message: &MessageDescriptor) -> bool {
    message.full_name().starts_with("google.protobuf.")
}

fn comparable_type(kind: &Kind) -> Option<FieldType> {
    Some(match kind {
        Kind::Bool => FieldType::Bool,
        Kind::Int32
        | Kind::Int64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Sfixed32
        | Kind::Sfixed64 => FieldType::Int,
        Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => FieldType::UInt,
        Kind::Float | Kind::Double => FieldType::Float,
        Kind::String => FieldType::String,
        Kind::Bytes => FieldType::Bytes,
        Kind::Enum(e) => FieldType::Enum(e.clone()),
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => FieldType::Timestamp,
        Kind::Message(m) if m.full_name() == "google.protobuf.Duration" => FieldType::Duration,
        Kind::Message(_) => return None,
    })
}

pub(crate) fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}").to_lowercase(),
    }
}
