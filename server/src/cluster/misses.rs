//! `cache_miss` webhooks once per cluster. On one node the hub reports a cache channel's miss
//! once until an event is cached for it again; in a cluster each node would report its own, so
//! the node whose subscriber missed reports it only if it wins `SET NX` on
//! `{cluster}:cache:missed:{app}:{channel}` (expiring with [`crate::hub::CACHE_TTL`], as the
//! hub's own bookkeeping would be outlived by nothing longer). The key is removed when an event
//! is cached for the channel (in the publish pipeline, `bus.rs`) and when the channel is
//! vacated cluster-wide (the leave script), so the next miss is reported again.
//!
//! Bound: at most [`MAX_IN_FLIGHT`] reports wait for Redis at once on a node (each at most
//! [`super::COMMAND_TIMEOUT`]), and at most [`MAX_IN_FLIGHT_PER_APP`] of one app, so a tenant
//! whose clients subscribe to fresh cache channels by the thousand (or whose Redis answers
//! slowly) cannot take every other tenant's reports. Past either, a miss is not reported (and
//! its key is not set, so the channel's next miss asks again), as the webhook pipeline drops an
//! app's misses past its rate; the subscriber's answer does not depend on it: the hub has
//! already queued `pusher:cache_miss` for it (`hub/cache.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Cluster, COMMAND_TIMEOUT};
use crate::hub::AppHub;
use crate::locks::MutexExt;
use crate::protocol::{WebhookEvent, WebhookKind};

/// Reports waiting for Redis at most on this node.
pub(super) const MAX_IN_FLIGHT: usize = 1_024;

/// Reports of one app waiting for Redis at most: an eighth of the node's (as for the echo
/// slots, `order.rs`).
pub(super) const MAX_IN_FLIGHT_PER_APP: usize = MAX_IN_FLIGHT / 8;

/// The reports waiting for Redis, in all and per app (an app with none has no entry, so the map
/// holds at most [`MAX_IN_FLIGHT`] apps).
#[derive(Debug, Default, Clone)]
pub(super) struct Budget {
    // A std lock: held to compare and count, never across an await.
    in_flight: Arc<Mutex<InFlight>>,
}

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_app: HashMap<Arc<str>, usize>,
}

/// One report's place in the [`Budget`], given back when dropped (the report ended, or its
/// task was dropped).
#[derive(Debug)]
pub(super) struct Permit {
    budget: Budget,
    app_id: Arc<str>,
}

impl Budget {
    /// A place for a report of app `app_id`, or `None` when [`MAX_IN_FLIGHT`] wait already, or
    /// [`MAX_IN_FLIGHT_PER_APP`] of that app.
    pub(super) fn take(&self, app_id: &Arc<str>) -> Option<Permit> {
        let mut in_flight = self.in_flight.lock_or_recover();
        if in_flight.total >= MAX_IN_FLIGHT {
            return None;
        }
        let mine = in_flight.per_app.get(app_id).copied().unwrap_or(0);
        if mine >= MAX_IN_FLIGHT_PER_APP {
            return None;
        }
        in_flight.per_app.insert(app_id.clone(), mine + 1);
        in_flight.total += 1;
        Some(Permit {
            budget: self.clone(),
            app_id: app_id.clone(),
        })
    }

    /// Reports waiting now: in all, and of app `app_id`.
    #[cfg(test)]
    fn waiting(&self, app_id: &str) -> (usize, usize) {
        let in_flight = self.in_flight.lock_or_recover();
        (
            in_flight.total,
            in_flight.per_app.get(app_id).copied().unwrap_or(0),
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_flight = self.budget.in_flight.lock_or_recover();
        in_flight.total = in_flight.total.saturating_sub(1);
        if let Some(count) = in_flight.per_app.get_mut(&self.app_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.per_app.remove(&self.app_id);
            }
        }
    }
}

/// The prefix of the `cache_miss` report keys of `app_id` (`P:cache:missed:{app}:`).
pub(crate) fn missed_prefix(cluster: &str, app_id: &str) -> String {
    format!("{cluster}:cache:missed:{app_id}:")
}

/// The report key of the channel whose cache key is `cache_key` (`P:cache:{app}:{channel}`).
pub(super) fn missed_key_of(cluster: &str, cache_key: &str) -> Option<String> {
    let rest = cache_key.strip_prefix(&format!("{cluster}:cache:"))?;
    Some(format!("{cluster}:cache:missed:{rest}"))
}

impl Cluster {
    /// Reports a subscriber's miss on cache channel `channel` as a `cache_miss` webhook, unless
    /// another node (or this one) reported it since an event was last cached for it. Runs in
    /// the background; without an answer from Redis the miss is reported (a duplicate rather
    /// than none).
    pub fn report_cache_miss(&self, app: Arc<AppHub>, app_id: &str, channel: &str) {
        if !app.wants(WebhookKind::CacheMiss) {
            return;
        }
        let Some(permit) = self.inner.misses.take(&app.id()) else {
            tracing::debug!(
                app_id,
                "too many cache_miss reports waiting: one not reported"
            );
            return;
        };
        let key = format!(
            "{}{channel}",
            missed_prefix(&self.inner.settings.name, app_id)
        );
        let ttl = u64::try_from(crate::hub::CACHE_TTL.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.inner.users.manager.get();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            let mut command = redis::cmd("SET");
            command.arg(&key).arg(1).arg("NX").arg("PX").arg(ttl);
            let won = command.query_async::<Option<String>>(&mut conn);
            let report = match tokio::time::timeout(COMMAND_TIMEOUT, won).await {
                Ok(Ok(set)) => set.is_some(),
                _ => true,
            };
            if report {
                app.emit(WebhookKind::CacheMiss, || {
                    WebhookEvent::channel(WebhookKind::CacheMiss, &channel)
                });
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_waiting_are_bounded_per_app_and_in_all_and_given_back_when_they_end() {
        let budget = Budget::default();
        let apps: Vec<Arc<str>> = (0..9).map(|n| Arc::from(format!("app-{n}"))).collect();
        let mut permits = Vec::with_capacity(MAX_IN_FLIGHT);
        for _ in 0..MAX_IN_FLIGHT_PER_APP {
            permits.push(budget.take(&apps[0]).expect("room"));
        }
        assert!(
            budget.take(&apps[0]).is_none(),
            "past {MAX_IN_FLIGHT_PER_APP} of one app, its next miss is not reported"
        );
        let other = budget
            .take(&apps[1])
            .expect("another app's miss is still reported");
        drop(other);
        for app in &apps[1..8] {
            for _ in 0..MAX_IN_FLIGHT_PER_APP {
                permits.push(budget.take(app).expect("room for another app"));
            }
        }
        assert_eq!(
            budget.waiting("app-1"),
            (MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_APP)
        );
        assert!(
            budget.take(&apps[8]).is_none(),
            "past {MAX_IN_FLIGHT} in all, a miss is not reported"
        );
        // A report that ends (or whose task is dropped) gives its place back to its app.
        permits.swap_remove(0);
        assert_eq!(
            budget.waiting("app-0"),
            (MAX_IN_FLIGHT - 1, MAX_IN_FLIGHT_PER_APP - 1)
        );
        assert!(budget.take(&apps[8]).is_some(), "room again in all");
        permits.clear();
        assert_eq!(budget.waiting("app-0"), (0, 0));
        assert!(
            budget.in_flight.lock_or_recover().per_app.is_empty(),
            "no entry is kept for an app with nothing waiting"
        );
    }
}
