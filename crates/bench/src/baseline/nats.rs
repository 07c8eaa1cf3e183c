//! NATS core pub/sub: one TCP connection per subscriber, all subscribed to
//! one subject; the writer publishes each stamped document to it. The NATS
//! text protocol is small enough to speak here directly (CONNECT, SUB, PUB,
//! MSG, PING/PONG), which keeps a client library out of the measurement
//! and out of the build.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::clients::{self, Readers};
use crate::fanout::{self, Publisher};
use crate::stamp::{self, Receipt};

const DEFAULT_ADDR: &str = "127.0.0.1:4222";
const SUBJECT: &str = "protosync.bench.fanout";
/// Subscriptions being opened at once.
const CONNECT_CONCURRENCY: usize = 256;
/// How long opening one subscriber may take (connect, SUB, PONG).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest protocol line we accept (an INFO line is a few hundred bytes).
const MAX_LINE_BYTES: usize = 64 * 1024;

/// One NATS connection, past its INFO and CONNECT.
struct Nats {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

enum Incoming {
    Message(Vec<u8>),
    Pong,
}

impl Nats {
    async fn connect(server: SocketAddr, index: usize) -> anyhow::Result<Nats> {
        let (read, writer) = clients::dial(server, index, None)
            .await
            .with_context(|| format!("cannot connect to NATS at {server}"))?
            .into_split();
        let mut nats = Nats {
            reader: BufReader::new(read),
            writer,
            line: String::new(),
        };
        nats.read_line().await?;
        if !nats.line.starts_with("INFO ") {
            bail!("NATS did not start with INFO: {:?}", nats.line);
        }
        nats.writer
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
            .await?;
        Ok(nats)
    }

    async fn read_line(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES as u64)
            .read_line(&mut self.line)
            .await?;
        if read == 0 {
            bail!("NATS closed the connection");
        }
        Ok(())
    }

    /// The next message or pong; answers pings on the way.
    async fn next(&mut self) -> anyhow::Result<Incoming> {
        loop {
            self.read_line().await?;
            let line = self.line.trim_end();
            if line == "PING" {
                self.writer.write_all(b"PONG\r\n").await?;
            } else if line == "PONG" {
                return Ok(Incoming::Pong);
            } else if let Some(rest) = line.strip_prefix("MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size: usize = rest
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow!("bad MSG line {line:?}"))?;
                let mut payload = vec![0; size + 2];
                self.reader.read_exact(&mut payload).await?;
                payload.truncate(size);
                return Ok(Incoming::Message(payload));
            } else if line.starts_with("-ERR") {
                bail!("NATS error: {line}");
            }
            // +OK and later INFO lines carry nothing we need.
        }
    }

    /// Subscribes, then waits for the pong that proves NATS registered it.
    async fn subscribe(&mut self) -> anyhow::Result<()> {
        self.writer
            .write_all(format!("SUB {SUBJECT} 1\r\nPING\r\n").as_bytes())
            .await?;
        loop {
            if let Incoming::Pong = self.next().await? {
                return Ok(());
            }
        }
    }
}

impl Publisher for Nats {
    async fn publish(&mut self, commit: u64) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(&stamp::document(commit))?;
        let mut frame = format!("PUB {SUBJECT} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(b"\r\n");
        self.writer.write_all(&frame).await?;
        Ok(())
    }
}

pub(crate) async fn measure(subscribers: usize, commits: usize) -> anyhow::Result<Value> {
    let server: SocketAddr = std::env::var("PROTOSYNC_BENCH_NATS_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.into())
        .parse()?;
    let bar = crate::progress::bar(subscribers, format!("fanout n={subscribers}: nats connect"));
    let connections: Vec<Nats> = futures::stream::iter(0..subscribers)
        .map(|i| {
            let bar = &bar;
            async move {
                let open = async {
                    let mut nats = Nats::connect(server, i).await?;
                    nats.subscribe().await?;
                    anyhow::Ok(nats)
                };
                let nats = tokio::time::timeout(OPEN_TIMEOUT, open)
                    .await
                    .map_err(|_| {
                        anyhow!("NATS subscriber {i} did not open within {OPEN_TIMEOUT:?}")
                    })??;
                bar.inc(1);
                anyhow::Ok(nats)
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    bar.finish();
    let (tx, mut receipts) = mpsc::unbounded_channel();
    let _readers = Readers(
        connections
            .into_iter()
            .enumerate()
            .map(|(i, mut nats)| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Ok(incoming) = nats.next().await {
                        let Incoming::Message(payload) = incoming else {
                            continue;
                        };
                        let Ok(doc) = serde_json::from_slice::<Value>(&payload) else {
                            continue;
                        };
                        if let Some(stamp) = stamp::read(doc.get("eventCount"), doc.get("title")) {
                            let _ = tx.send(Receipt::now(i, stamp));
                        }
                    }
                })
            })
            .collect(),
    );
    let mut publisher = Nats::connect(server, subscribers).await?;
    let mut result = fanout::drive(
        &format!("fanout n={subscribers}: nats publishes"),
        &mut publisher,
        &mut receipts,
        subscribers,
        commits,
    )
    .await?;
    result["subscribers"] = json!(subscribers);
    Ok(result)
}
