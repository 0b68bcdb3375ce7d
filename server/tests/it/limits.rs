//! Per-app limits at configured (non-default) values, allowed WebSocket origins and key rotation,
//! each against a spawned server over real sockets. Every refusal is pinned by its exact status,
//! frame code or close code, and every "nothing was delivered" is followed by a marker that must be
//! the very next frame, so an absence cannot pass just because nothing was ever sent.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use herald::tenants::{AppPatch, LimitsPatch, StoreError};

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(300);
const EVENTS: &str = "/apps/4242/events";
const BATCH: &str = "/apps/4242/batch_events";

/// Sets some of the default app's limits (and reloads the server's cache).
async fn set_limits(app: &TestApp, limits: LimitsPatch) {
    app.update_app(AppPatch {
        limits,
        ..AppPatch::default()
    })
    .await;
}

/// A REST answer with the header the rate limits add.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

impl Reply {
    /// Asserts a 429 whose `Retry-After` is a whole number of seconds, at least 1.
    fn assert_too_many(&self, what: &str) {
        assert_eq!(self.status, 429, "{what}: {self:?}");
        let retry = self
            .retry_after
            .unwrap_or_else(|| panic!("{what}: a 429 carries Retry-After: {self:?}"));
        assert!(retry >= 1, "{what}: Retry-After is at least 1 s: {self:?}");
        assert!(!self.body.is_empty(), "{what}: a 429 says why");
    }
}

/// A signed REST request with any key pair, keeping the `Retry-After` header.
async fn signed(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: &str,
    secret: &str,
) -> Reply {
    let body = body.map(Value::to_string);
    let md5 = body.as_deref().map(|b| md5_hex(b.as_bytes()));
    let params = signed_params(method, path, &[], md5.as_deref(), key, secret, now());
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let url = format!("{}?{}", app.url(path), query.join("&"));
    let mut request = app.http.request(method.parse().expect("method"), url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("Retry-After is whole seconds: {v:?}"))
        });
    Reply {
        status,
        retry_after,
        body: response.text().await.expect("body"),
    }
}

async fn post(app: &TestApp, path: &str, body: Value) -> Reply {
    signed(app, "POST", path, Some(&body), KEY, SECRET).await
}

async fn get(app: &TestApp, path: &str) -> Reply {
    signed(app, "GET", path, None, KEY, SECRET).await
}

/// A one-channel trigger with the default credentials; returns the status.
async fn trigger(app: &TestApp, name: &str, channel: &str, data: &str) -> u16 {
    let reply = post(
        app,
        EVENTS,
        json!({"name": name, "channels": [channel], "data": data}),
    )
    .await;
    reply.status
}

/// Publishes `marker` on `channel`; a subscriber whose next frame is it received nothing before.
async fn publish_marker(app: &TestApp, channel: &str) {
    assert_eq!(trigger(app, "marker", channel, "{}").await, 200, "marker");
}

/// Reads the next frame and checks it is `event` on `channel`.
async fn expect_on(client: &mut Client, event: &str, channel: &str) -> Value {
    let frame = client.expect_next(event).await;
    assert_eq!(frame["channel"], channel, "{frame}");
    frame
}

fn socket_path(key: &str) -> String {
    format!("/app/{key}?protocol=7&client=js&version=8.6.0&flash=false")
}

/// A handshake that must be refused: the `pusher:error` code, then the close code.
async fn refused_handshake(client: &mut Client) -> (Value, Option<u16>) {
    let frame = client.expect_next("pusher:error").await;
    let close = client.expect_close().await;
    (frame["data"]["code"].clone(), close)
}

/// Opens a WebSocket to the default app, with `origin` as its `Origin` header (or none).
async fn connect_from(app: &TestApp, origin: Option<&str>) -> Client {
    let url = format!("ws://{}{}", app.address, socket_path(KEY));
    let mut request = url.into_client_request().expect("a client request");
    if let Some(origin) = origin {
        request.headers_mut().insert(
            "Origin",
            HeaderValue::from_str(origin).expect("a header value"),
        );
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    Client {
        socket,
        socket_id: String::new(),
    }
}

async fn send_client_event(client: &mut Client, event: &str, channel: &str, data: Value) {
    client
        .send_json(json!({"event": event, "channel": channel, "data": data}))
        .await;
}

/// Two connections subscribed to `channel` (private) with client events on.
async fn two_on_private(app: &TestApp, channel: &str) -> (Client, Client) {
    let mut sender = app.connect().await;
    sender.subscribe(channel).await;
    let mut receiver = app.connect().await;
    receiver.subscribe(channel).await;
    (sender, receiver)
}

/// The connection is alive: `pusher:ping` still gets `pusher:pong`.
async fn assert_open(client: &mut Client) {
    client
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    client.expect_next("pusher:pong").await;
}

/// Sends a presence subscribe by hand (to see a refusal) and returns the channel_data used.
async fn send_presence_subscribe(client: &mut Client, channel: &str, channel_data: &Value) {
    let channel_data = channel_data.to_string();
    let auth = channel_auth(&client.socket_id, channel, Some(&channel_data));
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth,"channel_data":channel_data}}))
        .await;
}

/// A refused subscription: `pusher:error` with a null code, then `pusher:subscription_error` on
/// `channel`; returns the latter's data.
async fn expect_subscription_refused(client: &mut Client, channel: &str) -> Value {
    let error = client.expect_next("pusher:error").await;
    assert_eq!(error["data"]["code"], Value::Null, "{error}");
    let refused = client.expect_next("pusher:subscription_error").await;
    assert_eq!(refused["channel"], channel, "{refused}");
    data_of(&refused)
}

// ---------------------------------------------------------------------------------------------
// Connections

#[tokio::test]
async fn max_connections_refuses_the_next_handshake_with_4004_and_frees_a_slot_on_close() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_connections: Some(2),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut first = app.connect().await;
    let mut second = app.connect().await;
    let mut third = app.connect_raw(&socket_path(KEY)).await;
    assert_eq!(
        refused_handshake(&mut third).await,
        (json!(4004), Some(4004))
    );
    // The refusal leaves the two admitted connections alone.
    assert_open(&mut first).await;
    assert_open(&mut second).await;

    // Closing one frees its slot (released when the server sees the close).
    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = app.connect_raw(&socket_path(KEY)).await;
        let frame = again.next_json().await;
        if frame["event"] == "pusher:connection_established" {
            break;
        }
        assert_eq!(frame["data"]["code"], 4004, "{frame}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection's slot was never released"
        );
        pause(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Rates

#[tokio::test]
async fn client_events_over_the_configured_rate_get_4301_and_the_socket_stays_open() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        client_events: Some(true),
        limits: LimitsPatch {
            max_client_events_per_second: Some(2),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let (mut sender, mut receiver) = two_on_private(&app, "private-chat").await;
    let paused = pause_time();
    for n in 1..=3 {
        send_client_event(&mut sender, "client-n", "private-chat", json!({"n": n})).await;
    }
    let (code, message) = sender.expect_error().await;
    assert_eq!(code, 4301, "{message}");
    assert_open(&mut sender).await;

    // After the bucket refills, the same socket may send again.
    advance_past(Duration::from_secs(1)).await;
    send_client_event(&mut sender, "client-n", "private-chat", json!({"n": 4})).await;
    // The receiver saw 1, 2 and then 4: the refused third never arrived.
    for n in [1, 2, 4] {
        let frame = expect_on(&mut receiver, "client-n", "private-chat").await;
        assert_eq!(data_of(&frame), json!({"n": n}), "{frame}");
    }
    paused.resume();
    sender.expect_silence(QUIET).await;
}

#[tokio::test]
async fn backend_events_over_the_configured_rate_get_429_with_retry_after_and_publish_nothing() {
    let app = spawn_app().await;
    let mut subscriber = app.connect().await;
    subscriber.subscribe("news").await;
    set_limits(
        &app,
        LimitsPatch {
            max_backend_events_per_second: Some(2),
            ..LimitsPatch::default()
        },
    )
    .await;
    let paused = pause_time();

    for name in ["e1", "e2"] {
        assert_eq!(trigger(&app, name, "news", "{}").await, 200, "{name}");
    }
    let third = post(
        &app,
        EVENTS,
        json!({"name":"e3","channels":["news"],"data":"{}"}),
    )
    .await;
    third.assert_too_many("third trigger within the second");

    // A batch draws one per event: three events never fit a budget of two.
    let batch = post(
        &app,
        BATCH,
        json!({"batch":[
            {"name":"b1","channel":"news","data":"{}"},
            {"name":"b2","channel":"news","data":"{}"},
            {"name":"b3","channel":"news","data":"{}"},
        ]}),
    )
    .await;
    batch.assert_too_many("a batch of three with a rate of two");

    // Once the bucket has refilled, a batch of two goes through.
    advance_past(Duration::from_secs(1)).await;
    let refilled = post(
        &app,
        BATCH,
        json!({"batch":[
            {"name":"m1","channel":"news","data":"{}"},
            {"name":"m2","channel":"news","data":"{}"},
        ]}),
    )
    .await;
    assert_eq!(refilled.status, 200, "{refilled:?}");
    assert_eq!(refilled.retry_after, None, "{refilled:?}");
    for name in ["e1", "e2", "m1", "m2"] {
        expect_on(&mut subscriber, name, "news").await;
    }
    paused.resume();
    subscriber.expect_silence(QUIET).await;
}

#[tokio::test]
async fn read_requests_over_the_configured_rate_get_429_and_triggers_are_not_affected() {
    let app = spawn_app().await;
    let mut subscriber = app.connect().await;
    subscriber.subscribe("news").await;
    set_limits(
        &app,
        LimitsPatch {
            max_read_requests_per_second: Some(1),
            ..LimitsPatch::default()
        },
    )
    .await;
    let _paused = pause_time();

    let first = get(&app, "/apps/4242/channels").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.retry_after, None);
    get(&app, "/apps/4242/channels")
        .await
        .assert_too_many("second GET /channels");
    // Every read route draws on the same budget.
    get(&app, "/apps/4242/channels/news")
        .await
        .assert_too_many("GET /channels/news");

    // Triggers have their own (here unlimited) budget.
    for n in 0..5 {
        assert_eq!(
            trigger(&app, "still", "news", &n.to_string()).await,
            200,
            "trigger {n}"
        );
    }
    for _ in 0..5 {
        expect_on(&mut subscriber, "still", "news").await;
    }

    // A rate, not a ban: after a second, reading works again.
    advance_past(Duration::from_secs(1)).await;
    let later = get(&app, "/apps/4242/channels/news").await;
    assert_eq!(later.status, 200, "{later:?}");
}

#[tokio::test]
async fn a_rate_limit_of_zero_means_unlimited() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        client_events: Some(true),
        limits: LimitsPatch {
            max_backend_events_per_second: Some(1),
            max_read_requests_per_second: Some(1),
            max_client_events_per_second: Some(1),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    // The limits of one are in force...
    assert_eq!(trigger(&app, "warm", "news", "{}").await, 200);
    post(
        &app,
        EVENTS,
        json!({"name":"warm","channels":["news"],"data":"{}"}),
    )
    .await
    .assert_too_many("second trigger at 1/s");
    assert_eq!(get(&app, "/apps/4242/channels").await.status, 200);
    get(&app, "/apps/4242/channels")
        .await
        .assert_too_many("second read at 1/s");

    // ...and zero lifts them.
    set_limits(
        &app,
        LimitsPatch {
            max_backend_events_per_second: Some(0),
            max_read_requests_per_second: Some(0),
            max_client_events_per_second: Some(0),
            ..LimitsPatch::default()
        },
    )
    .await;
    let (mut sender, mut receiver) = two_on_private(&app, "private-zero").await;
    let mut subscriber = app.connect().await;
    subscriber.subscribe("news").await;
    for n in 0..20 {
        let reply = post(
            &app,
            EVENTS,
            json!({"name":"fast","channels":["news"],"data": n.to_string()}),
        )
        .await;
        assert_eq!(reply.status, 200, "trigger {n}: {reply:?}");
    }
    for n in 0..20 {
        let reply = get(&app, "/apps/4242/channels").await;
        assert_eq!(reply.status, 200, "read {n}: {reply:?}");
    }
    for n in 0..20 {
        send_client_event(&mut sender, "client-fast", "private-zero", json!({"n": n})).await;
    }
    for n in 0..20 {
        let frame = expect_on(&mut subscriber, "fast", "news").await;
        assert_eq!(frame["data"], n.to_string());
        let frame = expect_on(&mut receiver, "client-fast", "private-zero").await;
        assert_eq!(data_of(&frame), json!({"n": n}));
    }
    sender.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_connection_limit_of_zero_means_unlimited() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_connections: Some(1),
            ..LimitsPatch::default()
        },
    )
    .await;
    let _first = app.connect().await;
    let mut refused = app.connect_raw(&socket_path(KEY)).await;
    assert_eq!(
        refused_handshake(&mut refused).await,
        (json!(4004), Some(4004))
    );
    set_limits(
        &app,
        LimitsPatch {
            max_connections: Some(0),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(app.connect().await);
    }
}

// ---------------------------------------------------------------------------------------------
// Presence

#[tokio::test]
async fn presence_members_over_the_configured_limit_get_limit_reached_403() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_presence_members: Some(2),
            ..LimitsPatch::default()
        },
    )
    .await;
    let channel = "presence-room";
    let mut a = app.connect().await;
    a.subscribe_presence(channel, "a", json!({})).await;
    let mut b = app.connect().await;
    b.subscribe_presence(channel, "b", json!({})).await;
    let added = expect_on(&mut a, "pusher_internal:member_added", channel).await;
    assert_eq!(data_of(&added)["user_id"], "b");

    let mut c = app.connect().await;
    send_presence_subscribe(&mut c, channel, &json!({"user_id":"c"})).await;
    let refused = expect_subscription_refused(&mut c, channel).await;
    assert_eq!(refused["type"], "LimitReached", "{refused}");
    assert_eq!(refused["status"], 403, "{refused}");
    assert_open(&mut c).await;

    // Nobody heard of c, and c is not subscribed (it gets no channel events).
    publish_marker(&app, channel).await;
    expect_on(&mut a, "marker", channel).await;
    expect_on(&mut b, "marker", channel).await;
    c.expect_silence(QUIET).await;
    let (status, body) = app
        .get(&format!("/apps/4242/channels/{channel}/users"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let users: Value = serde_json::from_str(&body).expect("JSON");
    let mut ids: Vec<&str> = users["users"]
        .as_array()
        .expect("a users list")
        .iter()
        .map(|u| u["id"].as_str().expect("an id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "b"], "{body}");
}

#[tokio::test]
async fn presence_user_info_over_the_configured_size_gets_limit_reached_403() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_presence_member_bytes: Some(50),
            ..LimitsPatch::default()
        },
    )
    .await;
    let channel = "presence-sized";
    // `{"name":"..."}` is 11 bytes around the name: 39 characters make exactly 50 bytes.
    let fits = json!({"name": "x".repeat(39)});
    assert_eq!(fits.to_string().len(), 50);
    let mut a = app.connect().await;
    a.subscribe_presence(channel, "a", fits).await;

    let too_big = json!({"name": "x".repeat(40)});
    let mut b = app.connect().await;
    send_presence_subscribe(
        &mut b,
        channel,
        &json!({"user_id":"b","user_info": too_big}),
    )
    .await;
    let refused = expect_subscription_refused(&mut b, channel).await;
    assert_eq!(refused["type"], "LimitReached", "{refused}");
    assert_eq!(refused["status"], 403, "{refused}");

    publish_marker(&app, channel).await;
    expect_on(&mut a, "marker", channel).await;
    b.expect_silence(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// Names, sizes and counts

#[tokio::test]
async fn channel_names_over_the_configured_length_are_refused_on_subscribe_and_rest() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_channel_name_length: Some(10),
            ..LimitsPatch::default()
        },
    )
    .await;
    let ten = "abcdefghij";
    let eleven = "abcdefghijk";
    let mut client = app.connect().await;
    client.subscribe(ten).await;
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":eleven,"auth":""}}))
        .await;
    expect_subscription_refused(&mut client, eleven).await;
    assert_open(&mut client).await;

    let reply = post(
        &app,
        EVENTS,
        json!({"name":"e","channels":[eleven],"data":"{}"}),
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    // One bad name refuses the whole trigger: the good channel gets nothing.
    let reply = post(
        &app,
        EVENTS,
        json!({"name":"e","channels":[ten, eleven],"data":"{}"}),
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = get(&app, &format!("/apps/4242/channels/{eleven}")).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = get(&app, &format!("/apps/4242/channels/{ten}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    publish_marker(&app, ten).await;
    expect_on(&mut client, "marker", ten).await;
}

#[tokio::test]
async fn event_names_over_the_configured_length_are_refused_on_rest_and_from_clients() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        client_events: Some(true),
        limits: LimitsPatch {
            max_event_name_length: Some(10),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let channel = "private-names";
    let (mut sender, mut receiver) = two_on_private(&app, channel).await;

    assert_eq!(trigger(&app, "abcdefghijk", channel, "{}").await, 400);
    assert_eq!(trigger(&app, "abcdefghij", channel, "{}").await, 200);
    expect_on(&mut receiver, "abcdefghij", channel).await;
    expect_on(&mut sender, "abcdefghij", channel).await;

    send_client_event(&mut sender, "client-abcd", channel, json!({"too": "long"})).await;
    let (code, message) = sender.expect_error().await;
    assert_eq!(code, Value::Null, "{message}");
    assert_open(&mut sender).await;
    send_client_event(&mut sender, "client-abc", channel, json!({"fits": true})).await;
    // The receiver's next frame is the ten-character event: the long one never arrived.
    let frame = expect_on(&mut receiver, "client-abc", channel).await;
    assert_eq!(data_of(&frame), json!({"fits": true}));
}

#[tokio::test]
async fn event_payloads_over_the_configured_size_are_413_on_rest_and_refused_from_clients() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        client_events: Some(true),
        limits: LimitsPatch {
            max_event_payload_bytes: Some(20),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let channel = "private-sizes";
    let (mut sender, mut receiver) = two_on_private(&app, channel).await;

    let too_big = post(
        &app,
        EVENTS,
        json!({"name":"big","channels":[channel],"data":"x".repeat(21)}),
    )
    .await;
    assert_eq!(too_big.status, 413, "{too_big:?}");
    let batch = post(
        &app,
        BATCH,
        json!({"batch":[
            {"name":"small","channel":channel,"data":"x"},
            {"name":"big","channel":channel,"data":"x".repeat(21)},
        ]}),
    )
    .await;
    assert_eq!(batch.status, 413, "{batch:?}");
    assert_eq!(trigger(&app, "exact", channel, &"x".repeat(20)).await, 200);
    let frame = expect_on(&mut receiver, "exact", channel).await;
    assert_eq!(frame["data"], "x".repeat(20));
    expect_on(&mut sender, "exact", channel).await;

    send_client_event(
        &mut sender,
        "client-big",
        channel,
        json!({"blob": "x".repeat(40)}),
    )
    .await;
    let (code, message) = sender.expect_error().await;
    assert_eq!(code, Value::Null, "{message}");
    assert_open(&mut sender).await;
    send_client_event(&mut sender, "client-small", channel, json!({"s": 1})).await;
    let frame = expect_on(&mut receiver, "client-small", channel).await;
    assert_eq!(data_of(&frame), json!({"s": 1}));
}

#[tokio::test]
async fn triggers_to_more_channels_than_configured_are_400_and_publish_nothing() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_channels_per_trigger: Some(2),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut client = app.connect().await;
    for channel in ["c1", "c2", "c3"] {
        client.subscribe(channel).await;
    }
    let two = post(
        &app,
        EVENTS,
        json!({"name":"two","channels":["c1","c2"],"data":"{}"}),
    )
    .await;
    assert_eq!(two.status, 200, "{two:?}");
    expect_on(&mut client, "two", "c1").await;
    expect_on(&mut client, "two", "c2").await;

    let three = post(
        &app,
        EVENTS,
        json!({"name":"three","channels":["c1","c2","c3"],"data":"{}"}),
    )
    .await;
    assert_eq!(three.status, 400, "{three:?}");
    publish_marker(&app, "c3").await;
    expect_on(&mut client, "marker", "c3").await;
}

#[tokio::test]
async fn batches_larger_than_configured_are_400_and_publish_nothing() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_batch_size: Some(2),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let events = |names: &[&str]| -> Value {
        let batch: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "channel": "news", "data": "{}"}))
            .collect();
        json!({ "batch": batch })
    };
    let two = post(&app, BATCH, events(&["a1", "a2"])).await;
    assert_eq!(two.status, 200, "{two:?}");
    let three = post(&app, BATCH, events(&["b1", "b2", "b3"])).await;
    assert_eq!(three.status, 400, "{three:?}");
    publish_marker(&app, "news").await;
    for name in ["a1", "a2", "marker"] {
        expect_on(&mut client, name, "news").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Allowed origins

#[tokio::test]
async fn allowed_origins_admit_listed_origins_and_refuse_the_rest_with_4009() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        allowed_origins: Some(vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ]),
        ..AppPatch::default()
    })
    .await;
    for origin in [
        "https://app.example.com",
        "https://a.example.org",
        "https://deep.sub.example.org",
    ] {
        let mut client = connect_from(&app, Some(origin)).await;
        let frame = client.next_json().await;
        assert_eq!(
            frame["event"], "pusher:connection_established",
            "{origin}: {frame}"
        );
    }
    for origin in [
        Some("https://example.org"),
        Some("https://evil.example.com"),
        Some("http://app.example.com"),
        Some("https://app.example.com.evil.net"),
        Some("https://x.evilexample.org"),
        None,
    ] {
        let mut client = connect_from(&app, origin).await;
        assert_eq!(
            refused_handshake(&mut client).await,
            (json!(4009), Some(4009)),
            "origin {origin:?}"
        );
    }
}

#[tokio::test]
async fn an_empty_origin_list_admits_any_origin() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        allowed_origins: Some(vec!["https://only.example.com".into()]),
        ..AppPatch::default()
    })
    .await;
    let mut refused = connect_from(&app, Some("https://evil.example.com")).await;
    assert_eq!(
        refused_handshake(&mut refused).await,
        (json!(4009), Some(4009))
    );
    app.update_app(AppPatch {
        allowed_origins: Some(Vec::new()),
        ..AppPatch::default()
    })
    .await;
    for origin in [Some("https://evil.example.com"), Some("null"), None] {
        let mut client = connect_from(&app, origin).await;
        let frame = client.next_json().await;
        assert_eq!(
            frame["event"], "pusher:connection_established",
            "{origin:?}: {frame}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Key rotation

async fn reload(app: &TestApp) {
    herald::startup::refresh_apps(&app.node)
        .await
        .expect("cache refreshes");
}

/// Triggers `name` on `channel` signed with `key`/`secret`; returns the status.
async fn trigger_as(app: &TestApp, key: &str, secret: &str, name: &str, channel: &str) -> u16 {
    let body = json!({"name": name, "channels": [channel], "data": "{}"});
    signed(app, "POST", EVENTS, Some(&body), key, secret)
        .await
        .status
}

async fn assert_key_refused(app: &TestApp, key: &str, secret: &str, what: &str) {
    let mut client = app.connect_raw(&socket_path(key)).await;
    assert_eq!(
        refused_handshake(&mut client).await,
        (json!(4001), Some(4001)),
        "{what}: socket"
    );
    assert_eq!(
        trigger_as(app, key, secret, "refused", "keys").await,
        401,
        "{what}: REST"
    );
}

async fn assert_key_works(
    app: &TestApp,
    key: &str,
    secret: &str,
    what: &str,
    watcher: &mut Client,
) {
    app.connect_key(key).await;
    assert_eq!(
        trigger_as(app, key, secret, what, "keys").await,
        200,
        "{what}: REST"
    );
    expect_on(watcher, what, "keys").await;
}

#[tokio::test]
async fn after_a_rotation_both_keys_work_until_the_old_one_is_revoked() {
    let app = spawn_app().await;
    let rotated = app
        .node
        .store
        .rotate_key(APP_ID, 0)
        .await
        .expect("the key rotates");
    assert_ne!(rotated.key, KEY);
    let new_secret = rotated.secret.expose().to_owned();
    reload(&app).await;
    // Watches with the new key, so revoking the old one cannot touch it.
    let mut watcher = app.connect_key(&rotated.key).await;
    watcher.subscribe("keys").await;
    assert_key_works(&app, KEY, SECRET, "old", &mut watcher).await;
    assert_key_works(&app, &rotated.key, &new_secret, "new", &mut watcher).await;

    app.node
        .store
        .revoke_key(APP_ID, KEY)
        .await
        .expect("the old key is revoked");
    reload(&app).await;
    assert_key_refused(&app, KEY, SECRET, "revoked key").await;
    assert_key_works(&app, &rotated.key, &new_secret, "still", &mut watcher).await;
    // The refused trigger published nothing.
    publish_marker_as(&app, &rotated.key, &new_secret).await;
    expect_on(&mut watcher, "marker", "keys").await;
}

async fn publish_marker_as(app: &TestApp, key: &str, secret: &str) {
    assert_eq!(trigger_as(app, key, secret, "marker", "keys").await, 200);
}

#[tokio::test]
async fn a_third_key_pair_is_refused_while_two_are_active() {
    let app = spawn_app().await;
    let rotated = app
        .node
        .store
        .rotate_key(APP_ID, 0)
        .await
        .expect("the first rotation succeeds");
    let again = app.node.store.rotate_key(APP_ID, 0).await;
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "a second rotation while two pairs work is a conflict: {again:?}"
    );
    // Nothing changed: both pairs still work.
    reload(&app).await;
    let mut watcher = app.connect_key(&rotated.key).await;
    watcher.subscribe("keys").await;
    assert_key_works(&app, KEY, SECRET, "old", &mut watcher).await;
    let secret = rotated.secret.expose().to_owned();
    assert_key_works(&app, &rotated.key, &secret, "new", &mut watcher).await;
    // Once the old pair is revoked, rotating is possible again.
    app.node
        .store
        .revoke_key(APP_ID, KEY)
        .await
        .expect("the old key is revoked");
    app.node
        .store
        .rotate_key(APP_ID, 0)
        .await
        .expect("a rotation after the revocation succeeds");
}

#[tokio::test]
async fn the_old_key_stops_working_when_the_rotation_grace_period_ends() {
    let app = spawn_app().await;
    // On paused time (the node's clock with it), so the one-second grace lasts until the test
    // moves the clock past it, however long checking the old key takes.
    let _paused = pause_time();
    let rotated = app
        .node
        .store
        .rotate_key(APP_ID, 1)
        .await
        .expect("the key rotates");
    let expires_at = rotated
        .previous_key
        .as_ref()
        .expect("a previous key")
        .expires_at;
    assert!(expires_at > 0, "a grace period sets an expiry");
    reload(&app).await;
    let mut watcher = app.connect_key(&rotated.key).await;
    watcher.subscribe("keys").await;
    app.connect_key(KEY).await;
    assert_eq!(
        trigger_as(&app, KEY, SECRET, "in-grace", "keys").await,
        200,
        "the old key works during the grace period"
    );
    expect_on(&mut watcher, "in-grace", "keys").await;

    // Wait out the grace period (> 1 s), then the old key is refused everywhere.
    let expiry_millis = expires_at * 1000;
    let left = expiry_millis + 100 - app.node.settings.clock.now_millis();
    advance_past(Duration::from_millis(
        u64::try_from(left).expect("expiry ahead"),
    ))
    .await;
    assert_key_refused(&app, KEY, SECRET, "expired key").await;
    let secret = rotated.secret.expose().to_owned();
    assert_key_works(&app, &rotated.key, &secret, "current", &mut watcher).await;
    // The expired pair no longer counts as active: rotating again is allowed.
    app.node
        .store
        .rotate_key(APP_ID, 0)
        .await
        .expect("a rotation after the grace period succeeds");
}
