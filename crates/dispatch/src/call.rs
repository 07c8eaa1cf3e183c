//! An action call end to end, the same for every caller: look the action
//! up, validate the arguments, apply its allow rule, answer a retried
//! idempotency key from the store, forward, validate the result, record it.

use std::sync::Arc;
use std::time::Duration;

use protosync_core::{ErrorCode, Seq};
use protosync_engine::limits::MAX_IDEMPOTENCY_KEY_BYTES;
use protosync_engine::{Engine, Identity};
use protosync_schema::Action;
use protosync_store::CallRecord;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::backend::Backends;
use crate::error::CallError;
use crate::forward;

/// The largest answer a backend may send, in bytes: a result travels to
/// the caller whole, like a document (1 MiB).
pub const MAX_RESULT_BYTES: usize = protosync_store::MAX_DOCUMENT_BYTES;

/// How long connecting to a backend may take, within the action's timeout:
/// a backend that does not accept in 5 s is down, not slow.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept per backend host: enough for steady traffic
/// without holding sockets to every backend ever called.
const IDLE_CONNECTIONS_PER_HOST: usize = 32;

/// A call as a caller makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    /// `<full service name>/<Method>`.
    pub action: String,
    /// The rpc's request message in proto3 JSON.
    pub args: Value,
    /// 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes; `None`: every call is forwarded.
    pub idempotency_key: Option<String>,
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// The rpc's response message, canonical proto3 JSON.
    pub result: Value,
    /// The seq of the backend's writes, if it said: read-your-writes waits
    /// for it.
    pub seq: Option<Seq>,
    /// True when this is the recorded outcome of an earlier call with the
    /// same key; the backend was not called now.
    pub duplicate: bool,
}

/// Calls actions for every transport; one per process.
pub struct Dispatcher {
    engine: Arc<Engine>,
    backends: Backends,
    client: reqwest::Client,
}

impl Dispatcher {
    /// A dispatcher for `engine`'s schema, forwarding to `backends` (see
    /// [`Backends::check`] for the check made at start-up).
    pub fn new(engine: Arc<Engine>, backends: Backends) -> Dispatcher {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Only a TLS backend that cannot initialise fails here; the
            // default client then reports it on the first call.
            .unwrap_or_else(|_| reqwest::Client::new());
        Dispatcher {
            engine,
            backends,
            client,
        }
    }

    /// Calls `request.action` as `identity`.
    pub async fn call(
        &self,
        identity: &Identity,
        request: &CallRequest,
    ) -> Result<CallOutcome, CallError> {
        let action = self
            .engine
            .registry()
            .action(&request.action)
            .ok_or_else(|| {
                CallError::new(
                    ErrorCode::UnknownAction,
                    format!("unknown action {:?}", request.action),
                )
            })?
            .clone();
        check_key(request.idempotency_key.as_deref())?;
        let args = action.validate_args(&request.args).map_err(|e| CallError {
            code: ErrorCode::InvalidArgument,
            path: Some(e.path.clone()),
            message: format!("invalid arguments: {e}"),
            backend_code: None,
        })?;
        authorize(&action, identity, &args)?;
        let hash = request_hash(identity, &action.name, &args);
        if let Some(key) = &request.idempotency_key
            && let Some(record) = self.engine.recorded_call(key).await?
        {
            return recorded(&record, &hash, true);
        }
        let outcome = self
            .forward(&action, identity, args, request.idempotency_key.as_deref())
            .await?;
        let Some(key) = &request.idempotency_key else {
            return Ok(outcome);
        };
        let record = CallRecord {
            key: key.clone(),
            request_hash: hash.clone(),
            outcome: json!({
                "result": outcome.result,
                "seq": outcome.seq.map(|s| s.0.to_string()),
            }),
        };
        let stored = self.engine.record_call(record).await?;
        // Another call with this key finished first: answer as it did.
        let raced = stored.request_hash != hash || stored.outcome["result"] != outcome.result;
        recorded(&stored, &hash, raced)
    }

    async fn forward(
        &self,
        action: &Action,
        identity: &Identity,
        args: Value,
        idempotency_key: Option<&str>,
    ) -> Result<CallOutcome, CallError> {
        let backend = self.backends.get(&action.backend).ok_or_else(|| {
            CallError::new(
                ErrorCode::ActionUnavailable,
                format!("backend {:?} is not configured", action.backend),
            )
        })?;
        let request_id = format!("{:032x}", rand::random::<u128>());
        let caller = match identity {
            Identity::Service { .. } => "service",
            Identity::User { .. } | Identity::Anonymous => "client",
        };
        let claims = identity.claims();
        let body = json!({
            "action": action.name,
            "args": args,
            "auth": claims,
            "caller": caller,
            "requestId": request_id,
            "idempotencyKey": idempotency_key,
        });
        let body = serde_json::to_vec(&body)
            .map_err(|e| CallError::new(ErrorCode::Internal, e.to_string()))?;
        let url = format!("{}/{}/{}", backend.url, action.service, action.method);
        tracing::debug!(action = %action.name, %request_id, "forwarding a call");
        let answer = forward::post(
            &self.client,
            backend,
            &action.backend,
            &url,
            body,
            action.timeout,
        )
        .await?;
        let result = action
            .validate_result(&answer.result)
            .map_err(|e| CallError {
                code: ErrorCode::ActionFailed,
                path: Some(e.path.clone()),
                message: format!(
                    "backend {} answered a result that does not fit {}: {e}",
                    action.backend,
                    action.response.full_name()
                ),
                backend_code: None,
            })?;
        let seq = match answer.seq {
            None | Some(0) => None,
            Some(seq) => Some(self.check_seq(&action.backend, Seq(seq)).await?),
        };
        Ok(CallOutcome {
            result,
            seq,
            duplicate: false,
        })
    }

    /// A seq the database has not reached would hold the caller's
    /// read-your-writes wait forever: refuse it.
    async fn check_seq(&self, backend: &str, seq: Seq) -> Result<Seq, CallError> {
        if seq <= self.engine.tail() {
            return Ok(seq);
        }
        let head = self.engine.ready().await?;
        if seq > head {
            return Err(CallError::new(
                ErrorCode::ActionFailed,
                format!(
                    "backend {backend} answered seq {seq}, but the database's newest commit is {head}"
                ),
            ));
        }
        Ok(seq)
    }
}

fn check_key(key: Option<&str>) -> Result<(), CallError> {
    match key {
        Some("") => Err(CallError::new(
            ErrorCode::BadRequest,
            "idempotencyKey must not be empty; leave it out for no key",
        )),
        Some(key) if key.len() > MAX_IDEMPOTENCY_KEY_BYTES => Err(CallError::new(
            ErrorCode::LimitExceeded,
            format!(
                "idempotencyKey is {} bytes; the limit is {MAX_IDEMPOTENCY_KEY_BYTES}",
                key.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Services may call every action; end users only what its rule allows.
fn authorize(action: &Action, identity: &Identity, args: &Value) -> Result<(), CallError> {
    if matches!(identity, Identity::Service { .. }) {
        return Ok(());
    }
    let allowed = action
        .allow
        .as_ref()
        .is_some_and(|rule| rule.allows_call(&identity.claims(), &action.args_for_rule(args)));
    if allowed {
        Ok(())
    } else {
        Err(CallError::new(
            ErrorCode::ActionDenied,
            format!("the allow rule of {} denied this call", action.name),
        ))
    }
}

/// The outcome recorded under a key, or the error for a key reused by
/// another caller or with other arguments.
fn recorded(record: &CallRecord, hash: &str, duplicate: bool) -> Result<CallOutcome, CallError> {
    if record.request_hash != hash {
        return Err(CallError::new(
            ErrorCode::IdempotencyKeyReused,
            format!(
                "idempotency key {:?} was already used for a different call",
                record.key
            ),
        ));
    }
    let seq = record.outcome["seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .map(Seq);
    Ok(CallOutcome {
        result: record.outcome["result"].clone(),
        seq,
        duplicate,
    })
}

/// A hash of who calls what with which (canonical) arguments.
fn request_hash(identity: &Identity, action: &str, args: &Value) -> String {
    let bytes = serde_json::to_vec(&(identity.principal(), action, args)).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
