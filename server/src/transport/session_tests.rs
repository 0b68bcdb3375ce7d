//! The session's answers and refusals, code by code (`interfaces.md`), on a node built as the
//! server builds it and a detached connection.

use serde_json::{json, Value};

use super::testing::{TestNode, TestSession};

fn subscribe(channel: &str, auth: Option<&str>, channel_data: Option<&str>) -> Value {
    let mut data = json!({ "channel": channel });
    if let Some(auth) = auth {
        data["auth"] = json!(auth);
    }
    if let Some(channel_data) = channel_data {
        data["channel_data"] = json!(channel_data);
    }
    json!({ "event": "pusher:subscribe", "data": data })
}

fn client_event(channel: &str, n: usize) -> Value {
    json!({ "event": "client-typing", "channel": channel, "data": { "n": n } })
}

/// The one `pusher:error` in `frames`: its code and message.
fn error_of(frames: &[Value]) -> (Value, String) {
    let errors: Vec<&Value> = frames
        .iter()
        .filter(|f| f["event"] == "pusher:error")
        .collect();
    assert_eq!(errors.len(), 1, "one pusher:error in {frames:?}");
    let data = &errors[0]["data"];
    (
        data["code"].clone(),
        data["message"].as_str().expect("a message").to_owned(),
    )
}

/// A refused subscription: `pusher:error` with `code`, then `pusher:subscription_error` with
/// `kind` and `status`; returns the message.
fn assert_refused(frames: &[Value], channel: &str, code: Value, kind: &str, status: u16) -> String {
    let events: Vec<&str> = frames
        .iter()
        .map(|f| f["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["pusher:error", "pusher:subscription_error"]);
    let (error_code, message) = error_of(frames);
    assert_eq!(error_code, code);
    let refusal = &frames[1];
    assert_eq!(refusal["channel"], channel);
    assert_eq!(refusal["data"]["type"], kind);
    assert_eq!(refusal["data"]["status"], status);
    assert_eq!(refusal["data"]["error"], message.as_str());
    message
}

fn subscribed(frames: &[Value], channel: &str) -> bool {
    frames
        .iter()
        .any(|f| f["event"] == "pusher_internal:subscription_succeeded" && f["channel"] == channel)
}

#[tokio::test]
async fn a_private_channel_needs_a_valid_signature() {
    let node = TestNode::new().await;
    let mut client = node.session();
    client.send(subscribe("private-a", None, None));
    let message = assert_refused(&client.frames(), "private-a", Value::Null, "AuthError", 401);
    assert!(message.starts_with("Missing auth"), "{message}");

    let bad = format!("{}:{}", super::testing::KEY, "0".repeat(64));
    client.send(subscribe("private-a", Some(&bad), None));
    let message = assert_refused(&client.frames(), "private-a", Value::Null, "AuthError", 401);
    assert!(message.starts_with("Invalid signature"), "{message}");

    client.send(subscribe("private-a", Some("other-key:abc"), None));
    let message = assert_refused(&client.frames(), "private-a", Value::Null, "AuthError", 401);
    assert!(message.starts_with("Invalid key"), "{message}");

    // Signed for another socket: refused too.
    let other = node.session();
    let stolen = other.channel_auth("private-a", None);
    client.send(subscribe("private-a", Some(&stolen), None));
    assert_refused(&client.frames(), "private-a", Value::Null, "AuthError", 401);

    let auth = client.channel_auth("private-a", None);
    client.send(subscribe("private-a", Some(&auth), None));
    assert!(subscribed(&client.frames(), "private-a"));
}

#[tokio::test]
async fn presence_needs_channel_data_or_a_signin() {
    let node = TestNode::new().await;
    let mut client = node.session();
    let auth = client.channel_auth("presence-room", None);
    client.send(subscribe("presence-room", Some(&auth), None));
    let message = assert_refused(
        &client.frames(),
        "presence-room",
        Value::Null,
        "AuthError",
        401,
    );
    assert_eq!(
        message,
        "Presence subscriptions need channel_data, or a signed-in connection"
    );

    // channel_data without a user id.
    let data = r#"{"user_info":{}}"#;
    let auth = client.channel_auth("presence-room", Some(data));
    client.send(subscribe("presence-room", Some(&auth), Some(data)));
    let message = assert_refused(
        &client.frames(),
        "presence-room",
        Value::Null,
        "AuthError",
        401,
    );
    assert!(message.contains("user_id"), "{message}");

    // Too big a member: a limit.
    let data = json!({"user_id": "u", "user_info": {"blob": "x".repeat(2000)}}).to_string();
    let auth = client.channel_auth("presence-room", Some(&data));
    client.send(subscribe("presence-room", Some(&auth), Some(&data)));
    assert_refused(
        &client.frames(),
        "presence-room",
        Value::Null,
        "LimitReached",
        403,
    );

    let data = r#"{"user_id":"u1","user_info":{"name":"One"}}"#;
    let auth = client.channel_auth("presence-room", Some(data));
    client.send(subscribe("presence-room", Some(&auth), Some(data)));
    assert!(subscribed(&client.frames(), "presence-room"));
}

#[tokio::test]
async fn client_events_are_refused_where_they_are_not_allowed() {
    let node = TestNode::new().await;
    let mut client = node.session();
    client.send(subscribe("news", None, None));
    assert!(subscribed(&client.frames(), "news"));

    client.send(client_event("news", 0));
    let (code, message) = error_of(&client.frames());
    assert_eq!(code, Value::Null);
    assert_eq!(
        message,
        "Client events are only supported on private and presence channels, not on news"
    );

    client.send(client_event("private-elsewhere", 0));
    let (code, message) = error_of(&client.frames());
    assert_eq!(code, Value::Null);
    assert_eq!(
        message,
        "Cannot broadcast client event (connection not subscribed to channel private-elsewhere)"
    );

    client.send(client_event("private-encrypted-x", 0));
    let (code, message) = error_of(&client.frames());
    assert_eq!(code, Value::Null);
    assert!(message.contains("encrypted"), "{message}");

    node.change_app(|app| app.client_events = false);
    client.send(client_event("private-elsewhere", 0));
    let (code, message) = error_of(&client.frames());
    assert_eq!(code, Value::Null);
    assert!(
        message.starts_with("Client events are not enabled"),
        "{message}"
    );
}

#[tokio::test]
async fn client_events_past_the_rate_get_4301_and_the_others_are_relayed() {
    let node = TestNode::new().await;
    let mut sender = node.session();
    let mut peer = node.session();
    for client in [&mut sender, &mut peer] {
        let auth = client.channel_auth("private-chat", None);
        client.send(subscribe("private-chat", Some(&auth), None));
        assert!(subscribed(&client.frames(), "private-chat"));
    }
    // Pusher's default: 10 per second per connection.
    for n in 0..10 {
        sender.send(client_event("private-chat", n));
    }
    assert!(sender.frames().is_empty(), "the sender hears nothing back");
    let relayed = peer.frames();
    assert_eq!(relayed.len(), 10);
    assert_eq!(relayed[0]["event"], "client-typing");
    assert_eq!(relayed[0]["user_id"], Value::Null);

    sender.send(client_event("private-chat", 10));
    let (code, message) = error_of(&sender.frames());
    assert_eq!(code, 4301);
    assert_eq!(
        message,
        "Client event rejected due to rate limit (10 per second)"
    );
    assert!(peer.frames().is_empty());
}

#[tokio::test]
async fn a_connection_may_hold_only_so_many_subscriptions() {
    let node = TestNode::new().await;
    node.change_app(|app| app.limits.max_subscriptions_per_connection = 3);
    let mut client = node.session();
    for n in 0..3 {
        client.send(subscribe(&format!("c{n}"), None, None));
    }
    let frames = client.frames();
    assert_eq!(frames.len(), 3);
    client.send(subscribe("c3", None, None));
    let message = assert_refused(&client.frames(), "c3", Value::Null, "LimitReached", 403);
    assert_eq!(message, "A connection may subscribe to at most 3 channels");

    // Subscribing twice is an error without a subscription_error.
    client.send(subscribe("c0", None, None));
    let frames = client.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(error_of(&frames).1, "Existing subscription to channel c0");

    // Leaving makes room.
    client.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "c0"}}));
    client.send(subscribe("c3", None, None));
    assert!(subscribed(&client.frames(), "c3"));
}

#[tokio::test]
async fn subscribes_past_the_rate_get_4301() {
    let node = TestNode::new().await;
    node.change_app(|app| {
        app.limits.max_subscribes_per_second = 2;
        app.limits.max_subscriptions_per_connection = 2;
    });
    let mut client = node.session();
    client.send(subscribe("a", None, None));
    client.send(subscribe("b", None, None));
    client.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "a"}}));
    assert_eq!(client.frames().len(), 2);
    client.send(subscribe("c", None, None));
    let message = assert_refused(&client.frames(), "c", json!(4301), "LimitReached", 429);
    assert!(
        message.starts_with("Subscription rejected due to rate limit"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_frames_and_bad_channel_names_are_answered_not_fatal() {
    let node = TestNode::new().await;
    let mut client = node.session();
    client.session.on_text("not json");
    let (code, _) = error_of(&client.frames());
    assert_eq!(code, Value::Null);
    client.session.on_binary();
    let (code, _) = error_of(&client.frames());
    assert_eq!(code, Value::Null);
    client.send(subscribe("bad name!", None, None));
    assert_refused(&client.frames(), "bad name!", Value::Null, "AuthError", 401);
    client.send(json!({"event": "pusher:ping", "data": {}}));
    let frames = client.frames();
    assert_eq!(frames[0]["event"], "pusher:pong");
    assert!(client.conn.outbox().close_request().is_none());
}

#[tokio::test]
async fn a_session_leaves_its_channels_when_it_ends() {
    let node = TestNode::new().await;
    let mut client = node.session();
    let data = r#"{"user_id":"u1"}"#;
    let auth = client.channel_auth("presence-room", Some(data));
    client.send(subscribe("presence-room", Some(&auth), Some(data)));
    client.send(subscribe("news", None, None));
    let app = node.node.hub.app(super::testing::APP_ID);
    assert_eq!(app.presence_users("presence-room"), ["u1"]);
    assert_eq!(app.channels("").len(), 2);
    let TestSession { session, .. } = client;
    session.finish();
    assert!(app.presence_users("presence-room").is_empty());
    assert!(app.channels("").is_empty());
}

#[tokio::test]
async fn frames_behind_deferred_work_wait_and_then_run_in_order() {
    let node = TestNode::new().await;
    let mut client = node.session();
    client.session.force_defer = true;
    client.send(subscribe("a", None, None));
    assert!(client.session.pending(), "the subscribe waits");
    client.send(json!({ "event": "pusher:ping", "data": {} }));
    client.send(subscribe("b", None, None));
    client.send(json!({ "event": "pusher:ping", "data": {} }));
    assert!(
        client.frames().is_empty(),
        "nothing is answered while the subscribe waits"
    );
    client.drive().await;
    assert!(!client.session.pending());
    let events: Vec<(String, String)> = client
        .frames()
        .iter()
        .map(|f| {
            (
                f["event"].as_str().unwrap().to_owned(),
                f["channel"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("pusher_internal:subscription_succeeded", "a"),
        ("pusher:pong", ""),
        ("pusher_internal:subscription_succeeded", "b"),
        ("pusher:pong", ""),
    ]
    .iter()
    .map(|(e, c)| ((*e).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(
        events, expected,
        "in the order sent, the second subscribe deferred too"
    );
    // A duplicate subscribe behind a deferred one sees the first as done.
    client.send(subscribe("c", None, None));
    client.send(subscribe("c", None, None));
    client.drive().await;
    let frames = client.frames();
    assert!(subscribed(&frames, "c"));
    let (_, message) = error_of(&frames);
    assert!(message.starts_with("Existing subscription"), "{message}");
}

#[tokio::test]
async fn the_queue_behind_deferred_work_is_bounded() {
    let node = TestNode::new().await;
    let mut client = node.session();
    client.session.force_defer = true;
    client.send(subscribe("a", None, None));
    let ping = json!({ "event": "pusher:ping", "data": {} }).to_string();
    let fits = super::deferral::MAX_DEFERRED_BYTES / ping.len();
    for _ in 0..fits + 10 {
        client.send_text(&ping);
    }
    let frames = client.frames();
    assert_eq!(frames.len(), 10, "past the bound each frame is refused");
    for frame in &frames {
        assert_eq!(frame["event"], "pusher:error");
        assert!(frame["data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Too many messages"));
    }
    client.drive().await;
    let frames = client.frames();
    // The test connection's outbox holds 4,096 frames.
    assert_eq!(
        frames.len(),
        (1 + fits).min(4096),
        "the queued ones all ran"
    );
    assert!(subscribed(&frames[..1], "a"));
    assert!(frames[1..].iter().all(|f| f["event"] == "pusher:pong"));
    assert!(!client.session.pending());
}

#[tokio::test]
async fn a_session_that_ends_with_deferred_work_forgets_it() {
    let node = TestNode::new().await;
    let mut client = node.session();
    client.session.force_defer = true;
    client.send(subscribe("a", None, None));
    client.send(subscribe("b", None, None));
    let TestSession { session, .. } = client;
    session.finish();
    let info = node.node.hub.app(super::testing::APP_ID).channel_info("a");
    assert_eq!(info.subscription_count, 0, "never registered");
}
