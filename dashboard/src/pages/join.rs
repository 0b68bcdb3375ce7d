//! Accepting an invitation: the link's page (`/dashboard/join?token=...`) shows who is invited
//! and as what, and asks for a password; the form creates the member and signs them in. The
//! token is the form's authority (256 random bits, single-use), and the form is guarded like
//! the sign-in's: the client address's budget, the login CSRF double submit, then the (invited
//! email, address) budget; a wrong token costs one lookup, never a password hash, and the hash
//! waits a bounded time for a slot (busy past it).

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::account::Peer;
use super::signup::{public_form, too_many};
use super::{field, render, set_cookie, Refusal, Shared};
use crate::port::*;
use crate::session::{new_session, random_token, LOGIN_CSRF_COOKIE, SESSION_COOKIE};

#[derive(serde::Deserialize)]
pub(crate) struct JoinParams {
    token: Option<String>,
}

#[derive(Template)]
#[template(path = "join.html")]
struct JoinPage {
    token: String,
    email: String,
    role: String,
    error: String,
    csrf: String,
}

const GONE: &str =
    "This invitation is unknown, was already used or has expired. Ask for a new one.";

fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn join_page<P: AdminPort>(
    dash: &Shared<P>,
    token: &str,
    error: &str,
    status: StatusCode,
    secure: bool,
) -> Result<Response, Refusal> {
    let found = if well_formed(token) {
        dash.port.invitation(token).await?
    } else {
        None
    };
    let Some(invitation) = found else {
        return Ok(super::error_page(StatusCode::NOT_FOUND, "Invitation", GONE));
    };
    let csrf = random_token();
    let mut response = render(&JoinPage {
        token: token.to_owned(),
        email: invitation.email,
        role: invitation.role.as_str().to_owned(),
        error: error.to_owned(),
        csrf: csrf.clone(),
    });
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, Some(3600), secure),
    );
    Ok(response)
}

pub(super) async fn join<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(params): Query<JoinParams>,
) -> Result<Response, Refusal> {
    let token = params.token.unwrap_or_default();
    let secure = dash.proxies.over_tls(peer, &headers);
    join_page(&dash, &token, "", StatusCode::OK, secure).await
}

pub(super) async fn accept<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    request: Request,
) -> Result<Response, Refusal> {
    let (form, client, secure) = match public_form(&dash, peer, request).await {
        Ok(read) => read,
        Err(response) => return Ok(response),
    };
    let token = field(&form, "token").unwrap_or("").trim().to_owned();
    let password = field(&form, "password").unwrap_or("");
    let invitation = if well_formed(&token) {
        dash.port.invitation(&token).await?
    } else {
        None
    };
    let Some(invitation) = invitation else {
        return Ok(super::error_page(StatusCode::NOT_FOUND, "Invitation", GONE));
    };
    if let Err(refused) = dash.accounts.allow_email(client, &invitation.email).await {
        return Ok(too_many(refused));
    }
    if field(&form, "confirm").unwrap_or("") != password {
        let error = "The password and its confirmation differ.";
        return join_page(&dash, &token, error, StatusCode::BAD_REQUEST, secure).await;
    }
    let address = client.map(|ip| ip.to_string()).unwrap_or_default();
    let admin = match dash
        .port
        .accept_invitation(&token, password, &address)
        .await
    {
        Ok(admin) => admin,
        Err(PortError::Invalid(message)) if message.contains("unknown, used or expired") => {
            return Ok(super::error_page(StatusCode::NOT_FOUND, "Invitation", GONE))
        }
        Err(PortError::Invalid(message)) => {
            return join_page(&dash, &token, &message, StatusCode::BAD_REQUEST, secure).await
        }
        Err(other) => return Err(other.into()),
    };
    let session = new_session();
    let cookie_token = session.token.clone();
    dash.port.start_session(&admin, session).await?;
    let mut response = Redirect::to("/dashboard/apps").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &dash.cookies.seal(&cookie_token),
            None,
            secure,
        ),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, "", Some(0), secure),
    );
    Ok(response)
}
