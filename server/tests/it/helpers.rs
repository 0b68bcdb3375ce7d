//! Helpers that read as sentences: `spawn_app()`, `app.connect()`, `client.expect_event(...)`.
//!
//! How tests wait: only through the helpers here (`source_rules.rs` fails on a `sleep` anywhere
//! else). Polling ([`wait_until`], or a loop with its own deadline around [`pause`]) and "nothing
//! arrives within" checks ([`Client::expect_silence`], [`pause`]) are bounded by [`MAX_PAUSE`];
//! a server timer a test must see run out runs on tokio's paused time ([`pause_time`],
//! [`advance_past`]) or is set short through `Settings` (or an environment variable for the
//! binary), never waited for at its real length.
#![allow(dead_code)] // Shared helpers: each test module uses a different subset.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use herald::config::Settings;
use herald::node::SharedNode;
use herald::startup::Application;

pub const APP_ID: &str = "4242";
pub const KEY: &str = "test-key-0123456789abc";
pub const SECRET: &str = "test-secret-0123456789abcdef";

/// How long any single expectation waits.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub address: std::net::SocketAddr,
    pub node: SharedNode,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub http: reqwest::Client,
    /// The metrics listener's address, when `Settings::metrics_bind` is set.
    pub metrics: Option<std::net::SocketAddr>,
}

pub fn test_settings(dir: PathBuf) -> Settings {
    let mut settings = Settings::for_tests(dir);
    settings.default_app.id = Some(APP_ID.into());
    settings.default_app.key = Some(KEY.into());
    settings.default_app.secret = Some(herald::tenants::Secret::new(SECRET.into()));
    settings.revision_poll = Duration::from_millis(200);
    // The wall clock as tokio's clock moves it: the system clock, except on paused time, where
    // it moves with `advance` like every timer.
    settings.clock = herald::clock::Clock::tokio_at(now_millis());
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(data_dir.path().to_path_buf());
    configure(&mut settings);
    spawn_in(data_dir, settings).await
}

pub async fn spawn_in(data_dir: tempfile::TempDir, settings: Settings) -> TestApp {
    let application = Application::build(settings).await.expect("server builds");
    let address = application.address();
    let metrics = application.metrics_address();
    let node = application.node();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        node,
        data_dir,
        stop: Some(stop),
        server: Some(server),
        http: reqwest::Client::new(),
        metrics,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.node.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{}", self.address, path)
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server result");
        }
    }

    pub async fn connect_raw(&self, path_and_query: &str) -> Client {
        let url = format!("ws://{}{}", self.address, path_and_query);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client {
            socket,
            socket_id: String::new(),
        }
    }

    /// Connects to the default app and reads `pusher:connection_established`.
    pub async fn connect(&self) -> Client {
        self.connect_key(KEY).await
    }

    pub async fn connect_key(&self, key: &str) -> Client {
        let mut client = self
            .connect_raw(&format!(
                "/app/{key}?protocol=7&client=js&version=8.6.0&flash=false"
            ))
            .await;
        let established = client.expect_event("pusher:connection_established").await;
        let data: Value =
            serde_json::from_str(established["data"].as_str().expect("data is a string"))
                .expect("data is JSON");
        client.socket_id = data["socket_id"].as_str().expect("socket_id").to_owned();
        client
    }

    /// A signed REST request with the default app's credentials, at the server's time.
    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let now = self.node.settings.clock.now_seconds();
        self.rest_signed(method, path, path, query, body, KEY, SECRET, now)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, String) {
        self.rest("POST", path, &[], Some(&body.to_string())).await
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        self.rest("GET", path, query, None).await
    }

    /// A REST request signed over `signed_path`, sent to `request_path`.
    #[allow(clippy::too_many_arguments)]
    pub async fn rest_signed(
        &self,
        method: &str,
        request_path: &str,
        signed_path: &str,
        query: &[(&str, &str)],
        body: Option<&str>,
        key: &str,
        secret: &str,
        timestamp: i64,
    ) -> (u16, String) {
        let md5 = body.map(|body| md5_hex(body.as_bytes()));
        let params = signed_params(
            method,
            signed_path,
            query,
            md5.as_deref(),
            key,
            secret,
            timestamp,
        );
        self.send(method, request_path, &params, body).await
    }

    /// Sends exactly these parameters, unencoded, as pusher-http-node does.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        params: &[(String, String)],
        body: Option<&str>,
    ) -> (u16, String) {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!("{}?{}", self.url(path), query.join("&"));
        let mut request = self.http.request(method.parse().expect("method"), url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }
}

/// The wall clock in Unix seconds, to sign requests with a fresh timestamp.
pub fn now() -> i64 {
    herald::clock::Clock::system().now_seconds()
}

/// The wall clock in Unix milliseconds.
pub fn now_millis() -> i64 {
    herald::clock::Clock::system().now_millis()
}

pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn sign_request(secret: &str, method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| format!("{}={}", k.to_lowercase(), v))
        .collect();
    sorted.sort();
    hmac_hex(secret, &format!("{method}\n{path}\n{}", sorted.join("&")))
}

/// `key:signature` for a private or presence channel.
pub fn channel_auth(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let to_sign = match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{KEY}:{}", hmac_hex(SECRET, &to_sign))
}

pub fn signin_auth(socket_id: &str, user_data: &str) -> String {
    format!(
        "{KEY}:{}",
        hmac_hex(SECRET, &format!("{socket_id}::user::{user_data}"))
    )
}

pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub socket_id: String,
}

/// What came off the socket.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed(Option<u16>),
}

impl Client {
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("frame is sent");
    }

    /// The next JSON frame or the close, skipping WebSocket control frames.
    pub async fn next(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame arrives in time");
            match next {
                None => return Received::Closed(None),
                Some(Err(_)) => return Received::Closed(None),
                Some(Ok(Message::Text(text))) => {
                    return Received::Json(serde_json::from_str(&text).expect("frames are JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            Received::Closed(code) => panic!("socket closed ({code:?}) while a frame was expected"),
        }
    }

    /// Reads frames until one named `event` arrives (others are skipped).
    pub async fn expect_event(&mut self, event: &str) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame["event"] == event {
                return frame;
            }
        }
    }

    /// The next frame must be `event`.
    pub async fn expect_next(&mut self, event: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["event"], event, "unexpected frame {frame}");
        frame
    }

    /// Asserts nothing arrives for a short while (at most [`MAX_PAUSE`]).
    pub async fn expect_silence(&mut self, wait: Duration) {
        assert!(
            wait <= MAX_PAUSE,
            "a silence of {wait:?} is over {MAX_PAUSE:?}"
        );
        if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, self.socket.next()).await {
            if matches!(message, Message::Text(_)) {
                panic!("expected silence, got {message:?}");
            }
        }
    }

    /// Reads until the close frame and returns its code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            if let Received::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// A `pusher:error` frame's `(code, message)`.
    pub async fn expect_error(&mut self) -> (Value, String) {
        let frame = self.expect_event("pusher:error").await;
        (
            frame["data"]["code"].clone(),
            frame["data"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let auth = if channel.starts_with("private-") {
            channel_auth(&self.socket_id, channel, None)
        } else {
            String::new()
        };
        self.send_json(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth}}))
            .await;
        self.expect_event("pusher_internal:subscription_succeeded")
            .await
    }

    pub async fn subscribe_presence(&mut self, channel: &str, user_id: &str, info: Value) -> Value {
        let channel_data = json!({"user_id": user_id, "user_info": info}).to_string();
        let auth = channel_auth(&self.socket_id, channel, Some(&channel_data));
        self.send_json(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth,"channel_data":channel_data}}))
            .await;
        let frame = self
            .expect_event("pusher_internal:subscription_succeeded")
            .await;
        serde_json::from_str(frame["data"].as_str().expect("string data")).expect("JSON data")
    }

    pub async fn sign_in(&mut self, user_data: &str) -> Value {
        let auth = signin_auth(&self.socket_id, user_data);
        self.send_json(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}))
            .await;
        self.expect_event("pusher:signin_success").await
    }

    pub async fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: WsCloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// Decodes a frame's string `data`.
pub fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

impl TestApp {
    /// Changes the default app in the store and reloads the server's cache at once.
    /// Changes the app's `limits` (the others as they are) and refreshes the cache.
    pub async fn update_limits(&self, limits: herald::tenants::LimitsPatch) {
        self.update_app(herald::tenants::AppPatch {
            limits,
            ..herald::tenants::AppPatch::default()
        })
        .await;
    }

    pub async fn update_app(&self, patch: herald::tenants::AppPatch) {
        self.node
            .store
            .update_app(APP_ID, patch)
            .await
            .expect("app updates");
        herald::startup::refresh_apps(&self.node)
            .await
            .expect("cache refreshes");
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `WAIT`. Used to wait for
/// the app cache to follow a store write (the test poll interval is 200 ms).
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        pause(Duration::from_millis(20)).await;
    }
}

/// Publishes 2,000 events of 10 KiB on "firehose", to which `slow` and `fast` are subscribed,
/// while `slow` reads far slower than they come (about 20 MB/s: publishing never waits on a
/// subscriber) and `fast` reads them all; asserts `slow` is closed with 4100 and `fast` got
/// every event.
pub async fn assert_slow_reader_closed_fast_served(
    app: &TestApp,
    mut slow: Client,
    mut fast: Client,
) {
    let slow_reader = tokio::spawn(async move {
        loop {
            pause(Duration::from_millis(2)).await;
            if let Received::Closed(code) = slow.next().await {
                return code;
            }
        }
    });
    let fast_reader = tokio::spawn(async move {
        let mut received = 0;
        while received < 2000 {
            match fast.next().await {
                Received::Json(frame) if frame["event"] == "big" => received += 1,
                Received::Json(_) => {}
                Received::Closed(code) => panic!("the fast reader was closed ({code:?})"),
            }
        }
        received
    });
    let channel = herald::protocol::ChannelName::parse("firehose", 200).unwrap();
    let data = "x".repeat(10 * 1024);
    let hub = app.node.hub.app(APP_ID);
    for i in 0..2000 {
        hub.publish(&channel, "big", &data, None);
        if i % 2 == 0 {
            pause(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(slow_reader.await.unwrap(), Some(4100));
    assert_eq!(
        fast_reader.await.unwrap(),
        2000,
        "the fast reader got every event"
    );
}

/// The longest real-time wait a test takes in one step through [`pause`].
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Lets `wait` (at most [`MAX_PAUSE`]) pass: a polling loop's interval, a "nothing more
/// arrives within" window, a short test-only server timer (a vacate delay set in `Settings`)
/// running out, or a client pacing itself on purpose. On paused time it is virtual.
pub async fn pause(wait: Duration) {
    assert!(
        wait <= MAX_PAUSE,
        "a test pause of {wait:?} is over {MAX_PAUSE:?}: set the server timer short or use paused time"
    );
    tokio::time::sleep(wait).await;
}

/// Pauses tokio's clock for the rest of the test and holds it still: it moves only by
/// [`advance_past`], and every server timer and test timeout with it. Without the hold, tokio
/// skips ahead to the next timer (auto-advance) whenever the runtime waits on a loopback socket
/// or SQLite's thread, and that is often a test's own timeout. The hold is a blocking task (tokio
/// does not auto-advance while one runs); after 60 s of real time it lets go, so a stuck
/// expectation times out instead of hanging. Build the node and connect first. Current-thread
/// runtimes only (the default `#[tokio::test]`).
pub fn pause_time() -> PausedTime {
    tokio::time::pause();
    let (hold, held) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = held.recv_timeout(Duration::from_secs(60));
    });
    PausedTime { _hold: hold }
}

/// Holds tokio's paused clock still until dropped (see [`pause_time`]).
pub struct PausedTime {
    _hold: std::sync::mpsc::Sender<()>,
}

impl PausedTime {
    /// Lets go of the clock: from here it runs in real time again (on from where paused time
    /// left it), for a check that needs real time to pass, such as [`Client::expect_silence`]
    /// (on held paused time its window would never end).
    pub fn resume(self) {
        drop(self);
        tokio::time::resume();
    }
}

/// Moves paused time past `duration` from now: 1 ms more, since a timer set between two
/// milliseconds fires on the later one.
pub async fn advance_past(duration: Duration) {
    tokio::time::advance(duration + Duration::from_millis(1)).await;
}

/// The query parameters of a signed REST request, `auth_signature` last, with `body_md5` exactly
/// as given (pusher-http-python sends the MD5 of the empty body on GET; the others send none).
#[allow(clippy::too_many_arguments)]
pub fn signed_params(
    method: &str,
    signed_path: &str,
    query: &[(&str, &str)],
    body_md5: Option<&str>,
    key: &str,
    secret: &str,
    timestamp: i64,
) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    params.push(("auth_key".into(), key.into()));
    params.push(("auth_timestamp".into(), timestamp.to_string()));
    params.push(("auth_version".into(), "1.0".into()));
    if let Some(md5) = body_md5 {
        params.push(("body_md5".into(), md5.into()));
    }
    let signature = sign_request(secret, method, signed_path, &params);
    params.push(("auth_signature".into(), signature));
    params
}

/// The `herald` binary as a command: none of this process's `HERALD_*` or `RUST_LOG` settings,
/// port 0, its store in `data_dir`, stdout piped (see [`start_listening`]), stderr dropped,
/// killed when dropped. Callers add their own environment.
pub fn herald_binary(data_dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .env("HERALD_BIND", "127.0.0.1:0")
        .env("HERALD_DATA_DIR", data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts `command` (from [`herald_binary`]) and waits for its `listening on http://ADDR` line
/// (`https://` with TLS); returns the child and ADDR. The rest of its stdout is read in the
/// background.
pub async fn start_listening(
    mut command: tokio::process::Command,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = command.spawn().expect("herald starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("log line") {
            let rest = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1));
            if let Some(rest) = rest {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        panic!("herald exited before listening");
    })
    .await
    .expect("herald listens in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

/// A signed REST `POST` of the JSON `body` to `path` on the server at `base` (`http://ADDR`),
/// for tests that run the binary rather than a [`TestApp`].
pub async fn post_signed(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: String,
) -> reqwest::Response {
    let params = signed_params(
        "POST",
        path,
        &[],
        Some(&md5_hex(body.as_bytes())),
        KEY,
        SECRET,
        now(),
    );
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    http.post(format!("{base}{path}?{}", query.join("&")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the request is answered")
}

/// The PostgreSQL server the store tests create their scratch databases on:
/// `HERALD_TEST_DATABASE_URL`, or the machine's own (`postgres://postgres@127.0.0.1:5432/test`).
/// A test that needs it fails when it cannot connect; none skips.
pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `body` with the URL of a fresh PostgreSQL database on [`postgres_admin_url`], dropped
/// afterwards (also when `body` panics, whose panic is then carried on). Fails, never skips,
/// when PostgreSQL cannot be reached.
pub async fn on_scratch_postgres<F: std::future::Future<Output = ()>>(
    body: impl FnOnce(String) -> F,
) {
    use futures_util::FutureExt;
    use sqlx::{Connection, Executor};
    let admin_url = postgres_admin_url();
    let database = format!("herald_test_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connects to HERALD_TEST_DATABASE_URL");
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .expect("creates a scratch database");
    let url = crate::store::with_database(&admin_url, &database);
    let outcome = std::panic::AssertUnwindSafe(body(url)).catch_unwind().await;
    let dropped = admin
        .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
        .await;
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.expect("drops the scratch database");
}
