//! The dashboard and admin across a cluster (issue 14, "Dashboard and admin"), on real node
//! processes sharing a Redis and a PostgreSQL database of the test's own: sign-in budgets are
//! shared by the nodes, the apps list shows the cluster's connections per node, the live
//! console of one node shows the other nodes' events, a CLI change reaches every node within
//! 2 s, and a PostgreSQL outage (through a TCP proxy the test cuts and restores) leaves
//! connections and cross-node publishes working, fails writes cleanly, and loses no count or
//! webhook once PostgreSQL is back.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster_helpers::{eventually, start_node_with, usage_messages, Database, Node, Redis};
use crate::helpers::{pause, post_signed, Received, APP_ID};
use crate::proxy::CutProxy;
use crate::webhooks::Receiver;

pub(crate) const OPERATOR: &str = "ops@example.test";
pub(crate) const PASSWORD: &str = "cluster-ops-password";

/// Starts node `name` with the test's operator and `env` on top.
pub(crate) async fn node(
    name: &str,
    redis: &Redis,
    database: &Database,
    env: &[(&str, &str)],
) -> Node {
    let mut all = vec![
        ("HERALD_ADMIN_EMAIL", OPERATOR),
        ("HERALD_ADMIN_PASSWORD", PASSWORD),
        ("HERALD_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8"),
    ];
    all.extend_from_slice(env);
    start_node_with(name, redis, database, &all).await
}

/// Two nodes on a fresh Redis and database (the first creates the default app and operator).
pub(crate) async fn two_nodes(env: &[(&str, &str)]) -> (Redis, Database, Node, Node) {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let a = node("a", &redis, &database, env).await;
    let b = node("b", &redis, &database, env).await;
    (redis, database, a, b)
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn cookie_value(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// The sign-in form's CSRF token (the double-submit cookie works on any node).
pub(crate) async fn login_csrf(base: &str) -> String {
    let page = http()
        .get(format!("{base}/dashboard/login"))
        .send()
        .await
        .unwrap();
    cookie_value(&page, "herald_login_csrf").expect("the sign-in page sets its CSRF cookie")
}

/// One sign-in attempt on the node at `base`: the status and the response.
async fn attempt(base: &str, csrf: &str, email: &str, password: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/dashboard/login"))
        .header(reqwest::header::COOKIE, format!("herald_login_csrf={csrf}"))
        .form(&[
            ("csrf", csrf),
            ("email", email),
            ("password", password),
            ("next", "/dashboard/apps"),
        ])
        .send()
        .await
        .unwrap()
}

/// Signs `email` in with `password` on the node at `base`: the session's `Cookie` header (good
/// on every node of a cluster).
pub(crate) async fn session_as(base: &str, email: &str, password: &str) -> String {
    let csrf = login_csrf(base).await;
    let signed_in = attempt(base, &csrf, email, password).await;
    assert_eq!(signed_in.status(), 303, "{email} signs in");
    let token = cookie_value(&signed_in, "herald_session").expect("a session cookie");
    format!("herald_session={token}")
}

/// Signs the operator in on `base`: the session's `Cookie` header (good on every node).
pub(crate) async fn session(base: &str) -> String {
    session_as(base, OPERATOR, PASSWORD).await
}

pub(crate) async fn page(base: &str, cookie: &str, path: &str) -> (u16, String) {
    let response = http()
        .get(format!("{base}{path}"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The text of the element with `data-testid="{id}"` (up to its closing tag).
pub(crate) fn testid(body: &str, id: &str) -> Option<String> {
    let start = body.find(&format!("data-testid=\"{id}\""))?;
    let rest = &body[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find("</")?;
    Some(rest[open..open + close].trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_guesses_spread_over_two_nodes_share_one_budget_and_its_keys_expire() {
    let (redis, _database, a, b) = two_nodes(&[]).await;
    let csrf = login_csrf(&a.base()).await;
    // 5 attempts per minute per (email, address): alternating nodes, each would allow 5 alone.
    for n in 0..5 {
        let base = if n % 2 == 0 { a.base() } else { b.base() };
        let refused = attempt(&base, &csrf, OPERATOR, "wrong").await;
        assert_eq!(
            refused.status(),
            401,
            "attempt {n} is checked (wrong password)"
        );
    }
    for (name, node) in [("A", &a), ("B", &b)] {
        let refused = attempt(&node.base(), &csrf, OPERATOR, PASSWORD).await;
        assert_eq!(
            refused.status(),
            429,
            "the cluster's budget is spent: even the right password waits, on node {name}"
        );
        let retry: u64 = refused.headers()[reqwest::header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // Another email from the same address still has its own budget.
    let other = attempt(&b.base(), &csrf, "someone@example.test", "x").await;
    assert_eq!(other.status(), 401);

    // Every shared budget key lives at most its period (an hour for an email's).
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:stats:signin:*", redis.cluster))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 3, "address, email and pair budgets: {keys:?}");
    // Emails and addresses are named by an HMAC under the session key: neither in the clear,
    // nor a plain hash anyone could match against a list of emails.
    let plain_hash = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(OPERATOR.as_bytes())[..16])
    };
    for key in &keys {
        assert!(!key.contains(OPERATOR), "no email in the clear: {key}");
        assert!(!key.contains("127.0.0.1"), "no address in the clear: {key}");
        assert!(!key.contains(&plain_hash), "no unkeyed hash: {key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((1..=3_600_000).contains(&ttl), "{key} expires: {ttl} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_sign_in_and_the_apps_list_still_answer_from_the_node_alone() {
    let (redis, _database, a, _b) = two_nodes(&[]).await;
    let _client = a.connect().await;
    redis.freeze();
    let started = Instant::now();
    let cookie = session(&a.base()).await;
    let took = started.elapsed();
    // One Redis timeout (500 ms), then Redis is not asked for 3 s.
    assert!(
        took < Duration::from_millis(900),
        "the sign-in took {took:?}"
    );
    let started = Instant::now();
    let (status, body) = page(&a.base(), &cookie, "/dashboard/apps").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the apps list took {:?}",
        started.elapsed()
    );
    assert_eq!(
        testid(&body, &format!("nodes-{APP_ID}")).as_deref(),
        Some(format!("{}: 1", a.id).as_str()),
        "this node's own connections"
    );
    redis.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_list_shows_the_cluster_total_and_each_nodes_connections() {
    let (_redis, _database, a, b) = two_nodes(&[]).await;
    let _on_a = [a.connect().await, a.connect().await];
    let _on_b = b.connect().await;
    let cookie = session(&b.base()).await;
    let expected_nodes = format!("{}: 2, {}: 1", a.id, b.id);
    for node in [&a, &b] {
        let base = node.base();
        eventually(
            "the apps list shows 3 connections, 2 on A and 1 on B",
            Duration::from_secs(10),
            || {
                let (base, cookie) = (base.clone(), cookie.clone());
                let expected_nodes = expected_nodes.clone();
                async move {
                    let (status, body) = page(&base, &cookie, "/dashboard/apps").await;
                    assert_eq!(status, 200, "{body}");
                    let total = testid(&body, &format!("connections-{APP_ID}")).unwrap_or_default();
                    let nodes = testid(&body, &format!("nodes-{APP_ID}")).unwrap_or_default();
                    total.starts_with("3 ") && nodes == expected_nodes
                }
            },
        )
        .await;
        let (status, body) = page(&base, &cookie, &format!("/dashboard/apps/{APP_ID}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            testid(&body, "nodes").as_deref(),
            Some(expected_nodes.as_str()),
            "the app page too"
        );
    }
}

/// Runs the CLI on `database` with `args`: its stdout (it must succeed).
async fn cli_on(database: &Database, args: &[&str]) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = crate::helpers::herald_binary(data_dir.path());
    command.args(args).env("HERALD_DATABASE_URL", &database.url);
    let output = command.output().await.unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Signs in `email` (password [`PASSWORD`]) on `base`: the session's `Cookie` header.
async fn session_of(base: &str, email: &str) -> String {
    session_as(base, email, PASSWORD).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admins_see_node_numbers_not_node_ids_and_only_their_own_apps_figures() {
    let (_redis, database, a, b) = two_nodes(&[]).await;
    // An admin of the default app's tenant, and an admin of another tenant.
    cli_on(
        &database,
        &[
            "users",
            "create",
            "--email",
            "own@example.test",
            "--password",
            PASSWORD,
            "--tenant",
            "1",
        ],
    )
    .await;
    let other: Value = serde_json::from_str(
        &cli_on(
            &database,
            &["tenants", "create", "--name", "Other", "--json"],
        )
        .await,
    )
    .unwrap();
    let other_id = other["id"].as_str().unwrap().to_owned();
    cli_on(
        &database,
        &[
            "users",
            "create",
            "--email",
            "other@example.test",
            "--password",
            PASSWORD,
            "--tenant",
            &other_id,
        ],
    )
    .await;
    let _on_a = [a.connect().await, a.connect().await];
    let mut on_b = b.connect().await;

    // The default app's tenant admin: "node 1" (A: its id sorts first) and "node 2", no ids.
    let own = session_of(&b.base(), "own@example.test").await;
    let operator = session(&b.base()).await;
    let base = b.base();
    eventually(
        "the operator's apps list shows both nodes' ids",
        Duration::from_secs(10),
        || {
            let (base, operator) = (base.clone(), operator.clone());
            let expected = format!("{}: 2, {}: 1", a.id, b.id);
            async move {
                let (_, body) = page(&base, &operator, "/dashboard/apps").await;
                testid(&body, &format!("nodes-{APP_ID}")).as_deref() == Some(expected.as_str())
            }
        },
    )
    .await;
    let (status, body) = page(&base, &own, "/dashboard/apps").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        testid(&body, &format!("nodes-{APP_ID}")).as_deref(),
        Some("node 1: 2, node 2: 1")
    );
    assert!(!body.contains(&a.id) && !body.contains(&b.id), "no node id");
    let (status, body) = page(&base, &own, &format!("/dashboard/apps/{APP_ID}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        testid(&body, "nodes").as_deref(),
        Some("node 1: 2, node 2: 1")
    );
    assert!(!body.contains(&a.id) && !body.contains(&b.id), "no node id");
    // Its console names node B "node 2".
    let mut stream = console_stream(&base, &own).await;
    assert_eq!(stream.status(), 200);
    let mut buffer = String::new();
    let mut named = false;
    for n in 0..10 {
        on_b.subscribe(&format!("tenant-{n}")).await;
        if read_until(&mut stream, &mut buffer, |event| {
            event["kind"] == "subscribed" && event["node"] == "node 2"
        })
        .await
        {
            named = true;
            break;
        }
    }
    assert!(named, "the console line names node 2");
    assert!(!buffer.contains(&b.id), "no node id on the console");

    // Another tenant's admin gets neither the app's console nor its figures, on either node.
    let stranger = session_of(&a.base(), "other@example.test").await;
    for node in [&a, &b] {
        let (status, _) = page(
            &node.base(),
            &stranger,
            &format!("/dashboard/apps/{APP_ID}/live/events"),
        )
        .await;
        assert_eq!(status, 404, "another tenant's console");
        let (status, body) = page(
            &node.base(),
            &stranger,
            &format!("/dashboard/apps/{APP_ID}"),
        )
        .await;
        assert_eq!(status, 404, "another tenant's app page");
        assert!(!body.contains(&a.id) && !body.contains(&b.id));
        let (status, body) = page(&node.base(), &stranger, "/dashboard/apps").await;
        assert_eq!(status, 200);
        assert!(
            testid(&body, &format!("nodes-{APP_ID}")).is_none()
                && testid(&body, &format!("connections-{APP_ID}")).is_none(),
            "no figures of another tenant's app"
        );
        let (status, _) = page(
            &node.base(),
            &stranger,
            &format!("/dashboard/apps/{APP_ID}/usage"),
        )
        .await;
        assert_eq!(status, 404, "another tenant's usage");
    }
}

/// Takes the complete Server-Sent Events off the front of `buffer` up to the first `debug` event
/// that parses: that event (`None` when no complete one is left).
pub(crate) fn next_debug_event(buffer: &mut String) -> Option<Value> {
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        if !block.contains("event: debug") {
            continue;
        }
        let data: String = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .collect();
        if let Ok(event) = serde_json::from_str::<Value>(&data) {
            return Some(event);
        }
    }
    None
}

/// Appends the next chunk of `response` to `buffer`: false when none came within `wait` (the
/// stream ending fails the test).
pub(crate) async fn next_chunk(
    response: &mut reqwest::Response,
    buffer: &mut String,
    wait: Duration,
) -> bool {
    match tokio::time::timeout(wait, response.chunk()).await {
        Ok(Ok(Some(chunk))) => {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            true
        }
        Ok(_) => panic!("the console stream ended"),
        Err(_) => false,
    }
}

/// The live console's event stream of the default app on the node at `base`, as `cookie`.
pub(crate) async fn console_stream(base: &str, cookie: &str) -> reqwest::Response {
    http()
        .get(format!("{base}/dashboard/apps/{APP_ID}/live/events"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// Subscribes `client` to fresh `{tag}-…` channels until `stream` shows one of them from
/// `node_id`, for at most `limit`.
pub(crate) async fn probe_until_seen(
    client: &mut crate::helpers::Client,
    stream: &mut reqwest::Response,
    buffer: &mut String,
    node_id: &str,
    tag: &str,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    for probe in 0.. {
        let channel = format!("{tag}-{probe}");
        client.subscribe(&channel).await;
        let prefix = format!("{tag}-");
        if read_until(stream, buffer, |event| {
            event["kind"] == "subscribed"
                && event["channel"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&prefix))
                && event["node"] == node_id
        })
        .await
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
    false
}

/// Reads Server-Sent Events from `response` until one `debug` event satisfies `wanted`.
pub(crate) async fn read_until(
    response: &mut reqwest::Response,
    buffer: &mut String,
    wanted: impl Fn(&Value) -> bool,
) -> bool {
    loop {
        while let Some(event) = next_debug_event(buffer) {
            if wanted(&event) {
                return true;
            }
        }
        if !next_chunk(response, buffer, Duration::from_millis(500)).await {
            return false;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_console_on_one_node_shows_the_other_nodes_events_naming_the_node() {
    let (_redis, _database, a, b) = two_nodes(&[]).await;
    let cookie = session(&a.base()).await;
    let mut stream = console_stream(&a.base(), &cookie).await;
    assert_eq!(stream.status(), 200);
    let mut buffer = String::new();
    // Node B learns within a second or two that A watches the app; until then its events are
    // not forwarded, so subscribe again until one shows up.
    let mut client = b.connect().await;
    let seen = probe_until_seen(
        &mut client,
        &mut stream,
        &mut buffer,
        &b.id,
        "probe",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        seen,
        "node A's console shows node B's subscribe, naming node B"
    );
    // A's own events name A.
    let mut on_a = a.connect().await;
    on_a.subscribe("local-one").await;
    let a_id = a.id.clone();
    let mut found = false;
    for _ in 0..10 {
        if read_until(&mut stream, &mut buffer, |event| {
            event["channel"] == "local-one" && event["node"] == a_id.as_str()
        })
        .await
        {
            found = true;
            break;
        }
    }
    assert!(found, "node A's own events name node A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_disabled_with_the_cli_on_one_node_is_enforced_by_the_other_within_2s() {
    let (_redis, database, a, b) = two_nodes(&[]).await;
    let mut on_b = b.connect().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut cli = crate::helpers::herald_binary(data_dir.path());
    cli.args(["apps", "update", APP_ID, "--enabled", "false"])
        .env("HERALD_DATABASE_URL", &database.url);
    let output = cli.output().await.unwrap();
    let changed = Instant::now();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Node B closes its socket of the app with 4003 within 2 s of the change.
    let (code, _) = on_b.expect_error().await;
    assert_eq!(code, 4003);
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(2), "node B took {took:?}");
    assert_eq!(on_b.expect_close().await, Some(4003));
    drop(a);
}

/// A REST trigger of `event` on `channel` through the node at `base`.
pub(crate) async fn trigger(base: &str, channel: &str, event: &str) {
    let body = json!({"name": event, "channels": [channel], "data": "x"});
    let path = format!("/apps/{APP_ID}/events");
    let response = post_signed(&http(), base, &path, body.to_string()).await;
    assert_eq!(response.status().as_u16(), 200, "the trigger is accepted");
}

/// Reads frames until `event` arrives on `channel` (a close fails the test).
pub(crate) async fn expect_on(client: &mut crate::helpers::Client, channel: &str, event: &str) {
    loop {
        match client.next().await {
            Received::Json(frame) if frame["event"] == event && frame["channel"] == channel => {
                return
            }
            Received::Json(_) => {}
            Received::Closed(code) => panic!("closed ({code:?}) while waiting for {event}"),
        }
    }
}

/// Waits (10 s at most) until nodes `a` and `b` both report the store's status as `status`.
async fn until_both_report_the_store(a: &Node, b: &Node, status: &str) {
    eventually(
        &format!("both nodes report the store {status}"),
        Duration::from_secs(10),
        || async {
            let (_, a_body) = a.ready().await;
            let (_, b_body) = b.ready().await;
            a_body["store"]["status"] == status && b_body["store"]["status"] == status
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_keeps_the_cluster_serving_fails_writes_cleanly_and_loses_nothing() {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let upstream = reqwest::Url::parse(&database.url).unwrap();
    let upstream_address = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(5432)
    );
    let proxy = CutProxy::start(upstream_address).await;
    let mut proxied = upstream.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let proxied = proxied.to_string();
    let env = [("HERALD_DATABASE_URL", proxied.as_str())];
    let a = node("a", &redis, &database, &env).await;
    let b = node("b", &redis, &database, &env).await;

    // A webhook for channel_occupied, added with the CLI; probe until a node delivers one.
    let receiver = Receiver::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut command = crate::helpers::herald_binary(data_dir.path());
        command
            .args(args)
            .env("HERALD_DATABASE_URL", &proxied)
            .env("HERALD_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8");
        command
    };
    let added = cli(&[
        "webhooks",
        "add",
        "--app",
        APP_ID,
        "--url",
        &receiver.url,
        "--events",
        "channel_occupied",
    ])
    .output()
    .await
    .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let mut on_a = a.connect().await;
    let mut on_b = b.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for probe in 0.. {
        on_a.subscribe(&format!("probe-{probe}")).await;
        pause(Duration::from_millis(300)).await;
        if receiver.saw_probe() {
            break;
        }
        assert!(Instant::now() < deadline, "the webhook was never delivered");
    }
    let messages_before = usage_messages(&database.url).await;
    let cookie = session(&a.base()).await;

    // PostgreSQL goes away.
    proxy.cut().await;

    // Subscribes, new connections and publishes across nodes go on (apps come from the cache).
    on_a.subscribe("during-cut").await;
    on_b.subscribe("during-cut").await;
    redis.wait_for_listeners(2).await;
    for n in 0..5 {
        trigger(&b.base(), "during-cut", &format!("from-b-{n}")).await;
        expect_on(&mut on_a, "during-cut", &format!("from-b-{n}")).await;
        expect_on(&mut on_b, "during-cut", &format!("from-b-{n}")).await;
    }
    trigger(&a.base(), "during-cut", "from-a").await;
    expect_on(&mut on_b, "during-cut", "from-a").await;
    for node in [&a, &b] {
        let mut fresh = node.connect().await;
        fresh.subscribe("fresh").await;
        let (status, body) = node.ready().await;
        assert_eq!(
            status, 200,
            "a degraded store does not make the node unready: {body}"
        );
    }
    until_both_report_the_store(&a, &b, "degraded").await;

    // Writes fail cleanly: the CLI says the store is unreachable, within 5 s.
    let started = Instant::now();
    let update = cli(&["apps", "update", APP_ID, "--max-connections", "5"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&update.stderr);
    assert!(!update.status.success(), "{stderr}");
    assert!(stderr.contains("store unreachable"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the CLI took {:?}",
        started.elapsed()
    );
    // The dashboard answers 503 saying why (its session lives in the store).
    let (status, body) = page(&b.base(), &cookie, "/dashboard/apps").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Store unreachable"), "{body}");

    // PostgreSQL comes back: the counts of the outage are flushed, the webhook is delivered.
    proxy.restore().await;
    receiver
        .wait_for(
            "channel_occupied for the channel occupied during the outage",
            |events| {
                events
                    .iter()
                    .any(|e| e["name"] == "channel_occupied" && e["channel"] == "during-cut")
            },
        )
        .await;
    // 6 publishes to one channel, each delivered to 2 subscribers: 6 + 12 messages at least.
    let database_url = database.url.clone();
    eventually(
        "the outage's counts reach PostgreSQL",
        Duration::from_secs(20),
        || {
            let database_url = database_url.clone();
            async move { usage_messages(&database_url).await >= messages_before + 18 }
        },
    )
    .await;
    until_both_report_the_store(&a, &b, "ok").await;
    // Writes work again.
    let update = cli(&["apps", "update", APP_ID, "--max-connections", "50"])
        .output()
        .await
        .unwrap();
    assert!(
        update.status.success(),
        "{}",
        String::from_utf8_lossy(&update.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_pages_occupied_channels_are_cluster_wide() {
    let (_redis, _database, a, b) = two_nodes(&[]).await;
    let mut on_a = a.connect().await;
    on_a.subscribe("live-lobby").await;
    // Node B holds no socket of the app: its Live page lists A's channel from Redis.
    let cookie = session(&b.base()).await;
    let (status, body) = page(
        &b.base(),
        &cookie,
        &format!("/dashboard/apps/{APP_ID}/live"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("live-lobby"), "{body}");
    assert!(!body.contains("No channel is occupied"), "{body}");
}
