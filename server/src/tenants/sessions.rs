//! Dashboard sessions, kept in the store so that every node sharing it accepts them (a signed-in
//! admin stays signed in whichever node a load balancer picks).
//!
//! A row is keyed by the SHA-256 (hex) of the cookie's token: the token itself is never stored,
//! so a copy of the database signs nobody in. Each row carries its own terms (how long it lives
//! unused, when it ends however busy) and `expires_at`, the earlier of the two, so a lookup is
//! one read by primary key and the sweep one indexed delete. `last_seen` is written at most once
//! per [`SESSION_TOUCH_EVERY`] per session, not on every request. Times are the store's clock
//! (the node's), in Unix milliseconds. Session writes do not bump the revision: they are not
//! configuration, and no node reloads anything for them.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};

/// The `server_keys` row of the dashboard's cookie MAC key.
const COOKIE_MAC_KEY: &str = "dashboard_cookie_mac";

/// How often a session's `last_seen` is written at most: a session used more often than that
/// costs one read per request and no write. Its idle lifetime therefore counts from up to this
/// long before its last use.
pub const SESSION_TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The lifetime and the per-user cap of a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTerms {
    /// How long it lives unused.
    pub idle: Duration,
    /// How long it lives at most, however busy.
    pub lifetime: Duration,
    /// Most live sessions one user may have: starting one more ends the oldest.
    pub per_user: usize,
}

/// A live session, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The user's id.
    pub user_id: String,
    /// The CSRF token every form of the session carries.
    pub csrf: String,
    /// The user's credential generation the session belongs to: a session of an older one is
    /// over.
    pub generation: i64,
    /// When it began, Unix milliseconds.
    pub started_at: i64,
    /// When its use was last recorded, Unix milliseconds.
    pub last_seen: i64,
}

/// The key a session's row is stored under: SHA-256 of its cookie token, hex.
pub fn session_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

const SESSION_COLUMNS: &str = "user_id, csrf, generation, started_at, last_seen, idle_ms, \
     ends_at, expires_at";

struct Row_ {
    session: StoredSession,
    idle_ms: i64,
    ends_at: i64,
    expires_at: i64,
}

fn session_from_row(row: &AnyRow) -> Result<Row_, sqlx::Error> {
    Ok(Row_ {
        session: StoredSession {
            user_id: row.try_get("user_id")?,
            csrf: row.try_get("csrf")?,
            generation: row.try_get("generation")?,
            started_at: row.try_get("started_at")?,
            last_seen: row.try_get("last_seen")?,
        },
        idle_ms: row.try_get("idle_ms")?,
        ends_at: row.try_get("ends_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

impl Store {
    /// Starts a session for `user_id` at credential `generation`, under cookie `token` with
    /// CSRF token `csrf` (both chosen by the caller, at random). Expired sessions are deleted on
    /// the way, and the user's oldest live sessions past `terms.per_user` end.
    pub async fn start_session(
        &self,
        token: &str,
        csrf: &str,
        user_id: &str,
        generation: i64,
        terms: SessionTerms,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let key = session_key(token);
        let ends_at = now.saturating_add(millis(terms.lifetime));
        let idle_ms = millis(terms.idle);
        let expires_at = now.saturating_add(idle_ms).min(ends_at);
        let keep = i64::try_from(terms.per_user.max(1)).unwrap_or(i64::MAX);
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_hash, user_id, csrf, generation, started_at, \
             last_seen, idle_ms, ends_at, expires_at) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)",
        )
        .bind(key.clone())
        .bind(user_id.to_owned())
        .bind(csrf.to_owned())
        .bind(generation)
        .bind(now)
        .bind(idle_ms)
        .bind(ends_at)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        // The newest `keep` stay (the new one first, whatever the clock says); the rest end.
        sqlx::query(
            "DELETE FROM dashboard_sessions WHERE user_id = $1 AND token_hash NOT IN (\
             SELECT token_hash FROM dashboard_sessions WHERE user_id = $1 \
             ORDER BY CASE WHEN token_hash = $2 THEN 1 ELSE 0 END DESC, started_at DESC, \
             token_hash LIMIT $3)",
        )
        .bind(user_id.to_owned())
        .bind(key)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session of cookie `token` (one read by primary key). An expired one is deleted
    /// and answers `None`; a live one's `last_seen` is written when it is older than
    /// [`SESSION_TOUCH_EVERY`] (a failed write only shortens its idle lifetime: it is logged).
    pub async fn session(&self, token: &str) -> Result<Option<StoredSession>, StoreError> {
        let key = session_key(token);
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM dashboard_sessions WHERE token_hash = $1"
        ))
        .bind(key.clone())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let Row_ {
            mut session,
            idle_ms,
            ends_at,
            expires_at,
        } = session_from_row(&row)?;
        let now = self.clock.now_millis();
        if expires_at <= now {
            sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
                .bind(key)
                .execute(&self.pool)
                .await?;
            return Ok(None);
        }
        if now.saturating_sub(session.last_seen) >= millis(SESSION_TOUCH_EVERY) {
            let touched = sqlx::query(
                "UPDATE dashboard_sessions SET last_seen = $2, expires_at = $3 \
                 WHERE token_hash = $1 AND last_seen < $2",
            )
            .bind(key)
            .bind(now)
            .bind(now.saturating_add(idle_ms).min(ends_at))
            .execute(&self.pool)
            .await;
            match touched {
                Ok(_) => session.last_seen = now,
                Err(error) => {
                    tracing::debug!(%error, "could not record a dashboard session's use");
                }
            }
        }
        Ok(Some(session))
    }

    /// The key the dashboard signs its session cookies with (32 random bytes, hex), made by the
    /// first node that asks and shared by every node on this store, so a cookie made on one node
    /// is checked on any other without a store read. Idempotent under concurrent first starts.
    pub async fn cookie_mac_key(&self) -> Result<crate::auth::Secret, StoreError> {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        sqlx::query(
            "INSERT INTO server_keys (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(COOKIE_MAC_KEY)
        .bind(hex::encode(bytes))
        .bind(self.clock().now_seconds())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM server_keys WHERE name = $1")
            .bind(COOKIE_MAC_KEY)
            .fetch_one(&self.pool)
            .await?;
        Ok(crate::auth::Secret::new(row.try_get("value")?))
    }

    /// Ends the session of cookie `token` (on every node). Ending one that does not exist is
    /// not an error.
    pub async fn end_session(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
            .bind(session_key(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of `user_id` but the one of cookie `keep`, which moves to credential
    /// `generation` (the user changed their own password). Returns how many ended.
    pub async fn end_other_sessions(
        &self,
        user_id: &str,
        keep: &str,
        generation: i64,
    ) -> Result<u64, StoreError> {
        let key = session_key(keep);
        let mut tx = self.write_tx().await?;
        let ended =
            sqlx::query("DELETE FROM dashboard_sessions WHERE user_id = $1 AND token_hash <> $2")
                .bind(user_id.to_owned())
                .bind(key.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query(
            "UPDATE dashboard_sessions SET generation = $3 WHERE user_id = $1 AND token_hash = $2",
        )
        .bind(user_id.to_owned())
        .bind(key)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Deletes every expired session (the periodic sweep); returns how many.
    pub async fn sweep_sessions(&self) -> Result<u64, StoreError> {
        let swept = sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind(self.clock.now_millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(swept)
    }

    /// How many session rows `user_id` has, expired or not (tests and diagnostics).
    pub async fn session_count(&self, user_id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM dashboard_sessions WHERE user_id = $1")
            .bind(user_id.to_owned())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    const HOUR: Duration = Duration::from_secs(3600);
    const TERMS: SessionTerms = SessionTerms {
        idle: Duration::from_secs(12 * 3600),
        lifetime: Duration::from_secs(7 * 24 * 3600),
        per_user: 3,
    };
    const START: i64 = 1_800_000_000_000;

    async fn store(clock: &Clock) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::sqlite_url(dir.path());
        let store = Store::open(&url, clock.clone()).await.unwrap();
        (dir, store)
    }

    fn advance(clock: &Clock, by: Duration) {
        clock.set_millis(clock.now_millis() + millis(by));
    }

    #[tokio::test]
    async fn the_token_is_stored_only_as_its_sha256() {
        let clock = Clock::manual(START);
        let (_dir, store) = store(&clock).await;
        store
            .start_session("the-token", "the-csrf", "7", 2, TERMS)
            .await
            .unwrap();
        let keys: Vec<String> = sqlx::query("SELECT token_hash FROM dashboard_sessions")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("token_hash"))
            .collect();
        assert_eq!(keys, vec![session_key("the-token")]);
        assert_eq!(
            session_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let session = store.session("the-token").await.unwrap().unwrap();
        assert_eq!(session.user_id, "7");
        assert_eq!(session.csrf, "the-csrf");
        assert_eq!(session.generation, 2);
        assert_eq!(
            store.session(&session_key("the-token")).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_session_ends_after_its_absolute_lifetime_even_when_used_all_along() {
        let clock = Clock::manual(START);
        let (_dir, store) = store(&clock).await;
        store.start_session("t", "c", "7", 0, TERMS).await.unwrap();
        // Used every 11 hours: never idle for 12, yet over after 7 days.
        while clock.now_millis() + millis(11 * HOUR) < START + millis(TERMS.lifetime) {
            advance(&clock, 11 * HOUR);
            assert!(store.session("t").await.unwrap().is_some(), "alive");
        }
        clock.set_millis(START + millis(TERMS.lifetime));
        assert!(store.session("t").await.unwrap().is_none());
        assert_eq!(store.session_count("7").await.unwrap(), 0, "deleted");
    }

    #[tokio::test]
    async fn a_session_ends_after_twelve_idle_hours() {
        let clock = Clock::manual(START);
        let (_dir, store) = store(&clock).await;
        store.start_session("t", "c", "7", 0, TERMS).await.unwrap();
        advance(&clock, TERMS.idle - Duration::from_secs(1));
        assert!(store.session("t").await.unwrap().is_some());
        advance(&clock, TERMS.idle);
        assert!(store.session("t").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn last_seen_is_written_at_most_once_a_minute() {
        let clock = Clock::manual(START);
        let (_dir, store) = store(&clock).await;
        store.start_session("t", "c", "7", 0, TERMS).await.unwrap();
        advance(&clock, Duration::from_secs(59));
        assert_eq!(store.session("t").await.unwrap().unwrap().last_seen, START);
        advance(&clock, Duration::from_secs(1));
        let now = clock.now_millis();
        assert_eq!(store.session("t").await.unwrap().unwrap().last_seen, now);
        advance(&clock, Duration::from_secs(30));
        assert_eq!(store.session("t").await.unwrap().unwrap().last_seen, now);
    }

    #[tokio::test]
    async fn a_user_keeps_at_most_the_cap_of_sessions_and_the_oldest_ends() {
        let clock = Clock::manual(START);
        let (_dir, store) = store(&clock).await;
        for n in 0..5 {
            store
                .start_session(&format!("t{n}"), "c", "7", 0, TERMS)
                .await
                .unwrap();
            advance(&clock, Duration::from_secs(1));
        }
        store
            .start_session("other", "c", "8", 0, TERMS)
            .await
            .unwrap();
        assert_eq!(store.session_count("7").await.unwrap(), 3);
        for (token, live) in [("t0", false), ("t1", false), ("t2", true), ("t4", true)] {
            assert_eq!(
                store.session(token).await.unwrap().is_some(),
                live,
                "{token}"
            );
        }
        assert!(store.session("other").await.unwrap().is_some());
        // Started in the same millisecond as the others: the new one is never the one ended.
        store.start_session("t5", "c", "7", 0, TERMS).await.unwrap();
        store.start_session("t6", "c", "7", 0, TERMS).await.unwrap();
        assert!(store.session("t6").await.unwrap().is_some());
        assert_eq!(store.session_count("7").await.unwrap(), 3);
    }

    #[tokio::test]
    async fn ending_others_keeps_one_at_the_new_generation() {
        let clock = Clock::manual(START);
        let (_dir, store) = store(&clock).await;
        for token in ["a", "b", "c"] {
            store
                .start_session(token, "c", "7", 0, TERMS)
                .await
                .unwrap();
        }
        store.start_session("x", "c", "8", 0, TERMS).await.unwrap();
        assert_eq!(store.end_other_sessions("7", "b", 1).await.unwrap(), 2);
        assert!(store.session("a").await.unwrap().is_none());
        assert!(store.session("c").await.unwrap().is_none());
        assert_eq!(store.session("b").await.unwrap().unwrap().generation, 1);
        assert!(
            store.session("x").await.unwrap().is_some(),
            "another user's"
        );
        store.end_session("b").await.unwrap();
        store.end_session("b").await.unwrap();
        assert!(store.session("b").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_sweep_deletes_expired_rows_only() {
        let clock = Clock::manual(START);
        let (_dir, store) = store(&clock).await;
        store
            .start_session("old", "c", "7", 0, TERMS)
            .await
            .unwrap();
        advance(&clock, TERMS.idle - HOUR);
        store
            .start_session("new", "c", "7", 0, TERMS)
            .await
            .unwrap();
        advance(&clock, 2 * HOUR);
        assert_eq!(store.sweep_sessions().await.unwrap(), 1);
        assert_eq!(store.session_count("7").await.unwrap(), 1);
        assert!(store.session("new").await.unwrap().is_some());
        // Starting a session deletes expired rows on the way too.
        advance(&clock, TERMS.idle);
        store.start_session("n2", "c", "9", 0, TERMS).await.unwrap();
        assert_eq!(store.session_count("7").await.unwrap(), 0);
    }
}
