//! Who is calling.
//!
//! - End users present JWTs issued by the app's own auth: HS256 with a
//!   shared secret, or RS256 / ES256 / EdDSA with public keys from a JWKS
//!   URL (cached, refetched on an unknown `kid` at a bounded rate), a JWKS
//!   file or a PEM. Signature, algorithm allow-list (never `none`, never
//!   an HS/RS confusion), issuer, audience, expiry and not-before are
//!   checked, with a small leeway; optionally required claims, a maximum
//!   token age and a revocation list of `jti`s.
//! - Trusted services present an API key (configured as its SHA-256) or a
//!   token carrying the provider's service role.
//! - Credentials that are present but unreadable (an `Authorization`
//!   header that is not visible ASCII, or sent twice) are refused, never
//!   taken for absent: absent means anonymous, or a trusted service under
//!   `trust_unauthenticated`.
//!
//! Revocations live here as a set of `jti`s; keeping them in the store and
//! in step across processes is the gateway's job (it feeds them in with
//! [`Authenticator::remember_revocation`]).
//!
//! The result is an [`Identity`]; what an identity may read and write is
//! decided by the collections' rules, in the engine.

use protosync_core::ErrorCode;

mod config;
mod jwks;
mod jwt;

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use config::{ApiKeyConfig, AuthConfig, ProviderConfig};
use jwt::Provider;

/// The caller of a request or the owner of a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// No credentials: rules see `auth == null`.
    Anonymous,
    /// A verified token: rules see its claims as `auth`.
    User {
        /// The token's verified claims, as the JSON object it carried.
        claims: Value,
        /// The token's `jti`, the handle a revocation names; `None` if it has none.
        jti: Option<String>,
        /// Seconds since the epoch.
        expires_at: Option<u64>,
    },
    /// A trusted backend: not bound by rules, limited to `collections`
    /// (`None`: all). From a service-role token it keeps that token's
    /// `jti` and expiry, so it can be revoked and expires like any token.
    Service {
        /// The service's name: an API key's configured name, or a service-role token's `sub`
        /// (without one, its provider's name).
        name: String,
        /// The collections it may read and write; `None`: all.
        collections: Option<Vec<String>>,
        /// The service-role token's `jti`; `None` for API keys and tokens without one.
        jti: Option<String>,
        /// The service-role token's `exp`, in seconds since the epoch; `None` for API keys.
        expires_at: Option<u64>,
    },
}

impl Identity {
    /// What rules see as `auth`.
    pub fn claims(&self) -> Value {
        match self {
            Identity::User { claims, .. } => claims.clone(),
            Identity::Anonymous | Identity::Service { .. } => Value::Null,
        }
    }

    /// The `jti` of the token behind this identity, if it came from one that has it.
    pub fn jti(&self) -> Option<&str> {
        match self {
            Identity::User { jti, .. } | Identity::Service { jti, .. } => jti.as_deref(),
            Identity::Anonymous => None,
        }
    }

    /// When the token behind this identity expires (its `exp`, seconds since the epoch);
    /// `None` for anonymous callers, API keys and tokens without `exp`.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Identity::User { expires_at, .. } | Identity::Service { expires_at, .. } => *expires_at,
            Identity::Anonymous => None,
        }
    }

    /// Who this is, for binding idempotency keys to their caller.
    /// A user is their issuer and subject together: `sub` is unique only
    /// within its issuer, and two providers' "ann" are different callers.
    pub fn principal(&self) -> String {
        match self {
            Identity::Anonymous => String::new(),
            // JSON, so no issuer or subject can be spelled to look like another pair.
            Identity::User { claims, .. } => format!(
                "user:{}",
                serde_json::json!([
                    claims.get("iss").and_then(Value::as_str),
                    claims.get("sub").and_then(Value::as_str)
                ])
            ),
            Identity::Service { name, .. } => format!("service:{name}"),
        }
    }
}

/// Why credentials were refused; `code` is stable (docs/auth.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AuthError {
    /// The stable code clients see (`TOKEN_EXPIRED`, `UNAUTHENTICATED`, …).
    pub code: ErrorCode,
    /// What was wrong, for a person: never contains the credential itself.
    pub message: String,
}

impl AuthError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> AuthError {
        AuthError {
            code,
            message: message.into(),
        }
    }
}

/// Turns credentials into an [`Identity`]: the configured JWT providers and API keys,
/// and the revoked `jti`s this process knows. Shared by every transport; cheap to call
/// concurrently.
pub struct Authenticator {
    providers: Vec<Provider>,
    api_keys: Vec<ApiKeyConfig>,
    allowed_origins: Vec<String>,
    /// Revoked `jti` → until when (milliseconds since the epoch) the entry
    /// is needed; `None`: for good.
    revoked: RwLock<HashMap<String, Option<i64>>>,
    /// Requests without credentials act as a service with full access.
    /// Only for `protosync dev` and tests; never in production.
    trust_unauthenticated: bool,
    leeway_seconds: u64,
}

impl Authenticator {
    /// Checks the config and builds the providers (a JWKS is fetched on first use, not
    /// here). The error names the provider or API key that is wrong and why.
    pub fn new(config: AuthConfig) -> Result<Authenticator, String> {
        let providers = config
            .providers
            .iter()
            .map(|p| Provider::new(p, &config))
            .collect::<Result<Vec<_>, _>>()?;
        for key in &config.api_keys {
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "api key {:?}: sha256 must be 64 hex digits (sha256sum of the key)",
                    key.name
                ));
            }
        }
        Ok(Authenticator {
            providers,
            api_keys: config.api_keys,
            allowed_origins: config.allowed_origins,
            revoked: RwLock::new(
                config
                    .revoked_jtis
                    .into_iter()
                    .map(|jti| (jti, None))
                    .collect(),
            ),
            trust_unauthenticated: config.trust_unauthenticated,
            leeway_seconds: config.leeway_seconds,
        })
    }

    /// An authenticator that trusts every request (dev and tests).
    pub fn trusting() -> Authenticator {
        Authenticator::new(AuthConfig {
            trust_unauthenticated: true,
            ..AuthConfig::default()
        })
        .expect("an empty config is valid")
    }

    /// The identity of a request with no credentials.
    pub fn unauthenticated(&self) -> Identity {
        if self.trust_unauthenticated {
            Identity::Service {
                name: "unauthenticated (trusted)".into(),
                collections: None,
                jti: None,
                expires_at: None,
            }
        } else {
            Identity::Anonymous
        }
    }

    /// Verifies the `Authorization` header(s) of an HTTP request, given as
    /// raw bytes, every value in order. None: the request has no
    /// credentials. A value that is not visible ASCII, or more than one
    /// value, is refused with `UNAUTHENTICATED`: credentials that are there
    /// but cannot be read are never taken for absent.
    pub async fn authorization(&self, values: &[&[u8]]) -> Result<Identity, AuthError> {
        self.bearer(authorization_header(values)?).await
    }

    /// Verifies an `Authorization` header value: `Bearer <jwt>` or
    /// `Bearer <api key>`. The scheme is case-insensitive and may be
    /// followed by several spaces (RFC 7235); whitespace around the
    /// credential is ignored.
    pub async fn bearer(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let Some(header) = header else {
            return Ok(self.unauthenticated());
        };
        let (scheme, credential) = header.split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
            return Err(AuthError::new(
                ErrorCode::Unauthenticated,
                "the Authorization header must be `Bearer <token or api key>`",
            ));
        }
        self.credential(credential.trim()).await
    }

    /// Verifies a JWT (three dot-separated parts) or an API key.
    pub async fn credential(&self, credential: &str) -> Result<Identity, AuthError> {
        if credential.split('.').count() == 3 {
            self.verify_token(credential).await
        } else {
            self.verify_api_key(credential)
        }
    }

    /// Verifies a JWT and nothing else: where a credential may end up in
    /// logs (a URL's query string), an API key must never be accepted, so
    /// it is refused without being looked up.
    pub async fn jwt_only(&self, credential: &str) -> Result<Identity, AuthError> {
        if credential.split('.').count() != 3 {
            return Err(AuthError::new(
                ErrorCode::TokenInvalid,
                "only a JWT is accepted here; send API keys in the Authorization header",
            ));
        }
        self.verify_token(credential).await
    }

    /// Seconds a token stays acceptable past its `exp` (clock skew) when it
    /// is presented. Live connections end at `exp` itself.
    pub fn leeway_seconds(&self) -> u64 {
        self.leeway_seconds
    }

    /// Verifies a JWT with the provider of its `iss`: signature, algorithm, audience,
    /// expiry, not-before, required claims, age and revocation. A service-role token is a
    /// service.
    pub async fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let issuer = jwt::unverified_issuer(token)?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer() == issuer)
            .ok_or_else(|| {
                AuthError::new(
                    ErrorCode::TokenInvalidIssuer,
                    format!("no provider is configured for issuer {issuer:?}"),
                )
            })?;
        let identity = provider.verify(token).await?;
        if let Some(jti) = identity.jti()
            && self.is_revoked(jti)
        {
            return Err(AuthError::new(
                ErrorCode::TokenRevoked,
                format!("token {jti:?} was revoked"),
            ));
        }
        Ok(identity)
    }

    /// Looks an API key up by its SHA-256 (compared in constant time); an unknown key is
    /// `UNAUTHENTICATED`.
    pub fn verify_api_key(&self, key: &str) -> Result<Identity, AuthError> {
        let digest: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.api_keys
            .iter()
            .find(|k| constant_time_eq(k.sha256.to_ascii_lowercase().as_bytes(), digest.as_bytes()))
            .map(|k| Identity::Service {
                name: k.name.clone(),
                collections: k.collections.clone(),
                jti: None,
                expires_at: None,
            })
            .ok_or_else(|| AuthError::new(ErrorCode::Unauthenticated, "unknown API key"))
    }

    /// Refuses tokens with this `jti` from now on, in this process, for good.
    pub fn revoke(&self, jti: &str) {
        self.remember_revocation(jti, None);
    }

    /// Refuses tokens with this `jti` from now on, in this process, until
    /// `keep_until_ms` (milliseconds since the epoch; `None`: for good). The
    /// entry may be dropped after that: no token with this `jti` can be
    /// valid any more. Told the same `jti` twice, it keeps the later time.
    pub fn remember_revocation(&self, jti: &str, keep_until_ms: Option<i64>) {
        let mut revoked = self
            .revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = revoked.entry(jti.to_owned()).or_insert(keep_until_ms);
        *entry = match (*entry, keep_until_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }

    /// Drops revocations whose tokens can no longer be valid at `now_ms`
    /// (milliseconds since the epoch), so the set does not grow for ever.
    pub fn forget_expired_revocations(&self, now_ms: i64) {
        self.revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, keep_until| keep_until.is_none_or(|until| until >= now_ms));
    }

    /// Until when a revocation of a token that expires at `exp` (seconds
    /// since the epoch) is needed, in milliseconds since the epoch: such a
    /// token is accepted through the whole second `exp + leeway_seconds`,
    /// and never after.
    pub fn revocation_needed_until_ms(&self, exp: u64) -> i64 {
        let last_second = exp.saturating_add(self.leeway_seconds);
        i64::try_from(last_second.saturating_add(1).saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Whether tokens with this `jti` are refused in this process.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(jti)
    }

    /// Browser pages must come from an allowed origin when a list is
    /// configured (on HTTP, SSE and the WebSocket). Non-browser clients send
    /// no Origin and pass.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(origin) => self
                .allowed_origins
                .iter()
                .any(|allowed| origin_matches(allowed, origin)),
        }
    }
}

/// The one `Authorization` header of a request as text, given every value
/// it came with as raw bytes: `None` when there is none. More than one, or
/// one that is not visible ASCII, is `UNAUTHENTICATED`: credentials that are
/// there but cannot be read must never be taken for absent.
pub fn authorization_header<'a>(values: &[&'a [u8]]) -> Result<Option<&'a str>, AuthError> {
    match values {
        [] => Ok(None),
        [value] => readable_header(value).map(Some).ok_or_else(|| {
            AuthError::new(ErrorCode::Unauthenticated,
                "the Authorization header is not readable: it must be visible ASCII, `Bearer <token or api key>`",
            )
        }),
        _ => Err(AuthError::new(ErrorCode::Unauthenticated,
            "more than one Authorization header: send exactly one",
        )),
    }
}

/// The header as text if it is what HTTP allows a field value to be and
/// `http::HeaderValue::to_str` accepts: visible ASCII, spaces and tabs.
fn readable_header(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// `allowed` is `*`, an exact origin (`https://app.example.com`), or an
/// origin with any port (`http://localhost:*`).
fn origin_matches(allowed: &str, origin: &str) -> bool {
    if allowed == "*" || allowed == origin {
        return true;
    }
    let Some(prefix) = allowed.strip_suffix(":*") else {
        return false;
    };
    origin
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_match_exactly_or_with_any_port() {
        use super::origin_matches;
        assert!(origin_matches(
            "http://localhost:*",
            "http://localhost:5173"
        ));
        assert!(!origin_matches("http://localhost:*", "http://localhost"));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost.evil:80"
        ));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost:80x"
        ));
        assert!(origin_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://app.example.com.evil"
        ));
        assert!(origin_matches("*", "https://any.example"));
    }

    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a-shared-secret-that-is-long-enough!!";

    fn authenticator(adjust: impl FnOnce(&mut AuthConfig)) -> Authenticator {
        let mut config = AuthConfig {
            providers: vec![ProviderConfig {
                name: "bridge".into(),
                issuer: "https://bridge.test".into(),
                audience: vec!["protosync".into()],
                algorithms: vec!["HS256".into()],
                secret: Some(SECRET.into()),
                jwks_url: None,
                jwks_file: None,
                public_key_pem: None,
                jwks_ttl_seconds: 600,
                jwks_min_refetch_seconds: 10,
                service_role: Some("service".into()),
                required_claims: None,
                max_token_age_seconds: None,
            }],
            api_keys: vec![ApiKeyConfig {
                name: "runtime".into(),
                sha256: Sha256::digest(b"key-1")
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                collections: Some(vec!["run_summary".into()]),
            }],
            ..AuthConfig::default()
        };
        adjust(&mut config);
        Authenticator::new(config).unwrap()
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "JSON builders take the value, so a call site reads `json!({..})` without a borrow"
    )]
    fn token(claims: serde_json::Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut full = json!({"iss": "https://bridge.test", "aud": "protosync", "exp": now + 600, "iat": now, "sub": "ann"});
        full.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        encode(
            &Header::default(),
            &full,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hardening_checks_refuse_with_their_codes() {
        let strict = authenticator(|c| {
            c.required_claims = vec!["jti".into()];
            c.max_token_age_seconds = Some(60);
            c.leeway_seconds = 0;
        });
        let code =
            |r: Result<Identity, AuthError>| r.map(|_| "OK").unwrap_or_else(|e| e.code.as_str());
        assert_eq!(
            code(strict.verify_token(&token(json!({}))).await),
            "TOKEN_MISSING_CLAIM"
        );
        assert_eq!(
            code(
                strict
                    .verify_token(&token(json!({"jti": "j1", "iat": 1})))
                    .await
            ),
            "TOKEN_TOO_OLD"
        );
        assert_eq!(
            code(strict.verify_token(&token(json!({"jti": "j1"}))).await),
            "OK"
        );
        strict.revoke("j1");
        assert_eq!(
            code(strict.verify_token(&token(json!({"jti": "j1"}))).await),
            "TOKEN_REVOKED"
        );
        assert_eq!(
            code(strict.bearer(Some("Basic abc")).await),
            "UNAUTHENTICATED"
        );
    }

    #[tokio::test]
    async fn services_come_from_api_keys_and_service_role_tokens() {
        let auth = authenticator(|_| {});
        let key = auth.bearer(Some("Bearer key-1")).await.unwrap();
        assert_eq!(
            key,
            Identity::Service {
                name: "runtime".into(),
                collections: Some(vec!["run_summary".into()]),
                jti: None,
                expires_at: None
            }
        );
        assert!(
            auth.bearer(Some("BEARER key-1")).await.is_ok(),
            "the scheme is case-insensitive"
        );
        assert!(auth.bearer(Some("Bearer key-2")).await.is_err());
        let service = auth
            .verify_token(&token(
                json!({"role": "service", "sub": "projector", "jti": "svc-1"}),
            ))
            .await
            .unwrap();
        assert!(
            matches!(&service, Identity::Service { name, collections: None, .. } if name == "projector")
        );
        assert!(service.expires_at().is_some());
        auth.revoke("svc-1");
        assert_eq!(
            auth.verify_token(&token(
                json!({"role": "service", "sub": "projector", "jti": "svc-1"})
            ))
            .await
            .unwrap_err()
            .code
            .as_str(),
            "TOKEN_REVOKED"
        );
        let user = auth.verify_token(&token(json!({}))).await.unwrap();
        assert_eq!(user.claims()["sub"], "ann");
        assert_eq!(auth.bearer(None).await.unwrap(), Identity::Anonymous);
        assert!(matches!(
            Authenticator::trusting().bearer(None).await.unwrap(),
            Identity::Service {
                collections: None,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn unreadable_authorization_headers_are_refused_never_taken_for_absent() {
        let code =
            |r: Result<Identity, AuthError>| r.map(|_| "OK").unwrap_or_else(|e| e.code.as_str());
        for auth in [authenticator(|_| {}), Authenticator::trusting()] {
            for unreadable in [
                &b"Bearer \xe9.\xfc.\xf6"[..],
                "Bearer é.ü.ö".as_bytes(),
                b"Bearer \x00abc",
                b"Bearer key-1\x7f",
            ] {
                assert_eq!(
                    code(auth.authorization(&[unreadable]).await),
                    "UNAUTHENTICATED",
                    "{unreadable:?}"
                );
            }
            assert_eq!(
                code(
                    auth.authorization(&[b"Bearer key-1", b"Bearer key-1"])
                        .await
                ),
                "UNAUTHENTICATED",
                "two headers are ambiguous"
            );
        }
        let auth = authenticator(|_| {});
        assert_eq!(auth.authorization(&[]).await.unwrap(), Identity::Anonymous);
        assert_eq!(code(auth.authorization(&[b"Bearer key-1"]).await), "OK");
        assert_eq!(
            code(auth.authorization(&[b"bearer  \tkey-1 "]).await),
            "OK",
            "the scheme is case-insensitive; whitespace around the credential is ignored"
        );
    }

    #[tokio::test]
    async fn jwt_only_refuses_api_keys_without_looking_them_up() {
        let auth = authenticator(|_| {});
        assert_eq!(
            auth.jwt_only("key-1").await.unwrap_err().code.as_str(),
            "TOKEN_INVALID"
        );
        assert!(auth.credential("key-1").await.is_ok());
        assert!(auth.jwt_only(&token(json!({}))).await.is_ok());
    }

    #[tokio::test]
    async fn claim_policy_is_per_provider_with_the_auth_section_as_default() {
        const OTHER_SECRET: &str = "another-shared-secret-long-enough!!!!";
        let auth = authenticator(|c| {
            // The default: every provider requires a jti and fresh tokens…
            c.required_claims = vec!["sub".into(), "jti".into()];
            c.max_token_age_seconds = Some(60);
            c.leeway_seconds = 0;
            // …except this one, which never mints a jti and may be older.
            let mut relaxed = c.providers[0].clone();
            relaxed.name = "relaxed".into();
            relaxed.issuer = "https://relaxed.test".into();
            relaxed.secret = Some(OTHER_SECRET.into());
            relaxed.required_claims = Some(vec!["sub".into()]);
            relaxed.max_token_age_seconds = Some(3600);
            c.providers.push(relaxed);
        });
        let relaxed = |claims: serde_json::Value| {
            let mut claims = claims;
            claims["iss"] = json!("https://relaxed.test");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut full = json!({"aud": "protosync", "exp": now + 600, "iat": now, "sub": "ann"});
            full.as_object_mut()
                .unwrap()
                .extend(claims.as_object().unwrap().clone());
            encode(
                &Header::default(),
                &full,
                &EncodingKey::from_secret(OTHER_SECRET.as_bytes()),
            )
            .unwrap()
        };
        let code =
            |r: Result<Identity, AuthError>| r.map(|_| "OK").unwrap_or_else(|e| e.code.as_str());
        let ten_minutes_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 600;
        assert_eq!(
            code(auth.verify_token(&token(json!({}))).await),
            "TOKEN_MISSING_CLAIM"
        );
        assert_eq!(
            code(
                auth.verify_token(&token(json!({"jti": "j", "iat": ten_minutes_ago})))
                    .await
            ),
            "TOKEN_TOO_OLD"
        );
        assert_eq!(code(auth.verify_token(&relaxed(json!({}))).await), "OK");
        assert_eq!(
            code(
                auth.verify_token(&relaxed(json!({"iat": ten_minutes_ago})))
                    .await
            ),
            "OK"
        );
        let user = auth.verify_token(&relaxed(json!({}))).await.unwrap();
        assert_eq!(
            user.claims()["iss"],
            "https://relaxed.test",
            "rules can tell issuers apart"
        );
        let same_sub = auth
            .verify_token(&token(json!({"jti": "j"})))
            .await
            .unwrap();
        assert_eq!(
            (
                same_sub.claims()["sub"].clone(),
                user.claims()["sub"].clone()
            ),
            (json!("ann"), json!("ann"))
        );
        assert_ne!(
            same_sub.principal(),
            user.principal(),
            "one sub at two issuers is two callers (idempotency keys are bound to them)"
        );
    }

    #[test]
    fn revocations_are_kept_until_their_tokens_cannot_be_valid() {
        let auth = authenticator(|c| c.revoked_jtis = vec!["from-config".into()]);
        auth.remember_revocation("short", Some(100));
        auth.remember_revocation("long", Some(100));
        auth.remember_revocation("long", Some(300));
        auth.remember_revocation("for-good", Some(100));
        auth.remember_revocation("for-good", None);
        auth.forget_expired_revocations(200);
        let kept: Vec<bool> = ["short", "long", "for-good", "from-config"]
            .iter()
            .map(|jti| auth.is_revoked(jti))
            .collect();
        assert_eq!(kept, [false, true, true, true]);
    }

    #[test]
    fn misconfigured_providers_are_refused_at_start() {
        let bad = |adjust: fn(&mut ProviderConfig)| {
            let mut config = AuthConfig::default();
            let mut p = ProviderConfig {
                name: "p".into(),
                issuer: "i".into(),
                audience: vec!["a".into()],
                algorithms: vec!["HS256".into()],
                secret: Some(SECRET.into()),
                jwks_url: None,
                jwks_file: None,
                public_key_pem: None,
                jwks_ttl_seconds: 1,
                jwks_min_refetch_seconds: 1,
                service_role: None,
                required_claims: None,
                max_token_age_seconds: None,
            };
            adjust(&mut p);
            config.providers.push(p);
            Authenticator::new(config).err().unwrap_or_default()
        };
        assert!(bad(|p| p.algorithms = vec!["HS256".into(), "RS256".into()]).contains("mixes HS*"));
        assert!(bad(|p| p.algorithms = vec!["none".into()]).contains("unknown algorithm"));
        assert!(bad(|p| p.secret = Some("short".into())).contains("at least 32 bytes"));
        assert!(bad(|p| p.jwks_url = Some("http://x".into())).contains("exactly one"));
        assert!(bad(|p| p.audience.clear()).contains("audience"));
        assert_eq!(bad(|_| {}), "");
    }
}
