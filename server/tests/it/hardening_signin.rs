//! Issue 12, items 1, 2, 7 (sessions) and 8 (dashboard headers), tried as an attacker would:
//! a flood of 2 MB sign-ins, 200 parallel sign-ins (argon2 load), forged forwarding headers,
//! a stranger locking the operator out, sessions that outlive a password reset, and framing.
//!
//! The sign-in form's double-submit CSRF value is the attacker's choice (the same random value in
//! the cookie and the field), so no page load is needed. The memory tests run the real binary as
//! a child process and read its `/proc/PID/status`.

use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use reqwest::header::{CACHE_CONTROL, COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use reqwest::redirect::Policy;
use tokio::process::{Child, Command};

use herald::tenants::{Secret, UserRole};

use crate::helpers::*;

const OPERATOR: &str = "admin@localhost";
const OPERATOR_PASSWORD: &str = "operator password 1";
const CSRF: &str = "attacker-chosen-csrf-value";

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: impl reqwest::header::AsHeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The session cookie this answer sets, as a `Cookie` header.
    fn session(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|line| line.starts_with("herald_session=") && !line.contains("Max-Age=0"))
            .and_then(|line| line.split(';').next())
            .map(str::to_owned)
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

/// One sign-in attempt at `base` with the attacker's CSRF pair and `headers`.
async fn sign_in_at(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = http
        .post(format!("{base}/dashboard/login"))
        .header(COOKIE, format!("herald_login_csrf={CSRF}"))
        .form(&[
            ("csrf", CSRF),
            ("email", email),
            ("password", password),
            ("next", "/dashboard/apps"),
        ]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("sign-in is sent")).await
}

async fn get(http: &reqwest::Client, base: &str, cookie: &str, path: &str) -> Answer {
    let response = http
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("request is sent");
    answer(response).await
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> Answer {
    let response = http
        .post(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .expect("request is sent");
    answer(response).await
}

/// Signs in and returns the session's `Cookie` header and CSRF token.
async fn signed_in(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> (String, String) {
    let page = sign_in_at(http, base, email, password, &[]).await;
    assert_eq!(page.status, 303, "sign-in of {email}: {}", page.body);
    let cookie = page.session().expect("a session cookie");
    let account = get(http, base, &cookie, "/dashboard/account").await;
    assert_eq!(account.status, 200, "{}", account.body);
    let marker = "name=\"csrf\" value=\"";
    let start = account.body.find(marker).expect("a csrf field") + marker.len();
    let end = start + account.body[start..].find('"').expect("its end");
    (cookie, account.body[start..end].to_owned())
}

/// Whether `cookie`'s session still opens a page (rather than redirecting to the sign-in page).
async fn session_alive(http: &reqwest::Client, base: &str, cookie: &str) -> bool {
    let page = get(http, base, cookie, "/dashboard/account").await;
    match page.status {
        200 => true,
        303 => {
            assert!(
                page.header(LOCATION).starts_with("/dashboard/login"),
                "{}",
                page.header(LOCATION)
            );
            false
        }
        other => panic!("unexpected {other}: {}", page.body),
    }
}

async fn spawn_with_proxies(proxies: &[&str]) -> TestApp {
    let proxies: Vec<ipnet::IpNet> = proxies.iter().map(|p| p.parse().unwrap()).collect();
    spawn_app_with(|settings| {
        settings.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
        settings.trusted_proxies = proxies;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The real binary, for memory

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(extra_env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut command = herald_binary(dir.path());
        command
            .env("HERALD_ADMIN_PASSWORD", OPERATOR_PASSWORD)
            .env("RUST_LOG", "warn,herald=info")
            .envs(extra_env.iter().copied());
        let (child, address) = start_listening(command).await;
        Server {
            child,
            base: format!("http://{address}"),
            _dir: dir,
        }
    }

    /// A `/proc/PID/status` figure in MiB (`VmRSS`, `VmHWM`).
    fn mib(&self, field: &str) -> f64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in {status}"));
        kib / 1024.0
    }
}

#[tokio::test]
async fn a_flood_of_300_sign_ins_with_2_mb_emails_from_300_addresses_adds_under_64_mib() {
    // Behind a trusted proxy every attempt comes from its own address, so the per-address budget
    // lets each one through: only the size bounds protect the node.
    let server = Server::start(&[("HERALD_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let http = browser();
    let warm = sign_in_at(
        &http,
        &server.base,
        "warm@example.test",
        "not it at all",
        &[],
    )
    .await;
    assert_eq!(warm.status, 401, "{}", warm.body);
    let before = server.mib("VmRSS");

    let filler = "a".repeat(2_000_000);
    let outcomes: Vec<Result<u16, String>> = futures_util::stream::iter(0..300u32)
        .map(|n| {
            let http = http.clone();
            let base = server.base.clone();
            let body = format!("csrf={CSRF}&password=guess&email={n}{filler}%40example.test");
            async move {
                let forwarded = format!("10.1.{}.{}", n / 250, n % 250 + 1);
                http.post(format!("{base}/dashboard/login"))
                    .header(COOKIE, format!("herald_login_csrf={CSRF}"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-forwarded-for", forwarded)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    // The server may answer 413 and close before the whole body is sent.
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let after = server.mib("VmRSS");
    eprintln!(
        "sign-in flood: VmRSS {before:.1} -> {after:.1} MiB; {} answered",
        outcomes.iter().filter(|o| o.is_ok()).count()
    );
    assert!(
        after - before < 64.0,
        "the flood added {:.1} MiB of RSS ({before:.1} -> {after:.1})",
        after - before
    );
    for status in outcomes.iter().flatten() {
        assert!(
            [400, 413].contains(status),
            "an oversized sign-in is refused, not checked: {status}"
        );
    }
    // A fresh client: the flood's pooled connections may have been closed by the server after
    // an early 413, and reusing one would fail the request before it reaches the server.
    let http = browser();
    // An email just over the cap in a small body gets the form back with 400.
    let long = format!("{}@example.test", "b".repeat(250));
    let page = sign_in_at(&http, &server.base, &long, "whatever it is", &[]).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("too long"), "{}", page.body);
    // And the node still signs the operator in.
    let page = sign_in_at(&http, &server.base, OPERATOR, OPERATOR_PASSWORD, &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
}

#[tokio::test]
async fn two_hundred_parallel_sign_ins_from_20_addresses_peak_under_256_mib_and_answer_fast() {
    let server = Server::start(&[("HERALD_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let http = browser();
    let base = server.base.clone();
    // Each address tries 10 different emails: within every budget.
    let attack = futures_util::future::join_all((0..200u32).map(|n| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let started = Instant::now();
            let forwarded = format!("10.2.0.{}", n % 20 + 1);
            let page = sign_in_at(
                &http,
                &base,
                &format!("guess{n}@example.test"),
                "a guessed password",
                &[("x-forwarded-for", &forwarded)],
            )
            .await;
            (
                page.status,
                page.header(RETRY_AFTER).to_owned(),
                started.elapsed(),
            )
        }
    }));
    let operator = async {
        pause(Duration::from_millis(100)).await;
        let started = Instant::now();
        let page = sign_in_at(
            &http,
            &base,
            OPERATOR,
            OPERATOR_PASSWORD,
            &[("x-forwarded-for", "192.0.2.10")],
        )
        .await;
        (page.status, started.elapsed())
    };
    let (attempts, (operator_status, operator_took)) = tokio::join!(attack, operator);

    let peak = server.mib("VmHWM");
    eprintln!(
        "200 parallel sign-ins: VmHWM {peak:.1} MiB, operator {operator_status} in {operator_took:?}, \
         {} shed, slowest {:?}",
        attempts.iter().filter(|(s, _, _)| *s == 429).count(),
        attempts.iter().map(|(_, _, t)| *t).max()
    );
    assert!(peak < 256.0, "peak RSS {peak:.1} MiB");
    assert!(
        [303, 429].contains(&operator_status),
        "the operator is signed in or told to retry: {operator_status}"
    );
    assert!(
        operator_took < Duration::from_secs(3),
        "the operator's sign-in took {operator_took:?}"
    );
    let shed = attempts.iter().filter(|(s, _, _)| *s == 429).count();
    for (status, retry_after, took) in &attempts {
        assert!([401, 429].contains(status), "{status}");
        if *status == 429 {
            assert_eq!(retry_after, "1", "shed load is told to retry soon");
        }
        assert!(*took < Duration::from_secs(3), "an attempt took {took:?}");
    }
    assert!(
        shed > 0,
        "200 argon2 checks at once on a few cores shed some"
    );
    assert!(shed < 200, "some are checked");
}

// ---------------------------------------------------------------------------------------------
// Addresses and budgets

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_with_proxies(&[]).await;
    let http = browser();
    let base = app.url("");
    for n in 0..10 {
        let forwarded = format!("203.0.113.{}", n + 1);
        let page = sign_in_at(
            &http,
            &base,
            &format!("guess{n}@example.test"),
            "a guessed password",
            &[("x-forwarded-for", &forwarded)],
        )
        .await;
        assert_eq!(page.status, 401, "attempt {n}: {}", page.body);
    }
    // A fresh X-Forwarded-For does not buy a fresh budget: the peer is 127.0.0.1 for all of them.
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[("x-forwarded-for", "198.51.100.99")],
    )
    .await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(!page.header(RETRY_AFTER).is_empty());
    // Nor does a forged X-Forwarded-Proto make the cookies Secure.
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        "x",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    let set = page.header(SET_COOKIE).to_ascii_lowercase();
    assert!(!set.contains("secure"), "{set}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget() {
    let app = spawn_with_proxies(&["127.0.0.1/32"]).await;
    let http = browser();
    let base = app.url("");
    for n in 0..10 {
        let page = sign_in_at(
            &http,
            &base,
            &format!("guess{n}@example.test"),
            "a guessed password",
            &[("x-forwarded-for", "203.0.113.1")],
        )
        .await;
        assert_eq!(page.status, 401, "attempt {n}: {}", page.body);
    }
    // The client wrote its own X-Forwarded-For; the proxy appended the real address.
    let spoofed = [("x-forwarded-for", "198.51.100.1, 203.0.113.1")];
    let page = sign_in_at(&http, &base, OPERATOR, OPERATOR_PASSWORD, &spoofed).await;
    assert_eq!(page.status, 429, "{}", page.body);
    // Another client behind the same proxy signs in, and gets a Secure cookie behind TLS.
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[
            ("x-forwarded-for", "203.0.113.2"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let line = page
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|l| l.starts_with("herald_session="))
        .expect("a session cookie")
        .to_ascii_lowercase();
    assert!(line.contains("; secure"), "{line}");
}

#[tokio::test]
async fn an_ipv6_client_is_budgeted_by_its_64() {
    let app = spawn_with_proxies(&["127.0.0.1/32"]).await;
    let http = browser();
    let base = app.url("");
    for n in 0..10 {
        // Ten addresses, one /64.
        let forwarded = format!("2001:db8:aa:bb::{:x}", n + 1);
        let page = sign_in_at(
            &http,
            &base,
            &format!("guess{n}@example.test"),
            "a guessed password",
            &[("x-forwarded-for", &forwarded)],
        )
        .await;
        assert_eq!(page.status, 401, "attempt {n}: {}", page.body);
    }
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[("x-forwarded-for", "2001:db8:aa:bb:ffff::1")],
    )
    .await;
    assert_eq!(page.status, 429, "same /64: {}", page.body);
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[("x-forwarded-for", "2001:db8:aa:bc::1")],
    )
    .await;
    assert_eq!(page.status, 303, "the next /64: {}", page.body);
}

#[tokio::test]
async fn the_64s_of_one_ipv6_48_share_eighty_attempts_a_minute() {
    let app = spawn_with_proxies(&["127.0.0.1/32"]).await;
    let http = browser();
    let base = app.url("");
    // Eight /64s of one /48 spend their ten each: the address budget is checked before the form
    // is read, so posts without a CSRF token spend it too (and cost no password check).
    for n in 0..80 {
        let forwarded = format!("2001:db8:48:{:x}::{:x}", n / 10, n % 10 + 1);
        let junk = http
            .post(format!("{base}/dashboard/login"))
            .header("x-forwarded-for", &forwarded)
            .form(&[("email", "x@example.test"), ("password", "x")])
            .send()
            .await
            .expect("sent");
        assert_eq!(junk.status().as_u16(), 403, "attempt {n} from {forwarded}");
    }
    // A ninth /64 of that /48, with the right password: the /48 is spent.
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[("x-forwarded-for", "2001:db8:48:8::1")],
    )
    .await;
    assert_eq!(page.status, 429, "same /48: {}", page.body);
    let retry: u64 = page.header("retry-after").parse().expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another /48, and an IPv4 client, are not affected.
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[("x-forwarded-for", "2001:db8:49::1")],
    )
    .await;
    assert_eq!(page.status, 303, "another /48: {}", page.body);
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[("x-forwarded-for", "203.0.113.48")],
    )
    .await;
    assert_eq!(page.status, 303, "IPv4: {}", page.body);
}

#[tokio::test]
async fn a_stranger_failing_from_elsewhere_does_not_lock_the_operator_out() {
    let app = spawn_with_proxies(&["127.0.0.1/32"]).await;
    let http = browser();
    let base = app.url("");
    let stranger = [("x-forwarded-for", "203.0.113.66")];
    for attempt in 1..=5 {
        let page = sign_in_at(&http, &base, OPERATOR, "a guessed password", &stranger).await;
        assert_eq!(page.status, 401, "attempt {attempt}: {}", page.body);
    }
    let page = sign_in_at(&http, &base, OPERATOR, "a guessed password", &stranger).await;
    assert_eq!(page.status, 429, "the stranger's sixth: {}", page.body);
    // From nine more addresses, the stranger spends the email's whole hourly budget (50): the
    // email is throttled everywhere now, and the stranger can keep it so.
    for n in 1..=9 {
        let address = format!("203.0.113.{n}");
        for attempt in 1..=5 {
            let page = sign_in_at(
                &http,
                &base,
                OPERATOR,
                "a guessed password",
                &[("x-forwarded-for", address.as_str())],
            )
            .await;
            assert_eq!(
                page.status, 401,
                "{address} attempt {attempt}: {}",
                page.body
            );
        }
    }
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        "a guessed password",
        &[("x-forwarded-for", "203.0.113.200")],
    )
    .await;
    assert_eq!(
        page.status, 401,
        "a new address still gets its own slow lane"
    );
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        "a guessed password",
        &[("x-forwarded-for", "203.0.113.200")],
    )
    .await;
    assert_eq!(page.status, 429, "but only one attempt per 10 minutes");
    // The operator, from their own address, is not locked out by the stranger's failures.
    let page = sign_in_at(
        &http,
        &base,
        OPERATOR,
        OPERATOR_PASSWORD,
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(
        page.status, 303,
        "the operator from their own address: {}",
        page.body
    );
}

#[tokio::test]
async fn an_oversized_sign_in_body_is_refused_before_it_is_read() {
    let app = spawn_with_proxies(&[]).await;
    let http = browser();
    let body = format!("csrf={CSRF}&password=x&email={}", "c".repeat(100 * 1024));
    let response = http
        .post(app.url("/dashboard/login"))
        .header(COOKIE, format!("herald_login_csrf={CSRF}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status().as_u16(), 413);
    }
    // A password over the cap in a small body: 400 and the form again.
    let long = "p".repeat(5000);
    let page = sign_in_at(&http, &app.url(""), OPERATOR, &long, &[]).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("name=\"csrf\""),
        "the form again: {}",
        page.body
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn an_operator_password_reset_ends_the_users_sessions() {
    let app = spawn_with_proxies(&[]).await;
    let http = browser();
    let base = app.url("");
    let store = &app.node.store;
    let tenant = store.create_tenant("Acme").await.unwrap();
    store
        .create_user(
            "ann@acme.test",
            "ann's first password",
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();
    let (operator, csrf) = signed_in(&http, &base, OPERATOR, OPERATOR_PASSWORD).await;
    let (ann, _) = signed_in(&http, &base, "ann@acme.test", "ann's first password").await;
    let (ann_elsewhere, _) = signed_in(&http, &base, "ann@acme.test", "ann's first password").await;

    let done = post(
        &http,
        &base,
        &operator,
        "/dashboard/users/password",
        &[
            ("csrf", &csrf),
            ("email", "ann@acme.test"),
            ("password", "reset by the operator"),
        ],
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        done.header(LOCATION).contains("notice="),
        "{}",
        done.header(LOCATION)
    );

    assert!(
        !session_alive(&http, &base, &ann).await,
        "ann's session ended"
    );
    assert!(
        !session_alive(&http, &base, &ann_elsewhere).await,
        "every one of them"
    );
    assert!(
        session_alive(&http, &base, &operator).await,
        "the operator's goes on"
    );
    signed_in(&http, &base, "ann@acme.test", "reset by the operator").await;

    // The operator resetting their own password keeps this session but ends the others.
    let (operator_elsewhere, _) = signed_in(&http, &base, OPERATOR, OPERATOR_PASSWORD).await;
    let done = post(
        &http,
        &base,
        &operator,
        "/dashboard/users/password",
        &[
            ("csrf", &csrf),
            ("email", OPERATOR),
            ("password", "the operator's new one"),
        ],
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(session_alive(&http, &base, &operator).await);
    assert!(!session_alive(&http, &base, &operator_elsewhere).await);
}

#[tokio::test]
async fn herald_users_set_password_in_another_process_ends_the_users_sessions() {
    let app = spawn_with_proxies(&[]).await;
    let http = browser();
    let base = app.url("");
    let (operator, _) = signed_in(&http, &base, OPERATOR, OPERATOR_PASSWORD).await;
    assert!(session_alive(&http, &base, &operator).await);

    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args([
            "users",
            "set-password",
            "--email",
            OPERATOR,
            "--password",
            "set from the command line",
        ])
        .env("HERALD_DATA_DIR", app.data_dir.path())
        .output()
        .await
        .expect("the CLI runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert!(
        !session_alive(&http, &base, &operator).await,
        "the session ended"
    );
    signed_in(&http, &base, OPERATOR, "set from the command line").await;
}

// ---------------------------------------------------------------------------------------------
// Headers

#[tokio::test]
async fn every_dashboard_response_forbids_framing_and_sniffing_and_pages_are_not_stored() {
    let app = spawn_with_proxies(&[]).await;
    let http = browser();
    let base = app.url("");
    let (cookie, csrf) = signed_in(&http, &base, OPERATOR, OPERATOR_PASSWORD).await;
    let hook = post(
        &http,
        &base,
        &cookie,
        &format!("/dashboard/apps/{APP_ID}/webhooks"),
        &[
            ("csrf", &csrf),
            ("url", "https://example.com/hook"),
            ("events", "channel_occupied"),
            ("headers", "X-Api-Token: a header value to keep private"),
        ],
    )
    .await;
    assert_eq!(hook.status, 303, "{}", hook.body);

    let mut pages: Vec<(String, Answer)> = Vec::new();
    for path in [
        "/dashboard/login".to_owned(),
        "/dashboard/apps".to_owned(),
        "/dashboard/tenants".to_owned(),
        "/dashboard/users".to_owned(),
        "/dashboard/account".to_owned(),
        "/dashboard/nothing-here".to_owned(),
        "/dashboard/static/dashboard.css".to_owned(),
        "/dashboard/static/live.js".to_owned(),
        format!("/dashboard/apps/{APP_ID}"),
        format!("/dashboard/apps/{APP_ID}/keys"),
        format!("/dashboard/apps/{APP_ID}/usage"),
        format!("/dashboard/apps/{APP_ID}/live"),
        format!("/dashboard/apps/{APP_ID}/webhooks"),
        format!("/dashboard/apps/{APP_ID}/getting-started"),
        format!("/dashboard/apps/{APP_ID}/delete"),
    ] {
        pages.push((path.clone(), get(&http, &base, &cookie, &path).await));
    }
    let reveal = post(
        &http,
        &base,
        &cookie,
        &format!("/dashboard/apps/{APP_ID}/keys/reveal"),
        &[("csrf", &csrf)],
    )
    .await;
    pages.push(("reveal".into(), reveal));
    let signed_out = get(&http, &base, "herald_session=nope", "/dashboard/apps").await;
    pages.push(("signed out".into(), signed_out));

    for (path, page) in &pages {
        let csp = page.header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp:?}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp:?}");
        assert_eq!(page.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(page.header("referrer-policy"), "same-origin", "{path}");
        // Pages never inline a script or a style the policy would block.
        assert!(!page.body.contains("<script>"), "{path}: an inline script");
        assert!(!page.body.contains("style=\""), "{path}: an inline style");
    }
    let webhooks = &pages
        .iter()
        .find(|(p, _)| p.ends_with("/webhooks"))
        .expect("webhooks page")
        .1;
    assert!(webhooks.body.contains("a header value to keep private"));
    for (path, page) in &pages {
        if !path.contains("/static/") {
            assert_eq!(page.header(CACHE_CONTROL), "no-store", "{path}");
        }
    }
}
