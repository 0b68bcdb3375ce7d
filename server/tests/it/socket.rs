//! The WebSocket side: handshake, channels, presence, client events, signin, refusals.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn handshake_announces_socket_id_and_activity_timeout() {
    let app = spawn_app().await;
    let mut client = app
        .connect_raw("/app/test-key-0123456789abc?protocol=7&client=js&version=8.6.0&flash=false")
        .await;
    let frame = client.expect_next("pusher:connection_established").await;
    let data = data_of(&frame);
    assert!(frame["data"].is_string(), "data is double-encoded");
    assert_eq!(data["activity_timeout"], 120);
    let socket_id = data["socket_id"].as_str().unwrap();
    let (high, low) = socket_id.split_once('.').unwrap();
    assert!(!high.is_empty() && high.bytes().all(|b| b.is_ascii_digit()));
    assert!(!low.is_empty() && low.bytes().all(|b| b.is_ascii_digit()));
}

#[tokio::test]
async fn public_channel_receives_rest_events_verbatim() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let ok = client.subscribe("my-channel").await;
    assert_eq!(ok["channel"], "my-channel");
    assert_eq!(ok["data"], "{}");
    let (status, body) = app
        .post(
            "/apps/4242/events",
            json!({"name":"greet","channels":["my-channel"],"data":"{\"a\": 1}"}),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let event = client.expect_next("greet").await;
    assert_eq!(event["channel"], "my-channel");
    assert_eq!(event["data"], "{\"a\": 1}");
}

#[tokio::test]
async fn unknown_key_is_refused_with_4001() {
    let app = spawn_app().await;
    let mut client = app
        .connect_raw("/app/nope?protocol=7&client=js&version=8.6.0")
        .await;
    let (code, _) = client.expect_error().await;
    assert_eq!(code, 4001);
    assert_eq!(client.expect_close().await, Some(4001));
}
