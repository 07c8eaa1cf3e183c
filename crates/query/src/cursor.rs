//! Page cursors: where the next page starts, sealed so that only this
//! database's own cursors are accepted.
//!
//! A cursor carries the sort key of the last document of a page and a
//! fingerprint of the query's collection and order. It is sealed with an
//! HMAC-SHA256 tag (truncated to `TAG_BYTES`, 16 bytes) under a key every process on
//! the database shares, so an edited, forged or foreign cursor is refused
//! with `INVALID_CURSOR` instead of starting a page somewhere else. (Even an
//! accepted cursor only moves where the query starts: the filter and the
//! read rules still decide what it returns.)

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::query::QueryError;

/// The cursor layout this server writes and reads: format byte, order
/// fingerprint (8 bytes), sort key, tag.
const CURSOR_FORMAT: u8 = 2;
/// Bytes of the HMAC tag kept in a cursor: 128 bits, beyond guessing.
const TAG_BYTES: usize = 16;

/// The key that seals and opens cursors.
#[derive(Clone)]
pub struct CursorSeal {
    key: [u8; 32],
}

impl std::fmt::Debug for CursorSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSeal(..)")
    }
}

impl CursorSeal {
    /// A seal keyed from the database's secret, so every process on one
    /// database accepts the others' cursors.
    pub fn from_database_secret(secret: &[u8; 32]) -> CursorSeal {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"protosync page cursor");
        CursorSeal {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The cursor continuing after `sort_key` in a query with `fingerprint`.
    pub(crate) fn seal(&self, fingerprint: u64, sort_key: &[u8]) -> String {
        let mut bytes = Vec::with_capacity(1 + 8 + sort_key.len() + TAG_BYTES);
        bytes.push(CURSOR_FORMAT);
        bytes.extend_from_slice(&fingerprint.to_be_bytes());
        bytes.extend_from_slice(sort_key);
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The sort key in `cursor`, if this database sealed it for a query with
    /// `fingerprint`.
    pub(crate) fn open(&self, fingerprint: u64, cursor: &str) -> Result<Vec<u8>, QueryError> {
        let foreign = || QueryError::InvalidCursor("not a cursor returned by this server".into());
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| foreign())?;
        if bytes.len() <= 1 + 8 + TAG_BYTES || bytes[0] != CURSOR_FORMAT {
            return Err(foreign());
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let expected = self.tag(payload);
        // Constant time: the comparison must not tell how much of a forged tag was right.
        if tag
            .iter()
            .zip(expected)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return Err(foreign());
        }
        let (stamp, key) = payload[1..].split_at(8);
        if stamp != fingerprint.to_be_bytes() {
            return Err(QueryError::InvalidCursor(
                "the cursor belongs to a query with another collection or order".into(),
            ));
        }
        Ok(key.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any flipped bit, anywhere, is refused; only the untouched cursor opens.
    #[test]
    fn an_edited_cursor_is_refused() {
        let seal = CursorSeal::from_database_secret(&[7; 32]);
        let cursor = seal.seal(42, b"some sort key");
        assert_eq!(seal.open(42, &cursor).unwrap(), b"some sort key");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&cursor)
            .unwrap();
        for i in 0..bytes.len() * 8 {
            let mut edited = bytes.clone();
            edited[i / 8] ^= 1 << (i % 8);
            let edited = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(edited);
            assert!(
                matches!(seal.open(42, &edited), Err(QueryError::InvalidCursor(_))),
                "bit {i}"
            );
        }
        let other = CursorSeal::from_database_secret(&[8; 32]);
        assert!(other.open(42, &cursor).is_err(), "another database's key");
        assert!(
            seal.open(43, &cursor)
                .unwrap_err()
                .to_string()
                .contains("another collection or order")
        );
    }
}
