//! Limits on what one request may carry. Exceeding one is an error
//! (`LIMIT_EXCEEDED`), never a truncation. Documented in docs/http-api.md.

/// Operations in one mutation: one mutation is one transaction, and a
/// transaction holds the commit lock while it runs.
pub const MAX_OPS_PER_MUTATION: usize = 500;
pub use protosync_store::MAX_DOCUMENT_BYTES;
/// A document id, in bytes.
pub const MAX_ID_BYTES: usize = 512;
/// An idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// A request body, in bytes (enforced by the gateway before parsing).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Arrays and objects a JSON request may nest, the request's own envelope
/// included. Deeper than any document a schema describes needs (protobuf's
/// own parsers stop at 100), shallow enough that no parser recurses far.
pub const MAX_JSON_DEPTH: usize = 100;

/// Whether `json` nests arrays and objects deeper than [`MAX_JSON_DEPTH`].
/// A byte scan that skips strings, meant to run before any parser sees
/// hostile input; it does not check that `json` is valid.
pub fn json_too_deep(json: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(!json_too_deep(deep(MAX_JSON_DEPTH).as_bytes()));
        assert!(json_too_deep(deep(MAX_JSON_DEPTH + 1).as_bytes()));
        let quoted = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(!json_too_deep(quoted.as_bytes()));
        let siblings = "[".to_owned() + &"[],".repeat(1000) + "[]]";
        assert!(!json_too_deep(siblings.as_bytes()));
    }
}
