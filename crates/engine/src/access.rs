//! What an identity may read and write, from the collections' rules.
//!
//! Services are trusted: rules do not bind them, but an API key may be
//! limited to some collections. End users (and anonymous callers) see a
//! collection only through its read rule and change it only through its
//! write rule; a collection without a rule denies them.

use std::sync::Arc;

use protosync_auth::Identity;
use protosync_core::ErrorCode;
use protosync_query::{Query, QueryRequest, ReadScope};
use protosync_schema::{Collection, Registry};
use protosync_store::{Authorize, WriteAccess, WriteOp};
use serde_json::Value;

use crate::EngineError;
use crate::live::subscription::{Target, TargetRequest};

fn service_may_use(identity: &Identity, collection: &str) -> Result<(), EngineError> {
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
) -> Result<ReadScope, EngineError> {
    if let Identity::Service { .. } = identity {
        service_may_use(identity, &collection.name)?;
        return Ok(ReadScope::Everything);
    }
    let auth = identity.claims();
    let collection = collection.clone();
    Ok(ReadScope::Rule(Arc::new(
        move |doc: &Value| match &collection.rules.read {
            None => false,
            Some(rule) => rule.allows(&auth, &collection.with_proto_names(doc), &Value::Null),
        },
    )))
}

/// `request` compiled for `identity`: its read scope is part of it.
pub fn query(
    identity: &Identity,
    registry: &Registry,
    seal: &protosync_query::CursorSeal,
    request: &QueryRequest,
) -> Result<Query, EngineError> {
    let collection = registry
        .collection(&request.collection)
        .ok_or_else(|| EngineError::UnknownCollection(request.collection.clone()))?;
    let scope = read_scope(identity, collection)?;
    Ok(Query::compile(registry, request, seal, scope)?)
}

/// What a mutation of `ops` by `identity` may write.
pub fn write_access(identity: &Identity, ops: &[WriteOp]) -> Result<WriteAccess, EngineError> {
    if let Identity::Service { .. } = identity {
        for op in ops {
            service_may_use(identity, &op.collection.name)?;
        }
        return Ok(WriteAccess::Trusted);
    }
    let auth = identity.claims();
    Ok(WriteAccess::Checked(Authorize(Arc::new(
        move |_, op: &WriteOp, prev: Option<&Value>, next: Option<&Value>| {
            let Some(rule) = &op.collection.rules.write else {
                return false;
            };
            let named =
                |d: Option<&Value>| d.map_or(Value::Null, |d| op.collection.with_proto_names(d));
            // `doc` is the document as the write leaves it, or, for a delete, as it was.
            rule.allows(&auth, &named(next.or(prev)), &named(prev))
        },
    ))))
}

/// What `identity` may watch of `request`.
pub fn target(
    identity: &Identity,
    registry: &Registry,
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
                scope: read_scope(identity, schema)?,
            }
        }
    })
}

/// The same target, seen by another identity (a refreshed or switched token).
pub fn rescope(
    identity: &Identity,
    target: &Target,
    registry: &Registry,
) -> Result<Target, EngineError> {
    Ok(match target {
        Target::Query(query) => {
            let mut query = query.clone();
            query.scope = read_scope(identity, &query.collection)?;
            Target::Query(query)
        }
        Target::Get { collection, id, .. } => {
            let schema = registry
                .collection(collection)
                .ok_or_else(|| EngineError::UnknownCollection(collection.clone()))?;
            Target::Get {
                collection: collection.clone(),
                id: id.clone(),
                scope: read_scope(identity, schema)?,
            }
        }
    })
}
