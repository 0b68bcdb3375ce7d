//! REST queries against a spawned server: the channel list, one channel (occupancy, user count,
//! cache), a presence channel's users, and terminate_connections (also on Python's path).

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::rest_helpers::*;

// Channel queries

#[tokio::test]
async fn get_channels_with_nothing_occupied_is_exactly_an_empty_object() {
    let app = spawn_app().await;
    let (status, body) = app.get("/apps/4242/channels", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"channels":{}}"#));
    // Still an object once a socket came and went.
    let mut client = app.connect().await;
    client.subscribe("news").await;
    client
        .send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"news"}}))
        .await;
    let mut empty = false;
    for _ in 0..50 {
        let (status, body) = app.get("/apps/4242/channels", &[]).await;
        assert_eq!(status, 200);
        if body == r#"{"channels":{}}"# {
            empty = true;
            break;
        }
        pause(Duration::from_millis(20)).await;
    }
    assert!(empty, "an unsubscribed channel stays listed");
}

#[tokio::test]
async fn get_channels_lists_occupied_channels_with_empty_objects() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    client.subscribe("private-inbox").await;
    client
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app.get("/apps/4242/channels", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"channels":{"news":{},"private-inbox":{},"presence-room":{}}})
    );
}

#[tokio::test]
async fn get_channels_filters_by_prefix() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    client.subscribe("private-inbox").await;
    client
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app
        .get("/apps/4242/channels", &[("filter_by_prefix", "presence-")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"channels":{"presence-room":{}}}));
    let (status, body) = app
        .get("/apps/4242/channels", &[("filter_by_prefix", "nothing-")])
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"channels":{}}"#));
}

#[tokio::test]
async fn get_channels_with_user_count_needs_the_presence_prefix() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let mut bob = app.connect().await;
    bob.subscribe_presence("presence-room", "u2", json!({}))
        .await;
    bob.subscribe_presence("presence-lobby", "u2", json!({}))
        .await;
    let (status, body) = app
        .get("/apps/4242/channels", &[("info", "user_count")])
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .get(
            "/apps/4242/channels",
            &[("info", "user_count"), ("filter_by_prefix", "private-")],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .get(
            "/apps/4242/channels",
            &[("info", "user_count"), ("filter_by_prefix", "presence-")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"channels":{"presence-room":{"user_count":2},"presence-lobby":{"user_count":1}}})
    );
}

#[tokio::test]
async fn get_channel_always_says_whether_it_is_occupied() {
    let app = spawn_app().await;
    let (status, body) = app.get("/apps/4242/channels/news", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"occupied": false}));
    let mut one = app.connect().await;
    one.subscribe("news").await;
    let mut two = app.connect().await;
    two.subscribe("news").await;
    let (status, body) = app.get("/apps/4242/channels/news", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"occupied": true}));
    let (status, body) = app
        .get(
            "/apps/4242/channels/news",
            &[("info", "subscription_count")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"occupied": true, "subscription_count": 2})
    );
}

#[tokio::test]
async fn get_channel_with_user_count_is_400_unless_presence() {
    let app = spawn_app().await;
    let (status, body) = app
        .get("/apps/4242/channels/news", &[("info", "user_count")])
        .await;
    assert_eq!(status, 400, "{body}");
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let mut alice_again = app.connect().await;
    alice_again
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app
        .get(
            "/apps/4242/channels/presence-room",
            &[("info", "user_count,subscription_count")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"occupied": true, "user_count": 1, "subscription_count": 2})
    );
}

#[tokio::test]
async fn get_channel_with_a_bad_name_is_400() {
    let app = spawn_app().await;
    let long = "a".repeat(201);
    let (status, body) = app.get(&format!("/apps/4242/channels/{long}"), &[]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn get_channel_cache_returns_the_last_event_and_its_ttl() {
    let app = spawn_app().await;
    let (status, body) = app
        .get("/apps/4242/channels/cache-prices", &[("info", "cache")])
        .await;
    assert_eq!(status, 200, "{body}");
    let before = parse(&body);
    assert_eq!(before["occupied"], false);
    assert!(before["cache"].is_null(), "{body}");
    let (status, body) = trigger(
        &app,
        json!({"name":"price","channels":["cache-prices"],"data":"{\"eur\":1}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (status, body) = app
        .get("/apps/4242/channels/cache-prices", &[("info", "cache")])
        .await;
    assert_eq!(status, 200, "{body}");
    let after = parse(&body);
    assert_eq!(after["occupied"], false);
    assert_eq!(after["cache"]["data"], r#"{"eur":1}"#);
    let ttl = after["cache"]["ttl"].as_u64().expect("ttl is a number");
    assert!(ttl > 1700 && ttl <= 1800, "ttl {ttl}");
    // `cache` on a channel that is not a cache channel is refused.
    let (status, body) = app
        .get("/apps/4242/channels/prices", &[("info", "cache")])
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn get_channel_users_lists_presence_members_by_id() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({"name":"Alice"}))
        .await;
    let mut alice_again = app.connect().await;
    alice_again
        .subscribe_presence("presence-room", "u1", json!({"name":"Alice"}))
        .await;
    let mut bob = app.connect().await;
    bob.subscribe_presence("presence-room", "u2", json!({"name":"Bob"}))
        .await;
    let (status, body) = app
        .get("/apps/4242/channels/presence-room/users", &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let mut users = parse(&body)["users"]
        .as_array()
        .expect("users is a list")
        .clone();
    users.sort_by_key(|u| u["id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(users, vec![json!({"id":"u1"}), json!({"id":"u2"})]);
    let (status, body) = app
        .get("/apps/4242/channels/presence-empty/users", &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"users": []}));
}

#[tokio::test]
async fn get_channel_users_on_a_non_presence_channel_is_400() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    for channel in ["news", "private-inbox"] {
        let (status, body) = app
            .get(&format!("/apps/4242/channels/{channel}/users"), &[])
            .await;
        assert_eq!(status, 400, "{channel}: {body}");
    }
}

// terminate_connections

#[tokio::test]
async fn terminate_connections_closes_the_users_signed_in_sockets_with_4009() {
    let app = spawn_app().await;
    let mut target = app.connect().await;
    target.sign_in(r#"{"id":"u1"}"#).await;
    let mut target_again = app.connect().await;
    target_again.sign_in(r#"{"id":"u1"}"#).await;
    let mut bystander = app.connect().await;
    bystander.sign_in(r#"{"id":"u2"}"#).await;
    bystander.subscribe("news").await;
    // A presence member named u1 that never signed in is not terminated.
    let mut presence_only = app.connect().await;
    presence_only
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app
        .post("/apps/4242/users/u1/terminate_connections", json!({}))
        .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    for client in [&mut target, &mut target_again] {
        let (code, _) = client.expect_error().await;
        assert_eq!(code, 4009);
        assert_eq!(client.expect_close().await, Some(4009));
    }
    publish_marker(&app, "news").await;
    bystander.expect_next("marker").await;
    presence_only
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    presence_only.expect_next("pusher:pong").await;
}

#[tokio::test]
async fn terminate_connections_for_a_user_with_no_sockets_is_an_empty_object() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/apps/4242/users/nobody/terminate_connections", json!({}))
        .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn terminate_connections_on_pythons_path_without_the_apps_prefix_works() {
    let app = spawn_app().await;
    let mut target = app.connect().await;
    target.sign_in(r#"{"id":"u1"}"#).await;
    let mut bystander = app.connect().await;
    bystander.sign_in(r#"{"id":"u2"}"#).await;
    // pusher-http-python signs `/users/u1/terminate_connections` and posts there.
    let (status, body) = app.post("/users/u1/terminate_connections", json!({})).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (code, _) = target.expect_error().await;
    assert_eq!(code, 4009);
    assert_eq!(target.expect_close().await, Some(4009));
    bystander
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    bystander.expect_next("pusher:pong").await;
}

#[tokio::test]
async fn terminate_connections_on_pythons_path_with_a_bad_signature_is_401() {
    let app = spawn_app().await;
    let mut target = app.connect().await;
    target.sign_in(r#"{"id":"u1"}"#).await;
    let body = "{}";
    let (status, text) = app
        .rest_signed(
            "POST",
            "/users/u1/terminate_connections",
            "/users/u1/terminate_connections",
            &[],
            Some(body),
            KEY,
            "wrong-secret",
            now(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = app
        .rest_signed(
            "POST",
            "/users/u1/terminate_connections",
            "/users/u1/terminate_connections",
            &[],
            Some(body),
            "unknown-key",
            SECRET,
            now(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    target
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    target.expect_next("pusher:pong").await;
}
