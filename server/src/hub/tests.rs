//! Unit tests of the engine, on detached connections (their outboxes read directly) and, for
//! the slow consumer, a real loopback socket that is never read.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::*;

/// A detached connection's frames, decoded.
fn drain(outbox: &mut DetachedOutbox) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Some(frame) = outbox.try_recv() {
        frames.push(serde_json::from_slice(&frame).expect("frames are JSON"));
    }
    frames
}

fn events(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f["event"].as_str().expect("an event name"))
        .collect()
}

fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name, 200).expect("a valid channel name")
}

fn member(user_id: &str) -> Option<PresenceMember> {
    Some(PresenceMember {
        user_id: user_id.to_owned(),
        user_info: Some(RawValue::from_string(json!({"name": user_id}).to_string()).unwrap()),
    })
}

/// A connection registered with `app`, with room for `capacity` frames.
fn connect(app: &AppHub, n: u64, capacity: usize) -> (ConnHandle, DetachedOutbox) {
    let (conn, outbox) = Connection::new(SocketId::new(n, 7), capacity);
    assert!(app.connect(&conn, None));
    (conn, outbox)
}

/// An app whose webhook events of every kind are reported to the returned receiver.
fn app_with_hooks() -> (Hub, Arc<AppHub>, EventReceiver) {
    let (tx, rx) = event_channel(1000);
    let hub = Hub::with_events(tx);
    hub.set_interest("1", u8::MAX);
    let app = hub.app("1");
    (hub, app, rx)
}

fn hook_kinds(rx: &mut EventReceiver) -> Vec<(WebhookKind, String)> {
    let mut kinds = Vec::new();
    while let Ok(event) = rx.try_recv() {
        kinds.push((event.event.kind(), event.event.channel_name().to_owned()));
    }
    kinds
}

#[test]
fn presence_counts_a_user_once_however_many_sockets_it_has() {
    let (_hub, app, mut hooks) = app_with_hooks();
    let room = channel("presence-room");
    let (watcher, mut watcher_out) = connect(&app, 1, 64);
    let (first, mut first_out) = connect(&app, 2, 64);
    let (second, mut second_out) = connect(&app, 3, 64);
    app.subscribe(&watcher, &room, member("w"), SubscribeOptions::default())
        .unwrap();
    drain(&mut watcher_out);
    hook_kinds(&mut hooks);

    // The user's first socket: announced once.
    let done = app
        .subscribe(&first, &room, member("alice"), SubscribeOptions::default())
        .unwrap();
    assert_eq!(done.member_events_delivered, 1);
    let seen = drain(&mut watcher_out);
    assert_eq!(events(&seen), ["pusher_internal:member_added"]);
    let added: Value = serde_json::from_str(seen[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        added,
        json!({"user_id": "alice", "user_info": {"name": "alice"}})
    );
    let own = drain(&mut first_out);
    assert_eq!(
        events(&own),
        ["pusher_internal:subscription_succeeded"],
        "the joiner hears of itself only through the member list"
    );
    let list: Value = serde_json::from_str(own[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(list["presence"]["count"], 2);

    // Its second socket: no event, and still two members.
    let done = app
        .subscribe(&second, &room, member("alice"), SubscribeOptions::default())
        .unwrap();
    assert_eq!(done.member_events_delivered, 0);
    assert!(drain(&mut watcher_out).is_empty());
    let list = drain(&mut second_out);
    let list: Value = serde_json::from_str(list[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(list["presence"]["count"], 2);
    assert_eq!(app.presence_users("presence-room"), ["alice", "w"]);
    assert_eq!(app.channel_info("presence-room").user_count, 2);
    assert_eq!(app.channel_info("presence-room").subscription_count, 3);

    // One socket leaves: the user is still there.
    assert_eq!(
        app.unsubscribe(first.socket_id(), "presence-room", Some("alice"), false),
        0
    );
    assert!(drain(&mut watcher_out).is_empty());
    assert_eq!(app.presence_users("presence-room"), ["alice", "w"]);

    // The last one leaves (by disconnecting): member_removed, once.
    let channels = [(Box::from("presence-room"), Some(Box::from("alice")))];
    assert_eq!(app.disconnect(&second, &channels, None, &[], false), 1);
    let seen = drain(&mut watcher_out);
    assert_eq!(events(&seen), ["pusher_internal:member_removed"]);
    assert_eq!(app.presence_users("presence-room"), ["w"]);

    let kinds = hook_kinds(&mut hooks);
    assert_eq!(
        kinds,
        [
            (WebhookKind::MemberAdded, "presence-room".to_owned()),
            (WebhookKind::MemberRemoved, "presence-room".to_owned()),
        ]
    );
}

#[test]
fn a_full_presence_channel_still_takes_a_known_user_s_other_socket() {
    let app = AppHub::default();
    let room = channel("presence-full");
    let options = SubscribeOptions {
        max_presence_members: Some(1),
        ..SubscribeOptions::default()
    };
    let (a1, _o1) = connect(&app, 1, 8);
    let (a2, _o2) = connect(&app, 2, 8);
    let (b, _o3) = connect(&app, 3, 8);
    app.subscribe(&a1, &room, member("a"), options).unwrap();
    app.subscribe(&a2, &room, member("a"), options).unwrap();
    let refused = app.subscribe(&b, &room, member("b"), options).unwrap_err();
    assert_eq!(refused, SubscribeRefusal::PresenceFull(1));
}

#[tokio::test(start_paused = true)]
async fn a_cache_channel_replays_its_last_event_until_the_ttl_passes() {
    let (_hub, app, mut hooks) = app_with_hooks();
    let news = channel("cache-news");
    let (publisher_side, mut early_out) = connect(&app, 1, 16);
    app.subscribe(&publisher_side, &news, None, SubscribeOptions::default())
        .unwrap();
    // Nothing cached yet: a miss, reported once.
    assert_eq!(
        events(&drain(&mut early_out)),
        [
            "pusher_internal:subscription_succeeded",
            "pusher:cache_miss"
        ]
    );
    assert_eq!(app.publish(&news, "update", "first", None), 1);
    assert_eq!(app.publish(&news, "update", "second", None), 1);
    drain(&mut early_out);

    // A later subscriber gets the last event right after its subscription_succeeded.
    let (late, mut late_out) = connect(&app, 2, 16);
    let done = app
        .subscribe(&late, &news, None, SubscribeOptions::default())
        .unwrap();
    assert!(!done.cache_miss);
    let replayed = done.cache_replayed.expect("a replay");
    let seen = drain(&mut late_out);
    assert_eq!(
        events(&seen),
        ["pusher_internal:subscription_succeeded", "update"]
    );
    assert_eq!(seen[1]["data"], "second");
    let info = app.channel_info("cache-news");
    assert_eq!(info.cache, Some(("second".to_owned(), CACHE_TTL.as_secs())));

    // The same event again for another subscribe: the same sequence number.
    app.unsubscribe(late.socket_id(), "cache-news", None, false);
    let done = app
        .subscribe(&late, &news, None, SubscribeOptions::default())
        .unwrap();
    assert_eq!(done.cache_replayed, Some(replayed));
    drain(&mut late_out);

    // Just before the TTL it is still there; at the TTL it is gone.
    tokio::time::advance(CACHE_TTL - Duration::from_secs(1)).await;
    assert_eq!(app.channel_info("cache-news").cache.unwrap().1, 1);
    assert_eq!(app.sweep_cache(), 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(app.channel_info("cache-news").cache, None);
    let (third, mut third_out) = connect(&app, 3, 16);
    let done = app
        .subscribe(&third, &news, None, SubscribeOptions::default())
        .unwrap();
    assert!(done.cache_miss);
    assert_eq!(done.cache_replayed, None);
    assert_eq!(
        events(&drain(&mut third_out)),
        [
            "pusher_internal:subscription_succeeded",
            "pusher:cache_miss"
        ]
    );
    assert_eq!(app.memory().cached_events, 0);
    assert_eq!(app.memory().cache_bytes, 0);

    let misses = hook_kinds(&mut hooks)
        .into_iter()
        .filter(|(kind, _)| *kind == WebhookKind::CacheMiss)
        .count();
    assert_eq!(
        misses, 2,
        "one miss before the first publish, one after expiry"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweep_drops_expired_events_and_gives_their_bytes_back() {
    let hub = Hub::new();
    let app = hub.app("1");
    app.publish(&channel("cache-a"), "e", "aaaa", None);
    tokio::time::advance(Duration::from_secs(60)).await;
    app.publish(&channel("cache-b"), "e", "bbbb", None);
    assert_eq!(app.memory().cached_events, 2);
    tokio::time::advance(CACHE_TTL - Duration::from_secs(30)).await;
    assert_eq!(hub.sweep_caches(), 1);
    let memory = app.memory();
    assert_eq!(memory.cached_events, 1);
    assert!(memory.cache_bytes > 0);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(hub.sweep_caches(), 1);
    assert_eq!(app.memory().cache_bytes, 0);
}

/// A subscriber whose socket takes nothing more and whose outbox then fills is asked to close
/// with 4100; the publish is not held up and the others still get the event.
#[tokio::test]
async fn a_subscriber_whose_outbox_fills_is_closed_with_4100() {
    let (outbox, peer) = crate::outbox::unread_socket(2).await;
    let app = AppHub::default();
    let slow = Arc::new(Connection::with_outbox(SocketId::new(1, 1), "key", outbox));
    assert!(app.connect(&slow, None));
    let (fast, mut fast_out) = connect(&app, 2, 10_000);
    let news = channel("news");
    app.subscribe(&slow, &news, None, SubscribeOptions::default())
        .unwrap();
    app.subscribe(&fast, &news, None, SubscribeOptions::default())
        .unwrap();
    drain(&mut fast_out);
    // What the connection's task does with its own answers.
    assert!(slow.outbox().flush());

    let data = "x".repeat(16 * 1024);
    let mut published = 0;
    while slow.outbox().close_request().is_none() {
        published += 1;
        assert!(published < 1000, "the slow subscriber was never closed");
        app.publish(&news, "big", &data, None);
    }
    let request = slow.outbox().close_request().unwrap();
    assert_eq!(request.code, CloseCode::OverCapacity);
    assert!(!request.drain, "a slow consumer's backlog is dropped");
    assert!(slow.outbox().backlog() <= 2);
    assert!(
        published > 2 && slow.outbox().bytes_sent() > 16 * 1024,
        "the socket took events until it was full"
    );
    // Once closing, it takes nothing more; the others get every event.
    assert_eq!(app.publish(&news, "big", &data, None), 1);
    assert_eq!(drain(&mut fast_out).len(), published + 1);
    drop(peer);
}

#[tokio::test(start_paused = true)]
async fn subscription_counts_above_100_subscribers_go_out_at_most_every_5_seconds() {
    let (_hub, app, mut hooks) = app_with_hooks();
    let busy = channel("busy");
    let options = SubscribeOptions {
        subscription_count: true,
        ..SubscribeOptions::default()
    };
    let mut outboxes = Vec::new();
    let mut conns = Vec::new();
    for n in 0..counts::SUBSCRIPTION_COUNT_THROTTLE_ABOVE as u64 {
        let (conn, outbox) = connect(&app, n, 1000);
        app.subscribe(&conn, &busy, None, options).unwrap();
        conns.push(conn);
        outboxes.push(outbox);
    }
    // Up to 100 subscribers, every change is sent at once.
    let counts_seen = |outbox: &mut DetachedOutbox| -> Vec<u64> {
        drain(outbox)
            .iter()
            .filter(|f| f["event"] == "pusher_internal:subscription_count")
            .map(|f| {
                let data: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
                data["subscription_count"].as_u64().unwrap()
            })
            .collect()
    };
    let seen = counts_seen(&mut outboxes[0]);
    assert_eq!(seen.len(), 100);
    assert_eq!(seen.last(), Some(&100));
    hook_kinds(&mut hooks);

    // The 101st and 102nd subscribers: held back, the last count sent just now.
    for n in 100..102 {
        let (conn, outbox) = connect(&app, n, 1000);
        app.subscribe(&conn, &busy, None, options).unwrap();
        conns.push(conn);
        outboxes.push(outbox);
    }
    assert!(counts_seen(&mut outboxes[0]).is_empty());
    assert!(hook_kinds(&mut hooks).is_empty());
    tokio::time::advance(counts::SUBSCRIPTION_COUNT_INTERVAL - Duration::from_millis(1)).await;
    app.flush_subscription_counts();
    assert!(counts_seen(&mut outboxes[0]).is_empty());

    // Five seconds on, the flush sends the current count, once, to clients and webhooks.
    tokio::time::advance(Duration::from_millis(1)).await;
    app.flush_subscription_counts();
    assert_eq!(counts_seen(&mut outboxes[0]), [102]);
    assert_eq!(counts_seen(&mut outboxes[101]), [102]);
    assert_eq!(
        hook_kinds(&mut hooks),
        [(WebhookKind::SubscriptionCount, "busy".to_owned())]
    );
    app.flush_subscription_counts();
    assert!(counts_seen(&mut outboxes[0]).is_empty());

    // A leave is throttled the same way.
    app.unsubscribe(conns[101].socket_id(), "busy", None, true);
    assert!(counts_seen(&mut outboxes[0]).is_empty());
    tokio::time::advance(counts::SUBSCRIPTION_COUNT_INTERVAL).await;
    app.flush_subscription_counts();
    assert_eq!(counts_seen(&mut outboxes[0]), [101]);
}

#[test]
fn presence_and_internal_channels_get_no_subscription_count() {
    assert!(counts::counts_subscriptions("private-a"));
    assert!(counts::counts_subscriptions("cache-a"));
    assert!(!counts::counts_subscriptions("presence-a"));
    assert!(!counts::counts_subscriptions("#server-to-user-1"));
}

#[test]
fn closing_requests_reach_the_right_connections() {
    let app = AppHub::default();
    let old_key = Arc::new(Connection::with_outbox(
        SocketId::new(1, 1),
        "old",
        crate::outbox::Outbox::detached(8),
    ));
    assert!(app.connect(&old_key, None));
    let (other, _o2) = connect(&app, 2, 8);
    assert_eq!(app.close_key("old"), 1);
    let request = old_key.outbox().close_request().unwrap();
    assert_eq!(request.code, CloseCode::Unauthorized);
    assert!(request.farewell.is_some());
    assert!(other.outbox().close_request().is_none());

    app.sign_in(&other, "u1", &[]);
    assert_eq!(app.terminate_user("u1"), 1);
    assert_eq!(
        other.outbox().close_request().unwrap().code,
        CloseCode::Unauthorized
    );
    assert_eq!(app.terminate_user("nobody"), 0);
}

#[test]
fn the_app_s_connection_quota_and_node_share_are_checked_under_its_lock() {
    let app = AppHub::default();
    let (a, _oa) = Connection::new(SocketId::new(1, 1), 4);
    let (b, _ob) = Connection::new(SocketId::new(2, 1), 4);
    let (c, _oc) = Connection::new(SocketId::new(3, 1), 4);
    assert_eq!(app.connect_within(&a, Some(2), Some(1)), Ok(()));
    assert_eq!(
        app.connect_within(&b, Some(2), Some(1)),
        Err(ConnectRefusal::NodeShare)
    );
    assert_eq!(app.connect_within(&b, Some(2), None), Ok(()));
    assert_eq!(
        app.connect_within(&c, Some(2), None),
        Err(ConnectRefusal::Quota)
    );
    assert_eq!(app.connection_count(), 2);
}

#[test]
fn a_publish_reaches_every_subscriber_but_the_excluded_one_in_order() {
    let app = AppHub::default();
    let news = channel("news");
    let (a, mut oa) = connect(&app, 1, 16);
    let (b, mut ob) = connect(&app, 2, 16);
    app.subscribe(&a, &news, None, SubscribeOptions::default())
        .unwrap();
    app.subscribe(&b, &news, None, SubscribeOptions::default())
        .unwrap();
    drain(&mut oa);
    drain(&mut ob);
    assert_eq!(app.publish(&news, "one", "1", Some(a.socket_id())), 1);
    assert_eq!(app.publish(&news, "two", "2", None), 2);
    assert_eq!(
        app.relay(
            "news",
            Bytes::from_static(b"{\"event\":\"client-x\"}"),
            b.socket_id()
        ),
        1
    );
    assert_eq!(events(&drain(&mut oa)), ["two", "client-x"]);
    assert_eq!(events(&drain(&mut ob)), ["one", "two"]);
}

#[tokio::test]
async fn a_frame_from_another_node_is_delivered_as_is_and_a_cache_channel_keeps_it() {
    let (tx, mut occupancy) = crate::hub::occupancy_channel();
    let hub = Hub::new().with_node_tag(42).with_occupancy(tx);
    assert_eq!(hub.next_socket_id().to_string(), "1.42");
    let app = hub.app("1");
    assert!(!app.is_occupied());
    let (a, mut a_out) = connect(&app, 1, 16);
    let (b, mut b_out) = connect(&app, 2, 16);
    let cache = channel("cache-prices");
    app.subscribe(&a, &cache, None, SubscribeOptions::default())
        .unwrap();
    app.subscribe(&b, &cache, None, SubscribeOptions::default())
        .unwrap();
    // The first occupied channel is reported once; the second subscriber changes nothing.
    assert_eq!(occupancy.try_recv().as_deref(), Some("1"));
    assert!(occupancy.try_recv().is_none());
    assert!(app.is_occupied());
    drain(&mut a_out);
    drain(&mut b_out);

    let frame = server::channel_event("tick", "cache-prices", "{\"p\":1}");
    let delivered = app.deliver_serialized("cache-prices", &frame, Some(b.socket_id()), true);
    assert_eq!(delivered, 1);
    let got = a_out.try_recv().expect("a frame");
    assert_eq!(got, frame, "the same bytes");
    assert!(
        b_out.try_recv().is_none(),
        "the excluded socket gets nothing"
    );
    assert_eq!(
        app.channel_info("cache-prices").cache.map(|c| c.0),
        Some("{\"p\":1}".to_owned()),
        "the cache channel keeps the event"
    );
    // A client event (not kept) leaves the cache alone.
    let client =
        Bytes::from_static(b"{\"event\":\"client-x\",\"channel\":\"cache-prices\",\"data\":{}}");
    assert_eq!(
        app.deliver_serialized("cache-prices", &client, None, false),
        2
    );
    assert_eq!(
        app.channel_info("cache-prices").cache.map(|c| c.0),
        Some("{\"p\":1}".to_owned())
    );

    // The last channel vacated is reported once more.
    app.unsubscribe(a.socket_id(), "cache-prices", None, false);
    assert!(occupancy.try_recv().is_none());
    app.unsubscribe(b.socket_id(), "cache-prices", None, false);
    assert_eq!(occupancy.try_recv().as_deref(), Some("1"));
    assert!(!app.is_occupied());
}

#[tokio::test]
async fn a_signed_in_socket_keeps_its_app_occupied_for_the_cluster_without_any_channel() {
    let (tx, mut occupancy) = crate::hub::occupancy_channel();
    let hub = Hub::new().with_node_tag(42).with_occupancy(tx);
    let app = hub.app("1");
    let (a, _a_out) = connect(&app, 1, 16);
    let (b, _b_out) = connect(&app, 2, 16);
    assert!(!app.is_occupied(), "a connection alone does not count");
    app.sign_in(&a, "u1", &[]);
    assert_eq!(occupancy.try_recv().as_deref(), Some("1"));
    assert!(app.is_occupied());
    // A second user, or a channel, while signed in changes nothing.
    app.sign_in(&b, "u2", &[]);
    app.subscribe(&b, &channel("news"), None, SubscribeOptions::default())
        .unwrap();
    app.unsubscribe(b.socket_id(), "news", None, false);
    assert!(occupancy.try_recv().is_none());
    app.disconnect(&b, &[], Some("u2"), &[], false);
    assert!(occupancy.try_recv().is_none());
    assert!(app.is_occupied());
    // The last signed-in socket gone: reported once more.
    app.disconnect(&a, &[], Some("u1"), &[], false);
    assert_eq!(occupancy.try_recv().as_deref(), Some("1"));
    assert!(!app.is_occupied());
}

#[tokio::test(start_paused = true)]
async fn an_event_from_the_cluster_keeps_its_remaining_ttl_and_never_replaces_a_live_local_one() {
    let app = AppHub::new("1", None);
    let older = server::channel_event("e", "cache-x", "older");
    let newer = server::channel_event("e", "cache-x", "newer");
    app.keep_from_cluster("cache-x", &older, Duration::from_secs(60));
    assert!(app.has_cached("cache-x"));
    // This node's own (live) copy is never replaced by the cluster's.
    app.keep_from_cluster("cache-x", &newer, Duration::from_secs(600));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        !app.has_cached("cache-x"),
        "expired with the cluster's copy"
    );
    // Never longer than the cache TTL, whatever Redis says.
    app.keep_from_cluster("cache-x", &newer, CACHE_TTL * 2);
    tokio::time::advance(CACHE_TTL + Duration::from_secs(1)).await;
    assert!(!app.has_cached("cache-x"));
    // Not a channel event: nothing kept.
    app.keep_from_cluster("cache-y", &Bytes::from_static(b"garbage"), CACHE_TTL);
    assert!(!app.has_cached("cache-y"));
    // Unconfirmed when the node stops hearing the app: the cluster's copy then replaces it.
    app.keep_from_cluster("cache-z", &older, CACHE_TTL);
    assert!(app.has_cached("cache-z"));
    assert!(app.unconfirm_cache() >= 1);
    assert!(!app.has_cached("cache-z"));
    app.keep_from_cluster("cache-z", &newer, CACHE_TTL);
    assert!(app.has_cached("cache-z"));
    let (conn, mut outbox) = connect(&app, 1, 16);
    app.subscribe(
        &conn,
        &channel("cache-z"),
        None,
        SubscribeOptions::default(),
    )
    .expect("subscribes");
    let frames = drain(&mut outbox);
    assert_eq!(
        events(&frames),
        ["pusher_internal:subscription_succeeded", "e"]
    );
    assert_eq!(frames[1]["data"], "newer");
}

#[test]
fn a_hub_in_cluster_mode_decides_no_transition_and_lists_the_clusters_members() {
    let (tx, mut hooks) = event_channel(1000);
    let hub = Hub::with_events(tx).with_cluster_state();
    hub.set_interest("1", u8::MAX);
    let app = hub.app("1");
    let room = channel("presence-room");
    let (first, mut first_out) = connect(&app, 1, 64);
    let (second, mut second_out) = connect(&app, 2, 64);
    let options = SubscribeOptions {
        max_presence_members: Some(1),
        subscription_count: true,
        ..SubscribeOptions::default()
    };
    let cluster_members: Vec<ListedMember> = vec![
        ("alice".into(), None),
        (
            "remote".into(),
            Some(RawValue::from_string("{\"x\":1}".into()).unwrap()),
        ),
    ];
    app.subscribe_with_members(
        &first,
        &room,
        member("alice"),
        options,
        Some(&cluster_members),
    )
    .unwrap();
    let frames = drain(&mut first_out);
    assert_eq!(events(&frames), ["pusher_internal:subscription_succeeded"]);
    let data: Value = serde_json::from_str(frames[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        data["presence"]["count"], 2,
        "the cluster's members: {data}"
    );
    assert_eq!(data["presence"]["hash"]["remote"], json!({"x": 1}));
    // A second user: the cluster checked the member limit, so the node's own does not refuse.
    let done = app
        .subscribe_with_members(
            &second,
            &room,
            member("bob"),
            options,
            Some(&cluster_members),
        )
        .unwrap();
    assert_eq!(
        done.member_events_delivered, 0,
        "the cluster announces members"
    );
    assert!(
        drain(&mut first_out).is_empty(),
        "no member_added from the hub"
    );
    drain(&mut second_out);
    // Leaving: no member_removed, no count, no vacate from the hub either.
    app.unsubscribe(second.socket_id(), room.as_str(), Some("bob"), true);
    app.unsubscribe(first.socket_id(), room.as_str(), Some("alice"), true);
    assert!(drain(&mut first_out).is_empty());
    assert!(drain(&mut second_out).is_empty());
    assert_eq!(
        hook_kinds(&mut hooks),
        [],
        "no webhook transition from the hub"
    );
    // It still keeps this node's state (what the cluster re-registers).
    let (third, _third_out) = connect(&app, 3, 64);
    app.subscribe_with_members(&third, &channel("news"), None, options, None)
        .unwrap();
    assert_eq!(app.local_state().0, [("news".to_owned(), 1)]);
    assert_eq!(hook_kinds(&mut hooks), []);
    // Redis did not answer (no member list): the node checks the limit against its own.
    let room2 = channel("presence-two");
    app.subscribe_with_members(&first, &room2, member("a"), options, None)
        .unwrap();
    let refused = app.subscribe_with_members(&second, &room2, member("b"), options, None);
    assert_eq!(refused.err(), Some(SubscribeRefusal::PresenceFull(1)));
}
