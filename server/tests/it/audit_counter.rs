//! The audit log's id counter never jams: an entry written past it (an older binary taking the
//! largest id plus one, a restore, a manual insert) does not make the next entries clash, on
//! SQLite and on PostgreSQL.

use sqlx::{Connection, Executor};

use herald::clock::Clock;
use herald::tenants::{AuditFilter, NewAuditEntry, Store};

use crate::helpers::*;

fn entry(action: &str) -> NewAuditEntry {
    NewAuditEntry {
        tenant_id: Some("1".into()),
        actor: "cli".into(),
        action: action.into(),
        target: "x".into(),
        ..NewAuditEntry::default()
    }
}

/// What an older binary does: the largest id plus one, the counter left behind.
const UNCOUNTED: &str = "INSERT INTO audit_log \
     (id, tenant_id, actor_id, actor, action, target, details, address, at) \
     SELECT MAX(id) + 1, '1', NULL, 'old binary', 'uncounted', 'x', '{}', '', 0 FROM audit_log";

/// Records one entry, lets `outside` write one the counter never saw, then records two more:
/// both go in, with ids past the uncounted one.
async fn check_counter_heals<F: std::future::Future<Output = ()>>(
    store: &Store,
    outside: impl FnOnce() -> F,
) {
    store.record_audit(entry("first")).await.unwrap();
    outside().await;
    store
        .record_audit(entry("second"))
        .await
        .expect("the entry after an uncounted one goes in");
    store.record_audit(entry("third")).await.unwrap();
    let all = store.audit_entries(&AuditFilter::default()).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["third", "second", "uncounted", "first"]);
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
}

#[tokio::test]
async fn an_entry_the_counter_never_saw_does_not_jam_it_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = herald::config::sqlite_url(dir.path());
    let store = Store::open(&url, Clock::system()).await.unwrap();
    check_counter_heals(&store, || async {
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        db.execute(UNCOUNTED).await.unwrap();
        db.close().await.unwrap();
    })
    .await;
    store.close().await;
}

#[tokio::test]
async fn an_entry_the_counter_never_saw_does_not_jam_it_on_postgres() {
    on_scratch_postgres(|url| async move {
        let store = Store::open(&url, Clock::system()).await.unwrap();
        check_counter_heals(&store, || async {
            let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
            db.execute(UNCOUNTED).await.unwrap();
            db.close().await.unwrap();
        })
        .await;
        store.close().await;
    })
    .await;
}
