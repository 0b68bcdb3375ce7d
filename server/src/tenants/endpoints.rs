//! Webhook endpoints and the durable delivery outbox, in the store.
//!
//! Endpoint changes bump the revision (a running server reloads them like apps). Delivery rows are
//! written by the server's background writer and updated by its delivery worker; they do not bump
//! the revision, except a retry requested from outside (the CLI), which a running server must see.
//! The header rule (which request headers an endpoint may set) is here too: the delivery worker
//! checks it again when sending.

use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{change, webhook_details, AuditBy};
use super::{bump_revision, fresh_id, AppPart, Store, StoreError};
use crate::protocol::{WebhookKind, WEBHOOK_KINDS};

/// A webhook endpoint of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// Id (digits).
    pub id: String,
    /// The app whose events it receives.
    pub app_id: String,
    /// Where requests are POSTed (`http://` or `https://`).
    pub url: String,
    /// The event types it wants.
    pub events: Vec<WebhookKind>,
    /// Only events on channels starting with this ('' = every channel).
    pub channel_prefix: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

impl Webhook {
    /// Whether this endpoint wants `kind` on `channel`.
    pub fn wants(&self, kind: WebhookKind, channel: &str) -> bool {
        self.events.contains(&kind) && channel.starts_with(self.channel_prefix.as_str())
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// The app.
    pub app_id: String,
    /// The endpoint URL.
    pub url: String,
    /// Event type names (`channel_occupied`, ...).
    pub events: Vec<String>,
    /// Channel-name prefix filter.
    pub channel_prefix: Option<String>,
    /// Extra headers as `Name: value`.
    pub headers: Vec<String>,
}

/// The state of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Retried for the whole retry window without success; kept (and retryable by hand) for
    /// `HERALD_WEBHOOK_FAILED_RETENTION_DAYS`, then pruned.
    Failed,
}

impl DeliveryStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> DeliveryStatus {
        match text {
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One webhook request: a batch of events for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Id; ids grow in order of occurrence.
    pub id: i64,
    /// The endpoint.
    pub webhook_id: String,
    /// The app.
    pub app_id: String,
    /// The events, a JSON array.
    pub events: String,
    /// The channels the events are about.
    pub channels: Vec<String>,
    /// Pending, delivered or failed.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// When the events occurred (or when a manual retry restarted it), Unix ms.
    pub created_at: i64,
    /// When the next attempt is due, Unix ms.
    pub next_attempt_at: i64,
    /// When the last attempt was made, Unix ms (0: never).
    pub last_attempt_at: i64,
    /// HTTP status of the last attempt (0: no answer).
    pub last_status: i64,
    /// Why the last attempt failed ('' when it did not).
    pub last_error: String,
    /// Duration of the last attempt, ms.
    pub latency_ms: i64,
}

const WEBHOOK_COLUMNS: &str = "id, app_id, url, events, channel_prefix, headers, created_at";
pub(super) const DELIVERY_COLUMNS: &str =
    "id, webhook_id, app_id, events, channels, status, attempts, \
     created_at, next_attempt_at, last_attempt_at, last_status, last_error, latency_ms";

fn webhook_from_row(row: &AnyRow) -> Result<Webhook, sqlx::Error> {
    let events: String = row.try_get("events")?;
    let headers: String = row.try_get("headers")?;
    let headers: Vec<(String, String)> =
        serde_json::from_str::<Vec<(String, String)>>(&headers).unwrap_or_default();
    Ok(Webhook {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        url: row.try_get("url")?,
        events: events.split(',').filter_map(WebhookKind::parse).collect(),
        channel_prefix: row.try_get("channel_prefix")?,
        headers,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn delivery_from_row(row: &AnyRow) -> Result<Delivery, sqlx::Error> {
    let channels: String = row.try_get("channels")?;
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        webhook_id: row.try_get("webhook_id")?,
        app_id: row.try_get("app_id")?,
        events: row.try_get("events")?,
        channels: channels
            .lines()
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        status: DeliveryStatus::parse(&status),
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_attempt_at: row.try_get("last_attempt_at")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        latency_ms: row.try_get("latency_ms")?,
    })
}

/// Header names Herald sets itself, hop-by-hop headers, and headers that carry an identity or
/// change how the request is routed or framed: an endpoint may not set them. Authentication for
/// the receiver goes in a custom header (`X-Webhook-Token: ...`).
const FORBIDDEN_HEADERS: [&str; 19] = [
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "te",
    "trailer",
    "connection",
    "keep-alive",
    "upgrade",
    "expect",
    "host",
    "cookie",
    "set-cookie",
    "authorization",
    "forwarded",
    "x-real-ip",
    "user-agent",
    "via",
    "max-forwards",
];

/// Forbidden prefixes: Herald's own `X-Pusher-*`, `Proxy-*`, `X-Forwarded-*`.
const FORBIDDEN_HEADER_PREFIXES: [&str; 3] = ["x-pusher-", "proxy-", "x-forwarded-"];

/// Whether an endpoint may set header `name` (checked at registration, and again when sending,
/// for rows stored before the rule).
pub fn header_allowed(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(FORBIDDEN_HEADERS.contains(&lower.as_str())
        || FORBIDDEN_HEADER_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p)))
}

/// Most endpoints one app may have.
const MAX_WEBHOOKS_PER_APP: i64 = 10;

fn parse_header(raw: &str) -> Result<(String, String), StoreError> {
    let (name, value) = raw.split_once(':').ok_or_else(|| {
        StoreError::Invalid(format!("invalid header {raw:?}: expected 'Name: value'"))
    })?;
    let name = name.trim();
    let value = value.trim();
    let token = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token || value.len() > 4000 || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(StoreError::Invalid(format!("invalid header {raw:?}")));
    }
    if !header_allowed(name) {
        return Err(StoreError::Invalid(format!(
            "header {name} cannot be set on a webhook (Herald sets it, or it is a hop-by-hop, \
             routing or identity header); use a custom header such as X-Webhook-Token"
        )));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn validate_url(url: &str) -> Result<String, StoreError> {
    let url = url.trim();
    let invalid = || {
        StoreError::Invalid(format!(
            "invalid webhook URL {url:?}: expected http://host/... or https://host/..."
        ))
    };
    if url.len() > 2000 || url.contains(char::is_whitespace) {
        return Err(invalid());
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(StoreError::Invalid(
            "a webhook URL may not carry credentials (user:password@); \
             send them in a custom header such as X-Webhook-Token"
                .into(),
        ));
    }
    Ok(url.to_owned())
}

/// Validates an endpoint's settings.
fn check_webhook(new: &NewWebhook) -> Result<Webhook, StoreError> {
    let url = validate_url(&new.url)?;
    let mut events = Vec::new();
    for name in new.events.iter().flat_map(|e| e.split(',')) {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let kind = WebhookKind::parse(name).ok_or_else(|| {
            let all: Vec<&str> = WEBHOOK_KINDS.iter().map(|k| k.as_str()).collect();
            StoreError::Invalid(format!(
                "unknown webhook event {name:?}: expected some of {}",
                all.join(", ")
            ))
        })?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }
    if events.is_empty() {
        return Err(StoreError::Invalid(
            "a webhook needs at least one event type (--events)".into(),
        ));
    }
    events.sort();
    let headers = new
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let prefix = new.channel_prefix.clone().unwrap_or_default();
    if prefix.len() > 200 {
        return Err(StoreError::Invalid(
            "the channel prefix is longer than 200 characters".into(),
        ));
    }
    Ok(Webhook {
        id: String::new(),
        app_id: new.app_id.clone(),
        url,
        events,
        channel_prefix: prefix,
        headers,
        created_at: 0,
    })
}

/// What a store write of new deliveries needs.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Id (grows in order of occurrence).
    pub id: i64,
    /// The endpoint.
    pub webhook_id: String,
    /// The app.
    pub app_id: String,
    /// The events, a JSON array.
    pub events: String,
    /// Their channels.
    pub channels: Vec<String>,
    /// When they occurred, Unix ms.
    pub created_at: i64,
}

impl NewDelivery {
    /// The delivery as written: pending, due at once.
    pub fn into_delivery(self) -> Delivery {
        Delivery {
            id: self.id,
            webhook_id: self.webhook_id,
            app_id: self.app_id,
            events: self.events,
            channels: self.channels,
            status: DeliveryStatus::Pending,
            attempts: 0,
            created_at: self.created_at,
            next_attempt_at: self.created_at,
            last_attempt_at: 0,
            last_status: 0,
            last_error: String::new(),
            latency_ms: 0,
        }
    }
}

/// A held row's new content once comebacks took their events out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEdit {
    /// The row.
    pub id: i64,
    /// The events left, a JSON array.
    pub events: String,
    /// Their channels.
    pub channels: Vec<String>,
}

/// The outcome of one attempt, to record.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The new status.
    pub status: DeliveryStatus,
    /// Attempts made so far, this one included.
    pub attempts: i64,
    /// When it was made, Unix ms.
    pub at: i64,
    /// When the next is due (pending only), Unix ms.
    pub next_attempt_at: i64,
    /// HTTP status (0: no answer).
    pub http_status: i64,
    /// Why it failed ('' on success).
    pub error: String,
    /// How long it took, ms.
    pub latency_ms: i64,
}

impl Store {
    /// Adds a webhook endpoint to an existing app.
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StoreError> {
        self.get_app(&new.app_id).await?;
        let checked = check_webhook(&new)?;
        let mut tx = self.write_tx().await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM webhooks WHERE app_id = $1")
            .bind(new.app_id.clone())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if count >= MAX_WEBHOOKS_PER_APP {
            return Err(StoreError::Invalid(format!(
                "app {} already has {count} webhooks, the most an app may have",
                new.app_id
            )));
        }
        let id = fresh_id(&mut tx, "webhooks", 10_000..100_000_000).await?;
        let webhook = Webhook {
            id,
            created_at: self.clock.now_seconds(),
            ..checked
        };
        let names: Vec<&str> = webhook.events.iter().map(|k| k.as_str()).collect();
        sqlx::query(&format!(
            "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(webhook.id.clone())
        .bind(webhook.app_id.clone())
        .bind(webhook.url.clone())
        .bind(names.join(","))
        .bind(webhook.channel_prefix.clone())
        .bind(serde_json::to_string(&webhook.headers).unwrap_or_else(|_| "[]".into()))
        .bind(webhook.created_at)
        .execute(&mut *tx)
        .await?;
        bump_revision(&mut tx).await?;
        self.audit_webhook(
            &mut tx,
            "webhook.created",
            &webhook,
            webhook_details(&webhook),
        )
        .await?;
        tx.commit().await?;
        Ok(webhook)
    }

    /// Replaces the settings of endpoint `id` of `new.app_id`.
    pub async fn update_webhook(&self, id: &str, new: NewWebhook) -> Result<Webhook, StoreError> {
        let existing = self
            .list_webhooks(Some(&new.app_id))
            .await?
            .into_iter()
            .find(|h| h.id == id)
            .ok_or_else(|| StoreError::NotInApp {
                app_id: new.app_id.clone(),
                what: AppPart::Webhook(id.to_owned()),
            })?;
        let checked = check_webhook(&new)?;
        let mut tx = self.write_tx().await?;
        let names: Vec<&str> = checked.events.iter().map(|k| k.as_str()).collect();
        sqlx::query(
            "UPDATE webhooks SET url = $1, events = $2, channel_prefix = $3, headers = $4 \
             WHERE id = $5 AND app_id = $6",
        )
        .bind(checked.url.clone())
        .bind(names.join(","))
        .bind(checked.channel_prefix.clone())
        .bind(serde_json::to_string(&checked.headers).unwrap_or_else(|_| "[]".into()))
        .bind(id.to_owned())
        .bind(new.app_id.clone())
        .execute(&mut *tx)
        .await?;
        bump_revision(&mut tx).await?;
        let updated = Webhook {
            id: existing.id,
            app_id: existing.app_id,
            created_at: existing.created_at,
            ..checked
        };
        self.audit_webhook(
            &mut tx,
            "webhook.updated",
            &updated,
            webhook_details(&updated),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// The endpoints of `app_id`, or of every app.
    pub async fn list_webhooks(&self, app_id: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let rows = match app_id {
            Some(app) => {
                sqlx::query(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE app_id = $1 ORDER BY created_at, id"
            ))
                .bind(app.to_owned())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(webhook_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Removes endpoint `id` of `app_id` (its pending deliveries are dropped with it).
    pub async fn delete_webhook(&self, app_id: &str, id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND app_id = $2"
        ))
        .bind(id.to_owned())
        .bind(app_id.to_owned())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotInApp {
            app_id: app_id.to_owned(),
            what: AppPart::Webhook(id.to_owned()),
        })?;
        let removed = webhook_from_row(&row)?;
        sqlx::query("DELETE FROM webhooks WHERE id = $1 AND app_id = $2")
            .bind(id.to_owned())
            .bind(app_id.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'pending'")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        bump_revision(&mut tx).await?;
        self.audit_webhook(&mut tx, "webhook.deleted", &removed, json!({}))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a webhook change's entry (target `app/webhook`, in the app's tenant) in `tx`.
    async fn audit_webhook(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        action: &str,
        hook: &Webhook,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        if AuditBy::current().is_none() {
            return Ok(());
        }
        let row = sqlx::query("SELECT tenant_id FROM apps WHERE id = $1")
            .bind(hook.app_id.clone())
            .fetch_one(&mut **tx)
            .await?;
        let tenant: String = row.try_get("tenant_id")?;
        let target = format!("{}/{}", hook.app_id, hook.id);
        self.audit_in(tx, change(&tenant, action, &target, details))
            .await
    }

    /// Appends deliveries in one transaction, due at once.
    pub async fn insert_deliveries(&self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        let rows: Vec<(NewDelivery, i64)> = deliveries
            .iter()
            .map(|d| (d.clone(), d.created_at))
            .collect();
        self.insert_deliveries_due(&rows).await
    }

    /// Appends deliveries in one transaction, each due at the time given with it (Unix ms).
    pub async fn insert_deliveries_due(
        &self,
        deliveries: &[(NewDelivery, i64)],
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (d, due) in deliveries {
            sqlx::query(&format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, 0, 0, '', 0)"
            ))
            .bind(d.id)
            .bind(d.webhook_id.clone())
            .bind(d.app_id.clone())
            .bind(d.events.clone())
            .bind(d.channels.join("\n"))
            .bind(d.created_at)
            .bind(*due)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Edits held rows in one transaction (comebacks within the vacate delay): rewrites the
    /// events and channels of `rewrite` and removes `remove`, each only while it is pending,
    /// never attempted and held by `owner` (the node's claim, see `claims`). Applies all or
    /// nothing: false (nothing changed) when a row is not in that state any more.
    pub async fn edit_held_deliveries(
        &self,
        rewrite: &[HeldEdit],
        remove: &[i64],
        owner: &str,
    ) -> Result<bool, StoreError> {
        if rewrite.is_empty() && remove.is_empty() {
            return Ok(true);
        }
        let mut tx = self.write_tx().await?;
        for edit in rewrite {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET events = $1, channels = $2 \
                 WHERE id = $3 AND status = 'pending' AND attempts = 0 AND claimed_by = $4",
            )
            .bind(edit.events.clone())
            .bind(edit.channels.join("\n"))
            .bind(edit.id)
            .bind(owner.to_owned())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        // Ids are integers the process made, so the list is written inline, in chunks.
        for ids in remove.chunks(500) {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            let done = sqlx::query(&format!(
                "DELETE FROM webhook_deliveries WHERE id IN ({}) AND status = 'pending' \
                 AND attempts = 0 AND claimed_by = $1",
                list.join(",")
            ))
            .bind(owner.to_owned())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != u64::try_from(ids.len()).unwrap_or(u64::MAX) {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The largest delivery id in the store (0 when there is none).
    pub async fn max_delivery_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(id) AS m FROM webhook_deliveries")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("m")?.unwrap_or(0))
    }

    /// Every pending delivery, oldest first.
    pub async fn pending_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = 'pending' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Records an attempt (whoever holds the row; the worker uses
    /// [`Store::record_claimed_attempt`]).
    pub async fn record_attempt(&self, id: i64, attempt: &Attempt) -> Result<(), StoreError> {
        self.update_attempt(id, attempt, None).await?;
        Ok(())
    }

    /// Writes `attempt` on row `id`: any row when `holder` is `None`; else only a pending row
    /// `holder` claimed, which a finished attempt (delivered, failed) releases. Returns the
    /// rows written (0 or 1).
    pub(super) async fn update_attempt(
        &self,
        id: i64,
        attempt: &Attempt,
        holder: Option<&str>,
    ) -> Result<u64, StoreError> {
        let (release, only_held) = match holder {
            None => ("", ""),
            Some(_) if attempt.status == DeliveryStatus::Pending => {
                ("", " AND claimed_by = $9 AND status = 'pending'")
            }
            Some(_) => (
                ", claimed_by = '', claimed_until = 0",
                " AND claimed_by = $9 AND status = 'pending'",
            ),
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, last_attempt_at = $3, \
             next_attempt_at = $4, last_status = $5, last_error = $6, latency_ms = $7{release} \
             WHERE id = $8{only_held}"
        );
        let mut query = sqlx::query(&sql)
            .bind(attempt.status.as_str())
            .bind(attempt.attempts)
            .bind(attempt.at)
            .bind(attempt.next_attempt_at)
            .bind(attempt.http_status)
            .bind(attempt.error.clone())
            .bind(attempt.latency_ms)
            .bind(id);
        if let Some(holder) = holder {
            query = query.bind(holder.to_owned());
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// The most recent deliveries of `app_id` with `status` (any when `None`), newest first.
    pub async fn deliveries(
        &self,
        app_id: &str,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = match status {
            Some(status) => {
                sqlx::query(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE app_id = $1 AND status = $2 ORDER BY id DESC LIMIT $3"
                ))
                .bind(app_id.to_owned())
                .bind(status.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE app_id = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(app_id.to_owned())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Puts failed deliveries of `app_id` (one, or all when `id` is `None`) back in the queue with
    /// a fresh retry window; returns how many. A running server picks them up within 2 seconds.
    pub async fn retry_failed(
        &self,
        app_id: &str,
        id: Option<i64>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = match id {
            Some(id) => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
                     created_at = $1, next_attempt_at = $1, claimed_by = '', claimed_until = 0 \
                     WHERE app_id = $2 AND id = $3 AND status = 'failed'",
                )
                .bind(now_ms)
                .bind(app_id.to_owned())
                .bind(id)
                .execute(&mut *tx)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
                     created_at = $1, next_attempt_at = $1, claimed_by = '', claimed_until = 0 \
                     WHERE app_id = $2 AND status = 'failed'",
                )
                .bind(now_ms)
                .bind(app_id.to_owned())
                .execute(&mut *tx)
                .await?
            }
        };
        if done.rows_affected() == 0 {
            return Err(StoreError::NotInApp {
                app_id: app_id.to_owned(),
                what: id.map_or(AppPart::FailedDeliveries, AppPart::FailedDelivery),
            });
        }
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Forgets delivered requests created before `delivered_before_ms` (the history the
    /// dashboard shows) and failed ones whose last attempt was before `failed_before_ms` (kept
    /// for the retention); returns how many rows went.
    pub async fn prune_deliveries(
        &self,
        delivered_before_ms: i64,
        failed_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE (status = 'delivered' AND created_at < $1) \
             OR (status = 'failed' AND last_attempt_at < $2)",
        )
        .bind(delivered_before_ms)
        .bind(failed_before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_urls_are_checked() {
        assert_eq!(
            parse_header("X-Token: abc").unwrap(),
            ("X-Token".into(), "abc".into())
        );
        assert!(parse_header("X-Pusher-Signature: forged").is_err());
        for forbidden in [
            "Host: internal",
            "cookie: a=b",
            "Authorization: Bearer x",
            "Transfer-Encoding: chunked",
            "Proxy-Authorization: x",
            "X-Forwarded-For: 1.2.3.4",
            "Connection: close",
        ] {
            assert!(parse_header(forbidden).is_err(), "{forbidden}");
        }
        assert!(validate_url("http://user:pass@example.com/").is_err());
        assert!(validate_url("http://user@example.com/").is_err());
        assert!(parse_header("Bad Header: x").is_err());
        assert!(parse_header("no colon").is_err());
        assert!(validate_url("https://example.com/hook").is_ok());
        assert!(validate_url("http://127.0.0.1:8080").is_ok());
        assert!(validate_url("ftp://example.com").is_err());
        assert!(validate_url("https://").is_err());
    }
}
