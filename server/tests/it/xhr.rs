//! pusher-js's HTTP fallbacks over raw HTTP: `xhr_streaming`, `xhr` (polling) and `xhr_send`,
//! with the `o`/`a`/`h`/`c` line framing (contract 7.2), the session's bounds and refusals.

use std::time::Duration;

use serde_json::{json, Value};

use herald::tenants::{AppPatch, LimitsPatch};

use crate::helpers::*;
use crate::xhr_lines::{events_of, Lines};

const Q: &str = "?protocol=7&client=js&version=8.4.0";

/// Timers short enough to be seen running out.
fn short_timers(settings: &mut herald::config::Settings) {
    settings.fallback.heartbeat = Duration::from_millis(300);
    settings.fallback.poll_wait = Duration::from_millis(300);
    settings.fallback.expiry = Duration::from_millis(400);
}

fn base(app: &TestApp, key: &str, session: &str) -> String {
    app.url(&format!("/pusher/app/{key}/123/{session}"))
}

/// One poll's whole answer, as lines.
async fn poll(app: &TestApp, url: &str) -> Vec<String> {
    let response = tokio::time::timeout(
        WAIT,
        app.http
            .post(format!("{url}/xhr{Q}"))
            .header("content-type", "application/json")
            .send(),
    )
    .await
    .expect("the poll is answered in time")
    .expect("request is sent");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(text.ends_with('\n'), "lines end with \\n: {text:?}");
    text.lines().map(str::to_owned).collect()
}

async fn xhr_send(app: &TestApp, url: &str, body: &str) -> u16 {
    app.http
        .post(format!("{url}/xhr_send"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request is sent")
        .status()
        .as_u16()
}

/// Sends one Pusher message.
/// Subscribes the session at `url` to the public channel `news`.
async fn subscribe_news(app: &TestApp, url: &str) {
    send_event(
        app,
        url,
        json!({"event":"pusher:subscribe","data":{"channel":"news"}}),
    )
    .await;
}

async fn send_event(app: &TestApp, url: &str, event: Value) {
    let body = serde_json::to_string(&[event.to_string()]).unwrap();
    assert_eq!(xhr_send(app, url, &body).await, 204);
}

async fn trigger(app: &TestApp, channel: &str, data: &str) {
    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name":"news","channel":channel,"data":data}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_stream_opens_once_carries_events_both_ways_and_beats() {
    let app = spawn_app_with(short_timers).await;
    let url = base(&app, KEY, "stream01");
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(stream.line().await, "o");
    let first = stream.events().await;
    assert_eq!(first[0]["event"], "pusher:connection_established");
    let data: Value = serde_json::from_str(first[0]["data"].as_str().unwrap()).unwrap();
    assert!(data["socket_id"].as_str().is_some_and(|s| s.contains('.')));
    subscribe_news(&app, &url).await;
    stream
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    trigger(&app, "news", "one").await;
    let event = stream.expect_event("news").await;
    assert_eq!(event["data"], "one");
    send_event(&app, &url, json!({"event":"pusher:ping","data":{}})).await;
    stream.expect_event("pusher:pong").await;
    // Nothing to say: a heartbeat within the (shortened) interval; `[]` is the client's answer.
    assert_eq!(stream.line().await, "h");
    assert_eq!(xhr_send(&app, &url, "[]").await, 204);
    // pusher-js reopens its stream (buffer over 256 KiB): the session goes on, with no `o`.
    drop(stream);
    let mut reopened = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    trigger(&app, "news", "two").await;
    let line = reopened.line().await;
    assert_ne!(line, "o", "no second open frame");
    let line = if line == "h" {
        reopened.line().await
    } else {
        line
    };
    assert_eq!(events_of(&line)[0]["data"], "two");
}

#[tokio::test]
async fn polls_answer_what_is_queued_at_once_or_a_heartbeat_after_the_wait() {
    let app = spawn_app_with(short_timers).await;
    let url = base(&app, KEY, "poll0001");
    let first = poll(&app, &url).await;
    assert_eq!(first[0], "o");
    assert_eq!(
        events_of(&first[1])[0]["event"],
        "pusher:connection_established"
    );
    subscribe_news(&app, &url).await;
    let second = poll(&app, &url).await;
    assert!(!second.iter().any(|l| l == "o"), "no second o: {second:?}");
    assert_eq!(
        events_of(&second[0])[0]["event"],
        "pusher_internal:subscription_succeeded"
    );
    trigger(&app, "news", "a").await;
    trigger(&app, "news", "b").await;
    // Both, batched into the one answer.
    let third = poll(&app, &url).await;
    let events: Vec<Value> = third.iter().flat_map(|l| events_of(l)).collect();
    assert_eq!(
        events.iter().map(|e| e["data"].clone()).collect::<Vec<_>>(),
        [json!("a"), json!("b")]
    );
    // Nothing queued: the poll waits, then answers a heartbeat.
    assert_eq!(poll(&app, &url).await, ["h"]);
    // A poll waiting when an event comes answers it at once.
    let waiting = {
        let url = url.clone();
        let http = app.http.clone();
        tokio::spawn(async move {
            http.post(format!("{url}/xhr{Q}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    pause(Duration::from_millis(50)).await;
    trigger(&app, "news", "c").await;
    let text = waiting.await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with('a'))
        .expect("an a line");
    assert_eq!(events_of(line)[0]["data"], "c");
}

#[tokio::test]
async fn an_abandoned_session_expires_and_gives_back_its_quota_slot() {
    let app = spawn_app_with(short_timers).await;
    app.update_app(AppPatch {
        limits: LimitsPatch {
            max_connections: Some(1),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let url = base(&app, KEY, "first001");
    assert_eq!(poll(&app, &url).await[0], "o");
    subscribe_news(&app, &url).await;
    // The session holds the app's one connection: another is refused as over quota.
    let other = base(&app, KEY, "second01");
    let refused = poll(&app, &other).await;
    assert!(refused[0].starts_with("c[4004,"), "{refused:?}");
    assert_eq!(
        xhr_send(&app, &other, "[]").await,
        404,
        "refused: no session"
    );
    // Nobody polls: the session expires and the slot, the channel and the session go.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = poll(&app, &other).await;
        if answer[0] == "o" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer:?}");
        pause(Duration::from_millis(100)).await;
    }
    assert_eq!(xhr_send(&app, &url, "[]").await, 404, "the session expired");
    let (status, body) = app.get(&format!("/apps/{APP_ID}/channels"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["channels"],
        json!({})
    );
}

#[tokio::test]
async fn a_session_that_falls_behind_is_closed_as_a_slow_consumer() {
    let app = spawn_app_with(|settings| {
        settings.outbox_capacity = 4;
    })
    .await;
    let url = base(&app, KEY, "slow0001");
    assert_eq!(poll(&app, &url).await[0], "o");
    subscribe_news(&app, &url).await;
    assert!(poll(&app, &url).await[0].contains("subscription_succeeded"));
    for i in 0..6 {
        trigger(&app, "news", &i.to_string()).await;
    }
    let answer = poll(&app, &url).await;
    assert_eq!(
        answer.last().unwrap(),
        "c[4100,\"Over capacity\"]",
        "{answer:?}"
    );
    assert_eq!(xhr_send(&app, &url, "[]").await, 404);
}

#[tokio::test]
async fn refusals_are_close_lines_with_the_websocket_codes() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        allowed_origins: Some(vec!["https://app.example.com".into()]),
        ..AppPatch::default()
    })
    .await;
    let close_of = |lines: Vec<String>| -> String { lines[0].clone() };
    let unknown = base(&app, "no-such-key", "s1");
    assert!(close_of(poll(&app, &unknown).await).starts_with("c[4001,"));
    let url = base(&app, KEY, "origin01");
    let mut refused = Lines::open(
        &app.http,
        format!("{url}/xhr_streaming{Q}"),
        Some("https://evil.example.com"),
    )
    .await;
    assert!(refused.line().await.starts_with("c[4009,"));
    assert_eq!(refused.next().await, None, "the answer ends");
    let no_protocol = app
        .http
        .post(format!("{url}/xhr"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(no_protocol.starts_with("c[4008,"), "{no_protocol}");
    let mut allowed = Lines::open(
        &app.http,
        format!("{url}/xhr_streaming{Q}"),
        Some("https://app.example.com"),
    )
    .await;
    assert_eq!(allowed.line().await, "o");
    assert_eq!(
        allowed.response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn bad_sends_get_clear_statuses_and_harm_nothing() {
    let app = spawn_app().await;
    assert_eq!(
        xhr_send(&app, &base(&app, KEY, "nobody01"), "[]").await,
        404
    );
    let url = base(&app, KEY, "badsend1");
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(stream.line().await, "o");
    stream.events().await;
    for malformed in ["", "{}", "[1]", "[\"x\"", "not json"] {
        assert_eq!(xhr_send(&app, &url, malformed).await, 400, "{malformed:?}");
    }
    let huge = serde_json::to_string(&["x".repeat(200 * 1024)]).unwrap();
    assert_eq!(xhr_send(&app, &url, &huge).await, 413);
    // A string that is not a Pusher message gets the same error as over WebSocket.
    assert_eq!(xhr_send(&app, &url, "[\"nonsense\"]").await, 204);
    stream.expect_event("pusher:error").await;
    // The session still works.
    send_event(
        &app,
        &url,
        json!({"event":"pusher:subscribe","data":{"channel":"ok"}}),
    )
    .await;
    stream
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    // An unknown path under the prefix is a plain 404.
    let status = app
        .http
        .post(format!("{url}/xhr_other"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_cors_preflight_follows_the_allowed_origins() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        allowed_origins: Some(vec!["https://app.example.com".into()]),
        ..AppPatch::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        let url = format!("{}/xhr_streaming{Q}", base(&app, KEY, "cors0001"));
        let http = app.http.clone();
        async move {
            http.request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
                .await
                .unwrap()
        }
    };
    let allowed = preflight("https://app.example.com").await;
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .eq_ignore_ascii_case("content-type"));
    let refused = preflight("https://evil.example.com").await;
    assert_eq!(refused.status(), 403);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn terminating_a_user_closes_their_fallback_session() {
    let app = spawn_app().await;
    let url = base(&app, KEY, "signin01");
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(stream.line().await, "o");
    let established = stream.events().await;
    let data: Value = serde_json::from_str(established[0]["data"].as_str().unwrap()).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap().to_owned();
    let user_data = json!({"id":"u1"}).to_string();
    let auth = signin_auth(&socket_id, &user_data);
    send_event(
        &app,
        &url,
        json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}),
    )
    .await;
    stream.expect_event("pusher:signin_success").await;
    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/users/u1/terminate_connections"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    loop {
        let line = stream.line().await;
        if line.starts_with('c') {
            assert!(line.starts_with("c[4009,"), "{line}");
            break;
        }
    }
    assert_eq!(stream.next().await, None);
}

#[tokio::test]
async fn a_session_whose_client_drops_its_stream_ends_after_the_expiry() {
    let app = spawn_app_with(|settings| {
        settings.fallback.expiry = Duration::from_millis(300);
    })
    .await;
    let url = base(&app, KEY, "dropped1");
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(stream.line().await, "o");
    stream.events().await;
    subscribe_news(&app, &url).await;
    stream
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    // pusher-js disconnects by aborting its stream: the session and its channel go.
    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = app.get(&format!("/apps/{APP_ID}/channels"), &[]).await;
        assert_eq!(status, 200);
        if serde_json::from_str::<Value>(&body).unwrap()["channels"] == json!({}) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        pause(Duration::from_millis(100)).await;
    }
    assert_eq!(xhr_send(&app, &url, "[]").await, 404);
}

/// An `xhr_send` with extra headers (an `Origin`, an `X-Forwarded-For`).
async fn send_with(app: &TestApp, url: &str, body: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = app
        .http
        .post(format!("{url}/xhr_send"))
        .header("content-type", "text/plain")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .send()
        .await
        .expect("request is sent")
        .status()
        .as_u16()
}

/// The status and first line of a stream request with extra headers.
async fn stream_with(app: &TestApp, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = app.http.post(format!("{url}/xhr_streaming{Q}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("an answer in time")
        .expect("the body is read")
    {
        text.extend_from_slice(&chunk);
        if text.contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8(text).expect("UTF-8");
    (status, text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_second_reader_is_refused_while_the_first_is_open() {
    let app = spawn_app().await;
    let url = base(&app, KEY, "second01");
    let mut first = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(first.line().await, "o");
    first.events().await;
    // A second stream, or a poll, while the first is open: refused as SockJS does, not a
    // take-over (the first client keeps its session).
    let mut second = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(
        second.line().await,
        "c[2010,\"Another connection still open\"]"
    );
    assert_eq!(second.next().await, None, "the refusal ends its answer");
    assert_eq!(
        poll(&app, &url).await,
        ["c[2010,\"Another connection still open\"]"]
    );
    send_event(
        &app,
        &url,
        json!({"event":"pusher:subscribe","data":{"channel":"kept"}}),
    )
    .await;
    first
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    trigger(&app, "kept", "still mine").await;
    assert_eq!(first.expect_event("news").await["data"], "still mine");
}

#[tokio::test]
async fn a_session_answers_only_the_address_and_origin_that_opened_it() {
    let app = spawn_app_with(|settings| {
        settings.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    app.update_app(AppPatch {
        allowed_origins: Some(vec![
            "https://a.example.com".into(),
            "https://b.example.com".into(),
        ]),
        ..AppPatch::default()
    })
    .await;
    let url = base(&app, KEY, "owner001");
    let victim = [
        ("origin", "https://a.example.com"),
        ("x-forwarded-for", "10.0.0.1"),
    ];
    let mut stream = {
        let mut request = app.http.post(format!("{url}/xhr_streaming{Q}"));
        for (name, value) in victim {
            request = request.header(name, value);
        }
        Lines {
            response: request.send().await.unwrap(),
            buffer: Vec::new(),
        }
    };
    assert_eq!(stream.line().await, "o");
    stream.events().await;
    let other_address = [
        ("origin", "https://a.example.com"),
        ("x-forwarded-for", "10.0.0.2"),
    ];
    let other_origin = [
        ("origin", "https://b.example.com"),
        ("x-forwarded-for", "10.0.0.1"),
    ];
    let disallowed = [
        ("origin", "https://evil.example.com"),
        ("x-forwarded-for", "10.0.0.1"),
    ];
    let subscribe = serde_json::to_string(&[
        json!({"event":"pusher:subscribe","data":{"channel":"hijack"}}).to_string(),
    ])
    .unwrap();
    // Anyone else knowing the id is answered as for an unknown session.
    for headers in [&other_address, &other_origin] {
        assert_eq!(send_with(&app, &url, &subscribe, headers).await, 404);
        assert_eq!(stream_with(&app, &url, headers).await.0, 404);
    }
    // A disallowed origin may not even send (a text/plain POST needs no preflight).
    assert_eq!(send_with(&app, &url, &subscribe, &disallowed).await, 403);
    // No Origin at all: refused by the app's allowed origins before the session is looked up.
    assert_eq!(send_with(&app, &url, "[]", &[]).await, 403, "no Origin");
    // The opener still can, and nothing the others sent reached the session.
    let mine = serde_json::to_string(&[
        json!({"event":"pusher:subscribe","data":{"channel":"mine"}}).to_string(),
    ])
    .unwrap();
    assert_eq!(send_with(&app, &url, &mine, &victim).await, 204);
    let event = stream
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    assert_eq!(event["channel"], "mine");
}

#[tokio::test]
async fn concurrent_sends_are_handled_in_their_request_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let url = base(&app, KEY, "ordered1");
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(stream.line().await, "o");
    stream.events().await;
    // Request 2 arrives before request 1 (pipelined on one connection, so both arrive within
    // the settle window): the session still subscribes in pusher-js's order, `n`.
    let path = "/pusher/app/".to_owned() + KEY + "/123/ordered1/xhr_send";
    let mut raw = Vec::new();
    for (n, channel) in [(2, "second"), (1, "first")] {
        let body = serde_json::to_string(&[
            json!({"event":"pusher:subscribe","data":{"channel":channel}}).to_string(),
        ])
        .unwrap();
        raw.extend_from_slice(
            format!(
                "POST {path}?n={n} HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let mut tcp = tokio::net::TcpStream::connect(app.address).await.unwrap();
    tcp.write_all(&raw).await.unwrap();
    let mut answers = Vec::new();
    while answers.windows(12).filter(|w| w == b"204 No Conte").count() < 2 {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("answers in time")
            .unwrap();
        assert!(read > 0, "both sends answered");
        answers.extend_from_slice(&chunk[..read]);
    }
    // Both may come in one line: the channels in the order they were subscribed.
    let mut subscribed = Vec::new();
    while subscribed.len() < 2 {
        let line = stream.line().await;
        if line == "h" {
            continue;
        }
        for event in events_of(&line) {
            if event["event"] == "pusher_internal:subscription_succeeded" {
                subscribed.push(event["channel"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(subscribed, ["first", "second"]);
}

#[tokio::test]
async fn sends_past_the_per_session_bound_are_answered_503_at_once() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let url = base(&app, KEY, "busy0001");
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    assert_eq!(stream.line().await, "o");
    stream.events().await;
    // Sends whose bodies are still arriving hold their place.
    let path = "/pusher/app/".to_owned() + KEY + "/123/busy0001/xhr_send";
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut tcp = tokio::net::TcpStream::connect(app.address).await.unwrap();
        tcp.write_all(
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n[").as_bytes(),
        )
        .await
        .unwrap();
        held.push(tcp);
    }
    let refused = wait_for(|| async { xhr_send(&app, &url, "[]").await == 503 }).await;
    assert!(refused, "a 17th send is refused");
    drop(held);
    let taken = wait_for(|| async { xhr_send(&app, &url, "[]").await == 204 }).await;
    assert!(taken, "sends are taken again once the others have gone");
}

/// Retries `check` until it holds, for at most [`WAIT`].
async fn wait_for<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        crate::helpers::pause(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn simultaneous_first_requests_open_one_session() {
    let app = spawn_app_with(short_timers).await;
    let url = base(&app, KEY, "racing01");
    let polls: Vec<_> = (0..8).map(|_| poll(&app, &url)).collect();
    let answers = futures_util::future::join_all(polls).await;
    let opened = answers.iter().filter(|lines| lines[0] == "o").count();
    assert_eq!(opened, 1, "one session opened: {answers:?}");
    assert_eq!(app.node.hub.connection_count(), 1);
}

#[tokio::test]
async fn a_send_holds_at_most_128_messages_each_within_the_frame_limit() {
    let app = spawn_app().await;
    let url = base(&app, KEY, "caps0001");
    assert_eq!(poll(&app, &url).await[0], "o");
    let many = serde_json::to_string(&vec![""; 129]).unwrap();
    assert_eq!(xhr_send(&app, &url, &many).await, 413);
    let enough = serde_json::to_string(&vec![""; 128]).unwrap();
    assert_eq!(xhr_send(&app, &url, &enough).await, 204);
    // Within the body limit (twice the frame limit) but over the frame limit, as over WebSocket.
    let frame = app.node.settings.max_frame_bytes;
    let big = serde_json::to_string(&["x".repeat(frame + 1)]).unwrap();
    assert_eq!(xhr_send(&app, &url, &big).await, 413);
}

#[tokio::test]
async fn a_closed_session_holds_its_node_slot_while_it_lingers() {
    let app = spawn_app_with(|settings| {
        settings.outbox_capacity = 4;
        settings.max_connections = Some(1);
    })
    .await;
    let url = base(&app, KEY, "linger01");
    assert_eq!(poll(&app, &url).await[0], "o");
    subscribe_news(&app, &url).await;
    assert!(poll(&app, &url).await[0].contains("subscription_succeeded"));
    // No poll open: the session closes as a slow consumer and waits for one to hear it.
    for i in 0..6 {
        trigger(&app, "news", &i.to_string()).await;
    }
    assert!(wait_for(|| async { xhr_send(&app, &url, "[]").await == 404 }).await);
    let other = base(&app, KEY, "linger02");
    assert!(
        poll(&app, &other).await[0].starts_with("c[4100,"),
        "the lingering session still counts against the node"
    );
    // Then it is gone, and its slot with it.
    assert!(wait_for(|| async { poll(&app, &other).await[0] == "o" }).await);
}

/// pusher-js's `MAX_BUFFER_LENGTH`: past this many UTF-16 code units read from a stream, with no
/// partial line left, it aborts the stream and opens a new one for the same session.
const PUSHER_JS_BUFFER: usize = 256 * 1024;

#[tokio::test]
async fn a_stream_stops_where_pusher_js_reopens_it_so_the_reopen_loses_nothing() {
    let app = spawn_app().await;
    let url = base(&app, KEY, "bigbuf01");
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    // What pusher-js has read of the stream, in its units (`responseText.length`).
    let mut units = 0;
    fn read(line: String, units: &mut usize) -> String {
        *units += line.encode_utf16().count() + 1;
        line
    }
    assert_eq!(read(stream.line().await, &mut units), "o");
    read(stream.line().await, &mut units);
    subscribe_news(&app, &url).await;
    loop {
        let line = read(stream.line().await, &mut units);
        if events_of(&line)
            .iter()
            .any(|e| e["event"] == "pusher_internal:subscription_succeeded")
        {
            break;
        }
    }
    // 100 events of 4,000 two-byte characters each, all queued before the client reads on: far
    // more than one stream may carry, counted in characters (UTF-16), not bytes.
    const EVENTS: usize = 100;
    for n in 0..EVENTS {
        trigger(&app, "news", &format!("{n:03}{}", "é".repeat(4000))).await;
    }
    let number = |event: &Value| -> usize { event["data"].as_str().unwrap()[..3].parse().unwrap() };
    let mut received = Vec::new();
    // Read as pusher-js does, then abort the stream as it does.
    loop {
        let line = read(stream.line().await, &mut units);
        if line != "h" {
            received.extend(events_of(&line).iter().map(number));
        }
        if units > PUSHER_JS_BUFFER && stream.buffer.is_empty() {
            break;
        }
    }
    assert!(received.len() < EVENTS, "one stream carried them all");
    drop(stream);
    let mut reopened = Lines::open(&app.http, format!("{url}/xhr_streaming{Q}"), None).await;
    while received.len() < EVENTS {
        let line = reopened.line().await;
        assert_ne!(line, "o", "no second open frame");
        assert!(!line.starts_with('c'), "the session closed: {line}");
        if line != "h" {
            received.extend(events_of(&line).iter().map(number));
        }
    }
    assert_eq!(
        received,
        (0..EVENTS).collect::<Vec<_>>(),
        "every event, in order"
    );
}
