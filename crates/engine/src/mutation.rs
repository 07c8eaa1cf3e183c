//! Mutation requests: parsing, limits, validation, idempotency hashing.

use std::sync::Arc;

use protosync_auth::Identity;
use protosync_core::Version;
use protosync_schema::{Collection, Registry, now_ms};
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
    /// An insert may leave it out (or empty): the server makes one (see
    /// [`server_made_id`]) unless the body's id field names it, and the
    /// result carries it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
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
    let mut ops: Vec<WriteOp> = request
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| prepare_op(registry, i, op))
        .collect::<Result<_, _>>()?;
    // Hashed before ids are made: a retry makes other ids, yet asks for
    // the same thing, and gets the first answer (with the first ids).
    let idempotency = idempotency.map(|key| IdempotencyKey {
        key,
        request_hash: request_hash(&identity.principal(), &ops),
    });
    assign_server_ids(&mut ops);
    let accepted_at_ms = now_ms();
    let access = crate::access::write_access(identity, &ops, registry, accepted_at_ms)?;
    Ok(Mutation {
        ops,
        idempotency,
        access,
        accepted_at_ms,
        projection: None,
        audit: Default::default(),
    })
}

/// A new document id: a UUIDv7 (RFC 9562) in its lower-case text form. Its
/// first 48 bits are the Unix time in milliseconds, so ids sort (as bytes,
/// the order of every query without `orderBy`) by creation time, and ids
/// made by one process are strictly increasing; the other 74 bits are random.
pub fn server_made_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Gives each insert that named no id a [`server_made_id`], mirrored into
/// the collection's id field when it has one.
fn assign_server_ids(ops: &mut [WriteOp]) {
    for op in ops.iter_mut().filter(|op| op.id.is_empty()) {
        op.id = server_made_id();
        if let (WriteKind::Insert(doc), Some(id_field)) = (&mut op.kind, &op.collection.id_field)
            && let Some(object) = doc.as_object_mut()
        {
            object.insert(id_field.segments()[0].clone(), Value::String(op.id.clone()));
        }
    }
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
    let id = requested_id(&collection, op, body);
    if !(id.is_empty() && matches!(op, OpRequest::Insert(_))) {
        check_id(&id).map_err(bad)?;
    }
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
                .validate(&id, body.doc.as_ref().unwrap_or(&Value::Null))
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
        id,
        kind,
        expected_version: body.expected_version.map(Version),
    })
}

/// The id the op names: its `id`, or for an insert without one, the
/// body's id field; empty when the server is to make one.
fn requested_id(collection: &Collection, op: &OpRequest, body: &OpBody) -> String {
    if !body.id.is_empty() || !matches!(op, OpRequest::Insert(_)) {
        return body.id.clone();
    }
    let from_id_field = collection.id_field.as_ref().and_then(|field| {
        body.doc
            .as_ref()
            .map(|doc| field.lookup(doc))
            .and_then(Value::as_str)
    });
    from_id_field.unwrap_or_default().to_owned()
}

/// Ids are non-empty UTF-8 without control characters, at most
/// [`MAX_ID_BYTES`]: they appear in URLs, logs and keys.
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(
            "id must not be empty (only an insert may leave it out, to get a server-made id)"
                .into(),
        );
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
