//! Signatures: REST request verification, channel authorization, signin and webhook signing.
//!
//! Pure functions. The current time is always an argument and every comparison of a signature is
//! constant-time (through `Hmac::verify_slice`).

pub mod mercure;
mod secret;

pub use secret::Secret;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The REST timestamp window, in seconds either side of the server's clock.
pub const TIMESTAMP_WINDOW_SECS: i64 = 600;

/// Hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &str, message: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC-SHA256 of `message` under `secret` (constant-time).
pub fn verify(secret: &str, message: &str, signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(message.as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// Hex MD5 of a body, as in the REST `body_md5` parameter.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Why a socket-side signature was refused. The messages follow Pusher's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketAuthError {
    /// No `auth` where one is required.
    #[error("Missing auth: this channel needs a signature from your auth endpoint")]
    Missing,
    /// Not of the form `key:signature`.
    #[error("Invalid format: auth must have the format key:signature")]
    BadFormat,
    /// The key part names another app.
    #[error("Invalid key in subscription auth data: '{0}'")]
    WrongKey(String),
    /// The signature does not match.
    #[error("Invalid signature: Expected HMAC SHA256 hex digest of {0}")]
    BadSignature(String),
}

/// The string a channel authorization signs: `socket_id:channel[:channel_data]`.
pub fn channel_string_to_sign(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The string a signin signs: `socket_id::user::user_data`.
pub fn signin_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Checks `auth` (`key:hexsig`) against `string_to_sign` for any of the app's key/secret pairs.
pub fn verify_socket_auth<'a>(
    credentials: impl IntoIterator<Item = (&'a str, &'a str)>,
    auth: Option<&str>,
    string_to_sign: &str,
) -> Result<(), SocketAuthError> {
    let auth = auth
        .filter(|a| !a.is_empty())
        .ok_or(SocketAuthError::Missing)?;
    let (key, signature) = auth.split_once(':').ok_or(SocketAuthError::BadFormat)?;
    let mut key_known = false;
    for (app_key, secret) in credentials {
        if app_key == key {
            key_known = true;
            if verify(secret, string_to_sign, signature) {
                return Ok(());
            }
        }
    }
    if key_known {
        Err(SocketAuthError::BadSignature(string_to_sign.to_owned()))
    } else {
        Err(SocketAuthError::WrongKey(key.to_owned()))
    }
}

/// A REST request as seen by the verifier: query parameters already URL-decoded.
#[derive(Debug)]
pub struct RestRequest<'a> {
    /// HTTP method, any case.
    pub method: &'a str,
    /// The signed path: the request path from `/apps/` (or `/users/`) on.
    pub path: &'a str,
    /// Every query parameter, decoded, in any order.
    pub params: &'a [crate::protocol::QueryPair<'a>],
    /// The raw body.
    pub body: &'a [u8],
}

/// Why a REST request was refused (all map to 401 except where noted by the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestAuthError {
    /// A required `auth_*` parameter is missing.
    #[error("Missing parameter: {0}")]
    MissingParam(&'static str),
    /// `auth_version` other than 1.0.
    #[error("Unsupported auth_version: expected 1.0")]
    BadVersion,
    /// `auth_timestamp` is not an integer.
    #[error("Invalid auth_timestamp: expected Unix seconds")]
    BadTimestamp,
    /// Outside the 600 s window.
    #[error("Timestamp expired: Given timestamp ({given}) not within 600s of server time ({now})")]
    TimestampExpired {
        /// The request's timestamp.
        given: i64,
        /// The server's time.
        now: i64,
    },
    /// `body_md5` missing on a request with a body, or not matching it.
    #[error("Invalid body_md5: does not match the MD5 of the request body")]
    BodyMd5Mismatch,
    /// The signature does not match.
    #[error("Invalid signature: you should have sent HmacSHA256Hex({0:?}, your_secret_key)")]
    BadSignature(String),
    /// A query parameter appears twice, which would make the signed string ambiguous.
    #[error("Invalid query: parameter {0} appears more than once")]
    DuplicateParam(String),
}

fn param<'a, K: AsRef<str>, V: AsRef<str>>(params: &'a [(K, V)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// The canonical string of a REST request: method, path and every parameter but
/// `auth_signature`, lowercased keys sorted, values unescaped.
pub fn rest_string_to_sign<K: AsRef<str>, V: AsRef<str>>(
    method: &str,
    path: &str,
    params: &[(K, V)],
) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .collect();
    pairs.sort_by(|a, b| cmp_lowercase(a.0, b.0).then_with(|| a.1.cmp(b.1)));
    let length = method.len()
        + path.len()
        + 2
        + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    let mut out = String::with_capacity(length);
    out.push_str(method);
    out.make_ascii_uppercase();
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        let key = out.len();
        out.push_str(k);
        out[key..].make_ascii_lowercase();
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Compares two parameter names as their ASCII-lowercased forms, without allocating them.
fn cmp_lowercase(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// The `auth_key` of a request, used to find its app before verifying.
pub fn rest_auth_key<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Option<&str> {
    param(params, "auth_key")
}

/// Verifies a REST request signed with `secret`, at time `now` (Unix seconds).
pub fn verify_rest(request: &RestRequest<'_>, secret: &str, now: i64) -> Result<(), RestAuthError> {
    let signature = check_rest_params(request.params, now)?;
    verify_rest_signature(request, secret, signature)
}

/// The checks of [`verify_rest`] that need neither the body nor the secret (no duplicate
/// parameter, every `auth_*` parameter present, version 1.0, timestamp in the window), so a
/// request can be refused before its body is read. Returns the `auth_signature`.
pub fn check_rest_params<K: AsRef<str>, V: AsRef<str>>(
    params: &[(K, V)],
    now: i64,
) -> Result<&str, RestAuthError> {
    // Every check below must judge exactly the values that were signed: a repeated key would let
    // one copy pass the timestamp or body_md5 check while the signature covers the other.
    if let Some(key) = duplicate_key(params) {
        return Err(RestAuthError::DuplicateParam(key.to_ascii_lowercase()));
    }
    param(params, "auth_key").ok_or(RestAuthError::MissingParam("auth_key"))?;
    let signature =
        param(params, "auth_signature").ok_or(RestAuthError::MissingParam("auth_signature"))?;
    let version =
        param(params, "auth_version").ok_or(RestAuthError::MissingParam("auth_version"))?;
    if version != "1.0" {
        return Err(RestAuthError::BadVersion);
    }
    let timestamp: i64 = param(params, "auth_timestamp")
        .ok_or(RestAuthError::MissingParam("auth_timestamp"))?
        .trim()
        .parse()
        .map_err(|_| RestAuthError::BadTimestamp)?;
    if now.abs_diff(timestamp) > TIMESTAMP_WINDOW_SECS.unsigned_abs() {
        return Err(RestAuthError::TimestampExpired {
            given: timestamp,
            now,
        });
    }
    Ok(signature)
}

/// A parameter name that appears twice (ASCII case ignored), the first such in lowercase order.
fn duplicate_key<K: AsRef<str>, V>(params: &[(K, V)]) -> Option<&str> {
    if params.len() <= 16 {
        // The handful of parameters a request carries: compared pairwise, without sorting a
        // copy (a few percent of a REST trigger's instructions, issue 19); the same answer.
        let mut found: Option<&str> = None;
        for (i, (key, _)) in params.iter().enumerate() {
            let key = key.as_ref();
            let repeated = params[..i]
                .iter()
                .any(|(k, _)| k.as_ref().eq_ignore_ascii_case(key));
            if repeated && found.is_none_or(|f| cmp_lowercase(key, f).is_lt()) {
                found = Some(key);
            }
        }
        return found;
    }
    let mut keys: Vec<&str> = params.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_by(|a, b| cmp_lowercase(a, b));
    keys.windows(2)
        .find(|pair| pair[0].eq_ignore_ascii_case(pair[1]))
        .map(|pair| pair[0])
}

/// The rest of [`verify_rest`], once the body is read: `body_md5` and the signature, for a
/// request whose parameters passed [`check_rest_params`].
pub fn verify_rest_signature(
    request: &RestRequest<'_>,
    secret: &str,
    signature: &str,
) -> Result<(), RestAuthError> {
    verify_rest_signature_keyed(request, &RestKey::new(secret), signature)
}

/// A secret's HMAC-SHA256 state once keyed (the inner and outer pads hashed): two of the
/// compressions a signature costs, done once for many requests (issue 19). Cloned per request.
#[derive(Clone)]
pub struct RestKey(HmacSha256);

impl RestKey {
    /// `secret`, keyed.
    pub fn new(secret: &str) -> RestKey {
        RestKey(HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size"))
    }
}

impl std::fmt::Debug for RestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestKey(..)")
    }
}

/// [`verify_rest_signature`] with the secret already keyed.
pub fn verify_rest_signature_keyed(
    request: &RestRequest<'_>,
    key: &RestKey,
    signature: &str,
) -> Result<(), RestAuthError> {
    let params = request.params;
    match param(params, "body_md5") {
        // pusher-http-python sends (and signs) body_md5 on GET too: accept it whenever it matches.
        Some(md5) if !md5_matches(md5, request.body) => return Err(RestAuthError::BodyMd5Mismatch),
        Some(_) => {}
        None if !request.body.is_empty() => return Err(RestAuthError::BodyMd5Mismatch),
        None => {}
    }
    let string_to_sign = rest_string_to_sign(request.method, request.path, params);
    if verify_keyed(key, &string_to_sign, signature) {
        Ok(())
    } else {
        Err(RestAuthError::BadSignature(string_to_sign))
    }
}

/// Whether `hex_md5` (any case) is the MD5 of `body`, without building the hex of the digest.
fn md5_matches(hex_md5: &str, body: &[u8]) -> bool {
    let mut given = [0u8; 16];
    hex::decode_to_slice(hex_md5, &mut given).is_ok() && given == Md5::digest(body).as_slice()
}

/// [`verify`] with the secret already keyed; the signature decoded without allocating.
fn verify_keyed(key: &RestKey, message: &str, signature_hex: &str) -> bool {
    let mut signature = [0u8; 32];
    if hex::decode_to_slice(signature_hex.trim(), &mut signature).is_err() {
        // Not 64 hex digits: no HMAC-SHA256 can match it.
        return false;
    }
    let mut mac = key.0.clone();
    mac.update(message.as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// `X-Pusher-Signature` of a webhook body.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    fn pairs(list: &[(&str, &str)]) -> Vec<crate::protocol::QueryPair<'static>> {
        list.iter()
            .map(|(k, v)| (k.to_string().into(), v.to_string().into()))
            .collect()
    }

    #[test]
    fn private_channel_golden_vector() {
        let s = channel_string_to_sign("1234.1234", "private-foobar", None);
        assert_eq!(
            sign(SECRET, &s),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth =
            format!("{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
        assert_eq!(verify_socket_auth([(KEY, SECRET)], Some(&auth), &s), Ok(()));
    }

    #[test]
    fn signin_golden_vector() {
        let s = signin_string_to_sign("1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(
            sign(SECRET, &s),
            "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn presence_vector_is_over_the_exact_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let s = channel_string_to_sign("1234.1234", "presence-foobar", Some(data));
        assert_eq!(
            sign(SECRET, &s),
            "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    #[test]
    fn socket_auth_refusals_name_their_cause() {
        let s = "1.1:private-a";
        assert_eq!(
            verify_socket_auth([(KEY, SECRET)], None, s),
            Err(SocketAuthError::Missing)
        );
        assert_eq!(
            verify_socket_auth([(KEY, SECRET)], Some("nocolon"), s),
            Err(SocketAuthError::BadFormat)
        );
        assert_eq!(
            verify_socket_auth([(KEY, SECRET)], Some("other:abc"), s),
            Err(SocketAuthError::WrongKey("other".into()))
        );
        assert!(matches!(
            verify_socket_auth([(KEY, SECRET)], Some(&format!("{KEY}:00ff")), s),
            Err(SocketAuthError::BadSignature(_))
        ));
    }

    #[test]
    fn rest_worked_example_from_the_docs() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let params = pairs(&[
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            (
                "auth_signature",
                "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
            ),
        ]);
        let request = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            params: &params,
            body,
        };
        assert_eq!(verify_rest(&request, SECRET, 1353088179 + 599), Ok(()));
        assert!(matches!(
            verify_rest(&request, SECRET, 1353088179 + 601),
            Err(RestAuthError::TimestampExpired { .. })
        ));
        assert!(matches!(
            verify_rest(&request, "wrong", 1353088179),
            Err(RestAuthError::BadSignature(_))
        ));
        let tampered = RestRequest {
            body: b"{}",
            ..request
        };
        assert_eq!(
            verify_rest(&tampered, SECRET, 1353088179),
            Err(RestAuthError::BodyMd5Mismatch)
        );
    }

    #[test]
    fn rest_get_vectors_with_and_without_body_md5() {
        let mut params = pairs(&[
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("info", "user_count"),
            ("filter_by_prefix", "presence-"),
        ]);
        assert_eq!(
            sign(
                SECRET,
                &rest_string_to_sign("GET", "/apps/3/channels", &params)
            ),
            "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291"
        );
        params.push(("body_md5".into(), "d41d8cd98f00b204e9800998ecf8427e".into()));
        params.push((
            "auth_signature".into(),
            "f3f17c61ae491cc9085db68b22076e9b772e3bcb301659d655153ee3f9782aba".into(),
        ));
        let request = RestRequest {
            method: "GET",
            path: "/apps/3/channels",
            params: &params,
            body: b"",
        };
        assert_eq!(verify_rest(&request, SECRET, 1353088179), Ok(()));
    }

    #[test]
    fn the_duplicate_named_is_the_same_with_few_or_many_parameters() {
        // Few: compared pairwise; many: sorted. Either way the first duplicate in lowercase
        // order, case ignored.
        let few = pairs(&[("b", "1"), ("A", "1"), ("B", "2"), ("a", "2"), ("c", "3")]);
        assert_eq!(
            duplicate_key(&few).map(str::to_ascii_lowercase),
            Some("a".into())
        );
        let mut many: Vec<(String, String)> = (0..20)
            .map(|i| (format!("k{i:02}"), i.to_string()))
            .collect();
        assert_eq!(duplicate_key(&many), None);
        many.push(("K07".into(), "x".into()));
        many.push(("k03".into(), "y".into()));
        assert_eq!(
            duplicate_key(&many).map(str::to_ascii_lowercase),
            Some("k03".into())
        );
        assert_eq!(duplicate_key(&few[..2]), None);
    }

    #[test]
    fn repeated_parameters_are_refused_so_checks_and_signature_see_the_same_values() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let params = pairs(&[
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            (
                "auth_signature",
                "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
            ),
            ("auth_timestamp", "1999999999"),
        ]);
        let request = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            params: &params,
            body,
        };
        assert_eq!(
            verify_rest(&request, SECRET, 1999999999),
            Err(RestAuthError::DuplicateParam("auth_timestamp".into()))
        );
    }

    #[test]
    fn extreme_timestamps_are_expired_not_a_panic() {
        let params = pairs(&[
            ("auth_key", KEY),
            ("auth_timestamp", "-9223372036854775808"),
            ("auth_version", "1.0"),
            ("auth_signature", "00"),
        ]);
        let request = RestRequest {
            method: "GET",
            path: "/apps/3/channels",
            params: &params,
            body: b"",
        };
        assert!(matches!(
            verify_rest(&request, SECRET, i64::MAX),
            Err(RestAuthError::TimestampExpired { .. })
        ));
    }

    #[test]
    fn webhook_vector() {
        let body = br#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}"#;
        assert_eq!(
            webhook_signature(SECRET, body),
            "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"
        );
    }
}
