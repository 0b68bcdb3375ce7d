//! The store's app queries: list, read, create, change, rotate and revoke keys, delete. The
//! domain rules (validation, credentials) are in `app.rs`; this file maps apps to rows.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::app::{limit_values, random_token, LIMIT_NAMES};
use super::audit::{change, update_entries};
use super::mercure::{self as mercure_row, MERCURE_COLUMNS, MERCURE_COLUMN_COUNT};
use super::{
    bump_revision, fresh_id, policy, App, AppPart, AppPatch, Conflict, NewApp, PreviousKey, Secret,
    Store, StoreError,
};
use crate::protocol::Limits;

/// How many limit columns come before `created_at` in [`APP_COLUMNS`] (the initial migration's);
/// the later ones follow `plan`.
const FIRST_LIMIT_COLUMNS: usize = 12;

fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The limit columns' values, in [`LIMIT_NAMES`] order.
fn limits_values(limits: &Limits) -> Vec<i64> {
    limit_values(limits)
        .into_iter()
        .map(|(_, value)| to_db(value))
        .collect()
}

/// The limits stored in an app row (every limit has a column of its name).
fn limits_from_row(row: &AnyRow) -> Result<Limits, sqlx::Error> {
    let mut patch = super::LimitsPatch::default();
    for name in LIMIT_NAMES {
        patch.set(name, from_db(row.try_get::<i64, _>(*name)?));
    }
    let mut limits = Limits::default();
    patch.apply(&mut limits);
    Ok(limits)
}

const APP_COLUMNS: &str = "id, app_key, secret, name, tenant_id, enabled, client_events, \
     subscription_count, max_connections, max_daily_messages, max_client_events_per_second, \
     max_backend_events_per_second, max_read_requests_per_second, max_presence_members, \
     max_presence_member_bytes, max_channel_name_length, max_event_name_length, \
     max_event_payload_bytes, max_channels_per_trigger, max_batch_size, created_at, \
     prev_key, prev_secret, prev_expires_at, allowed_origins, plan, max_channels, \
     max_cache_channels, max_subscriptions_per_connection, max_subscribes_per_second";

/// How many columns [`APP_COLUMNS`] names.
const APP_COLUMN_COUNT: usize = 30;

/// Every column an app row is read from and written to: [`APP_COLUMNS`], then the Mercure ones.
fn all_columns() -> String {
    format!("{APP_COLUMNS}, {MERCURE_COLUMNS}")
}

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
        mercure: mercure_row::from_row(row)?,
    })
}

impl Store {
    /// Every app, ordered by creation.
    pub async fn list_apps(&self, tenant_id: Option<&str>) -> Result<Vec<App>, StoreError> {
        let rows = match tenant_id {
            Some(tenant) => {
                sqlx::query(&format!(
                    "SELECT {} FROM apps WHERE tenant_id = $1 ORDER BY created_at, id",
                    all_columns()
                ))
                .bind(tenant.to_owned())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {} FROM apps ORDER BY created_at, id",
                    all_columns()
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
        let rows = sqlx::query(&format!("SELECT {} FROM apps", all_columns()))
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
        let row = sqlx::query(&format!("SELECT {} FROM apps WHERE id = $1", all_columns()))
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
    pub(super) async fn create_app_with(
        &self,
        new: NewApp,
        capped: Option<&str>,
    ) -> Result<App, StoreError> {
        let checked = new.check()?;
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
        let app = new.build(checked, id, tenant_id, self.clock.now_seconds());
        let clash = sqlx::query("SELECT id FROM apps WHERE id = $1")
            .bind(app.id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() || key_taken(&mut tx, &app.key).await? {
            return Err(Conflict::AppIdOrKeyTaken.into());
        }
        let placeholders: Vec<String> = (1..=APP_COLUMN_COUNT + MERCURE_COLUMN_COUNT)
            .map(|i| format!("${i}"))
            .collect();
        let sql = format!(
            "INSERT INTO apps ({}) VALUES ({})",
            all_columns(),
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
        query = mercure_row::bind_columns(query, &app.mercure);
        query.execute(&mut *tx).await?;
        bump_revision(&mut tx).await?;
        let details = json!({ "name": app.name, "plan": app.plan });
        self.audit_in(
            &mut tx,
            change(&app.tenant_id, "app.created", &app.id, details),
        )
        .await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Applies `patch` to app `id` and returns the result.
    ///
    /// The app is read inside the change's transaction, its row locked (PostgreSQL: `FOR
    /// UPDATE`; SQLite's `BEGIN IMMEDIATE` already serialises writers): every column is written
    /// back from that read, so a change committed meanwhile is never reverted, and the audit's
    /// `from` values are what the row held.
    pub async fn update_app(&self, id: &str, patch: AppPatch) -> Result<App, StoreError> {
        let mut tx = self.write_tx().await?;
        let lock = if self.sqlite { "" } else { " FOR UPDATE" };
        let row = sqlx::query(&format!(
            "SELECT {} FROM apps WHERE id = $1{lock}",
            all_columns()
        ))
        .bind(id.to_owned())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::AppNotFound(id.to_owned()))?;
        let mut app = app_from_row(&row)?;
        let before = app.clone();
        patch.apply_to(&mut app)?;
        let columns: Vec<&str> = [
            "name",
            "enabled",
            "client_events",
            "subscription_count",
            "allowed_origins",
        ]
        .into_iter()
        .chain(LIMIT_NAMES.iter().copied())
        .chain(MERCURE_COLUMNS.split(',').map(str::trim))
        .collect();
        let sets: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, column)| format!("{column} = ${}", i + 1))
            .collect();
        let sql = format!(
            "UPDATE apps SET {} WHERE id = ${}",
            sets.join(", "),
            sets.len() + 1
        );
        let mut query = sqlx::query(&sql)
            .bind(app.name.clone())
            .bind(i64::from(app.enabled))
            .bind(i64::from(app.client_events))
            .bind(i64::from(app.subscription_count))
            .bind(app.allowed_origins.join("\n"));
        for value in limits_values(&app.limits) {
            query = query.bind(value);
        }
        query = mercure_row::bind_columns(query, &app.mercure);
        let done = query.bind(id.to_owned()).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AppNotFound(id.to_owned()));
        }
        bump_revision(&mut tx).await?;
        for (action, details) in update_entries(&before, &app) {
            self.audit_in(&mut tx, change(&app.tenant_id, action, id, details))
                .await?;
        }
        tx.commit().await?;
        Ok(app)
    }

    /// Adds a new key pair to app `id`; the current pair becomes the previous one and keeps
    /// working for `grace_seconds` (0: until revoked). Refused while a previous pair still works:
    /// an app has at most two active pairs.
    pub async fn rotate_key(&self, id: &str, grace_seconds: u64) -> Result<App, StoreError> {
        let mut app = self.get_app(id).await?;
        let now = self.clock.now_seconds();
        if let Some(previous) = app.previous_key.as_ref().filter(|p| p.active_at(now)) {
            return Err(Conflict::TwoActiveKeyPairs {
                app_id: id.to_owned(),
                previous_key: previous.key.clone(),
            }
            .into());
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
            return Err(Conflict::KeysChangedMeanwhile(id.to_owned()).into());
        }
        bump_revision(&mut tx).await?;
        let details = json!({ "new_key": app.key, "grace_seconds": grace_seconds });
        self.audit_in(&mut tx, change(&app.tenant_id, "key.rotated", id, details))
            .await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Revokes one of app `id`'s key pairs. Revoking the current pair promotes the previous one;
    /// the last working pair cannot be revoked.
    pub async fn revoke_key(&self, id: &str, key: &str) -> Result<App, StoreError> {
        let mut app = self.get_app(id).await?;
        let current_key = app.key.clone();
        let now = self.clock.now_seconds();
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
            return Err(StoreError::NotInApp {
                app_id: id.to_owned(),
                what: AppPart::Key(key.to_owned()),
            });
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
            return Err(Conflict::KeysChangedMeanwhile(id.to_owned()).into());
        }
        bump_revision(&mut tx).await?;
        let details = json!({ "key": key });
        self.audit_in(&mut tx, change(&app.tenant_id, "key.revoked", id, details))
            .await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Deletes app `id` and its usage history.
    pub async fn delete_app(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let found = sqlx::query("SELECT name, tenant_id FROM apps WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::AppNotFound(id.to_owned()))?;
        let (name, tenant): (String, String) =
            (found.try_get("name")?, found.try_get("tenant_id")?);
        sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
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
        let details = json!({ "name": name });
        self.audit_in(&mut tx, change(&tenant, "app.deleted", id, details))
            .await?;
        tx.commit().await?;
        Ok(())
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
