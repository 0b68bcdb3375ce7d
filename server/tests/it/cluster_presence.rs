//! Cluster-wide channel state and presence (issue 14): member lists, `member_added` /
//! `member_removed` once per user across nodes and sockets, `user_count` and channel queries
//! from any node, the member limit cluster-wide, webhooks once, a killed node's members and
//! channels cleaned up by a survivor, and convergence after Redis lost everything.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cluster_helpers::{eventually, wait_for, Node, TestCluster};
use crate::helpers::{data_of, now, signed_params, Client, APP_ID, KEY, SECRET};
use crate::webhook_receiver::{add_webhook_on_every_node, count, nodes_with_webhooks, received};
use crate::webhooks::Receiver;

/// A signed REST GET on `node`; the JSON answer.
async fn rest_get(node: &Node, path: &str, query: &[(&str, &str)]) -> Value {
    let full = format!("/apps/{APP_ID}{path}");
    let params = signed_params("GET", &full, query, None, KEY, SECRET, now());
    let response = reqwest::Client::new()
        .get(format!("{}{full}", node.base()))
        .query(&params)
        .send()
        .await
        .expect("the request is answered");
    assert_eq!(response.status().as_u16(), 200, "GET {full}");
    response.json().await.expect("JSON")
}

/// The user ids of a `subscription_succeeded` on a presence channel.
fn ids_of(succeeded: &Value) -> BTreeSet<String> {
    succeeded["presence"]["ids"]
        .as_array()
        .expect("presence.ids")
        .iter()
        .map(|id| id.as_str().expect("string ids").to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// The user id of a member event.
fn user_of(frame: &Value) -> String {
    data_of(frame)["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_members_counts_and_queries_are_cluster_wide() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let channel = "presence-room";
    let mut u1_on_a = a.connect().await;
    let first = u1_on_a
        .subscribe_presence(channel, "u1", json!({"n": 1}))
        .await;
    assert_eq!(ids_of(&first), set(&["u1"]));

    let mut u2_on_b = b.connect().await;
    let second = u2_on_b
        .subscribe_presence(channel, "u2", json!({"n": 2}))
        .await;
    assert_eq!(
        ids_of(&second),
        set(&["u1", "u2"]),
        "the subscriber on another node sees every member: {second}"
    );
    assert_eq!(second["presence"]["hash"]["u1"], json!({"n": 1}));
    let added = wait_for(
        &mut u1_on_a,
        "pusher_internal:member_added",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(user_of(&added), "u2");

    // u1's second socket, on a third node: no member_added anywhere (u1 is a member already).
    let mut u1_on_c = c.connect().await;
    let third = u1_on_c
        .subscribe_presence(channel, "u1", json!({"n": 1}))
        .await;
    assert_eq!(ids_of(&third), set(&["u1", "u2"]));
    u1_on_a.expect_silence(Duration::from_millis(500)).await;
    u2_on_b.expect_silence(Duration::from_millis(300)).await;

    // Every node answers the channel queries for the whole cluster.
    for node in [a, b, c] {
        let info = rest_get(
            node,
            &format!("/channels/{channel}"),
            &[("info", "user_count,subscription_count")],
        )
        .await;
        assert_eq!(info["occupied"], true);
        assert_eq!(info["user_count"], 2, "{info}");
        assert_eq!(info["subscription_count"], 3, "{info}");
        let users = rest_get(node, &format!("/channels/{channel}/users"), &[]).await;
        assert_eq!(users, json!({"users": [{"id": "u1"}, {"id": "u2"}]}));
        let list = rest_get(
            node,
            "/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        )
        .await;
        assert_eq!(list["channels"][channel]["user_count"], 2, "{list}");
    }
    // A public channel subscribed on one node is listed by the others.
    let mut public_on_c = c.connect().await;
    public_on_c.subscribe("lobby").await;
    let list = rest_get(a, "/channels", &[("info", "subscription_count")]).await;
    assert_eq!(list["channels"]["lobby"]["subscription_count"], 1, "{list}");
    // A trigger's info too.
    let body = json!({"name": "e", "channel": "lobby", "data": "{}", "info": "subscription_count"});
    let response = crate::helpers::post_signed(
        &reqwest::Client::new(),
        &b.base(),
        &format!("/apps/{APP_ID}/events"),
        body.to_string(),
    )
    .await;
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(
        answer["channels"]["lobby"]["subscription_count"], 1,
        "{answer}"
    );

    // u1 leaves node A: still a member through node C, so nobody hears of it.
    u1_on_a.close().await;
    u2_on_b.expect_silence(Duration::from_millis(500)).await;
    // u1's last socket leaves: member_removed, once.
    u1_on_c.close().await;
    let removed = wait_for(
        &mut u2_on_b,
        "pusher_internal:member_removed",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(user_of(&removed), "u1");
    u2_on_b.expect_silence(Duration::from_millis(500)).await;
    eventually("user_count follows", Duration::from_secs(5), || async {
        let info = rest_get(
            c,
            &format!("/channels/{channel}"),
            &[("info", "user_count")],
        )
        .await;
        info["user_count"] == 1
    })
    .await;
    u2_on_b.close().await;
    eventually(
        "the channel is vacated everywhere",
        Duration::from_secs(5),
        || async {
            let info = rest_get(a, &format!("/channels/{channel}"), &[]).await;
            info["occupied"] == false
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_member_limit_holds_cluster_wide() {
    let cluster = TestCluster::start().await;
    update_app(
        &cluster,
        herald::tenants::AppPatch {
            limits: herald::tenants::LimitsPatch {
                max_presence_members: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let channel = "presence-small";
    let mut one = cluster.nodes[0].connect().await;
    one.subscribe_presence(channel, "u1", json!({})).await;
    let mut two = cluster.nodes[1].connect().await;
    two.subscribe_presence(channel, "u2", json!({})).await;
    // A third user on a third node: refused, though that node has no member of its own.
    let mut three = cluster.nodes[2].connect().await;
    let channel_data = json!({"user_id": "u3", "user_info": {}}).to_string();
    let auth = crate::helpers::channel_auth(&three.socket_id, channel, Some(&channel_data));
    three
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth,"channel_data":channel_data}}))
        .await;
    let refused = three.expect_event("pusher:subscription_error").await;
    assert_eq!(data_of(&refused)["type"], "LimitReached", "{refused}");
    // A known user's extra socket always gets in.
    let mut again = cluster.nodes[2].connect().await;
    let members = again.subscribe_presence(channel, "u1", json!({})).await;
    assert_eq!(ids_of(&members), set(&["u1", "u2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_fire_once_and_a_killed_nodes_members_and_channels_are_cleaned_up() {
    let receiver = Receiver::start().await;
    let (_redis, database, mut nodes) = nodes_with_webhooks(&["a", "b", "c"]).await;
    add_webhook_on_every_node(
        &receiver,
        &database,
        &nodes,
        &[
            "channel_occupied",
            "channel_vacated",
            "member_added",
            "member_removed",
        ],
    )
    .await;

    let channel = "presence-hooks";
    let mut u1_on_a = nodes[0].connect().await;
    u1_on_a.subscribe_presence(channel, "u1", json!({})).await;
    let mut u1_on_b = nodes[1].connect().await;
    u1_on_b.subscribe_presence(channel, "u1", json!({})).await;
    let mut u2_on_c = nodes[2].connect().await;
    u2_on_c.subscribe_presence(channel, "u2", json!({})).await;
    let mut u3_on_c = nodes[2].connect().await;
    u3_on_c.subscribe_presence(channel, "u3", json!({})).await;
    eventually(
        "the joins are reported",
        Duration::from_secs(10),
        || async {
            let events = received(&receiver);
            count(&events, "member_added", channel, Some("u3")) == 1
        },
    )
    .await;

    // The joins' requests recorded as delivered before the kill: a node killed between a
    // delivery and its record has it sent again (at least once), which is not what this counts.
    let pool = sqlx::PgPool::connect(&database.url)
        .await
        .expect("the database");
    eventually(
        "the joins' webhook requests are recorded",
        Duration::from_secs(10),
        || async {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'",
            )
            .fetch_one(&pool)
            .await
            .expect("counted");
            pending == 0
        },
    )
    .await;
    pool.close().await;

    // Node C dies: a survivor removes its members (u2, u3) and tells everyone, within 15 s.
    nodes[2].kill().await;
    let killed = tokio::time::Instant::now();
    let mut gone = BTreeSet::new();
    while gone.len() < 2 {
        let removed = wait_for(
            &mut u1_on_a,
            "pusher_internal:member_removed",
            Duration::from_secs(15),
        )
        .await;
        gone.insert(user_of(&removed));
    }
    assert_eq!(gone, set(&["u2", "u3"]));
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
    let removed = wait_for(
        &mut u1_on_b,
        "pusher_internal:member_removed",
        Duration::from_secs(5),
    )
    .await;
    assert!(["u2", "u3"].contains(&user_of(&removed).as_str()));
    let users = rest_get(&nodes[1], &format!("/channels/{channel}/users"), &[]).await;
    assert_eq!(users, json!({"users": [{"id": "u1"}]}));

    // The last sockets leave: the channel is vacated once.
    u1_on_a.close().await;
    u1_on_b.close().await;
    // The vacate delay (3 s, kept in Redis) and a sweep (0.5 s), then the webhook's outbox row
    // and its delivery: well within 15 s (a leased vacate is never lost, at worst fired again
    // 10 s after its lease).
    eventually(
        "the vacate is reported",
        Duration::from_secs(15),
        || async { count(&received(&receiver), "channel_vacated", channel, None) >= 1 },
    )
    .await;
    crate::helpers::pause(Duration::from_millis(1000)).await;
    let events = received(&receiver);
    assert_eq!(
        count(&events, "channel_occupied", channel, None),
        1,
        "{events:?}"
    );
    assert_eq!(
        count(&events, "channel_vacated", channel, None),
        1,
        "{events:?}"
    );
    for user in ["u1", "u2", "u3"] {
        assert_eq!(
            count(&events, "member_added", channel, Some(user)),
            1,
            "{user}: {events:?}"
        );
        assert_eq!(
            count(&events, "member_removed", channel, Some(user)),
            1,
            "{user}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_converges_after_redis_lost_everything() {
    let mut cluster = TestCluster::start().await;
    let channel = "presence-outage";
    let mut u1 = cluster.nodes[0].connect().await;
    u1.subscribe_presence(channel, "u1", json!({})).await;
    let mut u2 = cluster.nodes[1].connect().await;
    u2.subscribe_presence(channel, "u2", json!({})).await;

    cluster.redis.kill().await;
    // Meanwhile a user joins on node C: decided locally, no panic.
    let mut u3 = cluster.nodes[2].connect().await;
    let members = u3.subscribe_presence(channel, "u3", json!({})).await;
    assert!(ids_of(&members).contains("u3"));
    cluster.redis.restart().await;

    // Each node re-registers what it holds: every node's queries are right again, and the
    // others hear of u3.
    for node in &cluster.nodes {
        eventually("the users converge", Duration::from_secs(20), || async {
            let users = rest_get(node, &format!("/channels/{channel}/users"), &[]).await;
            users == json!({"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}]})
        })
        .await;
    }
    let info = rest_get(
        &cluster.nodes[0],
        &format!("/channels/{channel}"),
        &[("info", "subscription_count,user_count")],
    )
    .await;
    assert_eq!(info["subscription_count"], 3, "{info}");
    // (Node A and B re-announce u1 and u2 too: a refresh for the clients that knew them.)
    loop {
        let added = wait_for(
            &mut u1,
            "pusher_internal:member_added",
            Duration::from_secs(10),
        )
        .await;
        if user_of(&added) == "u3" {
            break;
        }
    }
    // And the converged state keeps working: u2 leaves, u1 hears it once.
    u2.close().await;
    let removed = wait_for(
        &mut u1,
        "pusher_internal:member_removed",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(user_of(&removed), "u2");
}

/// Changes the default app in the store and waits until every node polled it (each polls the
/// store's revision every second).
async fn update_app(cluster: &TestCluster, patch: herald::tenants::AppPatch) {
    let store = herald::tenants::Store::open(&cluster.database.url, herald::clock::Clock::system())
        .await
        .expect("the store opens");
    store
        .update_app(APP_ID, patch)
        .await
        .expect("the app updates");
    for _ in 0..5 {
        crate::helpers::pause(Duration::from_millis(500)).await;
    }
}

/// The count of the next `subscription_count` frame.
async fn next_count(client: &mut Client) -> u64 {
    let frame = wait_for(
        client,
        "pusher_internal:subscription_count",
        Duration::from_secs(5),
    )
    .await;
    data_of(&frame)["subscription_count"]
        .as_u64()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_counts_are_cluster_wide() {
    let cluster = TestCluster::start().await;
    update_app(
        &cluster,
        herald::tenants::AppPatch {
            subscription_count: Some(true),
            ..Default::default()
        },
    )
    .await;
    let channel = "counted";
    let mut on_a = cluster.nodes[0].connect().await;
    on_a.subscribe(channel).await;
    assert_eq!(next_count(&mut on_a).await, 1);
    let mut on_b = cluster.nodes[1].connect().await;
    on_b.subscribe(channel).await;
    assert_eq!(
        next_count(&mut on_b).await,
        2,
        "its own count is the cluster's"
    );
    assert_eq!(
        next_count(&mut on_a).await,
        2,
        "another node's subscriber is counted"
    );
    let mut on_c = cluster.nodes[2].connect().await;
    on_c.subscribe(channel).await;
    assert_eq!(next_count(&mut on_c).await, 3);
    assert_eq!(next_count(&mut on_a).await, 3);
    assert_eq!(next_count(&mut on_b).await, 3);
    on_c.close().await;
    assert_eq!(next_count(&mut on_a).await, 2);
    assert_eq!(next_count(&mut on_b).await, 2);
    let info = rest_get(
        &cluster.nodes[2],
        &format!("/channels/{channel}"),
        &[("info", "subscription_count")],
    )
    .await;
    assert_eq!(info["subscription_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_frames_behind_a_waiting_subscribe_are_handled_in_order() {
    let cluster = TestCluster::start().await;
    let mut client = cluster.nodes[0].connect().await;
    // One burst: each subscribe waits for Redis, and what follows it waits behind it.
    let mut burst = Vec::new();
    for n in 0..50 {
        burst.push(json!({"event":"pusher:subscribe","data":{"channel":format!("pipe-{n}")}}));
        burst.push(json!({"event":"pusher:ping","data":{}}));
    }
    for frame in &burst {
        client.send_json(frame.clone()).await;
    }
    for n in 0..50 {
        let frame = client.next_json().await;
        assert_eq!(
            frame["event"], "pusher_internal:subscription_succeeded",
            "{frame}"
        );
        assert_eq!(frame["channel"], format!("pipe-{n}"));
        client.expect_next("pusher:pong").await;
    }
    let list = rest_get(
        &cluster.nodes[1],
        "/channels",
        &[("filter_by_prefix", "pipe-")],
    )
    .await;
    assert_eq!(
        list["channels"].as_object().map(|c| c.len()),
        Some(50),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_members_leave_at_once() {
    let mut cluster = TestCluster::start().await;
    let channel = "presence-stop";
    let mut stays = cluster.nodes[0].connect().await;
    stays.subscribe_presence(channel, "u1", json!({})).await;
    let mut leaves = cluster.nodes[2].connect().await;
    leaves.subscribe_presence(channel, "u2", json!({})).await;
    wait_for(
        &mut stays,
        "pusher_internal:member_added",
        Duration::from_secs(5),
    )
    .await;
    // A graceful stop sends the node's leaves before it goes: no wait for the dead-node sweep.
    let stopping = tokio::time::Instant::now();
    let status = cluster.nodes[2].terminate().await;
    assert!(status.success(), "{status:?}");
    let removed = wait_for(
        &mut stays,
        "pusher_internal:member_removed",
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(user_of(&removed), "u2");
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
    let users = rest_get(
        &cluster.nodes[1],
        &format!("/channels/{channel}/users"),
        &[],
    )
    .await;
    assert_eq!(users, json!({"users": [{"id": "u1"}]}));
}
