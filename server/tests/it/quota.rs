//! Tenancy and quotas: the atomic connection quota, the daily message quota and its counting
//! rules, counters surviving restarts, the UTC midnight rollover (injected clock), and the tenant
//! scope of the store's admin API.

use std::time::Duration;

use serde_json::{json, Value};

use herald::clock::Clock;
use herald::tenants::{Actor, AppPatch, LimitsPatch, NewApp, StoreError, UserRole};

use crate::helpers::*;

const DAY_MS: i64 = 86_400_000;

fn messages_today(app: &TestApp) -> u64 {
    app.node.usage.app(APP_ID).messages_today()
}

async fn set_limits(app: &TestApp, limits: LimitsPatch) {
    app.update_app(AppPatch {
        limits,
        ..AppPatch::default()
    })
    .await;
}

async fn trigger(app: &TestApp, channel: &str, data: &str) -> (u16, String) {
    app.post(
        &format!("/apps/{APP_ID}/events"),
        json!({"name":"quota-event","channel":channel,"data":data}),
    )
    .await
}

/// The store of a stopped server, opened again.
async fn reopen_store(app: &TestApp) -> herald::tenants::Store {
    herald::tenants::Store::open(
        &herald::config::sqlite_url(app.data_dir.path()),
        Clock::system(),
    )
    .await
    .expect("the store opens again")
}

/// The stored total for today (what a restart continues from).
async fn stored_today(app: &TestApp) -> u64 {
    let clock = app.node.usage.clock().clone();
    app.node
        .store
        .usage_report(APP_ID, clock.day(), clock.minute())
        .await
        .expect("usage report")
        .today
        .messages
}

#[tokio::test]
async fn n_parallel_connects_against_a_quota_of_n_minus_one_admit_exactly_n_minus_one() {
    const N: usize = 24;
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_connections: Some(N as u64 - 1),
            ..LimitsPatch::default()
        },
    )
    .await;
    let path = format!("/app/{KEY}?protocol=7&client=js&version=8.6.0");
    let attempts = (0..N).map(|_| {
        let url = format!("ws://{}{}", app.address, path);
        tokio::spawn(async move {
            let (socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("upgrade");
            let mut client = Client {
                socket,
                socket_id: String::new(),
            };
            let first = client.next_json().await;
            (first, client)
        })
    });
    let results = futures_util::future::join_all(attempts).await;
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for result in results {
        let (first, client) = result.expect("task");
        match first["event"].as_str() {
            Some("pusher:connection_established") => admitted.push(client),
            Some("pusher:error") => refused.push((first, client)),
            other => panic!("unexpected first frame {other:?}: {first}"),
        }
    }
    assert_eq!(admitted.len(), N - 1, "exactly N-1 admitted");
    assert_eq!(refused.len(), 1, "exactly one refused");
    let (frame, mut client) = refused.pop().unwrap();
    assert_eq!(frame["data"]["code"], 4004, "{frame}");
    assert_eq!(client.expect_close().await, Some(4004));

    // A freed slot can be taken again, and only one.
    admitted.pop().unwrap().close().await;
    let usage = app.node.usage.app(APP_ID);
    wait_until("the closed socket is released", || {
        usage.connections() == N as u64 - 2
    })
    .await;
    let _again = app.connect().await;
    let mut over = app.connect_raw(&path).await;
    assert_eq!(over.expect_next("pusher:error").await["data"]["code"], 4004);
    assert_eq!(over.expect_close().await, Some(4004));
}

#[tokio::test]
async fn the_daily_quota_is_consumed_exactly_by_the_counting_rules_then_publishes_get_403() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_daily_messages: Some(10),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut client = app.connect().await;
        client.subscribe("quota").await;
        subscribers.push(client);
    }
    let mut talker = app.connect().await;
    talker.subscribe("private-quota").await;
    assert_eq!(messages_today(&app), 0, "subscribing counts nothing");

    // Each trigger costs 1 (the channel) + 3 (the copies delivered): 4, 8, then 12, because a
    // publish is accepted while the count before it (8) is below the quota (10).
    for (i, expected) in [4u64, 8, 12].into_iter().enumerate() {
        let (status, body) = trigger(&app, "quota", &format!("n{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(messages_today(&app), expected);
        for subscriber in &mut subscribers {
            let frame = subscriber.expect_event("quota-event").await;
            assert_eq!(frame["data"], format!("n{i}"));
        }
    }
    let (status, body) = trigger(&app, "quota", "refused").await;
    assert_eq!((status, body.trim()), (403, "Over daily message quota"));
    let (status, body) = app
        .post(
            &format!("/apps/{APP_ID}/batch_events"),
            json!({"batch":[{"name":"quota-event","channel":"quota","data":"refused too"}]}),
        )
        .await;
    assert_eq!((status, body.trim()), (403, "Over daily message quota"));
    assert_eq!(messages_today(&app), 12, "refused publishes count nothing");

    // A client event is refused with pusher:error, and the socket stays open.
    talker
        .send_json(json!({"event":"client-typing","channel":"private-quota","data":{}}))
        .await;
    let (code, message) = talker.expect_error().await;
    assert_eq!(code, Value::Null);
    assert!(message.contains("Over daily message quota"), "{message}");
    talker
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    talker.expect_next("pusher:pong").await;

    // Nothing refused was delivered: the next thing each subscriber sees is a marker published
    // after raising the quota.
    set_limits(
        &app,
        LimitsPatch {
            max_daily_messages: Some(0),
            ..LimitsPatch::default()
        },
    )
    .await;
    let (status, _) = trigger(&app, "quota", "marker").await;
    assert_eq!(status, 200);
    for subscriber in &mut subscribers {
        let frame = subscriber.expect_next("quota-event").await;
        assert_eq!(frame["data"], "marker");
    }
}

#[tokio::test]
async fn every_counting_rule_of_the_interface() {
    let app = spawn_app().await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    a.subscribe("count").await;
    b.subscribe("count").await;
    a.subscribe("private-count").await;
    b.subscribe("private-count").await;
    let mut c = app.connect().await;
    c.subscribe("private-count").await;
    assert_eq!(messages_today(&app), 0, "subscriptions are free");

    // REST reads and pings are free.
    let (status, _) = app.get(&format!("/apps/{APP_ID}/channels"), &[]).await;
    assert_eq!(status, 200);
    a.send_json(json!({"event":"pusher:ping","data":{}})).await;
    a.expect_next("pusher:pong").await;
    assert_eq!(messages_today(&app), 0);

    // A channel with nobody on it: 1.
    trigger(&app, "empty", "x").await;
    assert_eq!(messages_today(&app), 1);
    // Two channels, one with two subscribers: (1 + 2) + (1 + 0).
    app.post(
        &format!("/apps/{APP_ID}/events"),
        json!({"name":"e","channels":["count","empty"],"data":"x"}),
    )
    .await;
    assert_eq!(messages_today(&app), 5);
    a.expect_event("e").await;
    b.expect_event("e").await;
    // An excluded socket receives nothing and is not counted: 1 + 1.
    app.post(
        &format!("/apps/{APP_ID}/events"),
        json!({"name":"e","channel":"count","data":"y","socket_id":a.socket_id}),
    )
    .await;
    assert_eq!(messages_today(&app), 7);
    b.expect_event("e").await;
    // A batch counts each event: 2 x (1 + 2).
    app.post(
        &format!("/apps/{APP_ID}/batch_events"),
        json!({"batch":[{"name":"e","channel":"count","data":"1"},{"name":"e","channel":"count","data":"2"}]}),
    )
    .await;
    assert_eq!(messages_today(&app), 13);

    // A client event: 1 + the 2 others it reaches.
    c.send_json(json!({"event":"client-x","channel":"private-count","data":{}}))
        .await;
    a.expect_event("client-x").await;
    b.expect_event("client-x").await;
    wait_until("the client event is counted", || messages_today(&app) == 16).await;

    // Presence: joining alone is free; a second member's member_added reaches the first (1);
    // its leaving sends member_removed to the first (1).
    let mut p1 = app.connect().await;
    p1.subscribe_presence("presence-count", "u1", json!({}))
        .await;
    let mut p2 = app.connect().await;
    p2.subscribe_presence("presence-count", "u2", json!({}))
        .await;
    p1.expect_event("pusher_internal:member_added").await;
    wait_until("member_added is counted", || messages_today(&app) == 17).await;
    p2.send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-count"}}))
        .await;
    p1.expect_event("pusher_internal:member_removed").await;
    wait_until("member_removed is counted", || messages_today(&app) == 18).await;

    // A cache channel: the publish (1), then the replay to a new subscriber (1); a miss is free.
    let mut d = app.connect().await;
    d.send_json(json!({"event":"pusher:subscribe","data":{"channel":"cache-miss"}}))
        .await;
    d.expect_event("pusher:cache_miss").await;
    trigger(&app, "cache-count", "cached").await;
    assert_eq!(messages_today(&app), 19);
    d.send_json(json!({"event":"pusher:subscribe","data":{"channel":"cache-count"}}))
        .await;
    let replay = d.expect_event("quota-event").await;
    assert_eq!(replay["data"], "cached");
    wait_until("the replay is counted", || messages_today(&app) == 20).await;
    pause(Duration::from_millis(200)).await;
    assert_eq!(messages_today(&app), 20, "nothing else counted");
}

#[tokio::test]
async fn counts_reach_the_store_within_the_flush_interval_and_survive_a_crash() {
    let mut app = spawn_app_with(|s| s.usage_flush = Duration::from_millis(300)).await;
    for _ in 0..3 {
        trigger(&app, "flushed", "x").await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored_today(&app).await != 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flush never came"
        );
        pause(Duration::from_millis(50)).await;
    }
    // A crash: the server task is dropped without its shutdown path.
    app.server.take().unwrap().abort();
    let dir = std::mem::replace(&mut app.data_dir, tempfile::tempdir().unwrap());
    let settings = test_settings(dir.path().to_path_buf());
    let again = spawn_in(dir, settings).await;
    assert_eq!(
        messages_today(&again),
        3,
        "the restart continues from the stored count"
    );
}

#[tokio::test]
async fn counts_are_flushed_at_shutdown_and_a_restart_continues_and_enforces_them() {
    // A flush interval far beyond the test: only the shutdown flush can write the counts.
    let mut app = spawn_app_with(|s| s.usage_flush = Duration::from_secs(3600)).await;
    set_limits(
        &app,
        LimitsPatch {
            max_daily_messages: Some(5),
            ..LimitsPatch::default()
        },
    )
    .await;
    for _ in 0..4 {
        assert_eq!(trigger(&app, "restart", "x").await.0, 200);
    }
    assert_eq!(stored_today(&app).await, 0, "nothing flushed yet");
    app.stop().await;
    let dir = std::mem::replace(&mut app.data_dir, tempfile::tempdir().unwrap());
    let settings = test_settings(dir.path().to_path_buf());
    let again = spawn_in(dir, settings).await;
    assert_eq!(messages_today(&again), 4);
    assert_eq!(trigger(&again, "restart", "x").await.0, 200, "4 < 5");
    let (status, body) = trigger(&again, "restart", "x").await;
    assert_eq!((status, body.trim()), (403, "Over daily message quota"));
}

#[tokio::test]
async fn the_daily_quota_resets_at_midnight_utc() {
    let day = 20_000; // 2024-10-04
    let clock = Clock::manual(day * DAY_MS + DAY_MS - 2_000); // 23:59:58
    let mut app = spawn_app_with({
        let clock = clock.clone();
        move |s| s.clock = clock
    })
    .await;
    set_limits(
        &app,
        LimitsPatch {
            max_daily_messages: Some(2),
            ..LimitsPatch::default()
        },
    )
    .await;
    assert_eq!(trigger(&app, "midnight", "1").await.0, 200);
    assert_eq!(trigger(&app, "midnight", "2").await.0, 200);
    assert_eq!(trigger(&app, "midnight", "3").await.0, 403);
    clock.set_millis(day * DAY_MS + DAY_MS - 1); // 23:59:59.999: still the same day
    assert_eq!(trigger(&app, "midnight", "4").await.0, 403);
    clock.set_millis((day + 1) * DAY_MS); // 00:00:00.000 UTC
    assert_eq!(messages_today(&app), 0);
    assert_eq!(trigger(&app, "midnight", "5").await.0, 200);
    assert_eq!(messages_today(&app), 1);
    app.stop().await;
    let report = reopen_store(&app)
        .await
        .usage_report(APP_ID, day + 1, (day + 1) * 1440)
        .await
        .unwrap();
    let by_date: Vec<(String, u64)> = report
        .days
        .iter()
        .filter(|d| d.messages > 0)
        .map(|d| (d.date.clone(), d.messages))
        .collect();
    assert_eq!(
        by_date,
        vec![("2024-10-04".to_owned(), 2), ("2024-10-05".to_owned(), 1)]
    );
    assert_eq!(report.days.len(), 30);
    assert_eq!(report.minutes.len(), 24 * 60);
    assert_eq!(report.minutes.iter().map(|m| m.messages).sum::<u64>(), 3);
}

#[tokio::test]
async fn usage_history_records_peak_connections_per_day_and_minute() {
    let mut app = spawn_app().await;
    let a = app.connect().await;
    let b = app.connect().await;
    let c = app.connect().await;
    c.close().await;
    trigger(&app, "peak", "x").await;
    let usage = app.node.usage.app(APP_ID);
    wait_until("the close is seen", || usage.connections() == 2).await;
    drop((a, b));
    app.stop().await;
    let clock = Clock::system();
    let report = reopen_store(&app)
        .await
        .usage_report(APP_ID, clock.day(), clock.minute())
        .await
        .unwrap();
    assert_eq!(report.today.peak_connections, 3);
    assert_eq!(report.today.messages, 1);
    let minute_peak = report.minutes.iter().map(|m| m.peak_connections).max();
    assert_eq!(minute_peak, Some(3));
}

#[tokio::test]
async fn a_tenant_admin_cannot_read_or_change_another_tenants_app_through_the_store() {
    let app = spawn_app().await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let globex = store.create_tenant("Globex").await.unwrap();
    let ours = store
        .create_app(NewApp {
            name: "acme app".into(),
            tenant_id: Some(acme.id.clone()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    let theirs = store
        .create_app(NewApp {
            name: "globex app".into(),
            tenant_id: Some(globex.id.clone()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    let admin = store
        .create_user(
            "admin@acme.test",
            "correct horse battery",
            UserRole::Admin,
            Some(&acme.id),
        )
        .await
        .unwrap();
    let scope = store.scoped(Actor::of(&admin));
    assert_eq!(scope.actor(), &Actor::tenant_admin(acme.id.clone()));

    let not_found = |result: Result<_, StoreError>| matches!(result, Err(StoreError::AppNotFound(id)) if id == theirs.id);
    assert!(not_found(scope.get_app(&theirs.id).await.map(|_| ())));
    assert!(not_found(
        scope
            .update_app(
                &theirs.id,
                AppPatch {
                    name: Some("hijacked".into()),
                    enabled: Some(false),
                    ..AppPatch::default()
                }
            )
            .await
            .map(|_| ())
    ));
    assert!(not_found(scope.rotate_key(&theirs.id, 0).await.map(|_| ())));
    assert!(not_found(
        scope.revoke_key(&theirs.id, &theirs.key).await.map(|_| ())
    ));
    assert!(not_found(scope.usage(&theirs.id, 0, 0).await.map(|_| ())));
    assert!(not_found(scope.delete_app(&theirs.id).await));
    let untouched = store.get_app(&theirs.id).await.unwrap();
    assert_eq!(untouched, theirs, "the other tenant's app is unchanged");

    let visible: Vec<String> = scope
        .list_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(visible, vec![ours.id.clone()]);
    let tenants: Vec<String> = scope
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(tenants, vec![acme.id.clone()]);
    assert_eq!(scope.get_app(&ours.id).await.unwrap().id, ours.id);
    let renamed = scope
        .update_app(
            &ours.id,
            AppPatch {
                name: Some("renamed".into()),
                ..AppPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "renamed");

    // Creating lands in the admin's own tenant; naming another tenant is refused.
    let created = scope
        .create_app(NewApp {
            name: "new".into(),
            ..NewApp::default()
        })
        .await
        .unwrap();
    assert_eq!(created.tenant_id, acme.id);
    assert!(scope
        .create_app(NewApp {
            name: "elsewhere".into(),
            tenant_id: Some(globex.id.clone()),
            ..NewApp::default()
        })
        .await
        .is_err());
    assert_eq!(store.list_apps(Some(&globex.id)).await.unwrap().len(), 1);

    // The operator sees everything.
    let operator = store.scoped(Actor::Operator);
    assert!(operator.get_app(&theirs.id).await.is_ok());
    assert!(operator.list_apps().await.unwrap().len() >= 4);
}

#[tokio::test]
async fn users_have_argon2id_hashes_unique_emails_and_changeable_passwords() {
    let app = spawn_app().await;
    let store = &app.node.store;
    let tenant = store.create_tenant("Initech").await.unwrap();
    let user = store
        .create_user(
            " Bob@Initech.TEST ",
            "first password",
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();
    assert_eq!(user.email, "bob@initech.test");
    assert_eq!(user.tenant_id.as_deref(), Some(tenant.id.as_str()));
    assert!(matches!(
        store
            .create_user(
                "bob@initech.test",
                "another password",
                UserRole::Operator,
                None
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_user("x@y.z", "short", UserRole::Operator, None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .create_user("x@y.z", "long enough", UserRole::Admin, None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .create_user("x@y.z", "long enough", UserRole::Admin, Some("999999999"))
            .await,
        Err(StoreError::TenantNotFound(_))
    ));
    let signed_in = store
        .authenticate("BOB@initech.test", "first password")
        .await
        .unwrap();
    assert_eq!(
        signed_in.as_ref().map(|u| u.id.as_str()),
        Some(user.id.as_str())
    );
    store
        .set_password("bob@initech.test", "second password")
        .await
        .unwrap();
    assert!(store
        .authenticate("bob@initech.test", "first password")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .authenticate("bob@initech.test", "second password")
        .await
        .unwrap()
        .is_some());
    assert!(store
        .authenticate("nobody@initech.test", "second password")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store
            .set_password("nobody@initech.test", "whatever123")
            .await,
        Err(StoreError::UserNotFound(_))
    ));
    // The first start created the operator (random password: only in the first-run file).
    let users = store.list_users().await.unwrap();
    assert!(users
        .iter()
        .any(|u| u.role == UserRole::Operator && u.email == "admin@localhost"));
    let first_run =
        std::fs::read_to_string(app.data_dir.path().join("first-run.txt")).expect("first-run");
    let password = first_run
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .expect("password line")
        .trim()
        .to_owned();
    assert!(store
        .authenticate("admin@localhost", &password)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn plans_preset_the_limits_and_flags_override_them() {
    let app = spawn_app().await;
    let store = &app.node.store;
    let sandbox = store
        .create_app(NewApp {
            name: "sandbox".into(),
            plan: Some("Sandbox".into()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    assert_eq!(sandbox.plan, "sandbox");
    assert_eq!(sandbox.limits.max_connections, 100);
    assert_eq!(sandbox.limits.max_daily_messages, 200_000);
    assert_eq!(sandbox.limits.max_presence_members, 100);
    let custom = store
        .create_app(NewApp {
            name: "custom".into(),
            plan: Some("pro".into()),
            limits: LimitsPatch {
                max_connections: Some(7),
                ..LimitsPatch::default()
            },
            ..NewApp::default()
        })
        .await
        .unwrap();
    assert_eq!(custom.limits.max_connections, 7);
    assert_eq!(custom.limits.max_daily_messages, 4_000_000);
    assert!(matches!(
        store
            .create_app(NewApp {
                name: "nope".into(),
                plan: Some("platinum".into()),
                ..NewApp::default()
            })
            .await,
        Err(StoreError::Invalid(message)) if message.contains("sandbox")
    ));
}

#[tokio::test]
async fn parallel_publishes_cannot_overshoot_the_quota() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_daily_messages: Some(5),
            ..LimitsPatch::default()
        },
    )
    .await;
    // 20 triggers at once to a channel nobody is on: each costs exactly 1.
    let attempts = (0..20).map(|i| {
        let app = &app;
        async move { trigger(app, "race", &format!("{i}")).await.0 }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 15);
    assert_eq!(messages_today(&app), 5);
}

#[tokio::test]
async fn what_is_not_counted_stays_uncounted_and_a_closing_member_is_counted() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        subscription_count: Some(true),
        ..AppPatch::default()
    })
    .await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    // subscription_count events (to both) are free.
    a.subscribe("counts").await;
    b.subscribe("counts").await;
    a.expect_event("pusher_internal:subscription_count").await;
    // Signin and watchlist events are free.
    a.sign_in(r#"{"id":"ann","watchlist":["bob"]}"#).await;
    a.expect_event("pusher_internal:watchlist_events").await;
    b.sign_in(r#"{"id":"bob"}"#).await;
    let online = a.expect_event("pusher_internal:watchlist_events").await;
    assert!(online.to_string().contains("online"), "{online}");
    // Errors are free.
    a.send_text("not json").await;
    a.expect_error().await;
    assert_eq!(messages_today(&app), 0);

    // A presence member whose socket closes: member_removed to the one left is counted.
    let mut p1 = app.connect().await;
    p1.subscribe_presence("presence-close", "u1", json!({}))
        .await;
    let p2 = {
        let mut p2 = app.connect().await;
        p2.subscribe_presence("presence-close", "u2", json!({}))
            .await;
        p2
    };
    p1.expect_event("pusher_internal:member_added").await;
    wait_until("member_added counted", || messages_today(&app) == 1).await;
    p2.close().await;
    p1.expect_event("pusher_internal:member_removed").await;
    wait_until("member_removed counted", || messages_today(&app) == 2).await;
}

#[tokio::test]
async fn a_tenant_admin_may_tighten_limits_but_not_lift_quotas() {
    let app = spawn_app().await;
    let store = &app.node.store;
    let tenant = store.create_tenant("Tight").await.unwrap();
    let admin = store
        .create_user(
            "t@tight.test",
            "tight password",
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();
    let scope = store.scoped(Actor::of(&admin));
    let created = scope
        .create_app(NewApp {
            name: "mine".into(),
            ..NewApp::default()
        })
        .await
        .unwrap();
    assert_eq!(created.plan, "sandbox", "a tenant admin's default plan");
    assert_eq!(created.limits.max_daily_messages, 200_000);
    assert!(matches!(
        scope
            .create_app(NewApp {
                name: "free".into(),
                plan: Some("unlimited".into()),
                ..NewApp::default()
            })
            .await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        scope
            .create_app(NewApp {
                name: "bigger".into(),
                limits: LimitsPatch {
                    max_connections: Some(1_000),
                    ..LimitsPatch::default()
                },
                ..NewApp::default()
            })
            .await,
        Err(StoreError::Forbidden(_))
    ));
    for loosen in [Some(0), Some(300_000)] {
        let refused = scope
            .update_app(
                &created.id,
                AppPatch {
                    limits: LimitsPatch {
                        max_daily_messages: loosen,
                        ..LimitsPatch::default()
                    },
                    ..AppPatch::default()
                },
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Forbidden(_))),
            "{loosen:?}"
        );
    }
    let tightened = scope
        .update_app(
            &created.id,
            AppPatch {
                limits: LimitsPatch {
                    max_daily_messages: Some(1_000),
                    ..LimitsPatch::default()
                },
                client_events: Some(true),
                ..AppPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tightened.limits.max_daily_messages, 1_000);
    assert!(tightened.client_events);
    // The operator may raise it again.
    let raised = store
        .scoped(Actor::Operator)
        .update_app(
            &created.id,
            AppPatch {
                limits: LimitsPatch {
                    max_daily_messages: Some(0),
                    ..LimitsPatch::default()
                },
                ..AppPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(raised.limits.max_daily_messages, 0);
}

#[tokio::test]
async fn sockets_opened_with_a_revoked_or_expired_key_are_closed_with_4009() {
    let app = spawn_app().await;
    let mut old_socket = app.connect().await;
    let rotated = app.node.store.rotate_key(APP_ID, 0).await.unwrap();
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let mut new_socket = app.connect_key(&rotated.key).await;
    old_socket
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    old_socket.expect_next("pusher:pong").await;
    app.node.store.revoke_key(APP_ID, KEY).await.unwrap();
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let (code, message) = old_socket.expect_error().await;
    assert_eq!(code, 4009);
    assert!(message.contains("revoked"), "{message}");
    assert_eq!(old_socket.expect_close().await, Some(4009));
    new_socket
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    new_socket.expect_next("pusher:pong").await;

    // A pair past its grace period: sockets opened with it are closed by the periodic check.
    let again = app.node.store.rotate_key(APP_ID, 1).await.unwrap();
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let mut graced = app.connect_key(&rotated.key).await;
    let _newest = app.connect_key(&again.key).await;
    let (code, _) = tokio::time::timeout(Duration::from_secs(5), graced.expect_error())
        .await
        .expect("closed after the grace period");
    assert_eq!(code, 4009);
    assert_eq!(graced.expect_close().await, Some(4009));
}

#[tokio::test]
async fn a_bad_admin_password_stops_the_first_start_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.admin.password = Some(herald::tenants::Secret::new("short".into()));
    let error = herald::startup::Application::build(settings)
        .await
        .expect_err("a 5-character password is refused");
    assert!(error.to_string().contains("8"), "{error}");
    let store =
        herald::tenants::Store::open(&herald::config::sqlite_url(dir.path()), Clock::system())
            .await
            .unwrap();
    assert!(store.is_empty().await.unwrap(), "no app was created");
    assert!(!store.has_users().await.unwrap());
}
