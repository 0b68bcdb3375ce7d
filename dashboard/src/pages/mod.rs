//! Page handlers: one function per route, each rendering a typed askama page. This module holds
//! the routes and what every page shares (the signed-in request, refusals, CSRF, flash notices,
//! the chrome around each page, number and date formatting); each page group has its own file.

mod account;
mod apps;
mod audit;
mod getting_started;
mod join;
mod keys;
mod live;
mod members;
mod operator;
mod signup;
mod tokens;
mod usage;
mod webhooks;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use self::account::{account, change_password, login, login_page, logout};
use self::apps::{app, apps, create_app, delete_app, delete_page, update_app};
use self::audit::audit;
use self::getting_started::getting_started;
use self::join::{accept, join};
use self::keys::{keys, reveal_keys, revoke_key, rotate_key};
use self::live::{live, live_events};
use self::members::{
    change_role, invite, members, remove_member, resend_invitation, revoke_invitation,
};
use self::operator::{create_tenant, create_user, reset_password, tenants, update_tenant, users};
use self::signup::{
    forgot, forgot_page, reset, reset_page, sign_up, sign_up_page, verify, verify_page,
};
use self::tokens::{create_token, revoke_token, tokens};
use self::usage::usage;
use self::webhooks::{
    add_webhook, remove_webhook, retry_deliveries, test_webhook, update_webhook, webhooks,
};
use crate::port::*;
use crate::session::{same_token, Session, SESSION_COOKIE};
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
        .route(
            "/dashboard/signup",
            get(sign_up_page::<P>).post(sign_up::<P>),
        )
        .route("/dashboard/verify", get(verify_page::<P>).post(verify::<P>))
        .route("/dashboard/forgot", get(forgot_page::<P>).post(forgot::<P>))
        .route("/dashboard/reset", get(reset_page::<P>).post(reset::<P>))
        .route("/dashboard/account", get(account))
        .route("/dashboard/account/password", post(change_password::<P>))
        .route(
            "/dashboard/tenants",
            get(tenants::<P>).post(create_tenant::<P>),
        )
        .route("/dashboard/tenants/{id}", post(update_tenant::<P>))
        .route("/dashboard/users", get(users::<P>).post(create_user::<P>))
        .route("/dashboard/users/password", post(reset_password::<P>))
        .route("/dashboard/audit", get(audit::<P>))
        .route("/dashboard/join", get(join::<P>).post(accept::<P>))
        .route("/dashboard/members", get(members::<P>))
        .route("/dashboard/invitations", post(invite::<P>))
        .route(
            "/dashboard/invitations/{id}/resend",
            post(resend_invitation::<P>),
        )
        .route(
            "/dashboard/invitations/{id}/revoke",
            post(revoke_invitation::<P>),
        )
        .route(
            "/dashboard/tokens",
            get(tokens::<P>).post(create_token::<P>),
        )
        .route("/dashboard/tokens/{id}/revoke", post(revoke_token::<P>))
        .route("/dashboard/members/{id}/role", post(change_role::<P>))
        .route("/dashboard/members/{id}/remove", post(remove_member::<P>))
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
    /// The member sent more state-changing forms than their budget allows: retry after this
    /// many seconds.
    TooManyChanges { retry_after: u64, per_minute: u32 },
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
            Refusal::TooManyChanges {
                retry_after,
                per_minute,
            } => {
                let mut response = error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many changes",
                    &format!(
                        "You have sent more than {per_minute} changes a minute. Nothing was \
                         changed by this one: wait {retry_after} s, then send the form again."
                    ),
                );
                if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
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
            PortError::Forbidden(message)
            | PortError::Invalid(message)
            | PortError::Denied(message) => Refusal::Forbidden(message),
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
            .and_then(|value| dash.cookies.open(value))
            .ok_or_else(|| Refusal::SignIn(next.clone()))?
            .to_owned();
        let session = dash
            .port
            .session(&token)
            .await
            .map_err(Refusal::from)?
            .ok_or_else(|| Refusal::SignIn(next.clone()))?;
        let mut admin = match dash.port.admin(&session.user_id).await? {
            // The password changed since this session began (here, on another node or in the
            // CLI): the session is over.
            Some(admin) if admin.generation == session.generation => admin,
            _ => {
                dash.port.end_session(&token).await?;
                return Err(Refusal::SignIn(next));
            }
        };
        // Every state-changing form (a signed-in POST; signing out is always allowed) takes one
        // from the member's budget before its body is read; a password change from its
        // session's own (a stolen session spending the member's cannot block the change that
        // signs it out).
        if parts.method == axum::http::Method::POST && parts.uri.path() != "/dashboard/logout" {
            let budget = if parts.uri.path() == "/dashboard/account/password" {
                dash.writes.session_key(&token)
            } else {
                admin.id.clone()
            };
            dash.writes
                .take(&budget)
                .await
                .map_err(|refused| Refusal::TooManyChanges {
                    retry_after: refused.retry_after,
                    per_minute: dash.writes.per_minute(),
                })?;
        }
        let peer = peer(parts);
        admin.address = dash
            .proxies
            .client(peer, &parts.headers)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
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
    role: Role,
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
            role: ctx.admin.role,
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
        include_str!("../../templates/dashboard.css"),
    )
}

async fn live_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../templates/live.js"),
    )
}

// ---------------------------------------------------------------------------------------------
// Shown on several pages

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

fn clock_label(unix: i64) -> String {
    let minutes = unix.div_euclid(60);
    format!(
        "{:02}:{:02} UTC",
        minutes.div_euclid(60).rem_euclid(24),
        minutes.rem_euclid(60)
    )
}

#[cfg(test)]
mod tests {
    use super::account::safe_next;
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
