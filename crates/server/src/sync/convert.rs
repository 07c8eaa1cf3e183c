//! Between wire messages and engine requests and results.

use protosync_core::ErrorCode;
use protosync_dispatch::{CallError, CallOutcome, CallRequest};
use protosync_engine::mutation::{OpBody, OpRequest};
use protosync_engine::{EngineError, MutationRequest, TargetRequest};
use protosync_protocol::wire::{self, operation, subscribe};
use protosync_protocol::{json_to_struct, struct_to_json, value_to_json};
use protosync_query::QueryRequest;
use protosync_query::query::{ConditionRequest, OrderRequest};
use protosync_store::CommitOutcome;

/// A wire query as the engine's [`QueryRequest`] (the same fields, in the API's shape).
pub fn query_request(query: &wire::Query) -> QueryRequest {
    QueryRequest {
        collection: query.collection.clone(),
        filter: query
            .filter
            .iter()
            .map(|c| ConditionRequest {
                field: c.field.clone(),
                op: c.op.clone(),
                value: c
                    .value
                    .as_ref()
                    .map(value_to_json)
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect(),
        order_by: query
            .order_by
            .iter()
            .map(|o| OrderRequest {
                field: o.field.clone(),
                direction: (!o.direction.is_empty()).then(|| o.direction.clone()),
            })
            .collect(),
        limit: (query.limit > 0).then_some(u64::from(query.limit)),
        cursor: (!query.cursor.is_empty()).then(|| query.cursor.clone()),
    }
}

/// What the client asks the subscription to watch (the engine decides what
/// its identity may see of it).
/// What a `Subscribe` watches; `BAD_REQUEST` when it has neither a query nor a get.
pub fn target_request(subscribe: &wire::Subscribe) -> Result<TargetRequest, EngineError> {
    match &subscribe.target {
        Some(subscribe::Target::Query(query)) => Ok(TargetRequest::Query(query_request(query))),
        Some(subscribe::Target::Get(get)) => Ok(TargetRequest::Get {
            collection: get.collection.clone(),
            id: get.id.clone(),
        }),
        None => Err(EngineError::BadRequest(
            "subscribe needs a query or a get".into(),
        )),
    }
}

/// A wire `Mutate` as the engine's [`MutationRequest`]; an empty idempotency key is none.
/// `BAD_REQUEST` names an op with no kind.
pub fn mutation_request(mutate: &wire::Mutate) -> Result<MutationRequest, EngineError> {
    let ops = mutate
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let body = |w: &wire::Write| OpBody {
                collection: w.collection.clone(),
                id: w.id.clone(),
                doc: w.doc.as_ref().map(struct_to_json),
                fields: w.fields.as_ref().map(struct_to_json),
                expected_version: w.expected_version,
            };
            match &op.op {
                Some(operation::Op::Insert(w)) => Ok(OpRequest::Insert(body(w))),
                Some(operation::Op::Upsert(w)) => Ok(OpRequest::Upsert(body(w))),
                Some(operation::Op::Patch(w)) => Ok(OpRequest::Patch(body(w))),
                Some(operation::Op::Delete(w)) => Ok(OpRequest::Delete(body(w))),
                None => Err(EngineError::BadRequest(format!(
                    "ops[{i}]: an operation needs insert, upsert, patch or delete"
                ))),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(MutationRequest {
        idempotency_key: (!mutate.idempotency_key.is_empty())
            .then(|| mutate.idempotency_key.clone()),
        ops,
    })
}

/// The `MutationResult` that answers `request_id` with a commit's outcome.
pub fn mutation_result(request_id: &str, outcome: &CommitOutcome) -> wire::ServerMessage {
    server(wire::server_message::Message::MutationResult(
        wire::MutationResult {
            request_id: request_id.to_owned(),
            seq: outcome.seq.0,
            results: outcome
                .results
                .iter()
                .map(|r| wire::OpResult {
                    id: r.id.clone(),
                    version: r.version.0,
                })
                .collect(),
            duplicate: outcome.duplicate,
        },
    ))
}

/// The `Error` message for an engine error, with the field path of an invalid document.
pub fn error(e: &EngineError, request_id: &str, subscription_id: &str) -> wire::ServerMessage {
    let path = match e {
        EngineError::InvalidDocument { error, .. } => error.path.clone(),
        _ => String::new(),
    };
    error_message(e.code(), &e.to_string(), request_id, subscription_id, path)
}

/// An `Error` message with the given code and text, answering a request or subscription
/// (each id empty when it does not).
pub fn error_message(
    code: ErrorCode,
    message: &str,
    request_id: &str,
    subscription_id: &str,
    path: String,
) -> wire::ServerMessage {
    server(wire::server_message::Message::Error(wire::Error {
        code: code.as_str().to_owned(),
        message: message.to_owned(),
        request_id: request_id.to_owned(),
        subscription_id: subscription_id.to_owned(),
        path,
        backend_code: String::new(),
    }))
}

/// A wire `Call` as the dispatcher's request; an empty idempotency key is none.
pub fn call_request(call: &wire::Call) -> CallRequest {
    CallRequest {
        action: call.action.clone(),
        args: call
            .args
            .as_ref()
            .map_or_else(|| serde_json::json!({}), struct_to_json),
        idempotency_key: (!call.idempotency_key.is_empty()).then(|| call.idempotency_key.clone()),
    }
}

/// The `CallResult` or `Error` that answers call `request_id`.
pub fn call_answer(
    request_id: &str,
    answer: &Result<CallOutcome, CallError>,
) -> wire::ServerMessage {
    match answer {
        Ok(outcome) => server(wire::server_message::Message::CallResult(
            wire::CallResult {
                request_id: request_id.to_owned(),
                result: Some(json_to_struct(&outcome.result)),
                seq: outcome.seq.map_or(0, |s| s.0),
                duplicate: outcome.duplicate,
            },
        )),
        Err(e) => server(wire::server_message::Message::Error(wire::Error {
            code: e.code.as_str().to_owned(),
            message: e.message.clone(),
            request_id: request_id.to_owned(),
            subscription_id: String::new(),
            path: e.path.clone().unwrap_or_default(),
            backend_code: e.backend_code.clone().unwrap_or_default(),
        })),
    }
}

/// Wraps one server message in its envelope.
pub fn server(message: wire::server_message::Message) -> wire::ServerMessage {
    wire::ServerMessage {
        message: Some(message),
    }
}
