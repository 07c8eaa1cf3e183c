//! One forwarded call: a signed POST to the backend, answered within the
//! action's timeout, with an answer of at most [`MAX_RESULT_BYTES`]. Turns
//! every way a backend can fail into the code the caller gets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protosync_core::ErrorCode;
use serde_json::Value;

use crate::backend::Backend;
use crate::call::MAX_RESULT_BYTES;
use crate::error::CallError;
use crate::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

/// What a backend answered with a 2xx status.
pub(crate) struct Answer {
    /// The answer's `result`, not validated yet.
    pub result: Value,
    /// The answer's `seq`, if it gave one.
    pub seq: Option<u64>,
}

/// POSTs `body` to `url`, signed with `backend`'s secret.
pub(crate) async fn post(
    client: &reqwest::Client,
    backend: &Backend,
    backend_name: &str,
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, CallError> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = sign(backend.secret(), timestamp, &body);
    let exchange = async {
        let mut response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable_backend(backend_name, &e))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable_backend(backend_name, &e))?
        {
            if bytes.len() + chunk.len() > MAX_RESULT_BYTES {
                return Err(CallError::new(
                    ErrorCode::ActionFailed,
                    format!("backend {backend_name} answered more than {MAX_RESULT_BYTES} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            CallError::new(
                ErrorCode::ActionTimeout,
                format!(
                    "backend {backend_name} did not answer within {} ms",
                    timeout.as_millis()
                ),
            )
        })??;
    read_answer(backend_name, status, &bytes)
}

fn unreachable_backend(backend_name: &str, e: &reqwest::Error) -> CallError {
    // Walk to the root cause: reqwest's own text is only "error sending request".
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    CallError::new(
        ErrorCode::ActionUnavailable,
        format!("backend {backend_name} cannot be reached: {cause}"),
    )
}

fn read_answer(
    backend_name: &str,
    status: reqwest::StatusCode,
    bytes: &[u8],
) -> Result<Answer, CallError> {
    let failed = |message: String| CallError::new(ErrorCode::ActionFailed, message);
    let json: Option<Value> = serde_json::from_slice(bytes).ok();
    if !status.is_success() {
        let error = json.as_ref().and_then(|j| j.get("error"));
        let text = |field: &str| {
            error
                .and_then(|e| e.get(field))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        return Err(match (text("code"), text("message")) {
            (Some(code), message) => CallError {
                code: ErrorCode::ActionFailed,
                message: message.unwrap_or_else(|| code.clone()),
                path: None,
                backend_code: Some(code),
            },
            _ => failed(format!(
                "backend {backend_name} answered {status} without an error object"
            )),
        });
    }
    let Some(Value::Object(mut answer)) = json else {
        return Err(failed(format!(
            "backend {backend_name} answered {status} with a body that is not a JSON object"
        )));
    };
    let seq = match answer.get("seq") {
        None | Some(Value::Null) => None,
        Some(value) => match protosync_core::proto3_json::integer(value) {
            Some(seq) if (0..=i128::from(i64::MAX)).contains(&seq) => Some(seq as u64),
            _ => {
                return Err(failed(format!(
                    "backend {backend_name} answered seq {value}, which is not a seq"
                )));
            }
        },
    };
    let result = answer
        .remove("result")
        .unwrap_or_else(|| Value::Object(Default::default()));
    Ok(Answer { result, seq })
}
