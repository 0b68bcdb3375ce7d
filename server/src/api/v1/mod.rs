//! The management API, `/api/v1`, on the main listener: a tenant's apps (list, create, get,
//! update, delete), key rotation and revocation, webhooks (list, add, remove) and usage, for
//! scripts holding a bearer token (`tenants/tokens.rs`). Every operation goes through the
//! store's scoped view as an admin of the token's tenant, so another tenant's app is "not
//! found" and the tenant's plan and limits apply exactly as in the dashboard; the values are
//! checked by the same code as the CLI's (`NewApp`, `AppPatch`, the webhook checks). Each
//! write runs inside [`AuditBy::scope`] with the token as actor, so the store writes its audit
//! entry in the change's own transaction, then refreshes the app cache (other nodes follow the
//! store's revision, as for the dashboard). `guard.rs` holds authentication, scopes,
//! the rate limit, the JSON body rules and the error shape; `openapi.rs` the document served
//! at `/api/v1/openapi.json`.

mod guard;
mod openapi;

pub use guard::{
    need, query_params, Authorized, Body, Caller, Needs, Params, TokenLimits, V1Error,
    MAX_BODY_BYTES, UNAUTHORIZED_PER_MINUTE,
};
pub use openapi::{document, ROUTES};

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::node::SharedNode;
use crate::tenants::{
    limit_values, Actor, App, AppPatch, AuditBy, LimitsPatch, MercureKey, MercurePatch, NewApp,
    NewWebhook, Scope, Scoped, Secret, Webhook,
};

/// Most apps one page lists.
pub const MAX_PAGE: usize = 100;
/// Apps a page lists when `limit` is not given.
const DEFAULT_PAGE: usize = 20;
/// The longest grace period a rotation may give the old key (30 days).
const MAX_GRACE_SECONDS: u64 = 30 * 86_400;

/// The base of `/api/v1` the OpenAPI document names in `servers`: `HERALD_PUBLIC_URL` when it
/// is set (with its path: a proxy's mount prefix), else the prefix the request came through
/// (`/realtime/api/v1/...`: `/realtime`, relative to the document's host), else `/`.
#[derive(Debug, Clone, Default)]
pub struct PublicBase(pub Option<String>);

/// The path prefix a request came through before the mount-prefix rewrite took it off
/// (`startup::strip_mount_prefix`), as a request extension.
#[derive(Debug, Clone)]
pub struct MountPrefix(pub String);

/// The `/api/v1` routes; `public_url` is `HERALD_PUBLIC_URL` as configured (`None`: unset).
pub fn router(public_url: Option<String>) -> Router<SharedNode> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/apps", get(list_apps).post(create_app))
        .route(
            "/api/v1/apps/{app_id}",
            get(get_app).patch(update_app).delete(delete_app),
        )
        .route("/api/v1/apps/{app_id}/keys/rotate", post(rotate_key))
        .route("/api/v1/apps/{app_id}/keys/revoke", post(revoke_key))
        .route(
            "/api/v1/apps/{app_id}/webhooks",
            get(list_webhooks).post(add_webhook),
        )
        .route(
            "/api/v1/apps/{app_id}/webhooks/{webhook_id}",
            delete(remove_webhook).patch(update_webhook),
        )
        .route("/api/v1/apps/{app_id}/usage", get(usage))
        .layer(Extension(Arc::new(TokenLimits::default())))
        .layer(Extension(PublicBase(public_url)))
        .layer(axum::middleware::map_response(no_store))
}

/// No answer is cached anywhere: some carry an app's secret (create, rotate).
async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

async fn openapi_json(
    Extension(base): Extension<PublicBase>,
    prefix: Option<Extension<MountPrefix>>,
) -> Json<Value> {
    let url = base
        .0
        .or_else(|| {
            prefix
                .map(|Extension(MountPrefix(p))| p)
                .filter(|p| is_clean_prefix(p))
        })
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let mut document = document();
    document["servers"] = json!([{ "url": url }]);
    Json(document)
}

/// The longest request prefix the OpenAPI document names as its base.
const MAX_PREFIX: usize = 200;

/// Whether a request's mount prefix may be named as the document's base: a relative path of
/// segments of unreserved characters only (`/realtime`, `/a/b`). The prefix is whatever the
/// request path carried, so anything else (`//evil.example`: protocol-relative, `/\evil.example`
/// that browsers read as `//`, `%`, `:`, `..`, empty segments) would let a link on this host
/// point a client (Swagger UI, a generated SDK) and its bearer token at another host.
fn is_clean_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_PREFIX
        && prefix.starts_with('/')
        && prefix[1..].split('/').all(|segment| {
            !segment.is_empty()
                && !segment.contains("..")
                && segment != "."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        })
}

/// The store as an admin of the caller's tenant (the scopes narrow it further).
fn scoped<'a>(node: &'a SharedNode, caller: &Caller) -> Scoped<'a> {
    node.store
        .scoped(Actor::tenant_admin(caller.token.tenant_id.clone()))
}

/// The token as the actor of a change: run inside [`AuditBy::scope`], the store writes the
/// change's audit entry in the change's own transaction (no change without its entry).
fn by(caller: &Caller) -> AuditBy {
    AuditBy {
        actor_id: None,
        actor: guard::token_actor(&caller.token),
        address: caller.address.clone(),
    }
}

/// After a write: the app cache follows at once on this node (others follow the revision). The
/// change is committed and audited by then, so a failed refresh is logged, not answered: an
/// error would hide a committed change (and a new secret) from the client, and the revision
/// poll catches the cache up.
async fn refresh(node: &SharedNode) {
    if let Err(error) = node.refresh_apps().await {
        tracing::warn!(%error, "the app cache did not follow a management API change at once");
    }
}

/// An app as the API shows it; the secrets only in the answers that made them (create,
/// rotate).
fn view(app: &App, with_secret: bool) -> Value {
    let limits: Map<String, Value> = limit_values(&app.limits)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), json!(value)))
        .collect();
    let mercure = &app.mercure;
    let mut value = json!({
        "id": app.id,
        "name": app.name,
        "key": app.key,
        "tenant_id": app.tenant_id,
        "plan": app.plan,
        "enabled": app.enabled,
        "client_events": app.client_events,
        "subscription_count": app.subscription_count,
        "allowed_origins": app.allowed_origins,
        "limits": limits,
        "previous_key": app.previous_key.as_ref().map(|p| json!({
            "key": p.key,
            "expires_at": p.expires_at,
        })),
        "created_at": app.created_at,
        "mercure": {
            "jwt_key": match mercure.jwt_key {
                MercureKey::AppSecret => "app_secret",
                MercureKey::Hmac(_) => "hs256",
                MercureKey::PublicPem(_) => "public_key",
            },
            "audience": mercure.audience,
            "issuer": mercure.issuer,
            "anonymous": mercure.anonymous,
            "history_size": mercure.history_size,
            "history_seconds": mercure.history_seconds,
        },
    });
    if with_secret {
        value["secret"] = json!(app.secret.expose());
    }
    value
}

/// A webhook as the API shows it. The URL may carry the receiver's credential (user info, path,
/// query): it is whole only for a token that may change webhooks (`full_url`), otherwise masked
/// exactly as the dashboard masks it for viewers (scheme, host and `/…`).
fn webhook_view(hook: &Webhook, full_url: bool) -> Value {
    let url = if full_url {
        hook.url.clone()
    } else {
        crate::tenants::masked_url(&hook.url)
    };
    json!({
        "id": hook.id,
        "app_id": hook.app_id,
        "url": url,
        "events": hook.events.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "channel_prefix": hook.channel_prefix,
        // Header values may be the receiver's credentials: names only.
        "header_names": hook.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "created_at": hook.created_at,
    })
}

/// The Mercure settings a body may change (the CLI's `--mercure-*` flags).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MercureInput {
    /// An HS256 key ("": back to the app's secret).
    jwt_key: Option<String>,
    /// A PEM public key (RS256 / ES256) instead.
    jwt_public_key: Option<String>,
    audience: Option<String>,
    issuer: Option<String>,
    anonymous: Option<bool>,
    history_size: Option<u64>,
    history_seconds: Option<u64>,
}

impl MercureInput {
    /// Whether it sets the hub's JWT key: a credential (whoever knows an HS256 key mints the
    /// hub's publish and subscribe tokens), so `keys:write` is needed as well as `apps:write`.
    fn sets_key(input: Option<&MercureInput>) -> bool {
        input.is_some_and(|m| m.jwt_key.is_some() || m.jwt_public_key.is_some())
    }

    fn patch(self) -> Result<MercurePatch, V1Error> {
        let jwt_key = match (self.jwt_key, self.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err(V1Error::invalid("give jwt_key or jwt_public_key, not both"))
            }
            (Some(key), None) => Some(MercureKey::Hmac(Secret::new(key))),
            (None, Some(pem)) => Some(MercureKey::PublicPem(pem)),
            (None, None) => None,
        };
        Ok(MercurePatch {
            jwt_key,
            audience: self.audience,
            issuer: self.issuer,
            anonymous: self.anonymous,
            history_size: self.history_size,
            history_seconds: self.history_seconds,
        })
    }
}

/// Limits by name (the CLI's `--max-*` flags without the dashes), each a number, 0 meaning
/// unlimited.
fn limits_patch(limits: Option<Map<String, Value>>) -> Result<LimitsPatch, V1Error> {
    let mut patch = LimitsPatch::default();
    for (name, value) in limits.unwrap_or_default() {
        let Some(number) = value.as_u64() else {
            return Err(V1Error::invalid(format!(
                "limits.{name} must be a whole number from 0"
            )));
        };
        if !patch.set(&name, number) {
            return Err(V1Error::invalid(format!(
                "there is no limit named {name:?}"
            )));
        }
    }
    Ok(patch)
}

/// A new app: the CLI's `apps create` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    plan: Option<String>,
    enabled: Option<bool>,
    client_events: Option<bool>,
    subscription_count: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    limits: Option<Map<String, Value>>,
    mercure: Option<MercureInput>,
}

/// Changes to an app: the CLI's `apps update` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    enabled: Option<bool>,
    client_events: Option<bool>,
    subscription_count: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    limits: Option<Map<String, Value>>,
    mercure: Option<MercureInput>,
}

/// The opaque cursor after `id` (hex of `a:` and the id, so it is not mistaken for an id).
fn cursor_after(id: &str) -> String {
    hex::encode(format!("a:{id}"))
}

fn parse_cursor(cursor: &str) -> Result<String, V1Error> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("a:").map(str::to_owned))
        .ok_or_else(|| {
            V1Error::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "the cursor is not one this API gave",
            )
        })
}

/// Apps sort by their id as a number (ids are digit strings): shorter first, then by digits.
fn id_order(id: &str) -> (usize, &str) {
    (id.len(), id)
}

async fn list_apps(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::AppsRead>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, V1Error> {
    let params = query_params(query.as_deref())?;
    let limit = match params.get("limit").map(String::as_str) {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=MAX_PAGE) => n,
            _ => {
                return Err(V1Error::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_limit",
                    format!("limit is a whole number from 1 to {MAX_PAGE}"),
                ))
            }
        },
    };
    let after = params.get("cursor").map(|c| parse_cursor(c)).transpose()?;
    let mut apps = scoped(&node, &caller).list_apps().await?;
    apps.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
    let rest: Vec<&App> = apps
        .iter()
        .filter(|a| {
            after
                .as_deref()
                .is_none_or(|after| id_order(&a.id) > id_order(after))
        })
        .collect();
    let page: Vec<Value> = rest.iter().take(limit).map(|a| view(a, false)).collect();
    let next = (rest.len() > limit).then(|| cursor_after(&rest[limit - 1].id));
    Ok(Json(json!({ "data": page, "next_cursor": next })))
}

async fn create_app(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::AppsWrite>,
    Body(body): Body<CreateBody>,
) -> Result<Response, V1Error> {
    if MercureInput::sets_key(body.mercure.as_ref()) {
        caller.require(&node, Scope::KeysWrite).await?;
    }
    let new = NewApp {
        mercure: body.mercure.unwrap_or_default().patch()?,
        name: body.name,
        tenant_id: Some(caller.token.tenant_id.clone()),
        plan: body.plan,
        enabled: body.enabled,
        client_events: body.client_events,
        subscription_count: body.subscription_count,
        limits: limits_patch(body.limits)?,
        allowed_origins: body.allowed_origins,
        ..NewApp::default()
    };
    let app = by(&caller)
        .scope(scoped(&node, &caller).create_app(new))
        .await?;
    refresh(&node).await;
    Ok((StatusCode::CREATED, Json(view(&app, true))).into_response())
}

async fn get_app(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::AppsRead>,
    Params(app_id): Params<String>,
) -> Result<Json<Value>, V1Error> {
    let app = scoped(&node, &caller).get_app(&app_id).await?;
    Ok(Json(view(&app, false)))
}

async fn update_app(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::AppsWrite>,
    Params(app_id): Params<String>,
    Body(body): Body<UpdateBody>,
) -> Result<Json<Value>, V1Error> {
    if MercureInput::sets_key(body.mercure.as_ref()) {
        caller.require(&node, Scope::KeysWrite).await?;
    }
    let store = scoped(&node, &caller);
    let patch = AppPatch {
        mercure: body.mercure.unwrap_or_default().patch()?,
        name: body.name,
        enabled: body.enabled,
        client_events: body.client_events,
        subscription_count: body.subscription_count,
        limits: limits_patch(body.limits)?,
        allowed_origins: body.allowed_origins,
    };
    let after = by(&caller).scope(store.update_app(&app_id, patch)).await?;
    refresh(&node).await;
    Ok(Json(view(&after, false)))
}

async fn delete_app(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::AppsWrite>,
    Params(app_id): Params<String>,
) -> Result<StatusCode, V1Error> {
    by(&caller)
        .scope(scoped(&node, &caller).delete_app(&app_id))
        .await?;
    refresh(&node).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// Seconds the old pair keeps working (default a day; 0: until revoked).
    grace_seconds: Option<u64>,
}

async fn rotate_key(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::KeysWrite>,
    Params(app_id): Params<String>,
    Body(body): Body<RotateBody>,
) -> Result<Json<Value>, V1Error> {
    let grace = body.grace_seconds.unwrap_or(86_400);
    if grace > MAX_GRACE_SECONDS {
        return Err(V1Error::invalid(format!(
            "grace_seconds is at most {MAX_GRACE_SECONDS}"
        )));
    }
    let app = by(&caller)
        .scope(scoped(&node, &caller).rotate_key(&app_id, grace))
        .await?;
    refresh(&node).await;
    Ok(Json(view(&app, true)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// The key to revoke.
    key: String,
}

async fn revoke_key(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::KeysWrite>,
    Params(app_id): Params<String>,
    Body(body): Body<RevokeBody>,
) -> Result<Json<Value>, V1Error> {
    let app = by(&caller)
        .scope(scoped(&node, &caller).revoke_key(&app_id, &body.key))
        .await?;
    refresh(&node).await;
    Ok(Json(view(&app, false)))
}

async fn list_webhooks(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::WebhooksRead>,
    Params(app_id): Params<String>,
) -> Result<Json<Value>, V1Error> {
    scoped(&node, &caller).get_app(&app_id).await?;
    let hooks = node.store.list_webhooks(Some(&app_id)).await?;
    let full_url = caller.token.allows(Scope::WebhooksWrite);
    let data: Vec<Value> = hooks.iter().map(|h| webhook_view(h, full_url)).collect();
    Ok(Json(json!({ "data": data })))
}

/// A webhook endpoint: the CLI's `webhooks add` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    events: Vec<String>,
    channel_prefix: Option<String>,
    /// Extra request headers, `Name: value`.
    #[serde(default)]
    headers: Vec<String>,
}

async fn add_webhook(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::WebhooksWrite>,
    Params(app_id): Params<String>,
    Body(body): Body<WebhookBody>,
) -> Result<Response, V1Error> {
    scoped(&node, &caller)
        .app_for(&app_id, crate::tenants::Permission::WriteWebhooks)
        .await?;
    crate::webhooks::check_destination(&node.settings.webhooks, &body.url).await?;
    let new = NewWebhook {
        app_id: app_id.clone(),
        url: body.url,
        events: body.events,
        channel_prefix: body.channel_prefix,
        headers: body.headers,
    };
    let hook = by(&caller).scope(node.store.create_webhook(new)).await?;
    refresh(&node).await;
    Ok((StatusCode::CREATED, Json(webhook_view(&hook, true))).into_response())
}

/// Changes to a webhook endpoint: what the dashboard's form changes. Left out: unchanged (the
/// headers too, whose values the API never shows), except that a `url` with another origin
/// (scheme, host, port) drops the stored headers unless `headers` is given again (the answer
/// then says `"headers_dropped": true`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookChanges {
    url: Option<String>,
    events: Option<Vec<String>>,
    channel_prefix: Option<String>,
    /// Extra request headers, `Name: value` (replaces them all; `[]`: none).
    headers: Option<Vec<String>>,
}

async fn update_webhook(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::WebhooksWrite>,
    Params((app_id, webhook_id)): Params<(String, String)>,
    Body(body): Body<WebhookChanges>,
) -> Result<Json<Value>, V1Error> {
    scoped(&node, &caller)
        .app_for(&app_id, crate::tenants::Permission::WriteWebhooks)
        .await?;
    let existing = node
        .store
        .list_webhooks(Some(&app_id))
        .await?
        .into_iter()
        .find(|h| h.id == webhook_id)
        .ok_or_else(|| V1Error::not_found(format!("no webhook {webhook_id} in app {app_id}")))?;
    if let Some(url) = &body.url {
        crate::webhooks::check_destination(&node.settings.webhooks, url).await?;
    }
    // The stored header values (the receiver's credentials, never shown) go only where they
    // went before: a new origin without `headers` restated gets none.
    let headers_dropped = body.headers.is_none()
        && !existing.headers.is_empty()
        && body
            .url
            .as_deref()
            .is_some_and(|url| !same_origin(url, &existing.url));
    let existing_headers = if headers_dropped {
        Vec::new()
    } else {
        existing.headers
    };
    let new = NewWebhook {
        app_id: app_id.clone(),
        url: body.url.unwrap_or(existing.url),
        events: body.events.unwrap_or_else(|| {
            existing
                .events
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect()
        }),
        channel_prefix: Some(body.channel_prefix.unwrap_or(existing.channel_prefix)),
        headers: body.headers.unwrap_or_else(|| {
            existing_headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect()
        }),
    };
    let hook = by(&caller)
        .scope(node.store.update_webhook(&webhook_id, new))
        .await?;
    refresh(&node).await;
    let mut view = webhook_view(&hook, true);
    if headers_dropped {
        view["headers_dropped"] = json!(true);
    }
    Ok(Json(view))
}

/// Whether two URLs have the same origin (scheme, host, port); one that does not parse has
/// none in common with anything.
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

async fn remove_webhook(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::WebhooksWrite>,
    Params((app_id, webhook_id)): Params<(String, String)>,
) -> Result<StatusCode, V1Error> {
    scoped(&node, &caller)
        .app_for(&app_id, crate::tenants::Permission::WriteWebhooks)
        .await?;
    by(&caller)
        .scope(node.store.delete_webhook(&app_id, &webhook_id))
        .await?;
    refresh(&node).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn usage(
    State(node): State<SharedNode>,
    Authorized(caller, _): Authorized<need::UsageRead>,
    Params(app_id): Params<String>,
) -> Result<Json<Value>, V1Error> {
    let clock = &node.settings.clock;
    let report = scoped(&node, &caller)
        .usage(&app_id, clock.day(), clock.minute())
        .await?;
    Ok(Json(json!({
        "app_id": report.app_id,
        "today": report.today,
        "days": report.days,
    })))
}
