//! An app's webhook endpoints and their recent and failed deliveries.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;

use super::{
    back, check_csrf, field, fields, nav, outcome, render, when, AppNav, Chrome, Ctx, Flash,
    FormData, Refusal, Shared,
};
use crate::port::*;

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

pub(super) async fn webhooks<P: AdminPort>(
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

pub(super) async fn add_webhook<P: AdminPort>(
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

pub(super) async fn update_webhook<P: AdminPort>(
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

pub(super) async fn remove_webhook<P: AdminPort>(
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

pub(super) async fn test_webhook<P: AdminPort>(
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

pub(super) async fn retry_deliveries<P: AdminPort>(
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
