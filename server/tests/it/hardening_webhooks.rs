//! Issue 12, webhooks: a tenant's webhook is no request-forgery tool (private destinations are
//! refused after DNS resolution, at registration and at every request; no userinfo, no identity
//! or hop-by-hop headers; at most 10 endpoints; tenants see a coarse outcome), failed rows are
//! pruned after the retention, cache misses cannot grow the outbox, and the events held for the
//! vacate delay survive a kill -9.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use herald::tenants::{Attempt, DeliveryStatus, NewDelivery, NewWebhook, Secret};

use crate::helpers::*;
use crate::webhooks::Receiver;

const LOOPBACK: &str = "127.0.0.0/8,::1/128";
const OPERATOR_PASSWORD: &str = "operator password 1";

/// A node that allows no private destination, as in production.
async fn strict_app() -> TestApp {
    spawn_app_with(|s| {
        s.webhooks.allow_private = Vec::new();
        s.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
    })
    .await
}

/// Registers an endpoint straight in the store (as an older row, or a name that resolved to a
/// public address at registration would be) and loads it.
async fn stored_endpoint(app: &TestApp, url: &str, events: &[&str]) -> String {
    let hook = app
        .node
        .store
        .create_webhook(NewWebhook {
            app_id: APP_ID.into(),
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            channel_prefix: None,
            headers: Vec::new(),
        })
        .await
        .expect("webhook is stored");
    herald::startup::refresh_apps(&app.node)
        .await
        .expect("cache refreshes");
    hook.id
}

/// Signs the operator in to the dashboard; returns the `Cookie` header and the session's CSRF.
async fn dashboard_session(app: &TestApp, http: &reqwest::Client) -> (String, String) {
    let login = http.get(app.url("/dashboard/login")).send().await.unwrap();
    let token = login
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("herald_login_csrf="))
        .and_then(|v| v.split(';').next())
        .expect("the sign-in page sets its CSRF cookie")
        .to_owned();
    let signed_in = http
        .post(app.url("/dashboard/login"))
        .header(COOKIE, format!("herald_login_csrf={token}"))
        .form(&[
            ("csrf", token.as_str()),
            ("email", "admin@localhost"),
            ("password", OPERATOR_PASSWORD),
            ("next", "/dashboard/apps"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303, "the operator signs in");
    let session = signed_in
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("herald_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let cookie = format!("herald_session={session}");
    let page = http
        .get(app.url("/dashboard/account"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a csrf field") + marker.len();
    let csrf = page[start..start + page[start..].find('"').unwrap()].to_owned();
    (cookie, csrf)
}

#[tokio::test]
async fn webhook_requests_to_loopback_link_local_and_names_resolving_to_them_are_refused() {
    let app = strict_app().await;
    let receiver = Receiver::start().await;
    let port = receiver
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/hook")
        .to_owned();
    // A listener on IPv6 loopback too, counting connections.
    let v6 = TcpListener::bind("[::1]:0").await.ok();
    let v6_port = v6.as_ref().map(|l| l.local_addr().unwrap().port());
    let v6_connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(listener) = v6 {
        let count = v6_connections.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let mut targets = vec![
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://2130706433:{port}/decimal"),
        format!("http://0x7f.0.0.1:{port}/hex"),
        format!("http://localhost:{port}/name"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ];
    if let Some(v6_port) = v6_port {
        targets.push(format!("http://[::1]:{v6_port}/v6"));
        targets.push(format!("http://[::ffff:127.0.0.1]:{port}/mapped"));
    }
    for target in &targets {
        stored_endpoint(&app, target, &["channel_occupied"]).await;
    }
    let mut client = app.connect().await;
    client.subscribe("attack").await;

    // Every endpoint gets its attempt, and every attempt fails without a byte reaching loopback.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = app
            .node
            .store
            .deliveries(APP_ID, None, 50)
            .await
            .expect("deliveries");
        if rows.len() == targets.len() && rows.iter().all(|d| d.attempts >= 1) {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every endpoint is attempted: {rows:?}"
        );
        pause(Duration::from_millis(50)).await;
    };
    assert!(
        receiver.requests().is_empty(),
        "no request reached the loopback receiver: {:?}",
        receiver.requests()
    );
    assert_eq!(
        v6_connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection reached ::1"
    );
    // The stored outcome is the same coarse word for all: no port-scan oracle.
    for row in &rows {
        assert_eq!(row.status, DeliveryStatus::Pending, "{row:?}");
        assert_eq!(row.last_error, "failed", "{row:?}");
        assert_eq!(row.last_status, 0, "{row:?}");
    }

    // The dashboard shows the coarse outcome only, and refuses to register such a target.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (cookie, csrf) = dashboard_session(&app, &http).await;
    let page = http
        .get(app.url(&format!("/dashboard/apps/{APP_ID}/webhooks")))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<td>failed</td>"), "{page}");
    for detail in ["connection", "refused", "timed out", "request failed"] {
        assert!(!page.contains(detail), "the page says {detail:?}");
    }
    for target in [
        format!("http://127.0.0.1:{port}/again"),
        "http://2130706433/".to_owned(),
        format!("http://localhost:{port}/"),
        "http://[::1]/".to_owned(),
    ] {
        let added = http
            .post(app.url(&format!("/dashboard/apps/{APP_ID}/webhooks")))
            .header(COOKIE, &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("url", target.as_str()),
                ("events", "channel_occupied"),
            ])
            .send()
            .await
            .unwrap();
        let location = added.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(
            location.contains("error="),
            "{target} is refused: {location}"
        );
    }
    let endpoints = app.node.store.list_webhooks(Some(APP_ID)).await.unwrap();
    assert_eq!(endpoints.len(), targets.len(), "nothing was added");
    client.close().await;
}

/// Runs the CLI on `dir` with `env`.
async fn herald(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("HERALD_DATA_DIR", dir)
        .envs(env.iter().copied());
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the CLI answers in time")
        .expect("the CLI runs")
}

async fn add(dir: &Path, env: &[(&str, &str)], url: &str, header: Option<&str>) -> Output {
    let mut args = vec![
        "webhooks",
        "add",
        "--app",
        APP_ID,
        "--url",
        url,
        "--events",
        "channel_occupied",
    ];
    if let Some(header) = header {
        args.extend(["--header", header]);
    }
    herald(dir, env, &args).await
}

#[tokio::test]
async fn registering_private_targets_userinfo_identity_headers_or_an_eleventh_endpoint_is_refused()
{
    let mut app = spawn_app().await;
    app.stop().await;
    let dir = app.data_dir.path().to_path_buf();
    for url in [
        "http://127.0.0.1:6001/apps/1/events",
        "http://[::1]:5432/",
        "http://2130706433:6379/",
        "http://0177.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.5/",
        "http://localhost:6001/",
        "https://user:pass@hooks.example.invalid/",
        "gopher://hooks.example.invalid/",
    ] {
        let out = add(&dir, &[], url, None).await;
        assert!(!out.status.success(), "{url} is refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.is_empty(), "{url}: a clear error");
    }
    for header in [
        "Host: 127.0.0.1",
        "Cookie: herald_session=x",
        "Authorization: Bearer x",
        "Transfer-Encoding: chunked",
        "Proxy-Authorization: x",
        "X-Forwarded-For: 10.0.0.1",
        "X-Pusher-Signature: forged",
    ] {
        let out = add(&dir, &[], "https://hooks.example.invalid/", Some(header)).await;
        assert!(!out.status.success(), "header {header} is refused");
    }
    // A custom header is fine; the operator may allow loopback.
    let ok = add(
        &dir,
        &[],
        "https://hooks.example.invalid/",
        Some("X-Webhook-Token: t0ken"),
    )
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let allowed = add(
        &dir,
        &[("HERALD_WEBHOOK_ALLOW_PRIVATE", LOOPBACK)],
        "http://127.0.0.1:9/hook",
        None,
    )
    .await;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // Ten endpoints at most.
    for n in 2..10 {
        let out = add(&dir, &[], &format!("https://h{n}.example.invalid/"), None).await;
        assert!(out.status.success(), "endpoint {n}");
    }
    let eleventh = add(&dir, &[], "https://h11.example.invalid/", None).await;
    assert!(
        !eleventh.status.success(),
        "the eleventh endpoint is refused"
    );
    assert!(String::from_utf8_lossy(&eleventh.stderr).contains("10 webhooks"));
}

#[tokio::test]
async fn failed_deliveries_are_pruned_after_the_retention_and_recent_ones_kept() {
    let mut app = spawn_app().await;
    let hook = stored_endpoint(&app, "http://127.0.0.1:9/dead", &["channel_occupied"]).await;
    let now = now() * 1000;
    let day = 24 * 3600 * 1000;
    let store = &app.node.store;
    let mut ids = Vec::new();
    for (n, age) in [(1, 31 * day), (2, 29 * day), (3, 40 * day)] {
        let id = now * 1000 + n;
        store
            .insert_deliveries(&[NewDelivery {
                id,
                webhook_id: hook.clone(),
                app_id: APP_ID.into(),
                events: "[]".into(),
                channels: Vec::new(),
                created_at: now - age - 300_000,
            }])
            .await
            .unwrap();
        store
            .record_attempt(
                id,
                &Attempt {
                    status: DeliveryStatus::Failed,
                    attempts: 9,
                    at: now - age,
                    next_attempt_at: 0,
                    http_status: 0,
                    error: "failed".into(),
                    latency_ms: 1,
                },
            )
            .await
            .unwrap();
        ids.push(id);
    }
    // The worker prunes when it starts (and every 10 minutes).
    app.stop().await;
    let dir = std::mem::replace(&mut app.data_dir, tempfile::tempdir().unwrap());
    let settings = test_settings(dir.path().to_path_buf());
    let again = spawn_in(dir, settings).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let failed = again
            .node
            .store
            .deliveries(APP_ID, Some(DeliveryStatus::Failed), 50)
            .await
            .unwrap();
        let left: Vec<i64> = failed.iter().map(|d| d.id).collect();
        if left == vec![ids[1]] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only the 29-day-old row is left: {left:?}"
        );
        pause(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn anonymous_cache_misses_on_fresh_channels_add_a_bounded_number_of_outbox_rows() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    stored_endpoint(&app, &receiver.url, &["cache_miss"]).await;
    let mut client = app.connect().await;
    let started = tokio::time::Instant::now();
    for n in 0..90 {
        client.subscribe(&format!("cache-fresh-{n}")).await;
        client.expect_event("pusher:cache_miss").await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the writer write what it admitted.
    pause(Duration::from_millis(300)).await;
    let rows = app.node.store.deliveries(APP_ID, None, 500).await.unwrap();
    let reported: usize = rows
        .iter()
        .map(|d| serde_json::from_str::<Vec<Value>>(&d.events).unwrap().len())
        .sum();
    // A burst of 10, then 10 a second.
    let bound = 10 + (elapsed * 10.0).ceil() as usize + 1;
    assert!(reported >= 10, "misses are still reported: {reported}");
    assert!(
        reported <= bound,
        "{reported} cache_miss events reported for 90 misses in {elapsed:.2} s (bound {bound})"
    );
    // The hub remembers a reported miss only while its channel is occupied, so fresh channel
    // names cannot grow that memory either.
    assert_eq!(app.node.hub.app(APP_ID).memory().reported_misses, 90);
    client.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let memory = app.node.hub.app(APP_ID).memory();
        if memory.channels == 0 {
            assert_eq!(memory.reported_misses, 0, "{memory:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{memory:?}");
        pause(Duration::from_millis(20)).await;
    }
}

/// Starts the binary in `dir`; returns it with its address.
async fn start_binary(dir: &Path) -> (Child, String) {
    let mut command = herald_binary(dir);
    command
        .env("HERALD_DEFAULT_APP_ID", APP_ID)
        .env("HERALD_DEFAULT_APP_KEY", KEY)
        .env("HERALD_DEFAULT_APP_SECRET", SECRET)
        .env("HERALD_WEBHOOK_ALLOW_PRIVATE", LOOPBACK)
        .env("RUST_LOG", "info");
    let (child, address) = start_listening(command).await;
    (child, address)
}

async fn connect_to(address: &str) -> Client {
    let url = format!("ws://{address}/app/{KEY}?protocol=7&client=js&version=8.6.0");
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut client = Client {
        socket,
        socket_id: String::new(),
    };
    let established = client.expect_event("pusher:connection_established").await;
    let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
    client.socket_id = data["socket_id"].as_str().unwrap().to_owned();
    client
}

#[tokio::test]
async fn member_removed_and_channel_vacated_held_for_the_delay_survive_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let (mut server, address) = start_binary(dir.path()).await;
    let added = herald(
        dir.path(),
        &[("HERALD_WEBHOOK_ALLOW_PRIVATE", LOOPBACK)],
        &[
            "webhooks",
            "add",
            "--app",
            APP_ID,
            "--url",
            &receiver.url,
            "--events",
            "channel_occupied,member_added,member_removed,channel_vacated",
        ],
    )
    .await;
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // The running server loads the endpoint within 2 s: wait until it reports an occupied room.
    let mut probe = connect_to(&address).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        probe.subscribe(&format!("probe-{n}")).await;
        if receiver
            .accepted_events()
            .iter()
            .any(|e| e["name"] == "channel_occupied")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoint is loaded"
        );
        pause(Duration::from_millis(200)).await;
    }
    let mut member = connect_to(&address).await;
    member
        .subscribe_presence("presence-room", "u1", json!({"name": "Ann"}))
        .await;
    receiver
        .wait_for("member_added", |e| {
            e.iter().any(|e| e["name"] == "member_added")
        })
        .await;
    member.close().await;
    // The writer's window is 50 ms; the delay is 3 s: kill -9 well inside it.
    pause(Duration::from_millis(600)).await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let before = receiver.accepted_events();
    assert!(
        !before
            .iter()
            .any(|e| e["name"] == "member_removed" || e["name"] == "channel_vacated"),
        "nothing held was sent before the kill: {before:?}"
    );
    drop(probe);

    let (_again, _) = start_binary(dir.path()).await;
    let events = receiver
        .wait_for(
            "member_removed and channel_vacated after the restart",
            |e| {
                e.iter()
                    .any(|e| e["name"] == "member_removed" && e["user_id"] == "u1")
                    && e.iter()
                        .any(|e| e["name"] == "channel_vacated" && e["channel"] == "presence-room")
            },
        )
        .await;
    let removed = events
        .iter()
        .filter(|e| e["name"] == "member_removed")
        .count();
    assert_eq!(removed, 1, "delivered once: {events:?}");
}

#[tokio::test]
async fn a_socket_leaving_30_channels_sends_their_vacates_in_one_or_two_counted_requests() {
    let app = spawn_app_with(|s| s.webhooks.vacate_delay = Duration::from_millis(300)).await;
    let receiver = Receiver::start().await;
    stored_endpoint(&app, &receiver.url, &["channel_vacated"]).await;
    let mut client = app.connect().await;
    for n in 0..30 {
        client.subscribe(&format!("room-{n}")).await;
    }
    client.close().await;
    let events = receiver
        .wait_for("30 vacates", |e| {
            e.iter().filter(|e| e["name"] == "channel_vacated").count() >= 30
        })
        .await;
    // Nothing else arrives after the delay.
    pause(Duration::from_millis(500)).await;
    assert_eq!(receiver.accepted_events().len(), 30, "{events:?}");
    let requests = receiver.requests().len();
    assert!(
        (1..=2).contains(&requests),
        "30 vacates came in {requests} requests"
    );
    let usage = app.node.usage.app(APP_ID);
    wait_until("the requests are counted", || {
        usage.messages_today() == requests as u64
    })
    .await;
}

#[tokio::test]
async fn subscribe_unsubscribe_churn_costs_rows_per_window_and_other_apps_webhooks_stay_prompt() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    stored_endpoint(
        &app,
        &receiver.url,
        &["channel_occupied", "channel_vacated"],
    )
    .await;
    let other = app
        .node
        .store
        .create_app(herald::tenants::NewApp {
            name: "Other".into(),
            ..herald::tenants::NewApp::default()
        })
        .await
        .unwrap();
    let other_receiver = Receiver::start().await;
    app.node
        .store
        .create_webhook(NewWebhook {
            app_id: other.id.clone(),
            url: other_receiver.url.clone(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: Vec::new(),
        })
        .await
        .unwrap();
    herald::startup::refresh_apps(&app.node).await.unwrap();

    // 5000 subscribe/unsubscribe pairs, cycling over 500 channels, sent as fast as the socket
    // takes them (no subscribe rate limit): every vacate is held, and every later subscribe is
    // a comeback. (Churning one channel makes at most one comeback per window whatever the
    // pipeline; many channels make hundreds, which used to cost one commit each.)
    app.update_app(herald::tenants::AppPatch {
        limits: herald::tenants::LimitsPatch {
            max_subscribes_per_second: Some(0),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut churner = app.connect().await;
    let started = tokio::time::Instant::now();
    for n in 0..5000 {
        let channel = format!("churn-{}", n % 500);
        churner
            .send_json(json!({"event":"pusher:subscribe","data":{"channel":channel}}))
            .await;
        churner
            .send_json(json!({"event":"pusher:unsubscribe","data":{"channel":channel}}))
            .await;
    }
    let sent = started.elapsed();
    // Another app's event while the writer handles the churn.
    let mut bystander = app.connect_key(&other.key).await;
    let asked = tokio::time::Instant::now();
    bystander.subscribe("elsewhere").await;
    let deadline = asked + Duration::from_secs(2);
    while !other_receiver
        .accepted_events()
        .iter()
        .any(|e| e["name"] == "channel_occupied" && e["channel"] == "elsewhere")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other app's channel_occupied came late"
        );
        pause(Duration::from_millis(20)).await;
    }
    receiver
        .wait_for("every churned channel vacated", |e| {
            (0..500).all(|n| {
                e.iter()
                    .any(|e| e["name"] == "channel_vacated" && e["channel"] == format!("churn-{n}"))
            })
        })
        .await;
    // The rows kept for the churned channels (emptied held rows are deleted) and the requests
    // they made: a few per batch window (held, batched), not one per held event.
    let rows = app.node.store.deliveries(APP_ID, None, 1000).await.unwrap();
    let churned = rows
        .iter()
        .filter(|d| d.channels.iter().any(|c| c.starts_with("churn-")))
        .count();
    // Windows the churn spanned, plus the first and last rounds' 500 events split at 100 a row.
    let windows = (sent.as_millis() / 50) as usize + 2;
    let bound = 2 * windows + 10;
    assert!(
        churned <= bound,
        "{churned} outbox rows for 10000 churn events sent in {sent:?}"
    );
    assert!(
        receiver.requests().len() <= bound,
        "{} requests for the churned channels",
        receiver.requests().len()
    );
    // Comebacks within the delay sent nothing: each channel was occupied once, vacated once.
    pause(Duration::from_millis(300)).await;
    let events = receiver.accepted_events();
    for n in 0..500 {
        let channel = format!("churn-{n}");
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["channel"] == channel.as_str())
            .map(|e| e["name"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            names,
            vec!["channel_occupied", "channel_vacated"],
            "{channel}: {events:?}"
        );
    }
}
