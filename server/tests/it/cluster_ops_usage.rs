//! The dashboard's "messages today" across a cluster (issue 14): on real node processes sharing
//! a Redis and a PostgreSQL database of the test's own, messages counted on one node show on
//! every node's apps list, app page and Usage page within a second or so, long before any node
//! flushes its counts to the store (every 5 s), and through the flushes they are never counted
//! twice. With Redis not answering, the pages still answer, from the node's own view.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster_helpers::eventually;
use crate::cluster_ops::{expect_on, page, session, testid, trigger, two_nodes};
use crate::helpers::APP_ID;

/// Today's messages of the default app on the node at `base`: from the apps list, the app's
/// page and its Usage page, in that order.
async fn shown(base: &str, cookie: &str) -> [u64; 3] {
    let apps = page(base, cookie, "/dashboard/apps").await;
    let app = page(base, cookie, &format!("/dashboard/apps/{APP_ID}")).await;
    let usage = page(base, cookie, &format!("/dashboard/apps/{APP_ID}/usage")).await;
    let figure = |(status, body): &(u16, String), id: &str| -> u64 {
        assert_eq!(*status, 200, "{body}");
        let text = testid(body, id).unwrap_or_else(|| panic!("no {id} in {body}"));
        // "1,234 <span ...>of ...": the first number.
        let digits: String = text
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{id}: no number in {text:?}"))
    };
    [
        figure(&apps, &format!("messages-{APP_ID}")),
        figure(&app, "messages-today"),
        figure(&usage, "messages-today"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_counted_on_one_node_show_on_every_nodes_pages_at_once_and_never_twice() {
    let (redis, _database, a, b) = two_nodes(&[]).await;
    let cookie = session(&a.base()).await;
    // A subscriber on B: every trigger through A counts 1 on A (the publish) and 1 on B (the
    // copy delivered there).
    let mut on_b = b.connect().await;
    on_b.subscribe("usage-news").await;
    const TRIGGERS: u64 = 7;
    for n in 0..TRIGGERS {
        trigger(&a.base(), "usage-news", &format!("news-{n}")).await;
        expect_on(&mut on_b, "usage-news", &format!("news-{n}")).await;
    }
    let expected = 2 * TRIGGERS;

    // Both nodes show the cluster's count on all three pages within 3 s: neither has flushed
    // yet (5 s), and each sees the other's counts only through Redis.
    let started = Instant::now();
    for node in [&b, &a] {
        let (base, cookie) = (node.base(), cookie.clone());
        eventually(
            &format!("node {} shows {expected} messages today", node.id),
            Duration::from_secs(3).saturating_sub(started.elapsed()),
            || {
                let (base, cookie) = (base.clone(), cookie.clone());
                async move { shown(&base, &cookie).await == [expected; 3] }
            },
        )
        .await;
    }

    // Each node's entry: its unflushed counts of today, expiring with the node.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:um:*", redis.cluster))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "one entry per node: {keys:?}");
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((1..=10_000).contains(&ttl), "{key} expires: {ttl} ms");
    }

    // Through both nodes' flushes (every 5 s): never more than what was sent (a count in the
    // store and still in a node's entry would be), and the exact count at the end.
    let until = Instant::now() + Duration::from_secs(6);
    let mut reads = 0;
    while Instant::now() < until {
        for node in [&a, &b] {
            let figures = shown(&node.base(), &cookie).await;
            assert!(
                figures.iter().all(|n| *n <= expected),
                "node {} counted some messages twice: {figures:?} of {expected}",
                node.id
            );
            reads += 1;
        }
    }
    assert!(reads >= 10, "only {reads} reads in 6 s");
    for node in [&a, &b] {
        let (base, cookie) = (node.base(), cookie.clone());
        eventually(
            "the count is exact after the flushes",
            Duration::from_secs(3),
            || {
                let (base, cookie) = (base.clone(), cookie.clone());
                async move { shown(&base, &cookie).await == [expected; 3] }
            },
        )
        .await;
    }
    // Redis not answering: the pages answer (each after one 500 ms timeout), from A's own view (the store's total,
    // which has every flushed count, and A's own counts since).
    redis.freeze();
    trigger(&a.base(), "usage-nobody", "alone").await;
    let started = Instant::now();
    let figures = shown(&a.base(), &cookie).await;
    let took = started.elapsed();
    redis.thaw();
    assert_eq!(figures, [expected + 1; 3], "A's own view");
    assert!(took < Duration::from_secs(4), "three pages took {took:?}");
}
