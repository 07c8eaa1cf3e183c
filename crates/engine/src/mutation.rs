//! Mutation requests: parsing, limits, validation, idempotency hashing.

use std::sync::Arc;

use protosync_auth::Identity;
use protosync_core::Version;
use protosync_schema::Registry;
use protosync_store::{IdempotencyKey, Mutation, WriteKind, WriteOp};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{EngineError, op_location};
use crate::limits::{MAX_ID_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_OPS_PER_MUTATION};

/// `{"idempotencyKey"?, "ops": [{"insert"|"upsert"|"patch"|"delete": {...}}]}`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutationRequest {
    /// Makes a retry safe: the same key and ops from the same caller get the first result
    /// and write nothing. 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes; absent: no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// 1 to [`MAX_OPS_PER_MUTATION`] operations, applied in order as one atomic commit.
    pub ops: Vec<OpRequest>,
}

/// One operation of a mutation, as `{"<kind>": {...}}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum OpRequest {
    /// Creates a document (`doc`); `ALREADY_EXISTS` if the id is taken.
    Insert(OpBody),
    /// Creates the document or replaces it whole (`doc`).
    Upsert(OpBody),
    /// Sets the top-level `fields` of an existing document; `NOT_FOUND` if there is none.
    Patch(OpBody),
    /// Deletes an existing document; `NOT_FOUND` if there is none.
    Delete(OpBody),
}

/// What an operation writes, and where.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpBody {
    /// The collection.
    pub collection: String,
    /// The document id: 1 to [`MAX_ID_BYTES`] bytes, no control characters.
    pub id: String,
    /// Insert and upsert only: the whole document, a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
    /// Patch only: the top-level fields to set, a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Value>,
    /// The op fails with `VERSION_CONFLICT` unless the document has this version then.
    /// A uint64: a JSON number or a decimal string (proto3 JSON).
    #[serde(
        default,
        deserialize_with = "uint64",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected_version: Option<u64>,
}

pub(crate) fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(value) => protosync_core::proto3_json::integer(&value)
            .and_then(|n| u64::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("expected a non-negative integer")),
    }
}

/// Validates `request` against the schema and the limits.
/// The mutation carries `identity`'s write access, and its idempotency key
/// is bound to it: another caller reusing the key gets
/// IDEMPOTENCY_KEY_REUSED, not the recorded answer.
pub fn prepare(
    registry: &Arc<Registry>,
    request: &MutationRequest,
    identity: &Identity,
) -> Result<Mutation, EngineError> {
    if request.ops.is_empty() {
        return Err(EngineError::BadRequest(
            "a mutation needs at least one op".into(),
        ));
    }
    if request.ops.len() > MAX_OPS_PER_MUTATION {
        return Err(EngineError::LimitExceeded(format!(
            "{} ops in one mutation; the limit is {MAX_OPS_PER_MUTATION}",
            request.ops.len()
        )));
    }
    let idempotency = match &request.idempotency_key {
        None => None,
        Some(key) if key.is_empty() => {
            return Err(EngineError::BadRequest(
                "idempotencyKey must not be empty".into(),
            ));
        }
        Some(key) if key.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
            return Err(EngineError::LimitExceeded(format!(
                "idempotencyKey is {} bytes; the limit is {MAX_IDEMPOTENCY_KEY_BYTES}",
                key.len()
            )));
        }
        Some(key) => Some(key.clone()),
    };
    let ops: Vec<WriteOp> = request
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| prepare_op(registry, i, op))
        .collect::<Result<_, _>>()?;
    let idempotency = idempotency.map(|key| IdempotencyKey {
        key,
        request_hash: request_hash(&identity.principal(), &ops),
    });
    let access = crate::access::write_access(identity, &ops, registry)?;
    Ok(Mutation {
        ops,
        idempotency,
        access,
        projection: None,
    })
}

fn prepare_op(registry: &Registry, index: usize, op: &OpRequest) -> Result<WriteOp, EngineError> {
    let location = op_location(index);
    let (body, name) = match op {
        OpRequest::Insert(b) => (b, "insert"),
        OpRequest::Upsert(b) => (b, "upsert"),
        OpRequest::Patch(b) => (b, "patch"),
        OpRequest::Delete(b) => (b, "delete"),
    };
    let bad = |message: String| EngineError::BadRequest(format!("{location}{message}"));
    let collection = registry
        .collection(&body.collection)
        .ok_or_else(|| EngineError::UnknownCollection(body.collection.clone()))?
        .clone();
    check_id(&body.id).map_err(bad)?;
    let invalid = |error| EngineError::InvalidDocument {
        location: location.clone(),
        error,
    };
    let needs = |what: &str, present: bool, absent: &[(&str, bool)]| -> Result<(), EngineError> {
        if !present && !what.is_empty() {
            return Err(bad(format!("{name} needs \"{what}\"")));
        }
        match absent.iter().find(|(_, given)| *given) {
            Some((field, _)) => Err(bad(format!("{name} does not take \"{field}\""))),
            None => Ok(()),
        }
    };
    let (has_doc, has_fields) = (body.doc.is_some(), body.fields.is_some());
    let kind = match op {
        OpRequest::Insert(_) | OpRequest::Upsert(_) => {
            needs("doc", has_doc, &[("fields", has_fields)])?;
            let doc = collection
                .validate(&body.id, body.doc.as_ref().unwrap_or(&Value::Null))
                .map_err(invalid)?;
            if matches!(op, OpRequest::Insert(_)) {
                WriteKind::Insert(doc)
            } else {
                WriteKind::Upsert(doc)
            }
        }
        OpRequest::Patch(_) => {
            needs("fields", has_fields, &[("doc", has_doc)])?;
            WriteKind::Patch(
                collection
                    .validate_patch(body.fields.as_ref().unwrap_or(&Value::Null))
                    .map_err(invalid)?,
            )
        }
        OpRequest::Delete(_) => {
            needs("", true, &[("doc", has_doc), ("fields", has_fields)])?;
            WriteKind::Delete
        }
    };
    Ok(WriteOp {
        collection,
        id: body.id.clone(),
        kind,
        expected_version: body.expected_version.map(Version),
    })
}

/// Ids are non-empty UTF-8 without control characters, at most
/// [`MAX_ID_BYTES`]: they appear in URLs, logs and keys.
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("id must not be empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "id is {} bytes; the limit is {MAX_ID_BYTES}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("id must not contain control characters".into());
    }
    Ok(())
}

/// A hash of what the mutation asks for, after validation, so a key reused
/// for a different request is told apart from a retry — and a retry that
/// spells the same thing differently (`1` or `"1"`, `owner_id` or `ownerId`)
/// is still a retry.
fn request_hash(principal: &str, ops: &[WriteOp]) -> String {
    let canonical: Vec<Value> = ops
        .iter()
        .map(|op| {
            let (kind, body) = match &op.kind {
                WriteKind::Insert(doc) => ("insert", doc.clone()),
                WriteKind::Upsert(doc) => ("upsert", doc.clone()),
                WriteKind::Patch(fields) => ("patch", fields.to_json()),
                WriteKind::Delete => ("delete", Value::Null),
            };
            serde_json::json!([
                kind,
                op.collection.name,
                op.id,
                op.expected_version.map(|v| v.0),
                body
            ])
        })
        .collect();
    // serde_json maps keep keys sorted, so equal values serialize equally.
    let bytes = serde_json::to_vec(&(principal, canonical)).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
