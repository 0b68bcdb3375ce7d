//! The tenant store: apps, their keys and limits, and the in-memory app cache.
//!
//! This is the only module that knows SQL. It speaks to SQLite (the embedded default) or
//! PostgreSQL through sqlx's `Any` driver with runtime queries, so a clean clone builds without a
//! database. Every write bumps `herald_meta.revision`; servers poll it and reload the cache, which
//! is how a change made by the CLI (another process) reaches a running server.

mod cache;

pub use cache::{AppCache, AppChange};

use std::fmt;
use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::{Deserialize, Serialize, Serializer};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::protocol::{Limits, PROTOCOL_CHANNEL_NAME_CEILING};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A secret that never prints: its `Debug` and `Display` are redacted. It serializes in full,
/// because the CLI's `--json` output is how an operator learns it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for signing and for deliberate display.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

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
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

impl App {
    /// The app's active key/secret pairs.
    pub fn credentials(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.key.as_str(), self.secret.expose()))
    }

    /// The secret that signs for `key`, if `key` is one of the app's keys.
    pub fn secret_for(&self, key: &str) -> Option<&str> {
        self.credentials().find(|(k, _)| *k == key).map(|(_, s)| s)
    }
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
    /// Limits to override.
    pub limits: LimitsPatch,
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
        }

        const LIMIT_COLUMNS: &[&str] = &[$(stringify!($field)),*];

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
);

fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// No app has this id.
    #[error("no app with id {0}")]
    AppNotFound(String),
    /// No tenant has this id.
    #[error("no tenant with id {0}")]
    TenantNotFound(String),
    /// The id or key is taken.
    #[error("{0}")]
    Conflict(String),
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// The tenant store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
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
     max_event_payload_bytes, max_channels_per_trigger, max_batch_size, created_at";

fn app_from_row(row: &AnyRow) -> Result<App, sqlx::Error> {
    Ok(App {
        id: row.try_get("id")?,
        key: row.try_get("app_key")?,
        secret: Secret(row.try_get("secret")?),
        name: row.try_get("name")?,
        tenant_id: row.try_get("tenant_id")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        client_events: row.try_get::<i64, _>("client_events")? != 0,
        subscription_count: row.try_get::<i64, _>("subscription_count")? != 0,
        limits: limits_from_row(row)?,
        created_at: row.try_get("created_at")?,
    })
}

/// A random URL-safe token of `len` lowercase letters and digits.
fn random_token(len: usize) -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), len)
        .to_ascii_lowercase()
}

fn validate_limits(limits: &Limits) -> Result<(), StoreError> {
    if limits.max_channel_name_length as usize > PROTOCOL_CHANNEL_NAME_CEILING {
        return Err(StoreError::Invalid(format!(
            "max_channel_name_length must be at most {PROTOCOL_CHANNEL_NAME_CEILING}"
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
        Ok(Store { pool })
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
        validate_name(&new.name)?;
        let mut limits = Limits::default();
        new.limits.apply(&mut limits);
        validate_limits(&limits)?;
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
        let mut tx = self.pool.begin().await?;
        let tenant = sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(tenant_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if tenant.is_none() {
            return Err(StoreError::TenantNotFound(tenant_id));
        }
        let id = match new.id.clone() {
            Some(id) => id,
            None => {
                let mut candidate;
                loop {
                    candidate = rand::rng().random_range(100_000u32..10_000_000).to_string();
                    let taken = sqlx::query("SELECT id FROM apps WHERE id = $1")
                        .bind(candidate.clone())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if taken.is_none() {
                        break;
                    }
                }
                candidate
            }
        };
        let app = App {
            id,
            key: new.key.clone().unwrap_or_else(|| random_token(20)),
            secret: new
                .secret
                .clone()
                .unwrap_or_else(|| Secret(random_token(40))),
            name: new.name.trim().to_owned(),
            tenant_id,
            enabled: new.enabled.unwrap_or(true),
            client_events: new.client_events.unwrap_or(false),
            subscription_count: new.subscription_count.unwrap_or(false),
            limits,
            created_at: crate::clock::unix_seconds(),
        };
        let clash = sqlx::query("SELECT id FROM apps WHERE id = $1 OR app_key = $2")
            .bind(app.id.clone())
            .bind(app.key.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() {
            return Err(StoreError::Conflict(
                "an app with this id or key already exists".into(),
            ));
        }
        let placeholders: Vec<String> = (1..=21).map(|i| format!("${i}")).collect();
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
        for value in limits_values(&app.limits) {
            query = query.bind(value);
        }
        query.bind(app.created_at).execute(&mut *tx).await?;
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
        patch.limits.apply(&mut app.limits);
        validate_limits(&app.limits)?;
        let sets: Vec<String> = ["name", "enabled", "client_events", "subscription_count"]
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
        let mut tx = self.pool.begin().await?;
        let mut query = sqlx::query(&sql)
            .bind(app.name.clone())
            .bind(i64::from(app.enabled))
            .bind(i64::from(app.client_events))
            .bind(i64::from(app.subscription_count));
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

    /// Deletes app `id`.
    pub async fn delete_app(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AppNotFound(id.to_owned()));
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

async fn bump_revision(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
    sqlx::query("UPDATE herald_meta SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Shared handle to an app.
pub type AppRef = Arc<App>;
