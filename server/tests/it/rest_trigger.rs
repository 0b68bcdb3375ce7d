//! REST trigger and batch_events against a spawned server: delivery to every listed channel,
//! `info` attributes, `socket_id` exclusion, and the size, count and name limits.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::rest_helpers::*;

async fn batch(app: &TestApp, body: Value) -> (u16, String) {
    app.post("/apps/4242/batch_events", body).await
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
