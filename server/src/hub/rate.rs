//! Per-app REST rate limits (governor, burst equal to the rate): backend events per second and
//! read requests per second. A limiter is rebuilt when the app's limit changes.
//!
//! In cluster mode the live nodes share each rate: this node enforces `ceil(rate / nodes)`,
//! the node count set by the cluster every second ([`RateLimits::set_nodes`]; see
//! `cluster::lease` for what that allows). On a single node the count stays 1.
//!
//! Two cluster-only rules keep the share from refusing what the app's rate allows, or from
//! allowing more:
//! - a request costing more than this node's share but no more than the app's rate (a batch
//!   of 10 events at 15/s over 3 nodes) is admitted when the node's bucket is full, and empties
//!   it: the node then waits its share's time (a second) before admitting more, so it passes
//!   its share by at most one such request per second (at most the app's rate);
//! - a limiter rebuilt because the share changed (a node joined or left) starts full only when
//!   the old one was full, else empty: a change in the node count never hands every node a
//!   fresh burst.

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
    /// this node's [`RateLimits::share`] of it in a cluster; a cost above the share and within
    /// the rate takes the whole, full, bucket). When refused, says how long to wait before
    /// retrying; `None` when `cost` is more than the rate's second's worth and can never pass.
    pub fn check(
        &self,
        app_id: &str,
        budget: Budget,
        rate: Option<u32>,
        cost: u32,
    ) -> Result<(), Option<Duration>> {
        let Some(whole) = rate else {
            return Ok(());
        };
        let Some(rate) = NonZeroU32::new(self.share(whole)) else {
            return Ok(());
        };
        let limiter = {
            let mut limiters = self.limiters.lock_or_recover();
            let entry = limiters.entry((app_id.into(), budget)).or_insert_with(|| {
                Arc::new((rate.get(), self.clock.rate_limiter(Quota::per_second(rate))))
            });
            if entry.0 != rate.get() {
                // The old level is not readable; taking its whole burst tells whether it was
                // full (it is dropped anyway). Not full: the new one starts empty.
                let was_full = NonZeroU32::new(entry.0)
                    .is_some_and(|old| matches!(entry.1.check_n(old), Ok(Ok(()))));
                let fresh = self.clock.rate_limiter(Quota::per_second(rate));
                if !was_full {
                    let _ = fresh.check_n(rate);
                }
                *entry = Arc::new((rate.get(), fresh));
            }
            entry.clone()
        };
        let Some(cost) = NonZeroU32::new(cost) else {
            return Ok(());
        };
        // Above the share, within the app's rate: the whole bucket, when full.
        let cost = if cost > rate && cost.get() <= whole {
            rate
        } else {
            cost
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

    #[test]
    fn a_batch_above_the_share_within_the_rate_takes_a_full_bucket() {
        let limits = RateLimits::new(Clock::manual(0));
        limits.set_nodes(3);
        // 15/s over 3 nodes: a share of 5; a batch of 10 passes on a full bucket, once.
        assert!(limits
            .check("1", Budget::BackendEvents, Some(15), 10)
            .is_ok());
        assert!(matches!(
            limits.check("1", Budget::BackendEvents, Some(15), 10),
            Err(Some(_))
        ));
        assert!(limits
            .check("1", Budget::BackendEvents, Some(15), 1)
            .is_err());
        // Above the app's whole rate: never.
        assert_eq!(
            limits.check("2", Budget::BackendEvents, Some(15), 16),
            Err(None)
        );
        // Alone, the rule changes nothing: above the rate never passes.
        limits.set_nodes(1);
        assert_eq!(
            limits.check("3", Budget::BackendEvents, Some(5), 6),
            Err(None)
        );
    }

    #[test]
    fn a_change_in_the_node_count_hands_out_no_fresh_burst() {
        let limits = RateLimits::new(Clock::manual(0));
        // Emptied at 10/s alone.
        for _ in 0..10 {
            assert!(limits.check("1", Budget::Reads, Some(10), 1).is_ok());
        }
        assert!(limits.check("1", Budget::Reads, Some(10), 1).is_err());
        // A second node joins: the share becomes 5, still empty.
        limits.set_nodes(2);
        assert!(limits.check("1", Budget::Reads, Some(10), 1).is_err());
        // A full bucket stays full across the change.
        assert!(limits.check("2", Budget::Reads, Some(10), 0).is_ok());
        limits.set_nodes(3);
        for _ in 0..4 {
            assert!(limits.check("2", Budget::Reads, Some(10), 1).is_ok());
        }
        assert!(limits.check("2", Budget::Reads, Some(10), 1).is_err());
    }
}
