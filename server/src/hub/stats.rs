//! What an app's live state looks like from outside: its memory against its caps, one
//! channel's counts and cached event, the occupied channels, a presence channel's users.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{lock, AppHub};

/// What one app holds in memory on this node, as accounted against its caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppMemory {
    /// Open connections.
    pub connections: usize,
    /// Occupied channels.
    pub channels: usize,
    /// Occupied cache channels.
    pub cache_channels: usize,
    /// Cache channels holding an event.
    pub cached_events: usize,
    /// Bytes of those events.
    pub cache_bytes: usize,
    /// Publishes whose event was delivered but not kept because the app was at a cache cap.
    pub cache_refused: u64,
    /// Occupied cache channels whose miss was already reported to webhooks.
    pub reported_misses: usize,
}

/// What a channel looks like from the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Connections subscribed.
    pub subscription_count: usize,
    /// Distinct presence users.
    pub user_count: usize,
    /// The cached event's data and remaining TTL in seconds.
    pub cache: Option<(String, u64)>,
}

impl AppHub {
    /// What the app holds in memory on this node.
    pub fn memory(&self) -> AppMemory {
        let state = lock(&self.state);
        AppMemory {
            connections: state.connections.len(),
            channels: state.channels.len(),
            cache_channels: state.occupied_cache,
            cached_events: state.cache.len(),
            cache_bytes: state.cache_bytes,
            cache_refused: self.cache_refused.load(Ordering::Relaxed),
            reported_misses: state.reported_misses.len(),
        }
    }

    /// Connections, occupied channels and subscriptions (a connection on a channel) of this
    /// app on this node, read from the live state (`/metrics`' gauges cannot drift).
    pub fn gauges(&self) -> (usize, usize, usize) {
        let state = lock(&self.state);
        let subscriptions = state.channels.values().map(|c| c.subscribers.len()).sum();
        (state.connections.len(), state.channels.len(), subscriptions)
    }

    /// Connections open for this app on this node.
    pub fn connection_count(&self) -> usize {
        lock(&self.state).connections.len()
    }

    /// The live state of one channel.
    pub fn channel_info(&self, channel: &str) -> ChannelInfo {
        let state = lock(&self.state);
        let (subscription_count, user_count) = state
            .channels
            .get(channel)
            .map_or((0, 0), |c| (c.subscribers.len(), c.members.len()));
        let now = Instant::now();
        let cache = state
            .cache
            .get(channel)
            .filter(|c| c.expires > now)
            .map(|c| (c.data.to_string(), (c.expires - now).as_secs()));
        ChannelInfo {
            subscription_count,
            user_count,
            cache,
        }
    }

    /// Occupied channels whose name starts with `prefix`, with their subscriber and user counts.
    /// Internal `#` channels are left out.
    pub fn channels(&self, prefix: &str) -> Vec<(String, usize, usize)> {
        let state = lock(&self.state);
        let mut list: Vec<_> = state
            .channels
            .iter()
            .filter(|(name, c)| {
                name.starts_with(prefix) && !name.starts_with('#') && !c.subscribers.is_empty()
            })
            .map(|(name, c)| (name.to_string(), c.subscribers.len(), c.members.len()))
            .collect();
        list.sort();
        list
    }

    /// The user ids present on a presence channel.
    pub fn presence_users(&self, channel: &str) -> Vec<String> {
        let state = lock(&self.state);
        let mut ids: Vec<String> = state
            .channels
            .get(channel)
            .map(|c| c.members.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// This node's part of an app's channel state: `(channel, subscriptions)` and
/// `(channel, user, sockets, user_info)`.
pub type LocalState = (
    Vec<(String, usize)>,
    Vec<(String, String, u32, Option<String>)>,
);

impl AppHub {
    /// This node's subscriptions per occupied channel and presence members with their socket
    /// counts (what cluster mode re-registers in Redis after losing it).
    pub fn local_state(&self) -> LocalState {
        let state = lock(&self.state);
        let mut channels = Vec::with_capacity(state.channels.len());
        let mut members = Vec::new();
        for (name, channel) in &state.channels {
            if channel.subscribers.is_empty() {
                continue;
            }
            channels.push((name.to_string(), channel.subscribers.len()));
            for (user, member) in &channel.members {
                members.push((
                    name.to_string(),
                    user.to_string(),
                    member.sockets,
                    member.info.as_ref().map(|info| info.get().to_owned()),
                ));
            }
        }
        (channels, members)
    }
}
