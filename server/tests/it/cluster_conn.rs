//! A node whose Redis connections die silently (packets dropped, sockets left open: a
//! partition, a lost NAT entry) replaces them within seconds, before its heartbeat key expires:
//! the other node never takes it for dead, and publishes cross again.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::cluster_helpers::{eventually, start_node, start_node_with, Database, Redis};
use crate::helpers::{pause, post_signed, Client, Received, APP_ID};
use crate::proxy::StallProxy;

/// Reads `client`'s frames for `wait`; panics on a `member_removed` of `user_id` (or a close).
async fn no_member_removed_for(client: &mut Client, user_id: &str, wait: Duration) {
    let until = Instant::now() + wait;
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        // Shorter than the client's own wait for a frame, which would fail the test.
        let step = (until - now).min(Duration::from_secs(1));
        match tokio::time::timeout(step, client.next()).await {
            Err(_) => {}
            Ok(Received::Json(frame)) => {
                let removed = frame["event"] == "pusher_internal:member_removed"
                    && frame["data"]
                        .as_str()
                        .is_some_and(|data| data.contains(&format!("\"{user_id}\"")));
                assert!(!removed, "the live node was cleaned up as dead: {frame}");
            }
            Ok(Received::Closed(code)) => panic!("closed ({code:?})"),
        }
    }
}

async fn node_key_exists(redis: &Redis, node_id: &str) -> bool {
    let mut conn = redis.connection().await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(redis.node_key(node_id))
        .query_async(&mut conn)
        .await
        .expect("EXISTS answers");
    exists == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_redis_connections_die_silently_replaces_them_and_stays_alive() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let proxy = StallProxy::to_redis(&redis, None).await;
    let through_proxy = proxy.redis_url();
    let a = start_node_with(
        "a",
        &redis,
        &database,
        &[("HERALD_REDIS_URL", &through_proxy)],
    )
    .await;
    let b = start_node("b", &redis, &database).await;

    // Alice is a presence member on node A; Bob on node B sees her, and listens to `news`.
    let mut alice = a.connect().await;
    alice
        .subscribe_presence("presence-room", "alice", json!({}))
        .await;
    let mut bob = b.connect().await;
    let members = bob
        .subscribe_presence("presence-room", "bob", json!({}))
        .await;
    assert!(
        members["presence"]["ids"]
            .as_array()
            .is_some_and(|ids| ids.contains(&json!("alice"))),
        "{members}"
    );
    bob.subscribe("news").await;
    eventually(
        "node A is ready with Redis ok",
        Duration::from_secs(10),
        || async { a.ready().await.1["redis"]["status"] == "ok" },
    )
    .await;

    // Every Redis connection node A has open now goes silent.
    let blackholed = proxy.stall_all().await;
    assert!(blackholed >= 2, "node A had {blackholed} connections");
    let at = Instant::now();

    // Within 10 s node A works with Redis again, on new connections.
    eventually(
        "node A's /ready shows Redis ok again",
        Duration::from_secs(10),
        || async {
            let body = a.ready().await.1;
            body["redis"]["status"] == "ok"
                && body["cluster"]["connections_replaced"]
                    .as_u64()
                    .is_some_and(|n| n >= 1)
        },
    )
    .await;

    // Past the heartbeat TTL (10 s) and a sweep (3 s) from the blackhole: node A was never
    // taken for dead (its key lives, Bob never saw Alice removed).
    no_member_removed_for(
        &mut bob,
        "alice",
        Duration::from_secs(14).saturating_sub(at.elapsed()),
    )
    .await;
    assert!(
        node_key_exists(&redis, &a.id).await,
        "node A's heartbeat key lives"
    );

    // A REST publish on node A reaches Bob on node B.
    let body = json!({"name": "after", "channel": "news", "data": "x"});
    let path = format!("/apps/{APP_ID}/events");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = post_signed(&http, &a.base(), &path, body.to_string()).await;
        assert_eq!(response.status().as_u16(), 200, "the trigger is accepted");
        let heard = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match bob.next().await {
                    Received::Json(frame) if frame["event"] == "after" => return,
                    Received::Json(_) => {}
                    Received::Closed(code) => panic!("closed ({code:?})"),
                }
            }
        })
        .await
        .is_ok();
        if heard {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a publish on node A never reached node B"
        );
        pause(Duration::from_millis(100)).await;
    }
}
