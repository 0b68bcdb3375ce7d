//! pusher-js's HTTP fallbacks behind a non-sticky load balancer: a session lives on the node
//! that opened it, and its requests landing on another node are forwarded there through Redis
//! (`transport::xhr::relay`). Two nodes on a Redis and a database of the test's own.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cluster_helpers::*;
use crate::helpers::*;
use crate::xhr_lines::{events_of, Lines};

const Q: &str = "?protocol=7&client=js&version=8.4.0";
const ORIGIN: &str = "https://site.example";

/// Two nodes, A and B, that read the client's address from `X-Forwarded-For` (as behind a
/// proxy on 127.0.0.1).
async fn two_nodes() -> (Redis, Database, Node, Node) {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let env = [("HERALD_TRUSTED_PROXIES", "127.0.0.1/32")];
    let a = start_node_with("a", &redis, &database, &env).await;
    let b = start_node_with("b", &redis, &database, &env).await;
    (redis, database, a, b)
}

/// A fresh session's path on `node`.
fn session_url(node: &Node, session: &str) -> String {
    format!("{}/pusher/app/{KEY}/123/{session}", node.base())
}

fn new_session() -> String {
    format!("s{:08x}", rand::random::<u32>())
}

/// The session's hold in Redis.
fn hold_key(redis: &Redis, session: &str) -> String {
    format!("{}:xs:{KEY}/123/{session}", redis.cluster)
}

/// Opens a session with a stream on `url`: its socket id, and the stream.
/// A stream request for the session at `url` (from [`ORIGIN`]).
async fn stream_at(url: &str) -> Lines {
    Lines::open(
        &reqwest::Client::new(),
        format!("{url}/xhr_streaming{Q}"),
        Some(ORIGIN),
    )
    .await
}

async fn open_stream(url: &str) -> (String, Lines) {
    let mut lines = stream_at(url).await;
    assert_eq!(lines.line().await, "o");
    let established = lines.expect_event("pusher:connection_established").await;
    let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
    (data["socket_id"].as_str().unwrap().to_owned(), lines)
}

/// A session opened by a stream on A and subscribed to `channel` by a send through B; the
/// subscription's answer is read on A's stream (else it could land on a dropped stream), which
/// is then dropped. The session's URLs on A and on B.
async fn subscribed_through_b(
    redis: &Redis,
    a: &Node,
    b: &Node,
    channel: &str,
) -> (String, String) {
    let session = new_session();
    let (on_a, on_b) = (session_url(a, &session), session_url(b, &session));
    let (socket_id, mut stream) = open_stream(&on_a).await;
    wait_for_hold(redis, &session, a).await;
    assert_eq!(
        xhr_send_from(&on_b, ORIGIN, &[subscribe(&socket_id, channel)]).await,
        204
    );
    stream
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    drop(stream);
    (on_a, on_b)
}

async fn xhr_send_from(url: &str, origin: &str, events: &[Value]) -> u16 {
    xhr_send_as(url, origin, "127.0.0.1", events).await
}

/// `xhr_send` from client address `client` (behind the trusted proxy).
async fn xhr_send_as(url: &str, origin: &str, client: &str, events: &[Value]) -> u16 {
    let body: Vec<String> = events.iter().map(Value::to_string).collect();
    reqwest::Client::new()
        .post(format!("{url}/xhr_send"))
        .header("content-type", "application/json")
        .header("origin", origin)
        .header("x-forwarded-for", client)
        .body(serde_json::to_string(&body).unwrap())
        .send()
        .await
        .expect("request is sent")
        .status()
        .as_u16()
}

fn subscribe(socket_id: &str, channel: &str) -> Value {
    let auth = channel_auth(socket_id, channel, None);
    json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth}})
}

/// Waits until node `node`'s hold of `session` is in Redis.
async fn wait_for_hold(redis: &Redis, session: &str, node: &Node) {
    let key = hold_key(redis, session);
    eventually("the session's hold names its node", WAIT, || async {
        let mut conn = redis.connection().await;
        let holder: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("GET");
        holder.as_deref() == Some(node.id.as_str())
    })
    .await;
}

/// One poll's whole answer, as lines.
async fn poll(url: &str) -> Vec<String> {
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        reqwest::Client::new()
            .post(format!("{url}/xhr{Q}"))
            .header("content-type", "application/json")
            .header("origin", ORIGIN)
            .send(),
    )
    .await
    .expect("the poll is answered in time")
    .expect("request is sent");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    text.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_node_takes_sends_and_events_through_the_other() {
    let (redis, _database, a, b) = two_nodes().await;
    let session = new_session();
    let (on_a, on_b) = (session_url(&a, &session), session_url(&b, &session));
    let (socket_id, mut stream) = open_stream(&on_a).await;
    wait_for_hold(&redis, &session, &a).await;

    // A subscribe sent through B reaches the session on A.
    let status = xhr_send_from(&on_b, ORIGIN, &[subscribe(&socket_id, "private-chat")]).await;
    assert_eq!(status, 204, "xhr_send through B is forwarded to A");
    stream
        .expect_event("pusher_internal:subscription_succeeded")
        .await;

    // A client event sent through B reaches a WebSocket subscriber on B.
    let mut watcher = b.connect().await;
    subscribe_private(&mut watcher, "private-chat").await;
    redis.wait_for_listeners(2).await;
    let typing = json!({"event":"client-typing","channel":"private-chat","data":{"who":"x"}});
    assert_eq!(xhr_send_from(&on_b, ORIGIN, &[typing]).await, 204);
    let frame = watcher.expect_next("client-typing").await;
    assert_eq!(frame["data"], json!({"who": "x"}));

    // A trigger through B is read on A's stream.
    let http = reqwest::Client::new();
    trigger_news(&http, &b.base(), "private-chat", "hello").await;
    let news = stream.expect_event("news").await;
    assert_eq!(news["data"], "hello");

    // An unknown session through B: 404 (no hold in Redis).
    let unknown = session_url(&b, &new_session());
    assert_eq!(xhr_send_from(&unknown, ORIGIN, &[json!({})]).await, 404);
    // Another origin through B is refused as on one node (404: not its session).
    let ping = json!({"event":"pusher:ping","data":{}});
    assert_eq!(
        xhr_send_from(&on_b, "https://other.example", std::slice::from_ref(&ping)).await,
        404
    );
    // So is another client address (the holder checks the address B computed).
    assert_eq!(
        xhr_send_as(&on_b, ORIGIN, "203.0.113.9", std::slice::from_ref(&ping)).await,
        404
    );
    assert_eq!(xhr_send_from(&on_b, ORIGIN, &[ping]).await, 204);

    // A second reader through B while A's stream is open hears 2010.
    let mut second = stream_at(&on_b).await;
    let line = second.line().await;
    assert!(line.starts_with("c[2010,"), "{line}");
    // A's stream is unharmed.
    trigger_news(&http, &a.base(), "private-chat", "still").await;
    assert_eq!(stream.expect_event("news").await["data"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_alternating_between_nodes_see_every_message_once_in_order() {
    let (redis, _database, a, b) = two_nodes().await;
    let session = new_session();
    let (on_a, on_b) = (session_url(&a, &session), session_url(&b, &session));
    let first = poll(&on_a).await;
    assert_eq!(first[0], "o", "{first:?}");
    let data: Value = serde_json::from_str(
        events_of(&first[1])[0]["data"]
            .as_str()
            .expect("connection_established's data"),
    )
    .unwrap();
    let socket_id = data["socket_id"].as_str().unwrap().to_owned();
    wait_for_hold(&redis, &session, &a).await;

    assert_eq!(
        xhr_send_from(&on_b, ORIGIN, &[subscribe(&socket_id, "private-feed")]).await,
        204
    );
    // The subscription's answer, read through B.
    let answer = poll(&on_b).await;
    assert!(
        answer
            .iter()
            .filter(|line| line.starts_with('a'))
            .flat_map(|line| events_of(line))
            .any(|e| e["event"] == "pusher_internal:subscription_succeeded"),
        "{answer:?}"
    );

    // One event per poll, the polls alternating between B (forwarded) and A: each poll gets
    // the event triggered before it, and nothing else.
    let http = reqwest::Client::new();
    for i in 0..6 {
        let data = format!("m{i}");
        let (url, via) = if i % 2 == 0 { (&on_b, &a) } else { (&on_a, &b) };
        trigger_news(&http, &via.base(), "private-feed", &data).await;
        let mut heard = Vec::new();
        for line in poll(url).await {
            assert_ne!(line, "o", "no second open frame");
            if line.starts_with('a') {
                for event in events_of(&line) {
                    if event["event"] == "news" {
                        heard.push(event["data"].as_str().unwrap().to_owned());
                    }
                }
            } else {
                assert_eq!(line, "h", "only heartbeats besides the events");
            }
        }
        assert_eq!(heard, [data], "poll {i} got its event, once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_stream_ends_within_the_bound_when_the_holder_is_killed() {
    let (redis, _database, mut a, b) = two_nodes().await;
    let session = new_session();
    let (on_a, on_b) = (session_url(&a, &session), session_url(&b, &session));
    let (_socket_id, stream) = open_stream(&on_a).await;
    wait_for_hold(&redis, &session, &a).await;
    // The client reopens its stream through B (pusher-js aborts the old one first).
    drop(stream);
    let mut through_b = stream_at(&on_b).await;
    // The holder dies: the forwarded stream ends (its beats stop) within the bound.
    pause(Duration::from_millis(500)).await;
    a.kill().await;
    let started = tokio::time::Instant::now();
    loop {
        match through_b.next_within(Duration::from_secs(20)).await {
            None => break,
            Some(line) => assert_eq!(line, "h", "no lines but heartbeats"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ended after {:?}",
        started.elapsed()
    );
    // Then the session is gone: a send through B is answered 404 once A's heartbeat key is gone.
    let node_key = redis.node_key(&a.id);
    eventually("A's heartbeat key expires", Duration::from_secs(15), || {
        let key = node_key.clone();
        let redis = &redis;
        async move { !redis.exists(&key).await }
    })
    .await;
    assert_eq!(xhr_send_from(&on_b, ORIGIN, &[json!({})]).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_on_the_forwarding_node_frees_the_session_on_its_holder() {
    let (redis, _database, a, b) = two_nodes().await;
    let (on_a, on_b) = subscribed_through_b(&redis, &a, &b, "private-room").await;
    // The stream reopened through B (its head arrives once it is the session's reader), then
    // dropped there: A hears of it and lets a new reader in (else it would wait for the
    // forwarded one and answer 2010).
    let mut through_b = stream_at(&on_b).await;
    let http = reqwest::Client::new();
    trigger_news(&http, &a.base(), "private-room", "via-b").await;
    assert_eq!(through_b.expect_event("news").await["data"], "via-b");
    drop(through_b);
    pause(Duration::from_millis(300)).await;
    let mut again = stream_at(&on_a).await;
    trigger_news(&http, &a.base(), "private-room", "back").await;
    assert_eq!(again.expect_event("news").await["data"], "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_readers_of_one_session_through_a_node_do_not_take_its_forwarding_pool() {
    // A pool of 58 forwarded requests per node (2.5 x 20 + 8).
    let database = Database::create().await;
    let redis = Redis::start().await;
    let env = [
        ("HERALD_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("HERALD_MAX_CONNECTIONS", "20"),
    ];
    let a = start_node_with("a", &redis, &database, &env).await;
    let b = start_node_with("b", &redis, &database, &env).await;
    let (attacked, other) = (new_session(), new_session());
    let (_socket, _stream) = open_stream(&session_url(&a, &attacked)).await;
    let (_other_socket, _other_stream) = open_stream(&session_url(&a, &other)).await;
    wait_for_hold(&redis, &attacked, &a).await;
    wait_for_hold(&redis, &other, &a).await;

    // 120 streams for the attacked session through B at once, while its stream on A is open.
    let url = format!("{}/xhr_streaming{Q}", session_url(&b, &attacked));
    let http = reqwest::Client::new();
    let readers: Vec<_> = (0..120)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("origin", ORIGIN)
                    .send()
                    .await
                    .expect("request is sent");
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            })
        })
        .collect();
    pause(Duration::from_millis(300)).await;
    // Meanwhile another session's send through B is forwarded.
    let ping = json!({"event":"pusher:ping","data":{}});
    assert_eq!(
        xhr_send_from(&session_url(&b, &other), ORIGIN, &[ping]).await,
        204,
        "another session's request is forwarded while one session's readers crowd B"
    );
    for reader in readers {
        let (status, text) = reader.await.expect("the reader's task");
        assert_eq!(status, 200, "{text}");
        assert!(text.starts_with("c[2010,"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sessions_leave_no_hold_in_redis() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let env = [
        ("HERALD_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("HERALD_MAX_CONNECTIONS", "1"),
    ];
    let a = start_node_with("a", &redis, &database, &env).await;
    // The node's one connection.
    let kept = new_session();
    let (_socket, _stream) = open_stream(&session_url(&a, &kept)).await;
    wait_for_hold(&redis, &kept, &a).await;
    // Further sessions are refused (node full): none keeps a hold.
    for _ in 0..5 {
        let session = new_session();
        let mut refused = Lines::open(
            &reqwest::Client::new(),
            format!("{}/xhr_streaming{Q}", session_url(&a, &session)),
            Some(ORIGIN),
        )
        .await;
        let line = refused.line().await;
        assert!(line.starts_with("c[4100,"), "{line}");
        assert!(
            !redis.exists(&hold_key(&redis, &session)).await,
            "a refused session's hold is given back"
        );
    }
    assert!(redis.exists(&hold_key(&redis, &kept)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_answer_cut_short_closes_its_session_as_a_slow_consumer() {
    let (redis, _database, a, b) = two_nodes().await;
    let (on_a, on_b) = subscribed_through_b(&redis, &a, &b, "private-flood").await;
    // The stream reopened through B by a client that reads nothing.
    let stalled = stream_at(&on_b).await;
    // More than B buffers for it (64 parts, besides the sockets' buffers): the answer is cut.
    let http = reqwest::Client::new();
    let big = "x".repeat(9_000);
    for _ in 0..1_000 {
        trigger_news(&http, &a.base(), "private-flood", &big).await;
    }
    pause(Duration::from_millis(500)).await;
    // The lines A took for B are lost: the session is closed (4100) rather than going on with a
    // gap (the next reader hears the close, or opens a new session once it is gone).
    let mut next = stream_at(&on_a).await;
    let line = next.line().await;
    assert!(line.starts_with("c[4100,") || line == "o", "{line}");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_node_shutting_down_ends_its_forwarded_streams_with_4200() {
    let (redis, _database, a, mut b) = two_nodes().await;
    let session = new_session();
    let (on_a, on_b) = (session_url(&a, &session), session_url(&b, &session));
    let (_socket_id, stream) = open_stream(&on_a).await;
    wait_for_hold(&redis, &session, &a).await;
    drop(stream);
    let mut through_b = stream_at(&on_b).await;
    // B gets SIGTERM: the forwarded stream hears 4200 at once (not after the drain's wait).
    let terminated = tokio::spawn(async move { b.terminate().await });
    let started = tokio::time::Instant::now();
    let line = loop {
        match through_b.next_within(Duration::from_secs(10)).await {
            Some(line) if line == "h" => continue,
            other => break other,
        }
    };
    let line = line.expect("a close line, not a cut");
    assert!(line.starts_with("c[4200,"), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "after {:?}",
        started.elapsed()
    );
    terminated.await.expect("B exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_told_after_its_request_ended_still_closes_the_session_on_its_holder() {
    let (redis, _database, a, b) = two_nodes().await;
    let session = new_session();
    let on_a = session_url(&a, &session);
    let (_socket_id, mut stream) = open_stream(&on_a).await;
    wait_for_hold(&redis, &session, &a).await;
    // What B sends when a forwarded poll's part is lost behind its end: A served the poll and
    // forgot the request, so only the session's name tells it which session lost lines.
    let cancel = json!({
        "t": "cancel", "id": 12_345, "from": b.id, "cut": true,
        "session": format!("{KEY}/123/{session}"),
    });
    let mut conn = redis.connection().await;
    let heard: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}:xhr:{}", redis.cluster, a.id))
        .arg(cancel.to_string())
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");
    assert_eq!(heard, 1);
    let line = stream
        .next_within(Duration::from_secs(5))
        .await
        .expect("a close line");
    assert!(line.starts_with("c[4100,"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_stream_outlasts_a_few_seconds_of_silence_from_its_holder() {
    let (redis, _database, a, b) = two_nodes().await;
    let (_on_a, on_b) = subscribed_through_b(&redis, &a, &b, "private-quiet").await;
    let mut through_b = stream_at(&on_b).await;
    pause(Duration::from_millis(300)).await;
    // The holder says nothing for 5 s (stopped, as in a pub/sub hiccup): longer than a poll
    // waits, shorter than a stream does.
    let pid = a.child.id().expect("pid").to_string();
    let signal = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    };
    signal("-STOP");
    for _ in 0..5 {
        pause(Duration::from_secs(1)).await;
    }
    signal("-CONT");
    trigger_news(
        &reqwest::Client::new(),
        &a.base(),
        "private-quiet",
        "still here",
    )
    .await;
    let event = through_b.expect_event("news").await;
    assert_eq!(event["channel"], "private-quiet");
}
