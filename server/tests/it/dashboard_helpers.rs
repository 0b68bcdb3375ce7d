//! What the dashboard tests share: a browser over HTTP, the admins they sign in as, every page
//! and form of the dashboard, and a snapshot of everything in the store the dashboard could change.
//!
//! The client follows no redirects and keeps no cookies: every `Set-Cookie` is read by hand and
//! every `Cookie` header is written by hand, so the tests see exactly what a browser would get.

use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::Method;
use serde_json::json;

use herald::tenants::{
    App, Attempt, Delivery, DeliveryStatus, NewDelivery, NewWebhook, Secret, Tenant, User,
    UserRole, Webhook,
};

use crate::helpers::*;

pub const OPERATOR: &str = "admin@localhost";
pub const OPERATOR_PASSWORD: &str = "operator password 1";
pub const TENANT_ADMIN: &str = "admin@acme.test";
pub const TENANT_ADMIN_PASSWORD: &str = "acme admin password";
pub const RENAMED: &str = "Renamed by the dashboard";
/// A URL nothing answers on (webhook attempts fail fast and are retried later).
const DEAD_URL: &str = "http://127.0.0.1:9/hook";

pub async fn spawn_dashboard() -> TestApp {
    spawn_app_with(|settings| {
        settings.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
    })
    .await
}

/// One answer, body read (except for an event stream, which is left unread).
pub struct Page {
    pub status: u16,
    headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: impl reqwest::header::AsHeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn location(&self) -> &str {
        self.header(LOCATION)
    }

    /// The whole `Set-Cookie` line for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|line| {
                line.split(';')
                    .next()
                    .and_then(|pair| pair.trim().split_once('='))
                    .is_some_and(|(k, _)| k == name)
            })
            .map(str::to_owned)
    }

    /// The value `Set-Cookie` gives cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let line = self.set_cookie(name)?;
        let pair = line.split(';').next()?.trim().to_owned();
        pair.split_once('=').map(|(_, v)| v.to_owned())
    }

    /// A sign-in redirect to the login page, coming back to `path`.
    pub fn assert_sign_in_redirect(&self, path: &str, what: &str) {
        assert_eq!(self.status, 303, "{what}: {}", self.body);
        assert_eq!(
            self.location(),
            format!("/dashboard/login?next={}", encode(path)),
            "{what}"
        );
        assert!(
            self.set_cookie("herald_session").is_none(),
            "{what}: no session is handed out"
        );
    }

    pub fn assert_not_found(&self, what: &str) {
        assert_eq!(self.status, 404, "{what}: {}", self.body);
        assert!(self.body.contains("Not found"), "{what}: {}", self.body);
    }

    pub fn assert_csrf_refused(&self, what: &str) {
        assert_eq!(self.status, 403, "{what}: {}", self.body);
        assert!(self.body.contains("CSRF"), "{what}: {}", self.body);
    }

    /// A form that went through: back to a page with a notice (not an error).
    pub fn assert_done(&self, what: &str) {
        assert_eq!(self.status, 303, "{what}: {}", self.body);
        assert!(
            self.location().contains("?notice="),
            "{what}: went to {}",
            self.location()
        );
    }
}

/// The dashboard's percent-encoding of `next` (everything but `A-Za-z0-9-_./~`).
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of the first hidden field `name` in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("the page has a {name} field: {html}"))
        + marker.len();
    let end = start + html[start..].find('"').expect("the value ends");
    html[start..end]
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x3a;", ":")
        .replace("&amp;", "&")
}

/// A form: field name and value.
pub type Form = Vec<(&'static str, String)>;

pub fn with_csrf(form: &[(&'static str, String)], csrf: &str) -> Form {
    let mut form = form.to_vec();
    form.push(("csrf", csrf.to_owned()));
    form
}

/// A signed-in browser: its `Cookie` header and the session's CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// A browser that follows no redirects and keeps no cookies.
pub struct Browser<'a> {
    app: &'a TestApp,
    pub http: reqwest::Client,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Browser<'a> {
        Browser {
            app,
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        headers: &[(&str, &str)],
        form: Option<&[(&'static str, String)]>,
    ) -> Page {
        let mut request = self.http.request(method, self.app.url(path));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let streaming = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body = if streaming {
            String::new()
        } else {
            response.text().await.expect("body")
        };
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, cookie: Option<&str>, path: &str) -> Page {
        self.send(Method::GET, path, cookie, &[], None).await
    }

    pub async fn post(
        &self,
        cookie: Option<&str>,
        path: &str,
        form: &[(&'static str, String)],
    ) -> Page {
        self.send(Method::POST, path, cookie, &[], Some(form)).await
    }

    /// Opens the sign-in page and posts it, with `headers` on both requests.
    pub async fn attempt_sign_in(
        &self,
        email: &str,
        password: &str,
        next: &str,
        headers: &[(&str, &str)],
    ) -> Page {
        let login = self
            .send(Method::GET, "/dashboard/login", None, headers, None)
            .await;
        assert_eq!(login.status, 200, "{}", login.body);
        let token = login
            .cookie("herald_login_csrf")
            .expect("the sign-in page sets its CSRF cookie");
        assert_eq!(hidden(&login.body, "csrf"), token, "double-submit token");
        let form: Form = vec![
            ("csrf", token.clone()),
            ("email", email.to_owned()),
            ("password", password.to_owned()),
            ("next", next.to_owned()),
        ];
        let cookie = format!("herald_login_csrf={token}");
        self.send(
            Method::POST,
            "/dashboard/login",
            Some(&cookie),
            headers,
            Some(form.as_slice()),
        )
        .await
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Session {
        let page = self
            .attempt_sign_in(email, password, "/dashboard/apps", &[])
            .await;
        assert_eq!(page.status, 303, "sign-in of {email}: {}", page.body);
        assert_eq!(page.location(), "/dashboard/apps");
        let token = page
            .cookie("herald_session")
            .expect("sign-in sets the session cookie");
        assert!(!token.is_empty());
        let cookie = format!("herald_session={token}");
        let account = self.get(Some(&cookie), "/dashboard/account").await;
        assert_eq!(account.status, 200, "{}", account.body);
        assert!(
            account.body.contains(email),
            "the account page names {email}"
        );
        let csrf = hidden(&account.body, "csrf");
        assert!(!csrf.is_empty());
        Session { cookie, csrf }
    }
}

/// Every GET page of an app.
pub fn app_pages(id: &str) -> Vec<String> {
    [
        "",
        "/keys",
        "/usage",
        "/live",
        "/live/events",
        "/webhooks",
        "/getting-started",
        "/delete",
    ]
    .iter()
    .map(|suffix| format!("/dashboard/apps/{id}{suffix}"))
    .collect()
}

/// Every GET page outside an app.
pub fn other_pages() -> Vec<String> {
    [
        "/dashboard/apps",
        "/dashboard/tenants",
        "/dashboard/users",
        "/dashboard/account",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect()
}

/// Every form of an app's pages, filled in so that it would change the app if let through (the
/// app `id` with webhook `hook`, a working `key` that may be revoked, and its `name` to confirm
/// the deletion), in an order in which each succeeds for the app's own admin.
pub fn app_forms(id: &str, hook: &str, key: &str, name: &str) -> Vec<(String, Form)> {
    let base = format!("/dashboard/apps/{id}");
    vec![
        (
            base.clone(),
            vec![
                ("name", RENAMED.into()),
                ("allowed_origins", "https://sneaky.example".into()),
            ],
        ),
        (format!("{base}/keys/reveal"), vec![]),
        (
            format!("{base}/keys/rotate"),
            vec![("grace_hours", "0".into())],
        ),
        (format!("{base}/keys/revoke"), vec![("key", key.into())]),
        (
            format!("{base}/webhooks"),
            vec![
                ("url", "http://127.0.0.1:9/added".into()),
                ("events", "channel_occupied".into()),
            ],
        ),
        (
            format!("{base}/webhooks/{hook}"),
            vec![
                ("url", "http://127.0.0.1:9/changed".into()),
                ("events", "member_added".into()),
                ("prefix", "changed-".into()),
            ],
        ),
        (format!("{base}/webhooks/{hook}/test"), vec![]),
        (format!("{base}/webhooks/retry"), vec![]),
        (format!("{base}/webhooks/{hook}/remove"), vec![]),
        (format!("{base}/delete"), vec![("confirm", name.into())]),
    ]
}

/// The operator's forms (tenants and users).
pub fn operator_forms() -> Vec<(String, Form)> {
    vec![
        (
            "/dashboard/tenants".into(),
            vec![("name", "Sneaky tenant".into())],
        ),
        (
            "/dashboard/tenants/1".into(),
            vec![("max_apps", "1".into()), ("plans", "unlimited".into())],
        ),
        (
            "/dashboard/users".into(),
            vec![
                ("email", "sneaky@example.test".into()),
                ("password", "sneaky password".into()),
                ("tenant", "operator".into()),
            ],
        ),
        (
            "/dashboard/users/password".into(),
            vec![
                ("email", OPERATOR.into()),
                ("password", "hijacked password".into()),
            ],
        ),
    ]
}

/// Every signed-in admin's forms outside an app (`password` is the admin's current one).
pub fn account_forms(password: &str) -> Vec<(String, Form)> {
    vec![
        (
            "/dashboard/apps".into(),
            vec![("name", "Sneaky app".into()), ("plan", "sandbox".into())],
        ),
        (
            "/dashboard/account/password".into(),
            vec![
                ("current", password.into()),
                ("new", "changed password 2".into()),
                ("confirm", "changed password 2".into()),
            ],
        ),
        ("/dashboard/logout".into(), vec![]),
    ]
}

/// Everything the dashboard could change, read from the store.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    tenants: Vec<Tenant>,
    users: Vec<User>,
    apps: Vec<App>,
    webhooks: Vec<Webhook>,
    deliveries: Vec<Delivery>,
}

pub async fn snapshot(app: &TestApp) -> Snapshot {
    let store = &app.node.store;
    let apps = store.list_apps(None).await.expect("apps");
    let mut deliveries = Vec::new();
    for a in &apps {
        deliveries.extend(
            store
                .deliveries(&a.id, None, 1000)
                .await
                .expect("deliveries"),
        );
    }
    Snapshot {
        tenants: store.list_tenants().await.expect("tenants"),
        users: store.list_users().await.expect("users"),
        webhooks: store.list_webhooks(None).await.expect("webhooks"),
        apps,
        deliveries,
    }
}

pub async fn password_works(app: &TestApp, email: &str, password: &str) -> bool {
    app.node
        .store
        .authenticate(email, password)
        .await
        .expect("authenticate")
        .is_some()
}

pub async fn add_webhook(app: &TestApp, app_id: &str) -> String {
    let hook = app
        .node
        .store
        .create_webhook(NewWebhook {
            app_id: app_id.into(),
            url: DEAD_URL.into(),
            events: vec!["channel_occupied".into()],
            channel_prefix: None,
            headers: Vec::new(),
        })
        .await
        .expect("webhook is added");
    herald::startup::refresh_apps(&app.node)
        .await
        .expect("cache refreshes");
    hook.id
}

/// A delivery of `hook` that has failed for good (kept until retried by hand).
pub async fn failed_delivery(app: &TestApp, app_id: &str, hook: &str) -> i64 {
    let now = herald::clock::Clock::system().now_millis();
    let id = app.node.webhooks.next_id(now);
    let store = &app.node.store;
    store
        .insert_deliveries(&[NewDelivery {
            id,
            webhook_id: hook.into(),
            app_id: app_id.into(),
            events: json!([{"name": "channel_occupied", "channel": "x"}]).to_string(),
            channels: vec!["x".into()],
            // Due in an hour: the node's webhook worker, which may load the row before it is
            // marked failed below, must not attempt it and overwrite that status (a race seen
            // once in CI).
            created_at: now + 3_600_000,
        }])
        .await
        .expect("delivery is written");
    store
        .record_attempt(
            id,
            &Attempt {
                status: DeliveryStatus::Failed,
                attempts: 5,
                at: now,
                next_attempt_at: now,
                http_status: 500,
                error: "HTTP 500".into(),
                latency_ms: 3,
            },
        )
        .await
        .expect("attempt is recorded");
    id
}

/// Two tenants: Acme, with a user of every tenant role (`{role}@acme.test`), and Globex, with an
/// admin (`admin@globex.test`), every one with `password`. Answers the tenants and Acme's user
/// ids by role.
pub async fn acme_and_globex(
    app: &TestApp,
    password: &str,
) -> (Tenant, Tenant, std::collections::HashMap<UserRole, String>) {
    let store = &app.node.store;
    let acme = store.create_tenant("Acme").await.unwrap();
    let globex = store.create_tenant("Globex").await.unwrap();
    let mut ids = std::collections::HashMap::new();
    for role in UserRole::TENANT_ROLES {
        let user = store
            .create_user(&format!("{role}@acme.test"), password, role, Some(&acme.id))
            .await
            .unwrap();
        ids.insert(role, user.id);
    }
    store
        .create_user(
            "admin@globex.test",
            password,
            UserRole::Admin,
            Some(&globex.id),
        )
        .await
        .unwrap();
    (acme, globex, ids)
}
