//! Cluster mode (issue 14): what the cluster-wide users and cache channels keep in Redis stays
//! within the app's caps, whatever a tenant publishes.

use std::collections::BTreeSet;

use crate::cluster_helpers::{start_cluster_with_limits, trigger_news as trigger};
use crate::helpers::APP_ID;

/// The channels whose last event the default app keeps in Redis.
async fn kept(redis: &crate::cluster_helpers::Redis) -> BTreeSet<String> {
    let prefix = format!("{}:cache:{APP_ID}:", redis.cluster);
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    keys.iter()
        .map(|key| key.strip_prefix(&prefix).expect("the prefix").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_keep_more_cache_channels_or_bytes_in_redis_than_its_caps() {
    // 3 cache channels, so 3 x 200 = 600 bytes of cached events (data and frame).
    let cluster = start_cluster_with_limits(&[
        "--max-cache-channels",
        "3",
        "--max-event-payload-bytes",
        "200",
    ])
    .await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let mut watcher = b.connect().await;
    for channel in ["cache-2", "cache-6"] {
        watcher.subscribe(channel).await;
        watcher.expect_next("pusher:cache_miss").await;
    }
    cluster.redis.wait_for_listeners(1).await;

    // Six channels through one node (in order): the last one heard on node B means all six went
    // through Redis; only the first three are kept there, and every one is still published.
    for n in 1..=6 {
        trigger(&http, &a.base(), &format!("cache-{n}"), "x").await;
    }
    assert_eq!(watcher.expect_next("news").await["channel"], "cache-2");
    assert_eq!(watcher.expect_next("news").await["channel"], "cache-6");
    let first_three: BTreeSet<String> = ["cache-1", "cache-2", "cache-3"].map(str::to_owned).into();
    assert_eq!(kept(&cluster.redis).await, first_three);

    // Bytes: a large event replacing cache-1's fits (3 small ones and it); a second one to
    // cache-2 does not, and cache-2's older event is not kept either (as on a node).
    let large = "y".repeat(180);
    trigger(&http, &a.base(), "cache-1", &large).await;
    trigger(&http, &a.base(), "cache-2", &large).await;
    assert_eq!(watcher.expect_next("news").await["data"], large.as_str());
    let now: BTreeSet<String> = ["cache-1", "cache-3"].map(str::to_owned).into();
    assert_eq!(kept(&cluster.redis).await, now);
    let mut conn = cluster.redis.connection().await;
    let cache_1: String = redis::cmd("GET")
        .arg(format!("{}:cache:{APP_ID}:cache-1", cluster.redis.cluster))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert!(cache_1.contains(&large), "{cache_1}");
    // The index expires too.
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{}:cache:idx:{APP_ID}", cluster.redis.cluster))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(ttl > 0 && ttl <= 1800, "{ttl}");
}
