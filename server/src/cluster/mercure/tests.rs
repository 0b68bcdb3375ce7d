//! Tests of the Mercure history scripts, against a test-owned `redis-server`.
use super::super::message;
use super::super::test_redis::redis_server;
use super::*;

const BOUNDS: HistoryBounds = HistoryBounds {
    size: 3,
    age: Duration::from_secs(60),
    bytes: 1 << 20,
};

fn body(id: &str) -> Bytes {
    message::encode_mercure_body(false, &["t".to_owned()], id, b"data: x\n\n")
}

async fn ids(conn: &mut redis::aio::MultiplexedConnection, from: ReadFrom) -> (bool, Vec<String>) {
    let page = read(conn, "c", "1", &from, 100, BOUNDS.age, 0)
        .await
        .unwrap();
    let ids = page
        .entries
        .iter()
        .map(|(_, body)| message::decode_mercure_body(body).unwrap().id.to_owned())
        .collect();
    (page.found, ids)
}

#[tokio::test]
async fn appends_publish_in_stream_order_and_reads_resume_after_an_id() {
    let server = redis_server().await;
    let (client, mut conn) = server.connect().await;
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("c:app:1").await.unwrap();
    let mut heard = pubsub.into_on_message();
    let mut entries = Vec::new();
    for id in ["a", "b", "c", "d"] {
        let entry = append(&mut conn, "c", "1", id, &body(id), true, BOUNDS)
            .await
            .unwrap();
        entries.push(entry.expect("kept"));
    }
    use futures_util::StreamExt;
    for (id, entry) in ["a", "b", "c", "d"].iter().zip(&entries) {
        let msg = heard.next().await.unwrap();
        let payload: Vec<u8> = msg.get_payload().unwrap();
        let (got, body) = message::decode_mercure(&payload).unwrap();
        assert_eq!(message::decode_mercure_body(body).unwrap().id, *id);
        assert_eq!(got, Some(entry.to_string().as_str()));
    }
    assert!(entries.windows(2).all(|w| w[0] < w[1]), "ordered");
    // Size 3: `a` was trimmed, and its index entry with it.
    assert_eq!(
        ids(&mut conn, ReadFrom::Start).await,
        (true, vec!["b".into(), "c".into(), "d".into()])
    );
    assert_eq!(
        ids(&mut conn, ReadFrom::AfterId("c".into())).await,
        (true, vec!["d".into()])
    );
    assert_eq!(
        ids(&mut conn, ReadFrom::AfterId("d".into())).await,
        (true, vec![])
    );
    assert_eq!(
        ids(&mut conn, ReadFrom::AfterId("a".into())).await,
        (false, vec!["b".into(), "c".into(), "d".into()]),
        "too old: everything still there"
    );
    assert_eq!(
        ids(&mut conn, ReadFrom::AfterEntry(entries[2])).await,
        (true, vec!["d".into()])
    );
    let indexed: usize = redis::cmd("HLEN")
        .arg("c:mercure:1:idx")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(indexed, 3);
    // A repeated id: the latest wins, and trimming the older entry keeps the index.
    append(&mut conn, "c", "1", "b", &body("b"), true, BOUNDS)
        .await
        .unwrap();
    assert_eq!(
        ids(&mut conn, ReadFrom::AfterId("b".into())).await,
        (true, vec![])
    );
    append(&mut conn, "c", "1", "e", &body("e"), true, BOUNDS)
        .await
        .unwrap();
    assert_eq!(
        ids(&mut conn, ReadFrom::AfterId("b".into())).await,
        (true, vec!["e".into()])
    );
    // Not kept: published, not appended.
    let entry = append(&mut conn, "c", "1", "s", &body("s"), false, BOUNDS)
        .await
        .unwrap();
    assert_eq!(entry, None);
    assert_eq!(ids(&mut conn, ReadFrom::Start).await.1.len(), 3);
}

#[tokio::test]
async fn the_stream_is_bounded_by_bytes_and_age_and_expires() {
    let server = redis_server().await;
    let (_client, mut conn) = server.connect().await;
    let one = body("x0").len() + 2 + 64;
    let bounds = HistoryBounds {
        size: 100,
        age: Duration::from_millis(800),
        bytes: one * 2,
    };
    for n in 0..5 {
        let id = format!("x{n}");
        append(&mut conn, "c", "1", &id, &body(&id), true, bounds)
            .await
            .unwrap();
    }
    let page = read(&mut conn, "c", "1", &ReadFrom::Start, 100, bounds.age, 0)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2, "two fit the byte bound");
    let bytes: usize = redis::cmd("GET")
        .arg("c:mercure:1:bytes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(bytes, one * 2, "the counter follows the trims");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("c:mercure:1:log")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 800, "expires with the age bound: {ttl}");
    // Past the age, a read finds nothing (and removes them), then the keys expire.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page = read(
        &mut conn,
        "c",
        "1",
        &ReadFrom::Start,
        100,
        Duration::from_millis(300),
        0,
    )
    .await
    .unwrap();
    assert!(page.entries.is_empty(), "older than the age bound");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exists: usize = redis::cmd("EXISTS")
        .arg("c:mercure:1:log")
        .arg("c:mercure:1:idx")
        .arg("c:mercure:1:bytes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "an idle app's history leaves Redis");
    // A history of size 0 keeps nothing.
    let none = HistoryBounds { size: 0, ..bounds };
    assert_eq!(
        append(&mut conn, "c", "1", "z", &body("z"), true, none)
            .await
            .unwrap(),
        None
    );
}

#[test]
fn bridged_ids_name_their_entry_and_nothing_else() {
    for entry in [
        EntryId(1_700_000_000_123, 0),
        EntryId(1, 7),
        EntryId((1 << 48) - 1, (1 << 62) - 1),
    ] {
        let id = bridged_id(entry);
        assert!(id.starts_with("urn:uuid:"), "{id}");
        assert_eq!(
            uuid::Uuid::parse_str(&id[9..]).unwrap().get_version_num(),
            8
        );
        assert_eq!(entry_of_bridged_id(&id), Some(entry), "{id}");
    }
    assert_ne!(bridged_id(EntryId(5, 1)), bridged_id(EntryId(5, 2)));
    assert_eq!(
        entry_of_bridged_id(&format!("urn:uuid:{}", uuid::Uuid::new_v4())),
        None
    );
    assert_eq!(entry_of_bridged_id("urn:uuid:not-a-uuid"), None);
    assert_eq!(entry_of_bridged_id("p-1"), None);
}

#[test]
fn protocol_frames_are_not_bridgeable() {
    assert!(bridgeable(
        br#"{"event":"created","channel":"c","data":"{}"}"#
    ));
    assert!(!bridgeable(
        br#"{"event":"pusher_internal:member_added","channel":"c"}"#
    ));
    assert!(!bridgeable(
        br#"{"event":"pusher:subscription_count","channel":"c"}"#
    ));
}

#[test]
fn entry_ids_parse_and_order_numerically() {
    let a = EntryId::parse("9-5").unwrap();
    let b = EntryId::parse("10-0").unwrap();
    assert!(a < b);
    assert_eq!(b.to_string(), "10-0");
    assert_eq!(EntryId::parse("x-1"), None);
    assert_eq!(EntryId::parse("1"), None);
}

/// H3 and H1 of the review: app 1's history append fails (its stream key holds a string),
/// app 2's works. In one pipeline (as `bus.rs` sends them, errors per command), app 1's
/// Pusher message is still published, unflagged (nodes bridge it themselves) and with no
/// kind-6 message, its reply alone is an error, and app 2's is flagged and followed by its
/// kind-6 message. Without a live key nothing is flagged either.
#[tokio::test]
async fn a_failing_append_fails_only_its_reply_and_the_message_says_what_was_kept() {
    use futures_util::StreamExt;
    let server = redis_server().await;
    let (client, mut conn) = server.connect().await;
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(&["c:app:1", "c:app:2", "c:app:3"])
        .await
        .unwrap();
    let mut heard = pubsub.into_on_message();
    let _: () = redis::cmd("SET")
        .arg("c:mercure:1:log")
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    for app in ["1", "2"] {
        let _: () = redis::cmd("SET")
            .arg(live_key("c", app))
            .arg("10:60000:100000")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let frame = br#"{"event":"created","channel":"orders","data":"{}"}"#;
    let payload = message::encode("node-a", "orders", None, false, frame);
    let at = payload.len() - frame.len();
    let mut pipe = redis::pipe();
    load_bridge(&mut pipe);
    for app in ["1", "2", "3"] {
        let to = format!("c:app:{app}");
        bridge(&mut pipe, "c", app, &to, &payload, at, "orders");
    }
    pipe.ignore_errors();
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.expect("not failed");
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(
        matches!(&replies[0], redis::Value::ServerError(e) if format!("{e:?}").contains("mercure history: WRONGTYPE")),
        "{replies:?}"
    );
    assert!(matches!(&replies[1], redis::Value::BulkString(b) if !b.is_empty()));
    assert!(matches!(&replies[2], redis::Value::BulkString(b) if b.is_empty()));
    let mut got = Vec::new();
    for _ in 0..4 {
        let msg = tokio::time::timeout(Duration::from_secs(2), heard.next())
            .await
            .expect("a message")
            .unwrap();
        let bytes: Vec<u8> = msg.get_payload().unwrap();
        got.push((msg.get_channel_name().to_owned(), bytes));
    }
    let in_history = |bytes: &[u8]| message::decode(bytes).map(|m| m.in_history);
    assert_eq!(got[0].0, "c:app:1");
    assert_eq!(
        in_history(&got[0].1),
        Some(false),
        "app 1: not kept, not flagged"
    );
    assert_eq!(got[1].0, "c:app:2");
    assert_eq!(in_history(&got[1].1), Some(true), "app 2: kept, flagged");
    let decoded = message::decode(&got[1].1).unwrap();
    assert_eq!((decoded.channel, decoded.frame), ("orders", &frame[..]));
    assert_eq!(got[2].0, "c:app:2");
    assert!(
        message::decode_mercure(&got[2].1).is_some(),
        "app 2's kind 6"
    );
    assert_eq!(got[3].0, "c:app:3");
    assert_eq!(in_history(&got[3].1), Some(false), "app 3: no live key");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), heard.next())
            .await
            .is_err(),
        "no kind 6 for app 1 or 3"
    );
}

/// H4 of the review: an append whose answer does not come in time (Redis paused past the
/// command timeout) may still run: it says so, and its kind-6 message does arrive later. An
/// error reply is a definite failure.
#[tokio::test]
async fn an_append_that_timed_out_may_have_run_and_an_error_reply_did_not() {
    use futures_util::StreamExt;
    let server = redis_server().await;
    let (client, mut conn) = server.connect().await;
    let (_, mut admin) = server.connect().await;
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("c:app:1").await.unwrap();
    let mut heard = pubsub.into_on_message();
    // The script is loaded (else the paused EVALSHA would find none and not run).
    append(&mut conn, "c", "3", "z", &body("z"), true, BOUNDS)
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(COMMAND_TIMEOUT.as_millis() as u64 + 1_000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let error = append(&mut conn, "c", "1", "a", &body("a"), true, BOUNDS)
        .await
        .expect_err("timed out");
    assert!(error.may_have_run(), "{error}");
    let msg = tokio::time::timeout(Duration::from_secs(3), heard.next())
        .await
        .expect("the script ran after all")
        .unwrap();
    let payload: Vec<u8> = msg.get_payload().unwrap();
    let (_, body_heard) = message::decode_mercure(&payload).unwrap();
    assert_eq!(message::decode_mercure_body(body_heard).unwrap().id, "a");
    let _: () = redis::cmd("SET")
        .arg("c:mercure:2:log")
        .arg("not a stream")
        .query_async(&mut admin)
        .await
        .unwrap();
    let error = append(&mut conn, "c", "2", "b", &body("b"), true, BOUNDS)
        .await
        .expect_err("an error reply");
    assert!(!error.may_have_run(), "{error}");
}

/// M3 of the review: a script call deletes at most 128 entries (a lowered size does not
/// block Redis for every tenant); the stream still converges, as each append deletes more
/// than it adds.
#[tokio::test]
async fn one_append_trims_at_most_128_entries_and_the_stream_converges() {
    let server = redis_server().await;
    let (_, mut conn) = server.connect().await;
    let large = HistoryBounds {
        size: 1_000,
        ..BOUNDS
    };
    for n in 0..300 {
        let id = format!("a{n}");
        append(&mut conn, "c", "1", &id, &body(&id), true, large)
            .await
            .unwrap();
    }
    let one = HistoryBounds { size: 1, ..BOUNDS };
    let len = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("XLEN")
                .arg("c:mercure:1:log")
                .query_async::<usize>(&mut conn)
                .await
                .unwrap()
        }
    };
    append(&mut conn, "c", "1", "b0", &body("b0"), true, one)
        .await
        .unwrap();
    assert_eq!(len(&mut conn).await, 301 - 128);
    append(&mut conn, "c", "1", "b1", &body("b1"), true, one)
        .await
        .unwrap();
    assert_eq!(len(&mut conn).await, 301 - 128 + 1 - 128);
    append(&mut conn, "c", "1", "b2", &body("b2"), true, one)
        .await
        .unwrap();
    assert_eq!(len(&mut conn).await, 1, "converged");
    assert_eq!(
        ids(&mut conn, ReadFrom::Start).await,
        (true, vec!["b2".into()])
    );
}

/// M4 and M6 of the review: a byte counter that outlived its stream (the stream evicted or
/// deleted) restarts from the next append instead of emptying the history forever; an
/// update larger than the byte bound is published but not kept (the history stays).
#[tokio::test]
async fn the_byte_counter_heals_and_an_oversized_update_does_not_wipe_the_history() {
    let server = redis_server().await;
    let (_, mut conn) = server.connect().await;
    append(&mut conn, "c", "1", "a", &body("a"), true, BOUNDS)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("c:mercure:1:log")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("c:mercure:1:bytes")
        .arg(BOUNDS.bytes * 4)
        .query_async(&mut conn)
        .await
        .unwrap();
    append(&mut conn, "c", "1", "b", &body("b"), true, BOUNDS)
        .await
        .unwrap()
        .expect("kept");
    append(&mut conn, "c", "1", "c", &body("c"), true, BOUNDS)
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(
        ids(&mut conn, ReadFrom::Start).await,
        (true, vec!["b".into(), "c".into()])
    );
    let bytes: usize = redis::cmd("GET")
        .arg("c:mercure:1:bytes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(bytes, 2 * (1 + body("b").len() + 64));
    let small = HistoryBounds {
        bytes: 300,
        ..BOUNDS
    };
    let big = message::encode_mercure_body(false, &["t".to_owned()], "big", &[b'x'; 400]);
    let entry = append(&mut conn, "c", "1", "big", &big, true, small)
        .await
        .unwrap();
    assert_eq!(entry, None, "not kept");
    assert_eq!(
        ids(&mut conn, ReadFrom::Start).await,
        (true, vec!["b".into(), "c".into()]),
        "the history stays"
    );
}

#[tokio::test]
async fn a_page_with_a_byte_budget_ends_after_the_entry_that_crosses_it() {
    let server = redis_server().await;
    let (_client, mut conn) = server.connect().await;
    let bounds = HistoryBounds { size: 10, ..BOUNDS };
    for id in ["a", "b", "c", "d"] {
        append(&mut conn, "c", "1", id, &body(id), true, bounds)
            .await
            .unwrap();
    }
    let one = body("a").len();
    // Two bodies fit; the third crosses the budget and ends the page.
    let page = read(
        &mut conn,
        "c",
        "1",
        &ReadFrom::Start,
        100,
        bounds.age,
        one * 2 + 1,
    )
    .await
    .unwrap();
    assert_eq!(page.entries.len(), 3);
    let read_bytes: usize = page.entries.iter().map(|(_, b)| b.len()).sum();
    assert!(
        read_bytes > one * 2 + 1,
        "the caller sees the budget crossed"
    );
    // Without one, the whole stream.
    let page = read(&mut conn, "c", "1", &ReadFrom::Start, 100, bounds.age, 0)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 4);
}
