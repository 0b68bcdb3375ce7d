//! The Mercure hub in a cluster: every update crosses Redis once, with one id everywhere, and
//! the history lives in Redis, so any node replays what a subscriber missed.

use std::time::Duration;

use serde_json::json;

use crate::cluster_helpers::{start_cluster_with_limits, trigger_except, Node, TestCluster};
use crate::helpers::{post_signed, APP_ID};
use crate::mercure_helpers::{publisher, token07, token08_reader_for, Event, Sse};

/// A stream entry as `XRANGE` answers it: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// `node`'s hub.
fn hub_on(node: &Node) -> String {
    format!("{}/apps/{APP_ID}/.well-known/mercure", node.base())
}

/// Sends a publish of `form` through `node` with the all-topics publisher token.
async fn post_publish(
    http: &reqwest::Client,
    node: &Node,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    http.post(hub_on(node))
        .bearer_auth(publisher())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("publish request")
}

/// Publishes `form` through `node`; panics unless 200; answers the id.
pub(crate) async fn publish_on(
    http: &reqwest::Client,
    node: &Node,
    form: &[(&str, &str)],
) -> String {
    let response = post_publish(http, node, form).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "publish answered {text}");
    text
}

/// Opens a stream on `node` with `query` (and extra headers), reading every topic.
pub(crate) async fn open_on(
    http: &reqwest::Client,
    node: &Node,
    query: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Sse {
    let url = format!("{}?{query}", hub_on(node));
    let mut request = http.get(url).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("subscribe answers in time")
        .expect("subscribe request");
    assert_eq!(response.status().as_u16(), 200, "subscribe refused");
    Sse::from_response(response).await
}

/// A draft-08 access token for `node`'s hub that reads every topic.
fn token08_on(node: &Node) -> String {
    token08_reader_for(&hub_on(node))
}

async fn ids(sse: &mut Sse, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(sse.next().await.id);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_on_any_topic_reaches_every_node_once_with_one_id() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let token = token07(&["*"], &[]);
    let topic = "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&topic=orders";
    let mut on_a = open_on(&http, a, topic, &token, &[]).await;
    let mut on_b = open_on(&http, b, topic, &token, &[]).await;
    let mut on_c = open_on(&http, c, topic, &token, &[]).await;
    cluster.redis.wait_for_listeners(3).await;
    let id = publish_on(
        &http,
        a,
        &[("topic", "https://example.com/books/1"), ("data", "one")],
    )
    .await;
    for sse in [&mut on_a, &mut on_b, &mut on_c] {
        let event = sse.next().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (id.as_str(), "one")
        );
    }
    // A public update on a channel-named topic also crosses as a Pusher event: the Mercure
    // subscribers of the other nodes still get it once (not bridged back).
    let id = publish_on(&http, b, &[("topic", "orders"), ("data", "two")]).await;
    for sse in [&mut on_a, &mut on_b, &mut on_c] {
        let event = sse.next().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (id.as_str(), "two")
        );
    }
    for sse in [&mut on_a, &mut on_b, &mut on_c] {
        sse.expect_silence(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_updates_stay_private_across_nodes() {
    let cluster = TestCluster::start().await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let mut allowed = open_on(&http, b, "topic=secret", &token07(&["secret"], &[]), &[]).await;
    let mut other = open_on(&http, b, "topic=secret", &token07(&["else"], &[]), &[]).await;
    cluster.redis.wait_for_listeners(1).await;
    let id = publish_on(
        &http,
        a,
        &[("topic", "secret"), ("data", "s"), ("private", "on")],
    )
    .await;
    assert_eq!(allowed.next().await.id, id);
    other.expect_silence(Duration::from_millis(500)).await;
    // Nor from the history, on a third node.
    let replay = publish_on(&http, a, &[("topic", "secret"), ("data", "p")]).await;
    assert_eq!(allowed.next().await.id, replay);
    let mut late = open_on(
        &http,
        &cluster.nodes[2],
        "topic=secret&lastEventID=earliest",
        &token07(&["else"], &[]),
        &[],
    )
    .await;
    assert_eq!(late.next().await.id, replay, "only the public one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_served_by_another_node() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let token = token07(&["*"], &[]);
    let mut first = open_on(&http, a, "topic=t", &token, &[]).await;
    cluster.redis.wait_for_listeners(1).await;
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(publish_on(&http, a, &[("topic", "t"), ("data", &n.to_string())]).await);
    }
    assert_eq!(ids(&mut first, 3).await, published);
    drop(first);
    let seen = published[2].clone();
    // Missed: published through B (and one on a topic the subscriber does not want).
    for n in 3..6 {
        published.push(publish_on(&http, b, &[("topic", "t"), ("data", &n.to_string())]).await);
        publish_on(&http, b, &[("topic", "other"), ("data", "x")]).await;
    }
    let missed = published[3..].to_vec();
    // The header, draft-07's query parameter, draft-08's: exactly the missed ones, in order.
    let mut by_header = open_on(&http, c, "topic=t", &token, &[("last-event-id", &seen)]).await;
    assert_eq!(by_header.headers["last-event-id"], seen.as_str());
    assert_eq!(ids(&mut by_header, 3).await, missed);
    by_header.expect_silence(Duration::from_millis(300)).await;
    let query = format!("topic=t&lastEventID={seen}");
    let mut by_query = open_on(&http, c, &query, &token, &[]).await;
    assert_eq!(ids(&mut by_query, 3).await, missed);
    let query = format!("match=t&last_event_id={seen}");
    let mut draft08 = open_on(&http, c, &query, &token08_on(c), &[]).await;
    assert_eq!(draft08.headers["mercure-last-event-id"], seen.as_str());
    assert_eq!(ids(&mut draft08, 3).await, missed);
    // `earliest`: everything; a too-old (unknown) id: everything, announced as `earliest`.
    for resume in ["earliest", "urn:uuid:00000000-0000-0000-0000-000000000000"] {
        let mut sse = open_on(&http, b, "topic=t", &token, &[("last-event-id", resume)]).await;
        assert_eq!(sse.headers["last-event-id"], "earliest");
        assert_eq!(ids(&mut sse, 6).await, published);
        sse.expect_silence(Duration::from_millis(300)).await;
    }
    // Live after the replay.
    let next = publish_on(&http, a, &[("topic", "t"), ("data", "live")]).await;
    assert_eq!(by_header.next().await.id, next);
    assert_eq!(draft08.next().await.id, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_while_publishing_during_a_resumed_subscribe() {
    let cluster = TestCluster::start().await;
    let http = reqwest::Client::new();
    const TOTAL: usize = 150;
    let publisher_node = cluster.nodes[1].base();
    let publishing = {
        let http = http.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..TOTAL {
                let id = format!("p-{n}");
                let body = format!("topic=loop&id={id}&data={n}");
                let response = http
                    .post(format!(
                        "{publisher_node}/apps/{APP_ID}/.well-known/mercure"
                    ))
                    .bearer_auth(publisher())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(response.status().as_u16(), 200);
                ids.push(id);
            }
            ids
        })
    };
    // Subscribe (twice, on two nodes) while the loop runs, resuming from an early update.
    let token = token07(&["*"], &[]);
    crate::helpers::pause(Duration::from_millis(300)).await;
    let mut on_c = open_on(
        &http,
        &cluster.nodes[2],
        "topic=loop",
        &token,
        &[("last-event-id", "p-5")],
    )
    .await;
    let mut on_a = open_on(
        &http,
        &cluster.nodes[0],
        "topic=loop",
        &token,
        &[("last-event-id", "p-5")],
    )
    .await;
    let published = publishing.await.expect("the loop ends");
    let expected: Vec<String> = published[6..].to_vec();
    // The stream holds each once, in the publishing order.
    let mut redis = cluster.redis.connection().await;
    let log = format!("{}:mercure:{APP_ID}:log", cluster.redis.cluster);
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(&log)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let kept: Vec<String> = entries
        .iter()
        .map(|(_, fields)| String::from_utf8(fields[0].1.clone()).unwrap())
        .collect();
    assert_eq!(kept, published, "the stream");
    for (name, sse) in [("C", &mut on_c), ("A", &mut on_a)] {
        assert_eq!(
            sse.headers["last-event-id"], "p-5",
            "the resume point was found"
        );
        let got = ids(sse, expected.len()).await;
        assert_eq!(
            got, expected,
            "on {name}: every update after p-5, in order, once"
        );
        sse.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_in_redis_is_bounded_by_size_and_age_and_expires() {
    let cluster = start_cluster_with_limits(&[
        "--mercure-history-size",
        "3",
        "--mercure-history-seconds",
        "2",
    ])
    .await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(publish_on(&http, a, &[("topic", "h"), ("data", &n.to_string())]).await);
    }
    let token = token07(&["*"], &[]);
    let mut sse = open_on(
        &http,
        b,
        "topic=h",
        &token,
        &[("last-event-id", "earliest")],
    )
    .await;
    assert_eq!(ids(&mut sse, 3).await, published[2..], "the last three");
    sse.expect_silence(Duration::from_millis(200)).await;
    let mut redis = cluster.redis.connection().await;
    let log = format!("{}:mercure:{APP_ID}:log", cluster.redis.cluster);
    let length: usize = redis::cmd("XLEN")
        .arg(&log)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(length, 3);
    // Past the age (2 s after the last write) the keys leave Redis by themselves: nothing to
    // replay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.redis.exists(&log).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history outlived its age"
        );
        crate::helpers::pause(Duration::from_millis(100)).await;
    }
    let mut late = open_on(
        &http,
        b,
        "topic=h",
        &token,
        &[("last-event-id", "earliest")],
    )
    .await;
    late.expect_silence(Duration::from_millis(300)).await;
    for key in ["log", "idx", "bytes"] {
        let key = format!("{}:mercure:{APP_ID}:{key}", cluster.redis.cluster);
        assert!(!cluster.redis.exists(&key).await, "{key} expired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_node_publishes_and_replays_on_its_own() {
    let mut cluster = TestCluster::start().await;
    let http = reqwest::Client::new();
    let token = token07(&["*"], &[]);
    let a = &cluster.nodes[0];
    let mut sse = open_on(&http, a, "topic=d", &token, &[]).await;
    let before = publish_on(&http, a, &[("topic", "d"), ("data", "1")]).await;
    assert_eq!(sse.next().await.id, before);
    cluster.redis.kill().await;
    // The node lost its pub/sub connection, so it may miss updates: the stream ends and the
    // client resumes (review H2).
    assert!(sse.try_next().await.is_none(), "the stream ends");
    let a = &cluster.nodes[0];
    let mut resumed = open_on(&http, a, "topic=d", &token, &[("last-event-id", &before)]).await;
    // A publish whose answer from Redis never came may have run: 503, retried with its id
    // (review H4); once Redis refuses outright, it is delivered on this node.
    let form = [("topic", "d"), ("id", "during"), ("data", "2")];
    let mut during = String::new();
    for _ in 0..40 {
        let response = post_publish(&http, a, &form).await;
        match response.status().as_u16() {
            200 => {
                during = response.text().await.unwrap_or_default();
                break;
            }
            503 => crate::helpers::pause(Duration::from_millis(250)).await,
            other => panic!("publish answered {other}"),
        }
    }
    assert_eq!(during, "during");
    let event: Event = resumed.next().await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (during.as_str(), "2")
    );
    // A resume on this node replays its own history.
    let mut again = open_on(&http, a, "topic=d", &token, &[("last-event-id", &before)]).await;
    assert_eq!(again.headers["last-event-id"], before.as_str());
    assert_eq!(again.next().await.id, during);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_trigger_has_one_id_everywhere_and_is_replayed_by_any_node() {
    let cluster = TestCluster::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    let token = token07(&["*"], &[]);
    let mut on_b = open_on(&http, b, "topic=orders", &token, &[]).await;
    let mut on_c = open_on(&http, c, "topic=orders", &token, &[]).await;
    // Both nodes hear the app's channel: a subscribe answers after at most 500 ms of waiting for
    // it, and on a loaded machine a trigger at once could fall in the gap (as for Pusher).
    cluster.redis.wait_for_listeners(2).await;
    trigger_except(&http, &a.base(), "orders", "created", "{\"n\":1}", None).await;
    let first = on_b.next().await;
    assert_eq!(
        (first.event.as_str(), first.data.as_str()),
        ("created", "{\"n\":1}")
    );
    assert_eq!(on_c.next().await, first, "the same update, the same id");
    assert!(first.id.starts_with("urn:uuid:"), "{}", first.id);
    // A batch and a second trigger through another node: once each, in order.
    let batch = json!({"batch": [{"name": "b", "channel": "orders", "data": "2"}]});
    let path = format!("/apps/{APP_ID}/batch_events");
    let response = post_signed(&http, &b.base(), &path, batch.to_string()).await;
    assert_eq!(response.status().as_u16(), 200);
    trigger_except(&http, &c.base(), "orders", "created", "3", None).await;
    let rest_b = [on_b.next().await, on_b.next().await];
    let rest_c = [on_c.next().await, on_c.next().await];
    assert_eq!(rest_b, rest_c);
    assert_eq!(
        [rest_b[0].data.as_str(), rest_b[1].data.as_str()],
        ["2", "3"]
    );
    on_b.expect_silence(Duration::from_millis(400)).await;
    on_c.expect_silence(Duration::from_millis(100)).await;
    // Replayed by a node that had no subscriber then, from the bridged id.
    let mut on_a = open_on(
        &http,
        a,
        "topic=orders",
        &token,
        &[("last-event-id", &first.id)],
    )
    .await;
    assert_eq!(on_a.headers["last-event-id"], first.id.as_str());
    assert_eq!(on_a.next().await, rest_b[0]);
    assert_eq!(on_a.next().await, rest_b[1]);
    on_a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_subscribe_reads_a_bounded_part_of_the_history_and_resumes_after_it() {
    let cluster = TestCluster::start().await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let http = reqwest::Client::new();
    // About 1.2 MiB of updates the subscriber does not want, then one it wants: more than one
    // subscribe reads from Redis (1 MiB).
    let noise = "n".repeat(9_000);
    for _ in 0..130 {
        publish_on(&http, a, &[("topic", "noise"), ("data", &noise)]).await;
    }
    let wanted = publish_on(&http, a, &[("topic", "quiet"), ("data", "q")]).await;
    let token = token07(&["*"], &[]);
    let mut first = open_on(
        &http,
        b,
        "topic=quiet",
        &token,
        &[("last-event-id", "earliest")],
    )
    .await;
    // Nothing it wants within the budget: a resume point (an id, no data), then the end.
    let marker = first.next().await;
    assert!(
        marker.data.is_empty() && marker.event.is_empty(),
        "{marker:?}"
    );
    assert!(marker.id.starts_with("urn:uuid:"), "{marker:?}");
    assert!(first.try_next().await.is_none(), "the stream ends");
    // The reconnection reads on from there and finds the update.
    let mut second = open_on(
        &http,
        b,
        "topic=quiet",
        &token,
        &[("last-event-id", &marker.id)],
    )
    .await;
    assert_eq!(second.headers["last-event-id"], marker.id.as_str());
    let event = second.next().await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (wanted.as_str(), "q")
    );
    second.expect_silence(Duration::from_millis(300)).await;
}
