//! REST request and response bodies.
//!
//! Responses serialize exactly as Pusher's do: keys in alphabetical order (struct fields are
//! declared in that order and maps are `BTreeMap`s), attributes nobody asked for left out.
//! Refusals are short plain text, not JSON (see `api::ApiError`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An event's `data`: a string relayed verbatim; any other JSON value is relayed as its text.
#[derive(Debug)]
pub struct EventData(pub String);

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with('"') {
            let s: String = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
            Ok(EventData(s))
        } else {
            Ok(EventData(text.to_owned()))
        }
    }
}

/// The body of `POST /apps/{id}/events`.
#[derive(Debug, Deserialize)]
pub struct TriggerBody {
    /// Event name.
    pub name: Option<String>,
    /// Event data.
    pub data: Option<EventData>,
    /// One channel (pusher-http-php with a single channel).
    pub channel: Option<String>,
    /// Several channels.
    pub channels: Option<Vec<String>>,
    /// A connection to exclude from delivery.
    pub socket_id: Option<String>,
    /// Attributes to return per channel: `user_count`, `subscription_count`.
    pub info: Option<String>,
}

/// One event of a batch.
#[derive(Debug, Deserialize)]
pub struct BatchEvent {
    /// Event name.
    pub name: Option<String>,
    /// Event data.
    pub data: Option<EventData>,
    /// The channel.
    pub channel: Option<String>,
    /// A connection to exclude from delivery.
    pub socket_id: Option<String>,
    /// Attributes to return for the channel.
    pub info: Option<String>,
}

/// The body of `POST /apps/{id}/batch_events`.
#[derive(Debug, Deserialize)]
pub struct BatchBody {
    /// The events, in order.
    pub batch: Vec<BatchEvent>,
}

/// The attributes of one channel a REST answer carries: those the `info` parameter asked for
/// (and that apply to the channel), the others left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChannelAttributes {
    /// Connections subscribed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<usize>,
    /// Distinct users on a presence channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_count: Option<usize>,
}

/// The answer to `POST /apps/{id}/events`: `{}`, or `{"channels": {...}}` when `info` asked for
/// attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TriggerResponse {
    /// Each target channel's attributes, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<BTreeMap<String, ChannelAttributes>>,
}

/// The answer to `POST /apps/{id}/batch_events`: `{}`, or `{"batch": [...]}` (one entry per
/// event, in order; `{}` for an event that asked for nothing) when any event asked for
/// attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchResponse {
    /// Each event's channel attributes, in the batch's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<ChannelAttributes>>,
}

/// The answer to `GET /apps/{id}/channels`: the occupied channels, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelsResponse {
    /// Occupied channels and their requested attributes.
    pub channels: BTreeMap<String, ChannelAttributes>,
}

/// A cache channel's last event, as `GET /apps/{id}/channels/{name}?info=cache` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedEvent {
    /// The event's data.
    pub data: String,
    /// Seconds until it expires.
    pub ttl: u64,
}

/// The answer to `GET /apps/{id}/channels/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelResponse {
    /// With `info=cache`: the cached event, `null` when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<Option<CachedEvent>>,
    /// Whether anyone is subscribed.
    pub occupied: bool,
    /// With `info=subscription_count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<usize>,
    /// With `info=user_count` (presence channels only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_count: Option<usize>,
}

/// One member of a presence channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceUser {
    /// The user's id.
    pub id: String,
}

/// The answer to `GET /apps/{id}/channels/{name}/users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsersResponse {
    /// The channel's users, by id.
    pub users: Vec<PresenceUser>,
}

/// The answer to a user's `terminate_connections`: `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TerminateResponse {}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).expect("serializes")
    }

    #[test]
    fn responses_leave_out_what_was_not_asked_for_and_sort_their_keys() {
        let both = ChannelAttributes {
            subscription_count: Some(2),
            user_count: Some(1),
        };
        assert_eq!(json(&ChannelAttributes::default()), "{}");
        assert_eq!(json(&TriggerResponse::default()), "{}");
        assert_eq!(
            json(&TriggerResponse {
                channels: Some(BTreeMap::from([
                    ("presence-b".to_owned(), both),
                    ("a".to_owned(), ChannelAttributes::default()),
                ])),
            }),
            r#"{"channels":{"a":{},"presence-b":{"subscription_count":2,"user_count":1}}}"#
        );
        assert_eq!(json(&BatchResponse::default()), "{}");
        assert_eq!(
            json(&BatchResponse {
                batch: Some(vec![ChannelAttributes::default(), both]),
            }),
            r#"{"batch":[{},{"subscription_count":2,"user_count":1}]}"#
        );
        assert_eq!(json(&ChannelsResponse::default()), r#"{"channels":{}}"#);
        assert_eq!(json(&ChannelResponse::default()), r#"{"occupied":false}"#);
        assert_eq!(
            json(&ChannelResponse {
                cache: Some(None),
                occupied: true,
                subscription_count: Some(3),
                user_count: Some(2),
            }),
            r#"{"cache":null,"occupied":true,"subscription_count":3,"user_count":2}"#
        );
        assert_eq!(
            json(&ChannelResponse {
                cache: Some(Some(CachedEvent {
                    data: "{\"x\":1}".into(),
                    ttl: 30,
                })),
                ..ChannelResponse::default()
            }),
            r#"{"cache":{"data":"{\"x\":1}","ttl":30},"occupied":false}"#
        );
        assert_eq!(
            json(&UsersResponse {
                users: vec![PresenceUser { id: "1".into() }],
            }),
            r#"{"users":[{"id":"1"}]}"#
        );
        assert_eq!(json(&TerminateResponse {}), "{}");
    }
}
