//! One sync connection: hello, then a loop that reads client messages,
//! runs mutations, and sends transitions when there is news and room.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{FuturesUnordered, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use protosync_engine::live::session::ResetReason;
use protosync_engine::{EngineError, Identity, Session};
use protosync_protocol::wire::{self, client_message, server_message};
use protosync_protocol::{Codec, DecodeError, Frame, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use protosync_store::{CommitOutcome, Seq};
use tokio::sync::mpsc;

use super::convert::{self, error, error_message, server};
use super::{close_code, sleep_until_epoch, transition};
use crate::AppState;

/// Kept small: every connection's queue allocates room for a block of them.
enum Outbound {
    Message(Box<wire::ServerMessage>),
    /// Already encoded for this connection's codec.
    Frame(Frame),
    Close(u16, String),
}

type MutationDone =
    futures::future::BoxFuture<'static, (String, Result<CommitOutcome, EngineError>)>;

pub async fn run(socket: WebSocket, codec: Codec, state: AppState, peer: std::net::SocketAddr) {
    state.metrics.connections.fetch_add(1, Ordering::Relaxed);
    let (sink, mut incoming) = socket.split();
    let (outbound, queue) = mpsc::channel::<Outbound>(state.sync.outbound_queue_frames);
    let writer = tokio::spawn(write_frames(sink, queue, codec, state.clone()));
    if let Some(hello) = receive_hello(&mut incoming, codec, &outbound, &state).await {
        let identity = state.auth.unauthenticated();
        let connection = Connection {
            codec,
            state: state.clone(),
            outbound: outbound.clone(),
            incoming,
            min_target: Seq::ZERO,
            identity,
            paused: None,
            budget: MutationBudget::new(state.sync.max_mutations_per_second),
            peer,
        };
        connection.serve(hello).await;
    }
    drop(outbound);
    let _ = writer.await;
    state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    state.metrics.connection_ended.notify_waiters();
}

/// Writes queued frames; a frame the client does not take in time ends the
/// connection (the client stopped reading).
async fn write_frames(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    codec: Codec,
    state: AppState,
) {
    while let Some(item) = queue.recv().await {
        state.metrics.queued_frames.fetch_sub(1, Ordering::Relaxed);
        let frame = match item {
            Outbound::Message(message) => codec.encode_server(&message),
            Outbound::Frame(frame) => frame,
            Outbound::Close(code, reason) => {
                let _ = tokio::time::timeout(
                    state.sync.write_timeout,
                    sink.send(Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }))),
                )
                .await;
                break;
            }
        };
        let message = match frame {
            Frame::Text(text) => Message::Text(text.into()),
            Frame::Binary(bytes) => Message::Binary(bytes.into()),
        };
        match tokio::time::timeout(state.sync.write_timeout, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::info!("closing a sync connection whose client stopped reading");
                let close = Message::Close(Some(CloseFrame {
                    code: close_code::SLOW_CONSUMER,
                    reason: "the client stopped reading".into(),
                }));
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), sink.send(close)).await;
                break;
            }
        }
    }
    // Drain so the queued-frames gauge stays true.
    queue.close();
    while queue.recv().await.is_some() {
        state.metrics.queued_frames.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn enqueue(outbound: &mpsc::Sender<Outbound>, state: &AppState, item: Outbound) -> bool {
    state.metrics.queued_frames.fetch_add(1, Ordering::Relaxed);
    if outbound.send(item).await.is_err() {
        state.metrics.queued_frames.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    // Read after the send: before it, a frame waiting for room would count
    // as queued although the channel holds at most its capacity.
    let queued = (state.sync.outbound_queue_frames - outbound.capacity()) as u64;
    state
        .metrics
        .peak_queued_frames_per_connection
        .fetch_max(queued, Ordering::Relaxed);
    true
}

/// Reads one client message; `None` when the connection is over.
enum Received {
    Message(wire::ClientMessage),
    /// With the request and subscription ids the frame seemed to carry, so
    /// the error reaches whoever waits on them.
    Undecodable(DecodeError, String, String),
    Closed,
    /// The client broke the WebSocket protocol: close with this code.
    Violation(u16, &'static str),
}

async fn receive(incoming: &mut SplitStream<WebSocket>, codec: Codec) -> Received {
    loop {
        let frame = match incoming.next().await {
            None => return Received::Closed,
            Some(Err(e)) => return violation(e),
            Some(Ok(Message::Text(text))) => Frame::Text(text.to_string()),
            Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
            Some(Ok(Message::Close(_))) => return Received::Closed,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        return match codec.decode_client(&frame) {
            Ok(message) => Received::Message(message),
            Err(e) => {
                let (request_id, subscription_id) = match &frame {
                    Frame::Text(text) => ids_in(text),
                    Frame::Binary(_) => Default::default(),
                };
                Received::Undecodable(e, request_id, subscription_id)
            }
        };
    }
}

/// What a read error means for the close (RFC 6455 section 7.4.1).
fn violation(error: axum::Error) -> Received {
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(_)) => {
            Received::Violation(close_code::MESSAGE_TOO_BIG, "frame too large")
        }
        Ok(Error::Utf8(_)) => Received::Violation(
            close_code::INVALID_PAYLOAD,
            "a text frame is not valid UTF-8",
        ),
        Ok(Error::Protocol(_)) => {
            Received::Violation(close_code::PROTOCOL_ERROR, "WebSocket protocol violation")
        }
        _ => Received::Closed,
    }
}

async fn receive_hello(
    incoming: &mut SplitStream<WebSocket>,
    codec: Codec,
    outbound: &mpsc::Sender<Outbound>,
    state: &AppState,
) -> Option<wire::Hello> {
    let first = tokio::time::timeout(state.sync.hello_timeout, receive(incoming, codec)).await;
    let refuse = |code: u16, reason: &str| Outbound::Close(code, reason.to_owned());
    match first {
        Ok(Received::Message(wire::ClientMessage {
            message: Some(client_message::Message::Hello(hello)),
        })) => {
            if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
                let message = format!(
                    "protocol version {} is not supported; this server speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                    hello.protocol_version
                );
                enqueue(
                    outbound,
                    state,
                    Outbound::Message(Box::new(error_message(
                        "UPGRADE_REQUIRED",
                        &message,
                        "",
                        "",
                        String::new(),
                    ))),
                )
                .await;
                enqueue(
                    outbound,
                    state,
                    refuse(close_code::UPGRADE_REQUIRED, "upgrade required"),
                )
                .await;
                return None;
            }
            Some(hello)
        }
        Ok(Received::Closed) => None,
        Ok(Received::Violation(code, reason)) => {
            enqueue(outbound, state, refuse(code, reason)).await;
            None
        }
        Ok(_) => {
            enqueue(
                outbound,
                state,
                refuse(
                    close_code::HELLO_REQUIRED,
                    "the first message must be a hello",
                ),
            )
            .await;
            None
        }
        Err(_) => {
            enqueue(
                outbound,
                state,
                refuse(close_code::HELLO_REQUIRED, "no hello in time"),
            )
            .await;
            None
        }
    }
}

struct Connection {
    codec: Codec,
    state: AppState,
    outbound: mpsc::Sender<Outbound>,
    incoming: SplitStream<WebSocket>,
    /// Read-your-writes: the next transition must reach at least this seq.
    min_target: Seq,
    identity: Identity,
    /// Why live updates are paused (the token expired or was revoked) until
    /// a fresh token arrives.
    paused: Option<&'static str>,
    budget: MutationBudget,
    peer: std::net::SocketAddr,
}

/// A token bucket for one connection's mutations.
struct MutationBudget {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl MutationBudget {
    fn new(per_second: u32) -> MutationBudget {
        let per_second = f64::from(per_second.max(1));
        MutationBudget {
            per_second,
            tokens: 2.0 * per_second,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens
            + now.duration_since(self.refilled).as_secs_f64() * self.per_second)
            .min(2.0 * self.per_second);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Connection {
    async fn send(&self, message: wire::ServerMessage) -> bool {
        enqueue(
            &self.outbound,
            &self.state,
            Outbound::Message(Box::new(message)),
        )
        .await
    }

    async fn close(&self, code: u16, reason: &str) {
        enqueue(
            &self.outbound,
            &self.state,
            Outbound::Close(code, reason.to_owned()),
        )
        .await;
    }

    async fn serve(mut self, hello: wire::Hello) {
        let engine = self.state.engine.clone();
        if !hello.token.is_empty() {
            match Box::pin(self.state.auth.credential(&hello.token)).await {
                Ok(identity) => self.identity = identity,
                Err(e) => {
                    self.send(error_message(e.code, &e.message, "", "", String::new()))
                        .await;
                    self.close(close_code::UNAUTHENTICATED, "the token was refused")
                        .await;
                    return;
                }
            }
        }
        let store = engine.store().clone();
        if self.identity == Identity::Anonymous
            && let Err(e) = self.state.admit_anonymous(self.peer)
        {
            self.send(error(&e, "", "")).await;
            self.close(close_code::GOING_AWAY, "rate limited").await;
            return;
        }
        let floor = store.log_floor().await.unwrap_or(Seq::ZERO);
        let head = store.head().await.unwrap_or(Seq::ZERO);
        let resume = hello.resume.unwrap_or_default();
        let claimed = Seq(resume.watermark);
        let (start, reset) = if claimed > head {
            (Seq::ZERO, Some(ResetReason::UnknownWatermark))
        } else if claimed < floor {
            (claimed, Some(ResetReason::WatermarkTooOld { floor }))
        } else {
            (claimed, None)
        };
        let mut session = engine.open_session(start);
        let session_id = if resume.session_id.is_empty() {
            format!("{:032x}", rand::random::<u128>())
        } else {
            resume.session_id.clone()
        };
        let welcome = wire::Welcome {
            session_id,
            protocol_version: PROTOCOL_VERSION,
            schema_fingerprint: engine.registry().fingerprint().to_owned(),
            watermark: start.0,
            log_floor: floor.0,
            heartbeat_interval_ms: self.state.sync.heartbeat_interval.as_millis() as u32,
            limits: Some(wire::Limits {
                max_frame_bytes: self.state.sync.max_frame_bytes as u32,
                max_subscriptions: protosync_engine::live::session::MAX_SUBSCRIPTIONS_PER_SESSION
                    as u32,
                max_inflight_mutations: self.state.sync.max_inflight_mutations as u32,
                idle_timeout_ms: self.state.sync.idle_timeout.as_millis() as u32,
            }),
        };
        if !self
            .send(server(server_message::Message::Welcome(welcome)))
            .await
        {
            return;
        }
        if !hello.token.is_empty() {
            self.send(auth_ok(&self.identity)).await;
        }
        for subscribe in resume.subscriptions {
            let held = match reset {
                None => Some(
                    subscribe
                        .held
                        .iter()
                        .map(|h| (h.id.clone(), Seq(h.seq)))
                        .collect(),
                ),
                Some(_) => None,
            };
            Box::pin(self.subscribe(
                &mut session,
                subscribe,
                held,
                reset.unwrap_or(ResetReason::NewSubscription),
            ))
            .await;
        }
        self.run(session).await;
    }

    async fn subscribe(
        &self,
        session: &mut Session,
        subscribe: wire::Subscribe,
        held: Option<Vec<(String, Seq)>>,
        reason: ResetReason,
    ) {
        let id = subscribe.subscription_id.clone();
        let engine = &self.state.engine;
        let target = convert::target(engine.registry(), engine.cursor_seal(), &subscribe)
            .and_then(|t| engine.restrict(&self.identity, &t));
        let result = match target {
            Ok(_) if id.is_empty() => Err(EngineError::BadRequest(
                "subscriptionId must not be empty".into(),
            )),
            Ok(target) => session.subscribe(id.clone(), target, held, reason).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.send(error(&e, "", &id)).await;
        }
    }

    async fn run(mut self, mut session: Session) {
        let mut mutations: FuturesUnordered<MutationDone> = FuturesUnordered::new();
        let mut heartbeat = tokio::time::interval(self.state.sync.heartbeat_interval);
        heartbeat.tick().await;
        let mut last_heard = Instant::now();
        let mut keepalive = false;
        let mut closing = self.state.closing.clone();
        loop {
            // At `exp` exactly: the leeway is for checking a token's claims
            // when it is presented, not for keeping it past its end. A token
            // accepted within the leeway after its `exp` pauses at once.
            let expiry = self.identity.expires_at().filter(|_| self.paused.is_none());
            if expiry.is_some_and(super::has_passed) {
                self.pause_expired().await;
                continue;
            }
            let wants = self.paused.is_none()
                && (session.has_news() || self.min_target > session.watermark() || keepalive);
            if wants && self.outbound.capacity() > 0 {
                let force = self.min_target > session.watermark() || keepalive;
                keepalive = false;
                // Boxed, as is handling a message: a connection's task is as
                // large as its largest state, and these are only passing.
                match Box::pin(session.advance(self.min_target, force)).await {
                    Ok(Some(plan)) => {
                        self.state
                            .metrics
                            .transitions_sent
                            .fetch_add(1, Ordering::Relaxed);
                        for frame in transition::frames(
                            &plan,
                            self.codec,
                            transition::TRANSITION_CHUNK_BYTES,
                        ) {
                            if !enqueue(&self.outbound, &self.state, Outbound::Frame(frame)).await {
                                return;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "building a transition failed");
                        self.send(error(&e, "", "")).await;
                        self.close(
                            close_code::GOING_AWAY,
                            "the server cannot follow the commit stream",
                        )
                        .await;
                        return;
                    }
                }
                continue;
            }
            let outbound = self.outbound.clone();
            tokio::select! {
                received = receive(&mut self.incoming, self.codec) => {
                    last_heard = Instant::now();
                    match received {
                        Received::Message(message) => Box::pin(self.handle(&mut session, &mut mutations, message)).await,
                        Received::Undecodable(e, request_id, subscription_id) => {
                            self.send(error_message("BAD_FRAME", &e.to_string(), &request_id, &subscription_id, String::new())).await;
                        }
                        Received::Violation(code, reason) => {
                            self.close(code, reason).await;
                            return;
                        }
                        Received::Closed => return,
                    }
                }
                _ = session.news(), if !wants && self.paused.is_none() => {}
                _ = outbound.reserve(), if wants => {}
                // The writer gave up (the client stopped reading, or the socket died).
                _ = outbound.closed() => return,
                Some((request_id, result)) = mutations.next(), if !mutations.is_empty() => {
                    let message = match &result {
                        Ok(outcome) => {
                            self.min_target = self.min_target.max(outcome.seq);
                            convert::mutation_result(&request_id, outcome)
                        }
                        Err(e) => error(e, &request_id, ""),
                    };
                    if !self.send(message).await {
                        return;
                    }
                }
                _ = sleep_until_epoch(expiry), if expiry.is_some() => self.pause_expired().await,
                _ = async { closing.wait_for(|closing| *closing).await.is_ok() } => {
                    self.close(close_code::GOING_AWAY, "the server is shutting down").await;
                    return;
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > self.state.sync.idle_timeout {
                        self.close(close_code::IDLE_TIMEOUT, "no message within the idle timeout").await;
                        return;
                    }
                    let beat = server(server_message::Message::Heartbeat(wire::Heartbeat { server_time_ms: now_ms(), head_seq: self.state.engine.tail().0 }));
                    if self.outbound.try_reserve().is_ok() {
                        self.send(beat).await;
                    }
                    // Move an idle client's watermark on, so a resume stays cheap.
                    keepalive = self.state.engine.tail() > session.watermark();
                    if self.paused.is_none() && self.identity.jti().is_some_and(|jti| self.state.auth.is_revoked(jti)) {
                        self.pause("TOKEN_REVOKED", "the token was revoked; live updates resume after an authenticate with a fresh token").await;
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        session: &mut Session,
        mutations: &mut FuturesUnordered<MutationDone>,
        message: wire::ClientMessage,
    ) {
        let Some(message) = message.message else {
            self.send(error_message(
                "BAD_FRAME",
                "empty message",
                "",
                "",
                String::new(),
            ))
            .await;
            return;
        };
        match message {
            client_message::Message::Hello(_) => {
                self.send(error_message(
                    "UNEXPECTED_HELLO",
                    "hello is only the first message of a connection",
                    "",
                    "",
                    String::new(),
                ))
                .await;
            }
            client_message::Message::Authenticate(authenticate) => {
                match self.state.auth.credential(&authenticate.token).await {
                    Ok(identity) => {
                        let engine = self.state.engine.clone();
                        if let Err(e) = session
                            .retarget(|target| engine.restrict(&identity, target))
                            .await
                        {
                            self.send(error(&e, "", "")).await;
                            return;
                        }
                        self.identity = identity;
                        self.paused = None;
                        self.send(auth_ok(&self.identity)).await;
                    }
                    Err(e) => {
                        self.send(error_message(e.code, &e.message, "", "", String::new()))
                            .await;
                    }
                }
            }
            client_message::Message::Subscribe(subscribe) => {
                let held = (!subscribe.held.is_empty()).then(|| {
                    subscribe
                        .held
                        .iter()
                        .map(|h| (h.id.clone(), Seq(h.seq)))
                        .collect()
                });
                self.subscribe(session, subscribe, held, ResetReason::NewSubscription)
                    .await;
            }
            client_message::Message::Unsubscribe(unsubscribe) => {
                if let Err(e) = session.unsubscribe(&unsubscribe.subscription_id) {
                    self.send(error(&e, "", &unsubscribe.subscription_id)).await;
                }
            }
            client_message::Message::Mutate(mutate) => {
                // Read before the expiry timer may have fired: never a write at or after `exp`.
                if self.paused.is_none()
                    && self.identity.expires_at().is_some_and(super::has_passed)
                {
                    self.pause_expired().await;
                }
                if let Some(code) = self.paused {
                    self.send(error_message(
                        code,
                        "authenticate with a fresh token first",
                        &mutate.request_id,
                        "",
                        String::new(),
                    ))
                    .await;
                    return;
                }
                if !self.budget.take() {
                    let message = format!(
                        "more than {} mutations per second on this connection",
                        self.state.sync.max_mutations_per_second
                    );
                    self.send(error_message(
                        "RATE_LIMITED",
                        &message,
                        &mutate.request_id,
                        "",
                        String::new(),
                    ))
                    .await;
                    return;
                }
                if mutations.len() >= self.state.sync.max_inflight_mutations {
                    let e = EngineError::LimitExceeded(format!(
                        "{} mutations are already in flight on this connection",
                        self.state.sync.max_inflight_mutations
                    ));
                    self.send(error(&e, &mutate.request_id, "")).await;
                    return;
                }
                let request_id = mutate.request_id.clone();
                match convert::mutation_request(&mutate) {
                    Ok(request) => {
                        // Spawned, not just polled here: a commit in progress
                        // (holding the store's commit lock) must not wait while
                        // this connection is busy sending or building.
                        let engine = self.state.engine.clone();
                        let identity = self.identity.clone();
                        let commit =
                            tokio::spawn(async move { engine.mutate(&identity, &request).await });
                        mutations.push(
                            async move {
                                let result = commit.await.unwrap_or_else(|e| {
                                    Err(EngineError::Internal(format!(
                                        "the mutation task failed: {e}"
                                    )))
                                });
                                (request_id, result)
                            }
                            .boxed(),
                        );
                    }
                    Err(e) => {
                        self.send(error(&e, &request_id, "")).await;
                    }
                }
            }
            client_message::Message::Ping(ping) => {
                self.send(server(server_message::Message::Pong(wire::Pong {
                    nonce: ping.nonce,
                })))
                .await;
            }
        }
    }
}

impl Connection {
    async fn pause_expired(&mut self) {
        self.pause(
            "TOKEN_EXPIRED",
            "the token expired; live updates resume after an authenticate with a fresh token",
        )
        .await;
    }

    async fn pause(&mut self, code: &'static str, message: &str) {
        self.paused = Some(code);
        self.send(error_message(code, message, "", "", String::new()))
            .await;
    }
}

fn auth_ok(identity: &Identity) -> wire::ServerMessage {
    server(server_message::Message::AuthOk(wire::AuthOk {
        expires_at: identity.expires_at().unwrap_or(0),
    }))
}

/// Best effort: the requestId of a mutate and the subscriptionId of a
/// subscribe or unsubscribe in a JSON frame that did not decode.
fn ids_in(text: &str) -> (String, String) {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return Default::default();
    };
    let field = |message: &str, name: &str| {
        json.get(message)
            .and_then(|m| m.get(name))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let subscription = [
        field("subscribe", "subscriptionId"),
        field("unsubscribe", "subscriptionId"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or_default();
    (field("mutate", "requestId"), subscription)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
