//! Accepting an invitation: the link's page (`/dashboard/join?token=...`) shows who is invited
//! and as what, and asks for a password; the form creates the member and signs them in. The
//! token is the form's authority (256 random bits, single-use): a wrong one costs one lookup,
//! never a password hash.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::account::Peer;
use super::{field, render, set_cookie, FormData, Refusal, Shared};
use crate::port::*;
use crate::session::{new_session, SESSION_COOKIE};

#[derive(Deserialize)]
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
}

const GONE: &str =
    "This invitation is unknown, was already used or has expired. Ask for a new one.";

async fn join_page<P: AdminPort>(
    dash: &Shared<P>,
    token: &str,
    error: &str,
    status: StatusCode,
) -> Result<Response, Refusal> {
    let found = if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        dash.port.invitation(token).await?
    } else {
        None
    };
    let Some(invitation) = found else {
        return Ok(super::error_page(StatusCode::NOT_FOUND, "Invitation", GONE));
    };
    let mut response = render(&JoinPage {
        token: token.to_owned(),
        email: invitation.email,
        role: invitation.role.as_str().to_owned(),
        error: error.to_owned(),
    });
    *response.status_mut() = status;
    Ok(response)
}

pub(super) async fn join<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Query(params): Query<JoinParams>,
) -> Result<Response, Refusal> {
    let token = params.token.unwrap_or_default();
    join_page(&dash, &token, "", StatusCode::OK).await
}

pub(super) async fn accept<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    let token = field(&form, "token").unwrap_or("").trim().to_owned();
    let password = field(&form, "password").unwrap_or("");
    if field(&form, "confirm").unwrap_or("") != password {
        let error = "The password and its confirmation differ.";
        return join_page(&dash, &token, error, StatusCode::BAD_REQUEST).await;
    }
    if dash.port.invitation(&token).await?.is_none() {
        return Ok(super::error_page(StatusCode::NOT_FOUND, "Invitation", GONE));
    }
    let address = dash
        .proxies
        .client(peer, &headers)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let admin = match dash
        .port
        .accept_invitation(&token, password, &address)
        .await
    {
        Ok(admin) => admin,
        Err(PortError::Invalid(message)) => {
            return join_page(&dash, &token, &message, StatusCode::BAD_REQUEST).await
        }
        Err(other) => return Err(other.into()),
    };
    let session = new_session();
    let cookie_token = session.token.clone();
    dash.port.start_session(&admin, session).await?;
    let secure = dash.proxies.over_tls(peer, &headers);
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
    Ok(response)
}
