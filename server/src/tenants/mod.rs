//! The tenant store: apps, their keys and limits, tenants and users, webhook endpoints and the
//! delivery outbox, usage history, and the in-memory app cache.
//!
//! This is the only module that knows SQL. It speaks to SQLite (the embedded default) or
//! PostgreSQL through sqlx's `Any` driver with runtime queries, so a clean clone builds without a
//! database. Every write bumps `herald_meta.revision`; servers poll it and reload the cache, which
//! is how a change made by the CLI (another process) reaches a running server.
//!
//! Files: `app.rs` the app domain types (no SQL: credentials, allowed origins, patches and their
//! validation), `apps_sql.rs` the store's app queries, `users.rs` tenants, users and the scoped
//! view, `policy.rs` what a tenant's admins may create, `endpoints.rs` webhook endpoints and the
//! delivery outbox, `usage.rs` the usage counters and history, `cache.rs` the app cache,
//! `health.rs` the store's health, `error.rs` [`StoreError`], `sessions.rs` the dashboard's
//! sessions (shared by every node on the store), `signup.rs` self-service sign-up and the emailed
//! links, `tokens.rs` the management API's tokens. This file holds the [`Store`]
//! itself: the pool, its clock, transactions and the revision.

mod app;
mod apps_sql;
mod audit;
mod cache;
mod claims;
mod endpoints;
mod error;
mod health;
mod invitations;
mod members;
mod mercure;
mod plans;
mod policy;
mod roles;
mod sessions;
mod signup;
mod tokens;
mod usage;
mod users;

pub use app::{
    limit_values, parse_origins, random_password, App, AppPatch, AppRef, LimitsPatch, NewApp,
    PreviousKey, LIMIT_NAMES,
};
pub use audit::{
    key_fingerprint, masked_url, AuditBy, AuditEntry, AuditFilter, NewAuditEntry,
    AUDIT_LOCK_TIMEOUT, AUDIT_MAX_PER_TENANT, AUDIT_SWEEP_BATCH, CLI_ACTOR,
    MAX_AUDIT_DETAILS_BYTES, MAX_AUDIT_PAGE,
};
pub use cache::{AppCache, AppChange};
pub use claims::Lease;
pub use endpoints::{
    header_allowed, Attempt, Delivery, DeliveryStatus, HeldEdit, NewDelivery, NewWebhook, Webhook,
};
pub use error::{AppPart, Conflict, StoreError};
pub use health::{Dependency, DependencyState, StoreHealth};
pub use invitations::{
    Invitation, INVITATION_TTL_SECONDS, MAX_INVITATIONS_PER_HOUR, MAX_PENDING_INVITATIONS,
};
pub use mercure::{
    MercureKey, MercurePatch, MercureSettings, DEFAULT_HISTORY_SECONDS, DEFAULT_HISTORY_SIZE,
    MAX_HISTORY_SECONDS, MAX_HISTORY_SIZE, MAX_HMAC_KEY_BYTES, MAX_IDENTIFIER_BYTES, MAX_PEM_BYTES,
    MIN_HMAC_KEY_BYTES,
};
pub use plans::{Plan, PLANS};
pub use policy::TenantPatch;
pub use sessions::{session_key, SessionTerms, StoredSession, SESSION_TOUCH_EVERY};
pub use signup::{
    link_key, sign_up_email, LinkPurpose, SignUp, MAX_LINKS_PER_HOUR, RESET_LINK_TTL, SWEEP_BATCH,
    VERIFY_LINK_TTL, WRONG_SIGN_UP_PASSWORD,
};
pub use tokens::{
    ApiToken, NewToken, Scope, TokenRefusal, DEAD_TOKEN_DAYS, MAX_LIVE_TOKENS, MAX_TOKEN_DAYS,
    MAX_TOKEN_NAME_CHARS, TOKEN_PREFIX,
};
pub use usage::{
    Allowance, AppUsage, DayUsage, MinuteUsage, Settlement, Usage, UsageReport, DAYS_REPORTED,
    MINUTES_KEPT,
};
pub use users::{
    check_email, check_new_user, warm_up_password_checks, Actor, Permission, Scoped, Tenant, User,
    UserRole, MIN_PASSWORD_CHARS, TENANT_DEFAULT_PLAN,
};

/// The redacting secret string lives in `auth`; re-exported so `herald::tenants::Secret` works.
pub use crate::auth::Secret;

use std::fmt;
use std::sync::Arc;

use rand::Rng;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::clock::Clock;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a store call waits for a connection before failing with
/// [`StoreError::Unreachable`] (sqlx's default is 30 s, which made every store-backed endpoint
/// hang while PostgreSQL was down): the CLI and the dashboard fail within 5 s.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The tenant store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Reads and writes seen failing or recovering (shared by every clone).
    health: Arc<StoreHealth>,
    /// SQLite takes write transactions with `BEGIN IMMEDIATE` (see [`Store::write_tx`]).
    sqlite: bool,
    /// Creation stamps, key expiry and health transitions read this clock.
    clock: Clock,
    /// Password hashes made by sign-ups ([`Store::password_hashes`]).
    password_work: Arc<std::sync::atomic::AtomicU64>,
}

/// Held while a node performs the store's first start (the demo app, the operator), so nodes
/// starting together on one empty PostgreSQL store do it once: the others wait, then find it
/// done. Released when dropped (the transaction holding the advisory lock rolls back).
pub struct FirstStartLock {
    _held: Option<sqlx::Transaction<'static, sqlx::Any>>,
}

impl fmt::Debug for FirstStartLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstStartLock").finish_non_exhaustive()
    }
}

/// The advisory lock key of the first start on PostgreSQL.
const FIRST_START_LOCK: i64 = 0x4865_7261_6c01;

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies pending migrations.
    /// `clock` stamps creation times and decides whether a previous key still works.
    pub async fn open(url: &str, clock: Clock) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A ping before each use finds a PostgreSQL connection the server dropped (a
            // restart, an idle timeout) before a query fails on it. An embedded SQLite
            // connection cannot be dropped that way: its ping is a round trip to the
            // connection's thread for nothing, on every query.
            .test_before_acquire(!sqlite)
            // A connection still inside a transaction when it comes back is one whose write
            // failed (a COMMIT refused on a full disk leaves SQLite's transaction depth at 1 and
            // its ROLLBACK then fails too): every later `begin` on it would fail with "non-zero
            // transaction depth" until the pool recycled it. Close it instead; the pool opens a
            // fresh one.
            .after_release(|conn, _meta| {
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(!conn.is_in_transaction())
                })
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // The CLI and the server share the file: wait for each other's locks.
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store {
            pool,
            sqlite,
            health: Arc::new(StoreHealth::new(clock.clone())),
            clock,
            password_work: Arc::default(),
        })
    }

    /// A transaction that will write. On SQLite it takes the write lock at `BEGIN IMMEDIATE`, so
    /// it waits (busy timeout) for another writer instead of failing with "database is locked"
    /// when a read-then-write transaction would have to upgrade after a concurrent commit (the
    /// server's background writers, the CLI and the dashboard all write the same file).
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            self.pool.begin().await?
        })
    }

    /// Takes the first-start lock (PostgreSQL: a transaction-scoped advisory lock, waited for;
    /// SQLite, which one process owns: nothing to take).
    pub async fn first_start_lock(&self) -> Result<FirstStartLock, StoreError> {
        if self.sqlite {
            return Ok(FirstStartLock { _held: None });
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
            .bind(FIRST_START_LOCK)
            .fetch_all(&mut *tx)
            .await?;
        Ok(FirstStartLock { _held: Some(tx) })
    }

    /// The clock the store stamps and judges expiry by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The store's health as this process saw it.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The store's revision, bumped by every write.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT revision FROM herald_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("revision")?)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A random id of digits in `range` that no row of `table` has yet (`table` is one of the
/// store's own table names, never input).
async fn fresh_id(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &'static str,
    range: std::ops::Range<u32>,
) -> Result<String, StoreError> {
    loop {
        let candidate = rand::rng().random_range(range.clone()).to_string();
        let taken = sqlx::query(&format!("SELECT id FROM {table} WHERE id = $1"))
            .bind(candidate.clone())
            .fetch_optional(&mut **tx)
            .await?;
        if taken.is_none() {
            return Ok(candidate);
        }
    }
}

/// Bumps the revision inside a writing transaction (running servers reload on a change).
async fn bump_revision(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
    sqlx::query("UPDATE herald_meta SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}
