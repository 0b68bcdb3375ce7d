//! Conversions between the store's types and the dashboard port's plain data.

use herald_dashboard::{
    Admin, DeliveryRow, MemberRow, MercureChanges, MercureKeyChange, MercureView, PortError,
    PortResult, Role, WebhookForm,
};

use crate::tenants::{
    App, Delivery, DeliveryStatus, MercureKey, MercurePatch, MercureSettings, NewWebhook, User,
    UserRole,
};

pub(super) fn limit_label(name: &str) -> &'static str {
    match name {
        "max_connections" => "Concurrent connections",
        "max_daily_messages" => "Messages per UTC day",
        "max_client_events_per_second" => "Client events per second per connection",
        "max_backend_events_per_second" => "REST events per second",
        "max_read_requests_per_second" => "REST reads per second",
        "max_presence_members" => "Members per presence channel",
        "max_presence_member_bytes" => "Bytes of presence user_info",
        "max_channel_name_length" => "Channel name length (at most 200)",
        "max_event_name_length" => "Event name length",
        "max_event_payload_bytes" => "Bytes of event data",
        "max_channels_per_trigger" => "Channels per trigger",
        "max_batch_size" => "Events per batch",
        "max_channels" => "Occupied channels (per node)",
        "max_cache_channels" => "Cache channels (per node)",
        "max_subscriptions_per_connection" => "Subscriptions per connection (at most 1000)",
        "max_subscribes_per_second" => "Subscribes per second per connection",
        _ => "Limit",
    }
}

pub(super) fn delivery_row(d: Delivery) -> DeliveryRow {
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&d.events)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    let events = if names.is_empty() {
        "test request".to_owned()
    } else {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for name in names {
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => counts.push((name, 1)),
            }
        }
        counts
            .iter()
            .map(|(n, c)| {
                if *c > 1 {
                    format!("{n} ×{c}")
                } else {
                    n.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    DeliveryRow {
        id: d.id,
        webhook_id: d.webhook_id,
        status: match d.status {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
        .to_owned(),
        attempts: d.attempts,
        // Tenants see a coarse outcome only (no status code, no kind of connection failure):
        // the operator's log has the detail.
        last_status: 0,
        last_error: match d.status {
            DeliveryStatus::Delivered => "delivered".to_owned(),
            _ if d.attempts == 0 => String::new(),
            _ => crate::webhooks::coarse_outcome(d.last_status),
        },
        // How long a failure took tells a closed port from a filtered one: delivered only.
        latency_ms: if d.status == DeliveryStatus::Delivered {
            d.latency_ms
        } else {
            0
        },
        events,
        created_at_ms: d.created_at,
    }
}

pub(super) fn webhook_input(app_id: &str, form: WebhookForm) -> NewWebhook {
    NewWebhook {
        app_id: app_id.to_owned(),
        url: form.url,
        events: form.events,
        channel_prefix: Some(form.prefix),
        headers: form.headers,
    }
}

/// The settings page's view of an app's Mercure settings (the HS256 key stays out of it).
pub(super) fn mercure_view(app: &App, public_url: &str) -> MercureView {
    let m = &app.mercure;
    let (key_mode, public_key) = match &m.jwt_key {
        MercureKey::AppSecret => ("app_secret", String::new()),
        MercureKey::Hmac(_) => ("hs256", String::new()),
        MercureKey::PublicPem(pem) => ("public_key", pem.clone()),
    };
    MercureView {
        hub_url: MercureSettings::hub_url(&app.id, public_url),
        key_mode: key_mode.to_owned(),
        public_key,
        audience: m.audience.clone().unwrap_or_default(),
        issuer: m.issuer.clone().unwrap_or_default(),
        anonymous: m.anonymous,
        history_size: u64::from(m.history_size),
        history_seconds: u64::from(m.history_seconds),
    }
}

pub(super) fn mercure_patch(changes: MercureChanges) -> MercurePatch {
    MercurePatch {
        jwt_key: changes.key.map(|key| match key {
            MercureKeyChange::AppSecret => MercureKey::AppSecret,
            MercureKeyChange::Hmac(key) => MercureKey::Hmac(crate::auth::Secret::new(key)),
            MercureKeyChange::PublicPem(pem) => MercureKey::PublicPem(pem),
        }),
        audience: changes.audience,
        issuer: changes.issuer,
        anonymous: changes.anonymous,
        history_size: changes.history_size,
        history_seconds: changes.history_seconds,
    }
}

/// The port's name for a store role.
pub(super) fn port_role(role: UserRole) -> Role {
    match role {
        UserRole::Operator => Role::Operator,
        UserRole::Owner => Role::Owner,
        UserRole::Admin => Role::Admin,
        UserRole::Developer => Role::Developer,
        UserRole::Viewer => Role::Viewer,
    }
}

/// The store's name for a port role.
pub(super) fn user_role(role: Role) -> UserRole {
    match role {
        Role::Operator => UserRole::Operator,
        Role::Owner => UserRole::Owner,
        Role::Admin => UserRole::Admin,
        Role::Developer => UserRole::Developer,
        Role::Viewer => UserRole::Viewer,
    }
}

/// How the users page and the CLI name a user's role.
pub(crate) fn describe_role(user: &User) -> String {
    match (user.role, &user.tenant_id) {
        (UserRole::Operator, _) => "platform operator".to_owned(),
        (role, Some(t)) => format!("{role} of tenant {t}"),
        (role, None) => role.to_string(),
    }
}

/// The tenant whose members `admin` manages (the operator has none: the users page is theirs).
pub(super) fn member_tenant(admin: &Admin) -> PortResult<String> {
    match (&admin.tenant_id, admin.operator) {
        (Some(tenant), false) => Ok(tenant.clone()),
        _ => Err(PortError::NotFound),
    }
}

pub(super) fn member_row(user: User) -> MemberRow {
    MemberRow {
        role: port_role(user.role),
        id: user.id,
        email: user.email,
        created_at: user.created_at,
    }
}
