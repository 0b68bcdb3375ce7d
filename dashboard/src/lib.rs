//! Herald's admin dashboard: askama pages over an [`AdminPort`] that the server implements.
//!
//! [`router`] returns the routes under `/dashboard`; the server mounts them on its main address
//! or on `HERALD_ADMIN_BIND`. Every page but the sign-in page needs a session (an HttpOnly,
//! SameSite=Lax cookie, Secure behind TLS); every form carries the session's CSRF token; sign-in
//! attempts are rate limited. Plain HTML forms work without JavaScript; only the live console
//! uses it (Server-Sent Events).

mod charts;
mod client;
mod pages;
pub mod port;
mod session;
mod writes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;

pub use port::*;

/// The client's address as the dashboard sees it: the direct peer, or behind a trusted proxy
/// (one of `trusted_proxies`) the rightmost `X-Forwarded-For` hop that is not itself one.
pub fn client_address(
    trusted_proxies: &[ipnet::IpNet],
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
) -> Option<std::net::IpAddr> {
    client::TrustedProxies::new(trusted_proxies.to_vec()).client(peer, headers)
}

/// The dashboard's settings, from the server's configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Peers whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed
    /// (`HERALD_TRUSTED_PROXIES`); from anyone else they are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The key session cookies are sealed with (an HMAC key the server keeps in its store, the
    /// same on every node sharing it).
    pub session_key: Vec<u8>,
    /// Sign-in budgets shared by every node of a cluster (`None` on a single node: the
    /// in-memory budgets are all there is).
    pub shared_budgets: Option<Arc<dyn SharedBudgets>>,
    /// The server's own listener is TLS (`HERALD_TLS_CERT`): every request came over TLS, so
    /// cookies are `Secure` and responses carry HSTS.
    pub tls_listener: bool,
    /// Who may sign up (`HERALD_SIGNUP`).
    pub signup: Signup,
    /// State-changing forms (every signed-in POST but sign-out) one member may send a minute
    /// (`HERALD_DASHBOARD_RATE`; 0: [`DEFAULT_WRITES_PER_MINUTE`]); past it, 429.
    pub writes_per_minute: u32,
}

/// [`Config::writes_per_minute`]'s default.
pub const DEFAULT_WRITES_PER_MINUTE: u32 = 60;

/// Largest request body a dashboard form may send; larger ones get 413 before they are read.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Shared state of the dashboard routes.
struct Dash<P> {
    port: Arc<P>,
    sign_in: session::SignInLimits,
    /// The budgets of the account forms (sign-up, forgot password, the emailed links): the
    /// sign-in's rules, budgets of their own.
    accounts: session::SignInLimits,
    signup: Signup,
    /// The members' budgets of state-changing forms.
    writes: writes::WriteBudget,
    cookies: session::CookieSeal,
    proxies: client::TrustedProxies,
}

/// The content security policy of every dashboard response: only the dashboard's own stylesheet
/// and script (no inline script or style attribute anywhere), forms post back to it, and no
/// other site may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Hardening headers on every response; anything without its own caching rule (every page but
/// the static assets: they show secrets, webhook headers, usage) is never stored.
async fn hardening_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `Strict-Transport-Security` on every response to a request that came over TLS (the
/// listener's own, or a trusted proxy's): browsers then never use plain HTTP for this host.
async fn strict_transport(
    proxies: client::TrustedProxies,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let over_tls = proxies.over_tls(peer, request.headers());
    let mut response = next.run(request).await;
    if over_tls {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// The dashboard's routes, under `/dashboard`.
pub fn router<P: AdminPort>(port: Arc<P>, config: Config) -> Router {
    let proxies = client::TrustedProxies::new(config.trusted_proxies.clone())
        .with_tls_listener(config.tls_listener);
    pages::routes(Arc::new(Dash {
        port,
        sign_in: session::SignInLimits::new(
            config.shared_budgets.clone(),
            config.session_key.clone(),
        ),
        accounts: session::SignInLimits::new(
            config.shared_budgets.clone(),
            config.session_key.clone(),
        )
        .scoped("acct:"),
        signup: config.signup,
        writes: writes::WriteBudget::new(
            config.writes_per_minute,
            config.shared_budgets.clone(),
            config.session_key.clone(),
        ),
        cookies: session::CookieSeal::new(config.session_key),
        proxies: client::TrustedProxies::new(config.trusted_proxies)
            .with_tls_listener(config.tls_listener),
    }))
    .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
    .layer(axum::middleware::map_response(hardening_headers))
    .layer(axum::middleware::from_fn(move |request, next| {
        strict_transport(proxies.clone(), request, next)
    }))
}
