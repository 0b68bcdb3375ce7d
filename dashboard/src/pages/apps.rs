//! The app list, an app's settings page and its deletion.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;

use super::{
    back, check_csrf, field, gauge, nav, outcome, render, AppNav, Chrome, Ctx, Flash, FormData,
    Gauge, Refusal, Shared,
};
use crate::port::*;

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

pub(super) async fn apps<P: AdminPort>(
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

pub(super) async fn create_app<P: AdminPort>(
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

pub(super) async fn app<P: AdminPort>(
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

pub(super) async fn update_app<P: AdminPort>(
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
    let mercure = match mercure_changes(&form, &current.mercure) {
        Ok(mercure) => mercure,
        Err(message) => return Ok(back(&format!("/dashboard/apps/{id}"), Err(message))),
    };
    let changes = AppChanges {
        mercure,
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

/// The Mercure part of the settings form: only what differs from `current` is changed. The
/// HS256 key field is a password field left empty to keep the key set.
fn mercure_changes(form: &FormData, current: &MercureView) -> Result<MercureChanges, String> {
    let mut changes = MercureChanges::default();
    let Some(mode) = field(form, "mercure_key_mode") else {
        return Ok(changes);
    };
    let hmac = field(form, "mercure_jwt_key").unwrap_or("");
    let pem = field(form, "mercure_public_key").unwrap_or("").trim();
    changes.key = match mode {
        "app_secret" if current.key_mode != "app_secret" => Some(MercureKeyChange::AppSecret),
        "app_secret" => None,
        "hs256" if !hmac.is_empty() => Some(MercureKeyChange::Hmac(hmac.to_owned())),
        "hs256" if current.key_mode == "hs256" => None,
        "hs256" => return Err("Mercure: enter the HS256 key.".into()),
        "public_key" if pem.is_empty() => return Err("Mercure: paste the PEM public key.".into()),
        "public_key" if pem == current.public_key.trim() => None,
        "public_key" => Some(MercureKeyChange::PublicPem(pem.to_owned())),
        _ => return Err("Mercure: unknown key choice.".into()),
    };
    let text = |name: &str, now: &str| {
        field(form, name)
            .map(str::trim)
            .filter(|v| *v != now)
            .map(str::to_owned)
    };
    changes.audience = text("mercure_audience", &current.audience);
    changes.issuer = text("mercure_issuer", &current.issuer);
    changes.anonymous = switch(form, "mercure_anonymous").filter(|v| *v != current.anonymous);
    let number = |name: &str, label: &str, now: u64| -> Result<Option<u64>, String> {
        match field(form, name).map(str::trim) {
            None => Ok(None),
            Some(raw) => match raw.parse::<u64>() {
                Ok(value) => Ok(Some(value).filter(|v| *v != now)),
                Err(_) => Err(format!("Mercure {label}: expected a whole number")),
            },
        }
    };
    changes.history_size = number("mercure_history_size", "history size", current.history_size)?;
    changes.history_seconds = number(
        "mercure_history_seconds",
        "history seconds",
        current.history_seconds,
    )?;
    Ok(changes)
}

#[derive(Template)]
#[template(path = "delete.html")]
struct DeletePage {
    chrome: Chrome,
    nav: AppNav,
}

pub(super) async fn delete_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    if !ctx.admin.role.deletes_apps() {
        return Err(Refusal::Forbidden(format!(
            "Your role ({}) may not delete apps.",
            ctx.admin.role.as_str()
        )));
    }
    Ok(render(&DeletePage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "settings"),
    }))
}

pub(super) async fn delete_app<P: AdminPort>(
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
