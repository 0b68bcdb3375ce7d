//! Dashboard sessions across nodes: two servers in this process share one SQLite store, the way
//! a cluster's nodes share PostgreSQL behind a load balancer without sticky sessions. A session
//! begun on one node works on the other (pages and forms), ends everywhere when signed out on
//! either, a password change ends the admin's other sessions on every node, and an admin keeps
//! at most 20 sessions.

use herald::tenants::Secret;

use crate::dashboard_helpers::*;
use crate::helpers::*;

/// Two nodes on one store (the first node's SQLite file), each with its own data directory.
/// Both believe `X-Forwarded-For` from loopback (the tests pick client addresses).
async fn two_nodes() -> (TestApp, TestApp) {
    let proxies: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
    let first_dir = tempfile::tempdir().unwrap();
    let store_url = herald::config::sqlite_url(first_dir.path());
    let mut first = test_settings(first_dir.path().to_path_buf());
    first.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
    first.trusted_proxies = proxies.clone();
    let a = spawn_in(first_dir, first).await;
    let second_dir = tempfile::tempdir().unwrap();
    let mut second = test_settings(second_dir.path().to_path_buf());
    second.database_url = store_url;
    second.trusted_proxies = proxies;
    let b = spawn_in(second_dir, second).await;
    (a, b)
}

#[tokio::test]
async fn a_session_begun_on_one_node_works_on_another_until_signed_out_there() {
    let (a, b) = two_nodes().await;
    let on_a = Browser::new(&a);
    let on_b = Browser::new(&b);
    let session = on_a.sign_in(OPERATOR, OPERATOR_PASSWORD).await;

    // Pages load on B with A's cookie, with the same CSRF token.
    for path in ["/dashboard/apps", "/dashboard/tenants", "/dashboard/users"] {
        let page = on_b.get(Some(&session.cookie), path).await;
        assert_eq!(page.status, 200, "{path} on the other node: {}", page.body);
    }
    let account = on_b.get(Some(&session.cookie), "/dashboard/account").await;
    assert_eq!(account.status, 200, "{}", account.body);
    assert!(account.body.contains(OPERATOR));
    assert_eq!(hidden(&account.body, "csrf"), session.csrf);

    // A form with the session's CSRF token works on B; a forged token does not.
    let form: Form = vec![
        ("name", "Made on node B".to_owned()),
        ("plan", "sandbox".to_owned()),
    ];
    on_b.post(
        Some(&session.cookie),
        "/dashboard/apps",
        &with_csrf(&form, "forged"),
    )
    .await
    .assert_csrf_refused("a forged token on node B");
    let made = on_b
        .post(
            Some(&session.cookie),
            "/dashboard/apps",
            &with_csrf(&form, &session.csrf),
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    assert!(!made.location().contains("error"), "{}", made.location());
    let apps = on_a.get(Some(&session.cookie), "/dashboard/apps").await;
    assert_eq!(apps.status, 200);
    assert!(apps.body.contains("Made on node B"), "{}", apps.body);

    // Signing out on B ends the session on A too.
    let out = on_b
        .post(
            Some(&session.cookie),
            "/dashboard/logout",
            &with_csrf(&[], &session.csrf),
        )
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(out.location(), "/dashboard/login");
    for (browser, node) in [(&on_a, "A"), (&on_b, "B")] {
        browser
            .get(Some(&session.cookie), "/dashboard/apps")
            .await
            .assert_sign_in_redirect("/dashboard/apps", &format!("signed out, on node {node}"));
    }
}

#[tokio::test]
async fn a_password_change_on_one_node_ends_the_other_sessions_on_every_node() {
    let (a, b) = two_nodes().await;
    let on_a = Browser::new(&a);
    let on_b = Browser::new(&b);
    let mine = on_a.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let other = on_b.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let new_password = "a brand new password";
    let change: Form = vec![
        ("current", OPERATOR_PASSWORD.to_owned()),
        ("new", new_password.to_owned()),
        ("confirm", new_password.to_owned()),
    ];
    on_a.post(
        Some(&mine.cookie),
        "/dashboard/account/password",
        &with_csrf(&change, &mine.csrf),
    )
    .await
    .assert_done("the password change on node A");
    for (browser, node) in [(&on_b, "B"), (&on_a, "A")] {
        browser
            .get(Some(&other.cookie), "/dashboard/account")
            .await
            .assert_sign_in_redirect(
                "/dashboard/account",
                &format!("the other session on {node}"),
            );
    }
    // The session that changed the password goes on, on either node.
    for browser in [&on_b, &on_a] {
        let page = browser.get(Some(&mine.cookie), "/dashboard/account").await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    on_b.sign_in(OPERATOR, new_password).await;
}

#[tokio::test]
async fn an_admin_keeps_at_most_twenty_sessions_across_nodes_and_the_oldest_ends() {
    let (a, b) = two_nodes().await;
    let browsers = [Browser::new(&a), Browser::new(&b)];
    let mut cookies = Vec::new();
    for n in 0..21 {
        // Each sign-in from its own client address (the sign-in budgets are per address).
        let address = format!("10.0.{n}.1");
        let page = browsers[n % 2]
            .attempt_sign_in(
                OPERATOR,
                OPERATOR_PASSWORD,
                "/dashboard/apps",
                &[("X-Forwarded-For", address.as_str())],
            )
            .await;
        assert_eq!(page.status, 303, "sign-in {n}: {}", page.body);
        let token = page.cookie("herald_session").expect("a session cookie");
        cookies.push(format!("herald_session={token}"));
    }
    for browser in &browsers {
        browser
            .get(Some(&cookies[0]), "/dashboard/apps")
            .await
            .assert_sign_in_redirect("/dashboard/apps", "the oldest of 21 sessions");
        for cookie in [&cookies[1], &cookies[20]] {
            assert_eq!(
                browser.get(Some(cookie), "/dashboard/apps").await.status,
                200
            );
        }
    }
    let user = a
        .node
        .store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.email == OPERATOR)
        .unwrap();
    assert_eq!(a.node.store.session_count(&user.id).await.unwrap(), 20);
}
