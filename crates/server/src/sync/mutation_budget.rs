//! The mutation budget of one connection: a token bucket.

use std::time::Instant;

/// A token bucket for one connection's mutations.
pub(super) struct MutationBudget {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl MutationBudget {
    pub(super) fn new(per_second: u32) -> MutationBudget {
        let per_second = f64::from(per_second.max(1));
        MutationBudget {
            per_second,
            tokens: 2.0 * per_second,
            refilled: Instant::now(),
        }
    }

    pub(super) fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens
            + now.duration_since(self.refilled).as_secs_f64() * self.per_second)
            .min(2.0 * self.per_second);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
