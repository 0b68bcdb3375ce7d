//! The pages a signed-out visitor uses besides the sign-in: sign-up (`HERALD_SIGNUP`), the
//! emailed verification link, forgot password and the emailed reset link.
//!
//! Every form is guarded like the sign-in's: the client address's budget before the form is
//! read, the login CSRF double submit (a random token in a cookie and in the form), length
//! limits, then the (email, address) and email budgets. These budgets are the sign-in's rules,
//! kept apart from the sign-in's own (and shared by every node of a cluster the same way). The
//! links only show a form on GET (a mail scanner fetching a link uses nothing up); the POST uses
//! the link.

use std::net::IpAddr;

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::account::{login_form, signed_in, Peer};
use super::{encode, error_page, field, render, set_cookie, FormData, Refusal, Shared};
use crate::port::*;
use crate::session::{
    random_token, TooMany, LOGIN_CSRF_COOKIE, MAX_EMAIL_BYTES, MAX_PASSWORD_BYTES,
};

/// What the sign-up page says when sign-up is by invitation.
const INVITE_ONLY: &str = "Sign-up is by invitation only: ask an admin of your team to invite you.";
/// What an unusable link's page says.
const LINK_EXPIRED: &str = "This link has expired or was already used. Sign up again with the \
     same address for a new confirmation link, or ask for a new password link.";
/// The longest token accepted in a form (the server's are 64 hex characters).
const MAX_TOKEN_BYTES: usize = 128;

#[derive(Template)]
#[template(path = "public.html")]
struct PublicPage {
    title: &'static str,
    /// `signup`, `verify`, `forgot`, `reset` or `` (a message only).
    form: &'static str,
    csrf: String,
    error: String,
    notice: String,
    email: String,
    token: String,
}

/// A signed-out page: `form` with a fresh CSRF token (also set as the login CSRF cookie).
struct Shown<'a> {
    title: &'static str,
    form: &'static str,
    error: &'a str,
    notice: &'a str,
    email: &'a str,
    token: &'a str,
}

impl<'a> Shown<'a> {
    /// `form` under `title`, nothing filled in.
    fn blank(title: &'static str, form: &'static str) -> Self {
        Shown {
            title,
            form,
            error: "",
            notice: "",
            email: "",
            token: "",
        }
    }
}

fn show(status: StatusCode, page: Shown<'_>, secure: bool) -> Response {
    let csrf = random_token();
    let mut response = render(&PublicPage {
        title: page.title,
        form: page.form,
        csrf: csrf.clone(),
        error: page.error.to_owned(),
        notice: page.notice.to_owned(),
        email: page.email.to_owned(),
        token: page.token.to_owned(),
    });
    *response.status_mut() = status;
    if !page.form.is_empty() {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(LOGIN_CSRF_COOKIE, &csrf, Some(3600), secure),
        );
    }
    response
}

fn message(status: StatusCode, title: &'static str, error: &str, notice: &str) -> Response {
    show(
        status,
        Shown {
            error,
            notice,
            ..Shown::blank(title, "")
        },
        false,
    )
}

/// The page of a link that is malformed, expired or already used.
fn expired(title: &'static str) -> Response {
    message(StatusCode::BAD_REQUEST, title, LINK_EXPIRED, "")
}

/// The form an emailed link opens, with its token, or the expired page for a token that cannot
/// be one of the server's.
fn link_page<P: AdminPort>(
    dash: &Shared<P>,
    peer: Option<IpAddr>,
    headers: &axum::http::HeaderMap,
    token: Option<String>,
    title: &'static str,
    form: &'static str,
) -> Response {
    let token = token.unwrap_or_default();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return expired(title);
    }
    show(
        StatusCode::OK,
        Shown {
            token: &token,
            ..Shown::blank(title, form)
        },
        dash.proxies.over_tls(peer, headers),
    )
}

pub(super) fn too_many(refused: TooMany) -> Response {
    let mut response = error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        "Too many attempts from here or for this address. Wait a minute and try again.",
    );
    if let Ok(value) = HeaderValue::from_str(&refused.retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A signed-out form, read once the address's budget allows it and checked against the login
/// CSRF cookie: the form, the client's address, and whether the request came over TLS.
pub(super) async fn public_form<P: AdminPort>(
    dash: &Shared<P>,
    peer: Option<IpAddr>,
    request: Request,
) -> Result<(FormData, Option<IpAddr>, bool), Response> {
    let headers = request.headers().clone();
    let secure = dash.proxies.over_tls(peer, &headers);
    let client = dash.proxies.client(peer, &headers);
    dash.accounts.allow_address(client).map_err(too_many)?;
    let form = login_form(&headers, request).await?;
    Ok((form, client, secure))
}

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

pub(super) async fn sign_up_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: axum::http::HeaderMap,
) -> Response {
    match dash.signup {
        Signup::Closed => Refusal::NotFound.into_response(),
        Signup::Invite => message(StatusCode::OK, "Sign up", "", INVITE_ONLY),
        Signup::Open => show(
            StatusCode::OK,
            Shown::blank("Sign up", "signup"),
            dash.proxies.over_tls(peer, &headers),
        ),
    }
}

/// A sign-up: the same answer whether the address is free or taken (the email says which).
pub(super) async fn sign_up<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    request: Request,
) -> Response {
    match dash.signup {
        Signup::Closed => return Refusal::NotFound.into_response(),
        Signup::Invite => return message(StatusCode::FORBIDDEN, "Sign up", INVITE_ONLY, ""),
        Signup::Open => {}
    }
    let (form, client, secure) = match public_form(&dash, peer, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let email = field(&form, "email").unwrap_or("").trim();
    let password = field(&form, "password").unwrap_or("");
    let again = |status: StatusCode, error: &str, email: &str| {
        show(
            status,
            Shown {
                error,
                email,
                ..Shown::blank("Sign up", "signup")
            },
            secure,
        )
    };
    if email.len() > MAX_EMAIL_BYTES || password.len() > MAX_PASSWORD_BYTES {
        return again(
            StatusCode::BAD_REQUEST,
            "That email or password is too long.",
            "",
        );
    }
    if field(&form, "confirm").unwrap_or("") != password {
        return again(
            StatusCode::BAD_REQUEST,
            "The password and its confirmation differ.",
            email,
        );
    }
    if let Err(refused) = dash.accounts.allow_email(client, email).await {
        return too_many(refused);
    }
    if let Err(refused) = dash.accounts.allow_sign_up(client).await {
        return too_many(refused);
    }
    match dash.port.sign_up(email, password).await {
        Ok(()) => {
            let notice = format!(
                "We sent an email to {email}: follow its link within 24 hours to confirm the \
                 address and sign in. (If the address already has an account, the email says \
                 how to sign in.)"
            );
            message(StatusCode::OK, "Check your email", "", &notice)
        }
        Err(PortError::Invalid(reason)) => again(StatusCode::BAD_REQUEST, &reason, email),
        Err(other) => Refusal::from(other).into_response(),
    }
}

pub(super) async fn verify_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: axum::http::HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    link_page(
        &dash,
        peer,
        &headers,
        query.token,
        "Confirm your email",
        "verify",
    )
}

/// Follows a verification link with the password chosen at its sign-up: the email is confirmed
/// and the browser signed in. Another password shows the form again and spends nothing (the
/// link may come from someone else's sign-up of this address, with their password).
pub(super) async fn verify<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    request: Request,
) -> Response {
    let (form, _, secure) = match public_form(&dash, peer, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let token = field(&form, "token").unwrap_or("");
    let password = field(&form, "password").unwrap_or("");
    if token.len() > MAX_TOKEN_BYTES {
        return expired("Confirm your email");
    }
    let again = |error: &str| {
        show(
            StatusCode::BAD_REQUEST,
            Shown {
                error,
                token,
                ..Shown::blank("Confirm your email", "verify")
            },
            secure,
        )
    };
    if password.len() > MAX_PASSWORD_BYTES {
        return again("That password is too long.");
    }
    let admin = match dash.port.verify_email(token, password).await {
        Ok(Some(admin)) => admin,
        Ok(None) => return expired("Confirm your email"),
        Err(PortError::Invalid(reason)) => return again(&reason),
        Err(error) => return Refusal::from(error).into_response(),
    };
    let notice = encode("Your email is confirmed. Create your first app.");
    signed_in(
        &dash,
        &admin,
        &format!("/dashboard/apps?notice={notice}"),
        secure,
    )
    .await
}

pub(super) async fn forgot_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: axum::http::HeaderMap,
) -> Response {
    show(
        StatusCode::OK,
        Shown::blank("Forgot your password?", "forgot"),
        dash.proxies.over_tls(peer, &headers),
    )
}

/// A reset request: the same answer, and the same work, whether the address has an account.
pub(super) async fn forgot<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    request: Request,
) -> Response {
    let (form, client, secure) = match public_form(&dash, peer, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let email = field(&form, "email").unwrap_or("").trim();
    let again = |status: StatusCode, error: &str| {
        show(
            status,
            Shown {
                error,
                ..Shown::blank("Forgot your password?", "forgot")
            },
            secure,
        )
    };
    if email.len() > MAX_EMAIL_BYTES {
        return again(StatusCode::BAD_REQUEST, "That email is too long.");
    }
    if let Err(refused) = dash.accounts.allow_email(client, email).await {
        return too_many(refused);
    }
    match dash.port.forgot_password(email).await {
        Ok(()) => {
            let notice = format!(
                "If {email} has an account, we sent it a link to choose a new password. The \
                 link works once, for an hour."
            );
            message(StatusCode::OK, "Check your email", "", &notice)
        }
        Err(PortError::Invalid(reason)) => again(StatusCode::BAD_REQUEST, &reason),
        Err(other) => Refusal::from(other).into_response(),
    }
}

pub(super) async fn reset_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: axum::http::HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    link_page(
        &dash,
        peer,
        &headers,
        query.token,
        "Choose a new password",
        "reset",
    )
}

/// Follows a reset link with the new password: set, every session of the user ends, and the
/// browser goes to the sign-in page.
pub(super) async fn reset<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    request: Request,
) -> Response {
    let (form, _, secure) = match public_form(&dash, peer, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let token = field(&form, "token").unwrap_or("");
    let new = field(&form, "new").unwrap_or("");
    if token.len() > MAX_TOKEN_BYTES {
        return expired("Choose a new password");
    }
    let again = |error: &str| {
        show(
            StatusCode::BAD_REQUEST,
            Shown {
                error,
                token,
                ..Shown::blank("Choose a new password", "reset")
            },
            secure,
        )
    };
    if new.len() > MAX_PASSWORD_BYTES {
        return again("That password is too long.");
    }
    if field(&form, "confirm").unwrap_or("") != new {
        return again("The new password and its confirmation differ.");
    }
    match dash.port.reset_password_with_link(token, new).await {
        Ok(true) => Redirect::to("/dashboard/login?notice=password-set").into_response(),
        Ok(false) => expired("Choose a new password"),
        Err(PortError::Invalid(reason)) => again(&reason),
        Err(other) => Refusal::from(other).into_response(),
    }
}
