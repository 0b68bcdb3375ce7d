//! The dashboard's later additions (issue 18): each member's budget of state-changing forms
//! (`HERALD_DASHBOARD_RATE`), the API tokens page's paging of dead tokens, and client addresses
//! in the audit log shown to owners and admins only.

use herald::tenants::{AuditFilter, NewToken, Scope, Secret, UserRole};

use crate::dashboard_helpers::*;
use crate::helpers::*;

const PASSWORD: &str = "member password 1";

/// A member gets `HERALD_DASHBOARD_RATE` state-changing forms a minute: the next one is a 429
/// page with `Retry-After`, refused before its form is read (so it changes nothing, CSRF token
/// or not); another member's budget is their own, pages still load and signing out still works.
#[tokio::test]
async fn a_member_cannot_send_more_than_their_budget_of_changes() {
    let app = spawn_app_with(|s| {
        s.dashboard_rate = 5;
        s.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
    })
    .await;
    let (acme, _, _) = acme_and_globex(&app, PASSWORD).await;
    let browser = Browser::new(&app);
    let admin = browser.sign_in("admin@acme.test", PASSWORD).await;
    let owner = browser.sign_in("owner@acme.test", PASSWORD).await;
    let form = |csrf: &str, n: usize| {
        with_csrf(
            &[
                ("name", format!("token {n}")),
                ("scope", "apps:read".into()),
                ("expires_in_days", "30".into()),
            ],
            csrf,
        )
    };
    // Forms with a wrong CSRF token count too: the budget is taken before the form is read.
    let forged = browser
        .post(Some(&admin.cookie), "/dashboard/tokens", &form("forged", 0))
        .await;
    forged.assert_csrf_refused("a forged form");
    for n in 1..5 {
        let page = browser
            .post(
                Some(&admin.cookie),
                "/dashboard/tokens",
                &form(&admin.csrf, n),
            )
            .await;
        assert_eq!(page.status, 200, "form {n}: {}", page.body);
    }
    let refused = browser
        .post(
            Some(&admin.cookie),
            "/dashboard/tokens",
            &form(&admin.csrf, 5),
        )
        .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        refused.body.contains("Too many changes"),
        "{}",
        refused.body
    );
    let wait: u64 = refused.header("retry-after").parse().expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    let tokens = app.node.store.list_tokens(&acme.id).await.unwrap();
    assert_eq!(tokens.len(), 4, "the refused form made nothing");
    // Another member's budget is untouched; reading pages is not budgeted.
    let page = browser
        .post(
            Some(&owner.cookie),
            "/dashboard/tokens",
            &form(&owner.csrf, 6),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let page = browser.get(Some(&admin.cookie), "/dashboard/tokens").await;
    assert_eq!(page.status, 200);
    // Signing out is always possible.
    let out = browser
        .post(
            Some(&admin.cookie),
            "/dashboard/logout",
            &with_csrf(&[], &admin.csrf),
        )
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(out.location(), "/dashboard/login");
}

fn count(html: &str, marker: &str) -> usize {
    html.matches(marker).count()
}

/// The tokens page lists every live token, then the revoked and expired ones 50 a page, newest
/// first; following "Older tokens" shows each dead one once.
#[tokio::test]
async fn the_tokens_page_pages_the_dead_tokens() {
    let app = spawn_dashboard().await;
    let (acme, _, _) = acme_and_globex(&app, PASSWORD).await;
    let store = &app.node.store;
    let new = |n: usize| NewToken {
        tenant_id: acme.id.clone(),
        name: format!("dead {n}"),
        scopes: vec![Scope::AppsRead],
        expires_in_days: Some(30),
        created_by: "cli".into(),
        creator_role: UserRole::Operator,
    };
    for n in 0..65 {
        let (token, _) = store.create_token(new(n)).await.unwrap();
        store.revoke_token(Some(&acme.id), &token.id).await.unwrap();
    }
    for n in 0..3 {
        let mut live = new(n);
        live.name = format!("live {n}");
        store.create_token(live).await.unwrap();
    }
    let browser = Browser::new(&app);
    let admin = browser.sign_in("admin@acme.test", PASSWORD).await;
    let first = browser.get(Some(&admin.cookie), "/dashboard/tokens").await;
    assert_eq!(first.status, 200);
    assert_eq!(count(&first.body, "data-testid=\"token\""), 3, "live ones");
    assert_eq!(count(&first.body, "data-testid=\"dead-token\""), 50);
    let marker = "tokens?before=";
    let start = first.body.find(marker).expect("an older page") + marker.len();
    let end = start + first.body[start..].find('"').unwrap();
    let older = format!("/dashboard/tokens?before={}", &first.body[start..end]);
    let second = browser.get(Some(&admin.cookie), &older).await;
    assert_eq!(second.status, 200, "{older}");
    assert_eq!(count(&second.body, "data-testid=\"token\""), 3);
    assert_eq!(count(&second.body, "data-testid=\"dead-token\""), 15);
    assert!(!second.body.contains(marker), "the last page");
    let mut seen: Vec<String> = (0..65)
        .filter(|n| {
            first.body.contains(&format!(">dead {n}<"))
                || second.body.contains(&format!(">dead {n}<"))
        })
        .map(|n| n.to_string())
        .collect();
    seen.dedup();
    assert_eq!(seen.len(), 65, "every dead token on one of the pages");
}

/// Owners and admins (and the operator) see the client addresses in the audit log; developers
/// and viewers do not (members' sign-in addresses are personal data); the store and the CLI
/// export keep them.
#[tokio::test]
async fn client_addresses_in_the_audit_log_are_for_owners_and_admins() {
    let app = spawn_dashboard().await;
    let (acme, _, _) = acme_and_globex(&app, PASSWORD).await;
    let browser = Browser::new(&app);
    let mut sessions = Vec::new();
    for role in ["owner", "admin", "developer", "viewer"] {
        let session = browser
            .sign_in(&format!("{role}@acme.test"), PASSWORD)
            .await;
        sessions.push((role, session));
    }
    for (role, session) in &sessions {
        let page = browser.get(Some(&session.cookie), "/dashboard/audit").await;
        assert_eq!(page.status, 200, "{role}");
        assert!(
            page.body.contains("sign_in.succeeded"),
            "{role}: {}",
            page.body
        );
        let shown = page.body.contains("127.0.0.1");
        let expected = matches!(*role, "owner" | "admin");
        assert_eq!(shown, expected, "{role} sees addresses: {}", page.body);
    }
    let entries = app
        .node
        .store
        .audit_entries(&AuditFilter {
            tenant_id: Some(acme.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        entries.iter().any(|e| e.address == "127.0.0.1"),
        "{entries:?}"
    );
}

/// A thief holding a stolen session who spends the member's budget cannot keep the member from
/// changing their password (which signs the thief out): a password change takes from its own
/// session's budget, not the member's; other forms of the member's stay refused.
#[tokio::test]
async fn a_stolen_session_cannot_block_the_password_change() {
    let app = spawn_app_with(|s| {
        s.dashboard_rate = 3;
        s.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
    })
    .await;
    acme_and_globex(&app, PASSWORD).await;
    let browser = Browser::new(&app);
    let member = browser.sign_in("admin@acme.test", PASSWORD).await;
    let thief = browser.sign_in("admin@acme.test", PASSWORD).await;
    let token_form = |csrf: &str| {
        with_csrf(
            &[
                ("name", "noise".into()),
                ("scope", "apps:read".into()),
                ("expires_in_days", "30".into()),
            ],
            csrf,
        )
    };
    let mut refused = 0;
    for _ in 0..6 {
        let page = browser
            .post(
                Some(&thief.cookie),
                "/dashboard/tokens",
                &token_form("forged"),
            )
            .await;
        if page.status == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 3, "the thief spent the member's budget");
    let page = browser
        .post(
            Some(&member.cookie),
            "/dashboard/tokens",
            &token_form(&member.csrf),
        )
        .await;
    assert_eq!(
        page.status, 429,
        "the member's other forms share the budget"
    );
    let new_password = "a brand new password";
    let change: Form = vec![
        ("current", PASSWORD.to_owned()),
        ("new", new_password.to_owned()),
        ("confirm", new_password.to_owned()),
    ];
    browser
        .post(
            Some(&member.cookie),
            "/dashboard/account/password",
            &with_csrf(&change, &member.csrf),
        )
        .await
        .assert_done("the member's password change");
    browser
        .get(Some(&thief.cookie), "/dashboard/account")
        .await
        .assert_sign_in_redirect("/dashboard/account", "the thief is signed out");
}
