//! Issue 12, items 4, 5 and part of 8: what one anonymous socket or one tenant can take from the
//! others. Each test performs the attack against the real server and asserts the bound.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::{json, Value};

use herald::tenants::{
    Actor, AppPatch, LimitsPatch, MercurePatch, NewApp, Secret, StoreError, TenantPatch,
    DEFAULT_HISTORY_SECONDS, DEFAULT_HISTORY_SIZE,
};

use crate::helpers::*;

async fn set_limits(app: &TestApp, limits: LimitsPatch) {
    app.update_app(AppPatch {
        limits,
        ..AppPatch::default()
    })
    .await;
}

/// Creates an app with these credentials from `plan` and waits until the server knows it.
async fn create_plan_app(app: &TestApp, id: &str, key: &str, secret: &str, plan: &str) {
    app.node
        .store
        .create_app(NewApp {
            name: format!("{plan} app"),
            id: Some(id.into()),
            key: Some(key.into()),
            secret: Some(Secret::new(secret.into())),
            plan: Some(plan.into()),
            ..NewApp::default()
        })
        .await
        .expect("app is created");
    herald::startup::refresh_apps(&app.node)
        .await
        .expect("cache refreshes");
}

async fn trigger_as(
    app: &TestApp,
    id: &str,
    key: &str,
    secret: &str,
    channel: &str,
    data: &str,
) -> (u16, String) {
    let path = format!("/apps/{id}/events");
    let body = json!({"name":"cached","channel":channel,"data":data}).to_string();
    app.rest_signed("POST", &path, &path, &[], Some(&body), key, secret, now())
        .await
}

/// Sends `pusher:ping` and reads every frame up to the `pusher:pong`.
async fn drain_to_pong(client: &mut Client) -> Vec<Value> {
    client
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = client.next_json().await;
        if frame["event"] == "pusher:pong" {
            return frames;
        }
        frames.push(frame);
    }
}

fn sub(channel: &str) -> Value {
    json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":""}})
}

fn unsub(channel: &str) -> Value {
    json!({"event":"pusher:unsubscribe","data":{"channel":channel}})
}

#[tokio::test]
async fn the_cache_resubscribe_attack_is_rate_limited_and_counts_one_replay() {
    const ID: &str = "5151";
    const K: &str = "sandbox-key-0123456789";
    const S: &str = "sandbox-secret-0123456789abcdef";
    const CYCLES: usize = 3000;
    let app = spawn_app().await;
    create_plan_app(&app, ID, K, S, "sandbox").await;
    // A small quota, so that counting every replay would use it up within the attack.
    app.node
        .store
        .update_app(
            ID,
            AppPatch {
                limits: LimitsPatch {
                    max_daily_messages: Some(1_000),
                    ..LimitsPatch::default()
                },
                ..AppPatch::default()
            },
        )
        .await
        .expect("quota set");
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let (status, _) = trigger_as(&app, ID, K, S, "cache-ticker", "last price").await;
    assert_eq!(status, 200);
    let usage = app.node.usage.app(ID);
    assert_eq!(usage.messages_today(), 1, "the publish counts once");

    // The attacker holds only the public key.
    let mut attacker = app.connect_key(K).await;
    let started = Instant::now();
    let (mut replays, mut succeeded, mut refused_4301, mut refused_429) = (0, 0, 0, 0);
    for chunk in 0..CYCLES / 100 {
        for _ in 0..100 {
            attacker.send_json(sub("cache-ticker")).await;
            attacker.send_json(unsub("cache-ticker")).await;
        }
        for frame in drain_to_pong(&mut attacker).await {
            match frame["event"].as_str().unwrap_or_default() {
                "pusher_internal:subscription_succeeded" => succeeded += 1,
                "cached" => replays += 1,
                "pusher:error" => {
                    assert_eq!(frame["data"]["code"], 4301, "{frame}");
                    refused_4301 += 1;
                }
                "pusher:subscription_error" => {
                    let data = data_of(&frame);
                    assert_eq!(data["type"], "LimitReached", "{frame}");
                    assert_eq!(data["status"], 429, "{frame}");
                    refused_429 += 1;
                }
                other => panic!("unexpected frame {other}: {frame} (chunk {chunk})"),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{CYCLES} subscribe/unsubscribe cycles in {elapsed:.2}s: {succeeded} accepted, \
         {refused_4301} refused with 4301, {} messages counted",
        usage.messages_today()
    );
    // The burst is the sandbox plan's subscriptions cap (100), then 10 per second.
    let allowed = 100 + (10.0 * elapsed).ceil() as usize + 1;
    assert!(
        succeeded <= allowed,
        "{succeeded} subscribes went through in {elapsed:.1}s (at most {allowed})"
    );
    assert!(succeeded >= 100, "the burst lets a reconnect resubscribe");
    assert_eq!(
        replays, succeeded,
        "each accepted subscribe replays the event"
    );
    assert_eq!(refused_4301, CYCLES - succeeded);
    assert_eq!(refused_429, CYCLES - succeeded);
    // The socket is still open and usable.
    attacker.send_json(sub("cache-ticker")).await;
    drain_to_pong(&mut attacker).await;
    // However often it re-subscribed, the connection was counted one replay of that event.
    assert_eq!(usage.messages_today(), 2, "publish + one replay");
    let (status, body) = trigger_as(&app, ID, K, S, "cache-ticker", "new price").await;
    assert_eq!(
        status, 200,
        "the tenant's own trigger is still accepted: {body}"
    );
}

#[tokio::test]
async fn a_new_cached_event_is_replayed_and_counted_again() {
    let app = spawn_app().await;
    let usage = app.node.usage.app(APP_ID);
    let (status, _) = app
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name":"cached","channel":"cache-news","data":"one"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut reader = app.connect().await;
    for _ in 0..3 {
        reader.send_json(sub("cache-news")).await;
        reader.send_json(unsub("cache-news")).await;
    }
    drain_to_pong(&mut reader).await;
    assert_eq!(usage.messages_today(), 2, "publish + one replay of 'one'");
    app.post(
        &format!("/apps/{APP_ID}/events"),
        json!({"name":"cached","channel":"cache-news","data":"two"}),
    )
    .await;
    reader.send_json(sub("cache-news")).await;
    let frames = drain_to_pong(&mut reader).await;
    assert!(frames.iter().any(|f| f["data"] == "two"), "{frames:?}");
    assert_eq!(
        usage.messages_today(),
        4,
        "+ the publish and one replay of 'two'"
    );
}

#[tokio::test]
async fn a_connection_holds_at_most_its_subscriptions_cap() {
    let app = spawn_app().await;
    // The default (100), with the rate limit out of the way.
    set_limits(
        &app,
        LimitsPatch {
            max_subscribes_per_second: Some(0),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut client = app.connect().await;
    for i in 0..101 {
        client.send_json(sub(&format!("many-{i}"))).await;
    }
    let frames = drain_to_pong(&mut client).await;
    let succeeded = frames
        .iter()
        .filter(|f| f["event"] == "pusher_internal:subscription_succeeded")
        .count();
    assert_eq!(succeeded, 100);
    let refused = frames
        .iter()
        .find(|f| f["event"] == "pusher:subscription_error")
        .expect("the 101st is refused");
    assert_eq!(refused["channel"], "many-100");
    assert_eq!(data_of(refused)["type"], "LimitReached");
    assert_eq!(data_of(refused)["status"], 403);
    // A lower cap applies to the next subscribe; the socket stays open.
    set_limits(
        &app,
        LimitsPatch {
            max_subscriptions_per_connection: Some(3),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut small = app.connect().await;
    for i in 0..4 {
        small.send_json(sub(&format!("few-{i}"))).await;
    }
    let frames = drain_to_pong(&mut small).await;
    let errors: Vec<&Value> = frames
        .iter()
        .filter(|f| f["event"] == "pusher:subscription_error")
        .collect();
    assert_eq!(errors.len(), 1, "{frames:?}");
    assert_eq!(errors[0]["channel"], "few-3");
    // Above 1000 is refused by the store.
    let refused = app
        .node
        .store
        .update_app(
            APP_ID,
            AppPatch {
                limits: LimitsPatch {
                    max_subscriptions_per_connection: Some(1001),
                    ..LimitsPatch::default()
                },
                ..AppPatch::default()
            },
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_app_holds_at_most_its_channels_and_cache_channels() {
    let app = spawn_app().await;
    set_limits(
        &app,
        LimitsPatch {
            max_channels: Some(4),
            max_cache_channels: Some(2),
            ..LimitsPatch::default()
        },
    )
    .await;
    let mut a = app.connect().await;
    for channel in [
        "cache-1", "cache-2", "cache-3", "plain-1", "plain-2", "plain-3",
    ] {
        a.send_json(sub(channel)).await;
    }
    let frames = drain_to_pong(&mut a).await;
    let refused: Vec<(String, String)> = frames
        .iter()
        .filter(|f| f["event"] == "pusher:subscription_error")
        .map(|f| {
            let data = data_of(f);
            assert_eq!(data["type"], "LimitReached");
            assert_eq!(data["status"], 403);
            (
                f["channel"].as_str().unwrap().to_owned(),
                data["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(refused.len(), 2, "{frames:?}");
    assert_eq!(refused[0].0, "cache-3");
    assert!(refused[0].1.contains("2 cache channels"), "{refused:?}");
    assert_eq!(refused[1].0, "plain-3");
    assert!(refused[1].1.contains("4 occupied channels"), "{refused:?}");
    // An occupied channel takes more subscribers; a vacated one frees its slot.
    let mut b = app.connect().await;
    b.subscribe("plain-1").await;
    a.send_json(unsub("plain-2")).await;
    b.subscribe("plain-3").await;
    let memory = app.node.hub.app(APP_ID).memory();
    assert_eq!((memory.channels, memory.cache_channels), (4, 2));

    // Publishes keep at most 2 cached events (and their bytes are accounted).
    for channel in ["cache-1", "cache-2", "cache-9"] {
        let (status, _) = app
            .post(
                &format!("/apps/{APP_ID}/events"),
                json!({"name":"cached","channel":channel,"data":"x".repeat(1000)}),
            )
            .await;
        assert_eq!(status, 200, "the publish itself is accepted");
    }
    let memory = app.node.hub.app(APP_ID).memory();
    assert_eq!(memory.cached_events, 2);
    assert_eq!(memory.cache_refused, 1);
    assert!(
        (2_000..3_000 * 2).contains(&memory.cache_bytes),
        "{memory:?}"
    );
    let info = app.node.hub.app(APP_ID).channel_info("cache-9");
    assert!(info.cache.is_none(), "cache-9 was not kept");
}

#[tokio::test]
async fn one_app_cannot_take_more_than_its_share_of_the_node() {
    const ID: &str = "6161";
    const K: &str = "other-key-0123456789ab";
    const S: &str = "other-secret-0123456789abcdef";
    let app = spawn_app_with(|settings| {
        settings.max_connections = Some(6);
        settings.max_app_share = 50;
    })
    .await;
    create_plan_app(&app, ID, K, S, "startup").await;
    let mut greedy = Vec::new();
    for _ in 0..3 {
        greedy.push(app.connect().await);
    }
    // The 4th connection of the same app: over 50% of 6.
    let mut refused = app
        .connect_raw(&format!("/app/{KEY}?protocol=7&client=js&version=8.6.0"))
        .await;
    let error = refused.expect_next("pusher:error").await;
    assert_eq!(data_of(&error)["code"], 4100, "{error}");
    assert_eq!(refused.expect_close().await, Some(4100));
    // The other tenant's app still gets the rest of the node.
    let mut other = Vec::new();
    for _ in 0..3 {
        other.push(app.connect_key(K).await);
    }
    // Now the node is full for everyone.
    let mut full = app
        .connect_raw(&format!("/app/{K}?protocol=7&client=js&version=8.6.0"))
        .await;
    assert_eq!(full.expect_close().await, Some(4100));
    // A greedy socket leaving frees a slot for its own app again.
    greedy.pop().unwrap().close().await;
    wait_until("the slot is released", || {
        app.node.hub.app(APP_ID).connection_count() == 2 && app.node.hub.connection_count() == 5
    })
    .await;
    app.connect().await;
}

#[tokio::test]
async fn client_events_on_encrypted_channels_are_refused_and_the_socket_stays_open() {
    let app = spawn_app().await;
    app.update_app(AppPatch {
        client_events: Some(true),
        ..AppPatch::default()
    })
    .await;
    let channel = "private-encrypted-room";
    let mut sender = app.connect().await;
    let mut receiver = app.connect().await;
    sender.subscribe(channel).await;
    receiver.subscribe(channel).await;
    sender
        .send_json(json!({"event":"client-typing","channel":channel,"data":{"nonce":"n","ciphertext":"c"}}))
        .await;
    let (code, message) = sender.expect_error().await;
    assert_eq!(code, Value::Null);
    assert!(message.contains("encrypted"), "{message}");
    drain_to_pong(&mut sender).await;
    receiver.expect_silence(Duration::from_millis(300)).await;
    // Plain private channels still relay.
    sender.subscribe("private-room").await;
    receiver.subscribe("private-room").await;
    sender
        .send_json(json!({"event":"client-typing","channel":"private-room","data":{}}))
        .await;
    receiver.expect_event("client-typing").await;
}

#[tokio::test]
async fn a_tenant_admin_creates_only_what_the_operator_allows() {
    let app = spawn_app().await;
    let store = &app.node.store;
    let tenant = store.create_tenant("Acme").await.unwrap();
    let updated = store
        .update_tenant(
            &tenant.id,
            TenantPatch {
                max_apps: Some(1),
                plans: Some(vec!["startup".into(), "Pro".into()]),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.plans, vec!["startup", "pro"]);
    let admin = store.scoped(Actor::tenant_admin(tenant.id.clone()));
    let new = |plan: Option<&str>| NewApp {
        name: "mine".into(),
        plan: plan.map(str::to_owned),
        ..NewApp::default()
    };
    // Sandbox (the usual default), business and unlimited are not in the tenant's plans.
    for plan in [Some("sandbox"), Some("business"), Some("unlimited")] {
        let refused = admin.create_app(new(plan)).await;
        assert!(
            matches!(refused, Err(StoreError::Forbidden(_))),
            "{plan:?}: {refused:?}"
        );
    }
    // Without a plan, the tenant's first allowed plan.
    let created = admin.create_app(new(None)).await.unwrap();
    assert_eq!(created.plan, "startup");
    // One app is the tenant's cap.
    let refused = admin.create_app(new(Some("startup"))).await;
    match refused {
        Err(StoreError::Forbidden(message)) => assert!(message.contains("at most 1"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The operator is not bound by it.
    let operator = store.scoped(Actor::Operator);
    let mut extra = new(Some("business"));
    extra.tenant_id = Some(tenant.id.clone());
    operator.create_app(extra).await.unwrap();
    // Unknown plan names are refused when set.
    let bad = store
        .update_tenant(
            &tenant.id,
            TenantPatch {
                plans: Some(vec!["gold".into()]),
                ..TenantPatch::default()
            },
        )
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    // Limits stay the operator's: a tenant admin cannot raise the new caps either.
    let raised = admin
        .update_app(
            &created.id,
            AppPatch {
                limits: LimitsPatch {
                    max_cache_channels: Some(0),
                    ..LimitsPatch::default()
                },
                ..AppPatch::default()
            },
        )
        .await;
    assert!(
        matches!(raised, Err(StoreError::Forbidden(_))),
        "{raised:?}"
    );
    // So is the Mercure history (held in the node's memory): a tenant admin may shorten it and
    // bring it back up to the default, no further.
    let history = |size: Option<u64>, seconds: Option<u64>| AppPatch {
        mercure: MercurePatch {
            history_size: size,
            history_seconds: seconds,
            ..MercurePatch::default()
        },
        ..AppPatch::default()
    };
    for patch in [
        history(Some(u64::from(DEFAULT_HISTORY_SIZE) + 1), None),
        history(None, Some(u64::from(DEFAULT_HISTORY_SECONDS) + 1)),
    ] {
        let raised = admin.update_app(&created.id, patch).await;
        match raised {
            Err(StoreError::Forbidden(message)) => {
                assert!(message.contains("mercure history"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    let shorter = admin
        .update_app(&created.id, history(Some(10), Some(60)))
        .await
        .unwrap();
    assert_eq!(shorter.mercure.history_size, 10);
    admin
        .update_app(
            &created.id,
            history(
                Some(u64::from(DEFAULT_HISTORY_SIZE)),
                Some(u64::from(DEFAULT_HISTORY_SECONDS)),
            ),
        )
        .await
        .unwrap();
    // The operator may grant more.
    operator
        .update_app(&created.id, history(Some(50_000), None))
        .await
        .unwrap();
}

/// Runs `herald ARGS` on `dir`'s store, without the rest of Herald's environment.
async fn herald(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(args).env("HERALD_DATA_DIR", dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") && name != "HERALD_DATA_DIR" {
            command.env_remove(name);
        }
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the CLI finishes in time")
        .expect("the CLI runs")
}

#[tokio::test]
async fn tenants_update_sets_max_apps_and_plans_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald(
        dir.path(),
        &["tenants", "create", "--name", "Acme", "--json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let tenant: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = tenant["id"].as_str().unwrap();
    // A new tenant starts small: the larger plans and more apps are the operator's to give.
    assert_eq!(tenant["max_apps"], 10);
    assert_eq!(tenant["plans"], json!(["sandbox", "startup"]));
    let out = herald(
        dir.path(),
        &[
            "tenants",
            "update",
            id,
            "--max-apps",
            "2",
            "--plans",
            "sandbox,pro",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let tenant: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tenant["max_apps"], 2);
    assert_eq!(tenant["plans"], json!(["sandbox", "pro"]));
    let out = herald(
        dir.path(),
        &["tenants", "update", id, "--plans", "gold", "--json"],
    )
    .await;
    assert!(!out.status.success());
    let error: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("unknown plan"),
        "{error}"
    );
    let out = herald(dir.path(), &["tenants", "list", "--json"]).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert_eq!(listed["max_apps"], 2);
    // The new limit flags on apps.
    let out = herald(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "capped",
            "--plan",
            "sandbox",
            "--max-channels",
            "7",
            "--max-subscriptions-per-connection",
            "20",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["limits"]["max_channels"], 7);
    assert_eq!(created["limits"]["max_cache_channels"], 50);
    assert_eq!(created["limits"]["max_subscriptions_per_connection"], 20);
    assert_eq!(created["limits"]["max_subscribes_per_second"], 10);
}

/// The tenant policy and the new limit columns on the store at `url` (migration included).
async fn exercise_policy(url: &str) {
    let store = herald::tenants::Store::open(url, herald::clock::Clock::system())
        .await
        .expect("store opens");
    let tenant = store.create_tenant("Policy").await.unwrap();
    store
        .update_tenant(
            &tenant.id,
            TenantPatch {
                max_apps: Some(1),
                plans: Some(vec!["pro".into()]),
            },
        )
        .await
        .unwrap();
    let read = store.get_tenant(&tenant.id).await.unwrap();
    assert_eq!(
        (read.max_apps, read.plans.clone()),
        (1, vec!["pro".to_owned()])
    );
    let admin = store.scoped(Actor::tenant_admin(tenant.id.clone()));
    let app = admin
        .create_app(NewApp {
            name: "one".into(),
            ..NewApp::default()
        })
        .await
        .unwrap();
    let stored = store.get_app(&app.id).await.unwrap();
    assert_eq!(stored.limits.max_channels, 10_000);
    assert_eq!(stored.limits.max_subscriptions_per_connection, 200);
    let second = admin
        .create_app(NewApp {
            name: "two".into(),
            ..NewApp::default()
        })
        .await;
    assert!(
        matches!(second, Err(StoreError::Forbidden(_))),
        "{second:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn the_tenant_policy_is_stored_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    exercise_policy(&herald::config::sqlite_url(dir.path())).await;
    let admin_url = postgres_admin_url();
    use sqlx::{Connection, Executor};
    let database = format!("herald_tenancy_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
    let outcome = tokio::spawn({
        let url = format!("{base}/{database}");
        async move { exercise_policy(&url).await }
    })
    .await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
