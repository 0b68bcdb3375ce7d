//! Per-app Mercure settings: persisted by the store (SQLite and PostgreSQL), set with
//! `herald apps create|update --mercure-*`, shown and saved by the dashboard's settings page, and
//! turned into the verifier that checks the app's tokens.

use serde_json::{json, Value};

use herald::clock::Clock;
use herald::tenants::{
    AppPatch, MercureKey, MercurePatch, MercureSettings, NewApp, Secret, Store, StoreError,
    UserRole,
};

use crate::cli::{herald, herald_json, herald_json_error, stdout};
use crate::dashboard_helpers::*;
use crate::helpers::*;

const HS_KEY: &str = "a Mercure HS256 key of at least 32 bytes!";
const RSA_PUBLIC: &str = include_str!("../../src/auth/mercure/test_keys/rsa_public.pem");
const RSA_PRIVATE: &str = include_str!("../../src/auth/mercure/test_keys/rsa_private.pem");
const EC_PUBLIC: &str = include_str!("../../src/auth/mercure/test_keys/ec_public.pem");

fn hs256_token(key: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn patch(mercure: MercurePatch) -> AppPatch {
    AppPatch {
        mercure,
        ..AppPatch::default()
    }
}

async fn exercise_mercure_settings(url: &str) {
    let store = Store::open(url, Clock::system())
        .await
        .expect("the store opens");
    let plain = store
        .create_app(NewApp {
            name: "Plain".into(),
            ..NewApp::default()
        })
        .await
        .unwrap();
    assert_eq!(plain.mercure, MercureSettings::default());
    let read = store.get_app(&plain.id).await.unwrap();
    assert_eq!(read.mercure, MercureSettings::default());
    assert!(
        !read.mercure.anonymous,
        "anonymous subscribers are off by default"
    );

    let created = store
        .create_app(NewApp {
            name: "Hub".into(),
            mercure: MercurePatch {
                jwt_key: Some(MercureKey::Hmac(Secret::new(HS_KEY.into()))),
                audience: Some("https://hub.example.com/aud".into()),
                issuer: Some("https://issuer.example.com".into()),
                anonymous: Some(true),
                history_size: Some(50),
                history_seconds: Some(60),
            },
            ..NewApp::default()
        })
        .await
        .unwrap();
    let read = store.get_app(&created.id).await.unwrap();
    assert_eq!(read, created);
    assert_eq!(
        read.mercure,
        MercureSettings {
            jwt_key: MercureKey::Hmac(Secret::new(HS_KEY.into())),
            audience: Some("https://hub.example.com/aud".into()),
            issuer: Some("https://issuer.example.com".into()),
            anonymous: true,
            history_size: 50,
            history_seconds: 60,
        }
    );
    assert!(
        !format!("{read:?}").contains(HS_KEY),
        "the key is redacted in Debug"
    );
    // The stored settings make the verifier: the key, the issuer.
    let verifier = read.mercure_verifier("https://push.example.com").unwrap();
    assert_eq!(verifier.audience(), "https://hub.example.com/aud");
    let good = hs256_token(HS_KEY, &json!({"iss": "https://issuer.example.com"}));
    assert!(verifier.verify(&good, 0).is_ok());
    let by_secret = hs256_token(
        read.secret.expose(),
        &json!({"iss": "https://issuer.example.com"}),
    );
    assert!(
        verifier.verify(&by_secret, 0).is_err(),
        "the app secret does not sign here"
    );

    // Switch to a PEM key and back to the default audience; the rest is kept.
    let updated = store
        .update_app(
            &created.id,
            patch(MercurePatch {
                jwt_key: Some(MercureKey::PublicPem(RSA_PUBLIC.into())),
                audience: Some(String::new()),
                ..MercurePatch::default()
            }),
        )
        .await
        .unwrap();
    let read = store.get_app(&created.id).await.unwrap();
    assert_eq!(read, updated);
    assert!(
        matches!(&read.mercure.jwt_key, MercureKey::PublicPem(pem) if pem.contains("BEGIN PUBLIC KEY"))
    );
    assert_eq!(read.mercure.audience, None);
    assert_eq!(
        read.mercure.issuer.as_deref(),
        Some("https://issuer.example.com")
    );
    assert_eq!(read.mercure.history_size, 50);
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iss": "https://issuer.example.com"}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let verifier = read.mercure_verifier("https://push.example.com/").unwrap();
    assert_eq!(
        verifier.audience(),
        format!(
            "https://push.example.com/apps/{}/.well-known/mercure",
            read.id
        )
    );
    assert!(verifier.verify(&rs, 0).is_ok());

    // Bad values are refused when written and change nothing.
    let revision = store.revision().await.unwrap();
    let refusals = [
        MercurePatch {
            jwt_key: Some(MercureKey::PublicPem(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into(),
            )),
            ..MercurePatch::default()
        },
        MercurePatch {
            jwt_key: Some(MercureKey::PublicPem(RSA_PRIVATE.into())),
            ..MercurePatch::default()
        },
        MercurePatch {
            jwt_key: Some(MercureKey::Hmac(Secret::new("too short".into()))),
            ..MercurePatch::default()
        },
        MercurePatch {
            history_size: Some(100_001),
            ..MercurePatch::default()
        },
        MercurePatch {
            history_seconds: Some(7 * 24 * 3600 + 1),
            ..MercurePatch::default()
        },
        MercurePatch {
            audience: Some("a".repeat(2_049)),
            ..MercurePatch::default()
        },
        MercurePatch {
            issuer: Some("bad\nissuer".into()),
            anonymous: Some(false),
            ..MercurePatch::default()
        },
    ];
    for refused in refusals {
        let outcome = store.update_app(&created.id, patch(refused.clone())).await;
        assert!(
            matches!(outcome, Err(StoreError::Invalid(_))),
            "{refused:?}: {outcome:?}"
        );
    }
    let refused_create = store
        .create_app(NewApp {
            name: "Bad key".into(),
            mercure: MercurePatch {
                jwt_key: Some(MercureKey::PublicPem("not a key".into())),
                ..MercurePatch::default()
            },
            ..NewApp::default()
        })
        .await;
    assert!(matches!(refused_create, Err(StoreError::Invalid(message)) if message.contains("PEM")));
    assert_eq!(
        store.revision().await.unwrap(),
        revision,
        "nothing was written"
    );
    assert_eq!(store.get_app(&created.id).await.unwrap(), updated);

    // An empty HS256 key goes back to the app's secret; the snapshot carries the settings.
    let reset = store
        .update_app(
            &created.id,
            patch(MercurePatch {
                jwt_key: Some(MercureKey::Hmac(Secret::new(String::new()))),
                history_size: Some(0),
                ..MercurePatch::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(reset.mercure.jwt_key, MercureKey::AppSecret);
    let (_, apps) = store.snapshot().await.unwrap();
    let snap = apps.iter().find(|a| a.id == created.id).unwrap();
    assert_eq!(snap.mercure, reset.mercure);
    assert_eq!(snap.mercure.history_size, 0);
    store.close().await;
}

#[tokio::test]
async fn mercure_settings_round_trip_through_the_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise_mercure_settings(&herald::config::sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn mercure_settings_round_trip_through_the_store_on_postgres() {
    on_scratch_postgres(|url| async move {
        exercise_mercure_settings(&url).await;
    })
    .await;
}

#[tokio::test]
async fn apps_create_and_update_take_the_mercure_flags() {
    let dir = tempfile::tempdir().unwrap();
    let app = herald_json(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Hub",
            "--mercure-jwt-key",
            HS_KEY,
            "--mercure-audience",
            "https://hub.example.com/aud",
            "--mercure-anonymous",
            "true",
            "--mercure-history-size",
            "10",
            "--mercure-history-seconds",
            "20",
            "--json",
        ],
    )
    .await;
    assert_eq!(
        app["mercure"],
        json!({
            "jwt_key": "hs256",
            "jwt_secret": HS_KEY,
            "jwt_public_key": null,
            "audience": "https://hub.example.com/aud",
            "issuer": null,
            "anonymous": true,
            "history_size": 10,
            "history_seconds": 20,
        })
    );
    let id = app["id"].as_str().unwrap().to_owned();

    let pem = dir.path().join("mercure.pub.pem");
    std::fs::write(&pem, EC_PUBLIC).unwrap();
    let updated = herald_json(
        dir.path(),
        &[
            "apps",
            "update",
            &id,
            "--mercure-jwt-key-file",
            pem.to_str().unwrap(),
            "--mercure-issuer",
            "https://issuer.example.com",
            "--mercure-audience",
            "",
            "--json",
        ],
    )
    .await;
    let mercure = &updated["mercure"];
    assert_eq!(mercure["jwt_key"], "public_key");
    assert_eq!(mercure["jwt_secret"], Value::Null);
    assert!(mercure["jwt_public_key"]
        .as_str()
        .unwrap()
        .contains("BEGIN PUBLIC KEY"));
    assert_eq!(mercure["audience"], Value::Null);
    assert_eq!(mercure["issuer"], "https://issuer.example.com");
    assert_eq!(mercure["anonymous"], true, "left alone");
    let shown = herald_json(dir.path(), &["apps", "show", &id, "--json"]).await;
    assert_eq!(shown["mercure"], *mercure);
    let text = stdout(&herald(dir.path(), &["apps", "show", &id]).await);
    assert!(text.contains("mercure_anonymous:  true"), "{text}");
    assert!(text.contains("a PEM public key"), "{text}");

    // Refusals, each with a message that says what is wrong.
    let private = dir.path().join("private.pem");
    std::fs::write(&private, RSA_PRIVATE).unwrap();
    let error = herald_json_error(
        dir.path(),
        &[
            "apps",
            "update",
            &id,
            "--mercure-jwt-key-file",
            private.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert!(error.contains("public key"), "{error}");
    assert!(!error.contains("PRIVATE KEY-----"), "{error}");
    let missing = dir.path().join("missing.pem");
    let error = herald_json_error(
        dir.path(),
        &[
            "apps",
            "update",
            &id,
            "--mercure-jwt-key-file",
            missing.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert!(error.contains("missing.pem"), "{error}");
    let error = herald_json_error(
        dir.path(),
        &[
            "apps",
            "update",
            &id,
            "--mercure-history-size",
            "100001",
            "--json",
        ],
    )
    .await;
    assert!(error.contains("at most 100000"), "{error}");
    let error = herald_json_error(
        dir.path(),
        &[
            "apps",
            "update",
            &id,
            "--mercure-jwt-key",
            "short",
            "--json",
        ],
    )
    .await;
    assert!(error.contains("32"), "{error}");
    for conflicting in [
        vec![
            "apps",
            "update",
            &id,
            "--mercure-jwt-key",
            HS_KEY,
            "--mercure-jwt-key-file",
            "x",
        ],
        vec!["apps", "update", &id, "--mercure-anonymous", "maybe"],
    ] {
        let output = herald(dir.path(), &conflicting).await;
        assert!(!output.status.success(), "{conflicting:?} is refused");
    }
    let unchanged = herald_json(dir.path(), &["apps", "show", &id, "--json"]).await;
    assert_eq!(
        unchanged["mercure"], *mercure,
        "refused updates changed nothing"
    );
}

#[tokio::test]
async fn the_settings_page_shows_and_saves_the_mercure_settings() {
    let app = spawn_dashboard().await;
    let browser = Browser::new(&app);
    let store = &app.node.store;
    let tenant = store.create_tenant("Acme").await.unwrap();
    store
        .create_user(
            TENANT_ADMIN,
            TENANT_ADMIN_PASSWORD,
            UserRole::Admin,
            Some(&tenant.id),
        )
        .await
        .unwrap();
    let ours = store
        .create_app(NewApp {
            name: "Acme hub".into(),
            tenant_id: Some(tenant.id.clone()),
            ..NewApp::default()
        })
        .await
        .unwrap();
    let s = browser.sign_in(TENANT_ADMIN, TENANT_ADMIN_PASSWORD).await;
    let path = format!("/dashboard/apps/{}", ours.id);
    let page = browser.get(Some(&s.cookie), &path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("data-testid=\"mercure\""),
        "{}",
        page.body
    );
    let hub_url = format!(
        "http://{}/apps/{}/.well-known/mercure",
        app.address, ours.id
    );
    assert!(
        page.body.contains(&hub_url),
        "the hub URL under the bound address: {}",
        page.body
    );

    let form: Form = vec![
        ("mercure_key_mode", "hs256".into()),
        ("mercure_jwt_key", HS_KEY.into()),
        ("mercure_audience", "https://hub.example.com/aud".into()),
        ("mercure_issuer", "".into()),
        ("mercure_anonymous__present", "1".into()),
        ("mercure_anonymous", "1".into()),
        ("mercure_history_size", "77".into()),
        ("mercure_history_seconds", "88".into()),
    ];
    // Without the CSRF token nothing changes.
    browser
        .post(Some(&s.cookie), &path, &form)
        .await
        .assert_csrf_refused("the settings form without its token");
    assert_eq!(
        store.get_app(&ours.id).await.unwrap().mercure,
        MercureSettings::default()
    );

    browser
        .post(Some(&s.cookie), &path, &with_csrf(&form, &s.csrf))
        .await
        .assert_done("the Mercure settings are saved");
    let saved = store.get_app(&ours.id).await.unwrap().mercure;
    assert_eq!(saved.jwt_key, MercureKey::Hmac(Secret::new(HS_KEY.into())));
    assert_eq!(
        saved.audience.as_deref(),
        Some("https://hub.example.com/aud")
    );
    assert!(saved.anonymous);
    assert_eq!((saved.history_size, saved.history_seconds), (77, 88));
    let page = browser.get(Some(&s.cookie), &path).await;
    assert!(!page.body.contains(HS_KEY), "the HS256 key is never shown");
    assert!(page.body.contains("https://hub.example.com/aud"));

    // Saving again with the key field empty keeps the key; a bad PEM is refused with a message.
    let keep: Form = vec![
        ("mercure_key_mode", "hs256".into()),
        ("mercure_jwt_key", "".into()),
        ("mercure_history_size", "77".into()),
    ];
    browser
        .post(Some(&s.cookie), &path, &with_csrf(&keep, &s.csrf))
        .await
        .assert_done("saving without a new key");
    assert_eq!(store.get_app(&ours.id).await.unwrap().mercure, saved);
    let bad: Form = vec![
        ("mercure_key_mode", "public_key".into()),
        (
            "mercure_public_key",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into(),
        ),
    ];
    let refused = browser
        .post(Some(&s.cookie), &path, &with_csrf(&bad, &s.csrf))
        .await;
    assert_eq!(refused.status, 303, "{}", refused.body);
    assert!(
        refused.location().contains("error="),
        "{}",
        refused.location()
    );
    assert_eq!(store.get_app(&ours.id).await.unwrap().mercure, saved);
    let pem: Form = vec![
        ("mercure_key_mode", "public_key".into()),
        ("mercure_public_key", RSA_PUBLIC.into()),
        ("mercure_history_size", "many".into()),
    ];
    let refused = browser
        .post(Some(&s.cookie), &path, &with_csrf(&pem, &s.csrf))
        .await;
    assert!(
        refused.location().contains("error="),
        "{}",
        refused.location()
    );
    let pem: Form = vec![
        ("mercure_key_mode", "public_key".into()),
        ("mercure_public_key", RSA_PUBLIC.into()),
    ];
    browser
        .post(Some(&s.cookie), &path, &with_csrf(&pem, &s.csrf))
        .await
        .assert_done("a PEM public key is saved");
    assert!(matches!(
        store.get_app(&ours.id).await.unwrap().mercure.jwt_key,
        MercureKey::PublicPem(_)
    ));

    // Another tenant's admin cannot change this app's settings.
    let other = store.create_tenant("Other").await.unwrap();
    store
        .create_user(
            "admin@other.test",
            "other admin password",
            UserRole::Admin,
            Some(&other.id),
        )
        .await
        .unwrap();
    let o = browser
        .sign_in("admin@other.test", "other admin password")
        .await;
    let before = store.get_app(&ours.id).await.unwrap();
    let page = browser
        .post(Some(&o.cookie), &path, &with_csrf(&form, &o.csrf))
        .await;
    page.assert_not_found("another tenant's app");
    assert_eq!(store.get_app(&ours.id).await.unwrap(), before);
}
