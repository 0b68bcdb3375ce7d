//! Audited changes racing other writers on PostgreSQL: an app change reads the app inside its
//! own transaction (a change committed meanwhile is kept, and the audit's `from` is what the
//! row held).

use std::time::Duration;

use sqlx::Connection;

use herald::clock::Clock;
use herald::tenants::{AppPatch, AuditBy, AuditFilter, NewApp, Store};

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
        tokio::time::sleep(Duration::from_millis(300)).await;
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
