//! Cluster mode (issue 14, first increment): three `herald` processes on a Redis of the test's
//! own and a fresh PostgreSQL database. Cross-node fan-out (exactly once, in order), client
//! events and `socket_id` exclusion across nodes, the heartbeat key, Redis killed and restarted
//! mid-test, and the refusal of cluster mode on SQLite.

use std::time::Duration;

use serde_json::json;

use crate::cluster_helpers::{
    eventually, heard_probe, start_node, subscribe_private, trigger_except, Database, Redis,
    TestCluster,
};
use crate::helpers::{herald_binary, pause, post_signed, Client, APP_ID};

/// A REST trigger of `event` on `channel` through the node at `base`; 200 expected.
async fn trigger(http: &reqwest::Client, base: &str, channel: &str, event: &str, data: &str) {
    trigger_except(http, base, channel, event, data, None).await;
}

/// The next frame must be `event` on `channel`; returns its `data` string.
async fn expect_channel_event(client: &mut Client, event: &str) -> String {
    let frame = client.expect_next(event).await;
    frame["data"].as_str().expect("string data").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_node_reaches_every_node_once_and_in_order() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let mut on_a = a.connect().await;
    let mut on_b = b.connect().await;
    let mut on_c = c.connect().await;
    let mut also_on_c = c.connect().await;
    for client in [&mut on_a, &mut on_b, &mut on_c, &mut also_on_c] {
        client.subscribe("orders").await;
    }
    // Socket ids are unique cluster-wide: the node-specific part differs.
    let tags: std::collections::HashSet<&str> = [&on_a, &on_b, &on_c]
        .iter()
        .map(|client| client.socket_id.split('.').nth(1).expect("n.n"))
        .collect();
    assert_eq!(tags.len(), 3, "each node has its own socket id tag");
    cluster.redis.wait_for_listeners(3).await;

    let http = reqwest::Client::new();
    for n in 0..100 {
        trigger(&http, &a.base(), "orders", "placed", &format!("{n}")).await;
    }
    for client in [&mut on_a, &mut on_b, &mut on_c, &mut also_on_c] {
        for n in 0..100 {
            assert_eq!(expect_channel_event(client, "placed").await, n.to_string());
        }
        // Exactly once: nothing more.
        client.expect_silence(Duration::from_millis(300)).await;
    }

    // A batch through node B reaches A and C, and a quiet app channel costs node A nothing
    // once its last subscriber leaves.
    let batch = json!({"batch": [
        {"name": "one", "channel": "orders", "data": "1"},
        {"name": "two", "channel": "orders", "data": "2"},
    ]});
    let response = post_signed(
        &http,
        &b.base(),
        &format!("/apps/{APP_ID}/batch_events"),
        batch.to_string(),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    for client in [&mut on_a, &mut on_c] {
        assert_eq!(expect_channel_event(client, "one").await, "1");
        assert_eq!(expect_channel_event(client, "two").await, "2");
    }
    // The app's Redis channel lingers a while after the node's last subscriber left (a
    // subscribe/unsubscribe loop costs Redis nothing), then node A leaves it.
    on_a.close().await;
    for _ in 0..4 {
        pause(Duration::from_millis(500)).await;
        assert_eq!(
            cluster.redis.listeners(&cluster.redis.app_channel()).await,
            3,
            "the channel lingers"
        );
    }
    let redis = &cluster.redis;
    eventually(
        "node a leaves the app's channel after the linger",
        Duration::from_secs(40),
        || async { redis.listeners(&redis.app_channel()).await == 2 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_events_and_socket_id_exclusion_work_across_nodes() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let mut sender = a.connect().await;
    let mut on_b = b.connect().await;
    let mut on_c = c.connect().await;
    for client in [&mut sender, &mut on_b, &mut on_c] {
        subscribe_private(client, "private-chat").await;
    }
    cluster.redis.wait_for_listeners(3).await;

    // A client event from a socket on A reaches B and C, not its sender.
    sender
        .send_json(
            json!({"event": "client-typing", "channel": "private-chat", "data": {"who": "a"}}),
        )
        .await;
    for client in [&mut on_b, &mut on_c] {
        let frame = client.expect_next("client-typing").await;
        assert_eq!(frame["channel"], "private-chat");
        assert_eq!(frame["data"], json!({"who": "a"}));
    }
    sender.expect_silence(Duration::from_millis(300)).await;

    // A REST publish on A excluding a socket on B: everyone else gets it, that socket does not.
    let http = reqwest::Client::new();
    let excluded = on_b.socket_id.clone();
    trigger_except(
        &http,
        &a.base(),
        "private-chat",
        "said",
        "hello",
        Some(&excluded),
    )
    .await;
    trigger(&http, &a.base(), "private-chat", "marker", "after").await;
    assert_eq!(expect_channel_event(&mut sender, "said").await, "hello");
    assert_eq!(expect_channel_event(&mut on_c, "said").await, "hello");
    // The excluded socket's next frame is the marker published after it.
    assert_eq!(expect_channel_event(&mut on_b, "marker").await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_key_lives_with_the_node_and_goes_with_it() {
    let mut cluster = TestCluster::start().await;
    let redis = &cluster.redis;
    let ids: Vec<String> = cluster.nodes.iter().map(|node| node.id.clone()).collect();
    for id in &ids {
        let key = redis.node_key(id);
        eventually(
            &format!("node {id} registers"),
            Duration::from_secs(5),
            || async { redis.exists(&key).await },
        )
        .await;
    }
    let (status, body) = cluster.nodes[0].ready().await;
    assert_eq!(status, 200);
    assert_eq!(body["redis"]["status"], "ok", "{body}");
    assert_eq!(body["cluster"]["node_id"], ids[0]);
    assert_eq!(body["cluster"]["name"], cluster.redis.cluster);

    // A graceful shutdown removes the key at once.
    let exit = cluster.nodes[2].terminate().await;
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
    assert!(!cluster.redis.exists(&cluster.redis.node_key(&ids[2])).await);

    // kill -9: the key expires within its TTL (10 s).
    cluster.nodes[1].kill().await;
    let redis = &cluster.redis;
    let b_key = redis.node_key(&ids[1]);
    assert!(redis.exists(&b_key).await);
    eventually(
        "node b's heartbeat key expires",
        Duration::from_secs(12),
        || async { !redis.exists(&b_key).await },
    )
    .await;
    assert!(cluster.redis.exists(&cluster.redis.node_key(&ids[0])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_local_delivery_and_readiness_and_forwarding_resumes_after() {
    let mut cluster = TestCluster::start().await;
    let mut on_a = cluster.nodes[0].connect().await;
    let mut on_b = cluster.nodes[1].connect().await;
    on_a.subscribe("news").await;
    on_b.subscribe("news").await;
    cluster.redis.wait_for_listeners(2).await;
    let http = reqwest::Client::new();
    let a_base = cluster.nodes[0].base();
    trigger(&http, &a_base, "news", "before", "0").await;
    assert_eq!(expect_channel_event(&mut on_b, "before").await, "0");
    assert_eq!(expect_channel_event(&mut on_a, "before").await, "0");

    cluster.redis.kill().await;
    // Local delivery goes on, and the node stays ready with redis degraded.
    for n in 0..5 {
        trigger(&http, &a_base, "news", "during", &n.to_string()).await;
    }
    for n in 0..5 {
        assert_eq!(
            expect_channel_event(&mut on_a, "during").await,
            n.to_string()
        );
    }
    let a = &cluster.nodes[0];
    eventually(
        "node a shows redis degraded",
        Duration::from_secs(10),
        || async {
            let (status, body) = a.ready().await;
            assert_eq!(status, 200, "a Redis outage leaves the node ready: {body}");
            body["redis"]["status"] == "degraded"
                && body["redis"]["reason"].is_string()
                && body["redis"]["since"].is_number()
        },
    )
    .await;

    let (_, body) = a.ready().await;
    assert!(
        body["cluster"]["forwards_dropped"].as_u64() >= Some(1),
        "publishes during the outage are counted as dropped: {body}"
    );

    cluster.redis.restart().await;
    cluster.redis.wait_for_listeners(2).await;
    // Forwarding resumes once the publishing connection is back (a publish or two may still
    // be dropped while it reconnects): publish until B hears one, then 10 more in order.
    let mut resumed = false;
    for attempt in 0..40 {
        trigger(&http, &a_base, "news", "probe", &attempt.to_string()).await;
        if heard_probe(&mut on_b, Duration::from_millis(500)).await {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "forwarding resumed after Redis came back");
    // Probes still in flight are skipped.
    for n in 0..10 {
        trigger(&http, &a_base, "news", "after", &n.to_string()).await;
    }
    for n in 0..10 {
        assert_eq!(
            expect_channel_event_skipping(&mut on_b, "after").await,
            n.to_string()
        );
    }
    eventually("node a shows redis ok", Duration::from_secs(10), || async {
        a.ready().await.1["redis"]["status"] == "ok"
    })
    .await;
}

/// The data of the next `event` frame, skipping `probe` frames.
async fn expect_channel_event_skipping(client: &mut Client, event: &str) -> String {
    loop {
        let frame = client.next_json().await;
        if frame["event"] == "probe" || frame["event"] == "during" {
            continue;
        }
        assert_eq!(frame["event"], event, "unexpected frame {frame}");
        return frame["data"].as_str().expect("string data").to_owned();
    }
}

#[tokio::test]
async fn cluster_mode_on_sqlite_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = herald_binary(dir.path());
    command.env("HERALD_REDIS_URL", "redis://127.0.0.1:1/");
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("herald exits in time")
        .expect("herald runs");
    assert!(!output.status.success(), "refused: {:?}", output.status);
    let log = String::from_utf8_lossy(&output.stdout);
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("needs a PostgreSQL store"))
        .collect();
    assert_eq!(refusals.len(), 1, "one clear line: {log}");
    assert!(refusals[0].contains("HERALD_REDIS_URL"), "{log}");
    assert!(
        !log.contains("listening on"),
        "nothing is served on SQLite in cluster mode: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_redis_is_down_serves_and_joins_when_it_comes_up() {
    let database = Database::create().await;
    let mut redis = Redis::start().await;
    redis.kill().await;
    let a = start_node("a", &redis, &database).await;
    let b = start_node("b", &redis, &database).await;
    let (status, body) = a.ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redis"]["status"], "degraded", "{body}");
    let mut on_a = a.connect().await;
    let mut on_b = b.connect().await;
    on_a.subscribe("up").await;
    on_b.subscribe("up").await;

    redis.restart().await;
    redis.wait_for_listeners(2).await;
    let redis = &redis;
    eventually("both nodes register", Duration::from_secs(10), || async {
        redis.exists(&redis.node_key(&a.id)).await && redis.exists(&redis.node_key(&b.id)).await
    })
    .await;
    let http = reqwest::Client::new();
    let mut heard = false;
    for attempt in 0..20 {
        trigger(&http, &a.base(), "up", "probe", &attempt.to_string()).await;
        assert_eq!(
            expect_channel_event(&mut on_a, "probe").await,
            attempt.to_string()
        );
        if heard_probe(&mut on_b, Duration::from_millis(500)).await {
            heard = true;
            break;
        }
    }
    assert!(heard, "forwarding works once Redis is up");
}

/// A REST `terminate_connections` through `base` (`path` names the user); `{}` expected.
async fn terminate_on(http: &reqwest::Client, base: &str, path: &str) {
    let response = post_signed(http, base, path, "{}".to_owned()).await;
    assert_eq!(response.status().as_u16(), 200, "the terminate is accepted");
    assert_eq!(response.text().await.expect("a body"), "{}");
}

/// The next frames must be `pusher:error` 4009, then a close with 4009, within two seconds.
async fn expect_terminated(client: &mut Client) {
    tokio::time::timeout(Duration::from_secs(2), async {
        let (code, _) = client.expect_error().await;
        assert_eq!(code, 4009);
        assert_eq!(client.expect_close().await, Some(4009));
    })
    .await
    .expect("terminated within two seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_connections_on_one_node_closes_the_users_sockets_on_every_node() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    // Signed in, subscribed to nothing: the nodes must still hear about the app.
    let mut u1_on_b = b.connect().await;
    u1_on_b.sign_in(r#"{"id":"u1"}"#).await;
    let mut u1_on_c = c.connect().await;
    u1_on_c.sign_in(r#"{"id":"u1"}"#).await;
    let mut u2_on_c = c.connect().await;
    u2_on_c.sign_in(r#"{"id":"u2"}"#).await;
    let mut u3_on_b = b.connect().await;
    u3_on_b.sign_in(r#"{"id":"u3"}"#).await;
    cluster.redis.wait_for_listeners(2).await;

    let http = reqwest::Client::new();
    terminate_on(
        &http,
        &a.base(),
        &format!("/apps/{APP_ID}/users/u1/terminate_connections"),
    )
    .await;
    expect_terminated(&mut u1_on_b).await;
    expect_terminated(&mut u1_on_c).await;
    for client in [&mut u2_on_c, &mut u3_on_b] {
        client
            .send_json(json!({"event":"pusher:ping","data":{}}))
            .await;
        client.expect_next("pusher:pong").await;
    }

    // pusher-http-python's path, through node C, reaches node B too.
    terminate_on(&http, &c.base(), "/users/u3/terminate_connections").await;
    expect_terminated(&mut u3_on_b).await;
    u2_on_c
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    u2_on_c.expect_next("pusher:pong").await;
    u2_on_c.expect_silence(Duration::from_millis(300)).await;
}
