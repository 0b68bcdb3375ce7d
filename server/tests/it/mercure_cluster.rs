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
