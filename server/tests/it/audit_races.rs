//! Audited changes racing other writers on PostgreSQL: an app change reads the app inside its
//! own transaction (a change committed meanwhile is kept, and the audit's `from` is what the
//! row held); a writer stuck holding the audit counter makes the others fail after
//! `AUDIT_LOCK_TIMEOUT`, not hang.

use std::time::Duration;

use sqlx::Connection;

use herald::clock::Clock;
use herald::tenants::{
    AppPatch, AuditBy, AuditFilter, NewApp, NewAuditEntry, Store, AUDIT_LOCK_TIMEOUT,
};

use crate::helpers::*;

#[tokio::test]
async fn an_app_change_never_reverts_a_change_committed_while_it_waited() {
    on_scratch_postgres(|url| async move {
        let store = Store::open(&url, Clock::system()).await.unwrap();
        let tenant = AuditBy::cli()
            .scope(store.create_tenant("Acme"))
            .await
            .unwrap()
            .id;
        let app = AuditBy::cli()
            .scope(store.create_app(NewApp {
                name: "Chat".into(),
                tenant_id: Some(tenant.clone()),
                ..NewApp::default()
            }))
            .await
            .unwrap();
        let raised = app.limits.max_connections + 7;

        // Another writer (another node, the CLI) holds the app's row with a raised limit...
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut other = db.begin().await.unwrap();
        sqlx::query("UPDATE apps SET max_connections = $1 WHERE id = $2")
            .bind(i64::try_from(raised).unwrap())
            .bind(app.id.clone())
            .execute(&mut *other)
            .await
            .unwrap();
        // ...while a rename starts, and commits once the rename is waiting.
        let rename = tokio::spawn({
            let store = store.clone();
            let id = app.id.clone();
            AuditBy::cli().scope(async move {
                let patch = AppPatch {
                    name: Some("Renamed".into()),
                    ..AppPatch::default()
                };
                store.update_app(&id, patch).await
            })
        });
        crate::helpers::pause(Duration::from_millis(300)).await;
        assert!(!rename.is_finished(), "the rename waits for the row");
        other.commit().await.unwrap();
        let renamed = rename.await.unwrap().unwrap();

        let read = store.get_app(&app.id).await.unwrap();
        assert_eq!(read.name, "Renamed");
        assert_eq!(
            read.limits.max_connections, raised,
            "the raised limit stays"
        );
        assert_eq!(renamed, read);
        let newest = store
            .audit_entries(&AuditFilter::default())
            .await
            .unwrap()
            .remove(0);
        assert_eq!(newest.action, "app.updated");
        assert_eq!(
            newest.details,
            serde_json::json!({ "name": { "from": "Chat", "to": "Renamed" } })
        );
        db.close().await.unwrap();
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_stuck_holder_of_the_audit_counter_gives_others_a_bounded_error() {
    on_scratch_postgres(|url| async move {
        let store = Store::open(&url, Clock::system()).await.unwrap();
        let entry = || NewAuditEntry {
            tenant_id: Some("1".into()),
            actor: "cli".into(),
            action: "test.entry".into(),
            target: "x".into(),
            ..NewAuditEntry::default()
        };
        store.record_audit(entry()).await.unwrap();
        // A writer that took the counter and stalls before its commit.
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut stuck = db.begin().await.unwrap();
        sqlx::query("UPDATE audit_counter SET last_id = last_id WHERE id = 1")
            .execute(&mut *stuck)
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let waited = tokio::time::timeout(AUDIT_LOCK_TIMEOUT * 3, store.record_audit(entry()))
            .await
            .expect("the wait is bounded");
        let error = waited.expect_err("the entry waiting on a stuck holder fails");
        assert!(error.to_string().contains("lock timeout"), "{error}");
        assert!(started.elapsed() >= AUDIT_LOCK_TIMEOUT - Duration::from_millis(500));
        // Once the holder is gone, entries go in again.
        stuck.rollback().await.unwrap();
        store.record_audit(entry()).await.unwrap();
        assert_eq!(
            store
                .audit_entries(&AuditFilter::default())
                .await
                .unwrap()
                .len(),
            2
        );
        db.close().await.unwrap();
        store.close().await;
    })
    .await;
}
