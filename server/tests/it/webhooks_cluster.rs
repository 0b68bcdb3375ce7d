//! The webhook outbox shared by several nodes (issue 14, "Webhooks, once"): each row is claimed
//! by one node before it is delivered, an endpoint's pending rows are held by one node at a time
//! (order per channel), an expired lease is taken over, and only the holder records an attempt.
//! The store's claims run on SQLite and on a fresh PostgreSQL database
//! (`HERALD_TEST_DATABASE_URL`; the tests fail when PostgreSQL cannot be reached); two
//! in-process servers share one PostgreSQL database and one receiver.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use herald::clock::Clock;
use herald::tenants::{
    Attempt, Delivery, DeliveryStatus, HeldEdit, Lease, NewDelivery, NewWebhook, Store,
};

use crate::helpers::*;
use crate::webhooks::Receiver;

const START: i64 = 1_800_000_000_000;
const LEASE_MS: i64 = 10_000;

fn row(id: i64, webhook_id: &str, channel: &str) -> NewDelivery {
    NewDelivery {
        id,
        webhook_id: webhook_id.into(),
        app_id: "app".into(),
        events: format!("[{{\"name\":\"client_event\",\"channel\":\"{channel}\"}}]"),
        channels: vec![channel.into()],
        created_at: START,
    }
}

fn lease(owner: &str, now_ms: i64) -> Lease {
    Lease {
        owner: owner.into(),
        now_ms,
        until_ms: now_ms + LEASE_MS,
    }
}

fn delivered(at: i64) -> Attempt {
    Attempt {
        status: DeliveryStatus::Delivered,
        attempts: 1,
        at,
        next_attempt_at: 0,
        http_status: 200,
        error: String::new(),
        latency_ms: 3,
    }
}

fn ids(rows: &[Delivery]) -> Vec<i64> {
    rows.iter().map(|d| d.id).collect()
}

async fn exercise_claims(url: &str) {
    let clock = Clock::manual(START);
    let one = Store::open(url, clock.clone()).await.expect("opens");
    let two = Store::open(url, clock.clone())
        .await
        .expect("a second handle");
    // Endpoint e1: rows 1-4, e2: rows 5-6, all unclaimed.
    let mut rows: Vec<NewDelivery> = (1..=4).map(|id| row(id, "e1", "c")).collect();
    rows.extend((5..=6).map(|id| row(id, "e2", "d")));
    one.insert_deliveries(&rows).await.unwrap();

    // A bounded claim takes the oldest; an endpoint another node holds is skipped whole.
    let a = one
        .claim_deliveries(&lease("A", START), 3, false)
        .await
        .unwrap();
    assert_eq!(ids(&a), [1, 2, 3]);
    let b = two
        .claim_deliveries(&lease("B", START), 100, false)
        .await
        .unwrap();
    assert_eq!(ids(&b), [5, 6], "e1 is A's");
    let a = one
        .claim_deliveries(&lease("A", START + 100), 100, false)
        .await
        .unwrap();
    assert_eq!(ids(&a), [1, 2, 3, 4], "A's renewed and the rest of e1");

    // Held rows are edited only by their holder, all or nothing.
    let edit = HeldEdit {
        id: 4,
        events: "[]".into(),
        channels: vec!["c".into()],
    };
    assert!(!two
        .edit_held_deliveries(std::slice::from_ref(&edit), &[], "B")
        .await
        .unwrap());
    assert!(!one.edit_held_deliveries(&[], &[4, 77], "A").await.unwrap());
    assert!(one
        .edit_held_deliveries(std::slice::from_ref(&edit), &[], "A")
        .await
        .unwrap());

    // A new row is written claimed only when every pending row of its endpoint is the writer's.
    let written = two
        .insert_claimed_deliveries(
            &[(row(7, "e1", "c"), START), (row(8, "e3", "f"), START)],
            &lease("B", START + 100),
        )
        .await
        .unwrap();
    assert_eq!(written, [false, true], "e1 is A's, e3 is free");
    let written = one
        .insert_claimed_deliveries(&[(row(9, "e1", "c"), START)], &lease("A", START + 100))
        .await
        .unwrap();
    assert_eq!(written, [false], "row 7 of e1 is nobody's yet");
    let a = one
        .claim_deliveries(&lease("A", START + 200), 100, false)
        .await
        .unwrap();
    assert_eq!(ids(&a), [1, 2, 3, 4, 7, 9]);

    // Only the holder records an attempt; a finished row is released.
    assert!(!two
        .record_claimed_attempt("B", 1, &delivered(START + 300))
        .await
        .unwrap());
    assert!(one
        .record_claimed_attempt("A", 1, &delivered(START + 300))
        .await
        .unwrap());
    assert!(!one
        .record_claimed_attempt("A", 1, &delivered(START + 300))
        .await
        .unwrap());

    // A's leases end without renewal: B takes e1 over; A records nothing more and holds
    // nothing of it.
    let later = START + 200 + LEASE_MS + 1;
    clock.set_millis(later);
    let b = two
        .claim_deliveries(&lease("B", later), 100, false)
        .await
        .unwrap();
    assert_eq!(ids(&b), [2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(!one
        .record_claimed_attempt("A", 2, &delivered(later))
        .await
        .unwrap());
    let a = one
        .claim_deliveries(&lease("A", later), 100, false)
        .await
        .unwrap();
    assert!(a.is_empty(), "{a:?}");
    assert!(two
        .record_claimed_attempt("B", 2, &delivered(later))
        .await
        .unwrap());

    // Released at B's shutdown: A claims them at once.
    assert_eq!(two.release_deliveries("B", &[3]).await.unwrap(), 6);
    let a = one
        .claim_deliveries(&lease("A", later + 1), 100, false)
        .await
        .unwrap();
    assert_eq!(ids(&a), [5, 6, 8], "e1 still has B's row 3");
    assert_eq!(two.release_deliveries("B", &[]).await.unwrap(), 1);
    let a = one
        .claim_deliveries(&lease("A", later + 2), 100, false)
        .await
        .unwrap();
    assert_eq!(ids(&a), [3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(one.release_deliveries("A", &[]).await.unwrap(), 7);

    // Two claimers at once never get the same row, nor rows of the same endpoint.
    let many: Vec<NewDelivery> = (100..400)
        .map(|id| row(id, &format!("m{}", id % 7), "x"))
        .collect();
    one.insert_deliveries(&many).await.unwrap();
    for round in 0..5 {
        let now = later + 10 + round;
        let (lease_a, lease_b) = (
            lease(&format!("A{round}"), now),
            lease(&format!("B{round}"), now),
        );
        let (a, b) = tokio::join!(
            one.claim_deliveries(&lease_a, 1000, false),
            two.claim_deliveries(&lease_b, 1000, false),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let a_ids: HashSet<i64> = a.iter().map(|d| d.id).collect();
        assert!(b.iter().all(|d| !a_ids.contains(&d.id)), "round {round}");
        let a_hooks: HashSet<&str> = a.iter().map(|d| d.webhook_id.as_str()).collect();
        assert!(
            b.iter().all(|d| !a_hooks.contains(d.webhook_id.as_str())),
            "round {round}: an endpoint held by both"
        );
        assert_eq!(a.len() + b.len(), 307, "round {round}: every pending row");
        one.release_deliveries(&format!("A{round}"), &[])
            .await
            .unwrap();
        two.release_deliveries(&format!("B{round}"), &[])
            .await
            .unwrap();
    }
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn outbox_claims_hold_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise_claims(&herald::config::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_claims_hold_on_postgres() {
    on_scratch_postgres(|url| async move { exercise_claims(&url).await }).await;
}

/// A node on `store_url` with a short lease.
async fn node_on(store_url: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.database_url = store_url.to_owned();
    settings.webhooks.claim_lease = Duration::from_millis(800);
    settings.webhooks.backoff_base = Duration::from_millis(50);
    settings.webhooks.backoff_cap = Duration::from_millis(200);
    spawn_in(dir, settings).await
}

/// Per channel, the `n` of the accepted client events, in arrival order.
fn per_channel(events: &[Value]) -> HashMap<String, Vec<i64>> {
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for event in events {
        let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
        out.entry(event["channel"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["n"].as_i64().unwrap());
    }
    out
}

async fn two_nodes_deliver_once(url: String) {
    let receiver = Receiver::start().await;
    // Node A runs on its own runtime, so it can die the way a killed process does: every task
    // it has (server, webhook writer and worker) stops at once, nothing shuts down gracefully.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = {
        let url = url.clone();
        doomed
            .spawn(async move { node_on(&url).await })
            .await
            .unwrap()
    };
    let mut b = node_on(&url).await;
    a.node
        .store
        .create_webhook(NewWebhook {
            app_id: APP_ID.into(),
            url: receiver.url.clone(),
            events: vec!["client_event".into()],
            channel_prefix: None,
            headers: Vec::new(),
        })
        .await
        .expect("webhook is added");
    // Both nodes' delivery ids start from the same number, so their windows take the same ids
    // (as two nodes writing in the same millisecond do): each writer renumbers on the clash.
    let far = (now_millis() + 3_600_000) * 1000;
    for node in [&a, &b] {
        herald::startup::refresh_apps(&node.node).await.unwrap();
        node.node.webhooks.seed_ids(far);
    }

    // Events on both nodes, alternating, about the same channels, while the receiver fails (so
    // they stay pending where every node could see them): each delivered once, in order per
    // channel.
    receiver.status.store(503, Ordering::SeqCst);
    let channels = ["private-x", "private-y"];
    let mut senders = Vec::new();
    for node in [&a, &b] {
        for channel in channels {
            let mut sender = node.connect().await;
            sender.subscribe(channel).await;
            senders.push((sender, channel));
        }
    }
    let rounds = 4;
    for round in 0..rounds {
        for (at, (sender, channel)) in senders.iter_mut().enumerate() {
            // Senders 0-1 are on A, 2-3 on B: A sends the even numbers, B the odd ones.
            let n = round * 2 + i64::from(at >= 2);
            sender
                .send_json(json!({"event":"client-n","channel":*channel,"data":{"n":n}}))
                .await;
            if at % 2 == 1 {
                // Ids follow write times: well apart, whatever the batch windows do.
                pause(Duration::from_millis(200)).await;
            }
        }
    }
    let total = usize::try_from(rounds * 2 * 2).unwrap();
    // Longer than a claim interval: each node has looked for rows to claim.
    pause(Duration::from_millis(500)).await;
    receiver.status.store(200, Ordering::SeqCst);
    receiver.wait_for("every event", |e| e.len() >= total).await;
    // Longer than a lease: a duplicate would have come by now.
    pause(Duration::from_millis(900)).await;
    let events = receiver.accepted_events();
    assert_eq!(events.len(), total, "exactly once: {events:?}");
    let order = per_channel(&events);
    for channel in channels {
        assert_eq!(
            order[channel],
            (0..rounds * 2).collect::<Vec<_>>(),
            "{channel} in order"
        );
    }

    // A claims rows it cannot deliver yet (the receiver fails), then dies: B delivers them,
    // in order, once A's lease has ended.
    receiver.status.store(503, Ordering::SeqCst);
    let before = receiver.requests().len();
    let (sender, _) = &mut senders[0];
    sender.subscribe("private-z").await;
    for n in 100..105 {
        sender
            .send_json(json!({"event":"client-n","channel":"private-z","data":{"n":n}}))
            .await;
        // Client events: at most 10 a second per connection.
        pause(Duration::from_millis(120)).await;
    }
    // All five are in the outbox (written by A, claimed by A: it is the endpoint's holder) and
    // A has tried them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = b.node.store.pending_deliveries().await.unwrap();
        let written: usize = pending
            .iter()
            .map(|d| d.events.matches("\"channel\":\"private-z\"").count())
            .sum();
        if written == 5 && receiver.requests().len() > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A writes and tries its rows: {pending:?}"
        );
        pause(Duration::from_millis(20)).await;
    }
    drop(senders);
    doomed.shutdown_background();
    let died = tokio::time::Instant::now();
    // A request A sent before it died is answered 503 still.
    pause(Duration::from_millis(100)).await;
    receiver.status.store(200, Ordering::SeqCst);
    let events = receiver
        .wait_for("A's rows from B", |e| e.len() >= total + 5)
        .await;
    assert!(
        died.elapsed() >= Duration::from_millis(400),
        "not before A's lease could end: {:?}",
        died.elapsed()
    );
    pause(Duration::from_millis(500)).await;
    let events_after = receiver.accepted_events();
    assert_eq!(events_after.len(), events.len(), "exactly once");
    assert_eq!(
        per_channel(&events_after)["private-z"],
        [100, 101, 102, 103, 104]
    );
    let pending = b.node.store.pending_deliveries().await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    drop(a);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_outbox_deliver_each_webhook_once_in_order() {
    on_scratch_postgres(two_nodes_deliver_once).await;
}
