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

/// Where the page's forms go back to.
const PAGE: &str = "/dashboard/members";

/// Every role a member may have, highest first.
const ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer];

/// Back to the page with `result`'s notice, or its error.
fn done<T>(result: PortResult<T>, notice: impl FnOnce(T) -> String) -> Result<Response, Refusal> {
    Ok(back(PAGE, outcome(result, notice)?))
}

/// The role the form names, or the error to show when there is none of that name.
fn role_field(form: &FormData) -> Result<Role, String> {
    let name = field(form, "role").unwrap_or("");
    Role::parse(name).ok_or_else(|| format!("There is no role named {name:?}."))
}

/// A member as the page lists them.
pub(crate) struct MemberLine {
    row: MemberRow,
    joined: String,
    you: bool,
    /// The roles to offer, and whether each is the member's.
    choices: Vec<(&'static str, bool)>,
}

/// A pending invitation as the page lists it.
pub(crate) struct InvitationLine {
    row: InvitationRow,
    expires: String,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    chrome: Chrome,
    members: Vec<MemberLine>,
    invitations: Vec<InvitationLine>,
    /// The roles this user may invite as.
    roles: Vec<&'static str>,
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
            choices: ROLES
                .into_iter()
                .filter(|r| offered(*r) || *r == row.role)
                .map(|r| (r.as_str(), r == row.role))
                .collect(),
            row,
        })
        .collect();
    let invitations = dash
        .port
        .invitations(&ctx.admin)
        .await?
        .into_iter()
        .map(|row| InvitationLine {
            expires: day_label(row.expires_at.div_euclid(86_400)),
            row,
        })
        .collect();
    Ok(render(&MembersPage {
        chrome: Chrome::new(&ctx, flash, "members"),
        members,
        invitations,
        roles: ROLES
            .into_iter()
            .filter(|r| offered(*r))
            .map(Role::as_str)
            .collect(),
    }))
}

pub(super) async fn change_role<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let role = match role_field(&form) {
        Ok(role) => role,
        Err(error) => return Ok(back(PAGE, Err(error))),
    };
    let result = dash
        .port
        .change_member(&ctx.admin, &user_id, Some(role))
        .await;
    done(result, |before| {
        format!(
            "{} is now {} (was {}).",
            before.email,
            role.as_str(),
            before.role.as_str()
        )
    })
}

pub(super) async fn remove_member<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash.port.change_member(&ctx.admin, &user_id, None).await;
    done(result, |before| {
        format!("{} was removed and signed out.", before.email)
    })
}

pub(super) async fn invite<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let role = match role_field(&form) {
        Ok(role) => role,
        Err(error) => return Ok(back(PAGE, Err(error))),
    };
    let email = field(&form, "email").unwrap_or("");
    let result = dash.port.invite(&ctx.admin, email, role).await;
    done(result, |i| {
        format!("Invitation sent to {} (as {}).", i.email, i.role.as_str())
    })
}

pub(super) async fn resend_invitation<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let pending = dash.port.invitations(&ctx.admin).await?;
    let Some(found) = pending.into_iter().find(|i| i.id == id) else {
        return Err(Refusal::NotFound);
    };
    let result = dash.port.invite(&ctx.admin, &found.email, found.role).await;
    done(result, |i| {
        format!(
            "Invitation sent to {} again; the earlier link no longer works.",
            i.email
        )
    })
}

pub(super) async fn revoke_invitation<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let result = dash.port.revoke_invitation(&ctx.admin, &id).await;
    done(result, |i| {
        format!("The invitation of {} was revoked.", i.email)
    })
}
