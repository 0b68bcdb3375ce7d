//! The admin port: everything the dashboard needs from the server, as plain data. The server
//! implements [`AdminPort`]; the dashboard never sees its internals. Every method that takes an
//! [`Admin`] applies that admin's scope: an app of another tenant is [`PortError::NotFound`],
//! exactly like an app that does not exist.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

/// Why a port call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    /// No such thing in the admin's scope (404).
    NotFound,
    /// The admin may not do this (a limit above the plan's: shown on the form), with the reason.
    Forbidden(String),
    /// The user's role does not allow this at all (403 page, whatever the form), with the
    /// reason.
    Denied(String),
    /// The input is not acceptable (shown on the form).
    Invalid(String),
    /// The server failed (500; the detail is logged by the server).
    Internal,
    /// The server is at capacity for this work (password checks): try again shortly (429).
    Busy,
    /// The store cannot be reached (503, with the reason; nothing secret in it).
    Unavailable(String),
}

/// The result of a port call.
pub type PortResult<T> = Result<T, PortError>;

/// A signed-in user's role. The server enforces what each role may do (every port call checks
/// it); the dashboard asks these methods only to leave out buttons a role cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The platform operator: every tenant.
    Operator,
    /// A tenant's owner: everything in it.
    Owner,
    /// A tenant's admin: everything but owners.
    #[default]
    Admin,
    /// Apps and webhooks; sees keys; no deleting apps, rotating or revoking keys, members.
    Developer,
    /// Read-only, secrets hidden.
    Viewer,
}

impl Role {
    /// The role's name (`operator`, `owner`, `admin`, `developer`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    /// The tenant role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Owner, Role::Admin, Role::Developer, Role::Viewer]
            .into_iter()
            .find(|r| r.as_str() == name)
    }

    fn full(self) -> bool {
        matches!(self, Role::Operator | Role::Owner | Role::Admin)
    }

    /// Creates and changes apps.
    pub fn writes_apps(self) -> bool {
        self != Role::Viewer
    }

    /// Deletes apps.
    pub fn deletes_apps(self) -> bool {
        self.full()
    }

    /// Sees key secrets.
    pub fn reveals_secrets(self) -> bool {
        self != Role::Viewer
    }

    /// Rotates and revokes keys.
    pub fn manages_keys(self) -> bool {
        self.full()
    }

    /// Changes webhooks.
    pub fn writes_webhooks(self) -> bool {
        self != Role::Viewer
    }

    /// Invites, removes and changes members.
    pub fn manages_members(self) -> bool {
        self.full()
    }
}

/// A signed-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// The platform operator (every tenant) or a tenant member.
    pub operator: bool,
    /// The operator's or the member's role (read from the store on every request).
    pub role: Role,
    /// The tenant of a tenant member.
    pub tenant_id: Option<String>,
    /// The user's credential generation: it changes with the password, and a session begun at
    /// another generation is over.
    pub generation: i64,
    /// The client address of the request acting (set by the dashboard for the audit log; empty
    /// when unknown).
    pub address: String,
}

/// A session to start for a signed-in admin: the cookie's token and the CSRF token (chosen by
/// the dashboard, at random) and its terms. The server keeps it where every node sharing the
/// store finds it, under a hash of the token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie's token.
    pub token: String,
    /// The token every form of the session carries.
    pub csrf: String,
    /// How long it lives unused.
    pub idle: Duration,
    /// How long it lives at most, however busy.
    pub lifetime: Duration,
    /// Most live sessions one admin may have: starting one more ends their oldest.
    pub per_user: usize,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The admin's user id.
    pub user_id: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The admin's credential generation the session belongs to: once the admin's generation
    /// moves on (a password change), the session is over.
    pub generation: i64,
}

/// A tenant in a list.
#[derive(Debug, Clone)]
pub struct TenantRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Apps it owns.
    pub apps: usize,
    /// Apps its admins may have (0: no cap; the operator is not bound).
    pub max_apps: u64,
    /// Plans its admins may create apps from, comma-separated (empty: every plan but
    /// unlimited).
    pub plans: String,
}

/// A user in a list.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Id.
    pub id: String,
    /// Email.
    pub email: String,
    /// "platform operator" or "{role} of tenant {tenant}".
    pub role: String,
}

/// A member of the signed-in user's tenant.
#[derive(Debug, Clone)]
pub struct MemberRow {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// When they joined, Unix seconds.
    pub created_at: i64,
}

/// A pending invitation (never its token).
#[derive(Debug, Clone)]
pub struct InvitationRow {
    /// Id.
    pub id: String,
    /// Who is invited.
    pub email: String,
    /// The role they get.
    pub role: Role,
    /// Who invited them.
    pub invited_by: String,
    /// When it stops working, Unix seconds.
    pub expires_at: i64,
}

/// A management API token (never its text).
#[derive(Debug, Clone)]
pub struct ApiTokenRow {
    /// Id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scopes' names (`apps:read`, ...).
    pub scopes: Vec<String>,
    /// Who made it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it stops working, Unix seconds (`None`: never).
    pub expires_at: Option<i64>,
    /// Its last use, Unix seconds (`None`: never).
    pub last_used_at: Option<i64>,
    /// `live`, `expired` or `revoked`.
    pub state: &'static str,
}

/// The tokens page: the live tokens (at most the tenant's cap) and a page of the dead ones.
#[derive(Debug, Clone, Default)]
pub struct ApiTokenPage {
    /// Every live token, newest first.
    pub live: Vec<ApiTokenRow>,
    /// Revoked and expired ones, newest first, at most [`DEAD_TOKENS_PER_PAGE`].
    pub dead: Vec<ApiTokenRow>,
    /// The cursor of the next page of dead ones (`None`: this is the last).
    pub older: Option<String>,
}

/// Dead tokens a page of the tokens page lists.
pub const DEAD_TOKENS_PER_PAGE: u32 = 50;

/// A token to create from the dashboard.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    /// Its name.
    pub name: String,
    /// The scopes' names.
    pub scopes: Vec<String>,
    /// Days until it expires (`None`: never).
    pub expires_in_days: Option<u32>,
}

/// Which audit entries to show, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this tenant's (the operator's filter; a member always sees their own tenant's).
    pub tenant_id: Option<String>,
    /// Only this action, or a family (`app.`).
    pub action: Option<String>,
    /// Only this actor (email or `cli`).
    pub actor: Option<String>,
    /// Only entries at or after this time, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// Only entries older than this id (the next page).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// An audit entry as the page shows it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// Id (pages go back by it).
    pub id: i64,
    /// Tenant (empty: platform).
    pub tenant_id: String,
    /// Email at the time, or `cli`.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// More about it, as compact JSON.
    pub details: String,
    /// The client's address.
    pub address: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

/// A user to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Email.
    pub email: String,
    /// Initial password.
    pub password: String,
    /// The tenant of a member; `None` creates an operator.
    pub tenant_id: Option<String>,
    /// The member's role (`owner`, `admin`, `developer`, `viewer`; empty: admin).
    pub role: String,
}

/// A plan preset.
#[derive(Debug, Clone)]
pub struct PlanRow {
    /// Name (`sandbox`...).
    pub name: String,
    /// One line.
    pub summary: String,
}

/// One limit of an app.
#[derive(Debug, Clone)]
pub struct LimitRow {
    /// Field name (`max_connections`...), also the form field.
    pub name: String,
    /// What it limits, for the label.
    pub label: String,
    /// Current value; 0 means unlimited.
    pub value: u64,
}

/// One node's share of an app's open connections (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConnections {
    /// The node's id (`HERALD_NODE_ID`).
    pub node_id: String,
    /// The app's connections open on it.
    pub connections: u64,
}

/// An app in the list.
#[derive(Debug, Clone)]
pub struct AppSummary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Enabled.
    pub enabled: bool,
    /// Connections open now (in a cluster: on every node).
    pub connections: u64,
    /// In a cluster, each node's share of `connections` (empty on a single node).
    pub per_node: Vec<NodeConnections>,
    /// Connection quota (0: unlimited).
    pub max_connections: u64,
    /// Messages counted today (UTC).
    pub messages_today: u64,
    /// Daily quota (0: unlimited).
    pub max_daily_messages: u64,
}

/// A key pair of an app.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The key.
    pub key: String,
    /// The secret: empty, but in the answer to [`AdminPort::reveal_keys`].
    pub secret: String,
    /// Whether it is the current pair (the other is the previous one, during a rotation).
    pub current: bool,
    /// When the previous pair stops working: Unix seconds, 0 for "until revoked".
    pub expires_at: i64,
}

/// Everything about one app.
#[derive(Debug, Clone)]
pub struct AppDetail {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Plan it was created from.
    pub plan: String,
    /// Enabled.
    pub enabled: bool,
    /// Client events allowed.
    pub client_events: bool,
    /// `subscription_count` events sent.
    pub subscription_count: bool,
    /// Allowed origins (empty: any).
    pub allowed_origins: Vec<String>,
    /// Working key pairs, current first.
    pub keys: Vec<KeyPair>,
    /// Every limit.
    pub limits: Vec<LimitRow>,
    /// Connections open now (in a cluster: on every node).
    pub connections: u64,
    /// In a cluster, each node's share of `connections` (empty on a single node).
    pub per_node: Vec<NodeConnections>,
    /// Messages counted today.
    pub messages_today: u64,
    /// The app's Mercure hub settings.
    pub mercure: MercureView,
}

/// An app's Mercure hub settings as the settings page shows them (the HS256 key is not shown).
#[derive(Debug, Clone, Default)]
pub struct MercureView {
    /// The hub's URL (`{public URL}/apps/{id}/.well-known/mercure`).
    pub hub_url: String,
    /// `app_secret`, `hs256` or `public_key`.
    pub key_mode: String,
    /// The PEM public key, when `key_mode` is `public_key`.
    pub public_key: String,
    /// The audience set (empty: the hub URL).
    pub audience: String,
    /// The issuer set (empty: not checked).
    pub issuer: String,
    /// Subscribers without a token get public updates.
    pub anonymous: bool,
    /// Updates kept in the history.
    pub history_size: u64,
    /// Seconds an update stays in the history.
    pub history_seconds: u64,
}

/// A new Mercure key for an app (its `Debug`, and so its changes', never shows an HS256 key).
#[derive(Clone, PartialEq, Eq)]
pub enum MercureKeyChange {
    /// Back to the app's current secret.
    AppSecret,
    /// This HS256 key.
    Hmac(String),
    /// This PEM public key.
    PublicPem(String),
}

impl std::fmt::Debug for MercureKeyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MercureKeyChange::AppSecret => f.write_str("AppSecret"),
            MercureKeyChange::Hmac(_) => f.write_str("Hmac(<redacted>)"),
            MercureKeyChange::PublicPem(pem) => f.debug_tuple("PublicPem").field(pem).finish(),
        }
    }
}

/// Changes to an app's Mercure settings; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct MercureChanges {
    /// A new key.
    pub key: Option<MercureKeyChange>,
    /// A new audience (empty: the default).
    pub audience: Option<String>,
    /// A new issuer (empty: none).
    pub issuer: Option<String>,
    /// Anonymous subscribers.
    pub anonymous: Option<bool>,
    /// History size.
    pub history_size: Option<u64>,
    /// History age, seconds.
    pub history_seconds: Option<u64>,
}

/// A new app.
#[derive(Debug, Clone, Default)]
pub struct CreateApp {
    /// Name.
    pub name: String,
    /// Plan preset.
    pub plan: Option<String>,
    /// Tenant (operator only; a tenant admin creates in its own tenant).
    pub tenant_id: Option<String>,
}

/// Changes to an app; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct AppChanges {
    /// New name.
    pub name: Option<String>,
    /// Enabled switch.
    pub enabled: Option<bool>,
    /// Client events switch.
    pub client_events: Option<bool>,
    /// `subscription_count` switch.
    pub subscription_count: Option<bool>,
    /// New allowed origins.
    pub allowed_origins: Option<Vec<String>>,
    /// New limit values by field name.
    pub limits: Vec<(String, u64)>,
    /// Mercure settings to change.
    pub mercure: MercureChanges,
}

/// One day of usage.
#[derive(Debug, Clone)]
pub struct DayPoint {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Messages.
    pub messages: u64,
    /// Peak connections.
    pub peak_connections: u64,
}

/// One minute of usage.
#[derive(Debug, Clone)]
pub struct MinutePoint {
    /// Unix seconds at the start of the minute.
    pub minute_start: i64,
    /// Messages.
    pub messages: u64,
    /// Peak connections.
    pub peak_connections: u64,
}

/// An app's usage.
#[derive(Debug, Clone)]
pub struct UsageView {
    /// Messages counted today (live).
    pub messages_today: u64,
    /// Daily quota (0: unlimited).
    pub max_daily_messages: u64,
    /// Connections open now.
    pub connections: u64,
    /// The last 30 days, oldest first.
    pub days: Vec<DayPoint>,
    /// The last 24 hours per minute, oldest first.
    pub minutes: Vec<MinutePoint>,
}

/// An occupied channel.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    /// Name.
    pub name: String,
    /// Connections subscribed.
    pub subscriptions: usize,
    /// Distinct presence users (presence channels).
    pub users: usize,
}

/// A webhook endpoint.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// Id.
    pub id: String,
    /// URL.
    pub url: String,
    /// Event types it wants.
    pub events: Vec<String>,
    /// Channel prefix ('' = all).
    pub prefix: String,
    /// Extra headers as `Name: value` lines.
    pub headers: Vec<String>,
}

/// A webhook endpoint to create or change.
#[derive(Debug, Clone, Default)]
pub struct WebhookForm {
    /// URL.
    pub url: String,
    /// Event types.
    pub events: Vec<String>,
    /// Channel prefix.
    pub prefix: String,
    /// `Name: value` headers.
    pub headers: Vec<String>,
}

/// One delivery (a webhook request).
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// Id.
    pub id: i64,
    /// Endpoint id.
    pub webhook_id: String,
    /// pending, delivered or failed.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// HTTP status of the last attempt (0: none).
    pub last_status: i64,
    /// Why the last attempt failed.
    pub last_error: String,
    /// Last attempt duration, ms.
    pub latency_ms: i64,
    /// Event names in the request.
    pub events: String,
    /// When the events occurred, Unix ms.
    pub created_at_ms: i64,
}

/// An app's webhooks.
#[derive(Debug, Clone, Default)]
pub struct WebhooksView {
    /// Endpoints.
    pub endpoints: Vec<WebhookRow>,
    /// Every event type the server supports.
    pub event_types: Vec<String>,
    /// The most recent deliveries, newest first.
    pub recent: Vec<DeliveryRow>,
    /// Failed deliveries, newest first.
    pub failed: Vec<DeliveryRow>,
}

/// Something that happened in an app, for the live debug console.
#[derive(Debug, Clone, Serialize)]
pub struct DebugEvent {
    /// Unix ms.
    pub at_ms: i64,
    /// `connection`, `disconnection`, `subscribed`, `unsubscribed`, `publish`, `client_event`,
    /// `webhook`, `error`.
    pub kind: &'static str,
    /// The channel, when there is one.
    pub channel: Option<String>,
    /// The socket id, when there is one.
    pub socket_id: Option<String>,
    /// A short description (event name and data, error text, webhook outcome).
    pub detail: String,
    /// In a cluster, the node it happened on (`HERALD_NODE_ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Who may sign up in the dashboard (`HERALD_SIGNUP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signup {
    /// Nobody: no sign-up page (404) and no link to one.
    #[default]
    Closed,
    /// Only people invited to a tenant: the sign-up page says so.
    Invite,
    /// Anyone, with an email they confirm.
    Open,
}

/// Self-service accounts: sign-up with email verification and password resets by emailed
/// links. The answers never tell whether an address has an account.
pub trait AccountPort: Send + Sync + 'static {
    /// Signs `email` up with `password`: [`PortError::Invalid`] for an address or a password
    /// that cannot be used; otherwise `Ok`, whether the address is free or taken, after the
    /// same work (one password hash). What follows (a new tenant and a verification link, or a
    /// note to the account's owner) is emailed.
    fn sign_up(&self, email: &str, password: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// Follows verification link `token` with `password`, the one chosen at the sign-up that
    /// sent it: the admin, now verified, to sign in; `None` when the link is unknown, expired
    /// or used; [`PortError::Invalid`] (the link stays unused) for another password.
    fn verify_email(
        &self,
        token: &str,
        password: &str,
    ) -> impl Future<Output = PortResult<Option<Admin>>> + Send;
    /// Emails a reset link to `email` when it has an account: the same answer and the same
    /// work either way.
    fn forgot_password(&self, email: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// Sets the password of reset link `token`'s user, which ends every session they have;
    /// `false` when the link is unknown, expired or used. A refused password
    /// ([`PortError::Invalid`]) leaves the link unused.
    fn reset_password_with_link(
        &self,
        token: &str,
        password: &str,
    ) -> impl Future<Output = PortResult<bool>> + Send;
}

/// What the dashboard needs from the server.
pub trait AdminPort: AccountPort + Send + Sync + 'static {
    /// The admin with this email and password, if they match (`address`: the client's, for the
    /// audit log's sign-in entries).
    fn authenticate(
        &self,
        email: &str,
        password: &str,
        address: &str,
    ) -> impl Future<Output = PortResult<Option<Admin>>> + Send;
    /// The admin with this user id (a session's user), if it still exists.
    fn admin(&self, user_id: &str) -> impl Future<Output = PortResult<Option<Admin>>> + Send;
    /// Changes the admin's own password after checking the current one.
    fn change_password(
        &self,
        admin: &Admin,
        current: &str,
        new: &str,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Starts `session` for `admin` (just authenticated) at the admin's credential generation.
    fn start_session(
        &self,
        admin: &Admin,
        session: NewSession,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// The live session of cookie `token`, on whichever node it began (its use is recorded).
    fn session(&self, token: &str) -> impl Future<Output = PortResult<Option<SessionInfo>>> + Send;
    /// Ends the session of cookie `token` everywhere.
    fn end_session(&self, token: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// Ends every session of `admin` but `keep`, which moves to credential `generation` (after
    /// the admin changed their own password).
    fn end_other_sessions(
        &self,
        admin: &Admin,
        keep: &str,
        generation: i64,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Tenants the admin may see.
    fn tenants(&self, admin: &Admin) -> impl Future<Output = PortResult<Vec<TenantRow>>> + Send;
    /// Creates a tenant (operator only).
    fn create_tenant(
        &self,
        admin: &Admin,
        name: &str,
    ) -> impl Future<Output = PortResult<TenantRow>> + Send;
    /// Changes what a tenant's admins may create (operator only): `max_apps` (0: no cap) and
    /// `plans` (comma-separated plan names; empty: every plan but unlimited).
    fn update_tenant(
        &self,
        admin: &Admin,
        id: &str,
        max_apps: u64,
        plans: &str,
    ) -> impl Future<Output = PortResult<TenantRow>> + Send;
    /// Every user (operator only).
    fn users(&self, admin: &Admin) -> impl Future<Output = PortResult<Vec<UserRow>>> + Send;
    /// Creates a user (operator only).
    fn create_user(
        &self,
        admin: &Admin,
        user: NewUser,
    ) -> impl Future<Output = PortResult<UserRow>> + Send;
    /// Sets a user's password (operator only).
    fn reset_password(
        &self,
        admin: &Admin,
        email: &str,
        password: &str,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// The members of the admin's tenant (owners and admins only).
    fn members(&self, admin: &Admin) -> impl Future<Output = PortResult<Vec<MemberRow>>> + Send;
    /// Gives a member of the admin's tenant a new role (`Some`) or removes them (`None`); their
    /// sessions end when the role goes down or they go. Returns the member as they were.
    fn change_member(
        &self,
        admin: &Admin,
        user_id: &str,
        role: Option<Role>,
    ) -> impl Future<Output = PortResult<MemberRow>> + Send;
    /// The pending invitations of the admin's tenant (owners and admins).
    fn invitations(
        &self,
        admin: &Admin,
    ) -> impl Future<Output = PortResult<Vec<InvitationRow>>> + Send;
    /// Invites `email` as `role` (again: a new link, the old one stops working); the server
    /// sends the link.
    fn invite(
        &self,
        admin: &Admin,
        email: &str,
        role: Role,
    ) -> impl Future<Output = PortResult<InvitationRow>> + Send;
    /// Revokes a pending invitation.
    fn revoke_invitation(
        &self,
        admin: &Admin,
        id: &str,
    ) -> impl Future<Output = PortResult<InvitationRow>> + Send;
    /// The live invitation of a link's token, for the page that accepts it.
    fn invitation(
        &self,
        token: &str,
    ) -> impl Future<Output = PortResult<Option<InvitationRow>>> + Send;
    /// Accepts an invitation: the new member with `password`, signed in next.
    fn accept_invitation(
        &self,
        token: &str,
        password: &str,
        address: &str,
    ) -> impl Future<Output = PortResult<Admin>> + Send;
    /// The management API tokens of the admin's tenant (owners and admins): every live one, and
    /// a page of the dead ones older than `before` (a cursor a page gave).
    fn api_tokens(
        &self,
        admin: &Admin,
        before: Option<&str>,
    ) -> impl Future<Output = PortResult<ApiTokenPage>> + Send;
    /// Creates a token (owners and admins); returns it and its text, shown once.
    fn create_api_token(
        &self,
        admin: &Admin,
        new: NewApiToken,
    ) -> impl Future<Output = PortResult<(ApiTokenRow, String)>> + Send;
    /// Revokes a token of the admin's tenant.
    fn revoke_api_token(
        &self,
        admin: &Admin,
        id: &str,
    ) -> impl Future<Output = PortResult<ApiTokenRow>> + Send;
    /// Audit entries of the admin's tenant (the operator: every tenant's, or one's).
    fn audit(
        &self,
        admin: &Admin,
        query: AuditQuery,
    ) -> impl Future<Output = PortResult<Vec<AuditRow>>> + Send;
    /// The plan presets.
    fn plans(&self) -> Vec<PlanRow>;
    /// Apps in the admin's scope, with live figures.
    fn apps(&self, admin: &Admin) -> impl Future<Output = PortResult<Vec<AppSummary>>> + Send;
    /// One app in the admin's scope.
    fn app(&self, admin: &Admin, id: &str) -> impl Future<Output = PortResult<AppDetail>> + Send;
    /// Creates an app.
    fn create_app(
        &self,
        admin: &Admin,
        app: CreateApp,
    ) -> impl Future<Output = PortResult<AppDetail>> + Send;
    /// Changes an app.
    fn update_app(
        &self,
        admin: &Admin,
        id: &str,
        changes: AppChanges,
    ) -> impl Future<Output = PortResult<AppDetail>> + Send;
    /// Deletes an app.
    fn delete_app(&self, admin: &Admin, id: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// The app with its key secrets (refused to roles that may not see them).
    fn reveal_keys(
        &self,
        admin: &Admin,
        id: &str,
    ) -> impl Future<Output = PortResult<AppDetail>> + Send;
    /// Adds a key pair; the current one keeps working for `grace_seconds` (0: until revoked).
    fn rotate_key(
        &self,
        admin: &Admin,
        id: &str,
        grace_seconds: u64,
    ) -> impl Future<Output = PortResult<AppDetail>> + Send;
    /// Revokes one key pair.
    fn revoke_key(
        &self,
        admin: &Admin,
        id: &str,
        key: &str,
    ) -> impl Future<Output = PortResult<AppDetail>> + Send;
    /// The app's usage history and live figures.
    fn usage(&self, admin: &Admin, id: &str) -> impl Future<Output = PortResult<UsageView>> + Send;
    /// The app's occupied channels.
    fn channels(
        &self,
        admin: &Admin,
        id: &str,
    ) -> impl Future<Output = PortResult<Vec<ChannelRow>>> + Send;
    /// The app's webhook endpoints and deliveries.
    fn webhooks(
        &self,
        admin: &Admin,
        id: &str,
    ) -> impl Future<Output = PortResult<WebhooksView>> + Send;
    /// Adds an endpoint.
    fn add_webhook(
        &self,
        admin: &Admin,
        id: &str,
        form: WebhookForm,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Replaces an endpoint's settings.
    fn update_webhook(
        &self,
        admin: &Admin,
        id: &str,
        webhook_id: &str,
        form: WebhookForm,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Removes an endpoint.
    fn remove_webhook(
        &self,
        admin: &Admin,
        id: &str,
        webhook_id: &str,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Queues a test request to an endpoint.
    fn test_webhook(
        &self,
        admin: &Admin,
        id: &str,
        webhook_id: &str,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Queues failed deliveries again (one, or all when `None`); returns how many.
    fn retry_deliveries(
        &self,
        admin: &Admin,
        id: &str,
        delivery_id: Option<i64>,
    ) -> impl Future<Output = PortResult<u64>> + Send;
    /// The app's live events.
    fn tap(
        &self,
        admin: &Admin,
        id: &str,
    ) -> impl Future<Output = PortResult<broadcast::Receiver<DebugEvent>>> + Send;

    /// How `admin` sees node `node_id` on a console line: internal node ids are the platform
    /// operator's, a tenant admin sees "node 1", "node 2", … (the server's choice). Default:
    /// the id.
    fn node_label(&self, admin: &Admin, node_id: &str) -> String {
        let _ = admin;
        node_id.to_owned()
    }
}

/// Sign-in budgets every node of a cluster shares (the server keeps them in Redis), so an
/// attacker spreading guesses over N nodes does not get N times the budget. The dashboard checks
/// its own in-memory budgets first (they also bound the keys a stranger can make the shared
/// store hold), then these.
pub trait SharedBudgets: Send + Sync + std::fmt::Debug + 'static {
    /// Takes one attempt from budget `key` (the dashboard's own name: a client address or
    /// network, or a hash of an email, never a password): at most `burst` attempts at once, one
    /// more every `period / burst`. `Some(Ok(()))`: allowed; `Some(Err(seconds))`: refused, retry after
    /// that long; `None`: the shared store did not answer (the in-memory budgets decide alone).
    fn take(
        &self,
        key: String,
        burst: u32,
        period: Duration,
    ) -> futures_util::future::BoxFuture<'_, Option<Result<(), u64>>>;

    /// How many nodes' in-memory budgets make up the cluster's now: 1 while the shared store
    /// answers; while it is not asked (it failed just before), the live nodes last known, and
    /// each in-memory budget allows a 1/N share, so the cluster as a whole stays near one
    /// budget. Always 1 on a single node.
    fn local_share(&self) -> u32 {
        1
    }
}
