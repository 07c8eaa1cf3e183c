//! The text of a `google.protobuf.Timestamp` as protosync accepts it: the
//! proto3 JSON form exactly (RFC 3339 with an upper-case `T` and `Z` or an
//! offset, at most nine fractional digits). The parsers behind it would
//! otherwise drop digits past the ninth in silence; a lower-case `t` or `z`,
//! valid in RFC 3339 but not in proto3 JSON, gets an error that says so.

/// Why `text` is not a timestamp protosync accepts, if it is not; the
/// parser still checks the rest (the date, the clock, the offset).
pub fn timestamp_form_error(text: &str) -> Option<String> {
    if text.contains(['t', 'z']) {
        return Some(format!(
            "{text:?}: write timestamps with an upper-case `T` and `Z` (proto3 JSON), e.g. 2026-01-05T09:30:00Z"
        ));
    }
    let fraction = text
        .split_once('.')
        .map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    (fraction > 9).then(|| {
        format!(
            "{text:?}: a timestamp has at most 9 fractional digits (nanoseconds), not {fraction}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::timestamp_form_error;

    #[test]
    fn only_the_proto3_json_form_is_accepted() {
        assert_eq!(timestamp_form_error("2026-01-05T09:30:00.123456789Z"), None);
        assert_eq!(timestamp_form_error("2026-01-05T09:30:00+02:00"), None);
        assert!(timestamp_form_error("2026-01-05T09:30:00.1234567891Z").is_some());
        assert!(timestamp_form_error("2026-01-05t09:30:00Z").is_some());
        assert!(timestamp_form_error("2026-01-05T09:30:00z").is_some());
    }
}
