//! REST request bodies.

use serde::Deserialize;
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
