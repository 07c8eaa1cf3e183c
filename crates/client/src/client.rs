//! The reconnecting client.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protosync_core::ErrorCode;
use protosync_protocol::Codec;
use protosync_protocol::wire::{self, client_message, server_message};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection::{Connection, ConnectionError, Received};
use crate::view::View;

/// Where and how a [`Client`] connects; [`ClientConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/v1/sync`
    pub url: String,
    /// The frame encoding; default JSON (binary protobuf is negotiated by subprotocol).
    pub codec: Codec,
    /// First reconnect delay; doubles per failed attempt up to `max_backoff`.
    /// Each wait is drawn uniformly from [0, delay] (full jitter) so clients
    /// that lost one server do not come back all at once.
    pub initial_backoff: Duration,
    /// The longest reconnect delay; default 10 s.
    pub max_backoff: Duration,
    /// How often to ping the server, so an idle connection is not closed.
    pub ping_interval: Duration,
    /// A token sent in every hello (see [`Client::authenticate`] to change it).
    pub token: Option<String>,
}

impl ClientConfig {
    /// A config for `url` with the defaults: JSON frames, backoff from 100 ms doubling up
    /// to 10 s, a ping every 20 s (a third of the server's idle timeout), no token.
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            codec: Codec::Json,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            token: None,
        }
    }
}

/// What happened, in order, for applications and tests that watch.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A hello was answered: the connection is up; held subscriptions went with the hello,
    /// new ones and unanswered mutations are sent next.
    Connected {
        /// The server's welcome: session, watermark and whether the resume reset the view.
        welcome: wire::Welcome,
    },
    /// Applied to the view; `view` is the state after it.
    Transition {
        /// The transition as received (chunks already assembled).
        transition: wire::Transition,
        /// The whole view after applying it.
        view: View,
    },
    /// An error the server reported (not for a mutation, which gets it back).
    Error(wire::Error),
    /// The server's heartbeat: `head_seq` is the newest commit it has read,
    /// so `head_seq - view.watermark` is how far behind the view is.
    Heartbeat {
        /// The newest commit seq the server has read from its store.
        head_seq: u64,
    },
    /// The connection ended; the client is backing off and will reconnect.
    Disconnected {
        /// Why, for logs: the close frame's reason or the I/O error.
        reason: String,
    },
}

/// Why [`Client::mutate`] did not resolve with a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MutationError {
    /// The server refused the mutation; nothing of it was written.
    #[error("{code}: {message}")]
    Rejected {
        /// The stable error code (`VERSION_CONFLICT`, `PERMISSION_DENIED`, …; docs/protocol.md).
        code: String,
        /// What was wrong, for a person.
        message: String,
        /// The offending field (`ops[1].doc.title`), or empty when the error is not about one.
        path: String,
    },
    /// The client's background task ended before the mutation was answered.
    #[error("the client was shut down")]
    Shutdown,
}

/// Why [`Client::call`] did not resolve with a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The server or the backend refused the call (`ACTION_DENIED`,
    /// `ACTION_FAILED`, `INVALID_ARGUMENT`, …; docs/actions.md).
    #[error("{code}: {message}")]
    Rejected {
        /// The stable error code.
        code: String,
        /// What was wrong, for a person (for `ACTION_FAILED`, the backend's message).
        message: String,
        /// The offending argument field, or empty.
        path: String,
        /// For `ACTION_FAILED` from a backend's error answer: the backend's code, or empty.
        backend_code: String,
    },
    /// The connection dropped before the answer came. Calls are not resent
    /// (the backend may have run it): retry with the same idempotency key
    /// to get the first outcome.
    #[error("the connection dropped before the call was answered")]
    Disconnected,
    /// The client's background task ended before the call was answered.
    #[error("the client was shut down")]
    Shutdown,
}

type CallReply = oneshot::Sender<Result<wire::CallResult, CallError>>;

struct PendingMutation {
    mutate: wire::Mutate,
    reply: Option<oneshot::Sender<Result<wire::MutationResult, MutationError>>>,
    result: Option<wire::MutationResult>,
}

#[derive(Default)]
struct State {
    token: Option<String>,
    view: View,
    subscriptions: BTreeMap<String, wire::Subscribe>,
    pending: BTreeMap<String, PendingMutation>,
    calls: BTreeMap<String, CallReply>,
    session_id: String,
    next_request: u64,
}

enum Command {
    Send(client_message::Message),
    /// Drop the socket and reconnect (as a network failure would).
    Reconnect,
    Shutdown,
}

/// A live connection to a server that outlives its sockets: a view of its
/// subscriptions, resumed after every reconnect, and mutations with read-your-writes.
/// Dropping it stops it.
pub struct Client {
    state: Arc<Mutex<State>>,
    commands: mpsc::UnboundedSender<Command>,
    watermark: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Starts connecting in the background; returns at once.
    pub fn start(config: ClientConfig) -> (Client, mpsc::UnboundedReceiver<ClientEvent>) {
        let state = Arc::new(Mutex::new(State {
            token: config.token.clone(),
            ..State::default()
        }));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let (watermark_tx, watermark) = watch::channel(0);
        let task = tokio::spawn(run(config, state.clone(), command_rx, events, watermark_tx));
        (
            Client {
                state,
                commands,
                watermark,
                task,
            },
            event_rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes; the result arrives in a transition.
    pub fn subscribe(&self, id: &str, query: wire::Query) {
        self.subscribe_to(wire::Subscribe {
            subscription_id: id.to_owned(),
            target: Some(wire::subscribe::Target::Query(query)),
            held: Vec::new(),
        });
    }

    /// Subscribes to one document by id; the view holds it (or nothing) under `id`.
    pub fn subscribe_get(&self, id: &str, collection: &str, doc_id: &str) {
        let get = wire::Get {
            collection: collection.to_owned(),
            id: doc_id.to_owned(),
        };
        self.subscribe_to(wire::Subscribe {
            subscription_id: id.to_owned(),
            target: Some(wire::subscribe::Target::Get(get)),
            held: Vec::new(),
        });
    }

    fn subscribe_to(&self, subscribe: wire::Subscribe) {
        self.lock()
            .subscriptions
            .insert(subscribe.subscription_id.clone(), subscribe.clone());
        let _ = self
            .commands
            .send(Command::Send(client_message::Message::Subscribe(subscribe)));
    }

    /// Ends a subscription and drops its documents from the view at once.
    pub fn unsubscribe(&self, id: &str) {
        {
            let mut state = self.lock();
            state.subscriptions.remove(id);
            state.view.drop_subscription(id);
        }
        let _ = self
            .commands
            .send(Command::Send(client_message::Message::Unsubscribe(
                wire::Unsubscribe {
                    subscription_id: id.to_owned(),
                },
            )));
    }

    /// Runs a mutation. Resolves once the server committed it and this
    /// client's view includes the commit; survives reconnects (resent with
    /// the same idempotency key).
    pub async fn mutate(
        &self,
        ops: Vec<wire::Operation>,
    ) -> Result<wire::MutationResult, MutationError> {
        let (reply, done) = oneshot::channel();
        let mutate = {
            let mut state = self.lock();
            state.next_request += 1;
            // Zero-padded so resends (in key order) go out in the order sent.
            let request_id = format!("m{:012}", state.next_request);
            let mutate = wire::Mutate {
                request_id: request_id.clone(),
                idempotency_key: format!("{:032x}", rand::random::<u128>()),
                ops,
            };
            state.pending.insert(
                request_id,
                PendingMutation {
                    mutate: mutate.clone(),
                    reply: Some(reply),
                    result: None,
                },
            );
            mutate
        };
        let _ = self
            .commands
            .send(Command::Send(client_message::Message::Mutate(mutate)));
        done.await.unwrap_or(Err(MutationError::Shutdown))
    }

    /// Calls `action` (`<full service name>/<Method>`) with `args`. Resolves
    /// with the result once this client's view has reached the seq of the
    /// backend's writes, if it returned one (read-your-writes).
    pub async fn call(
        &self,
        action: &str,
        args: serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<wire::CallResult, CallError> {
        let (reply, done) = oneshot::channel();
        let call = {
            let mut state = self.lock();
            state.next_request += 1;
            let request_id = format!("c{:012}", state.next_request);
            state.calls.insert(request_id.clone(), reply);
            wire::Call {
                request_id,
                action: action.to_owned(),
                args: Some(protosync_protocol::json_to_struct(&args)),
                idempotency_key: idempotency_key.unwrap_or_default().to_owned(),
            }
        };
        let _ = self
            .commands
            .send(Command::Send(client_message::Message::Call(call)));
        let result = done.await.unwrap_or(Err(CallError::Shutdown))?;
        self.wait_for_watermark(result.seq).await;
        Ok(result)
    }

    /// A copy of the current view.
    pub fn view(&self) -> View {
        self.lock().view.clone()
    }

    /// Waits until the view is at `seq` or later.
    pub async fn wait_for_watermark(&self, seq: u64) {
        let mut watermark = self.watermark.clone();
        let _ = watermark.wait_for(|w| *w >= seq).await;
    }

    /// Replaces the token on the live connection (and for reconnects).
    pub fn authenticate(&self, token: &str) {
        self.lock().token = Some(token.to_owned());
        let _ = self
            .commands
            .send(Command::Send(client_message::Message::Authenticate(
                wire::Authenticate {
                    token: token.to_owned(),
                },
            )));
    }

    /// Waits until the view satisfies `condition` (checked after every
    /// transition).
    pub async fn wait_until(&self, condition: impl Fn(&View) -> bool) {
        let mut transitions = self.watermark.clone();
        loop {
            if condition(&self.view()) {
                return;
            }
            if transitions.changed().await.is_err() {
                return;
            }
        }
    }

    /// Drops the connection; the client reconnects and resumes.
    pub fn reconnect(&self) {
        let _ = self.commands.send(Command::Reconnect);
    }

    /// Closes the connection and stops reconnecting; the view stays as it was.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// Builders for mutation operations.
#[allow(
    clippy::needless_pass_by_value,
    reason = "JSON builders take the value, so a call site reads `json!({..})` without a borrow"
)]
pub mod op {
    use protosync_protocol::json_to_struct;
    use protosync_protocol::wire::{Operation, Write, operation};

    fn write(collection: &str, id: &str) -> Write {
        Write {
            collection: collection.to_owned(),
            id: id.to_owned(),
            ..Default::default()
        }
    }

    /// Creates a document; fails with `ALREADY_EXISTS` if `id` is taken. `doc` is the whole
    /// document, a JSON object.
    pub fn insert(collection: &str, id: &str, doc: serde_json::Value) -> Operation {
        Operation {
            op: Some(operation::Op::Insert(Write {
                doc: Some(json_to_struct(&doc)),
                ..write(collection, id)
            })),
        }
    }

    /// Creates a document with an id the server makes (a UUIDv7, time-ordered) unless
    /// `doc`'s id field names one; the mutation result's `results[i].id` carries it.
    pub fn insert_new(collection: &str, doc: serde_json::Value) -> Operation {
        insert(collection, "", doc)
    }

    /// Creates the document or replaces it whole.
    pub fn upsert(collection: &str, id: &str, doc: serde_json::Value) -> Operation {
        Operation {
            op: Some(operation::Op::Upsert(Write {
                doc: Some(json_to_struct(&doc)),
                ..write(collection, id)
            })),
        }
    }

    /// Sets the given top-level fields of an existing document and keeps the others; fails
    /// with `NOT_FOUND` if there is none.
    pub fn patch(collection: &str, id: &str, fields: serde_json::Value) -> Operation {
        Operation {
            op: Some(operation::Op::Patch(Write {
                fields: Some(json_to_struct(&fields)),
                ..write(collection, id)
            })),
        }
    }

    /// Deletes an existing document; fails with `NOT_FOUND` if there is none.
    pub fn delete(collection: &str, id: &str) -> Operation {
        Operation {
            op: Some(operation::Op::Delete(write(collection, id))),
        }
    }
}

async fn run(
    config: ClientConfig,
    state: Arc<Mutex<State>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<ClientEvent>,
    watermark: watch::Sender<u64>,
) {
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut backoff = config.initial_backoff;
    loop {
        // Resume the subscriptions the view holds; subscribe afresh to the rest.
        let (resume, fresh) = {
            let state = lock();
            let (held, fresh): (Vec<wire::Subscribe>, Vec<wire::Subscribe>) = state
                .subscriptions
                .values()
                .cloned()
                .partition(|s| state.view.subscriptions.contains_key(&s.subscription_id));
            let held: Vec<wire::Subscribe> = held
                .into_iter()
                .map(|mut s| {
                    s.held = state.view.subscriptions[&s.subscription_id].held();
                    s
                })
                .collect();
            let resume = (state.view.watermark > 0 || !held.is_empty()).then(|| wire::Resume {
                session_id: state.session_id.clone(),
                watermark: state.view.watermark,
                subscriptions: held,
            });
            (resume, fresh)
        };
        let mut active: HashSet<String> = resume
            .iter()
            .flat_map(|r| r.subscriptions.iter().map(|s| s.subscription_id.clone()))
            .collect();
        let token = lock().token.clone();
        let (mut connection, welcome) = match Connection::connect_with_token(
            &config.url,
            config.codec,
            resume,
            token,
        )
        .await
        {
            Ok(pair) => pair,
            Err(e) => {
                let _ = events.send(ClientEvent::Disconnected {
                    reason: e.to_string(),
                });
                let wait = rand::rng().random_range(Duration::ZERO..=backoff);
                backoff = (backoff * 2).min(config.max_backoff);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    command = commands.recv() => if matches!(command, None | Some(Command::Shutdown)) { return },
                }
                continue;
            }
        };
        backoff = config.initial_backoff;
        let resend: Vec<wire::Mutate> = {
            let mut state = lock();
            state.session_id = welcome.session_id.clone();
            if welcome.watermark != state.view.watermark {
                // The server did not take our watermark: every subscription is reset.
                state.view.watermark = welcome.watermark;
            }
            state
                .pending
                .values()
                .filter(|p| p.result.is_none())
                .map(|p| p.mutate.clone())
                .collect()
        };
        let _ = events.send(ClientEvent::Connected { welcome });
        let mut failed = None;
        let messages = fresh
            .into_iter()
            .map(client_message::Message::Subscribe)
            .chain(resend.into_iter().map(client_message::Message::Mutate));
        for message in messages {
            match &message {
                client_message::Message::Subscribe(s) => {
                    active.insert(s.subscription_id.clone());
                }
                client_message::Message::Mutate(m) => {
                    active.insert(mutation_key(&m.request_id));
                }
                _ => {}
            }
            if let Err(e) = connection.send(message).await {
                failed = Some(e);
                break;
            }
        }
        let reason = match failed {
            Some(e) => e.to_string(),
            None => {
                serve(
                    &mut connection,
                    &config,
                    &state,
                    &mut commands,
                    &events,
                    &watermark,
                    &mut active,
                )
                .await
            }
        };
        connection.close().await;
        for (_, reply) in std::mem::take(&mut lock().calls) {
            let _ = reply.send(Err(CallError::Disconnected));
        }
        if reason == "shutdown" {
            return;
        }
        let _ = events.send(ClientEvent::Disconnected { reason });
    }
}

/// Mutations share the per-connection "already sent" set with subscriptions,
/// under a prefix no subscription id can collide with.
fn mutation_key(request_id: &str) -> String {
    format!("\0mutation:{request_id}")
}

/// Runs one connection until it fails; returns why.
async fn serve(
    connection: &mut Connection,
    config: &ClientConfig,
    state: &Arc<Mutex<State>>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &mpsc::UnboundedSender<ClientEvent>,
    watermark: &watch::Sender<u64>,
    active: &mut HashSet<String>,
) -> String {
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut ping = tokio::time::interval(config.ping_interval);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Shutdown) => return "shutdown".into(),
                Some(Command::Reconnect) => return "reconnect requested".into(),
                Some(Command::Send(message)) => {
                    // Subscriptions queued before this connection went out with its hello.
                    // Mutations queued before this connection were resent with its hello.
                    let needed = match &message {
                        client_message::Message::Subscribe(s) => active.insert(s.subscription_id.clone()),
                        client_message::Message::Unsubscribe(u) => active.remove(&u.subscription_id),
                        client_message::Message::Mutate(m) => active.insert(mutation_key(&m.request_id)),
                        _ => true,
                    };
                    if needed
                        && let Err(e) = connection.send(message).await { return e.to_string() }
                }
            },
            _ = ping.tick() => {
                if let Err(e) = connection.send(client_message::Message::Ping(wire::Ping::default())).await { return e.to_string() }
            }
            received = connection.receive() => {
                let received = match received {
                    Ok(received) => received,
                    Err(ConnectionError::Closed(close)) => return format!("closed {close:?}"),
                    Err(e) => return e.to_string(),
                };
                match received {
                    Received::Transition(mut transition) => {
                        let mut state = lock();
                        // Updates for a subscription dropped meanwhile are stale.
                        let wanted: HashSet<String> = state.subscriptions.keys().cloned().collect();
                        transition.updates.retain(|u| wanted.contains(&u.subscription_id));
                        if let Err(e) = state.view.apply(&transition) {
                            return format!("inconsistent transition: {e}");
                        }
                        let to = transition.to_watermark;
                        watermark.send_replace(to);
                        let _ = events.send(ClientEvent::Transition { transition, view: state.view.clone() });
                        let done: Vec<String> = state.pending.iter().filter(|(_, p)| p.result.as_ref().is_some_and(|r| r.seq <= to)).map(|(id, _)| id.clone()).collect();
                        for id in done {
                            if let Some(mut pending) = state.pending.remove(&id)
                                && let (Some(reply), Some(result)) = (pending.reply.take(), pending.result.take()) {
                                    let _ = reply.send(Ok(result));
                                }
                        }
                    }
                    Received::Other(message) => match message.message {
                        Some(server_message::Message::Heartbeat(beat)) => {
                            let _ = events.send(ClientEvent::Heartbeat { head_seq: beat.head_seq });
                        }
                        Some(server_message::Message::MutationResult(result)) => {
                            let mut state = lock();
                            let visible = result.seq <= state.view.watermark;
                            if let Some(mut pending) = state.pending.remove(&result.request_id) {
                                if visible {
                                    if let Some(reply) = pending.reply.take() {
                                        let _ = reply.send(Ok(result));
                                    }
                                } else {
                                    pending.result = Some(result);
                                    state.pending.insert(pending.mutate.request_id.clone(), pending);
                                }
                            }
                        }
                        Some(server_message::Message::CallResult(result)) => {
                            if let Some(reply) = lock().calls.remove(&result.request_id) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Some(server_message::Message::Error(error)) => {
                            let mut state = lock();
                            if let Some(reply) = state.calls.remove(&error.request_id) {
                                let _ = reply.send(Err(CallError::Rejected { code: error.code, message: error.message, path: error.path, backend_code: error.backend_code }));
                            } else if let Some(mut pending) = state.pending.remove(&error.request_id) {
                                if let Some(reply) = pending.reply.take() {
                                    let _ = reply.send(Err(MutationError::Rejected { code: error.code, message: error.message, path: error.path }));
                                }
                            } else {
                                // The server refused the subscription (it keeps the
                                // first one of a duplicate id).
                                if !error.subscription_id.is_empty() && error.code != ErrorCode::DuplicateSubscription.as_str() {
                                    state.subscriptions.remove(&error.subscription_id);
                                    state.view.drop_subscription(&error.subscription_id);
                                }
                                let _ = events.send(ClientEvent::Error(error));
                            }
                        }
                        _ => {}
                    },
                }
            }
        }
    }
}
