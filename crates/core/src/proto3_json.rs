//! proto3 JSON values that serde does not read by itself.

use serde_json::Value;

/// An integer as proto3 JSON writes it: a JSON number without a fraction,
/// or a decimal string (64-bit integers are strings in canonical proto3
/// JSON). `None` for anything else. Wide enough for every protobuf integer
/// type; the caller checks the range of its own.
pub fn integer(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                // 1e3 is an integer in JSON; 1e40 fits no protobuf type.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e38)
                    .map(|f| f as i128)
            }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::integer;
    use serde_json::json;

    #[test]
    fn numbers_and_decimal_strings_are_integers() {
        assert_eq!(integer(&json!(7)), Some(7));
        assert_eq!(
            integer(&json!("18446744073709551615")),
            Some(u64::MAX as i128)
        );
        assert_eq!(integer(&json!(-3)), Some(-3));
        assert_eq!(integer(&json!(1e3)), Some(1000));
        assert_eq!(integer(&json!(1.5)), None);
        assert_eq!(integer(&json!("1.5")), None);
        assert_eq!(integer(&json!(true)), None);
    }
}
