//! Per-app limits. Zero means "unlimited" (bounded by the protocol's own ceiling where it has one).

use serde::{Deserialize, Serialize};

/// The longest channel name Herald accepts, whatever an app's setting says.
pub const PROTOCOL_CHANNEL_NAME_CEILING: usize = 200;

/// The most channels one connection may be subscribed to at once, whatever an app's setting
/// says. Pusher documents no such limit; this one is far above what any app needs and keeps one
/// socket from filling the node's memory.
pub const SUBSCRIPTIONS_PER_CONNECTION_CEILING: usize = 1000;

/// The default of [`Limits::max_subscribes_per_second`] (burst: the subscriptions cap).
pub const DEFAULT_SUBSCRIBES_PER_SECOND: u64 = 10;

/// The default of [`Limits::max_subscriptions_per_connection`].
pub const DEFAULT_SUBSCRIPTIONS_PER_CONNECTION: u64 = 100;

/// An app's limits as stored; `0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Concurrent connections for the app.
    pub max_connections: u64,
    /// Messages per UTC day; counted as in `interfaces.md`.
    pub max_daily_messages: u64,
    /// Client events per second per connection (burst equals the rate).
    pub max_client_events_per_second: u64,
    /// REST events per second for the app; counted as in `interfaces.md`.
    pub max_backend_events_per_second: u64,
    /// REST reads per second for the app; counted as in `interfaces.md`.
    pub max_read_requests_per_second: u64,
    /// Members of one presence channel.
    pub max_presence_members: u64,
    /// Bytes of one presence member's `user_info`.
    pub max_presence_member_bytes: u64,
    /// Characters of a channel name (at most 200).
    pub max_channel_name_length: u64,
    /// Characters of an event name.
    pub max_event_name_length: u64,
    /// Bytes of one event's `data`.
    pub max_event_payload_bytes: u64,
    /// Channels named by one trigger.
    pub max_channels_per_trigger: u64,
    /// Events in one batch.
    pub max_batch_size: u64,
    /// Occupied channels of the app on a node.
    pub max_channels: u64,
    /// Cache channels of the app on a node: occupied ones, and (separately) cached events.
    pub max_cache_channels: u64,
    /// Channels one connection may be subscribed to at once (never above 1000; 0 means 1000).
    pub max_subscriptions_per_connection: u64,
    /// Subscribes per second per connection; the burst is the subscriptions cap, so a client can
    /// resubscribe everything at once after a reconnect.
    pub max_subscribes_per_second: u64,
}

impl Default for Limits {
    /// Pusher's own limits, and no quota.
    fn default() -> Self {
        Limits::pusher_defaults()
    }
}

impl Limits {
    /// Pusher's own limits, and no quota (usable in constants).
    pub const fn pusher_defaults() -> Self {
        Limits {
            max_connections: 0,
            max_daily_messages: 0,
            max_client_events_per_second: 10,
            max_backend_events_per_second: 0,
            max_read_requests_per_second: 0,
            max_presence_members: 100,
            max_presence_member_bytes: 1024,
            max_channel_name_length: 200,
            max_event_name_length: 200,
            max_event_payload_bytes: 10 * 1024,
            max_channels_per_trigger: 100,
            max_batch_size: 10,
            max_channels: 0,
            max_cache_channels: 0,
            max_subscriptions_per_connection: DEFAULT_SUBSCRIPTIONS_PER_CONNECTION,
            max_subscribes_per_second: DEFAULT_SUBSCRIBES_PER_SECOND,
        }
    }
}

fn effective(value: u64) -> Option<usize> {
    (value != 0).then(|| usize::try_from(value).unwrap_or(usize::MAX))
}

impl Limits {
    /// The channel-name length in force (never above 200).
    pub fn channel_name_length(&self) -> usize {
        effective(self.max_channel_name_length)
            .unwrap_or(PROTOCOL_CHANNEL_NAME_CEILING)
            .min(PROTOCOL_CHANNEL_NAME_CEILING)
    }

    /// The event-name length in force, if any.
    pub fn event_name_length(&self) -> Option<usize> {
        effective(self.max_event_name_length)
    }

    /// The per-event payload size in force, if any.
    pub fn event_payload_bytes(&self) -> Option<usize> {
        effective(self.max_event_payload_bytes)
    }

    /// The number of channels one trigger may name, if limited.
    pub fn channels_per_trigger(&self) -> Option<usize> {
        effective(self.max_channels_per_trigger)
    }

    /// The batch size in force, if any.
    pub fn batch_size(&self) -> Option<usize> {
        effective(self.max_batch_size)
    }

    /// The presence member count in force, if any.
    pub fn presence_members(&self) -> Option<usize> {
        effective(self.max_presence_members)
    }

    /// The presence member size in force, if any.
    pub fn presence_member_bytes(&self) -> Option<usize> {
        effective(self.max_presence_member_bytes)
    }

    /// The concurrent connection quota, if any.
    pub fn connections(&self) -> Option<usize> {
        effective(self.max_connections)
    }

    /// Messages per UTC day, if limited.
    pub fn daily_messages(&self) -> Option<u64> {
        (self.max_daily_messages != 0).then_some(self.max_daily_messages)
    }

    /// REST events per second for the app, if limited.
    pub fn backend_events_per_second(&self) -> Option<u32> {
        (self.max_backend_events_per_second != 0)
            .then(|| u32::try_from(self.max_backend_events_per_second).unwrap_or(u32::MAX))
    }

    /// REST reads per second for the app, if limited.
    pub fn read_requests_per_second(&self) -> Option<u32> {
        (self.max_read_requests_per_second != 0)
            .then(|| u32::try_from(self.max_read_requests_per_second).unwrap_or(u32::MAX))
    }

    /// Client events per second per connection, if limited.
    pub fn client_events_per_second(&self) -> Option<u32> {
        (self.max_client_events_per_second != 0)
            .then(|| u32::try_from(self.max_client_events_per_second).unwrap_or(u32::MAX))
    }

    /// Occupied channels per app, if limited.
    pub fn channels(&self) -> Option<usize> {
        effective(self.max_channels)
    }

    /// Cache channels per app, if limited.
    pub fn cache_channels(&self) -> Option<usize> {
        effective(self.max_cache_channels)
    }

    /// Bytes of cached event data the app may hold on a node, if limited: one full payload per
    /// cache channel allowed (derived from the two limits, so a plan's values bound it).
    pub fn cache_bytes(&self) -> Option<usize> {
        let channels = effective(self.max_cache_channels)?;
        let payload = effective(self.max_event_payload_bytes)?;
        Some(channels.saturating_mul(payload))
    }

    /// Subscriptions per connection in force (never above 1000).
    pub fn subscriptions_per_connection(&self) -> usize {
        effective(self.max_subscriptions_per_connection)
            .unwrap_or(SUBSCRIPTIONS_PER_CONNECTION_CEILING)
            .min(SUBSCRIPTIONS_PER_CONNECTION_CEILING)
    }

    /// Subscribes per second per connection, if limited.
    pub fn subscribes_per_second(&self) -> Option<u32> {
        (self.max_subscribes_per_second != 0)
            .then(|| u32::try_from(self.max_subscribes_per_second).unwrap_or(u32::MAX))
    }
}
