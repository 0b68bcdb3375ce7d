//! The management API (`/api/v1`) and its tokens: every route against no token, a bad, an
//! expired and a revoked one, one without the route's scope and one with it; tenant isolation;
//! pagination; validation, media type and body size errors; the per-token rate limit; audit
//! entries; tokens stored only as hashes; the OpenAPI document matching the routes; the
//! dashboard's API tokens page (owners and admins only) and `herald tokens`.

use reqwest::Method;
use serde_json::{json, Value};

use herald::tenants::{NewApp, NewToken, Scope, UserRole};

use crate::cli::{herald, herald_json, stdout};
use crate::dashboard_helpers::*;
use crate::helpers::*;

const PASSWORD: &str = "member password 1";

/// Sends one API request; `body` is sent as JSON.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

pub(crate) async fn token(app: &TestApp, tenant: &str, scopes: &[Scope]) -> String {
    app.node
        .store
        .create_token(NewToken {
            tenant_id: tenant.to_owned(),
            name: "test".into(),
            scopes: scopes.to_vec(),
            expires_in_days: Some(30),
            created_by: "cli".into(),
            creator_role: UserRole::Operator,
        })
        .await
        .expect("token created")
        .1
}

async fn new_app(app: &TestApp, tenant: &str, name: &str) -> String {
    app.node
        .store
        .create_app(NewApp {
            name: name.into(),
            tenant_id: Some(tenant.into()),
            ..NewApp::default()
        })
        .await
        .expect("app created")
        .id
}

/// Runs `sql` on the test's SQLite store (to age a token, or read what is stored).
async fn sql(app: &TestApp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&app.node.settings.database_url)
        .await
        .expect("the store opens")
}

/// One route: method, path, the scope it needs and a body that would succeed.
struct Route {
    method: Method,
    path: String,
    scope: Scope,
    body: Option<Value>,
    ok: u16,
}

fn routes(app_id: &str, key: &str, hook: &str) -> Vec<Route> {
    let r = |method: Method, path: String, scope, body, ok| Route {
        method,
        path,
        scope,
        body,
        ok,
    };
    vec![
        r(
            Method::GET,
            "/api/v1/apps".into(),
            Scope::AppsRead,
            None,
            200,
        ),
        r(
            Method::POST,
            "/api/v1/apps".into(),
            Scope::AppsWrite,
            Some(json!({ "name": "made by the API" })),
            201,
        ),
        r(
            Method::GET,
            format!("/api/v1/apps/{app_id}"),
            Scope::AppsRead,
            None,
            200,
        ),
        r(
            Method::PATCH,
            format!("/api/v1/apps/{app_id}"),
            Scope::AppsWrite,
            Some(json!({ "name": "renamed", "limits": { "max_connections": 10 } })),
            200,
        ),
        r(
            Method::GET,
            format!("/api/v1/apps/{app_id}/webhooks"),
            Scope::WebhooksRead,
            None,
            200,
        ),
        r(
            Method::POST,
            format!("/api/v1/apps/{app_id}/webhooks"),
            Scope::WebhooksWrite,
            Some(json!({ "url": "http://127.0.0.1:9/hook", "events": ["channel_occupied"] })),
            201,
        ),
        r(
            Method::PATCH,
            format!("/api/v1/apps/{app_id}/webhooks/{hook}"),
            Scope::WebhooksWrite,
            Some(json!({ "events": ["channel_occupied"], "channel_prefix": "p-" })),
            200,
        ),
        r(
            Method::DELETE,
            format!("/api/v1/apps/{app_id}/webhooks/{hook}"),
            Scope::WebhooksWrite,
            None,
            204,
        ),
        r(
            Method::GET,
            format!("/api/v1/apps/{app_id}/usage"),
            Scope::UsageRead,
            None,
            200,
        ),
        r(
            Method::POST,
            format!("/api/v1/apps/{app_id}/keys/rotate"),
            Scope::KeysWrite,
            Some(json!({ "grace_seconds": 0 })),
            200,
        ),
        r(
            Method::POST,
            format!("/api/v1/apps/{app_id}/keys/revoke"),
            Scope::KeysWrite,
            Some(json!({ "key": key })),
            200,
        ),
        r(
            Method::DELETE,
            format!("/api/v1/apps/{app_id}"),
            Scope::AppsWrite,
            None,
            204,
        ),
    ]
}

#[tokio::test]
async fn every_route_checks_the_token_and_its_scope() {
    let app = spawn_app_with(|s| {
        s.api_rate = 1000;
        s.webhooks.allow_private = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let app_id = new_app(&app, &acme.id, "target").await;
    let key = store.get_app(&app_id).await.unwrap().key;
    let hook = store
        .create_webhook(herald::tenants::NewWebhook {
            app_id: app_id.clone(),
            url: "http://127.0.0.1:9/old".into(),
            events: vec!["channel_vacated".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let expired = token(&app, &acme.id, &Scope::ALL).await;
    let revoked = token(&app, &acme.id, &Scope::ALL).await;
    let pool = sql(&app).await;
    sqlx::query("UPDATE api_tokens SET expires_at = 1 WHERE token_hash = $1")
        .bind(herald::tenants::session_key(&expired))
        .execute(&pool)
        .await
        .unwrap();
    let row = sqlx::query("SELECT id FROM api_tokens WHERE token_hash = $1")
        .bind(herald::tenants::session_key(&revoked))
        .fetch_one(&pool)
        .await
        .unwrap();
    let revoked_id: String = sqlx::Row::get(&row, "id");
    store
        .revoke_token(Some(&acme.id), &revoked_id)
        .await
        .unwrap();
    let bad = format!("hrld_{}", "0".repeat(64));

    for route in routes(&app_id, &key, &hook) {
        let what = format!("{} {}", route.method, route.path);
        for (token, expected) in [
            (None, "missing_token"),
            (Some("not-a-token".to_owned()), "invalid_token"),
            (Some(bad.clone()), "invalid_token"),
            (Some(expired.clone()), "token_expired"),
            (Some(revoked.clone()), "token_revoked"),
        ] {
            let (status, body) = call(
                &app,
                route.method.clone(),
                &route.path,
                token.as_deref(),
                route.body.clone(),
            )
            .await;
            assert_eq!(status, 401, "{what} with {expected}: {body}");
            assert_eq!(code(&body), expected, "{what}: {body}");
        }
        let others: Vec<Scope> = Scope::ALL
            .into_iter()
            .filter(|s| *s != route.scope)
            .collect();
        let without = token(&app, &acme.id, &others).await;
        let (status, body) = call(
            &app,
            route.method.clone(),
            &route.path,
            Some(&without),
            route.body.clone(),
        )
        .await;
        assert_eq!(status, 403, "{what} without its scope: {body}");
        assert_eq!(code(&body), "insufficient_scope");
        let with = token(&app, &acme.id, &[route.scope]).await;
        let (status, body) = call(
            &app,
            route.method.clone(),
            &route.path,
            Some(&with),
            route.body.clone(),
        )
        .await;
        assert_eq!(status, route.ok, "{what} with its scope: {body}");
    }
    // Used tokens note their use (to the minute).
    let tokens = store.list_tokens(&acme.id).await.unwrap();
    assert!(tokens.iter().filter(|t| t.last_used_at.is_some()).count() >= 12);
    // The route table ran the app's deletion last: it is gone.
    assert!(store.get_app(&app_id).await.is_err());
    // Refusals of known tokens are in the audit log, never the token's text.
    let entries = store
        .audit_entries(&herald::tenants::AuditFilter {
            tenant_id: Some(acme.id.clone()),
            action: Some("token.refused".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let reasons: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.details["reason"].as_str())
        .collect();
    for reason in ["expired", "revoked", "insufficient_scope"] {
        assert!(reasons.contains(&reason), "{reasons:?}");
    }
    let all = store
        .audit_entries(&herald::tenants::AuditFilter {
            tenant_id: Some(acme.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(&expired[5..]) && !text.contains(&revoked[5..]));
    for action in [
        "app.created",
        "app.updated",
        "limits.changed",
        "webhook.created",
        "webhook.updated",
        "webhook.deleted",
        "key.rotated",
        "key.revoked",
        "app.deleted",
    ] {
        let entry = all.iter().find(|e| e.action == action);
        let entry = entry.unwrap_or_else(|| panic!("no {action} entry"));
        assert!(
            entry.actor.starts_with("api-token:"),
            "{action}: {}",
            entry.actor
        );
        assert_eq!(entry.address, "127.0.0.1", "{action}");
    }
}

#[tokio::test]
async fn a_token_never_sees_nor_changes_another_tenants_apps() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let globex = store.create_tenant("Globex").await.unwrap();
    let theirs = new_app(&app, &globex.id, "globex app").await;
    let mine = new_app(&app, &acme.id, "acme app").await;
    let acme_token = token(&app, &acme.id, &Scope::ALL).await;
    let before = store.get_app(&theirs).await.unwrap();
    let (status, body) = call(&app, Method::GET, "/api/v1/apps", Some(&acme_token), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, vec![mine.as_str()]);
    for route in routes(&theirs, &before.key, "12345") {
        let (status, body) = call(
            &app,
            route.method.clone(),
            &route.path,
            Some(&acme_token),
            route.body,
        )
        .await;
        if route.path == "/api/v1/apps" {
            continue;
        }
        assert_eq!(status, 404, "{} {}: {body}", route.method, route.path);
    }
    assert_eq!(store.get_app(&theirs).await.unwrap(), before);
    assert!(store.list_webhooks(Some(&theirs)).await.unwrap().is_empty());
    // An app created with the token lands in the token's tenant whatever the body says.
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/apps",
        Some(&acme_token),
        Some(json!({ "name": "x", "tenant_id": globex.id })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn apps_are_listed_a_page_at_a_time() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(new_app(&app, &acme.id, &format!("app {n}")).await);
    }
    ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    let reader = token(&app, &acme.id, &[Scope::AppsRead]).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/apps?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = call(&app, Method::GET, &path, Some(&reader), None).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let data = body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        for a in data {
            assert!(a.get("secret").is_none(), "a listing shows no secret");
            seen.push(a["id"].as_str().unwrap().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/apps?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=zz",
        "cursor=00",
        "limit=1&limit=2",
    ] {
        let (status, body) = call(
            &app,
            Method::GET,
            &format!("/api/v1/apps?{bad}"),
            Some(&reader),
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(code(&body).starts_with("invalid_"), "{bad}: {body}");
    }
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/v1/apps?limit=100",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 5);
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn bad_bodies_get_typed_errors() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let app_id = new_app(&app, &acme.id, "target").await;
    let writer = token(&app, &acme.id, &Scope::ALL).await;
    let path = format!("/api/v1/apps/{app_id}");
    for (body, status_code, error_code) in [
        (json!({ "name": "" }), 422, "validation_failed"),
        (
            json!({ "limits": { "max_lollipops": 1 } }),
            422,
            "validation_failed",
        ),
        (
            json!({ "limits": { "max_connections": -1 } }),
            422,
            "validation_failed",
        ),
        (json!({ "enabled": "yes" }), 422, "validation_failed"),
        (json!({ "colour": "red" }), 422, "validation_failed"),
        (
            json!({ "allowed_origins": ["not a url"] }),
            422,
            "validation_failed",
        ),
        // A tenant may tighten limits, not loosen them (the same rule as the dashboard).
        (
            json!({ "limits": { "max_batch_size": 0 } }),
            403,
            "forbidden",
        ),
    ] {
        let (status, answer) = call(
            &app,
            Method::PATCH,
            &path,
            Some(&writer),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, status_code, "{body}: {answer}");
        assert_eq!(code(&answer), error_code, "{body}: {answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let send_raw = |content_type: &'static str, body: Vec<u8>| {
        app.http
            .patch(app.url(&path))
            .bearer_auth(&writer)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = send_raw("text/plain", b"{}".to_vec()).await.unwrap();
    assert_eq!(response.status().as_u16(), 415);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let response = send_raw("application/json", b"{\"name\":".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(code(&answer), "invalid_json");
    let huge = format!(
        "{{\"name\":\"{}\"}}",
        "x".repeat(herald::api::v1::MAX_BODY_BYTES)
    );
    let response = send_raw("application/json", huge.into_bytes())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let (status, answer) = call(
        &app,
        Method::GET,
        "/api/v1/nothing-here",
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    // Still serving, unchanged.
    let (status, answer) = call(&app, Method::GET, &path, Some(&writer), None).await;
    assert_eq!(status, 200);
    assert_eq!(answer["name"], "target");
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_refused_with_429() {
    let app = spawn_app_with(|s| s.api_rate = 2).await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let busy = token(&app, &acme.id, &[Scope::AppsRead]).await;
    let other = token(&app, &acme.id, &[Scope::AppsRead]).await;
    let mut refused = None;
    for n in 0..20 {
        let (status, body) = call(&app, Method::GET, "/api/v1/apps", Some(&busy), None).await;
        if status == 429 {
            assert_eq!(code(&body), "rate_limited");
            refused = Some(n);
            break;
        }
        assert_eq!(status, 200);
    }
    let refused = refused.expect("the burst runs out");
    assert!(
        refused >= 4,
        "a burst of twice the rate passes first: {refused}"
    );
    // The budget is the tenant's (review M6): its other tokens are out too, another tenant's
    // token is not.
    let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&other), None).await;
    assert_eq!(status, 429);
    let globex = store.create_tenant("Globex").await.unwrap();
    let theirs = token(&app, &globex.id, &[Scope::AppsRead]).await;
    let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&theirs), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tokens_are_stored_hashed_capped_and_described_by_the_document() {
    let app = spawn_app().await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let text = token(&app, &acme.id, &[Scope::AppsRead]).await;
    assert!(text.starts_with("hrld_") && text.len() == 69);
    let pool = sql(&app).await;
    let rows = sqlx::query("SELECT token_hash FROM api_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    use sqlx::Row;
    let hashes: Vec<String> = rows.iter().map(|r| r.get("token_hash")).collect();
    assert_eq!(hashes, vec![herald::tenants::session_key(&text)]);
    let dump = sqlx::query("SELECT * FROM api_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    for row in &dump {
        for i in 0..row.len() {
            let value: Option<String> = row.try_get(i).ok();
            assert!(!value.unwrap_or_default().contains(&text[5..]));
        }
    }
    // At most 50 live tokens; a revoked one frees a place.
    for _ in 1..herald::tenants::MAX_LIVE_TOKENS {
        token(&app, &acme.id, &[Scope::AppsRead]).await;
    }
    let over = store
        .create_token(NewToken {
            tenant_id: acme.id.clone(),
            name: "one too many".into(),
            scopes: vec![Scope::AppsRead],
            expires_in_days: None,
            created_by: "cli".into(),
            creator_role: UserRole::Operator,
        })
        .await;
    assert!(over.is_err(), "the 51st live token is refused");
    let first = store.list_tokens(&acme.id).await.unwrap()[0].id.clone();
    store.revoke_token(Some(&acme.id), &first).await.unwrap();
    // Revoking it again is refused; the freed place takes one more.
    assert!(store.revoke_token(Some(&acme.id), &first).await.is_err());
    token(&app, &acme.id, &[Scope::AppsRead]).await;

    // The document: unauthenticated, and its paths are exactly the routes.
    let (status, document) = call(&app, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut described = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                described.push((method.clone(), path.clone()));
            }
        }
    }
    let mut served: Vec<(String, String)> = herald::api::v1::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    described.sort();
    served.sort();
    assert_eq!(described, served);
    // Every listed route is served (never the fallback's "no such route"), and no other
    // method of those paths is.
    let reader = token_for_probe(&app, &acme.id).await;
    for (method, path) in &served {
        let path = path.replace("{app_id}", "1").replace("{webhook_id}", "1");
        let method: Method = method.to_uppercase().parse().unwrap();
        let (status, body) = call(&app, method.clone(), &path, Some(&reader), None).await;
        assert_ne!(status, 405, "{method} {path}");
        // A route's answers are JSON (the router's fallback answers plain text).
        assert!(body.is_object(), "{method} {path}: {status}");
    }
    for path in ["/api/v1/apps", "/api/v1/apps/1/usage"] {
        let response = app.http.put(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 405, "PUT {path}");
    }
}

/// A token for probing every route (a revoked place was freed above).
async fn token_for_probe(app: &TestApp, tenant: &str) -> String {
    let live = app
        .node
        .store
        .list_tokens(tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.revoked_at.is_none())
        .expect("a live token");
    app.node
        .store
        .revoke_token(Some(tenant), &live.id)
        .await
        .unwrap();
    token(app, tenant, &Scope::ALL).await
}

#[tokio::test]
async fn owners_and_admins_make_tokens_in_the_dashboard_and_the_cli_makes_them_too() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let (acme, _, ids) = acme_and_globex(&app, PASSWORD).await;
    let owner = browser.sign_in("owner@acme.test", PASSWORD).await;
    let developer = browser.sign_in("developer@acme.test", PASSWORD).await;
    let page = browser.get(Some(&owner.cookie), "/dashboard/tokens").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for role in ["developer", "viewer"] {
        let session = browser
            .sign_in(&format!("{role}@acme.test"), PASSWORD)
            .await;
        let page = browser
            .get(Some(&session.cookie), "/dashboard/tokens")
            .await;
        assert_eq!(page.status, 403, "{role}");
    }
    let form = |csrf: &str| {
        with_csrf(
            &[
                ("name", "deploys".to_owned()),
                ("scope", "apps:read".to_owned()),
                ("scope", "keys:write".to_owned()),
                ("expires_in_days", "7".to_owned()),
            ],
            csrf,
        )
    };
    let refused = browser
        .post(
            Some(&developer.cookie),
            "/dashboard/tokens",
            &form(&developer.csrf),
        )
        .await;
    assert_eq!(refused.status, 403);
    let made = browser
        .post(Some(&owner.cookie), "/dashboard/tokens", &form(&owner.csrf))
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let text = made
        .body
        .split("value=\"hrld_")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|rest| format!("hrld_{rest}"))
        .expect("the new token is shown");
    let tokens = app.node.store.list_tokens(&acme.id).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].scopes, vec![Scope::AppsRead, Scope::KeysWrite]);
    assert_eq!(tokens[0].created_by, "owner@acme.test");
    let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&text), None).await;
    assert_eq!(status, 200);
    // The list never shows a token's text again.
    let page = browser.get(Some(&owner.cookie), "/dashboard/tokens").await;
    assert!(page.body.contains("deploys") && !page.body.contains(&text[5..]));
    let revoked = browser
        .post(
            Some(&owner.cookie),
            &format!("/dashboard/tokens/{}/revoke", tokens[0].id),
            &with_csrf(&[], &owner.csrf),
        )
        .await;
    revoked.assert_done("revoke");
    let (status, body) = call(&app, Method::GET, "/api/v1/apps", Some(&text), None).await;
    assert_eq!((status, code(&body)), (401, "token_revoked"));
    let actions: Vec<String> = app
        .node
        .store
        .audit_entries(&herald::tenants::AuditFilter {
            tenant_id: Some(acme.id.clone()),
            action: Some("token.".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for action in ["token.created", "token.revoked", "token.refused"] {
        assert!(actions.iter().any(|a| a == action), "{actions:?}");
    }

    // A member lowered below admin (or removed) loses the tokens they made.
    let (_, admins) = app
        .node
        .store
        .create_token(NewToken {
            tenant_id: acme.id.clone(),
            name: "admin's".into(),
            scopes: vec![Scope::AppsRead],
            expires_in_days: None,
            created_by: "admin@acme.test".into(),
            creator_role: UserRole::Admin,
        })
        .await
        .unwrap();
    let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&admins), None).await;
    assert_eq!(status, 200);
    app.node
        .store
        .change_member(&acme.id, &ids[&UserRole::Admin], Some(UserRole::Developer))
        .await
        .unwrap();
    let (status, body) = call(&app, Method::GET, "/api/v1/apps", Some(&admins), None).await;
    assert_eq!((status, code(&body)), (401, "token_revoked"));

    // The CLI on the same store.
    let dir = app.data_dir.path();
    let made = herald_json(
        dir,
        &[
            "tokens",
            "create",
            "--tenant",
            &acme.id,
            "--name",
            "ci",
            "--scopes",
            "apps:read,usage:read",
            "--expires-in-days",
            "1",
            "--json",
        ],
    )
    .await;
    let cli_token = made["token"].as_str().unwrap().to_owned();
    assert_eq!(made["scopes"], json!(["apps:read", "usage:read"]));
    let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&cli_token), None).await;
    assert_eq!(status, 200);
    let listed = herald(dir, &["tokens", "list", "--tenant", &acme.id]).await;
    assert!(stdout(&listed).contains("ci") && !stdout(&listed).contains(&cli_token[5..]));
    let bad = herald(
        dir,
        &[
            "tokens",
            "create",
            "--tenant",
            &acme.id,
            "--name",
            "x",
            "--scopes",
            "apps:delete",
        ],
    )
    .await;
    assert!(!bad.status.success());
    let id = made["id"].as_str().unwrap();
    let revoked = herald(dir, &["tokens", "revoke", id]).await;
    assert!(revoked.status.success());
    let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&cli_token), None).await;
    assert_eq!(status, 401);
}

/// Review H1: a revoked token replayed in a loop leaves one `token.refused` entry a minute, and
/// past its budget of 401 answers a client address is answered 429 before any token lookup
/// (a live token from it too) until the minute is over.
#[tokio::test]
async fn a_replayed_dead_token_leaves_one_entry_a_minute_and_runs_out_of_401s() {
    let clock = herald::clock::Clock::manual(now_millis());
    let wall = clock.clone();
    let app = spawn_app_with(move |s| {
        s.clock = clock;
        s.api_rate = 1000;
    })
    .await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let revoked = token(&app, &acme.id, &[Scope::AppsRead]).await;
    let id = store.list_tokens(&acme.id).await.unwrap()[0].id.clone();
    store.revoke_token(Some(&acme.id), &id).await.unwrap();
    let live = token(&app, &acme.id, &[Scope::AppsRead]).await;
    let refusals = || async {
        store
            .audit_entries(&herald::tenants::AuditFilter {
                tenant_id: Some(acme.id.clone()),
                action: Some("token.refused".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    let budget = herald::api::v1::UNAUTHORIZED_PER_MINUTE as usize;
    for n in 0..budget + 30 {
        let (status, body) = call(&app, Method::GET, "/api/v1/apps", Some(&revoked), None).await;
        if n < budget {
            assert_eq!((status, code(&body)), (401, "token_revoked"), "call {n}");
        } else {
            assert_eq!(
                (status, code(&body)),
                (429, "too_many_unauthorized"),
                "call {n}"
            );
        }
    }
    assert_eq!(refusals().await, 1, "one entry for the minute's refusals");
    let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&live), None).await;
    assert_eq!(status, 429, "the address is out of 401s for the minute");
    // The next minute: the budget is back, and the dead token's next refusal is audited once.
    wall.set_millis(wall.now_millis() + 61_000);
    let (status, body) = call(&app, Method::GET, "/api/v1/apps", Some(&live), None).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..5 {
        let (status, _) = call(&app, Method::GET, "/api/v1/apps", Some(&revoked), None).await;
        assert_eq!(status, 401);
    }
    assert_eq!(refusals().await, 2);
}

/// Review M2: an app's Mercure JWT key is a credential, so setting it (on create or update)
/// needs `keys:write` as well as `apps:write`; other Mercure settings need only `apps:write`.
#[tokio::test]
async fn setting_a_mercure_key_needs_keys_write() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let app_id = new_app(&app, &acme.id, "hub").await;
    let apps_only = token(&app, &acme.id, &[Scope::AppsWrite]).await;
    let both = token(&app, &acme.id, &[Scope::AppsWrite, Scope::KeysWrite]).await;
    let path = format!("/api/v1/apps/{app_id}");
    let hs256 = json!({ "mercure": { "jwt_key": "a key the script knows, 32 bytes long" } });
    let pem = json!({ "mercure": { "jwt_public_key": "-----BEGIN PUBLIC KEY-----" } });
    for body in [&hs256, &pem] {
        let (status, answer) = call(
            &app,
            Method::PATCH,
            &path,
            Some(&apps_only),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (403, "insufficient_scope"),
            "{body}"
        );
        let mut create = body.clone();
        create["name"] = json!("another");
        let (status, answer) = call(
            &app,
            Method::POST,
            "/api/v1/apps",
            Some(&apps_only),
            Some(create),
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (403, "insufficient_scope"),
            "{answer}"
        );
    }
    let mercure = store.get_app(&app_id).await.unwrap().mercure;
    assert!(matches!(
        mercure.jwt_key,
        herald::tenants::MercureKey::AppSecret
    ));
    let audience = json!({ "mercure": { "audience": "hub-users" } });
    let (status, answer) = call(&app, Method::PATCH, &path, Some(&apps_only), Some(audience)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(&app, Method::PATCH, &path, Some(&both), Some(hs256)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["mercure"]["jwt_key"], "hs256");
    assert_eq!(
        store.list_apps(Some(&acme.id)).await.unwrap().len(),
        1,
        "no app was created"
    );
}

/// Review M1: `webhooks:read` lists webhook URLs masked exactly as the dashboard masks them
/// for viewers (path and query may be the receiver's credentials); a token that
/// also has `webhooks:write` sees them whole.
#[tokio::test]
async fn webhooks_read_sees_urls_masked_as_viewers_do() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let app_id = new_app(&app, &acme.id, "hooks").await;
    let url = "https://hooks.example.test/in/s3cret?key=k3y";
    store
        .create_webhook(herald::tenants::NewWebhook {
            app_id: app_id.clone(),
            url: url.into(),
            events: vec!["channel_vacated".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let path = format!("/api/v1/apps/{app_id}/webhooks");
    let reader = token(&app, &acme.id, &[Scope::WebhooksRead]).await;
    let (status, body) = call(&app, Method::GET, &path, Some(&reader), None).await;
    assert_eq!(status, 200, "{body}");
    let shown = body["data"][0]["url"].as_str().unwrap();
    assert_eq!(shown, herald::tenants::masked_url(url));
    assert_eq!(shown, "https://hooks.example.test/…");
    let text = body.to_string();
    for secret in ["s3cret", "k3y"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let writer = token(&app, &acme.id, &[Scope::WebhooksRead, Scope::WebhooksWrite]).await;
    let (status, body) = call(&app, Method::GET, &path, Some(&writer), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["url"], url);
}
