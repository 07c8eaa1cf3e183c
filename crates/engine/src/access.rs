//! What an identity may read and write, from the collections' rules.
//!
//! Services are trusted: rules do not bind them, but an API key may be
//! limited to some collections. End users (and anonymous callers) see a
//! collection only through its read rule and change it only through its
//! write rule; a collection without a rule denies them.

use std::sync::Arc;

use protosync_auth::Identity;
use protosync_core::ErrorCode;
use protosync_query::Visibility;
use protosync_schema::Collection;
use protosync_store::{Authorize, WriteOp};
use serde_json::Value;

use crate::EngineError;
use crate::live::subscription::Target;

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

/// Which documents of `collection` the identity may read (`None`: all).
pub fn visibility(
    identity: &Identity,
    collection: &Arc<Collection>,
) -> Result<Option<Visibility>, EngineError> {
    if let Identity::Service { .. } = identity {
        service_may_use(identity, &collection.name)?;
        return Ok(None);
    }
    let auth = identity.claims();
    let collection = collection.clone();
    Ok(Some(Visibility(Arc::new(
        move |doc: &Value| match &collection.rules.read {
            None => false,
            Some(rule) => rule.allows(&auth, &collection.with_proto_names(doc), &Value::Null),
        },
    ))))
}

/// The write check for a mutation by `identity` (`None`: allow all).
pub fn write_check(identity: &Identity, ops: &[WriteOp]) -> Result<Option<Authorize>, EngineError> {
    if let Identity::Service { .. } = identity {
        for op in ops {
            service_may_use(identity, &op.collection.name)?;
        }
        return Ok(None);
    }
    let auth = identity.claims();
    Ok(Some(Authorize(Arc::new(
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

/// The same target, seen by `identity`.
pub fn restrict(
    identity: &Identity,
    target: &Target,
    registry: &protosync_schema::Registry,
) -> Result<Target, EngineError> {
    Ok(match target {
        Target::Query(query) => {
            let mut query = query.clone();
            query.visibility = visibility(identity, &query.collection)?;
            Target::Query(query)
        }
        Target::Get { collection, id, .. } => {
            let schema = registry
                .collection(collection)
                .ok_or_else(|| EngineError::UnknownCollection(collection.clone()))?;
            Target::Get {
                collection: collection.clone(),
                id: id.clone(),
                visibility: visibility(identity, schema)?,
            }
        }
    })
}
