//! SIGTERM with the dashboard on its own listener (`HERALD_ADMIN_BIND`): an open live-console
//! stream, an idle keep-alive connection to the dashboard, a client stalled in the middle of a
//! request on each listener and an open WebSocket must not hold the process past its grace
//! period (`HERALD_SHUTDOWN_GRACE_SECS`), nor use up the time it has to save the usage counts:
//! with nothing lost it exits 0.

use std::time::Duration;

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::helpers::{herald_binary, APP_ID, KEY, SECRET};

const OPERATOR: &str = "admin@localhost";
const OPERATOR_PASSWORD: &str = "operator password 1";
/// The grace the node is started with.
const GRACE_SECS: u64 = 2;
/// What shutdown may take beyond the grace (process exit, a loaded test machine).
const MARGIN: Duration = Duration::from_secs(3);

/// Starts the binary with the dashboard on its own listener; returns the child, the public
/// address and the dashboard's address (both from the log).
async fn start_with_admin_listener(data_dir: &std::path::Path) -> (Child, String, String) {
    let mut command = herald_binary(data_dir);
    command
        .env("HERALD_ADMIN_BIND", "127.0.0.1:0")
        .env("HERALD_ADMIN_PASSWORD", OPERATOR_PASSWORD)
        .env("HERALD_SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string())
        .env("HERALD_DEFAULT_APP_ID", APP_ID)
        .env("HERALD_DEFAULT_APP_KEY", KEY)
        .env("HERALD_DEFAULT_APP_SECRET", SECRET);
    let mut child = command.spawn().expect("herald starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let address_after = |line: &str, marker: &str| {
        line.split(marker).nth(1).map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches("/dashboard")
                .to_owned()
        })
    };
    let (public, admin) = tokio::time::timeout(Duration::from_secs(30), async {
        let (mut public, mut admin) = (None, None);
        while let Some(line) = lines.next_line().await.expect("log line") {
            if let Some(address) = address_after(&line, "dashboard listening on http://") {
                admin = Some(address);
            } else if let Some(address) = address_after(&line, "listening on http://") {
                public = Some(address);
            }
            if let (Some(public), Some(admin)) = (&public, &admin) {
                return (public.clone(), admin.clone());
            }
        }
        panic!("herald exited before listening");
    })
    .await
    .expect("herald listens in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, public, admin)
}

/// The value of cookie `name` set by `response`.
fn cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|line| line.split(';').next())
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| panic!("the response sets {name}"))
}

/// The value of the hidden form field `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("the page has the field") + marker.len();
    let end = start + html[start..].find('"').expect("the value ends");
    html[start..end].to_owned()
}

/// A client that sent half a request head and stalls (the header timeout is far longer than
/// the grace).
async fn stalled_client(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream
        .write_all(b"GET /dashboard/login HTTP/1.1\r\nHost: herald\r\n")
        .await
        .expect("half a request is sent");
    stream
}

/// Signs the operator in on the dashboard at `base`; returns the session cookie header.
async fn sign_in(http: &reqwest::Client, base: &str) -> String {
    let login = http
        .get(format!("{base}/dashboard/login"))
        .send()
        .await
        .expect("the sign-in page answers");
    assert_eq!(login.status().as_u16(), 200);
    let token = cookie(&login, "herald_login_csrf");
    let page = login.text().await.expect("the sign-in page");
    assert_eq!(hidden(&page, "csrf"), token);
    let signed_in = http
        .post(format!("{base}/dashboard/login"))
        .header(COOKIE, format!("herald_login_csrf={token}"))
        .form(&[
            ("csrf", token.as_str()),
            ("email", OPERATOR),
            ("password", OPERATOR_PASSWORD),
            ("next", "/dashboard/apps"),
        ])
        .send()
        .await
        .expect("the sign-in is answered");
    assert_eq!(signed_in.status().as_u16(), 303, "the operator signs in");
    format!("herald_session={}", cookie(&signed_in, "herald_session"))
}

#[tokio::test]
async fn sigterm_with_an_open_live_console_on_the_admin_listener_exits_0_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, public, admin) = start_with_admin_listener(dir.path()).await;
    let base = format!("http://{admin}");
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let session = sign_in(&http, &base).await;

    // The live console: an SSE stream that only ends when the server ends it.
    let mut console = http
        .get(format!("{base}/dashboard/apps/{APP_ID}/live/events"))
        .header(COOKIE, &session)
        .send()
        .await
        .expect("the console stream opens");
    assert_eq!(console.status().as_u16(), 200);
    // An idle keep-alive connection to the dashboard (its own client, so its own connection).
    let idle = reqwest::Client::new();
    let page = idle
        .get(format!("{base}/dashboard/login"))
        .send()
        .await
        .expect("the dashboard answers");
    assert_eq!(page.status().as_u16(), 200);
    page.bytes().await.expect("the page is read");
    // A WebSocket on the public listener, whose connection shows up in the console.
    let (socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://{public}/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false"
    ))
    .await
    .expect("the socket connects");
    // Clients in the middle of a request on both listeners.
    let stalled = (stalled_client(&admin).await, stalled_client(&public).await);
    let first = tokio::time::timeout(Duration::from_secs(5), console.chunk())
        .await
        .expect("the console reports the connection")
        .expect("the console stream is readable");
    assert!(first.is_some(), "the console stream is open");

    let pid = child.id().expect("pid").to_string();
    let started = tokio::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let bound = Duration::from_secs(GRACE_SECS) + MARGIN;
    let status = tokio::time::timeout(bound, child.wait())
        .await
        .unwrap_or_else(|_| panic!("herald did not exit within {bound:?} of SIGTERM"))
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "nothing was lost: exit 0 (took {took:?})"
    );

    // The console stream was ended, not left hanging.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = console.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the console stream ended with the server");
    drop((socket, idle, stalled));
}
