//! Cluster mode: sequential REST publishes keep their order cluster-wide (issue 14, found by the
//! compat suite behind a round-robin balancer). Two `herald` processes on a Redis of the test's
//! own: a backend awaiting each trigger and alternating nodes must see its events arrive in the
//! order it published them, on both nodes, exactly once; a batch keeps its order; `socket_id`
//! exclusion and cache channels still work on a publish delivered on its echo; with Redis frozen
//! triggers still answer and local subscribers still get them, without a duplicate afterwards;
//! a node that loses its pub/sub connection delivers the echoes it awaited itself, at once.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cluster_helpers::{
    eventually, heard_probe, start_node, trigger_except, usage_messages, Database, Node, Redis,
};
use crate::helpers::{post_signed, Client, APP_ID};

/// A REST trigger through `node`, `socket_id` excluded; 200 expected.
async fn trigger(
    http: &reqwest::Client,
    node: &Node,
    channel: &str,
    event: &str,
    data: &str,
    socket_id: Option<&str>,
) {
    trigger_except(http, &node.base(), channel, event, data, socket_id).await;
}

/// A REST batch of `(event, data)` on `channel` through `node`; 200 expected.
async fn batch(http: &reqwest::Client, node: &Node, channel: &str, events: &[(&str, String)]) {
    let batch: Vec<Value> = events
        .iter()
        .map(|(event, data)| json!({"name": event, "channel": channel, "data": data}))
        .collect();
    let path = format!("/apps/{APP_ID}/batch_events");
    let body = json!({ "batch": batch }).to_string();
    let response = post_signed(http, &node.base(), &path, body).await;
    assert_eq!(response.status().as_u16(), 200, "the batch is accepted");
}

/// The next frame must be `event`; its `data` string.
async fn next_data(client: &mut Client, event: &str) -> String {
    let frame = client.expect_next(event).await;
    frame["data"].as_str().expect("string data").to_owned()
}

/// A database, a Redis and nodes `a` and `b`, each with a subscriber of `channel`, both nodes
/// listening to the app's Redis channel.
async fn two_nodes(channel: &str) -> (Database, Redis, [Node; 2], [Client; 2]) {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let a = start_node("a", &redis, &database).await;
    let b = start_node("b", &redis, &database).await;
    let mut on_a = a.connect().await;
    let mut on_b = b.connect().await;
    on_a.subscribe(channel).await;
    on_b.subscribe(channel).await;
    redis.wait_for_listeners(2).await;
    (database, redis, [a, b], [on_a, on_b])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_triggers_through_alternating_nodes_arrive_in_order_everywhere() {
    let (database, _redis, nodes, mut clients) = two_nodes("orders").await;
    let http = reqwest::Client::new();
    // Each trigger is awaited before the next, through A and B in turn (a backend behind a
    // round-robin balancer): before the fix, the subscriber on the handling node got a publish
    // at once while the previous one, through the other node, was still crossing Redis.
    const COUNT: usize = 320;
    for n in 0..COUNT {
        trigger(
            &http,
            &nodes[n % 2],
            "orders",
            "placed",
            &n.to_string(),
            None,
        )
        .await;
    }
    for (name, client) in ["a", "b"].iter().zip(clients.iter_mut()) {
        let received: Vec<String> = {
            let mut received = Vec::with_capacity(COUNT);
            for _ in 0..COUNT {
                received.push(next_data(client, "placed").await);
            }
            received
        };
        let expected: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
        let inversions = received
            .windows(2)
            .filter(|pair| pair[0].parse::<usize>().ok() > pair[1].parse::<usize>().ok())
            .count();
        let first = received
            .iter()
            .zip(&expected)
            .position(|(got, want)| got != want);
        assert!(
            received == expected,
            "the subscriber on node {name} got them out of publish order: {inversions} \
             inversions, the first at #{first:?}"
        );
        // Exactly once: nothing more.
        client.expect_silence(Duration::from_millis(300)).await;
    }
    // Counted once too: a message per publish, plus a copy on each node (whether the node
    // delivered its copy on the echo or at once), flushed by each node every 5 s.
    let expected = (COUNT * 3) as i64;
    let url = database.url.clone();
    eventually(
        &format!("the usage counts {expected} messages"),
        Duration::from_secs(15),
        || {
            let url = url.clone();
            async move { usage_messages(&url).await == expected }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_exclusion_and_cache_channels_hold_on_the_echo() {
    let (_database, _redis, nodes, mut clients) = two_nodes("private-feed").await;
    let [a, b] = &nodes;
    let http = reqwest::Client::new();

    // Batches of 10 through A then B, in turn: each keeps its order, and the next request's
    // events come after it on both nodes.
    let mut expected = Vec::new();
    for round in 0..6 {
        let events: Vec<(&str, String)> =
            (0..10).map(|n| ("item", format!("{round}-{n}"))).collect();
        expected.extend(events.iter().map(|(_, data)| data.clone()));
        batch(&http, &nodes[round % 2], "private-feed", &events).await;
        let single = format!("{round}-single");
        trigger(
            &http,
            &nodes[(round + 1) % 2],
            "private-feed",
            "item",
            &single,
            None,
        )
        .await;
        expected.push(single);
    }
    for client in clients.iter_mut() {
        for data in &expected {
            assert_eq!(&next_data(client, "item").await, data);
        }
        client.expect_silence(Duration::from_millis(300)).await;
    }

    // socket_id exclusion on a publish delivered on its echo: the socket on A is skipped, the
    // one on B is not; the excluded socket's next frame is the marker published after.
    let [on_a, on_b] = &mut clients;
    let excluded = on_a.socket_id.clone();
    trigger(&http, a, "private-feed", "said", "hi", Some(&excluded)).await;
    trigger(&http, b, "private-feed", "marker", "after", None).await;
    assert_eq!(next_data(on_b, "said").await, "hi");
    assert_eq!(next_data(on_b, "marker").await, "after");
    assert_eq!(next_data(on_a, "marker").await, "after");

    // A cache channel keeps the last REST publish delivered on its echo: a new subscriber on
    // the publishing node gets it at once.
    on_a.subscribe("cache-prices").await;
    on_a.expect_next("pusher:cache_miss").await;
    trigger(&http, a, "cache-prices", "price", "1", None).await;
    trigger(&http, a, "cache-prices", "price", "2", None).await;
    assert_eq!(next_data(on_a, "price").await, "1");
    assert_eq!(next_data(on_a, "price").await, "2");
    let mut late = a.connect().await;
    late.subscribe("cache-prices").await;
    assert_eq!(
        next_data(&mut late, "price").await,
        "2",
        "the last event is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_frozen_triggers_answer_and_deliver_locally_without_duplicates_after() {
    let (_database, redis, nodes, mut clients) = two_nodes("news").await;
    let [a, _] = &nodes;
    let http = reqwest::Client::new();
    trigger(&http, a, "news", "before", "0", None).await;
    for client in clients.iter_mut() {
        assert_eq!(next_data(client, "before").await, "0");
    }

    // Partitioned: a trigger waits at most one command timeout (2 s) for Redis, then delivers
    // to the node's own subscribers itself.
    redis.freeze();
    for n in 0..3 {
        let started = tokio::time::Instant::now();
        trigger(&http, a, "news", "during", &n.to_string(), None).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "answered in {took:?}");
        assert_eq!(next_data(&mut clients[0], "during").await, n.to_string());
    }
    // Back: what Redis still executes of the outage's publishes comes back to A as echoes it
    // gave up on, which it skips; B may get them (late), A never twice.
    redis.thaw();
    let mut heard = false;
    for attempt in 0..40 {
        trigger(&http, a, "news", "probe", &attempt.to_string(), None).await;
        assert_eq!(
            next_data(&mut clients[0], "probe").await,
            attempt.to_string()
        );
        if heard_probe(&mut clients[1], Duration::from_millis(500)).await {
            heard = true;
            break;
        }
    }
    assert!(heard, "forwarding resumed after the thaw");
    for n in 0..10 {
        trigger(&http, &nodes[n % 2], "news", "after", &n.to_string(), None).await;
    }
    let [on_a, on_b] = &mut clients;
    for n in 0..10 {
        // A: nothing between (no echo of the outage's publishes delivered twice).
        assert_eq!(next_data(on_a, "after").await, n.to_string());
        // B: the outage's publishes Redis executed late, and probes, may come first.
        loop {
            let frame = on_b.next_json().await;
            match frame["event"].as_str() {
                Some("during" | "probe") => continue,
                Some("after") => {
                    assert_eq!(frame["data"], n.to_string());
                    break;
                }
                _ => panic!("unexpected frame {frame}"),
            }
        }
    }
    on_a.expect_silence(Duration::from_millis(300)).await;
    on_b.expect_silence(Duration::from_millis(300)).await;
}

/// Sets Redis's `client-output-buffer-limit` of pub/sub connections to `limit`.
async fn set_pubsub_buffer_limit(conn: &mut redis::aio::MultiplexedConnection, limit: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg(limit)
        .query_async::<()>(conn)
        .await
        .expect("CONFIG SET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stops_waiting_for_its_echoes_when_the_node_loses_its_pub_sub_connection() {
    let (_database, redis, nodes, mut clients) = two_nodes("alerts").await;
    let [a, _] = &nodes;
    let http = reqwest::Client::new();
    trigger(&http, a, "alerts", "first", "0", None).await;
    assert_eq!(next_data(&mut clients[0], "first").await, "0");
    // Redis now cuts a pub/sub connection whose unsent output passes 1 byte beyond its 16 KB
    // buffer (and sends none of it): a batch of three 9 KB events is taken by Redis, and its
    // echoes never come back to node A.
    let mut conn = redis.connection().await;
    set_pubsub_buffer_limit(&mut conn, "pubsub 1 1 0").await;
    let big = "x".repeat(9_000);
    let events: Vec<(&str, String)> = (0..3).map(|n| ("cut", format!("{n}{big}"))).collect();
    let started = tokio::time::Instant::now();
    batch(&http, a, "alerts", &events).await;
    let took = started.elapsed();
    // Delivered by node A itself, as soon as the connection was found lost (not after the 2 s
    // the handler would otherwise wait).
    for (_, data) in &events {
        assert_eq!(&next_data(&mut clients[0], "cut").await, data);
    }
    assert!(took < Duration::from_millis(1500), "answered in {took:?}");
    set_pubsub_buffer_limit(&mut conn, "pubsub 32mb 8mb 60").await;
    clients[0].expect_silence(Duration::from_millis(300)).await;
}
