//! A Redis connection that is replaced when it goes silently dead.
//!
//! redis's `ConnectionManager` reconnects when its connection is dropped or refused, but not
//! after a response timeout (a timeout asks for an immediate retry, on the same connection).
//! A connection whose packets are lost (a partition, a NAT or conntrack entry gone, the Redis
//! host replaced at the same address) therefore stays dead until the kernel gives up on it,
//! about 15 minutes: the heartbeat fails on every beat meanwhile and the other nodes clean this
//! live node up. [`Conn`] holds the current manager; callers take it for each operation
//! ([`Conn::get`]) and may report timeouts ([`Conn::failed`], [`Conn::timed_out`]); after
//! [`TIMEOUTS_BEFORE_REPLACING`] timeouts in a row (the heartbeat's and the watchdog's PINGs,
//! [`watch_loop`], counted together), the manager is replaced by a fresh one (made lazily). A refused or dropped
//! connection is left to the manager, which reconnects by itself.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    current: ArcSwap<ConnectionManager>,
    /// Timeouts reported in a row on the current manager.
    timeouts: AtomicU32,
    /// Managers replaced since the start.
    replaced: AtomicU64,
    // A std lock: taken only when a manager is replaced, to compare and set an instant.
    logged: Mutex<(Option<Instant>, u64)>,
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
                current: ArcSwap::from_pointee(manager),
                timeouts: AtomicU32::new(0),
                replaced: AtomicU64::new(0),
                logged: Mutex::new((None, 0)),
            }),
        })
    }

    /// The current manager (a cheap clone): take it again for each operation, or after a
    /// failure in a loop that keeps one.
    pub(super) fn get(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.shared.current.load())
    }

    /// Reports an operation Redis answered.
    pub(super) fn succeeded(&self) {
        self.shared.timeouts.store(0, Ordering::Relaxed);
    }

    /// Reports a failed operation: a timeout counts towards replacing the manager; a refused
    /// or dropped connection is left to the manager; an error answered by Redis resets the
    /// count (the connection works).
    pub(super) fn failed(&self, error: &RedisError) {
        if error.is_timeout() {
            self.timed_out();
        } else if !error.is_io_error() && !error.is_connection_dropped() {
            self.shared.timeouts.store(0, Ordering::Relaxed);
        }
    }

    /// Reports an operation that timed out (our own `tokio::time::timeout` elapsed).
    pub(super) fn timed_out(&self) {
        let before = self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
        // Only the report that reaches the threshold replaces (not every one past it).
        if before + 1 == TIMEOUTS_BEFORE_REPLACING {
            self.replace("timeouts in a row");
        }
    }

    /// Managers replaced since the start.
    pub(super) fn replaced(&self) -> u64 {
        self.shared.replaced.load(Ordering::Relaxed)
    }

    /// Replaces the manager with a fresh one (made lazily); operations in flight on the old
    /// one end with their own timeout.
    fn replace(&self, why: &str) {
        let shared = &self.shared;
        let fresh = match ConnectionManager::new_lazy_with_config(
            shared.client.clone(),
            shared.config.clone(),
        ) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(connection = shared.name, %error, "could not make a new redis connection");
                return;
            }
        };
        shared.current.store(Arc::new(fresh));
        shared.timeouts.store(0, Ordering::Relaxed);
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
    /// replace it).
    async fn check(&self) {
        let mut conn = self.get();
        let command = redis::cmd("PING");
        let ping = command.query_async::<()>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, ping).await {
            Ok(Ok(())) => self.shared.timeouts.store(0, Ordering::Relaxed),
            // Counted with the heartbeat's timeouts: one slow answer (a long script, a fork)
            // does not replace every connection at once; two in a row do.
            Ok(Err(error)) if error.is_timeout() => self.timed_out(),
            // Refused or dropped: the manager reconnects by itself.
            Ok(Err(_)) => {}
            Err(_) => self.timed_out(),
        }
    }
}

/// Pings each of the node's connections every [`WATCH_EVERY`] until aborted, replacing the
/// ones that time out (so a silently dead connection is gone within a few seconds, before the
/// heartbeat key expires).
pub(super) async fn watch_loop(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(WATCH_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        tokio::join!(
            inner.manager.check(),
            inner.ops.check(),
            inner.slots.manager.check(),
            inner.users.manager.check(),
        );
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

    #[tokio::test]
    async fn two_timeouts_in_a_row_replace_the_manager_once() {
        let conn = unreachable();
        conn.timed_out();
        assert_eq!(conn.replaced(), 0, "one timeout is not enough");
        conn.timed_out();
        assert_eq!(conn.replaced(), 1);
        // The count starts again on the new manager.
        conn.timed_out();
        assert_eq!(conn.replaced(), 1);
        conn.timed_out();
        assert_eq!(conn.replaced(), 2);
    }

    #[tokio::test]
    async fn an_answer_between_two_timeouts_resets_the_count() {
        let conn = unreachable();
        conn.timed_out();
        conn.succeeded();
        conn.timed_out();
        assert_eq!(conn.replaced(), 0);
        // A refused connection is the manager's to handle: it neither counts nor resets.
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        conn.failed(&refused);
        assert_eq!(conn.replaced(), 0);
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        conn.failed(&timeout);
        assert_eq!(conn.replaced(), 1);
    }
}
