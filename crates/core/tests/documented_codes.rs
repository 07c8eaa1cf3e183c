//! The error tables of the docs list exactly the codes of `ErrorCode`: one
//! for HTTP answers (docs/http-api.md), one for sync-protocol errors
//! (docs/protocol.md). A code added, renamed or dropped in one place and
//! not the other fails here.

use std::collections::BTreeSet;
use std::path::Path;

use protosync_core::ErrorCode;

/// The codes in the first column of the table under `## Errors` in `doc`.
fn documented(doc: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let section = text
        .split("\n## Errors\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{doc} has no `## Errors` section"));
    let section = section.split("\n## ").next().unwrap();
    let mut codes = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        for quoted in first.split('`').skip(1).step_by(2) {
            if !quoted.is_empty() && quoted.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                codes.insert(quoted.to_owned());
            }
        }
    }
    codes
}

fn declared(on: impl Fn(ErrorCode) -> bool) -> BTreeSet<String> {
    ErrorCode::ALL
        .iter()
        .filter(|c| on(**c))
        .map(|c| c.as_str().to_owned())
        .collect()
}

#[test]
fn http_api_md_lists_exactly_the_http_codes() {
    assert_eq!(
        documented("http-api.md"),
        declared(|c| c.transport().on_http())
    );
}

#[test]
fn protocol_md_lists_exactly_the_socket_codes() {
    assert_eq!(
        documented("protocol.md"),
        declared(|c| c.transport().on_socket())
    );
}
