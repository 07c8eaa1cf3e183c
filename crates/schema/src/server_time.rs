//! Server-time fields: `google.protobuf.Timestamp` fields marked with
//! `[(protosync.v1.field).server_time = …]`, which the server sets on every
//! write so no writer can forge them. Owns reading the option, checking
//! where it may be used, and stamping a document; never reads a clock.

use chrono::{SecondsFormat, TimeZone, Utc};
use prost_reflect::{ExtensionDescriptor, Kind, MessageDescriptor, Value as ProtoValue};
use serde_json::Value;

use crate::collection::Collection;

pub(crate) const FIELD_EXTENSION: &str = "protosync.v1.field";
const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// When the server sets a [`ServerTimeField`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTime {
    /// When the document is created; later writes keep the stored value.
    Create,
    /// On every write that leaves the document.
    Update,
}

/// A top-level Timestamp field the server sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTimeField {
    /// The field's JSON name, as stored.
    pub json_name: String,
    /// When it is set.
    pub when: ServerTime,
}

/// The server-time fields of `message`, checked: each must be a singular
/// top-level `google.protobuf.Timestamp` outside any oneof.
pub(crate) fn server_time_fields(
    message: &MessageDescriptor,
    extension: Option<&ExtensionDescriptor>,
) -> Result<Vec<ServerTimeField>, String> {
    let Some(extension) = extension else {
        return Ok(Vec::new());
    };
    let mut fields = Vec::new();
    for field in message.fields() {
        let options = field.options();
        if !options.has_extension(extension) {
            continue;
        }
        let value = options.get_extension(extension);
        let number = value
            .as_message()
            .and_then(|m| m.get_field_by_name("server_time"))
            .and_then(|v| match v.as_ref() {
                ProtoValue::EnumNumber(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(0);
        let when = match number {
            0 => continue,
            1 => ServerTime::Create,
            2 => ServerTime::Update,
            other => {
                return Err(format!(
                    "field `{}`: unknown server_time {other}",
                    field.name()
                ));
            }
        };
        let is_timestamp = matches!(field.kind(), Kind::Message(m) if m.full_name() == TIMESTAMP);
        let in_oneof = field.containing_oneof().is_some_and(|o| !o.is_synthetic());
        if !is_timestamp || field.is_list() || field.is_map() || in_oneof {
            return Err(format!(
                "field `{}`: server_time needs a singular google.protobuf.Timestamp field outside any oneof",
                field.name()
            ));
        }
        fields.push(ServerTimeField {
            json_name: field.json_name().to_owned(),
            when,
        });
    }
    Ok(fields)
}

impl Collection {
    /// Sets the server-time fields of `next`, a document a write leaves, for
    /// a write accepted at `now_ms`: update times to now; create times to
    /// now when there was no document `before`, else to the stored value.
    /// Whatever the writer sent for them is replaced.
    pub fn stamp_server_times(&self, next: &mut Value, before: Option<&Value>, now_ms: i64) {
        let Some(object) = next.as_object_mut() else {
            return;
        };
        let now = timestamp_text(now_ms);
        for field in &self.server_times {
            let kept = match (field.when, before) {
                (ServerTime::Create, Some(before)) => before.get(&field.json_name).cloned(),
                _ => Some(Value::String(now.clone())),
            };
            match kept {
                Some(value) => object.insert(field.json_name.clone(), value),
                None => object.remove(&field.json_name),
            };
        }
    }
}

/// `ms` since the epoch as canonical proto3 JSON (RFC 3339 in UTC, with 0,
/// 3, 6 or 9 fractional digits, as prost-reflect writes them).
pub fn timestamp_text(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::timestamp_text;

    #[test]
    fn timestamps_are_written_in_the_canonical_form() {
        assert_eq!(timestamp_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            timestamp_text(1_767_605_400_123),
            "2026-01-05T09:30:00.123Z"
        );
    }
}
