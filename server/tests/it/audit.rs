//! The audit log: an entry for every dashboard and CLI action (exact rows after each), never a
//! secret in any entry, who may read it (every role their tenant's, the operator all), the
//! page's and the store's filters, and `herald audit`'s JSON lines.

use serde_json::{json, Value};

use herald::tenants::{AuditEntry, AuditFilter, NewWebhook, UserRole};

use crate::cli::{herald, herald_json, stderr, stdout};
use crate::dashboard_helpers::*;
use crate::helpers::*;

const PASSWORD: &str = "member password 1";
const HOOK_TOKEN: &str = "receiver-token-value";
/// A receiver's credential in a webhook URL's path (Slack and Discord style).
const HOOK_PATH_SECRET: &str = "T0001/B0002/path-secret-value";

async fn entries(app: &TestApp, tenant: &str) -> Vec<AuditEntry> {
    app.node
        .store
        .audit_entries(&AuditFilter {
            tenant_id: Some(tenant.to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

/// The newest entries of `tenant` since `seen` entries, oldest first, as (actor, action,
/// target, details).
async fn new_rows(
    app: &TestApp,
    tenant: &str,
    seen: &mut usize,
) -> Vec<(String, String, String, Value)> {
    let all = entries(app, tenant).await;
    let fresh: Vec<_> = all[..all.len() - *seen]
        .iter()
        .rev()
        .map(|e| {
            (
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.details.clone(),
            )
        })
        .collect();
    for e in &all[..all.len() - *seen] {
        assert_eq!(e.tenant_id.as_deref(), Some(tenant));
        if e.actor != "cli" {
            assert_eq!(e.address, "127.0.0.1", "{e:?}");
            assert!(e.actor_id.is_some());
        }
    }
    *seen = all.len();
    fresh
}

fn row(actor: &str, action: &str, target: &str, details: Value) -> (String, String, String, Value) {
    (
        actor.to_owned(),
        action.to_owned(),
        target.to_owned(),
        details,
    )
}

#[tokio::test]
async fn every_dashboard_action_writes_exactly_its_entry_and_no_secret() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let t = acme.id.clone();
    let owner = "owner@acme.test";
    store
        .create_user(owner, PASSWORD, UserRole::Owner, Some(&t))
        .await
        .unwrap();
    let dev = store
        .create_user("dev@acme.test", PASSWORD, UserRole::Developer, Some(&t))
        .await
        .unwrap();
    let mut seen = 0;
    assert!(
        new_rows(&app, &t, &mut seen).await.is_empty(),
        "the store writes none by itself"
    );

    // Sign-ins: a failure for a known email, then a success.
    let failed = browser
        .attempt_sign_in(owner, "wrong password 1", "/dashboard/apps", &[])
        .await;
    assert_eq!(failed.status, 401, "{}", failed.body);
    let s = browser.sign_in(owner, PASSWORD).await;
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![
            row(owner, "sign_in.failed", owner, json!({})),
            row(owner, "sign_in.succeeded", owner, json!({})),
        ]
    );
    // An unknown email is no tenant's: nothing.
    browser
        .attempt_sign_in(
            "nobody@acme.test",
            "wrong password 1",
            "/dashboard/apps",
            &[],
        )
        .await;
    assert!(new_rows(&app, &t, &mut seen).await.is_empty());

    let c = Some(s.cookie.as_str());
    let post = |path: String, form: Form| {
        let form = with_csrf(&form, &s.csrf);
        let browser = &browser;
        async move { browser.post(c, &path, &form).await }
    };
    post(
        "/dashboard/apps".into(),
        vec![("name", "Chat".into()), ("plan", "sandbox".into())],
    )
    .await
    .assert_done("create");
    let created = store.list_apps(Some(&t)).await.unwrap().pop().unwrap();
    let id = created.id.clone();
    let base = format!("/dashboard/apps/{id}");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            owner,
            "app.created",
            &id,
            json!({"name": "Chat", "plan": "sandbox"})
        )]
    );

    post(base.clone(), vec![("name", "Chat 2".into())])
        .await
        .assert_done("rename");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            owner,
            "app.updated",
            &id,
            json!({"name": {"from": "Chat", "to": "Chat 2"}})
        )]
    );
    let before = created.limits.max_connections;
    post(base.clone(), vec![("max_connections", "50".into())])
        .await
        .assert_done("limit");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            owner,
            "limits.changed",
            &id,
            json!({"max_connections": {"from": before, "to": 50}})
        )]
    );
    // A form that changes nothing writes nothing.
    post(base.clone(), vec![("name", "Chat 2".into())])
        .await
        .assert_done("same");
    assert!(new_rows(&app, &t, &mut seen).await.is_empty());

    let revealed = post(format!("{base}/keys/reveal"), vec![]).await;
    assert_eq!(revealed.status, 200);
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            owner,
            "key.revealed",
            &id,
            json!({"keys": [created.key]})
        )]
    );
    post(
        format!("{base}/keys/rotate"),
        vec![("grace_hours", "0".into())],
    )
    .await
    .assert_done("rotate");
    let rotated = store.get_app(&id).await.unwrap();
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            owner,
            "key.rotated",
            &id,
            json!({"new_key": rotated.key, "grace_seconds": 0})
        )]
    );
    post(format!("{base}/keys/reveal"), vec![]).await;
    new_rows(&app, &t, &mut seen).await;
    post(
        format!("{base}/keys/revoke"),
        vec![("key", created.key.clone())],
    )
    .await
    .assert_done("revoke");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(owner, "key.revoked", &id, json!({"key": created.key}))]
    );

    // Only scheme, host and a masked path are kept: no path secret, no query (user info is
    // refused when the webhook is saved).
    let hook_url = "http://127.0.0.1:9/…";
    post(
        format!("{base}/webhooks"),
        vec![
            (
                "url",
                format!("http://127.0.0.1:9/hook/{HOOK_PATH_SECRET}?token={HOOK_TOKEN}"),
            ),
            ("events", "channel_occupied".into()),
            ("headers", format!("X-Webhook-Token: {HOOK_TOKEN}")),
        ],
    )
    .await
    .assert_done("add webhook");
    let hook = store
        .list_webhooks(Some(&id))
        .await
        .unwrap()
        .pop()
        .unwrap()
        .id;
    let target = format!("{id}/{hook}");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            owner,
            "webhook.created",
            &target,
            json!({
                "url": hook_url, "events": ["channel_occupied"], "prefix": "",
                "header_names": ["X-Webhook-Token"],
            })
        )]
    );
    post(
        format!("{base}/webhooks/{hook}"),
        vec![
            ("url", format!("http://127.0.0.1:9/hook/{HOOK_PATH_SECRET}")),
            ("events", "member_added".into()),
            ("prefix", "p-".into()),
        ],
    )
    .await
    .assert_done("update webhook");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            owner,
            "webhook.updated",
            &target,
            json!({
                "url": hook_url, "events": ["member_added"], "prefix": "p-", "header_names": [],
            })
        )]
    );
    post(format!("{base}/webhooks/{hook}/remove"), vec![])
        .await
        .assert_done("remove");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(owner, "webhook.deleted", &target, json!({}))]
    );

    post(
        format!("/dashboard/members/{}/role", dev.id),
        vec![("role", "viewer".into())],
    )
    .await
    .assert_done("role");
    post(format!("/dashboard/members/{}/remove", dev.id), vec![])
        .await
        .assert_done("remove");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![
            row(
                owner,
                "member.role_changed",
                "dev@acme.test",
                json!({"from": "developer", "to": "viewer"})
            ),
            row(
                owner,
                "member.removed",
                "dev@acme.test",
                json!({"role": "viewer"})
            ),
        ]
    );
    post(format!("{base}/delete"), vec![("confirm", "Chat 2".into())])
        .await
        .assert_done("delete");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(owner, "app.deleted", &id, json!({"name": "Chat 2"}))]
    );

    // The operator's plan change for the tenant.
    let op = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    new_rows(&app, &t, &mut seen).await;
    let page = browser
        .post(
            Some(&op.cookie),
            &format!("/dashboard/tenants/{t}"),
            &with_csrf(
                &[("max_apps", "3".into()), ("plans", "sandbox".into())],
                &op.csrf,
            ),
        )
        .await;
    page.assert_done("tenant update");
    assert_eq!(
        new_rows(&app, &t, &mut seen).await,
        vec![row(
            OPERATOR,
            "tenant.updated",
            &t,
            json!({"max_apps": 3, "plans": ["sandbox"]})
        )]
    );

    // No secret anywhere: the app's secrets (both pairs), passwords, the receiver's token.
    let all = serde_json::to_string(&entries(&app, &t).await).unwrap();
    for secret in [
        created.secret.expose(),
        rotated.secret.expose(),
        PASSWORD,
        "wrong password 1",
        HOOK_TOKEN,
        "path-secret-value",
    ] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
}

#[tokio::test]
async fn every_role_reads_its_tenants_log_and_the_filters_work() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let (_, globex, _) = acme_and_globex(&app, PASSWORD).await;
    let globex_app = store
        .create_app(herald::tenants::NewApp {
            name: "Globex secret app".into(),
            tenant_id: Some(globex.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .create_webhook(NewWebhook {
            app_id: globex_app.id.clone(),
            url: "http://127.0.0.1:9/x".into(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: vec![],
        })
        .await
        .unwrap();
    let g = browser.sign_in("admin@globex.test", PASSWORD).await;
    for role in UserRole::TENANT_ROLES {
        let s = browser
            .sign_in(&format!("{role}@acme.test"), PASSWORD)
            .await;
        let page = browser.get(Some(&s.cookie), "/dashboard/audit").await;
        assert_eq!(page.status, 200, "{role}: {}", page.body);
        // Every Acme sign-in so far, never Globex's.
        assert!(page.body.contains(&format!("{role}@acme.test")), "{role}");
        assert!(!page.body.contains("globex"), "{role}: {}", page.body);
    }
    let op = browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;
    let all = browser.get(Some(&op.cookie), "/dashboard/audit").await;
    assert!(all.body.contains("admin@globex.test") && all.body.contains("viewer@acme.test"));
    let one = browser
        .get(
            Some(&op.cookie),
            &format!("/dashboard/audit?tenant={}", globex.id),
        )
        .await;
    assert!(one.body.contains("admin@globex.test") && !one.body.contains("acme.test"));

    // Filters on the page: action (exact and family), actor, since.
    let get = |q: &str| {
        let path = format!("/dashboard/audit?{q}");
        let (browser, cookie) = (&browser, g.cookie.clone());
        async move { browser.get(Some(&cookie), &path).await }
    };
    let count = |body: &str| body.matches("data-testid=\"audit-entry\"").count();
    let page = get("action=sign_in.succeeded").await;
    assert_eq!(count(&page.body), 1, "{}", page.body);
    assert_eq!(count(&get("action=sign_in.").await.body), 1);
    assert_eq!(count(&get("action=app.").await.body), 0);
    assert_eq!(count(&get("actor=admin%40globex.test").await.body), 1);
    assert_eq!(count(&get("actor=someone%40else.test").await.body), 0);
    assert_eq!(count(&get("since=2999-01-01").await.body), 0);
    assert_eq!(count(&get("since=2000-01-01").await.body), 1);
    let bad = get("since=yesterday").await;
    assert!(bad.body.contains("is not a date"), "{}", bad.body);

    // Pagination: 50 a page, then an "Older entries" link that goes on from the last id.
    for n in 0..60 {
        store
            .record_audit(herald::tenants::NewAuditEntry {
                tenant_id: Some(globex.id.clone()),
                actor: "cli".into(),
                action: "app.created".into(),
                target: format!("{n}"),
                details: json!({}),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let first = get("action=app.created").await;
    assert_eq!(count(&first.body), 50);
    let link = first
        .body
        .split("href=\"")
        .find(|h| h.starts_with("/dashboard/audit?"))
        .unwrap();
    let link = link[..link.find('"').unwrap()]
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    let second = browser.get(Some(&g.cookie), &link).await;
    assert_eq!(count(&second.body), 10, "{link}");
    assert!(!second.body.contains("Older entries"));
}

#[tokio::test]
async fn the_cli_audits_its_changes_and_prints_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tenant = herald_json(d, &["tenants", "create", "--name", "Acme", "--json"]).await;
    let t = tenant["id"].as_str().unwrap().to_owned();
    let created = herald_json(
        d,
        &["apps", "create", "--name", "Chat", "--tenant", &t, "--json"],
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    herald_json(
        d,
        &["apps", "update", &id, "--max-connections", "7", "--json"],
    )
    .await;
    let rotated = herald_json(d, &["apps", "rotate-secret", &id, "--json"]).await;
    herald_json(d, &["tenants", "update", &t, "--max-apps", "4", "--json"]).await;

    let output = herald(d, &["audit", "--tenant", &t, "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.updated",
            "key.rotated",
            "limits.changed",
            "app.created",
            "tenant.created"
        ],
        "newest first: {text}"
    );
    for line in &lines {
        assert_eq!(line["actor"], "cli");
        assert_eq!(line["tenant_id"], t.as_str());
        assert!(line["id"].is_i64() && line["at"].is_i64(), "{line}");
        for field in ["target", "address"] {
            assert!(line[field].is_string(), "{line}");
        }
        assert!(line["details"].is_object(), "{line}");
    }
    assert_eq!(lines[2]["details"]["max_connections"]["to"], 7);
    for secret in [
        created["secret"].as_str().unwrap(),
        rotated["secret"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret));
    }
    // --since: in the future nothing; a bad time is an error; an unknown tenant is an error.
    let later = herald(
        d,
        &["audit", "--tenant", &t, "--since", "2999-01-01", "--json"],
    )
    .await;
    assert!(later.status.success());
    assert_eq!(stdout(&later).trim(), "");
    let early = herald(
        d,
        &[
            "audit",
            "--tenant",
            &t,
            "--since",
            "2000-01-01T00:00:00Z",
            "--json",
        ],
    )
    .await;
    assert_eq!(stdout(&early).lines().count(), 5);
    let bad = herald(d, &["audit", "--tenant", &t, "--since", "yesterday"]).await;
    assert!(!bad.status.success());
    let unknown = herald(d, &["audit", "--tenant", "999999", "--json"]).await;
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no tenant"),
        "{}",
        stderr(&unknown)
    );
    // Without --json: one tab-separated line per entry.
    let plain = herald(d, &["audit", "--tenant", &t, "--action", "key."]).await;
    let plain = stdout(&plain);
    assert_eq!(plain.lines().count(), 1, "{plain}");
    assert!(plain.contains("\tcli\tkey.rotated\t"), "{plain}");
}

#[tokio::test]
async fn viewers_see_webhook_urls_without_their_credentials() {
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
    let url = format!("http://127.0.0.1:9/hook/{HOOK_PATH_SECRET}?token={HOOK_TOKEN}");
    store
        .create_webhook(NewWebhook {
            app_id: ours.id.clone(),
            url: url.clone(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: vec![],
        })
        .await
        .unwrap();
    for role in [UserRole::Viewer, UserRole::Developer] {
        store
            .create_user(&format!("{role}@acme.test"), PASSWORD, role, Some(&acme.id))
            .await
            .unwrap();
    }
    let path = format!("/dashboard/apps/{}/webhooks", ours.id);
    let viewer = browser.sign_in("viewer@acme.test", PASSWORD).await;
    let page = browser.get(Some(&viewer.cookie), &path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("http://127.0.0.1:9/…"), "{}", page.body);
    for secret in ["path-secret-value", HOOK_TOKEN] {
        assert!(!page.body.contains(secret), "{secret} shown to a viewer");
    }
    // A role that may reveal secrets (and edit the endpoint) sees the whole URL.
    let developer = browser.sign_in("developer@acme.test", PASSWORD).await;
    let page = browser.get(Some(&developer.cookie), &path).await;
    assert!(page.body.contains("path-secret-value"), "{}", page.body);
}
