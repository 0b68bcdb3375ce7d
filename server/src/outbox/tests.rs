use std::sync::Arc;

use bytes::Bytes;

use super::*;

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn detached(capacity: usize) -> (Arc<Outbox>, Receiver<Outbox>) {
    let outbox = Arc::new(Outbox::detached(capacity));
    (outbox.clone(), Receiver::new(outbox))
}

#[test]
fn nothing_is_queued_after_the_close_frame() {
    let (outbox, mut receiver) = detached(8);
    assert_eq!(outbox.enqueue(&bytes("a")), Queued::First);
    assert_eq!(outbox.enqueue(&bytes("b")), Queued::Behind);
    outbox.force_push(opcode::CLOSE, Bytes::new());
    assert_eq!(outbox.enqueue(&bytes("late")), Queued::No);
    assert!(!outbox.push(bytes("late")));
    let mut seen = Vec::new();
    while let Some(frame) = receiver.try_recv() {
        seen.push(frame);
    }
    assert_eq!(seen, vec![bytes("a"), bytes("b"), Bytes::new()]);
}

#[test]
fn a_sealed_or_closing_outbox_takes_only_closing_frames() {
    let (outbox, _receiver) = detached(8);
    outbox.seal();
    assert_eq!(outbox.enqueue(&bytes("x")), Queued::No);
    let (outbox, _receiver) = detached(8);
    outbox.request_close(CloseCode::ReconnectNow, true);
    assert_eq!(outbox.enqueue(&bytes("x")), Queued::No);
    outbox.force_push(opcode::TEXT, bytes("farewell"));
    assert_eq!(outbox.backlog(), 1);
}

#[test]
fn a_full_outbox_refuses_and_asks_for_4100() {
    let (outbox, _receiver) = detached(2);
    assert_eq!(outbox.enqueue(&bytes("1")), Queued::First);
    assert_eq!(outbox.enqueue(&bytes("2")), Queued::Behind);
    assert_eq!(outbox.enqueue(&bytes("3")), Queued::No);
    let request = outbox.close_request().expect("a close request");
    assert_eq!(request.code, CloseCode::OverCapacity);
    assert!(!request.drain);
}

#[test]
fn the_first_close_request_wins_and_a_farewell_travels_with_it() {
    let (outbox, _receiver) = detached(2);
    outbox.close_with_error(CloseCode::Unauthorized, "revoked");
    outbox.request_close(CloseCode::ReconnectNow, false);
    let request = outbox.close_request().expect("a close request");
    assert_eq!(request.code, CloseCode::Unauthorized);
    assert!(request.drain);
    let farewell = request.farewell.expect("a farewell frame");
    assert!(std::str::from_utf8(&farewell).unwrap().contains("revoked"));
}

#[tokio::test]
async fn a_finished_outbox_ends_its_receiver() {
    let (outbox, mut receiver) = detached(4);
    assert!(outbox.push(bytes("one")));
    assert_eq!(receiver.recv().await, Some(bytes("one")));
    outbox.finish();
    assert_eq!(receiver.recv().await, None);
    assert!(!outbox.push(bytes("late")));
}

/// Frames of every size, written through a socket too small to take them at once: the bytes
/// that arrive are exactly the frames, in order, whatever the partial writes.
#[tokio::test]
async fn partial_writes_resume_exactly_where_they_stopped() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    // As the transport sets it; without it, Nagle and delayed ACKs make this test crawl.
    server.set_nodelay(true).unwrap();
    let _ = socket2::SockRef::from(&server).set_send_buffer_size(8192);
    let outbox = Outbox::socket(Arc::new(server), 100_000);
    let payloads: Vec<Bytes> = (0..140)
        .map(|i| {
            let size = [3, 125, 126, 1000, 65_535, 65_536, 70_001][i % 7];
            Bytes::from(vec![b'a' + (i % 26) as u8; size])
        })
        .collect();
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        received
    });
    let mut blocked = 0;
    for payload in &payloads {
        if outbox.enqueue(payload) == Queued::First && !outbox.flush() {
            blocked += 1;
        }
    }
    std::future::poll_fn(|cx| outbox.poll_flush(cx))
        .await
        .unwrap();
    assert!(
        blocked > 0,
        "the socket never filled up: the test proves nothing"
    );
    drop(outbox);
    let received = reader.await.unwrap();
    let mut expected = Vec::new();
    for payload in &payloads {
        expected.extend(crate::protocol::ws::server_frame(opcode::TEXT, payload));
    }
    assert_eq!(received.len(), expected.len());
    assert!(
        received == expected,
        "the byte stream differs from the frames"
    );
}
