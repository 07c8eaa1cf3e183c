//! One sync connection once it is welcomed: a loop that reads client
//! messages and dispatches them, runs mutations and action calls in their
//! own tasks (a slow backend delays only its own call's answer), sends
//! transitions when there is news and room in the outbound queue, beats the
//! heartbeat, and pauses live updates when the token expires or is revoked.
//! The opening is handshake.rs; the queue and its writer, outbound.rs.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::ws::WebSocket;
use futures::stream::{FuturesUnordered, SplitStream};
use futures::{FutureExt, StreamExt};
use protosync_core::{ErrorCode, Seq};
use protosync_dispatch::{CallError, CallOutcome};
use protosync_engine::live::view::ResetReason;
use protosync_engine::{EngineError, Identity, LiveView};
use protosync_protocol::Codec;
use protosync_protocol::wire::{self, client_message, server_message};
use protosync_store::CommitOutcome;
use tokio::sync::mpsc;

use super::convert::{self, error, error_message, server};
use super::handshake::{auth_ok, receive_hello};
use super::inbound::{Received, receive};
use super::mutation_budget::MutationBudget;
use super::outbound::{Outbound, enqueue, write_frames};
use super::{close_code, sleep_until_epoch, transition};
use crate::AppState;

type MutationDone =
    futures::future::BoxFuture<'static, (String, Result<CommitOutcome, EngineError>)>;
type CallDone = futures::future::BoxFuture<'static, (String, Result<CallOutcome, CallError>)>;

/// What a connection has started and not answered yet.
#[derive(Default)]
struct InFlight {
    mutations: FuturesUnordered<MutationDone>,
    calls: FuturesUnordered<CallDone>,
}

pub(super) async fn run(
    socket: WebSocket,
    codec: Codec,
    state: AppState,
    peer: std::net::SocketAddr,
) {
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

pub(super) struct Connection {
    pub(super) codec: Codec,
    pub(super) state: AppState,
    pub(super) outbound: mpsc::Sender<Outbound>,
    pub(super) incoming: SplitStream<WebSocket>,
    /// Read-your-writes: the next transition must reach at least this seq.
    pub(super) min_target: Seq,
    pub(super) identity: Identity,
    /// Why live updates are paused (the token expired or was revoked) until
    /// a fresh token arrives.
    pub(super) paused: Option<ErrorCode>,
    pub(super) budget: MutationBudget,
    pub(super) peer: std::net::SocketAddr,
}

impl Connection {
    pub(super) async fn send(&self, message: wire::ServerMessage) -> bool {
        enqueue(
            &self.outbound,
            &self.state,
            Outbound::Message(Box::new(message)),
        )
        .await
    }

    pub(super) async fn close(&self, code: u16, reason: &str) {
        enqueue(
            &self.outbound,
            &self.state,
            Outbound::Close(code, reason.to_owned()),
        )
        .await;
    }

    pub(super) async fn subscribe(
        &self,
        view: &mut LiveView,
        subscribe: wire::Subscribe,
        held: Option<Vec<(String, Seq)>>,
        reason: ResetReason,
    ) {
        let id = subscribe.subscription_id.clone();
        let engine = &self.state.engine;
        let target = convert::target_request(&subscribe)
            .and_then(|request| engine.target(&self.identity, &request));
        let result = match target {
            Ok(_) if id.is_empty() => Err(EngineError::BadRequest(
                "subscriptionId must not be empty".into(),
            )),
            Ok(target) => view.subscribe(id.clone(), target, held, reason).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.send(error(&e, "", &id)).await;
        }
    }

    pub(super) async fn run(mut self, mut view: LiveView) {
        let mut in_flight = InFlight::default();
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
                && (view.has_news() || self.min_target > view.watermark().seq() || keepalive);
            if wants && self.outbound.capacity() > 0 {
                let force = self.min_target > view.watermark().seq() || keepalive;
                keepalive = false;
                // Boxed, as is handling a message: a connection's task is as
                // large as its largest state, and these are only passing.
                match Box::pin(view.advance(self.min_target, force)).await {
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
                        Received::Message(message) => Box::pin(self.handle(&mut view, &mut in_flight, message)).await,
                        Received::Undecodable(e, request_id, subscription_id) => {
                            self.send(error_message(ErrorCode::BadFrame, &e.to_string(), &request_id, &subscription_id, String::new())).await;
                        }
                        Received::Violation(code, reason) => {
                            self.close(code, reason).await;
                            return;
                        }
                        Received::Closed => return,
                    }
                }
                _ = view.news(), if !wants && self.paused.is_none() => {}
                _ = outbound.reserve(), if wants => {}
                // The writer gave up (the client stopped reading, or the socket died).
                _ = outbound.closed() => return,
                Some((request_id, answer)) = in_flight.calls.next(), if !in_flight.calls.is_empty() => {
                    if let Ok(CallOutcome { seq: Some(seq), .. }) = &answer {
                        self.min_target = self.min_target.max(*seq);
                    }
                    if !self.send(convert::call_answer(&request_id, &answer)).await {
                        return;
                    }
                }
                Some((request_id, result)) = in_flight.mutations.next(), if !in_flight.mutations.is_empty() => {
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
                    keepalive = self.state.engine.tail() > view.watermark().seq();
                    if self.paused.is_none() && self.identity.jti().is_some_and(|jti| self.state.auth.is_revoked(jti)) {
                        self.pause(ErrorCode::TokenRevoked, "the token was revoked; live updates resume after an authenticate with a fresh token").await;
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        view: &mut LiveView,
        in_flight: &mut InFlight,
        message: wire::ClientMessage,
    ) {
        let Some(message) = message.message else {
            self.send(error_message(
                ErrorCode::BadFrame,
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
                    ErrorCode::UnexpectedHello,
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
                        if let Err(e) = view
                            .retarget(|target| engine.rescope(&identity, target))
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
                self.subscribe(view, subscribe, held, ResetReason::NewSubscription)
                    .await;
            }
            client_message::Message::Unsubscribe(unsubscribe) => {
                if let Err(e) = view.unsubscribe(&unsubscribe.subscription_id) {
                    self.send(error(&e, "", &unsubscribe.subscription_id)).await;
                }
            }
            client_message::Message::Call(call) => {
                if self.refused_while_paused(&call.request_id).await {
                    return;
                }
                if in_flight.calls.len() >= self.state.sync.max_inflight_calls {
                    let e = EngineError::LimitExceeded(format!(
                        "{} action calls are already in flight on this connection",
                        self.state.sync.max_inflight_calls
                    ));
                    self.send(error(&e, &call.request_id, "")).await;
                    return;
                }
                let request = convert::call_request(&call);
                let (actions, identity) = (self.state.actions.clone(), self.identity.clone());
                // Spawned: the backend's time is spent outside this loop.
                let task = tokio::spawn(async move { actions.call(&identity, &request).await });
                let request_id = call.request_id;
                in_flight.calls.push(
                    async move {
                        let answer = task.await.unwrap_or_else(|e| {
                            Err(CallError::from(EngineError::Internal(format!(
                                "the call task failed: {e}"
                            ))))
                        });
                        (request_id, answer)
                    }
                    .boxed(),
                );
            }
            client_message::Message::Mutate(mutate) => {
                if self.refused_while_paused(&mutate.request_id).await {
                    return;
                }
                if !self.budget.take() {
                    let message = format!(
                        "more than {} mutations per second on this connection",
                        self.state.sync.max_mutations_per_second
                    );
                    self.send(error_message(
                        ErrorCode::RateLimited,
                        &message,
                        &mutate.request_id,
                        "",
                        String::new(),
                    ))
                    .await;
                    return;
                }
                if in_flight.mutations.len() >= self.state.sync.max_inflight_mutations {
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
                        let id = request_id.clone();
                        let commit = tokio::spawn(async move {
                            engine.mutate(&identity, &request, Some(&id)).await
                        });
                        in_flight.mutations.push(
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
    /// Refuses request `request_id` while live updates are paused (the
    /// token expired or was revoked). Read before the expiry timer may have
    /// fired: never a write or call at or after `exp`.
    async fn refused_while_paused(&mut self, request_id: &str) -> bool {
        if self.paused.is_none() && self.identity.expires_at().is_some_and(super::has_passed) {
            self.pause_expired().await;
        }
        let Some(code) = self.paused else {
            return false;
        };
        self.send(error_message(
            code,
            "authenticate with a fresh token first",
            request_id,
            "",
            String::new(),
        ))
        .await;
        true
    }

    async fn pause_expired(&mut self) {
        self.pause(
            ErrorCode::TokenExpired,
            "the token expired; live updates resume after an authenticate with a fresh token",
        )
        .await;
    }

    async fn pause(&mut self, code: ErrorCode, message: &str) {
        self.paused = Some(code);
        self.send(error_message(code, message, "", "", String::new()))
            .await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
