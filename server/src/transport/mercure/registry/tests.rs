//! The registry's unit tests (history bounds, matching, replay and subscription events).

use super::*;
use crate::protocol::SocketId;

fn exact(topic: &str) -> Selector {
    Selector::Exact(topic.into())
}

fn nobody() -> Subscriber {
    Subscriber {
        id: "urn:uuid:0".into(),
        selectors: Vec::new(),
    }
}

fn update(id: &str, topic: &str, private: bool) -> Update {
    Update::new(id.into(), vec![topic.into()], private, None, None, id)
}

#[test]
fn events_split_data_lines_and_cannot_inject_fields() {
    let event = format_event("u1", Some("up\ndata: x"), Some(10), "a\r\nb\rc\nid: evil");
    assert_eq!(
        &event[..],
        b"id: u1\nevent: updata: x\nretry: 10\ndata: a\ndata: b\ndata: c\ndata: id: evil\n\n"
    );
}

#[test]
fn matching_filters_private_updates_and_history_replays_after_an_id() {
    let app_hub = Arc::new(AppHub::new("1", None));
    let hubs = Hubs::new(1 << 20);
    let app = hubs.app("1", &app_hub);
    let (public, mut public_rx) = Connection::new(SocketId::new(1, 1), 64);
    let (reader, mut reader_rx) = Connection::new(SocketId::new(2, 1), 64);
    app.subscribe(&public, vec![exact("a")], vec![], nobody(), &Resume::Live);
    app.subscribe(
        &reader,
        vec![Selector::Any],
        vec![exact("a")],
        nobody(),
        &Resume::Live,
    );
    assert_eq!(app.publish(update("1", "a", false)), 2);
    assert_eq!(app.publish(update("2", "a", true)), 1);
    assert_eq!(app.publish(update("3", "b", true)), 0);
    assert_eq!(app.publish(update("4", "b", false)), 1);
    assert!(public_rx.try_recv().unwrap().starts_with(b"id: 1\n"));
    assert!(public_rx.try_recv().is_none());
    for id in ["1", "2", "4"] {
        assert!(reader_rx
            .try_recv()
            .unwrap()
            .starts_with(format!("id: {id}\n").as_bytes()));
    }
    let (late, mut late_rx) = Connection::new(SocketId::new(3, 1), 64);
    let subscribed = app.subscribe(
        &late,
        vec![Selector::Any],
        vec![],
        nobody(),
        &Resume::After("1".into()),
    );
    assert_eq!(
        subscribed.replayed, 1,
        "private 2 and 3 skipped, 4 replayed"
    );
    assert_eq!(subscribed.resume_point.as_deref(), Some("1"));
    assert!(late_rx.try_recv().unwrap().starts_with(b"id: 4\n"));
    let (gone, _rx) = Connection::new(SocketId::new(4, 1), 64);
    let too_old = app.subscribe(
        &gone,
        vec![Selector::Any],
        vec![],
        nobody(),
        &Resume::After("x".into()),
    );
    assert_eq!(too_old.resume_point.as_deref(), Some("earliest"));
    assert_eq!(too_old.replayed, 2);
}

#[test]
fn history_is_bounded_by_count_and_node_wide_bytes() {
    let app_hub = Arc::new(AppHub::new("1", None));
    let hubs = Hubs::new(2_000);
    let app = hubs.app("1", &app_hub);
    app.set_limits(HistoryLimits {
        size: 3,
        age: Duration::from_secs(60),
    });
    for i in 0..10 {
        app.publish(update(&i.to_string(), "a", false));
    }
    assert_eq!(app.lock().history.updates.len(), 3);
    let big = "x".repeat(900);
    for i in 0..10 {
        app.publish(Update::new(
            i.to_string(),
            vec!["a".into()],
            false,
            None,
            None,
            &big,
        ));
    }
    assert!(hubs.history_bytes() <= 2_000, "{}", hubs.history_bytes());
    assert_eq!(hubs.history_bytes(), app.lock().history.bytes);
}

#[test]
fn a_replay_past_its_bound_ends_the_stream_instead_of_registering() {
    let app_hub = Arc::new(AppHub::new("1", None));
    let hubs = Hubs::new(1 << 24);
    let app = hubs.app("1", &app_hub);
    for i in 0..MAX_REPLAY + 5 {
        app.publish(update(&i.to_string(), "a", false));
    }
    let (conn, _rx) = Connection::new(SocketId::new(1, 1), MAX_REPLAY + 64);
    let subscribed = app.subscribe(&conn, vec![exact("a")], vec![], nobody(), &Resume::Earliest);
    assert_eq!(subscribed.replayed, MAX_REPLAY);
    assert!(subscribed.id.is_none());
    assert_eq!(app.subscribers(), 0);
}

fn described(raw: &str) -> subscriptions::Described {
    subscriptions::Described {
        kind: crate::protocol::mercure::SelectorKind::MatchExact,
        raw: raw.into(),
        payload: None,
    }
}

#[test]
fn subscription_events_leave_the_history_alone_and_are_bounded() {
    let app_hub = Arc::new(AppHub::new("1", None));
    let hubs = Hubs::new(1 << 24);
    let app = hubs.app("1", &app_hub);
    for i in 0..1_000 {
        app.publish(update(&i.to_string(), "a", false));
    }
    let ns = subscriptions::namespace("/apps/1/.well-known/mercure");
    assert!(!subscriptions::watches(
        "/apps/1/.well-known/mercure",
        &Selector::parse(
            crate::protocol::mercure::SelectorKind::Draft07,
            "https://ex.com/books/{id}"
        )
        .unwrap()
    ));
    let (watcher, mut watcher_rx) = Connection::new(SocketId::new(1, 1), 100_000);
    app.subscribe(
        &watcher,
        vec![Selector::parse(
            crate::protocol::mercure::SelectorKind::Draft07,
            &format!("{ns}/{{+rest}}"),
        )
        .unwrap()],
        vec![Selector::Any],
        nobody(),
        &Resume::Live,
    );
    let mut events = 0;
    for cycle in 0..16 {
        let (conn, _rx) = Connection::new(SocketId::new(2 + cycle, 1), 64);
        let raws: Vec<String> = (0..32).map(|n| format!("https://ex.com/{n}")).collect();
        let subscriber = Subscriber {
            id: new_id(),
            selectors: raws.iter().map(|r| described(r)).collect(),
        };
        let id = app
            .subscribe(
                &conn,
                raws.iter().map(|r| exact(r)).collect(),
                vec![],
                subscriber,
                &Resume::Live,
            )
            .id
            .unwrap();
        app.unsubscribe(id);
    }
    while watcher_rx.try_recv().is_some() {
        events += 1;
    }
    // Watched (the template matches the namespace), but not kept, and bounded per second.
    assert!(
        events > 0 && events <= SUBSCRIPTION_EVENTS_PER_SECOND,
        "{events}"
    );
    let state = app.lock();
    assert_eq!(state.history.updates.len(), 1_000);
    assert_eq!(state.history.updates[0].id, "0");
}

#[test]
fn an_idle_app_holding_the_node_history_does_not_starve_another() {
    let hubs = Hubs::new(64 << 10);
    let a_hub = Arc::new(AppHub::new("a", None));
    let b_hub = Arc::new(AppHub::new("b", None));
    let a = hubs.app("a", &a_hub);
    let b = hubs.app("b", &b_hub);
    for app in [&a, &b] {
        app.set_limits(HistoryLimits {
            size: 100_000,
            age: Duration::from_secs(600),
        });
    }
    for i in 0..1_000 {
        a.publish(update(&format!("a{i}"), "t", false));
    }
    assert!(hubs.history_bytes() <= 64 << 10);
    for i in 0..50 {
        b.publish(update(&format!("b{i}"), "t", false));
    }
    assert_eq!(b.lock().history.updates.len(), 50);
    assert!(hubs.history_bytes() <= 64 << 10);
    // A publishes again: it keeps to its share (half, two apps hold some).
    for i in 0..1_000 {
        a.publish(update(&format!("a2{i}"), "t", false));
    }
    assert_eq!(b.lock().history.updates.len(), 50);
    assert!(a.lock().history.bytes <= 32 << 10);
    // A is deleted: the sweep drops its history.
    hubs.sweep(|id| id != "a");
    assert_eq!(a.lock().history.updates.len(), 0);
    assert_eq!(hubs.history_bytes(), b.lock().history.bytes);
}

#[test]
fn replays_are_budgeted_per_app_per_second() {
    let app_hub = Arc::new(AppHub::new("1", None));
    let hubs = Hubs::new(1 << 24);
    let app = hubs.app("1", &app_hub);
    for i in 0..200 {
        app.publish(update(&i.to_string(), "a", false));
    }
    let mut total = 0;
    for n in 0..10 {
        let (conn, _rx) = Connection::new(SocketId::new(n + 1, 1), MAX_REPLAY + 64);
        let subscribed =
            app.subscribe(&conn, vec![exact("a")], vec![], nobody(), &Resume::Earliest);
        if subscribed.replayed < 200 {
            assert!(subscribed.id.is_none(), "a cut replay ends the stream");
        }
        total += subscribed.replayed;
    }
    assert_eq!(total, REPLAYS_PER_SECOND);
}

#[test]
fn the_subscriptions_api_answer_is_capped_and_filtered() {
    let app_hub = Arc::new(AppHub::new("1", None));
    let hubs = Hubs::new(1 << 20);
    let app = hubs.app("1", &app_hub);
    let mut conns = Vec::new();
    for n in 0..(subscriptions::MAX_DOCUMENTS as u64 / 2 + 10) {
        let (conn, rx) = Connection::new(SocketId::new(n + 1, 1), 64);
        let subscriber = Subscriber {
            id: new_id(),
            selectors: vec![described("https://ex.com/a"), described("https://ex.com/b")],
        };
        app.subscribe(
            &conn,
            vec![exact("https://ex.com/a"), exact("https://ex.com/b")],
            vec![],
            subscriber,
            &Resume::Live,
        );
        conns.push((conn, rx));
    }
    let ns = subscriptions::namespace("/apps/1/.well-known/mercure");
    let (docs, _) = app.documents(&ns);
    assert_eq!(docs.len(), subscriptions::MAX_DOCUMENTS);
    let (docs, _) = app.documents(&format!("{ns}/exact/https%3A%2F%2Fex.com%2Fa"));
    assert_eq!(docs.len(), subscriptions::MAX_DOCUMENTS / 2 + 10);
}
