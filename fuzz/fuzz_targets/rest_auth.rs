//! The REST canonicaliser and signature check (`auth::rest_string_to_sign`, `verify_rest`) over
//! query strings decoded as the API decodes them (`protocol::query_pairs`).
//!
//! Input: `method \n path \n query \n body`. Invariants: the canonical string does not depend
//! on the order of the parameters, and canonicalising it again changes nothing; the fuzzed
//! request itself verifies only with the signature of its canonical string; a request signed
//! as an SDK signs it verifies, and a one-byte change to its signature, to a signed value or to
//! its body does not.
#![no_main]

use herald::auth::{body_md5, rest_string_to_sign, sign, verify_rest, RestAuthError, RestRequest};
use herald::protocol::{query_pairs, QueryPair};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "7ad3773142a6692b25b8";
const NOW: i64 = 1_700_000_000;

/// The parameter part of a canonical string, split back into pairs.
fn split_canonical(params: &str) -> Vec<(String, String)> {
    params
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Pairs as the API hands them to the verifier (borrowed).
fn borrowed(params: &[(String, String)]) -> Vec<QueryPair<'_>> {
    params
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect()
}

fn verify(method: &str, path: &str, params: &[(String, String)], body: &[u8]) -> bool {
    let request = RestRequest {
        method,
        path,
        params: &borrowed(params),
        body,
    };
    verify_rest(&request, SECRET, NOW).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.is_empty() {
        return;
    }
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let query = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();
    let params = query_pairs(Some(query));
    assert_eq!(
        params.len(),
        query.split('&').filter(|pair| !pair.is_empty()).count()
    );

    // The order of the parameters does not matter.
    let canonical = rest_string_to_sign(method, path, &params);
    let mut reversed = params.clone();
    reversed.reverse();
    assert_eq!(canonical, rest_string_to_sign(method, path, &reversed));
    let mut rotated = params.clone();
    if !rotated.is_empty() {
        let by = usize::from(data[0]) % rotated.len();
        rotated.rotate_left(by);
    }
    assert_eq!(canonical, rest_string_to_sign(method, path, &rotated));

    // Canonicalising the canonical string changes nothing (when no key or value holds the
    // separators, which the canonical form does not escape).
    let separators = |s: &str| s.contains(['&', '=', '\n']);
    if !separators(method)
        && !path.contains('\n')
        && params
            .iter()
            .all(|(k, v)| !separators(k) && !v.contains(['&', '\n']))
    {
        let mut lines = canonical.splitn(3, '\n');
        let (m, p, rest) = (
            lines.next().unwrap(),
            lines.next().unwrap(),
            lines.next().unwrap(),
        );
        assert_eq!(m, method.to_ascii_uppercase());
        assert_eq!(p, path);
        let again = split_canonical(rest);
        assert_eq!(canonical, rest_string_to_sign(m, p, &again));
    }

    // The fuzzed request verifies only with the signature of its canonical string.
    let request = RestRequest {
        method,
        path,
        params: &params,
        body,
    };
    if verify_rest(&request, SECRET, NOW).is_ok() {
        let given = params
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case("auth_signature"))
            .map(|(_, v)| v.trim().to_ascii_lowercase());
        assert_eq!(given, Some(sign(SECRET, &canonical)));
    }

    // A request signed as an SDK signs it: the fuzzed parameters (but the auth ones), then the
    // auth parameters, body_md5 when there is a body, and the signature.
    let mut signed: Vec<(String, String)> = Vec::new();
    for (key, value) in &params {
        let lower = key.to_ascii_lowercase();
        if lower.starts_with("auth_") || lower == "body_md5" {
            continue;
        }
        if signed.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        signed.push((key.to_string(), value.to_string()));
    }
    signed.push(("auth_key".into(), "278d425bdf160c739803".into()));
    signed.push(("auth_timestamp".into(), NOW.to_string()));
    signed.push(("auth_version".into(), "1.0".into()));
    if !body.is_empty() {
        signed.push(("body_md5".into(), body_md5(body)));
    }
    let signature = sign(SECRET, &rest_string_to_sign(method, path, &signed));
    let mut with_signature = signed.clone();
    with_signature.push(("auth_signature".into(), signature.clone()));
    assert!(verify(method, path, &with_signature, body));

    // One byte changed in the signature.
    let at = usize::from(data[0]) % signature.len();
    let mut bad = signature.clone().into_bytes();
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    let mut tampered = signed.clone();
    tampered.push(("auth_signature".into(), String::from_utf8(bad).unwrap()));
    assert!(!verify(method, path, &tampered, body));

    // One byte changed in a signed value (the first fuzzed one, else the key).
    let mut tampered = with_signature.clone();
    let value = &mut tampered[0].1;
    let changed = match value.pop() {
        Some('x') => 'y',
        Some(_) | None => 'x',
    };
    value.push(changed);
    assert!(!verify(method, path, &tampered, body));

    // One byte changed in the body.
    if !body.is_empty() {
        let mut other = body.to_vec();
        let at = usize::from(data[0]) % other.len();
        other[at] ^= 0x01;
        let request = RestRequest {
            method,
            path,
            params: &borrowed(&with_signature),
            body: &other,
        };
        assert_eq!(
            verify_rest(&request, SECRET, NOW),
            Err(RestAuthError::BodyMd5Mismatch)
        );
    }
});
