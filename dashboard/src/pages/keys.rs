//! An app's key pairs: list, reveal, rotate, revoke.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Form;

use super::{
    back, check_csrf, field, nav, outcome, render, AppNav, Chrome, Ctx, Flash, FormData, Refusal,
    Shared,
};
use crate::port::*;

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
    // Secrets come only from the port's reveal, which checks the role.
    let app = if reveal {
        dash.port.reveal_keys(&ctx.admin, id).await?
    } else {
        dash.port.app(&ctx.admin, id).await?
    };
    Ok(render(&KeysPage {
        chrome: Chrome::new(ctx, flash, "apps"),
        nav: nav(&app, "keys"),
        keys: app.keys,
        reveal,
    }))
}

pub(super) async fn keys<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    keys_page(&dash, &ctx, &id, flash, false).await
}

/// Secrets are shown only in answer to a POST (never in a URL, history or a cache).
pub(super) async fn reveal_keys<P: AdminPort>(
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

pub(super) async fn rotate_key<P: AdminPort>(
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

pub(super) async fn revoke_key<P: AdminPort>(
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
