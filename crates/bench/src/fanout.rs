//! One writer, N subscribers to the same query, measured in protosync and,
//! in the same run and the same way, in two baselines (NATS core pub/sub
//! and Postgres LISTEN/NOTIFY). Every write carries its commit number and
//! the moment it was issued (stamp.rs); each subscriber's receipt gives
//! one latency sample: for protosync that is commit, tail, fan-out, encode,
//! socket and decode.
//!
//! The slow-consumer scenario runs this same fan-out with one extra
//! subscriber that stops reading, so the measuring part lives here once.

use std::time::{Duration, Instant};

use protosync_client::wire;
use protosync_protocol::Codec;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::baseline;
use crate::clients::{self, Readers};
use crate::server::{OWNER, ServerProcess};
use crate::stamp::{self, Receipt};
use crate::stats;
use crate::stores::StoreKind;

/// Commits before measuring: connections settle, caches warm. Each
/// subscriber's receipts of these (by the commit number they carry) are
/// dropped.
pub(crate) const WARMUP_COMMITS: u64 = 20;
/// Time between issued commits, so each is measured on its own rather than
/// as one burst; writes are issued at this fixed rate whatever a publish
/// costs, so every system gets the same offered load.
const COMMIT_INTERVAL: Duration = Duration::from_millis(5);
/// How long after the last commit receipts may still come in.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The document every fan-out write upserts.
const FANOUT_DOC: &str = "latest";

#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub store: StoreKind,
    pub codec: Codec,
    pub subscribers: usize,
    /// Measured commits (after the warm-up).
    pub commits: usize,
}

/// Something that delivers stamped documents to subscribers.
pub(crate) trait Publisher {
    /// Publishes the stamped document of commit `commit`.
    async fn publish(&mut self, commit: u64) -> anyhow::Result<()>;
}

/// Issues the warm-up and `commits` measured writes at the fixed rate,
/// then collects the subscribers' receipts; returns the latency figures.
pub(crate) async fn drive(
    phase: &str,
    publisher: &mut impl Publisher,
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
    subscribers: usize,
    commits: usize,
) -> anyhow::Result<Value> {
    let total = WARMUP_COMMITS + commits as u64;
    let bar = crate::progress::bar(total as usize, phase);
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for commit in 0..total {
        tick.tick().await;
        publisher.publish(commit).await?;
        bar.inc(1);
    }
    bar.finish();
    let collected = stamp::collect(
        receipts,
        subscribers,
        total - 1,
        Instant::now() + DRAIN_TIMEOUT,
        &format!("{phase}: last receipts"),
    )
    .await;
    Ok(stats::latency(
        &collected,
        WARMUP_COMMITS,
        subscribers,
        commits,
    ))
}

/// The collection of the fan-out document (the `lookup-rule` scenario
/// uses others of the same shape).
pub(crate) const FANOUT_COLLECTION: &str = "run_summary";

/// The subscription every fan-out subscriber holds: a query for the
/// user's newest summary in `collection`.
pub(crate) fn subscription(collection: &str) -> wire::Subscribe {
    let query = wire::Query {
        collection: collection.into(),
        filter: vec![wire::Condition {
            field: "ownerId".into(),
            op: "==".into(),
            value: Some(protosync_protocol::json_to_value(&json!(OWNER))),
        }],
        order_by: vec![wire::Order {
            field: "eventCount".into(),
            direction: "desc".into(),
        }],
        limit: 1,
        ..Default::default()
    };
    clients::query("fanout", query)
}

/// protosync with N subscribers connected and reading, ready to measure.
pub(crate) struct Fanout {
    pub server: ServerProcess,
    plan: Plan,
    collection: &'static str,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    _readers: Readers,
}

impl Fanout {
    /// The fan-out of the usual collection.
    pub(crate) async fn open(plan: Plan) -> anyhow::Result<Fanout> {
        Fanout::open_on(plan, FANOUT_COLLECTION, Vec::new()).await
    }

    /// The fan-out of `collection`, after `setup` (ops a service writes
    /// before the subscribers connect).
    pub(crate) async fn open_on(
        plan: Plan,
        collection: &'static str,
        setup: Vec<Value>,
    ) -> anyhow::Result<Fanout> {
        let server = ServerProcess::start(plan.store).await?;
        if !setup.is_empty() {
            server.mutate(setup).await?;
        }
        let sockets = clients::open_many(
            &server,
            plan.subscribers,
            plan.codec,
            |_| vec![subscription(collection)],
            &format!("fanout n={}: connect", plan.subscribers),
        )
        .await?;
        let (tx, receipts) = mpsc::unbounded_channel();
        let readers = clients::read_receipts(sockets, 0, tx);
        Ok(Fanout {
            server,
            plan,
            collection,
            receipts,
            _readers: readers,
        })
    }

    /// Runs the writes and reports latency and the server's resource use.
    pub(crate) async fn measure(&mut self) -> anyhow::Result<Value> {
        let meter = self.server.meter()?;
        let mut writer = HttpWriter {
            server: &self.server,
            collection: self.collection,
        };
        let phase = format!("fanout n={}: protosync commits", self.plan.subscribers);
        let mut result = drive(
            &phase,
            &mut writer,
            &mut self.receipts,
            self.plan.subscribers,
            self.plan.commits,
        )
        .await?;
        result["server"] = meter.report()?;
        Ok(result)
    }
}

/// The service writing fan-out commits over HTTP.
struct HttpWriter<'a> {
    server: &'a ServerProcess,
    collection: &'static str,
}

impl Publisher for HttpWriter<'_> {
    async fn publish(&mut self, commit: u64) -> anyhow::Result<()> {
        let op = json!({"upsert": {"collection": self.collection, "id": FANOUT_DOC, "doc": stamp::document(commit)}});
        self.server.mutate(vec![op]).await.map(drop)
    }
}

/// The `fanout` scenario at one size: protosync, then the baselines.
pub(crate) async fn run(plan: Plan) -> anyhow::Result<Value> {
    let protosync = {
        let mut fanout = Fanout::open(plan).await?;
        fanout.measure().await?
    };
    // A baseline that cannot run here is reported as such, not skipped.
    let nats = baseline::nats::measure(plan.subscribers, plan.commits)
        .await
        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    let notify = baseline::notify::measure(plan.subscribers, plan.commits)
        .await
        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    // A ratio against a baseline that measured fewer subscribers would
    // compare different loads: it is left out.
    let ratio = |baseline: &Value, p: &str| match baseline["subscribers"].as_u64()
        == Some(plan.subscribers as u64)
    {
        true => stats::ratio(&protosync["latency_ms"][p], &baseline["latency_ms"][p]),
        false => Value::Null,
    };
    Ok(json!({
        "scenario": "fanout",
        "store": plan.store.name(),
        "codec": format!("{:?}", plan.codec).to_lowercase(),
        "subscribers": plan.subscribers,
        "commits": plan.commits,
        "warmup_commits": WARMUP_COMMITS,
        "commit_interval_ms": COMMIT_INTERVAL.as_secs_f64() * 1000.0,
        "payload_bytes": serde_json::to_vec(&stamp::document(0))?.len(),
        "protosync": protosync,
        "nats": nats,
        "postgres_notify": notify,
        "ratio_protosync_to_nats": {"p50": ratio(&nats, "p50"), "p99": ratio(&nats, "p99")},
        "ratio_protosync_to_postgres_notify": {"p50": ratio(&notify, "p50"), "p99": ratio(&notify, "p99")},
        "note": "latency = issue → receipt on one clock; receipts < receipts_expected means coalescing (protosync sends only the newest of several commits to a subscriber that is behind)",
    }))
}

/// The `lookup-rule` scenario: the same fan-out to subscribers whose read
/// rule looks up one document (a grant), and to subscribers whose rule
/// does not; each commit is judged for every subscriber.
pub(crate) async fn lookup_rule(plan: Plan) -> anyhow::Result<Value> {
    let plain = Fanout::open_on(plan, "plain_summary", Vec::new())
        .await?
        .measure()
        .await?;
    let grant = json!({"upsert": {"collection": "bench_grants", "id": OWNER, "doc": {"user": OWNER, "active": true}}});
    let gated = Fanout::open_on(plan, "gated_summary", vec![grant])
        .await?
        .measure()
        .await?;
    let ratio = |p: &str| stats::ratio(&gated["latency_ms"][p], &plain["latency_ms"][p]);
    let cpu = |r: &Value| r["server"]["cpu_core_seconds"].as_f64();
    Ok(json!({
        "scenario": "lookup-rule",
        "store": plan.store.name(),
        "codec": format!("{:?}", plan.codec).to_lowercase(),
        "subscribers": plan.subscribers,
        "commits": plan.commits,
        "without_lookup": plain,
        "with_lookup": gated,
        "ratio_with_to_without": {"p50": ratio("p50"), "p99": ratio("p99")},
        "cpu_ratio_with_to_without": match (cpu(&gated), cpu(&plain)) {
            (Some(a), Some(b)) if b > 0.0 => json!(a / b),
            _ => Value::Null,
        },
    }))
}
