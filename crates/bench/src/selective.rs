//! What do subscriptions that a write does not touch cost it? S
//! subscriptions each hold one document of their own (a `get`), spread
//! over connections; a watching connection holds 100 more documents, and
//! the writer writes only those, at random, back to back. The target is a
//! per-commit server cost that stays flat (within 2×) from 1,000 to
//! 100,000 untouched subscriptions: a commit should find its few affected
//! subscriptions through an index, not by visiting every one.

use std::time::{Duration, Instant};

use protosync_protocol::Codec;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::clients;
use crate::server::{OWNER, ServerProcess};
use crate::stamp;
use crate::stats;
use crate::stores::StoreKind;

/// Subscriptions per connection, under the server's 256 per connection.
const SUBSCRIPTIONS_PER_CONNECTION: usize = 200;
/// Documents the writer writes, all held by one watching connection.
const WATCHED_DOCS: usize = 100;
/// Upserts per commit while creating the documents (the API's limit is 500).
const POPULATE_OPS_PER_COMMIT: usize = 500;
/// Commits before measuring latency (by commit number).
const WARMUP_COMMITS: u64 = 20;
/// How long the receipts of the last commits may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub store: StoreKind,
    pub codec: Codec,
    /// Untouched subscriptions.
    pub subscriptions: usize,
    /// Measured commits, unless `max_seconds` passes first.
    pub commits: usize,
    pub max_seconds: u64,
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<Value> {
    let server = ServerProcess::start(plan.store).await?;
    let quiet = (0..plan.subscriptions).map(|i| {
        (
            format!("quiet-{i}"),
            json!({"ownerId": OWNER, "title": "untouched"}),
        )
    });
    let watched = (0..WATCHED_DOCS).map(|i| (format!("watched-{i}"), json!({"ownerId": OWNER})));
    server
        .populate("run_summary", quiet.chain(watched), POPULATE_OPS_PER_COMMIT)
        .await?;

    let connections = plan.subscriptions.div_ceil(SUBSCRIPTIONS_PER_CONNECTION);
    let subscriptions = |c: usize| {
        let ids = c * SUBSCRIPTIONS_PER_CONNECTION
            ..((c + 1) * SUBSCRIPTIONS_PER_CONNECTION).min(plan.subscriptions);
        ids.map(|i| clients::get(format!("s{i}"), format!("quiet-{i}")))
            .collect()
    };
    let phase = format!("selective s={}: subscribe", plan.subscriptions);
    let quiet_sockets =
        clients::open_many(&server, connections, plan.codec, subscriptions, &phase).await?;
    let watcher = clients::open_many(
        &server,
        1,
        plan.codec,
        |_| {
            (0..WATCHED_DOCS)
                .map(|i| clients::get(format!("w{i}"), format!("watched-{i}")))
                .collect()
        },
        "selective: watcher",
    )
    .await?;
    let rss_with_subscriptions = server.rss_bytes()?;

    let (tx, mut receipts) = mpsc::unbounded_channel();
    let _watcher = clients::read_receipts(watcher, 0, tx.clone());
    let _quiet = clients::read_receipts(quiet_sockets, 1, tx);

    let meter = server.meter()?;
    let total = WARMUP_COMMITS + plan.commits as u64;
    let stop = Instant::now() + Duration::from_secs(plan.max_seconds);
    let bar = crate::progress::bar(
        total as usize,
        format!("selective s={}: commits", plan.subscriptions),
    );
    let mut commits = 0;
    while commits < total && Instant::now() < stop {
        let doc = rand::rng().random_range(0..WATCHED_DOCS);
        let op = json!({"upsert": {"collection": "run_summary", "id": format!("watched-{doc}"), "doc": stamp::document(commits)}});
        server.mutate(vec![op]).await?;
        commits += 1;
        bar.inc(1);
    }
    bar.finish();
    let writing = meter.seconds();
    let cpu = meter.cpu_core_seconds()?;
    if commits == 0 {
        anyhow::bail!("no commit within {} s", plan.max_seconds);
    }
    let collected = stamp::collect(
        &mut receipts,
        1,
        commits - 1,
        Instant::now() + DRAIN_TIMEOUT,
        "selective: last receipt",
    )
    .await;
    let measured = commits.saturating_sub(WARMUP_COMMITS) as usize;
    let mut result = json!({
        "scenario": "selective",
        "store": plan.store.name(),
        "codec": format!("{:?}", plan.codec).to_lowercase(),
        "untouched_subscriptions": plan.subscriptions,
        "connections": connections + 1,
        "watched_documents": WATCHED_DOCS,
        "commits": commits,
        "writing_seconds": writing,
        "commits_per_second": commits as f64 / writing,
        "server_cpu_ms_per_commit": 1000.0 * cpu / commits as f64,
        "server_rss_bytes_with_subscriptions": rss_with_subscriptions,
        "writer": "one service writing over HTTP, one single-op commit after another",
    });
    let latency = stats::latency(&collected, WARMUP_COMMITS, 1, measured);
    for (key, value) in latency.as_object().into_iter().flatten() {
        result[key] = value.clone();
    }
    result["server"] = meter.report()?;
    Ok(result)
}
