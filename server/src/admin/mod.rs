//! The server side of the dashboard: [`AdminApi`] implements the dashboard's `AdminPort` over the
//! store (always through [`Scoped`], so tenant isolation is the store's, not the page's), the
//! hub's live figures and usage counters. The live debug console's events come from the hub's
//! [`Taps`].

pub(crate) mod audit;
mod convert;
mod invites;
mod live;
mod tokens;

use herald_dashboard::{
    Admin, AdminPort, ApiTokenRow, AppChanges, AppDetail, AppSummary, AuditQuery, AuditRow,
    ChannelRow, CreateApp, DayPoint, DebugEvent, InvitationRow, KeyPair, LimitRow, MemberRow,
    MinutePoint, NewApiToken, NewSession, NewUser, PlanRow, PortError, PortResult, Role,
    SessionInfo, TenantRow, UsageView, UserRow, WebhookForm, WebhookRow, WebhooksView,
};
use tokio::sync::broadcast;

mod accounts;

use crate::node::SharedNode;
use crate::protocol::WEBHOOK_KINDS;
use crate::tenants::{
    limit_values, Actor, App, AppPatch, DeliveryStatus, LimitsPatch, NewApp, NewDelivery,
    NewWebhook, Permission, SessionTerms, StoreError, TenantPatch, User, UserRole, PLANS,
};

use serde_json::json;

use self::audit::acting;
use self::convert::{
    delivery_row, describe_role, limit_label, member_row, member_tenant, mercure_patch,
    mercure_view, port_role, user_role, webhook_input,
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

    pub(super) fn actor(admin: &Admin) -> Actor {
        if admin.operator {
            Actor::Operator
        } else {
            Actor::Member {
                tenant: admin.tenant_id.clone().unwrap_or_default(),
                role: user_role(admin.role),
            }
        }
    }

    fn operator_only(admin: &Admin) -> PortResult<()> {
        if admin.operator {
            Ok(())
        } else {
            Err(PortError::NotFound)
        }
    }

    pub(super) fn connections(&self, app_id: &str) -> u64 {
        self.node
            .hub
            .existing_app(app_id)
            .map_or(0, |h| h.connection_count() as u64)
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

    /// The app as its pages show it; key secrets only when `reveal` (after the role was checked).
    fn detail(&self, app: App) -> AppDetail {
        self.detail_with(app, false)
    }

    fn detail_with(&self, app: App, reveal: bool) -> AppDetail {
        let secret = |s: &crate::tenants::Secret| {
            if reveal {
                s.expose().to_owned()
            } else {
                String::new()
            }
        };
        let mut keys = vec![KeyPair {
            key: app.key.clone(),
            secret: secret(&app.secret),
            current: true,
            expires_at: 0,
        }];
        let now = self.node.settings.clock.now_seconds();
        if let Some(previous) = app.previous_key.as_ref().filter(|p| p.active_at(now)) {
            keys.push(KeyPair {
                key: previous.key.clone(),
                secret: secret(&previous.secret),
                current: false,
                expires_at: previous.expires_at,
            });
        }
        let public_url = self.public_url();
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

    /// The URL users reach: set at startup (HERALD_PUBLIC_URL, else the bound address).
    fn public_url(&self) -> String {
        self.node
            .settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.node.settings.bind))
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
        self.scope(admin).get_app(id).await.map_err(port_error)
    }

    /// An app in `admin`'s scope, if their role allows `permission` (another tenant's app is
    /// "not found" first, whatever the role).
    async fn app_for(&self, admin: &Admin, id: &str, permission: Permission) -> PortResult<App> {
        self.scope(admin)
            .app_for(id, permission)
            .await
            .map_err(port_error)
    }

    /// `form` as the store's input for app `id`, once the webhook's destination passes the
    /// node's rules.
    async fn checked_webhook(&self, id: &str, form: WebhookForm) -> PortResult<NewWebhook> {
        let input = webhook_input(id, form);
        crate::webhooks::check_destination(&self.node.settings.webhooks, &input.url)
            .await
            .map_err(port_error)?;
        Ok(input)
    }
}

fn port_error(error: StoreError) -> PortError {
    match error {
        StoreError::AppNotFound(_) => PortError::NotFound,
        StoreError::Forbidden(message) => PortError::Forbidden(message),
        StoreError::RoleDenied(message) => PortError::Denied(message),
        StoreError::Invalid(message) => PortError::Invalid(message),
        error @ (StoreError::Conflict(_) | StoreError::NotInApp { .. }) => {
            PortError::Invalid(error.to_string())
        }
        StoreError::TenantNotFound(id) => PortError::Invalid(format!("no tenant with id {id}")),
        StoreError::UserNotFound(who) if who.starts_with("member ") => PortError::NotFound,
        StoreError::TokenNotFound(_) => PortError::NotFound,
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
        role: port_role(user.role),
        id: user.id,
        email: user.email,
        tenant_id: user.tenant_id,
        generation: user.credential_generation,
        address: String::new(),
    }
}

impl AdminPort for AdminApi {
    async fn authenticate(
        &self,
        email: &str,
        password: &str,
        address: &str,
    ) -> PortResult<Option<Admin>> {
        let store = &self.node.store;
        let user = store
            .authenticate(email, password)
            .await
            .map_err(port_error)?;
        if user.is_none() {
            tracing::info!("a dashboard sign-in failed");
        }
        // Audited where the tenant is known: a failure for an existing user (bounded by the
        // per-email sign-in budget), every success.
        let known = match &user {
            Some(user) => Some(user.clone()),
            None => store.user_by_email(email).await.ok().flatten(),
        };
        if let Some(who) = known {
            let mut admin = admin_of(who.clone());
            admin.address = address.to_owned();
            let action = if user.is_some() {
                "sign_in.succeeded"
            } else {
                "sign_in.failed"
            };
            self.audit(
                &admin,
                who.tenant_id.as_deref(),
                action,
                &who.email,
                json!({}),
            )
            .await;
        }
        Ok(user.map(admin_of))
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
        acting(admin, store.set_password(&admin.email, new))
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
        let patch = TenantPatch {
            max_apps: Some(max_apps),
            plans: Some(plans),
        };
        let tenant = acting(admin, store.update_tenant(id, patch))
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
        let tenant = acting(admin, self.node.store.create_tenant(name))
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
                role: describe_role(&u),
                id: u.id,
                email: u.email,
            })
            .collect())
    }

    async fn create_user(&self, admin: &Admin, user: NewUser) -> PortResult<UserRow> {
        Self::operator_only(admin)?;
        let role = match (&user.tenant_id, user.role.trim()) {
            (None, _) => UserRole::Operator,
            (Some(_), "") => UserRole::Admin,
            (Some(_), name) => UserRole::parse(name)
                .filter(|r| r.is_tenant_role())
                .ok_or_else(|| PortError::Invalid(format!("no tenant role named {name:?}")))?,
        };
        let tenant = user.tenant_id.as_deref();
        let create = self
            .node
            .store
            .create_user(&user.email, &user.password, role, tenant);
        let created = acting(admin, create).await.map_err(port_error)?;
        Ok(UserRow {
            role: describe_role(&created),
            id: created.id,
            email: created.email,
        })
    }

    async fn reset_password(&self, admin: &Admin, email: &str, password: &str) -> PortResult<()> {
        Self::operator_only(admin)?;
        acting(admin, self.node.store.set_password(email, password))
            .await
            .map_err(port_error)
    }

    async fn members(&self, admin: &Admin) -> PortResult<Vec<MemberRow>> {
        let tenant = member_tenant(admin)?;
        let members = self
            .scope(admin)
            .list_members(&tenant)
            .await
            .map_err(port_error)?;
        Ok(members.into_iter().map(member_row).collect())
    }

    async fn change_member(
        &self,
        admin: &Admin,
        user_id: &str,
        role: Option<Role>,
    ) -> PortResult<MemberRow> {
        let tenant = member_tenant(admin)?;
        let scope = self.scope(admin);
        let change = scope.change_member(&tenant, user_id, role.map(user_role));
        let before = acting(admin, change).await.map_err(port_error)?;
        Ok(member_row(before))
    }

    async fn invitations(&self, admin: &Admin) -> PortResult<Vec<InvitationRow>> {
        self.list_invitations(admin).await
    }

    async fn invite(&self, admin: &Admin, email: &str, role: Role) -> PortResult<InvitationRow> {
        self.send_invitation(admin, email, role).await
    }

    async fn revoke_invitation(&self, admin: &Admin, id: &str) -> PortResult<InvitationRow> {
        self.cancel_invitation(admin, id).await
    }

    async fn invitation(&self, token: &str) -> PortResult<Option<InvitationRow>> {
        self.find_invitation(token).await
    }

    async fn accept_invitation(
        &self,
        token: &str,
        password: &str,
        address: &str,
    ) -> PortResult<Admin> {
        self.join(token, password, address).await
    }

    async fn api_tokens(
        &self,
        admin: &Admin,
        before: Option<&str>,
    ) -> PortResult<herald_dashboard::ApiTokenPage> {
        self.list_api_tokens(admin, before).await
    }

    async fn create_api_token(
        &self,
        admin: &Admin,
        new: NewApiToken,
    ) -> PortResult<(ApiTokenRow, String)> {
        self.make_api_token(admin, new).await
    }

    async fn revoke_api_token(&self, admin: &Admin, id: &str) -> PortResult<ApiTokenRow> {
        self.cancel_api_token(admin, id).await
    }

    async fn audit(&self, admin: &Admin, query: AuditQuery) -> PortResult<Vec<AuditRow>> {
        self.audit_rows(admin, query).await.map_err(port_error)
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
        let scope = self.scope(admin);
        let create = scope.create_app(NewApp {
            name: app.name,
            plan: app.plan,
            tenant_id: app.tenant_id,
            ..NewApp::default()
        });
        let created = self.changed(acting(admin, create).await).await?;
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
        let scope = self.scope(admin);
        let update = scope.update_app(
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
        );
        let updated = self.changed(acting(admin, update).await).await?;
        Ok(self.detail(updated))
    }

    async fn delete_app(&self, admin: &Admin, id: &str) -> PortResult<()> {
        let scope = self.scope(admin);
        self.changed(acting(admin, scope.delete_app(id)).await)
            .await
    }

    async fn reveal_keys(&self, admin: &Admin, id: &str) -> PortResult<AppDetail> {
        let app = self.app_for(admin, id, Permission::RevealSecrets).await?;
        let mut detail = self.detail_live(admin, app.clone()).await;
        let mut keys = vec![app.key.clone()];
        keys.extend(app.previous_key.as_ref().map(|p| p.key.clone()));
        let details = json!({ "keys": keys });
        self.audit(admin, Some(&app.tenant_id), "key.revealed", id, details)
            .await;
        detail.keys = self.detail_with(app, true).keys;
        Ok(detail)
    }

    async fn rotate_key(
        &self,
        admin: &Admin,
        id: &str,
        grace_seconds: u64,
    ) -> PortResult<AppDetail> {
        let scope = self.scope(admin);
        let rotate = scope.rotate_key(id, grace_seconds);
        let app = self.changed(acting(admin, rotate).await).await?;
        Ok(self.detail(app))
    }

    async fn revoke_key(&self, admin: &Admin, id: &str, key: &str) -> PortResult<AppDetail> {
        let scope = self.scope(admin);
        let app = self
            .changed(acting(admin, scope.revoke_key(id, key)).await)
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
        // Header values may be credentials of the receiver: secrets, hidden from viewers.
        let secrets = self.scope(admin).require(Permission::RevealSecrets).is_ok();
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
                    headers: h
                        .headers
                        .iter()
                        .map(|(n, v)| {
                            if secrets {
                                format!("{n}: {v}")
                            } else {
                                format!("{n}: (hidden)")
                            }
                        })
                        .collect(),
                    id: h.id,
                    // The URL may carry the receiver's credential (user info, path, query).
                    url: if secrets {
                        h.url
                    } else {
                        audit::masked_url(&h.url)
                    },
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
        self.app_for(admin, id, Permission::WriteWebhooks).await?;
        let input = self.checked_webhook(id, form).await?;
        let create = self.node.store.create_webhook(input);
        self.changed(acting(admin, create).await.map(drop)).await
    }

    async fn update_webhook(
        &self,
        admin: &Admin,
        id: &str,
        webhook_id: &str,
        form: WebhookForm,
    ) -> PortResult<()> {
        self.app_for(admin, id, Permission::WriteWebhooks).await?;
        let input = self.checked_webhook(id, form).await?;
        let update = self.node.store.update_webhook(webhook_id, input);
        self.changed(acting(admin, update).await.map(drop)).await
    }

    async fn remove_webhook(&self, admin: &Admin, id: &str, webhook_id: &str) -> PortResult<()> {
        self.app_for(admin, id, Permission::WriteWebhooks).await?;
        let delete = self.node.store.delete_webhook(id, webhook_id);
        self.changed(acting(admin, delete).await).await
    }

    async fn test_webhook(&self, admin: &Admin, id: &str, webhook_id: &str) -> PortResult<()> {
        self.app_for(admin, id, Permission::WriteWebhooks).await?;
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
        self.app_for(admin, id, Permission::WriteWebhooks).await?;
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
