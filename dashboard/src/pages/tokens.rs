//! The management API's tokens of a tenant (owners and admins): list them (every live one, at
//! most the tenant's 50, then the revoked and expired ones 50 a page, newest first), create one
//! (its text is shown on the page that answers the creation, once, and never put in a URL),
//! revoke one.
//! The server checks the role and that the scopes stay within it.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;

use serde::Deserialize;

use super::{
    back, check_csrf, day_label, encode, field, fields, outcome, render, Chrome, Ctx, Flash,
    FormData, Refusal, Shared,
};
use crate::port::*;

/// Where the page's forms go back to.
const PAGE: &str = "/dashboard/tokens";

/// Every scope a token may have, with what it allows.
const SCOPES: [(&str, &str); 6] = [
    ("apps:read", "list and read apps"),
    ("apps:write", "create, change and delete apps"),
    ("keys:write", "rotate and revoke keys"),
    ("webhooks:read", "list webhooks"),
    ("webhooks:write", "add and remove webhooks"),
    ("usage:read", "read usage"),
];

/// A token as the page lists it.
pub(crate) struct TokenLine {
    row: ApiTokenRow,
    scopes: String,
    created: String,
    expires: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    /// Every live token.
    tokens: Vec<TokenLine>,
    /// A page of the revoked and expired ones.
    dead: Vec<TokenLine>,
    /// The link to the next page of dead ones ('' on the last).
    older: String,
    scopes: Vec<(&'static str, &'static str)>,
    /// The text of the token just created (shown once).
    created: String,
}

fn line(row: ApiTokenRow) -> TokenLine {
    TokenLine {
        scopes: row.scopes.join(", "),
        created: day_label(row.created_at.div_euclid(86_400)),
        expires: row
            .expires_at
            .map_or("never".to_owned(), |at| day_label(at.div_euclid(86_400))),
        last_used: row
            .last_used_at
            .map_or("never".to_owned(), |at| day_label(at.div_euclid(86_400))),
        row,
    }
}

/// The page's query string: a notice or error, and the page of dead tokens.
#[derive(Deserialize, Default)]
pub(crate) struct TokensQuery {
    notice: Option<String>,
    error: Option<String>,
    /// The cursor of the page of dead tokens (older than the one it names).
    before: Option<String>,
}

async fn page<P: AdminPort>(
    dash: &Shared<P>,
    ctx: &Ctx,
    flash: Flash,
    created: String,
    before: Option<&str>,
) -> Result<Response, Refusal> {
    let page = dash.port.api_tokens(&ctx.admin, before).await?;
    Ok(render(&TokensPage {
        chrome: Chrome::new(ctx, flash, "tokens"),
        tokens: page.live.into_iter().map(line).collect(),
        dead: page.dead.into_iter().map(line).collect(),
        older: page
            .older
            .map(|cursor| format!("{PAGE}?before={}", encode(&cursor)))
            .unwrap_or_default(),
        scopes: SCOPES.to_vec(),
        created,
    }))
}

pub(super) async fn tokens<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Query(query): Query<TokensQuery>,
) -> Result<Response, Refusal> {
    let flash = Flash {
        notice: query.notice,
        error: query.error,
    };
    page(&dash, &ctx, flash, String::new(), query.before.as_deref()).await
}

pub(super) async fn create_token<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let expires_in_days = match field(&form, "expires_in_days").map(str::trim) {
        None | Some("") => None,
        Some(days) => match days.parse::<u32>() {
            Ok(days) => Some(days),
            Err(_) => {
                return Ok(back(
                    PAGE,
                    Err("The expiry is a whole number of days.".to_owned()),
                ))
            }
        },
    };
    let new = NewApiToken {
        name: field(&form, "name").unwrap_or("").to_owned(),
        scopes: fields(&form, "scope")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        expires_in_days,
    };
    match dash.port.create_api_token(&ctx.admin, new).await {
        Ok((row, text)) => {
            let flash = Flash {
                notice: Some(format!(
                    "Token {:?} created. Copy it now: it is not shown again.",
                    row.name
                )),
                error: None,
            };
            page(&dash, &ctx, flash, text, None).await
        }
        Err(PortError::Invalid(message)) | Err(PortError::Forbidden(message)) => {
            Ok(back(PAGE, Err(message)))
        }
        Err(other) => Err(other.into()),
    }
}

pub(super) async fn revoke_token<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash.port.revoke_api_token(&ctx.admin, &id).await;
    Ok(back(
        PAGE,
        outcome(result, |t| format!("The token {:?} was revoked.", t.name))?,
    ))
}
