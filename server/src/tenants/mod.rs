//! The tenant store: apps, their keys and limits, and the in-memory app cache.
//!
//! This is the only module that knows SQL. It speaks to SQLite (the embedded default) or
//! PostgreSQL through sqlx's `Any` driver with runtime queries, so a clean clone builds without a
//! database. Every write bumps `herald_meta.revision`; servers poll it and reload the cache, which
//! is how a change made by the CLI (another process) reaches a running server.

mod cache;
mod health;
mod plans;
mod policy;
mod usage;
mod users;
mod webhooks;

pub use cache::{AppCache, AppChange};
pub use health::{Dependency, DependencyState, StoreHealth};
pub use plans::{Plan, PLANS};
pub use policy::TenantPatch;

pub use usage::{AppUsage, DayUsage, MinuteUsage, Usage, UsageReport, DAYS_REPORTED, MINUTES_KEPT};
pub use users::{
    check_new_user, warm_up_password_checks, Actor, Scoped, Tenant, User, UserRole,
    MIN_PASSWORD_CHARS, TENANT_DEFAULT_PLAN,
};
pub use webhooks::{Attempt, Delivery, DeliveryStatus, HeldEdit, NewDelivery, NewWebhook, Webhook};

use std::fmt;
use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::protocol::{
    Limits, PROTOCOL_CHANNEL_NAME_CEILING, SUBSCRIPTIONS_PER_CONNECTION_CEILING,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The redacting secret string lives in `auth`; re-exported so `herald::tenants::Secret` works.
pub use crate::auth::Secret;

/// An app: one set of credentials, switches and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct App {
    /// Numeric id (a string of digits).
    pub id: String,
    /// Public key used by clients in `/app/{key}`.
    pub key: String,
    /// Signing secret.
    pub secret: Secret,
    /// Display name.
    pub name: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Disabled apps refuse connections (4003) and REST calls (403).
    pub enabled: bool,
    /// Whether clients may send `client-` events.
    pub client_events: bool,
    /// Whether `pusher_internal:subscription_count` events are sent.
    pub subscription_count: bool,
    /// Limits; zero means unlimited.
    pub limits: Limits,
    /// The plan the app was created from (`custom` when none); the limits are what applies.
    pub plan: String,
    /// The previous key pair, still accepted during a rotation.
    pub previous_key: Option<PreviousKey>,
    /// Origins allowed to open WebSockets (`https://example.com`, `https://*.example.com`);
    /// empty means any origin.
    pub allowed_origins: Vec<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

/// The key pair a rotation replaced: it keeps working until revoked or until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousKey {
    /// The old key.
    pub key: String,
    /// The old secret.
    pub secret: Secret,
    /// Unix seconds after which the pair stops working; 0 means "until revoked".
    pub expires_at: i64,
}

impl PreviousKey {
    /// Whether the pair still works at `now` (Unix seconds).
    pub fn active_at(&self, now: i64) -> bool {
        self.expires_at == 0 || now < self.expires_at
    }
}

impl App {
    /// The app's active key/secret pairs: the current one, then the previous one while it works.
    pub fn credentials(&self) -> impl Iterator<Item = (&str, &str)> {
        let now = crate::clock::unix_seconds();
        let previous = self
            .previous_key
            .as_ref()
            .filter(|p| p.active_at(now))
            .map(|p| (p.key.as_str(), p.secret.expose()));
        std::iter::once((self.key.as_str(), self.secret.expose())).chain(previous)
    }

    /// Whether a WebSocket from `origin` (the `Origin` header, if any) may connect.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        let Some(origin) = origin else { return false };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        self.allowed_origins
            .iter()
            .any(|allowed| origin_matches(allowed, &origin))
    }

    /// The secret that signs for `key`, if `key` is one of the app's keys.
    pub fn secret_for(&self, key: &str) -> Option<&str> {
        self.credentials().find(|(k, _)| *k == key).map(|(_, s)| s)
    }
}

/// Whether `host` is one or more dot-separated DNS labels of `a-z0-9-` (lowercase), optionally
/// followed by `:port`.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    port_ok && labels_ok
}

/// Whether `origin` (lowercase, no trailing slash) matches the pattern `allowed`: `*` matches
/// everything, `https://*.example.com` any subdomain of example.com (not example.com itself),
/// anything else must be equal (scheme, host and port).
fn origin_matches(allowed: &str, origin: &str) -> bool {
    if allowed == "*" || allowed == origin {
        return true;
    }
    let Some((scheme, domain)) = allowed.split_once("://*.") else {
        return false;
    };
    let Some((origin_scheme, host)) = origin.split_once("://") else {
        return false;
    };
    if origin_scheme != scheme || !is_host(host) {
        return false;
    }
    host.strip_suffix(domain)
        .and_then(|sub| sub.strip_suffix('.'))
        .is_some_and(|sub| !sub.is_empty() && !sub.contains(':'))
}

/// Checks and normalises a list of allowed origins: `*`, `scheme://host[:port]` or
/// `scheme://*.domain[:port]`, lowercased, without a trailing slash.
pub fn parse_origins(list: &[String]) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for raw in list {
        let origin = raw.trim().trim_end_matches('/').to_ascii_lowercase();
        if origin.is_empty() {
            continue;
        }
        let valid = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                let scheme_ok = !scheme.is_empty()
                    && scheme.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || b == b'+'
                            || b == b'-'
                            || b == b'.'
                    });
                let host = host.strip_prefix("*.").unwrap_or(host);
                scheme_ok && is_host(host)
            });
        if !valid {
            return Err(StoreError::Invalid(format!(
                "invalid origin {raw:?}: expected scheme://host[:port], scheme://*.domain or *"
            )));
        }
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    /// Display name.
    pub name: String,
    /// Owning tenant (`"1"`, the default tenant, when `None`).
    pub tenant_id: Option<String>,
    /// A chosen id (random digits when `None`).
    pub id: Option<String>,
    /// A chosen key (random when `None`).
    pub key: Option<String>,
    /// A chosen secret (random when `None`).
    pub secret: Option<Secret>,
    /// Switches; `None` takes the default (enabled, client events off, counts off).
    pub enabled: Option<bool>,
    /// See [`App::client_events`].
    pub client_events: Option<bool>,
    /// See [`App::subscription_count`].
    pub subscription_count: Option<bool>,
    /// A plan preset whose limits apply first (`limits` then override them).
    pub plan: Option<String>,
    /// Limits to override.
    pub limits: LimitsPatch,
    /// Allowed origins (`None` or empty: any).
    pub allowed_origins: Option<Vec<String>>,
}

/// Changes to an app; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AppPatch {
    /// New name.
    pub name: Option<String>,
    /// New switch values.
    pub enabled: Option<bool>,
    /// See [`App::client_events`].
    pub client_events: Option<bool>,
    /// See [`App::subscription_count`].
    pub subscription_count: Option<bool>,
    /// Limits to change.
    pub limits: LimitsPatch,
    /// New allowed origins (an empty list allows any origin).
    pub allowed_origins: Option<Vec<String>>,
}

macro_rules! limits_patch {
    ($($field:ident),* $(,)?) => {
        /// A partial set of limits.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct LimitsPatch {
            $(
                #[allow(missing_docs)]
                pub $field: Option<u64>,
            )*
        }

        impl LimitsPatch {
            /// Writes every given value into `limits`.
            pub fn apply(&self, limits: &mut Limits) {
                $( if let Some(v) = self.$field { limits.$field = v; } )*
            }

            /// Sets the limit called `name`; false when there is no such limit.
            pub fn set(&mut self, name: &str, value: u64) -> bool {
                match name {
                    $( stringify!($field) => { self.$field = Some(value); true } )*
                    _ => false,
                }
            }

            /// The first limit this patch would raise above `limits` (0 counts as unlimited,
            /// so it raises any nonzero limit).
            pub fn loosens(&self, limits: &Limits) -> Option<&'static str> {
                $(
                    if let Some(v) = self.$field {
                        let current = limits.$field;
                        if current != 0 && (v == 0 || v > current) {
                            return Some(stringify!($field));
                        }
                    }
                )*
                None
            }
        }

        const LIMIT_COLUMNS: &[&str] = &[$(stringify!($field)),*];

        /// Every limit's name and value.
        pub fn limit_values(limits: &Limits) -> Vec<(&'static str, u64)> {
            vec![$((stringify!($field), limits.$field)),*]
        }

        fn limits_values(limits: &Limits) -> Vec<i64> {
            vec![$(to_db(limits.$field)),*]
        }

        fn limits_from_row(row: &AnyRow) -> Result<Limits, sqlx::Error> {
            Ok(Limits { $($field: from_db(row.try_get::<i64, _>(stringify!($field))?),)* })
        }
    };
}

limits_patch!(
    max_connections,
    max_daily_messages,
    max_client_events_per_second,
    max_backend_events_per_second,
    max_read_requests_per_second,
    max_presence_members,
    max_presence_member_bytes,
    max_channel_name_length,
    max_event_name_length,
    max_event_payload_bytes,
    max_channels_per_trigger,
    max_batch_size,
    max_channels,
    max_cache_channels,
    max_subscriptions_per_connection,
    max_subscribes_per_second,
);

/// How many limit columns come before `created_at` in [`APP_COLUMNS`] (the initial migration's);
/// the later ones follow `plan`.
const FIRST_LIMIT_COLUMNS: usize = 12;

fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The database could not be reached within [`ACQUIRE_TIMEOUT`] (down, or every connection
    /// broken).
    #[error("store unreachable: {0}")]
    Unreachable(sqlx::Error),
    /// A migration failed.
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// No app has this id.
    #[error("no app with id {0}")]
    AppNotFound(String),
    /// No tenant has this id.
    #[error("no tenant with id {0}")]
    TenantNotFound(String),
    /// No user has this email.
    #[error("no user with email {0}")]
    UserNotFound(String),
    /// The id or key is taken.
    #[error("{0}")]
    Conflict(String),
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The actor may not do this (a tenant admin raising a limit the operator set).
    #[error("{0}")]
    Forbidden(String),
    /// Too many password checks at once (argon2 is capped per core): try again shortly.
    #[error("too many password checks at once; try again shortly")]
    Busy,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unreachable(error)
            }
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    /// Whether the store could not be reached at all (as opposed to refusing one statement).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable(_))
    }
}

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
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const APP_COLUMNS: &str = "id, app_key, secret, name, tenant_id, enabled, client_events, \
     subscription_count, max_connections, max_daily_messages, max_client_events_per_second, \
     max_backend_events_per_second, max_read_requests_per_second, max_presence_members, \
     max_presence_member_bytes, max_channel_name_length, max_event_name_length, \
     max_event_payload_bytes, max_channels_per_trigger, max_batch_size, created_at, \
     prev_key, prev_secret, prev_expires_at, allowed_origins, plan, max_channels, \
     max_cache_channels, max_subscriptions_per_connection, max_subscribes_per_second";

fn app_from_row(row: &AnyRow) -> Result<App, sqlx::Error> {
    Ok(App {
        id: row.try_get("id")?,
        key: row.try_get("app_key")?,
        secret: Secret::new(row.try_get("secret")?),
        name: row.try_get("name")?,
        tenant_id: row.try_get("tenant_id")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        client_events: row.try_get::<i64, _>("client_events")? != 0,
        subscription_count: row.try_get::<i64, _>("subscription_count")? != 0,
        limits: limits_from_row(row)?,
        plan: row.try_get("plan")?,
        previous_key: match (
            row.try_get::<Option<String>, _>("prev_key")?,
            row.try_get::<Option<String>, _>("prev_secret")?,
        ) {
            (Some(key), Some(secret)) => Some(PreviousKey {
                key,
                secret: Secret::new(secret),
                expires_at: row.try_get("prev_expires_at")?,
            }),
            _ => None,
        },
        allowed_origins: row
            .try_get::<String, _>("allowed_origins")?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: row.try_get("created_at")?,
    })
}

/// A random URL-safe token of `len` lowercase letters and digits.
fn random_token(len: usize) -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), len)
        .to_ascii_lowercase()
}

/// A random password for the first-start operator.
pub fn random_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

fn validate_limits(limits: &Limits) -> Result<(), StoreError> {
    if limits.max_channel_name_length as usize > PROTOCOL_CHANNEL_NAME_CEILING {
        return Err(StoreError::Invalid(format!(
            "max_channel_name_length must be at most {PROTOCOL_CHANNEL_NAME_CEILING}"
        )));
    }
    if limits.max_subscriptions_per_connection > SUBSCRIPTIONS_PER_CONNECTION_CEILING as u64 {
        return Err(StoreError::Invalid(format!(
            "max_subscriptions_per_connection must be at most \
             {SUBSCRIPTIONS_PER_CONNECTION_CEILING}"
        )));
    }
    if limits.max_connections > i64::MAX as u64 || limits.max_daily_messages > i64::MAX as u64 {
        return Err(StoreError::Invalid("limit too large".into()));
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(StoreError::Invalid(
            "app name must be 1 to 100 characters".into(),
        ));
    }
    Ok(())
}

fn validate_credential(what: &str, value: &str) -> Result<(), StoreError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} must be 1 to 100 characters of A-Z, a-z, 0-9, '-' and '_'"
        )))
    }
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(ACQUIRE_TIMEOUT)
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
            health: Arc::default(),
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

    /// Every app, ordered by creation.
    pub async fn list_apps(&self, tenant_id: Option<&str>) -> Result<Vec<App>, StoreError> {
        let rows = match tenant_id {
            Some(tenant) => {
                sqlx::query(&format!(
                    "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 ORDER BY created_at, id"
                ))
                .bind(tenant.to_owned())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(app_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The apps and the revision they were read at, read in one transaction.
    pub async fn snapshot(&self) -> Result<(i64, Vec<App>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision: i64 = sqlx::query("SELECT revision FROM herald_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("revision")?;
        let rows = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps"))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let apps = rows
            .iter()
            .map(app_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((revision, apps))
    }

    /// One app by id.
    pub async fn get_app(&self, id: &str) -> Result<App, StoreError> {
        let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::AppNotFound(id.to_owned()))?;
        Ok(app_from_row(&row)?)
    }

    /// Whether the store holds no app at all (the first start).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM apps")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? == 0)
    }

    /// Creates an app.
    pub async fn create_app(&self, new: NewApp) -> Result<App, StoreError> {
        self.create_app_with(new, None).await
    }

    /// Creates an app, within tenant `capped`'s `max_apps` when given.
    async fn create_app_with(&self, new: NewApp, capped: Option<&str>) -> Result<App, StoreError> {
        validate_name(&new.name)?;
        let mut limits = Limits::default();
        let plan = match &new.plan {
            Some(name) => {
                let plan = Plan::named(name)?;
                limits = plan.limits;
                plan.name.to_owned()
            }
            None => "custom".to_owned(),
        };
        new.limits.apply(&mut limits);
        validate_limits(&limits)?;
        let allowed_origins = parse_origins(new.allowed_origins.as_deref().unwrap_or_default())?;
        if let Some(id) = &new.id {
            if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(StoreError::Invalid(
                    "app id must be 1 to 18 digits (pusher-http-python accepts digits only)".into(),
                ));
            }
        }
        if let Some(key) = &new.key {
            validate_credential("app key", key)?;
        }
        if let Some(secret) = &new.secret {
            validate_credential("app secret", secret.expose())?;
        }
        let tenant_id = new.tenant_id.clone().unwrap_or_else(|| "1".to_owned());
        let mut tx = self.write_tx().await?;
        let tenant = sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(tenant_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if tenant.is_none() {
            return Err(StoreError::TenantNotFound(tenant_id));
        }
        if let Some(capped) = capped {
            policy::check_app_cap(&mut tx, capped).await?;
        }
        let id = match new.id.clone() {
            Some(id) => id,
            None => fresh_id(&mut tx, "apps", 100_000..10_000_000).await?,
        };
        let app = App {
            id,
            key: new.key.clone().unwrap_or_else(|| random_token(20)),
            secret: new
                .secret
                .clone()
                .unwrap_or_else(|| Secret::new(random_token(40))),
            name: new.name.trim().to_owned(),
            tenant_id,
            enabled: new.enabled.unwrap_or(true),
            client_events: new.client_events.unwrap_or(false),
            subscription_count: new.subscription_count.unwrap_or(false),
            limits,
            plan,
            previous_key: None,
            allowed_origins,
            created_at: crate::clock::unix_seconds(),
        };
        let clash = sqlx::query("SELECT id FROM apps WHERE id = $1")
            .bind(app.id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() || key_taken(&mut tx, &app.key).await? {
            return Err(StoreError::Conflict(
                "an app with this id or key already exists".into(),
            ));
        }
        let placeholders: Vec<String> = (1..=30).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO apps ({APP_COLUMNS}) VALUES ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql)
            .bind(app.id.clone())
            .bind(app.key.clone())
            .bind(app.secret.expose().to_owned())
            .bind(app.name.clone())
            .bind(app.tenant_id.clone())
            .bind(i64::from(app.enabled))
            .bind(i64::from(app.client_events))
            .bind(i64::from(app.subscription_count));
        // APP_COLUMNS lists the first limits before `created_at` and the later ones at the end.
        let values = limits_values(&app.limits);
        let (first, later) = values.split_at(FIRST_LIMIT_COLUMNS);
        for value in first {
            query = query.bind(*value);
        }
        query = query
            .bind(app.created_at)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(0i64)
            .bind(app.allowed_origins.join("\n"))
            .bind(app.plan.clone());
        for value in later {
            query = query.bind(*value);
        }
        query.execute(&mut *tx).await?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Applies `patch` to app `id` and returns the result.
    pub async fn update_app(&self, id: &str, patch: AppPatch) -> Result<App, StoreError> {
        let mut app = self.get_app(id).await?;
        if let Some(name) = &patch.name {
            validate_name(name)?;
            app.name = name.trim().to_owned();
        }
        if let Some(v) = patch.enabled {
            app.enabled = v;
        }
        if let Some(v) = patch.client_events {
            app.client_events = v;
        }
        if let Some(v) = patch.subscription_count {
            app.subscription_count = v;
        }
        if let Some(origins) = &patch.allowed_origins {
            app.allowed_origins = parse_origins(origins)?;
        }
        patch.limits.apply(&mut app.limits);
        validate_limits(&app.limits)?;
        let sets: Vec<String> = [
            "name",
            "enabled",
            "client_events",
            "subscription_count",
            "allowed_origins",
        ]
        .iter()
        .chain(LIMIT_COLUMNS.iter())
        .enumerate()
        .map(|(i, column)| format!("{column} = ${}", i + 1))
        .collect();
        let sql = format!(
            "UPDATE apps SET {} WHERE id = ${}",
            sets.join(", "),
            sets.len() + 1
        );
        let mut tx = self.write_tx().await?;
        let mut query = sqlx::query(&sql)
            .bind(app.name.clone())
            .bind(i64::from(app.enabled))
            .bind(i64::from(app.client_events))
            .bind(i64::from(app.subscription_count))
            .bind(app.allowed_origins.join("\n"));
        for value in limits_values(&app.limits) {
            query = query.bind(value);
        }
        let done = query.bind(id.to_owned()).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AppNotFound(id.to_owned()));
        }
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Adds a new key pair to app `id`; the current pair becomes the previous one and keeps
    /// working for `grace_seconds` (0: until revoked). Refused while a previous pair still works:
    /// an app has at most two active pairs.
    pub async fn rotate_key(&self, id: &str, grace_seconds: u64) -> Result<App, StoreError> {
        let mut app = self.get_app(id).await?;
        let now = crate::clock::unix_seconds();
        if let Some(previous) = app.previous_key.as_ref().filter(|p| p.active_at(now)) {
            return Err(StoreError::Conflict(format!(
                "app {id} already has two active key pairs: revoke key {} first",
                previous.key
            )));
        }
        let mut tx = self.write_tx().await?;
        let mut key = random_token(20);
        while key_taken(&mut tx, &key).await? {
            key = random_token(20);
        }
        let expires_at = if grace_seconds == 0 {
            0
        } else {
            now.saturating_add(i64::try_from(grace_seconds).unwrap_or(i64::MAX))
        };
        app.previous_key = Some(PreviousKey {
            key: std::mem::replace(&mut app.key, key),
            secret: std::mem::replace(&mut app.secret, Secret::new(random_token(40))),
            expires_at,
        });
        let previous = app
            .previous_key
            .as_ref()
            .map(|p| (p.key.clone(), p.secret.expose().to_owned()));
        let (prev_key, prev_secret) = previous.unwrap_or_default();
        // Only if the keys are still those read above: two rotations at once cannot both win.
        let done = sqlx::query(
            "UPDATE apps SET app_key = $1, secret = $2, prev_key = $3, prev_secret = $4, \
             prev_expires_at = $5 WHERE id = $6 AND app_key = $7",
        )
        .bind(app.key.clone())
        .bind(app.secret.expose().to_owned())
        .bind(prev_key.clone())
        .bind(prev_secret)
        .bind(expires_at)
        .bind(id.to_owned())
        .bind(prev_key)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "app {id}'s keys changed meanwhile; try again"
            )));
        }
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Revokes one of app `id`'s key pairs. Revoking the current pair promotes the previous one;
    /// the last working pair cannot be revoked.
    pub async fn revoke_key(&self, id: &str, key: &str) -> Result<App, StoreError> {
        let mut app = self.get_app(id).await?;
        let current_key = app.key.clone();
        let now = crate::clock::unix_seconds();
        let previous_active = app.previous_key.as_ref().is_some_and(|p| p.active_at(now));
        if app.previous_key.as_ref().is_some_and(|p| p.key == key) {
            app.previous_key = None;
        } else if app.key == key {
            let Some(previous) = app.previous_key.take().filter(|_| previous_active) else {
                return Err(StoreError::Invalid(format!(
                    "key {key} is app {id}'s only working key: rotate first (herald apps rotate-secret)"
                )));
            };
            app.key = previous.key;
            app.secret = previous.secret;
        } else {
            return Err(StoreError::Invalid(format!("app {id} has no key {key}")));
        }
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE apps SET app_key = $1, secret = $2, prev_key = NULL, prev_secret = NULL, \
             prev_expires_at = 0 WHERE id = $3 AND app_key = $4",
        )
        .bind(app.key.clone())
        .bind(app.secret.expose().to_owned())
        .bind(id.to_owned())
        .bind(current_key)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "app {id}'s keys changed meanwhile; try again"
            )));
        }
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Deletes app `id` and its usage history.
    pub async fn delete_app(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AppNotFound(id.to_owned()));
        }
        for table in [
            "usage_daily",
            "usage_minutely",
            "webhooks",
            "webhook_deliveries",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE app_id = $1"))
                .bind(id.to_owned())
                .execute(&mut *tx)
                .await?;
        }
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(())
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

/// Whether `key` is any app's current or previous key.
async fn key_taken(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &str,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT id FROM apps WHERE app_key = $1 OR prev_key = $1")
        .bind(key.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

async fn bump_revision(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
    sqlx::query("UPDATE herald_meta SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Shared handle to an app.
pub type AppRef = Arc<App>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let allowed = parse_origins(&[
            "https://App.Example.com/".into(),
            "https://*.example.org".into(),
            "http://localhost:8080".into(),
        ])
        .unwrap();
        assert_eq!(
            allowed,
            vec![
                "https://app.example.com",
                "https://*.example.org",
                "http://localhost:8080"
            ]
        );
        let ok = |o: &str| allowed.iter().any(|a| origin_matches(a, o));
        assert!(ok("https://app.example.com"));
        assert!(ok("https://a.example.org"));
        assert!(ok("https://a.b.example.org"));
        assert!(ok("http://localhost:8080"));
        for bad in [
            "https://example.org",
            "http://a.example.org",
            "https://evil.com#.example.org",
            "https://a@.example.org",
            "https://a.example.org.evil.net",
            "https://xexample.org",
            "https://a.example.org:8443",
            "http://localhost:8081",
            "null",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        for invalid in [
            "https://*example.com",
            "https://*",
            "example.com",
            "https://a b.com",
            "https://x.com/path",
        ] {
            assert!(parse_origins(&[invalid.into()]).is_err(), "{invalid}");
        }
    }
}
