//! Latency figures from receipts: what every latency in a result file
//! means is decided here, once.

use serde_json::{Value, json};

use crate::stamp::Receipt;

/// (p50, p95, p99, max) of `samples` in ms, nearest-rank; sorts them.
pub(crate) fn percentiles(samples: &mut [f64]) -> Value {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    json!({"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": at(1.0), "samples": samples.len()})
}

/// Latency of the receipts of measured commits (commit number ≥ `warmup`),
/// and how many arrived of the `subscribers × commits` a system that never
/// coalesces would deliver. The warm-up is cut by the commit number each
/// receipt carries, so a subscriber that is late does not lose measured
/// receipts to another's warm-up.
pub(crate) fn latency(
    receipts: &[Receipt],
    warmup: u64,
    subscribers: usize,
    commits: usize,
) -> Value {
    let mut measured: Vec<f64> = receipts
        .iter()
        .filter(|r| r.commit >= warmup)
        .map(|r| r.latency_ms)
        .collect();
    let count = measured.len();
    json!({
        "latency_ms": percentiles(&mut measured),
        "receipts": count,
        "receipts_expected": subscribers * commits,
    })
}

/// `a / b` of two JSON numbers, or null when either is missing or b is 0.
pub(crate) fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}
