//! Who made a commit, as the change feed reports it: the caller's name
//! (a token's subject, an API key's name) and the request's id, cut to
//! [`MAX_AUDIT_BYTES`].

use protosync_auth::Identity;
use protosync_store::{Audit, MAX_AUDIT_BYTES};

/// The audit record of a write by `identity` in request `request_id`.
pub fn audit(identity: &Identity, request_id: Option<&str>) -> Audit {
    let actor = match identity {
        Identity::User { claims, .. } => claims["sub"].as_str().map(str::to_owned),
        Identity::Service { name, .. } => Some(name.clone()),
        Identity::Anonymous => None,
    };
    Audit {
        actor: actor.map(cut),
        request_id: request_id
            .filter(|r| !r.is_empty())
            .map(|r| cut(r.to_owned())),
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_AUDIT_BYTES {
        let mut end = MAX_AUDIT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_is_the_subject_or_the_service_and_long_values_are_cut_on_a_character() {
        let user = Identity::User {
            claims: serde_json::json!({"sub": "ann", "iss": "x"}),
            jti: None,
            expires_at: None,
        };
        assert_eq!(audit(&user, Some("r1")).actor.as_deref(), Some("ann"));
        let long = "é".repeat(MAX_AUDIT_BYTES);
        let service = Identity::Service {
            name: "runtime".into(),
            collections: None,
            jti: None,
            expires_at: None,
        };
        let cut = audit(&service, Some(&long));
        assert_eq!(cut.actor.as_deref(), Some("runtime"));
        let id = cut.request_id.unwrap();
        assert!(id.len() <= MAX_AUDIT_BYTES && id.chars().all(|c| c == 'é'));
        assert_eq!(audit(&Identity::Anonymous, Some("")), Audit::default());
    }
}
