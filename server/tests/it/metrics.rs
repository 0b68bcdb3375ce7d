//! `/metrics` (issue 17): served on `HERALD_METRICS_BIND` only, the exported names are the
//! committed list, the series follow real traffic (connections by transport, a REST trigger by
//! route and status, a refused handshake by code, a quota refusal), per-app series only for
//! the top N apps, and the gauges come back to exactly zero after 1,000 sockets closed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use herald::tenants::{AppPatch, LimitsPatch, NewApp};

use crate::helpers::*;
use crate::xhr_lines::Lines;

/// One parsed scrape: every sample by name and labels, and the `# TYPE` names.
#[derive(Debug)]
struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    types: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                types.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end with }");
                    let labels = labels
                        .split(',')
                        .filter(|l| !l.is_empty())
                        .map(|label| {
                            let (k, v) = label.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            samples.push((name, labels, value));
        }
        Scrape { samples, types }
    }

    /// The value of the series `name` carrying every label of `labels` (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} is one series: {found:?}"
        );
        found.first().copied().unwrap_or(0.0)
    }

    /// The values of label `label` among `name`'s series.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect()
    }
}

/// `infra/grafana/metric-names.txt`: the exported names, one a line; ` cluster` marks the ones
/// only a cluster node exports.
fn exported_names() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/grafana/metric-names.txt");
    std::fs::read_to_string(path).expect("the committed list of metric names")
}

fn with_metrics(settings: &mut herald::config::Settings) {
    settings.metrics_bind = Some("127.0.0.1:0".into());
}

async fn scrape(app: &TestApp) -> Scrape {
    let address = app.metrics.expect("the metrics listener is bound");
    let response = app
        .http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("the scrape is answered");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(&response.text().await.expect("body"))
}

/// Scrapes until `check` holds, for at most 20 s (1,000 closes on a shared machine).
async fn scrape_until(app: &TestApp, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = scrape(app).await;
        if check(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {:?}",
            scrape
                .samples
                .iter()
                .filter(|(n, _, _)| !n.contains("_bucket"))
                .collect::<Vec<_>>()
        );
        pause(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_only_with_the_committed_names() {
    let app = spawn_app_with(with_metrics).await;
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404, "never on the public listener");
    // The REST series appear with the first request (the others are there from the start).
    let (status, _) = app.get(&format!("/apps/{APP_ID}/channels"), &[]).await;
    assert_eq!(status, 200);
    let scrape = scrape(&app).await;
    let committed: BTreeSet<String> = exported_names()
        .lines()
        .filter(|line| !line.ends_with(" cluster"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        scrape.types, committed,
        "infra/grafana/metric-names.txt is what is exported"
    );
    assert_eq!(scrape.value("herald_build_info", &[]), 1.0);
    assert_eq!(
        scrape.value("herald_node_info", &[("node_id", "standalone")]),
        1.0
    );
    // Without HERALD_METRICS_BIND there is no metrics listener at all.
    let plain = spawn_app().await;
    assert!(plain.metrics.is_none());
}

#[tokio::test]
async fn series_follow_connections_triggers_refusals_and_the_quota() {
    let app = spawn_app_with(with_metrics).await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    a.subscribe("news").await;
    b.subscribe("news").await;
    let url = app.url(&format!("/pusher/app/{KEY}/123/metrics1"));
    let q = "?protocol=7&client=js&version=8.4.0";
    let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{q}"), None).await;
    assert_eq!(stream.line().await, "o");
    let before = scrape(&app).await;
    assert_eq!(
        before.value("herald_connections", &[("transport", "ws")]),
        2.0
    );
    assert_eq!(
        before.value("herald_connections", &[("transport", "xhr_streaming")]),
        1.0
    );
    assert_eq!(
        before.value("herald_connections", &[("transport", "xhr_polling")]),
        0.0
    );
    assert_eq!(before.value("herald_subscriptions", &[]), 2.0);
    assert_eq!(before.value("herald_channels", &[]), 1.0);
    assert_eq!(
        before.value("herald_app_connections", &[("app_id", APP_ID)]),
        3.0
    );

    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name":"e","channel":"news","data":"hello"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    a.expect_event("e").await;
    b.expect_event("e").await;
    let after = scrape(&app).await;
    let route = ("route", "/apps/{app_id}/events");
    assert_eq!(
        after.value("herald_rest_requests_total", &[route, ("status", "200")]),
        1.0
    );
    assert_eq!(
        after.value("herald_rest_request_duration_seconds_count", &[route]),
        1.0
    );
    let messages_in = after.value("herald_messages_in_total", &[]);
    let messages_out = after.value("herald_messages_out_total", &[]);
    assert_eq!(
        messages_in - before.value("herald_messages_in_total", &[]),
        1.0
    );
    assert_eq!(
        messages_out - before.value("herald_messages_out_total", &[]),
        2.0
    );
    assert_eq!(
        after.value("herald_app_messages_in_total", &[("app_id", APP_ID)]),
        messages_in
    );
    assert!(
        after.value("herald_bytes_out_total", &[]) > before.value("herald_bytes_out_total", &[]),
        "the event's frames were written"
    );

    // A handshake with an unknown key: refused with 4001, counted by code.
    let mut refused = app
        .connect_raw("/app/no-such-key?protocol=7&client=js&version=8.6.0")
        .await;
    let (code, _) = refused.expect_error().await;
    assert_eq!(code, 4001);
    let scraped = scrape(&app).await;
    assert_eq!(
        scraped.value("herald_handshake_refusals_total", &[("code", "4001")]),
        1.0
    );

    // The daily quota used up: the next trigger is refused (403) and counted as such.
    app.update_app(AppPatch {
        limits: LimitsPatch {
            max_daily_messages: Some(1),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let (status, _) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name":"e","channel":"news","data":"again"}),
        )
        .await;
    assert_eq!(status, 403);
    let scraped = scrape(&app).await;
    assert_eq!(
        scraped.value("herald_refusals_total", &[("kind", "daily_quota")]),
        1.0
    );
    assert_eq!(
        scraped.value("herald_rest_requests_total", &[route, ("status", "403")]),
        1.0
    );
    drop(stream);
}

#[tokio::test]
async fn per_app_series_only_for_the_top_n_apps() {
    const N: usize = 2;
    let app = spawn_app_with(|settings| {
        with_metrics(settings);
        settings.metrics_top_apps = N;
    })
    .await;
    // N + 3 apps; app i holds i + 1 connections, so the two last are the busiest.
    let mut keys = Vec::new();
    for i in 0..N + 3 {
        let created = app
            .node
            .store
            .create_app(NewApp {
                name: format!("metrics app {i}"),
                ..NewApp::default()
            })
            .await
            .expect("app created");
        keys.push((created.id.clone(), created.key.clone()));
    }
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let mut clients = Vec::new();
    for (i, (_, key)) in keys.iter().enumerate() {
        for _ in 0..=i {
            clients.push(app.connect_key(key).await);
        }
    }
    let scrape = scrape(&app).await;
    let expected: BTreeSet<String> = keys[keys.len() - N..]
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    for name in [
        "herald_app_connections",
        "herald_app_channels",
        "herald_app_subscriptions",
        "herald_app_messages_today",
        "herald_app_messages_in_total",
        "herald_app_messages_out_total",
    ] {
        assert_eq!(scrape.label_values(name, "app_id"), expected, "{name}");
    }
    // The node-wide series still count every app.
    let total = (1..=N + 3).sum::<usize>() as f64;
    assert_eq!(
        scrape.value("herald_connections", &[("transport", "ws")]),
        total
    );
}

#[tokio::test]
async fn a_thousand_sockets_connected_and_closed_leave_every_gauge_at_zero() {
    const SOCKETS: usize = 1_000;
    const CHANNELS: usize = 10;
    let app = spawn_app_with(|settings| {
        with_metrics(settings);
        // Fallback sessions that nobody polls end quickly.
        settings.fallback.heartbeat = Duration::from_millis(300);
        settings.fallback.poll_wait = Duration::from_millis(300);
        settings.fallback.expiry = Duration::from_millis(400);
    })
    .await;
    let mut clients = Vec::with_capacity(SOCKETS);
    for batch in 0..SOCKETS / 100 {
        let opened = join_all((0..100).map(|i| {
            let app = &app;
            async move {
                let mut client = app.connect().await;
                client
                    .subscribe(&format!("drift-{}", (batch * 100 + i) % CHANNELS))
                    .await;
                client
            }
        }))
        .await;
        clients.extend(opened);
    }
    // A few fallback sessions too, streaming and subscribed.
    let q = "?protocol=7&client=js&version=8.4.0";
    let mut streams = Vec::new();
    for i in 0..3 {
        let url = app.url(&format!("/pusher/app/{KEY}/123/drift{i:03}"));
        let mut stream = Lines::open(&app.http, format!("{url}/xhr_streaming{q}"), None).await;
        assert_eq!(stream.line().await, "o");
        let body = serde_json::to_string(&[
            json!({"event":"pusher:subscribe","data":{"channel":"drift-0"}}).to_string(),
        ])
        .unwrap();
        let sent = app
            .http
            .post(format!("{url}/xhr_send"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 204);
        stream
            .expect_event("pusher_internal:subscription_succeeded")
            .await;
        streams.push(stream);
    }
    let full = scrape(&app).await;
    assert_eq!(
        full.value("herald_connections", &[("transport", "ws")]),
        SOCKETS as f64
    );
    assert_eq!(
        full.value("herald_connections", &[("transport", "xhr_streaming")]),
        3.0
    );
    assert_eq!(
        full.value("herald_subscriptions", &[]),
        (SOCKETS + 3) as f64
    );
    assert_eq!(full.value("herald_channels", &[]), CHANNELS as f64);

    // Half close cleanly, half just drop their TCP connection; the streams go away too.
    let mut dropped = Vec::new();
    let closing = join_all(clients.into_iter().enumerate().filter_map(|(i, client)| {
        if i % 2 == 0 {
            Some(client.close())
        } else {
            dropped.push(client);
            None
        }
    }));
    closing.await;
    drop(dropped);
    drop(streams);
    let gauges = [
        ("herald_connections", ("transport", "ws")),
        ("herald_connections", ("transport", "xhr_streaming")),
        ("herald_connections", ("transport", "xhr_polling")),
        ("herald_app_connections", ("app_id", APP_ID)),
        ("herald_app_channels", ("app_id", APP_ID)),
        ("herald_app_subscriptions", ("app_id", APP_ID)),
    ];
    let done = scrape_until(&app, "every gauge is back at zero", |s| {
        gauges
            .iter()
            .all(|(name, label)| s.value(name, &[*label]) == 0.0)
            && s.value("herald_subscriptions", &[]) == 0.0
            && s.value("herald_channels", &[]) == 0.0
    })
    .await;
    assert_eq!(app.node.hub.connection_count(), 0);
    assert_eq!(
        done.value("herald_connections", &[("transport", "sse")]),
        0.0
    );
}

#[tokio::test]
async fn in_a_cluster_each_node_names_itself_and_times_redis_round_trips() {
    use crate::cluster_helpers::{eventually, start_node_with, Database, Redis};
    let redis = Redis::start().await;
    let database = Database::create().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bind = format!("127.0.0.1:{port}");
    let node = start_node_with(
        "metrics",
        &redis,
        &database,
        &[("HERALD_METRICS_BIND", &bind)],
    )
    .await;
    let http = reqwest::Client::new();
    let public = http
        .get(format!("{}/metrics", node.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404, "never on the public listener");
    let url = format!("http://{bind}/metrics");
    let read = || async {
        let text = http.get(&url).send().await.unwrap().text().await.unwrap();
        Scrape::parse(&text)
    };
    eventually(
        "the watchdog's PINGs are timed",
        Duration::from_secs(10),
        || async {
            read()
                .await
                .value("herald_redis_roundtrip_seconds_count", &[])
                >= 1.0
        },
    )
    .await;
    let scraped = read().await;
    assert_eq!(
        scraped.value(
            "herald_node_info",
            &[
                ("node_id", node.id.as_str()),
                ("cluster", redis.cluster.as_str())
            ]
        ),
        1.0
    );
    let committed: BTreeSet<String> = exported_names()
        .lines()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .filter(|name| !name.starts_with("herald_rest_"))
        .collect();
    assert_eq!(
        scraped.types, committed,
        "the cluster series are exported too"
    );
}

#[tokio::test]
async fn webhook_requests_are_counted_by_outcome_and_timed() {
    use crate::webhooks::Receiver;
    use std::sync::atomic::Ordering;
    let app = spawn_app_with(|settings| {
        with_metrics(settings);
        settings.webhooks.backoff_base = Duration::from_millis(100);
        settings.webhooks.backoff_cap = Duration::from_millis(300);
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.status.store(503, Ordering::SeqCst);
    app.node
        .store
        .create_webhook(herald::tenants::NewWebhook {
            app_id: APP_ID.into(),
            url: receiver.url.clone(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: Vec::new(),
        })
        .await
        .expect("webhook is added");
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let mut client = app.connect().await;
    client.subscribe("hooked").await;
    let failed = ("outcome", "failed");
    let delivered = ("outcome", "delivered");
    scrape_until(&app, "a failed request is counted", |s| {
        s.value("herald_webhook_requests_total", &[failed]) >= 1.0
    })
    .await;
    receiver.status.store(200, Ordering::SeqCst);
    let done = scrape_until(&app, "the retry is counted as delivered", |s| {
        s.value("herald_webhook_requests_total", &[delivered]) == 1.0
    })
    .await;
    let attempts = done.value("herald_webhook_requests_total", &[failed]) + 1.0;
    assert_eq!(
        done.value("herald_webhook_request_duration_seconds_count", &[]),
        attempts,
        "every attempt is timed"
    );
    assert_eq!(receiver.requests().len() as f64, attempts);
}

#[tokio::test]
async fn a_top_apps_count_out_of_range_or_a_taken_metrics_address_stops_the_start_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .env("HERALD_DATA_DIR", dir.path())
        .env("HERALD_BIND", "127.0.0.1:0")
        .env("HERALD_METRICS_TOP_APPS", "5000")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("HERALD_METRICS_TOP_APPS"), "{text}");
    // The metrics address already taken: the node does not start without its metrics.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.metrics_bind = Some(taken.local_addr().unwrap().to_string());
    let error = herald::startup::Application::build(settings)
        .await
        .expect_err("the metrics address is taken");
    assert!(error.to_string().contains("HERALD_METRICS_BIND"), "{error}");
}

#[tokio::test]
async fn sse_subscribers_count_by_transport_their_refusals_are_counted_and_the_gauge_drains() {
    use crate::mercure_helpers::{subscribe, subscribe_raw, token07};
    let app = spawn_app_with(|settings| {
        with_metrics(settings);
        settings.max_connections = Some(2);
        settings.max_app_share = 100;
    })
    .await;
    let first = subscribe(&app, "topic=a").await;
    let second = subscribe(&app, "topic=b").await;
    let open = scrape(&app).await;
    assert_eq!(
        open.value("herald_connections", &[("transport", "sse")]),
        2.0
    );

    // The node is full: 503, counted as a node_capacity refusal.
    let token = token07(&["*"], &[]);
    let refused = subscribe_raw(&app, "topic=a", Some(&token), &[]).await;
    assert_eq!(refused.status().as_u16(), 503);
    // Over the app's quota: 429, counted as a connection_quota refusal.
    app.update_app(AppPatch {
        limits: LimitsPatch {
            max_connections: Some(1),
            ..LimitsPatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    drop(first);
    scrape_until(&app, "one SSE subscriber left", |s| {
        s.value("herald_connections", &[("transport", "sse")]) == 1.0
    })
    .await;
    let refused = subscribe_raw(&app, "topic=a", Some(&token), &[]).await;
    assert_eq!(refused.status().as_u16(), 429);
    let after = scrape(&app).await;
    assert_eq!(
        after.value("herald_refusals_total", &[("kind", "node_capacity")]),
        1.0
    );
    assert_eq!(
        after.value("herald_refusals_total", &[("kind", "connection_quota")]),
        1.0
    );

    drop(second);
    scrape_until(&app, "the SSE gauge is back at zero", |s| {
        s.value("herald_connections", &[("transport", "sse")]) == 0.0
    })
    .await;
}
