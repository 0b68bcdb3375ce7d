//! The subscribe's direct path (`transport/mercure/direct.rs`): a connection whose first request
//! is a hub `GET` leaves hyper and gets a close-delimited event stream written by the outbox;
//! what it must keep (heartbeats, the byte counter, the `sse` gauge, slow readers cut, refusals
//! as before) and the head's bounds; a subscribe after a keep-alive request stays hyper's.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use herald::meters::Transport;

use crate::helpers::{spawn_app, spawn_app_with, wait_until, TestApp, APP_ID, SECRET, WAIT};
use crate::mercure_helpers::*;

/// Reads from `stream` until `buf` holds `needle` (panics on close or after [`WAIT`]).
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {:?} in time; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(buf)
                )
            })
            .expect("read");
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the server closes the connection; returns what came.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    out
}

/// A subscribe request head for `query` with `token`.
fn request(query: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "GET {}?{query} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{auth}\r\n",
        hub()
    )
}

/// A raw subscriber past its opening comment: the stream, the response head, and what came
/// after the opening comment.
async fn open_raw(app: &TestApp, query: &str) -> (TcpStream, String, Vec<u8>) {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(request(query, Some(&token07(&["*"], &[]))).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, b"\r\n\r\n:\n\n").await;
    let end = buf.windows(7).position(|w| w == b"\r\n\r\n:\n\n").unwrap() + 4;
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let rest = buf[end + 3..].to_vec();
    (stream, head, rest)
}

fn has_header(head: &str, name: &str, value: &str) -> bool {
    head.lines().any(|line| {
        line.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
        })
    })
}

#[tokio::test]
async fn a_first_request_subscribe_gets_a_close_delimited_stream_counted_in_bytes_out() {
    let app = spawn_app().await;
    let before = app
        .node
        .meters
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed);
    let (mut stream, head, mut rest) = open_raw(&app, "topic=a").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        has_header(&head, "content-type", "text/event-stream"),
        "{head}"
    );
    assert!(has_header(&head, "connection", "close"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(head.to_ascii_lowercase().contains("\r\nlink: <"), "{head}");
    assert_eq!(app.node.meters.live_count(Transport::Sse), 1);
    let id = publish(&app, &[("topic", "a"), ("data", "one\ntwo")]).await;
    read_until(&mut stream, &mut rest, b"data: two\n\n").await;
    let event = String::from_utf8(rest).unwrap();
    assert_eq!(event, format!("id: {id}\ndata: one\ndata: two\n\n"));
    let sent = app
        .node
        .meters
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    assert!(
        sent as usize >= head.len() + event.len(),
        "bytes_out counts the stream: {sent}"
    );
    // The client goes away: the subscriber is given back.
    drop(stream);
    wait_until("the subscriber is gone", || {
        app.node.meters.live_count(Transport::Sse) == 0
            && app.node.usage.app(APP_ID).connections() == 0
    })
    .await;
}

#[tokio::test]
async fn heartbeats_arrive_on_the_direct_path_and_exp_ends_it() {
    let app = spawn_app_with(|s| s.mercure.heartbeat = Duration::from_millis(100)).await;
    let token = token_with(
        SECRET,
        serde_json::json!({"mercure": {"subscribe": ["*"]}, "exp": crate::helpers::now() + 2}),
    );
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(request("topic=a", Some(&token)).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, b"\r\n\r\n:\n\n").await;
    let opened = buf.len();
    read_until(&mut stream, &mut buf, b":\n\n:\n:\n").await;
    assert!(buf[opened..].iter().all(|&b| b == b':' || b == b'\n'));
    // The token's `exp` closes the stream.
    read_to_close(&mut stream).await;
    wait_until("the subscriber is gone", || {
        app.node.meters.live_count(Transport::Sse) == 0
    })
    .await;
}

#[tokio::test]
async fn refusals_on_the_direct_path_keep_their_status_headers_and_text() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(request("topic=a", None).as_bytes())
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("\r\nwww-authenticate: Bearer realm=\"mercure\"\r\n"),
        "{answer}"
    );
    assert!(has_header(&answer, "connection", "close"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nsubscribing to this hub needs a token\n"),
        "{answer}"
    );
    // hyper's answer to the same request after a keep-alive one: the same but for the close.
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let both = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n{}",
        request("topic=a", None)
    );
    stream.write_all(both.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, b"needs a token\n").await;
    let hyper = String::from_utf8(buf).unwrap();
    let hyper = &hyper[hyper.rfind("HTTP/1.1").unwrap()..];
    assert!(
        hyper.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{hyper}"
    );
    let fields = |answer: &str| {
        let mut fields: Vec<String> = answer
            .lines()
            .skip(1)
            .take_while(|line| !line.is_empty())
            .map(str::to_ascii_lowercase)
            .filter(|line| !line.starts_with("date:") && !line.starts_with("connection:"))
            .collect();
        fields.sort();
        fields
    };
    assert_eq!(fields(&answer), fields(hyper));
    // An unknown app.
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(b"GET /apps/nope/.well-known/mercure?topic=a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
    assert!(answer.ends_with("no such app\n"), "{answer}");
}

#[tokio::test]
async fn a_head_over_the_bound_is_refused_with_431_and_a_slow_one_is_closed() {
    let app = spawn_app_with(|s| s.header_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let huge = format!(
        "GET {}?topic=a HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        hub(),
        "a".repeat(40 * 1024)
    );
    // The server may answer and close before the client finished sending.
    let _ = stream.write_all(huge.as_bytes()).await;
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    // Half a head, then nothing: closed at the header timeout, no subscriber admitted.
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let started = tokio::time::Instant::now();
    stream
        .write_all(format!("GET {}?topic=a HTTP/1.1\r\nHost: x\r\n", hub()).as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(app.node.usage.app(APP_ID).connections(), 0);
}

/// A client that waits almost the whole header timeout before its first byte, then trickles
/// its request line: the sniff hands it to hyper, and the connection is still closed one header
/// timeout after it opened (not the sniff's wait plus hyper's whole timeout).
#[tokio::test]
async fn a_trickled_request_line_gets_one_header_timeout_in_all() {
    let app = spawn_app_with(|s| s.header_timeout = Duration::from_secs(2)).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let opened = tokio::time::Instant::now();
    crate::helpers::pause(Duration::from_millis(900)).await;
    crate::helpers::pause(Duration::from_millis(900)).await;
    // A request line that is no hub path's (hyper's), one byte every 100 ms.
    let line =
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in line.iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            closed = true;
            break;
        }
    }
    assert!(closed, "still open after the whole line");
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(1_900) && waited < Duration::from_millis(2_700),
        "closed after {waited:?} (header timeout 2 s)"
    );
}

#[tokio::test]
async fn a_subscribe_after_a_keep_alive_request_is_served_by_hyper_as_before() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    // Two pipelined requests: a health check, then the subscribe.
    let both = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n{}",
        request("topic=a", Some(&token07(&["*"], &[])))
    );
    stream.write_all(both.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, b"text/event-stream").await;
    read_until(&mut stream, &mut buf, b":\n\n").await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("ok\n"), "{text}");
    let second = &text[text.find("text/event-stream").unwrap()..];
    assert!(
        second
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );
    let id = publish(&app, &[("topic", "a"), ("data", "x")]).await;
    read_until(&mut stream, &mut buf, format!("id: {id}").as_bytes()).await;
}

#[tokio::test]
async fn a_slow_direct_reader_is_cut_while_a_fast_one_is_served() {
    let app = spawn_app_with(|s| s.outbox_capacity = 16).await;
    let (mut fast, _, _) = open_raw(&app, "topic=a").await;
    // The slow one sends its request and never reads, with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(app.address).await.unwrap();
    slow.write_all(request("topic=a", Some(&token07(&["*"], &[]))).as_bytes())
        .await
        .unwrap();
    wait_until("both are admitted", || {
        app.node.meters.live_count(Transport::Sse) == 2
    })
    .await;
    let data = "x".repeat(8 * 1024);
    let reader = tokio::spawn(async move {
        // Only the tail is kept: the fast reader takes megabytes.
        let mut tail = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        while !tail.ends_with(b"data: last\n\n") {
            let n = fast.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the fast reader was closed");
            tail.extend_from_slice(&chunk[..n]);
            let keep = tail.len().saturating_sub(64);
            tail.drain(..keep);
        }
    });
    let mut published = 0;
    while app.node.meters.live_count(Transport::Sse) == 2 {
        assert!(published < 5_000, "never cut");
        publish(&app, &[("topic", "a"), ("data", &data)]).await;
        published += 1;
    }
    publish(&app, &[("topic", "a"), ("data", "last")]).await;
    reader.await.unwrap();
    assert_eq!(app.node.meters.live_count(Transport::Sse), 1);
    drop(slow);
}

#[tokio::test]
async fn a_change_of_the_app_s_mercure_authorization_ends_its_streams() {
    use herald::tenants::{AppPatch, MercurePatch};
    let app = spawn_app().await;
    let (mut stream, _, _) = open_raw(&app, "topic=a").await;
    // The history's bounds authorize nothing: the stream stays.
    app.update_app(AppPatch {
        mercure: MercurePatch {
            history_size: Some(5),
            ..MercurePatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    let id = publish(&app, &[("topic", "a"), ("data", "still")]).await;
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, format!("id: {id}\n").as_bytes()).await;
    // Anonymous subscribers allowed: every stream of the app ends (its client resubscribes).
    app.update_app(AppPatch {
        mercure: MercurePatch {
            anonymous: Some(true),
            ..MercurePatch::default()
        },
        ..AppPatch::default()
    })
    .await;
    read_to_close(&mut stream).await;
    wait_until("the subscriber is gone", || {
        app.node.meters.live_count(Transport::Sse) == 0
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_that_keeps_uploading_is_cut_and_one_that_sends_a_little_is_kept() {
    let app = spawn_app().await;
    // A few bytes (say a stray CRLF) change nothing.
    let (mut quiet, _, mut rest) = open_raw(&app, "topic=a").await;
    quiet.write_all(b"\r\n").await.unwrap();
    // An endless upload: the stream ends past 64 KiB, and the subscriber is given back.
    let (mut noisy, _, _) = open_raw(&app, "topic=a").await;
    let junk = vec![b'x'; 16 * 1024];
    let mut cut = false;
    for _ in 0..64 {
        if noisy.write_all(&junk).await.is_err() {
            cut = true;
            break;
        }
        crate::helpers::pause(Duration::from_millis(5)).await;
    }
    if !cut {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, noisy.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the uploading subscriber's stream ends");
    }
    wait_until("the uploading subscriber is gone", || {
        app.node.meters.live_count(Transport::Sse) == 1
    })
    .await;
    let id = publish(&app, &[("topic", "a"), ("data", "still here")]).await;
    read_until(&mut quiet, &mut rest, b"data: still here\n\n").await;
    assert!(String::from_utf8(rest).unwrap().contains(&id));
}
