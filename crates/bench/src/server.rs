//! The server under test, as a child process: the real `protosync serve`
//! with a generated config, so its CPU time and memory can be read from
//! /proc apart from the clients'. Owns the child's whole life: it is killed
//! when the handle drops, also when a scenario fails half-way.
//!
//! Subscribers are users (an HS256 token with `sub = "bench"`), so the read
//! rules run for them as in production, and anonymous rate limits do not
//! apply; the writer is a service (an API key) writing over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::stores::{self, StoreKind};

/// How long `serve` may take to answer `/readyz` (a fresh Postgres
/// database runs its migrations first).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a user token lives: longer than any scenario, so no connection
/// pauses for `TOKEN_EXPIRED` mid-run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(4 * 3600);
/// The token issuer and audience the generated config trusts.
const ISSUER: &str = "protosync-bench";
const AUDIENCE: &str = "protosync";
/// The user every subscriber is; documents are written with this owner.
pub(crate) const OWNER: &str = "bench";
/// How much of the server's log an error quotes.
const LOG_TAIL_BYTES: usize = 4000;

pub(crate) struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// A JWT for the user [`OWNER`].
    pub token: String,
    api_key: String,
    http: reqwest::Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `protosync serve` on a free loopback port and waits until it
    /// is ready.
    pub(crate) async fn start(store: StoreKind) -> anyhow::Result<ServerProcess> {
        let binary = server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("protosync-bench-server-")
            .tempdir()?;
        let database = match store {
            StoreKind::Sqlite => format!("sqlite:{}", dir.path().join("bench.db").display()),
            StoreKind::Postgres => stores::fresh_postgres_database().await?,
        };
        let addr = free_port()?;
        let secret = Alphanumeric.sample_string(&mut rand::rng(), 48);
        let api_key = Alphanumeric.sample_string(&mut rand::rng(), 40);
        let key_hash: String = Sha256::digest(api_key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = format!(
            "listen = \"{addr}\"\nschema = {schema:?}\ndatabase = {database:?}\nlog_format = \"text\"\n\n\
             [[auth.providers]]\nname = \"bench\"\nissuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\nalgorithms = [\"HS256\"]\nsecret = \"{secret}\"\n\n\
             [[auth.api_keys]]\nname = \"bench-writer\"\nsha256 = \"{key_hash}\"\n",
            schema = bench_schema(dir.path())?.display().to_string(),
        );
        let config_path = dir.path().join("protosync.toml");
        std::fs::write(&config_path, config)?;
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            // The gateway logs at info only when it drops a slow consumer,
            // which the slow-consumer scenario looks for.
            .env("PROTOSYNC_LOG", "warn,protosync_server=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let token = mint_token(&secret)?;
        let mut server = ServerProcess {
            child,
            addr,
            token,
            api_key,
            http: reqwest::Client::new(),
            log,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/v1/sync", self.addr)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.addr);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "protosync serve exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(answer) = self.http.get(&url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "protosync serve was not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of the server's log, for errors.
    fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..]).into_owned()
    }

    /// How many lines of the server's log contain `needle`.
    pub(crate) fn log_lines_containing(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|text| text.lines().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }

    /// One commit of `ops` (HTTP API operations) through `POST /v1/mutate`
    /// as the service; returns its seq.
    pub(crate) async fn mutate(&self, ops: Vec<Value>) -> anyhow::Result<u64> {
        let answer = self
            .http
            .post(format!("http://{}/v1/mutate", self.addr))
            .bearer_auth(&self.api_key)
            .json(&json!({ "ops": ops }))
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await?;
        if !status.is_success() {
            bail!("POST /v1/mutate answered {status}: {body}");
        }
        body["seq"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("POST /v1/mutate answered without a seq: {body}"))
    }

    /// Writes `docs` (id, body) into `collection`, `per_commit` upserts per
    /// commit; returns the last seq.
    pub(crate) async fn populate(
        &self,
        collection: &str,
        docs: impl Iterator<Item = (String, Value)>,
        per_commit: usize,
    ) -> anyhow::Result<u64> {
        let mut seq = 0;
        let mut ops = Vec::with_capacity(per_commit);
        for (id, doc) in docs {
            ops.push(json!({"upsert": {"collection": collection, "id": id, "doc": doc}}));
            if ops.len() == per_commit {
                seq = self.mutate(std::mem::take(&mut ops)).await?;
            }
        }
        if !ops.is_empty() {
            seq = self.mutate(ops).await?;
        }
        Ok(seq)
    }

    /// Starts measuring the server's resource use from now.
    pub(crate) fn meter(&self) -> anyhow::Result<Meter> {
        Ok(Meter {
            pid: self.pid(),
            cpu_ticks: cpu_ticks(self.pid())?,
            started: Instant::now(),
        })
    }

    /// Resident memory now, in bytes (`VmRSS`).
    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        status_kib(self.pid(), "VmRSS:").map(|kib| kib * 1024)
    }
}

/// The server's CPU time and memory over one measured phase.
pub(crate) struct Meter {
    pid: u32,
    cpu_ticks: u64,
    started: Instant,
}

impl Meter {
    pub(crate) fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Core-seconds of CPU (user + system) the server used since the meter
    /// started.
    pub(crate) fn cpu_core_seconds(&self) -> anyhow::Result<f64> {
        let ticks = cpu_ticks(self.pid)?.saturating_sub(self.cpu_ticks);
        Ok(ticks as f64 / clock_ticks_per_second())
    }

    /// What every scenario reports about the server: CPU over the phase (in
    /// core-seconds and as a share of one core over its wall time), resident
    /// memory now and at its peak since start.
    pub(crate) fn report(&self) -> anyhow::Result<Value> {
        let seconds = self.seconds();
        let cpu = self.cpu_core_seconds()?;
        Ok(json!({
            "pid": self.pid,
            "seconds": seconds,
            "cpu_core_seconds": cpu,
            "cpu_percent_of_run": 100.0 * cpu / seconds,
            "rss_bytes": status_kib(self.pid, "VmRSS:")? * 1024,
            "peak_rss_bytes": status_kib(self.pid, "VmHWM:")? * 1024,
        }))
    }
}

/// The example schema and the bench's own collections (schema/), copied
/// into `dir`: the server is started on the directory this returns.
fn bench_schema(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let schema = dir.join("schema");
    let bench = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    for source in [stores::schema_dir(), bench] {
        copy_tree(&source, &schema)?;
    }
    Ok(schema)
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let target = to.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

/// The `protosync` binary built into the same target directory as this
/// one, or the one `PROTOSYNC_BENCH_SERVER` names (to measure another
/// build side by side).
fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PROTOSYNC_BENCH_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let binary = exe.with_file_name("protosync");
    if !binary.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p protosync-bench -p protosync`",
            binary.display()
        );
    }
    Ok(binary)
}

fn free_port() -> anyhow::Result<SocketAddr> {
    // The port is free when we let go of it; `serve` binds it a moment later.
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn mint_token(secret: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": OWNER, "iat": now, "exp": now + TOKEN_LIFETIME.as_secs()});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// utime + stime of `pid`, in clock ticks (`/proc/<pid>/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields are counted after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat has no field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// A `kB` line of `/proc/<pid>/status`, such as `VmHWM:`.
fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(Path::new(&format!("/proc/{pid}/status")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("/proc/{pid}/status has no {key}"))
}
