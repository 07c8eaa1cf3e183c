//! One token issuer: its keys, its algorithms, its checks.

use protosync_core::ErrorCode;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use crate::config::{AuthConfig, ProviderConfig};
use crate::jwks::{JwksCache, JwksSource};
use crate::{AuthError, Identity};

enum Keys {
    /// HS*: the shared secret. PEM: one public key.
    Fixed(DecodingKey),
    Jwks(JwksCache),
}

pub(crate) struct Provider {
    name: String,
    issuer: String,
    audience: Vec<String>,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    leeway: u64,
    required_claims: Vec<String>,
    max_token_age: Option<u64>,
    service_role: Option<String>,
}

impl Provider {
    pub(crate) fn new(config: &ProviderConfig, auth: &AuthConfig) -> Result<Provider, String> {
        let fail = |m: String| format!("auth provider {:?}: {m}", config.name);
        if config.algorithms.is_empty() {
            return Err(fail("list its allowed algorithms".into()));
        }
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a).map_err(|_| {
                    fail(format!(
                        "unknown algorithm {a:?} (HS256, RS256, ES256, EdDSA, …)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let symmetric = algorithms
            .iter()
            .filter(|a| a.family() == AlgorithmFamily::Hmac)
            .count();
        // One provider is either symmetric or asymmetric: a public key must
        // never be usable as an HMAC secret (the HS/RS confusion).
        if symmetric != 0 && symmetric != algorithms.len() {
            return Err(fail(
                "mixes HS* with public-key algorithms; configure two providers".into(),
            ));
        }
        let sources = [
            config.secret.is_some(),
            config.jwks_url.is_some(),
            config.jwks_file.is_some(),
            config.public_key_pem.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(fail(
                "give exactly one of secret, jwks_url, jwks_file, public_key_pem".into(),
            ));
        }
        let keys = if let Some(secret) = &config.secret {
            if symmetric == 0 {
                return Err(fail("a secret goes with HS* algorithms".into()));
            }
            if secret.len() < 32 {
                return Err(fail("the secret must be at least 32 bytes".into()));
            }
            Keys::Fixed(DecodingKey::from_secret(secret.as_bytes()))
        } else if symmetric != 0 {
            return Err(fail("HS* algorithms need a secret".into()));
        } else if let Some(pem) = &config.public_key_pem {
            let key = match algorithms[0].family() {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_ed_pem(pem.as_bytes()),
            };
            Keys::Fixed(key.map_err(|e| fail(format!("public_key_pem: {e}")))?)
        } else {
            let source = match (&config.jwks_url, &config.jwks_file) {
                (Some(url), _) => JwksSource::Url(url.clone()),
                (_, Some(path)) => JwksSource::File(path.clone()),
                _ => unreachable!("one source was checked above"),
            };
            Keys::Jwks(JwksCache::new(
                source,
                config.jwks_ttl_seconds,
                config.jwks_min_refetch_seconds,
            ))
        };
        if config.audience.is_empty() {
            return Err(fail("give the audience(s) tokens must be for".into()));
        }
        Ok(Provider {
            name: config.name.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            algorithms,
            keys,
            leeway: auth.leeway_seconds,
            required_claims: config
                .required_claims
                .clone()
                .unwrap_or_else(|| auth.required_claims.clone()),
            max_token_age: config.max_token_age_seconds.or(auth.max_token_age_seconds),
            service_role: config.service_role.clone(),
        })
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::new(ErrorCode::TokenInvalid, format!("malformed token: {e}"))
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::new(
                ErrorCode::TokenInvalid,
                format!(
                    "algorithm {:?} is not allowed for provider {:?}",
                    header.alg, self.name
                ),
            ));
        }
        let key = match &self.keys {
            Keys::Fixed(key) => key.clone(),
            Keys::Jwks(cache) => cache.key(header.kid.as_deref(), header.alg).await?,
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audience);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        for claim in &self.required_claims {
            if claims.get(claim).is_none_or(Value::is_null) {
                return Err(AuthError::new(
                    ErrorCode::TokenMissingClaim,
                    format!("the token has no `{claim}` claim"),
                ));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Some(max_age) = self.max_token_age {
            let issued = claims.get("iat").and_then(Value::as_u64).ok_or_else(|| {
                AuthError::new(ErrorCode::TokenMissingClaim, "the token has no `iat` claim")
            })?;
            if now.saturating_sub(issued) > max_age + self.leeway {
                return Err(AuthError::new(
                    ErrorCode::TokenTooOld,
                    format!("the token was issued more than {max_age} s ago"),
                ));
            }
        }
        if let Some(role) = &self.service_role
            && claims.get("role").and_then(Value::as_str) == Some(role)
        {
            let name = claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or(&self.name)
                .to_owned();
            return Ok(Identity::Service {
                name,
                collections: None,
                jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
                expires_at: claims.get("exp").and_then(Value::as_u64),
            });
        }
        Ok(Identity::User {
            jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
            expires_at: claims.get("exp").and_then(Value::as_u64),
            claims,
        })
    }
}

fn refusal(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => {
            AuthError::new(ErrorCode::TokenExpired, "the token has expired")
        }
        ErrorKind::ImmatureSignature => AuthError::new(
            ErrorCode::TokenNotYetValid,
            "the token is not valid yet (nbf)",
        ),
        ErrorKind::InvalidIssuer => AuthError::new(
            ErrorCode::TokenInvalidIssuer,
            "the token's issuer is not accepted",
        ),
        ErrorKind::InvalidAudience => AuthError::new(
            ErrorCode::TokenInvalidAudience,
            "the token is not for this audience",
        ),
        ErrorKind::InvalidSignature => AuthError::new(
            ErrorCode::TokenInvalidSignature,
            "the token's signature does not verify",
        ),
        ErrorKind::MissingRequiredClaim(claim) => AuthError::new(
            ErrorCode::TokenMissingClaim,
            format!("the token has no `{claim}` claim"),
        ),
        other => AuthError::new(
            ErrorCode::TokenInvalid,
            format!("the token was refused: {other:?}"),
        ),
    }
}

/// The `iss` of a token, read before verification to pick its provider.
pub(crate) fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let claims: Value = jsonwebtoken::dangerous::insecure_decode(token)
        .map(|data: jsonwebtoken::TokenData<Value>| data.claims)
        .map_err(|e| AuthError::new(ErrorCode::TokenInvalid, format!("malformed token: {e}")))?;
    claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| AuthError::new(ErrorCode::TokenInvalidIssuer, "the token has no issuer"))
}
