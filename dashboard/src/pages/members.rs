//! A tenant's members (owners and admins): list them with their roles, change a role, remove a
//! member. The server checks every change (the role table, the last manager, owners); a
//! member whose role goes down or who is removed is signed out everywhere at once.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;

use super::{
    back, check_csrf, day_label, field, outcome, render, Chrome, Ctx, Flash, FormData, Refusal,
    Shared,
};
use crate::port::*;

/// A member as the page lists them.
pub(crate) struct MemberLine {
    row: MemberRow,
    joined: String,
    you: bool,
    /// The roles to offer, and whether each is the member's.
    choices: Vec<(&'static str, bool)>,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    chrome: Chrome,
    members: Vec<MemberLine>,
}

pub(super) async fn members<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let rows = dash.port.members(&ctx.admin).await?;
    // Only an owner offers "owner" (the server refuses it to anyone else anyway).
    let offered = |role: Role| role != Role::Owner || ctx.admin.role == Role::Owner;
    let members = rows
        .into_iter()
        .map(|row| MemberLine {
            joined: day_label(row.created_at.div_euclid(86_400)),
            you: row.id == ctx.admin.id,
            choices: [Role::Owner, Role::Admin, Role::Developer, Role::Viewer]
                .into_iter()
                .filter(|r| offered(*r) || *r == row.role)
                .map(|r| (r.as_str(), r == row.role))
                .collect(),
            row,
        })
        .collect();
    Ok(render(&MembersPage {
        chrome: Chrome::new(&ctx, flash, "members"),
        members,
    }))
}

pub(super) async fn change_role<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let name = field(&form, "role").unwrap_or("");
    let Some(role) = Role::parse(name) else {
        return Ok(back(
            "/dashboard/members",
            Err(format!("There is no role named {name:?}.")),
        ));
    };
    let result = dash
        .port
        .change_member(&ctx.admin, &user_id, Some(role))
        .await;
    Ok(back(
        "/dashboard/members",
        outcome(result, |before| {
            format!(
                "{} is now {} (was {}).",
                before.email,
                role.as_str(),
                before.role.as_str()
            )
        })?,
    ))
}

pub(super) async fn remove_member<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash.port.change_member(&ctx.admin, &user_id, None).await;
    Ok(back(
        "/dashboard/members",
        outcome(result, |before| {
            format!("{} was removed and signed out.", before.email)
        })?,
    ))
}
