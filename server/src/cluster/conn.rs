//! A Redis connection that is replaced when it goes silently dead.
//!
//! redis's `ConnectionManager` reconnects when its connection is dropped or refused, but not
//! after a response timeout (a timeout asks for an immediate retry, on the same connection).
//! A connection whose packets are lost (a partition, a NAT or conntrack entry gone, the Redis
//! host replaced at the same address) therefore stays dead until the kernel gives up on it,
//! about 15 minutes: the heartbeat fails on every beat meanwhile and the other nodes clean this
//! live node up. [`Conn`] holds the current manager; callers take it for each operation
//! ([`Conn::get`]) and may report how it went ([`Conn::get_tracked`], then [`Conn::succeeded`],
//! [`Conn::failed`], [`Conn::timed_out`]); after [`TIMEOUTS_BEFORE_REPLACING`] timeouts in a
//! row (the heartbeat's and the watchdog's PINGs, [`watch_loop`], counted together), the
//! manager is replaced by a fresh one (made lazily). A refused or dropped connection is left to
//! the manager, which reconnects by itself.
//!
//! Each manager has a generation, and a report names the generation its operation ran on: an
//! operation still in flight on a replaced manager (a PING sent just before the replacement)
//! that ends late says nothing about its successor, so its report is ignored ([`Streak`])
//! rather than counted against the new manager, resetting its count, or replacing it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;
use tokio::time::Instant;

use super::{Inner, COMMAND_TIMEOUT};
use crate::locks::MutexExt;

/// Timeouts in a row after which a connection is replaced.
const TIMEOUTS_BEFORE_REPLACING: u32 = 2;

/// How often the watchdog pings each connection.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// At most one warning about replaced connections per this interval (per connection).
const REPLACE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One of the node's Redis connections, replaced when it times out: cheap to clone.
#[derive(Clone)]
pub(super) struct Conn {
    shared: Arc<Shared>,
}

struct Shared {
    /// What the connection is for (in the log).
    name: &'static str,
    client: redis::Client,
    config: ConnectionManagerConfig,
    current: ArcSwap<Current>,
    // A std lock: taken for each report, to compare generations and count (never across an
    // await; a replacement, under it, only makes a lazy manager).
    streak: Mutex<Streak>,
    /// Managers replaced since the start.
    replaced: AtomicU64,
    // A std lock: taken only when a manager is replaced, to compare and set an instant.
    logged: Mutex<(Option<Instant>, u64)>,
}

/// The current manager and its generation, swapped together.
struct Current {
    manager: ConnectionManager,
    generation: Generation,
}

/// Which manager an operation ran on (see [`Conn::get_tracked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Generation(u64);

/// What a report does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Nothing more (counted, reset, or ignored as stale).
    Keep,
    /// This report reached [`TIMEOUTS_BEFORE_REPLACING`]: replace the manager.
    Replace,
}

/// The timeouts in a row on the current generation; reports of an older one are ignored.
#[derive(Debug, Default)]
struct Streak {
    generation: u64,
    timeouts: u32,
}

impl Streak {
    /// An operation on `on` was answered (or refused by Redis itself): the count starts again.
    fn answered(&mut self, on: Generation) {
        if on.0 == self.generation {
            self.timeouts = 0;
        }
    }

    /// An operation on `on` timed out; only the report that reaches the threshold replaces (not
    /// every one past it, nor one about a manager already replaced).
    fn timed_out(&mut self, on: Generation) -> Verdict {
        if on.0 != self.generation {
            return Verdict::Keep;
        }
        self.timeouts = self.timeouts.saturating_add(1);
        if self.timeouts == TIMEOUTS_BEFORE_REPLACING {
            Verdict::Replace
        } else {
            Verdict::Keep
        }
    }

    /// The manager was replaced: the next generation, with no timeout yet.
    fn replaced(&mut self) -> Generation {
        self.generation += 1;
        self.timeouts = 0;
        Generation(self.generation)
    }

    /// A replacement could not be made: the count stays below the threshold, so the next
    /// timeout tries again.
    fn not_replaced(&mut self) {
        self.timeouts = TIMEOUTS_BEFORE_REPLACING - 1;
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("name", &self.shared.name)
            .field("replaced", &self.replaced())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A connection made lazily (at first use) from `client` with `config`.
    pub(super) fn new(
        name: &'static str,
        client: &redis::Client,
        config: &ConnectionManagerConfig,
    ) -> Result<Conn, RedisError> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Conn {
            shared: Arc::new(Shared {
                name,
                client: client.clone(),
                config: config.clone(),
                current: ArcSwap::from_pointee(Current {
                    manager,
                    generation: Generation(0),
                }),
                streak: Mutex::new(Streak::default()),
                replaced: AtomicU64::new(0),
                logged: Mutex::new((None, 0)),
            }),
        })
    }

    /// The current manager (a cheap clone): take it again for each operation, or after a
    /// failure in a loop that keeps one.
    pub(super) fn get(&self) -> ConnectionManager {
        self.shared.current.load().manager.clone()
    }

    /// The current manager and its generation, for an operation whose outcome is reported
    /// ([`Conn::succeeded`], [`Conn::failed`], [`Conn::timed_out`] with that generation).
    pub(super) fn get_tracked(&self) -> (ConnectionManager, Generation) {
        let current = self.shared.current.load();
        (current.manager.clone(), current.generation)
    }

    /// Reports an operation on generation `on` that Redis answered.
    pub(super) fn succeeded(&self, on: Generation) {
        self.shared.streak.lock_or_recover().answered(on);
    }

    /// Reports a failed operation on generation `on`: a timeout counts towards replacing the
    /// manager; a refused or dropped connection is left to the manager; an error answered by
    /// Redis resets the count (the connection works).
    pub(super) fn failed(&self, on: Generation, error: &RedisError) {
        if error.is_timeout() {
            self.timed_out(on);
        } else if !error.is_io_error() && !error.is_connection_dropped() {
            self.succeeded(on);
        }
    }

    /// Reports an operation on generation `on` that timed out (our own `tokio::time::timeout`
    /// elapsed).
    pub(super) fn timed_out(&self, on: Generation) {
        let mut streak = self.shared.streak.lock_or_recover();
        if streak.timed_out(on) == Verdict::Replace {
            // Under the lock: a report racing this one sees either the old generation with
            // the count reached, or the new one.
            self.replace(&mut streak, "timeouts in a row");
        }
    }

    /// Managers replaced since the start.
    pub(super) fn replaced(&self) -> u64 {
        self.shared.replaced.load(Ordering::Relaxed)
    }

    /// Replaces the manager with a fresh one (made lazily); operations in flight on the old
    /// one end with their own timeout.
    fn replace(&self, streak: &mut Streak, why: &str) {
        let shared = &self.shared;
        let fresh = match ConnectionManager::new_lazy_with_config(
            shared.client.clone(),
            shared.config.clone(),
        ) {
            Ok(fresh) => fresh,
            Err(error) => {
                streak.not_replaced();
                tracing::warn!(connection = shared.name, %error, "could not make a new redis connection");
                return;
            }
        };
        let generation = streak.replaced();
        shared.current.store(Arc::new(Current {
            manager: fresh,
            generation,
        }));
        let total = shared.replaced.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = shared.logged.lock_or_recover();
        logged.1 += 1;
        let now = Instant::now();
        if logged.0.is_none_or(|at| now >= at + REPLACE_LOG_INTERVAL) {
            tracing::warn!(
                connection = shared.name,
                why,
                replaced = logged.1,
                total,
                "redis connection timed out; replaced by a new one"
            );
            *logged = (Some(now), 0);
        }
    }

    /// Pings the current manager; a PING that times out counts as a timeout (two in a row
    /// replace it). The round trip of a PING answered.
    async fn check(&self) -> Option<std::time::Duration> {
        let (mut conn, on) = self.get_tracked();
        let command = redis::cmd("PING");
        let ping = command.query_async::<()>(&mut conn);
        let sent = Instant::now();
        match tokio::time::timeout(COMMAND_TIMEOUT, ping).await {
            Ok(Ok(())) => {
                self.succeeded(on);
                return Some(sent.elapsed());
            }
            // Counted with the heartbeat's timeouts: one slow answer (a long script, a fork)
            // does not replace every connection at once; two in a row do.
            Ok(Err(error)) if error.is_timeout() => self.timed_out(on),
            // Refused or dropped: the manager reconnects by itself.
            Ok(Err(_)) => {}
            Err(_) => self.timed_out(on),
        }
        None
    }
}

/// Pings each of the node's connections every [`WATCH_EVERY`] until aborted, replacing the
/// ones that time out (so a silently dead connection is gone within a few seconds, before the
/// heartbeat key expires).
/// Each PING answered is a Redis round trip in `/metrics`.
pub(super) async fn watch_loop(inner: Arc<Inner>, local: Arc<dyn super::Local>) {
    let mut interval = tokio::time::interval(WATCH_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let answered = tokio::join!(
            inner.manager.check(),
            inner.ops.check(),
            inner.slots.manager.check(),
            inner.users.manager.check(),
            inner.relay.conn.check(),
        );
        let answered = [answered.0, answered.1, answered.2, answered.3, answered.4];
        for rtt in answered.into_iter().flatten() {
            local.meters().redis_seconds.observe(rtt.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Conn {
        // Nothing listens on port 1; the manager is lazy, so nothing is tried here.
        let client = redis::Client::open("redis://127.0.0.1:1/").expect("a valid url");
        Conn::new("test", &client, &ConnectionManagerConfig::new()).expect("a lazy manager")
    }

    /// Reports a timeout on the current manager.
    fn time_out(conn: &Conn) {
        conn.timed_out(conn.get_tracked().1);
    }

    #[tokio::test]
    async fn two_timeouts_in_a_row_replace_the_manager_once() {
        let conn = unreachable();
        time_out(&conn);
        assert_eq!(conn.replaced(), 0, "one timeout is not enough");
        time_out(&conn);
        assert_eq!(conn.replaced(), 1);
        // The count starts again on the new manager.
        time_out(&conn);
        assert_eq!(conn.replaced(), 1);
        time_out(&conn);
        assert_eq!(conn.replaced(), 2);
    }

    #[tokio::test]
    async fn an_answer_between_two_timeouts_resets_the_count() {
        let conn = unreachable();
        let (_, on) = conn.get_tracked();
        conn.timed_out(on);
        conn.succeeded(on);
        conn.timed_out(on);
        assert_eq!(conn.replaced(), 0);
        // A refused connection is the manager's to handle: it neither counts nor resets.
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        conn.failed(on, &refused);
        assert_eq!(conn.replaced(), 0);
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        conn.failed(on, &timeout);
        assert_eq!(conn.replaced(), 1);
    }

    #[tokio::test]
    async fn late_reports_about_a_replaced_manager_do_not_act_on_its_successor() {
        let conn = unreachable();
        // Three operations in flight on the first manager (a heartbeat and two PINGs).
        let (_, old) = conn.get_tracked();
        conn.timed_out(old);
        conn.timed_out(old);
        assert_eq!(conn.replaced(), 1);
        let (_, new) = conn.get_tracked();
        assert_ne!(old, new, "the successor has its own generation");
        // The third ends late: its timeout is not counted against the successor...
        conn.timed_out(old);
        time_out(&conn);
        assert_eq!(
            conn.replaced(),
            1,
            "a stale timeout and one real one do not replace the successor"
        );
        // ...nor does a late answer from the old manager reset the successor's count.
        conn.succeeded(old);
        let answered = RedisError::from((redis::ErrorKind::Client, "an error answered by Redis"));
        conn.failed(old, &answered);
        time_out(&conn);
        assert_eq!(
            conn.replaced(),
            2,
            "the successor's two timeouts in a row replace it, whatever the old one said"
        );
    }

    #[test]
    fn the_streak_counts_only_its_own_generation_and_replaces_once_per_generation() {
        let mut streak = Streak::default();
        let first = Generation(0);
        assert_eq!(streak.timed_out(first), Verdict::Keep);
        assert_eq!(streak.timed_out(first), Verdict::Replace);
        assert_eq!(
            streak.timed_out(first),
            Verdict::Keep,
            "past the threshold (the replacement is under way): no second one"
        );
        let second = streak.replaced();
        assert_eq!(second, Generation(1));
        assert_eq!(streak.timed_out(first), Verdict::Keep);
        assert_eq!(streak.timed_out(first), Verdict::Keep);
        assert_eq!(streak.timeouts, 0, "stale timeouts are not counted");
        assert_eq!(streak.timed_out(second), Verdict::Keep);
        streak.answered(first);
        assert_eq!(
            streak.timeouts, 1,
            "a stale answer does not reset the count"
        );
        assert_eq!(streak.timed_out(second), Verdict::Replace);
        // A replacement that could not be made: the next timeout tries again.
        streak.not_replaced();
        assert_eq!(streak.timed_out(second), Verdict::Replace);
    }
}
