//! `protosync schedules`: a running server's schedules and their recent
//! runs, read from its `GET /v1/schedules` (docs/actions.md, "Schedules").

use anyhow::{Context, bail};
use serde_json::Value;

/// How long the server may take to answer.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(clap::Args)]
pub(crate) struct SchedulesArgs {
    /// The server's base URL.
    #[arg(long, env = "PROTOSYNC_URL", default_value = "http://127.0.0.1:4000")]
    url: String,
    /// A service's API key (not needed against `protosync dev`).
    #[arg(long, env = "PROTOSYNC_API_KEY")]
    api_key: Option<String>,
}

pub(crate) async fn run(args: SchedulesArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let mut request = client.get(format!("{}/v1/schedules", args.url.trim_end_matches('/')));
    if let Some(key) = &args.api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{} answered {status} without JSON", args.url))?;
    if !status.is_success() {
        let text = |f: &str| body["error"][f].as_str().unwrap_or_default().to_owned();
        bail!(
            "{} answered {status}: {} {}",
            args.url,
            text("code"),
            text("message")
        );
    }
    print!("{}", render(&body));
    Ok(())
}

/// The listing: one line per schedule, then one per run, newest first.
fn render(body: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut out = String::from("schedules:\n");
    for s in list(&body["schedules"]) {
        out.push_str(&format!(
            "  {}  {:?} in {}, catch-up {}\n",
            text(&s["action"]),
            text(&s["cron"]),
            text(&s["timeZone"]),
            text(&s["catchUp"])
        ));
    }
    out.push_str("runs (newest tick first; tick and start in ms since the epoch):\n");
    for r in list(&body["runs"]) {
        let outcome = match r["outcome"].as_str() {
            Some(outcome) => format!("{outcome} in {} ms", text(&r["durationMs"])),
            None => format!("running, lease until {}", text(&r["leaseUntilMs"])),
        };
        out.push_str(&format!(
            "  tick {}  {}  node {} attempt {}  started {}  {outcome}",
            text(&r["tickMs"]),
            text(&r["action"]),
            text(&r["node"]),
            r["attempt"],
            text(&r["startedAtMs"])
        ));
        if let Some(error) = r["error"].as_str() {
            out.push_str(&format!(": {error}"));
        }
        out.push('\n');
    }
    out
}
