//! The REST API against a spawned server: signing (the contract's golden vectors and the SDKs'
//! quirks), trigger and batch, channel queries, user termination, refusals, CORS and health.

use std::time::Duration;

use serde_json::{json, Value};

use herald::tenants::{AppPatch, NewApp, Secret};

use crate::helpers::*;

/// The credentials of the contract's worked example (DOCS `rest-api.md`).
const DOC_APP_ID: &str = "3";
const DOC_KEY: &str = "278d425bdf160c739803";
const DOC_SECRET: &str = "7ad3773142a6692b25b8";
const DOC_TIMESTAMP: i64 = 1353088179;
const DOC_BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"))
}

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

async fn trigger(app: &TestApp, body: Value) -> (u16, String) {
    app.post("/apps/4242/events", body).await
}

async fn batch(app: &TestApp, body: Value) -> (u16, String) {
    app.post("/apps/4242/batch_events", body).await
}

/// Publishes a marker event on `channel`: the next frame a subscriber reads must be it, which
/// proves nothing was delivered before it.
async fn publish_marker(app: &TestApp, channel: &str) {
    let (status, body) = trigger(
        app,
        json!({"name":"marker","channels":[channel],"data":"{}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
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

// ---------------------------------------------------------------------------------------------
// Trigger

#[tokio::test]
async fn trigger_with_a_single_channel_field_as_php_sends_it_is_delivered() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let (status, body) = trigger(
        &app,
        json!({"name":"headline","channel":"news","data":"{\"title\":\"hi\"}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let event = client.expect_next("headline").await;
    assert_eq!(event["channel"], "news");
    assert_eq!(event["data"], r#"{"title":"hi"}"#);
}

#[tokio::test]
async fn trigger_with_a_channels_list_reaches_every_listed_channel_once() {
    let app = spawn_app().await;
    let mut on_a = app.connect().await;
    on_a.subscribe("a").await;
    let mut on_b = app.connect().await;
    on_b.subscribe("b").await;
    let mut on_c = app.connect().await;
    on_c.subscribe("c").await;
    let (status, body) = trigger(
        &app,
        json!({"name":"tick","channels":["a","b","a"],"data":"1"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(on_a.expect_next("tick").await["channel"], "a");
    assert_eq!(on_b.expect_next("tick").await["channel"], "b");
    // A duplicate channel is published once; an unlisted channel gets nothing.
    publish_marker(&app, "a").await;
    on_a.expect_next("marker").await;
    publish_marker(&app, "c").await;
    on_c.expect_next("marker").await;
}

#[tokio::test]
async fn trigger_with_info_returns_user_and_subscription_counts_per_channel() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({"name":"Alice"}))
        .await;
    let mut alice_again = app.connect().await;
    alice_again
        .subscribe_presence("presence-room", "u1", json!({"name":"Alice"}))
        .await;
    let mut bob = app.connect().await;
    bob.subscribe_presence("presence-room", "u2", json!({"name":"Bob"}))
        .await;
    bob.subscribe("news").await;
    let (status, body) = trigger(
        &app,
        json!({
            "name":"tick",
            "channels":["presence-room","news","empty"],
            "data":"{}",
            "info":"user_count,subscription_count"
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"channels":{
            "presence-room":{"user_count":2,"subscription_count":3},
            "news":{"subscription_count":1},
            "empty":{"subscription_count":0}
        }})
    );
}

#[tokio::test]
async fn trigger_on_a_presence_channel_nobody_joined_reports_zero_counts_as_php_expects() {
    let app = spawn_app().await;
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channel":"presence-my-channel","data":"{}","info":"user_count,subscription_count"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"channels":{"presence-my-channel":{"user_count":0,"subscription_count":0}}})
    );
}

#[tokio::test]
async fn trigger_with_socket_id_skips_that_connection_only() {
    let app = spawn_app().await;
    let mut excluded = app.connect().await;
    excluded.subscribe("news").await;
    let mut other = app.connect().await;
    other.subscribe("news").await;
    let (status, body) = trigger(
        &app,
        json!({"name":"update","channels":["news"],"data":"1","socket_id":excluded.socket_id}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(other.expect_next("update").await["data"], "1");
    excluded.expect_silence(Duration::from_millis(300)).await;
    publish_marker(&app, "news").await;
    excluded.expect_next("marker").await;
    other.expect_next("marker").await;
}

#[tokio::test]
async fn trigger_data_of_exactly_10_kb_is_delivered() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let data = "x".repeat(10 * 1024);
    let (status, body) = trigger(&app, json!({"name":"big","channels":["news"],"data":data})).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let event = client.expect_next("big").await;
    assert_eq!(event["data"].as_str().unwrap().len(), 10 * 1024);
}

#[tokio::test]
async fn trigger_data_over_10_kb_is_413_and_not_delivered() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let data = "x".repeat(10 * 1024 + 1);
    let (status, body) = trigger(&app, json!({"name":"big","channels":["news"],"data":data})).await;
    assert_eq!(status, 413, "{body}");
    publish_marker(&app, "news").await;
    client.expect_next("marker").await;
}

#[tokio::test]
async fn trigger_to_100_channels_is_accepted_and_to_101_is_400() {
    let app = spawn_app().await;
    let hundred: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let (status, body) = trigger(&app, json!({"name":"e","channels":hundred,"data":"{}"})).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let mut client = app.connect().await;
    client.subscribe("c0").await;
    let too_many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let (status, body) = trigger(&app, json!({"name":"e","channels":too_many,"data":"{}"})).await;
    assert_eq!(status, 400, "{body}");
    publish_marker(&app, "c0").await;
    client.expect_next("marker").await;
}

#[tokio::test]
async fn trigger_with_a_bad_channel_name_is_400() {
    let app = spawn_app().await;
    let long = "a".repeat(201);
    for bad in ["with space", long.as_str(), "#foo", ""] {
        let (status, body) = trigger(&app, json!({"name":"e","channels":[bad],"data":"{}"})).await;
        assert_eq!(status, 400, "channel {bad:?}: {body}");
        let (status, body) = trigger(&app, json!({"name":"e","channel":bad,"data":"{}"})).await;
        assert_eq!(status, 400, "channel {bad:?}: {body}");
    }
    let longest = "a".repeat(200);
    let (status, body) = trigger(&app, json!({"name":"e","channels":[longest],"data":"{}"})).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn trigger_with_an_event_name_over_200_characters_is_400() {
    let app = spawn_app().await;
    let (status, body) = trigger(
        &app,
        json!({"name":"e".repeat(201),"channels":["news"],"data":"{}"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = trigger(
        &app,
        json!({"name":"e".repeat(200),"channels":["news"],"data":"{}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn trigger_with_invalid_json_is_400() {
    let app = spawn_app().await;
    for bad in [
        "{not json",
        "",
        "[]",
        r#"{"name":"e","channels":"news","data":"x"}"#,
    ] {
        let (status, body) = app.rest("POST", "/apps/4242/events", &[], Some(bad)).await;
        assert_eq!(status, 400, "body {bad:?}: {body}");
    }
}

#[tokio::test]
async fn trigger_without_name_or_data_or_channels_is_400() {
    let app = spawn_app().await;
    for bad in [
        json!({"channels":["news"],"data":"{}"}),
        json!({"name":"e","channels":["news"]}),
        json!({"name":"","channels":["news"],"data":"{}"}),
        json!({"name":"e","data":"{}"}),
        json!({"name":"e","channels":[],"data":"{}"}),
    ] {
        let (status, body) = trigger(&app, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn trigger_on_an_encrypted_channel_among_several_is_400() {
    let app = spawn_app().await;
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channels":["private-encrypted-secret","news"],"data":"{}"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channels":["private-encrypted-secret"],"data":"{}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn trigger_with_an_invalid_socket_id_is_400() {
    let app = spawn_app().await;
    for bad in ["abc", "1.", ".1", "1.2.3", "1:2", ""] {
        let (status, body) = trigger(
            &app,
            json!({"name":"e","channels":["news"],"data":"{}","socket_id":bad}),
        )
        .await;
        assert_eq!(status, 400, "socket_id {bad:?}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Batch

#[tokio::test]
async fn batch_events_answers_an_empty_object_and_delivers_in_order() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    client.subscribe("sport").await;
    let (status, body) = batch(
        &app,
        json!({"batch":[
            {"name":"one","channel":"news","data":"1"},
            {"name":"two","channel":"sport","data":"2"},
            {"name":"three","channel":"news","data":"3"}
        ]}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let first = client.expect_next("one").await;
    assert_eq!(
        (first["channel"].clone(), first["data"].clone()),
        (json!("news"), json!("1"))
    );
    assert_eq!(client.expect_next("two").await["channel"], "sport");
    assert_eq!(client.expect_next("three").await["data"], "3");
}

#[tokio::test]
async fn batch_events_with_info_answers_index_aligned_attributes() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    alice.subscribe("news").await;
    let mut bob = app.connect().await;
    bob.subscribe("news").await;
    let (status, body) = batch(
        &app,
        json!({"batch":[
            {"name":"a","channel":"presence-room","data":"{}","info":"user_count,subscription_count"},
            {"name":"b","channel":"news","data":"{}"},
            {"name":"c","channel":"news","data":"{}","info":"subscription_count"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"batch":[
            {"user_count":1,"subscription_count":1},
            {},
            {"subscription_count":2}
        ]})
    );
}

#[tokio::test]
async fn batch_events_of_more_than_10_events_is_400_and_publishes_nothing() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"name":"e","channel":"news","data":i.to_string()}))
        .collect();
    let (status, body) = batch(&app, json!({ "batch": eleven })).await;
    assert_eq!(status, 400, "{body}");
    publish_marker(&app, "news").await;
    client.expect_next("marker").await;
    let ten: Vec<Value> = (0..10)
        .map(|i| json!({"name":"e","channel":"news","data":i.to_string()}))
        .collect();
    let (status, body) = batch(&app, json!({ "batch": ten })).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    for i in 0..10 {
        assert_eq!(client.expect_next("e").await["data"], i.to_string());
    }
}

#[tokio::test]
async fn batch_events_with_one_invalid_event_is_400_and_publishes_nothing() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    for bad in [
        json!({"name":"e","channel":"bad name","data":"{}"}),
        json!({"name":"e","data":"{}"}),
        json!({"channel":"news","data":"{}"}),
        json!({"name":"e","channel":"news","data":"x".repeat(10 * 1024 + 1)}),
    ] {
        let (status, body) = batch(
            &app,
            json!({"batch":[{"name":"good","channel":"news","data":"{}"}, bad.clone()]}),
        )
        .await;
        assert!(status == 400 || status == 413, "{bad}: {status} {body}");
        publish_marker(&app, "news").await;
        client.expect_next("marker").await;
    }
}

#[tokio::test]
async fn batch_events_with_oversized_data_is_413() {
    let app = spawn_app().await;
    let (status, body) = batch(
        &app,
        json!({"batch":[{"name":"e","channel":"news","data":"x".repeat(10 * 1024 + 1)}]}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
}

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// Channel queries

#[tokio::test]
async fn get_channels_with_nothing_occupied_is_exactly_an_empty_object() {
    let app = spawn_app().await;
    let (status, body) = app.get("/apps/4242/channels", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"channels":{}}"#));
    // Still an object once a socket came and went.
    let mut client = app.connect().await;
    client.subscribe("news").await;
    client
        .send_json(json!({"event":"pusher:unsubscribe","data":{"channel":"news"}}))
        .await;
    let mut empty = false;
    for _ in 0..50 {
        let (status, body) = app.get("/apps/4242/channels", &[]).await;
        assert_eq!(status, 200);
        if body == r#"{"channels":{}}"# {
            empty = true;
            break;
        }
        pause(Duration::from_millis(20)).await;
    }
    assert!(empty, "an unsubscribed channel stays listed");
}

#[tokio::test]
async fn get_channels_lists_occupied_channels_with_empty_objects() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    client.subscribe("private-inbox").await;
    client
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app.get("/apps/4242/channels", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"channels":{"news":{},"private-inbox":{},"presence-room":{}}})
    );
}

#[tokio::test]
async fn get_channels_filters_by_prefix() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    client.subscribe("private-inbox").await;
    client
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app
        .get("/apps/4242/channels", &[("filter_by_prefix", "presence-")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"channels":{"presence-room":{}}}));
    let (status, body) = app
        .get("/apps/4242/channels", &[("filter_by_prefix", "nothing-")])
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"channels":{}}"#));
}

#[tokio::test]
async fn get_channels_with_user_count_needs_the_presence_prefix() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let mut bob = app.connect().await;
    bob.subscribe_presence("presence-room", "u2", json!({}))
        .await;
    bob.subscribe_presence("presence-lobby", "u2", json!({}))
        .await;
    let (status, body) = app
        .get("/apps/4242/channels", &[("info", "user_count")])
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .get(
            "/apps/4242/channels",
            &[("info", "user_count"), ("filter_by_prefix", "private-")],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .get(
            "/apps/4242/channels",
            &[("info", "user_count"), ("filter_by_prefix", "presence-")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"channels":{"presence-room":{"user_count":2},"presence-lobby":{"user_count":1}}})
    );
}

#[tokio::test]
async fn get_channel_always_says_whether_it_is_occupied() {
    let app = spawn_app().await;
    let (status, body) = app.get("/apps/4242/channels/news", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"occupied": false}));
    let mut one = app.connect().await;
    one.subscribe("news").await;
    let mut two = app.connect().await;
    two.subscribe("news").await;
    let (status, body) = app.get("/apps/4242/channels/news", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"occupied": true}));
    let (status, body) = app
        .get(
            "/apps/4242/channels/news",
            &[("info", "subscription_count")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"occupied": true, "subscription_count": 2})
    );
}

#[tokio::test]
async fn get_channel_with_user_count_is_400_unless_presence() {
    let app = spawn_app().await;
    let (status, body) = app
        .get("/apps/4242/channels/news", &[("info", "user_count")])
        .await;
    assert_eq!(status, 400, "{body}");
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let mut alice_again = app.connect().await;
    alice_again
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app
        .get(
            "/apps/4242/channels/presence-room",
            &[("info", "user_count,subscription_count")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"occupied": true, "user_count": 1, "subscription_count": 2})
    );
}

#[tokio::test]
async fn get_channel_with_a_bad_name_is_400() {
    let app = spawn_app().await;
    let long = "a".repeat(201);
    let (status, body) = app.get(&format!("/apps/4242/channels/{long}"), &[]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn get_channel_cache_returns_the_last_event_and_its_ttl() {
    let app = spawn_app().await;
    let (status, body) = app
        .get("/apps/4242/channels/cache-prices", &[("info", "cache")])
        .await;
    assert_eq!(status, 200, "{body}");
    let before = parse(&body);
    assert_eq!(before["occupied"], false);
    assert!(before["cache"].is_null(), "{body}");
    let (status, body) = trigger(
        &app,
        json!({"name":"price","channels":["cache-prices"],"data":"{\"eur\":1}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (status, body) = app
        .get("/apps/4242/channels/cache-prices", &[("info", "cache")])
        .await;
    assert_eq!(status, 200, "{body}");
    let after = parse(&body);
    assert_eq!(after["occupied"], false);
    assert_eq!(after["cache"]["data"], r#"{"eur":1}"#);
    let ttl = after["cache"]["ttl"].as_u64().expect("ttl is a number");
    assert!(ttl > 1700 && ttl <= 1800, "ttl {ttl}");
    // `cache` on a channel that is not a cache channel is refused.
    let (status, body) = app
        .get("/apps/4242/channels/prices", &[("info", "cache")])
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn get_channel_users_lists_presence_members_by_id() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    alice
        .subscribe_presence("presence-room", "u1", json!({"name":"Alice"}))
        .await;
    let mut alice_again = app.connect().await;
    alice_again
        .subscribe_presence("presence-room", "u1", json!({"name":"Alice"}))
        .await;
    let mut bob = app.connect().await;
    bob.subscribe_presence("presence-room", "u2", json!({"name":"Bob"}))
        .await;
    let (status, body) = app
        .get("/apps/4242/channels/presence-room/users", &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let mut users = parse(&body)["users"]
        .as_array()
        .expect("users is a list")
        .clone();
    users.sort_by_key(|u| u["id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(users, vec![json!({"id":"u1"}), json!({"id":"u2"})]);
    let (status, body) = app
        .get("/apps/4242/channels/presence-empty/users", &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"users": []}));
}

#[tokio::test]
async fn get_channel_users_on_a_non_presence_channel_is_400() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    for channel in ["news", "private-inbox"] {
        let (status, body) = app
            .get(&format!("/apps/4242/channels/{channel}/users"), &[])
            .await;
        assert_eq!(status, 400, "{channel}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// terminate_connections

#[tokio::test]
async fn terminate_connections_closes_the_users_signed_in_sockets_with_4009() {
    let app = spawn_app().await;
    let mut target = app.connect().await;
    target.sign_in(r#"{"id":"u1"}"#).await;
    let mut target_again = app.connect().await;
    target_again.sign_in(r#"{"id":"u1"}"#).await;
    let mut bystander = app.connect().await;
    bystander.sign_in(r#"{"id":"u2"}"#).await;
    bystander.subscribe("news").await;
    // A presence member named u1 that never signed in is not terminated.
    let mut presence_only = app.connect().await;
    presence_only
        .subscribe_presence("presence-room", "u1", json!({}))
        .await;
    let (status, body) = app
        .post("/apps/4242/users/u1/terminate_connections", json!({}))
        .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    for client in [&mut target, &mut target_again] {
        let (code, _) = client.expect_error().await;
        assert_eq!(code, 4009);
        assert_eq!(client.expect_close().await, Some(4009));
    }
    publish_marker(&app, "news").await;
    bystander.expect_next("marker").await;
    presence_only
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    presence_only.expect_next("pusher:pong").await;
}

#[tokio::test]
async fn terminate_connections_for_a_user_with_no_sockets_is_an_empty_object() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/apps/4242/users/nobody/terminate_connections", json!({}))
        .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn terminate_connections_on_pythons_path_without_the_apps_prefix_works() {
    let app = spawn_app().await;
    let mut target = app.connect().await;
    target.sign_in(r#"{"id":"u1"}"#).await;
    let mut bystander = app.connect().await;
    bystander.sign_in(r#"{"id":"u2"}"#).await;
    // pusher-http-python signs `/users/u1/terminate_connections` and posts there.
    let (status, body) = app.post("/users/u1/terminate_connections", json!({})).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (code, _) = target.expect_error().await;
    assert_eq!(code, 4009);
    assert_eq!(target.expect_close().await, Some(4009));
    bystander
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    bystander.expect_next("pusher:pong").await;
}

#[tokio::test]
async fn terminate_connections_on_pythons_path_with_a_bad_signature_is_401() {
    let app = spawn_app().await;
    let mut target = app.connect().await;
    target.sign_in(r#"{"id":"u1"}"#).await;
    let body = "{}";
    let (status, text) = app
        .rest_signed(
            "POST",
            "/users/u1/terminate_connections",
            "/users/u1/terminate_connections",
            &[],
            Some(body),
            KEY,
            "wrong-secret",
            now(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = app
        .rest_signed(
            "POST",
            "/users/u1/terminate_connections",
            "/users/u1/terminate_connections",
            &[],
            Some(body),
            "unknown-key",
            SECRET,
            now(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    target
        .send_json(json!({"event":"pusher:ping","data":{}}))
        .await;
    target.expect_next("pusher:pong").await;
}

// ---------------------------------------------------------------------------------------------
// Mount prefix, CORS, health

#[tokio::test]
async fn a_request_under_a_mount_prefix_signed_over_the_apps_path_is_accepted() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let (status, text) = app
        .rest_signed(
            "POST",
            "/some/prefix/apps/4242/events",
            "/apps/4242/events",
            &[],
            Some(&body),
            KEY,
            SECRET,
            now(),
        )
        .await;
    assert_eq!((status, text.as_str()), (200, "{}"));
    client.expect_next("e").await;
    let (status, text) = app
        .rest_signed(
            "GET",
            "/some/prefix/apps/4242/channels",
            "/apps/4242/channels",
            &[("filter_by_prefix", "ne")],
            None,
            KEY,
            SECRET,
            now(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(parse(&text), json!({"channels":{"news":{}}}));
}

#[tokio::test]
async fn a_cors_preflight_is_answered_with_allow_origin() {
    let app = spawn_app().await;
    let response = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/apps/4242/events"))
        .header("Origin", "https://example.com")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .expect("preflight is sent");
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    let origin = headers
        .get("access-control-allow-origin")
        .expect("Access-Control-Allow-Origin is set")
        .to_str()
        .unwrap();
    assert!(origin == "*" || origin == "https://example.com", "{origin}");
    let methods = headers
        .get("access-control-allow-methods")
        .expect("Access-Control-Allow-Methods is set")
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "{methods}");
}

#[tokio::test]
async fn a_cross_origin_trigger_carries_allow_origin() {
    let app = spawn_app().await;
    let body = json!({"name":"e","channels":["news"],"data":"{}"}).to_string();
    let params = signed_params(
        "POST",
        "/apps/4242/events",
        &[],
        Some(&md5_hex(body.as_bytes())),
        KEY,
        SECRET,
        now(),
    );
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let response = app
        .http
        .post(format!(
            "{}?{}",
            app.url("/apps/4242/events"),
            query.join("&")
        ))
        .header("Origin", "https://example.com")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn health_and_ready_answer_200() {
    let app = spawn_app().await;
    for path in ["/health", "/ready"] {
        let response = app
            .http
            .get(app.url(path))
            .send()
            .await
            .expect("request is sent");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn channel_names_with_every_allowed_punctuation_work_in_paths() {
    let app = spawn_app().await;
    let name = "a-b_c=d@e,f.g;h";
    let mut client = app.connect().await;
    client.subscribe(name).await;
    let (status, body) = trigger(&app, json!({"name":"e","channels":[name],"data":"{}"})).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(client.expect_next("e").await["channel"], name);
    let path = format!("/apps/4242/channels/{name}");
    let (status, body) = app.get(&path, &[("info", "subscription_count")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"occupied": true, "subscription_count": 1})
    );
    // A client whose HTTP stack percent-encodes the path but signed it decoded.
    let encoded = path
        .replace('@', "%40")
        .replace(';', "%3B")
        .replace(',', "%2C");
    let (status, body) = app
        .rest_signed("GET", &encoded, &path, &[], None, KEY, SECRET, now())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"occupied": true}));
}

#[tokio::test]
async fn a_server_to_user_channel_must_be_the_only_channel_of_a_trigger() {
    let app = spawn_app().await;
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channels":["#server-to-user-u1","news"],"data":"{}"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = trigger(
        &app,
        json!({"name":"e","channels":["#server-to-user-u1"],"data":"{}"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
}
