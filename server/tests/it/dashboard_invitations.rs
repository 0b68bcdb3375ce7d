//! Invitations: owners and admins invite by email with a role (only an owner invites an owner;
//! developers and viewers get 403), resend (the old link stops working) and revoke; the link's
//! page accepts a password with the sign-up rules and signs the member in with the invited role;
//! a link works once and not after expiry; each step is audited; the bounds hold.

use herald::tenants::{AuditFilter, UserRole, MAX_PENDING_INVITATIONS};

use crate::dashboard_helpers::*;

const PASSWORD: &str = "member password 1";

#[tokio::test]
async fn an_invited_member_joins_once_with_the_invited_role() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let t = acme.id.clone();
    for role in UserRole::TENANT_ROLES {
        store
            .create_user(&format!("{role}@acme.test"), PASSWORD, role, Some(&t))
            .await
            .unwrap();
    }
    let admin = browser.sign_in("admin@acme.test", PASSWORD).await;
    let post = |s: &Session, path: &str, form: Form| {
        let form = with_csrf(&form, &s.csrf);
        let (cookie, path, browser) = (s.cookie.clone(), path.to_owned(), &browser);
        async move { browser.post(Some(&cookie), &path, &form).await }
    };
    let invite =
        |email: &str, role: &str| vec![("email", email.to_owned()), ("role", role.to_owned())];

    // Developers and viewers may not invite; an admin may not invite an owner.
    for role in [UserRole::Developer, UserRole::Viewer] {
        let s = browser
            .sign_in(&format!("{role}@acme.test"), PASSWORD)
            .await;
        let page = post(
            &s,
            "/dashboard/invitations",
            invite("x@acme.test", "viewer"),
        )
        .await;
        assert_eq!(page.status, 403, "{role}: {}", page.body);
    }
    let page = post(
        &admin,
        "/dashboard/invitations",
        invite("x@acme.test", "owner"),
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    // An existing user's email: an error on the form.
    let page = post(
        &admin,
        "/dashboard/invitations",
        invite("viewer@acme.test", "viewer"),
    )
    .await;
    assert!(page.location().contains("?error="), "{}", page.location());
    assert!(store.list_invitations(&t).await.unwrap().is_empty());

    post(
        &admin,
        "/dashboard/invitations",
        invite("New@Acme.test", "developer"),
    )
    .await
    .assert_done("invite");
    let pending = store.list_invitations(&t).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].email, "new@acme.test");
    assert_eq!(pending[0].role, UserRole::Developer);
    let members = browser.get(Some(&admin.cookie), "/dashboard/members").await;
    assert!(members.body.contains("new@acme.test"), "{}", members.body);

    // Resend replaces it (the dashboard's link is logged; take a fresh token from the store to
    // follow one here), revoke removes it.
    let id = pending[0].id.clone();
    post(
        &admin,
        &format!("/dashboard/invitations/{id}/resend"),
        vec![],
    )
    .await
    .assert_done("resend");
    let pending = store.list_invitations(&t).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_ne!(pending[0].id, id);
    post(
        &admin,
        &format!("/dashboard/invitations/{}/revoke", pending[0].id),
        vec![],
    )
    .await
    .assert_done("revoke");
    assert!(store.list_invitations(&t).await.unwrap().is_empty());

    let (_, old_token) = store
        .create_invitation(&t, "new@acme.test", UserRole::Developer, "admin@acme.test")
        .await
        .unwrap();
    let (_, token) = store
        .create_invitation(&t, "new@acme.test", UserRole::Developer, "admin@acme.test")
        .await
        .unwrap();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    // The replaced link is gone; an unknown one too.
    for bad in [old_token.as_str(), &"ab".repeat(32), "short"] {
        let page = browser
            .get(None, &format!("/dashboard/join?token={bad}"))
            .await;
        assert_eq!(page.status, 404, "{}", page.body);
    }
    let page = browser
        .get(None, &format!("/dashboard/join?token={token}"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("new@acme.test") && page.body.contains("developer"));
    // The form carries the login CSRF double submit, like the sign-in's.
    let csrf = page
        .cookie("herald_login_csrf")
        .expect("a login CSRF cookie");
    let csrf_cookie = format!("herald_login_csrf={csrf}");
    let csrf_cookie = Some(csrf_cookie.as_str());
    // The password rules of sign-up: too short, or differing confirmation, is refused.
    let join = |password: &str, confirm: &str| {
        vec![
            ("token", token.clone()),
            ("csrf", csrf.clone()),
            ("password", password.to_owned()),
            ("confirm", confirm.to_owned()),
        ]
    };
    let page = browser
        .post(csrf_cookie, "/dashboard/join", &join("short", "short"))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    let page = browser
        .post(
            csrf_cookie,
            "/dashboard/join",
            &join("long enough 1", "long enough 2"),
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(store
        .user_by_email("new@acme.test")
        .await
        .unwrap()
        .is_none());
    // Accepted: signed in, with the invited role, on the apps page.
    let page = browser
        .post(
            csrf_cookie,
            "/dashboard/join",
            &join("long enough 1", "long enough 1"),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), "/dashboard/apps");
    let cookie = format!("herald_session={}", page.cookie("herald_session").unwrap());
    let account = browser.get(Some(&cookie), "/dashboard/account").await;
    assert!(
        account.body.contains("developer of tenant"),
        "{}",
        account.body
    );
    let user = store.user_by_email("new@acme.test").await.unwrap().unwrap();
    assert_eq!(
        (user.role, user.tenant_id.as_deref()),
        (UserRole::Developer, Some(t.as_str()))
    );
    assert!(password_works(&app, "new@acme.test", "long enough 1").await);
    // Single use.
    let again = browser
        .post(
            csrf_cookie,
            "/dashboard/join",
            &join("another one 1", "another one 1"),
        )
        .await;
    assert_eq!(again.status, 404);
    assert!(password_works(&app, "new@acme.test", "long enough 1").await);

    // Audited: invited (by the dashboard, three times), revoked, joined; no token anywhere.
    let entries = store
        .audit_entries(&AuditFilter {
            tenant_id: Some(t.clone()),
            action: Some("member.".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["member.joined", "member.invited", "member.invited"]
    );
    assert_eq!(entries[0].actor, "new@acme.test");
    let all = serde_json::to_string(
        &store
            .audit_entries(&AuditFilter {
                tenant_id: Some(t.clone()),
                ..AuditFilter::default()
            })
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(all.contains("invitation.revoked"));
    assert!(!all.contains(&token) && !all.contains(&old_token));
}

#[tokio::test]
async fn invitations_are_bounded_per_tenant() {
    let app = spawn_dashboard().await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let mut refused = None;
    for n in 0..=MAX_PENDING_INVITATIONS {
        match store
            .create_invitation(&acme.id, &format!("u{n}@acme.test"), UserRole::Viewer, "a")
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some((n, e.to_string()));
                break;
            }
        }
    }
    // The hourly limit (30) comes first.
    let (n, message) = refused.expect("a limit");
    assert_eq!(n, 30, "{message}");
    assert!(message.contains("an hour"), "{message}");
    assert_eq!(store.list_invitations(&acme.id).await.unwrap().len(), 30);
}

/// An invitation is mail to a stranger: only one bare, deliverable ASCII address, as for a
/// sign-up (no address list, quoted local part, local or IP-literal host, Unicode twin), so an
/// inviter cannot make the server mail several or internal recipients, or create a second
/// account for one mailbox.
#[tokio::test]
async fn an_invitation_goes_to_one_deliverable_address() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let t = store.create_tenant("Acme").await.unwrap().id;
    store
        .create_user("owner@acme.test", PASSWORD, UserRole::Owner, Some(&t))
        .await
        .unwrap();
    let s = browser.sign_in("owner@acme.test", PASSWORD).await;
    for bad in [
        "x@corp.test,y@corp.test",
        "\"x\"@corp.test",
        "a@b@corp.test",
        "a@localhost",
        "a@10.0.0.1",
        "a@[10.0.0.1]",
        "ä@corp.test",
    ] {
        let form = with_csrf(
            &[("email", bad.to_owned()), ("role", "viewer".into())],
            &s.csrf,
        );
        let page = browser
            .post(Some(&s.cookie), "/dashboard/invitations", &form)
            .await;
        assert!(
            page.location().contains("?error="),
            "{bad}: {}",
            page.location()
        );
        let refused = store
            .create_invitation(&t, bad, UserRole::Viewer, "owner@acme.test")
            .await;
        assert!(refused.is_err(), "{bad}");
    }
    assert!(store.list_invitations(&t).await.unwrap().is_empty());
    let form = with_csrf(
        &[("email", "new@corp.test".into()), ("role", "viewer".into())],
        &s.csrf,
    );
    browser
        .post(Some(&s.cookie), "/dashboard/invitations", &form)
        .await
        .assert_done("a good address");
    assert_eq!(store.list_invitations(&t).await.unwrap().len(), 1);
}

/// The invite form does not tell whether an address has an account elsewhere (the sign-up
/// does not either): another tenant's member's email and a free one are both "sent"; only this tenant's own members are refused. The invitation to a taken address
/// creates nothing when followed.
#[tokio::test]
async fn the_invite_form_does_not_tell_which_addresses_have_accounts() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap().id;
    let globex = store.create_tenant("Globex").await.unwrap().id;
    store
        .create_user("owner@acme.test", PASSWORD, UserRole::Owner, Some(&acme))
        .await
        .unwrap();
    store
        .create_user("dev@acme.test", PASSWORD, UserRole::Developer, Some(&acme))
        .await
        .unwrap();
    store
        .create_user("boss@globex.test", PASSWORD, UserRole::Owner, Some(&globex))
        .await
        .unwrap();
    let s = browser.sign_in("owner@acme.test", PASSWORD).await;
    let invite = |email: &str| {
        let form = with_csrf(
            &[("email", email.to_owned()), ("role", "viewer".into())],
            &s.csrf,
        );
        let (cookie, browser) = (s.cookie.clone(), &browser);
        async move {
            browser
                .post(Some(&cookie), "/dashboard/invitations", &form)
                .await
        }
    };
    let taken = invite("boss@globex.test").await;
    let free = invite("nobody@globex.test").await;
    taken.assert_done("taken");
    free.assert_done("free");
    assert_eq!(
        taken.location().replace("boss", "X"),
        free.location().replace("nobody", "X"),
        "the same answer"
    );
    // This tenant's own member: an error on the form, as before.
    let own = invite("dev@acme.test").await;
    assert!(own.location().contains("?error="), "{}", own.location());
    assert_eq!(store.list_invitations(&acme).await.unwrap().len(), 2);
    // The taken address's invitation creates nothing (its token goes on first use).
    let (_, token) = store
        .create_invitation(
            &acme,
            "boss@globex.test",
            UserRole::Viewer,
            "owner@acme.test",
        )
        .await
        .unwrap();
    assert!(store.accept_invitation(&token, PASSWORD).await.is_err());
    let boss = store
        .user_by_email("boss@globex.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(boss.tenant_id.as_deref(), Some(globex.as_str()));
    assert!(store.invitation(&token).await.unwrap().is_none());
}

/// The join page's CSRF cookie and a form for `token` with `password`.
async fn join_form(browser: &Browser<'_>, token: &str, password: &str) -> (String, Form) {
    let page = browser
        .get(None, &format!("/dashboard/join?token={token}"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page
        .cookie("herald_login_csrf")
        .expect("a login CSRF cookie");
    let form = vec![
        ("token", token.to_owned()),
        ("csrf", csrf.clone()),
        ("password", password.to_owned()),
        ("confirm", password.to_owned()),
    ];
    (format!("herald_login_csrf={csrf}"), form)
}

#[tokio::test]
async fn the_join_form_is_guarded_like_the_sign_in() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let t = acme.id.clone();
    let (_, token) = store
        .create_invitation(&t, "csrf@acme.test", UserRole::Admin, "o@acme.test")
        .await
        .unwrap();
    let (cookie, form) = join_form(&browser, &token, PASSWORD).await;
    // Login CSRF: no cookie, or a cookie that differs from the form's token, is refused and
    // creates nothing (an attacker's page cannot sign a visitor into the attacker's account).
    for bad in [None, Some("herald_login_csrf=0123456789abcdef")] {
        let page = browser.post(bad, "/dashboard/join", &form).await;
        page.assert_csrf_refused("join without the double submit");
    }
    assert!(store
        .user_by_email("csrf@acme.test")
        .await
        .unwrap()
        .is_none());
    assert!(store.invitation(&token).await.unwrap().is_some());

    // An invitation whose email became an account meanwhile is deleted on its first use, before
    // any hash, and refused as used (not replayable: the next try is a lookup that finds nothing).
    store
        .create_user("csrf@acme.test", PASSWORD, UserRole::Viewer, Some(&t))
        .await
        .unwrap();
    let page = browser.post(Some(&cookie), "/dashboard/join", &form).await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(store.invitation(&token).await.unwrap().is_none());
    assert!(store.list_invitations(&t).await.unwrap().is_empty());
    let user = store
        .user_by_email("csrf@acme.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.role, UserRole::Viewer, "the account is untouched");

    // The (invited email, address) budget bounds the tries of one live token from one address.
    let (_, token) = store
        .create_invitation(&t, "budget@acme.test", UserRole::Viewer, "o@acme.test")
        .await
        .unwrap();
    let (cookie, mut form) = join_form(&browser, &token, PASSWORD).await;
    form[3].1 = "does not match".into();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            browser
                .post(Some(&cookie), "/dashboard/join", &form)
                .await
                .status,
        );
    }
    assert!(statuses[..5].iter().all(|s| *s == 400), "{statuses:?}");
    assert_eq!(statuses[7], 429, "{statuses:?}");
}

#[tokio::test]
async fn resends_and_revoked_invitations_count_toward_the_hourly_cap() {
    let app = spawn_dashboard().await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let t = acme.id.clone();
    // Resending one invitation again and again: each is an email, each counts.
    let mut sent = 0;
    let refused = loop {
        match store
            .create_invitation(&t, "victim@else.test", UserRole::Viewer, "a")
            .await
        {
            Ok(_) => sent += 1,
            Err(e) => break e.to_string(),
        }
        assert!(sent <= 30, "resends are not capped");
    };
    assert_eq!(sent, 30, "{refused}");
    assert!(refused.contains("an hour"), "{refused}");
    assert_eq!(store.list_invitations(&t).await.unwrap().len(), 1);

    // Invite then revoke, on another tenant: revoked invitations still count.
    let other = store.create_tenant("Other").await.unwrap();
    let mut sent = 0;
    let refused = loop {
        match store
            .create_invitation(
                &other.id,
                &format!("v{sent}@else.test"),
                UserRole::Viewer,
                "a",
            )
            .await
        {
            Ok((invitation, _)) => {
                sent += 1;
                store
                    .revoke_invitation(&other.id, &invitation.id)
                    .await
                    .unwrap();
            }
            Err(e) => break e.to_string(),
        }
        assert!(sent <= 30, "invite + revoke is not capped");
    };
    assert_eq!(sent, 30, "{refused}");
    assert!(store.list_invitations(&other.id).await.unwrap().is_empty());
}
