//! The Mercure hub over raw HTTP: publish and subscribe in both drafts, private updates, every
//! refusal, history replay with each `Last-Event-ID` form.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{now, spawn_app, spawn_app_with, APP_ID, SECRET};
use crate::mercure_helpers::*;

#[tokio::test]
async fn a_draft07_subscriber_gets_an_update_with_its_fields_and_multi_line_data_split() {
    let app = spawn_app().await;
    let mut sse = subscribe(&app, "topic=https%3A%2F%2Fex.com%2Fbooks%2F1").await;
    assert!(sse.headers["link"]
        .to_str()
        .unwrap()
        .contains("/.well-known/mercure>; rel=\"mercure\""));
    let (status, headers, id) = publish_full(
        &app,
        &hub(),
        Some(&publisher()),
        &[
            ("topic", "https://ex.com/books/1"),
            ("data", "line one\nline two\r\ndata: forged\rid: forged"),
            ("type", "book-updated"),
            ("retry", "2500"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(id.starts_with("urn:uuid:"), "{id}");
    let event = sse.next().await;
    assert_eq!(event.id, id);
    assert_eq!(event.event, "book-updated");
    assert_eq!(event.retry, Some(2500));
    assert_eq!(event.data, "line one\nline two\ndata: forged\nid: forged");
    // Another topic does not reach it.
    publish(&app, &[("topic", "https://ex.com/books/2"), ("data", "no")]).await;
    let mine = publish(&app, &[("topic", "https://ex.com/books/1"), ("id", "mine")]).await;
    assert_eq!(mine, "mine");
    assert_eq!(sse.next().await.id, "mine");
}

#[tokio::test]
async fn draft08_match_parameters_select_topics_and_alternate_topics_match() {
    let app = spawn_app().await;
    let mut exact = subscribe(&app, "match_exact=a&match=b").await;
    let mut any = subscribe(&app, "match=*").await;
    publish(&app, &[("topic", "c"), ("topic", "b"), ("data", "1")]).await;
    publish(&app, &[("topic", "z"), ("data", "2")]).await;
    publish(&app, &[("topic", "a"), ("data", "3")]).await;
    assert_eq!(exact.data(2).await, ["1", "3"]);
    assert_eq!(any.data(3).await, ["1", "2", "3"]);
}

#[tokio::test]
async fn private_updates_reach_only_subscribers_whose_token_reads_a_topic() {
    let app = spawn_app().await;
    let mut reader = subscribe_with(&app, "topic=*", Some(&token07(&["secret"], &[])), &[]).await;
    let mut outsider = subscribe_with(&app, "topic=*", Some(&token07(&["other"], &[])), &[]).await;
    publish(
        &app,
        &[("topic", "secret"), ("data", "p"), ("private", "on")],
    )
    .await;
    publish(
        &app,
        &[
            ("topic", "x"),
            ("topic", "secret"),
            ("data", "alt"),
            ("private", ""),
        ],
    )
    .await;
    publish(&app, &[("topic", "open"), ("data", "public")]).await;
    assert_eq!(reader.data(3).await, ["p", "alt", "public"]);
    assert_eq!(outsider.data(1).await, ["public"]);
}

#[tokio::test]
async fn refusals_carry_their_status_and_www_authenticate() {
    let app = spawn_app().await;
    // Publishing: no token, a bad signature, an expired token, a topic not granted.
    let (status, headers, _) = publish_full(&app, &hub(), None, &[("topic", "a")]).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let forged = token_with("not-the-secret", json!({"mercure": {"publish": ["*"]}}));
    let (status, headers, _) = publish_full(&app, &hub(), Some(&forged), &[("topic", "a")]).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let expired = token_with(
        SECRET,
        json!({"mercure": {"publish": ["*"]}, "exp": now() - 120}),
    );
    assert_eq!(
        publish_as(&app, Some(&expired), &[("topic", "a")]).await.0,
        401
    );
    let narrow = token07(&[], &["a"]);
    let (status, headers, _) = publish_full(
        &app,
        &hub(),
        Some(&narrow),
        &[("topic", "a"), ("topic", "b")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(
        publish_as(&app, Some(&narrow), &[("topic", "a")]).await.0,
        200
    );
    // Reserved topics, `*`, bad fields, sizes.
    for form in [
        vec![("topic", "*")],
        vec![("topic", "/.well-known/mercure/subscriptions/x/y")],
        vec![("topic", "https://h.example/.well-known/%6Dercure")],
        vec![("topic", "a"), ("type", "mercure")],
        vec![("topic", "a"), ("id", "#1")],
        vec![("topic", "a"), ("retry", "soon")],
        vec![("data", "no topic")],
    ] {
        assert_eq!(
            publish_as(&app, Some(&publisher()), &form).await.0,
            400,
            "{form:?}"
        );
    }
    let big = "x".repeat(10 * 1024 + 1);
    assert_eq!(
        publish_as(&app, Some(&publisher()), &[("topic", "a"), ("data", &big)])
            .await
            .0,
        413
    );
    let topics: Vec<(&str, &str)> = (0..33).map(|_| ("topic", "a")).collect();
    assert_eq!(publish_as(&app, Some(&publisher()), &topics).await.0, 413);
    // Subscribing: anonymous (not allowed by default), bad token, bad selectors.
    let response = subscribe_raw(&app, "topic=a", None, &[]).await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(
        subscribe_raw(&app, "topic=a", Some(&forged), &[])
            .await
            .status()
            .as_u16(),
        401
    );
    let token = token07(&["*"], &[]);
    let many: String = (0..33).map(|i| format!("match=t{i}&")).collect();
    for query in ["", "match_regex=a", "x=1", many.as_str(), "topic=a%00b"] {
        let status = subscribe_raw(&app, query, Some(&token), &[]).await.status();
        assert_eq!(status.as_u16(), 400, "{query}");
    }
    // An unknown app.
    let status = app
        .http
        .get(app.url("/apps/999/.well-known/mercure?topic=a"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
}

#[tokio::test]
async fn a_subscription_holds_at_most_8_kib_of_selectors() {
    let app = spawn_app().await;
    let token = token07(&["*"], &[]);
    // Each selector under the 1,024-byte bound, 32 of them allowed, but 9 KB together.
    let topic = |i: usize| format!("https://example.com/{i}/{}", "x".repeat(970));
    let query = |n: usize| -> String {
        (0..n)
            .map(|i| format!("topic={}", topic(i)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let refused = subscribe_raw(&app, &query(9), Some(&token), &[]).await;
    assert_eq!(refused.status().as_u16(), 400);
    let body = refused.text().await.unwrap();
    assert!(body.contains("at most 8192 bytes together"), "{body}");
    let mut sse = subscribe_with(&app, &query(8), Some(&token), &[]).await;
    publish(&app, &[("topic", &topic(7)), ("data", "fits")]).await;
    assert_eq!(sse.next().await.data, "fits");
}

#[tokio::test]
async fn a_reconnecting_subscriber_gets_exactly_what_it_missed_in_every_form() {
    let app = spawn_app().await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for (topic, data) in [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")] {
            ids.push(publish(&app, &[("topic", topic), ("data", data)]).await);
        }
        ids
    };
    let token = token07(&["*"], &[]);
    let token08 = token08_reader(&app);
    // The header (what EventSource sends), draft-07 response header.
    let mut sse =
        subscribe_with(&app, "topic=a", Some(&token), &[("last-event-id", &ids[0])]).await;
    assert_eq!(sse.headers["last-event-id"].to_str().unwrap(), ids[0]);
    assert_eq!(sse.data(2).await, ["3", "4"]);
    // Live updates follow with no gap.
    publish(&app, &[("topic", "a"), ("data", "5")]).await;
    assert_eq!(sse.data(1).await, ["5"]);
    // draft-07 query.
    let mut sse = subscribe_with(
        &app,
        &format!("topic=a&lastEventID={}", ids[2]),
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(sse.data(2).await, ["4", "5"]);
    // draft-08 query, its own response header; the header wins over the query.
    let mut sse = subscribe_with(
        &app,
        &format!("match=a&last_event_id={}", ids[0]),
        Some(&token08),
        &[("last-event-id", &ids[2])],
    )
    .await;
    assert_eq!(
        sse.headers["mercure-last-event-id"].to_str().unwrap(),
        ids[2]
    );
    assert_eq!(sse.data(2).await, ["4", "5"]);
    // earliest.
    let mut sse = subscribe_with(&app, "match=*&last_event_id=earliest", Some(&token08), &[]).await;
    assert_eq!(
        sse.headers["mercure-last-event-id"].to_str().unwrap(),
        "earliest"
    );
    assert_eq!(sse.data(5).await, ["1", "2", "3", "4", "5"]);
    // An id no longer (or never) in history: everything kept, announced as `earliest`.
    let mut sse = subscribe_with(
        &app,
        "match=a",
        Some(&token08),
        &[("last-event-id", "gone")],
    )
    .await;
    assert_eq!(
        sse.headers["mercure-last-event-id"].to_str().unwrap(),
        "earliest"
    );
    assert_eq!(sse.data(4).await, ["1", "3", "4", "5"]);
    // No id: live only.
    let mut sse = subscribe_with(&app, "topic=a", Some(&token), &[]).await;
    assert!(!sse.headers.contains_key("last-event-id"));
    sse.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_replay_respects_private_updates_and_a_long_one_is_cut_then_resumed() {
    let app = spawn_app().await;
    let first = publish(
        &app,
        &[("topic", "s"), ("data", "secret"), ("private", "on")],
    )
    .await;
    for i in 0..herald::transport::mercure::MAX_REPLAY + 10 {
        publish(&app, &[("topic", "a"), ("data", &i.to_string())]).await;
    }
    // A token that does not read `s` replays the public ones only: exactly MAX_REPLAY, then
    // the stream ends; resumed from the last id, it gets the rest, then live ones.
    let token = token07(&["a"], &[]);
    let mut sse = subscribe_with(&app, "topic=*", Some(&token), &[("last-event-id", &first)]).await;
    let mut last = String::new();
    for i in 0..herald::transport::mercure::MAX_REPLAY {
        let event = sse.next().await;
        assert_eq!(event.data, i.to_string());
        last = event.id;
    }
    sse.expect_end().await;
    let mut sse = subscribe_with(&app, "topic=*", Some(&token), &[("last-event-id", &last)]).await;
    let rest: Vec<String> = (herald::transport::mercure::MAX_REPLAY
        ..herald::transport::mercure::MAX_REPLAY + 10)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(sse.data(10).await, rest);
}

#[tokio::test]
async fn the_root_hub_serves_the_named_app_and_is_absent_otherwise() {
    let app = spawn_app().await;
    let status = app
        .http
        .get(app.url("/.well-known/mercure?topic=a"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
    let app = spawn_app_with(|s| s.mercure.root_app = Some(APP_ID.into())).await;
    let (status, _, id) = publish_full(
        &app,
        "/.well-known/mercure",
        Some(&publisher()),
        &[("topic", "r")],
    )
    .await;
    assert_eq!(status, 200);
    let token = token07(&["*"], &[]);
    let mut sse = subscribe_with(&app, "topic=r&lastEventID=earliest", Some(&token), &[]).await;
    assert_eq!(sse.next().await.id, id);
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive_and_the_stream_ends_when_the_token_expires() {
    let app = spawn_app_with(|s| s.mercure.heartbeat = Duration::from_millis(100)).await;
    let token = token_with(
        SECRET,
        json!({"mercure": {"subscribe": ["*"]}, "exp": now() + 2}),
    );
    let mut sse = subscribe_with(&app, "topic=a", Some(&token), &[]).await;
    let chunk = tokio::time::timeout(crate::helpers::WAIT, sse.response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&chunk[..], b":\n");
    sse.expect_end().await;
}

#[tokio::test]
async fn subscription_events_and_the_subscriptions_api_follow_subscribers_within_the_token_s_rights(
) {
    // Short heartbeats: a write is how a server learns a dropped stream's client is gone.
    let app = spawn_app_with(|s| s.mercure.heartbeat = Duration::from_millis(50)).await;
    let namespace = format!("/apps/{APP_ID}/.well-known/mercure/subscriptions");
    let watch = format!("topic={namespace}/{{topic}}/{{subscriber}}");
    let watch = watch.replace('{', "%7B").replace('}', "%7D");
    let mut watcher = subscribe_with(&app, &watch, Some(&token07(&["*"], &[])), &[]).await;
    let member = token_with(
        SECRET,
        json!({"mercure": {"subscribe": ["books"], "payload": {"user": "u1"}}, "exp": now() + 60}),
    );
    // The watcher's own subscription is announced first (its template selects it too).
    let own: serde_json::Value = serde_json::from_str(&watcher.next().await.data).unwrap();
    assert_eq!(own["active"], true);
    assert!(own["topic"]
        .as_str()
        .unwrap()
        .ends_with("/{topic}/{subscriber}"));
    let sse = subscribe_with(&app, "topic=books", Some(&member), &[]).await;
    let event = watcher.next().await;
    let doc: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(doc["type"], "Subscription");
    assert_eq!(doc["topic"], "books");
    assert_eq!(doc["active"], true);
    assert_eq!(doc["payload"], json!({"user": "u1"}));
    let id = doc["id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with(&format!("{namespace}/books/urn%3Auuid%3A")),
        "{id}"
    );
    // The API: the collection, one subscription, and the refusals.
    let get = |path: String, token: Option<String>| {
        let mut request = app.http.get(app.url(&path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let all = get(namespace.clone(), Some(token07(&["*"], &[])))
        .await
        .unwrap();
    assert_eq!(all.status().as_u16(), 200);
    assert!(all.headers()["link"]
        .to_str()
        .unwrap()
        .contains("last-event-id="));
    let all: serde_json::Value = all.json().await.unwrap();
    assert_eq!(all["type"], "Subscriptions");
    assert!(all["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == id.as_str()));
    let one: serde_json::Value = get(id.clone(), Some(token07(&[&id], &[])))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["subscriber"], doc["subscriber"]);
    assert_eq!(
        get(namespace.clone(), None)
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let narrow = token07(&["books"], &[]);
    assert_eq!(
        get(namespace.clone(), Some(narrow))
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    // Leaving: an inactive event.
    drop(sse);
    let event = watcher.next().await;
    let doc: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(doc["active"], false);
    assert_eq!(doc["id"], id.as_str());
}

/// A draft-08 access token (`at+jwt`) for `aud`, granting `actions` on `matchers`.
fn token08(aud: &str, actions: &[&str], matchers: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        &json!({
            "iss": "https://auth.example.com",
            "aud": aud,
            "sub": "s1",
            "exp": now() + 300,
            "authorization_details": [{
                "type": "https://mercure.rocks/authorization-detail",
                "actions": actions,
                "topics": matchers,
            }],
        }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn draft08_access_tokens_with_url_patterns_read_private_updates_and_are_checked() {
    let app = spawn_app().await;
    let aud = format!("http://{}{}", app.address, hub());
    let books = json!([{"match": "https://ex.com/books/:id", "match_type": "urlpattern"}]);
    let reader = token08(&aud, &["subscribe"], books.clone());
    let query = "match_urlpattern=https%3A%2F%2Fex.com%2Fbooks%2F%3Aid";
    // In the header, and in the draft-08 cookie.
    let mut by_header = subscribe_with(&app, query, Some(&reader), &[]).await;
    let cookie = format!("__Secure-mercure_access_token={reader}");
    let mut by_cookie = subscribe_with(&app, query, None, &[("cookie", &cookie)]).await;
    let writer = token08(&aud, &["publish"], books);
    let (status, body) = publish_as(
        &app,
        Some(&writer),
        &[
            ("topic", "https://ex.com/books/7"),
            ("data", "p"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        publish_as(
            &app,
            Some(&writer),
            &[("topic", "https://ex.com/authors/7")]
        )
        .await
        .0,
        403
    );
    publish_as(
        &app,
        Some(&writer),
        &[("topic", "https://ex.com/books/8"), ("data", "q")],
    )
    .await;
    assert_eq!(by_header.data(2).await, ["p", "q"]);
    assert_eq!(by_cookie.data(2).await, ["p", "q"]);
    // Another hub's audience, and a header that is not `Bearer <token>`.
    let elsewhere = token08(
        "https://other.example/.well-known/mercure",
        &["subscribe"],
        json!([{"match": "*"}]),
    );
    let response = subscribe_raw(&app, query, Some(&elsewhere), &[]).await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let response = subscribe_raw(&app, query, None, &[("authorization", "Basic abc")]).await;
    assert_eq!(response.status().as_u16(), 400);
    // A draft-08 request takes no draft-07 token (which skips the exp / aud / iss checks),
    // however wide its rights; the same token still serves a draft-07 request.
    let draft07 = token07(&["*"], &[]);
    let response = subscribe_raw(&app, query, Some(&draft07), &[]).await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    subscribe_with(
        &app,
        "topic=https%3A%2F%2Fex.com%2Fbooks%2F7",
        Some(&draft07),
        &[],
    )
    .await;
}
