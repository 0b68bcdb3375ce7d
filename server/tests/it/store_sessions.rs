//! The store's dashboard sessions on their own, through two handles on one database (two nodes):
//! the same body runs on SQLite and on a fresh PostgreSQL database (`HERALD_TEST_DATABASE_URL`;
//! the test fails when PostgreSQL cannot be reached).

use std::time::Duration;

use herald::clock::Clock;
use herald::tenants::{session_key, SessionTerms, Store};

const START: i64 = 1_800_000_000_000;
const HOUR_MS: i64 = 3_600_000;
const TERMS: SessionTerms = SessionTerms {
    idle: Duration::from_secs(12 * 3600),
    lifetime: Duration::from_secs(7 * 24 * 3600),
    per_user: 2,
};

async fn exercise_sessions(url: &str) {
    let clock = Clock::manual(START);
    let one = Store::open(url, clock.clone())
        .await
        .expect("opens and migrates");
    let two = Store::open(url, clock.clone())
        .await
        .expect("a second handle");

    // Started through one handle, found through the other; the token is not a key.
    one.start_session("token-a", "csrf-a", "7", 3, TERMS)
        .await
        .unwrap();
    let found = two
        .session("token-a")
        .await
        .unwrap()
        .expect("found elsewhere");
    assert_eq!(
        (
            found.user_id.as_str(),
            found.csrf.as_str(),
            found.generation
        ),
        ("7", "csrf-a", 3)
    );
    assert_eq!(found.started_at, START);
    assert!(two
        .session(&session_key("token-a"))
        .await
        .unwrap()
        .is_none());
    assert!(two.session("unknown").await.unwrap().is_none());

    // last_seen moves at most once a minute, and the idle lifetime counts from it.
    clock.set_millis(START + 30_000);
    assert_eq!(
        two.session("token-a").await.unwrap().unwrap().last_seen,
        START
    );
    clock.set_millis(START + 11 * HOUR_MS);
    assert_eq!(
        one.session("token-a").await.unwrap().unwrap().last_seen,
        START + 11 * HOUR_MS
    );
    clock.set_millis(START + 22 * HOUR_MS);
    assert!(
        two.session("token-a").await.unwrap().is_some(),
        "used 11 h ago"
    );
    clock.set_millis(START + 35 * HOUR_MS);
    assert!(one.session("token-a").await.unwrap().is_none(), "idle 13 h");
    assert_eq!(one.session_count("7").await.unwrap(), 0, "deleted");

    // The per-user cap: the oldest ends, other users are untouched.
    for (n, token) in ["b1", "b2", "b3"].iter().enumerate() {
        clock.set_millis(START + 40 * HOUR_MS + n as i64 * 1000);
        let store = if n % 2 == 0 { &one } else { &two };
        store
            .start_session(token, "c", "8", 0, TERMS)
            .await
            .unwrap();
    }
    one.start_session("x", "c", "9", 0, TERMS).await.unwrap();
    assert_eq!(two.session_count("8").await.unwrap(), 2);
    assert!(
        two.session("b1").await.unwrap().is_none(),
        "the oldest ended"
    );
    assert!(one.session("b2").await.unwrap().is_some());
    assert!(two.session("b3").await.unwrap().is_some());

    // A password change: the others end, the kept one moves to the new generation.
    assert_eq!(two.end_other_sessions("8", "b3", 1).await.unwrap(), 1);
    assert!(one.session("b2").await.unwrap().is_none());
    assert_eq!(one.session("b3").await.unwrap().unwrap().generation, 1);
    assert!(one.session("x").await.unwrap().is_some(), "another user's");

    // Signing out through one handle ends it for the other.
    one.end_session("b3").await.unwrap();
    assert!(two.session("b3").await.unwrap().is_none());

    // The sweep deletes expired rows only; the absolute lifetime holds however busy.
    one.start_session("busy", "c", "10", 0, TERMS)
        .await
        .unwrap();
    let started = clock.now_millis();
    let mut now = started;
    while now + 11 * HOUR_MS < started + 7 * 24 * HOUR_MS {
        now += 11 * HOUR_MS;
        clock.set_millis(now);
        assert!(two.session("busy").await.unwrap().is_some());
    }
    clock.set_millis(started + 7 * 24 * HOUR_MS);
    assert_eq!(two.sweep_sessions().await.unwrap(), 2, "x (idle) and busy");
    assert_eq!(one.session_count("10").await.unwrap(), 0);
    assert_eq!(one.session_count("9").await.unwrap(), 0);

    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn dashboard_sessions_are_shared_through_one_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    exercise_sessions(&herald::config::sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn dashboard_sessions_are_shared_through_one_postgres_store() {
    crate::helpers::on_scratch_postgres(|url| async move { exercise_sessions(&url).await }).await;
}
