//! The WebSocket side: handshake, channels, presence, client events, signin, refusals.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use herald::tenants::{AppPatch, LimitsPatch};

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(300);

async fn refused_handshake(app: &TestApp, path: &str) -> (Value, Option<u16>) {
    let mut client = app.connect_raw(path).await;
    let frame = client.expect_next("pusher:error").await;
    let close = client.expect_close().await;
    (frame["data"]["code"].clone(), close)
}

#[tokio::test]
async fn handshake_announces_socket_id_and_activity_timeout() {
    let app = spawn_app().await;
    let mut client = app
        .connect_raw(&format!(
            "/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false"
        ))
        .await;
    let frame = client.expect_next("pusher:connection_established").await;
    assert!(frame["data"].is_string(), "data is double-encoded");
    let data = data_of(&frame);
    assert_eq!(data["activity_timeout"], 120);
    let socket_id = data["socket_id"].as_str().unwrap();
    let (high, low) = socket_id.split_once('.').unwrap();
    assert!(!high.is_empty() && high.bytes().all(|b| b.is_ascii_digit()));
    assert!(!low.is_empty() && low.bytes().all(|b| b.is_ascii_digit()));
}

#[tokio::test]
async fn protocols_five_and_six_are_accepted() {
    let app = spawn_app().await;
    for protocol in [5, 6] {
        let mut client = app
            .connect_raw(&format!(
                "/app/{KEY}?client=java-client&protocol={protocol}&version=2.4.0"
            ))
            .await;
        client.expect_next("pusher:connection_established").await;
    }
}

#[tokio::test]
async fn handshake_refusals_send_the_code_then_close_with_it() {
    let app = spawn_app().await;
    let cases = [
        ("/app/nope?protocol=7", 4001),
        (&*format!("/app/{KEY}"), 4008),
        (&*format!("/app/{KEY}?protocol=4"), 4007),
        (&*format!("/app/{KEY}?protocol=8"), 4007),
        (&*format!("/app/{KEY}?protocol=7&version=%20bad%20"), 4006),
        ("/application/whatever?protocol=7", 4005),
        ("/", 4005),
    ];
    for (path, expected) in cases {
        let (code, close) = refused_handshake(&app, path).await;
        assert_eq!(code, expected, "error code for {path}");
        assert_eq!(close, Some(expected), "close code for {path}");
    }
}

#[tokio::test]
async fn disabled_app_is_refused_with_4003() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        enabled: Some(false),
        ..AppPatch::default()
    })
    .await;
    let (code, close) = refused_handshake(&app, &format!("/app/{KEY}?protocol=7")).await;
    assert_eq!((code, close), (json!(4003), Some(4003)));
}

#[tokio::test]
async fn app_connection_quota_gives_4004_and_node_capacity_gives_4100() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        limits: LimitsPatch {
            max_connections: Some(1),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let _first = app.connect().await;
    let (code, close) = refused_handshake(&app, &format!("/app/{KEY}?protocol=7")).await;
    assert_eq!((code, close), (json!(4004), Some(4004)));

    let node_full = spawn_app_with(|s| s.max_connections = Some(1)).await;
    let _first = node_full.connect().await;
    let mut client = node_full
        .connect_raw(&format!("/app/{KEY}?protocol=7"))
        .await;
    assert_eq!(client.expect_close().await, Some(4100));
}

#[tokio::test]
async fn pusher_ping_gets_pusher_pong_and_ws_ping_gets_pong() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    client.expect_next("pusher:pong").await;
    client
        .socket
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        loop {
            match client.socket.next().await {
                Some(Ok(Message::Pong(payload))) => return payload,
                Some(Ok(_)) => continue,
                other => panic!("no pong: {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(&pong[..], b"hi");
}

#[tokio::test]
async fn silent_client_is_pinged_then_closed_with_4201() {
    // The production timers (a ping after 120 s of silence, closed 30 s later without a pong),
    // on paused time.
    let app = spawn_app().await;
    let settings = &app.node.settings;
    let (activity, pong) = (settings.activity_timeout, settings.pong_timeout);
    assert_eq!((activity.as_secs(), pong.as_secs()), (120, 30));
    let mut answering = app.connect().await;
    let mut silent = app.connect().await;
    let _paused = pause_time();
    advance_past(activity).await;
    silent.expect_next("pusher:ping").await;
    answering.expect_next("pusher:ping").await;
    answering
        .send_json(json!({"event":"pusher:pong","data":{}}))
        .await;
    // A round trip, so the server has read the pong before the clock moves on.
    answering.send_json(json!({"event":"pusher:ping"})).await;
    answering.expect_next("pusher:pong").await;
    advance_past(pong).await;
    assert_eq!(silent.expect_close().await, Some(4201));
    // The answering client is pinged again later rather than closed.
    advance_past(activity - pong).await;
    answering.expect_next("pusher:ping").await;
}

#[tokio::test]
async fn private_channel_needs_an_exact_signature() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("private-ok").await;

    let bad = format!("{KEY}:{}", "0".repeat(64));
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"private-x","auth":bad}}))
        .await;
    let (code, message) = client.expect_error().await;
    assert_eq!(code, Value::Null);
    assert!(message.starts_with("Invalid signature"), "{message}");
    let refused = client.expect_next("pusher:subscription_error").await;
    assert_eq!(refused["channel"], "private-x");
    assert_eq!(refused["data"]["type"], "AuthError");
    assert_eq!(refused["data"]["status"], 401);

    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"private-y","auth":"other-key:abc"}}))
        .await;
    let (_, message) = client.expect_error().await;
    assert_eq!(
        message,
        "Invalid key in subscription auth data: 'other-key'"
    );

    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"private-z"}}))
        .await;
    let (code, _) = client.expect_error().await;
    assert_eq!(code, Value::Null);
    // The socket stays open and usable.
    client.subscribe("still-open").await;
}

#[tokio::test]
async fn encrypted_channels_verify_like_private_ones_and_relay_ciphertext() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("private-encrypted-secrets").await;
    let ciphertext = r#"{"nonce":"bm9uY2U=","ciphertext":"Y2lwaGVy"}"#;
    app.post(
        "/apps/4242/events",
        json!({"name":"e","channel":"private-encrypted-secrets","data":ciphertext}),
    )
    .await;
    let event = client.expect_next("e").await;
    assert_eq!(event["data"], ciphertext);
}

#[tokio::test]
async fn presence_subscription_lists_members_and_counts_users_once() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    let data = alice
        .subscribe_presence("presence-room", "alice", json!({"name":"Alice"}))
        .await;
    assert_eq!(
        data,
        json!({"presence":{"ids":["alice"],"hash":{"alice":{"name":"Alice"}},"count":1}})
    );

    let mut bob = app.connect().await;
    let data = bob
        .subscribe_presence("presence-room", "bob", json!({}))
        .await;
    assert_eq!(data["presence"]["count"], 2);
    let added = alice.expect_next("pusher_internal:member_added").await;
    assert_eq!(data_of(&added), json!({"user_id":"bob","user_info":{}}));

    // Bob's second socket adds no member and no event.
    let mut bob_again = app.connect().await;
    let data = bob_again
        .subscribe_presence("presence-room", "bob", json!({}))
        .await;
    assert_eq!(data["presence"]["count"], 2);
    alice.expect_silence(QUIET).await;

    // Only the last socket of a user removes the member.
    bob_again
        .send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}))
        .await;
    alice.expect_silence(QUIET).await;
    bob.close().await;
    let removed = alice.expect_next("pusher_internal:member_removed").await;
    assert_eq!(data_of(&removed), json!({"user_id":"bob"}));
}

#[tokio::test]
async fn presence_numeric_user_ids_become_strings() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let channel_data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
    let auth = channel_auth(&client.socket_id, "presence-n", Some(channel_data));
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"presence-n","auth":auth,"channel_data":channel_data}}))
        .await;
    let ok = client
        .expect_next("pusher_internal:subscription_succeeded")
        .await;
    assert_eq!(data_of(&ok)["presence"]["ids"], json!(["10"]));
}

#[tokio::test]
async fn presence_signature_is_checked_against_the_exact_channel_data() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    // Signed with Python's separators, sent the same way: accepted.
    let spaced = r#"{"user_id": "1", "user_info": {"url": "a\/b"}}"#;
    let auth = channel_auth(&client.socket_id, "presence-exact", Some(spaced));
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"presence-exact","auth":auth,"channel_data":spaced}}))
        .await;
    client
        .expect_next("pusher_internal:subscription_succeeded")
        .await;
    // Signed over one spelling, sent with another: refused.
    let compact = r#"{"user_id":"2"}"#;
    let auth = channel_auth(
        &client.socket_id,
        "presence-exact2",
        Some(r#"{"user_id": "2"}"#),
    );
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"presence-exact2","auth":auth,"channel_data":compact}}))
        .await;
    client.expect_next("pusher:error").await;
    client.expect_next("pusher:subscription_error").await;
}

#[tokio::test]
async fn presence_limits_refuse_with_limit_reached() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        limits: LimitsPatch {
            max_presence_members: Some(2),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let mut a = app.connect().await;
    a.subscribe_presence("presence-small", "a", json!({})).await;
    let mut b = app.connect().await;
    b.subscribe_presence("presence-small", "b", json!({})).await;
    let mut c = app.connect().await;
    let channel_data = json!({"user_id":"c"}).to_string();
    let auth = channel_auth(&c.socket_id, "presence-small", Some(&channel_data));
    c.send_json(json!({"event":"pusher:subscribe","data":{"channel":"presence-small","auth":auth,"channel_data":channel_data}}))
        .await;
    c.expect_next("pusher:error").await;
    let refused = c.expect_next("pusher:subscription_error").await;
    assert_eq!(refused["data"]["type"], "LimitReached");
    assert_eq!(refused["data"]["status"], 403);
    // An existing member's second socket still fits.
    let mut a2 = app.connect().await;
    a2.subscribe_presence("presence-small", "a", json!({}))
        .await;

    // 1 KB of user_info and 128-character ids.
    let mut d = app.connect().await;
    let big = json!({"user_id":"d","user_info":{"blob":"x".repeat(1100)}}).to_string();
    let auth = channel_auth(&d.socket_id, "presence-big", Some(&big));
    d.send_json(json!({"event":"pusher:subscribe","data":{"channel":"presence-big","auth":auth,"channel_data":big}}))
        .await;
    d.expect_next("pusher:error").await;
    assert_eq!(
        d.expect_next("pusher:subscription_error").await["data"]["type"],
        "LimitReached"
    );
    let long_id = json!({"user_id":"i".repeat(129)}).to_string();
    let auth = channel_auth(&d.socket_id, "presence-big", Some(&long_id));
    d.send_json(json!({"event":"pusher:subscribe","data":{"channel":"presence-big","auth":auth,"channel_data":long_id}}))
        .await;
    d.expect_next("pusher:error").await;
    d.expect_next("pusher:subscription_error").await;
    let ok_id = json!({"user_id":"i".repeat(128)}).to_string();
    let auth = channel_auth(&d.socket_id, "presence-big", Some(&ok_id));
    d.send_json(json!({"event":"pusher:subscribe","data":{"channel":"presence-big","auth":auth,"channel_data":ok_id}}))
        .await;
    d.expect_next("pusher_internal:subscription_succeeded")
        .await;
}

#[tokio::test]
async fn presence_without_channel_data_uses_the_signin_user() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    // Not signed in yet: refused.
    let auth = channel_auth(&client.socket_id, "presence-signed", None);
    client
        .send_json(
            json!({"event":"pusher:subscribe","data":{"channel":"presence-signed","auth":auth}}),
        )
        .await;
    client.expect_next("pusher:error").await;
    client.expect_next("pusher:subscription_error").await;

    client
        .sign_in(r#"{"id":"42","user_info":{"name":"Ann"}}"#)
        .await;
    client
        .send_json(
            json!({"event":"pusher:subscribe","data":{"channel":"presence-signed","auth":auth}}),
        )
        .await;
    let ok = client
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    assert_eq!(
        data_of(&ok),
        json!({"presence":{"ids":["42"],"hash":{"42":{"name":"Ann"}},"count":1}})
    );
}

#[tokio::test]
async fn a_cached_event_is_replayed_for_30_minutes_then_missed() {
    let app = spawn_app().await;
    let mut early = app.connect().await;
    let mut late = app.connect().await;
    let _paused = pause_time();
    let (status, _) = app
        .post(
            "/apps/4242/events",
            json!({"name":"last","channel":"cache-ttl","data":"one"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(herald::hub::CACHE_TTL, Duration::from_secs(30 * 60));
    tokio::time::advance(herald::hub::CACHE_TTL - Duration::from_secs(1)).await;
    early.subscribe("cache-ttl").await;
    assert_eq!(early.expect_next("last").await["data"], "one");
    advance_past(Duration::from_secs(1)).await;
    late.subscribe("cache-ttl").await;
    let miss = late.expect_next("pusher:cache_miss").await;
    assert_eq!(miss["channel"], "cache-ttl");
}

#[tokio::test]
async fn cache_channels_replay_the_last_event_or_report_a_miss() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    for channel in [
        "cache-a",
        "private-cache-a",
        "private-encrypted-cache-a",
        "presence-cache-a",
    ] {
        if channel.starts_with("presence-") {
            client.subscribe_presence(channel, "u", json!({})).await;
        } else {
            client.subscribe(channel).await;
        }
        let miss = client.expect_next("pusher:cache_miss").await;
        assert_eq!(miss["channel"], channel);

        let (status, _) = app
            .post(
                "/apps/4242/events",
                json!({"name":"last","channel":channel,"data":"one"}),
            )
            .await;
        assert_eq!(status, 200);
        client.expect_next("last").await;
        app.post(
            "/apps/4242/events",
            json!({"name":"last","channel":channel,"data":"two"}),
        )
        .await;
        client.expect_next("last").await;

        let mut late = app.connect().await;
        if channel.starts_with("presence-") {
            late.subscribe_presence(channel, "late", json!({})).await;
        } else {
            late.subscribe(channel).await;
        }
        let replay = late.expect_next("last").await;
        assert_eq!(replay["channel"], channel);
        assert_eq!(replay["data"], "two");
    }
}

#[tokio::test]
async fn subscription_count_events_follow_the_app_setting() {
    let app = spawn_app().await;
    let mut first = app.connect().await;
    first.subscribe("counted").await;
    first.expect_silence(QUIET).await;

    app.update_app(AppPatch {
        subscription_count: Some(true),
        ..AppPatch::default()
    })
    .await;
    let mut second = app.connect().await;
    second.subscribe("counted").await;
    let count = second
        .expect_next("pusher_internal:subscription_count")
        .await;
    assert_eq!(data_of(&count), json!({"subscription_count": 2}));
    let count = first
        .expect_next("pusher_internal:subscription_count")
        .await;
    assert_eq!(data_of(&count), json!({"subscription_count": 2}));
    second
        .send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"counted"}}))
        .await;
    let count = first
        .expect_next("pusher_internal:subscription_count")
        .await;
    assert_eq!(data_of(&count), json!({"subscription_count": 1}));
}

#[tokio::test]
async fn duplicate_subscribe_and_unsubscribe() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("dup").await;
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"dup","auth":""}}))
        .await;
    let (code, message) = client.expect_error().await;
    assert_eq!(code, Value::Null);
    assert_eq!(message, "Existing subscription to channel dup");

    client
        .send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"dup"}}))
        .await;
    client.expect_silence(QUIET).await;
    app.post(
        "/apps/4242/events",
        json!({"name":"x","channel":"dup","data":"d"}),
    )
    .await;
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn bad_channel_names_are_refused_on_the_channel() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let too_long = "a".repeat(201);
    for channel in ["has space", "#reserved", "", too_long.as_str(), "émoji"] {
        client
            .send_json(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":""}}))
            .await;
        let (code, _) = client.expect_error().await;
        assert_eq!(code, Value::Null);
        let refused = client.expect_next("pusher:subscription_error").await;
        assert_eq!(refused["channel"], channel);
    }
    client.subscribe(&"a".repeat(200)).await;
}

#[tokio::test]
async fn client_events_reach_others_but_not_the_sender() {
    let app = spawn_app().await;
    let mut sender = app.connect().await;
    let mut other = app.connect().await;
    sender.subscribe("private-chat").await;
    other.subscribe("private-chat").await;
    sender
        .send_json(json!({"event":"client-typing","channel":"private-chat","data":{"who":"me"}}))
        .await;
    let relayed = other.expect_next("client-typing").await;
    assert_eq!(relayed["data"], json!({"who":"me"}));
    assert!(relayed.get("user_id").is_none());
    sender.expect_silence(QUIET).await;

    // On presence channels the sender's user id rides along.
    sender
        .subscribe_presence("presence-chat", "s1", json!({}))
        .await;
    other
        .subscribe_presence("presence-chat", "o1", json!({}))
        .await;
    sender.expect_next("pusher_internal:member_added").await;
    sender
        .send_json(json!({"event":"client-wave","channel":"presence-chat","data":"hi"}))
        .await;
    let relayed = other.expect_next("client-wave").await;
    assert_eq!(relayed["user_id"], "s1");
    assert_eq!(relayed["data"], "hi");
}

#[tokio::test]
async fn client_event_refusals_keep_the_socket_open() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("public-room").await;
    client
        .send_json(json!({"event":"client-x","channel":"public-room","data":{}}))
        .await;
    let (code, message) = client.expect_error().await;
    assert_eq!(code, Value::Null);
    assert!(message.contains("private and presence"), "{message}");

    client
        .send_json(json!({"event":"client-x","channel":"private-not-mine","data":{}}))
        .await;
    let (_, message) = client.expect_error().await;
    assert_eq!(
        message,
        "Cannot broadcast client event (connection not subscribed to channel private-not-mine)"
    );

    client
        .send_json(json!({"event":"not-client","channel":"private-not-mine","data":{}}))
        .await;
    client.expect_error().await;

    app.update_app(AppPatch {
        client_events: Some(false),
        ..AppPatch::default()
    })
    .await;
    client.subscribe("private-closed").await;
    client
        .send_json(json!({"event":"client-x","channel":"private-closed","data":{}}))
        .await;
    let (code, message) = client.expect_error().await;
    assert_eq!(code, Value::Null);
    assert!(message.contains("not enabled"), "{message}");
    client.send_json(json!({"event":"pusher:ping"})).await;
    client.expect_next("pusher:pong").await;
}

#[tokio::test]
async fn client_events_over_ten_per_second_get_4301_without_closing() {
    let app = spawn_app().await;
    let mut sender = app.connect().await;
    let mut other = app.connect().await;
    sender.subscribe("private-fast").await;
    other.subscribe("private-fast").await;
    for i in 0..11 {
        sender
            .send_json(json!({"event":"client-n","channel":"private-fast","data":{"i":i}}))
            .await;
    }
    let (code, _) = sender.expect_error().await;
    assert_eq!(code, 4301);
    for i in 0..10 {
        let event = other.expect_next("client-n").await;
        assert_eq!(event["data"]["i"], i);
    }
    other.expect_silence(QUIET).await;
    sender.send_json(json!({"event":"pusher:ping"})).await;
    sender.expect_next("pusher:pong").await;
}

#[tokio::test]
async fn signin_succeeds_and_server_to_user_reaches_only_that_user() {
    let app = spawn_app().await;
    let mut ann = app.connect().await;
    let user_data = r#"{"id":"ann","user_info":{"n":1}}"#;
    let success = ann.sign_in(user_data).await;
    assert_eq!(success["data"]["user_data"], user_data);
    ann.subscribe("#server-to-user-ann").await;

    let mut eve = app.connect().await;
    eve.sign_in(r#"{"id":"eve"}"#).await;
    eve.send_json(
        json!({"event":"pusher:subscribe","data":{"channel":"#server-to-user-ann","auth":""}}),
    )
    .await;
    eve.expect_next("pusher:error").await;
    eve.expect_next("pusher:subscription_error").await;

    let (status, _) = app
        .post(
            "/apps/4242/events",
            json!({"name":"note","channels":["#server-to-user-ann"],"data":"for ann"}),
        )
        .await;
    assert_eq!(status, 200);
    let note = ann.expect_next("note").await;
    assert_eq!(note["channel"], "#server-to-user-ann");
    eve.expect_silence(QUIET).await;
}

#[tokio::test]
async fn signin_refusals_are_errors_on_an_open_socket() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client
        .send_json(
            json!({"event":"pusher:signin","data":{"auth":"nocolon","user_data":"{\"id\":\"1\"}"}}),
        )
        .await;
    let (code, message) = client.expect_error().await;
    assert_eq!(code, Value::Null);
    assert!(message.contains("Invalid format"), "{message}");
    let user_data = r#"{"id":5}"#;
    let auth = signin_auth(&client.socket_id, user_data);
    client
        .send_json(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}))
        .await;
    client.expect_error().await;
    client.sign_in(r#"{"id":"first"}"#).await;
    let other = r#"{"id":"second"}"#;
    let auth = signin_auth(&client.socket_id, other);
    client
        .send_json(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":other}}))
        .await;
    let (_, message) = client.expect_error().await;
    assert!(message.contains("already signed in"), "{message}");
}

#[tokio::test]
async fn watchlist_reports_online_and_offline_in_pusher_js_format() {
    let app = spawn_app().await;
    let mut friend = app.connect().await;
    friend.sign_in(r#"{"id":"friend"}"#).await;

    let mut watcher = app.connect().await;
    watcher
        .sign_in(r#"{"id":"watcher","watchlist":["friend","stranger"]}"#)
        .await;
    let initial = watcher
        .expect_next("pusher_internal:watchlist_events")
        .await;
    assert!(initial.get("channel").is_none());
    assert_eq!(
        data_of(&initial),
        json!({"events":[{"name":"online","user_ids":["friend"]},{"name":"offline","user_ids":["stranger"]}]})
    );

    let mut stranger = app.connect().await;
    stranger.sign_in(r#"{"id":"stranger"}"#).await;
    let online = watcher
        .expect_next("pusher_internal:watchlist_events")
        .await;
    assert_eq!(
        data_of(&online),
        json!({"events":[{"name":"online","user_ids":["stranger"]}]})
    );
    friend.close().await;
    let offline = watcher
        .expect_next("pusher_internal:watchlist_events")
        .await;
    assert_eq!(
        data_of(&offline),
        json!({"events":[{"name":"offline","user_ids":["friend"]}]})
    );
}

#[tokio::test]
async fn watchlist_over_100_ids_is_truncated_with_4302() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let ids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let user_data = json!({"id":"me","watchlist":ids}).to_string();
    client.sign_in(&user_data).await;
    let (code, _) = client.expect_error().await;
    assert_eq!(code, 4302);
    let statuses = client.expect_next("pusher_internal:watchlist_events").await;
    let offline = &data_of(&statuses)["events"][0]["user_ids"];
    assert_eq!(offline.as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn garbage_from_a_client_is_answered_not_fatal() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let mut bystander = app.connect().await;
    bystander.subscribe("calm").await;
    for text in [
        "not json",
        "[]",
        "{\"event\":42}",
        "{\"event\":\"pusher:unknown\"}",
        "{\"event\":\"pusher:subscribe\",\"data\":\"{broken\"}",
        "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":5}}",
    ] {
        client.send_text(text).await;
        let (code, _) = client.expect_error().await;
        assert_eq!(code, Value::Null, "for {text}");
    }
    client
        .socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let (code, message) = client.expect_error().await;
    assert_eq!(code, Value::Null);
    assert!(message.contains("Binary"), "{message}");
    client.send_json(json!({"event":"pusher:ping"})).await;
    client.expect_next("pusher:pong").await;
    app.post(
        "/apps/4242/events",
        json!({"name":"ok","channel":"calm","data":"x"}),
    )
    .await;
    bystander.expect_next("ok").await;
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let app = spawn_app_with(|s| s.max_frame_bytes = 4096).await;
    let mut client = app.connect().await;
    let big = json!({"event":"client-big","channel":"private-a","data":"x".repeat(5000)});
    client.send_json(big).await;
    assert_eq!(client.expect_close().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_4100_without_slowing_others() {
    let app = spawn_app_with(|s| s.outbox_capacity = 64).await;
    let mut slow = app.connect().await;
    slow.subscribe("firehose").await;
    let mut fast = app.connect().await;
    fast.subscribe("firehose").await;
    // The slow client reads, but far slower than events are published.
    assert_slow_reader_closed_fast_served(&app, slow, fast).await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_and_leaves_its_channels() {
    let app = spawn_app_with(|s| s.outbox_capacity = 8).await;
    let mut stalled = app.connect().await;
    stalled
        .subscribe_presence("presence-stall", "ghost", json!({}))
        .await;
    let channel = herald::protocol::ChannelName::parse("presence-stall", 200).unwrap();
    let data = "x".repeat(10 * 1024);
    let hub = app.node.hub.app(APP_ID);
    for _ in 0..4000 {
        hub.publish(&channel, "big", &data, None);
        tokio::task::yield_now().await;
    }
    // The stalled peer never reads: within the close budget it is gone, with its presence.
    let mut gone = false;
    for _ in 0..50 {
        if hub.presence_users("presence-stall").is_empty() {
            gone = true;
            break;
        }
        pause(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the stalled connection still holds its presence member"
    );
    drop(stalled);
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_4200() {
    let mut app = spawn_app().await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    b.subscribe("x").await;
    let stopping = tokio::spawn(async move {
        app.stop().await;
        app
    });
    assert_eq!(a.expect_close().await, Some(4200));
    assert_eq!(b.expect_close().await, Some(4200));
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_connection_may_hold_at_most_1000_subscriptions() {
    let app = spawn_app().await;
    // 1000 is the ceiling of the per-app setting (default 100), with no subscribe rate limit.
    app.update_app(herald::tenants::AppPatch {
        limits: herald::tenants::LimitsPatch {
            max_subscriptions_per_connection: Some(1000),
            max_subscribes_per_second: Some(0),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut client = app.connect().await;
    for i in 0..1000 {
        client
            .send_json(json!({"event":"pusher:subscribe","data":{"channel":format!("many-{i}"),"auth":""}}))
            .await;
    }
    for _ in 0..1000 {
        client
            .expect_next("pusher_internal:subscription_succeeded")
            .await;
    }
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":"one-too-many","auth":""}}))
        .await;
    client.expect_next("pusher:error").await;
    let refused = client.expect_next("pusher:subscription_error").await;
    assert_eq!(refused["data"]["type"], "LimitReached");
}

#[tokio::test]
async fn signin_refuses_ids_that_cannot_name_a_user_channel_and_dedupes_the_watchlist() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let user_data = r#"{"id":"auth0|abc"}"#;
    let auth = signin_auth(&client.socket_id, user_data);
    client
        .send_json(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}))
        .await;
    let (_, message) = client.expect_error().await;
    assert!(message.contains("user ids may only contain"), "{message}");

    client
        .sign_in(r#"{"id":"watcher","watchlist":["pal","pal"]}"#)
        .await;
    let initial = client.expect_next("pusher_internal:watchlist_events").await;
    assert_eq!(
        data_of(&initial),
        json!({"events":[{"name":"offline","user_ids":["pal"]}]})
    );
    let mut pal = app.connect().await;
    pal.sign_in(r#"{"id":"pal"}"#).await;
    client.expect_next("pusher_internal:watchlist_events").await;
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_client_close_frame_is_answered() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client
        .socket
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    assert_eq!(client.expect_close().await, Some(1000));
}
