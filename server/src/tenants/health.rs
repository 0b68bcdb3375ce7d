//! What the node knows about its store's health, for `/ready` and the log: reads (`store`) and
//! writes (`store_writes`, the usage flush and the webhook outbox), each `ok` or `degraded` with
//! the reason and since when. A transition is logged once (warn when it degrades, info when it
//! recovers), never once per failure.

use crate::locks::MutexExt;
use std::sync::Mutex;

use serde::Serialize;

use crate::clock::Clock;

/// One side of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Reads: the revision poll and `/ready`'s probe.
    Reads,
    /// Writes: usage flushes and webhook outbox appends.
    Writes,
}

impl Dependency {
    fn name(self) -> &'static str {
        match self {
            Dependency::Reads => "store",
            Dependency::Writes => "store_writes",
        }
    }
}

/// One dependency's state as `/ready` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyState {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// Why it is degraded (the last error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when it is degraded, Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

#[derive(Debug, Default)]
struct Degraded {
    reads: Option<(String, i64)>,
    writes: Option<(String, i64)>,
}

/// The store's health as seen by this process.
#[derive(Debug)]
pub struct StoreHealth {
    state: Mutex<Degraded>,
    /// Stamps when a dependency degraded.
    clock: Clock,
}

impl StoreHealth {
    /// Every dependency ok; transitions are stamped by `clock`.
    pub fn new(clock: Clock) -> StoreHealth {
        StoreHealth {
            state: Mutex::default(),
            clock,
        }
    }

    /// Records the outcome of a read or a write: `Err(reason)` degrades, `Ok` recovers.
    pub fn record(&self, dependency: Dependency, outcome: Result<(), String>) {
        let mut state = self.state.lock_or_recover();
        let slot = match dependency {
            Dependency::Reads => &mut state.reads,
            Dependency::Writes => &mut state.writes,
        };
        match (outcome, slot.as_mut()) {
            (Ok(()), None) => {}
            (Ok(()), Some((_, since))) => {
                let seconds = (self.clock.now_millis() - *since) / 1000;
                tracing::info!(
                    dependency = dependency.name(),
                    degraded_for_secs = seconds,
                    "the store is ok again"
                );
                *slot = None;
            }
            (Err(reason), Some((last, _))) => *last = reason,
            (Err(reason), None) => {
                tracing::warn!(dependency = dependency.name(), %reason, "the store is degraded");
                *slot = Some((reason, self.clock.now_millis()));
            }
        }
    }

    /// A dependency's state.
    pub fn state(&self, dependency: Dependency) -> DependencyState {
        let state = self.state.lock_or_recover();
        let slot = match dependency {
            Dependency::Reads => &state.reads,
            Dependency::Writes => &state.writes,
        };
        match slot {
            None => DependencyState {
                status: "ok",
                reason: None,
                since: None,
            },
            Some((reason, since)) => DependencyState {
                status: "degraded",
                reason: Some(reason.clone()),
                since: Some(*since),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrades_and_recovers_keeping_the_first_failure_time() {
        let clock = Clock::manual(1_000_000);
        let health = StoreHealth::new(clock.clone());
        assert_eq!(health.state(Dependency::Writes).status, "ok");
        health.record(Dependency::Writes, Err("disk full".into()));
        let first = health.state(Dependency::Writes);
        assert_eq!(first.status, "degraded");
        assert_eq!(first.since, Some(1_000_000));
        clock.set_millis(2_000_000);
        health.record(Dependency::Writes, Err("still full".into()));
        let second = health.state(Dependency::Writes);
        assert_eq!(second.since, first.since);
        assert_eq!(second.reason.as_deref(), Some("still full"));
        assert_eq!(health.state(Dependency::Reads).status, "ok");
        health.record(Dependency::Writes, Ok(()));
        assert_eq!(health.state(Dependency::Writes).status, "ok");
    }
}
