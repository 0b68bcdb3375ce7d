//! Cluster mode (issue 14, "Quotas and limits"): the daily message quota and the REST rate
//! limits hold per app across three nodes. Parallel publishers on every node admit exactly the
//! quota, refusals are the single node's, deliveries pass it by at most one publish's own
//! deliveries per node, the count survives a node restart and a Redis that lost its data and
//! reaches the usage history, a REST rate holds for requests spread over the nodes, and a
//! Redis killed mid-test bounds what each node admits.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::cluster_helpers::{
    eventually, herald_cli, start_cluster_with_limits, start_node, subscribe_private, Node, Redis,
    TestCluster,
};
use crate::helpers::{now, now_millis, pause, post_signed, signed_params, APP_ID, KEY, SECRET};

/// The refusal body on one node (`api::OVER_DAILY_QUOTA`).
const OVER_QUOTA: &str = "Over daily message quota";

/// Today's day number (as the usage counters define it).
fn today() -> i64 {
    now_millis().div_euclid(86_400_000)
}

/// The Redis key of the default app's daily count for today.
fn daily_key(redis: &Redis) -> String {
    format!("{}:daily:{APP_ID}:{}", redis.cluster, today())
}

/// The day's count in Redis (0 when the key is missing).
async fn redis_count(redis: &Redis) -> u64 {
    let mut conn = redis.connection().await;
    redis::cmd("GET")
        .arg(daily_key(redis))
        .query_async::<Option<u64>>(&mut conn)
        .await
        .expect("GET")
        .unwrap_or(0)
}

/// Today's messages in the usage history (PostgreSQL).
async fn history_count(cluster: &TestCluster) -> u64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&cluster.database.url)
        .await
        .expect("connects to the cluster's database");
    let messages: Option<i64> =
        sqlx::query_scalar("SELECT messages FROM usage_daily WHERE app_id = $1 AND day = $2")
            .bind(APP_ID)
            .bind(today())
            .fetch_optional(&mut conn)
            .await
            .expect("reads usage_daily");
    u64::try_from(messages.unwrap_or(0)).expect("a count")
}

/// A REST publish of one event on `channel` through `node`: the status and the body.
async fn publish(http: &reqwest::Client, node: &str, channel: &str) -> (u16, String) {
    let body = json!({"name": "daily", "channel": channel, "data": "x"}).to_string();
    let response = post_signed(http, node, &format!("/apps/{APP_ID}/events"), body).await;
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Publishes on `channel` through `node` until the first refusal, which must be the quota's
/// 403; returns how many were admitted (at most `limit`, else panics).
async fn publish_until_refused(
    http: &reqwest::Client,
    node: &str,
    channel: &str,
    limit: u64,
) -> u64 {
    let mut admitted = 0;
    loop {
        let (status, body) = publish(http, node, channel).await;
        match status {
            200 => admitted += 1,
            403 => {
                assert_eq!(body.trim(), OVER_QUOTA, "the single node's refusal");
                return admitted;
            }
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(admitted <= limit, "{node} admitted more than {limit}");
    }
}

/// Publishes through `node` until one is admitted (the node may not see a new quota yet, or
/// Redis may just have come back): `true` once admitted, within 10 s.
async fn until_admitted(http: &reqwest::Client, node: &str, channel: &str) {
    eventually("a publish is admitted", Duration::from_secs(10), || async {
        let (status, body) = publish(http, node, channel).await;
        assert!(status == 200 || status == 403, "{status}: {body}");
        status == 200
    })
    .await;
}

/// The day's count once the history and Redis agree on it (within 15 s).
async fn agreed_count(cluster: &TestCluster) -> u64 {
    eventually(
        "the history and Redis agree on the day's count",
        Duration::from_secs(15),
        || async { history_count(cluster).await == redis_count(&cluster.redis).await },
    )
    .await;
    history_count(cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_publishers_on_every_node_admit_exactly_the_daily_quota_which_survives_restarts() {
    const QUOTA: u64 = 300;
    const PER_NODE: usize = 4;
    let mut cluster = start_cluster_with_limits(&["--max-daily-messages", "300"]).await;
    let http = reqwest::Client::new();

    // A first publish takes a block: 300 left over 3 live nodes, a quarter of an even part,
    // 25. A graceful shutdown gives back the 24 unused. The block counts the nodes in the node
    // set, which each node joins with its first heartbeat: wait for all three.
    let nodes = format!("{}:nodes", cluster.redis.cluster);
    eventually(
        "the three nodes are in the node set",
        Duration::from_secs(10),
        || {
            let redis = &cluster.redis;
            let nodes = nodes.clone();
            async move {
                let mut conn = redis.connection().await;
                let live: u64 = redis::cmd("SCARD")
                    .arg(&nodes)
                    .query_async(&mut conn)
                    .await
                    .expect("SCARD");
                live == 3
            }
        },
    )
    .await;
    let (status, body) = publish(&http, &cluster.nodes[0].base(), "first").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(redis_count(&cluster.redis).await, 25, "one block granted");
    let mut first = cluster.nodes.remove(0);
    assert!(first.terminate().await.success());
    assert_eq!(
        redis_count(&cluster.redis).await,
        1,
        "the unused lease given back"
    );
    let again = start_node("a1", &cluster.redis, &cluster.database).await;
    cluster.nodes.insert(0, again);

    // Four publishers per node, in parallel, each until its first refusal; no subscribers, so
    // each admitted publish counts exactly one message (its channel).
    let mut publishers = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for p in 0..PER_NODE {
            let http = http.clone();
            let base = node.base();
            publishers.push(tokio::spawn(async move {
                publish_until_refused(&http, &base, &format!("daily-{n}-{p}"), QUOTA).await
            }));
        }
    }
    let mut parallel = 0;
    for publisher in publishers {
        parallel += publisher.await.expect("a publisher");
    }
    // A refusal means the node's lease was empty and Redis had nothing left; a refill that
    // outlived its wait (2 s) would refuse early, so one more pass on every node takes any
    // rest: the total must then be exactly the quota.
    let mut sweep = 0;
    for node in &cluster.nodes {
        sweep += publish_until_refused(&http, &node.base(), "daily-sweep", QUOTA).await;
    }
    assert_eq!(
        1 + parallel + sweep,
        QUOTA,
        "exactly the quota cluster-wide ({parallel} in parallel, then {sweep})"
    );
    assert!(
        1 + parallel >= QUOTA - 3,
        "the parallel publishers alone come within one publish per node of the quota: {parallel}"
    );
    assert_eq!(
        redis_count(&cluster.redis).await,
        QUOTA,
        "granted = admitted"
    );

    // The day's count reaches the usage history (flushed within 5 s).
    eventually(
        "the usage history has the day's count",
        Duration::from_secs(15),
        || async { history_count(&cluster).await == QUOTA },
    )
    .await;

    // A node restarted mid-day keeps the day's count: raised by 20, the cluster admits 20 more.
    let mut old = cluster.nodes.remove(0);
    assert!(old.terminate().await.success());
    let restarted = start_node("a2", &cluster.redis, &cluster.database).await;
    herald_cli(
        &cluster.database,
        &["apps", "update", APP_ID, "--max-daily-messages", "320"],
    )
    .await;
    until_admitted(&http, &restarted.base(), "after-restart").await;
    let more = 1 + publish_until_refused(&http, &restarted.base(), "after-restart", 40).await;
    assert_eq!(more, 20, "the restarted node continued the day's count");

    // Redis loses its data: the count starts again from what the nodes know (the store's
    // total and their own counts), not from zero.
    eventually(
        "the usage history has the new count",
        Duration::from_secs(15),
        || async { history_count(&cluster).await == QUOTA + 20 },
    )
    .await;
    cluster.redis.kill().await;
    cluster.redis.restart().await;
    herald_cli(
        &cluster.database,
        &["apps", "update", APP_ID, "--max-daily-messages", "330"],
    )
    .await;
    until_admitted(&http, &restarted.base(), "after-redis").await;
    let more = 1 + publish_until_refused(&http, &restarted.base(), "after-redis", 40).await;
    assert_eq!(
        more, 10,
        "a Redis that lost its data does not start the day again"
    );
    for node in &cluster.nodes {
        let (status, body) = publish(&http, &node.base(), "after-redis").await;
        assert_eq!((status, body.trim()), (403, OVER_QUOTA));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pass_the_quota_by_at_most_one_publishs_own_deliveries_per_node() {
    const QUOTA: u64 = 120;
    let cluster = start_cluster_with_limits(&["--max-daily-messages", "120"]).await;
    let http = reqwest::Client::new();
    // Node i has i + 1 subscribers of its own channel (subscribed nowhere else), so each of
    // its publishes costs 1 + (i + 1) and is delivered on that node only; the bound is the sum
    // of one publish's deliveries per node, 1 + 2 + 3.
    let mut subscribers = Vec::new();
    let mut own_deliveries = 0;
    for (i, node) in cluster.nodes.iter().enumerate() {
        for _ in 0..=i {
            let mut client = node.connect().await;
            client.subscribe(&format!("own-{i}")).await;
            subscribers.push(client);
        }
        own_deliveries += i as u64 + 1;
    }
    // A client event on a node that holds no lease yet waits for its refill (the session's
    // deferral), then is relayed: 1 for the event, 1 for the copy delivered.
    let mut talker = cluster.nodes[1].connect().await;
    subscribe_private(&mut talker, "private-talk").await;
    let mut listener = cluster.nodes[1].connect().await;
    subscribe_private(&mut listener, "private-talk").await;
    talker
        .send_json(json!({"event":"client-typing","channel":"private-talk","data":{"n":1}}))
        .await;
    listener.expect_event("client-typing").await;

    let mut publishers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let http = http.clone();
        let base = node.base();
        publishers.push(tokio::spawn(async move {
            publish_until_refused(&http, &base, &format!("own-{i}"), QUOTA).await
        }));
    }
    for publisher in publishers {
        publisher.await.expect("a publisher");
    }
    // More passes take any rest a refill that outlived its wait left behind, or that the
    // copies reserved for the grants (3 per message: the most subscriptions of a channel,
    // while a publish on node 0 or 1 makes fewer) held back until the debts came in (2 s).
    let redis = &cluster.redis;
    eventually(
        "the whole quota is admitted",
        Duration::from_secs(30),
        || async {
            for (i, node) in cluster.nodes.iter().enumerate() {
                publish_until_refused(&http, &node.base(), &format!("own-{i}"), QUOTA).await;
            }
            redis_count(redis).await >= QUOTA
        },
    )
    .await;
    // The debts are reported within a second; then Redis, the nodes and the history agree.
    let count = agreed_count(&cluster).await;
    assert!(
        (QUOTA..=QUOTA + own_deliveries).contains(&count),
        "the count {count} is within [{QUOTA}, {QUOTA} + {own_deliveries}]"
    );

    // A client event over the quota gets the single node's refusal, and the socket stays open.
    talker
        .send_json(json!({"event":"client-typing","channel":"private-talk","data":{}}))
        .await;
    let (code, message) = talker.expect_error().await;
    assert_eq!(code, serde_json::Value::Null);
    assert!(message.contains(OVER_QUOTA), "{message}");
    talker
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    talker.expect_next("pusher:pong").await;
}

/// A signed `GET /apps/{APP_ID}/channels` through `node`: the status.
async fn read(http: &reqwest::Client, node: &str) -> u16 {
    let path = format!("/apps/{APP_ID}/channels");
    let params = signed_params("GET", &path, &[], None, KEY, SECRET, now());
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    http.get(format!("{node}{path}?{}", query.join("&")))
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

/// Waits until `node` shares the backend event rate (15 per second) with three nodes: a batch
/// of 10 events, more than its share of 5, passes on a full bucket only (once a second), and
/// the refusal names the share.
async fn until_sharing_with_three(http: &reqwest::Client, node: &Node) {
    let batch: Vec<_> = (0..10)
        .map(|i| json!({"name": "probe", "channel": format!("probe-{i}"), "data": "x"}))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    let base = node.base();
    eventually(
        &format!("{} shares the rates with 3 nodes", node.id),
        Duration::from_secs(15),
        || async {
            let response = post_signed(
                http,
                &base,
                &format!("/apps/{APP_ID}/batch_events"),
                body.clone(),
            )
            .await;
            let status = response.status().as_u16();
            let text = response.text().await.expect("a body");
            status == 429 && text.contains("5 per second on one node")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_rate_limit_holds_cluster_wide_for_requests_spread_over_the_nodes() {
    const RATE: u64 = 30;
    let cluster = start_cluster_with_limits(&[
        "--max-read-requests-per-second",
        "30",
        "--max-backend-events-per-second",
        "15",
    ])
    .await;
    let http = reqwest::Client::new();
    for node in &cluster.nodes {
        until_sharing_with_three(&http, node).await;
    }
    // 90 reads at once, 30 per node (a balanced load balancer): one node alone would admit
    // its burst of 30; the cluster admits the app's burst of 30 in all, plus what the rate
    // refills while the requests run.
    let started = Instant::now();
    let mut reads = Vec::new();
    for node in &cluster.nodes {
        for _ in 0..30 {
            let http = http.clone();
            let base = node.base();
            reads.push(tokio::spawn(async move { read(&http, &base).await }));
        }
    }
    let mut admitted = 0;
    for read in reads {
        match read.await.expect("a read") {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refilled = (elapsed * RATE as f64).ceil() as u64;
    assert!(
        admitted >= RATE,
        "each node admits its share of the burst: {admitted}"
    );
    assert!(
        admitted <= RATE + refilled,
        "at most the app's burst ({RATE}) plus {refilled} refilled in {elapsed:.2} s: {admitted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_each_node_admits_at_most_its_lease_and_share() {
    const QUOTA: u64 = 1_200;
    let mut cluster = start_cluster_with_limits(&["--max-daily-messages", "1200"]).await;
    let http = reqwest::Client::new();
    // Every node takes a lease: 1,200 left, 3 nodes, so the first block is 100 and the blocks
    // shrink after it.
    let mut before = 0;
    for node in &cluster.nodes {
        for _ in 0..10 {
            let (status, body) = publish(&http, &node.base(), "before").await;
            assert_eq!(status, 200, "{body}");
            before += 1;
        }
    }
    let granted = redis_count(&cluster.redis).await;
    assert!(
        granted < QUOTA / 2,
        "leases are blocks, not the quota: {granted}"
    );
    cluster.redis.kill().await;

    // Each node goes on admitting what it holds plus its share of what was left as it last
    // heard (at most left / 3 each), then refuses: bounded, and nothing panics.
    let mut during = 0;
    for node in &cluster.nodes {
        during += publish_until_refused(&http, &node.base(), "during", QUOTA).await;
    }
    assert!(during > 0, "the nodes keep serving");
    assert!(
        before + during <= QUOTA + granted,
        "bounded by the quota plus what was leased before ({granted}): {}",
        before + during
    );
    for node in &cluster.nodes {
        let (status, body) = node.ready().await;
        assert_eq!(status, 200, "{body}");
    }

    // Redis back, empty: the nodes attach again and report their debts (what they admitted
    // past their leases) and what they know of the day. The leases Redis lost are the only
    // part that may be missing: at least `before + during - granted` is counted again.
    cluster.redis.restart().await;
    let redis = &cluster.redis;
    let floor = (before + during).saturating_sub(granted);
    eventually(
        "the nodes report their counts to Redis again",
        Duration::from_secs(15),
        || async { redis_count(redis).await >= floor },
    )
    .await;
    for node in &cluster.nodes {
        let (status, _) = publish(&http, &node.base(), "after").await;
        assert!(status == 200 || status == 403, "{status}");
        let (status, body) = node.ready().await;
        assert_eq!(status, 200, "{body}");
    }
}

/// How many scripts Redis has run (`EVAL` and `EVALSHA` calls, from `INFO commandstats`).
async fn scripts_run(redis: &Redis) -> u64 {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            let calls = line.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_from_the_quota_publishes_cost_no_redis_round_trip() {
    let cluster = start_cluster_with_limits(&["--max-daily-messages", "100000"]).await;
    let http = reqwest::Client::new();
    // 100 publishes on each node, one node after the other. Each node asks Redis once, for a
    // block of a quarter of an even part of what is left (at most 100,000 / 4); the scripts
    // Redis runs meanwhile are those refills and the nodes' own timers (heartbeats, live-node
    // counts, dead-node and vacate sweeps), never one per publish. The timers' rate is measured
    // first, over 3 idle seconds.
    let idle_from = scripts_run(&cluster.redis).await;
    let idle_started = Instant::now();
    pause(Duration::from_secs(1)).await;
    pause(Duration::from_secs(1)).await;
    pause(Duration::from_secs(1)).await;
    let idle_rate = (scripts_run(&cluster.redis).await - idle_from) as f64
        / idle_started.elapsed().as_secs_f64();
    let before = scripts_run(&cluster.redis).await;
    let started = Instant::now();
    for node in &cluster.nodes {
        for _ in 0..100 {
            let (status, body) = publish(&http, &node.base(), "far").await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Each publish's forward to the other nodes is itself a script (the Mercure bridge's, in
    // place of a plain PUBLISH, in the same pipeline: no round trip of its own): 300 of them.
    let forwards = 300;
    let scripts = (scripts_run(&cluster.redis).await - before).saturating_sub(forwards);
    let timers = idle_rate * elapsed;
    // One script per publish would be 300 more; the refills are 3 (slack for a timer's tick
    // at the edges and a slow machine's uneven rate).
    assert!(
        (scripts as f64) <= 3.0 + timers * 1.5 + 20.0,
        "{scripts} scripts for 300 publishes in {elapsed:.1} s: the 3 refills and the timers' \
         {timers:.0} (at {idle_rate:.1} a second) at most"
    );
    // Typically exactly 8,333 + 7,638 + 7,002 (3 live nodes, one node after the other); a
    // refill that timed out on a loaded machine may have been granted without being received.
    let granted = redis_count(&cluster.redis).await;
    assert!(
        (300..=3 * 25_000).contains(&granted),
        "blocks were granted: {granted}"
    );
}

/// A REST publish of one event on `channels` through `node`: the status and the body.
async fn publish_to(http: &reqwest::Client, node: &str, channels: &[String]) -> (u16, String) {
    let body = json!({"name": "daily", "channels": channels, "data": "x"}).to_string();
    let response = post_signed(http, node, &format!("/apps/{APP_ID}/events"), body).await;
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_bigger_than_the_remainder_does_not_strand_it_on_its_node() {
    let cluster = start_cluster_with_limits(&["--max-daily-messages", "10"]).await;
    let http = reqwest::Client::new();
    let [a, b, c] = [0, 1, 2].map(|n| cluster.nodes[n].base());

    // 10 over 3 nodes: a block of one, then a top-up of one in the background; 8 left.
    let (status, body) = publish(&http, &a, "one").await;
    assert_eq!(status, 200, "{body}");
    eventually("the top-up", Duration::from_secs(5), || async {
        redis_count(&cluster.redis).await == 2
    })
    .await;

    // A publish to 10 channels needs 10: the 8 left do not cover it, so none is granted.
    let channels: Vec<String> = (0..10).map(|n| format!("big-{n}")).collect();
    let (status, body) = publish_to(&http, &b, &channels).await;
    assert_eq!((status, body.trim()), (403, OVER_QUOTA));
    assert_eq!(
        redis_count(&cluster.redis).await,
        2,
        "the refused publish's node holds nothing"
    );
    // Asked again at once, it is refused without taking anything either.
    let (status, _) = publish_to(&http, &b, &channels).await;
    assert_eq!(status, 403);

    // Another node gets the 8 left.
    let admitted = publish_until_refused(&http, &c, "rest", 8).await;
    assert_eq!(
        admitted, 8,
        "the remainder was not stranded on the big publish's node"
    );
    assert_eq!(redis_count(&cluster.redis).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_on_other_nodes_pass_the_quota_by_at_most_one_publishs_copies() {
    const QUOTA: u64 = 2_000;
    const PER_NODE: u64 = 20;
    let cluster = start_cluster_with_limits(&["--max-daily-messages", "2000"]).await;
    let http = reqwest::Client::new();
    // 20 subscribers on each of nodes B and C, none on A, the publisher: each publish costs 1
    // plus 40 copies, all delivered on nodes that never publish for the app.
    let mut subscribers = Vec::new();
    for node in &cluster.nodes[1..] {
        for _ in 0..PER_NODE {
            let mut client = node.connect().await;
            client.subscribe("wide").await;
            subscribers.push(client);
        }
    }
    let copies = 2 * PER_NODE;
    // Without counting the copies, A's first block alone (2,000 / 12 = 166 publishes) would
    // make 166 x 41 = 6,806 messages.
    let a = cluster.nodes[0].base();
    let redis = &cluster.redis;
    let admitted = std::sync::atomic::AtomicU64::new(0);
    eventually("the quota is used up", Duration::from_secs(20), || async {
        let more = publish_until_refused(&http, &a, "wide", QUOTA).await;
        admitted.fetch_add(more, std::sync::atomic::Ordering::Relaxed);
        redis_count(redis).await + 1 + copies > QUOTA
    })
    .await;
    // B and C report their copies within a second; then Redis and the history agree.
    let count = agreed_count(&cluster).await;
    let admitted = admitted.into_inner();
    assert_eq!(count, admitted * (1 + copies), "every copy is counted");
    // The bound (cluster::lease): at most one publish's copies past the quota.
    assert!(
        count <= QUOTA + 1 + copies,
        "the count {count} is within {QUOTA} + one publish's {}",
        1 + copies
    );
    assert!(
        count + 1 + copies > QUOTA,
        "refused only near the quota: {count}"
    );
}
