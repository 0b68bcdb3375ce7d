//! Audit entries are written in the same transaction as the change they record: when the
//! entry's insert fails (a trigger refusing it, installed from outside as a broken disk or a
//! bug would), the change rolls back too, on SQLite through the dashboard and on PostgreSQL
//! through the store; once the insert works again the same changes go through with their
//! entries. On PostgreSQL, concurrent audited changes all commit with distinct ids.

use serde_json::json;
use sqlx::{Connection, Executor};

use herald::clock::Clock;
use herald::tenants::{
    AuditBy, AuditEntry, AuditFilter, NewApp, NewWebhook, Store, StoreError, TenantPatch, UserRole,
};

use crate::dashboard_helpers::*;
use crate::helpers::*;

const PASSWORD: &str = "member password 1";

async fn entries(store: &Store, tenant: &str) -> Vec<AuditEntry> {
    store
        .audit_entries(&AuditFilter {
            tenant_id: Some(tenant.to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refused_audit_entry_rolls_the_dashboard_change_back() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let t = store.create_tenant("Acme").await.unwrap().id;
    store
        .create_user("owner@acme.test", PASSWORD, UserRole::Owner, Some(&t))
        .await
        .unwrap();
    let dev = store
        .create_user("dev@acme.test", PASSWORD, UserRole::Developer, Some(&t))
        .await
        .unwrap();
    let chat = store
        .create_app(NewApp {
            name: "Chat".into(),
            tenant_id: Some(t.clone()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    let s = browser.sign_in("owner@acme.test", PASSWORD).await;
    let post = |path: String, form: Form| {
        let form = with_csrf(&form, &s.csrf);
        let (cookie, browser) = (s.cookie.clone(), &browser);
        async move { browser.post(Some(&cookie), &path, &form).await }
    };
    let base = format!("/dashboard/apps/{}", chat.id);
    let hook = vec![
        ("url", "http://127.0.0.1:9/hook".to_owned()),
        ("events", "channel_occupied".to_owned()),
    ];
    let before = entries(store, &t).await.len();

    // Every audit insert fails from now on.
    let mut db = sqlx::SqliteConnection::connect(&app.node.settings.database_url)
        .await
        .unwrap();
    db.execute(
        "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
    )
    .await
    .unwrap();
    let refused = [
        post(
            "/dashboard/apps".into(),
            vec![("name", "New".into()), ("plan", "sandbox".into())],
        )
        .await,
        post(base.clone(), vec![("name", "Renamed".into())]).await,
        post(base.clone(), vec![("max_connections", "5".into())]).await,
        post(
            format!("{base}/keys/rotate"),
            vec![("grace_hours", "0".into())],
        )
        .await,
        post(format!("{base}/webhooks"), hook.clone()).await,
        post(
            format!("/dashboard/members/{}/role", dev.id),
            vec![("role", "viewer".into())],
        )
        .await,
        post(
            "/dashboard/invitations".into(),
            vec![("email", "new@acme.test".into()), ("role", "viewer".into())],
        )
        .await,
        post(format!("{base}/delete"), vec![("confirm", "Chat".into())]).await,
    ];
    for (i, page) in refused.iter().enumerate() {
        assert_eq!(page.status, 500, "change {i}: {}", page.body);
    }
    // Nothing of it happened.
    let apps = store.list_apps(Some(&t)).await.unwrap();
    assert_eq!(apps.len(), 1, "{apps:?}");
    let still = &apps[0];
    assert_eq!(
        (still.name.as_str(), still.key.as_str()),
        ("Chat", chat.key.as_str())
    );
    assert_eq!(still.limits, chat.limits);
    assert!(store
        .list_webhooks(Some(&chat.id))
        .await
        .unwrap()
        .is_empty());
    let members = store.list_members(&t).await.unwrap();
    let dev_now = members.iter().find(|m| m.id == dev.id).unwrap();
    assert_eq!(dev_now.role, UserRole::Developer);
    assert!(store.list_invitations(&t).await.unwrap().is_empty());
    assert_eq!(entries(store, &t).await.len(), before);

    // The insert works again: the same changes go through, each with its entry.
    db.execute("DROP TRIGGER audit_refused").await.unwrap();
    post(base.clone(), vec![("name", "Renamed".into())])
        .await
        .assert_done("rename");
    post(format!("{base}/webhooks"), hook)
        .await
        .assert_done("webhook");
    post(
        format!("/dashboard/members/{}/role", dev.id),
        vec![("role", "viewer".into())],
    )
    .await
    .assert_done("role");
    post(
        format!("{base}/delete"),
        vec![("confirm", "Renamed".into())],
    )
    .await
    .assert_done("delete");
    let actions: Vec<String> = entries(store, &t).await[..4]
        .iter()
        .rev()
        .map(|e| e.action.clone())
        .collect();
    assert_eq!(
        actions,
        [
            "app.updated",
            "webhook.created",
            "member.role_changed",
            "app.deleted"
        ]
    );
    assert!(store.list_apps(Some(&t)).await.unwrap().is_empty());
}

/// The PostgreSQL function and trigger that refuse every audit insert.
const PG_REFUSE: [&str; 2] = [
    "CREATE FUNCTION audit_refused() RETURNS trigger AS $$ \
     BEGIN RAISE EXCEPTION 'audit refused'; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
     FOR EACH ROW EXECUTE FUNCTION audit_refused()",
];

#[tokio::test]
async fn a_refused_audit_entry_rolls_the_store_change_back_on_postgres() {
    on_scratch_postgres(|url| async move {
        let store = Store::open(&url, Clock::system()).await.unwrap();
        let cli = || AuditBy::cli();
        let t = cli().scope(store.create_tenant("Acme")).await.unwrap().id;
        let app = cli()
            .scope(store.create_app(NewApp {
                name: "Chat".into(),
                tenant_id: Some(t.clone()),
                ..NewApp::default()
            }))
            .await
            .unwrap();
        assert_eq!(entries(&store, &t).await.len(), 2);

        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        for sql in PG_REFUSE {
            db.execute(sql).await.unwrap();
        }
        let refused = |r: Result<(), StoreError>| {
            let error = r.expect_err("the change fails with its entry");
            assert!(error.to_string().contains("audit refused"), "{error}");
        };
        refused(
            cli()
                .scope(store.create_app(NewApp {
                    name: "Second".into(),
                    tenant_id: Some(t.clone()),
                    ..NewApp::default()
                }))
                .await
                .map(drop),
        );
        refused(cli().scope(store.rotate_key(&app.id, 0)).await.map(drop));
        let patch = TenantPatch {
            max_apps: Some(1),
            plans: None,
        };
        refused(cli().scope(store.update_tenant(&t, patch)).await.map(drop));
        let hook = NewWebhook {
            app_id: app.id.clone(),
            url: "http://127.0.0.1:9/hook".into(),
            events: vec!["channel_occupied".into()],
            ..NewWebhook::default()
        };
        refused(cli().scope(store.create_webhook(hook)).await.map(drop));
        refused(
            cli()
                .scope(store.create_user("x@acme.test", PASSWORD, UserRole::Viewer, Some(&t)))
                .await
                .map(drop),
        );
        refused(cli().scope(store.delete_app(&app.id)).await);

        let apps = store.list_apps(Some(&t)).await.unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].key, app.key, "the rotation rolled back");
        assert_eq!(store.get_tenant(&t).await.unwrap().max_apps, 10);
        assert!(store.list_webhooks(None).await.unwrap().is_empty());
        assert!(store.user_by_email("x@acme.test").await.unwrap().is_none());
        assert_eq!(entries(&store, &t).await.len(), 2);
        // Outside a scope nothing is audited, so the same change goes through.
        store.rotate_key(&app.id, 0).await.unwrap();

        db.execute("DROP TRIGGER audit_refused ON audit_log")
            .await
            .unwrap();
        // Concurrent audited changes all commit, with distinct, growing ids.
        let changes = (0..8).map(|i| {
            let store = store.clone();
            let t = t.clone();
            cli().scope(async move {
                let patch = TenantPatch {
                    max_apps: Some(20 + i),
                    plans: None,
                };
                store.update_tenant(&t, patch).await
            })
        });
        for outcome in futures_util::future::join_all(changes).await {
            outcome.unwrap();
        }
        let all = entries(&store, &t).await;
        assert_eq!(all.len(), 10);
        let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        assert_eq!(all[0].details["plans"], json!(["sandbox", "startup"]));
        db.close().await.unwrap();
        store.close().await;
    })
    .await;
}
