//! Between wire messages and engine requests and results.

use protosync_engine::live::session::{ResetReason, TransitionPlan};
use protosync_engine::live::subscription::Target;
use protosync_engine::mutation::{OpBody, OpRequest};
use protosync_engine::{EngineError, MutationRequest};
use protosync_protocol::wire::{self, operation, subscribe};
use protosync_protocol::{json_to_struct, struct_to_json, value_to_json};
use protosync_query::query::{ConditionRequest, OrderRequest};
use protosync_query::{Query, QueryRequest};
use protosync_schema::Registry;
use protosync_store::{CommitOutcome, Seq};

/// A transition is split into frames of about this many (protobuf-encoded)
/// bytes; JSON frames run larger. A single document larger than this still
/// travels whole, in a chunk of its own.
pub const TRANSITION_CHUNK_BYTES: usize = 256 * 1024;

pub fn query_request(query: &wire::Query) -> QueryRequest {
    QueryRequest {
        collection: query.collection.clone(),
        filter: query
            .filter
            .iter()
            .map(|c| ConditionRequest {
                field: c.field.clone(),
                op: c.op.clone(),
                value: c.value.as_ref().map(value_to_json).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
        order_by: query
            .order_by
            .iter()
            .map(|o| OrderRequest { field: o.field.clone(), direction: (!o.direction.is_empty()).then(|| o.direction.clone()) })
            .collect(),
        limit: (query.limit > 0).then_some(u64::from(query.limit)),
        cursor: (!query.cursor.is_empty()).then(|| query.cursor.clone()),
    }
}

/// The subscription's target, checked against the schema.
pub fn target(registry: &Registry, subscribe: &wire::Subscribe) -> Result<Target, EngineError> {
    match &subscribe.target {
        Some(subscribe::Target::Query(query)) => Ok(Target::Query(Query::compile(registry, &query_request(query))?)),
        Some(subscribe::Target::Get(get)) => {
            if registry.collection(&get.collection).is_none() {
                return Err(EngineError::UnknownCollection(get.collection.clone()));
            }
            Ok(Target::Get { collection: get.collection.clone(), id: get.id.clone(), visibility: None })
        }
        None => Err(EngineError::BadRequest("subscribe needs a query or a get".into())),
    }
}

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
                None => Err(EngineError::BadRequest(format!("ops[{i}]: an operation needs insert, upsert, patch or delete"))),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(MutationRequest { idempotency_key: (!mutate.idempotency_key.is_empty()).then(|| mutate.idempotency_key.clone()), ops })
}

pub fn mutation_result(request_id: &str, outcome: &CommitOutcome) -> wire::ServerMessage {
    server(wire::server_message::Message::MutationResult(wire::MutationResult {
        request_id: request_id.to_owned(),
        seq: outcome.seq.0,
        results: outcome.results.iter().map(|r| wire::OpResult { id: r.id.clone(), version: r.version.0 }).collect(),
        duplicate: outcome.duplicate,
    }))
}

pub fn error(e: &EngineError, request_id: &str, subscription_id: &str) -> wire::ServerMessage {
    let path = match e {
        EngineError::InvalidDocument { error, .. } => error.path.clone(),
        _ => String::new(),
    };
    error_message(e.code(), &e.to_string(), request_id, subscription_id, path)
}

pub fn error_message(code: &str, message: &str, request_id: &str, subscription_id: &str, path: String) -> wire::ServerMessage {
    server(wire::server_message::Message::Error(wire::Error {
        code: code.to_owned(),
        message: message.to_owned(),
        request_id: request_id.to_owned(),
        subscription_id: subscription_id.to_owned(),
        path,
    }))
}

pub fn server(message: wire::server_message::Message) -> wire::ServerMessage {
    wire::ServerMessage { message: Some(message) }
}

/// The transition as one or more frames' worth of messages, each of about
/// `chunk_bytes` (use [`TRANSITION_CHUNK_BYTES`]; `usize::MAX` for one).
pub fn transition_chunks(plan: &TransitionPlan, chunk_bytes: usize) -> Vec<wire::ServerMessage> {
    let mut chunks: Vec<Vec<wire::SubscriptionUpdate>> = vec![Vec::new()];
    let mut size = 0;
    for update in &plan.updates {
        let (reason, floor) = match update.reset {
            None => (wire::ResetReason::Unspecified, Seq::ZERO),
            Some(ResetReason::NewSubscription) => (wire::ResetReason::NewSubscription, Seq::ZERO),
            Some(ResetReason::WatermarkTooOld { floor }) => (wire::ResetReason::WatermarkTooOld, floor),
            Some(ResetReason::NoHeldState) => (wire::ResetReason::NoHeldState, Seq::ZERO),
            Some(ResetReason::UnknownWatermark) => (wire::ResetReason::UnknownWatermark, Seq::ZERO),
        };
        let mut part = wire::SubscriptionUpdate {
            subscription_id: update.subscription_id.clone(),
            reset: update.reset.is_some(),
            reset_reason: reason as i32,
            log_floor: floor.0,
            upserts: Vec::new(),
            removes: update.diff.removes.clone(),
            order: update.diff.order.clone().map(|ids| wire::ResultOrder { ids }),
        };
        size += prost::Message::encoded_len(&part);
        for doc in &update.diff.upserts {
            let document = wire::Document { id: doc.id.clone(), version: doc.version.0, seq: doc.seq.0, doc: Some(json_to_struct(&doc.body)) };
            let doc_size = prost::Message::encoded_len(&document);
            if size.saturating_add(doc_size) > chunk_bytes && (!part.upserts.is_empty() || !chunks.last().is_some_and(Vec::is_empty)) {
                let full = std::mem::replace(&mut part, wire::SubscriptionUpdate { subscription_id: update.subscription_id.clone(), ..Default::default() });
                chunks.last_mut().expect("never empty").push(full);
                chunks.push(Vec::new());
                size = 0;
            }
            size += doc_size;
            part.upserts.push(document);
        }
        chunks.last_mut().expect("never empty").push(part);
    }
    let count = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, updates)| {
            server(wire::server_message::Message::Transition(wire::Transition {
                from_watermark: plan.from.0,
                to_watermark: plan.to.0,
                updates,
                chunk: i as u32,
                chunks: count,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use protosync_engine::live::session::{SubscriptionUpdate, TransitionPlan};
    use protosync_engine::live::subscription::ViewDiff;
    use protosync_engine::live::LiveDocument;
    use protosync_store::{Seq, Version};
    use serde_json::json;

    use super::*;

    #[test]
    fn large_transitions_split_into_chunks_that_carry_everything() {
        let doc = |i: usize| LiveDocument { id: format!("d{i}"), version: Version(1), seq: Seq(3), body: Arc::new(json!({"title": "x".repeat(100_000)})) };
        let plan = TransitionPlan {
            from: Seq(2),
            to: Seq(3),
            updates: vec![SubscriptionUpdate {
                subscription_id: "big".into(),
                reset: Some(ResetReason::NewSubscription),
                diff: ViewDiff { upserts: (0..10).map(doc).collect(), removes: vec![], order: Some((0..10).map(|i| format!("d{i}")).collect()) },
            }],
        };
        let chunks = transition_chunks(&plan, TRANSITION_CHUNK_BYTES);
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        let mut ids = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let Some(wire::server_message::Message::Transition(t)) = &chunk.message else { panic!() };
            assert_eq!((t.from_watermark, t.to_watermark, t.chunk, t.chunks), (2, 3, i as u32, chunks.len() as u32));
            assert!(prost::Message::encoded_len(t) < 2 * TRANSITION_CHUNK_BYTES);
            ids.extend(t.updates.iter().flat_map(|u| u.upserts.iter().map(|d| d.id.clone())));
        }
        assert_eq!(ids.len(), 10);
        assert_eq!(transition_chunks(&plan, usize::MAX).len(), 1);
    }
}
