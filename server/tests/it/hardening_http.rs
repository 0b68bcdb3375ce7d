//! Issue 12 item 3: slow and oversized request bodies, checks made before a body is read, the
//! node-wide budget for unauthenticated bodies, and the dashboard listener's timeouts.

use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const MIB: usize = 1024 * 1024;

/// The request line and headers of a signed trigger announcing a `length`-byte body (signed
/// for a body of that many zero bytes), with `Expect: 100-continue` when `expect` is set.
fn trigger_head(app_id: &str, key: &str, timestamp: i64, length: usize, expect: bool) -> String {
    signed_head(
        app_id,
        key,
        timestamp,
        length,
        &md5_hex(&vec![b' '; length]),
        expect,
    )
}

/// [`trigger_head`] with the body's MD5 given.
fn signed_head(
    app_id: &str,
    key: &str,
    timestamp: i64,
    length: usize,
    md5: &str,
    expect: bool,
) -> String {
    let path = format!("/apps/{app_id}/events");
    let params = signed_params("POST", &path, &[], Some(md5), key, SECRET, timestamp);
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "POST {path}?{} HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n{}\r\n",
        query.join("&"),
        if expect {
            "Expect: 100-continue\r\n"
        } else {
            ""
        }
    )
}

/// Reads one response head (up to the blank line) and returns its status and head text.
async fn read_head(stream: &mut TcpStream, within: Duration) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(within, async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read");
            assert!(n > 0, "closed before a response: {head:?}");
            head.push(byte[0]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no response within {within:?}: {head:?}"));
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head)
}

/// Waits for the server to close `stream` (reading and discarding what it sends) and returns
/// how long that took; panics after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server kept the connection open for {within:?}"));
    start.elapsed()
}

#[tokio::test]
async fn requests_refused_by_their_headers_are_answered_before_the_body_is_sent() {
    let app = spawn_app().await;
    let cases = [
        (
            "wrong auth_key",
            trigger_head(APP_ID, "not-a-key", now(), 1000, false),
            401,
        ),
        (
            "stale timestamp",
            trigger_head(APP_ID, KEY, now() - 700, 1000, true),
            401,
        ),
        (
            "unknown app",
            trigger_head("9999", KEY, now(), 1000, false),
            404,
        ),
        (
            "over the limit",
            trigger_head(APP_ID, KEY, now(), 2 * MIB, true),
            413,
        ),
    ];
    for (what, head, expected) in cases {
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        // Only the headers were sent: the answer must come anyway, and it is never a
        // 100 Continue inviting the body.
        let (status, text) = read_head(&mut stream, WAIT).await;
        assert_eq!(status, expected, "{what}: {text}");
    }

    // A well-formed request with Expect gets its 100 Continue and goes through.
    let body = " ".repeat(1000);
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(trigger_head(APP_ID, KEY, now(), 1000, true).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_head(&mut stream, WAIT).await.0, 100);
    stream.write_all(body.as_bytes()).await.unwrap();
    // The signature is right, so the body is judged: whitespace is not a JSON object.
    assert_eq!(read_head(&mut stream, WAIT).await.0, 400);

    app.update_app(herald::tenants::AppPatch {
        enabled: Some(false),
        ..Default::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(trigger_head(APP_ID, KEY, now(), 1000, false).as_bytes())
        .await
        .unwrap();
    let (status, text) = read_head(&mut stream, WAIT).await;
    assert_eq!(status, 403, "disabled app: {text}");
}

#[tokio::test]
async fn the_node_wide_budget_for_unauthenticated_bodies_refuses_beyond_its_bound() {
    let app = spawn_app_with(|s| s.body_buffer_bytes = 2 * MIB).await;
    // Announcing a body costs the node nothing: headers alone (which need only the public key
    // and a fresh timestamp) reserve no budget.
    let mut announced = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream
            .write_all(trigger_head(APP_ID, KEY, now(), MIB, false).as_bytes())
            .await
            .unwrap();
        announced.push(stream);
    }
    pause(Duration::from_millis(300)).await;
    assert_eq!(app.node.body_budget.available(), 2 * MIB);
    drop(announced);
    // Two bodies of 1 MiB that really started (two chunks: the body is gathered in a buffer of
    // its declared size) hold the whole budget.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream
            .write_all(trigger_head(APP_ID, KEY, now(), MIB, false).as_bytes())
            .await
            .unwrap();
        stream.write_all(b"{").await.unwrap();
        pause(Duration::from_millis(50)).await;
        stream.write_all(b"\"").await.unwrap();
        held.push(stream);
    }
    wait_until("the budget is taken", || {
        app.node.body_budget.available() == 0
    })
    .await;
    // A third request, however small, waits for nothing: 503 with Retry-After.
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let request = format!("{}0123456789", trigger_head(APP_ID, KEY, now(), 10, false));
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, head) = read_head(&mut stream, WAIT).await;
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );

    // A client that goes away gives its share back, and normal traffic flows again.
    held.pop();
    wait_until("half the budget is back", || {
        app.node.body_budget.available() == MIB
    })
    .await;
    let (status, body) = app
        .post(
            "/apps/4242/events",
            serde_json::json!({"name": "e", "channel": "c", "data": "{}"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    drop(held);
    wait_until("the whole budget is back", || {
        app.node.body_budget.available() == 2 * MIB
    })
    .await;
}

#[tokio::test]
async fn a_stalled_rest_body_is_answered_408_and_closed_at_the_body_timeout() {
    let app = spawn_app_with(|s| s.body_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(trigger_head(APP_ID, KEY, now(), 1000, false).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"{\"name\":").await.unwrap();
    let start = Instant::now();
    let (status, head) = read_head(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(status, 408, "{head}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    closed_within(&mut stream, Duration::from_secs(2)).await;
    wait_until("the budget is back", || {
        app.node.body_budget.available() == 32 * MIB
    })
    .await;
}

/// A node with the dashboard on its own listener and short header and body timeouts.
async fn spawn_with_admin_listener() -> (
    std::net::SocketAddr,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.admin_bind = Some("127.0.0.1:0".into());
    settings.header_timeout = Duration::from_secs(1);
    settings.body_timeout = Duration::from_secs(1);
    let application = herald::startup::Application::build(settings)
        .await
        .expect("server builds");
    let admin = application.admin_address().expect("admin listener");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (admin, dir, stop)
}

#[tokio::test]
async fn the_admin_listener_closes_slow_headers_and_slow_bodies() {
    let (admin, _dir, _stop) = spawn_with_admin_listener().await;

    // It serves the dashboard.
    let page = reqwest::get(format!("http://{admin}/dashboard/login"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    // Slow-loris: headers trickled one byte every 200 ms never end; the header timeout does.
    let mut loris = TcpStream::connect(admin).await.unwrap();
    let trickle = async {
        let head = b"GET /dashboard/login HTTP/1.1\r\nHost: herald\r\nX-Padding: ";
        loris.write_all(head).await.unwrap();
        let start = Instant::now();
        let mut byte = [0u8; 1];
        loop {
            if loris.write_all(b"a").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), loris.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => {}
            }
            assert!(
                start.elapsed() < Duration::from_secs(4),
                "the slow-loris is still connected"
            );
        }
        start.elapsed()
    };
    let took = trickle.await;
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // A sign-in form whose body stalls is cut off at the body timeout.
    let mut stream = TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(
            b"POST /dashboard/login HTTP/1.1\r\nHost: herald\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\nemail=",
        )
        .await
        .unwrap();
    let took = closed_within(&mut stream, Duration::from_secs(4)).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");
}

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS")
        * 1024
}

/// Starts the real binary on port 0 with `env` and returns it with its address.
async fn start_binary(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut command = herald_binary(dir);
    command
        .env("HERALD_DEFAULT_APP_ID", APP_ID)
        .env("HERALD_DEFAULT_APP_KEY", KEY)
        .env("HERALD_DEFAULT_APP_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    let (child, address) = start_listening(command).await;
    (child, address.parse().expect("address"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_one_mib_bodies_held_one_byte_short_are_closed_in_time_and_bounded() {
    const CONNECTIONS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = start_binary(dir.path(), &[("HERALD_BODY_TIMEOUT_SECS", "2")]).await;
    let pid = child.id().expect("pid");
    // Warm up (first requests allocate pools and caches), then take the baseline.
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let response = http
            .get(format!("http://{address}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let baseline = rss(pid);

    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(baseline));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                pause(Duration::from_millis(20)).await;
            }
        }
    });

    let md5 = md5_hex(&vec![b' '; MIB]);
    let started = Instant::now();
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let md5 = md5.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(address).await.expect("connect");
                let head = signed_head(APP_ID, KEY, now(), MIB, &md5, false);
                let mut refused = false;
                if stream.write_all(head.as_bytes()).await.is_err() {
                    refused = true;
                }
                // All of the body but its last byte, as fast as the server takes it; a server
                // that refused the request stops taking it.
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while !refused && sent < MIB - 1 {
                    let n = chunk.len().min(MIB - 1 - sent);
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                let connected = Instant::now();
                closed_within(&mut stream, Duration::from_secs(10)).await;
                connected.elapsed()
            })
        })
        .collect();
    let mut longest = Duration::ZERO;
    for attacker in attackers {
        longest = longest.max(attacker.await.expect("attacker"));
    }
    let total = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();
    let added = peak.load(std::sync::atomic::Ordering::Relaxed) - baseline;
    eprintln!(
        "300 held bodies: every connection closed within {longest:?} of its last byte, all in \
         {total:?}; RSS {} MiB at rest, +{} MiB at peak",
        baseline / MIB,
        added / MIB
    );
    // The body timeout is 2 s from the headers; allow for a loaded 2-core machine.
    assert!(longest < Duration::from_secs(4), "{longest:?}");
    assert!(added < 64 * MIB, "the attack added {} MiB", added / MIB);

    // The node still serves signed REST traffic afterwards.
    let body = serde_json::json!({"name": "e", "channel": "c", "data": "{}"}).to_string();
    let response = post_signed(
        &http,
        &format!("http://{address}"),
        "/apps/4242/events",
        body,
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_by_the_minimum_rate_long_before_the_body_timeout() {
    // The default 10 s body timeout; a body trickled at 10 bytes a second falls under the
    // 16 KiB/s minimum once the 2 s grace is over.
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(trigger_head(APP_ID, KEY, now(), 100_000, false).as_bytes())
        .await
        .unwrap();
    let start = Instant::now();
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still reading a 10 B/s body after {:?}",
            start.elapsed()
        );
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    assert!(
        response.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}
