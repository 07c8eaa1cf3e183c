//! Auth settings, as they appear under `[auth]` in the config file.

use serde::Deserialize;

/// Everything that decides who a caller is: the `[auth]` table of the config file. The default (no
/// providers, no keys, nothing trusted) lets every caller in as anonymous only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The token issuers end users' JWTs may come from, matched by `iss`; default none.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// The API keys trusted services may present; default none.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Clock leeway for exp / nbf, in seconds; default 30.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Claims every token must carry (e.g. "sub", "jti"): the default for
    /// providers that do not set their own.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Tokens issued (iat) longer ago than this are refused: the default for
    /// providers that do not set their own.
    #[serde(default)]
    pub max_token_age_seconds: Option<u64>,
    /// `jti`s refused from start-up on (more can be revoked at run time).
    #[serde(default)]
    pub revoked_jtis: Vec<String>,
    /// Origins web pages may call from, on HTTP, SSE and the WebSocket alike: `*`, an exact
    /// origin, or one with any port (`http://localhost:*`). Default empty: any origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Requests and connections without credentials are trusted services.
    /// `protosync dev` sets this when no auth is configured; default false.
    #[serde(default)]
    pub trust_unauthenticated: bool,
}

/// Small enough for clock skew between the issuer and us, large enough
/// that a just-issued token is never "not yet valid".
fn default_leeway() -> u64 {
    30
}

/// One issuer of end-user JWTs (`[[auth.providers]]`): which tokens it signs and where the keys
/// that check them are. Exactly one of `secret`, `jwks_url`, `jwks_file` and `public_key_pem` must
/// be given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A label for logs and errors; also the service name of a service-role token without `sub`.
    pub name: String,
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must contain one of these.
    pub audience: Vec<String>,
    /// Allowed `alg`s: HS256, RS256, ES256, EdDSA (others: HS384, RS384…).
    pub algorithms: Vec<String>,
    /// HS*: the shared secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Asymmetric: where the public keys are.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Asymmetric: a JWKS document on disk, read like `jwks_url` (and reread on the same TTL).
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Asymmetric: one PEM public key (RSA, EC or Ed25519, as `algorithms` says), for an issuer
    /// that does not rotate keys.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// How long fetched keys are used before refetching, in seconds; default 600.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_ttl_seconds: u64,
    /// Unknown `kid`s refetch the JWKS at most this often, so a flood of
    /// bad tokens cannot hammer the issuer; in seconds, default 10.
    #[serde(default = "default_refetch")]
    pub jwks_min_refetch_seconds: u64,
    /// Tokens whose `role` claim equals this are trusted services.
    #[serde(default)]
    pub service_role: Option<String>,
    /// Claims this provider's tokens must carry, instead of `[auth]`'s
    /// `required_claims` (absent: those apply). Issuers differ: a bridge
    /// that mints a `jti` can be held to it while one that never does is not.
    #[serde(default)]
    pub required_claims: Option<Vec<String>>,
    /// This provider's maximum token age, instead of `[auth]`'s
    /// `max_token_age_seconds` (absent: that one applies).
    #[serde(default)]
    pub max_token_age_seconds: Option<u64>,
}

fn default_jwks_ttl() -> u64 {
    600
}

fn default_refetch() -> u64 {
    10
}

/// A key a trusted service presents as `Bearer <key>` (`[[auth.api_keys]]`); its caller is a
/// service, not bound by rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The service's name: its identity in logs and in idempotency keys.
    pub name: String,
    /// Hex SHA-256 of the key: the key itself is never stored.
    pub sha256: String,
    /// Collections the key may read and write; absent for all.
    #[serde(default)]
    pub collections: Option<Vec<String>>,
}
