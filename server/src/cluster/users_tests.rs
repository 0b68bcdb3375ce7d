//! The users scripts and queue against a real `redis-server` or a degraded node.

//! The scripts against a real `redis-server` of the test's own (from PATH; the test fails
//! without it).

use super::*;
use futures_util::StreamExt;

#[tokio::test]
async fn past_the_bound_an_op_is_dropped_answered_here_and_the_node_registers_again() {
    // Nothing listens on port 1, and the users task is not started: nothing takes from
    // the queue.
    let settings = crate::config::ClusterSettings::new("redis://127.0.0.1:1/", "users-test");
    let cluster = Cluster::connect(settings, crate::clock::Clock::manual(0))
        .await
        .expect("starts degraded");
    let app = Arc::new(AppHub::new("1", None));
    let (socket, _outbox) = crate::hub::Connection::new(crate::protocol::SocketId::new(1, 1), 16);
    let watchlist = vec!["w".to_owned()];
    let mut answers = Vec::new();
    for _ in 0..USERS_QUEUE {
        answers.push(cluster.sign_in(&app, &socket, "u", &watchlist));
    }
    assert!(
        answers.iter_mut().all(|answer| answer.try_recv().is_err()),
        "queued, not answered yet"
    );
    let mut past = cluster.sign_in(&app, &socket, "u", &watchlist);
    assert!(past.try_recv().is_ok(), "answered at once from this node");
    cluster.sign_out("1", "u");
    let counted = cluster
        .inner
        .users
        .ledger
        .lock_or_recover()
        .apps
        .get("1")
        .and_then(|users| users.get("u").copied());
    assert_eq!(
        counted,
        Some(USERS_QUEUE as u32),
        "the dropped ops are counted for the re-registration"
    );
    // The re-registration is asked for.
    tokio::time::timeout(
        std::time::Duration::from_millis(100),
        cluster.inner.users.lost.notified(),
    )
    .await
    .expect("a re-registration is asked for");
}

use super::super::test_redis::redis_server;

const P: &str = "t";
const APP: &str = "app1";

fn channel() -> String {
    Cluster::app_channel(P, APP)
}

async fn sign_in(
    conn: &mut redis::aio::MultiplexedConnection,
    tag: u64,
    user: &str,
    watchlist: &[&str],
) -> Vec<i64> {
    let me = tag.to_string();
    let scripts = Scripts::new();
    let mut call = scripts.sign_in.key(totals_key(P, APP));
    call.key(node_users_key(P, APP, &me))
        .key(node_apps_key(P, &me))
        .key(nodes_key(P))
        .key(tag_key(P, tag))
        .arg(channel())
        .arg(APP)
        .arg(tag)
        .arg(user);
    for id in watchlist {
        call.arg(*id);
    }
    call.invoke_async(conn).await.expect("SIGN_IN")
}

async fn sign_out(conn: &mut redis::aio::MultiplexedConnection, tag: u64, user: &str) -> i64 {
    Scripts::new()
        .sign_out
        .key(totals_key(P, APP))
        .key(node_users_key(P, APP, &tag.to_string()))
        .key(tag_key(P, tag))
        .arg(channel())
        .arg(user)
        .invoke_async(conn)
        .await
        .expect("SIGN_OUT")
}

async fn total(conn: &mut redis::aio::MultiplexedConnection, user: &str) -> Option<i64> {
    redis::cmd("HGET")
        .arg(totals_key(P, APP))
        .arg(user)
        .query_async(conn)
        .await
        .expect("HGET")
}

async fn set_alive(conn: &mut redis::aio::MultiplexedConnection, tag: u64) {
    redis::cmd("SET")
        .arg(tag_key(P, tag))
        .arg("node")
        .query_async::<()>(conn)
        .await
        .expect("SET");
}

#[tokio::test]
async fn transitions_are_decided_once_cluster_wide_and_published_by_the_script() {
    let server = redis_server().await;
    let (client, mut conn) = server.connect().await;
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(channel()).await.expect("SUBSCRIBE");
    let mut messages = pubsub.into_on_message();
    set_alive(&mut conn, 1).await;
    set_alive(&mut conn, 2).await;

    // A node whose tag key is gone changes nothing and is told so.
    assert_eq!(sign_in(&mut conn, 3, "u1", &[]).await, vec![0]);
    assert_eq!(total(&mut conn, "u1").await, None);

    // u1 on node 1 (online), again on node 2 (no transition); the watchlist answer sees both
    // nodes.
    assert_eq!(sign_in(&mut conn, 1, "u1", &["u2"]).await, vec![1, 0]);
    assert_eq!(
        sign_in(&mut conn, 2, "u2", &["u1", "u3"]).await,
        vec![1, 1, 0]
    );
    assert_eq!(sign_in(&mut conn, 2, "u1", &[]).await, vec![1]);
    assert_eq!(total(&mut conn, "u1").await, Some(2));
    assert_eq!(sign_out(&mut conn, 1, "u1").await, 1);
    // A sign-out of a socket this node never counted moves nothing.
    assert_eq!(sign_out(&mut conn, 1, "u1").await, 1);
    assert_eq!(total(&mut conn, "u1").await, Some(1));
    assert_eq!(sign_out(&mut conn, 2, "u1").await, 1);
    assert_eq!(total(&mut conn, "u1").await, None);

    let mut heard = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(2), messages.next())
            .await
            .expect("a status message")
            .expect("the stream");
        let payload: Vec<u8> = message.get_payload_bytes().to_vec();
        let status = super::super::message::decode_user_status(&payload).expect("kind 5");
        heard.push((status.user_id.to_owned(), status.online));
    }
    assert_eq!(
        heard,
        vec![
            ("u1".to_owned(), true),
            ("u2".to_owned(), true),
            ("u1".to_owned(), false)
        ]
    );
}

#[tokio::test]
async fn a_dead_nodes_users_are_removed_once_and_registering_again_converges() {
    let server = redis_server().await;
    let (_client, mut conn) = server.connect().await;
    set_alive(&mut conn, 1).await;
    set_alive(&mut conn, 2).await;
    sign_in(&mut conn, 1, "u1", &[]).await;
    sign_in(&mut conn, 1, "u1", &[]).await;
    sign_in(&mut conn, 2, "u1", &[]).await;
    sign_in(&mut conn, 2, "u2", &[]).await;
    assert_eq!(total(&mut conn, "u1").await, Some(3));

    let scripts = Scripts::new();
    let prefix = tag_key(P, 0);
    let prefix = prefix.strip_suffix('0').expect("ends with the tag");
    let claim = |tag: u64, me: u64| {
        let mut call = scripts.claim.key(dead_key(P));
        call.arg(prefix).arg(tag).arg(me);
        call
    };
    // Alive: nobody claims it.
    let claimed: i64 = claim(1, 2).invoke_async(&mut conn).await.expect("CLAIM");
    assert_eq!(claimed, 0);
    redis::cmd("DEL")
        .arg(tag_key(P, 1))
        .query_async::<()>(&mut conn)
        .await
        .expect("DEL");
    // Dead: node 2 claims it, a third live node then may not.
    set_alive(&mut conn, 3).await;
    let claimed: i64 = claim(1, 2).invoke_async(&mut conn).await.expect("CLAIM");
    assert_eq!(claimed, 1);
    let claimed: i64 = claim(1, 3).invoke_async(&mut conn).await.expect("CLAIM");
    assert_eq!(claimed, 0);
    let cleanup = || {
        let mut call = scripts.cleanup.key(totals_key(P, APP));
        call.key(node_users_key(P, APP, "1"))
            .key(node_apps_key(P, "1"))
            .key(tag_key(P, 1))
            .arg(channel())
            .arg(APP);
        call
    };
    let moved: i64 = cleanup().invoke_async(&mut conn).await.expect("CLEANUP");
    assert_eq!(moved, 1);
    assert_eq!(
        total(&mut conn, "u1").await,
        Some(1),
        "node 2's socket stays"
    );
    // Idempotent: a second run (a claim taken over midway) moves nothing.
    let moved: i64 = cleanup().invoke_async(&mut conn).await.expect("CLEANUP");
    assert_eq!(moved, 0);
    assert_eq!(total(&mut conn, "u1").await, Some(1));
    let finished: i64 = scripts
        .finish
        .key(node_apps_key(P, "1"))
        .key(nodes_key(P))
        .key(dead_key(P))
        .key(tag_key(P, 1))
        .arg(1)
        .invoke_async(&mut conn)
        .await
        .expect("FINISH");
    assert_eq!(finished, 1);

    // Node 2 registers again with what it holds now (u1 twice, u2 gone): twice in a row
    // gives the same totals.
    let register = || {
        let mut call = scripts.reregister.key(totals_key(P, APP));
        call.key(node_users_key(P, APP, "2"))
            .key(node_apps_key(P, "2"))
            .key(nodes_key(P))
            .key(tag_key(P, 2))
            .arg(channel())
            .arg(APP)
            .arg(2)
            .arg("u1")
            .arg(2);
        call
    };
    for _ in 0..2 {
        let registered: i64 = register()
            .invoke_async(&mut conn)
            .await
            .expect("REREGISTER");
        assert_eq!(registered, 1);
        assert_eq!(total(&mut conn, "u1").await, Some(2));
        assert_eq!(total(&mut conn, "u2").await, None);
    }
    // After Redis lost everything, a registration changes nothing until the heartbeat has set
    // the tag key again (it never sets it itself: landing after a graceful leave, it would
    // bring the stopped node back to life); then it restores the totals.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .expect("FLUSHALL");
    let registered: i64 = register()
        .invoke_async(&mut conn)
        .await
        .expect("REREGISTER");
    assert_eq!(registered, 0);
    assert_eq!(total(&mut conn, "u1").await, None);
    let alive: bool = redis::cmd("EXISTS")
        .arg(tag_key(P, 2))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(!alive, "a registration does not revive the node");
    set_alive(&mut conn, 2).await;
    let registered: i64 = register()
        .invoke_async(&mut conn)
        .await
        .expect("REREGISTER");
    assert_eq!(registered, 1);
    assert_eq!(total(&mut conn, "u1").await, Some(2));
}
