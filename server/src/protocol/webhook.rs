//! Webhook wire types: the seven event kinds and their JSON shapes (contract section 6), and
//! the request body `{time_ms, events}`.

use serde::Serialize;
use serde_json::value::RawValue;

/// A webhook event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// A channel got its first subscriber.
    ChannelOccupied,
    /// A channel lost its last subscriber (delayed 3 s, dropped if re-occupied meanwhile).
    ChannelVacated,
    /// A user joined a presence channel (its first socket there).
    MemberAdded,
    /// A user left a presence channel (its last socket there; delayed 3 s like vacate).
    MemberRemoved,
    /// A client event was sent.
    ClientEvent,
    /// A cache channel was subscribed to with nothing cached.
    CacheMiss,
    /// A channel's subscription count changed.
    SubscriptionCount,
}

/// Every kind, in the contract's order.
pub const WEBHOOK_KINDS: [WebhookKind; 7] = [
    WebhookKind::ChannelOccupied,
    WebhookKind::ChannelVacated,
    WebhookKind::MemberAdded,
    WebhookKind::MemberRemoved,
    WebhookKind::ClientEvent,
    WebhookKind::CacheMiss,
    WebhookKind::SubscriptionCount,
];

impl WebhookKind {
    /// The `name` of the event on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::ChannelOccupied => "channel_occupied",
            WebhookKind::ChannelVacated => "channel_vacated",
            WebhookKind::MemberAdded => "member_added",
            WebhookKind::MemberRemoved => "member_removed",
            WebhookKind::ClientEvent => "client_event",
            WebhookKind::CacheMiss => "cache_miss",
            WebhookKind::SubscriptionCount => "subscription_count",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<WebhookKind> {
        WEBHOOK_KINDS
            .into_iter()
            .find(|k| k.as_str() == name.trim())
    }

    /// This kind's bit in an interest mask.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One webhook event, serialized with exactly the contract's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum WebhookEvent {
    /// `channel_occupied`, `channel_vacated`, `cache_miss`.
    Channel {
        /// Event name.
        name: &'static str,
        /// Channel name.
        channel: String,
    },
    /// `member_added`, `member_removed`.
    Member {
        /// Event name.
        name: &'static str,
        /// Channel name.
        channel: String,
        /// The member's user id.
        user_id: String,
    },
    /// `client_event`.
    Client {
        /// Always `client_event`.
        name: &'static str,
        /// Channel name.
        channel: String,
        /// The client event's name.
        event: String,
        /// Its data as the client sent it (a JSON string holding the original JSON text).
        data: String,
        /// The sender's socket id.
        socket_id: String,
        /// The sender's user id, on presence channels only.
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// `subscription_count`.
    Count {
        /// Always `subscription_count`.
        name: &'static str,
        /// Channel name.
        channel: String,
        /// Connections subscribed.
        subscription_count: usize,
    },
}

impl WebhookEvent {
    /// A channel-only event.
    pub fn channel(kind: WebhookKind, channel: &str) -> WebhookEvent {
        WebhookEvent::Channel {
            name: kind.as_str(),
            channel: channel.to_owned(),
        }
    }

    /// A member event.
    pub fn member(kind: WebhookKind, channel: &str, user_id: &str) -> WebhookEvent {
        WebhookEvent::Member {
            name: kind.as_str(),
            channel: channel.to_owned(),
            user_id: user_id.to_owned(),
        }
    }

    /// A client event. `data` is the client's JSON; webhooks carry it as a string (Pusher's
    /// shape: receivers `JSON.parse` it).
    pub fn client(
        channel: &str,
        event: &str,
        data: &RawValue,
        socket_id: &str,
        user_id: Option<&str>,
    ) -> WebhookEvent {
        let text = match serde_json::from_str::<String>(data.get()) {
            Ok(string) => string,
            Err(_) => data.get().to_owned(),
        };
        WebhookEvent::Client {
            name: WebhookKind::ClientEvent.as_str(),
            channel: channel.to_owned(),
            event: event.to_owned(),
            data: text,
            socket_id: socket_id.to_owned(),
            user_id: user_id.map(str::to_owned),
        }
    }

    /// A subscription count.
    pub fn count(channel: &str, subscription_count: usize) -> WebhookEvent {
        WebhookEvent::Count {
            name: WebhookKind::SubscriptionCount.as_str(),
            channel: channel.to_owned(),
            subscription_count,
        }
    }

    /// The kind of this event.
    pub fn kind(&self) -> WebhookKind {
        let name = match self {
            WebhookEvent::Channel { name, .. }
            | WebhookEvent::Member { name, .. }
            | WebhookEvent::Client { name, .. }
            | WebhookEvent::Count { name, .. } => name,
        };
        WebhookKind::parse(name).unwrap_or(WebhookKind::ChannelOccupied)
    }

    /// The channel it is about.
    pub fn channel_name(&self) -> &str {
        match self {
            WebhookEvent::Channel { channel, .. }
            | WebhookEvent::Member { channel, .. }
            | WebhookEvent::Client { channel, .. }
            | WebhookEvent::Count { channel, .. } => channel,
        }
    }
}

/// The request body: `{"time_ms":...,"events":[...]}`, with the events given as a JSON array
/// already serialized.
pub fn webhook_body(time_ms: i64, events_json: &str) -> String {
    format!("{{\"time_ms\":{time_ms},\"events\":{events_json}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_contract() {
        let occupied = serde_json::to_string(&WebhookEvent::channel(
            WebhookKind::ChannelOccupied,
            "my-channel",
        ))
        .unwrap();
        assert_eq!(
            occupied,
            r#"{"name":"channel_occupied","channel":"my-channel"}"#
        );
        let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let client = serde_json::to_string(&WebhookEvent::client(
            "private-c",
            "client-x",
            &data,
            "1.2",
            None,
        ))
        .unwrap();
        assert_eq!(
            client,
            r#"{"name":"client_event","channel":"private-c","event":"client-x","data":"{\"a\":1}","socket_id":"1.2"}"#
        );
        let count = serde_json::to_string(&WebhookEvent::count("c", 3)).unwrap();
        assert_eq!(
            count,
            r#"{"name":"subscription_count","channel":"c","subscription_count":3}"#
        );
        assert_eq!(
            webhook_body(1327078148132, &format!("[{occupied}]")),
            r#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}"#
        );
        for kind in WEBHOOK_KINDS {
            assert_eq!(WebhookKind::parse(kind.as_str()), Some(kind));
        }
    }
}
