//! The Mercure hub in a cluster: what crosses Redis (the Pusher bridge's traffic).

use serde_json::json;

use crate::cluster_helpers::{subscribe_private, trigger_except, TestCluster};
use crate::helpers::{post_signed, APP_ID};
use crate::mercure_cluster_history::publish_on;
use crate::mercure_helpers::{token07, Sse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_through_one_node_reach_mercure_subscribers_on_another() {
    let cluster = TestCluster::start().await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let url = format!(
        "{}/apps/{APP_ID}/.well-known/mercure?topic=orders",
        b.base()
    );
    let mut sse = Sse::open(&http, &url, &token07(&["*"], &[])).await;
    // B has no Pusher subscriber of the app: its Mercure subscriber alone makes it listen.
    cluster.redis.wait_for_listeners(1).await;
    trigger_except(&http, &a.base(), "orders", "created", "{\"id\":1}", None).await;
    let event = sse.next().await;
    assert_eq!(event.event, "created");
    assert_eq!(event.data, "{\"id\":1}");
    // A public Mercure update on a channel-named topic, published through A.
    let form = [("topic", "orders"), ("type", "shipped"), ("data", "2")];
    publish_on(&http, a, &form).await;
    let event = sse.next().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("shipped", "2")
    );
    // A batch too.
    let batch = json!({"batch": [{"name": "b1", "channel": "orders", "data": "3"}]});
    let path = format!("/apps/{APP_ID}/batch_events");
    let response = post_signed(&http, &a.base(), &path, batch.to_string()).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(sse.next().await.data, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_s_own_client_event_the_history_did_not_keep_still_reaches_its_mercure_subscribers(
) {
    let cluster = TestCluster::start().await;
    let a = &cluster.nodes[0];
    let http = reqwest::Client::new();
    let url = format!(
        "{}/apps/{APP_ID}/.well-known/mercure?topic=private-chat",
        a.base()
    );
    let mut sse = Sse::open(&http, &url, &token07(&["private-chat"], &[])).await;
    cluster.redis.wait_for_listeners(1).await;
    let mut sender = a.connect().await;
    subscribe_private(&mut sender, "private-chat").await;
    let typing = |n: u32| json!({"event":"client-typing","channel":"private-chat","data":{"n":n}});
    // Kept in the history: it comes back as the stream's update, once.
    sender.send_json(typing(1)).await;
    assert_eq!(sse.next().await.data, "{\"n\":1}");
    // The app's live key gone (as when its refresh failed): the bridge script does not keep
    // the next one, with Redis up; the forward's reply has this node bridge it itself, once.
    let live = format!("{}:mercure:{APP_ID}:live", cluster.redis.cluster);
    let mut redis = cluster.redis.connection().await;
    let _: () = redis::cmd("DEL")
        .arg(&live)
        .query_async(&mut redis)
        .await
        .unwrap();
    sender.send_json(typing(2)).await;
    let event = sse.next().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("client-typing", "{\"n\":2}")
    );
    sse.expect_silence(std::time::Duration::from_millis(500))
        .await;
}

/// A trigger whose bridge reply comes late (Redis frozen past the handler's 2 s wait and the
/// pipeline's timeout, then run): the origin's Mercure subscriber gets it once, under the id
/// the history gave it, not once bridged locally and again when the kept copy arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_whose_bridge_reply_is_late_reaches_the_origin_s_mercure_subscribers_once() {
    use std::time::Duration;
    let cluster = TestCluster::start().await;
    let a = &cluster.nodes[0];
    let http = reqwest::Client::new();
    let url = format!(
        "{}/apps/{APP_ID}/.well-known/mercure?topic=orders",
        a.base()
    );
    let mut sse = Sse::open(&http, &url, &token07(&["*"], &[])).await;
    cluster.redis.wait_for_listeners(1).await;
    trigger_except(&http, &a.base(), "orders", "created", "0", None).await;
    assert_eq!(sse.next().await.data, "0");
    cluster.redis.freeze();
    let frozen = tokio::time::Instant::now();
    // The handler gives up after 2 s (and answers); the pipeline's reply never comes in time.
    trigger_except(&http, &a.base(), "orders", "created", "late", None).await;
    while frozen.elapsed() < Duration::from_millis(3_000) {
        crate::helpers::pause(Duration::from_millis(100)).await;
    }
    // Redis now runs the queued bridge script: kept, its kind-6 message follows its echo.
    cluster.redis.thaw();
    let late = sse.next().await;
    assert_eq!(late.data, "late");
    // Then the next triggers, each once (crossing Redis or, while publishes are paused after
    // the failure, delivered and bridged here): no second copy of the late one in between.
    for n in 0..5 {
        trigger_except(&http, &a.base(), "orders", "probe", &n.to_string(), None).await;
        let next = sse.next().await;
        assert_eq!(
            (next.event.as_str(), next.data.as_str()),
            ("probe", n.to_string().as_str()),
            "the late trigger came twice"
        );
    }
    sse.expect_silence(Duration::from_millis(500)).await;
}
