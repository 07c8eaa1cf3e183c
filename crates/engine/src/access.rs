//! What an identity may read and write, from the collections' rules.
//!
//! Services are trusted: rules do not bind them, but an API key may be
//! limited to some collections. End users (and anonymous callers) see a
//! collection only through its read rule and change it only through its
//! write rule; a collection without a rule denies them.

use std::sync::Arc;

use protosync_auth::Identity;
use protosync_core::ErrorCode;
use protosync_query::{Query, QueryRequest, ReadRule, ReadScope};
use protosync_schema::{Collection, DocKey, Lookup, Registry, Rule, RuleInput, Verdict, now_ms};
use protosync_store::{Authorize, WriteAccess, WriteOp};
use serde_json::Value;

use crate::EngineError;
use crate::live::subscription::{Target, TargetRequest};

pub(crate) fn service_may_use(identity: &Identity, collection: &str) -> Result<(), EngineError> {
    match identity {
        Identity::Service {
            name,
            collections: Some(allowed),
            ..
        } if !allowed.iter().any(|c| c == collection || c == "*") => Err(EngineError::Forbidden {
            code: ErrorCode::PermissionDenied,
            message: format!("service {name:?} may not use collection {collection:?}"),
        }),
        _ => Ok(()),
    }
}

/// Which documents of `collection` the identity may read.
pub fn read_scope(
    identity: &Identity,
    collection: &Arc<Collection>,
    registry: &Arc<Registry>,
) -> Result<ReadScope, EngineError> {
    if let Identity::Service { .. } = identity {
        service_may_use(identity, &collection.name)?;
        return Ok(ReadScope::Everything);
    }
    Ok(ReadScope::Rule(Arc::new(ReadRuleOf {
        auth: identity.claims(),
        collection: collection.clone(),
        registry: registry.clone(),
    })))
}

/// A collection's read rule bound to one reader's claims.
struct ReadRuleOf {
    auth: Value,
    collection: Arc<Collection>,
    registry: Arc<Registry>,
}

impl ReadRule for ReadRuleOf {
    fn verdict(&self, body: &Value, lookups: &mut dyn FnMut(&DocKey) -> Lookup) -> Verdict {
        let Some(rule) = &self.collection.rules.read else {
            return Verdict::Deny;
        };
        let input = RuleInput {
            auth: &self.auth,
            doc: &self.collection.with_proto_names(body),
            prev: &Value::Null,
            now_ms: now_ms(),
        };
        rule.evaluate(input, &mut |key| {
            proto_named(&self.registry, key, lookups(key))
        })
    }

    fn looks_up(&self) -> bool {
        self.collection
            .rules
            .read
            .as_ref()
            .is_some_and(Rule::looks_up)
    }
}

/// A looked-up document as rules see it: with proto field names.
fn proto_named(registry: &Registry, key: &DocKey, lookup: Lookup) -> Lookup {
    match (lookup, registry.collection(&key.collection)) {
        (Lookup::Found(doc), Some(collection)) => Lookup::Found(collection.with_proto_names(&doc)),
        (Lookup::Found(_), None) => Lookup::Absent,
        (other, _) => other,
    }
}

/// `request` compiled for `identity`: its read scope is part of it.
pub fn query(
    identity: &Identity,
    registry: &Arc<Registry>,
    seal: &protosync_query::CursorSeal,
    request: &QueryRequest,
) -> Result<Query, EngineError> {
    let collection = registry
        .collection(&request.collection)
        .ok_or_else(|| EngineError::UnknownCollection(request.collection.clone()))?;
    let scope = read_scope(identity, collection, registry)?;
    Ok(Query::compile(registry, request, seal, scope)?)
}

/// What a mutation of `ops` by `identity`, accepted at `now_ms` (the rule's
/// `now`), may write.
pub fn write_access(
    identity: &Identity,
    ops: &[WriteOp],
    registry: &Arc<Registry>,
    now_ms: i64,
) -> Result<WriteAccess, EngineError> {
    if let Identity::Service { .. } = identity {
        for op in ops {
            service_may_use(identity, &op.collection.name)?;
        }
        return Ok(WriteAccess::Trusted);
    }
    let auth = identity.claims();
    let registry = registry.clone();
    let now = now_ms;
    Ok(WriteAccess::Checked(Authorize(Arc::new(
        move |index, op: &WriteOp, prev: Option<&Value>, next: Option<&Value>, lookups| {
            let Some(rule) = &op.collection.rules.write else {
                tracing::debug!(collection = %op.collection.name, id = %op.id, op = index, "write denied: the collection has no write rule");
                return Verdict::Deny;
            };
            let named =
                |d: Option<&Value>| d.map_or(Value::Null, |d| op.collection.with_proto_names(d));
            // `doc` is the document as the write leaves it, or, for a delete, as it was.
            let (doc, prev) = (named(next.or(prev)), named(prev));
            let input = RuleInput {
                auth: &auth,
                doc: &doc,
                prev: &prev,
                now_ms: now,
            };
            let verdict =
                rule.evaluate(input, &mut |key| proto_named(&registry, key, lookups(key)));
            if verdict == Verdict::Deny {
                tracing::debug!(collection = %op.collection.name, id = %op.id, op = index, rule = rule.source(), "write denied by the collection's write rule");
            }
            verdict
        },
    ))))
}

/// What `identity` may watch of `request`.
pub fn target(
    identity: &Identity,
    registry: &Arc<Registry>,
    seal: &protosync_query::CursorSeal,
    request: &TargetRequest,
) -> Result<Target, EngineError> {
    Ok(match request {
        TargetRequest::Query(request) => Target::Query(query(identity, registry, seal, request)?),
        TargetRequest::Get { collection, id } => {
            let schema = registry
                .collection(collection)
                .ok_or_else(|| EngineError::UnknownCollection(collection.clone()))?;
            Target::Get {
                collection: collection.clone(),
                id: id.clone(),
                scope: read_scope(identity, schema, registry)?,
            }
        }
    })
}

/// The same target, seen by another identity (a refreshed or switched token).
pub fn rescope(
    identity: &Identity,
    target: &Target,
    registry: &Arc<Registry>,
) -> Result<Target, EngineError> {
    Ok(match target {
        Target::Query(query) => {
            let mut query = query.clone();
            query.scope = read_scope(identity, &query.collection, registry)?;
            Target::Query(query)
        }
        Target::Get { collection, id, .. } => {
            let schema = registry
                .collection(collection)
                .ok_or_else(|| EngineError::UnknownCollection(collection.clone()))?;
            Target::Get {
                collection: collection.clone(),
                id: id.clone(),
                scope: read_scope(identity, schema, registry)?,
            }
        }
    })
}
