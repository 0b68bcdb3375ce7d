//! What an audit entry's details hold stays small and secret-free: a Mercure public key as a
//! short fingerprint (never the PEM), an HS256 key replaced by another as `"replaced"` (never
//! the key), and any details past `MAX_AUDIT_DETAILS_BYTES` clipped.

use serde_json::json;

use herald::clock::Clock;
use herald::tenants::{
    key_fingerprint, AppPatch, AuditBy, AuditEntry, AuditFilter, MercureKey, MercurePatch, NewApp,
    NewAuditEntry, Secret, Store, MAX_AUDIT_DETAILS_BYTES,
};

const RSA_PUBLIC: &str = include_str!("../../src/auth/mercure/test_keys/rsa_public.pem");
const FIRST_KEY: &str = "the first shared HS256 key, long enough";
const SECOND_KEY: &str = "the second shared HS256 key, long enough";

async fn newest(store: &Store) -> AuditEntry {
    store
        .audit_entries(&AuditFilter::default())
        .await
        .unwrap()
        .remove(0)
}

fn key(jwt_key: MercureKey) -> AppPatch {
    AppPatch {
        mercure: MercurePatch {
            jwt_key: Some(jwt_key),
            ..MercurePatch::default()
        },
        ..AppPatch::default()
    }
}

#[tokio::test]
async fn mercure_keys_are_audited_as_fingerprints_and_replacements_and_details_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let url = herald::config::sqlite_url(dir.path());
    let store = Store::open(&url, Clock::system()).await.unwrap();
    let cli = AuditBy::cli;
    let tenant = cli().scope(store.create_tenant("Acme")).await.unwrap().id;
    let app = cli()
        .scope(store.create_app(NewApp {
            name: "Chat".into(),
            tenant_id: Some(tenant.clone()),
            ..NewApp::default()
        }))
        .await
        .unwrap();

    // A public key: its fingerprint, not its PEM.
    cli()
        .scope(store.update_app(&app.id, key(MercureKey::PublicPem(RSA_PUBLIC.into()))))
        .await
        .unwrap();
    let stored = store.get_app(&app.id).await.unwrap();
    let MercureKey::PublicPem(pem) = &stored.mercure.jwt_key else {
        panic!("a public key");
    };
    let entry = newest(&store).await;
    assert_eq!(entry.action, "mercure.changed");
    assert_eq!(
        entry.details["public_key"],
        json!({ "from": "", "to": key_fingerprint(pem) })
    );
    assert!(!entry.details.to_string().contains("BEGIN PUBLIC KEY"));
    assert!(key_fingerprint(pem).len() < 40);

    // One HS256 key, then another: the second change is audited, without either key.
    cli()
        .scope(store.update_app(
            &app.id,
            key(MercureKey::Hmac(Secret::new(FIRST_KEY.into()))),
        ))
        .await
        .unwrap();
    let before = store
        .audit_entries(&AuditFilter::default())
        .await
        .unwrap()
        .len();
    cli()
        .scope(store.update_app(
            &app.id,
            key(MercureKey::Hmac(Secret::new(SECOND_KEY.into()))),
        ))
        .await
        .unwrap();
    let all = store.audit_entries(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), before + 1, "the replacement writes an entry");
    assert_eq!(all[0].action, "mercure.changed");
    assert_eq!(all[0].details, json!({ "hs256_key": "replaced" }));
    for entry in &all {
        let text = entry.details.to_string();
        assert!(
            !text.contains(FIRST_KEY) && !text.contains(SECOND_KEY),
            "{text}"
        );
    }
    // The same key again changes nothing and writes nothing.
    cli()
        .scope(store.update_app(
            &app.id,
            key(MercureKey::Hmac(Secret::new(SECOND_KEY.into()))),
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .audit_entries(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        before + 1
    );

    // Details past the cap are clipped, with their full length.
    let huge = "é".repeat(100_000);
    store
        .record_audit(NewAuditEntry {
            tenant_id: Some(tenant.clone()),
            actor: "cli".into(),
            action: "test.huge".into(),
            target: "x".into(),
            details: json!({ "text": huge }),
            ..NewAuditEntry::default()
        })
        .await
        .unwrap();
    let entry = newest(&store).await;
    assert_eq!(entry.action, "test.huge");
    let text = entry.details.to_string();
    assert!(text.len() <= MAX_AUDIT_DETAILS_BYTES + 64, "{}", text.len());
    assert!(entry.details["bytes"].as_u64().unwrap() > 200_000);
    assert!(entry.details["clipped"]
        .as_str()
        .unwrap()
        .starts_with("{\"text\":\"é"));
    store.close().await;
}
