//! Idempotency records: what a first attempt returned, kept for retries.

use crate::{CommitOutcome, StoreError};

/// The outcome recorded for an idempotency key, or the error for a key
/// reused with a different request.
pub(crate) fn recorded_outcome(
    key: &str,
    request_hash: &str,
    recorded_hash: &str,
    outcome: &str,
) -> Result<CommitOutcome, StoreError> {
    if recorded_hash != request_hash {
        return Err(StoreError::IdempotencyKeyReused(key.to_owned()));
    }
    let mut outcome: CommitOutcome = serde_json::from_str(outcome)
        .map_err(|e| StoreError::Internal(format!("recorded outcome of key {key:?}: {e}")))?;
    outcome.duplicate = true;
    Ok(outcome)
}

pub(crate) fn encode_outcome(outcome: &CommitOutcome) -> Result<String, StoreError> {
    serde_json::to_string(outcome).map_err(|e| StoreError::Internal(e.to_string()))
}

/// A stored action call, decoded.
pub(crate) fn call_record(
    key: &str,
    request_hash: String,
    outcome: &str,
) -> Result<crate::CallRecord, StoreError> {
    let outcome = serde_json::from_str(outcome)
        .map_err(|e| StoreError::Internal(format!("recorded call of key {key:?}: {e}")))?;
    Ok(crate::CallRecord {
        key: key.to_owned(),
        request_hash,
        outcome,
    })
}
