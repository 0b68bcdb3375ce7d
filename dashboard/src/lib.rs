//! Herald's admin dashboard: askama pages over an [`AdminPort`] that the server implements.
//!
//! [`router`] returns the routes under `/dashboard`; the server mounts them on its main address
//! or on `HERALD_ADMIN_BIND`. Every page but the sign-in page needs a session (an HttpOnly,
//! SameSite=Lax cookie, Secure behind TLS); every form carries the session's CSRF token; sign-in
//! attempts are rate limited. Plain HTML forms work without JavaScript; only the live console
//! uses it (Server-Sent Events).

mod charts;
mod pages;
pub mod port;
mod session;

use std::sync::Arc;

use axum::Router;

pub use port::*;

/// Shared state of the dashboard routes.
struct Dash<P> {
    port: Arc<P>,
    sessions: session::Sessions,
    sign_in: session::SignInLimits,
}

/// The dashboard's routes, under `/dashboard`.
pub fn router<P: AdminPort>(port: Arc<P>) -> Router {
    pages::routes(Arc::new(Dash {
        port,
        sessions: session::Sessions::default(),
        sign_in: session::SignInLimits::default(),
    }))
}
