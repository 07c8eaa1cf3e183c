//! The signature of a forwarded call (docs/actions.md, "Signing"):
//!
//! ```text
//! protosync-timestamp: <unix seconds>
//! protosync-signature: v1=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
//! ```
//!
//! A receiver recomputes the HMAC over the raw body bytes it received,
//! compares in constant time, and rejects a timestamp more than
//! [`TOLERANCE_SECONDS`] from its clock (a captured request cannot be
//! replayed later).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signing time, in seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "protosync-timestamp";
/// The header carrying `v1=<hex signature>`.
pub const SIGNATURE_HEADER: &str = "protosync-signature";
/// How far a receiver accepts the timestamp from its clock: 5 minutes,
/// for clock skew, not for queueing.
pub const TOLERANCE_SECONDS: u64 = 300;

/// The `protosync-signature` value for `body` signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex(&mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `signature` (a header value) signs `body` at `timestamp` with
/// `secret`, and `timestamp` is within [`TOLERANCE_SECONDS`] of `now`.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], signature: &str, now: u64) -> bool {
    if now.abs_diff(timestamp) > TOLERANCE_SECONDS {
        return false;
    }
    let Some(bytes) = signature.strip_prefix("v1=").and_then(unhex) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&bytes).is_ok()
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // Any key length is valid for HMAC.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let (secret, body) = (b"0123456789abcdef", br#"{"action":"a.S/M"}"#);
        let signature = sign(secret, 1_800_000_000, body);
        assert!(signature.starts_with("v1=") && signature.len() == 3 + 64);
        assert!(verify(
            secret,
            1_800_000_000,
            body,
            &signature,
            1_800_000_100
        ));
        assert!(
            !verify(secret, 1_800_000_000, b"{}", &signature, 1_800_000_000),
            "tampered body"
        );
        assert!(!verify(
            b"another secret!!",
            1_800_000_000,
            body,
            &signature,
            1_800_000_000
        ));
        assert!(
            !verify(secret, 1_800_000_001, body, &signature, 1_800_000_001),
            "other time"
        );
        assert!(
            !verify(
                secret,
                1_800_000_000,
                body,
                &signature,
                1_800_000_000 + TOLERANCE_SECONDS + 1
            ),
            "stale"
        );
        assert!(!verify(secret, 1_800_000_000, body, "v1=zz", 1_800_000_000));
    }

    /// A fixed vector, also in docs/actions.md, so the Node and PHP
    /// examples there can be checked against the same numbers.
    #[test]
    fn the_documented_vector_holds() {
        assert_eq!(
            sign(
                b"whsec_test_0123456789",
                1_700_000_000,
                br#"{"action":"inbox.v1.Inbox/Confirm"}"#
            ),
            "v1=6e8db3d724d9dcaed344e68c935558797a69727b063b2bf7420b21d991b4c55b"
        );
    }
}
