//! Test support: a node built as the server builds it (default app with known credentials, a
//! fresh SQLite store), and sessions on detached connections whose outboxes the test reads.

use serde_json::Value;

use crate::hub::{ConnHandle, Connection, DetachedOutbox};
use crate::node::SharedNode;
use crate::startup::Application;
use crate::transport::session::Session;

pub(crate) const APP_ID: &str = "4242";
pub(crate) const KEY: &str = "test-key-0123456789abc";
pub(crate) const SECRET: &str = "test-secret-0123456789abcdef";

/// A node that is built but not serving.
pub(crate) struct TestNode {
    pub(crate) node: SharedNode,
    // Kept so the node's listener, event queue and store directory outlive the test.
    _application: Application,
    _data_dir: tempfile::TempDir,
}

impl TestNode {
    /// A node with the default app `APP_ID` (client events on, Pusher's default limits).
    pub(crate) async fn new() -> TestNode {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = crate::config::Settings::for_tests(data_dir.path().to_path_buf());
        settings.default_app.id = Some(APP_ID.into());
        settings.default_app.key = Some(KEY.into());
        settings.default_app.secret = Some(crate::tenants::Secret::new(SECRET.into()));
        let application = Application::build(settings).await.expect("node builds");
        TestNode {
            node: application.node(),
            _application: application,
            _data_dir: data_dir,
        }
    }

    /// Changes the default app as the node sees it (the store is left alone).
    pub(crate) fn change_app(&self, change: impl FnOnce(&mut crate::tenants::App)) {
        let mut app = (*self.node.apps.by_id(APP_ID).expect("the default app")).clone();
        change(&mut app);
        let revision = self.node.apps.revision().unwrap_or(0) + 1;
        self.node
            .apps
            .replace(revision, vec![app], self.node.settings.clock.now_seconds());
    }

    /// A session of the default app on a fresh detached connection.
    pub(crate) fn session(&self) -> TestSession {
        let app_hub = self.node.hub.app(APP_ID);
        let (conn, outbox) = Connection::new(self.node.hub.next_socket_id(), 4096);
        assert!(app_hub.connect(&conn, None));
        let session = Session::new(self.node.clone(), APP_ID.into(), app_hub, conn.clone());
        TestSession {
            session,
            conn,
            outbox,
        }
    }
}

/// A session and what it sends back.
pub(crate) struct TestSession {
    pub(crate) session: Session,
    pub(crate) conn: ConnHandle,
    outbox: DetachedOutbox,
}

impl TestSession {
    /// The socket id, as clients sign it.
    pub(crate) fn socket_id(&self) -> String {
        self.conn.socket_id().to_string()
    }

    /// Feeds one client frame.
    pub(crate) fn send(&mut self, frame: Value) {
        self.session.on_text(&frame.to_string());
    }

    /// Feeds one raw text frame.
    pub(crate) fn send_text(&mut self, text: &str) {
        self.session.on_text(text);
    }

    /// Runs the session's deferred work and the frames queued behind it.
    pub(crate) async fn drive(&mut self) {
        self.session.drive().await;
    }

    /// The frames answered so far, decoded.
    pub(crate) fn frames(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(frame) = self.outbox.try_recv() {
            frames.push(serde_json::from_slice(&frame).expect("frames are JSON"));
        }
        frames
    }

    /// `auth` for a channel, signed with the default app's secret.
    pub(crate) fn channel_auth(&self, channel: &str, channel_data: Option<&str>) -> String {
        let to_sign = crate::auth::channel_string_to_sign(&self.socket_id(), channel, channel_data);
        format!("{KEY}:{}", crate::auth::sign(SECRET, &to_sign))
    }
}
