//! Today's message count across the cluster, for the dashboard ("messages today" on the apps
//! list, an app's page and its Usage page).
//!
//! Each node counts in memory and writes what it counted to the store every few seconds
//! (`tenants::usage`), so the store's total lags the nodes'. Every node therefore also keeps
//! its counts not yet taken by a flush ([`AppUsage::unflushed`]) in the hash
//! `{cluster}:um:{tag}` (fields `_seq`, `_day` and one per app with a count; replaced whole,
//! expiring [`HEARTBEAT_TTL`] after its last write, so a dead node's entry goes away; deleted at
//! a graceful shutdown). It is written within [`CHECK_EVERY`] (200 ms) of a change, and at least
//! every [`REFRESH_EVERY`]. The dashboard's count is then: the store's total, plus every other
//! live node's entry for the same day, plus this node's own unflushed counts taken live.
//!
//! **Never counted twice.** A count is in at most one of the store and a node's entry:
//! 1. a flush takes a node's counts out of `unflushed` (into its in-flight batch), then rewrites
//!    the node's entry without them and waits for Redis to take it ([`announce`]), and only
//!    then writes them to the store ([`Usage::flush_then`]);
//! 2. every write carries a sequence number taken *before* the counts are read, and the script
//!    refuses one older than the entry's (`_seq`), so a write computed before the flush took
//!    the counts and delivered after its announcement cannot bring them back;
//! 3. the reader reads the store first, then Redis, then this node's own counts. A count found
//!    in the store was committed before that read, so its node's entry had already dropped it
//!    (1, 2) before the Redis read; this node's own count had left `unflushed` before its commit.
//!
//! **Missed only briefly.** A count is in neither between its flush's announcement and its
//! commit (one store transaction), or when it was counted on another node less than 200 ms (plus
//! a Redis round trip) before the read. A failed store write puts the counts back into
//! `unflushed`, written to the entry within 200 ms. Counts of a node that died without flushing
//! are lost anyway (the store never gets them); its entry expires with it.
//!
//! **Failures.** When the announcement fails (Redis down or slower than [`ANNOUNCE_TIMEOUT`]),
//! the flush writes to the store anyway (its counts must not wait for Redis): the node's entry may
//! then still hold the flushed counts, counted twice by readers until the next write replaces it
//! (within 200 ms once Redis answers) or it expires ([`HEARTBEAT_TTL`]). When Redis does not
//! answer a reader within [`READ_TIMEOUT`] (500 ms), the page shows this node's figure alone
//! (the store's total and this node's counts), and says so in a warning (at most one per
//! [`WARN_EVERY`]).
//!
//! Bounded: one field per app with unflushed counts on the node (apps the store holds).
//!
//! [`AppUsage::unflushed`]: crate::tenants::AppUsage::unflushed
//! [`Usage::flush_then`]: crate::tenants::Usage::flush_then

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::{Cluster, Inner, Local, HEARTBEAT_EVERY, HEARTBEAT_TTL};
use crate::locks::MutexExt;
use crate::tenants::Usage;

/// How often the loop looks for changed counts.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How often the entry is written when nothing changed (it expires after [`HEARTBEAT_TTL`]).
const REFRESH_EVERY: Duration = HEARTBEAT_EVERY;
/// How long a flush waits for Redis to take its announcement before writing to the store.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the dashboard waits for the other nodes' counts.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// At most one warning about Redis not answering the dashboard's count per this interval.
const WARN_EVERY: Duration = Duration::from_secs(30);

const DAY_FIELD: &str = "_day";

/// The unflushed counts of the node with socket id tag `tag`.
pub fn unflushed_key(cluster: &str, tag: u64) -> String {
    format!("{cluster}:um:{tag}")
}

/// Replaces the entry `KEYS[1]` unless it holds a later write: `ARGV[1]` the sequence number,
/// `ARGV[2]` the TTL in ms, `ARGV[3]` the day, then app id and count pairs. 1 if written.
const WRITE: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], '_seq') or '-1')
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_seq', ARGV[1], '_day', ARGV[3])
for i = 4, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// What was last sent (the loop skips a write that would change nothing).
#[derive(Debug, Default)]
struct Sent {
    seq: u64,
    day: i64,
    counts: Vec<(String, u64)>,
    at: Option<Instant>,
}

/// The writers' shared state.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The last sequence number taken (milliseconds since the epoch at least, so a restarted
    /// node's writes come after its previous life's).
    seq: std::sync::atomic::AtomicU64,
    // Std locks: held to compare or replace a small value, never across an await.
    sent: std::sync::Mutex<Sent>,
    warned: std::sync::Mutex<Option<Instant>>,
}

impl Shared {
    /// The next sequence number (kept below 2^53: Lua compares numbers as doubles).
    fn next_seq(&self, now_millis: i64) -> u64 {
        let floor = u64::try_from(now_millis).unwrap_or(0);
        let previous = self
            .seq
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |last| Some(last.saturating_add(1).max(floor)),
            )
            .unwrap_or(0);
        previous.saturating_add(1).max(floor)
    }
}

/// Writes this node's unflushed counts: always when `force`, else when they changed since the
/// last write or [`REFRESH_EVERY`] has passed. Returns whether Redis took it (or nothing was
/// needed) within `timeout`.
async fn write(inner: &Inner, usage: &Usage, force: bool, timeout: Duration) -> bool {
    let shared = &inner.unflushed;
    // Taken before the counts are read: a later number never carries counts a flush took before.
    let seq = shared.next_seq(inner.clock.now_millis());
    let (day, counts) = usage.unflushed_today();
    {
        let mut sent = shared.sent.lock_or_recover();
        let fresh = sent.at.is_some_and(|at| at.elapsed() < REFRESH_EVERY);
        if !force && fresh && sent.day == day && sent.counts == counts {
            return true;
        }
        if seq > sent.seq {
            *sent = Sent {
                seq,
                day,
                counts: counts.clone(),
                at: Some(Instant::now()),
            };
        }
    }
    let mut command = redis::cmd("EVAL");
    command
        .arg(WRITE)
        .arg(1)
        .arg(unflushed_key(&inner.settings.name, inner.tag))
        .arg(seq)
        .arg(HEARTBEAT_TTL.as_millis() as u64)
        .arg(day);
    for (app_id, count) in &counts {
        command.arg(app_id).arg(*count);
    }
    let mut conn = inner.ops.get();
    let written = match tokio::time::timeout(timeout, command.query_async::<i64>(&mut conn)).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "could not write this node's unflushed message counts");
            false
        }
        Err(_) => false,
    };
    if !written {
        // Sent again at the next check.
        let mut sent = shared.sent.lock_or_recover();
        if sent.seq == seq {
            sent.at = None;
        }
    }
    written
}

/// Writes this node's unflushed counts within [`CHECK_EVERY`] of a change until aborted.
pub(super) async fn unflushed_loop(inner: Arc<Inner>, local: Arc<dyn Local>) {
    let mut interval = tokio::time::interval(CHECK_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        write(&inner, local.usage(), false, super::COMMAND_TIMEOUT).await;
    }
}

/// Removes this node's entry (a graceful shutdown), within `deadline` (and 500 ms).
pub(super) async fn forget(inner: &Inner, deadline: Instant) {
    let mut conn = inner.ops.get();
    let key = unflushed_key(&inner.settings.name, inner.tag);
    let until = deadline.min(Instant::now() + Duration::from_millis(500));
    let _ = tokio::time::timeout_at(
        until,
        redis::cmd("DEL").arg(&key).query_async::<()>(&mut conn),
    )
    .await;
}

impl Cluster {
    /// Called by a usage flush once it took its counts and before it writes them to the store
    /// ([`Usage::flush_then`](crate::tenants::Usage::flush_then)): tells Redis this node's
    /// unflushed counts without them, waiting at most [`ANNOUNCE_TIMEOUT`] (then the flush goes
    /// on; see the module's notes).
    pub async fn announce_unflushed(&self, usage: &Usage) {
        if !write(&self.inner, usage, true, ANNOUNCE_TIMEOUT).await {
            tracing::debug!(
                "a usage flush went on without Redis taking this node's unflushed counts first"
            );
        }
    }

    /// The other live nodes' unflushed message counts of `day` for each of `app_ids` (in that
    /// order, summed over the nodes); `None` when Redis does not answer within 500 ms (said in
    /// a warning). This node's own are not included: the caller takes them live.
    pub async fn unflushed_elsewhere(&self, day: i64, app_ids: &[&str]) -> Option<Vec<u64>> {
        let inner = &self.inner;
        let mut conn = inner.ops.get();
        let read = async {
            let tags: Vec<u64> = redis::cmd("SMEMBERS")
                .arg(super::slots::nodes_key(&inner.settings.name))
                .query_async(&mut conn)
                .await?;
            let others: Vec<u64> = tags.into_iter().filter(|tag| *tag != inner.tag).collect();
            if others.is_empty() || app_ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for tag in &others {
                pipe.cmd("HMGET")
                    .arg(unflushed_key(&inner.settings.name, *tag))
                    .arg(DAY_FIELD)
                    .arg(app_ids);
            }
            pipe.query_async::<Vec<Vec<Option<String>>>>(&mut conn)
                .await
        };
        let rows = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                self.warn_unanswered(&error.to_string());
                return None;
            }
            Err(_) => {
                self.warn_unanswered("no answer within 500 ms");
                return None;
            }
        };
        let mut totals = vec![0u64; app_ids.len()];
        for row in rows {
            let mut values = row.into_iter();
            // Another day's entry (a node not rolled over yet, or rolled over already), or none.
            let entry_day = values.next().flatten().and_then(|d| d.parse::<i64>().ok());
            if entry_day != Some(day) {
                continue;
            }
            for (total, value) in totals.iter_mut().zip(values) {
                if let Some(count) = value.and_then(|v| v.parse::<u64>().ok()) {
                    *total = total.saturating_add(count);
                }
            }
        }
        Some(totals)
    }

    fn warn_unanswered(&self, why: &str) {
        let mut warned = self.inner.unflushed.warned.lock_or_recover();
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                why,
                "Redis did not give the other nodes' message counts: the dashboard's messages \
                 today are this node's view (the store's total and its own counts)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_only_grow_and_start_at_the_clock() {
        let shared = Shared::default();
        let first = shared.next_seq(1_000);
        assert_eq!(first, 1_000);
        assert_eq!(shared.next_seq(1_000), 1_001);
        // A clock stepped back does not take the numbers back.
        assert_eq!(shared.next_seq(10), 1_002);
        assert_eq!(shared.next_seq(5_000), 5_000);
        assert!(shared.next_seq(-1) > 5_000);
    }
}
