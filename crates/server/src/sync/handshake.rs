//! The opening of a sync connection: the hello (the first message, its
//! protocol version and token), the anonymous rate limit, where a resume
//! starts, the welcome, and the subscriptions a resume brings back. Then
//! the connection runs (connection.rs).

use axum::extract::ws::WebSocket;
use futures::stream::SplitStream;
use protosync_core::{ErrorCode, Seq};
use protosync_engine::Identity;
use protosync_engine::live::view::ResetReason;
use protosync_protocol::wire::{self, client_message, server_message};
use protosync_protocol::{Codec, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use tokio::sync::mpsc;

use super::close_code;
use super::connection::Connection;
use super::convert::{error, error_message, server};
use super::inbound::{Received, receive};
use super::outbound::{Outbound, enqueue};
use crate::AppState;

pub(super) async fn receive_hello(
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
                        ErrorCode::UpgradeRequired,
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

impl Connection {
    /// Answers the hello and, once welcomed, runs the connection.
    pub(super) async fn serve(mut self, hello: wire::Hello) {
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
        if self.identity == Identity::Anonymous
            && let Err(e) = self.state.admit_anonymous(self.peer)
        {
            self.send(error(&e, "", "")).await;
            self.close(close_code::GOING_AWAY, "rate limited").await;
            return;
        }
        let resume = hello.resume.unwrap_or_default();
        let point = match engine.resume_point(Seq(resume.watermark)).await {
            Ok(point) => point,
            Err(e) => {
                self.send(error(&e, "", "")).await;
                self.close(close_code::GOING_AWAY, "the database cannot be read")
                    .await;
                return;
            }
        };
        let (start, floor, reset) = (point.watermark, point.floor, point.reset);
        let mut view = engine.open_view(start);
        let session_id = if resume.session_id.is_empty() {
            format!("{:032x}", rand::random::<u128>())
        } else {
            resume.session_id.clone()
        };
        let welcome = wire::Welcome {
            session_id,
            protocol_version: PROTOCOL_VERSION,
            schema_fingerprint: engine.registry().fingerprint().to_owned(),
            watermark: start.seq().0,
            log_floor: floor.0,
            heartbeat_interval_ms: self.state.sync.heartbeat_interval.as_millis() as u32,
            limits: Some(wire::Limits {
                max_frame_bytes: self.state.sync.max_frame_bytes as u32,
                max_subscriptions: protosync_engine::live::view::MAX_SUBSCRIPTIONS_PER_SESSION
                    as u32,
                max_inflight_mutations: self.state.sync.max_inflight_mutations as u32,
                max_inflight_calls: self.state.sync.max_inflight_calls as u32,
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
                &mut view,
                subscribe,
                held,
                reset.unwrap_or(ResetReason::NewSubscription),
            ))
            .await;
        }
        self.run(view).await;
    }
}

pub(super) fn auth_ok(identity: &Identity) -> wire::ServerMessage {
    server(server_message::Message::AuthOk(wire::AuthOk {
        expires_at: identity.expires_at().unwrap_or(0),
    }))
}
