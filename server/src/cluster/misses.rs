//! `cache_miss` webhooks once per cluster. On one node the hub reports a cache channel's miss
//! once until an event is cached for it again; in a cluster each node would report its own, so
//! the node whose subscriber missed reports it only if it wins `SET NX` on
//! `{cluster}:cache:missed:{app}:{channel}` (expiring with [`crate::hub::CACHE_TTL`], as the
//! hub's own bookkeeping would be outlived by nothing longer). The key is removed when an event
//! is cached for the channel (in the publish pipeline, `bus.rs`) and when the channel is
//! vacated cluster-wide (the leave script), so the next miss is reported again.
//!
//! Bound: at most [`MAX_IN_FLIGHT`] reports wait for Redis at once (each at most
//! [`super::COMMAND_TIMEOUT`]); past it a miss is not reported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Cluster, COMMAND_TIMEOUT};
use crate::hub::AppHub;
use crate::protocol::{WebhookEvent, WebhookKind};

/// Reports waiting for Redis at most (process-wide).
const MAX_IN_FLIGHT: usize = 1_024;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

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
        if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(
                app_id,
                "too many cache_miss reports waiting: one not reported"
            );
            return;
        }
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
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
