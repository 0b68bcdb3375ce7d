//! The client-frame decoder (`ClientFrame::decode`) and the presence `channel_data` a subscribe
//! carries (`fuzzing::presence_member`).
//!
//! Invariants: a decoded frame, encoded again as a client would send it, decodes to the same
//! frame; a client event's `data` is JSON, relayed as received; an unknown event's name is cut
//! to 64 bytes; an accepted presence member has a non-empty user id of at most 128 characters
//! and a `user_info` that is JSON.
#![no_main]

use herald::fuzzing::presence_member;
use herald::protocol::{ClientFrame, FrameError};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use serde_json::value::RawValue;

/// A frame as plain values, to compare two decodings.
#[derive(Debug, PartialEq, Eq)]
enum Plain {
    Ping,
    Pong,
    Subscribe(String, Option<String>, Option<String>),
    Unsubscribe(String),
    Signin(String, String),
    ClientEvent(String, String, String),
}

fn plain(frame: &ClientFrame) -> Plain {
    match frame {
        ClientFrame::Ping => Plain::Ping,
        ClientFrame::Pong => Plain::Pong,
        ClientFrame::Subscribe {
            channel,
            auth,
            channel_data,
        } => Plain::Subscribe(channel.clone(), auth.clone(), channel_data.clone()),
        ClientFrame::Unsubscribe { channel } => Plain::Unsubscribe(channel.clone()),
        ClientFrame::Signin { auth, user_data } => Plain::Signin(auth.clone(), user_data.clone()),
        ClientFrame::ClientEvent {
            event,
            channel,
            data,
        } => Plain::ClientEvent(event.clone(), channel.clone(), data.get().to_owned()),
    }
}

/// The frame as pusher-js sends it (`data` an object; `channel_data` and `user_data` strings).
fn encode(frame: &ClientFrame) -> String {
    let value = match frame {
        ClientFrame::Ping => json!({"event": "pusher:ping", "data": {}}),
        ClientFrame::Pong => json!({"event": "pusher:pong", "data": {}}),
        ClientFrame::Subscribe {
            channel,
            auth,
            channel_data,
        } => {
            let mut data = json!({ "channel": channel });
            if let Some(auth) = auth {
                data["auth"] = json!(auth);
            }
            if let Some(channel_data) = channel_data {
                data["channel_data"] = json!(channel_data);
            }
            json!({"event": "pusher:subscribe", "data": data})
        }
        ClientFrame::Unsubscribe { channel } => {
            json!({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        }
        ClientFrame::Signin { auth, user_data } => {
            json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}})
        }
        ClientFrame::ClientEvent {
            event,
            channel,
            data,
        } => {
            let data: &RawValue = data;
            return format!(
                "{{\"event\":{},\"channel\":{},\"data\":{}}}",
                json!(event),
                json!(channel),
                data.get()
            );
        }
    };
    value.to_string()
}

fn check_member(channel_data: &str) {
    if let Ok((user_id, user_info)) = presence_member(channel_data) {
        assert!(!user_id.is_empty());
        assert!(user_id.chars().count() <= 128);
        if let Some(info) = user_info {
            assert!(serde_json::from_str::<&RawValue>(&info).is_ok(), "{info}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every input is also tried as a channel_data on its own.
    check_member(text);
    match ClientFrame::decode(text) {
        Ok(frame) => {
            let again = ClientFrame::decode(&encode(&frame))
                .unwrap_or_else(|e| panic!("{frame:?} re-encoded: {e}"));
            assert_eq!(plain(&frame), plain(&again));
            match &frame {
                ClientFrame::Subscribe {
                    channel_data: Some(channel_data),
                    ..
                } => check_member(channel_data),
                ClientFrame::ClientEvent { event, data, .. } => {
                    assert!(event.starts_with("client-"));
                    let data: &RawValue = data;
                    assert!(serde_json::from_str::<&RawValue>(data.get()).is_ok());
                }
                _ => {}
            }
        }
        Err(FrameError::UnknownEvent(name)) => assert!(name.len() <= 64),
        Err(_) => {}
    }
});
