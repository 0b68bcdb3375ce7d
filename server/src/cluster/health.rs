//! Redis as `/ready` shows it (`redis: ok|degraded`, with the reason and since when): degraded
//! while the heartbeat, the publishing connection or the pub/sub connection fails. Each
//! transition is logged once (warn when it degrades, info when it recovers).

use std::sync::Mutex;

use crate::clock::Clock;
use crate::locks::MutexExt;
use crate::tenants::DependencyState;

/// What uses Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The heartbeat key.
    Heartbeat,
    /// The publishing connection (forwarding publishes to the other nodes).
    Publish,
    /// The pub/sub connection (receiving the other nodes' publishes).
    Subscribe,
}

impl Part {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Part::Heartbeat => "heartbeat",
            Part::Publish => "publish",
            Part::Subscribe => "subscribe",
        }
    }
}

/// Redis's health as this node sees it.
#[derive(Debug)]
pub struct RedisHealth {
    /// Per [`Part`]: the last error and since when (Unix ms), while it fails.
    parts: Mutex<[Option<(String, i64)>; 3]>,
    clock: Clock,
}

impl RedisHealth {
    /// Everything ok; transitions stamped by `clock`.
    pub fn new(clock: Clock) -> RedisHealth {
        RedisHealth {
            parts: Mutex::default(),
            clock,
        }
    }

    /// Records an outcome: `Err(reason)` degrades `part`, `Ok` recovers it.
    pub fn record(&self, part: Part, outcome: Result<(), String>) {
        let mut parts = self.parts.lock_or_recover();
        let slot = &mut parts[part.index()];
        match (outcome, slot.as_mut()) {
            (Ok(()), None) => {}
            (Ok(()), Some((_, since))) => {
                let seconds = (self.clock.now_millis() - *since) / 1000;
                tracing::info!(
                    part = part.name(),
                    degraded_for_secs = seconds,
                    "redis is ok again"
                );
                *slot = None;
            }
            (Err(reason), Some((last, _))) => *last = reason,
            (Err(reason), None) => {
                tracing::warn!(part = part.name(), %reason, "redis is degraded");
                *slot = Some((reason, self.clock.now_millis()));
            }
        }
    }

    /// The state `/ready` shows: degraded since the earliest failing part, with its reason.
    pub fn state(&self) -> DependencyState {
        let parts = self.parts.lock_or_recover();
        let worst = [Part::Heartbeat, Part::Publish, Part::Subscribe]
            .into_iter()
            .filter_map(|part| {
                parts[part.index()]
                    .as_ref()
                    .map(|(reason, since)| (part, reason, *since))
            })
            .min_by_key(|(_, _, since)| *since);
        match worst {
            None => DependencyState {
                status: "ok",
                reason: None,
                since: None,
            },
            Some((part, reason, since)) => DependencyState {
                status: "degraded",
                reason: Some(format!("{}: {reason}", part.name())),
                since: Some(since),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_while_any_part_fails_since_the_first_failure() {
        let clock = Clock::manual(1_000);
        let health = RedisHealth::new(clock.clone());
        assert_eq!(health.state().status, "ok");
        health.record(Part::Subscribe, Err("connection refused".into()));
        clock.set_millis(2_000);
        health.record(Part::Heartbeat, Err("timed out".into()));
        let state = health.state();
        assert_eq!(state.status, "degraded");
        assert_eq!(state.since, Some(1_000));
        assert_eq!(
            state.reason.as_deref(),
            Some("subscribe: connection refused")
        );
        health.record(Part::Subscribe, Ok(()));
        assert_eq!(health.state().since, Some(2_000));
        health.record(Part::Heartbeat, Ok(()));
        assert_eq!(health.state().status, "ok");
    }
}
