//! Webhooks end to end: a local receiver (raw HTTP/1.1, so header casing is visible) records
//! every request; the server's pipeline batches, signs, delays, retries and persists them.

use herald::locks::MutexExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use herald::tenants::{DeliveryStatus, NewWebhook};

use crate::helpers::*;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header lines exactly as sent (name with its casing, value).
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }

    pub fn events(&self) -> Vec<Value> {
        self.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A webhook receiver answering `status` (changeable) to every request.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub status: Arc<AtomicU16>,
    pub log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            status: Arc::new(AtomicU16::new(200)),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        let shared = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut reader = BufReader::new(read);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = Vec::new();
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                headers.push((name.to_owned(), value.trim().to_owned()));
                            }
                        }
                        let length: usize = headers
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let status = shared.status.load(Ordering::SeqCst);
                        shared.log.lock_or_recover().push(Received {
                            headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            answered: status,
                        });
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
                        );
                        if write.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        receiver
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock_or_recover().clone()
    }

    /// The events of the requests answered 2xx, in arrival order.
    pub fn accepted_events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .flat_map(|r| r.events())
            .collect()
    }

    /// Whether an accepted event is about a `probe-…` channel.
    pub fn saw_probe(&self) -> bool {
        self.accepted_events().iter().any(|e| {
            e["channel"]
                .as_str()
                .is_some_and(|c| c.starts_with("probe-"))
        })
    }

    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let events = self.accepted_events();
            if check(&events) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; got {events:?}"
            );
            pause(Duration::from_millis(20)).await;
        }
    }
}

async fn add_webhook(app: &TestApp, url: &str, events: &[&str], prefix: Option<&str>) -> String {
    let hook = app
        .node
        .store
        .create_webhook(NewWebhook {
            app_id: APP_ID.into(),
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            channel_prefix: prefix.map(str::to_owned),
            headers: vec!["X-Extra: yes".into()],
        })
        .await
        .expect("webhook is added");
    herald::startup::refresh_apps(&app.node)
        .await
        .expect("cache refreshes");
    hook.id
}

const ALL: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["name"].as_str().unwrap_or("?"),
                e["channel"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

async fn fast_app() -> TestApp {
    spawn_app_with(|s| {
        s.webhooks.vacate_delay = Duration::from_millis(300);
        s.webhooks.backoff_base = Duration::from_millis(100);
        s.webhooks.backoff_cap = Duration::from_millis(500);
    })
    .await
}

#[tokio::test]
async fn requests_are_signed_and_shaped_exactly_as_pusher_sends_them() {
    let app = fast_app().await;
    let receiver = Receiver::start().await;
    add_webhook(&app, &receiver.url, &["channel_occupied"], None).await;
    let mut client = app.connect().await;
    client.subscribe("hooked").await;
    receiver
        .wait_for("channel_occupied", |e| !e.is_empty())
        .await;
    let request = receiver.requests().remove(0);
    let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"X-Pusher-Key"), "header casing: {names:?}");
    assert!(
        names.contains(&"X-Pusher-Signature"),
        "header casing: {names:?}"
    );
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert_eq!(request.header("X-Pusher-Key"), Some(KEY));
    assert_eq!(request.header("X-Extra"), Some("yes"));
    assert_eq!(
        request.header("X-Pusher-Signature"),
        Some(hmac_hex(SECRET, &request.body).as_str())
    );
    let body = request.json();
    let time_ms = body["time_ms"].as_i64().expect("time_ms is a number");
    assert!((time_ms - now() * 1000).abs() < 10_000, "time_ms {time_ms}");
    assert_eq!(
        body["events"],
        json!([{"name":"channel_occupied","channel":"hooked"}])
    );
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["events", "time_ms"]);
}

#[tokio::test]
async fn all_seven_event_types_come_from_client_activity() {
    let app = fast_app().await;
    let receiver = Receiver::start().await;
    add_webhook(&app, &receiver.url, &ALL, None).await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    a.subscribe_presence("presence-room", "ann", json!({}))
        .await;
    b.subscribe_presence("presence-room", "bob", json!({}))
        .await;
    a.expect_event("pusher_internal:member_added").await;
    b.send_json(json!({"event":"client-wave","channel":"presence-room","data":{"hi":1}}))
        .await;
    a.expect_event("client-wave").await;
    // Two clients hit the same empty cache: one cache_miss.
    a.send_json(json!({"event":"pusher:subscribe","data":{"channel":"cache-empty"}}))
        .await;
    a.expect_event("pusher:cache_miss").await;
    b.send_json(json!({"event":"pusher:subscribe","data":{"channel":"cache-empty"}}))
        .await;
    b.expect_event("pusher:cache_miss").await;
    b.send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}))
        .await;
    a.expect_event("pusher_internal:member_removed").await;
    let events = receiver
        .wait_for("member_removed", |e| {
            e.iter().any(|e| e["name"] == "member_removed")
        })
        .await;
    let seen = names(&events);
    for expected in [
        "channel_occupied:presence-room",
        "member_added:presence-room",
        "client_event:presence-room",
        "channel_occupied:cache-empty",
        "cache_miss:cache-empty",
        "subscription_count:cache-empty",
        "member_removed:presence-room",
    ] {
        assert!(
            seen.contains(&expected.to_owned()),
            "{expected} in {seen:?}"
        );
    }
    assert_eq!(
        seen.iter()
            .filter(|n| n.as_str() == "cache_miss:cache-empty")
            .count(),
        1,
        "one cache_miss for one miss: {seen:?}"
    );
    let members: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "member_added")
        .collect();
    assert_eq!(members.len(), 2);
    assert_eq!(members[1]["user_id"], "bob");
    let client = events.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(
        client,
        &json!({"name":"client_event","channel":"presence-room","event":"client-wave","data":"{\"hi\":1}","socket_id":b.socket_id,"user_id":"bob"})
    );
    let count = events
        .iter()
        .rev()
        .find(|e| e["name"] == "subscription_count")
        .unwrap();
    assert_eq!(count["subscription_count"], 2);
    // Closing both sockets vacates both channels (after the delay).
    a.close().await;
    b.close().await;
    let events = receiver
        .wait_for("both vacated", |e| {
            e.iter().filter(|e| e["name"] == "channel_vacated").count() == 2
        })
        .await;
    let seen = names(&events);
    assert!(seen.contains(&"channel_vacated:presence-room".to_owned()));
    assert!(seen.contains(&"channel_vacated:cache-empty".to_owned()));
    assert!(seen.contains(&"member_removed:presence-room".to_owned()));
}

#[tokio::test]
async fn a_channel_back_within_the_delay_reports_neither_vacated_nor_occupied_again() {
    let app = fast_app().await;
    let receiver = Receiver::start().await;
    add_webhook(
        &app,
        &receiver.url,
        &["channel_occupied", "channel_vacated"],
        None,
    )
    .await;
    let mut client = app.connect().await;
    client.subscribe("flappy").await;
    client
        .send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"flappy"}}))
        .await;
    client.subscribe("flappy").await;
    // A marker after the delay has passed proves the pipeline ran.
    pause(Duration::from_millis(600)).await;
    client.subscribe("marker").await;
    let events = receiver
        .wait_for("the marker", |e| e.iter().any(|e| e["channel"] == "marker"))
        .await;
    assert_eq!(
        names(&events),
        vec!["channel_occupied:flappy", "channel_occupied:marker"]
    );
}

#[tokio::test]
async fn endpoints_get_only_their_event_types_and_channel_prefix() {
    let app = fast_app().await;
    let all = Receiver::start().await;
    let private_only = Receiver::start().await;
    add_webhook(&app, &all.url, &["channel_occupied"], None).await;
    add_webhook(
        &app,
        &private_only.url,
        &["channel_occupied", "cache_miss"],
        Some("private-"),
    )
    .await;
    let mut client = app.connect().await;
    client.subscribe("public-one").await;
    client.subscribe("private-one").await;
    all.wait_for("two", |e| e.len() == 2).await;
    let events = private_only.wait_for("one", |e| !e.is_empty()).await;
    pause(Duration::from_millis(200)).await;
    assert_eq!(
        names(&private_only.accepted_events()),
        vec!["channel_occupied:private-one"]
    );
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn each_webhook_request_counts_toward_the_daily_quota() {
    let app = fast_app().await;
    let receiver = Receiver::start().await;
    add_webhook(&app, &receiver.url, &["channel_occupied"], None).await;
    let mut client = app.connect().await;
    client.subscribe("counted").await;
    receiver.wait_for("one", |e| e.len() == 1).await;
    let usage = app.node.usage.app(APP_ID);
    wait_until("the request is counted", || usage.messages_today() == 1).await;
}

#[tokio::test]
async fn the_receiver_down_for_a_scaled_30_second_outage_gets_every_event_once_in_order_per_channel(
) {
    // The outage at a thirtieth of its length, backoff included: 1 s down with retries from
    // 7 ms up to 67 ms makes as many attempts as 30 s with retries from 200 ms up to 2 s.
    let outage = Duration::from_secs(1);
    let app = spawn_app_with(|s| {
        s.webhooks.backoff_base = Duration::from_millis(7);
        s.webhooks.backoff_cap = Duration::from_millis(67);
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.status.store(503, Ordering::SeqCst);
    add_webhook(&app, &receiver.url, &["client_event"], None).await;
    let channels = ["private-a", "private-b", "private-c"];
    let mut listener = app.connect().await;
    let mut senders = Vec::new();
    for channel in channels {
        listener.subscribe(channel).await;
        let mut sender = app.connect().await;
        sender.subscribe(channel).await;
        senders.push(sender);
    }
    let started = tokio::time::Instant::now();
    for round in 0..8 {
        for (sender, channel) in senders.iter_mut().zip(channels) {
            sender
                .send_json(json!({"event":"client-n","channel":channel,"data":{"n":round}}))
                .await;
        }
        for _ in channels {
            listener.expect_event("client-n").await;
        }
        pause(Duration::from_millis(5)).await;
    }
    pause(outage.saturating_sub(started.elapsed())).await;
    assert!(
        !receiver.requests().is_empty(),
        "attempts were made while down"
    );
    assert!(receiver.accepted_events().is_empty());
    receiver.status.store(200, Ordering::SeqCst);
    let events = receiver.wait_for("all 24 events", |e| e.len() >= 24).await;
    // Longer than a few retries at the cap: a duplicate would have come by now.
    pause(Duration::from_millis(300)).await;
    let events_after = receiver.accepted_events();
    assert_eq!(events_after.len(), 24, "exactly once: {}", events.len());
    let mut per_channel: HashMap<String, Vec<i64>> = HashMap::new();
    for event in &events_after {
        let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
        per_channel
            .entry(event["channel"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["n"].as_i64().unwrap());
    }
    for channel in channels {
        assert_eq!(
            per_channel[channel],
            (0..8).collect::<Vec<_>>(),
            "{channel} in order"
        );
    }
    // Nothing is left pending, and every delivery row says delivered.
    let rows = app.node.store.deliveries(APP_ID, None, 1000).await.unwrap();
    assert!(
        rows.iter().all(|d| d.status == DeliveryStatus::Delivered),
        "{rows:?}"
    );
    assert!(rows.iter().any(|d| d.attempts > 1), "some were retried");
}

#[tokio::test]
async fn undelivered_webhooks_are_delivered_after_a_restart() {
    let mut app = fast_app().await;
    let receiver = Receiver::start().await;
    receiver.status.store(500, Ordering::SeqCst);
    add_webhook(&app, &receiver.url, &["channel_occupied"], None).await;
    let mut client = app.connect().await;
    for channel in ["r1", "r2", "r3"] {
        client.subscribe(channel).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while receiver.requests().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt was made"
        );
        pause(Duration::from_millis(20)).await;
    }
    drop(client);
    app.stop().await;
    let attempts_before = receiver.requests().len();
    receiver.status.store(200, Ordering::SeqCst);
    let dir = std::mem::replace(&mut app.data_dir, tempfile::tempdir().unwrap());
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.webhooks.backoff_base = Duration::from_millis(100);
    let again = spawn_in(dir, settings).await;
    let events = receiver
        .wait_for("the three occupied events", |e| {
            e.iter().filter(|e| e["name"] == "channel_occupied").count() >= 3
        })
        .await;
    assert!(receiver.requests().len() > attempts_before);
    let occupied: Vec<String> = names(&events)
        .into_iter()
        .filter(|n| n.starts_with("channel_occupied"))
        .collect();
    assert_eq!(
        occupied,
        vec![
            "channel_occupied:r1",
            "channel_occupied:r2",
            "channel_occupied:r3"
        ]
    );
    drop(again);
}

#[tokio::test]
async fn deliveries_failing_for_the_retry_window_are_kept_as_failed_and_can_be_retried() {
    let app = spawn_app_with(|s| {
        s.webhooks.retry_window = Duration::from_millis(800);
        s.webhooks.backoff_base = Duration::from_millis(100);
        s.webhooks.backoff_cap = Duration::from_millis(200);
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.status.store(502, Ordering::SeqCst);
    add_webhook(&app, &receiver.url, &["channel_occupied"], None).await;
    let mut client = app.connect().await;
    client.subscribe("doomed").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let failed = loop {
        let failed = app
            .node
            .store
            .deliveries(APP_ID, Some(DeliveryStatus::Failed), 10)
            .await
            .unwrap();
        if !failed.is_empty() {
            break failed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked failed"
        );
        pause(Duration::from_millis(50)).await;
    };
    assert_eq!(failed[0].last_status, 502);
    assert!(failed[0].attempts >= 2, "{:?}", failed[0]);
    let attempts = receiver.requests().len();
    pause(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests().len(),
        attempts,
        "no attempt after failing"
    );
    receiver.status.store(200, Ordering::SeqCst);
    let queued = app
        .node
        .store
        .retry_failed(APP_ID, None, now() * 1000)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    let events = receiver
        .wait_for("the retried event", |e| e.len() == 1)
        .await;
    assert_eq!(names(&events), vec!["channel_occupied:doomed"]);
}
