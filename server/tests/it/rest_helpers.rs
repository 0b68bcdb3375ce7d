//! What the REST tests share: a JSON body parser and a signed trigger to the test app, and a
//! marker event that proves nothing was delivered before it.

use serde_json::{json, Value};

use crate::helpers::*;

pub fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"))
}

pub async fn trigger(app: &TestApp, body: Value) -> (u16, String) {
    app.post("/apps/4242/events", body).await
}

/// Publishes a marker event on `channel`: the next frame a subscriber reads must be it, which
/// proves nothing was delivered before it.
pub async fn publish_marker(app: &TestApp, channel: &str) {
    let (status, body) = trigger(
        app,
        json!({"name":"marker","channels":[channel],"data":"{}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}
