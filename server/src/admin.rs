//! The server side of the dashboard: [`AdminApi`] implements the dashboard's `AdminPort` over the
//! store (always through [`Scoped`], so tenant isolation is the store's, not the page's), the
//! hub's live figures and usage counters. The live debug console's events come from the hub's
//! [`Taps`].

use herald_dashboard::{
    Admin, AdminPort, AppChanges, AppDetail, AppSummary, ChannelRow, CreateApp, DayPoint,
    DebugEvent, DeliveryRow, KeyPair, LimitRow, MercureChanges, MercureKeyChange, MercureView,
    MinutePoint, NewSession, NewUser, NodeConnections, PlanRow, PortError, PortResult, SessionInfo,
    TenantRow, UsageView, UserRow, WebhookForm, WebhookRow, WebhooksView,
};
use tokio::sync::broadcast;

mod accounts;

use crate::node::SharedNode;
use crate::protocol::WEBHOOK_KINDS;
use crate::tenants::{
    limit_values, Actor, App, AppPatch, Delivery, DeliveryStatus, LimitsPatch, MercureKey,
    MercurePatch, MercureSettings, NewApp, NewDelivery, NewWebhook, SessionTerms, StoreError,
    TenantPatch, User, UserRole, PLANS,
};

/// The taps moved into the hub (below every emitter); kept here for old import paths.
pub use crate::hub::{clip, Taps};

/// The dashboard's view of the server.
#[derive(Debug)]
pub struct AdminApi {
    node: SharedNode,
}

impl AdminApi {
    /// The port over `node`.
    pub fn new(node: SharedNode) -> AdminApi {
        AdminApi { node }
    }

    fn actor(admin: &Admin) -> Actor {
        if admin.operator {
            Actor::Operator
        } else {
            Actor::TenantAdmin(admin.tenant_id.clone().unwrap_or_default())
        }
    }

    fn operator_only(admin: &Admin) -> PortResult<()> {
        if admin.operator {
            Ok(())
        } else {
            Err(PortError::NotFound)
        }
    }

    fn connections(&self, app_id: &str) -> u64 {
        self.node
            .hub
            .existing_app(app_id)
            .map_or(0, |h| h.connection_count() as u64)
    }

    /// Each app's open connections and, in a cluster, every node's share (this node's live,
    /// the others' as of their last heartbeat; this node's alone when Redis does not answer).
    /// Node ids are the operator's: a tenant admin sees "node 1", "node 2", …
    async fn cluster_connections(
        &self,
        admin: &Admin,
        app_ids: &[&str],
    ) -> Vec<(u64, Vec<NodeConnections>)> {
        let local: Vec<u64> = app_ids.iter().map(|id| self.connections(id)).collect();
        let Some(cluster) = &self.node.cluster else {
            return local.into_iter().map(|n| (n, Vec::new())).collect();
        };
        let mut by_node = cluster
            .connections_by_node(app_ids)
            .await
            .unwrap_or_else(|| vec![Vec::new(); app_ids.len()]);
        by_node.resize(app_ids.len(), Vec::new());
        local
            .into_iter()
            .zip(by_node)
            .map(|(mine, nodes)| {
                let mut per_node: Vec<NodeConnections> = nodes
                    .into_iter()
                    .filter(|n| n.node_id != cluster.node_id() && n.connections > 0)
                    .map(|n| NodeConnections {
                        node_id: n.node_id,
                        connections: n.connections,
                    })
                    .collect();
                if mine > 0 {
                    per_node.push(NodeConnections {
                        node_id: cluster.node_id().to_owned(),
                        connections: mine,
                    });
                }
                per_node.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                if !admin.operator {
                    for node in &mut per_node {
                        node.node_id = cluster.node_label(&node.node_id);
                    }
                }
                (per_node.iter().map(|n| n.connections).sum(), per_node)
            })
            .collect()
    }

    /// Today's messages of each of `app_ids` (in that order). On a single node: its counter
    /// (the store's total as of the last flush and what it counted since). In a cluster: the
    /// store's total (`stored`, or read now), plus the other nodes' unflushed counts from Redis,
    /// plus this node's own, live, in that order ([`crate::cluster::unflushed`] says why
    /// nothing is counted twice); the store's total and this node's alone when Redis does not
    /// answer in 500 ms. Never below this node's own counter.
    async fn messages_today(&self, app_ids: &[&str], stored: Option<Vec<u64>>) -> Vec<u64> {
        let usage = &self.node.usage;
        let own = |id: &str| usage.app(id).messages_today();
        let Some(cluster) = &self.node.cluster else {
            return app_ids.iter().map(|id| own(id)).collect();
        };
        let day = usage.clock().day();
        let stored = match stored {
            Some(stored) => stored,
            None => match self.node.store.day_messages(day, app_ids).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "could not read today's stored message counts: the dashboard shows this node's");
                    return app_ids.iter().map(|id| own(id)).collect();
                }
            },
        };
        let elsewhere = cluster.unflushed_elsewhere(day, app_ids).await;
        app_ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let counter = usage.app(id);
                let others = elsewhere.as_ref().and_then(|e| e.get(n)).copied();
                stored
                    .get(n)
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(others.unwrap_or(0))
                    .saturating_add(counter.unflushed())
                    .max(counter.messages_today())
            })
            .collect()
    }

    /// [`Self::detail`] with the cluster's connection figures and today's messages.
    async fn detail_live(&self, admin: &Admin, app: App) -> AppDetail {
        let mut detail = self.detail(app);
        if self.node.cluster.is_some() {
            let ids = [detail.id.as_str()];
            // Side by side: Redis not answering costs one timeout, not two.
            let (mut messages, mut connections) = tokio::join!(
                self.messages_today(&ids, None),
                self.cluster_connections(admin, &ids)
            );
            if let Some(messages) = messages.pop() {
                detail.messages_today = messages;
            }
            if let Some((total, per_node)) = connections.pop() {
                detail.connections = total;
                detail.per_node = per_node;
            }
        }
        detail
    }

    fn detail(&self, app: App) -> AppDetail {
        let mut keys = vec![KeyPair {
            key: app.key.clone(),
            secret: app.secret.expose().to_owned(),
            current: true,
            expires_at: 0,
        }];
        let now = self.node.settings.clock.now_seconds();
        if let Some(previous) = app.previous_key.as_ref().filter(|p| p.active_at(now)) {
            keys.push(KeyPair {
                key: previous.key.clone(),
                secret: previous.secret.expose().to_owned(),
                current: false,
                expires_at: previous.expires_at,
            });
        }
        // Set at startup (HERALD_PUBLIC_URL, else the bound address).
        let public_url = self
            .node
            .settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.node.settings.bind));
        AppDetail {
            mercure: mercure_view(&app, &public_url),
            connections: self.connections(&app.id),
            per_node: Vec::new(),
            messages_today: self.node.usage.app(&app.id).messages_today(),
            limits: limit_values(&app.limits)
                .into_iter()
                .map(|(name, value)| LimitRow {
                    name: name.to_owned(),
                    label: limit_label(name).to_owned(),
                    value,
                })
                .collect(),
            keys,
            id: app.id,
            name: app.name,
            tenant_id: app.tenant_id,
            plan: app.plan,
            enabled: app.enabled,
            client_events: app.client_events,
            subscription_count: app.subscription_count,
            allowed_origins: app.allowed_origins,
        }
    }

    /// The store as `admin` may see it.
    fn scope(&self, admin: &Admin) -> crate::tenants::Scoped<'_> {
        self.node.store.scoped(Self::actor(admin))
    }

    /// The outcome of a store write, after the app cache has caught up with it (so a key, a
    /// switch or an endpoint changed from the dashboard applies at once, not at the next poll).
    async fn changed<T>(&self, result: Result<T, StoreError>) -> PortResult<T> {
        let value = result.map_err(port_error)?;
        self.node.refresh_apps().await.map_err(port_error)?;
        Ok(value)
    }

    async fn scoped_app(&self, admin: &Admin, id: &str) -> PortResult<App> {
        self.node
            .store
            .scoped(Self::actor(admin))
            .get_app(id)
            .await
            .map_err(port_error)
    }
}

fn limit_label(name: &str) -> &'static str {
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

fn port_error(error: StoreError) -> PortError {
    match error {
        StoreError::AppNotFound(_) => PortError::NotFound,
        StoreError::Forbidden(message) => PortError::Forbidden(message),
        StoreError::Invalid(message) => PortError::Invalid(message),
        error @ (StoreError::Conflict(_) | StoreError::NotInApp { .. }) => {
            PortError::Invalid(error.to_string())
        }
        StoreError::TenantNotFound(id) => PortError::Invalid(format!("no tenant with id {id}")),
        StoreError::UserNotFound(email) => {
            PortError::Invalid(format!("no user with email {email}"))
        }
        StoreError::Busy => PortError::Busy,
        other if other.is_unreachable() => {
            tracing::warn!(error = %other, "a dashboard request found the store unreachable");
            PortError::Unavailable("no connection within a few seconds".into())
        }
        other => {
            tracing::error!(error = %other, "a dashboard request failed in the store");
            PortError::Internal
        }
    }
}

fn admin_of(user: User) -> Admin {
    Admin {
        operator: user.role == UserRole::Operator,
        id: user.id,
        email: user.email,
        tenant_id: user.tenant_id,
        generation: user.credential_generation,
    }
}

fn delivery_row(d: Delivery) -> DeliveryRow {
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

fn webhook_input(app_id: &str, form: WebhookForm) -> NewWebhook {
    NewWebhook {
        app_id: app_id.to_owned(),
        url: form.url,
        events: form.events,
        channel_prefix: Some(form.prefix),
        headers: form.headers,
    }
}

impl AdminPort for AdminApi {
    async fn authenticate(&self, email: &str, password: &str) -> PortResult<Option<Admin>> {
        let user = self
            .node
            .store
            .authenticate(email, password)
            .await
            .map_err(port_error)?;
        let Some(user) = user else {
            tracing::info!("a dashboard sign-in failed");
            return Ok(None);
        };
        Ok(Some(admin_of(user)))
    }

    async fn start_session(&self, admin: &Admin, session: NewSession) -> PortResult<()> {
        let terms = SessionTerms {
            idle: session.idle,
            lifetime: session.lifetime,
            per_user: session.per_user,
        };
        self.node
            .store
            .start_session(
                &session.token,
                &session.csrf,
                &admin.id,
                admin.generation,
                terms,
            )
            .await
            .map_err(port_error)
    }

    async fn session(&self, token: &str) -> PortResult<Option<SessionInfo>> {
        let session = self.node.store.session(token).await.map_err(port_error)?;
        Ok(session.map(|s| SessionInfo {
            user_id: s.user_id,
            csrf: s.csrf,
            generation: s.generation,
        }))
    }

    async fn end_session(&self, token: &str) -> PortResult<()> {
        self.node.store.end_session(token).await.map_err(port_error)
    }

    async fn end_other_sessions(
        &self,
        admin: &Admin,
        keep: &str,
        generation: i64,
    ) -> PortResult<()> {
        self.node
            .store
            .end_other_sessions(&admin.id, keep, generation)
            .await
            .map(|_| ())
            .map_err(port_error)
    }

    async fn admin(&self, user_id: &str) -> PortResult<Option<Admin>> {
        Ok(self
            .node
            .store
            .get_user(user_id)
            .await
            .map_err(port_error)?
            .map(admin_of))
    }

    async fn change_password(&self, admin: &Admin, current: &str, new: &str) -> PortResult<()> {
        let store = &self.node.store;
        let ok = store
            .authenticate(&admin.email, current)
            .await
            .map_err(port_error)?;
        if ok.is_none() {
            return Err(PortError::Invalid("The current password is wrong.".into()));
        }
        store
            .set_password(&admin.email, new)
            .await
            .map_err(port_error)
    }

    async fn tenants(&self, admin: &Admin) -> PortResult<Vec<TenantRow>> {
        let scoped = self.scope(admin);
        let tenants = scoped.list_tenants().await.map_err(port_error)?;
        let apps = scoped.list_apps().await.map_err(port_error)?;
        Ok(tenants
            .into_iter()
            .map(|t| TenantRow {
                apps: apps.iter().filter(|a| a.tenant_id == t.id).count(),
                id: t.id,
                name: t.name,
                max_apps: t.max_apps,
                plans: t.plans.join(","),
            })
            .collect())
    }

    async fn update_tenant(
        &self,
        admin: &Admin,
        id: &str,
        max_apps: u64,
        plans: &str,
    ) -> PortResult<TenantRow> {
        Self::operator_only(admin)?;
        let plans = plans
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let store = &self.node.store;
        let tenant = store
            .update_tenant(
                id,
                TenantPatch {
                    max_apps: Some(max_apps),
                    plans: Some(plans),
                },
            )
            .await
            .map_err(port_error)?;
        let apps = store
            .list_apps(Some(&tenant.id))
            .await
            .map_err(port_error)?;
        Ok(TenantRow {
            apps: apps.len(),
            id: tenant.id,
            name: tenant.name,
            max_apps: tenant.max_apps,
            plans: tenant.plans.join(","),
        })
    }

    async fn create_tenant(&self, admin: &Admin, name: &str) -> PortResult<TenantRow> {
        Self::operator_only(admin)?;
        let tenant = self
            .node
            .store
            .create_tenant(name)
            .await
            .map_err(port_error)?;
        Ok(TenantRow {
            id: tenant.id,
            name: tenant.name,
            apps: 0,
            max_apps: tenant.max_apps,
            plans: tenant.plans.join(","),
        })
    }

    async fn users(&self, admin: &Admin) -> PortResult<Vec<UserRow>> {
        Self::operator_only(admin)?;
        let users = self.node.store.list_users().await.map_err(port_error)?;
        Ok(users
            .into_iter()
            .map(|u| UserRow {
                role: match (&u.role, &u.tenant_id) {
                    (UserRole::Operator, _) => "platform operator".to_owned(),
                    (UserRole::Admin, Some(t)) => format!("admin of tenant {t}"),
                    (UserRole::Owner, Some(t)) => format!("owner of tenant {t}"),
                    (UserRole::Admin | UserRole::Owner, None) => "admin".to_owned(),
                },
                id: u.id,
                email: u.email,
            })
            .collect())
    }

    async fn create_user(&self, admin: &Admin, user: NewUser) -> PortResult<UserRow> {
        Self::operator_only(admin)?;
        let role = if user.tenant_id.is_some() {
            UserRole::Admin
        } else {
            UserRole::Operator
        };
        let created = self
            .node
            .store
            .create_user(&user.email, &user.password, role, user.tenant_id.as_deref())
            .await
            .map_err(port_error)?;
        Ok(UserRow {
            role: match &created.tenant_id {
                Some(t) => format!("admin of tenant {t}"),
                None => "platform operator".to_owned(),
            },
            id: created.id,
            email: created.email,
        })
    }

    async fn reset_password(&self, admin: &Admin, email: &str, password: &str) -> PortResult<()> {
        Self::operator_only(admin)?;
        self.node
            .store
            .set_password(email, password)
            .await
            .map_err(port_error)
    }

    fn plans(&self) -> Vec<PlanRow> {
        PLANS
            .iter()
            .map(|p| PlanRow {
                name: p.name.to_owned(),
                summary: p.summary.to_owned(),
            })
            .collect()
    }

    async fn apps(&self, admin: &Admin) -> PortResult<Vec<AppSummary>> {
        let apps = self.scope(admin).list_apps().await.map_err(port_error)?;
        let ids: Vec<&str> = apps.iter().map(|app| app.id.as_str()).collect();
        // Side by side: Redis not answering costs one timeout, not two.
        let (connections, messages) = tokio::join!(
            self.cluster_connections(admin, &ids),
            self.messages_today(&ids, None)
        );
        Ok(apps
            .into_iter()
            .zip(connections)
            .zip(messages)
            .map(
                |((app, (connections, per_node)), messages_today)| AppSummary {
                    connections,
                    per_node,
                    messages_today,
                    max_connections: app.limits.max_connections,
                    max_daily_messages: app.limits.max_daily_messages,
                    id: app.id,
                    name: app.name,
                    tenant_id: app.tenant_id,
                    enabled: app.enabled,
                },
            )
            .collect())
    }

    async fn app(&self, admin: &Admin, id: &str) -> PortResult<AppDetail> {
        let app = self.scoped_app(admin, id).await?;
        Ok(self.detail_live(admin, app).await)
    }

    async fn create_app(&self, admin: &Admin, app: CreateApp) -> PortResult<AppDetail> {
        let created = self
            .changed(
                self.scope(admin)
                    .create_app(NewApp {
                        name: app.name,
                        plan: app.plan,
                        tenant_id: app.tenant_id,
                        ..NewApp::default()
                    })
                    .await,
            )
            .await?;
        Ok(self.detail(created))
    }

    async fn update_app(
        &self,
        admin: &Admin,
        id: &str,
        changes: AppChanges,
    ) -> PortResult<AppDetail> {
        let mut limits = LimitsPatch::default();
        for (name, value) in &changes.limits {
            if !limits.set(name, *value) {
                return Err(PortError::Invalid(format!("unknown limit {name}")));
            }
        }
        let updated = self
            .changed(
                self.scope(admin)
                    .update_app(
                        id,
                        AppPatch {
                            name: changes.name,
                            enabled: changes.enabled,
                            client_events: changes.client_events,
                            subscription_count: changes.subscription_count,
                            limits,
                            allowed_origins: changes.allowed_origins,
                            mercure: mercure_patch(changes.mercure),
                        },
                    )
                    .await,
            )
            .await?;
        Ok(self.detail(updated))
    }

    async fn delete_app(&self, admin: &Admin, id: &str) -> PortResult<()> {
        self.changed(self.scope(admin).delete_app(id).await).await
    }

    async fn rotate_key(
        &self,
        admin: &Admin,
        id: &str,
        grace_seconds: u64,
    ) -> PortResult<AppDetail> {
        let app = self
            .changed(self.scope(admin).rotate_key(id, grace_seconds).await)
            .await?;
        Ok(self.detail(app))
    }

    async fn revoke_key(&self, admin: &Admin, id: &str, key: &str) -> PortResult<AppDetail> {
        let app = self
            .changed(self.scope(admin).revoke_key(id, key).await)
            .await?;
        Ok(self.detail(app))
    }

    async fn usage(&self, admin: &Admin, id: &str) -> PortResult<UsageView> {
        let clock = self.node.usage.clock().clone();
        let app = self.scoped_app(admin, id).await?;
        let report = self
            .node
            .store
            .usage_report(id, clock.day(), clock.minute())
            .await
            .map_err(port_error)?;
        // The report was read from the store first: its today is the stored total. Side by
        // side: Redis not answering costs one timeout, not two.
        let ids = [id];
        let (mut live, mut connections) = tokio::join!(
            self.messages_today(&ids, Some(vec![report.today.messages])),
            self.cluster_connections(admin, &ids)
        );
        let live = live.pop().unwrap_or(0);
        let connections = connections.pop().map_or(0, |(total, _)| total);
        let days = report
            .days
            .into_iter()
            .map(|d| DayPoint {
                // Today's bar shows the live figures (the stored ones lag by up to 5 s).
                messages: if d.day == clock.day() {
                    d.messages.max(live)
                } else {
                    d.messages
                },
                peak_connections: if d.day == clock.day() {
                    d.peak_connections.max(connections)
                } else {
                    d.peak_connections
                },
                date: d.date,
            })
            .collect();
        Ok(UsageView {
            messages_today: live,
            max_daily_messages: app.limits.max_daily_messages,
            connections,
            days,
            minutes: report
                .minutes
                .into_iter()
                .map(|m| MinutePoint {
                    minute_start: m.minute_start,
                    messages: m.messages,
                    peak_connections: m.peak_connections,
                })
                .collect(),
        })
    }

    async fn channels(&self, admin: &Admin, id: &str) -> PortResult<Vec<ChannelRow>> {
        self.scoped_app(admin, id).await?;
        // Cluster-wide in cluster mode (with round robin a node may hold none of the app's
        // sockets); this node's when Redis does not answer in time.
        let cluster_wide = match &self.node.cluster {
            Some(cluster) => cluster.channels(id, "").await.ok(),
            None => None,
        };
        let list = cluster_wide.unwrap_or_else(|| {
            self.node
                .hub
                .existing_app(id)
                .map(|h| h.channels(""))
                .unwrap_or_default()
        });
        let mut rows: Vec<ChannelRow> = list
            .into_iter()
            .map(|(name, subscriptions, users)| ChannelRow {
                name,
                subscriptions,
                users,
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    async fn webhooks(&self, admin: &Admin, id: &str) -> PortResult<WebhooksView> {
        self.scoped_app(admin, id).await?;
        let store = &self.node.store;
        let endpoints = store.list_webhooks(Some(id)).await.map_err(port_error)?;
        let recent = store.deliveries(id, None, 50).await.map_err(port_error)?;
        let failed = store
            .deliveries(id, Some(DeliveryStatus::Failed), 100)
            .await
            .map_err(port_error)?;
        Ok(WebhooksView {
            endpoints: endpoints
                .into_iter()
                .map(|h| WebhookRow {
                    events: h.events.iter().map(|k| k.as_str().to_owned()).collect(),
                    headers: h.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect(),
                    id: h.id,
                    url: h.url,
                    prefix: h.channel_prefix,
                })
                .collect(),
            event_types: WEBHOOK_KINDS
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            recent: recent.into_iter().map(delivery_row).collect(),
            failed: failed.into_iter().map(delivery_row).collect(),
        })
    }

    async fn add_webhook(&self, admin: &Admin, id: &str, form: WebhookForm) -> PortResult<()> {
        self.scoped_app(admin, id).await?;
        let input = webhook_input(id, form);
        let checked = match crate::webhooks::check_destination(
            &self.node.settings.webhooks,
            &input.url,
        )
        .await
        {
            Ok(()) => self.node.store.create_webhook(input).await.map(drop),
            Err(refused) => Err(refused),
        };
        self.changed(checked).await
    }

    async fn update_webhook(
        &self,
        admin: &Admin,
        id: &str,
        webhook_id: &str,
        form: WebhookForm,
    ) -> PortResult<()> {
        self.scoped_app(admin, id).await?;
        let input = webhook_input(id, form);
        let checked = match crate::webhooks::check_destination(
            &self.node.settings.webhooks,
            &input.url,
        )
        .await
        {
            Ok(()) => self
                .node
                .store
                .update_webhook(webhook_id, input)
                .await
                .map(drop),
            Err(refused) => Err(refused),
        };
        self.changed(checked).await
    }

    async fn remove_webhook(&self, admin: &Admin, id: &str, webhook_id: &str) -> PortResult<()> {
        self.scoped_app(admin, id).await?;
        self.changed(
            self.node
                .store
                .delete_webhook(id, webhook_id)
                .await
                .map(drop),
        )
        .await
    }

    async fn test_webhook(&self, admin: &Admin, id: &str, webhook_id: &str) -> PortResult<()> {
        self.scoped_app(admin, id).await?;
        if self.node.webhooks.endpoint(id, webhook_id).is_none() {
            return Err(PortError::NotFound);
        }
        let now = self.node.settings.clock.now_millis();
        let delivery = NewDelivery {
            id: self.node.webhooks.next_id(now),
            webhook_id: webhook_id.to_owned(),
            app_id: id.to_owned(),
            events: "[]".to_owned(),
            channels: Vec::new(),
            created_at: now,
        };
        self.node
            .store
            .insert_deliveries(&[delivery])
            .await
            .map_err(port_error)?;
        self.node.webhooks.rescan();
        Ok(())
    }

    async fn retry_deliveries(
        &self,
        admin: &Admin,
        id: &str,
        delivery_id: Option<i64>,
    ) -> PortResult<u64> {
        self.scoped_app(admin, id).await?;
        let queued = self
            .node
            .store
            .retry_failed(id, delivery_id, self.node.settings.clock.now_millis())
            .await
            .map_err(port_error)?;
        self.node.webhooks.rescan();
        Ok(queued)
    }

    async fn tap(&self, admin: &Admin, id: &str) -> PortResult<broadcast::Receiver<DebugEvent>> {
        self.scoped_app(admin, id).await?;
        let receiver = self.node.taps.subscribe(id);
        if self.node.cluster.is_some() {
            // The other nodes start forwarding this app's events once they have read the
            // watch: the stream opens (the console says "live") only then.
            tokio::time::sleep(crate::cluster::console::WATCH_PROPAGATION).await;
        }
        Ok(receiver)
    }

    fn node_label(&self, admin: &Admin, node_id: &str) -> String {
        match &self.node.cluster {
            Some(cluster) if !admin.operator => cluster.node_label(node_id),
            _ => node_id.to_owned(),
        }
    }
}

/// The settings page's view of an app's Mercure settings (the HS256 key stays out of it).
fn mercure_view(app: &App, public_url: &str) -> MercureView {
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

fn mercure_patch(changes: MercureChanges) -> MercurePatch {
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
