use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::protocol::mercure::MAX_SELECTORS;

const NOW: i64 = 1_800_000_000;
const HUB: &str = "https://hub.example.com/apps/1/.well-known/mercure";
const SECRET: &[u8] = b"the app's shared secret";
const RSA_PRIVATE: &str = include_str!("test_keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("test_keys/rsa_public.pem");
const RSA_OTHER_PUBLIC: &str = include_str!("test_keys/rsa_other_public.pem");
const EC_PRIVATE: &str = include_str!("test_keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("test_keys/ec_public.pem");
const EC_P384_PUBLIC: &str = include_str!("test_keys/ec_p384_public.pem");

fn hs_verifier() -> Verifier {
    Verifier::new(KeyMaterial::Hmac(SECRET), HUB, None).unwrap()
}

fn mint(header: Header, claims: &Value, key: &EncodingKey) -> String {
    encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    mint(
        Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

fn at_jwt(alg: Algorithm) -> Header {
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header
}

fn draft08_claims(details: Value) -> Value {
    json!({
        "iss": "https://example.com",
        "aud": HUB,
        "sub": "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
        "client_id": "https://example.com",
        "iat": NOW - 10,
        "exp": NOW + 300,
        "jti": "urn:uuid:e70ff8d7-59d5-4a92-b0b7-505e8f6d09fa",
        "authorization_details": details,
    })
}

fn detail(actions: &[&str], topics: Value) -> Value {
    json!({"type": MERCURE_DETAIL_TYPE, "actions": actions, "topics": topics})
}

fn topics(list: &[String]) -> Vec<String> {
    list.to_vec()
}

#[test]
fn a_draft07_token_grants_its_mercure_claim() {
    let token = hs256(&json!({
        "mercure": {
            "subscribe": ["https://example.com/users/foo/{?topic}", "https://example.com/public"],
            "publish": ["*"],
            "payload": {"user": "https://example.com/users/foo"},
        },
        "exp": NOW + 60,
    }));
    let grants = hs_verifier().verify(&token, NOW).unwrap();
    assert_eq!(grants.draft, Some(Draft::Draft07));
    assert_eq!(grants.expires_at, Some(NOW + 60));
    assert_eq!(grants.publish, vec![Selector::Any]);
    assert_eq!(grants.subscribe.len(), 2);
    let private_update = topics(&[
        "https://example.com/books/1".into(),
        "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1".into(),
    ]);
    assert!(grants.may_receive(&private_update));
    assert!(!grants.may_receive(&topics(&["https://example.com/books/1".into()])));
    assert!(grants.may_publish(&private_update));
    assert_eq!(
        grants.payload_for("anything"),
        Some(&json!({"user": "https://example.com/users/foo"}))
    );
}

#[test]
fn a_token_without_rights_is_valid_and_grants_nothing() {
    let grants = hs_verifier().verify(&hs256(&json!({})), NOW).unwrap();
    assert!(grants.subscribe.is_empty() && grants.publish.is_empty());
    assert!(!grants.may_publish(&topics(&["a".into()])));
    let grants = hs_verifier()
        .verify(&hs256(&json!({"mercure": {"subscribe": []}})), NOW)
        .unwrap();
    assert!(!grants.may_receive(&topics(&["a".into()])));
}

#[test]
fn a_draft08_token_grants_its_authorization_details() {
    let claims = draft08_claims(json!([
        detail(&["subscribe"], json!([
            {"match": "https://example.com/books/1", "match_type": "exact"},
            {"match": "https://example.com/users/42/*", "match_type": "urlpattern"},
        ])),
        {"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"],
         "topics": [{"match": "*"}], "payload": {"custom3": "default"}},
        detail(&["publish", "future-action"], json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}])),
        {"type": "https://other.example/detail", "whatever": true},
    ]));
    let token = mint(
        at_jwt(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    );
    let grants = hs_verifier().verify(&token, NOW).unwrap();
    assert_eq!(grants.draft, Some(Draft::Draft08));
    assert_eq!(grants.expires_at, Some(NOW + 300));
    assert_eq!(
        grants.subject.as_deref(),
        Some("urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6")
    );
    assert_eq!(grants.subscribe.len(), 3);
    assert!(grants.may_receive(&topics(&["https://example.com/users/42/books/1".into()])));
    assert!(grants.may_publish(&topics(&["https://example.com/books/7".into()])));
    assert!(!grants.may_publish(&topics(&[
        "https://example.com/books/7".into(),
        "https://example.com/authors/1".into()
    ])));
    // Payload: the first subscribe detail whose topics match the subscription's matcher.
    assert_eq!(grants.payload_for("https://example.com/books/1"), None);
    assert_eq!(
        grants.payload_for("https://example.com/other"),
        Some(&json!({"custom3": "default"}))
    );
    // application/at+jwt is the same type.
    let mut header = at_jwt(Algorithm::HS256);
    header.typ = Some("application/AT+JWT".into());
    let token = mint(header, &claims, &EncodingKey::from_secret(SECRET));
    assert!(hs_verifier().verify(&token, NOW).is_ok());
    // The media type's `application/` prefix is case-insensitive too.
    let mut header = at_jwt(Algorithm::HS256);
    header.typ = Some("Application/at+jwt".into());
    let token = mint(header, &claims, &EncodingKey::from_secret(SECRET));
    assert_eq!(
        hs_verifier().verify(&token, NOW).unwrap().draft,
        Some(Draft::Draft08)
    );
}

#[test]
fn an_access_token_needs_an_issuer_and_any_audience_must_name_this_hub() {
    let key = EncodingKey::from_secret(SECRET);
    let good = draft08_claims(json!([detail(&["subscribe"], json!([{"match": "*"}]))]));
    // draft-08: `iss` must be present even when the app names no issuer.
    for iss in [None, Some(json!("")), Some(json!(7))] {
        let mut claims = good.clone();
        match iss {
            None => claims.as_object_mut().unwrap().remove("iss"),
            Some(value) => claims.as_object_mut().unwrap().insert("iss".into(), value),
        };
        let token = mint(at_jwt(Algorithm::HS256), &claims, &key);
        assert_eq!(
            hs_verifier().verify(&token, NOW).unwrap_err(),
            TokenError::WrongIssuer,
            "{claims}"
        );
    }
    // A draft-07 token naming another hub as its audience is refused; naming this one, or
    // none, is fine.
    let other = hs256(
        &json!({"mercure": {"subscribe": ["*"]}, "aud": "https://other.example/.well-known/mercure"}),
    );
    assert_eq!(
        hs_verifier().verify(&other, NOW).unwrap_err(),
        TokenError::WrongAudience
    );
    let listed = hs256(&json!({"mercure": {"subscribe": ["*"]}, "aud": ["x", HUB]}));
    assert!(hs_verifier().verify(&listed, NOW).is_ok());
    assert!(hs_verifier()
        .verify(&hs256(&json!({"mercure": {"subscribe": ["*"]}})), NOW)
        .is_ok());
}

#[test]
fn rs256_and_es256_tokens_verify_with_the_public_pem() {
    let claims = json!({"mercure": {"publish": ["*"]}, "exp": NOW + 60});
    let rsa = Verifier::new(KeyMaterial::PublicPem(RSA_PUBLIC), HUB, None).unwrap();
    let token = mint(
        Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    );
    assert_eq!(
        rsa.verify(&token, NOW).unwrap().publish,
        vec![Selector::Any]
    );
    let other = Verifier::new(KeyMaterial::PublicPem(RSA_OTHER_PUBLIC), HUB, None).unwrap();
    assert_eq!(
        other.verify(&token, NOW).unwrap_err(),
        TokenError::BadSignature
    );

    let ec = Verifier::new(KeyMaterial::PublicPem(EC_PUBLIC), HUB, None).unwrap();
    let token = mint(
        at_jwt(Algorithm::ES256),
        &draft08_claims(json!([detail(&["publish"], json!([{"match": "*"}]))])),
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    );
    assert_eq!(ec.verify(&token, NOW).unwrap().publish, vec![Selector::Any]);
    assert_eq!(
        rsa.verify(&token, NOW).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn bad_signatures_and_algorithm_confusion_are_refused() {
    let token = hs256(&json!({"mercure": {"publish": ["*"]}}));
    let wrong_key = Verifier::new(KeyMaterial::Hmac(b"another key"), HUB, None).unwrap();
    assert_eq!(
        wrong_key.verify(&token, NOW).unwrap_err(),
        TokenError::BadSignature
    );
    // A tampered payload.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = hs256(&json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}}));
    let forged_payload = forged.split('.').nth(1).unwrap();
    parts[1] = forged_payload;
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        token.split('.').nth(2).unwrap()
    );
    assert_eq!(
        hs_verifier().verify(&tampered, NOW).unwrap_err(),
        TokenError::BadSignature
    );

    // An RS key given an HS token signed with the public key's PEM text as the HMAC secret.
    let rsa = Verifier::new(KeyMaterial::PublicPem(RSA_PUBLIC), HUB, None).unwrap();
    let confused = mint(
        Header::new(Algorithm::HS256),
        &json!({"mercure": {"publish": ["*"]}}),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    );
    assert_eq!(
        rsa.verify(&confused, NOW).unwrap_err(),
        TokenError::BadSignature
    );
    // An HS verifier given an RS token.
    let rs_token = mint(
        Header::new(Algorithm::RS256),
        &json!({}),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    );
    assert_eq!(
        hs_verifier().verify(&rs_token, NOW).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn alg_none_and_garbage_are_refused() {
    // base64url of {"mercure":{"publish":["*"]}}, then of three headers: alg none, alg None,
    // no alg at all.
    let claims = "eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0";
    for header in [
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
        "eyJhbGciOiJOb25lIn0",
        "eyJ0eXAiOiJKV1QifQ",
    ] {
        let token = format!("{header}.{claims}.");
        let refused = hs_verifier().verify(&token, NOW).unwrap_err();
        assert!(
            matches!(refused, TokenError::Malformed(_)),
            "{header}: {refused:?}"
        );
    }
    for garbage in ["", "a.b", "a.b.c", "not a token at all", "....."] {
        assert!(matches!(
            hs_verifier().verify(garbage, NOW),
            Err(TokenError::Malformed(_))
        ));
    }
    // Claims that are not an object.
    let token = mint(
        Header::new(Algorithm::HS256),
        &json!([1, 2]),
        &EncodingKey::from_secret(SECRET),
    );
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn expiry_and_not_before_have_a_small_leeway() {
    let at = |exp: i64| hs256(&json!({"exp": exp}));
    assert!(hs_verifier().verify(&at(NOW), NOW).is_ok());
    assert!(hs_verifier().verify(&at(NOW - LEEWAY_SECS), NOW).is_ok());
    assert_eq!(
        hs_verifier()
            .verify(&at(NOW - LEEWAY_SECS - 1), NOW)
            .unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(
        hs_verifier().verify(&at(NOW - 3600), NOW).unwrap_err(),
        TokenError::Expired
    );
    let nbf = |nbf: i64| hs256(&json!({"nbf": nbf}));
    assert!(hs_verifier().verify(&nbf(NOW + LEEWAY_SECS), NOW).is_ok());
    assert_eq!(
        hs_verifier().verify(&nbf(NOW + 3600), NOW).unwrap_err(),
        TokenError::Expired
    );
    assert!(matches!(
        hs_verifier().verify(&hs256(&json!({"exp": "tomorrow"})), NOW),
        Err(TokenError::Malformed(_))
    ));
    // draft-07 tokens may have no exp; draft-08 ones must.
    let mut claims = draft08_claims(json!([]));
    claims.as_object_mut().unwrap().remove("exp");
    let token = mint(
        at_jwt(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    );
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn draft08_audience_issuer_and_type_are_checked() {
    let key = EncodingKey::from_secret(SECRET);
    let good = draft08_claims(json!([]));
    assert!(hs_verifier()
        .verify(&mint(at_jwt(Algorithm::HS256), &good, &key), NOW)
        .is_ok());

    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("https://other-hub.example.com/.well-known/mercure");
    let token = mint(at_jwt(Algorithm::HS256), &wrong_aud, &key);
    assert_eq!(
        hs_verifier().verify(&token, NOW).unwrap_err(),
        TokenError::WrongAudience
    );
    let mut listed = good.clone();
    listed["aud"] = json!(["https://a.example", HUB]);
    assert!(hs_verifier()
        .verify(&mint(at_jwt(Algorithm::HS256), &listed, &key), NOW)
        .is_ok());
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let token = mint(at_jwt(Algorithm::HS256), &no_aud, &key);
    assert_eq!(
        hs_verifier().verify(&token, NOW).unwrap_err(),
        TokenError::WrongAudience
    );

    let with_issuer =
        Verifier::new(KeyMaterial::Hmac(SECRET), HUB, Some("https://example.com")).unwrap();
    assert!(with_issuer
        .verify(&mint(at_jwt(Algorithm::HS256), &good, &key), NOW)
        .is_ok());
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let token = mint(at_jwt(Algorithm::HS256), &wrong_iss, &key);
    assert_eq!(
        with_issuer.verify(&token, NOW).unwrap_err(),
        TokenError::WrongIssuer
    );
    // The issuer binds draft-07 tokens too.
    assert_eq!(
        with_issuer.verify(&hs256(&json!({})), NOW).unwrap_err(),
        TokenError::WrongIssuer
    );

    // authorization_details in a token that is not typed at+jwt (an ID token, say).
    let mut id_token = Header::new(Algorithm::HS256);
    id_token.typ = Some("JWT".into());
    let token = mint(id_token, &good, &key);
    assert_eq!(
        hs_verifier().verify(&token, NOW).unwrap_err(),
        TokenError::WrongType
    );
}

#[test]
fn malformed_rights_refuse_the_whole_token() {
    let key = EncodingKey::from_secret(SECRET);
    let bad_details = [
        json!({"not": "an array"}),
        json!(["not an object"]),
        json!([{"actions": ["subscribe"], "topics": [{"match": "*"}]}]),
        json!([{"type": MERCURE_DETAIL_TYPE, "actions": [], "topics": [{"match": "*"}]}]),
        json!([{"type": MERCURE_DETAIL_TYPE, "actions": [1], "topics": [{"match": "*"}]}]),
        json!([{"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": []}]),
        json!([{"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": ["a"]}]),
        json!([{"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": 1}]}]),
        json!([detail(
            &["subscribe"],
            json!([{"match": "a", "match_type": "regex"}])
        )]),
        json!([detail(
            &["subscribe"],
            json!([{"match": "https://x/(", "match_type": "urlpattern"}])
        )]),
        json!([{"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "*"}], "payload": "x"}]),
        json!([
            detail(&["subscribe"], json!([{"match": "ok"}])),
            detail(&["publish"], json!([{"match": "a\u{0}b"}]))
        ]),
    ];
    for details in bad_details {
        let token = mint(
            at_jwt(Algorithm::HS256),
            &draft08_claims(details.clone()),
            &key,
        );
        assert!(
            matches!(
                hs_verifier().verify(&token, NOW),
                Err(TokenError::Malformed(_))
            ),
            "{details}"
        );
    }
    for mercure in [
        json!("string"),
        json!({"subscribe": "not an array"}),
        json!({"publish": [1]}),
        json!({"subscribe": ["{a}".repeat(17)]}),
    ] {
        let token = hs256(&json!({ "mercure": mercure }));
        assert!(
            matches!(
                hs_verifier().verify(&token, NOW),
                Err(TokenError::Malformed(_))
            ),
            "{mercure}"
        );
    }
}

#[test]
fn tokens_and_their_rights_are_bounded() {
    let too_long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(
        hs_verifier().verify(&too_long, NOW),
        Err(TokenError::Malformed(_))
    ));
    let many: Vec<String> = (0..=MAX_SELECTORS).map(|i| format!("t{i}")).collect();
    let token = hs256(&json!({"mercure": {"subscribe": many}}));
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::Malformed(_))
    ));
    let fits: Vec<String> = (0..MAX_SELECTORS).map(|i| format!("t{i}")).collect();
    let token = hs256(&json!({"mercure": {"subscribe": fits}}));
    assert_eq!(
        hs_verifier().verify(&token, NOW).unwrap().subscribe.len(),
        MAX_SELECTORS
    );

    let key = EncodingKey::from_secret(SECRET);
    let details: Vec<Value> = (0..=MAX_DETAILS)
        .map(|i| detail(&["subscribe"], json!([{"match": format!("t{i}")}])))
        .collect();
    let token = mint(
        at_jwt(Algorithm::HS256),
        &draft08_claims(json!(details)),
        &key,
    );
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::Malformed(_))
    ));
    // Per right, over all details.
    let half: Vec<Value> = (0..MAX_SELECTORS / 2 + 1)
        .map(|i| json!({"match": format!("t{i}")}))
        .collect();
    let details = json!([
        detail(&["subscribe"], json!(half)),
        detail(&["subscribe"], json!(half))
    ]);
    let token = mint(at_jwt(Algorithm::HS256), &draft08_claims(details), &key);
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn keys_are_checked_when_set() {
    assert_eq!(
        Verifier::new(KeyMaterial::Hmac(b""), HUB, None).unwrap_err(),
        KeyError::EmptyHmac
    );
    for bad in [
        "",
        "not a pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        RSA_PRIVATE,
        EC_PRIVATE,
        EC_P384_PUBLIC,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let refused = Verifier::new(KeyMaterial::PublicPem(bad), HUB, None).unwrap_err();
        assert!(matches!(refused, KeyError::BadPem(_)), "{bad:?}");
        assert!(
            !refused.to_string().contains("PRIVATE KEY-----"),
            "no key material echoed"
        );
    }
    assert!(Verifier::new(KeyMaterial::PublicPem(RSA_PUBLIC), HUB, None).is_ok());
    assert!(Verifier::new(KeyMaterial::PublicPem(EC_PUBLIC), HUB, None).is_ok());
    // The secret never shows in Debug.
    let debug = format!("{:?}", hs_verifier());
    assert!(!debug.contains("shared secret"), "{debug}");
}

#[test]
fn tokens_are_found_per_each_draft() {
    use TokenSource::*;
    let both = "theme=dark; mercureAuthorization=c07; __Secure-mercure_access_token=\"c08\"";
    // The header wins over everything.
    assert_eq!(
        locate_token(Draft::Draft07, Some("Bearer h"), Some(both), Some("q")),
        Ok(Some((Header, "h")))
    );
    assert_eq!(
        locate_token(Draft::Draft08, Some("bearer  h "), Some(both), None),
        Ok(Some((Header, "h")))
    );
    // draft-07: the query parameter before the cookie.
    assert_eq!(
        locate_token(Draft::Draft07, None, Some(both), Some("q")),
        Ok(Some((Query, "q")))
    );
    assert_eq!(
        locate_token(Draft::Draft07, None, Some(both), None),
        Ok(Some((Cookie, "c07")))
    );
    // draft-08: its own cookie (quotes dropped), never the query.
    assert_eq!(
        locate_token(Draft::Draft08, None, Some(both), Some("q")),
        Ok(Some((Cookie, "c08")))
    );
    assert_eq!(
        locate_token(
            Draft::Draft08,
            None,
            Some("mercureAuthorization=x"),
            Some("q")
        ),
        Ok(None)
    );
    assert_eq!(locate_token(Draft::Draft07, None, None, None), Ok(None));
    // A cookie whose name only ends like ours is another cookie.
    assert_eq!(
        locate_token(
            Draft::Draft07,
            None,
            Some("xmercureAuthorization=a;mercureAuthorization=b"),
            None
        ),
        Ok(Some((Cookie, "b")))
    );
    for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "token"] {
        assert_eq!(
            locate_token(Draft::Draft08, Some(bad), Some(both), None),
            Err(BadAuthorizationHeader),
            "{bad}"
        );
    }
    // The draft-agnostic form.
    assert_eq!(
        find_token(Some("Bearer h"), Some(both), Some("q")),
        Some((Header, "h"))
    );
    assert_eq!(find_token(None, Some(both), Some("q")), Some((Query, "q")));
    assert_eq!(find_token(None, Some(both), None), Some((Cookie, "c08")));
    assert_eq!(
        find_token(Some("Basic x"), Some("mercureAuthorization=c"), None),
        Some((Cookie, "c"))
    );
    assert_eq!(cookie_value("a=1;b=2 ; c = 3", "b"), Some("2"));
}

#[test]
fn challenges_follow_rfc_6750() {
    assert_eq!(
        www_authenticate(Draft::Draft07, None),
        "Bearer realm=\"mercure\""
    );
    assert_eq!(
        www_authenticate(Draft::Draft07, Some(&TokenError::Expired)),
        "Bearer realm=\"mercure\", error=\"invalid_token\", error_description=\"token expired or not yet valid\""
    );
    // draft-08 tells no reason.
    assert_eq!(
        www_authenticate(Draft::Draft08, Some(&TokenError::Expired)),
        "Bearer realm=\"mercure\", error=\"invalid_token\""
    );
    assert_eq!(
        www_authenticate_with(Draft::Draft08, None, Some("https://h/.well-known/oauth-protected-resource/x")),
        "Bearer realm=\"mercure\", resource_metadata=\"https://h/.well-known/oauth-protected-resource/x\""
    );
    assert_eq!(
        www_authenticate_insufficient_scope(Draft::Draft08),
        "Bearer realm=\"mercure\", error=\"insufficient_scope\""
    );
    assert_eq!(
        www_authenticate_invalid_request(Draft::Draft07),
        "Bearer realm=\"mercure\", error=\"invalid_request\""
    );
    // A description never breaks out of its quotes.
    let sneaky = TokenError::Malformed("a\"b\\c\r\nd".into());
    let value = www_authenticate(Draft::Draft07, Some(&sneaky));
    assert!(
        value.ends_with("error_description=\"malformed token: abcd\""),
        "{value}"
    );
}

#[test]
fn key_material_debug_never_shows_an_hmac_key() {
    let shown = format!("{:?}", KeyMaterial::Hmac(b"very-secret-hmac-key"));
    assert!(!shown.contains("very-secret"), "{shown}");
    assert!(!shown.contains("118"), "no byte values either: {shown}");
}
