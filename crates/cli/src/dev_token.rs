//! Tokens for trying rules under `protosync dev`: `protosync dev token --sub
//! ann` signs a JWT with a secret kept in the dev data directory, and the
//! dev server accepts tokens signed with it. Dev only: `serve` never reads
//! the secret.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use protosync_auth::ProviderConfig;
use serde_json::{Map, Value};

/// The `iss` and `aud` of dev tokens.
pub(crate) const DEV_ISSUER: &str = "protosync-dev";
/// The secret's file in the data directory, made on first use.
const SECRET_FILE: &str = "dev-token-secret";
/// Random bytes in the secret (written as hex): HS256 wants at least 32.
const SECRET_BYTES: usize = 32;
/// How long a dev token is valid unless `--ttl-seconds` says otherwise: a
/// working day, so a token pasted into a client keeps working.
const DEFAULT_TTL_SECONDS: u64 = 12 * 60 * 60;

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The user the token is for: its `sub` claim (`auth.sub` in rules).
    #[arg(long)]
    sub: String,
    /// More claims, as NAME=VALUE (VALUE is JSON if it parses, else a string); repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = DEFAULT_TTL_SECONDS)]
    ttl_seconds: u64,
    /// The dev data directory (the same as `protosync dev --data-dir`).
    #[arg(long, default_value = ".protosync")]
    data_dir: PathBuf,
}

/// Prints a token the dev server on `args.data_dir` accepts.
pub(crate) fn print(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = secret(&args.data_dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut claims = Map::new();
    for claim in &args.claims {
        let (name, value) = claim
            .split_once('=')
            .ok_or_else(|| anyhow!("--claim {claim:?}: expected NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        claims.insert(name.to_owned(), value);
    }
    for (name, value) in [
        ("iss", Value::from(DEV_ISSUER)),
        ("aud", Value::from(DEV_ISSUER)),
        ("sub", Value::from(args.sub.as_str())),
        ("iat", Value::from(now)),
        ("exp", Value::from(now + args.ttl_seconds)),
    ] {
        claims.insert(name.to_owned(), value);
    }
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?;
    println!("{token}");
    Ok(())
}

/// The provider the dev server trusts dev tokens with.
pub(crate) fn provider(data_dir: &Path) -> anyhow::Result<ProviderConfig> {
    Ok(ProviderConfig {
        name: "dev".into(),
        issuer: DEV_ISSUER.into(),
        audience: vec![DEV_ISSUER.into()],
        algorithms: vec!["HS256".into()],
        secret: Some(secret(data_dir)?),
        jwks_url: None,
        jwks_file: None,
        public_key_pem: None,
        jwks_ttl_seconds: 600,
        jwks_min_refetch_seconds: 10,
        service_role: None,
        required_claims: None,
        max_token_age_seconds: None,
    })
}

/// The data directory's secret, made (random) when there is none yet.
fn secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let bytes: [u8; SECRET_BYTES] = rand::random();
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(text)
}
