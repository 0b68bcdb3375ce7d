//! Page handlers: one function per route, each rendering a typed askama page.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use crate::charts;
use crate::port::*;
use crate::session::{
    random_token, same_token, Session, LOGIN_CSRF_COOKIE, MAX_EMAIL_BYTES, MAX_PASSWORD_BYTES,
    SESSION_COOKIE,
};
use crate::Dash;

type Shared<P> = Arc<Dash<P>>;
type FormData = Vec<(String, String)>;

pub(crate) fn routes<P: AdminPort>(dash: Shared<P>) -> Router {
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route("/dashboard/static/dashboard.css", get(stylesheet))
        .route("/dashboard/static/live.js", get(live_script))
        .route("/dashboard/login", get(login_page::<P>).post(login::<P>))
        .route("/dashboard/logout", post(logout::<P>))
        .route("/dashboard/account", get(account))
        .route("/dashboard/account/password", post(change_password::<P>))
        .route(
            "/dashboard/tenants",
            get(tenants::<P>).post(create_tenant::<P>),
        )
        .route("/dashboard/tenants/{id}", post(update_tenant::<P>))
        .route("/dashboard/users", get(users::<P>).post(create_user::<P>))
        .route("/dashboard/users/password", post(reset_password::<P>))
        .route("/dashboard/apps", get(apps::<P>).post(create_app::<P>))
        .route("/dashboard/apps/{id}", get(app::<P>).post(update_app::<P>))
        .route("/dashboard/apps/{id}/keys", get(keys::<P>))
        .route("/dashboard/apps/{id}/keys/reveal", post(reveal_keys::<P>))
        .route("/dashboard/apps/{id}/keys/rotate", post(rotate_key::<P>))
        .route("/dashboard/apps/{id}/keys/revoke", post(revoke_key::<P>))
        .route(
            "/dashboard/apps/{id}/delete",
            get(delete_page::<P>).post(delete_app::<P>),
        )
        .route("/dashboard/apps/{id}/usage", get(usage::<P>))
        .route("/dashboard/apps/{id}/live", get(live::<P>))
        .route("/dashboard/apps/{id}/live/events", get(live_events::<P>))
        .route(
            "/dashboard/apps/{id}/webhooks",
            get(webhooks::<P>).post(add_webhook::<P>),
        )
        .route(
            "/dashboard/apps/{id}/webhooks/retry",
            post(retry_deliveries::<P>),
        )
        .route(
            "/dashboard/apps/{id}/webhooks/{webhook_id}",
            post(update_webhook::<P>),
        )
        .route(
            "/dashboard/apps/{id}/webhooks/{webhook_id}/remove",
            post(remove_webhook::<P>),
        )
        .route(
            "/dashboard/apps/{id}/webhooks/{webhook_id}/test",
            post(test_webhook::<P>),
        )
        .route(
            "/dashboard/apps/{id}/getting-started",
            get(getting_started::<P>),
        )
        .route(
            "/dashboard/{*rest}",
            get(not_found_page).post(not_found_page),
        )
        .with_state(dash)
}

// ---------------------------------------------------------------------------------------------
// Sessions, CSRF and errors

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The direct peer's address, when the server recorded it (`ConnectInfo`).
fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut text = format!("{name}={value}; Path=/dashboard; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in request: the admin, the session and its cookie token.
pub(crate) struct Ctx {
    admin: Admin,
    session: Session,
    token: String,
    secure: bool,
    /// The direct peer is a trusted proxy (its `X-Forwarded-Host` is believed).
    proxied: bool,
}

/// Why a request cannot go on.
pub(crate) enum Refusal {
    /// No valid session: to the sign-in page (the event stream too: EventSource then stops).
    SignIn(String),
    /// Missing or forged CSRF token.
    Csrf,
    /// Not in the admin's scope.
    NotFound,
    /// Not allowed.
    Forbidden(String),
    /// Something failed in the server.
    Internal,
    /// Too many password checks at once: try again in a moment.
    Busy,
    /// The store cannot be reached.
    Unavailable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn(next) => {
                let target = format!("/dashboard/login?next={}", encode(&next));
                Redirect::to(&target).into_response()
            }
            Refusal::Csrf => error_page(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "This form has expired or did not come from this dashboard (CSRF check failed). Reload the page and try again.",
            ),
            Refusal::NotFound => error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or it belongs to another tenant.",
            ),
            Refusal::Forbidden(message) => {
                error_page(StatusCode::FORBIDDEN, "Forbidden", &message)
            }
            Refusal::Internal => error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The server could not complete this request; the details are in its log.",
            ),
            Refusal::Busy => {
                let mut response = error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Busy",
                    "Too many passwords are being checked right now. Try again in a moment.",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Refusal::Unavailable(reason) => error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unreachable",
                &format!("The server cannot reach its store right now ({reason}). Try again in a moment."),
            ),
        }
    }
}

impl From<PortError> for Refusal {
    fn from(error: PortError) -> Self {
        match error {
            PortError::NotFound => Refusal::NotFound,
            PortError::Forbidden(message) | PortError::Invalid(message) => {
                Refusal::Forbidden(message)
            }
            PortError::Internal => Refusal::Internal,
            PortError::Busy => Refusal::Busy,
            PortError::Unavailable(reason) => Refusal::Unavailable(reason),
        }
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl<P: AdminPort> FromRequestParts<Shared<P>> for Ctx {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, dash: &Shared<P>) -> Result<Self, Refusal> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/dashboard/apps".to_owned(), |p| p.as_str().to_owned());
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .ok_or_else(|| Refusal::SignIn(next.clone()))?
            .to_owned();
        let session = dash
            .sessions
            .get(&token)
            .ok_or_else(|| Refusal::SignIn(next.clone()))?;
        let admin = dash
            .port
            .admin(&session.user_id)
            .await
            .map_err(Refusal::from)?
            .ok_or_else(|| {
                dash.sessions.end(&token);
                Refusal::SignIn(next.clone())
            })?;
        if admin.generation != session.generation {
            // The password changed since this session began (here, elsewhere or in the CLI).
            dash.sessions.end(&token);
            return Err(Refusal::SignIn(next));
        }
        let peer = peer(parts);
        Ok(Ctx {
            admin,
            session,
            token,
            secure: dash.proxies.over_tls(peer, &parts.headers),
            proxied: dash.proxies.trusts_peer(peer),
        })
    }
}

fn field<'a>(form: &'a FormData, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn fields<'a>(form: &'a FormData, name: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Every POST carries the session's CSRF token.
fn check_csrf(ctx: &Ctx, form: &FormData) -> Result<(), Refusal> {
    match field(form, "csrf") {
        Some(token) if same_token(token, &ctx.session.csrf) => Ok(()),
        _ => Err(Refusal::Csrf),
    }
}

fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "a dashboard page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let mut response = render(&ErrorPage { title, message });
    *response.status_mut() = status;
    response
}

async fn not_found_page() -> Response {
    Refusal::NotFound.into_response()
}

/// Where to go after a form, with a notice or an error to show there.
fn back(path: &str, outcome: Result<String, String>) -> Response {
    let (key, text) = match outcome {
        Ok(notice) => ("notice", notice),
        Err(error) => ("error", error),
    };
    Redirect::to(&format!("{path}?{key}={}", encode(&text))).into_response()
}

/// A port call's outcome for [`back`]: invalid input goes back to the form as an error,
/// anything else refuses the request.
fn outcome<T>(
    result: PortResult<T>,
    notice: impl FnOnce(T) -> String,
) -> Result<Result<String, String>, Refusal> {
    match result {
        Ok(value) => Ok(Ok(notice(value))),
        Err(PortError::Invalid(message)) | Err(PortError::Forbidden(message)) => Ok(Err(message)),
        Err(other) => Err(other.into()),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct Flash {
    notice: Option<String>,
    error: Option<String>,
}

/// What every signed-in page shows around its content.
pub(crate) struct Chrome {
    email: String,
    operator: bool,
    csrf: String,
    notice: String,
    error: String,
    section: &'static str,
}

impl Chrome {
    fn new(ctx: &Ctx, flash: Flash, section: &'static str) -> Chrome {
        Chrome {
            email: ctx.admin.email.clone(),
            operator: ctx.admin.operator,
            csrf: ctx.session.csrf.clone(),
            notice: flash.notice.unwrap_or_default(),
            error: flash.error.unwrap_or_default(),
            section,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Static assets

async fn home() -> Redirect {
    Redirect::to("/dashboard/apps")
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../templates/dashboard.css"),
    )
}

async fn live_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../templates/live.js"),
    )
}

// ---------------------------------------------------------------------------------------------
// Sign-in, sign-out, account

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: String,
    email: String,
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/dashboard") && !n.starts_with("//") && !n.contains("\\") => {
            n.to_owned()
        }
        _ => "/dashboard/apps".to_owned(),
    }
}

/// The direct peer's address (`ConnectInfo`).
pub(crate) struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Peer(peer(parts)))
    }
}

async fn login_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let csrf = random_token();
    let mut response = render(&LoginPage {
        csrf: csrf.clone(),
        next: safe_next(query.next.as_deref()),
        error: query.error.unwrap_or_default(),
        email: String::new(),
    });
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_CSRF_COOKIE,
            &csrf,
            Some(3600),
            dash.proxies.over_tls(peer, &headers),
        ),
    );
    response
}

/// A sign-in attempt. Its cost is bounded before anything is kept or hashed: the client
/// address's budget is checked before the form is read (which is at most
/// [`crate::MAX_FORM_BYTES`]), oversized emails and passwords are refused with 400, and only
/// then do the (email, address) and email budgets take a key and argon2 run (itself capped by
/// the server, which answers [`PortError::Busy`] past its capacity).
async fn login<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let secure = dash.proxies.over_tls(peer, &headers);
    let client = dash.proxies.client(peer, &headers);
    let too_many = |retry_after: u64, form: Option<(&str, &str)>| {
        let (next, email) = form.unwrap_or(("/dashboard/apps", ""));
        let mut response = login_retry(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a minute and try again.",
            next,
            email,
            secure,
        );
        if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    };
    if let Err(refused) = dash.sign_in.allow_address(client) {
        return too_many(refused.retry_after, None);
    }
    let form = match Form::<FormData>::from_request(request, &()).await {
        Ok(Form(form)) => form,
        Err(rejection) => return rejection.into_response(),
    };
    let cookie_token = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    let form_token = field(&form, "csrf").unwrap_or("");
    if cookie_token.is_empty() || !same_token(cookie_token, form_token) {
        return Refusal::Csrf.into_response();
    }
    let email = field(&form, "email").unwrap_or("").trim();
    let password = field(&form, "password").unwrap_or("");
    let next = safe_next(field(&form, "next"));
    if email.len() > MAX_EMAIL_BYTES || password.len() > MAX_PASSWORD_BYTES {
        return login_retry(
            StatusCode::BAD_REQUEST,
            "That email or password is too long.",
            &next,
            "",
            secure,
        );
    }
    if let Err(refused) = dash.sign_in.allow_email(client, email) {
        return too_many(refused.retry_after, Some((&next, email)));
    }
    match dash.port.authenticate(email, password).await {
        Ok(Some(admin)) => {
            let token = dash.sessions.start(&admin.id, admin.generation);
            let mut response = Redirect::to(&next).into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &token, None, secure),
            );
            headers.append(
                header::SET_COOKIE,
                set_cookie(LOGIN_CSRF_COOKIE, "", Some(0), secure),
            );
            response
        }
        Ok(None) => login_retry(
            StatusCode::UNAUTHORIZED,
            "Wrong email or password.",
            &next,
            email,
            secure,
        ),
        Err(PortError::Busy) => {
            let mut response = login_retry(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins are being checked right now. Try again in a moment.",
                &next,
                email,
                secure,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(_) => login_retry(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in is unavailable right now; the details are in the server log.",
            &next,
            email,
            secure,
        ),
    }
}

/// The sign-in form again, with `error` and a fresh CSRF token.
fn login_retry(status: StatusCode, error: &str, next: &str, email: &str, secure: bool) -> Response {
    let csrf = random_token();
    let mut response = render(&LoginPage {
        csrf: csrf.clone(),
        next: next.to_owned(),
        error: error.to_owned(),
        email: email.to_owned(),
    });
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, Some(3600), secure),
    );
    response
}

async fn logout<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    dash.sessions.end(&ctx.token);
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), ctx.secure),
    );
    Ok(response)
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    role: String,
}

async fn account(ctx: Ctx, Query(flash): Query<Flash>) -> Response {
    let role = if ctx.admin.operator {
        "platform operator".to_owned()
    } else {
        format!(
            "admin of tenant {}",
            ctx.admin.tenant_id.clone().unwrap_or_default()
        )
    };
    render(&AccountPage {
        chrome: Chrome::new(&ctx, flash, "account"),
        role,
    })
}

async fn change_password<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let current = field(&form, "current").unwrap_or("");
    let new = field(&form, "new").unwrap_or("");
    if field(&form, "confirm").unwrap_or("") != new {
        return Ok(back(
            "/dashboard/account",
            Err("The new password and its confirmation differ.".into()),
        ));
    }
    let result = dash.port.change_password(&ctx.admin, current, new).await;
    if result.is_ok() {
        keep_own_session(&dash, &ctx).await?;
    }
    Ok(back(
        "/dashboard/account",
        outcome(result, |()| {
            "Password changed; your other sessions were signed out.".into()
        })?,
    ))
}

/// After the admin's own password changed: their other sessions end, this one carries on at the
/// new credential generation.
async fn keep_own_session<P: AdminPort>(dash: &Shared<P>, ctx: &Ctx) -> Result<(), Refusal> {
    let generation = match dash.port.admin(&ctx.admin.id).await? {
        Some(admin) => admin.generation,
        None => return Err(Refusal::SignIn("/dashboard/account".into())),
    };
    dash.sessions
        .end_others(&ctx.admin.id, &ctx.token, generation);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Operator: tenants and users

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    tenants: Vec<TenantRow>,
}

async fn tenants<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    if !ctx.admin.operator {
        return Err(Refusal::NotFound);
    }
    let tenants = dash.port.tenants(&ctx.admin).await?;
    Ok(render(&TenantsPage {
        chrome: Chrome::new(&ctx, flash, "tenants"),
        tenants,
    }))
}

async fn create_tenant<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    if !ctx.admin.operator {
        return Err(Refusal::NotFound);
    }
    let result = dash
        .port
        .create_tenant(&ctx.admin, field(&form, "name").unwrap_or(""))
        .await;
    Ok(back(
        "/dashboard/tenants",
        outcome(result, |t| {
            format!("Tenant {} created (id {}).", t.name, t.id)
        })?,
    ))
}

async fn update_tenant<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    if !ctx.admin.operator {
        return Err(Refusal::NotFound);
    }
    let raw = field(&form, "max_apps").unwrap_or("0").trim();
    let result = match raw.parse::<u64>() {
        Ok(max_apps) => {
            dash.port
                .update_tenant(
                    &ctx.admin,
                    &id,
                    max_apps,
                    field(&form, "plans").unwrap_or(""),
                )
                .await
        }
        Err(_) => Err(PortError::Invalid(
            "Apps allowed: expected a whole number (0 = no cap)".into(),
        )),
    };
    Ok(back(
        "/dashboard/tenants",
        outcome(result, |t| format!("Tenant {} updated.", t.name))?,
    ))
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    tenants: Vec<TenantRow>,
}

async fn users<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    if !ctx.admin.operator {
        return Err(Refusal::NotFound);
    }
    let users = dash.port.users(&ctx.admin).await?;
    let tenants = dash.port.tenants(&ctx.admin).await?;
    Ok(render(&UsersPage {
        chrome: Chrome::new(&ctx, flash, "users"),
        users,
        tenants,
    }))
}

async fn create_user<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    if !ctx.admin.operator {
        return Err(Refusal::NotFound);
    }
    let tenant = field(&form, "tenant").unwrap_or("");
    let user = NewUser {
        email: field(&form, "email").unwrap_or("").to_owned(),
        password: field(&form, "password").unwrap_or("").to_owned(),
        tenant_id: (tenant != "operator" && !tenant.is_empty()).then(|| tenant.to_owned()),
    };
    let result = dash.port.create_user(&ctx.admin, user).await;
    Ok(back(
        "/dashboard/users",
        outcome(result, |u| {
            format!("User {} created ({}).", u.email, u.role)
        })?,
    ))
}

async fn reset_password<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    if !ctx.admin.operator {
        return Err(Refusal::NotFound);
    }
    let email = field(&form, "email").unwrap_or("");
    let result = dash
        .port
        .reset_password(&ctx.admin, email, field(&form, "password").unwrap_or(""))
        .await;
    if result.is_ok() && email.trim().eq_ignore_ascii_case(&ctx.admin.email) {
        // The operator reset their own password: this browser stays signed in.
        keep_own_session(&dash, &ctx).await?;
    }
    Ok(back(
        "/dashboard/users",
        outcome(result, |()| format!("Password reset for {email}."))?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Apps

/// A number for humans: `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `used of quota` and a percentage (0 when unlimited).
pub(crate) struct Gauge {
    used: String,
    quota: String,
    percent: u64,
}

fn gauge(used: u64, quota: u64) -> Gauge {
    Gauge {
        used: grouped(used),
        quota: if quota == 0 {
            "unlimited".into()
        } else {
            grouped(quota)
        },
        percent: used
            .saturating_mul(100)
            .checked_div(quota)
            .unwrap_or(0)
            .min(100),
    }
}

pub(crate) struct AppRow {
    app: AppSummary,
    connections: Gauge,
    messages: Gauge,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    chrome: Chrome,
    apps: Vec<AppRow>,
    plans: Vec<PlanRow>,
    tenants: Vec<TenantRow>,
}

async fn apps<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let apps = dash
        .port
        .apps(&ctx.admin)
        .await?
        .into_iter()
        .map(|app| AppRow {
            connections: gauge(app.connections, app.max_connections),
            messages: gauge(app.messages_today, app.max_daily_messages),
            app,
        })
        .collect();
    let tenants = if ctx.admin.operator {
        dash.port.tenants(&ctx.admin).await?
    } else {
        Vec::new()
    };
    Ok(render(&AppsPage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        apps,
        plans: dash.port.plans(),
        tenants,
    }))
}

async fn create_app<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let request = CreateApp {
        name: field(&form, "name").unwrap_or("").to_owned(),
        plan: field(&form, "plan")
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
        tenant_id: field(&form, "tenant")
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
    };
    match dash.port.create_app(&ctx.admin, request).await {
        Ok(app) => Ok(back(
            &format!("/dashboard/apps/{}/getting-started", app.id),
            Ok(format!("App {} created.", app.name)),
        )),
        Err(PortError::Invalid(message)) | Err(PortError::Forbidden(message)) => {
            Ok(back("/dashboard/apps", Err(message)))
        }
        Err(other) => Err(other.into()),
    }
}

/// The tabs of an app's pages.
pub(crate) struct AppNav {
    id: String,
    name: String,
    tab: &'static str,
}

fn nav(app: &AppDetail, tab: &'static str) -> AppNav {
    AppNav {
        id: app.id.clone(),
        name: app.name.clone(),
        tab,
    }
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    chrome: Chrome,
    nav: AppNav,
    app: AppDetail,
    origins: String,
    connections: Gauge,
    messages: Gauge,
}

fn limit_value(app: &AppDetail, name: &str) -> u64 {
    app.limits
        .iter()
        .find(|l| l.name == name)
        .map_or(0, |l| l.value)
}

async fn app<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    let max_connections = limit_value(&app, "max_connections");
    let max_daily_messages = limit_value(&app, "max_daily_messages");
    Ok(render(&AppPage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "settings"),
        origins: app.allowed_origins.join("\n"),
        connections: gauge(app.connections, max_connections),
        messages: gauge(app.messages_today, max_daily_messages),
        app,
    }))
}

fn switch(form: &FormData, name: &str) -> Option<bool> {
    // Checkboxes send a value only when ticked; a hidden "present" field says the form had it.
    field(form, &format!("{name}__present")).map(|_| field(form, name).is_some())
}

async fn update_app<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let current = dash.port.app(&ctx.admin, &id).await?;
    let mut limits = Vec::new();
    for limit in &current.limits {
        if let Some(raw) = field(&form, &limit.name) {
            match raw.trim().parse::<u64>() {
                Ok(value) if value != limit.value => limits.push((limit.name.clone(), value)),
                Ok(_) => {}
                Err(_) => {
                    return Ok(back(
                        &format!("/dashboard/apps/{id}"),
                        Err(format!(
                            "{}: expected a whole number (0 = unlimited)",
                            limit.label
                        )),
                    ))
                }
            }
        }
    }
    let changes = AppChanges {
        name: field(&form, "name").map(str::to_owned),
        enabled: switch(&form, "enabled"),
        client_events: switch(&form, "client_events"),
        subscription_count: switch(&form, "subscription_count"),
        allowed_origins: field(&form, "allowed_origins").map(|text| {
            text.split([',', '\n', ' '])
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        limits,
    };
    let result = dash.port.update_app(&ctx.admin, &id, changes).await;
    Ok(back(
        &format!("/dashboard/apps/{id}"),
        outcome(result, |_| "Saved.".into())?,
    ))
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    nav: AppNav,
    keys: Vec<KeyPair>,
    reveal: bool,
}

async fn keys_page<P: AdminPort>(
    dash: &Shared<P>,
    ctx: &Ctx,
    id: &str,
    flash: Flash,
    reveal: bool,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, id).await?;
    Ok(render(&KeysPage {
        chrome: Chrome::new(ctx, flash, "apps"),
        nav: nav(&app, "keys"),
        keys: app.keys,
        reveal,
    }))
}

async fn keys<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    keys_page(&dash, &ctx, &id, flash, false).await
}

/// Secrets are shown only in answer to a POST (never in a URL, history or a cache).
async fn reveal_keys<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let mut response = keys_page(&dash, &ctx, &id, Flash::default(), true).await?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn rotate_key<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let hours: u64 = field(&form, "grace_hours")
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or(24);
    let result = dash
        .port
        .rotate_key(&ctx.admin, &id, hours.saturating_mul(3600))
        .await;
    Ok(back(
        &format!("/dashboard/apps/{id}/keys"),
        outcome(result, |app| {
            format!(
                "New key {} added; reveal it below. The previous pair keeps working {}.",
                app.keys.first().map_or("", |k| k.key.as_str()),
                if hours == 0 {
                    "until you revoke it".to_owned()
                } else {
                    format!("for {hours} hours")
                }
            )
        })?,
    ))
}

async fn revoke_key<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let key = field(&form, "key").unwrap_or("").to_owned();
    let result = dash.port.revoke_key(&ctx.admin, &id, &key).await;
    Ok(back(
        &format!("/dashboard/apps/{id}/keys"),
        outcome(result, |_| {
            format!("Key {key} revoked; its open connections were closed.")
        })?,
    ))
}

#[derive(Template)]
#[template(path = "delete.html")]
struct DeletePage {
    chrome: Chrome,
    nav: AppNav,
}

async fn delete_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    Ok(render(&DeletePage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "settings"),
    }))
}

async fn delete_app<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let app = dash.port.app(&ctx.admin, &id).await?;
    if field(&form, "confirm").map(str::trim) != Some(app.name.as_str()) {
        return Ok(back(
            &format!("/dashboard/apps/{id}/delete"),
            Err("Type the app's name exactly to confirm.".into()),
        ));
    }
    dash.port.delete_app(&ctx.admin, &id).await?;
    Ok(back(
        "/dashboard/apps",
        Ok(format!(
            "App {} deleted; its connections were closed.",
            app.name
        )),
    ))
}

// ---------------------------------------------------------------------------------------------
// Usage

pub(crate) struct UsageDay {
    date: String,
    messages: String,
    peak: String,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    nav: AppNav,
    today: Gauge,
    connections: String,
    days_messages_svg: String,
    days_peak_svg: String,
    minutes_messages_svg: String,
    minutes_peak_svg: String,
    days: Vec<UsageDay>,
    hours: Vec<UsageDay>,
}

fn clock_label(unix: i64) -> String {
    let minutes = unix.div_euclid(60);
    format!(
        "{:02}:{:02} UTC",
        minutes.div_euclid(60).rem_euclid(24),
        minutes.rem_euclid(60)
    )
}

async fn usage<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    let usage = dash.port.usage(&ctx.admin, &id).await?;
    let labels: Vec<String> = usage.days.iter().map(|d| d.date.clone()).collect();
    let day_messages: Vec<u64> = usage.days.iter().map(|d| d.messages).collect();
    let day_peaks: Vec<u64> = usage.days.iter().map(|d| d.peak_connections).collect();
    let first = usage
        .minutes
        .first()
        .map_or(String::new(), |m| clock_label(m.minute_start));
    let last = usage
        .minutes
        .last()
        .map_or(String::new(), |m| clock_label(m.minute_start));
    let minute_messages: Vec<u64> = usage.minutes.iter().map(|m| m.messages).collect();
    let minute_peaks: Vec<u64> = usage.minutes.iter().map(|m| m.peak_connections).collect();
    // The table sums the minutes per hour (1,440 rows would help nobody).
    let mut hours = Vec::new();
    for chunk in usage.minutes.chunks(60) {
        let messages: u64 = chunk.iter().map(|m| m.messages).sum();
        let peak = chunk.iter().map(|m| m.peak_connections).max().unwrap_or(0);
        hours.push(UsageDay {
            date: chunk
                .first()
                .map_or(String::new(), |m| when(m.minute_start * 1000)),
            messages: grouped(messages),
            peak: grouped(peak),
        });
    }
    Ok(render(&UsagePage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "usage"),
        today: gauge(usage.messages_today, usage.max_daily_messages),
        connections: grouped(usage.connections),
        days_messages_svg: charts::bars("Messages per day, last 30 days", &labels, &day_messages),
        days_peak_svg: charts::bars(
            "Peak connections per day, last 30 days",
            &labels,
            &day_peaks,
        ),
        minutes_messages_svg: charts::line(
            "Messages per minute, last 24 hours",
            &first,
            &last,
            &minute_messages,
        ),
        minutes_peak_svg: charts::line(
            "Peak connections per minute, last 24 hours",
            &first,
            &last,
            &minute_peaks,
        ),
        days: usage
            .days
            .iter()
            .rev()
            .map(|d| UsageDay {
                date: d.date.clone(),
                messages: grouped(d.messages),
                peak: grouped(d.peak_connections),
            })
            .collect(),
        hours: hours.into_iter().rev().collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Live

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    chrome: Chrome,
    nav: AppNav,
    channels: Vec<ChannelRow>,
    connections: String,
}

async fn live<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    let channels = dash.port.channels(&ctx.admin, &id).await?;
    Ok(render(&LivePage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "live"),
        connections: grouped(app.connections),
        channels,
    }))
}

async fn live_events<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Refusal> {
    let receiver = dash.port.tap(&ctx.admin, &id).await?;
    let stream = BroadcastStream::new(receiver).filter_map(|item| async move {
        match item {
            Ok(event) => serde_json::to_string(&event)
                .ok()
                .map(|json| Ok(Event::default().event("debug").data(json))),
            // The console fell behind: say so rather than stall the app.
            Err(_) => Some(Ok(Event::default().event("lagged").data(
                "{\"detail\":\"some events were skipped: the console fell behind\"}",
            ))),
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

// ---------------------------------------------------------------------------------------------
// Webhooks

pub(crate) struct EventChoice {
    name: String,
    checked: bool,
}

pub(crate) struct EndpointView {
    hook: WebhookRow,
    choices: Vec<EventChoice>,
    headers: String,
}

pub(crate) struct DeliveryView {
    row: DeliveryRow,
    when: String,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    nav: AppNav,
    endpoints: Vec<EndpointView>,
    new_choices: Vec<EventChoice>,
    recent: Vec<DeliveryView>,
    failed: Vec<DeliveryView>,
}

fn when(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    format!(
        "{} {}",
        day_label(seconds.div_euclid(86_400)),
        clock_label(seconds)
    )
}

fn day_label(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

async fn webhooks<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    let view = dash.port.webhooks(&ctx.admin, &id).await?;
    let choices = |selected: &[String]| {
        view.event_types
            .iter()
            .map(|name| EventChoice {
                name: name.clone(),
                checked: selected.contains(name),
            })
            .collect::<Vec<_>>()
    };
    let deliveries = |rows: &[DeliveryRow]| {
        rows.iter()
            .map(|row| DeliveryView {
                when: when(row.created_at_ms),
                row: row.clone(),
            })
            .collect::<Vec<_>>()
    };
    Ok(render(&WebhooksPage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "webhooks"),
        endpoints: view
            .endpoints
            .iter()
            .map(|hook| EndpointView {
                choices: choices(&hook.events),
                headers: hook.headers.join("\n"),
                hook: hook.clone(),
            })
            .collect(),
        new_choices: choices(&[]),
        recent: deliveries(&view.recent),
        failed: deliveries(&view.failed),
    }))
}

fn webhook_form(form: &FormData) -> WebhookForm {
    WebhookForm {
        url: field(form, "url").unwrap_or("").trim().to_owned(),
        events: fields(form, "events")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        prefix: field(form, "prefix").unwrap_or("").trim().to_owned(),
        headers: field(form, "headers")
            .unwrap_or("")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

async fn add_webhook<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash
        .port
        .add_webhook(&ctx.admin, &id, webhook_form(&form))
        .await;
    Ok(back(
        &format!("/dashboard/apps/{id}/webhooks"),
        outcome(result, |()| "Endpoint added.".into())?,
    ))
}

async fn update_webhook<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path((id, webhook_id)): Path<(String, String)>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash
        .port
        .update_webhook(&ctx.admin, &id, &webhook_id, webhook_form(&form))
        .await;
    Ok(back(
        &format!("/dashboard/apps/{id}/webhooks"),
        outcome(result, |()| "Endpoint saved.".into())?,
    ))
}

async fn remove_webhook<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path((id, webhook_id)): Path<(String, String)>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash.port.remove_webhook(&ctx.admin, &id, &webhook_id).await;
    Ok(back(
        &format!("/dashboard/apps/{id}/webhooks"),
        outcome(result, |()| "Endpoint removed.".into())?,
    ))
}

async fn test_webhook<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path((id, webhook_id)): Path<(String, String)>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash.port.test_webhook(&ctx.admin, &id, &webhook_id).await;
    Ok(back(
        &format!("/dashboard/apps/{id}/webhooks"),
        outcome(result, |()| {
            "Test request queued (an empty, signed events list); see recent deliveries.".into()
        })?,
    ))
}

async fn retry_deliveries<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let delivery = field(&form, "delivery").and_then(|d| d.parse().ok());
    let result = dash.port.retry_deliveries(&ctx.admin, &id, delivery).await;
    Ok(back(
        &format!("/dashboard/apps/{id}/webhooks"),
        outcome(result, |n| format!("{n} failed deliveries queued again."))?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Getting started

#[derive(Template)]
#[template(path = "getting_started.html")]
struct GettingStartedPage {
    chrome: Chrome,
    nav: AppNav,
    app_id: String,
    key: String,
    host: String,
    port: u16,
    tls: bool,
}

async fn getting_started<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    let tls = ctx.secure;
    let authority = headers
        .get("x-forwarded-host")
        .filter(|_| ctx.proxied)
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:6001");
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
            host.to_owned(),
            port.parse().unwrap_or(if tls { 443 } else { 80 }),
        ),
        _ => (authority.to_owned(), if tls { 443 } else { 80 }),
    };
    let key = app.keys.first().map(|k| k.key.clone()).unwrap_or_default();
    Ok(render(&GettingStartedPage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "start"),
        app_id: app.id,
        key,
        host,
        port,
        tls,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(12), "12");
        assert_eq!(day_label(0), "1970-01-01");
        assert_eq!(day_label(20_419), "2025-11-27");
        assert_eq!(safe_next(Some("//evil.com")), "/dashboard/apps");
        assert_eq!(safe_next(Some("https://evil.com")), "/dashboard/apps");
        assert_eq!(safe_next(Some("/dashboard/users")), "/dashboard/users");
        assert_eq!(encode("a b&c"), "a%20b%26c");
        let g = gauge(50, 200);
        assert_eq!(
            (g.used.as_str(), g.quota.as_str(), g.percent),
            ("50", "200", 25)
        );
    }
}
