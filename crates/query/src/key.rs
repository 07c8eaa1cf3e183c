//! Typed field values and their order-preserving encoding.
//!
//! Each value encodes to bytes whose lexicographic (memcmp) order is the
//! value's order, and the encoding is prefix-free, so keys of several parts
//! concatenate and compare part by part. A descending part is the bitwise
//! complement of its ascending bytes. SQLite BLOBs and Postgres `bytea` both
//! compare with memcmp, so stores can range-scan these keys directly.

use std::cmp::Ordering;
use std::str::FromStr;

use protosync_schema::{FieldPath, FieldType};
use serde_json::Value;

/// A comparable field value. Missing fields and unset messages are `Null`,
/// which sorts before every other value.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    /// A missing field or unset message.
    Null,
    /// `false` sorts before `true`.
    Bool(bool),
    /// Signed integers and enum numbers.
    Int(i64),
    /// Unsigned integers.
    UInt(u64),
    /// `float` and `double`, by value: -0.0 equals 0.0, and NaN is one value above +∞.
    Float(f64),
    /// Strings, in byte (UTF-8) order.
    String(String),
    /// Byte strings, in byte order.
    Bytes(Vec<u8>),
    /// Timestamps and durations: seconds and nanoseconds.
    Instant {
        /// Whole seconds (since the Unix epoch, for a timestamp).
        seconds: i64,
        /// Nanoseconds within the second, 0 to 999,999,999.
        nanos: i32,
    },
}

const TAG_NULL: u8 = 0x05;
const TAG_FALSE: u8 = 0x10;
const TAG_TRUE: u8 = 0x11;
const TAG_INT: u8 = 0x20;
const TAG_UINT: u8 = 0x21;
const TAG_FLOAT: u8 = 0x30;
const TAG_INSTANT: u8 = 0x40;
const TAG_STRING: u8 = 0x50;
const TAG_BYTES: u8 = 0x51;
/// Strings end with 0x00 0x01; a 0x00 inside a string is written 0x00 0xFF.
const STRING_END: [u8; 2] = [0x00, 0x01];
const ESCAPED_ZERO: [u8; 2] = [0x00, 0xFF];

impl KeyValue {
    /// Reads a value of type `ty` from JSON: a stored canonical document's field
    /// or a value written in a filter (where 64-bit integers may be numbers or
    /// strings and enums names or numbers).
    pub fn from_json(ty: &FieldType, value: &Value) -> Result<KeyValue, String> {
        if value.is_null() {
            return Ok(KeyValue::Null);
        }
        let wrong = |what: &str| format!("expected {what}, got {value}");
        Ok(match ty {
            FieldType::Bool => KeyValue::Bool(value.as_bool().ok_or_else(|| wrong("a boolean"))?),
            FieldType::Int => KeyValue::Int(
                protosync_core::proto3_json::integer(value)
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| wrong("a signed 64-bit integer"))?,
            ),
            FieldType::UInt => KeyValue::UInt(
                protosync_core::proto3_json::integer(value)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| wrong("an unsigned 64-bit integer"))?,
            ),
            FieldType::Float => KeyValue::Float(match value {
                Value::Number(n) => n.as_f64().ok_or_else(|| wrong("a number"))?,
                Value::String(s) => match s.as_str() {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    other => other.parse().map_err(|_| wrong("a number"))?,
                },
                _ => return Err(wrong("a number")),
            }),
            FieldType::String => {
                KeyValue::String(value.as_str().ok_or_else(|| wrong("a string"))?.to_owned())
            }
            FieldType::Bytes => {
                use base64::Engine as _;
                let text = value.as_str().ok_or_else(|| wrong("base64 bytes"))?;
                let engines = [
                    base64::engine::general_purpose::STANDARD,
                    base64::engine::general_purpose::URL_SAFE,
                    base64::engine::general_purpose::STANDARD_NO_PAD,
                    base64::engine::general_purpose::URL_SAFE_NO_PAD,
                ];
                KeyValue::Bytes(
                    engines
                        .iter()
                        .find_map(|e| e.decode(text).ok())
                        .ok_or_else(|| wrong("base64 bytes"))?,
                )
            }
            FieldType::Enum(e) => {
                let number = match value {
                    Value::String(name) => e.get_value_by_name(name).map(|v| v.number()),
                    Value::Number(n) => n
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .filter(|n| e.get_value(*n).is_some()),
                    _ => None,
                };
                KeyValue::Int(i64::from(number.ok_or_else(|| {
                    wrong(&format!("a value of enum {}", e.full_name()))
                })?))
            }
            FieldType::Timestamp => {
                let text = value
                    .as_str()
                    .ok_or_else(|| wrong("an RFC 3339 timestamp"))?;
                if let Some(error) = protosync_schema::timestamp_form_error(text) {
                    return Err(error);
                }
                let t = prost_types::Timestamp::from_str(text)
                    .map_err(|_| wrong("an RFC 3339 timestamp"))?;
                KeyValue::Instant {
                    seconds: t.seconds,
                    nanos: t.nanos,
                }
            }
            FieldType::Duration => {
                let text = value
                    .as_str()
                    .ok_or_else(|| wrong("a duration such as \"1.5s\""))?;
                let d = prost_types::Duration::from_str(text)
                    .map_err(|_| wrong("a duration such as \"1.5s\""))?;
                KeyValue::Instant {
                    seconds: d.seconds,
                    nanos: d.nanos,
                }
            }
        })
    }

    /// The value of `field` in a stored canonical document. A value that does
    /// not parse (which validation prevents) reads as `Null`.
    pub fn of_field(field: &FieldPath, doc: &Value) -> KeyValue {
        KeyValue::from_json(&field.ty, field.lookup(doc)).unwrap_or(KeyValue::Null)
    }

    /// Appends the ascending encoding of the value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            KeyValue::Null => out.push(TAG_NULL),
            KeyValue::Bool(false) => out.push(TAG_FALSE),
            KeyValue::Bool(true) => out.push(TAG_TRUE),
            KeyValue::Int(n) => {
                out.push(TAG_INT);
                out.extend_from_slice(&((*n as u64) ^ (1 << 63)).to_be_bytes());
            }
            KeyValue::UInt(n) => {
                out.push(TAG_UINT);
                out.extend_from_slice(&n.to_be_bytes());
            }
            KeyValue::Float(x) => {
                out.push(TAG_FLOAT);
                // -0.0 equals 0.0 and every NaN is one NaN, sorting above +∞.
                let x = if *x == 0.0 {
                    0.0
                } else if x.is_nan() {
                    f64::NAN
                } else {
                    *x
                };
                let bits = x.to_bits();
                let ordered = if bits >> 63 == 1 {
                    !bits
                } else {
                    bits ^ (1 << 63)
                };
                out.extend_from_slice(&ordered.to_be_bytes());
            }
            KeyValue::Instant { seconds, nanos } => {
                out.push(TAG_INSTANT);
                out.extend_from_slice(&((*seconds as u64) ^ (1 << 63)).to_be_bytes());
                out.extend_from_slice(&((*nanos as u32) ^ (1 << 31)).to_be_bytes());
            }
            KeyValue::String(s) => {
                out.push(TAG_STRING);
                encode_escaped(s.as_bytes(), out);
            }
            KeyValue::Bytes(b) => {
                out.push(TAG_BYTES);
                encode_escaped(b, out);
            }
        }
    }

    /// Appends the encoding for `direction`: descending is the complement.
    pub fn encode_directed(&self, descending: bool, out: &mut Vec<u8>) {
        let start = out.len();
        self.encode(out);
        if descending {
            out[start..].iter_mut().for_each(|b| *b = !*b);
        }
    }

    /// The ascending encoding, on its own.
    pub fn encoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Compares two values of one field type in key order.
    pub fn compare(&self, other: &KeyValue) -> Ordering {
        self.encoded().cmp(&other.encoded())
    }
}

fn encode_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b == 0 {
            out.extend_from_slice(&ESCAPED_ZERO);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&STRING_END);
}

/// The encoding of a document id as the last part of a key.
pub fn encode_id(id: &str, descending: bool, out: &mut Vec<u8>) {
    KeyValue::String(id.to_owned()).encode_directed(descending, out);
}

/// The key of a document in `index`: its field values ascending, then its id.
pub fn index_key(index: &protosync_schema::IndexDef, id: &str, body: &Value) -> Vec<u8> {
    let mut key = Vec::new();
    for field in &index.fields {
        KeyValue::of_field(field, body).encode(&mut key);
    }
    encode_id(id, false, &mut key);
    key
}

/// Reads back an ascending-encoded string that starts at `bytes[0]`.
pub fn decode_string(bytes: &[u8]) -> Option<String> {
    let (&tag, mut rest) = bytes.split_first()?;
    if tag != TAG_STRING {
        return None;
    }
    let mut out = Vec::new();
    loop {
        match rest {
            [0x00, 0x01, ..] => return String::from_utf8(out).ok(),
            [0x00, 0xFF, tail @ ..] => {
                out.push(0);
                rest = tail;
            }
            [b, tail @ ..] if *b != 0 => {
                out.push(*b);
                rest = tail;
            }
            _ => return None,
        }
    }
}

/// The smallest byte string greater than every string that starts with
/// `prefix`; `None` when there is none (all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(v: &KeyValue, desc: bool) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode_directed(desc, &mut out);
        out
    }

    proptest! {
        #[test]
        fn int_encoding_preserves_order(a: i64, b: i64) {
            prop_assert_eq!(key(&KeyValue::Int(a), false).cmp(&key(&KeyValue::Int(b), false)), a.cmp(&b));
            prop_assert_eq!(key(&KeyValue::Int(a), true).cmp(&key(&KeyValue::Int(b), true)), b.cmp(&a));
        }

        #[test]
        fn float_encoding_preserves_order(a in proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::INFINITE,
                                          b in proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::INFINITE) {
            let expected = a.partial_cmp(&b).unwrap();
            prop_assert_eq!(key(&KeyValue::Float(a), false).cmp(&key(&KeyValue::Float(b), false)), expected);
        }

        #[test]
        fn string_pairs_compare_part_by_part(a1 in "\\PC{0,6}|a\u{0}b", a2 in "[a-c\u{0}]{0,3}", b1 in "\\PC{0,6}|a\u{0}", b2 in "[a-c\u{0}]{0,3}") {
            // Two-part keys compare like tuples, so concatenation is safe.
            let enc = |x: &str, y: &str, desc: bool| {
                let mut out = key(&KeyValue::String(x.into()), desc);
                out.extend(key(&KeyValue::String(y.into()), false));
                out
            };
            let tuple = (a1.as_bytes(), a2.as_bytes()).cmp(&(b1.as_bytes(), b2.as_bytes()));
            prop_assert_eq!(enc(&a1, &a2, false).cmp(&enc(&b1, &b2, false)), tuple);
            let desc_first = b1.as_bytes().cmp(a1.as_bytes()).then(a2.as_bytes().cmp(b2.as_bytes()));
            prop_assert_eq!(enc(&a1, &a2, true).cmp(&enc(&b1, &b2, true)), desc_first);
            prop_assert_eq!(decode_string(&key(&KeyValue::String(a1.clone()), false)), Some(a1));
        }

        #[test]
        fn instants_compare_by_time(s1 in -10i64..10, n1 in 0i32..1_000_000_000, s2 in -10i64..10, n2 in 0i32..1_000_000_000) {
            let a = KeyValue::Instant { seconds: s1, nanos: n1 };
            let b = KeyValue::Instant { seconds: s2, nanos: n2 };
            prop_assert_eq!(a.compare(&b), (s1, n1).cmp(&(s2, n2)));
        }
    }

    #[test]
    fn null_sorts_first_and_zeroes_are_equal() {
        assert_eq!(
            KeyValue::Null.compare(&KeyValue::Int(i64::MIN)),
            Ordering::Less
        );
        assert_eq!(
            KeyValue::Float(-0.0).compare(&KeyValue::Float(0.0)),
            Ordering::Equal
        );
        assert_eq!(
            KeyValue::Float(f64::NAN).compare(&KeyValue::Float(f64::INFINITY)),
            Ordering::Greater
        );
    }

    #[test]
    fn timestamps_with_fractions_order_by_instant_not_text() {
        let a = KeyValue::from_json(
            &FieldType::Timestamp,
            &Value::from("2024-01-01T00:00:00.500Z"),
        )
        .unwrap();
        let b = KeyValue::from_json(&FieldType::Timestamp, &Value::from("2024-01-01T00:00:01Z"))
            .unwrap();
        assert_eq!(a.compare(&b), Ordering::Less);
    }

    #[test]
    fn prefix_successor_skips_trailing_ff() {
        assert_eq!(prefix_successor(&[1, 2, 0xFF]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }
}
