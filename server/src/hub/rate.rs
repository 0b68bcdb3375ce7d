//! Per-app REST rate limits (governor, burst equal to the rate): backend events per second and
//! read requests per second. A limiter is rebuilt when the app's limit changes.
//!
//! In cluster mode the live nodes share each rate: this node enforces `ceil(rate / nodes)`,
//! the node count set by the cluster every second ([`RateLimits::set_nodes`]; see
//! `cluster::lease` for what that allows). On a single node the count stays 1.

use crate::locks::MutexExt;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::Quota;

use crate::clock::{Clock, RateLimiter};

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Events published through the REST API (one per event, a batch draws one per entry).
    BackendEvents,
    /// Channel and user queries.
    Reads,
}

type Limiter = Arc<(u32, RateLimiter)>;

/// Every app's REST limiters.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Makes the limiters (the system clock's by default).
    clock: Clock,
    // A std mutex: held for a map lookup only.
    limiters: Mutex<HashMap<(Box<str>, Budget), Limiter>>,
    /// The live nodes sharing each rate (0 or 1: alone).
    nodes: AtomicU32,
}

impl RateLimits {
    /// Limits whose limiters read `clock`'s rate clock ([`Clock::rate_limiter`]).
    pub fn new(clock: Clock) -> RateLimits {
        RateLimits {
            clock,
            limiters: Mutex::default(),
            nodes: AtomicU32::new(1),
        }
    }

    /// Cluster mode: `nodes` live nodes share each app's rates from now on.
    pub fn set_nodes(&self, nodes: u32) {
        self.nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    /// This node's part of `rate`: `ceil(rate / live nodes)` (the whole rate on a single node).
    pub fn share(&self, rate: u32) -> u32 {
        rate.div_ceil(self.nodes.load(Ordering::Relaxed).max(1))
    }

    /// Takes `cost` units from app `app_id`'s `budget` at `rate` per second (`None`: unlimited;
    /// this node's [`RateLimits::share`] of it in a cluster). When refused, says how long to wait before retrying; `None` when `cost` is more than a
    /// second's worth and can never pass.
    pub fn check(
        &self,
        app_id: &str,
        budget: Budget,
        rate: Option<u32>,
        cost: u32,
    ) -> Result<(), Option<Duration>> {
        let Some(rate) = rate.and_then(|rate| NonZeroU32::new(self.share(rate))) else {
            return Ok(());
        };
        let limiter = {
            let mut limiters = self.limiters.lock_or_recover();
            let entry = limiters.entry((app_id.into(), budget)).or_insert_with(|| {
                Arc::new((rate.get(), self.clock.rate_limiter(Quota::per_second(rate))))
            });
            if entry.0 != rate.get() {
                *entry = Arc::new((rate.get(), self.clock.rate_limiter(Quota::per_second(rate))));
            }
            entry.clone()
        };
        let Some(cost) = NonZeroU32::new(cost) else {
            return Ok(());
        };
        match limiter.1.check_n(cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(not_until.wait_time_from(limiter.1.clock().now()))),
            Err(_) => Err(None),
        }
    }

    /// Drops the limiters of apps that no longer exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut limiters = self.limiters.lock_or_recover();
        limiters.retain(|(app_id, _), _| keep(app_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_nodes_share_each_rate_rounded_up() {
        let limits = RateLimits::new(Clock::manual(0));
        assert_eq!(limits.share(10), 10, "alone: the whole rate");
        limits.set_nodes(3);
        assert_eq!(limits.share(10), 4);
        assert_eq!(limits.share(1), 1, "never zero");
        // A burst of the share on this node, no more.
        for _ in 0..4 {
            assert!(limits.check("1", Budget::Reads, Some(10), 1).is_ok());
        }
        assert!(limits.check("1", Budget::Reads, Some(10), 1).is_err());
        limits.set_nodes(0);
        assert_eq!(limits.share(10), 10, "0 counts as alone");
    }
}
