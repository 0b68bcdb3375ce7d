//! Store hardening (issue 12 items 7 and 9): the data dir and the SQLite files are private, a
//! full disk wedges nothing and loses nothing once space returns, SIGTERM while the store
//! refuses writes exits within `HERALD_SHUTDOWN_GRACE_SECS` with status 1 and says what was
//! lost, `/ready` reports a degraded store within 1 s, and the CLI fails within 5 s when the
//! store is unreachable.
//!
//! The disk is made full on a small tmpfs this test mounts (it runs as root; a failed mount fails
//! the test). PostgreSQL outages go through a TCP proxy the test owns, on a fresh database: the
//! machine's PostgreSQL is never stopped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster_ops::session_as;
use crate::helpers::{pause, post_signed, spawn_in, test_settings, APP_ID, KEY, SECRET};
use crate::proxy::CutProxy;
use crate::webhooks::Receiver;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn companion(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test]
async fn the_data_dir_is_0700_and_the_store_files_0600_and_looser_ones_are_tightened() {
    let outer = tempfile::tempdir().unwrap();
    // A umask that would leave everything world-readable: the modes must not depend on it.
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = outer.path().join("data");
    let db = data.join("herald.db");
    let check = |when: &str| {
        assert_eq!(mode(&data), 0o700, "{when}: data dir");
        for file in [db.clone(), companion(&db, "-wal"), companion(&db, "-shm")] {
            assert_eq!(mode(&file), 0o600, "{when}: {}", file.display());
        }
    };
    let mut app = spawn_in(tempfile::tempdir().unwrap(), test_settings(data.clone())).await;
    check("created");
    app.stop().await;

    // An older build left them readable by everyone: the next start tightens them.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in [db.clone(), companion(&db, "-wal"), companion(&db, "-shm")] {
        if !file.exists() {
            std::fs::write(&file, b"").unwrap();
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut app = spawn_in(tempfile::tempdir().unwrap(), test_settings(data.clone())).await;
    check("tightened");
    app.stop().await;
}

#[tokio::test]
async fn shared_directories_holding_the_store_keep_their_mode() {
    // An operator may point the store at a shared directory (sticky, world-writable like /tmp):
    // Herald keeps its own files private but must not lock everyone else out of it.
    let shared_data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared_data.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut app = spawn_in(
        tempfile::tempdir().unwrap(),
        test_settings(shared_data.path().to_path_buf()),
    )
    .await;
    assert_eq!(
        mode(shared_data.path()),
        0o1777 & 0o777,
        "a sticky data dir is left as it is"
    );
    assert_eq!(mode(&shared_data.path().join("herald.db")), 0o600);
    app.stop().await;

    // A database URL outside the data dir, in an existing directory: that directory is not
    // changed either.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut settings = test_settings(data.path().to_path_buf());
    let db = elsewhere.path().join("other.db");
    settings.database_url = format!("sqlite://{}?mode=rwc", db.display());
    let mut app = spawn_in(tempfile::tempdir().unwrap(), settings).await;
    assert_eq!(mode(elsewhere.path()), 0o755);
    assert_eq!(mode(&db), 0o600);
    app.stop().await;
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): this test needs root to make a disk full"
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Fills the file system with `filler` until a write fails for lack of space.
    fn fill(&self, filler: &Path) {
        use std::io::Write;
        let mut file = std::fs::File::create(filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut size = chunk.len();
        loop {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(28) => {
                    if size == 1 {
                        break;
                    }
                    size /= 2;
                }
                Err(error) => panic!("filling the disk: {error}"),
            }
        }
        let _ = file.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Empties the WAL so the next writes need new space (a checkpointed WAL is reused in place).
async fn truncate_wal(db: &Path) {
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("opens the store file");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .expect("checkpoint");
    conn.close().await.unwrap();
}

async fn ready_body(http: &reqwest::Client, base: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = http
        .get(format!("{base}/ready"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/ready answers");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("/ready is JSON");
    (status, body, started.elapsed())
}

async fn trigger(http: &reqwest::Client, base: &str, channel: &str, n: usize) {
    let path = format!("/apps/{APP_ID}/events");
    for i in 0..n {
        let body = json!({"name": "e", "channel": channel, "data": format!("{i}")}).to_string();
        let response = post_signed(http, base, &path, body).await;
        assert_eq!(
            response.status(),
            200,
            "REST runs from memory: {}",
            response.text().await.unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn a_full_disk_wedges_nothing_and_every_count_and_webhook_is_written_once_space_returns() {
    let outer = tempfile::tempdir().unwrap();
    let mount = outer.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let tmpfs = Tmpfs::mount(&mount, "24m");
    let data = mount.join("data");
    let receiver = Receiver::start().await;
    let mut settings = test_settings(data.clone());
    settings.usage_flush = Duration::from_millis(200);
    settings.webhooks.vacate_delay = Duration::from_millis(200);
    settings.webhooks.backoff_base = Duration::from_millis(100);
    settings.webhooks.backoff_cap = Duration::from_millis(300);
    let mut app = spawn_in(tempfile::tempdir().unwrap(), settings).await;
    app.node
        .store
        .create_webhook(herald::tenants::NewWebhook {
            app_id: APP_ID.into(),
            url: receiver.url.clone(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: vec![],
        })
        .await
        .expect("webhook is added");
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let base = format!("http://{}", app.address);
    let http = reqwest::Client::new();
    let live = app.node.usage.app(APP_ID);
    let stored = |node: herald::node::SharedNode| async move {
        let clock = node.usage.clock().clone();
        node.store
            .usage_report(APP_ID, clock.day(), clock.minute())
            .await
            .map(|report| report.today.messages)
    };
    // Before: everything flushed.
    trigger(&http, &base, "before", 3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(app.node.clone()).await.unwrap() != live.messages_today() {
        assert!(Instant::now() < deadline, "the first counts are flushed");
        pause(Duration::from_millis(50)).await;
    }

    // The disk fills up.
    truncate_wal(&data.join("herald.db")).await;
    let filler = mount.join("filler");
    tmpfs.fill(&filler);
    let (status, body, _) = ready_body(&http, &base).await;
    assert_eq!(status, 200, "{body}");

    // Traffic while full: triggers (counted in memory) and channels occupied (webhooks).
    let mut sockets = Vec::new();
    for round in 0..6 {
        trigger(&http, &base, &format!("full-{round}"), 5).await;
        let mut client = app.connect().await;
        client.subscribe(&format!("occupied-{round}")).await;
        sockets.push(client);
        pause(Duration::from_millis(250)).await;
    }
    let counted = live.messages_today();
    // The writes fail cleanly: /ready still answers 200 (the node serves from memory) and
    // names the failing writes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, took) = ready_body(&http, &base).await;
        assert_eq!(status, 200, "{body}");
        assert!(took < Duration::from_secs(1), "/ready took {took:?}");
        if body["store_writes"]["status"] == "degraded" {
            assert!(body["store_writes"]["since"].is_i64(), "{body}");
            assert!(!body["store_writes"]["reason"].as_str().unwrap().is_empty());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes never showed degraded: {body}"
        );
        pause(Duration::from_millis(100)).await;
    }
    assert!(
        stored(app.node.clone()).await.unwrap() < counted,
        "the disk really refused the counts"
    );

    // Space returns: every count and every webhook event is written (within seconds, not the
    // pool's 30-minute connection lifetime).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Webhook requests delivered once space returns count too, so the live count may have
        // grown past `counted` meanwhile: the store must catch up with it.
        let stored_now = stored(app.node.clone()).await;
        let live_now = live.messages_today();
        if stored_now
            .as_ref()
            .is_ok_and(|n| *n == live_now && *n >= counted)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts not written after space returned: stored {stored_now:?}, counted {counted} \
             before, {live_now} now"
        );
        pause(Duration::from_millis(100)).await;
    }
    let events = receiver
        .wait_for(
            "every channel_occupied written while the disk was full",
            |events| {
                (0..6).all(|round| {
                    events
                        .iter()
                        .any(|e| e["channel"] == format!("occupied-{round}").as_str())
                })
            },
        )
        .await;
    for round in 0..6 {
        let channel = format!("occupied-{round}");
        let copies = events
            .iter()
            .filter(|e| e["channel"] == channel.as_str())
            .count();
        assert_eq!(copies, 1, "{channel} delivered once: {events:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body, _) = ready_body(&http, &base).await;
        if body["store_writes"]["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "writes stay degraded: {body}");
        pause(Duration::from_millis(100)).await;
    }
    for client in sockets {
        client.close().await;
    }
    app.stop().await;
    drop(tmpfs);
}

/// The binary, started with `env`, its `listening on` address, and its log lines.
async fn start_binary(env: &[(&str, String)]) -> (Child, String, UnboundedReceiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .env("HERALD_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("HERALD_DEFAULT_APP_ID", APP_ID)
        .env("HERALD_DEFAULT_APP_KEY", KEY)
        .env("HERALD_DEFAULT_APP_SECRET", SECRET)
        .env("HERALD_ADMIN_PASSWORD", "store-test-password")
        .env("HERALD_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("herald starts");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    let mut seen = Vec::new();
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = receiver.recv().await {
            seen.push(line.clone());
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        panic!("herald exited before listening: {seen:?}");
    })
    .await
    .expect("herald listens in time");
    (child, address, receiver)
}

/// SIGTERM, then the exit status, how long it took, and the rest of the log.
async fn terminate(
    mut child: Child,
    mut log: UnboundedReceiver<String>,
) -> (i32, Duration, String) {
    let pid = child.id().expect("pid").to_string();
    let started = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("herald exits after SIGTERM (not after minutes)")
        .unwrap();
    let took = started.elapsed();
    let mut lines = Vec::new();
    while let Some(line) = log.recv().await {
        lines.push(line);
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr).await;
    }
    lines.push(stderr);
    (status.code().unwrap_or(-1), took, lines.join("\n"))
}

#[tokio::test]
async fn sigterm_with_a_full_disk_and_unsaved_counts_exits_1_and_says_what_was_lost() {
    let outer = tempfile::tempdir().unwrap();
    let mount = outer.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let tmpfs = Tmpfs::mount(&mount, "24m");
    let data = mount.join("data");
    let (child, address, log) = start_binary(&[
        ("HERALD_DATA_DIR", data.display().to_string()),
        ("HERALD_SHUTDOWN_GRACE_SECS", "2".into()),
    ])
    .await;
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    // Let the start-up writes settle, then fill the disk and count 7 messages nobody can save.
    pause(Duration::from_millis(300)).await;
    truncate_wal(&data.join("herald.db")).await;
    tmpfs.fill(&mount.join("filler"));
    trigger(&http, &base, "unsaved", 7).await;
    let (code, took, log) = terminate(child, log).await;
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    assert_eq!(code, 1, "unsaved counts exit 1:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("unsaved_messages=7")
            && l.contains("lost_webhook_events=0")),
        "the log says what was lost:\n{log}"
    );
    drop(tmpfs);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(socket: &mut Socket, channel: &str) {
    let frame = json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string();
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(frame))
        .await
        .expect("the subscribe is sent");
}

/// The machine's PostgreSQL (never stopped by these tests).
const POSTGRES: &str = "127.0.0.1:5432";

/// A fresh PostgreSQL database on the machine's server, dropped by [`drop_database`]; returns
/// the admin URL and the database's name.
async fn fresh_database() -> (String, String) {
    let admin = format!("postgres://postgres@{POSTGRES}/test");
    let name = format!("herald_t_{}", rand::random::<u32>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (admin, name)
}

async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

#[tokio::test]
async fn postgres_cut_ready_degrades_in_1s_the_cli_fails_in_5s_and_sigterm_exits_1_within_the_bound(
) {
    let (admin, name) = fresh_database().await;
    let proxy = CutProxy::start(POSTGRES.to_owned()).await;
    let database_url = format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    // The shortest grace (whole seconds): SIGTERM is still bounded by it, and the test waits less.
    let grace = 1u64;
    let (child, address, log) = start_binary(&[
        ("HERALD_DATA_DIR", dir.path().display().to_string()),
        ("HERALD_DATABASE_URL", database_url.clone()),
        ("HERALD_SHUTDOWN_GRACE_SECS", grace.to_string()),
    ])
    .await;
    let base = format!("http://{address}");
    let http = reqwest::Client::new();

    let (status, body, took) = ready_body(&http, &base).await;
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(1), "/ready took {took:?}");
    assert_eq!(body["store"]["status"], "ok", "{body}");
    assert_eq!(body["store_writes"]["status"], "ok", "{body}");

    // A webhook endpoint, added by another process (as the CLI does).
    let receiver = Receiver::start().await;
    let store = herald::tenants::Store::open(
        &format!("postgres://postgres@{POSTGRES}/{name}"),
        herald::clock::Clock::system(),
    )
    .await
    .unwrap();
    store
        .create_webhook(herald::tenants::NewWebhook {
            app_id: APP_ID.into(),
            url: receiver.url.clone(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: vec![],
        })
        .await
        .unwrap();
    store.close().await;
    // The node picks it up within its revision poll: a channel occupied then is delivered.
    let ws = format!("ws://{address}/app/{KEY}?protocol=7");
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();
    let _ = socket.next().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for probe in 0.. {
        let channel = format!("probe-{probe}");
        subscribe(&mut socket, &channel).await;
        pause(Duration::from_millis(300)).await;
        if receiver.saw_probe() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never loaded the webhook"
        );
    }

    let session = session_as(&base, "admin@localhost", "store-test-password").await;
    let apps_page = |session: String| {
        let base = base.clone();
        async move {
            let started = Instant::now();
            let response = reqwest::Client::new()
                .get(format!("{base}/dashboard/apps"))
                .header(reqwest::header::COOKIE, session)
                .timeout(Duration::from_secs(40))
                .send()
                .await
                .expect("the dashboard answers");
            let status = response.status().as_u16();
            (
                status,
                response.text().await.unwrap_or_default(),
                started.elapsed(),
            )
        }
    };
    let (status, page, _) = apps_page(session.clone()).await;
    assert_eq!(status, 200, "{page}");

    // PostgreSQL goes away.
    proxy.cut().await;
    // Traffic the store cannot take: counts and a webhook event.
    trigger(&http, &base, "during-cut", 4).await;
    subscribe(&mut socket, "after-cut").await;

    // /ready: within 1 s, still 200, the store degraded with a reason and a time.
    let (status, body, took) = ready_body(&http, &base).await;
    assert!(took < Duration::from_secs(1), "/ready took {took:?}");
    assert_eq!(
        status, 200,
        "a degraded store does not make the node unready: {body}"
    );
    assert_eq!(body["store"]["status"], "degraded", "{body}");
    assert!(body["store"]["reason"].is_string(), "{body}");
    assert!(body["store"]["since"].is_i64(), "{body}");
    // The outbox append fails (within the pool's acquire timeout): writes degrade too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body, took) = ready_body(&http, &base).await;
        assert!(took < Duration::from_secs(1), "/ready took {took:?}");
        if body["store_writes"]["status"] == "degraded" {
            break;
        }
        assert!(Instant::now() < deadline, "writes never degraded: {body}");
        pause(Duration::from_millis(200)).await;
    }

    // The CLI fails within 5 s with a clear message.
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["apps", "list"])
        .env("HERALD_DATABASE_URL", &database_url)
        .env("HERALD_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(5), "the CLI took {took:?}");
    assert!(stderr.contains("store unreachable"), "{stderr}");

    // The dashboard answers 503 within 5 s, saying why.
    let (status, page, took) = apps_page(session).await;
    assert_eq!(status, 503, "{page}");
    assert!(took < Duration::from_secs(5), "the dashboard took {took:?}");
    assert!(page.contains("Store unreachable"), "{page}");

    // SIGTERM: bounded by the grace period, exit 1, the loss in the log at error level.
    let (code, took, log) = terminate(child, log).await;
    assert!(
        took < Duration::from_secs(grace + 2),
        "SIGTERM took {took:?} with a {grace} s grace"
    );
    assert_eq!(code, 1, "{log}");
    let loss = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("lost_webhook_events"))
        .unwrap_or_else(|| panic!("no error line naming the loss:\n{log}"));
    assert!(loss.contains("unsaved_messages="), "{loss}");
    assert!(!loss.contains("lost_webhook_events=0"), "{loss}");
    for dependency in ["dependency=\"store\"", "dependency=\"store_writes\""] {
        let warnings = log
            .lines()
            .filter(|l| l.contains("the store is degraded") && l.contains(dependency))
            .count();
        assert_eq!(
            warnings, 1,
            "one warning per transition for {dependency}:\n{log}"
        );
    }
    drop(socket);
    drop_database(&admin, &name).await;
}
