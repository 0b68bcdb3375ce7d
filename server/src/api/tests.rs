//! The signed-request extractor's refusals and a few handlers' answers, through the router.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};

use super::test_support::{SignedRequest, TestNode, APP_ID, KEY, NOW};

const EVENTS: &str = "/apps/4242/events";
const EVENT: &str = r#"{"name":"e","channels":["my-channel"],"data":"{}"}"#;

// ---------------------------------------------------------------------------------------------
// The extractor's refusals

#[tokio::test]
async fn a_signed_trigger_passes() {
    let node = TestNode::new().await;
    let request = SignedRequest::new("POST", EVENTS).body(EVENT).build();
    assert_eq!(node.send(request).await, (StatusCode::OK, "{}".into()));
}

#[tokio::test]
async fn a_bad_signature_is_refused_with_the_string_to_sign() {
    let node = TestNode::new().await;
    let mut request = SignedRequest::new("POST", EVENTS).body(EVENT);
    request.secret = "not-the-secret".into();
    let (status, body) = node.send(request.build()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body.starts_with(
            "Invalid signature: you should have sent HmacSHA256Hex(\"POST\\n/apps/4242/events\\n"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_by_the_nodes_clock() {
    let node = TestNode::new().await;
    let mut request = SignedRequest::new("POST", EVENTS).body(EVENT);
    request.timestamp = NOW - 601;
    assert_eq!(
        node.send(request.clone().build()).await,
        (
            StatusCode::UNAUTHORIZED,
            format!(
                "Timestamp expired: Given timestamp ({}) not within 600s of server time ({NOW})\n",
                NOW - 601
            )
        )
    );
    // The node's clock, not the wall clock: moved forward, the old request is fresh again.
    node.node.settings.clock.set_millis((NOW - 601) * 1000);
    assert_eq!(node.send(request.build()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_body_md5_is_refused() {
    let node = TestNode::new().await;
    let mut request = SignedRequest::new("POST", EVENTS).body(EVENT);
    request.body_md5 = Some(crate::auth::body_md5(b"another body"));
    assert_eq!(
        node.send(request.build()).await,
        (
            StatusCode::UNAUTHORIZED,
            "Invalid body_md5: does not match the MD5 of the request body\n".into()
        )
    );
}

#[tokio::test]
async fn unknown_keys_and_apps_are_refused() {
    let node = TestNode::new().await;
    let mut request = SignedRequest::new("POST", EVENTS).body(EVENT);
    request.key = "unknown-key".into();
    assert_eq!(
        node.send(request.clone().build()).await,
        (
            StatusCode::UNAUTHORIZED,
            format!("Invalid auth_key: unknown-key is not a key of app {APP_ID}\n")
        )
    );
    // Without an app in the path, the app is the key's.
    request.path = "/users/u1/terminate_connections".into();
    assert_eq!(
        node.send(request.build()).await,
        (
            StatusCode::UNAUTHORIZED,
            "Unknown auth_key: unknown-key\n".into()
        )
    );
    let request = SignedRequest::new("GET", "/apps/999/channels").build();
    assert_eq!(
        node.send(request).await,
        (StatusCode::NOT_FOUND, "Unknown app: 999\n".into())
    );
    let request = Request::get("/apps/4242/channels")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        node.send(request).await,
        (
            StatusCode::UNAUTHORIZED,
            "Missing parameter: auth_key\n".into()
        )
    );
}

#[tokio::test]
async fn a_path_that_is_not_utf8_is_refused_as_axum_refuses_it() {
    let node = TestNode::new().await;
    let request = SignedRequest::new("GET", "/apps/%FF/channels").build();
    assert_eq!(
        node.send(request).await,
        (
            StatusCode::BAD_REQUEST,
            "Invalid URL: Invalid UTF-8 in `app_id`".into()
        )
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_from_its_headers_before_anything_else() {
    let node = TestNode::new().await;
    // Unknown key and all: the announced size is judged first.
    let request = Request::post(format!("{EVENTS}?auth_key=unknown"))
        .header(header::CONTENT_LENGTH, super::MAX_BODY_BYTES + 1)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        node.send(request).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Failed to buffer the request body: length limit exceeded\n".into()
        )
    );
}

#[tokio::test]
async fn a_body_over_the_node_budget_waits_for_its_headers_to_pass_first() {
    let node = TestNode::with(|settings| settings.body_buffer_bytes = 16).await;
    // A stale request is refused from its headers: its body never draws on the budget.
    let mut stale = SignedRequest::new("POST", EVENTS).body(EVENT);
    stale.timestamp = NOW - 601;
    assert_eq!(node.send(stale.build()).await.0, StatusCode::UNAUTHORIZED);
    // A fresh one reads its body, which is more than the budget.
    let request = SignedRequest::new("POST", EVENTS).body(EVENT).build();
    let (status, body) = node.send(request).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Server busy: too many request bodies in flight, retry shortly\n"
        )
    );
    assert_eq!(node.node.body_budget.available(), 16, "given back");
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_is_refused_after_the_signature() {
    let node = TestNode::new().await;
    let request = SignedRequest::new("POST", EVENTS).body("{nope").build();
    let (status, body) = node.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("Invalid JSON body: "), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Answers

#[tokio::test]
async fn trigger_and_batch_answer_the_attributes_asked_for() {
    let node = TestNode::new().await;
    let body = r#"{"name":"e","channels":["presence-b","a"],"data":"{}","info":"user_count,subscription_count"}"#;
    assert_eq!(
        node.signed("POST", EVENTS, &[], Some(body)).await,
        (
            StatusCode::OK,
            r#"{"channels":{"a":{"subscription_count":0},"presence-b":{"subscription_count":0,"user_count":0}}}"#.into()
        )
    );
    let batch = r#"{"batch":[{"name":"e","channel":"a","data":"x"},{"name":"e","channel":"presence-b","data":"x","info":"user_count"}]}"#;
    assert_eq!(
        node.signed("POST", "/apps/4242/batch_events", &[], Some(batch))
            .await,
        (StatusCode::OK, r#"{"batch":[{},{"user_count":0}]}"#.into())
    );
    let plain = r#"{"batch":[{"name":"e","channel":"a","data":"x"}]}"#;
    assert_eq!(
        node.signed("POST", "/apps/4242/batch_events", &[], Some(plain))
            .await,
        (StatusCode::OK, "{}".into())
    );
}

#[tokio::test]
async fn channel_queries_answer_in_pushers_shape() {
    let node = TestNode::new().await;
    assert_eq!(
        node.signed(
            "GET",
            "/apps/4242/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
            None
        )
        .await,
        (StatusCode::OK, r#"{"channels":{}}"#.into())
    );
    assert_eq!(
        node.signed(
            "GET",
            "/apps/4242/channels/presence-x",
            &[("info", "user_count,subscription_count")],
            None
        )
        .await,
        (
            StatusCode::OK,
            r#"{"occupied":false,"subscription_count":0,"user_count":0}"#.into()
        )
    );
    assert_eq!(
        node.signed(
            "GET",
            "/apps/4242/channels/cache-x",
            &[("info", "cache")],
            None
        )
        .await,
        (StatusCode::OK, r#"{"cache":null,"occupied":false}"#.into())
    );
    let event = r#"{"name":"e","channels":["cache-x"],"data":"{\"x\":1}"}"#;
    assert_eq!(
        node.signed("POST", EVENTS, &[], Some(event)).await.0,
        StatusCode::OK
    );
    let (status, body) = node
        .signed(
            "GET",
            "/apps/4242/channels/cache-x",
            &[("info", "cache")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with(r#"{"cache":{"data":"{\"x\":1}","ttl":"#)
            && body.ends_with(r#"},"occupied":false}"#),
        "{body}"
    );
    assert_eq!(
        node.signed("GET", "/apps/4242/channels/presence-x/users", &[], None)
            .await,
        (StatusCode::OK, r#"{"users":[]}"#.into())
    );
    assert_eq!(
        node.signed(
            "POST",
            "/apps/4242/users/u1/terminate_connections",
            &[],
            Some("{}")
        )
        .await,
        (StatusCode::OK, "{}".into())
    );
    let mut python = SignedRequest::new("POST", "/users/u1/terminate_connections").body("{}");
    python.key = KEY.into();
    assert_eq!(
        node.send(python.build()).await,
        (StatusCode::OK, "{}".into())
    );
}
