//! The tenant store on its own: the same body runs on SQLite and on a fresh PostgreSQL database
//! (on `HERALD_TEST_DATABASE_URL`, else the machine's own; the tests fail, never skip, when
//! PostgreSQL cannot be reached).

use herald::clock::Clock;
use herald::tenants::{
    Actor, AppPatch, LimitsPatch, NewApp, Secret, Store, StoreError, Usage, UserRole,
};

/// Creates, reads, updates, lists and deletes apps on the store at `url`, checking the revision
/// after every write (and that a refused write leaves it alone).
async fn exercise_store(url: &str) {
    let store = Store::open(url, Clock::system())
        .await
        .expect("the store opens and migrates");
    assert!(store.ping().await);
    assert!(store.is_empty().await.unwrap());
    assert_eq!(store.list_apps(None).await.unwrap(), vec![]);
    let mut revision = store.revision().await.unwrap();

    // Create with chosen credentials.
    let chosen = store
        .create_app(NewApp {
            name: "  Chosen  ".into(),
            id: Some("4242".into()),
            key: Some("chosen-key-0123456789".into()),
            secret: Some(Secret::new("chosen-secret-0123456789".into())),
            client_events: Some(true),
            limits: LimitsPatch {
                max_connections: Some(50),
                ..LimitsPatch::default()
            },
            ..NewApp::default()
        })
        .await
        .expect("an app with chosen credentials is created");
    assert_eq!(chosen.id, "4242");
    assert_eq!(chosen.key, "chosen-key-0123456789");
    assert_eq!(chosen.secret.expose(), "chosen-secret-0123456789");
    assert_eq!(chosen.name, "Chosen");
    assert_eq!(chosen.tenant_id, "1");
    assert!(chosen.enabled);
    assert!(chosen.client_events);
    assert!(!chosen.subscription_count);
    assert_eq!(chosen.limits.max_connections, 50);
    assert_eq!(chosen.limits.max_event_payload_bytes, 10 * 1024);
    assert_eq!(store.revision().await.unwrap(), revision + 1);
    revision += 1;
    assert!(!store.is_empty().await.unwrap());

    // Create with generated credentials.
    let generated = store
        .create_app(NewApp {
            name: "Generated".into(),
            ..NewApp::default()
        })
        .await
        .expect("an app with generated credentials is created");
    assert!(generated.id.bytes().all(|b| b.is_ascii_digit()) && !generated.id.is_empty());
    assert!(generated.key.len() >= 20);
    assert!(generated.secret.expose().len() >= 20);
    assert!(!generated.client_events, "client events are off by default");
    assert_eq!(store.revision().await.unwrap(), revision + 1);
    revision += 1;

    // Reads return exactly what was written.
    assert_eq!(store.get_app("4242").await.unwrap(), chosen);
    assert_eq!(store.get_app(&generated.id).await.unwrap(), generated);
    assert!(matches!(
        store.get_app("999999999").await,
        Err(StoreError::AppNotFound(_))
    ));

    // Duplicates and invalid values are refused and leave the revision alone.
    let duplicate_key = store
        .create_app(NewApp {
            name: "Clash".into(),
            key: Some("chosen-key-0123456789".into()),
            ..NewApp::default()
        })
        .await;
    assert!(
        matches!(duplicate_key, Err(StoreError::Conflict(_))),
        "{duplicate_key:?}"
    );
    let duplicate_id = store
        .create_app(NewApp {
            name: "Clash".into(),
            id: Some("4242".into()),
            ..NewApp::default()
        })
        .await;
    assert!(
        matches!(duplicate_id, Err(StoreError::Conflict(_))),
        "{duplicate_id:?}"
    );
    for bad in [
        NewApp {
            name: "Bad id".into(),
            id: Some("12a".into()),
            ..NewApp::default()
        },
        NewApp {
            name: "  ".into(),
            ..NewApp::default()
        },
        NewApp {
            name: "Bad key".into(),
            key: Some("has space".into()),
            ..NewApp::default()
        },
        NewApp {
            name: "Too long names".into(),
            limits: LimitsPatch {
                max_channel_name_length: Some(201),
                ..LimitsPatch::default()
            },
            ..NewApp::default()
        },
    ] {
        let name = bad.name.clone();
        let refused = store.create_app(bad).await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{name}: {refused:?}"
        );
    }
    let no_tenant = store
        .create_app(NewApp {
            name: "Orphan".into(),
            tenant_id: Some("404".into()),
            ..NewApp::default()
        })
        .await;
    assert!(
        matches!(no_tenant, Err(StoreError::TenantNotFound(_))),
        "{no_tenant:?}"
    );
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.list_apps(None).await.unwrap().len(), 2);

    // Update.
    let updated = store
        .update_app(
            "4242",
            AppPatch {
                name: Some("Renamed".into()),
                enabled: Some(false),
                subscription_count: Some(true),
                limits: LimitsPatch {
                    max_batch_size: Some(3),
                    max_channel_name_length: Some(200),
                    ..LimitsPatch::default()
                },
                ..AppPatch::default()
            },
        )
        .await
        .expect("the app is updated");
    assert_eq!(updated.name, "Renamed");
    assert!(!updated.enabled);
    assert!(updated.subscription_count);
    assert!(updated.client_events, "an unpatched switch is kept");
    assert_eq!(updated.limits.max_batch_size, 3);
    assert_eq!(
        updated.limits.max_connections, 50,
        "an unpatched limit is kept"
    );
    assert_eq!(
        (updated.key.as_str(), updated.secret.expose()),
        (chosen.key.as_str(), chosen.secret.expose())
    );
    assert_eq!(store.get_app("4242").await.unwrap(), updated);
    assert_eq!(store.revision().await.unwrap(), revision + 1);
    revision += 1;
    let too_long = store
        .update_app(
            "4242",
            AppPatch {
                limits: LimitsPatch {
                    max_channel_name_length: Some(201),
                    ..LimitsPatch::default()
                },
                ..AppPatch::default()
            },
        )
        .await;
    assert!(
        matches!(too_long, Err(StoreError::Invalid(_))),
        "{too_long:?}"
    );
    let missing = store.update_app("999999999", AppPatch::default()).await;
    assert!(
        matches!(missing, Err(StoreError::AppNotFound(_))),
        "{missing:?}"
    );
    assert_eq!(store.revision().await.unwrap(), revision);

    // Lists and the snapshot agree with the reads.
    let all = store.list_apps(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.contains(&updated) && all.contains(&generated));
    assert_eq!(store.list_apps(Some("1")).await.unwrap().len(), 2);
    assert_eq!(store.list_apps(Some("404")).await.unwrap(), vec![]);
    let (snapshot_revision, mut snapshot) = store.snapshot().await.unwrap();
    assert_eq!(snapshot_revision, revision);
    snapshot.sort_by(|a, b| a.id.cmp(&b.id));
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(snapshot, sorted);

    // Large limits survive the BIGINT round trip.
    let big = store
        .update_app(
            &generated.id,
            AppPatch {
                limits: LimitsPatch {
                    max_daily_messages: Some(i64::MAX as u64),
                    ..LimitsPatch::default()
                },
                ..AppPatch::default()
            },
        )
        .await
        .unwrap();
    revision += 1;
    assert_eq!(
        store
            .get_app(&generated.id)
            .await
            .unwrap()
            .limits
            .max_daily_messages,
        i64::MAX as u64
    );
    assert_eq!(store.revision().await.unwrap(), revision);

    // Delete.
    store.delete_app("4242").await.expect("the app is deleted");
    assert_eq!(store.revision().await.unwrap(), revision + 1);
    revision += 1;
    assert!(matches!(
        store.get_app("4242").await,
        Err(StoreError::AppNotFound(_))
    ));
    assert!(matches!(
        store.delete_app("4242").await,
        Err(StoreError::AppNotFound(_))
    ));
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.list_apps(None).await.unwrap(), vec![big.clone()]);
    // The freed key can be used again.
    store
        .create_app(NewApp {
            name: "Reborn".into(),
            key: Some("chosen-key-0123456789".into()),
            ..NewApp::default()
        })
        .await
        .expect("a deleted app's key is free again");
    revision += 1;
    store.close().await;

    // A second open (another process, a restart) migrates nothing and sees the same data.
    let reopened = Store::open(url, Clock::system())
        .await
        .expect("the store opens again");
    assert_eq!(reopened.revision().await.unwrap(), revision);
    assert_eq!(reopened.list_apps(None).await.unwrap().len(), 2);
    assert_eq!(reopened.get_app(&generated.id).await.unwrap(), big);
    reopened.close().await;
}

/// Tenants, users, key rotation, origins and usage flushes on the store at `url` (which may
/// already hold apps).
async fn exercise_tenancy(url: &str) {
    let store = Store::open(url, Clock::system())
        .await
        .expect("the store opens");
    let tenant = store.create_tenant("Acme").await.unwrap();
    assert!(store.list_tenants().await.unwrap().contains(&tenant));
    let admin = store
        .create_user(
            "a@acme.test",
            "password one",
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();
    assert!(store.has_users().await.unwrap());
    assert_eq!(
        store
            .authenticate("a@acme.test", "password one")
            .await
            .unwrap(),
        Some(admin.clone())
    );
    assert_eq!(
        store.get_user(&admin.id).await.unwrap(),
        Some(admin.clone())
    );

    // Origins and plans round-trip; rotation keeps two working pairs.
    let app = store
        .scoped(Actor::of(&admin))
        .create_app(NewApp {
            name: "Tenant app".into(),
            plan: Some("startup".into()),
            allowed_origins: Some(vec![
                "https://Chat.Example/".into(),
                "https://*.acme.test".into(),
            ]),
            ..NewApp::default()
        })
        .await
        .unwrap();
    assert_eq!(app.tenant_id, tenant.id);
    assert_eq!(
        app.allowed_origins,
        vec!["https://chat.example", "https://*.acme.test"]
    );
    assert!(app.allows_origin(Some("https://chat.example")));
    assert!(app.allows_origin(Some("https://eu.acme.test")));
    assert!(!app.allows_origin(Some("https://acme.test")));
    assert!(!app.allows_origin(None));
    assert_eq!(store.get_app(&app.id).await.unwrap(), app);
    let rotated = store.rotate_key(&app.id, 0).await.unwrap();
    assert_eq!(store.get_app(&app.id).await.unwrap(), rotated);
    let keys: Vec<&str> = rotated
        .credentials(store.clock().now_seconds())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![rotated.key.as_str(), app.key.as_str()]);
    assert!(matches!(
        store.rotate_key(&app.id, 0).await,
        Err(StoreError::Conflict(_))
    ));
    let revoked = store.revoke_key(&app.id, &app.key).await.unwrap();
    assert_eq!(revoked.previous_key, None);
    assert_eq!(store.get_app(&app.id).await.unwrap(), revoked);
    // The revoked key is free for nobody else to collide with, and a new app never reuses a key.
    let clash = store
        .create_app(NewApp {
            name: "Clash".into(),
            key: Some(rotated.key.clone()),
            ..NewApp::default()
        })
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))));

    // Usage: flushes add up as increments, peaks keep the maximum, the report fills the gaps.
    let day = 20_100;
    let clock = Clock::manual(day * 86_400_000 + 3_600_000);
    let usage = Usage::load(&store, clock.clone()).await.unwrap();
    let counters = usage.app(&app.id);
    counters.count(5);
    counters.connected();
    counters.connected();
    counters.disconnected();
    assert_eq!(usage.flush(&store).await.unwrap(), 1);
    counters.count(2);
    assert_eq!(usage.flush(&store).await.unwrap(), 1);
    assert_eq!(
        usage.flush(&store).await.unwrap(),
        0,
        "nothing new to write"
    );
    // Another process sharing the store adds its own counts.
    let other = Usage::load(&store, clock.clone()).await.unwrap();
    assert_eq!(other.app(&app.id).messages_today(), 7);
    other.app(&app.id).count(10);
    other.flush(&store).await.unwrap();
    counters.count(1);
    usage.flush(&store).await.unwrap();
    assert_eq!(
        counters.messages_today(),
        18,
        "a flush reads back the shared total"
    );
    let report = store
        .usage_report(&app.id, day, clock.minute())
        .await
        .unwrap();
    assert_eq!(report.today.messages, 18);
    assert_eq!(report.today.peak_connections, 2);
    assert_eq!(report.days.len(), 30);
    assert_eq!(report.minutes.len(), 1440);
    assert_eq!(report.minutes.last().unwrap().messages, 18);
    store.delete_app(&app.id).await.unwrap();
    let gone = store
        .usage_report(&app.id, day, clock.minute())
        .await
        .unwrap();
    assert_eq!(gone.today.messages, 0, "deleting an app deletes its usage");
    store.close().await;
}

#[tokio::test]
async fn the_store_creates_reads_updates_and_deletes_apps_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = herald::config::sqlite_url(dir.path());
    exercise_store(&url).await;
    exercise_tenancy(&url).await;
}

#[tokio::test]
async fn two_handles_on_one_sqlite_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = herald::config::sqlite_url(dir.path());
    let server = Store::open(&url, Clock::system()).await.unwrap();
    let cli = Store::open(&url, Clock::system()).await.unwrap();
    let before = server.revision().await.unwrap();
    let app = cli
        .create_app(NewApp {
            name: "From the CLI".into(),
            ..NewApp::default()
        })
        .await
        .unwrap();
    assert_eq!(server.revision().await.unwrap(), before + 1);
    assert_eq!(server.get_app(&app.id).await.unwrap(), app);
    cli.close().await;
    server.close().await;
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[test]
fn with_database_replaces_only_the_database_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}

#[tokio::test]
async fn the_store_creates_reads_updates_and_deletes_apps_on_postgres() {
    crate::helpers::on_scratch_postgres(|url| async move {
        exercise_store(&url).await;
        exercise_tenancy(&url).await;
    })
    .await;
}
