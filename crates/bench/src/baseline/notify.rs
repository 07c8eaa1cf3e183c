//! Postgres LISTEN/NOTIFY: one listening connection per subscriber (a
//! listener is a whole backend, which is why this baseline stops at what
//! `max_connections` leaves free); the writer sends each stamped document
//! with `pg_notify`.

use std::future::poll_fn;

use anyhow::bail;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::clients::Readers;
use crate::fanout::{self, Publisher};
use crate::stamp::{self, Receipt};
use crate::stores;

const CHANNEL: &str = "protosync_bench_fanout";
/// Connections left free for everyone else on the Postgres server (and the
/// bench's own admin and publisher connections).
const SPARE_CONNECTIONS: i64 = 10;

struct Notifier {
    client: Client,
}

impl Publisher for Notifier {
    async fn publish(&mut self, commit: u64) -> anyhow::Result<()> {
        let payload = serde_json::to_string(&stamp::document(commit))?;
        self.client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await?;
        Ok(())
    }
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// How many more connections this Postgres server takes, less the spare.
async fn free_connections(admin: &Client) -> anyhow::Result<i64> {
    let setting = |name: &'static str| async move {
        anyhow::Ok(
            admin
                .query_one(&format!("SHOW {name}"), &[])
                .await?
                .get::<_, String>(0)
                .parse::<i64>()?,
        )
    };
    let max = setting("max_connections").await?;
    let reserved = setting("superuser_reserved_connections").await?;
    let in_use: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .await?
        .get(0);
    Ok(max - reserved - in_use - SPARE_CONNECTIONS)
}

pub(crate) async fn measure(subscribers: usize, commits: usize) -> anyhow::Result<Value> {
    let url = stores::admin_url();
    let publisher = connect(&url).await?;
    let free = free_connections(&publisher).await?;
    let listeners = subscribers.min(free.max(0) as usize);
    if listeners == 0 {
        bail!(
            "Postgres has no connection to spare for a listener ({free} free after {SPARE_CONNECTIONS} spare)"
        );
    }
    let bar = crate::progress::bar(listeners, format!("fanout n={subscribers}: notify listen"));
    let (tx, mut receipts) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(listeners);
    let mut clients = Vec::with_capacity(listeners);
    for i in 0..listeners {
        let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await?;
        let tx = tx.clone();
        // Notifications arrive only through the connection, so this task
        // polls it (which also drives the client's queries).
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
                if let AsyncMessage::Notification(note) = message
                    && let Ok(doc) = serde_json::from_str::<Value>(note.payload())
                    && let Some(stamp) = stamp::read(doc.get("eventCount"), doc.get("title"))
                {
                    let _ = tx.send(Receipt::now(i, stamp));
                }
            }
        }));
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        clients.push(client);
        bar.inc(1);
    }
    bar.finish();
    let _readers = Readers(tasks);
    let mut notifier = Notifier { client: publisher };
    let mut result = fanout::drive(
        &format!("fanout n={subscribers}: notify publishes"),
        &mut notifier,
        &mut receipts,
        listeners,
        commits,
    )
    .await?;
    result["subscribers"] = json!(listeners);
    result["subscribers_requested"] = json!(subscribers);
    if listeners < subscribers {
        result["note"] = json!(format!(
            "measured {listeners} listeners, not {subscribers}: Postgres allows {free} more connections after leaving {SPARE_CONNECTIONS} spare"
        ));
    }
    Ok(result)
}
