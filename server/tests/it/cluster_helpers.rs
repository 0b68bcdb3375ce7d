//! The cluster tests' harness: a `redis-server` of the test's own on a free port (killed on
//! drop, restartable on the same port; a random cluster name and random node ids per test, so
//! nodes of two tests never mix even if their Redis ports did), a fresh PostgreSQL database on
//! `HERALD_TEST_DATABASE_URL` (dropped afterwards), and `herald` node processes on both.
//! Missing `redis-server` or an unreachable PostgreSQL fail the test; nothing is skipped.
#![allow(dead_code)] // Each cluster test uses a different subset.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tokio::process::{Child, Command};

use crate::helpers::{
    channel_auth, herald_binary, pause, post_signed, start_listening, Client, APP_ID, KEY, SECRET,
};

/// Polls `check` every 50 ms until it holds, for at most `limit`; panics naming `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out ({limit:?}) waiting until {what}"
        );
        pause(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` of the test's own, killed on drop.
pub struct Redis {
    pub port: u16,
    /// The test's own cluster name (`HERALD_CLUSTER` of its nodes).
    pub cluster: String,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl Redis {
    /// Starts `redis-server` (from PATH) on a free port, without persistence.
    pub async fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            cluster: format!("herald-test-{:08x}", rand::random::<u32>()),
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The Redis channel the default app's publishes cross.
    pub fn app_channel(&self) -> String {
        format!("{}:app:{APP_ID}", self.cluster)
    }

    /// The heartbeat key of node `node_id`.
    pub fn node_key(&self, node_id: &str) -> String {
        format!("{}:node:{node_id}", self.cluster)
    }

    /// Starts it again on the same port (after [`Redis::kill`]), and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("the cluster tests need redis-server on PATH (apt-get install redis-server): {error}")
            });
        self.child = Some(child);
        let url = self.url();
        eventually("redis-server answers", Duration::from_secs(10), || {
            let url = url.clone();
            async move { ping(&url).await }
        })
        .await;
        // The answer came from this test's redis-server, not another one on a reused port.
        let exited = self.child.as_mut().map(Child::try_wait);
        assert!(
            matches!(exited, Some(Ok(None))),
            "redis-server on port {} exited ({exited:?}): the port was taken",
            self.port
        );
    }

    /// Stops it (SIGSTOP): connections stay open and nothing answers, like a partition.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes it after [`Redis::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server runs")
            .to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Kills it (SIGKILL) and waits for the process to end.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("redis-server is killed");
        }
    }

    /// A connection for the test's own checks.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connects to the test's redis-server")
    }

    /// How many connections (nodes) listen to `channel`.
    pub async fn listeners(&self, channel: &str) -> i64 {
        let mut conn = self.connection().await;
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        count
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> bool {
        let mut conn = self.connection().await;
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .expect("EXISTS")
            == 1
    }

    /// Waits until `count` nodes listen to the default app's Redis channel.
    pub async fn wait_for_listeners(&self, count: i64) {
        let channel = self.app_channel();
        eventually(
            &format!("{count} nodes listen to {channel}"),
            Duration::from_secs(10),
            || async { self.listeners(&channel).await == count },
        )
        .await;
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_ok()
}

/// A fresh PostgreSQL database, dropped (forcibly) when this is dropped.
pub struct Database {
    pub url: String,
    admin_url: String,
    name: String,
}

impl Database {
    /// Creates `herald_cluster_<random>` on `HERALD_TEST_DATABASE_URL` (default
    /// the machine's own: `helpers::postgres_admin_url`); panics when PostgreSQL cannot be reached.
    pub async fn create() -> Database {
        let admin_url = crate::helpers::postgres_admin_url();
        let name = format!("herald_cluster_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| {
                panic!("the cluster tests need PostgreSQL at {admin_url} (HERALD_TEST_DATABASE_URL): {error}")
            });
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("creates a scratch database");
        let _ = admin.close().await;
        Database {
            url: crate::store::with_database(&admin_url, &name),
            admin_url,
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Dropped from async tests: a thread of its own with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// One `herald` process of the cluster.
pub struct Node {
    pub id: String,
    pub address: String,
    pub child: Child,
    _data_dir: tempfile::TempDir,
}

impl Node {
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Connects a client to the default app on this node.
    pub async fn connect(&self) -> Client {
        connect(&self.address).await
    }

    /// `GET /ready`: the status and the body.
    pub async fn ready(&self) -> (u16, Value) {
        let response = reqwest::get(format!("{}/ready", self.base()))
            .await
            .expect("/ready answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("/ready is JSON"))
    }

    /// kill -9.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("the node is killed");
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the node exits in time")
            .expect("the node's status")
    }
}

/// Starts a node on `redis` and `database` (the default app from `helpers`), with id `id`
/// plus a random suffix ([`Node::id`]).
pub async fn start_node(id: &str, redis: &Redis, database: &Database) -> Node {
    let id = format!("{id}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let (child, address, data_dir) = spawn_node(&id, redis, database, &[]).await;
    Node {
        id,
        address,
        child,
        _data_dir: data_dir,
    }
}

/// [`start_node`] with `env` on top of the usual settings.
pub async fn start_node_with(
    id: &str,
    redis: &Redis,
    database: &Database,
    env: &[(&str, &str)],
) -> Node {
    let id = format!("{id}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let (child, address, data_dir) = spawn_node(&id, redis, database, env).await;
    Node {
        id,
        address,
        child,
        _data_dir: data_dir,
    }
}

/// Starts node `id` (exactly) with `env` on top of the usual settings; waits until it listens.
pub async fn spawn_node(
    id: &str,
    redis: &Redis,
    database: &Database,
    env: &[(&str, &str)],
) -> (Child, String, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut command = node_command(id, redis, database, data_dir.path());
    command.envs(env.iter().copied());
    let (child, address) = start_listening(command).await;
    (child, address, data_dir)
}

/// The command that runs node `id` on `redis` and `database`, with its data in `data_dir`.
pub fn node_command(
    id: &str,
    redis: &Redis,
    database: &Database,
    data_dir: &std::path::Path,
) -> Command {
    let mut command = herald_binary(data_dir);
    command
        .env("HERALD_REDIS_URL", redis.url())
        .env("HERALD_CLUSTER", &redis.cluster)
        .env("HERALD_DATABASE_URL", &database.url)
        .env("HERALD_NODE_ID", id)
        .env("HERALD_DEFAULT_APP_ID", APP_ID)
        .env("HERALD_DEFAULT_APP_KEY", KEY)
        .env("HERALD_DEFAULT_APP_SECRET", SECRET)
        .env("HERALD_SHUTDOWN_GRACE_SECS", "4");
    command
}

/// A Redis, a database and three nodes `a-…`, `b-…`, `c-…` on them. The first node creates the
/// default app; the other two start after it.
pub struct TestCluster {
    pub redis: Redis,
    pub nodes: Vec<Node>,
    pub database: Database,
}

impl TestCluster {
    pub async fn start() -> TestCluster {
        let database = Database::create().await;
        let redis = Redis::start().await;
        let first = start_node("a", &redis, &database).await;
        let (b, c) = tokio::join!(
            start_node("b", &redis, &database),
            start_node("c", &redis, &database)
        );
        TestCluster {
            redis,
            nodes: vec![first, b, c],
            database,
        }
    }
}

/// Connects a client to the default app on the node at `address` and reads
/// `pusher:connection_established`.
pub async fn connect(address: &str) -> Client {
    let url = format!("ws://{address}/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false");
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    let mut client = Client {
        socket,
        socket_id: String::new(),
    };
    let established = client.expect_event("pusher:connection_established").await;
    let data: Value = serde_json::from_str(established["data"].as_str().expect("string data"))
        .expect("JSON data");
    client.socket_id = data["socket_id"].as_str().expect("socket_id").to_owned();
    client
}

/// Runs the CLI with `args` on `database`; panics unless it succeeds.
pub async fn herald_cli(database: &Database, args: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = herald_binary(dir.path());
    command.args(args).env("HERALD_DATABASE_URL", &database.url);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the CLI finishes in time")
        .expect("the CLI runs");
    assert!(output.status.success(), "{output:?}");
}

/// Like [`TestCluster::start`], with the default app's limits changed by
/// `herald apps update APP_ID <limit_args>` before the three nodes start (a first node creates
/// the app and stops), so every node has them from its first request.
pub async fn start_cluster_with_limits(limit_args: &[&str]) -> TestCluster {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let mut creator = start_node("creator", &redis, &database).await;
    assert!(creator.terminate().await.success());
    let mut args = vec!["apps", "update", APP_ID];
    args.extend_from_slice(limit_args);
    herald_cli(&database, &args).await;
    let (a, b, c) = tokio::join!(
        start_node("a", &redis, &database),
        start_node("b", &redis, &database),
        start_node("c", &redis, &database)
    );
    TestCluster {
        redis,
        nodes: vec![a, b, c],
        database,
    }
}

/// A REST trigger of `event` on `channel` through the node at `base`, `socket_id` excluded when
/// given; 200 expected.
pub async fn trigger_except(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    event: &str,
    data: &str,
    socket_id: Option<&str>,
) {
    let mut body = json!({"name": event, "channel": channel, "data": data});
    if let Some(socket_id) = socket_id {
        body["socket_id"] = json!(socket_id);
    }
    let path = format!("/apps/{APP_ID}/events");
    let response = post_signed(http, base, &path, body.to_string()).await;
    assert_eq!(response.status().as_u16(), 200, "the trigger is accepted");
}

/// A REST trigger of a `news` event with `data` on `channel` through the node at `base`.
pub async fn trigger_news(http: &reqwest::Client, base: &str, channel: &str, data: &str) {
    trigger_except(http, base, channel, "news", data, None).await;
}

/// Subscribes `client` to private channel `channel`.
pub async fn subscribe_private(client: &mut Client, channel: &str) {
    let auth = channel_auth(&client.socket_id, channel, None);
    client
        .send_json(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth}}))
        .await;
    client
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
}

/// Waits (at most `limit`) for a frame named `event`, skipping others.
pub async fn wait_for(client: &mut Client, event: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next =
            tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut client.socket))
                .await
                .unwrap_or_else(|_| panic!("no {event} within {limit:?}"));
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = next else {
            assert!(
                !matches!(next, None | Some(Err(_))),
                "the socket closed while waiting for {event}"
            );
            continue;
        };
        let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
        if frame["event"] == event {
            return frame;
        }
    }
}

/// Whether a `probe` arrives within `wait` (a `during` from an outage may still arrive first:
/// what was not dropped keeps its order, and a publish Redis executed late may come first).
pub async fn heard_probe(client: &mut Client, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let next =
            tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut client.socket));
        let Ok(Some(Ok(frame))) = next.await else {
            return false;
        };
        let Ok(text) = frame.into_text() else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        match frame["event"].as_str() {
            Some("probe") => return true,
            Some("during") => continue,
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

/// Today's messages of the default app in `usage_daily` (every node's flushed counts).
pub async fn usage_messages(url: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connects");
    let total: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(SUM(messages) AS BIGINT) FROM usage_daily WHERE app_id = $1",
    )
    .bind(APP_ID)
    .fetch_one(&mut conn)
    .await
    .expect("reads usage_daily");
    let _ = conn.close().await;
    total.unwrap_or(0)
}
