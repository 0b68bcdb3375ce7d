//! Self-service sign-up (`HERALD_SIGNUP`), email verification, forgot password and the mailer,
//! end to end: the real server, a browser over HTTP, and an SMTP sink on loopback.

use std::sync::atomic::Ordering;
use std::time::Duration;

use herald::config::SignupMode;
use herald::tenants::{Secret, UserRole};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::dashboard_helpers::*;
use crate::helpers::*;
use crate::signup_helpers::*;

const PASSWORD: &str = "a new customer's password";

async fn spawn_signup(mode: SignupMode, smtp: Option<&SmtpSink>) -> TestApp {
    spawn_app_with(|settings| {
        settings.admin.password = Some(Secret::new(OPERATOR_PASSWORD.into()));
        settings.signup = mode;
        settings.smtp_url = smtp.map(|sink| Secret::new(sink.url.clone()));
        settings.clock = herald::clock::Clock::manual(now_millis());
    })
    .await
}

/// Waits until the account task has finished `count` jobs.
async fn jobs_done(app: &TestApp, count: u64) {
    let stats = app.node.accounts.stats();
    wait_until("the account task works the queue", || {
        stats.done.load(Ordering::Relaxed) >= count
    })
    .await;
}

/// The token of the verification link in the `nth` email to `email`.
async fn verify_link(sink: &SmtpSink, email: &str, nth: usize) -> String {
    sink.wait_for(email, nth)
        .await
        .link_token("/dashboard/verify")
}

/// The token of the reset link in the `nth` email to `email`.
async fn reset_link(sink: &SmtpSink, email: &str, nth: usize) -> String {
    sink.wait_for(email, nth)
        .await
        .link_token("/dashboard/reset")
}

/// A link for `user_id` made by the store directly (`hash`: the password a verify link sets).
async fn issue_link(
    app: &TestApp,
    user_id: &str,
    purpose: herald::tenants::LinkPurpose,
    hash: &str,
) -> String {
    app.node
        .store
        .issue_link(user_id, purpose, hash)
        .await
        .unwrap()
        .expect("a link")
}

/// Signs `email` up with [`PASSWORD`] and follows the emailed link (the browser is signed in).
async fn sign_up_and_verify(browser: &Browser<'_>, sink: &SmtpSink, email: &str) {
    assert_eq!(sign_up(browser, email, PASSWORD).await.status, 200);
    let link = verify_link(sink, email, 1).await;
    assert_eq!(verify(browser, &link, PASSWORD).await.status, 303);
}

/// Every row of `email_tokens`: (token_hash, purpose, every column as text).
async fn token_rows(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.node.settings.database_url)
        .await
        .expect("the store opens");
    let rows = sqlx::query(
        "SELECT token_hash, purpose, user_id, password_hash, \
         CAST(created_at AS TEXT) AS c, CAST(expires_at AS TEXT) AS e FROM email_tokens",
    )
    .fetch_all(&pool)
    .await
    .expect("read email_tokens");
    rows.iter()
        .map(|row| {
            let hash: String = row.get("token_hash");
            let purpose: String = row.get("purpose");
            let all = [
                hash.clone(),
                purpose.clone(),
                row.get::<String, _>("user_id"),
                row.get::<String, _>("password_hash"),
                row.get::<String, _>("c"),
                row.get::<String, _>("e"),
            ]
            .join(" ");
            (hash, purpose, all)
        })
        .collect()
}

/// The `password_hash` column of the user with `email`.
async fn stored_password_hash(app: &TestApp, email: &str) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.node.settings.database_url)
        .await
        .expect("the store opens");
    let row = sqlx::query("SELECT password_hash FROM users WHERE email = $1")
        .bind(email.to_owned())
        .fetch_one(&pool)
        .await
        .expect("the user row");
    row.get("password_hash")
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn each_signup_mode_shows_or_hides_the_page() {
    for (mode, get, post, link) in [
        (SignupMode::Closed, 404, 404, false),
        (SignupMode::Invite, 200, 403, false),
        (SignupMode::Open, 200, 403, true),
    ] {
        let app = spawn_signup(mode, None).await;
        let browser = Browser::new(&app);
        let page = browser.get(None, "/dashboard/signup").await;
        assert_eq!(page.status, get, "{mode:?}: {}", page.body);
        if mode == SignupMode::Invite {
            assert!(page.body.contains("by invitation only"), "{}", page.body);
            assert!(!page.body.contains("name=\"password\""));
        }
        let login = browser.get(None, "/dashboard/login").await;
        assert_eq!(
            login.body.contains("/dashboard/signup"),
            link,
            "{mode:?}: the sign-in page links to sign-up only when it is open"
        );
        assert!(login.body.contains("/dashboard/forgot"));
        // A POST without the form's CSRF token: refused before anything (open: 403 CSRF).
        let posted = browser
            .post(
                None,
                "/dashboard/signup",
                &[
                    ("email", "x@example.test".to_owned()),
                    ("password", PASSWORD.to_owned()),
                ],
            )
            .await;
        assert_eq!(posted.status, post, "{mode:?}: {}", posted.body);
        assert_eq!(app.node.accounts.stats().queued.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test]
async fn a_new_customer_signs_up_confirms_by_email_and_creates_an_app() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    let email = "founder@startup.test";
    let page = sign_up(&browser, email, PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Check your email"), "{}", page.body);
    let mail = sink.wait_for(email, 1).await;
    assert!(
        mail.data.contains("Subject: Confirm your email for Herald"),
        "{}",
        mail.data
    );
    let public = app.url("");
    assert!(
        mail.data.contains(&format!("Herald at {public}")),
        "{}",
        mail.data
    );
    assert!(mail.link("/dashboard/verify").starts_with(&public));
    // Not verified yet: the right password answers exactly as a wrong one (same status and
    // text), so a sign-in after someone's sign-up never tells whether the address was free.
    let early = browser
        .attempt_sign_in(email, PASSWORD, "/dashboard/apps", &[])
        .await;
    let wrong = browser
        .attempt_sign_in(email, "not the password", "/dashboard/apps", &[])
        .await;
    assert_eq!(early.status, 401, "{}", early.body);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let page = |body: &str| -> String {
        body.lines()
            .filter(|line| !line.contains("name=\"csrf\""))
            .collect()
    };
    assert_eq!(
        page(&early.body),
        page(&wrong.body),
        "the right password of an unverified sign-up reads as a wrong one"
    );
    assert!(
        early.body.contains("Follow the link we emailed you first"),
        "{}",
        early.body
    );
    // The password waits in the link's row only: the user row holds no usable hash.
    let stored = stored_password_hash(&app, email).await;
    assert_eq!(
        stored, "",
        "an unverified sign-up keeps no password on the user row"
    );

    // The link's token is stored hashed, and nowhere in the clear.
    let token = mail.link_token("/dashboard/verify");
    assert_eq!(token.len(), 64);
    let rows = token_rows(&app).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, sha256_hex(&token));
    assert_eq!(rows[0].1, "verify");
    assert!(!rows[0].2.contains(&token));

    // The link's page uses nothing up (a mail scanner may fetch it); its button does.
    let shown = browser
        .get(None, &format!("/dashboard/verify?token={token}"))
        .await;
    assert_eq!(shown.status, 200);
    let done = verify(&browser, &token, PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        done.location().starts_with("/dashboard/apps"),
        "{}",
        done.location()
    );
    let cookie = format!(
        "herald_session={}",
        done.cookie("herald_session").expect("signed in")
    );
    let apps = browser.get(Some(&cookie), "/dashboard/apps").await;
    assert_eq!(apps.status, 200, "{}", apps.body);
    let csrf = hidden(&apps.body, "csrf");
    let created = browser
        .post(
            Some(&cookie),
            "/dashboard/apps",
            &[("name", "My first app".to_owned()), ("csrf", csrf)],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    assert!(
        created.location().contains("/getting-started"),
        "{}",
        created.location()
    );
    let started = browser.get(Some(&cookie), created.location()).await;
    assert_eq!(started.status, 200);
    assert!(started.body.contains("My first app"));

    // The owner of a new tenant on the sign-up plan; the app is in it.
    let (user, verified) = app
        .node
        .store
        .user_and_verified_by_email(email)
        .await
        .unwrap()
        .expect("the user");
    assert!(verified);
    assert_eq!(user.role, UserRole::Owner);
    let tenant = app
        .node
        .store
        .get_tenant(user.tenant_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(tenant.plans, vec!["sandbox".to_owned()]);
    let tenant_apps = app.node.store.list_apps(Some(&tenant.id)).await.unwrap();
    assert_eq!(tenant_apps.len(), 1);
    assert_eq!(tenant_apps[0].plan, "sandbox");
    // Signed in with the password from now on.
    browser.sign_in(email, PASSWORD).await;

    // The link works once.
    let again = verify(&browser, &token, PASSWORD).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.body.contains("expired or was already used"));
}

#[tokio::test]
async fn verification_and_reset_links_expire_and_work_once() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let clock = app.node.settings.clock.clone();
    let browser = Browser::new(&app);
    let email = "late@startup.test";
    assert_eq!(sign_up(&browser, email, PASSWORD).await.status, 200);
    let first = verify_link(&sink, email, 1).await;
    clock.set_millis(clock.now_millis() + 24 * 3600 * 1000 + 1000);
    let expired = verify(&browser, &first, PASSWORD).await;
    assert_eq!(expired.status, 400, "a day later: {}", expired.body);
    // Signing up again sends a new link, which works.
    assert_eq!(sign_up(&browser, email, PASSWORD).await.status, 200);
    let second = verify_link(&sink, email, 2).await;
    assert_ne!(first, second);
    assert_eq!(verify(&browser, &second, PASSWORD).await.status, 303);
    let session = browser.sign_in(email, PASSWORD).await;

    // Forgot password: a link that sets a new password once and ends every session.
    assert_eq!(forgot(&browser, email).await.status, 200);
    let reset_token = reset_link(&sink, email, 3).await;
    let refused = reset(&browser, &reset_token, "short").await;
    assert_eq!(
        refused.status, 400,
        "a refused password leaves the link unused"
    );
    let done = reset(&browser, &reset_token, "the new password 2").await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(done.location().starts_with("/dashboard/login"));
    let shown = browser.get(None, done.location()).await;
    assert!(
        shown
            .body
            .contains("Your password is set: sign in with it."),
        "{}",
        shown.body
    );
    // The sign-in page shows fixed notices only, never a link's own words.
    let phish = browser
        .get(None, "/dashboard/login?notice=Your+account+is+suspended")
        .await;
    assert_eq!(phish.status, 200);
    assert!(!phish.body.contains("suspended"), "{}", phish.body);
    let ended = browser
        .get(Some(&session.cookie), "/dashboard/account")
        .await;
    ended.assert_sign_in_redirect("/dashboard/account", "the session from before the reset");
    assert_eq!(
        reset(&browser, &reset_token, "another password 3")
            .await
            .status,
        400,
        "a reset link works once"
    );
    let old = browser
        .attempt_sign_in(email, PASSWORD, "/dashboard/apps", &[])
        .await;
    assert_eq!(old.status, 401);
    browser.sign_in(email, "the new password 2").await;
    let rows = token_rows(&app).await;
    assert!(rows.iter().all(|(hash, _, all)| hash.len() == 64
        && !all.contains(&reset_token)
        && !all.contains(&second)));

    // A reset link expires after an hour.
    assert_eq!(forgot(&browser, email).await.status, 200);
    let late = reset_link(&sink, email, 4).await;
    clock.set_millis(clock.now_millis() + 3600 * 1000 + 1000);
    assert_eq!(
        reset(&browser, &late, "too late password").await.status,
        400
    );
    browser.sign_in(email, "the new password 2").await;
}

#[tokio::test]
async fn the_forms_do_not_tell_whether_an_address_has_an_account() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    let known = "known@startup.test";
    let unknown = "unknown@startup.test";
    sign_up_and_verify(&browser, &sink, known).await;
    jobs_done(&app, 1).await;
    let stats = app.node.accounts.stats();
    let store = &app.node.store;

    // Forgot password: the same answer and the same work (one job queued, no hash) either way.
    let mut answers = Vec::new();
    for email in [known, unknown] {
        let (queued, hashes) = (
            stats.queued.load(Ordering::Relaxed),
            store.password_hashes(),
        );
        let page = forgot(&browser, email).await;
        assert_eq!(stats.queued.load(Ordering::Relaxed), queued + 1, "{email}");
        assert_eq!(store.password_hashes(), hashes, "{email}");
        answers.push((page.status, page.body.replace(email, "EMAIL")));
    }
    assert_eq!(answers[0], answers[1]);
    jobs_done(&app, 3).await;
    assert!(sink
        .wait_for(known, 2)
        .await
        .data
        .contains("/dashboard/reset?token="));
    assert!(
        sink.to(unknown).is_empty(),
        "nothing is sent to an address without an account"
    );

    // Sign-up with a taken address: the same answer and one password hash, like a free one;
    // the owner is told by email, and no tenant is made.
    let tenants = store.list_tenants().await.unwrap().len();
    let mut answers = Vec::new();
    for email in [known, "fresh@startup.test"] {
        let (queued, hashes) = (
            stats.queued.load(Ordering::Relaxed),
            store.password_hashes(),
        );
        let page = sign_up(&browser, email, "someone else's password").await;
        assert_eq!(store.password_hashes(), hashes + 1, "{email}: one hash");
        assert_eq!(stats.queued.load(Ordering::Relaxed), queued + 1, "{email}");
        answers.push((page.status, page.body.replace(email, "EMAIL")));
    }
    assert_eq!(answers[0], answers[1]);
    let note = sink.wait_for(known, 3).await;
    assert!(
        note.data.contains("already has an account"),
        "{}",
        note.data
    );
    sink.wait_for("fresh@startup.test", 1).await;
    assert_eq!(store.list_tenants().await.unwrap().len(), tenants + 1);
    // The taken address's password did not change.
    browser.sign_in(known, PASSWORD).await;
}

#[tokio::test]
async fn the_account_forms_have_per_address_and_per_email_budgets_and_links_per_hour() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    let email = "limited@startup.test";
    sign_up_and_verify(&browser, &sink, email).await;
    // Five per minute for one (email, address), the sign-up's included: the sixth is refused;
    // another email goes on.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(forgot(&browser, email).await.status);
    }
    assert_eq!(statuses, vec![200; 4]);
    let refused = forgot(&browser, email).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(!refused.header(reqwest::header::RETRY_AFTER).is_empty());
    assert_eq!(forgot(&browser, "other@startup.test").await.status, 200);
    // Ten per minute from one address, whatever the form (a sign-up, a verification and six
    // forgot forms so far): the ninth and tenth go through, the eleventh is refused before it is
    // read.
    assert_eq!(forgot(&browser, "third@startup.test").await.status, 200);
    assert_eq!(forgot(&browser, "fourth@startup.test").await.status, 200);
    let blocked = browser.get(None, "/dashboard/forgot").await;
    let csrf = blocked.cookie("herald_login_csrf").unwrap();
    let posted = browser
        .post(
            Some(&format!("herald_login_csrf={csrf}")),
            "/dashboard/forgot",
            &[
                ("email", "fifth@startup.test".to_owned()),
                ("csrf", csrf.clone()),
            ],
        )
        .await;
    assert_eq!(posted.status, 429, "the 11th form from one address");
    // However many forms got through, one user gets at most 3 reset links an hour.
    jobs_done(&app, 8).await;
    pause(Duration::from_millis(300)).await;
    let resets = sink
        .to(email)
        .iter()
        .filter(|m| m.data.contains("/dashboard/reset?token="))
        .count();
    assert_eq!(resets, 3, "links per user per hour");
    // The sign-in's budgets are their own: the address may still sign in.
    browser.sign_in(email, PASSWORD).await;
}

#[tokio::test]
async fn without_smtp_the_link_is_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address, _seen, mut lines) = crate::process::start(
        dir.path(),
        &[("HERALD_SIGNUP", "open"), ("RUST_LOG", "info")],
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("http://{address}");
    let page = http
        .get(format!("{url}/dashboard/signup"))
        .send()
        .await
        .unwrap();
    let csrf = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("herald_login_csrf="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let answer = http
        .post(format!("{url}/dashboard/signup"))
        .header("cookie", format!("herald_login_csrf={csrf}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", "trial@startup.test"),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let logged = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.recv().await {
            if line.contains("/dashboard/verify?token=") {
                return line;
            }
        }
        panic!("the server's log ended");
    })
    .await
    .expect("the link is logged in time");
    assert!(logged.contains("INFO"), "{logged}");
    assert!(logged.contains("trial@startup.test"), "{logged}");
    assert!(
        logged.contains(&format!("{url}/dashboard/verify?token=")),
        "{logged}"
    );
    assert!(!logged.contains(PASSWORD));
    let _ = child.kill().await;
}

/// A stranger who signs up an unverified address again (its owner's link still unfollowed)
/// sends its owner a link carrying the stranger's password: the owner, typing their own
/// password on it, is refused and nothing is spent or confirmed, so the stranger's password
/// never comes to open an account its owner builds in.
#[tokio::test]
async fn a_second_sign_up_of_an_unverified_address_cannot_take_the_account_over() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    let victim = "first@startup.test";
    let attackers_password = "the attacker's password";
    assert_eq!(sign_up(&browser, victim, PASSWORD).await.status, 200);
    let victims = verify_link(&sink, victim, 1).await;
    let hashes = app.node.store.password_hashes();
    let again = sign_up(&browser, victim, attackers_password).await;
    assert_eq!(again.status, 200);
    assert!(again.body.contains("We sent an email to"), "{}", again.body);
    assert_eq!(
        app.node.store.password_hashes(),
        hashes + 1,
        "the repeated sign-up answers the same after the same work"
    );
    let newest = verify_link(&sink, victim, 2).await;

    // The victim follows the newest email with their own password: refused, the form again.
    let refused = verify(&browser, &newest, PASSWORD).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("not the password chosen"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(&newest), "the form keeps the link");
    assert!(refused.cookie("herald_session").is_none());
    let (_, verified) = app
        .node
        .store
        .user_and_verified_by_email(victim)
        .await
        .unwrap()
        .unwrap();
    assert!(!verified, "nothing was confirmed");
    let attacker = browser
        .attempt_sign_in(victim, attackers_password, "/dashboard/apps", &[])
        .await;
    assert_eq!(attacker.status, 401);
    assert_eq!(
        stored_password_hash(&app, victim).await,
        "",
        "no password on the account"
    );

    // The victim signs up again and confirms with their password; a wrong try first spends
    // nothing.
    assert_eq!(sign_up(&browser, victim, PASSWORD).await.status, 200);
    let own = verify_link(&sink, victim, 3).await;
    assert_eq!(
        verify(&browser, &own, "a mistyped password").await.status,
        400
    );
    assert_eq!(verify(&browser, &own, PASSWORD).await.status, 303);
    assert_eq!(
        verify(&browser, &victims, PASSWORD).await.status,
        400,
        "the first link stopped when another was sent"
    );
    let attacker = browser
        .attempt_sign_in(victim, attackers_password, "/dashboard/apps", &[])
        .await;
    assert_eq!(
        attacker.status, 401,
        "the attacker's password opens nothing"
    );
    browser.sign_in(victim, PASSWORD).await;
}

#[tokio::test]
async fn an_old_verification_link_never_sets_a_password_and_a_reset_spends_every_link() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    let victim = "victim@startup.test";
    // An attacker signs the victim's address up first with a password of theirs, then the
    // victim signs up: only the newest link works, so the attacker's password never applies.
    assert_eq!(
        sign_up(&browser, victim, "the attacker's password")
            .await
            .status,
        200
    );
    let attackers = verify_link(&sink, victim, 1).await;
    assert_eq!(sign_up(&browser, victim, PASSWORD).await.status, 200);
    let victims = verify_link(&sink, victim, 2).await;
    assert_eq!(
        verify(&browser, &attackers, PASSWORD).await.status,
        400,
        "an older link stops when another is sent"
    );
    assert_eq!(verify(&browser, &victims, PASSWORD).await.status, 303);
    browser.sign_in(victim, PASSWORD).await;

    // A verify link that is live when the account is verified sets nothing.
    let (user, verified) = app
        .node
        .store
        .user_and_verified_by_email(victim)
        .await
        .unwrap()
        .unwrap();
    assert!(verified);
    let hash = app
        .node
        .store
        .hash_sign_up_password("the attacker's password")
        .await
        .unwrap();
    let late = issue_link(&app, &user.id, herald::tenants::LinkPurpose::Verify, &hash).await;
    assert_eq!(
        verify(&browser, &late, "the attacker's password")
            .await
            .status,
        400
    );
    let attacker = browser
        .attempt_sign_in(victim, "the attacker's password", "/dashboard/apps", &[])
        .await;
    assert_eq!(
        attacker.status, 401,
        "the verified account's password stays"
    );
    browser.sign_in(victim, PASSWORD).await;

    // A reset spends the user's other links (both purposes); an hour on, so the hourly cap
    // of verify links allows another.
    let clock = app.node.settings.clock.clone();
    clock.set_millis(clock.now_millis() + 3600 * 1000 + 1000);
    browser.sign_in(victim, PASSWORD).await;
    assert_eq!(forgot(&browser, victim).await.status, 200);
    let first = reset_link(&sink, victim, 3).await;
    assert_eq!(forgot(&browser, victim).await.status, 200);
    let second = reset_link(&sink, victim, 4).await;
    let pending = issue_link(&app, &user.id, herald::tenants::LinkPurpose::Verify, &hash).await;
    assert_eq!(
        reset(&browser, &second, "the victim's new password")
            .await
            .status,
        303
    );
    assert_eq!(
        reset(&browser, &first, "another new password").await.status,
        400,
        "a reset spends the other reset links"
    );
    assert_eq!(
        verify(&browser, &pending, "the attacker's password")
            .await
            .status,
        400
    );
    browser.sign_in(victim, "the victim's new password").await;

    // A password change (account page or CLI: Store::set_password) spends them too (the
    // store directly: this address's form budget for the minute is spent).
    let kept = issue_link(&app, &user.id, herald::tenants::LinkPurpose::Reset, "").await;
    app.node
        .store
        .set_password(victim, "changed on the account page")
        .await
        .unwrap();
    let used = app
        .node
        .store
        .reset_password_with_link(&kept, "a kept link's password", true)
        .await
        .unwrap();
    assert!(used.is_none(), "a password change spends the reset links");
}

#[tokio::test]
async fn the_operator_is_never_reset_by_email_and_closed_stops_earlier_sign_ups() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    // Forgot-password for the operator: the same answer, no email (the CLI resets it).
    assert_eq!(forgot(&browser, OPERATOR).await.status, 200);
    jobs_done(&app, 1).await;
    assert!(
        sink.to(OPERATOR).is_empty(),
        "no reset link for the operator"
    );
    // Even a reset link made for the operator (say, before this rule) sets nothing.
    let (operator, _) = app
        .node
        .store
        .user_and_verified_by_email(OPERATOR)
        .await
        .unwrap()
        .unwrap();
    let link = issue_link(&app, &operator.id, herald::tenants::LinkPurpose::Reset, "").await;
    assert_eq!(
        reset(&browser, &link, "a takeover password").await.status,
        400
    );
    browser.sign_in(OPERATOR, OPERATOR_PASSWORD).await;

    // Sign-up closed: a sign-up made while it was open (same store) does not activate, by
    // its verify link, by forgot-password or by a reset link sent earlier.
    let closed = spawn_signup(SignupMode::Closed, Some(&sink)).await;
    let browser = Browser::new(&closed);
    let email = "dormant@startup.test";
    let hash = closed
        .node
        .store
        .hash_sign_up_password(PASSWORD)
        .await
        .unwrap();
    let herald::tenants::SignUp::Created { user, token } = closed
        .node
        .store
        .sign_up(email, &hash, "sandbox")
        .await
        .unwrap()
    else {
        panic!("a new sign-up");
    };
    assert_eq!(verify(&browser, &token, PASSWORD).await.status, 400);
    assert_eq!(forgot(&browser, email).await.status, 200);
    jobs_done(&closed, 1).await;
    assert!(
        sink.to(email).is_empty(),
        "no reset link for a dormant sign-up"
    );
    let link = issue_link(&closed, &user.id, herald::tenants::LinkPurpose::Reset, "").await;
    assert_eq!(reset(&browser, &link, "a new password 1").await.status, 400);
    let (_, verified) = closed
        .node
        .store
        .user_and_verified_by_email(email)
        .await
        .unwrap()
        .unwrap();
    assert!(!verified, "the sign-up stays unverified");
}

#[tokio::test]
async fn a_sign_up_refuses_display_names_controls_and_undeliverable_addresses() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    for bad in [
        "a<victim@corp.test>",
        "esc\u{1b}]52;c;x\u{7}@corp.test",
        "x@[10.0.0.1]",
        "root@localhost",
        "ä@corp.test",
    ] {
        let page = sign_up(&browser, bad, PASSWORD).await;
        assert_eq!(page.status, 400, "{bad:?}: {}", page.body);
    }
    let stats = app.node.accounts.stats();
    assert_eq!(
        stats.queued.load(Ordering::Relaxed),
        0,
        "nothing is created or mailed for a refused address"
    );
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn sign_ups_have_an_hourly_budget_per_address_far_below_the_sign_ins() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    // Five sign-ups an hour from one address (each a different email, so the per-email
    // budgets never apply): the sixth is refused with Retry-After, and nothing is made for it.
    for n in 0..5 {
        let page = sign_up(&browser, &format!("user{n}@startup.test"), PASSWORD).await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let refused = sign_up(&browser, "user5@startup.test", PASSWORD).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry: u64 = refused
        .header(reqwest::header::RETRY_AFTER)
        .parse()
        .unwrap();
    assert!(retry > 60, "a sign-up budget is hourly: {retry}");
    jobs_done(&app, 5).await;
    assert_eq!(app.node.accounts.stats().queued.load(Ordering::Relaxed), 5);
    // The other forms keep the sign-in's rules: forgot still answers.
    assert_eq!(forgot(&browser, "user0@startup.test").await.status, 200);
}

#[tokio::test]
async fn an_unverified_sign_up_is_deleted_with_its_tenant_after_its_link_expires() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let tenants_before = store.list_tenants().await.unwrap().len();
    assert_eq!(
        sign_up(&browser, "dormant@startup.test", PASSWORD)
            .await
            .status,
        200
    );
    assert_eq!(
        sign_up(&browser, "kept@startup.test", PASSWORD)
            .await
            .status,
        200
    );
    jobs_done(&app, 2).await;
    let kept = verify_link(&sink, "kept@startup.test", 1).await;
    assert_eq!(verify(&browser, &kept, PASSWORD).await.status, 303);
    assert_eq!(
        store.list_tenants().await.unwrap().len(),
        tenants_before + 2
    );
    // Within the day nothing goes; after it, the unverified sign-up and its tenant do.
    assert_eq!(store.sweep_unverified().await.unwrap(), 0);
    let clock = app.node.settings.clock.clone();
    clock.set_millis(clock.now_millis() + 24 * 3600 * 1000 + 1000);
    assert_eq!(store.sweep_unverified().await.unwrap(), 1);
    assert!(store
        .user_and_verified_by_email("dormant@startup.test")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .user_and_verified_by_email("kept@startup.test")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.list_tenants().await.unwrap().len(),
        tenants_before + 1
    );
    // The address can sign up afresh.
    assert_eq!(
        sign_up(&browser, "dormant@startup.test", PASSWORD)
            .await
            .status,
        200
    );
    let fresh = verify_link(&sink, "dormant@startup.test", 2).await;
    assert_eq!(verify(&browser, &fresh, PASSWORD).await.status, 303);
}

#[tokio::test]
async fn a_permanently_refused_email_is_not_retried_and_holds_up_nothing() {
    let sink = SmtpSink::start().await;
    let app = spawn_signup(SignupMode::Open, Some(&sink)).await;
    let mailer = &app.node.mailer;
    let started = tokio::time::Instant::now();
    mailer
        .send("rejected@startup.test", "Hello", "refused for good")
        .await
        .unwrap();
    mailer
        .send("next@startup.test", "Hello", "delivered")
        .await
        .unwrap();
    sink.wait_for("next@startup.test", 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the next message waited for no retry: {:?}",
        started.elapsed()
    );
    assert_eq!(
        sink.rejected.load(Ordering::Relaxed),
        1,
        "a 5xx refusal is tried once"
    );
    assert_eq!(mailer.stats().failed.load(Ordering::Relaxed), 1);
    let stats = mailer.stats();
    wait_until("the mailer counts the delivery", || {
        stats.sent.load(Ordering::Relaxed) == 1
    })
    .await;
}
