//! The `herald apps ...` commands, run as the real binary on a temporary data dir, and their
//! effect on a server running on the same store.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

use crate::helpers::*;

/// Runs `herald ARGS` with `HERALD_DATA_DIR=dir` and nothing else of Herald's environment.
pub(crate) async fn herald(dir: &Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .env("HERALD_DATA_DIR", dir)
        // The receivers of these tests listen on loopback.
        .env("HERALD_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8,::1/128");
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_")
            && name != "HERALD_DATA_DIR"
            && name != "HERALD_WEBHOOK_ALLOW_PRIVATE"
        {
            command.env_remove(name);
        }
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the CLI finishes in time")
        .expect("the CLI runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed and print JSON.
pub(crate) async fn herald_json(dir: &Path, args: &[&str]) -> Value {
    let output = herald(dir, args).await;
    assert!(
        output.status.success(),
        "herald {args:?} failed: {}",
        stderr(&output)
    );
    serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|e| panic!("herald {args:?} printed no JSON ({e}): {}", stdout(&output)))
}

/// Runs a `--json` command that must fail, and returns its `{"error":...}` message.
pub(crate) async fn herald_json_error(dir: &Path, args: &[&str]) -> String {
    let output = herald(dir, args).await;
    assert!(
        !output.status.success(),
        "herald {args:?} succeeded: {}",
        stdout(&output)
    );
    let error: Value = serde_json::from_str(stderr(&output).trim()).unwrap_or_else(|e| {
        panic!(
            "herald {args:?} printed no JSON error ({e}): {}",
            stderr(&output)
        )
    });
    let message = error["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"error\" string in {error}"));
    assert!(!message.is_empty());
    message.to_owned()
}

fn assert_is_app(app: &Value) {
    let id = app["id"].as_str().expect("id is a string");
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "id {id:?} is all digits"
    );
    let key = app["key"].as_str().expect("key is a string");
    assert!(key.len() >= 20, "key {key:?}");
    let secret = app["secret"].as_str().expect("secret is a string");
    assert!(secret.len() >= 20, "secret of {} characters", secret.len());
    assert_ne!(key, secret);
    for credential in [key, secret] {
        assert!(
            credential
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe credential {credential:?}"
        );
    }
    assert!(app["name"].is_string());
    assert!(app["tenant_id"].is_string());
    assert!(app["enabled"].is_boolean());
    assert!(app["client_events"].is_boolean());
    assert!(app["limits"].is_object());
}

#[tokio::test]
async fn apps_create_json_prints_the_new_app() {
    let dir = tempfile::tempdir().unwrap();
    let app = herald_json(dir.path(), &["apps", "create", "--name", "Chat", "--json"]).await;
    assert_is_app(&app);
    assert_eq!(app["name"], "Chat");
    assert_eq!(app["enabled"], true);
    assert_eq!(app["client_events"], false);
    assert_eq!(app["tenant_id"], "1");
    let limits = &app["limits"];
    assert_eq!(limits["max_channel_name_length"], 200);
    assert_eq!(limits["max_event_payload_bytes"], 10 * 1024);
    assert_eq!(limits["max_batch_size"], 10);
    assert_eq!(limits["max_channels_per_trigger"], 100);
}

#[tokio::test]
async fn apps_create_takes_switches_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let app = herald_json(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Tuned",
            "--client-events",
            "true",
            "--enabled",
            "false",
            "--max-connections",
            "7",
            "--max-batch-size",
            "3",
            "--json",
        ],
    )
    .await;
    assert_is_app(&app);
    assert_eq!(app["client_events"], true);
    assert_eq!(app["enabled"], false);
    assert_eq!(app["limits"]["max_connections"], 7);
    assert_eq!(app["limits"]["max_batch_size"], 3);
}

#[tokio::test]
async fn two_created_apps_get_distinct_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let one = herald_json(dir.path(), &["apps", "create", "--name", "One", "--json"]).await;
    let two = herald_json(dir.path(), &["apps", "create", "--name", "Two", "--json"]).await;
    for field in ["id", "key", "secret"] {
        assert_ne!(one[field], two[field], "{field}");
    }
}

#[tokio::test]
async fn apps_list_json_is_an_array_of_every_app() {
    let dir = tempfile::tempdir().unwrap();
    let empty = herald_json(dir.path(), &["apps", "list", "--json"]).await;
    assert_eq!(empty, Value::Array(vec![]));
    let one = herald_json(dir.path(), &["apps", "create", "--name", "One", "--json"]).await;
    let two = herald_json(dir.path(), &["apps", "create", "--name", "Two", "--json"]).await;
    let list = herald_json(dir.path(), &["apps", "list", "--json"]).await;
    let apps = list.as_array().expect("a JSON array");
    assert_eq!(apps.len(), 2);
    for app in apps {
        assert_is_app(app);
    }
    let mut ids: Vec<&Value> = apps.iter().map(|a| &a["id"]).collect();
    ids.sort_by_key(|v| v.as_str().unwrap_or_default().to_owned());
    let mut expected = vec![&one["id"], &two["id"]];
    expected.sort_by_key(|v| v.as_str().unwrap_or_default().to_owned());
    assert_eq!(ids, expected);
    let tenant = herald_json(dir.path(), &["apps", "list", "--tenant", "1", "--json"]).await;
    assert_eq!(tenant.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn apps_show_json_prints_the_app_with_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let created = herald_json(dir.path(), &["apps", "create", "--name", "Shown", "--json"]).await;
    let id = created["id"].as_str().unwrap();
    let shown = herald_json(dir.path(), &["apps", "show", id, "--json"]).await;
    assert_is_app(&shown);
    assert_eq!(shown, created);
}

#[tokio::test]
async fn apps_show_without_json_prints_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let created = herald_json(dir.path(), &["apps", "create", "--name", "Text", "--json"]).await;
    let id = created["id"].as_str().unwrap();
    let output = herald(dir.path(), &["apps", "show", id]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for field in ["id", "key", "secret"] {
        assert!(
            text.contains(created[field].as_str().unwrap()),
            "{field} missing from {text}"
        );
    }
}

#[tokio::test]
async fn apps_update_changes_switches_and_limits_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let created = herald_json(
        dir.path(),
        &["apps", "create", "--name", "Before", "--json"],
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let updated = herald_json(
        dir.path(),
        &[
            "apps",
            "update",
            id,
            "--client-events",
            "true",
            "--max-connections",
            "5",
            "--json",
        ],
    )
    .await;
    assert_is_app(&updated);
    assert_eq!(updated["client_events"], true);
    assert_eq!(updated["limits"]["max_connections"], 5);
    for field in ["id", "key", "secret", "name", "tenant_id", "enabled"] {
        assert_eq!(updated[field], created[field], "{field}");
    }
    assert_eq!(
        updated["limits"]["max_batch_size"],
        created["limits"]["max_batch_size"]
    );
    let shown = herald_json(dir.path(), &["apps", "show", id, "--json"]).await;
    assert_eq!(shown, updated);
    let renamed = herald_json(
        dir.path(),
        &["apps", "update", id, "--name", "After", "--json"],
    )
    .await;
    assert_eq!(renamed["name"], "After");
    assert_eq!(renamed["client_events"], true);
}

#[tokio::test]
async fn apps_delete_removes_the_app_and_show_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let created = herald_json(
        dir.path(),
        &["apps", "create", "--name", "Doomed", "--json"],
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let output = herald(dir.path(), &["apps", "delete", id]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let output = herald(dir.path(), &["apps", "show", id]).await;
    assert!(!output.status.success(), "show of a deleted app succeeded");
    assert!(!stderr(&output).trim().is_empty());
    let message = herald_json_error(dir.path(), &["apps", "show", id, "--json"]).await;
    assert!(message.contains(id), "{message}");
    herald_json_error(dir.path(), &["apps", "delete", id, "--json"]).await;
    let list = herald_json(dir.path(), &["apps", "list", "--json"]).await;
    assert_eq!(list, Value::Array(vec![]));
}

#[tokio::test]
async fn a_channel_name_length_over_200_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    herald_json_error(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Long",
            "--max-channel-name-length",
            "201",
            "--json",
        ],
    )
    .await;
    let list = herald_json(dir.path(), &["apps", "list", "--json"]).await;
    assert_eq!(list, Value::Array(vec![]), "nothing was created");
    let created = herald_json(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Exact",
            "--max-channel-name-length",
            "200",
            "--json",
        ],
    )
    .await;
    let id = created["id"].as_str().unwrap();
    herald_json_error(
        dir.path(),
        &[
            "apps",
            "update",
            id,
            "--max-channel-name-length",
            "201",
            "--json",
        ],
    )
    .await;
    let shown = herald_json(dir.path(), &["apps", "show", id, "--json"]).await;
    assert_eq!(shown["limits"]["max_channel_name_length"], 200);
}

#[tokio::test]
async fn unknown_apps_and_bad_arguments_fail() {
    let dir = tempfile::tempdir().unwrap();
    herald_json_error(dir.path(), &["apps", "show", "123", "--json"]).await;
    herald_json_error(
        dir.path(),
        &["apps", "update", "123", "--enabled", "false", "--json"],
    )
    .await;
    herald_json_error(
        dir.path(),
        &[
            "apps", "create", "--name", "X", "--tenant", "nope", "--json",
        ],
    )
    .await;
    let output = herald(
        dir.path(),
        &["apps", "create", "--name", "X", "--enabled", "maybe"],
    )
    .await;
    assert!(!output.status.success(), "--enabled maybe was accepted");
    let output = herald(dir.path(), &["apps", "create", "--json"]).await;
    assert!(!output.status.success(), "create without --name succeeded");
}

/// A server on the default (1 s) revision poll, so the 2 s promise is tested as shipped.
pub(crate) async fn spawn_app_with_production_poll() -> TestApp {
    spawn_app_with(|settings| settings.revision_poll = Duration::from_secs(1)).await
}

#[tokio::test]
async fn disabling_an_app_with_the_cli_closes_its_sockets_with_4003_within_2_seconds() {
    let app = spawn_app_with_production_poll().await;
    let mut client = app.connect().await;
    client.subscribe("news").await;
    let output = herald(
        app.data_dir.path(),
        &["apps", "update", APP_ID, "--enabled", "false"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let changed = Instant::now();
    let (code, _) = tokio::time::timeout(Duration::from_secs(3), client.expect_error())
        .await
        .expect("pusher:error arrives within 3 s");
    assert_eq!(code, 4003);
    assert_eq!(client.expect_close().await, Some(4003));
    let elapsed = changed.elapsed();
    assert!(elapsed <= Duration::from_secs(2), "took {elapsed:?}");
    // New connections are refused too, and REST calls get 403.
    let mut late = app
        .connect_raw(&format!("/app/{KEY}?protocol=7&client=js&version=8.6.0"))
        .await;
    let (code, _) = late.expect_error().await;
    assert_eq!(code, 4003);
    assert_eq!(late.expect_close().await, Some(4003));
    let (status, _) = app.get("/apps/4242/channels", &[]).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn deleting_an_app_with_the_cli_closes_its_sockets_with_4001_within_2_seconds() {
    let app = spawn_app_with_production_poll().await;
    let created = herald_json(
        app.data_dir.path(),
        &["apps", "create", "--name", "Second", "--json"],
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    let known = Instant::now();
    wait_until("the server knows the new app", || {
        app.node
            .apps
            .by_key(&key, app.node.settings.clock.now_seconds())
            .is_some()
    })
    .await;
    assert!(
        known.elapsed() <= Duration::from_secs(2),
        "a created app took {:?} to reach the server",
        known.elapsed()
    );
    let mut doomed = app.connect_key(&key).await;
    doomed.subscribe("news").await;
    let mut survivor = app.connect().await;
    survivor.subscribe("news").await;
    let output = herald(app.data_dir.path(), &["apps", "delete", &id]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let changed = Instant::now();
    let (code, _) = tokio::time::timeout(Duration::from_secs(3), doomed.expect_error())
        .await
        .expect("pusher:error arrives within 3 s");
    assert_eq!(code, 4001);
    assert_eq!(doomed.expect_close().await, Some(4001));
    let elapsed = changed.elapsed();
    assert!(elapsed <= Duration::from_secs(2), "took {elapsed:?}");
    // The default app's socket is untouched.
    survivor
        .send_json(serde_json::json!({"event":"pusher:ping","data":{}}))
        .await;
    survivor.expect_next("pusher:pong").await;
}

#[tokio::test]
async fn a_limit_changed_with_the_cli_applies_to_the_running_server() {
    let app = spawn_app().await;
    let output = herald(
        app.data_dir.path(),
        &["apps", "update", APP_ID, "--max-batch-size", "2"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    wait_until("the server sees the new batch size", || {
        app.node
            .apps
            .by_id(APP_ID)
            .is_some_and(|a| a.limits.max_batch_size == 2)
    })
    .await;
    let three: Vec<Value> = (0..3)
        .map(|i| serde_json::json!({"name":"e","channel":"news","data":i.to_string()}))
        .collect();
    let (status, body) = app
        .post(
            "/apps/4242/batch_events",
            serde_json::json!({ "batch": three }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn tenants_and_users_are_managed_with_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = herald_json(
        dir.path(),
        &["tenants", "create", "--name", "Acme", "--json"],
    )
    .await;
    let tenant_id = tenant["id"].as_str().expect("tenant id string").to_owned();
    assert!(tenant_id.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(tenant["name"], "Acme");
    let tenants = herald_json(dir.path(), &["tenants", "list", "--json"]).await;
    let names: Vec<&str> = tenants
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["Default", "Acme"]);

    let admin = herald_json(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "Ann@Acme.test",
            "--password",
            "ann's password",
            "--tenant",
            &tenant_id,
            "--json",
        ],
    )
    .await;
    assert_eq!(admin["email"], "ann@acme.test");
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["tenant_id"], tenant_id.as_str());
    let operator = herald_json(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "ops@example.test",
            "--password",
            "operator password",
            "--operator",
            "--json",
        ],
    )
    .await;
    assert_eq!(operator["role"], "operator");
    assert_eq!(operator["tenant_id"], Value::Null);
    let users = herald_json(dir.path(), &["users", "list", "--json"]).await;
    assert_eq!(users.as_array().map(Vec::len), Some(2));
    let printed = users.to_string();
    assert!(
        !printed.contains("argon2") && !printed.contains("password"),
        "{printed}"
    );

    let changed = herald_json(
        dir.path(),
        &[
            "users",
            "set-password",
            "--email",
            "ann@acme.test",
            "--password",
            "a brand new one",
            "--json",
        ],
    )
    .await;
    assert_eq!(changed["password_changed"], true);
    let store = herald::tenants::Store::open(
        &herald::config::sqlite_url(dir.path()),
        herald::clock::Clock::system(),
    )
    .await
    .unwrap();
    assert!(store
        .authenticate("ann@acme.test", "a brand new one")
        .await
        .unwrap()
        .is_some());
    store.close().await;

    // Refusals: a duplicate email, a short password, an admin without a tenant, an unknown
    // tenant, --operator with --tenant.
    let duplicate = herald_json_error(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "ann@acme.test",
            "--password",
            "long enough",
            "--operator",
            "--json",
        ],
    )
    .await;
    assert!(duplicate.contains("already exists"), "{duplicate}");
    let short = herald_json_error(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "x@acme.test",
            "--password",
            "short",
            "--operator",
            "--json",
        ],
    )
    .await;
    assert!(short.contains("8"), "{short}");
    let unknown = herald_json_error(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "x@acme.test",
            "--password",
            "long enough",
            "--tenant",
            "424242",
            "--json",
        ],
    )
    .await;
    assert!(unknown.contains("424242"), "{unknown}");
    let both = herald(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "x@acme.test",
            "--password",
            "long enough",
            "--tenant",
            &tenant_id,
            "--operator",
        ],
    )
    .await;
    assert!(!both.status.success());
    let neither = herald(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "x@acme.test",
            "--password",
            "long enough",
        ],
    )
    .await;
    assert!(!neither.status.success());
    let missing = herald_json_error(
        dir.path(),
        &[
            "users",
            "set-password",
            "--email",
            "nobody@acme.test",
            "--password",
            "long enough",
            "--json",
        ],
    )
    .await;
    assert!(missing.contains("nobody@acme.test"), "{missing}");
}

#[tokio::test]
async fn apps_create_takes_a_tenant_and_a_plan_and_flags_override_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = herald_json(
        dir.path(),
        &["tenants", "create", "--name", "Acme", "--json"],
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap();
    let app = herald_json(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Sandboxed",
            "--tenant",
            tenant_id,
            "--plan",
            "sandbox",
            "--max-connections",
            "5",
            "--allowed-origins",
            "https://a.example, https://*.b.example",
            "--json",
        ],
    )
    .await;
    assert_is_app(&app);
    assert_eq!(app["tenant_id"], tenant_id);
    assert_eq!(app["plan"], "sandbox");
    assert_eq!(
        app["limits"]["max_connections"], 5,
        "the flag overrides the plan"
    );
    assert_eq!(app["limits"]["max_daily_messages"], 200_000);
    assert_eq!(
        app["allowed_origins"],
        serde_json::json!(["https://a.example", "https://*.b.example"])
    );
    let listed = herald_json(
        dir.path(),
        &["apps", "list", "--tenant", tenant_id, "--json"],
    )
    .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let error = herald_json_error(
        dir.path(),
        &[
            "apps", "create", "--name", "X", "--plan", "platinum", "--json",
        ],
    )
    .await;
    assert!(error.contains("sandbox"), "lists the plans: {error}");
    let error = herald_json_error(
        dir.path(),
        &[
            "apps", "create", "--name", "X", "--tenant", "999999", "--json",
        ],
    )
    .await;
    assert!(error.contains("999999"), "{error}");
    let error = herald_json_error(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "X",
            "--allowed-origins",
            "not an origin",
            "--json",
        ],
    )
    .await;
    assert!(error.contains("origin"), "{error}");
    // Clearing the origins allows any origin again.
    let id = app["id"].as_str().unwrap();
    let cleared = herald_json(
        dir.path(),
        &["apps", "update", id, "--allowed-origins", "", "--json"],
    )
    .await;
    assert_eq!(cleared["allowed_origins"], serde_json::json!([]));
}

#[tokio::test]
async fn apps_rotate_secret_keeps_two_pairs_and_revoke_key_drops_one() {
    let dir = tempfile::tempdir().unwrap();
    let app = herald_json(
        dir.path(),
        &["apps", "create", "--name", "Rotating", "--json"],
    )
    .await;
    let id = app["id"].as_str().unwrap();
    let rotated = herald_json(
        dir.path(),
        &["apps", "rotate-secret", id, "--grace-period", "0", "--json"],
    )
    .await;
    assert_ne!(rotated["key"], app["key"]);
    assert_ne!(rotated["secret"], app["secret"]);
    assert_eq!(rotated["previous_key"]["key"], app["key"]);
    assert_eq!(rotated["previous_key"]["secret"], app["secret"]);
    assert_eq!(rotated["previous_key"]["expires_at"], 0);
    let again = herald_json_error(dir.path(), &["apps", "rotate-secret", id, "--json"]).await;
    assert!(again.contains("two active key pairs"), "{again}");
    let old_key = app["key"].as_str().unwrap();
    let revoked = herald_json(
        dir.path(),
        &["apps", "revoke-key", id, "--key", old_key, "--json"],
    )
    .await;
    assert_eq!(revoked["previous_key"], Value::Null);
    assert_eq!(revoked["key"], rotated["key"]);
    let new_key = rotated["key"].as_str().unwrap();
    let last = herald_json_error(
        dir.path(),
        &["apps", "revoke-key", id, "--key", new_key, "--json"],
    )
    .await;
    assert!(last.contains("only working key"), "{last}");
    // The default grace period is a day.
    let graced = herald_json(dir.path(), &["apps", "rotate-secret", id, "--json"]).await;
    let expires = graced["previous_key"]["expires_at"].as_i64().unwrap();
    assert!((expires - now() - 86_400).abs() < 60, "{graced}");
}

#[tokio::test]
async fn apps_usage_json_reports_today_30_days_and_24_hours_of_minutes() {
    let mut app = spawn_app().await;
    for _ in 0..3 {
        let (status, _) = app
            .post(
                &format!("/apps/{APP_ID}/events"),
                serde_json::json!({"name":"e","channel":"usage","data":"x"}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let _client = app.connect().await;
    app.stop().await;
    let report = herald_json(app.data_dir.path(), &["apps", "usage", APP_ID, "--json"]).await;
    assert_eq!(report["app_id"], APP_ID);
    assert_eq!(report["today"]["messages"], 3);
    assert_eq!(report["today"]["peak_connections"], 1);
    assert_eq!(report["days"].as_array().map(Vec::len), Some(30));
    assert_eq!(report["minutes"].as_array().map(Vec::len), Some(24 * 60));
    let today = report["days"].as_array().unwrap().last().unwrap();
    assert_eq!(today["messages"], 3);
    assert!(today["date"].as_str().unwrap().len() == 10);
    let text = herald(app.data_dir.path(), &["apps", "usage", APP_ID]).await;
    assert!(stdout(&text).contains("3 messages"), "{}", stdout(&text));
    let missing = herald_json_error(app.data_dir.path(), &["apps", "usage", "999", "--json"]).await;
    assert!(missing.contains("999"), "{missing}");
}
