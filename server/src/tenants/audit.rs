//! The audit log: an append-only record of who did what in a tenant, when and from which
//! address. A change the store makes (an app, its limits, keys, webhooks, members,
//! invitations, a tenant's plans, a password) writes its entry itself, inside the change's own
//! transaction, so a crash or a failed insert cannot leave a change without its record: the
//! entry is written only while the task runs inside [`AuditBy::scope`] (the dashboard's and
//! the CLI's actions), which says who acts and from where. Events that change nothing (a
//! sign-in, a revealed key) are appended on their own with [`Store::record_audit`]. Nothing
//! updates a row; only the retention sweep ([`Store::sweep_audit`]) deletes old ones. Details
//! are JSON objects of names, ids and settings, never a secret.

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{limit_values, App, MercureKey, Store, StoreError, Webhook};

tokio::task_local! {
    /// Who makes the store's changes in the current task (see [`AuditBy::scope`]).
    static ACTING: AuditBy;
}

/// Who makes the changes of a task, for the entries the store writes in those changes'
/// transactions.
#[derive(Debug, Clone, Default)]
pub struct AuditBy {
    /// The acting user's id (`None`: the CLI).
    pub actor_id: Option<String>,
    /// The acting user's email, or `cli`.
    pub actor: String,
    /// The client's address (empty for the CLI).
    pub address: String,
}

impl AuditBy {
    /// The command line.
    pub fn cli() -> AuditBy {
        AuditBy {
            actor_id: None,
            actor: CLI_ACTOR.to_owned(),
            address: String::new(),
        }
    }

    /// Runs `work` with `self` as the actor of every audited store change it makes: each such
    /// change writes its entry in its own transaction (outside a scope, none is written: the
    /// first start, tests' setup).
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        ACTING.scope(self, work).await
    }

    /// The actor of the current task, if it runs inside [`AuditBy::scope`].
    pub fn current() -> Option<AuditBy> {
        ACTING.try_with(Clone::clone).ok()
    }
}

/// An entry a change writes in its transaction (see [`Store::audit_in`]).
pub(super) struct Change<'a> {
    /// The tenant (`None`: a platform action).
    pub tenant: Option<&'a str>,
    /// What was done.
    pub action: &'a str,
    /// What it was done to.
    pub target: &'a str,
    /// A JSON object (never a secret).
    pub details: serde_json::Value,
}

/// The actor name of the command line.
pub const CLI_ACTOR: &str = "cli";

/// Most entries one read returns.
pub const MAX_AUDIT_PAGE: u32 = 500;

/// Entries one delete of the retention sweep removes at most: each batch is its own short
/// statement, so writers of new entries wait for one batch, never for the whole backlog.
pub const AUDIT_SWEEP_BATCH: i64 = 1000;

/// Batches one sweep runs at most (the rest waits for the next sweep, 10 minutes later).
pub(super) const AUDIT_SWEEP_MAX_BATCHES: u64 = 100;

/// Entries one tenant keeps at most ([`Store::cap_audit`], run with the retention sweep):
/// past it its oldest go first.
pub const AUDIT_MAX_PER_TENANT: i64 = 100_000;

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

/// How long an audited write waits for the audit counter's row on PostgreSQL before it fails
/// (and its change with it).
pub const AUDIT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest `details` (JSON text) an entry keeps; longer ones are clipped.
pub const MAX_AUDIT_DETAILS_BYTES: usize = 4096;

/// A tenant's change.
pub(super) fn change<'a>(
    tenant: &'a str,
    action: &'a str,
    target: &'a str,
    details: Value,
) -> Change<'a> {
    Change {
        tenant: Some(tenant),
        action,
        target,
        details,
    }
}

/// The audit counter's next id, in one statement: past both the counter and the largest id
/// already written, so a row the counter never counted (an older binary taking the largest id
/// plus one, a restore, a manual insert) never makes every later entry clash (which, rolled
/// back with its change, would leave the counter stuck for good). The largest id is one step
/// down the primary key's index. PostgreSQL's two-argument maximum is `GREATEST`, SQLite's `MAX`.
fn next_id_sql(sqlite: bool) -> &'static str {
    if sqlite {
        "UPDATE audit_counter SET last_id = \
         MAX(last_id, (SELECT COALESCE(MAX(id), 0) FROM audit_log)) + 1 \
         WHERE id = 1 RETURNING last_id"
    } else {
        "UPDATE audit_counter SET last_id = \
         GREATEST(last_id, (SELECT COALESCE(MAX(id), 0) FROM audit_log)) + 1 \
         WHERE id = 1 RETURNING last_id"
    }
}

/// Appends `entry` inside `tx`. The id is the audit counter's next value: the counter row's
/// update is held to the commit, so concurrent writers take ids in commit order (on SQLite the
/// write lock already serialises them) and pages going back by id miss nothing.
async fn insert_entry(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sqlite: bool,
    entry: &NewAuditEntry,
    at: i64,
) -> Result<(), StoreError> {
    let details = if entry.details.is_object() {
        entry.details.to_string()
    } else {
        "{}".to_owned()
    };
    // Details are built from what the change holds (names, origin lists, URLs), which a member
    // can make long and repeat: past the cap they are kept as a clipped string (a quarter of
    // the cap in characters, so at most about the cap in bytes) with the full length, so one
    // row stays small whatever the change.
    let details = if details.len() > MAX_AUDIT_DETAILS_BYTES {
        json!({
            "clipped": clip(&details, MAX_AUDIT_DETAILS_BYTES / 4),
            "bytes": details.len(),
        })
        .to_string()
    } else {
        details
    };
    if !sqlite {
        // Every audited write in the cluster takes this one row: a holder that stalls (a
        // starved node, a half-open connection) must turn the others' waits into a clear error,
        // not a hang. The setting ends with the transaction.
        sqlx::query(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            AUDIT_LOCK_TIMEOUT.as_millis()
        ))
        .execute(&mut **tx)
        .await?;
    }
    let Some(row) = sqlx::query(next_id_sql(sqlite))
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Err(StoreError::Invalid(
            "the audit counter's row (audit_counter, id 1) is missing".into(),
        ));
    };
    let id: i64 = row.try_get("last_id")?;
    sqlx::query(
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
    .bind(details)
    .bind(clip(&entry.address, 64))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    // The tenant's count, for the cap ([`Store::cap_audit`]).
    sqlx::query(
        "INSERT INTO audit_counts (tenant_id, entries) VALUES ($1, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET entries = audit_counts.entries + 1",
    )
    .bind(entry.tenant_id.clone().unwrap_or_default())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes the entries `rows` names (by id) inside `tx`, and takes each one deleted off its
/// tenant's count: counted from what the delete returns, so two nodes sweeping the same rows
/// at once take each off once. Returns how many went.
async fn delete_entries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[(i64, String)],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let list = (1..=rows.len())
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("DELETE FROM audit_log WHERE id IN ({list}) RETURNING tenant_id");
    let mut delete = sqlx::query(&sql);
    for (id, _) in rows {
        delete = delete.bind(*id);
    }
    let gone = delete.fetch_all(&mut **tx).await?;
    let mut per_tenant: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for row in &gone {
        let tenant = row
            .try_get::<Option<String>, _>("tenant_id")?
            .unwrap_or_default();
        *per_tenant.entry(tenant).or_default() += 1;
    }
    for (tenant, n) in per_tenant {
        sqlx::query("UPDATE audit_counts SET entries = entries - $1 WHERE tenant_id = $2")
            .bind(n)
            .bind(tenant)
            .execute(&mut **tx)
            .await?;
    }
    Ok(gone.len() as u64)
}

/// `(id, tenant)` of the rows a sweep's select answered (`tenant_id` as `''` when NULL).
fn id_and_tenant(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<(i64, String)>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("id")?,
                row.try_get::<Option<String>, _>("tenant_id")?
                    .unwrap_or_default(),
            ))
        })
        .collect()
}

impl Store {
    /// Appends an entry on its own: for events that change nothing in the store (a sign-in, a
    /// revealed key). A change writes its entry in its own transaction instead
    /// ([`AuditBy::scope`]).
    pub async fn record_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        insert_entry(&mut tx, self.sqlite, &entry, self.clock.now_millis()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes `change`'s entry inside `tx` when the task has an actor ([`AuditBy::scope`]);
    /// an error here fails the change (the caller's transaction rolls back).
    pub(super) async fn audit_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        let Some(by) = AuditBy::current() else {
            return Ok(());
        };
        self.audit_as(tx, by, change).await
    }

    /// [`Store::audit_in`] with the actor given (a member who just joined acts as themself).
    pub(super) async fn audit_as(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        by: AuditBy,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        let entry = NewAuditEntry {
            tenant_id: change.tenant.map(str::to_owned),
            actor_id: by.actor_id,
            actor: by.actor,
            action: change.action.to_owned(),
            target: change.target.to_owned(),
            details: change.details,
            address: by.address,
        };
        insert_entry(tx, self.sqlite, &entry, self.clock.now_millis()).await
    }

    /// Deletes entries written before `before_ms` (Unix milliseconds), oldest first, in batches
    /// of [`AUDIT_SWEEP_BATCH`], at most [`AUDIT_SWEEP_MAX_BATCHES`] of them; returns how many
    /// went. The retention sweep: the only delete of the log.
    pub async fn sweep_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for _ in 0..AUDIT_SWEEP_MAX_BATCHES {
            let mut tx = self.write_tx().await?;
            let rows = sqlx::query(
                "SELECT id, tenant_id FROM audit_log WHERE at < $1 ORDER BY at, id LIMIT $2",
            )
            .bind(before_ms)
            .bind(AUDIT_SWEEP_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let rows = id_and_tenant(rows)?;
            let done = delete_entries(&mut tx, &rows).await?;
            tx.commit().await?;
            deleted += done;
            if rows.len() < AUDIT_SWEEP_BATCH as usize {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(deleted)
    }

    /// Trims every tenant holding more than `max_per_tenant` entries to its newest
    /// `max_per_tenant`, oldest first, in batches of [`AUDIT_SWEEP_BATCH`] (at most
    /// [`AUDIT_SWEEP_MAX_BATCHES`] a call; the rest at the next sweep). Retention bounds the log
    /// in time; this bounds it in rows per tenant, whatever rate a tenant's members and tokens
    /// write at. Platform entries are not capped. Returns how many went.
    pub async fn cap_audit(&self, max_per_tenant: i64) -> Result<u64, StoreError> {
        let over = sqlx::query(
            "SELECT tenant_id, entries FROM audit_counts \
             WHERE entries > $1 AND tenant_id <> '' ORDER BY entries DESC LIMIT 100",
        )
        .bind(max_per_tenant)
        .fetch_all(&self.pool)
        .await?;
        let mut deleted = 0;
        let mut batches = 0;
        for row in over {
            let tenant: String = row.try_get("tenant_id")?;
            let mut excess = row.try_get::<i64, _>("entries")? - max_per_tenant;
            while excess > 0 && batches < AUDIT_SWEEP_MAX_BATCHES {
                batches += 1;
                let mut tx = self.write_tx().await?;
                let rows = sqlx::query(
                    "SELECT id, tenant_id FROM audit_log WHERE tenant_id = $1 \
                     ORDER BY id LIMIT $2",
                )
                .bind(tenant.clone())
                .bind(excess.min(AUDIT_SWEEP_BATCH))
                .fetch_all(&mut *tx)
                .await?;
                let rows = id_and_tenant(rows)?;
                let done = delete_entries(&mut tx, &rows).await?;
                tx.commit().await?;
                deleted += done;
                if rows.is_empty() {
                    break;
                }
                excess -= rows.len() as i64;
                tokio::task::yield_now().await;
            }
        }
        Ok(deleted)
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

/// What an app's change writes: `app.updated` (name, switches, origins), `limits.changed` and
/// `mercure.changed` (never the HS256 key: its mode only), each only when something in it
/// changed, with every changed field's `from` and `to`.
pub(super) fn update_entries(before: &App, after: &App) -> Vec<(&'static str, Value)> {
    let diff = |pairs: Vec<(&str, Value, Value)>| {
        let mut changed = Map::new();
        for (name, from, to) in pairs {
            if from != to {
                changed.insert(name.to_owned(), json!({ "from": from, "to": to }));
            }
        }
        changed
    };
    let app = diff(vec![
        ("name", json!(before.name), json!(after.name)),
        ("enabled", json!(before.enabled), json!(after.enabled)),
        (
            "client_events",
            json!(before.client_events),
            json!(after.client_events),
        ),
        (
            "subscription_count",
            json!(before.subscription_count),
            json!(after.subscription_count),
        ),
        (
            "allowed_origins",
            json!(before.allowed_origins),
            json!(after.allowed_origins),
        ),
    ]);
    let limits = diff(
        limit_values(&before.limits)
            .into_iter()
            .zip(limit_values(&after.limits))
            .map(|((name, from), (_, to))| (name, json!(from), json!(to)))
            .collect(),
    );
    let (b, a) = (mercure_fields(before), mercure_fields(after));
    let mut mercure = diff(
        b.into_iter()
            .zip(a)
            .map(|((name, from), (_, to))| (name, from, to))
            .collect(),
    );
    // One HS256 key replaced by another shows nothing above (the key is never written, nor a
    // hash of it, which a short key could be guessed back from), yet whoever swaps it can sign
    // subscriber tokens: say that it was replaced.
    if let (MercureKey::Hmac(from), MercureKey::Hmac(to)) =
        (&before.mercure.jwt_key, &after.mercure.jwt_key)
    {
        if from.expose() != to.expose() {
            mercure.insert("hs256_key".to_owned(), json!("replaced"));
        }
    }
    [
        ("app.updated", app),
        ("limits.changed", limits),
        ("mercure.changed", mercure),
    ]
    .into_iter()
    .filter(|(_, changed)| !changed.is_empty())
    .map(|(action, changed)| (action, Value::Object(changed)))
    .collect()
}

/// An app's Mercure settings as the audit shows them: the key's mode and a public key's
/// fingerprint ([`key_fingerprint`]), never an HS256 key.
fn mercure_fields(app: &App) -> Vec<(&'static str, Value)> {
    let m = &app.mercure;
    let (key_mode, public_key) = match &m.jwt_key {
        MercureKey::AppSecret => ("app_secret", String::new()),
        MercureKey::Hmac(_) => ("hs256", String::new()),
        MercureKey::PublicPem(pem) => ("public_key", key_fingerprint(pem)),
    };
    vec![
        ("key_mode", json!(key_mode)),
        ("public_key", json!(public_key)),
        ("audience", json!(m.audience.clone().unwrap_or_default())),
        ("issuer", json!(m.issuer.clone().unwrap_or_default())),
        ("anonymous", json!(m.anonymous)),
        ("history_size", json!(m.history_size)),
        ("history_seconds", json!(m.history_seconds)),
    ]
}

/// A public key as the audit shows it: `sha256:` and the first 16 hex digits of its PEM's
/// SHA-256. Enough to tell keys apart and match one against a file; the PEM itself (up to
/// 16 KiB) would make each change of it a large row anyone who may edit the app can repeat.
pub fn key_fingerprint(pem: &str) -> String {
    let digest = Sha256::digest(pem.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A URL without anything that may be a credential: its scheme and host (and port) only, the
/// path masked (`https://hooks.example.com/…`), no user info, query or fragment. Many receivers
/// carry their secret in the path (`/services/T../B../<secret>`, `/webhooks/<id>/<token>`).
pub fn masked_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or("");
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if path.trim_matches('/').is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/…")
    }
}

/// A webhook's details: its masked URL, events, prefix and header names (never their values,
/// which may be the receiver's credentials).
pub(super) fn webhook_details(hook: &Webhook) -> Value {
    json!({
        "url": masked_url(&hook.url),
        "events": hook.events.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "prefix": hook.channel_prefix,
        "header_names": hook.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
    })
}
