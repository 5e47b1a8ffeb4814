//! Token buckets (docs/security.md#rate-limits): each client (a tenant, or an address on a server without keys)
//! may make `rate` requests of a kind per second on average and `burst` at once. A refused request is told how
//! long until its next token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before full ones (the same as absent ones) are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, on average.
    pub rate: f64,
    /// Requests at once, after a quiet while.
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token of `client` at `now`; when none is left, how long until one is.
    pub fn take(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let RateLimit { rate, burst } = self.limit;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| bucket.tokens + rate * now.duration_since(bucket.updated).as_secs_f64() < burst);
        }
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket { tokens: burst, updated: now });
        let refilled = bucket.tokens + rate * now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = refilled.min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = Limiter::new(RateLimit { rate: 2.0, burst: 3.0 });
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take("a", start), Ok(()));
        }
        let wait = limiter.take("a", start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert_eq!(limiter.take("b", start), Ok(()), "clients have their own buckets");
        assert_eq!(limiter.take("a", start + Duration::from_millis(500)), Ok(()));
        assert!(limiter.take("a", start + Duration::from_millis(500)).is_err());
        // A long pause refills up to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.take("a", later), Ok(()));
        }
        assert!(limiter.take("a", later).is_err());
    }

    #[test]
    fn full_buckets_are_pruned_and_behave_as_new_ones() {
        let limiter = Limiter::new(RateLimit { rate: 1.0, burst: 1.0 });
        let start = Instant::now();
        for client in 0..=PRUNE_ABOVE {
            limiter.take(&client.to_string(), start).unwrap();
        }
        assert!(limiter.take("0", start).is_err());
        let later = start + Duration::from_secs(5);
        limiter.take("new", later).unwrap();
        assert!(limiter.buckets.lock().unwrap().len() <= 2);
        assert_eq!(limiter.take("0", later), Ok(()));
    }
}
