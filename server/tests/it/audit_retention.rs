//! Audit retention (`HERALD_AUDIT_RETENTION_DAYS`): the store's sweep deletes entries older
//! than the cut-off, oldest first in bounded batches, and nothing newer; the node runs it with
//! its session sweep; 0 keeps every entry.

use std::time::Duration;

use herald::clock::Clock;
use herald::tenants::{AuditFilter, NewAuditEntry, Store, AUDIT_SWEEP_BATCH};

use crate::helpers::*;

const DAY_MS: i64 = 86_400_000;

fn entry(tenant: &str, action: &str) -> NewAuditEntry {
    NewAuditEntry {
        tenant_id: Some(tenant.to_owned()),
        actor: "cli".into(),
        action: action.into(),
        target: "x".into(),
        ..NewAuditEntry::default()
    }
}

async fn actions(store: &Store) -> Vec<String> {
    store
        .audit_entries(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

#[tokio::test]
async fn the_sweep_deletes_only_entries_past_the_cut_off_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let start = now_millis();
    let clock = Clock::manual(start);
    let url = herald::config::sqlite_url(dir.path());
    let store = Store::open(&url, clock.clone()).await.unwrap();
    // More old entries than two batches, then a few new ones 400 days later.
    let old = 2 * AUDIT_SWEEP_BATCH + 7;
    for _ in 0..old {
        store.record_audit(entry("1", "old")).await.unwrap();
    }
    clock.set_millis(start + 400 * DAY_MS);
    for _ in 0..3 {
        store.record_audit(entry("1", "new")).await.unwrap();
    }
    // A cut-off before everything deletes nothing.
    assert_eq!(store.sweep_audit(start).await.unwrap(), 0);
    let cut_off = start + 400 * DAY_MS - 365 * DAY_MS;
    assert_eq!(store.sweep_audit(cut_off).await.unwrap(), old as u64);
    assert_eq!(actions(&store).await, ["new", "new", "new"]);
    assert_eq!(store.sweep_audit(cut_off).await.unwrap(), 0);
    // Ids keep growing after a sweep.
    store.record_audit(entry("1", "newest")).await.unwrap();
    let all = store.audit_entries(&AuditFilter::default()).await.unwrap();
    assert_eq!(all[0].action, "newest");
    assert!(all[0].id > all[1].id);
    store.close().await;
}

/// Spawns a node on a manual clock with `retention_days`, records one entry, moves the wall
/// clock 3 days on and tokio's past the sweep interval; returns the entries left.
async fn left_after_three_days(retention_days: u64) -> Vec<String> {
    let clock = Clock::manual(now_millis());
    let wall = clock.clone();
    let app = spawn_app_with(move |settings| {
        settings.clock = clock;
        settings.audit_retention_days = retention_days;
    })
    .await;
    let store = app.node.store.clone();
    store.record_audit(entry("1", "old")).await.unwrap();
    // The node runs (its store poll with it) before time is paused.
    app.connect().await.close().await;
    let paused = pause_time();
    wall.set_millis(wall.now_millis() + 3 * DAY_MS);
    store.record_audit(entry("1", "new")).await.unwrap();
    advance_past(Duration::from_secs(600)).await;
    // The sweep runs in its own task on the store's threads, which need real time (on a loaded
    // machine more than paused time gives them): from here time is real again, and the sweep
    // gets up to 30 s (keeping everything shows as nothing happening: 1 s is its chance).
    paused.resume();
    let rounds = if retention_days == 0 { 20 } else { 600 };
    for _ in 0..rounds {
        if actions(&store).await.len() < 2 {
            break;
        }
        pause(Duration::from_millis(50)).await;
    }
    actions(&store).await
}

#[tokio::test]
async fn the_node_sweeps_entries_past_the_retention() {
    assert_eq!(left_after_three_days(1).await, ["new"]);
}

#[tokio::test]
async fn zero_days_keeps_every_entry() {
    assert_eq!(left_after_three_days(0).await, ["new", "old"]);
}

/// The sweep's select walks an index on `at` (migration `audit_log_by_at`), not the whole
/// table: once expired entries are gone, each node's 10-minute sweep would otherwise read every
/// entry to find none.
#[tokio::test]
async fn the_sweep_reads_the_log_by_time_through_an_index() {
    use sqlx::{Connection, Row};
    let dir = tempfile::tempdir().unwrap();
    let url = herald::config::sqlite_url(dir.path());
    let store = Store::open(&url, Clock::system()).await.unwrap();
    for _ in 0..50 {
        store.record_audit(entry("1", "old")).await.unwrap();
    }
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let plan = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT id FROM audit_log WHERE at < 1 ORDER BY at, id LIMIT 1000",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let details: Vec<String> = plan.iter().map(|row| row.get("detail")).collect();
    assert!(
        details.iter().any(|d| d.contains("audit_log_by_at")),
        "{details:?}"
    );
    assert!(
        !details.iter().any(|d| d.starts_with("SCAN")),
        "{details:?}"
    );
    db.close().await.unwrap();
    store.close().await;
}

/// The per-tenant cap: a tenant past it keeps its newest entries (oldest go first), another
/// tenant and the platform's entries are untouched, and the counts the cap reads follow every
/// insert and both sweeps (so the cap never needs to count the log).
async fn the_cap_keeps_each_tenants_newest(store: &Store) {
    for n in 0..30 {
        store
            .record_audit(entry("busy", &format!("a{n}")))
            .await
            .unwrap();
    }
    for n in 0..5 {
        store
            .record_audit(entry("quiet", &format!("b{n}")))
            .await
            .unwrap();
    }
    let platform = NewAuditEntry {
        tenant_id: None,
        ..entry("", "platform")
    };
    store.record_audit(platform).await.unwrap();
    assert_eq!(store.cap_audit(10).await.unwrap(), 20);
    let of = |tenant: &str| AuditFilter {
        tenant_id: Some(tenant.to_owned()),
        ..AuditFilter::default()
    };
    let busy: Vec<String> = store
        .audit_entries(&of("busy"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    let newest: Vec<String> = (20..30).rev().map(|n| format!("a{n}")).collect();
    assert_eq!(busy, newest);
    assert_eq!(store.audit_entries(&of("quiet")).await.unwrap().len(), 5);
    assert_eq!(actions(store).await.len(), 16, "the platform entry stays");
    // Counted right: nothing more to cap, and the next entries count from 10.
    assert_eq!(store.cap_audit(10).await.unwrap(), 0);
    for n in 30..33 {
        store
            .record_audit(entry("busy", &format!("a{n}")))
            .await
            .unwrap();
    }
    assert_eq!(store.cap_audit(10).await.unwrap(), 3);
    // The retention sweep takes its deletions off the counts too.
    assert_eq!(store.sweep_audit(i64::MAX).await.unwrap(), 16);
    for n in 0..10 {
        store
            .record_audit(entry("busy", &format!("c{n}")))
            .await
            .unwrap();
    }
    assert_eq!(
        store.cap_audit(10).await.unwrap(),
        0,
        "the count restarted at 0"
    );
}

#[tokio::test]
async fn a_tenant_over_the_cap_keeps_its_newest_entries_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = herald::config::sqlite_url(dir.path());
    let store = Store::open(&url, Clock::system()).await.unwrap();
    the_cap_keeps_each_tenants_newest(&store).await;
    store.close().await;
}

#[tokio::test]
async fn a_tenant_over_the_cap_keeps_its_newest_entries_on_postgres() {
    on_scratch_postgres(|url| async move {
        let store = Store::open(&url, Clock::system()).await.unwrap();
        the_cap_keeps_each_tenants_newest(&store).await;
        store.close().await;
    })
    .await;
}
