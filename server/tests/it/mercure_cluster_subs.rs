//! Active Mercure subscriptions in a cluster: the subscriptions API on any node lists every
//! live node's subscriptions, the subscription events reach every node's watchers, a killed
//! node's subscriptions leave within the heartbeat TTL, and an app's shared subscriptions are
//! capped.

use std::time::Duration;

use serde_json::Value;

use crate::cluster_helpers::{eventually, Node, TestCluster};
use crate::helpers::APP_ID;
use crate::mercure_cluster_history::{open_on, publish_on};
use crate::mercure_helpers::token07;

/// The app's subscriptions namespace (the documents' ids are under it).
fn namespace() -> String {
    format!("/apps/{APP_ID}/.well-known/mercure/subscriptions")
}

/// `GET` of the subscriptions API at `path` on `node`, reading everything: the answer.
async fn api(http: &reqwest::Client, node: &Node, path: &str) -> Value {
    let response = http
        .get(format!("{}{path}", node.base()))
        .bearer_auth(token07(&["*"], &[]))
        .send()
        .await
        .expect("API request");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("API JSON")
}

/// The subscribers' ids the API on `node` lists for topic `topic`.
async fn listed(http: &reqwest::Client, node: &Node, topic: &str) -> Vec<String> {
    let answer = api(http, node, &namespace()).await;
    answer["subscriptions"]
        .as_array()
        .expect("a collection")
        .iter()
        .filter(|doc| doc["topic"] == topic)
        .map(|doc| doc["subscriber"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// A watcher of every subscription event (draft-07 template), on `node`.
async fn watch(http: &reqwest::Client, node: &Node) -> crate::mercure_helpers::Sse {
    let query = format!("topic={}/{{topic}}/{{subscriber}}", namespace())
        .replace('{', "%7B")
        .replace('}', "%7D");
    open_on(http, node, &query, &token07(&["*"], &[]), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_on_one_node_is_listed_and_announced_on_another() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let mut watcher = watch(&http, b).await;
    // B's watcher is known cluster-wide (the watch key) before A's subscribe.
    let watch_key = format!("{}:mercure:{APP_ID}:watch", cluster.redis.cluster);
    eventually("B's watcher is shared", Duration::from_secs(5), || {
        cluster.redis.exists(&watch_key)
    })
    .await;
    let sse = open_on(&http, a, "topic=books", &token07(&["*"], &[]), &[]).await;
    // The event of A's subscription reaches B's watcher (B's own may come first).
    let doc = loop {
        let event = watcher.next().await;
        let doc: Value = serde_json::from_str(&event.data).expect("a document");
        if doc["topic"] == "books" {
            break doc;
        }
    };
    assert_eq!(doc["active"], true);
    let subscriber = doc["subscriber"].as_str().unwrap().to_owned();
    // Listed by the API on every node (A from memory, B and C from Redis).
    for node in [a, b, c] {
        assert_eq!(listed(&http, node, "books").await, vec![subscriber.clone()]);
    }
    // One subscription by its id, asked on C.
    let one = api(&http, c, doc["id"].as_str().unwrap()).await;
    assert_eq!(one["subscriber"], subscriber.as_str());
    // The API's lastEventID is the history's last id, whichever node published it.
    // (C reads Redis at most once a second for the API: within a second.)
    let id = publish_on(&http, a, &[("topic", "other"), ("data", "x")]).await;
    eventually("C's lastEventID", Duration::from_secs(3), || async {
        api(&http, c, &namespace()).await["lastEventID"] == id.as_str()
    })
    .await;
    // Leaving: an inactive event on B, and gone from every node's API.
    drop(sse);
    let doc = loop {
        let event = watcher.next().await;
        let doc: Value = serde_json::from_str(&event.data).expect("a document");
        if doc["topic"] == "books" {
            break doc;
        }
    };
    assert_eq!(doc["active"], false);
    assert_eq!(doc["subscriber"], subscriber.as_str());
    for node in [a, b, c] {
        eventually(
            "the subscription leaves",
            Duration::from_secs(5),
            || async { listed(&http, node, "books").await.is_empty() },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_subscriptions_leave_the_api_within_the_heartbeat_ttl() {
    let mut cluster = TestCluster::start().await;
    let http = reqwest::Client::new();
    let _sse = open_on(
        &http,
        &cluster.nodes[0],
        "topic=gone",
        &token07(&["*"], &[]),
        &[],
    )
    .await;
    eventually("listed on B", Duration::from_secs(5), || async {
        listed(&http, &cluster.nodes[1], "gone").await.len() == 1
    })
    .await;
    cluster.nodes[0].kill().await;
    let killed = tokio::time::Instant::now();
    // The heartbeat TTL (10 s) bounds it; a little more for the test's own polling.
    eventually(
        "the killed node's subscription leaves",
        Duration::from_secs(12),
        || async { listed(&http, &cluster.nodes[1], "gone").await.is_empty() },
    )
    .await;
    assert!(killed.elapsed() <= Duration::from_secs(12));
    // Its hash is removed by the next sync of a node with subscribers of the app (at most
    // 10 s later).
    let _other = open_on(
        &http,
        &cluster.nodes[2],
        "topic=kept",
        &token07(&["*"], &[]),
        &[],
    )
    .await;
    let set = format!("{}:mercure:{APP_ID}:subs", cluster.redis.cluster);
    let mut redis = cluster.redis.connection().await;
    let mut tags: Vec<String> = Vec::new();
    for _ in 0..60 {
        tags = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut redis)
            .await
            .unwrap();
        if tags.len() == 1 {
            break;
        }
        crate::helpers::pause(Duration::from_millis(100)).await;
    }
    assert_eq!(tags.len(), 1, "only the live node's tag: {tags:?}");
    eventually("listed on B", Duration::from_secs(3), || async {
        listed(&http, &cluster.nodes[1], "kept").await.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_s_shared_subscriptions_are_capped() {
    let cluster = TestCluster::start().await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    // A live "node" (its tag key set) that already shares the app's whole allowance.
    let name = &cluster.redis.cluster;
    let mut redis = cluster.redis.connection().await;
    let tag = "4242";
    let _: () = redis::cmd("SET")
        .arg(format!("{name}:socket-tag:{tag}"))
        .arg("fake")
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(format!("{name}:mercure:{APP_ID}:subs"))
        .arg(tag)
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut fill = redis::cmd("HSET");
    fill.arg(format!("{name}:mercure:{APP_ID}:subs:{tag}"));
    for n in 0..1_000 {
        let id = format!("{}/f/{n}", namespace());
        let doc = serde_json::json!({"id": id, "topic": "f", "subscriber": format!("s{n}")});
        fill.arg(id).arg(doc.to_string());
    }
    let _: () = fill.query_async(&mut redis).await.unwrap();
    assert_eq!(
        api(&http, b, &namespace()).await["subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1_000
    );
    // A subscriber on A: past the cap, listed by A alone (from memory), not shared.
    let _sse = open_on(&http, a, "topic=late", &token07(&["*"], &[]), &[]).await;
    eventually("listed on A", Duration::from_secs(5), || async {
        listed(&http, a, "late").await.len() == 1
    })
    .await;
    crate::helpers::pause(Duration::from_millis(500)).await;
    assert!(
        listed(&http, b, "late").await.is_empty(),
        "not shared past the cap"
    );
    let answer = api(&http, b, &namespace()).await;
    assert_eq!(answer["subscriptions"].as_array().unwrap().len(), 1_000);
    // Room again (the fake node is gone): shared at A's next refresh (every 10 s).
    let _: () = redis::cmd("DEL")
        .arg(format!("{name}:socket-tag:{tag}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    eventually(
        "shared once there is room",
        Duration::from_secs(25),
        || async { listed(&http, b, "late").await.len() == 1 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_whose_client_leaves_while_redis_is_read_leaves_no_registration() {
    use tokio::io::AsyncWriteExt;
    let cluster = TestCluster::start().await;
    let a = &cluster.nodes[0];
    let http = reqwest::Client::new();
    // Redis answers nothing: a resuming subscribe waits for it (2 s per step at least).
    cluster.redis.freeze();
    let mut client = tokio::net::TcpStream::connect(&a.address)
        .await
        .expect("connects");
    let head = format!(
        "GET /apps/{APP_ID}/.well-known/mercure?topic=leak HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {}\r\nlast-event-id: earliest\r\n\r\n",
        token07(&["*"], &[])
    );
    client.write_all(head.as_bytes()).await.expect("head sent");
    // Registered (pending) while the subscribe waits: listed by its node.
    eventually(
        "the pending subscription is listed",
        Duration::from_secs(2),
        || async { listed(&http, a, "leak").await.len() == 1 },
    )
    .await;
    let left = tokio::time::Instant::now();
    drop(client);
    crate::helpers::pause(Duration::from_millis(100)).await;
    // Gone at once, before the subscribe would have finished waiting for Redis by itself.
    assert!(
        listed(&http, a, "leak").await.is_empty(),
        "the registration leaked"
    );
    assert!(left.elapsed() < Duration::from_secs(2));
    cluster.redis.thaw();
}

/// Fills Redis with a live fake node (tag `tag`) sharing `count` documents of about `size`
/// bytes each under the namespace.
async fn fake_node(cluster: &TestCluster, tag: &str, count: usize, size: usize) {
    let name = &cluster.redis.cluster;
    let mut redis = cluster.redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{name}:socket-tag:{tag}"))
        .arg("fake")
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(format!("{name}:mercure:{APP_ID}:subs"))
        .arg(tag)
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut fill = redis::cmd("HSET");
    fill.arg(format!("{name}:mercure:{APP_ID}:subs:{tag}"));
    for n in 0..count {
        let id = format!("{}/f/{n}", namespace());
        let doc = serde_json::json!({
            "id": id, "topic": "f", "subscriber": format!("s{n}"), "pad": "x".repeat(size),
        });
        fill.arg(id).arg(doc.to_string());
    }
    let _: () = fill.query_async(&mut redis).await.unwrap();
}

/// The subscriptions API draws on the app's REST read budget (a loop of calls gets 429, not a
/// Redis read each), and one answer holds at most 1 MiB of documents however many are shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriptions_api_is_rate_limited_and_its_answer_capped_in_bytes() {
    // 3 reads per second for the app: 1 per node.
    let cluster =
        crate::cluster_helpers::start_cluster_with_limits(&["--max-read-requests-per-second", "3"])
            .await;
    let b = &cluster.nodes[1];
    // 1,000 documents of about 2 KiB: about 2 MiB shared.
    fake_node(&cluster, "4243", 1_000, 2_000).await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}{}", b.base(), namespace()))
        .bearer_auth(token07(&["*"], &[]))
        .send()
        .await
        .expect("API request");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.expect("API body");
    let answer: Value = serde_json::from_str(&body).expect("API JSON");
    let listed = answer["subscriptions"].as_array().unwrap().len();
    assert!((400..1_000).contains(&listed), "{listed} documents");
    assert!(body.len() <= (1 << 20) + 64 * 1024, "{} bytes", body.len());
    // A burst of calls: B's share (1 per second) passes, the rest get 429.
    let mut refused = 0;
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        let response = http
            .get(format!("{}{}/f/1", b.base(), namespace()))
            .bearer_auth(token07(&["*"], &[]))
            .send()
            .await
            .expect("API request");
        match response.status().as_u16() {
            200 => {}
            429 => {
                assert_eq!(response.headers()["retry-after"], "1");
                refused += 1;
            }
            other => panic!("status {other}"),
        }
    }
    assert!(
        refused >= 5,
        "only {refused} refused in {:?}",
        started.elapsed()
    );
}

/// A node whose documents are all in Redis does not rewrite its hash at the refresh (every
/// 10 s), even when a subscribe repeats a topic: its value, changed behind its back, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_does_not_rewrite_a_complete_hash() {
    let cluster = TestCluster::start().await;
    let a = &cluster.nodes[0];
    let http = reqwest::Client::new();
    let _sse = open_on(
        &http,
        a,
        "topic=twice&topic=twice",
        &token07(&["*"], &[]),
        &[],
    )
    .await;
    let name = &cluster.redis.cluster;
    let mut redis = cluster.redis.connection().await;
    let set = format!("{name}:mercure:{APP_ID}:subs");
    let mut tags: Vec<String> = Vec::new();
    for _ in 0..50 {
        tags = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut redis)
            .await
            .unwrap();
        if !tags.is_empty() {
            break;
        }
        crate::helpers::pause(Duration::from_millis(100)).await;
    }
    let hash = format!("{set}:{}", tags.first().expect("A's tag"));
    let ids: Vec<String> = redis::cmd("HKEYS")
        .arg(&hash)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "one document for a repeated topic: {ids:?}");
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg(&ids[0])
        .arg("marker")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Past a refresh (10 s) and the turn after it, checked every second.
    for _ in 0..12 {
        crate::helpers::pause(Duration::from_secs(1)).await;
        let value: String = redis::cmd("HGET")
            .arg(&hash)
            .arg(&ids[0])
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(value, "marker", "the hash was rewritten");
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&hash)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 20_000, "refreshed ({ttl} ms left)");
}

/// With no watcher of the namespace on any node, a subscribe's and an unsubscribe's syncs carry
/// no event bodies to Redis (seen with `MONITOR`: the sync script's event count is 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscription_event_goes_to_redis_while_nobody_watches() {
    use tokio::io::AsyncBufReadExt;
    let cluster = TestCluster::start().await;
    let a = &cluster.nodes[0];
    let http = reqwest::Client::new();
    let mut monitor = tokio::process::Command::new("redis-cli")
        .args(["-p", &cluster.redis.port.to_string(), "monitor"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-cli runs");
    let mut lines = tokio::io::BufReader::new(monitor.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("OK"));
    let sse = open_on(&http, a, "topic=quiet", &token07(&["*"], &[]), &[]).await;
    eventually("listed on A", Duration::from_secs(5), || async {
        listed(&http, a, "quiet").await.len() == 1
    })
    .await;
    drop(sse);
    // The sync script's calls (its third key is the watch key): the add, then the removal.
    let watch_key = format!("\"{}:mercure:{APP_ID}:watch\"", cluster.redis.cluster);
    let mut syncs = 0;
    while syncs < 2 {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("the syncs within 5 s")
            .unwrap()
            .expect("monitor output");
        if !line.contains(&watch_key) || !line.to_lowercase().contains("\"evalsha\"") {
            continue;
        }
        let args: Vec<&str> = line.split("\" \"").collect();
        // evalsha, sha, 3, 3 keys, then ARGV[1..]: ARGV[11] is the event count.
        assert_eq!(args[16], "0", "events shipped while nobody watches: {line}");
        syncs += 1;
    }
}

/// The next subscription event on `watcher` (within `limit`) whose document's topic is `topic`
/// (the watchers' own and each other's events skipped); `None` when none came in time.
async fn next_for(
    watcher: &mut crate::mercure_helpers::Sse,
    topic: &str,
    limit: Duration,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = watcher.next_within(left).await?;
        let doc: Value = serde_json::from_str(&event.data).expect("a document");
        if doc["topic"] == topic {
            return Some(doc);
        }
    }
}

/// The watchers' template (draft-07) as its documents name it.
fn watch_template() -> String {
    format!("{}/{{topic}}/{{subscriber}}", namespace())
}

/// A watcher's stream opens once its node set the watch key and hears the app's channel: its
/// own subscription's event is its first, and a subscription made on another node right after
/// it opened (no wait for the watch key) is announced to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_its_own_subscription_and_every_later_one() {
    let cluster = TestCluster::start().await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let mut watcher = watch(&http, b).await;
    let own = next_for(&mut watcher, &watch_template(), Duration::from_secs(5))
        .await
        .expect("the watcher's own subscription event");
    assert_eq!(own["active"], true);
    let _sse = open_on(&http, a, "topic=books", &token07(&["*"], &[]), &[]).await;
    let doc = next_for(&mut watcher, "books", Duration::from_secs(5))
        .await
        .expect("the subscription made on A right after the watcher opened");
    assert_eq!(doc["active"], true);
}

/// A killed node's subscriptions are announced inactive to every watcher allowed to read them,
/// once (by the one survivor that removed the node's hash), within the heartbeat TTL and a
/// sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_subscriptions_are_announced_inactive_once() {
    let mut cluster = TestCluster::start().await;
    let http = reqwest::Client::new();
    let mut on_b = watch(&http, &cluster.nodes[1]).await;
    let mut on_c = watch(&http, &cluster.nodes[2]).await;
    // A watcher whose token reads no subscription topic: it gets none of these private events.
    let query = format!("topic={}", watch_template())
        .replace('{', "%7B")
        .replace('}', "%7D");
    let mut blind = open_on(
        &http,
        &cluster.nodes[2],
        &query,
        &token07(&["https://example.com/nothing"], &[]),
        &[],
    )
    .await;
    let sse = open_on(
        &http,
        &cluster.nodes[0],
        "topic=gone",
        &token07(&["*"], &[]),
        &[],
    )
    .await;
    let mut subscriber = String::new();
    for watcher in [&mut on_b, &mut on_c] {
        let doc = next_for(watcher, "gone", Duration::from_secs(5))
            .await
            .expect("the active event");
        assert_eq!(doc["active"], true);
        subscriber = doc["subscriber"].as_str().unwrap().to_owned();
    }
    cluster.nodes[0].kill().await;
    drop(sse);
    // The tag key expires within 10 s, a survivor's refresh (every 10 s) removes the hash.
    let killed = tokio::time::Instant::now();
    for watcher in [&mut on_b, &mut on_c] {
        let left = Duration::from_secs(30).saturating_sub(killed.elapsed());
        let doc = next_for(watcher, "gone", left)
            .await
            .expect("the inactive event of the killed node's subscription");
        assert_eq!(doc["active"], false);
        assert_eq!(doc["subscriber"], subscriber.as_str());
        assert!(doc["id"].as_str().unwrap().starts_with(&namespace()));
    }
    // Once: not again at the other survivor's next refresh (10 s later at most).
    let (again_b, again_c) = tokio::join!(
        next_for(&mut on_b, "gone", Duration::from_secs(11)),
        next_for(&mut on_c, "gone", Duration::from_secs(11)),
    );
    assert!(again_b.is_none() && again_c.is_none(), "announced twice");
    assert!(
        next_for(&mut blind, "gone", Duration::from_millis(100))
            .await
            .is_none(),
        "a watcher without the right got it"
    );
}

/// Sends `signal` (`-STOP`, `-CONT`) to `node`'s process.
fn signal(node: &Node, signal: &str) {
    let pid = node.child.id().expect("the node runs").to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn a_node_taken_for_dead_announces_its_live_subscriptions_again_once() {
    let cluster = TestCluster::start().await;
    let http = reqwest::Client::new();
    let mut on_b = watch(&http, &cluster.nodes[1]).await;
    let _sse = open_on(
        &http,
        &cluster.nodes[0],
        "topic=alive",
        &token07(&["*"], &[]),
        &[],
    )
    .await;
    let doc = next_for(&mut on_b, "alive", Duration::from_secs(5))
        .await
        .expect("the active event");
    assert_eq!(doc["active"], true);
    let subscriber = doc["subscriber"].as_str().unwrap().to_owned();
    // A stalls past its heartbeat's TTL (its connections stay open): B takes it for dead.
    signal(&cluster.nodes[0], "-STOP");
    let inactive = next_for(&mut on_b, "alive", Duration::from_secs(30)).await;
    signal(&cluster.nodes[0], "-CONT");
    let inactive = inactive.expect("the inactive event of the stalled node's subscription");
    assert_eq!(inactive["active"], false);
    // A's subscription is still live: once A notices, it is announced active again.
    let again = next_for(&mut on_b, "alive", Duration::from_secs(25))
        .await
        .expect("the live subscription announced active again");
    assert_eq!(again["active"], true);
    assert_eq!(again["subscriber"], subscriber.as_str());
    assert!(
        next_for(&mut on_b, "alive", Duration::from_secs(11))
            .await
            .is_none(),
        "announced again twice"
    );
    eventually("listed on B again", Duration::from_secs(5), || async {
        listed(&http, &cluster.nodes[1], "alive").await == [subscriber.clone()]
    })
    .await;
}
