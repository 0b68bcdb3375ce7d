//! Tenant roles on every dashboard route: for each of owner, admin, developer and viewer, every
//! page and every form of the tenant's app is allowed or refused exactly as README's roles table
//! says, a refused form (sent with a valid session and CSRF token, as a forged POST would be)
//! answers 403 and changes nothing in the store, and a viewer never sees a secret.

use herald::tenants::{NewApp, NewWebhook, Permission, UserRole};
use herald_dashboard::Role;

use crate::cli::{herald_json, stderr};
use crate::dashboard_helpers::*;

const MEMBER_PASSWORD: &str = "member password 1";
const HOOK_HEADER_SECRET: &str = "hook-bearer-credential";

/// What `role` may do with one form of [`app_forms`] (by its path), per the roles table.
fn allowed(role: UserRole, path: &str) -> bool {
    let permission = if path.ends_with("/keys/reveal") {
        Permission::RevealSecrets
    } else if path.ends_with("/keys/rotate") {
        Permission::RotateKeys
    } else if path.ends_with("/keys/revoke") {
        Permission::RevokeKeys
    } else if path.ends_with("/delete") {
        Permission::DeleteApps
    } else if path.contains("/webhooks") {
        Permission::WriteWebhooks
    } else {
        Permission::WriteApps
    };
    role.allows(permission)
}

/// The table as written in README, spelled out (so a change to `allows` must change this too).
#[test]
fn the_roles_table() {
    use Permission::*;
    let table: [(UserRole, &[Permission]); 4] = [
        (UserRole::Owner, &Permission::ALL),
        (UserRole::Admin, &Permission::ALL),
        (
            UserRole::Developer,
            &[ReadApps, WriteApps, RevealSecrets, WriteWebhooks, ReadAudit],
        ),
        (UserRole::Viewer, &[ReadApps, ReadAudit]),
    ];
    for (role, granted) in table {
        for p in Permission::ALL {
            assert_eq!(role.allows(p), granted.contains(&p), "{role} {p:?}");
        }
        // The dashboard's button hiding agrees with the server's table.
        let shown = Role::parse(role.as_str()).expect("a dashboard role");
        assert_eq!(shown.writes_apps(), role.allows(WriteApps), "{role}");
        assert_eq!(shown.deletes_apps(), role.allows(DeleteApps), "{role}");
        assert_eq!(
            shown.reveals_secrets(),
            role.allows(RevealSecrets),
            "{role}"
        );
        assert_eq!(shown.manages_keys(), role.allows(RotateKeys), "{role}");
        assert_eq!(shown.manages_keys(), role.allows(RevokeKeys), "{role}");
        assert_eq!(
            shown.writes_webhooks(),
            role.allows(WriteWebhooks),
            "{role}"
        );
        assert_eq!(
            shown.manages_members(),
            role.allows(ManageMembers),
            "{role}"
        );
    }
}

async fn check_role(role: UserRole) {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let ours = store
        .create_app(NewApp {
            name: "Acme chat".into(),
            tenant_id: Some(acme.id.clone()),
            plan: Some("sandbox".into()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    let hook = store
        .create_webhook(NewWebhook {
            app_id: ours.id.clone(),
            url: "http://127.0.0.1:9/hook".into(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: vec![format!("X-Webhook-Token: {HOOK_HEADER_SECRET}")],
        })
        .await
        .unwrap()
        .id;
    herald::startup::refresh_apps(&app.node).await.unwrap();
    failed_delivery(&app, &ours.id, &hook).await;
    let email = format!("{role}@acme.test");
    store
        .create_user(&email, MEMBER_PASSWORD, role, Some(&acme.id))
        .await
        .unwrap();
    let s = browser.sign_in(&email, MEMBER_PASSWORD).await;
    let cookie = Some(s.cookie.as_str());
    let secret = ours.secret.expose().to_owned();

    // Pages: every one but the delete confirmation for everyone; never a secret on a GET.
    for path in app_pages(&ours.id) {
        let page = browser.get(cookie, &path).await;
        let expected = if path.ends_with("/delete") && !role.allows(Permission::DeleteApps) {
            403
        } else {
            200
        };
        assert_eq!(page.status, expected, "{role}: GET {path}: {}", page.body);
        assert!(
            !page.body.contains(&secret),
            "{role}: GET {path} shows the secret"
        );
        if expected == 403 {
            assert!(page.body.contains("Forbidden"), "{role}: GET {path}");
        }
    }
    for path in ["/dashboard/apps", "/dashboard/account"] {
        assert_eq!(
            browser.get(cookie, path).await.status,
            200,
            "{role}: {path}"
        );
    }
    for path in ["/dashboard/tenants", "/dashboard/users"] {
        browser
            .get(cookie, path)
            .await
            .assert_not_found(&format!("{role}: GET {path}"));
    }
    // The buttons a role cannot use are not shown.
    let keys = browser
        .get(cookie, &format!("/dashboard/apps/{}/keys", ours.id))
        .await;
    assert_eq!(
        keys.body.contains("Reveal secrets"),
        role.allows(Permission::RevealSecrets),
        "{role}"
    );
    assert_eq!(
        keys.body.contains("Add a new key pair"),
        role.allows(Permission::RotateKeys),
        "{role}"
    );
    let settings = browser
        .get(cookie, &format!("/dashboard/apps/{}", ours.id))
        .await;
    assert_eq!(
        settings.body.contains("Delete this app"),
        role.allows(Permission::DeleteApps),
        "{role}"
    );
    let hooks = browser
        .get(cookie, &format!("/dashboard/apps/{}/webhooks", ours.id))
        .await;
    assert_eq!(
        hooks.body.contains("Add endpoint"),
        role.allows(Permission::WriteWebhooks),
        "{role}"
    );
    // A webhook's header values may be the receiver's credentials: hidden from a viewer.
    assert_eq!(
        hooks.body.contains(HOOK_HEADER_SECRET),
        role.allows(Permission::RevealSecrets),
        "{role}: {}",
        hooks.body
    );

    // Refused forms first: each 403, and nothing changes.
    // Filled in to succeed: the deletion confirms the original name while refused, the renamed
    // one once the rename went through.
    let forms = |name: &str| {
        let mut forms = vec![(
            "/dashboard/apps".to_owned(),
            vec![
                ("name", "Another app".to_owned()),
                ("plan", "sandbox".to_owned()),
            ],
        )];
        forms.extend(app_forms(&ours.id, &hook, &ours.key, name));
        forms
    };
    let before = snapshot(&app).await;
    for (path, form) in forms(&ours.name).iter().filter(|(p, _)| !allowed(role, p)) {
        let page = browser.post(cookie, path, &with_csrf(form, &s.csrf)).await;
        assert_eq!(page.status, 403, "{role}: POST {path}: {}", page.body);
        assert!(page.body.contains("Forbidden"), "{role}: POST {path}");
        assert!(
            page.body.contains(&format!("Your role ({role})")),
            "{role}: POST {path}: {}",
            page.body
        );
        assert!(!page.body.contains(&secret), "{role}: POST {path}");
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "{role}: refused forms changed nothing"
    );
    let unchanged = store.get_app(&ours.id).await.unwrap();
    assert_eq!(unchanged, ours, "{role}");

    // The allowed ones go through, in the order of `app_forms`.
    for (path, form) in forms(RENAMED).iter().filter(|(p, _)| allowed(role, p)) {
        let page = browser.post(cookie, path, &with_csrf(form, &s.csrf)).await;
        if path.ends_with("/keys/reveal") {
            assert_eq!(page.status, 200, "{role}: POST {path}: {}", page.body);
            assert!(page.body.contains(&secret), "{role}: the reveal shows it");
        } else {
            page.assert_done(&format!("{role}: POST {path}"));
        }
    }
    let after = store.get_app(&ours.id).await;
    if role.allows(Permission::DeleteApps) {
        assert!(
            after.is_err(),
            "{role}: the app was deleted by the last form"
        );
    } else if role.allows(Permission::WriteApps) {
        let after = after.unwrap();
        assert_eq!(after.name, RENAMED, "{role}");
        assert_eq!(after.key, ours.key, "{role}: not rotated");
        assert!(store.list_webhooks(Some(&ours.id)).await.unwrap().len() == 1);
    } else {
        assert_eq!(after.unwrap(), ours, "{role}");
    }
}

#[tokio::test]
async fn an_owner_may_do_everything_in_the_tenant() {
    check_role(UserRole::Owner).await;
}

#[tokio::test]
async fn an_admin_may_do_everything_in_the_tenant() {
    check_role(UserRole::Admin).await;
}

#[tokio::test]
async fn a_developer_changes_apps_and_webhooks_but_cannot_delete_apps_or_manage_keys() {
    check_role(UserRole::Developer).await;
}

#[tokio::test]
async fn a_viewer_reads_but_changes_nothing_and_never_sees_a_secret() {
    check_role(UserRole::Viewer).await;
}

#[tokio::test]
async fn the_cli_creates_members_with_a_role() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = herald_json(
        dir.path(),
        &["tenants", "create", "--name", "Acme", "--json"],
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap();
    for role in ["owner", "admin", "developer", "viewer"] {
        let email = format!("{role}@acme.test");
        let user = herald_json(
            dir.path(),
            &[
                "users",
                "create",
                "--email",
                &email,
                "--password",
                MEMBER_PASSWORD,
                "--tenant",
                tenant_id,
                "--role",
                role,
                "--json",
            ],
        )
        .await;
        assert_eq!(user["role"], role);
        assert_eq!(user["tenant_id"], tenant_id);
    }
    // Without --role: admin, as before.
    let user = herald_json(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "plain@acme.test",
            "--password",
            MEMBER_PASSWORD,
            "--tenant",
            tenant_id,
            "--json",
        ],
    )
    .await;
    assert_eq!(user["role"], "admin");
    // Not a tenant role, or a role without a tenant: refused, nothing created.
    for args in [
        vec!["--tenant", tenant_id, "--role", "operator"],
        vec!["--tenant", tenant_id, "--role", "Owner"],
        vec!["--operator", "--role", "viewer"],
    ] {
        let mut all = vec![
            "users",
            "create",
            "--email",
            "x@acme.test",
            "--password",
            MEMBER_PASSWORD,
        ];
        all.extend(args.iter().copied());
        let output = crate::cli::herald(dir.path(), &all).await;
        assert!(!output.status.success(), "{all:?}");
        assert!(!stderr(&output).is_empty());
    }
    let users = herald_json(dir.path(), &["users", "list", "--json"]).await;
    assert_eq!(users.as_array().unwrap().len(), 5);
}
