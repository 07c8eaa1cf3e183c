//! A per-address rate limit for anonymous callers: token buckets keyed by
//! IP, so one address cannot flood a collection its rules open to everyone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses tracked at most; past this the oldest buckets are dropped, so
/// the limiter's memory stays bounded whatever the traffic.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

pub(crate) struct AnonymousLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl AnonymousLimiter {
    pub(crate) fn new(per_minute: u32) -> AnonymousLimiter {
        let per_second = f64::from(per_minute.max(1)) / 60.0;
        AnonymousLimiter {
            per_second,
            burst: (per_second * 10.0).max(10.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's worth from `address`'s bucket.
    pub(crate) fn allow(&self, address: IpAddr) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if buckets.len() >= MAX_TRACKED_ADDRESSES
            && !buckets.contains_key(&address)
            && let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(a, _)| *a)
        {
            buckets.remove(&oldest);
        }
        let (tokens, last) = buckets.entry(address).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_is_limited_and_others_are_not() {
        let limiter = AnonymousLimiter::new(60);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let allowed = (0..50).filter(|_| limiter.allow(a)).count();
        assert_eq!(allowed, 10, "a burst of ten seconds' worth");
        assert!(limiter.allow(b));
    }
}
