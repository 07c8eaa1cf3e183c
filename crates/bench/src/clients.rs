//! Many sync-protocol clients in one process: sockets bound to spread
//! source addresses, opened concurrently in bounded batches, each counting
//! the bytes it receives.
//!
//! `protosync_client::Connection` opens its own TCP stream from a URL, so it
//! can neither bind a source address nor count bytes on the wire; this is
//! the same protocol (hello, welcome, chunk assembly) over a stream the
//! bench owns. It never retries: a failure is a measurement, not noise.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::{SinkExt, StreamExt, TryStreamExt};
use protosync_client::wire::{self, client_message, server_message};
use protosync_client::{ConnectionError, Incoming, Received};
use protosync_protocol::{BINARY_SUBPROTOCOL, Codec, Frame, PROTOCOL_VERSION};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::server::ServerProcess;
use crate::stamp::{self, Receipt};

/// Connections being opened at once: enough to open 10,000 in seconds,
/// few enough to stay inside the server's accept backlog.
const CONNECT_CONCURRENCY: usize = 256;
/// Client sockets are bound round-robin to 127.0.0.2 … 127.0.0.(1 + this),
/// so tens of thousands of connections (and the TIME_WAITs of earlier runs)
/// never exhaust one address's ephemeral ports.
const SOURCE_ADDRESSES: usize = 200;
/// How long opening one connection may take: TCP, upgrade, hello, and the
/// first result of each of its subscriptions.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Readers ping this often: a third of the server's 60 s idle timeout
/// (docs/protocol.md), so no connection is closed for idleness mid-run.
const PING_INTERVAL: Duration = Duration::from_secs(20);

/// Raises this process's open-file soft limit to its hard limit (10,000
/// connections need 10,000 descriptors here, and as many in the server,
/// which inherits the limit). Returns the new limit.
pub(crate) fn raise_fd_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).map_err(io::Error::from)?;
    // `None` is RLIM_INFINITY, which libc spells as `u64::MAX`.
    Ok(limit.current.unwrap_or(u64::MAX))
}

/// A TCP connection to `server` from the `index`-th source address, with
/// the given receive buffer (set before connecting, so the window
/// advertised in the handshake is already that small).
pub(crate) async fn dial(
    server: SocketAddr,
    index: usize,
    receive_buffer: Option<u32>,
) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let source = Ipv4Addr::new(127, 0, 0, 2 + (index % SOURCE_ADDRESSES) as u8);
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A TCP stream that counts the bytes read from it.
pub(crate) struct Counted {
    stream: TcpStream,
    received: u64,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.received += (buf.filled().len() - before) as u64;
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One sync connection over a stream the bench dialled.
pub(crate) struct SyncSocket {
    ws: WebSocketStream<Counted>,
    codec: Codec,
    incoming: Incoming,
}

impl SyncSocket {
    /// Upgrades `stream` and says hello as the server's user; returns after
    /// the welcome (the `authOk` that follows is left to `receive`).
    pub(crate) async fn connect(
        server: &ServerProcess,
        stream: TcpStream,
        codec: Codec,
        resume: Option<wire::Resume>,
    ) -> anyhow::Result<(SyncSocket, wire::Welcome)> {
        let mut request = server.ws_url().into_client_request()?;
        if codec == Codec::Binary {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", BINARY_SUBPROTOCOL.parse()?);
        }
        // tungstenite zero-fills its whole read buffer (128 KiB by default)
        // before every read: with thousands of readers in this process
        // that would be the bench's own top cost, charged to the server.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(8 * 1024);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            request,
            Counted {
                stream,
                received: 0,
            },
            Some(config),
        )
        .await?;
        let mut socket = SyncSocket {
            ws,
            codec,
            incoming: Incoming::new(codec),
        };
        let hello = wire::Hello {
            protocol_version: PROTOCOL_VERSION,
            resume,
            token: server.token.clone(),
            ..Default::default()
        };
        socket.send(client_message::Message::Hello(hello)).await?;
        match socket.receive().await? {
            Received::Other(wire::ServerMessage {
                message: Some(server_message::Message::Welcome(welcome)),
            }) => Ok((socket, welcome)),
            Received::Other(wire::ServerMessage {
                message: Some(server_message::Message::Error(e)),
            }) => bail!("the server refused the hello: {}: {}", e.code, e.message),
            other => bail!("expected a welcome, got {other:?}"),
        }
    }

    pub(crate) async fn send(
        &mut self,
        message: client_message::Message,
    ) -> Result<(), ConnectionError> {
        let message = match self.codec.encode_client(&wire::ClientMessage {
            message: Some(message),
        }) {
            Frame::Text(text) => Message::Text(text.into()),
            Frame::Binary(bytes) => Message::Binary(bytes.into()),
        };
        self.ws
            .send(message)
            .await
            .map_err(|_| ConnectionError::Closed(None))
    }

    /// Sends every subscribe, then waits for each one's first result.
    pub(crate) async fn subscribe(
        &mut self,
        subscriptions: Vec<wire::Subscribe>,
    ) -> anyhow::Result<()> {
        let count = subscriptions.len();
        for subscribe in subscriptions {
            self.send(client_message::Message::Subscribe(subscribe))
                .await?;
        }
        let mut first_results = 0;
        while first_results < count {
            match self.receive().await? {
                Received::Transition(t) => {
                    first_results += t.updates.iter().filter(|u| u.reset).count();
                }
                Received::Other(wire::ServerMessage {
                    message: Some(server_message::Message::Error(e)),
                }) => {
                    bail!(
                        "subscription {:?} refused: {}: {}",
                        e.subscription_id,
                        e.code,
                        e.message
                    )
                }
                Received::Other(_) => {}
            }
        }
        Ok(())
    }

    /// The next message; a transition once all its chunks arrived.
    pub(crate) async fn receive(&mut self) -> Result<Received, ConnectionError> {
        loop {
            let frame = match self.ws.next().await {
                None | Some(Err(_)) => return Err(ConnectionError::Closed(None)),
                Some(Ok(frame)) => frame,
            };
            if let Some(received) = self.incoming.accept(frame)? {
                return Ok(received);
            }
        }
    }

    /// The stamps of the documents in the next frame (none for frames that
    /// are not transitions). Reads only what a stamp needs, as cheaply as
    /// the baselines' readers do, so the bench's own decoding takes as
    /// little as it can of the cores the server runs on.
    pub(crate) async fn next_stamps(&mut self) -> Result<Vec<(u64, f64)>, ConnectionError> {
        loop {
            let documents: Vec<Value> = match self.ws.next().await {
                None | Some(Err(_)) => return Err(ConnectionError::Closed(None)),
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text)
                        .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
                    let updates = frame
                        .pointer("/transition/updates")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    updates
                        .iter()
                        .filter_map(|u| u.get("upserts").and_then(Value::as_array))
                        .flatten()
                        .filter_map(|d| d.get("doc").cloned())
                        .collect()
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let message = self
                        .codec
                        .decode_server(&Frame::Binary(bytes.to_vec()))
                        .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
                    let Some(server_message::Message::Transition(t)) = message.message else {
                        return Ok(Vec::new());
                    };
                    t.updates
                        .iter()
                        .flat_map(|u| &u.upserts)
                        .filter_map(|d| d.doc.as_ref())
                        .map(protosync_protocol::struct_to_json)
                        .collect()
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ConnectionError::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Some(Ok(_)) => continue,
            };
            return Ok(documents
                .iter()
                .filter_map(|doc| stamp::read(doc.get("eventCount"), doc.get("title")))
                .collect());
        }
    }

    /// Bytes read from the socket since it was dialled: the upgrade
    /// response, frame headers and payloads.
    pub(crate) fn bytes_received(&self) -> u64 {
        self.ws.get_ref().received
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.ws.get_ref().stream.local_addr()
    }

    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A `get` subscription of one `run_summary` document.
pub(crate) fn get(subscription_id: impl Into<String>, id: impl Into<String>) -> wire::Subscribe {
    let get = wire::Get {
        collection: "run_summary".into(),
        id: id.into(),
    };
    wire::Subscribe {
        subscription_id: subscription_id.into(),
        target: Some(wire::subscribe::Target::Get(get)),
        held: vec![],
    }
}

/// A query subscription.
pub(crate) fn query(subscription_id: impl Into<String>, query: wire::Query) -> wire::Subscribe {
    wire::Subscribe {
        subscription_id: subscription_id.into(),
        target: Some(wire::subscribe::Target::Query(query)),
        held: vec![],
    }
}

/// Opens `count` connections, the `i`-th holding `subscriptions(i)` with
/// their first results in.
pub(crate) async fn open_many(
    server: &ServerProcess,
    count: usize,
    codec: Codec,
    subscriptions: impl Fn(usize) -> Vec<wire::Subscribe>,
    phase: &str,
) -> anyhow::Result<Vec<SyncSocket>> {
    let bar = crate::progress::bar(count, phase);
    let subscriptions = &subscriptions;
    let bar_ref = &bar;
    let sockets = futures::stream::iter(0..count)
        .map(|i| async move {
            let open = async {
                let stream = dial(server.addr, i, None).await?;
                let (mut socket, _) = SyncSocket::connect(server, stream, codec, None).await?;
                socket.subscribe(subscriptions(i)).await?;
                anyhow::Ok(socket)
            };
            let socket = tokio::time::timeout(OPEN_TIMEOUT, open)
                .await
                .map_err(|_| anyhow!("connection {i} did not open within {OPEN_TIMEOUT:?}"))??;
            bar_ref.inc(1);
            anyhow::Ok(socket)
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await;
    bar.finish();
    sockets
}

/// Reader tasks, aborted (and their sockets closed) when this drops.
pub(crate) struct Readers(pub Vec<JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Reads every socket until it fails or the readers drop, pinging so the
/// server does not close it for idleness, and sends a receipt for each
/// stamped document a transition carries. Reader `i` reports as
/// subscriber `first_subscriber + i`.
pub(crate) fn read_receipts(
    sockets: Vec<SyncSocket>,
    first_subscriber: usize,
    receipts: mpsc::UnboundedSender<Receipt>,
) -> Readers {
    let tasks = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut socket)| {
            let receipts = receipts.clone();
            tokio::spawn(async move {
                let mut ping = tokio::time::interval(PING_INTERVAL);
                ping.tick().await;
                loop {
                    tokio::select! {
                        received = socket.next_stamps() => match received {
                            Ok(stamps) => {
                                for stamp in stamps {
                                    let _ = receipts.send(Receipt::now(first_subscriber + i, stamp));
                                }
                            }
                            Err(_) => return,
                        },
                        _ = ping.tick() => {
                            if socket.send(client_message::Message::Ping(wire::Ping { nonce: String::new() })).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Only the readers hold senders from here on, so the receiver sees the channel close
    // when the last of them ends.
    drop(receipts);
    Readers(tasks)
}
