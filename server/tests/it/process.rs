//! The `herald` binary as operators run it: the startup contract, the first-run file, logs that
//! never carry a secret, health endpoints and a graceful SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedReceiver;

/// Starts the binary on port 0 in `dir` and returns it with the address from its
/// `listening on http://ADDR` (or `https://ADDR`) line and the log lines read so far.
pub async fn start(
    dir: &std::path::Path,
    extra_env: &[(&str, &str)],
) -> (Child, String, Vec<String>, UnboundedReceiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .env("HERALD_BIND", "127.0.0.1:0")
        .env("HERALD_DATA_DIR", dir)
        .env("RUST_LOG", "debug")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("herald starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let address = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("log line") {
            seen.push(line.clone());
            // `https://` when the server serves TLS (HERALD_TLS_CERT).
            let rest = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1));
            if let Some(rest) = rest {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        panic!("herald exited before listening: {seen:?}");
    })
    .await
    .expect("herald listens in time");
    // Keep draining stdout so the server never blocks on a full pipe; the caller reads the rest.
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    (child, address, seen, receiver)
}

/// Every line still to come, until the process closes its stdout.
async fn rest_of_log(mut receiver: UnboundedReceiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = receiver.recv().await {
        lines.push(line);
    }
    lines
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn first_start_writes_the_generated_secret_to_a_private_file_and_never_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address, mut log, more) = start(dir.path(), &[]).await;
    assert!(
        address.starts_with("127.0.0.1:") && !address.ends_with(":0"),
        "{address}"
    );

    let first_run = dir.path().join("first-run.txt");
    let text = std::fs::read_to_string(&first_run).expect("first-run file exists");
    let secret = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret:"))
        .expect("secret line")
        .trim()
        .to_owned();
    assert!(secret.len() >= 20);
    let password = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .expect("operator password line")
        .trim()
        .to_owned();
    assert!(password.len() >= 20, "{text}");
    assert!(text.contains("admin@localhost"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first_run).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("http://{address}/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("herald exits in time")
        .unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    let mut rest = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut rest).await.unwrap();
    }
    log.extend(rest.lines().map(str::to_owned));
    log.extend(rest_of_log(more).await);
    let log = log.join("\n");
    assert!(log.contains("created the default app"), "{log}");
    assert!(log.contains("stopped"), "the whole log was read: {log}");
    assert!(!log.contains(&secret), "the secret appeared in the log");
    assert!(log.contains("created the platform operator"), "{log}");
    assert!(
        !log.contains(&password),
        "the operator password appeared in the log"
    );
}

#[tokio::test]
async fn a_given_default_app_secret_is_used_and_no_first_run_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _address, mut log, more) = start(
        dir.path(),
        &[
            ("HERALD_DEFAULT_APP_ID", "777"),
            ("HERALD_DEFAULT_APP_KEY", "given-key-0123456789"),
            ("HERALD_DEFAULT_APP_SECRET", "given-secret-0123456789"),
            ("HERALD_ADMIN_EMAIL", "Ops@Example.com"),
            ("HERALD_ADMIN_PASSWORD", "given-password-123"),
        ],
    )
    .await;
    assert!(!dir.path().join("first-run.txt").exists());
    sigterm(&child);
    assert!(child.wait().await.unwrap().success());
    log.extend(rest_of_log(more).await);
    assert!(log
        .iter()
        .any(|l| l.contains("777") && l.contains("given-key-0123456789")));
    assert!(!log.iter().any(|l| l.contains("given-secret-0123456789")));
    assert!(!log.iter().any(|l| l.contains("given-password-123")));
    assert!(log.iter().any(|l| l.contains("ops@example.com")));
    // The operator signs in with the given password; the default app is in the default tenant.
    let store = herald::tenants::Store::open(
        &herald::config::sqlite_url(dir.path()),
        herald::clock::Clock::system(),
    )
    .await
    .unwrap();
    let operator = store
        .authenticate("ops@example.com", "given-password-123")
        .await
        .unwrap()
        .expect("the operator signs in");
    assert_eq!(operator.role, herald::tenants::UserRole::Operator);
    assert!(store
        .authenticate("ops@example.com", "wrong-password")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.get_app("777").await.unwrap().tenant_id, "1");
    store.close().await;
}

#[tokio::test]
async fn a_bad_environment_value_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .env("HERALD_DATA_DIR", dir.path())
        .env("HERALD_BIND", "127.0.0.1:0")
        .env("HERALD_MAX_CONNECTIONS", "lots")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("HERALD_MAX_CONNECTIONS"), "{text}");
}

#[tokio::test]
async fn with_tls_the_binary_listens_on_https_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let (cert, key) = (fixtures.join("a.pem"), fixtures.join("a.key"));
    let (mut child, address, log, mut more) = start(
        dir.path(),
        &[
            ("HERALD_TLS_CERT", cert.to_str().unwrap()),
            ("HERALD_TLS_KEY", key.to_str().unwrap()),
        ],
    )
    .await;
    assert!(
        log.iter()
            .any(|line| line.contains(&format!("listening on https://{address}"))),
        "{log:?}"
    );
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = more.recv().await {
            if line.contains("TLS certificate reloaded") && line.contains("SIGHUP") {
                return;
            }
        }
        panic!("herald exited without reloading");
    })
    .await
    .expect("the reload is logged in time");
    sigterm(&child);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
}
