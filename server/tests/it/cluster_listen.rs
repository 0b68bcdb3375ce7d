//! A subscribe in cluster mode is answered only once its node listens to the app's Redis
//! channel, however slowly Redis acknowledges the node's `SUBSCRIBE` (issue 14): a publish made
//! on another node right after the client's `subscription_succeeded` reaches it.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::cluster_helpers::{
    eventually, start_node, start_node_with, trigger_news, wait_for, Database, Redis,
};
use crate::helpers::pause;
use crate::proxy::HoldProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_is_answered_once_its_node_hears_the_app_even_when_redis_acknowledges_late() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let proxy = HoldProxy::to_redis(&redis).await;
    let a = start_node("a", &redis, &database).await;
    let through_proxy = proxy.redis_url();
    let b = start_node_with(
        "b",
        &redis,
        &database,
        &[("HERALD_REDIS_URL", through_proxy.as_str())],
    )
    .await;
    eventually(
        "node B is ready with Redis ok",
        Duration::from_secs(10),
        || async { b.ready().await.1["redis"]["status"] == "ok" },
    )
    .await;
    let mut bob = b.connect().await;

    // Node B's Redis answers 1.5 s late from now on: its SUBSCRIBE to the app's channel (the
    // app's first subscriber on B) is acknowledged only then. Node A's Redis is not slowed.
    proxy.hold();
    let asked = Instant::now();
    bob.send_json(json!({"event":"pusher:subscribe","data":{"channel":"news"}}))
        .await;
    let releaser = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            pause(Duration::from_millis(1000)).await;
            pause(Duration::from_millis(500)).await;
            proxy.release();
        })
    };
    bob.expect_event("pusher_internal:subscription_succeeded")
        .await;
    let answered_after = asked.elapsed();

    // At once, a publish on node A: node B must hear it.
    let http = reqwest::Client::new();
    trigger_news(&http, &a.base(), "news", "right after the answer").await;
    let frame = wait_for(&mut bob, "news", Duration::from_secs(5)).await;
    assert_eq!(frame["data"], "right after the answer", "{frame}");
    assert!(
        answered_after >= Duration::from_millis(1400),
        "the subscribe was answered {answered_after:?} after it was asked, before Redis could acknowledge node B's SUBSCRIBE"
    );
    releaser.await.unwrap();
}
