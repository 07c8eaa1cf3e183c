//! Public keys from a JWKS, cached. Refetched when the cache is older than
//! its TTL or a token names an unknown `kid` — the latter at most once per
//! `min_refetch`, so bad tokens cannot make us hammer the issuer.

use protosync_core::ErrorCode;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::sync::Mutex;

use crate::AuthError;

/// A JWKS fetch that takes longer than this fails (the token is refused
/// with UNKNOWN key; the next one retries).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) enum JwksSource {
    Url(String),
    File(PathBuf),
}

struct Key {
    kid: Option<String>,
    family: Option<AlgorithmFamily>,
    key: DecodingKey,
}

#[derive(Default)]
struct Cached {
    keys: Vec<Key>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

pub(crate) struct JwksCache {
    source: JwksSource,
    ttl: Duration,
    min_refetch: Duration,
    http: reqwest::Client,
    cached: Mutex<Cached>,
}

impl JwksCache {
    pub(crate) fn new(source: JwksSource, ttl_seconds: u64, min_refetch_seconds: u64) -> JwksCache {
        JwksCache {
            source,
            ttl: Duration::from_secs(ttl_seconds),
            min_refetch: Duration::from_secs(min_refetch_seconds),
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .unwrap_or_default(),
            cached: Mutex::new(Cached::default()),
        }
    }

    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        let mut cached = self.cached.lock().await;
        let stale = cached.fetched_at.is_none_or(|at| at.elapsed() >= self.ttl);
        let may_refetch = cached
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.min_refetch);
        if stale && may_refetch {
            self.refresh(&mut cached).await;
        }
        if let Some(key) = find(&cached.keys, kid, alg) {
            return Ok(key);
        }
        let may_refetch = cached
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.min_refetch);
        if may_refetch {
            // Perhaps the issuer rotated its keys.
            self.refresh(&mut cached).await;
            if let Some(key) = find(&cached.keys, kid, alg) {
                return Ok(key);
            }
        }
        Err(AuthError::new(
            ErrorCode::TokenUnknownKey,
            format!(
                "no key {} in the issuer's JWKS",
                kid.map_or("for this algorithm".to_owned(), |k| format!("{k:?}"))
            ),
        ))
    }

    async fn refresh(&self, cached: &mut Cached) {
        cached.last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                cached.keys = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        let key = DecodingKey::from_jwk(jwk).ok()?;
                        let family = match &jwk.algorithm {
                            AlgorithmParameters::RSA(_) => Some(AlgorithmFamily::Rsa),
                            AlgorithmParameters::EllipticCurve(_) => Some(AlgorithmFamily::Ec),
                            AlgorithmParameters::OctetKeyPair(_) => Some(AlgorithmFamily::Ed),
                            _ => None,
                        };
                        Some(Key {
                            kid: jwk.common.key_id.clone(),
                            family,
                            key,
                        })
                    })
                    .collect();
                cached.fetched_at = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetching the JWKS failed; keeping the keys we have");
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        match &self.source {
            JwksSource::Url(url) => {
                let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("{url} answered {}", response.status()));
                }
                response.json().await.map_err(|e| e.to_string())
            }
            JwksSource::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }
}

fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    keys.iter()
        .filter(|k| k.family.is_none_or(|f| f == alg.family()))
        .find(|k| kid.is_none() || k.kid.as_deref() == kid)
        .map(|k| k.key.clone())
}
