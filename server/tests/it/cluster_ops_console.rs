//! The live console across a cluster (2 node processes on a Redis and a PostgreSQL database of
//! the test's own): it recovers from a pub/sub connection that died silently, and one busy app's
//! events are forwarded at a bounded rate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::cluster_helpers::{Database, Redis};
use crate::cluster_ops::{http, node, read_until, session, two_nodes};
use crate::helpers::APP_ID;

/// A TCP proxy to Redis that can make the console's pub/sub connections go silent: `stall`
/// stops forwarding on every open connection that subscribed to a console channel (`…:tap:…`)
/// but keeps it open (a connection that died without a reset); every other connection, and
/// any made later, is forwarded as before.
struct SilentProxy {
    port: u16,
    /// Per connection: (it subscribed to a console channel, it is silent).
    connections: Mutex<Vec<Arc<(AtomicBool, AtomicBool)>>>,
}

impl SilentProxy {
    async fn start(upstream: String) -> Arc<SilentProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(SilentProxy {
            port: listener.local_addr().unwrap().port(),
            connections: Mutex::new(Vec::new()),
        });
        let shared = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flags = Arc::new((AtomicBool::new(false), AtomicBool::new(false)));
                shared.connections.lock().await.push(flags.clone());
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pipe(client_read, server_write, flags.clone(), true));
                tokio::spawn(Self::pipe(server_read, client_write, flags, false));
            }
        });
        proxy
    }

    /// Copies `from` to `to` until either closes; silent, it reads and drops everything.
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        flags: Arc<(AtomicBool, AtomicBool)>,
        from_client: bool,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let Ok(read) = from.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            let chunk = &buffer[..read];
            if from_client {
                let text = String::from_utf8_lossy(chunk);
                if text.contains("SUBSCRIBE") && text.contains(":tap:") {
                    flags.0.store(true, Ordering::SeqCst);
                }
            }
            if flags.1.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(chunk).await.is_err() {
                return;
            }
        }
    }

    async fn stall(&self) {
        for flags in self.connections.lock().await.iter() {
            if flags.0.load(Ordering::SeqCst) {
                flags.1.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Subscribes `client` to fresh `probe-…` channels until `stream` shows one of them from
/// `node_id`, for at most `limit`.
async fn probe_until_seen(
    client: &mut crate::helpers::Client,
    stream: &mut reqwest::Response,
    buffer: &mut String,
    node_id: &str,
    tag: &str,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    for probe in 0.. {
        let channel = format!("{tag}-{probe}");
        client.subscribe(&channel).await;
        let prefix = format!("{tag}-");
        if read_until(stream, buffer, |event| {
            event["kind"] == "subscribed"
                && event["channel"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&prefix))
                && event["node"] == node_id
        })
        .await
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_console_recovers_from_a_pubsub_connection_that_died_silently() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let upstream = redis.url();
    let upstream = upstream
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = SilentProxy::start(upstream).await;
    let through_proxy = format!("redis://127.0.0.1:{}/", proxy.port);
    let a = node(
        "a",
        &redis,
        &database,
        &[("HERALD_REDIS_URL", &through_proxy)],
    )
    .await;
    let b = node("b", &redis, &database, &[]).await;
    let cookie = session(&a.base()).await;
    let mut stream = http()
        .get(format!("{}/dashboard/apps/{APP_ID}/live/events", a.base()))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut buffer = String::new();
    let mut client = b.connect().await;
    assert!(
        probe_until_seen(
            &mut client,
            &mut stream,
            &mut buffer,
            &b.id,
            "before",
            Duration::from_secs(10)
        )
        .await,
        "node A's console shows node B's events"
    );
    // Node A's console pub/sub connection goes silent (no reset, no answer).
    proxy.stall().await;
    assert!(
        probe_until_seen(
            &mut client,
            &mut stream,
            &mut buffer,
            &b.id,
            "after",
            Duration::from_secs(15)
        )
        .await,
        "node A's console re-makes its pub/sub connection and shows node B's events again"
    );
}

/// Every `debug` event `response` streams for `wait`, each with when it arrived.
async fn collect_for(
    response: &mut reqwest::Response,
    buffer: &mut String,
    wait: Duration,
) -> Vec<(Instant, Value)> {
    let until = Instant::now() + wait;
    let mut events = Vec::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.contains("event: debug") {
                continue;
            }
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            if let Ok(event) = serde_json::from_str::<Value>(&data) {
                events.push((Instant::now(), event));
            }
        }
        let now = Instant::now();
        if now >= until {
            return events;
        }
        match tokio::time::timeout(until - now, response.chunk()).await {
            Ok(Ok(Some(chunk))) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => panic!("the console stream ended"),
            Err(_) => return events,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_forwards_at_most_50_console_events_of_one_app_a_second_however_busy() {
    let (_redis, _database, a, b) = two_nodes(&[]).await;
    let cookie = session(&a.base()).await;
    let mut stream = http()
        .get(format!("{}/dashboard/apps/{APP_ID}/live/events", a.base()))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let mut buffer = String::new();
    // Wait until node B forwards.
    let mut probe = b.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        probe.subscribe(&format!("probe-{n}")).await;
        let b_id = b.id.clone();
        if read_until(&mut stream, &mut buffer, |event| {
            event["node"] == b_id.as_str()
        })
        .await
        {
            break;
        }
        assert!(Instant::now() < deadline, "node B never forwarded");
    }
    // 20 sockets on B each ask for 100 subscriptions at once: 2,000 console events.
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(b.connect().await);
    }
    for client in &mut clients {
        for n in 0..100 {
            client
                .send_json(
                    json!({"event": "pusher:subscribe", "data": {"channel": format!("burst-{n}")}}),
                )
                .await;
        }
    }
    let events = collect_for(&mut stream, &mut buffer, Duration::from_secs(4)).await;
    let burst: Vec<Instant> = events
        .iter()
        .filter(|(_, e)| {
            e["node"] == b.id.as_str()
                && e["channel"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("burst-"))
        })
        .map(|(at, _)| *at)
        .collect();
    assert!(!burst.is_empty(), "some of the burst is forwarded");
    assert!(
        burst.len() < 2_000,
        "past the rate, events are dropped ({} forwarded)",
        burst.len()
    );
    // Arrivals on node A per 1 s window: one app gets at most 50 a second, so a window holds
    // at most 100 (the end of one second's budget and the start of the next), plus a margin
    // for a stream that stalled and caught up; the node-wide cap alone (200) would fail it.
    let first = burst[0];
    let mut windows = std::collections::BTreeMap::<u128, usize>::new();
    for at in &burst {
        *windows
            .entry(at.duration_since(first).as_millis() / 1000)
            .or_default() += 1;
    }
    for (second, count) in &windows {
        assert!(
            *count <= 150,
            "{count} events of one app arrived in second {second}: {windows:?}"
        );
    }
}
