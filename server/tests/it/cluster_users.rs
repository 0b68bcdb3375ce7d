//! Cluster mode (issue 14): signed-in users, watchlists and cache channels' last events are
//! cluster-wide. Three `herald` processes on a Redis of the test's own: online/offline across
//! nodes (online at the first socket anywhere, offline at the last), initial watchlist
//! statuses that see every node, terminate, a killed node's users going offline within 15 s,
//! Redis restarted mid-test, a user who left during a Redis outage going offline for watchers
//! once Redis returns, and a cache channel's last event replayed on another node.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster_helpers::{eventually, trigger_news as trigger, TestCluster};
use crate::helpers::{data_of, now, post_signed, signed_params, Client, APP_ID, KEY, SECRET};

const WATCHLIST: &str = "pusher_internal:watchlist_events";

/// The data of the next `pusher_internal:watchlist_events` frames, within `limit` (longer
/// than a frame's usual wait: the client pings and reads up to the pong, over and over, other
/// frames skipped): all those that came before the first pong that followed one.
async fn watchlist_changes(client: &mut Client, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        assert!(
            Instant::now() < deadline,
            "no watchlist event within {limit:?}"
        );
        client
            .send_json(json!({"event":"pusher:ping","data":{}}))
            .await;
        let mut changes = Vec::new();
        loop {
            let frame = client.next_json().await;
            if frame["event"] == WATCHLIST {
                changes.push(data_of(&frame));
            } else if frame["event"] == "pusher:pong" {
                break;
            }
        }
        if !changes.is_empty() {
            return changes;
        }
        crate::helpers::pause(Duration::from_millis(200)).await;
    }
}

/// The one next watchlist change, within `limit`.
async fn next_watchlist(client: &mut Client, limit: Duration) -> Value {
    let mut changes = watchlist_changes(client, limit).await;
    assert_eq!(changes.len(), 1, "one change: {changes:?}");
    changes.remove(0)
}

fn online(ids: &[&str]) -> Value {
    json!({"events":[{"name":"online","user_ids":ids}]})
}

fn offline(ids: &[&str]) -> Value {
    json!({"events":[{"name":"offline","user_ids":ids}]})
}

async fn signed_in(node: &crate::cluster_helpers::Node, user_data: &str) -> Client {
    let mut client = node.connect().await;
    client.sign_in(user_data).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchlists_see_users_on_every_node_online_at_the_first_socket_offline_at_the_last() {
    let mut cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let _u2 = signed_in(b, r#"{"id":"u2"}"#).await;
    let mut u3 = signed_in(c, r#"{"id":"u3"}"#).await;

    // The initial statuses reflect the other nodes' users.
    let mut watcher = a.connect().await;
    watcher
        .sign_in(r#"{"id":"w","watchlist":["u1","u2","u3"]}"#)
        .await;
    let initial = watcher.expect_next(WATCHLIST).await;
    assert_eq!(
        data_of(&initial),
        json!({"events":[{"name":"online","user_ids":["u2","u3"]},{"name":"offline","user_ids":["u1"]}]})
    );
    cluster.redis.wait_for_listeners(3).await;

    // u1 on node B: online on node A; a second socket on node C changes nothing.
    let u1_on_b = signed_in(b, r#"{"id":"u1"}"#).await;
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(5)).await,
        online(&["u1"])
    );
    let u1_on_c = signed_in(c, r#"{"id":"u1"}"#).await;
    watcher.expect_silence(Duration::from_millis(500)).await;
    // Offline only when the user's last socket on any node closes.
    u1_on_b.close().await;
    watcher.expect_silence(Duration::from_millis(800)).await;
    u1_on_c.close().await;
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(5)).await,
        offline(&["u1"])
    );

    // A watcher on node C hears of a user of node A too.
    let mut watcher_on_c = c.connect().await;
    watcher_on_c
        .sign_in(r#"{"id":"w2","watchlist":["w"]}"#)
        .await;
    assert_eq!(
        data_of(&watcher_on_c.expect_next(WATCHLIST).await),
        online(&["w"])
    );

    // terminate_connections through node B closes u3's socket on node C: offline everywhere.
    let http = reqwest::Client::new();
    let response = post_signed(
        &http,
        &b.base(),
        &format!("/apps/{APP_ID}/users/u3/terminate_connections"),
        "{}".to_owned(),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let (code, _) = u3.expect_error().await;
    assert_eq!(code, 4009);
    assert_eq!(u3.expect_close().await, Some(4009));
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(5)).await,
        offline(&["u3"])
    );

    // A graceful shutdown of node B sends its users' sign-outs before it exits: u2 is offline
    // at once, not after the survivors' sweep.
    let status = cluster.nodes[1].terminate().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(1)).await,
        offline(&["u2"])
    );
}

/// The cluster-wide count of `user`'s signed-in sockets in Redis.
async fn total_in_redis(cluster: &TestCluster, user: &str) -> Option<i64> {
    let mut conn = cluster.redis.connection().await;
    redis::cmd("HGET")
        .arg(format!("{}:su:u:{APP_ID}", cluster.redis.cluster))
        .arg(user)
        .query_async(&mut conn)
        .await
        .expect("HGET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_go_offline_within_15_s_and_a_redis_restart_converges() {
    let mut cluster = TestCluster::start().await;
    let mut watcher = cluster.nodes[0].connect().await;
    watcher
        .sign_in(r#"{"id":"w","watchlist":["u5","u6"]}"#)
        .await;
    assert_eq!(
        data_of(&watcher.expect_next(WATCHLIST).await),
        offline(&["u5", "u6"])
    );
    cluster.redis.wait_for_listeners(1).await;
    let _u5 = signed_in(&cluster.nodes[2], r#"{"id":"u5"}"#).await;
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(5)).await,
        online(&["u5"])
    );
    let u6 = signed_in(&cluster.nodes[1], r#"{"id":"u6"}"#).await;
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(5)).await,
        online(&["u6"])
    );

    // kill -9 of node C: a survivor takes u5 offline within 15 s.
    let killed = Instant::now();
    cluster.nodes[2].kill().await;
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(15)).await,
        offline(&["u5"])
    );
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(total_in_redis(&cluster, "u5").await, None);

    // Redis restarted empty: the nodes register their users again.
    cluster.redis.kill().await;
    cluster.redis.restart().await;
    let restored = &cluster;
    eventually(
        "the users are registered again",
        Duration::from_secs(15),
        || async {
            total_in_redis(restored, "u6").await == Some(1)
                && total_in_redis(restored, "w").await == Some(1)
        },
    )
    .await;
    cluster.redis.wait_for_listeners(2).await;
    // Transitions flow again: u6's last socket closes, the watcher on node A hears of it
    // (perhaps after an "online u6" the re-registration published).
    u6.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    'heard: loop {
        for change in watchlist_changes(&mut watcher, Duration::from_secs(10)).await {
            if change == offline(&["u6"]) {
                break 'heard;
            }
            assert_eq!(change, online(&["u6"]), "only u6's statuses");
        }
        assert!(Instant::now() < deadline, "u6 went offline in time");
    }
    // The "offline" heard may be the watchers' re-sync reading the emptied Redis before u6's
    // node registered it again; the cluster still converges on u6 gone once the close's
    // sign-out is through.
    eventually(
        "u6's count leaves Redis",
        Duration::from_secs(10),
        || async { total_in_redis(&cluster, "u6").await.is_none() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_channels_last_event_is_replayed_on_any_node() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    // Published through node A while nobody anywhere listens to the app.
    trigger(&http, &a.base(), "cache-news", "first").await;
    let mut on_b = b.connect().await;
    on_b.subscribe("cache-news").await;
    let replay = on_b.expect_next("news").await;
    assert_eq!(replay["data"], "first");

    // A newer one through node C reaches node B's subscriber, and a new subscriber on node A
    // (whose own copy is older) gets the newest.
    cluster.redis.wait_for_listeners(1).await;
    trigger(&http, &c.base(), "cache-news", "second").await;
    // The REST API on node A (nobody subscribed there: its own copy is still "first") answers
    // the last event from Redis, the moment the trigger through node C was answered.
    let full = format!("/apps/{APP_ID}/channels/cache-news");
    let query = [("info", "cache")];
    let params = signed_params("GET", &full, &query, None, KEY, SECRET, now());
    let info: Value = http
        .get(format!("{}{full}", a.base()))
        .query(&params)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(info["cache"]["data"], "second", "{info}");
    assert!(
        info["cache"]["ttl"]
            .as_u64()
            .is_some_and(|ttl| ttl > 0 && ttl <= 1800),
        "{info}"
    );
    assert_eq!(on_b.expect_next("news").await["data"], "second");
    let mut on_a = a.connect().await;
    on_a.subscribe("cache-news").await;
    assert_eq!(on_a.expect_next("news").await["data"], "second");

    // Nothing published anywhere: a miss.
    let mut empty = c.connect().await;
    empty.subscribe("cache-empty").await;
    let miss = empty.expect_next("pusher:cache_miss").await;
    assert_eq!(miss["channel"], "cache-empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_left_during_a_redis_outage_goes_offline_for_watchers_once_redis_returns() {
    let mut cluster = TestCluster::start().await;
    let mut watcher = cluster.nodes[0].connect().await;
    watcher.sign_in(r#"{"id":"w","watchlist":["u7"]}"#).await;
    assert_eq!(
        data_of(&watcher.expect_next(WATCHLIST).await),
        offline(&["u7"])
    );
    cluster.redis.wait_for_listeners(1).await;
    let u7 = signed_in(&cluster.nodes[1], r#"{"id":"u7"}"#).await;
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(5)).await,
        online(&["u7"])
    );

    // u7's socket closes while Redis is down; Redis comes back empty, so no script ever sees
    // the transition: the watcher learns it from the re-sync after its node listens again.
    cluster.redis.kill().await;
    u7.close().await;
    crate::helpers::pause(Duration::from_millis(500)).await;
    cluster.redis.restart().await;
    assert_eq!(
        next_watchlist(&mut watcher, Duration::from_secs(15)).await,
        offline(&["u7"])
    );
}
