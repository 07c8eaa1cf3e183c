//! The backends actions are forwarded to, from the server's config
//! (`[backends.NAME]`): a base URL and the secret requests are signed with.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The shortest signing secret accepted, in bytes: an HMAC key shorter than
/// this is guessable.
pub const MIN_SECRET_BYTES: usize = 16;

/// A `[backends.NAME]` table as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Base URL; a call of `pkg.Service/Method` is a POST to
    /// `{url}/pkg.Service/Method`. `http://` or `https://`.
    pub url: String,
    /// The signing secret itself.
    #[serde(default)]
    pub secret: Option<String>,
    /// The environment variable that holds the secret (keeps it out of the file).
    #[serde(default)]
    pub secret_env: Option<String>,
}

/// A backend ready to be called.
#[derive(Clone)]
pub struct Backend {
    /// Base URL, without a trailing `/`.
    pub url: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "Backend({})", self.url)
    }
}

impl Backend {
    /// A backend at `url` whose requests are signed with `secret`.
    pub fn new(url: &str, secret: impl Into<Vec<u8>>) -> Result<Backend, String> {
        let secret = secret.into();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("url {url:?} must start with http:// or https://"));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret is {} bytes; at least {MIN_SECRET_BYTES} are required",
                secret.len()
            ));
        }
        Ok(Backend {
            url: url.trim_end_matches('/').to_owned(),
            secret,
        })
    }

    /// The signing secret.
    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// Every configured backend, by name.
#[derive(Debug, Clone, Default)]
pub struct Backends(BTreeMap<String, Backend>);

impl Backends {
    /// Builds the backends of a config: each needs a URL and exactly one of
    /// `secret` and `secret_env` (read from the environment now).
    pub fn from_config(config: &BTreeMap<String, BackendConfig>) -> Result<Backends, String> {
        let mut backends = BTreeMap::new();
        for (name, backend) in config {
            let secret = match (&backend.secret, &backend.secret_env) {
                (Some(secret), None) => secret.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    format!("backends.{name}: the environment variable {var} is not set")
                })?,
                _ => {
                    return Err(format!(
                        "backends.{name}: give exactly one of secret and secret_env"
                    ));
                }
            };
            let ready =
                Backend::new(&backend.url, secret).map_err(|e| format!("backends.{name}: {e}"))?;
            backends.insert(name.clone(), ready);
        }
        Ok(Backends(backends))
    }

    /// Fails when an action of `registry` names a backend that is not
    /// configured: a call to it could never succeed, so the server refuses
    /// to start rather than answer `ACTION_UNAVAILABLE` forever.
    pub fn check(&self, registry: &protosync_schema::Registry) -> Result<(), String> {
        for action in registry.actions() {
            if self.get(&action.backend).is_none() {
                return Err(format!(
                    "action {} names backend {:?}, which the config does not define: add [backends.{}] with url and secret",
                    action.name, action.backend, action.backend
                ));
            }
        }
        Ok(())
    }

    /// Adds (or replaces) the backend `name`.
    pub fn insert(&mut self, name: &str, backend: Backend) {
        self.0.insert(name.to_owned(), backend);
    }

    /// The backend `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&Backend> {
        self.0.get(name)
    }
}
