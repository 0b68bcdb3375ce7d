//! REST request signing against a spawned server: the contract's golden vectors and the SDKs'
//! quirks (body_md5 on GETs, percent-encoded query values), and the refusals of a request that
//! is badly signed, stale, for an unknown or disabled app, or signed with another app's key (events
//! never cross apps, and error bodies are short text).

use std::time::Duration;

use serde_json::json;

use herald::tenants::{AppPatch, NewApp, Secret};

use crate::helpers::*;
use crate::rest_helpers::*;

/// The credentials of the contract's worked example (DOCS `rest-api.md`).
const DOC_APP_ID: &str = "3";
const DOC_KEY: &str = "278d425bdf160c739803";
const DOC_SECRET: &str = "7ad3773142a6692b25b8";
const DOC_TIMESTAMP: i64 = 1353088179;
const DOC_BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// Adds the contract's example app (id 3) to the store and waits until the server knows it.
async fn add_doc_app(app: &TestApp) {
    app.node
        .store
        .create_app(NewApp {
            name: "Docs example".into(),
            id: Some(DOC_APP_ID.into()),
            key: Some(DOC_KEY.into()),
            secret: Some(Secret::new(DOC_SECRET.into())),
            ..NewApp::default()
        })
        .await
        .expect("the example app is created");
    wait_until("the example app is in the cache", || {
        app.node.apps.by_id(DOC_APP_ID).is_some()
    })
    .await;
}

/// A second app with random credentials, known to the server on return.
async fn add_second_app(app: &TestApp) -> herald::tenants::App {
    let other = app
        .node
        .store
        .create_app(NewApp {
            name: "Other".into(),
            ..NewApp::default()
        })
        .await
        .expect("the second app is created");
    let id = other.id.clone();
    wait_until("the second app is in the cache", || {
        app.node.apps.by_id(&id).is_some()
    })
    .await;
    other
}

// ---------------------------------------------------------------------------------------------
// Signing: golden vectors and SDK quirks

#[test]
fn the_test_signer_reproduces_the_contracts_golden_vectors() {
    assert_eq!(
        md5_hex(DOC_BODY.as_bytes()),
        "ec365a775a4cd0599faeb73354201b6f"
    );
    assert_eq!(md5_hex(b""), EMPTY_MD5);
    let post = signed_params(
        "POST",
        "/apps/3/events",
        &[],
        Some("ec365a775a4cd0599faeb73354201b6f"),
        DOC_KEY,
        DOC_SECRET,
        DOC_TIMESTAMP,
    );
    assert_eq!(
        post.last().unwrap(),
        &(
            "auth_signature".to_owned(),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c".to_owned()
        )
    );
    let query = [("filter_by_prefix", "presence-"), ("info", "user_count")];
    let node_get = signed_params(
        "GET",
        "/apps/3/channels",
        &query,
        None,
        DOC_KEY,
        DOC_SECRET,
        DOC_TIMESTAMP,
    );
    assert_eq!(
        node_get.last().unwrap().1,
        "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291"
    );
    let python_get = signed_params(
        "GET",
        "/apps/3/channels",
        &query,
        Some(EMPTY_MD5),
        DOC_KEY,
        DOC_SECRET,
        DOC_TIMESTAMP,
    );
    assert_eq!(
        python_get.last().unwrap().1,
        "f3f17c61ae491cc9085db68b22076e9b772e3bcb301659d655153ee3f9782aba"
    );
}

#[tokio::test]
async fn the_docs_worked_example_is_verified_up_to_its_expired_timestamp() {
    let app = spawn_app().await;
    add_doc_app(&app).await;
    // The exact request of the docs: the signature is right, but 2012 is far outside ±600 s.
    let params: Vec<(String, String)> = [
        ("auth_key", DOC_KEY),
        ("auth_timestamp", "1353088179"),
        ("auth_version", "1.0"),
        ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        (
            "auth_signature",
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (status, body) = app
        .send("POST", "/apps/3/events", &params, Some(DOC_BODY))
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Timestamp expired"), "{body}");
}

#[tokio::test]
async fn the_docs_worked_example_signed_now_is_accepted() {
    let app = spawn_app().await;
    add_doc_app(&app).await;
    let mut client = app.connect_key(DOC_KEY).await;
    client.subscribe("project-3").await;
    let params = signed_params(
        "POST",
        "/apps/3/events",
        &[],
        Some("ec365a775a4cd0599faeb73354201b6f"),
        DOC_KEY,
        DOC_SECRET,
        now(),
    );
    let (status, body) = app
        .send("POST", "/apps/3/events", &params, Some(DOC_BODY))
        .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let event = client.expect_next("foo").await;
    assert_eq!(event["channel"], "project-3");
    assert_eq!(event["data"], r#"{"some":"data"}"#);
}

#[tokio::test]
async fn a_get_signed_with_body_md5_of_the_empty_body_is_accepted_as_python_sends_it() {
    let app = spawn_app().await;
    add_doc_app(&app).await;
    let query = [("filter_by_prefix", "presence-"), ("info", "user_count")];
    let params = signed_params(
        "GET",
        "/apps/3/channels",
        &query,
        Some(EMPTY_MD5),
        DOC_KEY,
        DOC_SECRET,
        now(),
    );
    let (status, body) = app.send("GET", "/apps/3/channels", &params, None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"channels":{}}"#));
}

#[tokio::test]
async fn a_get_without_body_md5_is_accepted_as_node_and_php_send_it() {
    let app = spawn_app().await;
    add_doc_app(&app).await;
    let query = [("filter_by_prefix", "presence-"), ("info", "user_count")];
    let params = signed_params(
        "GET",
        "/apps/3/channels",
        &query,
        None,
        DOC_KEY,
        DOC_SECRET,
        now(),
    );
    let (status, body) = app.send("GET", "/apps/3/channels", &params, None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"channels":{}}"#));
}

#[tokio::test]
async fn a_get_whose_body_md5_is_not_the_empty_bodys_is_401() {
    let app = spawn_app().await;
    let params = signed_params(
        "GET",
        "/apps/4242/channels",
        &[],
        Some(&md5_hex(b"{}")),
        KEY,
        SECRET,
        now(),
    );
    let (status, body) = app.send("GET", "/apps/4242/channels", &params, None).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn percent_encoded_query_values_are_verified_decoded_as_guzzle_sends_them() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    // Signed over `info=user_count,subscription_count`, sent as `user_count%2Csubscription_count`
    // (pusher-http-php through Guzzle).
    let params = signed_params(
        "GET",
        "/apps/4242/channels/presence-room",
        &[("info", "user_count,subscription_count")],
        None,
        KEY,
        SECRET,
        now(),
    );
    let encoded: Vec<(String, String)> = params
        .into_iter()
        .map(|(k, v)| (k, v.replace(',', "%2C")))
        .collect();
    assert!(encoded.iter().any(|(_, v)| v.contains("%2C")));
    let (status, body) = app
        .send("GET", "/apps/4242/channels/presence-room", &encoded, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"occupied": true, "user_count": 1, "subscription_count": 1})
    );
}

// Refusals

#[tokio::test]
async fn trigger_with_a_bad_signature_is_401() {
    let app = spawn_app().await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let (status, text) = app
        .rest_signed(
            "POST",
            "/apps/4242/events",
            "/apps/4242/events",
            &[],
            Some(&body),
            KEY,
            "not-the-secret",
            now(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    // Signed over another path.
    let (status, text) = app
        .rest_signed(
            "POST",
            "/apps/4242/events",
            "/apps/4242/batch_events",
            &[],
            Some(&body),
            KEY,
            SECRET,
            now(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
}

#[tokio::test]
async fn a_parameter_added_after_signing_is_401() {
    let app = spawn_app().await;
    let mut params = signed_params("GET", "/apps/4242/channels", &[], None, KEY, SECRET, now());
    params.push(("filter_by_prefix".into(), "presence-".into()));
    let (status, body) = app.send("GET", "/apps/4242/channels", &params, None).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn trigger_with_a_stale_timestamp_is_401() {
    let app = spawn_app().await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    for skew in [-601, 601, -3600] {
        let (status, text) = app
            .rest_signed(
                "POST",
                "/apps/4242/events",
                "/apps/4242/events",
                &[],
                Some(&body),
                KEY,
                SECRET,
                now() + skew,
            )
            .await;
        assert_eq!(status, 401, "skew {skew}: {text}");
    }
    // Well inside the window either way.
    for skew in [-500, 500] {
        let (status, text) = app
            .rest_signed(
                "POST",
                "/apps/4242/events",
                "/apps/4242/events",
                &[],
                Some(&body),
                KEY,
                SECRET,
                now() + skew,
            )
            .await;
        assert_eq!((status, text.as_str()), (200, "{}"), "skew {skew}");
    }
}

#[tokio::test]
async fn trigger_with_a_wrong_body_md5_is_401() {
    let app = spawn_app().await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let other = json!({"name":"e","channels":["sport"],"data":"{}"}).to_string();
    // Correctly signed, but over the MD5 of another body.
    let params = signed_params(
        "POST",
        "/apps/4242/events",
        &[],
        Some(&md5_hex(other.as_bytes())),
        KEY,
        SECRET,
        now(),
    );
    let (status, text) = app
        .send("POST", "/apps/4242/events", &params, Some(&body))
        .await;
    assert_eq!(status, 401, "{text}");
    // A body sent without any body_md5.
    let params = signed_params("POST", "/apps/4242/events", &[], None, KEY, SECRET, now());
    let (status, text) = app
        .send("POST", "/apps/4242/events", &params, Some(&body))
        .await;
    assert_eq!(status, 401, "{text}");
}

#[tokio::test]
async fn a_request_missing_an_auth_parameter_is_401() {
    let app = spawn_app().await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let full = signed_params(
        "POST",
        "/apps/4242/events",
        &[],
        Some(&md5_hex(body.as_bytes())),
        KEY,
        SECRET,
        now(),
    );
    for missing in [
        "auth_key",
        "auth_timestamp",
        "auth_version",
        "auth_signature",
    ] {
        let params: Vec<(String, String)> =
            full.iter().filter(|(k, _)| k != missing).cloned().collect();
        let (status, text) = app
            .send("POST", "/apps/4242/events", &params, Some(&body))
            .await;
        assert_eq!(status, 401, "without {missing}: {text}");
    }
    let (status, text) = app.send("GET", "/apps/4242/channels", &[], None).await;
    assert_eq!(status, 401, "no parameters at all: {text}");
}

#[tokio::test]
async fn an_unknown_auth_version_is_401() {
    let app = spawn_app().await;
    let mut params = signed_params("GET", "/apps/4242/channels", &[], None, KEY, SECRET, now());
    for (k, v) in params.iter_mut() {
        if k == "auth_version" {
            *v = "2.0".into();
        }
    }
    let signature = sign_request(SECRET, "GET", "/apps/4242/channels", &params);
    params.retain(|(k, _)| k != "auth_signature");
    params.push(("auth_signature".into(), signature));
    let (status, body) = app.send("GET", "/apps/4242/channels", &params, None).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn a_request_for_an_unknown_app_id_is_404() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/apps/9999/events",
            json!({"name":"e","channels":["news"],"data":"{}"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.get("/apps/9999/channels", &[]).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_request_signed_with_another_apps_key_is_401() {
    let app = spawn_app().await;
    let other = add_second_app(&app).await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let (status, text) = app
        .rest_signed(
            "POST",
            "/apps/4242/events",
            "/apps/4242/events",
            &[],
            Some(&body),
            &other.key,
            other.secret.expose(),
            now(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    // The other app's own path accepts its credentials.
    let path = format!("/apps/{}/events", other.id);
    let (status, text) = app
        .rest_signed(
            "POST",
            &path,
            &path,
            &[],
            Some(&body),
            &other.key,
            other.secret.expose(),
            now(),
        )
        .await;
    assert_eq!((status, text.as_str()), (200, "{}"));
}

#[tokio::test]
async fn events_do_not_cross_apps() {
    let app = spawn_app().await;
    let other = add_second_app(&app).await;
    let mut theirs = app.connect_key(&other.key).await;
    theirs.subscribe("news").await;
    let mut ours = app.connect().await;
    ours.subscribe("news").await;
    publish_marker(&app, "news").await;
    ours.expect_next("marker").await;
    theirs.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_disabled_app_gets_403() {
    let app = spawn_app().await;
    app.node
        .store
        .update_app(
            APP_ID,
            AppPatch {
                enabled: Some(false),
                ..AppPatch::default()
            },
        )
        .await
        .expect("the app is disabled");
    wait_until("the cache sees the app disabled", || {
        app.node.apps.by_id(APP_ID).is_some_and(|a| !a.enabled)
    })
    .await;
    let (status, body) = trigger(&app, json!({"name":"e","channels":["news"],"data":"{}"})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app.get("/apps/4242/channels", &[]).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn error_bodies_are_short_text_not_internals() {
    let app = spawn_app().await;
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channels":["bad name"],"data":"{}"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(!body.trim().is_empty() && body.len() < 500, "{body:?}");
}
