//! Bounds `cache_miss` reports: any anonymous client can cause a miss (subscribe to a fresh
//! `cache-` name), so without a bound it could grow the outbox at will. A channel's miss is
//! reported at most once per `interval`, and an app's misses at most `per_second` a second
//! (a token bucket with that burst); the rest are dropped (counted, at debug level).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Channels remembered at most (the oldest half is forgotten beyond it).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub(super) struct MissLimiter {
    interval: Duration,
    per_second: f64,
    channels: HashMap<(Arc<str>, String), Instant>,
    apps: HashMap<Arc<str>, (f64, Instant)>,
    dropped: u64,
}

impl MissLimiter {
    pub(super) fn new(interval: Duration, per_second: u32) -> MissLimiter {
        MissLimiter {
            interval,
            per_second: f64::from(per_second.max(1)),
            channels: HashMap::new(),
            apps: HashMap::new(),
            dropped: 0,
        }
    }

    /// Whether the miss on `channel` of `app` is reported at `now`.
    pub(super) fn admit(&mut self, app: &Arc<str>, channel: &str, now: Instant) -> bool {
        let key = (app.clone(), channel.to_owned());
        if let Some(last) = self.channels.get(&key) {
            if now.duration_since(*last) < self.interval {
                self.dropped += 1;
                return false;
            }
        }
        let (tokens, last) = self
            .apps
            .entry(app.clone())
            .or_insert((self.per_second, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.per_second);
        *last = now;
        if *tokens < 1.0 {
            self.dropped += 1;
            return false;
        }
        *tokens -= 1.0;
        if self.channels.len() >= MAX_REMEMBERED {
            let interval = self.interval;
            self.channels
                .retain(|_, at| now.duration_since(*at) < interval);
            if self.channels.len() >= MAX_REMEMBERED {
                self.channels.clear();
            }
        }
        self.channels.insert(key, now);
        true
    }

    /// Misses not reported since the start.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_channel_per_interval_and_a_rate_per_app() {
        let mut limiter = MissLimiter::new(Duration::from_secs(60), 10);
        let app: Arc<str> = "1".into();
        let other: Arc<str> = "2".into();
        let start = Instant::now();
        assert!(limiter.admit(&app, "cache-a", start));
        assert!(!limiter.admit(&app, "cache-a", start + Duration::from_secs(59)));
        // 1000 distinct channels at once: the burst (10, one already used) passes.
        let admitted = (0..1000)
            .filter(|n| limiter.admit(&app, &format!("cache-{n}"), start))
            .count();
        assert_eq!(admitted, 9);
        // Another app has its own budget.
        assert!(limiter.admit(&other, "cache-x", start));
        // One second later, ten more.
        let later = start + Duration::from_secs(1);
        let admitted = (1000..2000)
            .filter(|n| limiter.admit(&app, &format!("cache-{n}"), later))
            .count();
        assert_eq!(admitted, 10);
        assert!(limiter.admit(&app, "cache-a", start + Duration::from_secs(61)));
        assert_eq!(limiter.dropped(), 1 + 991 + 990);
    }
}
