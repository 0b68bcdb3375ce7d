//! The dashboard's sign-in budgets, shared by every node (`herald_dashboard::SharedBudgets`):
//! one GCRA cell per budget key in Redis, `{cluster}:stats:signin:{key}`, so guesses spread over
//! N nodes get one budget, not N. Each key expires once its budget is whole again (at most the
//! budget's period: an hour for an email), and the dashboard makes a key only after its own
//! in-memory budgets (which cap their keys) let the attempt through, so the keys a stranger can
//! make Redis hold are bounded by what every node's memory holds. Redis unreachable (or slow:
//! [`TAKE_TIMEOUT`]): the in-memory budgets decide alone on each node, and for [`SKIP_AFTER_FAILURE`]
//! Redis is not asked again (a sign-in during an outage waits for one timeout, not three), and
//! meanwhile each node's in-memory budgets allow a 1/N share (N: the live nodes last counted),
//! so N nodes together stay near one budget. The budgets have their own Redis connection
//! (`Inner::ops`, shared with the live figures only), so publishes cannot delay them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::Cluster;
use crate::locks::MutexExt;

/// How long a sign-in waits for Redis before deciding on the in-memory budgets alone.
const TAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// After Redis failed to answer, how long the shared budgets are not asked.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(3);

/// GCRA on Redis's own clock (every node sees the same time). `KEYS[1]`: the cell (the
/// theoretical arrival time, ms); `ARGV[1]`: the emission interval (ms per attempt);
/// `ARGV[2]`: the burst. Answers 0 when the attempt is allowed (and taken), otherwise the ms
/// until it would be. `replicate_commands` is needed before a write that follows `TIME` on
/// Redis 6.2 (it is the default, and deprecated, from 7).
const TAKE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowed_at = tat + interval - interval * burst
if now < allowed_at then return allowed_at - now end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', next - now)
return 0
";

/// The shared sign-in budgets of a cluster.
#[derive(Debug, Clone)]
pub struct SharedSignIn {
    cluster: Cluster,
    script: redis::Script,
    /// Until when Redis is not asked (it failed to answer just before).
    // A std lock: held to read or set an instant.
    skip_until: Arc<Mutex<Option<Instant>>>,
}

impl SharedSignIn {
    /// The budgets on `cluster`'s Redis.
    pub fn new(cluster: Cluster) -> SharedSignIn {
        SharedSignIn {
            cluster,
            script: redis::Script::new(TAKE),
            skip_until: Arc::default(),
        }
    }

    /// The Redis key of budget `key`.
    pub fn key(cluster: &str, key: &str) -> String {
        format!("{cluster}:stats:signin:{key}")
    }

    async fn take_now(&self, key: String, burst: u32, period: Duration) -> Option<Result<(), u64>> {
        if self.skipping() {
            return None;
        }
        let inner = &self.cluster.inner;
        let burst = burst.max(1);
        let interval = (period.as_millis() / u128::from(burst)).max(1);
        let mut conn = inner.ops.get();
        let mut invocation = self
            .script
            .key(SharedSignIn::key(&inner.settings.name, &key));
        invocation.arg(interval as u64).arg(burst);
        let call = invocation.invoke_async::<u64>(&mut conn);
        match tokio::time::timeout(TAKE_TIMEOUT, call).await {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(wait_ms)) => Some(Err(wait_ms.div_ceil(1000))),
            Ok(Err(error)) => {
                tracing::debug!(%error, "the shared sign-in budget did not answer");
                self.skip();
                None
            }
            Err(_) => {
                self.skip();
                None
            }
        }
    }

    fn skipping(&self) -> bool {
        self.skip_until
            .lock_or_recover()
            .is_some_and(|until| Instant::now() < until)
    }

    fn skip(&self) {
        *self.skip_until.lock_or_recover() = Some(Instant::now() + SKIP_AFTER_FAILURE);
    }
}

impl herald_dashboard::SharedBudgets for SharedSignIn {
    fn take(
        &self,
        key: String,
        burst: u32,
        period: Duration,
    ) -> BoxFuture<'_, Option<Result<(), u64>>> {
        Box::pin(self.take_now(key, burst, period))
    }

    fn local_share(&self) -> u32 {
        if !self.skipping() {
            return 1;
        }
        let nodes = self
            .cluster
            .inner
            .live_nodes
            .load(std::sync::atomic::Ordering::Relaxed);
        u32::try_from(nodes).unwrap_or(u32::MAX).max(1)
    }
}
