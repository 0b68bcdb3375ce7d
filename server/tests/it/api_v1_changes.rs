//! The management API's later additions (issue 18): changing a webhook endpoint
//! (`PATCH /api/v1/apps/{app_id}/webhooks/{webhook_id}`), the scope judged before any body is
//! read, and `/api/v1` behind a proxy's path prefix with the OpenAPI document naming the base.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use herald::tenants::{AuditFilter, NewApp, NewWebhook, Scope};

use crate::api_v1::token;
use crate::helpers::*;

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn new_app(app: &TestApp, tenant: &str) -> String {
    app.node
        .store
        .create_app(NewApp {
            name: "hooks".into(),
            tenant_id: Some(tenant.into()),
            ..NewApp::default()
        })
        .await
        .expect("app created")
        .id
}

/// A PATCH changes what it names and keeps the rest (the header values too, which the API
/// never shows), checks the new URL like an addition, is audited with the token as actor, and
/// finds neither another app's endpoint nor another tenant's app.
#[tokio::test]
async fn a_webhook_endpoint_is_changed_in_place() {
    let app = spawn_app_with(|s| {
        s.api_rate = 1000;
        s.webhooks.allow_private = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let globex = store.create_tenant("Globex").await.unwrap();
    let app_id = new_app(&app, &acme.id).await;
    let other_app = new_app(&app, &acme.id).await;
    let globex_app = new_app(&app, &globex.id).await;
    let hook = store
        .create_webhook(NewWebhook {
            app_id: app_id.clone(),
            url: "http://127.0.0.1:9/old".into(),
            events: vec!["channel_vacated".into()],
            channel_prefix: Some("old-".into()),
            headers: vec!["X-Secret: kept value".into()],
        })
        .await
        .unwrap();
    let writer = token(&app, &acme.id, &[Scope::WebhooksWrite]).await;
    let path = format!("/api/v1/apps/{app_id}/webhooks/{}", hook.id);

    let (status, body) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &writer,
        Some(json!({ "url": "http://127.0.0.1:9/new", "events": ["channel_occupied", "member_added"] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], json!(hook.id));
    assert_eq!(body["url"], "http://127.0.0.1:9/new");
    assert_eq!(body["events"], json!(["channel_occupied", "member_added"]));
    assert_eq!(body["channel_prefix"], "old-", "left out: unchanged");
    assert_eq!(body["header_names"], json!(["X-Secret"]));
    let stored = store.list_webhooks(Some(&app_id)).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].url, "http://127.0.0.1:9/new");
    assert_eq!(
        stored[0].headers,
        vec![("X-Secret".to_owned(), "kept value".to_owned())],
        "the header values are kept"
    );
    // The URL is checked as an addition's is: a private address outside the allowed ranges.
    let (status, body) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &writer,
        Some(json!({ "url": "http://10.1.2.3/hook" })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &writer,
        Some(json!({ "events": ["no_such_event"] })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &writer,
        Some(json!({ "secret": "x" })),
    )
    .await;
    assert_eq!(status, 422, "unknown fields are refused: {body}");
    // Another app's endpoint, and another tenant's app, are not found.
    for path in [
        format!("/api/v1/apps/{other_app}/webhooks/{}", hook.id),
        format!("/api/v1/apps/{globex_app}/webhooks/{}", hook.id),
        format!("/api/v1/apps/{app_id}/webhooks/999999"),
    ] {
        let (status, body) = send(
            &app,
            reqwest::Method::PATCH,
            &path,
            &writer,
            Some(json!({ "channel_prefix": "x-" })),
        )
        .await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(
        store.list_webhooks(Some(&app_id)).await.unwrap()[0].channel_prefix,
        "old-"
    );
    let entries = store
        .audit_entries(&AuditFilter {
            tenant_id: Some(acme.id.clone()),
            action: Some("webhook.updated".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "one change, one entry: {entries:?}");
    assert!(entries[0].actor.starts_with("api-token:"));
    assert!(!serde_json::to_string(&entries)
        .unwrap()
        .contains("kept value"));
}

/// A token without the route's scope is refused from the request head: the server answers 403
/// while the announced body has not been sent at all (it neither reads nor waits for it).
#[tokio::test]
async fn the_scope_is_judged_before_the_body_is_read() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let acme = app.node.store.create_tenant("Acme").await.unwrap();
    let app_id = new_app(&app, &acme.id).await;
    let reader = token(&app, &acme.id, &[Scope::AppsRead]).await;
    for (method, path) in [
        ("POST", "/api/v1/apps".to_owned()),
        ("PATCH", format!("/api/v1/apps/{app_id}")),
        ("POST", format!("/api/v1/apps/{app_id}/keys/rotate")),
        ("POST", format!("/api/v1/apps/{app_id}/webhooks")),
    ] {
        let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {reader}\r\n\
             Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let n = stream.read(&mut buffer).await.unwrap_or(0);
                answer.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&answer);
                if n == 0 || text.contains("insufficient_scope") || text.contains("}}") {
                    break;
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok(),
            "{method} {path}: no answer without the body: {text}"
        );
        assert!(text.starts_with("HTTP/1.1 403"), "{method} {path}: {text}");
        assert!(
            text.contains("insufficient_scope"),
            "{method} {path}: {text}"
        );
    }
}

/// Behind a proxy that keeps its path prefix, `/prefix/api/v1/...` is the management API (not
/// the Pusher REST API that `/apps/` would otherwise make of it), and the document's `servers`
/// names the base: the prefix the request came through, or `HERALD_PUBLIC_URL` when set.
#[tokio::test]
async fn the_api_works_under_a_path_prefix() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let acme = app.node.store.create_tenant("Acme").await.unwrap();
    let app_id = new_app(&app, &acme.id).await;
    let all = token(&app, &acme.id, &Scope::ALL).await;
    for path in [
        "/realtime/api/v1/apps".to_owned(),
        format!("/realtime/api/v1/apps/{app_id}"),
        format!("/realtime/api/v1/apps/{app_id}/webhooks"),
        format!("/a/b/api/v1/apps/{app_id}/usage"),
    ] {
        let (status, body) = send(&app, reqwest::Method::GET, &path, &all, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = send(
        &app,
        reqwest::Method::POST,
        "/realtime/api/v1/apps",
        &all,
        Some(json!({ "name": "through the prefix" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let document = |path: &'static str| {
        let app = &app;
        async move {
            let answer = app.http.get(app.url(path)).send().await.unwrap();
            assert_eq!(answer.status().as_u16(), 200, "{path}");
            answer.json::<Value>().await.unwrap()
        }
    };
    let prefixed = document("/realtime/api/v1/openapi.json").await;
    assert_eq!(prefixed["servers"], json!([{ "url": "/realtime" }]));
    let plain = document("/api/v1/openapi.json").await;
    assert_eq!(plain["servers"], json!([{ "url": "/" }]));

    let public = spawn_app_with(|s| {
        s.public_url = Some("https://push.example.com/realtime".into());
    })
    .await;
    let answer = public
        .http
        .get(public.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let named: Value = answer.json().await.unwrap();
    assert_eq!(
        named["servers"],
        json!([{ "url": "https://push.example.com/realtime" }])
    );
}

/// An IPv6 client's 401 budget is its /64's: the 2^64 addresses of one subscriber do not each
/// get 120 token lookups a minute (another /64 still has its own budget).
#[tokio::test]
async fn an_ipv6_clients_401_budget_is_its_64s() {
    let app = spawn_app_with(|s| {
        s.api_rate = 1000;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let acme = app.node.store.create_tenant("Acme").await.unwrap();
    let live = token(&app, &acme.id, &[Scope::AppsRead]).await;
    let from = |client: String, token: String| {
        app.http
            .get(app.url("/api/v1/apps"))
            .bearer_auth(token)
            .header("x-forwarded-for", client)
            .send()
    };
    let budget = herald::api::v1::UNAUTHORIZED_PER_MINUTE as usize;
    for n in 0..budget {
        let client = format!("2001:db8:7:7::{:x}", n + 1);
        let answer = from(client, "hrld_not-a-token".into()).await.unwrap();
        assert_eq!(answer.status().as_u16(), 401);
    }
    let spent = from("2001:db8:7:7:abcd::1".into(), live.clone())
        .await
        .unwrap();
    assert_eq!(spent.status().as_u16(), 429, "the /64 is out of 401s");
    let other = from("2001:db8:7:8::1".into(), live).await.unwrap();
    assert_eq!(other.status().as_u16(), 200, "another /64 is not");
}

/// With `HERALD_PUBLIC_URL` unset, only a clean relative prefix is named as the document's
/// base: a request path that makes the prefix protocol-relative (`//evil.example`, or
/// `/\evil.example` that browsers read as `//`) or otherwise odd gets `/`, so a link on this
/// host cannot point Swagger UI or a generated client (and its bearer token) at another host.
#[tokio::test]
async fn a_foreign_host_in_the_path_is_not_named_as_the_base() {
    let app = spawn_app().await;
    for prefix in [
        "//evil.example",
        "/\\evil.example",
        "/\\\\evil.example",
        "/evil.example:443",
        "/a/%2F%2Fevil.example",
        "/a/../evil.example",
        "/a//b",
    ] {
        let path = format!("{prefix}/api/v1/openapi.json");
        let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        if !text.starts_with("HTTP/1.1 200") {
            // Refused outright (not a URI the server takes): nothing is named at all.
            assert!(text.starts_with("HTTP/1.1 4"), "{path}: {text}");
            continue;
        }
        let document: Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(document["servers"], json!([{ "url": "/" }]), "{path}");
    }
    let answer = app
        .http
        .get(app.url("/a.b/c~d_e-f/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let document: Value = answer.json().await.unwrap();
    assert_eq!(document["servers"], json!([{ "url": "/a.b/c~d_e-f" }]));
}

/// A PATCH that moves an endpoint to another origin (scheme, host, port) without `headers`
/// drops the stored header values (the receiver's credentials, never shown by the API), so a
/// `webhooks:write` token cannot have them sent to a host of its choosing; the answer says
/// so. Given again, they are stored; the same origin keeps them.
#[tokio::test]
async fn a_new_origin_does_not_take_the_stored_headers() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let app_id = new_app(&app, &acme.id).await;
    let hook = store
        .create_webhook(NewWebhook {
            app_id: app_id.clone(),
            url: "http://127.0.0.1:9/old".into(),
            events: vec!["channel_vacated".into()],
            channel_prefix: None,
            headers: vec!["X-Webhook-Token: receiver-secret".into()],
        })
        .await
        .unwrap();
    let writer = token(&app, &acme.id, &[Scope::WebhooksWrite]).await;
    let path = format!("/api/v1/apps/{app_id}/webhooks/{}", hook.id);
    let stored = || async { store.list_webhooks(Some(&app_id)).await.unwrap()[0].clone() };

    // The same origin, another path: kept.
    let (status, body) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &writer,
        Some(json!({ "url": "http://127.0.0.1:9/moved" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.get("headers_dropped"), None);
    assert_eq!(
        stored().await.headers.len(),
        1,
        "the same origin keeps them"
    );

    // Another port (so another origin), headers left out: dropped, and the answer says so.
    let (status, body) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &writer,
        Some(json!({ "url": "http://127.0.0.1:10/elsewhere" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers_dropped"], json!(true), "{body}");
    assert_eq!(body["header_names"], json!([]));
    let now = stored().await;
    assert_eq!(now.url, "http://127.0.0.1:10/elsewhere");
    assert!(
        now.headers.is_empty(),
        "not carried over: {:?}",
        now.headers
    );

    // Restated with the move: stored.
    let (status, body) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &writer,
        Some(json!({ "url": "https://127.0.0.1:10/x", "headers": ["X-Token: new"] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.get("headers_dropped"), None);
    assert_eq!(
        stored().await.headers,
        vec![("X-Token".to_owned(), "new".to_owned())]
    );
}
