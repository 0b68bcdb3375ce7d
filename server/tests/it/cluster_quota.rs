//! Cluster mode (issue 14, "Quotas and limits"): an app's connection quota holds across the
//! nodes. Parallel handshakes over three nodes, a slot freed on one node taken on another, a
//! killed node's slots coming back within the heartbeat TTL, and each node's share while Redis
//! is down (then the counts re-registered when it returns), and an HTTP fallback client hanging
//! up during its admission leaking no slot.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster_helpers::{eventually, Node, Redis, TestCluster};
use crate::helpers::{herald_binary, pause, Client, APP_ID, KEY};

/// The Redis hash of the default app's connections per node.
fn conns_key(redis: &Redis) -> String {
    format!("{}:conns:{APP_ID}", redis.cluster)
}

/// Sets the default app's `max_connections` with the CLI, on the cluster's database, and waits
/// until every node counts its connections in Redis (CLI changes reach every node within 2 s).
async fn set_max_connections(cluster: &TestCluster, max: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = herald_binary(dir.path());
    command
        .args([
            "apps",
            "update",
            APP_ID,
            "--max-connections",
            &max.to_string(),
        ])
        .env("HERALD_DATABASE_URL", &cluster.database.url);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the CLI finishes in time")
        .expect("the CLI runs");
    assert!(output.status.success(), "{output:?}");
    for node in &cluster.nodes {
        until_counted(cluster, node, 0).await;
    }
}

/// Waits until a handshake on `node` is counted in Redis (`held` slots being taken already):
/// the node sees the app's quota and asks Redis (not deciding alone). The probe is closed and
/// its slot given back.
async fn until_counted(cluster: &TestCluster, node: &Node, held: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = handshake(node.address.clone()).await.expect("admitted");
        let seen = counted(&cluster.redis).await == held + 1;
        probe.close().await;
        let redis = &cluster.redis;
        eventually(
            "the probe's slot is given back",
            Duration::from_secs(5),
            || async { counted(redis).await == held },
        )
        .await;
        if seen {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} counts in Redis",
            node.id
        );
        pause(Duration::from_millis(100)).await;
    }
}

/// A handshake with the default app on the node at `address`: the client once
/// `pusher:connection_established` arrived, or the refusal's code (after its close frame, which
/// must carry the same code).
async fn handshake(address: String) -> Result<Client, u64> {
    let url = format!("ws://{address}/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false");
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade succeeds");
    let mut client = Client {
        socket,
        socket_id: String::new(),
    };
    let first = client.next_json().await;
    match first["event"].as_str() {
        Some("pusher:connection_established") => {
            let data: Value =
                serde_json::from_str(first["data"].as_str().expect("string data")).expect("JSON");
            client.socket_id = data["socket_id"].as_str().expect("socket_id").to_owned();
            Ok(client)
        }
        Some("pusher:error") => {
            let code = first["data"]["code"].as_u64().expect("a code");
            assert_eq!(client.expect_close().await.map(u64::from), Some(code));
            Err(code)
        }
        other => panic!("unexpected first frame {other:?}: {first}"),
    }
}

/// The sum of the default app's per-node counts in Redis.
async fn counted(redis: &Redis) -> u64 {
    let mut conn = redis.connection().await;
    let counts: Vec<u64> = redis::cmd("HVALS")
        .arg(conns_key(redis))
        .query_async(&mut conn)
        .await
        .expect("HVALS");
    counts.into_iter().sum()
}

/// Handshakes on `address` until one is admitted (a slot freed elsewhere may take a moment to
/// be given back), for at most `limit`.
async fn admitted_within(address: &str, limit: Duration) -> Client {
    let deadline = Instant::now() + limit;
    loop {
        match handshake(address.to_owned()).await {
            Ok(client) => return client,
            Err(code) => {
                assert_eq!(code, 4004, "refused over the quota only");
                assert!(
                    Instant::now() < deadline,
                    "no slot came back within {limit:?}"
                );
                pause(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn still_open(client: &mut Client) {
    client
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    client.expect_next("pusher:pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_handshakes_over_three_nodes_at_a_quota_of_n_minus_one_admit_exactly_n_minus_one()
{
    const N: usize = 10;
    let cluster = TestCluster::start().await;
    // Without a quota, a handshake never touches Redis.
    let free = cluster.nodes[0].connect().await;
    assert!(!cluster.redis.exists(&conns_key(&cluster.redis)).await);
    free.close().await;
    set_max_connections(&cluster, N as u64 - 1).await;
    let attempts = (0..N).map(|i| {
        let node = i % 3;
        let address = cluster.nodes[node].address.clone();
        tokio::spawn(async move { (node, handshake(address).await) })
    });
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for result in futures_util::future::join_all(attempts).await {
        match result.expect("task") {
            (node, Ok(client)) => admitted.push((node, client)),
            (_, Err(code)) => refused.push(code),
        }
    }
    assert_eq!(admitted.len(), N - 1, "exactly N-1 admitted");
    assert_eq!(refused, vec![4004], "exactly one refused, with 4004");
    assert_eq!(counted(&cluster.redis).await, N as u64 - 1);

    // A slot freed on one node is taken on another, and only one.
    let (node, client) = admitted.pop().expect("one admitted");
    client.close().await;
    let other = &cluster.nodes[(node + 1) % 3];
    let _again = admitted_within(&other.address, Duration::from_secs(5)).await;
    for node in &cluster.nodes {
        assert_eq!(handshake(node.address.clone()).await.err(), Some(4004));
    }
    for (_, client) in &mut admitted {
        still_open(client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slots_of_a_killed_node_come_back_within_the_heartbeat_ttl() {
    let mut cluster = TestCluster::start().await;
    set_max_connections(&cluster, 3).await;
    let (a, b, c) = (
        cluster.nodes[0].address.clone(),
        cluster.nodes[1].address.clone(),
        cluster.nodes[2].address.clone(),
    );
    let _on_a = [
        handshake(a.clone()).await.expect("admitted"),
        handshake(a.clone()).await.expect("admitted"),
    ];
    let _on_c = handshake(c.clone()).await.expect("admitted");
    assert_eq!(handshake(b.clone()).await.err(), Some(4004));

    cluster.nodes[0].kill().await;
    let killed = Instant::now();
    // Its heartbeat lives 10 s; its two slots come back then, not before the kill is noticed.
    let _first = admitted_within(&b, Duration::from_secs(15)).await;
    let _second = handshake(b.clone()).await.expect("the second freed slot");
    assert!(killed.elapsed() < Duration::from_secs(15));
    assert_eq!(handshake(b.clone()).await.err(), Some(4004));
    assert_eq!(handshake(c).await.err(), Some(4004));
    assert_eq!(
        counted(&cluster.redis).await,
        3,
        "the dead node's field is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_node_admits_its_share_and_re_registers_when_redis_returns() {
    let mut cluster = TestCluster::start().await;
    set_max_connections(&cluster, 9).await;
    {
        let redis = &cluster.redis;
        eventually(
            "the three nodes are in the node set",
            Duration::from_secs(10),
            || async {
                let mut conn = redis.connection().await;
                redis::cmd("SCARD")
                    .arg(format!("{}:nodes", redis.cluster))
                    .query_async::<u64>(&mut conn)
                    .await
                    .expect("SCARD")
                    == 3
            },
        )
        .await;
    }
    let (a, b) = (
        cluster.nodes[0].address.clone(),
        cluster.nodes[1].address.clone(),
    );
    // Node A last saw 1 of 9 slots taken (its own) among 3 nodes: its share is 1 + 8 / 3 = 3.
    let mut kept = vec![handshake(a.clone()).await.expect("admitted")];
    // Node B last saw 2 of 9 taken (1 its own): 1 + 7 / 3 = 3.
    kept.push(handshake(b.clone()).await.expect("admitted"));

    cluster.redis.kill().await;
    let mut on_a = 0;
    loop {
        match handshake(a.clone()).await {
            Ok(client) => {
                kept.push(client);
                on_a += 1;
                assert!(on_a <= 2, "node A admits no more than its share");
            }
            Err(code) => {
                assert_eq!(code, 4004);
                break;
            }
        }
    }
    assert_eq!(on_a, 2, "node A admits up to its share of 3");
    let mut on_b = 0;
    while let Ok(client) = handshake(b.clone()).await {
        kept.push(client);
        on_b += 1;
        assert!(on_b <= 2, "node B admits no more than its share");
    }
    assert_eq!(on_b, 2, "node B admits up to its share of 3");

    // Redis returns empty: each node registers what it holds, the connections are kept, and the
    // quota is exact again (6 of 9 held).
    cluster.redis.restart().await;
    {
        let redis = &cluster.redis;
        eventually(
            "the nodes re-register their counts",
            Duration::from_secs(10),
            || async { counted(redis).await == 6 },
        )
        .await;
    }
    for node in &cluster.nodes {
        until_counted(&cluster, node, 6).await;
    }
    for client in &mut kept {
        still_open(client).await;
    }
    let mut more = Vec::new();
    for i in 0..4 {
        let node = &cluster.nodes[i % 3];
        match handshake(node.address.clone()).await {
            Ok(client) => more.push(client),
            Err(code) => {
                assert_eq!(code, 4004);
                assert_eq!(i, 3, "only the fourth is over the quota");
            }
        }
    }
    assert_eq!(more.len(), 3, "exactly the 3 free slots are taken");
}

/// An HTTP fallback's first request whose client hangs up while the node waits for Redis's
/// quota script: the admission goes on in a task of its own, so the slot taken in Redis belongs
/// to a session (which then expires unread) and is given back, never leaked.
#[tokio::test]
async fn a_fallback_client_hanging_up_during_admission_leaks_no_quota_slot() {
    use tokio::io::AsyncWriteExt;
    let cluster = TestCluster::start().await;
    set_max_connections(&cluster, 5).await;
    let node = &cluster.nodes[0];
    cluster.redis.freeze();
    let request = format!(
        "POST /pusher/app/{KEY}/123/hangup01/xhr?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\n\
         host: x\r\ncontent-length: 0\r\n\r\n"
    );
    let mut tcp = tokio::net::TcpStream::connect(&node.address)
        .await
        .expect("connects");
    tcp.write_all(request.as_bytes()).await.expect("sent");
    // The script is on its way to a Redis that does not answer; the client gives up.
    pause(Duration::from_millis(150)).await;
    drop(tcp);
    pause(Duration::from_millis(100)).await;
    cluster.redis.thaw();
    let redis = &cluster.redis;
    eventually(
        "the slot comes back once the unread session expires",
        Duration::from_secs(20),
        || async { counted(redis).await == 0 },
    )
    .await;
}
