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
//!
//! The result is an [`Identity`]; what an identity may read and write is
//! decided by the collections' rules, in the engine.

mod config;
mod jwks;
mod jwt;

use std::collections::HashSet;
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
        claims: Value,
        jti: Option<String>,
        /// Seconds since the epoch.
        expires_at: Option<u64>,
    },
    /// A trusted backend: not bound by rules, limited to `collections`
    /// (`None`: all).
    Service { name: String, collections: Option<Vec<String>> },
}

impl Identity {
    /// What rules see as `auth`.
    pub fn claims(&self) -> Value {
        match self {
            Identity::User { claims, .. } => claims.clone(),
            Identity::Anonymous | Identity::Service { .. } => Value::Null,
        }
    }

    pub fn jti(&self) -> Option<&str> {
        match self {
            Identity::User { jti, .. } => jti.as_deref(),
            _ => None,
        }
    }

    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Identity::User { expires_at, .. } => *expires_at,
            _ => None,
        }
    }
}

/// Why credentials were refused; `code` is stable (docs/auth.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AuthError {
    pub code: &'static str,
    pub message: String,
}

impl AuthError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> AuthError {
        AuthError { code, message: message.into() }
    }
}

pub struct Authenticator {
    providers: Vec<Provider>,
    api_keys: Vec<ApiKeyConfig>,
    allowed_origins: Vec<String>,
    revoked: RwLock<HashSet<String>>,
    /// Requests without credentials act as a service with full access.
    /// Only for `protosync dev` and tests; never in production.
    trust_unauthenticated: bool,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Result<Authenticator, String> {
        let providers = config.providers.iter().map(|p| Provider::new(p, &config)).collect::<Result<Vec<_>, _>>()?;
        for key in &config.api_keys {
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("api key {:?}: sha256 must be 64 hex digits (sha256sum of the key)", key.name));
            }
        }
        Ok(Authenticator {
            providers,
            api_keys: config.api_keys.clone(),
            allowed_origins: config.allowed_origins.clone(),
            revoked: RwLock::new(config.revoked_jtis.iter().cloned().collect()),
            trust_unauthenticated: config.trust_unauthenticated,
        })
    }

    /// An authenticator that trusts every request (dev and tests).
    pub fn trusting() -> Authenticator {
        Authenticator::new(AuthConfig { trust_unauthenticated: true, ..AuthConfig::default() }).expect("an empty config is valid")
    }

    pub fn trusts_unauthenticated(&self) -> bool {
        self.trust_unauthenticated
    }

    /// The identity of a request with no credentials.
    pub fn unauthenticated(&self) -> Identity {
        if self.trust_unauthenticated {
            Identity::Service { name: "unauthenticated (trusted)".into(), collections: None }
        } else {
            Identity::Anonymous
        }
    }

    /// Verifies an `Authorization` header value: `Bearer <jwt>` or
    /// `Bearer <api key>`.
    pub async fn bearer(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let Some(header) = header else { return Ok(self.unauthenticated()) };
        let credential = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::new("UNAUTHENTICATED", "the Authorization header must be `Bearer <token or api key>`"))?
            .trim();
        if credential.split('.').count() == 3 {
            self.verify_token(credential).await
        } else {
            self.verify_api_key(credential)
        }
    }

    pub async fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let issuer = jwt::unverified_issuer(token)?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer() == issuer)
            .ok_or_else(|| AuthError::new("TOKEN_INVALID_ISSUER", format!("no provider is configured for issuer {issuer:?}")))?;
        let identity = provider.verify(token).await?;
        if let Some(jti) = identity.jti() {
            if self.is_revoked(jti) {
                return Err(AuthError::new("TOKEN_REVOKED", format!("token {jti:?} was revoked")));
            }
        }
        Ok(identity)
    }

    pub fn verify_api_key(&self, key: &str) -> Result<Identity, AuthError> {
        let digest: String = Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        self.api_keys
            .iter()
            .find(|k| constant_time_eq(k.sha256.to_ascii_lowercase().as_bytes(), digest.as_bytes()))
            .map(|k| Identity::Service { name: k.name.clone(), collections: k.collections.clone() })
            .ok_or_else(|| AuthError::new("UNAUTHENTICATED", "unknown API key"))
    }

    pub fn revoke(&self, jti: &str) {
        self.revoked.write().unwrap_or_else(|p| p.into_inner()).insert(jti.to_owned());
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains(jti)
    }

    /// Browser WebSockets must come from an allowed origin when a list is
    /// configured. Non-browser clients send no Origin and pass.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(origin) => self.allowed_origins.iter().any(|o| o == origin || o == "*"),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
