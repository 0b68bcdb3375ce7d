//! Who may use the admin dashboard over HTTP: every page and form needs a session, every form
//! the session's CSRF token (and sign-in the login CSRF double submit), and a tenant admin gets
//! 404 for another tenant's app on every app route, which is left exactly as it was.

use reqwest::header::CONTENT_TYPE;

use herald::tenants::{DeliveryStatus, NewApp, Secret, UserRole};

use crate::dashboard_helpers::*;
use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn every_page_and_every_form_needs_a_session() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let hook = add_webhook(&app, APP_ID).await;
    // A real session's token: a form without the session cookie is refused even with it.
    let real = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let before = snapshot(&app).await;

    let mut pages = app_pages(APP_ID);
    pages.extend(other_pages());
    pages.push(format!("/dashboard/apps/{APP_ID}/usage?notice=hello&x=1"));
    let forged = format!("herald_session={}", "ab".repeat(32));
    let cookies: [Option<&str>; 4] = [
        None,
        Some(&forged),
        Some("herald_session="),
        // The login CSRF cookie is no session.
        Some("herald_login_csrf=0123456789"),
    ];
    for cookie in cookies {
        for path in &pages {
            let page = browser.get(cookie, path).await;
            page.assert_sign_in_redirect(path, &format!("GET {path} with {cookie:?}"));
        }
        let mut forms = account_forms(OPERATOR_PASSWORD);
        forms.extend(operator_forms());
        forms.extend(app_forms(APP_ID, &hook, KEY, "Demo app"));
        for (path, form) in &forms {
            let page = browser
                .post(cookie, path, &with_csrf(form, &real.csrf))
                .await;
            page.assert_sign_in_redirect(path, &format!("POST {path} with {cookie:?}"));
        }
    }
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    assert_eq!(
        app.node.store.get_app(APP_ID).await.unwrap().name,
        "Demo app"
    );
    assert!(password_works(&app, OPERATOR, OPERATOR_PASSWORD).await);
    // The session whose token was borrowed is still signed in (the logouts were refused).
    assert_eq!(
        browser
            .get(Some(&real.cookie), "/dashboard/apps")
            .await
            .status,
        200
    );

    // The sign-in page is the one page without a session, and `/dashboard` goes to the apps.
    assert_eq!(browser.get(None, "/dashboard/login").await.status, 200);
    let home = browser.get(None, "/dashboard").await;
    assert_eq!((home.status, home.location()), (303, "/dashboard/apps"));

    // The redirect's `next` survives the sign-in page and brings the admin back.
    let target = format!("/dashboard/apps/{APP_ID}/keys");
    let refused = browser.get(None, &target).await;
    let login = browser.get(None, refused.location()).await;
    assert_eq!(login.status, 200);
    assert_eq!(hidden(&login.body, "next"), target);
    let signed_in = browser
        .attempt_sign_in(OPERATOR, OPERATOR_PASSWORD, &target, &[])
        .await;
    assert_eq!(
        (signed_in.status, signed_in.location()),
        (303, target.as_str())
    );
}

#[tokio::test]
async fn a_cookie_one_character_off_is_no_session() {
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
    let session = browser.sign_in(TENANT_ADMIN, TENANT_ADMIN_PASSWORD).await;
    assert_eq!(
        browser
            .get(Some(&session.cookie), "/dashboard/apps")
            .await
            .status,
        200
    );
    // A forged cookie with the right shape but another value is nobody.
    let mut forged = session.cookie.clone();
    let last = forged.pop().expect("a token");
    forged.push(if last == '0' { '1' } else { '0' });
    browser
        .get(Some(&forged), "/dashboard/apps")
        .await
        .assert_sign_in_redirect("/dashboard/apps", "a cookie one digit off");
}

// ---------------------------------------------------------------------------------------------
// CSRF

#[tokio::test]
async fn every_form_without_the_sessions_csrf_token_gets_403_and_changes_nothing() {
    // Some 100 refused forms from one member: past the default budget of changes a minute
    // (which counts refused forms too; `dashboard_budget` tests it), so it is raised here.
    let app = spawn_app_with(|s| {
        s.dashboard_rate = 10_000;
        s.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
    })
    .await;
    let browser = Browser::new(&app);
    let hook = add_webhook(&app, APP_ID).await;
    failed_delivery(&app, APP_ID, &hook).await;
    let session = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    // Another live session of the same admin: its token is valid, but not for this session.
    let other = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    assert_ne!(session.csrf, other.csrf);
    let before = snapshot(&app).await;

    let mut forms = account_forms(OPERATOR_PASSWORD);
    forms.extend(operator_forms());
    forms.extend(app_forms(APP_ID, &hook, KEY, "Demo app"));
    let wrong_tokens = [
        String::new(),
        "0".repeat(64),
        other.csrf.clone(),
        format!("{}0", session.csrf),
        session.csrf[..63].to_owned(),
        session.csrf.to_uppercase(),
    ];
    for (path, form) in &forms {
        let page = browser.post(Some(&session.cookie), path, form).await;
        page.assert_csrf_refused(&format!("POST {path} without a token"));
        for token in &wrong_tokens {
            let page = browser
                .post(Some(&session.cookie), path, &with_csrf(form, token))
                .await;
            page.assert_csrf_refused(&format!("POST {path} with token {token:?}"));
            assert!(
                !page.body.contains(SECRET),
                "POST {path}: a refused form shows no secret"
            );
        }
        // A token in the URL is not a form field.
        let in_url = format!("{path}?csrf={}", session.csrf);
        browser
            .post(Some(&session.cookie), &in_url, form)
            .await
            .assert_csrf_refused(&format!("POST {in_url}"));
    }

    let after = snapshot(&app).await;
    assert_eq!(after, before, "nothing changed");
    let demo = app.node.store.get_app(APP_ID).await.unwrap();
    assert_eq!(demo.name, "Demo app");
    assert_eq!(demo.key, KEY);
    assert!(demo.previous_key.is_none());
    assert!(password_works(&app, OPERATOR, OPERATOR_PASSWORD).await);
    // Both sessions survived the refused sign-outs.
    for s in [&session, &other] {
        assert_eq!(
            browser.get(Some(&s.cookie), "/dashboard/apps").await.status,
            200
        );
    }

    // Control: the session's own token goes through.
    let page = browser
        .post(
            Some(&session.cookie),
            &format!("/dashboard/apps/{APP_ID}"),
            &with_csrf(&[("name", RENAMED.into())], &session.csrf),
        )
        .await;
    page.assert_done("rename with the right token");
    assert_eq!(app.node.store.get_app(APP_ID).await.unwrap().name, RENAMED);
}

#[tokio::test]
async fn a_sign_in_without_the_login_csrf_double_submit_gets_403() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let login = browser.get(None, "/dashboard/login").await;
    let token = login
        .cookie("herald_login_csrf")
        .expect("login CSRF cookie");
    let cookie = format!("herald_login_csrf={token}");
    let credentials: Form = vec![
        ("email", OPERATOR.into()),
        ("password", OPERATOR_PASSWORD.into()),
    ];
    let cases: Vec<(&str, Option<&str>, Form)> = vec![
        ("no cookie, no field", None, credentials.clone()),
        ("field but no cookie", None, with_csrf(&credentials, &token)),
        ("cookie but no field", Some(&cookie), credentials.clone()),
        (
            "cookie and another field",
            Some(&cookie),
            with_csrf(&credentials, &"0".repeat(64)),
        ),
        (
            "empty cookie and empty field",
            Some("herald_login_csrf="),
            with_csrf(&credentials, ""),
        ),
    ];
    for (what, cookie, form) in &cases {
        let page = browser.post(*cookie, "/dashboard/login", form).await;
        page.assert_csrf_refused(what);
        assert!(page.set_cookie("herald_session").is_none(), "{what}");
    }
    // Control: the double submit signs in (and the refusals did not use up the rate limit).
    let page = browser
        .post(
            Some(&cookie),
            "/dashboard/login",
            &with_csrf(&credentials, &token),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.cookie("herald_session").is_some());
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation

#[tokio::test]
async fn a_tenant_admin_gets_404_for_another_tenants_app_on_every_route() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let globex = store.create_tenant("Globex").await.unwrap();
    let ours = store
        .create_app(NewApp {
            name: "Acme chat".into(),
            tenant_id: Some(acme.id.clone()),
            plan: Some("sandbox".into()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    let theirs = store
        .create_app(NewApp {
            name: "Globex confidential".into(),
            tenant_id: Some(globex.id.clone()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    // Theirs is mid-rotation, so a revocation would change it.
    store.rotate_key(&theirs.id, 0).await.unwrap();
    herald::startup::refresh_apps(&app.node).await.unwrap();
    store
        .create_user(
            TENANT_ADMIN,
            TENANT_ADMIN_PASSWORD,
            UserRole::Admin,
            Some(&acme.id),
        )
        .await
        .unwrap();
    let our_hook = add_webhook(&app, &ours.id).await;
    let their_hook = add_webhook(&app, &theirs.id).await;
    failed_delivery(&app, &ours.id, &our_hook).await;
    let their_delivery = failed_delivery(&app, &theirs.id, &their_hook).await;
    let theirs_before = store.get_app(&theirs.id).await.unwrap();
    let their_hooks_before = store.list_webhooks(Some(&theirs.id)).await.unwrap();
    let before = snapshot(&app).await;

    let s = browser.sign_in(TENANT_ADMIN, TENANT_ADMIN_PASSWORD).await;
    let cookie = Some(s.cookie.as_str());

    // Every page of their app: 404, exactly like an app that does not exist.
    let missing = browser.get(cookie, "/dashboard/apps/999999999").await;
    missing.assert_not_found("a missing app");
    for path in app_pages(&theirs.id) {
        let page = browser.get(cookie, &path).await;
        page.assert_not_found(&format!("GET {path}"));
        assert_eq!(page.body, missing.body, "GET {path} says no more than 404");
        assert!(!page.body.contains(&theirs.name));
    }
    // Every form of their app, with a valid token: 404.
    let their_forms = app_forms(&theirs.id, &their_hook, &theirs.key, &theirs.name);
    for (path, form) in &their_forms {
        let page = browser.post(cookie, path, &with_csrf(form, &s.csrf)).await;
        page.assert_not_found(&format!("POST {path}"));
        assert!(!page.body.contains(theirs.secret.expose()), "POST {path}");
    }
    // The operator's pages and forms: 404 too.
    for path in ["/dashboard/tenants", "/dashboard/users"] {
        browser
            .get(cookie, path)
            .await
            .assert_not_found(&format!("GET {path}"));
    }
    for (path, form) in operator_forms() {
        browser
            .post(cookie, &path, &with_csrf(&form, &s.csrf))
            .await
            .assert_not_found(&format!("POST {path}"));
    }

    // Their webhook or delivery through our app id changes nothing of theirs either.
    let ours_base = format!("/dashboard/apps/{}", ours.id);
    let crossed: Vec<(String, Form)> = vec![
        (
            format!("{ours_base}/webhooks/{their_hook}"),
            vec![
                ("url", "http://127.0.0.1:9/changed".into()),
                ("events", "member_added".into()),
            ],
        ),
        (format!("{ours_base}/webhooks/{their_hook}/test"), vec![]),
        (format!("{ours_base}/webhooks/{their_hook}/remove"), vec![]),
        (
            format!("{ours_base}/webhooks/retry"),
            vec![("delivery", their_delivery.to_string())],
        ),
        (
            "/dashboard/apps".into(),
            vec![
                ("name", "Planted in Globex".into()),
                ("tenant", globex.id.clone()),
            ],
        ),
    ];
    for (path, form) in &crossed {
        let page = browser.post(cookie, path, &with_csrf(form, &s.csrf)).await;
        assert!(
            page.status == 404 || (page.status == 303 && page.location().contains("?error=")),
            "POST {path} with another tenant's ids: {} {} {}",
            page.status,
            page.location(),
            page.body
        );
    }
    assert_eq!(snapshot(&app).await, before, "nothing changed anywhere");
    assert!(password_works(&app, OPERATOR, OPERATOR_PASSWORD).await);

    // The app list shows our apps only.
    let list = browser.get(cookie, "/dashboard/apps").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("Acme chat"), "{}", list.body);
    assert!(!list.body.contains(&theirs.name), "{}", list.body);
    assert!(!list.body.contains(&theirs.id), "{}", list.body);
    assert!(!list.body.contains("Demo app"), "{}", list.body);

    // Control: the same requests for our own app go through.
    for path in app_pages(&ours.id) {
        let page = browser.get(cookie, &path).await;
        assert_eq!(page.status, 200, "GET {path}: {}", page.body);
        if path.ends_with("/live/events") {
            assert!(page.header(CONTENT_TYPE).starts_with("text/event-stream"));
        }
    }
    for (path, form) in &app_forms(&ours.id, &our_hook, &ours.key, RENAMED) {
        let page = browser.post(cookie, path, &with_csrf(form, &s.csrf)).await;
        if path.ends_with("/keys/reveal") {
            assert_eq!(page.status, 200, "POST {path}: {}", page.body);
            assert!(page.body.contains(ours.secret.expose()));
        } else {
            page.assert_done(&format!("POST {path}"));
        }
    }
    assert!(
        store.get_app(&ours.id).await.is_err(),
        "our app was deleted by the last form"
    );

    // And theirs is exactly as it was.
    assert_eq!(store.get_app(&theirs.id).await.unwrap(), theirs_before);
    assert_eq!(
        store.list_webhooks(Some(&theirs.id)).await.unwrap(),
        their_hooks_before
    );
    let their_deliveries = store.deliveries(&theirs.id, None, 100).await.unwrap();
    assert_eq!(their_deliveries.len(), 1);
    assert_eq!(their_deliveries[0].status, DeliveryStatus::Failed);
}
