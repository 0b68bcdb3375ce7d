//! The REST API's HTTP edges against a spawned server: a mount prefix, CORS, health and ready,
//! punctuation in channel paths, and a server-to-user channel in a trigger.

use serde_json::json;

use crate::helpers::*;
use crate::rest_helpers::*;

// Mount prefix, CORS, health

#[tokio::test]
async fn a_request_under_a_mount_prefix_signed_over_the_apps_path_is_accepted() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let (status, text) = app
        .rest_signed(
            "POST",
            "/some/prefix/apps/4242/events",
            "/apps/4242/events",
            &[],
            Some(&body),
            KEY,
            SECRET,
            now(),
        )
        .await;
    assert_eq!((status, text.as_str()), (200, "{}"));
    client.expect_next("e").await;
    let (status, text) = app
        .rest_signed(
            "GET",
            "/some/prefix/apps/4242/channels",
            "/apps/4242/channels",
            &[("filter_by_prefix", "ne")],
            None,
            KEY,
            SECRET,
            now(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(parse(&text), json!({"channels":{"news":{}}}));
}

#[tokio::test]
async fn a_cors_preflight_is_answered_with_allow_origin() {
    let app = spawn_app().await;
    let response = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/apps/4242/events"))
        .header("Origin", "https://example.com")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .expect("preflight is sent");
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    let origin = headers
        .get("access-control-allow-origin")
        .expect("Access-Control-Allow-Origin is set")
        .to_str()
        .unwrap();
    assert!(origin == "*" || origin == "https://example.com", "{origin}");
    let methods = headers
        .get("access-control-allow-methods")
        .expect("Access-Control-Allow-Methods is set")
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "{methods}");
}

#[tokio::test]
async fn a_cross_origin_trigger_carries_allow_origin() {
    let app = spawn_app().await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let params = signed_params(
        "POST",
        "/apps/4242/events",
        &[],
        Some(&md5_hex(body.as_bytes())),
        KEY,
        SECRET,
        now(),
    );
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let response = app
        .http
        .post(format!(
            "{}?{}",
            app.url("/apps/4242/events"),
            query.join("&")
        ))
        .header("Origin", "https://example.com")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn health_and_ready_answer_200() {
    let app = spawn_app().await;
    for path in ["/health", "/ready"] {
        let response = app
            .http
            .get(app.url(path))
            .send()
            .await
            .expect("request is sent");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn channel_names_with_every_allowed_punctuation_work_in_paths() {
    let app = spawn_app().await;
    let name = "a-b_c=d@e,f.g;h";
    let mut client = app.connect().await;
    client.subscribe(name).await;
    let (status, body) = trigger(&app, json!({"name":"e","channels":[name],"data":"{}"})).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(client.expect_next("e").await["channel"], name);
    let path = format!("/apps/4242/channels/{name}");
    let (status, body) = app.get(&path, &[("info", "subscription_count")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"occupied": true, "subscription_count": 1})
    );
    // A client whose HTTP stack percent-encodes the path but signed it decoded.
    let encoded = path
        .replace('@', "%40")
        .replace(';', "%3B")
        .replace(',', "%2C");
    let (status, body) = app
        .rest_signed("GET", &encoded, &path, &[], None, KEY, SECRET, now())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"occupied": true}));
}

#[tokio::test]
async fn a_server_to_user_channel_must_be_the_only_channel_of_a_trigger() {
    let app = spawn_app().await;
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channels":["#server-to-user-u1","news"],"data":"{}"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channels":["#server-to-user-u1"],"data":"{}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}

/// The trigger routes are answered in front of the router (`api::fast`, issue 19) unless the app
/// id is percent-encoded: `/apps/%34242/...` is the same app through the router. Both answer
/// alike, status, body and the headers a client reads, for answers of every kind.
#[tokio::test]
async fn the_fast_trigger_path_answers_as_the_router_does() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let cases = [
        (
            "events",
            json!({"name":"e","channels":["news"],"data":"{}"}).to_string(),
        ),
        (
            "events",
            json!({"name":"e","channel":"news","data":{"a":1},"info":"subscription_count"})
                .to_string(),
        ),
        (
            "events",
            json!({"channels":["news"],"data":"{}"}).to_string(),
        ),
        (
            "events",
            json!({"name":"e","channels":["bad name!"],"data":"{}"}).to_string(),
        ),
        ("events", "{not json".to_owned()),
        (
            "batch_events",
            json!({"batch":[{"name":"e","channel":"news","data":"x"}]}).to_string(),
        ),
        (
            "batch_events",
            json!({"batch":[{"name":"e","channel":"news","data":"x","info":"subscription_count"}]})
                .to_string(),
        ),
        (
            "batch_events",
            json!({"batch":[{"channel":"news","data":"x"}]}).to_string(),
        ),
    ];
    let answer = |path: String, signed: String, body: String, secret: &'static str| {
        let app = &app;
        async move {
            let params = signed_params(
                "POST",
                &signed,
                &[],
                Some(&md5_hex(body.as_bytes())),
                KEY,
                secret,
                now(),
            );
            let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let response = app
                .http
                .post(format!("{}?{}", app.url(&path), query.join("&")))
                .header("Origin", "https://example.com")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request is sent");
            let headers: Vec<(String, String)> = [
                "content-type",
                "vary",
                "access-control-allow-origin",
                "retry-after",
            ]
            .iter()
            .map(|name| {
                let values: Vec<&str> = response
                    .headers()
                    .get_all(*name)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                (name.to_string(), values.join(" | "))
            })
            .collect();
            let status = response.status().as_u16();
            (status, headers, response.text().await.expect("body"))
        }
    };
    for (route, body) in cases {
        let signed = format!("/apps/4242/{route}");
        let fast = answer(signed.clone(), signed.clone(), body.clone(), SECRET).await;
        let routed = answer(
            format!("/apps/%34242/{route}"),
            signed.clone(),
            body.clone(),
            SECRET,
        )
        .await;
        assert_eq!(fast, routed, "{route} {body}");
        assert_eq!(fast.1[2].1, "*", "{route} {body}");
    }
    // A wrong signature: the same refusal (its text names the path as sent, which differs).
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let fast = answer(
        "/apps/4242/events".into(),
        "/apps/4242/events".into(),
        body.clone(),
        "wrong",
    )
    .await;
    let routed = answer(
        "/apps/%34242/events".into(),
        "/apps/4242/events".into(),
        body,
        "wrong",
    )
    .await;
    assert_eq!((fast.0, &fast.1), (routed.0, &routed.1));
    assert_eq!(fast.0, 401);
    // An unknown app.
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let fast = answer(
        "/apps/1/events".into(),
        "/apps/1/events".into(),
        body.clone(),
        SECRET,
    )
    .await;
    let routed = answer(
        "/apps/%31/events".into(),
        "/apps/1/events".into(),
        body,
        SECRET,
    )
    .await;
    assert_eq!(fast, routed);
    assert_eq!(fast.0, 404);
}
