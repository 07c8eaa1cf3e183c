//! Document validation against a collection's message type.
//!
//! Validation walks the JSON itself first so an error can name the exact field
//! (`labels["env"]`, `steps[2].status`), then lets prost-reflect produce the
//! canonical proto3 JSON that is stored: JSON names, 64-bit integers as
//! strings, enums by name, every non-optional scalar present.

use base64::Engine as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;

use crate::collection::{Collection, default_json, find_field, is_well_known, kind_name};
use crate::error::DocumentError;
use crate::timestamp::timestamp_form_error;

/// A canonical document body (proto3 JSON object).
pub type Document = Value;

/// Nesting deeper than this is rejected rather than walked: it bounds stack use
/// on hostile input, and no real schema nests this deep.
const MAX_NESTING_DEPTH: usize = 64;

/// The validated top-level fields of a patch, ready to merge into a stored
/// document.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchFields {
    /// (JSON name, canonical value; `None` clears the field).
    set: Vec<(String, Option<Value>)>,
    /// Other members of the oneofs that the patch sets, which setting clears.
    clear: Vec<String>,
}

impl PatchFields {
    /// A canonical JSON form (for hashing what a request asks for).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "set": self.set.iter().map(|(name, value)| serde_json::json!([name, value])).collect::<Vec<_>>(),
            "clear": self.clear,
        })
    }

    /// Merges the patch into `current` (a canonical document). The result must
    /// be validated again: only the whole document shows whether it is valid.
    pub fn apply(&self, current: &Value) -> Value {
        let mut merged = current.as_object().cloned().unwrap_or_default();
        for name in &self.clear {
            merged.remove(name);
        }
        for (name, value) in &self.set {
            match value {
                Some(v) => merged.insert(name.clone(), v.clone()),
                None => merged.remove(name),
            };
        }
        Value::Object(merged)
    }
}

impl Collection {
    /// Validates a whole document and returns its canonical form. When the
    /// collection has an `id_field`, an empty one is filled with `id` and a
    /// different one is an error.
    pub fn validate(&self, id: &str, body: &Value) -> Result<Document, DocumentError> {
        let mut canonical = validate_message(&self.message, body, "a document")?;
        if let Some(id_field) = &self.id_field {
            let name = &id_field.segments()[0];
            match canonical.get(name).and_then(Value::as_str) {
                Some("") | None => {
                    if let Some(obj) = canonical.as_object_mut() {
                        obj.insert(name.clone(), Value::String(id.to_owned()));
                    }
                }
                Some(other) if other != id => {
                    return Err(DocumentError::at(
                        name,
                        format!(
                            "is the document id field and must equal the id {id:?}, not {other:?}"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(canonical)
    }

    /// Validates the fields of a patch (a partial document) and returns them
    /// in canonical form.
    pub fn validate_patch(&self, fields: &Value) -> Result<PatchFields, DocumentError> {
        let Some(object) = fields.as_object() else {
            return Err(DocumentError::at(
                "",
                format!(
                    "patch fields must be a JSON object, not {}",
                    json_type(fields)
                ),
            ));
        };
        let mut path = String::new();
        check_message(&self.message, fields, &mut path, 0)?;
        reject_nul(fields, "")?;
        let canonical = canonicalize(&self.message, fields)?;
        let mut patch = PatchFields {
            set: Vec::new(),
            clear: Vec::new(),
        };
        for key in object.keys() {
            let Some(field) = find_field(&self.message, key) else {
                continue;
            };
            let name = field.json_name().to_owned();
            if let Some(oneof) = field.containing_oneof() {
                patch.clear.extend(
                    oneof
                        .fields()
                        .filter(|f| f.number() != field.number())
                        .map(|f| f.json_name().to_owned()),
                );
            }
            patch
                .set
                .push((name.clone(), canonical.get(&name).cloned()));
        }
        Ok(patch)
    }
}

/// Validates a whole message (`what` names it in the error: "a document",
/// "arguments") and returns its canonical proto3 JSON.
pub(crate) fn validate_message(
    message: &MessageDescriptor,
    body: &Value,
    what: &str,
) -> Result<Value, DocumentError> {
    if !body.is_object() {
        return Err(DocumentError::at(
            "",
            format!("{what} must be a JSON object, not {}", json_type(body)),
        ));
    }
    check_message(message, body, &mut String::new(), 0)?;
    reject_nul(body, "")?;
    canonicalize(message, body)
}

impl Collection {
    /// The document as rules see it: field names as written in the .proto
    /// (`owner_id`, as CEL over protobuf has them), not JSON names, and
    /// every field without presence there, at its default when the stored
    /// document lacks it (it was stored before the field was added).
    pub fn with_proto_names(&self, doc: &Value) -> Value {
        proto_names(&self.message, doc)
    }
}

pub(crate) fn proto_names(message: &MessageDescriptor, value: &Value) -> Value {
    let Some(object) = value.as_object() else {
        return value.clone();
    };
    if is_well_known(message) {
        return value.clone();
    }
    let mut out = serde_json::Map::with_capacity(object.len());
    for (key, field_value) in object {
        let Some(field) = find_field(message, key) else {
            out.insert(key.clone(), field_value.clone());
            continue;
        };
        let converted = match field.kind() {
            Kind::Message(m) if field.is_map() => {
                let value_kind = m.map_entry_value_field().kind();
                match (value_kind, field_value.as_object()) {
                    (Kind::Message(inner), Some(entries)) => Value::Object(
                        entries
                            .iter()
                            .map(|(k, v)| (k.clone(), proto_names(&inner, v)))
                            .collect(),
                    ),
                    _ => field_value.clone(),
                }
            }
            Kind::Message(m) => match field_value {
                Value::Array(items) => {
                    Value::Array(items.iter().map(|v| proto_names(&m, v)).collect())
                }
                other => proto_names(&m, other),
            },
            _ => field_value.clone(),
        };
        out.insert(field.name().to_owned(), converted);
    }
    for field in message.fields() {
        if !out.contains_key(field.name())
            && let Some(default) = default_json(&field)
        {
            out.insert(field.name().to_owned(), default);
        }
    }
    Value::Object(out)
}

fn canonicalize(message: &MessageDescriptor, body: &Value) -> Result<Value, DocumentError> {
    let dynamic = DynamicMessage::deserialize_with_options(
        message.clone(),
        body,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| DocumentError::at("", e.to_string()))?;
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .map_err(|e| DocumentError::at("", e.to_string()))
}

fn check_message(
    message: &MessageDescriptor,
    value: &Value,
    path: &mut String,
    depth: usize,
) -> Result<(), DocumentError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(DocumentError::at(
            path,
            format!("nesting is deeper than {MAX_NESTING_DEPTH} levels"),
        ));
    }
    if is_well_known(message) {
        if message.full_name() == "google.protobuf.Timestamp"
            && let Some(error) = value.as_str().and_then(timestamp_form_error)
        {
            return Err(DocumentError::at(path, error));
        }
        // Timestamp, Duration, Struct, wrappers…: their JSON forms are special;
        // prost-reflect knows them.
        return DynamicMessage::deserialize(message.clone(), value)
            .map(|_| ())
            .map_err(|e| DocumentError::at(path, e.to_string()));
    }
    let Some(object) = value.as_object() else {
        return Err(DocumentError::at(
            path,
            format!(
                "expected an object ({}), got {}",
                message.full_name(),
                json_type(value)
            ),
        ));
    };
    let mut seen_oneofs: Vec<(String, String)> = Vec::new();
    for (key, field_value) in object {
        let base = path.len();
        push_field(path, key);
        let field = find_field(message, key).ok_or_else(|| {
            DocumentError::at(
                path,
                format!(
                    "unknown field (message {} has no field `{key}`)",
                    message.full_name()
                ),
            )
        })?;
        if !field_value.is_null() {
            if let Some(oneof) = field.containing_oneof() {
                if let Some((_, other)) = seen_oneofs.iter().find(|(o, _)| o == oneof.name()) {
                    return Err(DocumentError::at(
                        path,
                        format!("oneof `{}` already has `{other}` set", oneof.name()),
                    ));
                }
                seen_oneofs.push((oneof.name().to_owned(), key.clone()));
            }
            check_field(&field, field_value, path, depth)?;
        }
        path.truncate(base);
    }
    Ok(())
}

fn check_field(
    field: &FieldDescriptor,
    value: &Value,
    path: &mut String,
    depth: usize,
) -> Result<(), DocumentError> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("map fields are messages")
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let Some(object) = value.as_object() else {
            return Err(DocumentError::at(
                path,
                format!("expected an object (map), got {}", json_type(value)),
            ));
        };
        for (key, item) in object {
            let base = path.len();
            path.push_str(&format!("[{key:?}]"));
            check_map_key(&key_kind, key, path)?;
            check_single(&value_kind, item, path, depth + 1)?;
            path.truncate(base);
        }
        Ok(())
    } else if field.is_list() {
        let Some(items) = value.as_array() else {
            return Err(DocumentError::at(
                path,
                format!("expected an array, got {}", json_type(value)),
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let base = path.len();
            path.push_str(&format!("[{i}]"));
            if item.is_null() {
                return Err(DocumentError::at(
                    path,
                    "null is not allowed in a repeated field",
                ));
            }
            check_single(&field.kind(), item, path, depth + 1)?;
            path.truncate(base);
        }
        Ok(())
    } else {
        check_single(&field.kind(), value, path, depth)
    }
}

fn check_single(
    kind: &Kind,
    value: &Value,
    path: &mut String,
    depth: usize,
) -> Result<(), DocumentError> {
    let wrong = |expected: &str| {
        DocumentError::at(
            path,
            format!("expected {expected}, got {}", json_type(value)),
        )
    };
    match kind {
        Kind::Message(m) => check_message(m, value, path, depth + 1),
        Kind::Enum(e) => match value {
            Value::String(name) if e.get_value_by_name(name).is_some() => Ok(()),
            Value::String(name) => Err(DocumentError::at(
                path,
                format!(
                    "unknown value {name:?} for enum {} (known: {})",
                    e.full_name(),
                    e.values()
                        .map(|v| v.name().to_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            Value::Number(n) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(n) if e.get_value(n).is_some() => Ok(()),
                _ => Err(DocumentError::at(
                    path,
                    format!("{n} is not a value of enum {}", e.full_name()),
                )),
            },
            Value::Null if e.full_name() == "google.protobuf.NullValue" => Ok(()),
            _ => Err(wrong(&format!("a value name of enum {}", e.full_name()))),
        },
        Kind::Bool => value
            .is_boolean()
            .then_some(())
            .ok_or_else(|| wrong("a boolean")),
        Kind::String => value
            .is_string()
            .then_some(())
            .ok_or_else(|| wrong("a string")),
        Kind::Bytes => match value {
            Value::String(s) if decodes_base64(s) => Ok(()),
            Value::String(_) => Err(DocumentError::at(path, "expected base64-encoded bytes")),
            _ => Err(wrong("a base64 string")),
        },
        Kind::Float | Kind::Double => match value {
            Value::Number(n) => {
                let limit = if matches!(kind, Kind::Float) {
                    f32::MAX as f64
                } else {
                    f64::MAX
                };
                match n.as_f64() {
                    Some(x) if x.abs() <= limit => Ok(()),
                    _ => Err(DocumentError::at(
                        path,
                        format!("{n} is out of range for {}", kind_name(kind)),
                    )),
                }
            }
            Value::String(s)
                if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity")
                    || s.parse::<f64>().is_ok() =>
            {
                Ok(())
            }
            _ => Err(wrong("a number")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            check_integer(value, path, i32::MIN as i128, i32::MAX as i128, kind)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            check_integer(value, path, i64::MIN as i128, i64::MAX as i128, kind)
        }
        Kind::Uint32 | Kind::Fixed32 => check_integer(value, path, 0, u32::MAX as i128, kind),
        Kind::Uint64 | Kind::Fixed64 => check_integer(value, path, 0, u64::MAX as i128, kind),
    }
}

fn check_integer(
    value: &Value,
    path: &str,
    min: i128,
    max: i128,
    kind: &Kind,
) -> Result<(), DocumentError> {
    let parsed = protosync_core::proto3_json::integer(value);
    match parsed {
        Some(n) if (min..=max).contains(&n) => Ok(()),
        Some(n) => Err(DocumentError::at(
            path,
            format!(
                "{n} is out of range for {} ({min}..={max})",
                kind_name(kind)
            ),
        )),
        None => Err(DocumentError::at(
            path,
            format!(
                "expected an integer ({}), got {}",
                kind_name(kind),
                json_type(value)
            ),
        )),
    }
}

/// Postgres keeps documents as JSONB, which cannot hold U+0000. Every store
/// refuses it, so a document that works on SQLite works on Postgres.
fn reject_nul(value: &Value, path: &str) -> Result<(), DocumentError> {
    let refuse = |path: &str| {
        Err(DocumentError::at(
            path,
            "must not contain the character U+0000 (NUL)",
        ))
    };
    match value {
        Value::String(s) if s.contains('\0') => refuse(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| reject_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                refuse(&at)
            } else {
                reject_nul(item, &at)
            }
        }),
        _ => Ok(()),
    }
}

fn check_map_key(kind: &Kind, key: &str, path: &str) -> Result<(), DocumentError> {
    let ok = match kind {
        Kind::String => true,
        Kind::Bool => key == "true" || key == "false",
        _ => key.parse::<i128>().is_ok(),
    };
    ok.then_some(()).ok_or_else(|| {
        DocumentError::at(
            path,
            format!("map key {key:?} is not a valid {}", kind_name(kind)),
        )
    })
}

fn decodes_base64(s: &str) -> bool {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .any(|e| e.decode(s).is_ok())
}

fn push_field(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
