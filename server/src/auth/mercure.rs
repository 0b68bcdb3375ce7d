//! Mercure authorization: finding and verifying a subscriber's or publisher's JWT.
//!
//! SKELETON (issue 16): the API both Mercure helpers build against. Every token is refused
//! until the verification work lands.
//!
//! Pure: the time is an argument.

use crate::protocol::mercure::Selector;

/// Which protocol generation a request or token speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draft {
    /// draft-07 (Mercure 0.x): the `mercure` claim.
    Draft07,
    /// draft-08: RFC 9068 access tokens with `authorization_details`.
    Draft08,
}

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer ...`.
    Header,
    /// The `mercureAuthorization` (draft-07) or `__Secure-mercure_access_token` (draft-08)
    /// cookie.
    Cookie,
    /// The draft-07 `authorization` query parameter.
    Query,
}

/// The first token a request carries, by the drafts' order of precedence: the `Authorization`
/// header, then the cookies, then the `authorization` query parameter. Each argument is the raw
/// header value or the decoded query value.
pub fn find_token<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
    query_authorization: Option<&'a str>,
) -> Option<(TokenSource, &'a str)> {
    if let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) {
        return Some((TokenSource::Header, token.trim()));
    }
    let _ = cookie;
    query_authorization.map(|t| (TokenSource::Query, t))
}

/// The key and claims an app's tokens are checked against, built once per app settings and
/// kept (parsing a PEM key per request would be wasteful).
#[derive(Clone)]
pub struct Verifier {
    _private: (),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { .. }")
    }
}

/// Why an app's key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM key did not parse as an RSA or EC public key.
    #[error("the Mercure public key is not a valid RSA or EC PEM public key: {0}")]
    BadPem(String),
}

/// The key material a [`Verifier`] is built from.
#[derive(Debug, Clone, Copy)]
pub enum KeyMaterial<'a> {
    /// An HS256 shared key.
    Hmac(&'a [u8]),
    /// An RS256 or ES256 PEM public key.
    PublicPem(&'a str),
}

impl Verifier {
    /// A verifier for `key`, checking draft-08 tokens' `aud` against `audience` and, when set,
    /// every token's `iss` against `issuer`.
    pub fn new(
        key: KeyMaterial<'_>,
        audience: &str,
        issuer: Option<&str>,
    ) -> Result<Self, KeyError> {
        let _ = (key, audience, issuer);
        Ok(Self { _private: () })
    }

    /// Verifies `token` at `now` (Unix seconds): signature, algorithm, `exp` / `nbf`, and
    /// (draft-08) `typ`, `aud`, `iss`; answers the rights it grants.
    pub fn verify(&self, token: &str, now: i64) -> Result<Grants, TokenError> {
        let _ = (token, now);
        Err(TokenError::Malformed(
            "token verification is not implemented yet".into(),
        ))
    }
}

/// What a verified token allows.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// The token's draft, when its shape tells (a draft-07 `mercure` claim, a draft-08
    /// `at+jwt`).
    pub draft: Option<Draft>,
    /// Topics the holder may subscribe to (and receive private updates of).
    pub subscribe: Vec<Selector>,
    /// Topics the holder may publish to.
    pub publish: Vec<Selector>,
    /// The `mercure.payload` (draft-07) or equivalent the subscriptions API exposes.
    pub payload: Option<serde_json::Value>,
    /// `exp`, Unix seconds, when the token has one (a stream ends when it passes).
    pub expires_at: Option<i64>,
}

/// Why a token was refused; each maps to 401 with `WWW-Authenticate` as the draft says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its claims have the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify, or the algorithm is not the key's.
    #[error("invalid token signature")]
    BadSignature,
    /// Past `exp` (or before `nbf`).
    #[error("token expired or not yet valid")]
    Expired,
    /// draft-08: `aud` does not name this hub.
    #[error("token audience does not name this hub")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not the configured one")]
    WrongIssuer,
    /// draft-08: `typ` is not `at+jwt`.
    #[error("token type is not at+jwt")]
    WrongType,
}

/// The `WWW-Authenticate` header value for a refusal in `draft` (`error` is `None` when no
/// token was sent and one is needed).
pub fn www_authenticate(draft: Draft, error: Option<&TokenError>) -> String {
    let _ = draft;
    match error {
        None => "Bearer".to_owned(),
        Some(_) => "Bearer error=\"invalid_token\"".to_owned(),
    }
}
