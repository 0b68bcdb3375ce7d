//! What the dashboard's actions write to the audit log: one entry per change that went through
//! (and per sign-in), with the admin's id, email and client address. Details are names, ids and
//! settings; key secrets, passwords, Mercure HS256 keys and webhook header values never go in.

use herald_dashboard::{Admin, AuditQuery, AuditRow, WebhookForm};
use serde_json::{json, Map, Value};

use super::convert::mercure_view;
use super::AdminApi;
use crate::tenants::{limit_values, App, AuditFilter, NewAuditEntry, Permission, StoreError};

impl AdminApi {
    /// The audit entries `admin` may read: a member's own tenant's (every role may), the
    /// operator's every tenant's or the one asked for.
    pub(super) async fn audit_rows(
        &self,
        admin: &Admin,
        query: AuditQuery,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let tenant_id = if admin.operator {
            query.tenant_id.filter(|t| !t.is_empty())
        } else {
            let tenant = admin.tenant_id.clone().unwrap_or_default();
            self.node
                .store
                .scoped(super::AdminApi::actor(admin))
                .member_scope(&tenant, Permission::ReadAudit)?;
            Some(tenant)
        };
        let entries = self
            .node
            .store
            .audit_entries(&AuditFilter {
                tenant_id,
                action: query.action.filter(|a| !a.is_empty()),
                actor: query.actor.filter(|a| !a.is_empty()),
                since_ms: query.since_ms,
                before_id: query.before_id,
                limit: query.limit,
            })
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| AuditRow {
                id: e.id,
                tenant_id: e.tenant_id.unwrap_or_default(),
                actor: e.actor,
                action: e.action,
                target: e.target,
                details: e.details.to_string(),
                address: e.address,
                at_ms: e.at,
            })
            .collect())
    }

    /// Appends an entry for `admin`'s action; a failure to write it is logged (the action has
    /// already happened).
    pub(super) async fn audit(
        &self,
        admin: &Admin,
        tenant: Option<&str>,
        action: &str,
        target: &str,
        details: Value,
    ) {
        let entry = NewAuditEntry {
            tenant_id: tenant.map(str::to_owned),
            actor_id: Some(admin.id.clone()),
            actor: admin.email.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            details,
            address: admin.address.clone(),
        };
        if let Err(error) = self.node.store.record_audit(entry).await {
            tracing::error!(%error, action, "an audit entry could not be written");
        }
    }

    /// The entries for an app's settings form ([`update_entries`]).
    pub(super) async fn audit_update(&self, admin: &Admin, before: &App, after: &App) {
        for (action, details) in update_entries(before, after) {
            self.audit(admin, Some(&after.tenant_id), action, &after.id, details)
                .await;
        }
    }
}

/// What an app's change writes: `app.updated` (name, switches, origins), `limits.changed` and
/// `mercure.changed` (never the HS256 key: its mode only), each only when something in it
/// changed, with every changed field's `from` and `to`.
pub(crate) fn update_entries(before: &App, after: &App) -> Vec<(&'static str, Value)> {
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
    let (b, a) = (mercure_view(before, ""), mercure_view(after, ""));
    let mercure = diff(vec![
        ("key_mode", json!(b.key_mode), json!(a.key_mode)),
        ("public_key", json!(b.public_key), json!(a.public_key)),
        ("audience", json!(b.audience), json!(a.audience)),
        ("issuer", json!(b.issuer), json!(a.issuer)),
        ("anonymous", json!(b.anonymous), json!(a.anonymous)),
        ("history_size", json!(b.history_size), json!(a.history_size)),
        (
            "history_seconds",
            json!(b.history_seconds),
            json!(a.history_seconds),
        ),
    ]);
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

/// A URL without anything that may be a credential: its scheme and host (and port) only, the
/// path masked (`https://hooks.example.com/…`), no user info, query or fragment. Many receivers
/// carry their secret in the path (`/services/T../B../<secret>`, `/webhooks/<id>/<token>`).
pub(crate) fn masked_url(url: &str) -> String {
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

/// A webhook form's details: URL, events, prefix and header names (never their values, which
/// may be the receiver's credentials).
pub(super) fn webhook_details(form: &WebhookForm) -> Value {
    let names: Vec<&str> = form
        .headers
        .iter()
        .map(|h| h.split_once(':').map_or(h.as_str(), |(n, _)| n).trim())
        .filter(|n| !n.is_empty())
        .collect();
    json!({
        "url": masked_url(&form.url),
        "events": form.events,
        "prefix": form.prefix,
        "header_names": names,
    })
}
