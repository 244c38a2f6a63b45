//! The per-connection invocation rate limit: a token bucket.

use tokio::time::Instant;

/// What a caller over the limit is told (after the dialect's own preamble).
pub(crate) fn exceeded(rate: u32) -> String {
    format!("Rate limit exceeded: at most {rate} invocations per second per connection.")
}

/// `rate` tokens a second, holding at most twice that (the burst).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `None` for 0 (no limit).
    pub(crate) fn new(rate: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: f64::from(rate),
            tokens: f64::from(rate) * 2.0,
            last: Instant::now(),
        })
    }

    /// Takes a token if there is one.
    pub(crate) fn allow(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
