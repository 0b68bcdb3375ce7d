//! Signing in to the admin dashboard over HTTP: wrong passwords and the rate limits per email and
//! per address, the session cookie's attributes, signing out, `next` staying on the dashboard,
//! and a password change ending the other sessions.

use reqwest::header::RETRY_AFTER;
use reqwest::Method;

use herald::tenants::{Secret, UserRole};

use crate::dashboard_helpers::*;
use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Sign-in

#[tokio::test]
async fn a_wrong_password_gets_401_and_the_sixth_attempt_for_an_email_gets_429() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let tenant = store.create_tenant("Acme").await.unwrap();
    store
        .create_user(
            TENANT_ADMIN,
            TENANT_ADMIN_PASSWORD,
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();

    // An unknown email reads exactly like a wrong password.
    let unknown = browser
        .attempt_sign_in(
            "nobody@example.test",
            "whatever it is",
            "/dashboard/apps",
            &[],
        )
        .await;
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert!(unknown.body.contains("Wrong email or password"));
    for attempt in 1..=5 {
        let page = browser
            .attempt_sign_in(OPERATOR, "not the password", "/dashboard/apps", &[])
            .await;
        assert_eq!(page.status, 401, "attempt {attempt}: {}", page.body);
        assert!(
            page.body.contains("Wrong email or password"),
            "{}",
            page.body
        );
        assert!(page.set_cookie("herald_session").is_none());
        // The form comes back with a fresh CSRF token to try again.
        assert_eq!(
            Some(hidden(&page.body, "csrf")),
            page.cookie("herald_login_csrf")
        );
    }
    // The sixth, even with the right password, is refused.
    let page = browser
        .attempt_sign_in(OPERATOR, OPERATOR_PASSWORD, "/dashboard/apps", &[])
        .await;
    assert_eq!(page.status, 429, "{}", page.body);
    let retry_after: u64 = page
        .header(RETRY_AFTER)
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(page.set_cookie("herald_session").is_none());
    assert!(
        page.body.contains("Too many sign-in attempts"),
        "{}",
        page.body
    );
    // The email is limited, not everyone: another admin signs in.
    browser.sign_in(TENANT_ADMIN, TENANT_ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn the_eleventh_sign_in_attempt_from_one_address_in_a_minute_gets_429() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    for n in 0..10 {
        let page = browser
            .attempt_sign_in(
                &format!("guess{n}@example.test"),
                "a guessed password",
                "/dashboard/apps",
                &[],
            )
            .await;
        assert_eq!(page.status, 401, "attempt {n}: {}", page.body);
    }
    let page = browser
        .attempt_sign_in(OPERATOR, OPERATOR_PASSWORD, "/dashboard/apps", &[])
        .await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(!page.header(RETRY_AFTER).is_empty());
    assert!(page.set_cookie("herald_session").is_none());
}

fn has(attributes: &[String], attribute: &str) -> bool {
    attributes.iter().any(|a| a == attribute)
}

fn attributes(line: &str) -> Vec<String> {
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn the_session_cookie_is_httponly_samesite_lax_and_secure_only_behind_tls() {
    // The test client plays the TLS-terminating proxy (see hardening_signin.rs for the same
    // header from an untrusted peer).
    let app = spawn_app_with(|settings| {
        settings.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().expect("CIDR")];
    })
    .await;
    let browser = Browser::new(&app);

    let plain = browser
        .attempt_sign_in(OPERATOR, OPERATOR_PASSWORD, "/dashboard/apps", &[])
        .await;
    assert_eq!(plain.status, 303, "{}", plain.body);
    let line = plain.set_cookie("herald_session").expect("session cookie");
    let attrs = attributes(&line);
    assert!(has(&attrs, "httponly"), "{line}");
    assert!(has(&attrs, "samesite=lax"), "{line}");
    assert!(has(&attrs, "path=/dashboard"), "{line}");
    assert!(!has(&attrs, "secure"), "no Secure over plain HTTP: {line}");
    // The sign-in form's cookie is cleared once signed in.
    let cleared = plain.set_cookie("herald_login_csrf").expect("cleared");
    assert!(has(&attributes(&cleared), "max-age=0"), "{cleared}");

    let tls = browser
        .attempt_sign_in(
            OPERATOR,
            OPERATOR_PASSWORD,
            "/dashboard/apps",
            &[("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(tls.status, 303, "{}", tls.body);
    let line = tls.set_cookie("herald_session").expect("session cookie");
    let attrs = attributes(&line);
    assert!(has(&attrs, "secure"), "Secure behind TLS: {line}");
    assert!(has(&attrs, "httponly"), "{line}");
    assert!(has(&attrs, "samesite=lax"), "{line}");

    // The sign-in form's own cookie follows the same rules.
    let login = browser
        .send(
            Method::GET,
            "/dashboard/login",
            None,
            &[("x-forwarded-proto", "https")],
            None,
        )
        .await;
    let line = login.set_cookie("herald_login_csrf").expect("login cookie");
    let attrs = attributes(&line);
    assert!(has(&attrs, "secure"), "{line}");
    assert!(has(&attrs, "httponly"), "{line}");
    assert!(has(&attrs, "samesite=lax"), "{line}");
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let session = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let elsewhere = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;

    let page = browser
        .post(
            Some(&session.cookie),
            "/dashboard/logout",
            &with_csrf(&[], &session.csrf),
        )
        .await;
    assert_eq!((page.status, page.location()), (303, "/dashboard/login"));
    let cleared = page.set_cookie("herald_session").expect("cookie cleared");
    assert_eq!(page.cookie("herald_session").as_deref(), Some(""));
    assert!(has(&attributes(&cleared), "max-age=0"), "{cleared}");

    // The old cookie is nobody now, for pages and forms.
    browser
        .get(Some(&session.cookie), "/dashboard/apps")
        .await
        .assert_sign_in_redirect("/dashboard/apps", "GET after sign-out");
    let path = format!("/dashboard/apps/{APP_ID}");
    browser
        .post(
            Some(&session.cookie),
            &path,
            &with_csrf(&[("name", RENAMED.into())], &session.csrf),
        )
        .await
        .assert_sign_in_redirect(&path, "POST after sign-out");
    assert_eq!(
        app.node.store.get_app(APP_ID).await.unwrap().name,
        "Demo app"
    );
    // Only that session ended.
    assert_eq!(
        browser
            .get(Some(&elsewhere.cookie), "/dashboard/apps")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn next_never_leaves_the_dashboard() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    for (next, expected) in [
        ("//evil.com", "/dashboard/apps"),
        ("https://evil.com", "/dashboard/apps"),
        ("/\\evil.com", "/dashboard/apps"),
        ("/dashboard/users", "/dashboard/users"),
    ] {
        let page = browser
            .attempt_sign_in(OPERATOR, OPERATOR_PASSWORD, next, &[])
            .await;
        assert_eq!(page.status, 303, "next={next}: {}", page.body);
        assert_eq!(page.location(), expected, "next={next}");
    }
    // The sign-in page does not carry an off-site `next` either.
    let login = browser
        .get(None, "/dashboard/login?next=%2F%2Fevil.com")
        .await;
    assert_eq!(hidden(&login.body, "next"), "/dashboard/apps");
    assert!(!login.body.contains("evil.com"));
}

#[tokio::test]
async fn changing_the_password_signs_out_the_other_sessions() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let session = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let other = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let new_password = "a brand new password";
    let change = |current: &str, confirm: &str| -> Form {
        vec![
            ("current", current.to_owned()),
            ("new", new_password.to_owned()),
            ("confirm", confirm.to_owned()),
        ]
    };

    for (form, what) in [
        (
            change("not the password", new_password),
            "a wrong current password",
        ),
        (
            change(OPERATOR_PASSWORD, "something else"),
            "a different confirmation",
        ),
    ] {
        let page = browser
            .post(
                Some(&session.cookie),
                "/dashboard/account/password",
                &with_csrf(&form, &session.csrf),
            )
            .await;
        assert_eq!(page.status, 303, "{what}");
        assert!(
            page.location().contains("?error="),
            "{what}: {}",
            page.location()
        );
        assert!(
            password_works(&app, OPERATOR, OPERATOR_PASSWORD).await,
            "{what}"
        );
    }

    let page = browser
        .post(
            Some(&session.cookie),
            "/dashboard/account/password",
            &with_csrf(&change(OPERATOR_PASSWORD, new_password), &session.csrf),
        )
        .await;
    page.assert_done("the password change");
    assert!(password_works(&app, OPERATOR, new_password).await);
    assert!(!password_works(&app, OPERATOR, OPERATOR_PASSWORD).await);
    assert_eq!(
        browser
            .get(Some(&session.cookie), "/dashboard/account")
            .await
            .status,
        200,
        "this session goes on"
    );
    browser
        .get(Some(&other.cookie), "/dashboard/account")
        .await
        .assert_sign_in_redirect("/dashboard/account", "the other session");
    browser.sign_in(OPERATOR, new_password).await;
}

#[tokio::test]
async fn made_up_session_cookies_are_no_session_and_lock_no_one_out() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let session = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let real = session
        .cookie
        .strip_prefix("herald_session=")
        .expect("the session cookie")
        .to_owned();
    let (token, mac) = real.split_once('.').expect("TOKEN.MAC");
    assert_eq!((token.len(), mac.len()), (64, 64), "{real}");
    // The bare token, a made-up MAC, the MAC moved to another token, garbage: none is a session,
    // from the same address as the real one, however many.
    let forged = [
        format!("herald_session={token}"),
        format!("herald_session={token}.{}", "0".repeat(64)),
        format!("herald_session={}.{mac}", "a".repeat(64)),
        "herald_session=not-a-token".to_owned(),
    ];
    for _ in 0..25 {
        for cookie in &forged {
            browser
                .get(Some(cookie), "/dashboard/apps")
                .await
                .assert_sign_in_redirect("/dashboard/apps", cookie);
        }
    }
    let page = browser.get(Some(&session.cookie), "/dashboard/apps").await;
    assert_eq!(
        page.status, 200,
        "the real session after 100 made-up cookies"
    );
}
