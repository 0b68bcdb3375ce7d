//! The WebSocket layer itself, over a raw TCP socket: framing edge cases that tungstenite (the
//! client the other tests use) never produces, because Herald reads and writes frames itself.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A masked client frame.
fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let mut out = vec![if fin { 0x80 | op } else { op }];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn text(value: &Value) -> Vec<u8> {
    frame(true, 0x1, value.to_string().as_bytes())
}

const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn handshake(app: &TestApp) -> String {
    format!(
        "GET /app/{KEY}?protocol=7&client=raw&version=8.4.0 HTTP/1.1\r\nHost: {}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {HANDSHAKE_KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        app.address
    )
}

/// A raw socket to the default app, the 101 answer read (and checked), with `extra` bytes sent
/// in the same write as the handshake.
async fn raw(app: &TestApp, extra: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let mut request = handshake(app).into_bytes();
    request.extend_from_slice(extra);
    stream.write_all(&request).await.unwrap();
    let mut raw = Raw {
        stream,
        buf: Vec::new(),
    };
    let head = raw.read_until(b"\r\n\r\n").await;
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455 §1.3's example key and answer.
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    raw
}

/// A raw socket subscribed to `channel`.
async fn subscribed(app: &TestApp, channel: &str) -> Raw {
    let mut socket = raw(app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    socket
        .send(&text(
            &json!({"event":"pusher:subscribe","data":{"channel":channel}}),
        ))
        .await;
    socket
        .expect_event("pusher_internal:subscription_succeeded")
        .await;
    socket
}

struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A server frame: opcode and payload.
type ServerFrame = (u8, Vec<u8>);

impl Raw {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("server answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                let head: Vec<u8> = self.buf.drain(..at + end.len()).collect();
                return head;
            }
            assert!(self.fill().await, "connection closed before {end:?}");
        }
    }

    /// The next server frame, or `None` once the server closed the TCP connection.
    async fn next(&mut self) -> Option<ServerFrame> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                assert_ne!(self.buf[0] & 0x80, 0, "server frames are final");
                let (len, header) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let op = self.buf[0] & 0x0F;
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some((op, payload));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn next_json(&mut self) -> Value {
        loop {
            let (op, payload) = self.next().await.expect("a frame");
            if op == 0x1 {
                return serde_json::from_slice(&payload).unwrap();
            }
        }
    }

    async fn expect_event(&mut self, event: &str) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame["event"] == event {
                return frame;
            }
        }
    }

    /// The close frame's code; the server then ends the TCP connection.
    async fn expect_close(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some((0x8, payload)) => {
                    assert!(payload.len() >= 2, "a close code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    assert!(std::str::from_utf8(&payload[2..]).is_ok());
                    // Answer it like a client does; the server then closes TCP.
                    let _ = self
                        .stream
                        .write_all(&frame(true, 0x8, &payload[..2]))
                        .await;
                    let mut rest = Vec::new();
                    let ended =
                        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await;
                    assert!(ended.is_ok(), "the server ends the TCP connection");
                    return code;
                }
                Some(_) => continue,
                None => panic!("TCP closed without a close frame"),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }
}

#[tokio::test]
async fn a_frame_sent_together_with_the_handshake_is_read() {
    let app = spawn_app().await;
    let mut socket = raw(&app, &text(&json!({"event":"pusher:ping","data":{}}))).await;
    socket.expect_event("pusher:connection_established").await;
    socket.expect_event("pusher:pong").await;
}

#[tokio::test]
async fn fragmented_messages_with_a_ping_between_fragments_are_reassembled() {
    let app = spawn_app().await;
    let mut socket = raw(&app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    let subscribe = json!({"event":"pusher:subscribe","data":{"channel":"fragmented"}}).to_string();
    let (a, rest) = subscribe.as_bytes().split_at(10);
    let (b, c) = rest.split_at(20);
    let mut bytes = frame(false, 0x1, a);
    bytes.extend(frame(true, 0x9, b"between"));
    bytes.extend(frame(false, 0x0, b));
    bytes.extend(frame(true, 0x0, c));
    socket.send(&bytes).await;
    assert_eq!(
        socket.next().await,
        Some((0xA, b"between".to_vec())),
        "the pong first"
    );
    let ok = socket.next_json().await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(ok["channel"], "fragmented");
}

#[tokio::test]
async fn a_frame_arriving_one_byte_at_a_time_is_reassembled() {
    let app = spawn_app().await;
    let mut socket = raw(&app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    let bytes = text(&json!({"event":"pusher:subscribe","data":{"channel":"slow-bytes"}}));
    for byte in bytes {
        socket.send(&[byte]).await;
        pause(Duration::from_millis(2)).await;
    }
    let ok = socket.next_json().await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
}

#[tokio::test]
async fn hundreds_of_pipelined_subscribes_are_all_answered() {
    // pusher-js resubscribes every channel at once after a reconnect; the answers must not count
    // as a slow consumer even with a small outbox.
    let app = spawn_app_with(|s| s.outbox_capacity = 64).await;
    // 600 subscriptions need a cap above the default 100; the subscribe rate limit's burst is
    // that cap, so they all go through at once.
    app.update_app(herald::tenants::AppPatch {
        limits: herald::tenants::LimitsPatch {
            max_subscriptions_per_connection: Some(1000),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut socket = raw(&app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    let mut bytes = Vec::new();
    for i in 0..600 {
        bytes.extend(text(
            &json!({"event":"pusher:subscribe","data":{"channel":format!("pipelined-{i}")}}),
        ));
    }
    socket.send(&bytes).await;
    for i in 0..600 {
        let ok = socket.next_json().await;
        assert_eq!(
            ok["event"], "pusher_internal:subscription_succeeded",
            "answer {i}"
        );
        assert_eq!(ok["channel"], format!("pipelined-{i}"));
    }
}

#[tokio::test]
async fn unmasked_client_frames_close_with_1002() {
    let app = spawn_app().await;
    let mut socket = raw(&app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    let payload = br#"{"event":"pusher:ping","data":{}}"#;
    let mut unmasked = vec![0x81, payload.len() as u8];
    unmasked.extend_from_slice(payload);
    socket.send(&unmasked).await;
    assert_eq!(socket.expect_close().await, 1002);
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_with_1007() {
    let app = spawn_app().await;
    let mut socket = raw(&app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    socket.send(&frame(true, 0x1, &[b'"', 0xE9, b'"'])).await;
    assert_eq!(socket.expect_close().await, 1007);
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_header() {
    let app = spawn_app_with(|s| s.max_frame_bytes = 1024).await;
    let mut socket = raw(&app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    // Only the header of a 60,000-byte frame: refused before any payload arrives.
    socket
        .send(&[0x81, 0x80 | 126, 0xEA, 0x60, 1, 2, 3, 4])
        .await;
    assert_eq!(socket.expect_close().await, 1009);
}

#[tokio::test]
async fn server_frames_of_every_length_encoding_arrive_whole() {
    let app = spawn_app().await;
    let mut socket = subscribed(&app, "sizes").await;
    let channel = herald::protocol::ChannelName::parse("sizes", 200).unwrap();
    let hub = app.node.hub.app(APP_ID);
    // 7-bit, 16-bit and 64-bit payload lengths, published back to back.
    let sizes = [10, 500, 70_000];
    for (i, size) in sizes.iter().enumerate() {
        hub.publish(&channel, &format!("size-{i}"), &"x".repeat(*size), None);
    }
    for (i, size) in sizes.iter().enumerate() {
        let event = socket.next_json().await;
        assert_eq!(event["event"], format!("size-{i}"));
        assert_eq!(event["data"].as_str().unwrap().len(), *size);
    }
}

#[tokio::test]
async fn a_client_close_without_a_code_is_answered_and_the_tcp_connection_ends() {
    let app = spawn_app().await;
    let mut socket = raw(&app, &[]).await;
    socket.expect_event("pusher:connection_established").await;
    socket.send(&frame(true, 0x8, &[])).await;
    assert_eq!(socket.next().await, Some((0x8, Vec::new())));
    assert_eq!(socket.next().await, None, "then the server closes TCP");
    let hub = app.node.hub.app(APP_ID);
    wait_until("the connection is released", || hub.connection_count() == 0).await;
}

#[tokio::test]
async fn requests_that_are_not_websocket_handshakes_are_refused() {
    let app = spawn_app().await;
    let plain = app
        .http
        .get(app.url(&format!("/app/{KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let posted = app
        .http
        .post(app.url(&format!("/app/{KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let request = handshake(&app).replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_follows_the_close_frame_even_on_a_busy_channel() {
    let app = spawn_app().await;
    let mut socket = subscribed(&app, "busy").await;
    let hub = app.node.hub.app(APP_ID);
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = tokio::spawn({
        let hub = hub.clone();
        let flooding = flooding.clone();
        async move {
            let channel = herald::protocol::ChannelName::parse("busy", 200).unwrap();
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..20 {
                    hub.publish(&channel, "tick", "x", None);
                }
                tokio::task::yield_now().await;
            }
        }
    });
    pause(Duration::from_millis(20)).await;
    // An unmasked frame: the server closes with 1002 while events keep coming.
    socket.send(&[0x81, 0x02, b'{', b'}']).await;
    let mut close = None;
    while let Some((op, payload)) = socket.next().await {
        if op == 0x8 {
            close = Some(u16::from_be_bytes([payload[0], payload[1]]));
            break;
        }
    }
    assert_eq!(close, Some(1002));
    // After the close frame: only the end of the TCP connection.
    let after = socket.next().await;
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    flood.await.unwrap();
    assert_eq!(after, None, "a frame followed the close frame");
}

#[tokio::test]
async fn a_peer_that_reads_nothing_for_the_pong_timeout_is_closed() {
    // The activity timeout (and its ping) is far away: only the blocked writes can end it.
    let app = spawn_app_with(|s| s.pong_timeout = Duration::from_millis(300)).await;
    let socket = subscribed(&app, "stuck").await;
    let hub = app.node.hub.app(APP_ID);
    let channel = herald::protocol::ChannelName::parse("stuck", 200).unwrap();
    // About 40 MB in 200 frames: more than the socket buffers take, fewer frames than the
    // outbox holds, so only the stalled writes can close it.
    let data = "x".repeat(200 * 1024);
    for _ in 0..200 {
        hub.publish(&channel, "big", &data, None);
        tokio::task::yield_now().await;
    }
    let started = tokio::time::Instant::now();
    wait_until("the stalled connection is closed", || {
        hub.connection_count() == 0
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_keeps_reading_is_not_closed() {
    // Always behind, never stalled: its outbox never empties for the whole test, but the socket
    // keeps taking bytes, so it is slow, not stalled.
    let app = spawn_app_with(|s| s.pong_timeout = Duration::from_secs(1)).await;
    let socket = subscribed(&app, "slow").await;
    let hub = app.node.hub.app(APP_ID);
    let mut stream = socket.stream;
    let reader = tokio::spawn(async move {
        let mut chunk = vec![0u8; 256 * 1024];
        for _ in 0..200 {
            pause(Duration::from_millis(10)).await;
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("the server keeps sending")
                .unwrap();
            if n == 0 {
                return false;
            }
        }
        true
    });
    // 80 MB queued at once (one encoding, shared), far more than the reader takes in its 2 s.
    let frame = herald::protocol::server::channel_event("big", "slow", &"x".repeat(200 * 1024));
    let nobody = herald::protocol::SocketId::new(0, 0);
    for _ in 0..400 {
        hub.relay("slow", frame.clone(), nobody);
    }
    assert!(
        reader.await.unwrap(),
        "the server closed a slow but reading peer"
    );
}
