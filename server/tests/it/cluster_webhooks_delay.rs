//! The vacate delay and `cache_miss` across nodes (issue 14): a channel or member that comes
//! back on another node within the delay (3 s) sends no `channel_vacated` / `member_removed`
//! and no second `channel_occupied` / `member_added`; one that leaves for good is reported
//! once, about 3 s later; the member frames to clients are not delayed; two misses on two
//! nodes on the same empty cache channel send one `cache_miss`; channel churn leaves no
//! pending vacate behind in Redis.

use std::time::Duration;

use serde_json::json;

use crate::cluster_helpers::{eventually, wait_for, Database, Node, Redis};
use crate::helpers::{data_of, APP_ID};
use crate::webhook_receiver::{self, add_webhook_on_every_node, nodes_with_webhooks, received};
use crate::webhooks::Receiver;

/// How many received events are `name` on `channel` (and for `user`, if given).
fn count(receiver: &Receiver, name: &str, channel: &str, user: Option<&str>) -> usize {
    webhook_receiver::count(&received(receiver), name, channel, user)
}

/// Two nodes delivering every channel, member and cache_miss webhook to `receiver`, each known
/// to have the endpoint.
async fn start(receiver: &Receiver) -> (Redis, Database, Vec<Node>) {
    let (redis, database, nodes) = nodes_with_webhooks(&["a", "b"]).await;
    add_webhook_on_every_node(
        receiver,
        &database,
        &nodes,
        &[
            "channel_occupied",
            "channel_vacated",
            "member_added",
            "member_removed",
            "cache_miss",
        ],
    )
    .await;
    (redis, database, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comebacks_on_another_node_within_the_delay_send_no_webhooks_and_misses_report_once() {
    let receiver = Receiver::start().await;
    let (_redis, _database, nodes) = start(&receiver).await;
    let [a, b] = &nodes[..] else { unreachable!() };

    // A public channel left on A and subscribed again on B within the delay.
    let channel = "comeback";
    let mut on_a = a.connect().await;
    on_a.subscribe(channel).await;
    eventually(
        "the channel is occupied",
        Duration::from_secs(5),
        || async { count(&receiver, "channel_occupied", channel, None) == 1 },
    )
    .await;
    on_a.close().await;
    crate::helpers::pause(Duration::from_millis(500)).await;
    let mut on_b = b.connect().await;
    on_b.subscribe(channel).await;

    // A member leaves on A and comes back on B within the delay; the frames are not delayed.
    let room = "presence-comeback";
    let mut stays = a.connect().await;
    stays.subscribe_presence(room, "u2", json!({})).await;
    let mut u1_on_a = a.connect().await;
    u1_on_a.subscribe_presence(room, "u1", json!({})).await;
    eventually("u1 is added", Duration::from_secs(5), || async {
        count(&receiver, "member_added", room, Some("u1")) == 1
    })
    .await;
    u1_on_a.close().await;
    let removed = wait_for(
        &mut stays,
        "pusher_internal:member_removed",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(data_of(&removed)["user_id"], "u1");
    let mut u1_on_b = b.connect().await;
    u1_on_b.subscribe_presence(room, "u1", json!({})).await;
    let added = wait_for(
        &mut stays,
        "pusher_internal:member_added",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(data_of(&added)["user_id"], "u1");

    // Two clients on two nodes miss the same empty cache channel.
    let cache = "cache-empty";
    let mut miss_a = a.connect().await;
    miss_a.subscribe(cache).await;
    let mut miss_b = b.connect().await;
    miss_b.subscribe(cache).await;

    // Past the delay: nothing was reported for the comebacks.
    for _ in 0..4 {
        crate::helpers::pause(Duration::from_secs(1)).await;
    }
    assert_eq!(count(&receiver, "channel_vacated", channel, None), 0);
    assert_eq!(count(&receiver, "channel_occupied", channel, None), 1);
    assert_eq!(count(&receiver, "member_removed", room, Some("u1")), 0);
    assert_eq!(count(&receiver, "member_added", room, Some("u1")), 1);
    assert_eq!(
        count(&receiver, "cache_miss", cache, None),
        1,
        "{:?}",
        received(&receiver)
    );

    // Left for good: reported once, after the delay.
    on_b.close().await;
    u1_on_b.close().await;
    let left = tokio::time::Instant::now();
    eventually(
        "the vacate is reported",
        Duration::from_secs(10),
        || async {
            count(&receiver, "channel_vacated", channel, None) == 1
                && count(&receiver, "member_removed", room, Some("u1")) == 1
        },
    )
    .await;
    let after = left.elapsed();
    assert!(
        after >= Duration::from_millis(2_500) && after < Duration::from_secs(6),
        "reported {after:?} after the leave"
    );
    crate::helpers::pause(Duration::from_secs(1)).await;
    assert_eq!(count(&receiver, "channel_vacated", channel, None), 1);
    assert_eq!(count(&receiver, "member_removed", room, Some("u1")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_vacates_from_channel_churn_are_all_taken_and_redis_is_left_empty() {
    let receiver = Receiver::start().await;
    let (redis, database, nodes) = nodes_with_webhooks(&["a"]).await;
    // An app wanting neither vacate webhook (no endpoint yet) records no pending vacate.
    let pending = format!("{}:st:vacating:{APP_ID}", redis.cluster);
    let occupied = format!("{}:st:occ:{APP_ID}", redis.cluster);
    let mut conn = redis.connection().await;
    let mut quiet = nodes[0].connect().await;
    quiet.subscribe("quiet").await;
    quiet.close().await;
    eventually(
        "the quiet channel is vacated",
        Duration::from_secs(5),
        || {
            let mut conn = conn.clone();
            let occupied = occupied.clone();
            async move {
                let held: bool = redis::cmd("HEXISTS")
                    .arg(&occupied)
                    .arg("quiet")
                    .query_async(&mut conn)
                    .await
                    .expect("HEXISTS");
                !held
            }
        },
    )
    .await;
    let recorded: i64 = redis::cmd("ZCARD")
        .arg(&pending)
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(
        recorded, 0,
        "nothing pending for an app wanting no vacate webhook"
    );
    // Now the app wants `channel_vacated`.
    add_webhook_on_every_node(
        &receiver,
        &database,
        &nodes,
        &["channel_occupied", "channel_vacated"],
    )
    .await;
    let node = &nodes[0];
    // Clients churning channels (within each connection's subscribe rate).
    let mut clients = Vec::new();
    for c in 0..30 {
        let mut client = node.connect().await;
        for n in 0..8 {
            let channel = format!("churn-{c}-{n}");
            client.subscribe(&channel).await;
            client
                .send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}))
                .await;
        }
        clients.push(client);
    }
    let apps = format!("{}:st:vacating-apps", redis.cluster);
    let leased = format!("{}:st:vacate-lease:{APP_ID}", redis.cluster);
    let held: i64 = redis::cmd("ZCARD")
        .arg(&pending)
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert!(held > 0, "the last leaves are pending for the delay");
    eventually(
        "every pending vacate is taken and confirmed",
        Duration::from_secs(15),
        || {
            let mut conn = conn.clone();
            let (pending, apps, leased) = (pending.clone(), apps.clone(), leased.clone());
            async move {
                let (left, listed, unconfirmed): (i64, i64, i64) = redis::pipe()
                    .cmd("ZCARD")
                    .arg(&pending)
                    .cmd("ZCARD")
                    .arg(&apps)
                    .cmd("ZCARD")
                    .arg(&leased)
                    .query_async(&mut conn)
                    .await
                    .expect("ZCARD, ZCARD, ZCARD");
                left == 0 && listed == 0 && unconfirmed == 0
            }
        },
    )
    .await;
}
