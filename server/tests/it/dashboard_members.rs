//! The members page: owners and admins list members, change roles and remove members; the
//! others get 403 (a forged form changes nothing), another tenant's member is "not found", only
//! an owner touches owners, a tenant keeps one owner or admin, and lowering a role or removing a
//! member ends their sessions at once.

use herald::tenants::{StoreError, UserRole};

use crate::dashboard_helpers::*;

const PASSWORD: &str = "member password 1";

#[tokio::test]
async fn owners_and_admins_manage_members_and_lowered_or_removed_members_are_signed_out() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let (_, _, ids) = acme_and_globex(&app, PASSWORD).await;
    let mut sessions = std::collections::HashMap::new();
    for role in UserRole::TENANT_ROLES {
        sessions.insert(
            role,
            browser
                .sign_in(&format!("{role}@acme.test"), PASSWORD)
                .await,
        );
    }
    let globex_admin = browser.sign_in("admin@globex.test", PASSWORD).await;
    let operator = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let get = |s: &Session| {
        let cookie = s.cookie.clone();
        let browser = &browser;
        async move { browser.get(Some(&cookie), "/dashboard/members").await }
    };

    // Who sees the page.
    for role in [UserRole::Owner, UserRole::Admin] {
        let page = get(&sessions[&role]).await;
        assert_eq!(page.status, 200, "{role}: {}", page.body);
        for other in UserRole::TENANT_ROLES {
            assert!(page.body.contains(&format!("{other}@acme.test")), "{role}");
        }
        assert!(!page.body.contains("globex"), "{role}");
        // Only an owner is offered "owner".
        assert_eq!(
            page.body.contains(r#"<option value="owner">"#),
            role == UserRole::Owner,
            "{role}: {}",
            page.body
        );
    }
    for role in [UserRole::Developer, UserRole::Viewer] {
        let page = get(&sessions[&role]).await;
        assert_eq!(page.status, 403, "{role}: {}", page.body);
        assert!(!page.body.contains("owner@acme.test"));
    }
    get(&operator)
        .await
        .assert_not_found("the operator has the users page");
    let home = browser
        .get(Some(&sessions[&UserRole::Admin].cookie), "/dashboard/apps")
        .await;
    assert!(home.body.contains("/dashboard/members"));
    let home = browser
        .get(
            Some(&sessions[&UserRole::Developer].cookie),
            "/dashboard/apps",
        )
        .await;
    assert!(!home.body.contains("/dashboard/members"));

    let before = snapshot(&app).await;
    let post = |s: &Session, path: String, form: Form| {
        let form = with_csrf(&form, &s.csrf);
        let cookie = s.cookie.clone();
        let browser = &browser;
        async move { browser.post(Some(&cookie), &path, &form).await }
    };
    let role_form = |role: &str| vec![("role", role.to_owned())];
    let dev = ids[&UserRole::Developer].clone();
    let owner = ids[&UserRole::Owner].clone();
    // Developers and viewers: 403 for every members form, even with a valid session and token.
    for role in [UserRole::Developer, UserRole::Viewer] {
        let s = &sessions[&role];
        for (path, form) in [
            (format!("/dashboard/members/{dev}/role"), role_form("admin")),
            (format!("/dashboard/members/{owner}/remove"), vec![]),
        ] {
            let page = post(s, path.clone(), form).await;
            assert_eq!(page.status, 403, "{role}: POST {path}: {}", page.body);
        }
    }
    // An admin may not touch an owner, nor make one.
    let admin = &sessions[&UserRole::Admin];
    for (path, form) in [
        (format!("/dashboard/members/{dev}/role"), role_form("owner")),
        (
            format!("/dashboard/members/{owner}/role"),
            role_form("viewer"),
        ),
        (format!("/dashboard/members/{owner}/remove"), vec![]),
    ] {
        let page = post(admin, path.clone(), form).await;
        assert_eq!(page.status, 403, "admin: POST {path}: {}", page.body);
        assert!(page.body.contains("owner"), "{}", page.body);
    }
    // Another tenant's admin: not found. An unknown role: an error on the form.
    for (path, form) in [
        (
            format!("/dashboard/members/{dev}/role"),
            role_form("viewer"),
        ),
        (format!("/dashboard/members/{dev}/remove"), vec![]),
    ] {
        post(&globex_admin, path.clone(), form)
            .await
            .assert_not_found(&format!("globex: POST {path}"));
    }
    let page = post(
        admin,
        format!("/dashboard/members/{dev}/role"),
        role_form("operator"),
    )
    .await;
    assert!(page.location().contains("?error="), "{}", page.location());
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    for s in sessions.values() {
        assert_eq!(
            browser.get(Some(&s.cookie), "/dashboard/apps").await.status,
            200
        );
    }

    // The admin lowers the developer to viewer: the developer is signed out at once.
    let page = post(
        admin,
        format!("/dashboard/members/{dev}/role"),
        role_form("viewer"),
    )
    .await;
    page.assert_done("lower the developer");
    let user = store.get_user(&dev).await.unwrap().unwrap();
    assert_eq!(user.role, UserRole::Viewer);
    assert_eq!(store.session_count(&dev).await.unwrap(), 0);
    browser
        .get(
            Some(&sessions[&UserRole::Developer].cookie),
            "/dashboard/apps",
        )
        .await
        .assert_sign_in_redirect("/dashboard/apps", "a lowered member's cookie");
    // Raising a role keeps the member signed in.
    let again = browser.sign_in("developer@acme.test", PASSWORD).await;
    post(
        admin,
        format!("/dashboard/members/{dev}/role"),
        role_form("developer"),
    )
    .await
    .assert_done("raise back");
    assert_eq!(
        browser
            .get(Some(&again.cookie), "/dashboard/apps")
            .await
            .status,
        200
    );

    // The admin removes the viewer: gone, and their cookie is refused at once.
    let viewer = ids[&UserRole::Viewer].clone();
    post(admin, format!("/dashboard/members/{viewer}/remove"), vec![])
        .await
        .assert_done("remove the viewer");
    assert!(store.get_user(&viewer).await.unwrap().is_none());
    assert_eq!(store.session_count(&viewer).await.unwrap(), 0);
    browser
        .get(Some(&sessions[&UserRole::Viewer].cookie), "/dashboard/apps")
        .await
        .assert_sign_in_redirect("/dashboard/apps", "a removed member's cookie");

    // The owner removes the admin, then cannot step down: the tenant keeps a manager.
    let owner_s = &sessions[&UserRole::Owner];
    let admin_id = ids[&UserRole::Admin].clone();
    post(
        owner_s,
        format!("/dashboard/members/{admin_id}/remove"),
        vec![],
    )
    .await
    .assert_done("the owner removes the admin");
    for (path, form) in [
        (
            format!("/dashboard/members/{owner}/role"),
            role_form("developer"),
        ),
        (format!("/dashboard/members/{owner}/remove"), vec![]),
    ] {
        let page = post(owner_s, path.clone(), form).await;
        assert_eq!(page.status, 303, "{path}");
        assert!(
            page.location().contains("?error="),
            "{path}: {}",
            page.location()
        );
    }
    let user = store.get_user(&owner).await.unwrap().unwrap();
    assert_eq!(user.role, UserRole::Owner);
    // The owner may make another owner, who may then let the first step down.
    post(
        owner_s,
        format!("/dashboard/members/{dev}/role"),
        role_form("owner"),
    )
    .await
    .assert_done("a second owner");
    post(
        owner_s,
        format!("/dashboard/members/{owner}/role"),
        role_form("viewer"),
    )
    .await
    .assert_done("the first owner steps down");
    assert_eq!(
        store.get_user(&owner).await.unwrap().unwrap().role,
        UserRole::Viewer
    );
}

#[tokio::test]
async fn removing_or_demoting_a_member_revokes_the_invitations_they_could_no_longer_send() {
    let app = spawn_dashboard().await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let t = acme.id.clone();
    let mut ids = std::collections::HashMap::new();
    for name in ["boss", "owner2", "admin1", "admin2"] {
        let role = if name.starts_with("admin") {
            UserRole::Admin
        } else {
            UserRole::Owner
        };
        let user = store
            .create_user(&format!("{name}@acme.test"), PASSWORD, role, Some(&t))
            .await
            .unwrap();
        ids.insert(name, user.id);
    }
    let invite = |by: &'static str, email: &'static str, role: UserRole| {
        let t = t.clone();
        async move {
            store
                .create_invitation(&t, email, role, &format!("{by}@acme.test"))
                .await
                .unwrap()
                .1
        }
    };
    let boss_admin = invite("boss", "x1@else.test", UserRole::Admin).await;
    let o2_owner = invite("owner2", "x2@else.test", UserRole::Owner).await;
    let o2_admin = invite("owner2", "x3@else.test", UserRole::Admin).await;
    let a1_admin = invite("admin1", "x4@else.test", UserRole::Admin).await;
    let a1_viewer = invite("admin1", "x5@else.test", UserRole::Viewer).await;
    let a2_viewer = invite("admin2", "x6@else.test", UserRole::Viewer).await;
    let live = |token: String| async move { store.invitation(&token).await.unwrap().is_some() };

    // An owner demoted to admin: their owner invitation goes, their admin one stays.
    store
        .change_member(&t, &ids["owner2"], Some(UserRole::Admin))
        .await
        .unwrap();
    assert!(!live(o2_owner).await);
    assert!(live(o2_admin.clone()).await);
    // An admin demoted to developer may invite no one: all of theirs go.
    store
        .change_member(&t, &ids["admin1"], Some(UserRole::Developer))
        .await
        .unwrap();
    assert!(!live(a1_admin).await && !live(a1_viewer).await);
    // A removed member's invitations all go, even a viewer's.
    store.change_member(&t, &ids["admin2"], None).await.unwrap();
    assert!(!live(a2_viewer).await);
    // Others' invitations, and a raise, leave invitations alone.
    store
        .change_member(&t, &ids["owner2"], Some(UserRole::Owner))
        .await
        .unwrap();
    assert!(live(boss_admin).await && live(o2_admin).await);
    assert_eq!(store.list_invitations(&t).await.unwrap().len(), 2);
}

/// Reads `stream` until it ends (true) or `wait` passes (false).
async fn ends_within(stream: &mut reqwest::Response, wait: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_removed_or_demoted_members_live_console_stream_ends() {
    use std::time::Duration;
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let ours = store
        .create_app(herald::tenants::NewApp {
            name: "Acme chat".into(),
            tenant_id: Some(acme.id.clone()),
            plan: Some("sandbox".into()),
            ..herald::tenants::NewApp::default()
        })
        .await
        .unwrap();
    herald::startup::refresh_apps(&app.node).await.unwrap();
    store
        .create_user("owner@acme.test", PASSWORD, UserRole::Owner, Some(&acme.id))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["gone", "lowered"] {
        let user = store
            .create_user(
                &format!("{name}@acme.test"),
                PASSWORD,
                UserRole::Admin,
                Some(&acme.id),
            )
            .await
            .unwrap();
        ids.push(user.id);
    }
    let open = |email: &'static str| {
        let (browser, app, id) = (&browser, &app, ours.id.clone());
        async move {
            let session = browser.sign_in(email, PASSWORD).await;
            let stream = browser
                .http
                .get(app.url(&format!("/dashboard/apps/{id}/live/events")))
                .header(reqwest::header::COOKIE, session.cookie.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(stream.status(), 200);
            stream
        }
    };
    let mut gone = open("gone@acme.test").await;
    let mut lowered = open("lowered@acme.test").await;
    // Open streams stay open while their sessions stand (longer than a re-check).
    assert!(!ends_within(&mut gone, Duration::from_secs(4)).await);
    store.change_member(&acme.id, &ids[0], None).await.unwrap();
    store
        .change_member(&acme.id, &ids[1], Some(UserRole::Viewer))
        .await
        .unwrap();
    assert!(
        ends_within(&mut gone, Duration::from_secs(10)).await,
        "a removed member's stream ends"
    );
    assert!(
        ends_within(&mut lowered, Duration::from_secs(10)).await,
        "a demoted member's stream ends (their session is over)"
    );
}

/// The owner-only rule is judged on the member's role inside the change's transaction: an
/// admin's removal or demotion that read "developer" before an owner made that member an owner
/// (the race `Scoped::change_member`'s early check cannot see) is refused, and changes nothing.
#[tokio::test]
async fn an_admins_change_is_judged_on_the_members_role_at_the_change() {
    let app = spawn_dashboard().await;
    let store = &app.node.store;
    let t = store.create_tenant("Acme").await.unwrap().id;
    for (email, role) in [
        ("owner@acme.test", UserRole::Owner),
        ("admin@acme.test", UserRole::Admin),
    ] {
        store
            .create_user(email, "member password 1", role, Some(&t))
            .await
            .unwrap();
    }
    let dev = store
        .create_user(
            "dev@acme.test",
            "member password 1",
            UserRole::Developer,
            Some(&t),
        )
        .await
        .unwrap();
    // The owner promotes the developer after the admin's page (and check) read "developer".
    store
        .change_member(&t, &dev.id, Some(UserRole::Owner))
        .await
        .unwrap();
    for change in [None, Some(UserRole::Viewer)] {
        let refused = store
            .change_member_as(UserRole::Admin, &t, &dev.id, change)
            .await
            .expect_err("an admin may not remove or demote an owner");
        assert!(
            matches!(refused, StoreError::RoleDenied(_)),
            "{change:?}: {refused}"
        );
    }
    let now = store.list_members(&t).await.unwrap();
    let member = now.iter().find(|m| m.id == dev.id).expect("still a member");
    assert_eq!(member.role, UserRole::Owner);
    // An owner's authority does it; and an admin's still does for a developer.
    let viewer = store
        .create_user(
            "viewer@acme.test",
            "member password 1",
            UserRole::Viewer,
            Some(&t),
        )
        .await
        .unwrap();
    store
        .change_member_as(UserRole::Admin, &t, &viewer.id, Some(UserRole::Developer))
        .await
        .unwrap();
    store
        .change_member_as(UserRole::Owner, &t, &dev.id, Some(UserRole::Admin))
        .await
        .unwrap();
}
