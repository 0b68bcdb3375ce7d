//! The dashboard's sign-in budgets across a cluster (2 node processes on a Redis and a
//! PostgreSQL database of the test's own): the slow lane past an email's budget is shared, so
//! is an IPv6 /48's budget, a junk POST costs no Redis call, and with Redis silent each node
//! allows a 1/N share.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster_helpers::{eventually, Database, Node, Redis};
use crate::cluster_ops::{http, login_csrf, two_nodes, OPERATOR};

/// Two nodes that trust the test as a proxy (it names the client's address), and a sign-in
/// CSRF token from the first.
async fn two_nodes_trusting_the_test() -> (Redis, Database, Node, Node, String) {
    let (redis, database, a, b) = two_nodes(&[("HERALD_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let csrf = login_csrf(&a.base()).await;
    (redis, database, a, b, csrf)
}

/// One sign-in attempt on `base` from client address `from` (the test is a trusted proxy).
async fn attempt_from(base: &str, csrf: &str, from: &str, email: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/dashboard/login"))
        .header(reqwest::header::COOKIE, format!("herald_login_csrf={csrf}"))
        .header("x-forwarded-for", from)
        .form(&[
            ("csrf", csrf),
            ("email", email),
            ("password", "wrong"),
            ("next", "/dashboard/apps"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_an_emails_budget_an_address_gets_one_slow_lane_try_across_the_cluster_not_per_node() {
    let (_redis, _database, a, b, csrf) = two_nodes_trusting_the_test().await;
    // 50 addresses spend the email's hourly budget through node A (in A's memory and in Redis).
    for n in 0..50 {
        let from = format!("10.9.0.{}", n + 1);
        let checked = attempt_from(&a.base(), &csrf, &from, OPERATOR).await;
        assert_eq!(checked.status(), 401, "attempt {n} is checked");
    }
    // A fresh address's slow-lane try, through node B (the shared budgets let it through).
    let fresh = "10.9.1.1";
    let slow = attempt_from(&b.base(), &csrf, fresh, OPERATOR).await;
    assert_eq!(slow.status(), 401, "the address's one slow-lane try");
    // Node A's own slow lane for that address is untouched, but the cluster's is spent.
    let again = attempt_from(&a.base(), &csrf, fresh, OPERATOR).await;
    assert_eq!(
        again.status(),
        429,
        "one slow-lane try per address across the cluster, not one per node"
    );
    // Another address still has its own.
    let other = attempt_from(&a.base(), &csrf, "10.9.1.2", OPERATOR).await;
    assert_eq!(other.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_64s_of_one_ipv6_48_share_one_budget_across_the_cluster() {
    let (_redis, _database, a, b) = two_nodes(&[("HERALD_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let csrf = login_csrf(&a.base()).await;
    // Attempts two at a time, one through each node, each from a /64 of its own and for an
    // email of its own (no per-/64 or per-email budget bites), until the /48 is refused. Each
    // is a password check, so the budget (80 at once, one more every 750 ms) refills meanwhile:
    // the cluster allows at most 80 plus the refill over the time taken; each node alone would
    // allow that many of its half, about twice as many in all.
    let started = Instant::now();
    let mut allowed = 0u32;
    let mut refused = false;
    let mut last_sent = started;
    while !refused && allowed < 400 {
        last_sent = Instant::now();
        let n = allowed;
        let (base_a, base_b) = (a.base(), b.base());
        let (from_a, from_b) = (
            format!("2001:db8:4848:{n:x}::1"),
            format!("2001:db8:4848:{:x}::1", n + 1),
        );
        let (email_a, email_b) = (
            format!("guess{n}@example.test"),
            format!("guess{}@example.test", n + 1),
        );
        let (one, two) = tokio::join!(
            attempt_from(&base_a, &csrf, &from_a, &email_a),
            attempt_from(&base_b, &csrf, &from_b, &email_b),
        );
        for status in [one.status().as_u16(), two.status().as_u16()] {
            match status {
                401 => allowed += 1,
                429 => refused = true,
                other => panic!("unexpected {other}"),
            }
        }
    }
    let refill = last_sent.duration_since(started).as_millis() / 750;
    assert!(refused, "the /48 was never refused ({allowed} allowed)");
    assert!(allowed >= 80, "the /48 allows 80 at once: {allowed}");
    assert!(
        u128::from(allowed) <= 80 + refill + 1,
        "one budget for the /48 across the cluster: {allowed} allowed, {refill} refilled"
    );
    // Another /48 and an IPv4 address still have theirs.
    let other = attempt_from(&b.base(), &csrf, "2001:db8:4849::1", OPERATOR).await;
    assert_eq!(other.status(), 401);
    let v4 = attempt_from(&a.base(), &csrf, "10.48.0.1", OPERATOR).await;
    assert_eq!(v4.status(), 401);
}

/// The shared sign-in budget keys in Redis now.
async fn signin_keys(redis: &Redis) -> Vec<String> {
    let mut conn = redis.connection().await;
    redis::cmd("KEYS")
        .arg(format!("{}:stats:signin:*", redis.cluster))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_sign_in_posts_cost_no_redis_call_and_with_redis_frozen_a_node_allows_a_half_share() {
    let (redis, _database, a, b, csrf) = two_nodes_trusting_the_test().await;
    // A POST without the CSRF cookie is refused before any shared budget is asked.
    for _ in 0..3 {
        let junk = http()
            .post(format!("{}/dashboard/login", a.base()))
            .header("x-forwarded-for", "10.8.0.1")
            .form(&[("email", OPERATOR), ("password", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(junk.status(), 403);
    }
    assert!(
        signin_keys(&redis).await.is_empty(),
        "no shared budget key for junk posts: {:?}",
        signin_keys(&redis).await
    );
    // Node A has counted both nodes: its figures were written after B's.
    let mut conn = redis.connection().await;
    let stats_of = |node: String| {
        let cluster = redis.cluster.clone();
        let url = redis.url();
        async move {
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{cluster}:stats:[0-9]*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            for key in keys {
                let id: Option<String> = redis::cmd("HGET")
                    .arg(&key)
                    .arg("_node")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if id.as_deref() == Some(node.as_str()) {
                    return Some(key);
                }
            }
            None
        }
    };
    eventually("node B writes its figures", Duration::from_secs(10), || {
        let found = stats_of(b.id.clone());
        async move { found.await.is_some() }
    })
    .await;
    let a_key = stats_of(a.id.clone()).await.expect("node A's figures");
    let before: i64 = redis::cmd("PTTL")
        .arg(&a_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(
        "node A writes its figures again",
        Duration::from_secs(10),
        || {
            let (url, key) = (redis.url(), a_key.clone());
            async move {
                let mut conn = redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                ttl > before
            }
        },
    )
    .await;
    redis.freeze();
    // 5 attempts per minute per (email, address) across the cluster; Redis out of reach, each
    // of the 2 nodes allows about half: the first attempt (which finds Redis silent) takes one
    // share, the next ones two, so 3 are checked where a node alone would check 5.
    let mut checked = 0;
    for _ in 0..5 {
        let response = attempt_from(&a.base(), &csrf, "10.8.0.2", OPERATOR).await;
        match response.status().as_u16() {
            401 => checked += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
    }
    redis.thaw();
    assert_eq!(
        checked, 3,
        "node A alone allows a half share while Redis is silent"
    );
}
