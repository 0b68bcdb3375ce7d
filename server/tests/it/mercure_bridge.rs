//! The Mercure hub with the Pusher protocol (one namespace per app), its counting, its bounds
//! and its shutdown.

use std::time::Duration;

use serde_json::json;

use herald::tenants::{AppPatch, LimitsPatch};

use crate::helpers::{spawn_app, spawn_app_with, wait_until, APP_ID};
use crate::mercure_helpers::*;

fn messages_today(app: &crate::helpers::TestApp) -> u64 {
    app.node.usage.app(APP_ID).messages_today()
}

#[tokio::test]
async fn a_rest_trigger_reaches_mercure_subscribers_public_and_private_as_private_updates() {
    let app = spawn_app().await;
    let mut anyone = subscribe_with(&app, "topic=*", Some(&token07(&["news"], &[])), &[]).await;
    let mut reader = subscribe_with(
        &app,
        "topic=*",
        Some(&token07(&["private-room", "presence-lobby"], &[])),
        &[],
    )
    .await;
    let before = messages_today(&app);
    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name":"headline","channel":"news","data":"{\"t\":1}"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for sse in [&mut anyone, &mut reader] {
        let event = sse.next().await;
        assert_eq!(event.event, "headline");
        assert_eq!(event.data, "{\"t\":1}");
        assert!(event.id.starts_with("urn:uuid:"));
    }
    // One message for the channel, one per copy delivered (two SSE subscribers).
    assert_eq!(messages_today(&app) - before, 3);
    for channel in ["private-room", "presence-lobby", "private-encrypted-x"] {
        let (status, _) = app
            .post(
                &format!("/apps/{APP_ID}/events"),
                json!({"name":"secret","channel":channel,"data":channel}),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(reader.data(2).await, ["private-room", "presence-lobby"]);
    app.post(
        &format!("/apps/{APP_ID}/events"),
        json!({"name":"after","channel":"news","data":"last"}),
    )
    .await;
    assert_eq!(anyone.data(1).await, ["last"], "no private event before it");
    assert_eq!(
        reader.data(1).await,
        ["last"],
        "not the encrypted one either"
    );
}

#[tokio::test]
async fn a_client_event_reaches_mercure_subscribers_as_a_private_update() {
    let app = spawn_app().await;
    let mut reader = subscribe_with(
        &app,
        "topic=private-chat",
        Some(&token07(&["private-chat"], &[])),
        &[],
    )
    .await;
    let mut sender = app.connect().await;
    sender.subscribe("private-chat").await;
    sender
        .send_json(json!({"event":"client-typing","channel":"private-chat","data":{"who":"me"}}))
        .await;
    let event = reader.next().await;
    assert_eq!(event.event, "client-typing");
    assert_eq!(event.data, "{\"who\":\"me\"}");
}

#[tokio::test]
async fn a_public_mercure_update_reaches_pusher_subscribers_and_a_private_one_never_does() {
    let app = spawn_app().await;
    let mut pusher = app.connect().await;
    pusher.subscribe("prices").await;
    let mut sse = subscribe(&app, "topic=prices").await;
    let before = messages_today(&app);
    publish(
        &app,
        &[
            ("topic", "prices"),
            ("data", "{\"eur\":1}"),
            ("type", "tick"),
        ],
    )
    .await;
    let frame = pusher.expect_next("tick").await;
    assert_eq!(frame["channel"], "prices");
    assert_eq!(frame["data"], "{\"eur\":1}");
    assert_eq!(sse.next().await.data, "{\"eur\":1}");
    // One per topic, one per copy (the SSE subscriber and the pusher-js one), no echo.
    assert_eq!(messages_today(&app) - before, 3);
    sse.expect_silence(Duration::from_millis(100)).await;
    publish(
        &app,
        &[("topic", "prices"), ("data", "hidden"), ("private", "on")],
    )
    .await;
    publish(&app, &[("topic", "prices"), ("data", "plain")]).await;
    let frame = pusher.expect_next("message").await;
    assert_eq!(
        frame["data"], "plain",
        "the private update never reached the channel"
    );
}

#[tokio::test]
async fn a_mercure_update_never_reaches_pusher_js_as_a_protocol_event_or_over_the_name_limit() {
    let app = spawn_app().await;
    app.update_limits(LimitsPatch {
        max_event_name_length: Some(12),
        ..LimitsPatch::default()
    })
    .await;
    let mut pusher = app.connect().await;
    pusher.subscribe("prices").await;
    let mut sse = subscribe(&app, "topic=prices").await;
    let types = [
        "pusher:subscription_succeeded",
        "pusher_internal:member_added",
        "pusher:error",
        "thirteen-char",
    ];
    for kind in types {
        publish(&app, &[("topic", "prices"), ("data", kind), ("type", kind)]).await;
    }
    for kind in types {
        let event = sse.next().await;
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            (kind, kind),
            "still a Mercure update"
        );
    }
    publish(
        &app,
        &[
            ("topic", "prices"),
            ("data", "last"),
            ("type", "twelve-chars"),
        ],
    )
    .await;
    let frame = pusher.expect_next("twelve-chars").await;
    assert_eq!(
        frame["data"], "last",
        "none of the others reached pusher-js"
    );
    assert_eq!(sse.next().await.data, "last");
}

#[tokio::test]
async fn the_daily_quota_gates_mercure_publishes_with_429() {
    let app = spawn_app().await;
    app.update_limits(LimitsPatch {
        max_daily_messages: Some(3),
        ..LimitsPatch::default()
    })
    .await;
    publish(&app, &[("topic", "a"), ("topic", "b")]).await;
    publish(&app, &[("topic", "a")]).await;
    let (status, body) = publish_as(&app, Some(&publisher()), &[("topic", "a")]).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("quota"));
}

#[tokio::test]
async fn subscribers_count_in_the_connection_quota_and_give_it_back() {
    let app = spawn_app_with(|s| s.mercure.heartbeat = Duration::from_millis(50)).await;
    app.update_limits(LimitsPatch {
        max_connections: Some(2),
        ..LimitsPatch::default()
    })
    .await;
    let first = subscribe(&app, "topic=a").await;
    let _second = subscribe(&app, "topic=a").await;
    let token = token07(&["*"], &[]);
    let refused = subscribe_raw(&app, "topic=a", Some(&token), &[]).await;
    assert_eq!(refused.status().as_u16(), 429);
    drop(first);
    wait_until("the first subscriber is gone", || {
        app.node.usage.app(APP_ID).connections() == 1
    })
    .await;
    let _third = subscribe(&app, "topic=a").await;
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_cut_as_a_slow_consumer() {
    let app = spawn_app().await;
    // A raw socket that sends the request and never reads, with a tiny receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.address).await.unwrap();
    let request = format!(
        "GET {}?topic=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        hub(),
        token07(&["*"], &[])
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    wait_until("the subscriber is admitted", || {
        app.node.usage.app(APP_ID).connections() == 1
    })
    .await;
    let data = "x".repeat(8 * 1024);
    let mut published = 0;
    while app.node.usage.app(APP_ID).connections() == 1 {
        assert!(published < 5_000, "never cut");
        publish(&app, &[("topic", "a"), ("data", &data)]).await;
        published += 1;
    }
    drop(stream);
}

#[tokio::test]
async fn shutdown_ends_the_streams() {
    let mut app = spawn_app_with(|_| {}).await;
    let mut sse = subscribe(&app, "topic=a").await;
    let stopping = async { app.stop().await };
    let ended = async {
        sse.expect_end().await;
    };
    tokio::join!(stopping, ended);
}

#[tokio::test]
async fn anonymous_subscribers_get_public_updates_only_when_the_app_allows_them() {
    let app = spawn_app().await;
    let refused = subscribe_raw(&app, "topic=a", None, &[]).await;
    assert_eq!(refused.status().as_u16(), 401);
    app.update_app(AppPatch {
        mercure: herald::tenants::MercurePatch {
            anonymous: Some(true),
            history_size: Some(2),
            ..Default::default()
        },
        ..AppPatch::default()
    })
    .await;
    for data in ["1", "2", "3"] {
        publish(&app, &[("topic", "a"), ("data", data)]).await;
    }
    publish(
        &app,
        &[("topic", "a"), ("data", "hidden"), ("private", "on")],
    )
    .await;
    publish(&app, &[("topic", "a"), ("data", "4")]).await;
    // The history keeps the app's last 2: the private one (not for an anonymous subscriber)
    // and "4"; the stream then goes on live.
    let mut anonymous = subscribe_with(&app, "topic=a&lastEventID=earliest", None, &[]).await;
    assert_eq!(anonymous.data(1).await, ["4"]);
    publish(&app, &[("topic", "a"), ("data", "no"), ("private", "on")]).await;
    publish(&app, &[("topic", "a"), ("data", "5")]).await;
    assert_eq!(anonymous.data(1).await, ["5"]);
}

#[tokio::test]
async fn a_history_replay_counts_once_per_connection_and_update() {
    let app = spawn_app().await;
    for data in ["1", "2", "3"] {
        publish(&app, &[("topic", "a"), ("data", data)]).await;
    }
    let before = messages_today(&app);
    let mut sse = subscribe(&app, "topic=a&lastEventID=earliest").await;
    assert_eq!(sse.data(3).await, ["1", "2", "3"]);
    assert_eq!(messages_today(&app) - before, 3);
}

#[tokio::test]
async fn browsers_get_cors_headers_for_allowed_origins_and_credentials_only_for_listed_ones() {
    let app = spawn_app().await;
    let token = token07(&["*"], &[]);
    let sse = subscribe_with(
        &app,
        "topic=a",
        Some(&token),
        &[("origin", "https://any.example")],
    )
    .await;
    assert_eq!(
        sse.headers["access-control-allow-origin"].to_str().unwrap(),
        "https://any.example"
    );
    assert!(!sse.headers.contains_key("access-control-allow-credentials"));
    app.update_app(AppPatch {
        allowed_origins: Some(vec!["https://app.example".into()]),
        ..AppPatch::default()
    })
    .await;
    let sse = subscribe_with(
        &app,
        "topic=a",
        Some(&token),
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(
        sse.headers["access-control-allow-credentials"]
            .to_str()
            .unwrap(),
        "true"
    );
    let refused = subscribe_raw(
        &app,
        "topic=a",
        Some(&token),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refused.status().as_u16(), 403);
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url(&hub()))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert!(preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Last-Event-ID"));
}

#[tokio::test]
async fn a_full_node_refuses_subscribers_with_503() {
    let app = spawn_app_with(|s| s.max_connections = Some(1)).await;
    let _first = subscribe(&app, "topic=a").await;
    let token = token07(&["*"], &[]);
    let refused = subscribe_raw(&app, "topic=a", Some(&token), &[]).await;
    assert_eq!(refused.status().as_u16(), 503);
}

#[tokio::test]
async fn mercure_publishes_draw_from_the_app_s_rest_event_rate_limit() {
    let app = spawn_app().await;
    app.update_limits(LimitsPatch {
        max_backend_events_per_second: Some(2),
        ..LimitsPatch::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            publish_as(&app, Some(&publisher()), &[("topic", "a")])
                .await
                .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn a_cookie_authorized_publish_needs_an_origin_the_app_lists() {
    let app = spawn_app().await;
    let cookie = format!("mercureAuthorization={}", publisher());
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = app
            .http
            .post(app.url(&hub()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie.clone())
            .body("topic=a&data=x");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // A form on any site: no Origin, or an Origin the app does not list (it allows any origin).
    assert_eq!(post(vec![]).await, 403);
    assert_eq!(
        post(vec![("origin", "https://evil.example".into())]).await,
        403
    );
    app.update_app(AppPatch {
        allowed_origins: Some(vec!["https://app.example".into()]),
        ..AppPatch::default()
    })
    .await;
    assert_eq!(
        post(vec![("origin", "https://evil.example".into())]).await,
        403
    );
    assert_eq!(
        post(vec![("referer", "https://evil.example/page".into())]).await,
        403
    );
    assert_eq!(
        post(vec![("origin", "https://app.example".into())]).await,
        200
    );
    assert_eq!(
        post(vec![("referer", "https://app.example/page?x=1".into())]).await,
        200
    );
    // A token in the Authorization header needs no origin.
    let (status, body) = publish_as(&app, Some(&publisher()), &[("topic", "a")]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_publish_over_the_rate_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| s.body_timeout = Duration::from_secs(20)).await;
    app.update_limits(LimitsPatch {
        max_backend_events_per_second: Some(1),
        ..LimitsPatch::default()
    })
    .await;
    let mut refused = false;
    for _ in 0..10 {
        if publish_as(&app, Some(&publisher()), &[("topic", "a")])
            .await
            .0
            == 429
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "the rate limit applies");
    // Over the rate: the head announces a large body, and only its start is sent.
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n\
         topic=a&data=",
        hub(),
        publisher()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
}

#[tokio::test]
async fn a_publish_naming_more_public_channels_than_a_trigger_may_is_refused() {
    let app = spawn_app().await;
    app.update_limits(LimitsPatch {
        max_channels_per_trigger: Some(2),
        ..LimitsPatch::default()
    })
    .await;
    let mut pusher = app.connect().await;
    pusher.subscribe("a").await;
    let (status, body) = publish_as(
        &app,
        Some(&publisher()),
        &[
            ("topic", "a"),
            ("topic", "b"),
            ("topic", "c"),
            ("data", "x"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 2"), "{body}");
    // Topics that are no channel names, and private updates, do not count.
    for form in [
        vec![
            ("topic", "a"),
            ("topic", "b"),
            ("topic", "https://example.com/c"),
            ("data", "x"),
        ],
        vec![
            ("topic", "c"),
            ("topic", "d"),
            ("topic", "e"),
            ("private", "on"),
        ],
    ] {
        let (status, body) = publish_as(&app, Some(&publisher()), &form).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(pusher.expect_event("message").await["data"], "x");
}

#[tokio::test]
async fn a_token_without_publish_rights_spends_none_of_the_app_s_event_budget() {
    let app = spawn_app().await;
    app.update_limits(LimitsPatch {
        max_backend_events_per_second: Some(2),
        ..LimitsPatch::default()
    })
    .await;
    // A subscriber's token (browsers hold them) posting in a loop: refused as a token that
    // may not publish, never as over the rate.
    let subscriber = token07(&["*"], &[]);
    for _ in 0..20 {
        let (status, _) = publish_as(&app, Some(&subscriber), &[("topic", "a")]).await;
        assert_eq!(status, 403);
    }
    // The app's real publisher still has its whole budget.
    let (status, _) = publish_as(&app, Some(&publisher()), &[("topic", "a")]).await;
    assert_eq!(status, 200);
}
