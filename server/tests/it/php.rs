//! The request and response shapes pusher-http-php 7.2.6 depends on (contract section 8), pinned
//! at the server's level (the compat suite's `35-php-sdk` drives the real, unmodified SDK), with
//! requests built the way `Pusher.php` builds them: `ksort`ed auth parameters,
//! Guzzle's RFC 3986 percent-encoding of the query, `json_encode` bodies (slashes escaped as
//! `\/`), `channel` for a single channel, `info` and `socket_id` in the body, no `body_md5` on GET,
//! the `X-Pusher-Library` header, and the `path` option mounting the API under a prefix while
//! the signed path stays `/apps/{id}/...`.
//!
//! What PHP requires back: status exactly 200 (202 is an error to it), a JSON body, an *object*
//! (`{}`) from trigger, batch and terminate, and `channels` as an object (`{}` when empty, never
//! `[]`) because it calls `get_object_vars` on it.

use serde_json::{json, Value};

use crate::helpers::*;

/// RFC 3986 percent-encoding of a query value, as Guzzle's `query` option does it.
fn guzzle_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Sends a request exactly as pusher-http-php would, mounted under `prefix` (its `path` option).
async fn php_request(
    app: &TestApp,
    method: &str,
    prefix: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Option<String>, String) {
    let md5 = body.map(|body| md5_hex(body.as_bytes()));
    let mut params = signed_params(method, path, query, md5.as_deref(), KEY, SECRET, now());
    // PHP `ksort`s the signed parameters and appends auth_signature after them.
    let signed = params.len() - 1;
    params[..signed].sort();
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", guzzle_encode(v)))
        .collect();
    let url = format!("{}{prefix}{path}?{}", app.url(""), query.join("&"));
    let mut request = app
        .http
        .request(method.parse().unwrap(), url)
        .header("X-Pusher-Library", "pusher-http-php 7.2.6")
        .header("Content-Type", "application/json");
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    (status, content_type, response.text().await.unwrap())
}

fn json_object(body: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => map,
        other => panic!("pusher-http-php needs a JSON object, got {other:?} from {body:?}"),
    }
}

#[tokio::test]
async fn php_trigger_with_one_channel_gets_status_200_and_an_empty_object() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("php-channel").await;
    // json_encode escapes slashes; the data string is relayed verbatim all the same.
    let body = r#"{"name":"my-event","data":"{\"url\":\"http:\\/\\/x\"}","channel":"php-channel"}"#;
    let (status, content_type, text) =
        php_request(&app, "POST", "", "/apps/4242/events", &[], Some(body)).await;
    assert_eq!(status, 200);
    assert!(content_type
        .unwrap_or_default()
        .starts_with("application/json"));
    assert!(json_object(&text).is_empty(), "{text}");
    let event = client.expect_next("my-event").await;
    assert_eq!(event["data"], r#"{"url":"http:\/\/x"}"#);
}

#[tokio::test]
async fn php_trigger_with_info_in_the_body_gets_channels_as_an_object() {
    let app = spawn_app().await;
    let body = json!({
        "name": "e", "data": "{}", "channels": ["presence-my-channel", "plain"],
        "info": "user_count,subscription_count"
    })
    .to_string();
    let (status, _, text) =
        php_request(&app, "POST", "", "/apps/4242/events", &[], Some(&body)).await;
    assert_eq!(status, 200);
    let object = json_object(&text);
    assert_eq!(
        object["channels"],
        json!({
            "presence-my-channel": {"user_count": 0, "subscription_count": 0},
            "plain": {"subscription_count": 0}
        })
    );
}

#[tokio::test]
async fn php_trigger_batch_gets_an_object_and_index_aligned_info() {
    let app = spawn_app().await;
    let plain = json!({"batch":[{"name":"a","data":"1","channel":"c1"},{"name":"b","data":"2","channel":"c2"}]}).to_string();
    let (status, _, text) = php_request(
        &app,
        "POST",
        "",
        "/apps/4242/batch_events",
        &[],
        Some(&plain),
    )
    .await;
    assert_eq!((status, json_object(&text).len()), (200, 0));

    let with_info = json!({"batch":[
        {"name":"a","data":"1","channel":"c1","info":"subscription_count"},
        {"name":"b","data":"2","channel":"c2"}
    ]})
    .to_string();
    let (status, _, text) = php_request(
        &app,
        "POST",
        "",
        "/apps/4242/batch_events",
        &[],
        Some(&with_info),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        Value::Object(json_object(&text)),
        json!({"batch":[{"subscription_count":0},{}]})
    );
}

#[tokio::test]
async fn php_get_channels_is_an_object_even_when_empty_and_entries_are_empty_objects() {
    let app = spawn_app().await;
    let (status, _, text) = php_request(&app, "GET", "", "/apps/4242/channels", &[], None).await;
    assert_eq!((status, text.as_str()), (200, r#"{"channels":{}}"#));

    let mut client = app.connect().await;
    client.subscribe("my-channel").await;
    let (_, _, text) = php_request(
        &app,
        "GET",
        "",
        "/apps/4242/channels",
        &[("filter_by_prefix", "my-")],
        None,
    )
    .await;
    assert_eq!(json_object(&text)["channels"], json!({"my-channel": {}}));
}

#[tokio::test]
async fn php_percent_encoded_info_lists_are_verified_decoded() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client
        .subscribe_presence("presence-room", "1", json!({"name": "a"}))
        .await;
    let (status, _, text) = php_request(
        &app,
        "GET",
        "",
        "/apps/4242/channels/presence-room",
        &[("info", "user_count,subscription_count")],
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        Value::Object(json_object(&text)),
        json!({"occupied": true, "user_count": 1, "subscription_count": 1})
    );
    let (status, _, text) = php_request(
        &app,
        "GET",
        "",
        "/apps/4242/channels/presence-room/users",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json_object(&text)["users"], json!([{"id": "1"}]));
}

#[tokio::test]
async fn php_terminate_with_body_braces_gets_an_object() {
    let app = spawn_app().await;
    let (status, _, text) = php_request(
        &app,
        "POST",
        "",
        "/apps/4242/users/someone/terminate_connections",
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(json_object(&text).is_empty());
}

#[tokio::test]
async fn php_path_option_mounts_the_api_under_a_prefix_and_still_verifies() {
    let app = spawn_app().await;
    let body = r#"{"name":"e","data":"d","channel":"c"}"#;
    let (status, _, text) = php_request(
        &app,
        "POST",
        "/pusher-api",
        "/apps/4242/events",
        &[],
        Some(body),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "{}"));
    let (status, _, text) =
        php_request(&app, "GET", "/a/b", "/apps/4242/channels", &[], None).await;
    assert_eq!((status, text.as_str()), (200, r#"{"channels":{}}"#));
}

#[tokio::test]
async fn php_sees_refusals_as_non_200_statuses_with_a_text_body() {
    let app = spawn_app().await;
    let too_big = json!({"name":"e","data":"x".repeat(10 * 1024 + 1),"channel":"c"}).to_string();
    let (status, _, text) =
        php_request(&app, "POST", "", "/apps/4242/events", &[], Some(&too_big)).await;
    assert_eq!(status, 413);
    assert!(!text.is_empty());
    let (status, _, _) = php_request(&app, "GET", "", "/apps/999/channels", &[], None).await;
    assert_eq!(status, 404);
}
