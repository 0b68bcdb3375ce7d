//! Client frames (decoded from JSON text) and server frames (encoded once into `Bytes`).

use serde::Deserialize;
use serde_json::value::RawValue;

/// A frame received from a client, decoded and shape-checked.
#[derive(Debug)]
pub enum ClientFrame {
    /// `pusher:ping`.
    Ping,
    /// `pusher:pong`.
    Pong,
    /// `pusher:subscribe`.
    Subscribe {
        /// The channel name as sent (validated by the session against the app's limits).
        channel: String,
        /// `key:signature`, empty or absent for public channels.
        auth: Option<String>,
        /// The exact presence `channel_data` string received.
        channel_data: Option<String>,
    },
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel to leave.
        channel: String,
    },
    /// `pusher:signin`.
    Signin {
        /// `key:signature`.
        auth: String,
        /// The exact `user_data` string received.
        user_data: String,
    },
    /// A `client-` event to relay.
    ClientEvent {
        /// The event name (starts with `client-`).
        event: String,
        /// The channel to relay it on.
        channel: String,
        /// The `data` as received, object or string, relayed verbatim.
        data: Box<RawValue>,
    },
}

/// Why a client frame was not understood. Each message is sent back in a `pusher:error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The text is not a JSON object with a string `event`.
    #[error("Invalid message format: expected a JSON object with an \"event\" string")]
    Malformed,
    /// A binary frame.
    #[error("Binary frames are not supported")]
    Binary,
    /// A `pusher:` or `pusher_internal:` event Herald does not know.
    #[error("Unsupported event: {0}")]
    UnknownEvent(String),
    /// A known event whose `data` lacks a required field.
    #[error("Invalid {event} message: {detail}")]
    BadData {
        /// The event name.
        event: &'static str,
        /// What was wrong.
        detail: &'static str,
    },
    /// An event name that is neither `pusher:` nor `client-`.
    #[error("Client events must be prefixed by 'client-'")]
    NotClientEvent,
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: Box<RawValue>,
}

/// Reads `data` that a client may send as an object or as a JSON string holding the object.
fn data_object<T: for<'de> Deserialize<'de>>(data: Option<&RawValue>) -> Option<T> {
    let raw = data?.get();
    if raw.starts_with('"') {
        let inner: String = serde_json::from_str(raw).ok()?;
        serde_json::from_str(&inner).ok()
    } else {
        serde_json::from_str(raw).ok()
    }
}

/// A JSON value that should be a string: decoded when it is one, else its JSON text.
fn string_or_json(raw: &RawValue) -> String {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str(text).unwrap_or_else(|_| text.to_owned())
    } else {
        text.to_owned()
    }
}

impl ClientFrame {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<ClientFrame, FrameError> {
        let envelope: Envelope = serde_json::from_str(text).map_err(|_| FrameError::Malformed)?;
        let data = envelope.data.as_deref();
        match envelope.event.as_str() {
            "pusher:ping" => Ok(ClientFrame::Ping),
            "pusher:pong" => Ok(ClientFrame::Pong),
            "pusher:subscribe" => {
                let d: SubscribeData = data_object(data).ok_or(FrameError::BadData {
                    event: "pusher:subscribe",
                    detail: "data.channel is required",
                })?;
                Ok(ClientFrame::Subscribe {
                    channel: d.channel,
                    auth: d.auth,
                    channel_data: d.channel_data.as_deref().map(string_or_json),
                })
            }
            "pusher:unsubscribe" => {
                let d: UnsubscribeData = data_object(data).ok_or(FrameError::BadData {
                    event: "pusher:unsubscribe",
                    detail: "data.channel is required",
                })?;
                Ok(ClientFrame::Unsubscribe { channel: d.channel })
            }
            "pusher:signin" => {
                let d: SigninData = data_object(data).ok_or(FrameError::BadData {
                    event: "pusher:signin",
                    detail: "data.auth and data.user_data are required",
                })?;
                Ok(ClientFrame::Signin {
                    auth: d.auth,
                    user_data: string_or_json(&d.user_data),
                })
            }
            name if name.starts_with("client-") => {
                let channel = envelope.channel.ok_or(FrameError::BadData {
                    event: "client event",
                    detail: "channel is required",
                })?;
                let data = match envelope.data {
                    Some(d) => d,
                    None => RawValue::from_string("null".to_owned())
                        .map_err(|_| FrameError::Malformed)?,
                };
                Ok(ClientFrame::ClientEvent {
                    event: envelope.event,
                    channel,
                    data,
                })
            }
            name if name.starts_with("pusher:") || name.starts_with("pusher_internal:") => {
                Err(FrameError::UnknownEvent(truncate(name, 64).to_owned()))
            }
            _ => Err(FrameError::NotClientEvent),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Server frames, each serialized once into bytes ready for a text WebSocket frame.
pub mod server {
    use bytes::Bytes;
    use serde::Serialize;
    use serde_json::json;
    use serde_json::value::RawValue;

    use crate::protocol::SocketId;

    fn encode<T: Serialize>(value: &T) -> Bytes {
        // Serializing plain structs, strings and `RawValue`s cannot fail.
        Bytes::from(serde_json::to_vec(value).unwrap_or_default())
    }

    /// `pusher:connection_established`.
    pub fn connection_established(socket_id: SocketId, activity_timeout: u64) -> Bytes {
        let data =
            json!({"socket_id": socket_id.to_string(), "activity_timeout": activity_timeout});
        encode(&json!({"event": "pusher:connection_established", "data": data.to_string()}))
    }

    /// `pusher:error` with a code (`None` encodes as `null`).
    pub fn error(code: Option<u16>, message: &str) -> Bytes {
        encode(&json!({"event": "pusher:error", "data": {"code": code, "message": message}}))
    }

    /// `pusher:ping` sent by the server after a silence.
    pub fn ping() -> Bytes {
        Bytes::from_static(br#"{"event":"pusher:ping","data":"{}"}"#)
    }

    /// `pusher:pong`, the answer to a client's `pusher:ping`.
    pub fn pong() -> Bytes {
        Bytes::from_static(br#"{"event":"pusher:pong","data":"{}"}"#)
    }

    /// `pusher_internal:subscription_succeeded` for a non-presence channel.
    pub fn subscription_succeeded(channel: &str) -> Bytes {
        encode(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": "{}",
        }))
    }

    /// `pusher_internal:subscription_succeeded` for a presence channel; `members` yields
    /// `(user_id, user_info JSON or None)`.
    pub fn presence_subscription_succeeded<'a>(
        channel: &str,
        members: impl Iterator<Item = (&'a str, Option<&'a RawValue>)>,
    ) -> Bytes {
        let mut ids = Vec::new();
        let mut hash = serde_json::Map::new();
        for (id, info) in members {
            ids.push(id);
            let info = info
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_else(|| json!({}));
            hash.insert(id.to_owned(), info);
        }
        let count = ids.len();
        let data = json!({"presence": {"ids": ids, "hash": hash, "count": count}});
        encode(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": data.to_string(),
        }))
    }

    /// `pusher_internal:member_added`.
    pub fn member_added(channel: &str, user_id: &str, user_info: Option<&RawValue>) -> Bytes {
        #[derive(Serialize)]
        struct Data<'a> {
            user_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_info: Option<&'a RawValue>,
        }
        let data = serde_json::to_string(&Data { user_id, user_info }).unwrap_or_default();
        encode(&json!({"event": "pusher_internal:member_added", "channel": channel, "data": data}))
    }

    /// `pusher_internal:member_removed`.
    pub fn member_removed(channel: &str, user_id: &str) -> Bytes {
        let data = json!({"user_id": user_id}).to_string();
        encode(
            &json!({"event": "pusher_internal:member_removed", "channel": channel, "data": data}),
        )
    }

    /// A channel event whose `data` is a string relayed verbatim (REST publishes).
    pub fn channel_event(event: &str, channel: &str, data: &str) -> Bytes {
        #[derive(Serialize)]
        struct Frame<'a> {
            event: &'a str,
            channel: &'a str,
            data: &'a str,
        }
        encode(&Frame {
            event,
            channel,
            data,
        })
    }

    /// The string `data` of a frame made by [`channel_event`] (a node that receives another
    /// node's publish to a cache channel keeps the event, and the data with it).
    pub fn channel_event_data(frame: &[u8]) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Frame {
            data: String,
        }
        serde_json::from_slice::<Frame>(frame).ok().map(|f| f.data)
    }

    /// A client event relayed to the other subscribers, `data` exactly as the sender sent it.
    pub fn client_event(
        event: &str,
        channel: &str,
        data: &RawValue,
        user_id: Option<&str>,
    ) -> Bytes {
        #[derive(Serialize)]
        struct Frame<'a> {
            event: &'a str,
            channel: &'a str,
            data: &'a RawValue,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_id: Option<&'a str>,
        }
        encode(&Frame {
            event,
            channel,
            data,
            user_id,
        })
    }

    /// `pusher:cache_miss` for a cache channel with no live cached event.
    pub fn cache_miss(channel: &str) -> Bytes {
        encode(&json!({"event": "pusher:cache_miss", "channel": channel, "data": "{}"}))
    }

    /// `pusher:subscription_error` on the channel, so pusher-js's channel handlers fire.
    pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> Bytes {
        encode(&json!({
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": kind, "error": error, "status": status},
        }))
    }

    /// `pusher_internal:subscription_count`.
    pub fn subscription_count(channel: &str, count: usize) -> Bytes {
        let data = json!({"subscription_count": count}).to_string();
        encode(
            &json!({"event": "pusher_internal:subscription_count", "channel": channel, "data": data}),
        )
    }

    /// `pusher:signin_success`, echoing the exact `user_data` string.
    pub fn signin_success(user_data: &str) -> Bytes {
        encode(&json!({"event": "pusher:signin_success", "data": {"user_data": user_data}}))
    }

    /// `pusher_internal:watchlist_events` in pusher-js's format; empty lists are left out.
    pub fn watchlist_events(online: &[&str], offline: &[&str]) -> Bytes {
        let mut events = Vec::new();
        if !online.is_empty() {
            events.push(json!({"name": "online", "user_ids": online}));
        }
        if !offline.is_empty() {
            events.push(json!({"name": "offline", "user_ids": offline}));
        }
        let data = json!({"events": events}).to_string();
        encode(&json!({"event": "pusher_internal:watchlist_events", "data": data}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_keeps_the_exact_channel_data_string() {
        let text = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"{\"user_id\":\"1\", \"user_info\":{\"a\":\"\\/\"}}"}}"#;
        match ClientFrame::decode(text).unwrap() {
            ClientFrame::Subscribe {
                channel,
                auth,
                channel_data,
            } => {
                assert_eq!(channel, "presence-a");
                assert_eq!(auth.as_deref(), Some("k:s"));
                assert_eq!(
                    channel_data.as_deref(),
                    Some(r#"{"user_id":"1", "user_info":{"a":"\/"}}"#)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn subscribe_data_may_be_a_json_string() {
        let text = r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#;
        assert!(matches!(
            ClientFrame::decode(text),
            Ok(ClientFrame::Subscribe { channel, .. }) if channel == "a"
        ));
    }

    #[test]
    fn garbage_and_unknown_events_are_errors() {
        assert_eq!(
            ClientFrame::decode("nope").unwrap_err(),
            FrameError::Malformed
        );
        assert_eq!(
            ClientFrame::decode("[1]").unwrap_err(),
            FrameError::Malformed
        );
        assert!(matches!(
            ClientFrame::decode(r#"{"event":"pusher:nope"}"#),
            Err(FrameError::UnknownEvent(_))
        ));
        assert_eq!(
            ClientFrame::decode(r#"{"event":"hello","channel":"x"}"#).unwrap_err(),
            FrameError::NotClientEvent
        );
        assert!(matches!(
            ClientFrame::decode(r#"{"event":"pusher:subscribe","data":{}}"#),
            Err(FrameError::BadData { .. })
        ));
    }

    #[test]
    fn a_channel_event_gives_back_its_data() {
        let frame = server::channel_event("e", "cache-x", "{\"a\":\"\u{e9}\"}");
        assert_eq!(
            server::channel_event_data(&frame).as_deref(),
            Some("{\"a\":\"\u{e9}\"}")
        );
        assert_eq!(server::channel_event_data(b"not json"), None);
    }

    #[test]
    fn client_event_data_is_kept_verbatim() {
        let text = r#"{"event":"client-x","channel":"private-a","data":{"b": 1}}"#;
        match ClientFrame::decode(text).unwrap() {
            ClientFrame::ClientEvent { data, .. } => assert_eq!(data.get(), r#"{"b": 1}"#),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn server_frames_double_encode_data() {
        let frame = server::channel_event("e", "c", r#"{"a":1}"#);
        assert_eq!(
            &frame[..],
            br#"{"event":"e","channel":"c","data":"{\"a\":1}"}"#
        );
        let est = server::connection_established(crate::protocol::SocketId::new(1, 2), 120);
        assert_eq!(
            &est[..],
            br#"{"data":"{\"activity_timeout\":120,\"socket_id\":\"1.2\"}","event":"pusher:connection_established"}"#
        );
        let watch = server::watchlist_events(&["1"], &["2", "3"]);
        let v: serde_json::Value = serde_json::from_slice(&watch).unwrap();
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"events":[{"name":"online","user_ids":["1"]},{"name":"offline","user_ids":["2","3"]}]})
        );
    }
}
