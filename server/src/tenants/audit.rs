//! The audit log: an append-only record of who did what in a tenant, when and from which
//! address. Writers call [`Store::record_audit`] after an action succeeded; nothing updates or
//! deletes a row. Details are JSON objects built by the callers from names, ids and settings,
//! never from a secret.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};

/// The actor name of the command line.
pub const CLI_ACTOR: &str = "cli";

/// Most entries one read returns.
pub const MAX_AUDIT_PAGE: u32 = 500;

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Grows with insertion.
    pub id: i64,
    /// The tenant (`None`: a platform action).
    pub tenant_id: Option<String>,
    /// The acting user's id (`None`: the CLI).
    pub actor_id: Option<String>,
    /// The acting user's email at the time, or `cli`.
    pub actor: String,
    /// What was done (`app.created`, `key.rotated`, `sign_in.failed`, ...).
    pub action: String,
    /// What it was done to (an app id, `app/webhook`, an email...).
    pub target: String,
    /// More about it (a JSON object; never a secret).
    pub details: serde_json::Value,
    /// The client's address (empty for the CLI).
    pub address: String,
    /// When, Unix milliseconds.
    pub at: i64,
}

/// An entry to append.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    /// The tenant (`None`: a platform action).
    pub tenant_id: Option<String>,
    /// The acting user's id (`None`: the CLI).
    pub actor_id: Option<String>,
    /// The acting user's email, or `cli`.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// A JSON object (never a secret).
    pub details: serde_json::Value,
    /// The client's address.
    pub address: String,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// One tenant's (`None`: every tenant's and the platform's: the operator's view).
    pub tenant_id: Option<String>,
    /// Only this action, or actions starting with it when it ends with `.` (`app.`).
    pub action: Option<String>,
    /// Only this actor (email or `cli`).
    pub actor: Option<String>,
    /// Only entries at or after this time, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// Only entries older than this id (the next page).
    pub before_id: Option<i64>,
    /// At most this many (capped at [`MAX_AUDIT_PAGE`]; 0 means the cap).
    pub limit: u32,
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry, sqlx::Error> {
    let details: String = row.try_get("details")?;
    Ok(AuditEntry {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        actor_id: row.try_get("actor_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        address: row.try_get("address")?,
        at: row.try_get("at")?,
    })
}

/// Clips a caller-supplied text (an email typed at the sign-in form) to a sane length.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl Store {
    /// Appends an entry (retried when two writers took the same id at once).
    pub async fn record_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        let details = if entry.details.is_object() {
            entry.details.to_string()
        } else {
            "{}".to_owned()
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut tx = self.write_tx().await?;
            let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS n FROM audit_log")
                .fetch_one(&mut *tx)
                .await?;
            let id = row.try_get::<i64, _>("n")? + 1;
            let inserted = sqlx::query(
                "INSERT INTO audit_log \
                 (id, tenant_id, actor_id, actor, action, target, details, address, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(entry.tenant_id.clone())
            .bind(entry.actor_id.clone())
            .bind(clip(&entry.actor, 254))
            .bind(clip(&entry.action, 64))
            .bind(clip(&entry.target, 300))
            .bind(details.clone())
            .bind(clip(&entry.address, 64))
            .bind(self.clock.now_millis())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(());
                }
                Err(_) if attempts < 5 => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Entries matching `filter`, newest first.
    pub async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT id, tenant_id, actor_id, actor, action, target, details, address, at \
             FROM audit_log WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.tenant_id.is_some() {
            sql.push_str(&format!(" AND tenant_id = {}", next()));
        }
        let prefix = filter.action.as_deref().filter(|a| a.ends_with('.'));
        if let Some(action) = &filter.action {
            if prefix.is_some() {
                sql.push_str(&format!(
                    " AND substr(action, 1, {}) = {}",
                    action.len(),
                    next()
                ));
            } else {
                sql.push_str(&format!(" AND action = {}", next()));
            }
        }
        if filter.actor.is_some() {
            sql.push_str(&format!(" AND actor = {}", next()));
        }
        if filter.since_ms.is_some() {
            sql.push_str(&format!(" AND at >= {}", next()));
        }
        if filter.before_id.is_some() {
            sql.push_str(&format!(" AND id < {}", next()));
        }
        let limit = match filter.limit {
            0 => MAX_AUDIT_PAGE,
            n => n.min(MAX_AUDIT_PAGE),
        };
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let mut query = sqlx::query(&sql);
        if let Some(tenant) = &filter.tenant_id {
            query = query.bind(tenant.clone());
        }
        if let Some(action) = &filter.action {
            query = query.bind(action.clone());
        }
        if let Some(actor) = &filter.actor {
            query = query.bind(actor.trim().to_ascii_lowercase());
        }
        if let Some(since) = filter.since_ms {
            query = query.bind(since);
        }
        if let Some(before) = filter.before_id {
            query = query.bind(before);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }
}
