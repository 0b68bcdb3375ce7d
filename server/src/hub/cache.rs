//! Cache channels: each keeps its last event for [`CACHE_TTL`], replayed to every new
//! subscriber (or `pusher:cache_miss` when there is none), within the app's caps on cached
//! channels and bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::events::Hooks;
use super::{lock, AppHub, AppState, ConnHandle, Subscribed};
use crate::protocol::{server, WebhookEvent, WebhookKind};

/// How long a cache channel keeps its last event.
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

#[derive(Debug)]
pub(super) struct CachedEvent {
    pub(super) data: Box<str>,
    pub(super) frame: Bytes,
    pub(super) expires: Instant,
    /// Which event this is (unique in the app), so a connection replays each one at most once
    /// toward the quota.
    pub(super) seq: u64,
    /// Known to be the cluster's last event (always on a single node). In cluster mode an event
    /// kept while this node did not hear the app's other publishes is not: a subscribe then
    /// asks Redis first, and replays this copy only when the cluster has none (Redis down).
    pub(super) confirmed: bool,
}

impl CachedEvent {
    /// The bytes it holds, as accounted against the app's cache budget.
    pub(super) fn cost(&self) -> usize {
        self.data.len() + self.frame.len()
    }
}

/// An app's caps on its cached events; 0 means unlimited.
#[derive(Debug, Default)]
pub(super) struct CacheCaps {
    channels: AtomicUsize,
    bytes: AtomicUsize,
}

impl AppState {
    /// Queues cache channel `name`'s cached event for a new subscriber, or `pusher:cache_miss`
    /// when it has none (reported to webhooks once per miss, however many clients hit it).
    pub(super) fn replay(
        &mut self,
        name: &str,
        conn: &ConnHandle,
        hooks: &Hooks,
        result: &mut Subscribed,
    ) {
        let now = Instant::now();
        match self.cache.get(name) {
            Some(cached) if cached.expires > now => {
                if conn.outbox().push(cached.frame.clone()) {
                    result.cache_replayed = Some(cached.seq);
                }
            }
            _ => {
                if let Some(expired) = self.cache.remove(name) {
                    self.cache_bytes -= expired.cost();
                }
                result.cache_miss = true;
                conn.outbox().push(server::cache_miss(name));
                // One webhook per miss, however many clients hit the empty cache. In cluster
                // mode the session reports it, once per cluster (`cluster/misses.rs`).
                if hooks.wants(WebhookKind::CacheMiss)
                    && !hooks.clustered
                    && self.reported_misses.insert(name.into())
                {
                    hooks.emit(WebhookKind::CacheMiss, || {
                        WebhookEvent::channel(WebhookKind::CacheMiss, name)
                    });
                }
            }
        }
    }

    /// Drops the cached events whose TTL has passed.
    fn drop_expired(&mut self, now: Instant) {
        let mut freed = 0;
        self.cache.retain(|_, cached| {
            let keep = cached.expires > now;
            if !keep {
                freed += cached.cost();
            }
            keep
        });
        self.cache_bytes -= freed;
    }
}

impl AppHub {
    /// Keeps `frame` as `channel`'s cached event, within the app's caps: past them the event is
    /// still delivered but not kept (later subscribers get `pusher:cache_miss`), and counted in
    /// [`super::AppMemory::cache_refused`].
    /// `confirmed`: see [`CachedEvent::confirmed`].
    pub(super) fn keep(
        &self,
        state: &mut AppState,
        channel: &str,
        data: &str,
        frame: &Bytes,
        confirmed: bool,
    ) {
        let expires = Instant::now() + CACHE_TTL;
        self.keep_until(state, channel, data, frame, expires, confirmed);
    }

    /// [`AppHub::keep`], expiring at `expires` (an event read from the cluster keeps the rest
    /// of its TTL there).
    fn keep_until(
        &self,
        state: &mut AppState,
        channel: &str,
        data: &str,
        frame: &Bytes,
        expires: Instant,
        confirmed: bool,
    ) {
        let max_channels = self.caps.channels.load(Ordering::Relaxed);
        let max_bytes = self.caps.bytes.load(Ordering::Relaxed);
        let replaced = state.cache.remove(channel);
        if let Some(old) = &replaced {
            state.cache_bytes -= old.cost();
        }
        state.cache_seq += 1;
        let cached = CachedEvent {
            data: data.into(),
            frame: frame.clone(),
            expires,
            seq: state.cache_seq,
            confirmed,
        };
        let over = |state: &AppState| {
            (max_channels != 0 && state.cache.len() >= max_channels)
                || (max_bytes != 0 && state.cache_bytes + cached.cost() > max_bytes)
        };
        if over(state) {
            // Expired events still count until the sweep: drop them first.
            state.drop_expired(Instant::now());
        }
        if over(state) {
            self.cache_refused.fetch_add(1, Ordering::Relaxed);
            // Nothing is cached for the channel now: the next subscriber hears of a miss.
            return;
        }
        state.reported_misses.remove(channel);
        state.cache_bytes += cached.cost();
        state.cache.insert(channel.into(), cached);
    }

    /// Marks every cached event of the app on this node as possibly stale (cluster mode: the
    /// node stopped hearing the app's publishes; Redis has the cluster's last ones). Returns how
    /// many were marked.
    pub fn unconfirm_cache(&self) -> usize {
        let mut state = lock(&self.state);
        let mut marked = 0;
        for cached in state.cache.values_mut() {
            marked += usize::from(cached.confirmed);
            cached.confirmed = false;
        }
        marked
    }

    /// Whether cache channel `channel` has a live cached event on this node known to be the
    /// cluster's last (else a subscribe asks Redis first).
    pub fn has_cached(&self, channel: &str) -> bool {
        let state = lock(&self.state);
        state
            .cache
            .get(channel)
            .is_some_and(|cached| cached.confirmed && cached.expires > Instant::now())
    }

    /// Keeps `frame`, cache channel `channel`'s last event as another node published it (read
    /// from the cluster), unless this node has a live confirmed one of its own (newer or as
    /// new; an unconfirmed one is replaced): a subscribe right after replays it. It expires when the cluster's copy does (`ttl` from
    /// now, at most [`CACHE_TTL`]). Within the app's caps, like a local publish.
    pub fn keep_from_cluster(&self, channel: &str, frame: &Bytes, ttl: Duration) {
        let Some(data) = server::channel_event_data(frame) else {
            return;
        };
        let mut state = lock(&self.state);
        let live = state
            .cache
            .get(channel)
            .is_some_and(|cached| cached.confirmed && cached.expires > Instant::now());
        if !live {
            let expires = Instant::now() + ttl.min(CACHE_TTL);
            self.keep_until(&mut state, channel, &data, frame, expires, true);
        }
    }

    /// Sets the caps on what the app's publishes keep (from its limits).
    pub fn set_limits(&self, limits: &crate::protocol::Limits) {
        self.caps
            .channels
            .store(limits.cache_channels().unwrap_or(0), Ordering::Relaxed);
        self.caps
            .bytes
            .store(limits.cache_bytes().unwrap_or(0), Ordering::Relaxed);
    }

    /// Drops cached events whose TTL has passed, so channels nobody reads again do not keep
    /// memory. Returns how many were dropped.
    pub fn sweep_cache(&self) -> usize {
        let mut state = lock(&self.state);
        let before = state.cache.len();
        state.drop_expired(Instant::now());
        before - state.cache.len()
    }
}
