//! The inbox bound of `xhr_send`, without a task draining it: what a session too busy to take
//! its client's messages answers (the HTTP tests cannot stall a session's task on demand).

use super::*;
use crate::outbox::Outbox;
use crate::protocol::SocketId;
use tokio::time::Instant;

fn session() -> Arc<Shared> {
    let conn = Arc::new(Connection::with_outbox(
        SocketId::new(1, 1),
        "key",
        Outbox::detached(16),
    ));
    Shared::new(
        conn,
        Owner {
            addr: None,
            origin: None,
        },
    )
}

fn messages(count: usize, bytes: usize) -> Vec<String> {
    (0..count).map(|_| "x".repeat(bytes)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_send_to_a_full_inbox_waits_then_is_refused_busy() {
    let shared = session();
    assert!(shared.send(1, messages(MAX_INBOX, 1)).await.is_ok());
    let started = Instant::now();
    let refused = shared.send(2, messages(1, 1)).await;
    assert!(matches!(refused, Err(SendRefused::Busy)));
    assert_eq!(started.elapsed(), SEND_WAIT, "it waited the bound, no more");
    // Only the first body is held.
    let link = shared.link.lock_or_recover();
    assert_eq!(link.inbox.len(), MAX_INBOX);
    assert!(link.inbox.iter().all(|(number, _)| *number == 1));
}

#[tokio::test(start_paused = true)]
async fn the_inbox_is_bounded_in_bytes_too() {
    let shared = session();
    assert!(shared
        .send(1, messages(2, MAX_INBOX_BYTES / 2))
        .await
        .is_ok());
    assert!(matches!(
        shared.send(2, messages(1, 10)).await,
        Err(SendRefused::Busy)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_send_goes_in_once_the_task_takes_the_inbox() {
    let shared = session();
    assert!(shared.send(1, messages(MAX_INBOX, 1)).await.is_ok());
    let waiting = tokio::spawn({
        let shared = shared.clone();
        async move { shared.send(2, messages(1, 1)).await }
    });
    tokio::time::sleep(SEND_WAIT / 2).await;
    assert!(!waiting.is_finished());
    // What the task does: takes the inbox once it settled, then wakes the waiting sends.
    let _ = shared.take(Instant::now() + SETTLE);
    shared.room.notify_waiters();
    assert!(waiting.await.unwrap().is_ok());
    assert_eq!(shared.link.lock_or_recover().inbox.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_send_to_a_closing_session_is_gone() {
    let shared = session();
    shared.link.lock_or_recover().closing = true;
    assert!(matches!(
        shared.send(1, messages(1, 1)).await,
        Err(SendRefused::Gone)
    ));
}

#[test]
fn escaped_units_count_a_frame_as_push_batch_writes_it() {
    for text in [
        "",
        "plain",
        r#"{"event":"news","data":"{\"a\":\"b\\c\"}"}"#,
        "tab\tnew\nline\r\u{1}\u{1f}\u{8}\u{c}",
        "é, 漢字 and 😀",
    ] {
        let written = serde_json::to_string(text).unwrap();
        assert_eq!(
            escaped_units(text.as_bytes()),
            written.encode_utf16().count(),
            "{text:?}"
        );
    }
}

#[test]
fn a_poll_answer_stays_within_pusher_js_buffer_after_escaping() {
    let shared = session();
    // Frames full of escaped quotes: each doubles when written as a JSON string.
    let data = "\\\"".repeat(10_000);
    let frame = Bytes::from(format!(r#"{{"event":"news","data":"{data}"}}"#));
    for _ in 0..16 {
        assert!(!matches!(
            shared.conn.outbox().enqueue(&frame),
            crate::outbox::Queued::No
        ));
    }
    let mut frames = Receiver::new(shared.conn.clone());
    let mut answered = 0;
    let mut polls = 0;
    while answered < 16 {
        let mut line = BytesMut::new();
        poll_answer(&mut frames, &mut line);
        let units = utf16_units(&line);
        assert!(units <= POLL_UNITS, "{units} units");
        let text = std::str::from_utf8(&line).unwrap();
        for batch in text.lines() {
            let batch: Vec<String> = serde_json::from_str(&batch[1..]).unwrap();
            answered += batch.len();
        }
        polls += 1;
        assert!(polls < 16, "every poll answers something");
    }
    assert!(polls > 1, "one poll took them all");
}
