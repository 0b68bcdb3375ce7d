//! Sign-in, sign-out and the admin's own account page.

use std::convert::Infallible;
use std::net::IpAddr;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::{
    back, check_csrf, cookie, field, outcome, peer, render, set_cookie, Chrome, Ctx, Flash,
    FormData, Refusal, Shared,
};
use crate::port::*;
use crate::session::{
    new_session, random_token, same_token, LOGIN_CSRF_COOKIE, MAX_EMAIL_BYTES, MAX_PASSWORD_BYTES,
    SESSION_COOKIE,
};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: String,
    notice: String,
    email: String,
    /// Link to the sign-up page (`HERALD_SIGNUP=open` only).
    signup: bool,
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
    notice: Option<String>,
}

pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/dashboard") && !n.starts_with("//") && !n.contains("\\") => {
            n.to_owned()
        }
        _ => "/dashboard/apps".to_owned(),
    }
}

/// The direct peer's address (`ConnectInfo`).
pub(crate) struct Peer(pub(super) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Peer(peer(parts)))
    }
}

pub(super) async fn login_page<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let csrf = random_token();
    let mut response = render(&LoginPage {
        csrf: csrf.clone(),
        next: safe_next(query.next.as_deref()),
        error: query.error.unwrap_or_default(),
        notice: login_notice(query.notice.as_deref()).to_owned(),
        email: String::new(),
        signup: dash.signup == Signup::Open,
    });
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_CSRF_COOKIE,
            &csrf,
            Some(3600),
            dash.proxies.over_tls(peer, &headers),
        ),
    );
    response
}

/// A sign-in attempt. Its cost is bounded before anything is kept or hashed: the client
/// address's budget is checked before the form is read (which is at most
/// [`crate::MAX_FORM_BYTES`]), oversized emails and passwords are refused with 400, and only
/// then do the (email, address) and email budgets take a key and argon2 run (itself capped by
/// the server, which answers [`PortError::Busy`] past its capacity).
/// A signed-out form, checked against the login CSRF cookie (the double submit).
pub(super) async fn login_form(
    headers: &HeaderMap,
    request: Request,
) -> Result<FormData, Response> {
    let form = match Form::<FormData>::from_request(request, &()).await {
        Ok(Form(form)) => form,
        Err(rejection) => return Err(rejection.into_response()),
    };
    let cookie_token = cookie(headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    let form_token = field(&form, "csrf").unwrap_or("");
    if cookie_token.is_empty() || !same_token(cookie_token, form_token) {
        return Err(Refusal::Csrf.into_response());
    }
    Ok(form)
}

/// Starts a session for `admin` and sends the browser to `to` with its cookie (the login CSRF
/// cookie is spent).
pub(super) async fn signed_in<P: AdminPort>(
    dash: &Shared<P>,
    admin: &Admin,
    to: &str,
    secure: bool,
) -> Response {
    let session = new_session();
    let token = session.token.clone();
    if let Err(error) = dash.port.start_session(admin, session).await {
        return Refusal::from(error).into_response();
    }
    let mut response = Redirect::to(to).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &dash.cookies.seal(&token), None, secure),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, "", Some(0), secure),
    );
    response
}

pub(super) async fn login<P: AdminPort>(
    State(dash): State<Shared<P>>,
    Peer(peer): Peer,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let secure = dash.proxies.over_tls(peer, &headers);
    let client = dash.proxies.client(peer, &headers);
    let signup = dash.signup == Signup::Open;
    let login_retry = |status: StatusCode, error: &str, next: &str, email: &str, secure: bool| {
        login_retry(status, error, next, email, secure, signup)
    };
    let too_many = |retry_after: u64, form: Option<(&str, &str)>| {
        let (next, email) = form.unwrap_or(("/dashboard/apps", ""));
        let mut response = login_retry(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a minute and try again.",
            next,
            email,
            secure,
        );
        if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    };
    if let Err(refused) = dash.sign_in.allow_address(client) {
        return too_many(refused.retry_after, None);
    }
    let form = match login_form(&headers, request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let email = field(&form, "email").unwrap_or("").trim();
    let password = field(&form, "password").unwrap_or("");
    let next = safe_next(field(&form, "next"));
    if email.len() > MAX_EMAIL_BYTES || password.len() > MAX_PASSWORD_BYTES {
        return login_retry(
            StatusCode::BAD_REQUEST,
            "That email or password is too long.",
            &next,
            "",
            secure,
        );
    }
    if let Err(refused) = dash.sign_in.allow_email(client, email).await {
        return too_many(refused.retry_after, Some((&next, email)));
    }
    let address = client.map(|ip| ip.to_string()).unwrap_or_default();
    match dash.port.authenticate(email, password, &address).await {
        Ok(Some(admin)) => signed_in(&dash, &admin, &next, secure).await,
        // An unverified sign-up answers exactly this too (the store treats it as a wrong
        // password), so a sign-in never tells whether someone's sign-up created the account.
        Ok(None) => login_retry(
            StatusCode::UNAUTHORIZED,
            "Wrong email or password. Just signed up? Follow the link we emailed you first.",
            &next,
            email,
            secure,
        ),
        Err(PortError::Busy) => {
            let mut response = login_retry(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins are being checked right now. Try again in a moment.",
                &next,
                email,
                secure,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(_) => login_retry(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in is unavailable right now; the details are in the server log.",
            &next,
            email,
            secure,
        ),
    }
}

/// The sign-in form again, with `error` and a fresh CSRF token.
fn login_retry(
    status: StatusCode,
    error: &str,
    next: &str,
    email: &str,
    secure: bool,
    signup: bool,
) -> Response {
    let csrf = random_token();
    let mut response = render(&LoginPage {
        csrf: csrf.clone(),
        next: next.to_owned(),
        error: error.to_owned(),
        notice: String::new(),
        email: email.to_owned(),
        signup,
    });
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, Some(3600), secure),
    );
    response
}

pub(super) async fn logout<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    dash.port.end_session(&ctx.token).await?;
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), ctx.secure),
    );
    Ok(response)
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    role: String,
}

pub(super) async fn account(ctx: Ctx, Query(flash): Query<Flash>) -> Response {
    let role = if ctx.admin.operator {
        "platform operator".to_owned()
    } else {
        format!(
            "{} of tenant {}",
            ctx.admin.role.as_str(),
            ctx.admin.tenant_id.clone().unwrap_or_default()
        )
    };
    render(&AccountPage {
        chrome: Chrome::new(&ctx, flash, "account"),
        role,
    })
}

pub(super) async fn change_password<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Form(form): Form<FormData>,
) -> Result<Response, Refusal> {
    check_csrf(&ctx, &form)?;
    let current = field(&form, "current").unwrap_or("");
    let new = field(&form, "new").unwrap_or("");
    if field(&form, "confirm").unwrap_or("") != new {
        return Ok(back(
            "/dashboard/account",
            Err("The new password and its confirmation differ.".into()),
        ));
    }
    let result = dash.port.change_password(&ctx.admin, current, new).await;
    if result.is_ok() {
        keep_own_session(&dash, &ctx).await?;
    }
    Ok(back(
        "/dashboard/account",
        outcome(result, |()| {
            "Password changed; your other sessions were signed out.".into()
        })?,
    ))
}

/// After the admin's own password changed: their other sessions end, this one carries on at the
/// new credential generation.
pub(super) async fn keep_own_session<P: AdminPort>(
    dash: &Shared<P>,
    ctx: &Ctx,
) -> Result<(), Refusal> {
    let generation = match dash.port.admin(&ctx.admin.id).await? {
        Some(admin) => admin.generation,
        None => return Err(Refusal::SignIn("/dashboard/account".into())),
    };
    dash.port
        .end_other_sessions(&ctx.admin, &ctx.token, generation)
        .await?;
    Ok(())
}

/// The sign-in page's notice for `?notice=CODE`: fixed texts only, so a link cannot put words of
/// its own on the real sign-in page (an unknown code shows nothing).
fn login_notice(code: Option<&str>) -> &'static str {
    match code {
        Some("password-set") => "Your password is set: sign in with it.",
        _ => "",
    }
}
