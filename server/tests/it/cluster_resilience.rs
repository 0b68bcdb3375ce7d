//! Cluster mode when Redis misbehaves or a node is misconfigured: shutdown with Redis
//! partitioned keeps its grace for the counts and the outbox, `/ready` recovers on a quiet
//! node, and a second process with the same `HERALD_NODE_ID` refuses to start.

use std::time::Duration;

use serde_json::json;

use crate::cluster_helpers::{eventually, node_command, spawn_node, start_node, Database, Redis};
use crate::helpers::{post_signed, APP_ID};

/// A REST trigger of `event` on `channels` through the node at `base`; 200 expected.
async fn trigger(http: &reqwest::Client, base: &str, channels: &[String], event: &str) {
    let body = json!({"name": event, "channels": channels, "data": "x"});
    let path = format!("/apps/{APP_ID}/events");
    let response = post_signed(http, base, &path, body.to_string()).await;
    assert_eq!(response.status().as_u16(), 200, "the trigger is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_redis_partitioned_exits_within_the_grace_with_the_counts_saved() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let (mut child, address, _dir) = spawn_node(
        "partitioned",
        &redis,
        &database,
        &[("HERALD_SHUTDOWN_GRACE_SECS", "5")],
    )
    .await;
    let base = format!("http://{address}");
    let mut client = crate::cluster_helpers::connect(&address).await;
    client.subscribe("news").await;
    redis.wait_for_listeners(1).await;
    let http = reqwest::Client::new();
    let channels: Vec<String> = (0..100).map(|n| format!("c{n}")).collect();
    trigger(&http, &base, &channels, "before").await;

    // Redis stops answering (connections stay open): the publishing connection waits for its
    // command timeout while thousands of forwards queue behind it.
    redis.freeze();
    trigger(&http, &base, &["news".to_owned()], "first").await;
    for _ in 0..30 {
        trigger(&http, &base, &channels, "queued").await;
    }
    let started = tokio::time::Instant::now();
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the node exits")
        .expect("the node's status");
    let took = started.elapsed();
    redis.thaw();
    assert!(
        exit.success(),
        "the counts and the outbox are saved, so SIGTERM exits 0: {exit:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the node exits within its grace (5 s) although Redis never answers: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_recovers_on_a_quiet_node_once_redis_is_back() {
    let database = Database::create().await;
    let mut redis = Redis::start().await;
    let node = start_node("quiet", &redis, &database).await;
    let mut client = node.connect().await;
    client.subscribe("news").await;
    redis.wait_for_listeners(1).await;
    redis.kill().await;
    // One publish fails to go out, then the node publishes nothing more.
    let http = reqwest::Client::new();
    trigger(&http, &node.base(), &["news".to_owned()], "lost").await;
    eventually(
        "the node shows redis degraded",
        Duration::from_secs(10),
        || async { node.ready().await.1["redis"]["status"] == "degraded" },
    )
    .await;
    redis.restart().await;
    eventually(
        "the quiet node shows redis ok again",
        Duration::from_secs(15),
        || async { node.ready().await.1["redis"]["status"] == "ok" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_node_with_the_same_node_id_refuses_to_start() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let first = start_node("twin", &redis, &database).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = node_command(&first.id, &redis, &database, dir.path());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the second node exits in time")
        .expect("herald runs");
    assert!(!output.status.success(), "refused: {:?}", output.status);
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        log.contains("another live node holds HERALD_NODE_ID"),
        "one clear line: {log}"
    );
    assert!(!log.contains("listening on"), "{log}");
    // The first node is untouched: still registered and ready.
    assert!(redis.exists(&redis.node_key(&first.id)).await);
    let (status, body) = first.ready().await;
    assert_eq!(status, 200);
    assert_eq!(body["redis"]["status"], "ok", "{body}");
}

#[tokio::test]
async fn nodes_starting_together_on_an_empty_store_create_the_demo_app_and_operator_once() {
    use sqlx::Connection;
    let database = crate::cluster_helpers::Database::create().await;
    let redis = crate::cluster_helpers::Redis::start().await;
    // All three at once, on a store nobody has started: each must start (none refused by the
    // others' first start), and the first start must have happened once.
    let (a, b, c) = tokio::join!(
        crate::cluster_helpers::start_node("a", &redis, &database),
        crate::cluster_helpers::start_node("b", &redis, &database),
        crate::cluster_helpers::start_node("c", &redis, &database)
    );
    let mut conn = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connects to the cluster's database");
    let apps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apps")
        .fetch_one(&mut conn)
        .await
        .expect("counts apps");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut conn)
        .await
        .expect("counts users");
    let _ = conn.close().await;
    assert_eq!((apps, users), (1, 1), "one demo app and one operator");
    drop((a, b, c));
}
