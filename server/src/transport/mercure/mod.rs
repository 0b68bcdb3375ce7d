//! The Mercure hub (design.md, "Mercure"): each app is a hub at
//! `/apps/{app_id}/.well-known/mercure`, and the app named by `HERALD_MERCURE_ROOT_APP` also at
//! `/.well-known/mercure`. `POST` publishes an update (`form.rs` parses it), `GET` subscribes
//! with Server-Sent Events (`stream.rs`), both drafts told apart by their parameters;
//! `registry.rs` holds each app's subscriptions and history, and bridges its Pusher channels.
//!
//! Every response names the hub in a `Link: <...>; rel="mercure"` header. Browsers on the app's
//! allowed origins get CORS headers (with credentials only for an explicit list of origins).

mod api;
mod cluster;
mod direct;
#[doc(hidden)]
pub mod form;
mod registry;
mod shared;
mod stream;
mod subscriptions;

pub use direct::{is_hub_path, refuse_head as direct_refuse_head, Direct};
#[doc(hidden)]
pub use form::{
    is_reserved_topic, parse_publish_form, parse_subscribe_query, FormError, PublishForm,
    QueryError, SubscribeQuery,
};
pub use registry::{format_event, HistoryLimits, Hubs, Resume, MAX_REPLAY};

impl Hubs {
    /// Cluster mode: updates cross Redis, the history lives there, and the live keys of the
    /// apps with subscribers here are kept fresh (`cluster.rs`). Set once, before serving.
    pub fn join_cluster(&self, cluster: crate::cluster::Cluster) {
        if self.cluster.set(cluster).is_ok() {
            cluster::start_live_refresher(self);
            shared::start_sync(self);
        }
    }
}

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::auth::mercure::{
    locate_token, www_authenticate, www_authenticate_insufficient_scope,
    www_authenticate_invalid_request, Draft, Grants, TokenSource,
};
use crate::node::SharedNode;
use crate::protocol::mercure::{Selector, SelectorKind};
use crate::protocol::{ChannelKind, ChannelName};
use crate::tenants::AppRef;

use registry::{AppMercure, Update};

/// The hub routes (state: the node; the apps' Mercure state travels as an extension).
pub fn router(hubs: Hubs) -> Router<SharedNode> {
    Router::new()
        .route(
            "/apps/{app_id}/.well-known/mercure",
            get(app_subscribe).post(app_publish).options(app_preflight),
        )
        .route(
            "/.well-known/mercure",
            get(root_subscribe)
                .post(root_publish)
                .options(root_preflight),
        )
        .route(
            "/apps/{app_id}/.well-known/mercure/subscriptions",
            get(api::app_api),
        )
        .route(
            "/apps/{app_id}/.well-known/mercure/subscriptions/{*rest}",
            get(api::app_api),
        )
        .route("/.well-known/mercure/subscriptions", get(api::root_api))
        .route(
            "/.well-known/mercure/subscriptions/{*rest}",
            get(api::root_api),
        )
        .layer(Extension(hubs))
}

/// The server's public URL: `HERALD_PUBLIC_URL`, else as the client reached it (`Host`, http).
fn public_url(node: &SharedNode, headers: &HeaderMap) -> String {
    node.settings.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    })
}

/// App `app_id`'s hub URL (relative selectors and topics resolve against it).
fn hub_url(node: &SharedNode, headers: &HeaderMap, app_id: &str) -> String {
    crate::tenants::MercureSettings::hub_url(app_id, &public_url(node, headers))
}

/// A refusal, boxed (a `Response` is large).
type Refused = Box<Response>;

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

fn unauthorized(status: StatusCode, challenge: String, message: &str) -> Response {
    let mut response = text(status, message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Adds the discovery link and, for an allowed browser origin, the CORS headers.
fn decorate(node: &SharedNode, response: &mut Response, app: &AppRef, request: &HeaderMap) {
    let link = format!("<{}>; rel=\"mercure\"", hub_url(node, request, &app.id));
    let headers = response.headers_mut();
    if let (false, Ok(link)) = (
        headers.contains_key(header::LINK),
        HeaderValue::from_str(&link),
    ) {
        headers.insert(header::LINK, link);
    }
    let origin = request.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if let Some(origin) = origin.filter(|o| app.allows_origin(Some(o))) {
        if let Ok(value) = HeaderValue::from_str(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            // Cookies only for origins the app lists by name, never for "any origin".
            if !app.allowed_origins.is_empty() {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Link, Last-Event-ID, Mercure-Last-Event-ID"),
            );
        }
    }
}

fn find_app(node: &SharedNode, app_id: &str) -> Result<AppRef, Refused> {
    match node.apps.by_id(app_id) {
        Some(app) if app.enabled => Ok(app),
        Some(_) => Err(Box::new(text(StatusCode::FORBIDDEN, "the app is disabled"))),
        None => Err(Box::new(text(StatusCode::NOT_FOUND, "no such app"))),
    }
}

fn root_app(node: &SharedNode) -> Result<String, Refused> {
    node.settings
        .mercure
        .root_app
        .clone()
        .ok_or_else(|| Box::new(text(StatusCode::NOT_FOUND, "no Mercure hub at this path")))
}

/// The grants of the request's token (`Ok(None)`: no token), or the 400 / 401 to answer.
fn grants(
    node: &SharedNode,
    app: &AppRef,
    mercure: &AppMercure,
    headers: &HeaderMap,
    query_authorization: Option<&str>,
    draft: Draft,
) -> Result<Option<Grants>, Refused> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookie = (!cookies.is_empty()).then(|| cookies.join("; "));
    let token = match locate_token(draft, authorization, cookie.as_deref(), query_authorization) {
        Ok(Some((_, token))) => token,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(Box::new(unauthorized(
                StatusCode::BAD_REQUEST,
                www_authenticate_invalid_request(draft),
                &error.to_string(),
            )))
        }
    };
    let public_url = public_url(node, headers);
    let verifier = mercure.verifier(app, &public_url).map_err(|error| {
        tracing::warn!(app = %app.id, %error, "the app's Mercure key is unusable");
        Box::new(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the app's Mercure key is unusable",
        ))
    })?;
    let hub_url = crate::tenants::MercureSettings::hub_url(&app.id, &public_url);
    match verifier.verify_in(token, node.settings.clock.now_seconds(), &hub_url) {
        // A draft-08 request (`match*`, `last_event_id`) takes only draft-08 access tokens: a
        // draft-07 token skips the `exp`, `aud` and `iss` checks draft-08 requires.
        Ok(grants) if draft == Draft::Draft08 && grants.draft != Some(Draft::Draft08) => {
            let error = crate::auth::mercure::TokenError::WrongType;
            Err(Box::new(unauthorized(
                StatusCode::UNAUTHORIZED,
                www_authenticate(draft, Some(&error)),
                &format!("{error}"),
            )))
        }
        Ok(grants) => Ok(Some(grants)),
        Err(error) => Err(Box::new(unauthorized(
            StatusCode::UNAUTHORIZED,
            www_authenticate(draft, Some(&error)),
            &format!("{error}"),
        ))),
    }
}

/// Cross-site request forgery: a form on any site can POST a publish, and the browser adds the
/// hub's cookie. A publish whose token comes from a cookie is taken only from an origin (the
/// `Origin` header, else the `Referer`'s) that the app lists by name; an app that allows every
/// origin takes cookie publishes from none. Tokens in the `Authorization` header are unaffected.
fn cookie_publish_allowed(app: &AppRef, headers: &HeaderMap) -> bool {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookie = (!cookies.is_empty()).then(|| cookies.join("; "));
    let from_cookie = matches!(
        locate_token(Draft::Draft07, authorization, cookie.as_deref(), None),
        Ok(Some((TokenSource::Cookie, _)))
    );
    if !from_cookie {
        return true;
    }
    let origin = match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => Some(origin.to_owned()),
        None => headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .and_then(|r| url::Url::parse(r).ok())
            .map(|url| url.origin().ascii_serialization()),
    };
    match origin {
        Some(origin) => !app.allowed_origins.is_empty() && app.allows_origin(Some(&origin)),
        None => false,
    }
}

async fn app_publish(
    State(node): State<SharedNode>,
    Extension(hubs): Extension<Hubs>,
    Path(app_id): Path<String>,
    request: Request,
) -> Response {
    publish(node, hubs, app_id, request).await
}

async fn root_publish(
    State(node): State<SharedNode>,
    Extension(hubs): Extension<Hubs>,
    request: Request,
) -> Response {
    match root_app(&node) {
        Ok(app_id) => publish(node, hubs, app_id, request).await,
        Err(response) => *response,
    }
}

async fn app_subscribe(
    State(node): State<SharedNode>,
    Extension(hubs): Extension<Hubs>,
    Path(app_id): Path<String>,
    request: Request,
) -> Response {
    subscribe(node, hubs, app_id, request).await
}

async fn root_subscribe(
    State(node): State<SharedNode>,
    Extension(hubs): Extension<Hubs>,
    request: Request,
) -> Response {
    match root_app(&node) {
        Ok(app_id) => subscribe(node, hubs, app_id, request).await,
        Err(response) => *response,
    }
}

async fn app_preflight(
    State(node): State<SharedNode>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    preflight(&node, &app_id, &headers)
}

async fn root_preflight(State(node): State<SharedNode>, headers: HeaderMap) -> Response {
    match root_app(&node) {
        Ok(app_id) => preflight(&node, &app_id, &headers),
        Err(response) => *response,
    }
}

fn preflight(node: &SharedNode, app_id: &str, headers: &HeaderMap) -> Response {
    let app = match find_app(node, app_id) {
        Ok(app) => app,
        Err(response) => return *response,
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    decorate(node, &mut response, &app, headers);
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID, Cache-Control"),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// `POST`: publishes one update.
async fn publish(node: SharedNode, hubs: Hubs, app_id: String, request: Request) -> Response {
    let app = match find_app(&node, &app_id) {
        Ok(app) => app,
        Err(response) => return *response,
    };
    let headers = request.headers().clone();
    let mut response = publish_inner(&node, &hubs, &app, &headers, request).await;
    decorate(&node, &mut response, &app, &headers);
    response
}

async fn publish_inner(
    node: &SharedNode,
    hubs: &Hubs,
    app: &AppRef,
    headers: &HeaderMap,
    request: Request,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a publish is application/x-www-form-urlencoded",
        );
    }
    let draft = Draft::Draft07;
    if !cookie_publish_allowed(app, headers) {
        return text(
            StatusCode::FORBIDDEN,
            "a publish authorized by a cookie needs an Origin (or Referer) the app lists",
        );
    }
    let app_hub = node.hub.app(&app.id);
    let mercure = hubs.app(&app.id, &app_hub);
    // The token first: no body is read for an anonymous publisher.
    let grants = match grants(node, app, &mercure, headers, None, draft) {
        Ok(Some(grants)) => grants,
        Ok(None) => {
            return unauthorized(
                StatusCode::UNAUTHORIZED,
                www_authenticate(draft, None),
                "publishing needs a token",
            )
        }
        Err(response) => return *response,
    };
    let draft = grants.draft.unwrap_or(draft);
    // A token with no publish right at all (a subscriber's, which browsers hold) is refused
    // before it can spend the app's event budget below.
    if grants.publish.is_empty() {
        return unauthorized(
            StatusCode::FORBIDDEN,
            www_authenticate_insufficient_scope(draft),
            "the token may not publish",
        );
    }
    // The REST publish rate limit (one event per update, from the same budget), before the
    // body is read: a publisher over its rate costs no body.
    let rate = app.limits.backend_events_per_second();
    if let Err(wait) = node
        .rates
        .check(&app.id, crate::hub::Budget::BackendEvents, rate, 1)
    {
        node.taps.emit(&app.id, "error", None, None, || {
            "Mercure publish refused: over the events rate limit (429)".to_owned()
        });
        let mut response = text(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Rate limit exceeded: at most {} events per second for this app",
                rate.unwrap_or_default()
            ),
        );
        let retry = wait.map_or(1, |w| w.as_secs_f64().ceil().max(1.0) as u64);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        return response;
    }
    let body = match axum::body::to_bytes(request.into_body(), form::MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the publish body is larger than {} bytes",
                    form::MAX_FORM_BYTES
                ),
            )
        }
    };
    let form = match parse_publish_form(&body) {
        Ok(form) => form,
        Err(error) if error.too_large() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
        }
        Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let data = form.data.as_deref().unwrap_or("");
    if let Some(max) = app.limits.event_payload_bytes() {
        if data.len() > max {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the update's data is larger than the app's limit of {max} bytes"),
            );
        }
    }
    if !grants.may_publish(&form.topics) {
        return unauthorized(
            StatusCode::FORBIDDEN,
            www_authenticate_insufficient_scope(draft),
            "the token may not publish to every topic of this update",
        );
    }
    // The Pusher channels a public update reaches: at most as many as a trigger may name.
    let bridged = pusher_event_name(form.event_type.as_deref(), app.limits.event_name_length());
    let channels: Vec<ChannelName> = match (form.private, bridged) {
        (false, Some(_)) => form
            .topics
            .iter()
            .filter_map(|topic| ChannelName::parse(topic, app.limits.channel_name_length()).ok())
            .filter(|channel| channel.kind() == ChannelKind::Public)
            .collect(),
        _ => Vec::new(),
    };
    if let Some(max) = app.limits.channels_per_trigger() {
        if channels.len() > max {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Too many channels: the update's topics name {} public channels, at most {max} \
                     (the app's channels per trigger)",
                    channels.len()
                ),
            );
        }
    }
    // The daily quota: one message per topic.
    let usage = node.usage.app(&app.id);
    let quota = app.limits.daily_messages();
    let topics = form.topics.len() as u64;
    let admitted = match &node.cluster {
        None => usage.try_publish(quota, topics),
        Some(cluster) => cluster.admit_daily(&app.id, &usage, quota, topics).await,
    };
    if !admitted {
        node.taps.emit(&app.id, "error", None, None, || {
            "Mercure publish refused: over the daily message quota".to_owned()
        });
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "over the app's daily message quota",
        );
    }
    let id = form.id.clone().unwrap_or_else(registry::new_id);
    mercure.set_limits(history_limits(app));
    let update = Update::new(
        id.clone(),
        form.topics.clone(),
        form.private,
        form.event_type.as_deref(),
        form.retry,
        data,
    );
    // In a cluster, through Redis: every node delivers it (this one included, when it hears
    // it), and any node can replay it.
    let mut delivered = match cluster::publish(node.cluster.as_ref(), &mercure, &app.id, update)
        .await
    {
        Ok(delivered) => delivered,
        Err(error) => {
            // Redis's answer never came: the update may be delivered (under this id) or not.
            // Not delivered here too; the publisher retries with the same id.
            tracing::warn!(app_id = %app.id, %error, "a Mercure publish's outcome is unknown (503)");
            // The id is named (also a generated one), so the retry can carry it.
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the cluster did not confirm the update in time: it may or may not have been \
                     delivered; retry with the same id: {id}"
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
            return response;
        }
    };
    // A public update on a public channel's name reaches its pusher-js subscribers too, under
    // an event name pusher-js takes as an event.
    if let Some(event) = bridged {
        for channel in &channels {
            let topic = channel.as_str();
            let frame = crate::protocol::server::channel_event(event, topic, data);
            delivered += app_hub.publish_unbridged(channel, &frame, data);
            // Other nodes deliver it to their pusher-js subscribers only: their Mercure
            // subscribers get the update itself.
            if let Some(cluster) = &node.cluster {
                cluster.forward_unbridged(&app.id, topic, &frame);
            }
        }
    }
    usage.count(delivered as u64);
    node.taps.emit(
        &app.id,
        "publish",
        form.topics.first().map(String::as_str),
        None,
        || format!("Mercure update {id} (to {delivered})"),
    );
    // The answer is the id alone.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        id,
    )
        .into_response()
}

/// The Pusher event name a public update of type `event_type` reaches pusher-js subscribers
/// under (`message` without a type), or `None` when it must stay a Mercure update: pusher-js
/// handles `pusher:` and `pusher_internal:` events as protocol messages (a publisher could
/// forge a subscription or member event), and a name over the app's event-name limit (in
/// characters, as a REST trigger's) is one a trigger could not send.
fn pusher_event_name(event_type: Option<&str>, max_length: Option<usize>) -> Option<&str> {
    let name = event_type.unwrap_or("message");
    let protocol = name.starts_with("pusher:") || name.starts_with("pusher_internal:");
    let too_long = max_length.is_some_and(|max| name.chars().count() > max);
    (!protocol && !too_long).then_some(name)
}

fn history_limits(app: &AppRef) -> HistoryLimits {
    HistoryLimits {
        size: app.mercure.history_size as usize,
        age: Duration::from_secs(u64::from(app.mercure.history_seconds)),
    }
}

/// `GET`: an SSE stream of the updates the query selects (served by hyper: a subscribe that
/// is not its connection's first request; the others take the direct path, `direct.rs`).
async fn subscribe(node: SharedNode, hubs: Hubs, app_id: String, request: Request) -> Response {
    let app = match find_app(&node, &app_id) {
        Ok(app) => app,
        Err(response) => return *response,
    };
    let headers = request.headers().clone();
    let query = request.uri().query().unwrap_or("").to_owned();
    let mut response = match plan(&node, &hubs, app.clone(), &headers, &query) {
        Ok(plan) => subscribe_through_hyper(node.clone(), plan).await,
        Err(response) => *response,
    };
    decorate(&node, &mut response, &app, &headers);
    response
}

/// A subscribe request, checked (origin, query, token) and not yet admitted.
struct Plan {
    app: AppRef,
    mercure: Arc<AppMercure>,
    draft: Draft,
    selectors: Vec<(SelectorKind, String, Selector)>,
    grants: Option<Grants>,
    resume: Resume,
    /// When the token expires (monotonic).
    expires: Option<tokio::time::Instant>,
    origin: Option<String>,
}

/// Checks a subscribe request: the plan, or the refusal to answer.
fn plan(
    node: &SharedNode,
    hubs: &Hubs,
    app: AppRef,
    headers: &HeaderMap,
    query: &str,
) -> Result<Plan, Refused> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if origin.is_some() && !app.allows_origin(origin) {
        return Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "this origin is not allowed for the app",
        )));
    }
    let hub_url = hub_url(node, headers, &app.id);
    let parsed = match parse_subscribe_query(query, &hub_url) {
        Ok(parsed) => parsed,
        Err(error) => return Err(Box::new(text(StatusCode::BAD_REQUEST, error.to_string()))),
    };
    let draft = parsed.draft();
    let app_hub = node.hub.app(&app.id);
    let mercure = hubs.app(&app.id, &app_hub);
    let grants = grants(
        node,
        &app,
        &mercure,
        headers,
        parsed.authorization.as_deref(),
        draft,
    )?;
    if grants.is_none() && !app.mercure.anonymous {
        return Err(Box::new(unauthorized(
            StatusCode::UNAUTHORIZED,
            www_authenticate(draft, None),
            "subscribing to this hub needs a token",
        )));
    }
    let header_last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let resume = match header_last_id
        .or(parsed.last_event_id.clone())
        .filter(|id| !id.is_empty())
    {
        None => Resume::Live,
        Some(id) if id == "earliest" => Resume::Earliest,
        Some(id) => Resume::After(id),
    };
    let now = node.settings.clock.now_seconds();
    let expires = grants.as_ref().and_then(|g| g.expires_at).map(|exp| {
        tokio::time::Instant::now() + Duration::from_secs(u64::try_from(exp - now).unwrap_or(0))
    });
    Ok(Plan {
        origin: origin_owned(headers),
        app,
        mercure,
        draft,
        selectors: parsed.selectors,
        grants,
        resume,
        expires,
    })
}

/// A subscriber admitted and registered, its replay queued in its outbox.
struct Opened {
    admitted: stream::Admitted,
    subscription: Option<u64>,
    resume_point: Option<String>,
}

/// How many updates a subscriber's outbox holds: the node's outbox bound, and at least a whole
/// replay.
///
/// In a cluster, a resuming subscriber goes live with its replay and the updates held while
/// the history was read from Redis (at most [`registry::PENDING_MAX`]) queued at once: room for
/// both, so going live never overflows the outbox it has just been given.
fn stream_capacity(node: &SharedNode) -> usize {
    let held = if node.cluster.is_some() {
        registry::PENDING_MAX
    } else {
        0
    };
    node.settings.outbox_capacity.max(MAX_REPLAY + held + 64)
}

/// Admits `plan`'s subscriber with `outbox` and registers it (its replay queued there): the
/// subscriber, or the 429 / 503 to answer.
async fn open(
    node: &SharedNode,
    plan: Plan,
    outbox: crate::outbox::Outbox,
) -> Result<Opened, Refused> {
    let Plan {
        app,
        mercure,
        selectors: parsed,
        grants,
        resume,
        origin,
        ..
    } = plan;
    let admitted = match stream::admit(node, &app, origin.as_deref(), outbox).await {
        Ok(admitted) => admitted,
        Err(stream::Refusal::Quota) => {
            return Err(Box::new(text(
                StatusCode::TOO_MANY_REQUESTS,
                "the app's connection quota is reached",
            )))
        }
        Err(stream::Refusal::Node) => {
            return Err(Box::new(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is full or stopping",
            )))
        }
        Err(stream::Refusal::App) => {
            return Err(find_app(node, &app.id)
                .err()
                .unwrap_or_else(|| Box::new(text(StatusCode::FORBIDDEN, "the app is disabled"))))
        }
    };
    mercure.set_limits(history_limits(&app));
    let mut selectors = Vec::with_capacity(parsed.len());
    let mut described = Vec::with_capacity(parsed.len());
    for (kind, _, selector) in parsed {
        // One copy of the selector's text: the selector's own (the index and the documents
        // share it).
        let raw = selector.shared_text();
        let payload = grants.as_ref().and_then(|g| g.payload_for(&raw)).cloned();
        selectors.push(selector);
        described.push(subscriptions::Described { kind, raw, payload });
    }
    let readable = grants.map(|g| g.subscribe).unwrap_or_default();
    let subscriber = subscriptions::Subscriber {
        id: registry::new_id(),
        selectors: described,
    };
    let subscribed = match &node.cluster {
        Some(cluster) => {
            mercure
                .subscribe_in_cluster(
                    cluster,
                    &app.id,
                    &admitted.conn,
                    selectors,
                    readable,
                    subscriber,
                    &resume,
                )
                .await
        }
        None => mercure.subscribe(&admitted.conn, selectors, readable, subscriber, &resume),
    };
    admitted.usage().count(subscribed.replayed as u64);
    Ok(Opened {
        admitted,
        subscription: subscribed.id,
        resume_point: subscribed.resume_point,
    })
}

/// The 200 answer's headers (before [`decorate`]): the event stream, and its resume point.
fn stream_headers(out: &mut HeaderMap, draft: Draft, resume_point: Option<String>) {
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(point) = resume_point.and_then(|p| HeaderValue::from_str(&p).ok()) {
        let name = match draft {
            Draft::Draft07 => "last-event-id",
            Draft::Draft08 => "mercure-last-event-id",
        };
        out.insert(name, point);
    }
}

/// Serves `plan` as a hyper response whose body a task feeds from a detached outbox.
async fn subscribe_through_hyper(node: SharedNode, plan: Plan) -> Response {
    let draft = plan.draft;
    let expires = plan.expires;
    let mercure = plan.mercure.clone();
    let (tx, body) = stream::channel();
    let (answer, answered) = tokio::sync::oneshot::channel::<Result<Option<String>, Response>>();
    let task_node = node.clone();
    // Admission and the task in a task of their own: a client hanging up meanwhile leaks no slot.
    tokio::spawn(node.connections.track_future(async move {
        let node = task_node;
        let outbox = crate::outbox::Outbox::detached(stream_capacity(&node));
        let opened = match open(&node, plan, outbox).await {
            Ok(opened) => opened,
            Err(response) => {
                let _ = answer.send(Err(*response));
                return;
            }
        };
        if answer.send(Ok(opened.resume_point)).is_err() {
            if let Some(id) = opened.subscription {
                mercure.unsubscribe(id);
            }
            return;
        }
        stream::run(
            stream::Run {
                admitted: opened.admitted,
                app: mercure,
                subscription: opened.subscription,
                heartbeat: node.settings.mercure.heartbeat,
                expires,
            },
            tx,
        )
        .await;
    }));
    let resume_point = match answered.await {
        Ok(Ok(resume_point)) => resume_point,
        Ok(Err(response)) => return response,
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    };
    let mut response = Response::new(body);
    stream_headers(response.headers_mut(), draft, resume_point);
    response
}

fn origin_owned(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
}
