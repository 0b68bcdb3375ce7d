//! TLS on the listeners (`HERALD_TLS_CERT` / `HERALD_TLS_KEY`): `wss://` and `https://` with a
//! test CA (`tests/fixtures/tls/`, made by its `make.sh`), certificate reloads that keep open
//! sockets, the TLS sink under fan-out and a slow reader, bounded handshakes, refused pairs, and
//! the dashboard's HSTS and Secure cookies.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::*;
use herald::config::TlsSettings;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn leaf(name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(fixture(name)).expect("fixture certificate")
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf("ca.pem")).expect("test CA");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn https_client() -> reqwest::Client {
    let ca = std::fs::read(fixture("ca.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

/// Puts leaf `name`'s certificate and key in `dir` as `cert.pem` / `key.pem` (what the server
/// is configured with).
fn install(dir: &Path, name: &str) {
    // Written to the side and renamed, as a certificate tool does: never half a file.
    for (from, to) in [
        (format!("{name}.pem"), "cert.pem"),
        (format!("{name}.key"), "key.pem"),
    ] {
        let temporary = dir.join(format!("{to}.new"));
        std::fs::copy(fixture(&from), &temporary).unwrap();
        std::fs::rename(&temporary, dir.join(to)).unwrap();
    }
}

struct TlsApp {
    app: TestApp,
    certs: tempfile::TempDir,
}

/// A node serving TLS with leaf `a`, its REST client trusting the test CA.
async fn spawn_tls(configure: impl FnOnce(&mut TlsSettings)) -> TlsApp {
    let certs = tempfile::tempdir().unwrap();
    install(certs.path(), "a");
    let mut tls = TlsSettings::new(certs.path().join("cert.pem"), certs.path().join("key.pem"));
    tls.reload_poll = Duration::from_millis(50);
    configure(&mut tls);
    let mut app = spawn_app_with(|s| {
        s.tls = Some(tls);
        s.outbox_capacity = 64;
    })
    .await;
    app.http = https_client();
    TlsApp { app, certs }
}

/// A TLS handshake with the node; returns the stream and the leaf certificate it showed.
async fn handshake(app: &TestApp) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let tcp = TcpStream::connect(app.address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let shown = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
    (tls, shown)
}

/// A `wss://` Pusher connection past `pusher:connection_established`, and the leaf it saw.
async fn connect_wss(app: &TestApp) -> (Client, Vec<u8>) {
    let (tls, shown) = handshake(app).await;
    let url = format!(
        "wss://localhost:{}/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false",
        app.address.port()
    );
    let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Rustls(tls))
        .await
        .expect("WebSocket over TLS");
    let mut client = Client {
        socket,
        socket_id: String::new(),
    };
    let established = client.expect_event("pusher:connection_established").await;
    client.socket_id = data_of(&established)["socket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (client, shown)
}

async fn trigger(app: &TestApp, channel: &str, data: &str) {
    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name": "news", "channel": channel, "data": data}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_wss_client_receives_an_event_triggered_over_https() {
    let TlsApp { app, certs: _certs } = spawn_tls(|_| {}).await;
    assert!(app.url("/").starts_with("https://"));
    let (mut client, shown) = connect_wss(&app).await;
    assert_eq!(shown, leaf("a.pem").to_vec());
    client.subscribe("news").await;
    trigger(&app, "news", "over TLS").await;
    let event = client.expect_event("news").await;
    assert_eq!(event["data"], "over TLS");
    // Pings and answers both ways: the reading side goes through the session too.
    client
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    client.expect_event("pusher:pong").await;
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::get(format!("http://{}/health", app.address)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn a_certificate_reload_keeps_open_sockets_and_new_handshakes_get_the_new_pair() {
    let TlsApp { app, certs } = spawn_tls(|_| {}).await;
    let (mut before, shown) = connect_wss(&app).await;
    assert_eq!(shown, leaf("a.pem").to_vec());
    before.subscribe("news").await;
    let socket_id = before.socket_id.clone();
    install(certs.path(), "b");
    // The file watch reloads within its poll: wait until a new handshake shows leaf b.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, shown) = handshake(&app).await;
        if shown == leaf("b.pem").to_vec() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        pause(Duration::from_millis(20)).await;
    }
    let (mut after, shown) = connect_wss(&app).await;
    assert_eq!(shown, leaf("b.pem").to_vec());
    after.subscribe("news").await;
    // The socket opened before the reload still works both ways, on the same connection.
    trigger(&app, "news", "after reload").await;
    assert_eq!(before.expect_event("news").await["data"], "after reload");
    assert_eq!(after.expect_event("news").await["data"], "after reload");
    before.subscribe("more").await;
    assert_eq!(before.socket_id, socket_id);
}

#[tokio::test]
async fn a_pair_that_does_not_load_on_reload_is_refused_and_the_old_one_kept() {
    let certs = tempfile::tempdir().unwrap();
    install(certs.path(), "a");
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    let tls = herald::tls::Tls::new(&cert, &key).unwrap();
    // Leaf b's certificate with leaf a's key.
    std::fs::copy(fixture("b.pem"), &cert).unwrap();
    let error = tls.reload().unwrap_err();
    assert!(
        error.contains("HERALD_TLS_KEY") && error.contains("does not match"),
        "{error}"
    );
    // Handshakes still get leaf a.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tls.acceptor().clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let tcp = TcpStream::connect(address).await.unwrap();
    let client = tokio_rustls::TlsConnector::from(client_config())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        client.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        leaf("a.pem").to_vec()
    );
    // A good pair loads.
    std::fs::copy(fixture("b.key"), &key).unwrap();
    tls.reload().unwrap();
}

#[tokio::test]
async fn a_pair_that_cannot_be_used_stops_the_start_with_the_variable_named() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    std::fs::copy(fixture("a.pem"), dir.join("a.pem")).unwrap();
    std::fs::copy(fixture("b.key"), dir.join("b.key")).unwrap();
    let secret_key = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n";
    std::fs::write(dir.join("bad.key"), secret_key).unwrap();
    let cases = [
        ("missing.pem", "b.key", "HERALD_TLS_CERT", "cannot read"),
        ("a.pem", "missing.key", "HERALD_TLS_KEY", "cannot read"),
        ("a.pem", "b.key", "HERALD_TLS_KEY", "does not match"),
        ("a.pem", "bad.key", "HERALD_TLS_KEY", "no PEM private key"),
        ("b.key", "b.key", "HERALD_TLS_CERT", "no CERTIFICATE"),
    ];
    for (cert, key, variable, problem) in cases {
        let data = tempfile::tempdir().unwrap();
        let mut settings = test_settings(data.path().to_path_buf());
        settings.tls = Some(TlsSettings::new(dir.join(cert), dir.join(key)));
        let error = herald::startup::Application::build(settings)
            .await
            .expect_err("refused")
            .to_string();
        assert!(error.starts_with(variable), "{cert}/{key}: {error}");
        assert!(error.contains(problem), "{cert}/{key}: {error}");
        assert!(!error.contains("c2VjcmV0"), "key material in {error}");
    }
}

#[tokio::test]
async fn one_tls_variable_without_the_other_stops_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    for (set, missing) in [
        ("HERALD_TLS_CERT", "HERALD_TLS_KEY"),
        ("HERALD_TLS_KEY", "HERALD_TLS_CERT"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .env_remove("HERALD_TLS_CERT")
            .env_remove("HERALD_TLS_KEY")
            .env("HERALD_DATA_DIR", dir.path())
            .env("HERALD_BIND", "127.0.0.1:0")
            .env(set, fixture("a.pem"))
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(text.contains(missing), "{text}");
    }
}

/// Reads from a TLS stream until `buf` holds `needle`.
async fn tls_read_until(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    buf: &mut Vec<u8>,
    needle: &[u8],
) {
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(WAIT, tls.read(&mut chunk))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_mercure_subscriber_gets_its_stream_on_the_direct_path() {
    let TlsApp { app, certs: _certs } = spawn_tls(|_| {}).await;
    let (mut tls, _) = handshake(&app).await;
    let token = crate::mercure_helpers::token07(&["*"], &[]);
    let request = format!(
        "GET /apps/{APP_ID}/.well-known/mercure?topic=a HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut tls, request.as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tls_read_until(&mut tls, &mut buf, b"\r\n\r\n:\n\n").await;
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    // Small and large updates (together more than a TLS record), in order.
    let mut ids = Vec::new();
    for i in 0..6 {
        let data = format!("{i}:{}", "y".repeat(if i % 3 == 0 { 9_000 } else { 10 }));
        ids.push(crate::mercure_helpers::publish(&app, &[("topic", "a"), ("data", &data)]).await);
    }
    tls_read_until(&mut tls, &mut buf, format!("id: {}\n", ids[5]).as_bytes()).await;
    tls_read_until(&mut tls, &mut buf, b"data: 5:yyyyyyyyyy\n\n").await;
    let text = String::from_utf8_lossy(&buf);
    let mut at = 0;
    for id in &ids {
        at += text[at..]
            .find(id.as_str())
            .expect("every update, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_fans_out_to_many_tls_subscribers_in_order() {
    let TlsApp { app, certs: _certs } = spawn_tls(|_| {}).await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        let (mut client, _) = connect_wss(&app).await;
        client.subscribe("fan").await;
        clients.push(client);
    }
    let channel = herald::protocol::ChannelName::parse("fan", 200).unwrap();
    let hub = app.node.hub.app(APP_ID);
    // Small and large frames (a large one spans several TLS records).
    for i in 0..20 {
        let data = format!("{i}:{}", "y".repeat(if i % 5 == 0 { 40_000 } else { 10 }));
        hub.publish(&channel, "tick", &data, None);
    }
    for mut client in clients {
        for i in 0..20 {
            let frame = client.expect_event("tick").await;
            let data = frame["data"].as_str().unwrap();
            assert!(data.starts_with(&format!("{i}:")), "out of order");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tls_reader_is_closed_with_4100_without_slowing_others() {
    let TlsApp { app, certs: _certs } = spawn_tls(|_| {}).await;
    let (mut slow, _) = connect_wss(&app).await;
    slow.subscribe("firehose").await;
    let (mut fast, _) = connect_wss(&app).await;
    fast.subscribe("firehose").await;
    // The slow client reads, but far slower than events are published.
    assert_slow_reader_closed_fast_served(&app, slow, fast).await;
}

/// Reads until the server closes the connection (EOF or reset); panics if it stays open.
async fn expect_dropped(tcp: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("the server closes the connection in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// A TCP connection to the node from the loopback address `from` (e.g. 127.0.0.2).
async fn connect_from(app: &TestApp, from: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(app.address).await.unwrap()
}

/// Whether a TLS handshake over `tcp` completes.
async fn completes_handshake(tcp: TcpStream) -> bool {
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(client_config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("the handshake ends in time")
    .is_ok()
}

#[tokio::test]
async fn a_flood_of_silent_connections_evicts_the_oldest_rather_than_refusing_a_new_client() {
    let TlsApp { app, certs: _certs } = spawn_tls(|tls| {
        tls.max_handshakes = 4;
        tls.max_handshakes_per_ip = 100;
        tls.hello_timeout = Duration::from_secs(60);
        tls.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    // Many more connections that never say hello than the listener's bound.
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(connect_from(&app, [127, 0, 0, 2]).await);
    }
    // A real client still gets its handshake, at once.
    let tcp = TcpStream::connect(app.address).await.unwrap();
    assert!(completes_handshake(tcp).await, "the new client was refused");
    // The oldest silent connections were the ones dropped.
    expect_dropped(&mut silent[0]).await;
    expect_dropped(&mut silent[1]).await;
}

#[tokio::test]
async fn handshakes_in_progress_are_bounded_per_address() {
    let TlsApp { app, certs: _certs } = spawn_tls(|tls| {
        tls.max_handshakes_per_ip = 2;
        tls.hello_timeout = Duration::from_secs(60);
        tls.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    // Two silent connections from 127.0.0.2 hold its share; its third is closed at once.
    let idle_one = connect_from(&app, [127, 0, 0, 2]).await;
    let _idle_two = connect_from(&app, [127, 0, 0, 2]).await;
    let mut third = connect_from(&app, [127, 0, 0, 2]).await;
    expect_dropped(&mut third).await;
    // Another address is not held back.
    let tcp = TcpStream::connect(app.address).await.unwrap();
    assert!(
        completes_handshake(tcp).await,
        "another address was refused"
    );
    // A place given back (the client went away) takes a handshake from that address again.
    drop(idle_one);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if completes_handshake(connect_from(&app, [127, 0, 0, 2]).await).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place came back");
        pause(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_without_a_client_hello_in_time_is_dropped() {
    let TlsApp { app, certs: _certs } = spawn_tls(|tls| {
        tls.hello_timeout = Duration::from_millis(200);
        tls.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut idle = TcpStream::connect(app.address).await.unwrap();
    expect_dropped(&mut idle).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_handshake_that_does_not_finish_in_time_is_dropped() {
    let TlsApp { app, certs: _certs } = spawn_tls(|tls| {
        tls.hello_timeout = Duration::from_secs(60);
        tls.handshake_timeout = Duration::from_millis(200);
    })
    .await;
    let mut idle = TcpStream::connect(app.address).await.unwrap();
    expect_dropped(&mut idle).await;
}

fn header(response: &reqwest::Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_dashboard_over_tls_sends_hsts_and_secure_cookies() {
    let TlsApp { app, certs: _certs } = spawn_tls(|_| {}).await;
    let response = app
        .http
        .get(app.url("/dashboard/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "strict-transport-security"),
        ["max-age=31536000"]
    );
    let cookies = header(&response, "set-cookie");
    assert!(
        !cookies.is_empty() && cookies.iter().all(|c| c.contains("; Secure")),
        "{cookies:?}"
    );
}

#[tokio::test]
async fn the_dashboard_over_plain_http_sends_hsts_only_when_a_trusted_proxy_says_https() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let login = app.url("/dashboard/login");
    let plain = app.http.get(&login).send().await.unwrap();
    assert!(header(&plain, "strict-transport-security").is_empty());
    assert!(header(&plain, "set-cookie")
        .iter()
        .all(|c| !c.contains("Secure")));
    let proxied = app
        .http
        .get(&login)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&proxied, "strict-transport-security"),
        ["max-age=31536000"]
    );
    assert!(header(&proxied, "set-cookie")
        .iter()
        .all(|c| c.contains("; Secure")));
    // From a peer that is not a trusted proxy, the header is not believed.
    let untrusted = spawn_app().await;
    let response = untrusted
        .http
        .get(untrusted.url("/dashboard/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(header(&response, "strict-transport-security").is_empty());
}

#[tokio::test]
async fn many_pipelined_messages_are_read_through_the_session() {
    let TlsApp { app, certs: _certs } = spawn_tls(|_| {}).await;
    let (mut client, _) = connect_wss(&app).await;
    // 90 subscribes (under the burst of 100) and 300 padded pings sent back to back: about
    // 300 KiB, many TLS records and reads; every answer comes, in order.
    let padding = "p".repeat(1000);
    let mut expected = Vec::new();
    for i in 0..390 {
        let message = if i < 90 {
            expected.push(format!("pipe-{i}"));
            json!({"event": "pusher:subscribe", "data": {"channel": format!("pipe-{i}")}})
        } else {
            expected.push("pong".into());
            json!({"event": "pusher:ping", "data": {"padding": padding}})
        };
        client
            .socket
            .feed(tokio_tungstenite::tungstenite::Message::Text(
                message.to_string().into(),
            ))
            .await
            .unwrap();
    }
    client.socket.flush().await.unwrap();
    for want in expected {
        let frame = client.next_json().await;
        if want == "pong" {
            assert_eq!(frame["event"], "pusher:pong", "{frame}");
        } else {
            assert_eq!(frame["channel"], want, "{frame}");
        }
    }
}
