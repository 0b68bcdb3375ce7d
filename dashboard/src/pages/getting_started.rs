//! An app's getting-started page: its credentials and client snippets for this server.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;

use super::{nav, render, AppNav, Chrome, Ctx, Flash, Refusal, Shared};
use crate::port::*;

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

pub(super) async fn getting_started<P: AdminPort>(
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
