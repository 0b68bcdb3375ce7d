//! The live console across a cluster (2 node processes on a Redis and a PostgreSQL database of
//! the test's own): it recovers from a pub/sub connection that died silently, and one busy app's
//! events are forwarded at a bounded rate.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster_helpers::{Database, Redis};
use crate::cluster_ops::{
    console_stream, next_chunk, next_debug_event, node, probe_until_seen, read_until, session,
    two_nodes,
};
use crate::proxy::StallProxy;

/// Whether a chunk a node sent Redis subscribes to a console channel (`…:tap:…`): the proxy
/// stalls those connections, keeping them open (a connection that died without a reset); every
/// other connection, and any made later, is forwarded as before.
fn subscribes_to_a_console_channel(chunk: &str) -> bool {
    chunk.contains("SUBSCRIBE") && chunk.contains(":tap:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_console_recovers_from_a_pubsub_connection_that_died_silently() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let proxy = StallProxy::to_redis(&redis, Some(subscribes_to_a_console_channel)).await;
    let through_proxy = proxy.redis_url();
    let a = node(
        "a",
        &redis,
        &database,
        &[("HERALD_REDIS_URL", &through_proxy)],
    )
    .await;
    let b = node("b", &redis, &database, &[]).await;
    let cookie = session(&a.base()).await;
    let mut stream = console_stream(&a.base(), &cookie).await;
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
    proxy.stall_marked().await;
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
        while let Some(event) = next_debug_event(buffer) {
            events.push((Instant::now(), event));
        }
        let now = Instant::now();
        if now >= until {
            return events;
        }
        if !next_chunk(response, buffer, until - now).await {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_forwards_at_most_50_console_events_of_one_app_a_second_however_busy() {
    let (_redis, _database, a, b) = two_nodes(&[]).await;
    let cookie = session(&a.base()).await;
    let mut stream = console_stream(&a.base(), &cookie).await;
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
