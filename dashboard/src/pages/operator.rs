//! The platform operator's pages: tenants and users.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;

use super::account::keep_own_session;
use super::{
    back, check_csrf, field, outcome, render, Chrome, Ctx, Flash, FormData, Refusal, Shared,
};
use crate::port::*;

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    tenants: Vec<TenantRow>,
}

pub(super) async fn tenants<P: AdminPort>(
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

pub(super) async fn create_tenant<P: AdminPort>(
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

pub(super) async fn update_tenant<P: AdminPort>(
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

pub(super) async fn users<P: AdminPort>(
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

pub(super) async fn create_user<P: AdminPort>(
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
        role: field(&form, "role").unwrap_or("").to_owned(),
    };
    let result = dash.port.create_user(&ctx.admin, user).await;
    Ok(back(
        "/dashboard/users",
        outcome(result, |u| {
            format!("User {} created ({}).", u.email, u.role)
        })?,
    ))
}

pub(super) async fn reset_password<P: AdminPort>(
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
