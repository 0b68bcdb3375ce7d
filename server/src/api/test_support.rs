//! A node and signed requests for the API's unit tests, which drive [`super::router`] with
//! `tower::ServiceExt::oneshot` instead of sockets. The node is a whole one (a temporary SQLite
//! store with the default app below) on a manual clock stopped at [`NOW`].

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

use crate::clock::Clock;
use crate::config::Settings;
use crate::node::SharedNode;
use crate::startup::Application;

pub(crate) const APP_ID: &str = "4242";
pub(crate) const KEY: &str = "test-key-0123456789abc";
pub(crate) const SECRET: &str = "test-secret-0123456789abcdef";
/// The node's time, in Unix seconds.
pub(crate) const NOW: i64 = 1_700_000_000;

/// A node with the default app, and the temporary directory its store lives in.
pub(crate) struct TestNode {
    pub(crate) node: SharedNode,
    _data_dir: tempfile::TempDir,
}

impl TestNode {
    /// A node with the test settings.
    pub(crate) async fn new() -> TestNode {
        TestNode::with(|_| {}).await
    }

    /// A node with the test settings as `configure` leaves them.
    pub(crate) async fn with(configure: impl FnOnce(&mut Settings)) -> TestNode {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::for_tests(data_dir.path().to_path_buf());
        settings.default_app.id = Some(APP_ID.into());
        settings.default_app.key = Some(KEY.into());
        settings.default_app.secret = Some(crate::tenants::Secret::new(SECRET.into()));
        settings.clock = Clock::manual(NOW * 1000);
        configure(&mut settings);
        let application = Application::build(settings).await.expect("node builds");
        TestNode {
            node: application.node(),
            _data_dir: data_dir,
        }
    }

    /// Sends `request` through the REST routes; returns the status and the body as text.
    pub(crate) async fn send(&self, request: Request<Body>) -> (StatusCode, String) {
        let router: Router = super::router().with_state(self.node.clone());
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Sends a request signed with the default app's credentials at [`NOW`].
    pub(crate) async fn signed(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&str>,
    ) -> (StatusCode, String) {
        let request = SignedRequest::new(method, path).query(query);
        let request = match body {
            Some(body) => request.body(body),
            None => request,
        };
        self.send(request.build()).await
    }
}

/// A REST request being put together, signed when built.
#[derive(Debug, Clone)]
pub(crate) struct SignedRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Option<String>,
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) timestamp: i64,
    /// `Some`: this `body_md5` instead of the body's.
    pub(crate) body_md5: Option<String>,
}

impl SignedRequest {
    /// `method path`, signed by the default app's key at [`NOW`].
    pub(crate) fn new(method: &str, path: &str) -> SignedRequest {
        SignedRequest {
            method: method.into(),
            path: path.into(),
            query: Vec::new(),
            body: None,
            key: KEY.into(),
            secret: SECRET.into(),
            timestamp: NOW,
            body_md5: None,
        }
    }

    /// Adds query parameters (plain values: they are not percent-encoded).
    pub(crate) fn query(mut self, pairs: &[(&str, &str)]) -> SignedRequest {
        self.query
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Sets the body (signed with its `body_md5`).
    pub(crate) fn body(mut self, body: &str) -> SignedRequest {
        self.body = Some(body.into());
        self
    }

    /// The query string, `auth_*` parameters and signature included.
    pub(crate) fn query_string(&self) -> String {
        let mut params = self.query.clone();
        params.push(("auth_key".into(), self.key.clone()));
        params.push(("auth_timestamp".into(), self.timestamp.to_string()));
        params.push(("auth_version".into(), "1.0".into()));
        let md5 = self.body_md5.clone().or_else(|| {
            self.body
                .as_deref()
                .map(|body| crate::auth::body_md5(body.as_bytes()))
        });
        if let Some(md5) = md5 {
            params.push(("body_md5".into(), md5));
        }
        let string_to_sign = crate::auth::rest_string_to_sign(&self.method, &self.path, &params);
        let signature = crate::auth::sign(&self.secret, &string_to_sign);
        params.push(("auth_signature".into(), signature));
        params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The HTTP request.
    pub(crate) fn build(self) -> Request<Body> {
        let uri = format!("{}?{}", self.path, self.query_string());
        let builder = Request::builder().method(self.method.as_str()).uri(uri);
        match self.body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(Body::from(body)),
            None => builder.body(Body::empty()),
        }
        .expect("request builds")
    }
}
