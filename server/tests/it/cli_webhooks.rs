//! `herald webhooks ...`: endpoints added, listed and removed, reaching a running server, and
//! failed deliveries listed and retried, with the real binary on a temporary data dir.

use std::time::Duration;

use tokio::time::Instant;

use crate::cli::{herald, herald_json, herald_json_error, spawn_app_with_production_poll};
use crate::helpers::*;

#[tokio::test]
async fn webhooks_are_added_listed_and_removed_with_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let app = herald_json(
        dir.path(),
        &["apps", "create", "--name", "Hooked", "--json"],
    )
    .await;
    let app_id = app["id"].as_str().unwrap();
    let hook = herald_json(
        dir.path(),
        &[
            "webhooks",
            "add",
            "--app",
            app_id,
            "--url",
            "https://example.com/hook",
            "--events",
            "channel_occupied, member_added,client_event",
            "--prefix",
            "private-",
            "--header",
            "X-Webhook-Token: t0ken",
            "--json",
        ],
    )
    .await;
    let hook_id = hook["id"].as_str().expect("id string").to_owned();
    assert_eq!(hook["app_id"], app_id);
    assert_eq!(hook["url"], "https://example.com/hook");
    assert_eq!(
        hook["events"],
        serde_json::json!(["channel_occupied", "member_added", "client_event"])
    );
    assert_eq!(hook["channel_prefix"], "private-");
    assert_eq!(
        hook["headers"],
        serde_json::json!([["X-Webhook-Token", "t0ken"]])
    );
    let listed = herald_json(dir.path(), &["webhooks", "list", "--app", app_id, "--json"]).await;
    assert_eq!(listed, serde_json::json!([hook]));
    for (args, needle) in [
        (
            vec!["--url", "ftp://x", "--events", "channel_occupied"],
            "URL",
        ),
        (
            vec!["--url", "https://x.test", "--events", "channel_exploded"],
            "channel_exploded",
        ),
        (
            vec!["--url", "https://x.test", "--events", ""],
            "at least one",
        ),
    ] {
        let mut full = vec!["webhooks", "add", "--app", app_id];
        full.extend(args);
        full.push("--json");
        let error = herald_json_error(dir.path(), &full).await;
        assert!(error.contains(needle), "{error}");
    }
    let error = herald_json_error(
        dir.path(),
        &[
            "webhooks",
            "add",
            "--app",
            "999",
            "--url",
            "https://x.test",
            "--events",
            "cache_miss",
            "--json",
        ],
    )
    .await;
    assert!(error.contains("999"), "{error}");
    let removed = herald_json(
        dir.path(),
        &["webhooks", "remove", "--app", app_id, &hook_id, "--json"],
    )
    .await;
    assert_eq!(removed["removed"], hook_id.as_str());
    let listed = herald_json(dir.path(), &["webhooks", "list", "--app", app_id, "--json"]).await;
    assert_eq!(listed, serde_json::json!([]));
    let error = herald_json_error(
        dir.path(),
        &["webhooks", "remove", "--app", app_id, &hook_id, "--json"],
    )
    .await;
    assert!(error.contains(&hook_id), "{error}");
    let failed = herald_json(
        dir.path(),
        &["webhooks", "failed", "--app", app_id, "--json"],
    )
    .await;
    assert_eq!(failed, serde_json::json!([]));
    let error = herald_json_error(
        dir.path(),
        &["webhooks", "retry", "--app", app_id, "--all", "--json"],
    )
    .await;
    assert!(error.contains("no failed"), "{error}");
    let neither = herald(dir.path(), &["webhooks", "retry", "--app", app_id]).await;
    assert!(!neither.status.success(), "retry needs an id or --all");
}

#[tokio::test]
async fn a_webhook_added_with_the_cli_reaches_a_running_server_within_2_seconds() {
    let app = spawn_app_with_production_poll().await;
    let receiver = crate::webhooks::Receiver::start().await;
    let started = Instant::now();
    herald_json(
        app.data_dir.path(),
        &[
            "webhooks",
            "add",
            "--app",
            APP_ID,
            "--url",
            &receiver.url,
            "--events",
            "channel_occupied",
            "--json",
        ],
    )
    .await;
    // Subscribe until the hook fires: the first occupied channel after the reload is reported.
    let mut client = app.connect().await;
    let mut n = 0;
    let deadline = started + Duration::from_secs(2);
    loop {
        n += 1;
        client.subscribe(&format!("cli-hook-{n}")).await;
        pause(Duration::from_millis(100)).await;
        if !receiver.accepted_events().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_millis(500),
            "no webhook within 2 s"
        );
    }
    let events = receiver.accepted_events();
    assert_eq!(events[0]["name"], "channel_occupied");
}

#[tokio::test]
async fn failed_deliveries_are_listed_and_retried_with_the_cli() {
    let app = spawn_app_with(|s| {
        s.revision_poll = Duration::from_secs(1);
        s.webhooks.retry_window = Duration::from_millis(500);
        s.webhooks.backoff_base = Duration::from_millis(100);
        s.webhooks.backoff_cap = Duration::from_millis(200);
    })
    .await;
    let receiver = crate::webhooks::Receiver::start().await;
    receiver
        .status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    herald_json(
        app.data_dir.path(),
        &[
            "webhooks",
            "add",
            "--app",
            APP_ID,
            "--url",
            &receiver.url,
            "--events",
            "channel_occupied",
            "--json",
        ],
    )
    .await;
    herald::startup::refresh_apps(&app.node).await.unwrap();
    let mut client = app.connect().await;
    client.subscribe("will-fail").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let failed = herald_json(
            app.data_dir.path(),
            &["webhooks", "failed", "--app", APP_ID, "--json"],
        )
        .await;
        if failed.as_array().is_some_and(|f| !f.is_empty()) {
            break failed;
        }
        assert!(Instant::now() < deadline, "never failed");
        pause(Duration::from_millis(100)).await;
    };
    let delivery = &failed[0];
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["last_status"], 503);
    assert!(delivery["attempts"].as_i64().unwrap() >= 2);
    let id = delivery["id"].as_i64().unwrap().to_string();
    receiver
        .status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let queued = herald_json(
        app.data_dir.path(),
        &["webhooks", "retry", "--app", APP_ID, &id, "--json"],
    )
    .await;
    assert_eq!(queued["queued"], 1);
    receiver
        .wait_for("the retried delivery", |e| e.len() == 1)
        .await;
    let failed = herald_json(
        app.data_dir.path(),
        &["webhooks", "failed", "--app", APP_ID, "--json"],
    )
    .await;
    assert_eq!(failed, serde_json::json!([]));
}
