//! The token bucket behind `[alerts] rate_limit`, on the clock seam.

use std::time::SystemTime;

/// A token bucket: `rate` tokens per minute, holding at most `rate`.
pub(crate) struct TokenBucket {
    pub(crate) rate: f64,
    tokens: f64,
    at: SystemTime,
}

impl TokenBucket {
    pub(crate) fn new(per_minute: u32, now: SystemTime) -> Self {
        let rate = f64::from(per_minute.max(1));
        Self {
            rate,
            tokens: rate,
            at: now,
        }
    }

    /// Takes a token at `now`; false when none is left.
    pub(crate) fn take(&mut self, now: SystemTime) -> bool {
        let elapsed = now.duration_since(self.at).unwrap_or_default();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate / 60.0).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_up_to_the_rate_then_refills_by_the_minute() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut bucket = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| bucket.take(t0)));
        assert!(!bucket.take(t0));
        // 3 per minute: one token every 20 s.
        assert!(!bucket.take(t0 + Duration::from_secs(19)));
        assert!(bucket.take(t0 + Duration::from_secs(20)));
        // Never more than the rate after a long pause.
        let later = t0 + Duration::from_secs(3_600);
        assert!((0..3).all(|_| bucket.take(later)));
        assert!(!bucket.take(later));
        // A clock that goes back takes nothing and gives nothing.
        assert!(!bucket.take(t0));
    }
}
