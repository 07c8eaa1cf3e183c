//! Settings for `protosync serve`: flags and `PROTOSYNC_*` variables win over
//! the config file, which wins over defaults (docs/configuration.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The config file: TOML, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub listen: Option<String>,
    pub schema: Option<PathBuf>,
    pub database: Option<String>,
    pub pool_size: Option<usize>,
    pub change_log_retention: Option<String>,
    pub idempotency_retention: Option<String>,
    pub commit_buffer: Option<String>,
    pub log_format: Option<String>,
    /// `[auth]`: token providers, API keys, hardening (docs/auth.md).
    pub auth: Option<protosync_auth::AuthConfig>,
    /// `[backends.NAME]`: where actions are forwarded (docs/actions.md).
    #[serde(default)]
    pub backends: std::collections::BTreeMap<String, protosync_dispatch::BackendConfig>,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        // A relative schema path is relative to the config file.
        if let (Some(schema), Some(dir)) = (&config.schema, path.parent())
            && schema.is_relative()
        {
            config.schema = Some(dir.join(schema));
        }
        Ok(config)
    }
}

/// Parses durations like `500ms`, `90s`, `15m`, `24h`, `7d`.
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(n) = number.parse::<u64>() else {
        bail!("invalid duration {text:?}: expected a number and a unit, e.g. 24h")
    };
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("invalid duration {text:?}: the unit must be ms, s, m, h or d"),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| anyhow::anyhow!("duration {text:?} is too long"))
}

/// Parses sizes like `512KiB`, `64MiB`, `1GiB` or a plain number of bytes.
pub(crate) fn parse_size(text: &str) -> anyhow::Result<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(n) = number.parse::<usize>() else {
        bail!("invalid size {text:?}: expected a number and a unit, e.g. 64MiB")
    };
    let unit_bytes: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => bail!("invalid size {text:?}: the unit must be B, KiB, MiB or GiB"),
    };
    n.checked_mul(unit_bytes)
        .ok_or_else(|| anyhow::anyhow!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_policy_parses_in_auth_and_per_provider() {
        let file: FileConfig = toml::from_str(
            r#"
            [auth]
            required_claims = ["sub", "jti"]
            max_token_age_seconds = 3600

            [[auth.providers]]
            name = "laravel"
            issuer = "https://app.example.com"
            audience = ["protosync"]
            algorithms = ["HS256"]
            secret = "a shared secret of at least 32 bytes"

            [[auth.providers]]
            name = "better-auth"
            issuer = "https://auth.example.com"
            audience = ["https://auth.example.com"]
            algorithms = ["EdDSA"]
            jwks_url = "https://auth.example.com/api/auth/jwks"
            required_claims = ["sub"]
            max_token_age_seconds = 900
            "#,
        )
        .unwrap();
        let auth = file.auth.unwrap();
        assert_eq!(auth.required_claims, ["sub", "jti"]);
        let [laravel, better_auth] = &auth.providers[..] else {
            panic!("two providers")
        };
        assert_eq!(
            (&laravel.required_claims, laravel.max_token_age_seconds),
            (&None, None),
            "a file without per-provider keys keeps [auth]'s for every provider"
        );
        assert_eq!(
            (
                &better_auth.required_claims,
                better_auth.max_token_age_seconds
            ),
            (&Some(vec!["sub".to_owned()]), Some(900))
        );
        protosync_auth::Authenticator::new(auth).unwrap();
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("64MB").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
