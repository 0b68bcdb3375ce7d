//! What the admin dashboard's pages show: a new app's key on its getting-started page, secrets
//! only in answer to a POST, usage charts, the live console (which does not hold up shutdown),
//! and the operator's tenant settings binding the tenant admin.

use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE};
use serde_json::{json, Value};

use herald::tenants::UserRole;

use crate::dashboard_helpers::*;
use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// What the pages show

#[tokio::test]
async fn creating_an_app_lands_on_its_getting_started_page_with_its_key() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let tenant = store.create_tenant("Acme").await.unwrap();
    store
        .create_user(
            TENANT_ADMIN,
            TENANT_ADMIN_PASSWORD,
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();
    let s = browser.sign_in(TENANT_ADMIN, TENANT_ADMIN_PASSWORD).await;
    let form: Form = vec![("name", "Acme live".into()), ("plan", "startup".into())];
    let page = browser
        .post(
            Some(&s.cookie),
            "/dashboard/apps",
            &with_csrf(&form, &s.csrf),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let location = page.location().to_owned();
    let id = location
        .strip_prefix("/dashboard/apps/")
        .and_then(|rest| rest.split_once("/getting-started"))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("lands on the getting-started page: {location}"));
    let created = store.get_app(&id).await.expect("the app exists");
    assert_eq!(created.name, "Acme live");
    assert_eq!(created.tenant_id, tenant.id);
    assert_eq!(created.plan, "startup");

    let start = browser.get(Some(&s.cookie), &location).await;
    assert_eq!(start.status, 200, "{}", start.body);
    assert!(
        start
            .body
            .contains(&format!("data-testid=\"app-key\">{}<", created.key)),
        "{}",
        start.body
    );
    assert!(start
        .body
        .contains(&format!("new Pusher(\"{}\"", created.key)));
    // The Mercure hub's EventSource snippet names the app's hub.
    assert!(start
        .body
        .contains(&format!("/apps/{}/.well-known/mercure", created.id)));
    assert!(start.body.contains("new EventSource(url)"));
    assert!(start
        .body
        .contains(&format!("data-testid=\"app-id\">{id}<")));
    assert!(start.body.contains("App Acme live created."));
    assert!(!start.body.contains(created.secret.expose()));
    let list = browser.get(Some(&s.cookie), "/dashboard/apps").await;
    assert!(list.body.contains("Acme live"));
}

/// The text of the element marked `data-testid="{id}"` (the getting-started page's values).
fn test_id<'a>(body: &'a str, id: &str) -> &'a str {
    let marker = format!("data-testid=\"{id}\">");
    body.split_once(&marker)
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(text, _)| text)
        .unwrap_or_else(|| panic!("no data-testid={id} in {body}"))
}

#[tokio::test]
async fn getting_started_snippets_set_the_fallbacks_host_and_port_and_leave_them_on() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let s = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let page = browser
        .get(
            Some(&s.cookie),
            &format!("/dashboard/apps/{APP_ID}/getting-started"),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (host, port) = (test_id(&page.body, "host"), test_id(&page.body, "port"));
    assert_eq!(host, "127.0.0.1");
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "port {port}");
    // Both client snippets (pusher-js and Laravel Echo) point WebSocket and the HTTP fallbacks at
    // this server, plain HTTP here (no TLS in front of the test server).
    for line in [
        format!("\n  wsHost: \"{host}\",\n"),
        format!("\n  wsPort: {port},\n"),
        format!("\n  httpHost: \"{host}\",\n"),
        format!("\n  httpPort: {port},\n"),
        format!("\n  httpsPort: {port},\n"),
        "\n  forceTLS: false,\n".to_owned(),
    ] {
        let shown = page.body.matches(&line).count();
        assert_eq!(
            shown, 2,
            "{line:?} in both pusher-js snippets: {}",
            page.body
        );
    }
    // And they do not limit pusher-js to WebSocket: it falls back by itself.
    assert!(
        !page.body.contains("enabledTransports: ["),
        "a transport list in a snippet: {}",
        page.body
    );
}

#[tokio::test]
async fn secrets_are_shown_only_in_answer_to_a_post_that_is_not_cached() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let s = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let path = format!("/dashboard/apps/{APP_ID}/keys");
    for page_path in app_pages(APP_ID) {
        let page = browser.get(Some(&s.cookie), &page_path).await;
        assert_eq!(page.status, 200, "GET {page_path}");
        assert!(
            !page.body.contains(SECRET),
            "GET {page_path} shows the secret"
        );
    }
    let keys = browser.get(Some(&s.cookie), &path).await;
    assert!(keys.body.contains(KEY));

    let revealed = browser
        .post(
            Some(&s.cookie),
            &format!("{path}/reveal"),
            &with_csrf(&[], &s.csrf),
        )
        .await;
    assert_eq!(revealed.status, 200, "{}", revealed.body);
    assert_eq!(revealed.header(CACHE_CONTROL), "no-store");
    assert!(revealed
        .body
        .contains(&format!("data-testid=\"secret\">{SECRET}<")));

    // A rotation shows both pairs; the new secret is hidden again until revealed.
    let rotated = browser
        .post(
            Some(&s.cookie),
            &format!("{path}/rotate"),
            &with_csrf(&[("grace_hours", "0".into())], &s.csrf),
        )
        .await;
    rotated.assert_done("rotate");
    let after = app.node.store.get_app(APP_ID).await.unwrap();
    assert_ne!(after.key, KEY);
    let keys = browser.get(Some(&s.cookie), &path).await;
    assert!(keys.body.contains(&after.key) && keys.body.contains(KEY));
    assert!(!keys.body.contains(after.secret.expose()));
    assert!(!keys.body.contains(SECRET));
}

#[tokio::test]
async fn the_usage_page_draws_svg_and_shows_todays_message_count() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let s = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name": "usage-event", "channel": "usage", "data": "{}"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.node.usage.app(APP_ID).messages_today(), 1);

    let page = browser
        .get(Some(&s.cookie), &format!("/dashboard/apps/{APP_ID}/usage"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg"), "{}", page.body);
    assert!(
        page.body.contains("data-testid=\"messages-today\">1<"),
        "{}",
        page.body
    );
    let list = browser.get(Some(&s.cookie), "/dashboard/apps").await;
    assert!(
        list.body
            .contains(&format!("data-testid=\"messages-{APP_ID}\">1 ")),
        "{}",
        list.body
    );
}

/// The SSE frames in `text` of type `event`, their data parsed.
fn sse_frames(text: &str, event: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|frame| {
            frame.lines().any(|l| {
                l.strip_prefix("event:")
                    .is_some_and(|name| name.trim() == event)
            })
        })
        .filter_map(|frame| {
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

#[tokio::test]
async fn the_live_console_streams_a_debug_event_for_a_rest_publish() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let s = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let mut stream = browser
        .http
        .get(app.url(&format!("/dashboard/apps/{APP_ID}/live/events")))
        .header(COOKIE, &s.cookie)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status().as_u16(), 200);
    let content_type = stream
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );

    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name": "console-event", "channel": "console", "data": "hello console"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let publish = loop {
        let found = sse_frames(&text, "debug")
            .into_iter()
            .find(|e| e["kind"] == "publish");
        if let Some(event) = found {
            break event;
        }
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("a debug event arrives in time; got {text:?}"))
            .expect("the stream reads")
            .unwrap_or_else(|| panic!("the stream ended; got {text:?}"));
        text.push_str(&String::from_utf8_lossy(&chunk));
    };
    assert_eq!(publish["channel"], "console", "{publish}");
    let detail = publish["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("console-event"), "{publish}");
    assert!(
        publish["at_ms"].as_i64().is_some_and(|ms| ms > 0),
        "{publish}"
    );
}

#[tokio::test]
async fn the_operator_sets_a_tenants_app_cap_and_plans_on_the_tenants_page() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let tenant = store.create_tenant("Acme").await.unwrap();
    store
        .create_user(
            TENANT_ADMIN,
            TENANT_ADMIN_PASSWORD,
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();
    let op = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let path = format!("/dashboard/tenants/{}", tenant.id);
    let form: Form = vec![("max_apps", "1".into()), ("plans", "startup".into())];
    browser
        .post(Some(&op.cookie), &path, &with_csrf(&form, &op.csrf))
        .await
        .assert_done("update the tenant");
    let stored = store.get_tenant(&tenant.id).await.unwrap();
    assert_eq!(
        (stored.max_apps, stored.plans),
        (1, vec!["startup".to_owned()])
    );
    let page = browser.get(Some(&op.cookie), "/dashboard/tenants").await;
    assert!(page.body.contains(r#"value="startup""#), "{}", page.body);
    let bad: Form = vec![("max_apps", "many".into()), ("plans", "".into())];
    let refused = browser
        .post(Some(&op.cookie), &path, &with_csrf(&bad, &op.csrf))
        .await;
    assert!(
        refused.location().contains("error="),
        "{}",
        refused.location()
    );

    // The tenant admin is bound by it on create: sandbox is not allowed, then one app only.
    let s = browser.sign_in(TENANT_ADMIN, TENANT_ADMIN_PASSWORD).await;
    let create = |plan: &str| -> Form { vec![("name", "Acme app".into()), ("plan", plan.into())] };
    let sandbox = browser
        .post(
            Some(&s.cookie),
            "/dashboard/apps",
            &with_csrf(&create("sandbox"), &s.csrf),
        )
        .await;
    assert!(
        !sandbox.location().contains("getting-started"),
        "{}",
        sandbox.location()
    );
    let first = browser
        .post(
            Some(&s.cookie),
            "/dashboard/apps",
            &with_csrf(&create("startup"), &s.csrf),
        )
        .await;
    assert!(
        first.location().contains("getting-started"),
        "{}",
        first.location()
    );
    let second = browser
        .post(
            Some(&s.cookie),
            "/dashboard/apps",
            &with_csrf(&create("startup"), &s.csrf),
        )
        .await;
    assert!(
        !second.location().contains("getting-started"),
        "{}",
        second.location()
    );
    assert_eq!(store.list_apps(Some(&tenant.id)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_open_live_console_does_not_hold_up_shutdown() {
    let mut app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let s = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let mut stream = browser
        .http
        .get(app.url(&format!("/dashboard/apps/{APP_ID}/live/events")))
        .header(COOKIE, &s.cookie)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status().as_u16(), 200);
    drop(browser);
    let started = tokio::time::Instant::now();
    // The server's own drain of HTTP requests allows 10 s: an open tab must not use it up.
    app.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the console stream ended with the server");
}
