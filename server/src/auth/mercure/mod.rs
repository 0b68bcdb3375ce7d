//! Mercure authorization: finding and verifying a subscriber's or publisher's JWT.
//!
//! - Where a token is ([`locate_token`]): the `Authorization: Bearer` header wins; then draft-07's
//!   `authorization` query parameter (draft-07 puts it before the cookie), then the cookie
//!   (`mercureAuthorization` in draft-07, `__Secure-mercure_access_token` in draft-08). draft-08
//!   has no query parameter.
//! - Verification ([`Verifier`], the `jsonwebtoken` crate): HS256/384/512 with a shared key, or
//!   RS256/384/512 and ES256 with a PEM public key; the algorithm must be one of the key's
//!   (`alg: none` and algorithm confusion refused); `exp` and `nbf` with [`LEEWAY_SECS`]; `iss`
//!   when the app names one. A token whose header `typ` is `at+jwt` is a draft-08 RFC 9068 access
//!   token: `exp` required, `aud` must name the hub, rights in `authorization_details`
//!   (`claims.rs`). Any other token is a draft-07 one: rights in the `mercure` claim.
//! - Bounded: [`MAX_TOKEN_BYTES`] per token, `protocol::mercure::MAX_SELECTORS` selectors per right,
//!   [`MAX_DETAILS`] authorization details.
//!
//! Pure: the time is an argument.

mod claims;

use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};

use crate::protocol::mercure::{with_budget, Selector};

pub use claims::{MAX_DETAILS, MERCURE_DETAIL_TYPE};

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// draft-07's cookie.
pub const DRAFT07_COOKIE: &str = "mercureAuthorization";
/// draft-08's cookie.
pub const DRAFT08_COOKIE: &str = "__Secure-mercure_access_token";
/// The realm named in `WWW-Authenticate` challenges.
pub const REALM: &str = "mercure";

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

/// A request that presents its token wrongly (RFC 6750 `invalid_request`, 400): an
/// `Authorization` header that is not `Bearer <token>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Authorization header is not \"Bearer <token>\"")]
pub struct BadAuthorizationHeader;

/// The token a request carries, by `draft`'s order of precedence (module doc). Each argument is
/// the raw header value (join several `Cookie` headers with `"; "`) or the decoded query value.
/// `Ok(None)`: no token.
pub fn locate_token<'a>(
    draft: Draft,
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
    query_authorization: Option<&'a str>,
) -> Result<Option<(TokenSource, &'a str)>, BadAuthorizationHeader> {
    if let Some(header) = authorization {
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(BadAuthorizationHeader)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(BadAuthorizationHeader);
        }
        return Ok(Some((TokenSource::Header, token)));
    }
    if draft == Draft::Draft07 {
        if let Some(token) = query_authorization.filter(|t| !t.is_empty()) {
            return Ok(Some((TokenSource::Query, token)));
        }
    }
    let name = match draft {
        Draft::Draft07 => DRAFT07_COOKIE,
        Draft::Draft08 => DRAFT08_COOKIE,
    };
    Ok(cookie
        .and_then(|header| cookie_value(header, name))
        .filter(|t| !t.is_empty())
        .map(|t| (TokenSource::Cookie, t)))
}

/// The first token a request carries, whichever draft it speaks: the `Authorization` header,
/// then the `authorization` query parameter, then either draft's cookie (draft-08's first). A
/// malformed `Authorization` header counts as no token here; [`locate_token`] tells it apart.
pub fn find_token<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
    query_authorization: Option<&'a str>,
) -> Option<(TokenSource, &'a str)> {
    let authorization =
        authorization.filter(|_| locate_token(Draft::Draft07, authorization, None, None).is_ok());
    if let Ok(Some(found)) = locate_token(Draft::Draft07, authorization, None, query_authorization)
    {
        return Some(found);
    }
    let cookie = cookie?;
    cookie_value(cookie, DRAFT08_COOKIE)
        .or_else(|| cookie_value(cookie, DRAFT07_COOKIE))
        .filter(|t| !t.is_empty())
        .map(|t| (TokenSource::Cookie, t))
}

/// Cookie `name`'s value in a `Cookie` header (RFC 6265 section 4.2: `name=value` pairs separated
/// by `;` and optional spaces, a value possibly in double quotes); the first one wins.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim_matches([' ', '\t']).split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| {
            let value = value.trim_matches([' ', '\t']);
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
}

/// The key and claims an app's tokens are checked against, built once per app settings and
/// kept (parsing a PEM key per request would be wasteful).
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    audience: String,
    issuer: Option<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Why an app's key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM key did not parse as an RSA or EC public key.
    #[error("the Mercure public key is not a valid RSA or EC PEM public key: {0}")]
    BadPem(String),
    /// An empty HMAC key (any token would be forgeable).
    #[error("the Mercure HS256 key is empty")]
    EmptyHmac,
}

/// The key material a [`Verifier`] is built from (its `Debug` never shows an HS256 key).
#[derive(Clone, Copy)]
pub enum KeyMaterial<'a> {
    /// An HS256 shared key.
    Hmac(&'a [u8]),
    /// An RS256 or ES256 PEM public key.
    PublicPem(&'a str),
}

impl std::fmt::Debug for KeyMaterial<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Hmac(key) => write!(f, "Hmac(<{} bytes redacted>)", key.len()),
            KeyMaterial::PublicPem(pem) => f.debug_tuple("PublicPem").field(pem).finish(),
        }
    }
}

/// Checks that `pem` is an RSA (2048 to 4096 bits) or P-256 public key; answers the algorithms
/// it verifies. Used when the key is set, so a bad one is refused then, not at the first token.
pub fn check_public_pem(pem: &str) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    use p256::elliptic_curve::sec1::FromEncodedPoint as _;
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let text = pem.trim();
    if text.contains("PRIVATE KEY") {
        return Err(KeyError::BadPem(
            "that is a private key: give the public key only".into(),
        ));
    }
    if !text.starts_with("-----BEGIN PUBLIC KEY-----")
        && !text.starts_with("-----BEGIN RSA PUBLIC KEY-----")
    {
        return Err(KeyError::BadPem(
            "expected a \"-----BEGIN PUBLIC KEY-----\" block".into(),
        ));
    }
    let der = |key: &DecodingKey| match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => der.clone(),
        DecodingKeyKind::RsaModulusExponent { .. } => Vec::new(),
    };
    if let Ok(key) = DecodingKey::from_rsa_pem(text.as_bytes()) {
        let parsed = rsa::RsaPublicKey::from_pkcs1_der(&der(&key))
            .map_err(|e| KeyError::BadPem(format!("RSA key: {e}")))?;
        let bits = parsed.n().bits();
        if bits < 2048 {
            return Err(KeyError::BadPem(format!(
                "RSA key of {bits} bits: at least 2048"
            )));
        }
        return Ok((
            key,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        ));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(text.as_bytes()) {
        let point = p256::EncodedPoint::from_bytes(der(&key))
            .map_err(|_| KeyError::BadPem("EC key: not a P-256 point".into()))?;
        if Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point)).is_none() {
            return Err(KeyError::BadPem("EC key: not a P-256 public key".into()));
        }
        return Ok((key, vec![Algorithm::ES256]));
    }
    Err(KeyError::BadPem(
        "neither an RSA nor a P-256 EC public key".into(),
    ))
}

impl Verifier {
    /// A verifier for `key`, checking draft-08 tokens' `aud` against `audience` and, when set,
    /// every token's `iss` against `issuer`.
    pub fn new(
        key: KeyMaterial<'_>,
        audience: &str,
        issuer: Option<&str>,
    ) -> Result<Self, KeyError> {
        let (key, algorithms) = match key {
            KeyMaterial::Hmac([]) => return Err(KeyError::EmptyHmac),
            KeyMaterial::Hmac(secret) => (
                DecodingKey::from_secret(secret),
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            ),
            KeyMaterial::PublicPem(pem) => check_public_pem(pem)?,
        };
        Ok(Self {
            key,
            algorithms,
            audience: audience.to_owned(),
            issuer: issuer.map(str::to_owned),
        })
    }

    /// The audience draft-08 tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Verifies `token` at `now` (Unix seconds): signature, algorithm, `exp` / `nbf`, and
    /// (draft-08) `typ`, `aud`, `iss`; answers the rights it grants.
    pub fn verify(&self, token: &str, now: i64) -> Result<Grants, TokenError> {
        self.verify_in(token, now, crate::protocol::mercure::DEFAULT_HUB_URL)
    }

    /// [`Verifier::verify`], resolving relative URL patterns in the token's rights against
    /// `hub_url`.
    pub fn verify_in(&self, token: &str, now: i64, hub_url: &str) -> Result<Grants, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed("not a signed JWT".into()))?;
        if !self.algorithms.contains(&header.alg) {
            // Another key family's algorithm (algorithm confusion), or a weak one.
            return Err(TokenError::BadSignature);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = self.algorithms.clone();
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
                _ => TokenError::Malformed("the claims are not a JSON object".into()),
            })?;
        let serde_json::Value::Object(claims) = data.claims else {
            return Err(TokenError::Malformed(
                "the claims are not a JSON object".into(),
            ));
        };
        let at_jwt = header.typ.as_deref().is_some_and(|typ| {
            let typ = match typ.get(..12) {
                Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
                _ => typ,
            };
            typ.eq_ignore_ascii_case("at+jwt")
        });
        let expires_at = claims::time_claim(&claims, "exp")?;
        let not_before = claims::time_claim(&claims, "nbf")?;
        if expires_at.is_some_and(|exp| now > exp.saturating_add(LEEWAY_SECS))
            || not_before.is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
        {
            return Err(TokenError::Expired);
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(|v| v.as_str()) != Some(issuer.as_str()) {
                return Err(TokenError::WrongIssuer);
            }
        }
        if at_jwt {
            if expires_at.is_none() {
                return Err(TokenError::Malformed("an at+jwt token needs exp".into()));
            }
            // draft-08: the hub checks that `iss` is present (and, when the app names an
            // issuer, that it is that one: above).
            let iss = claims.get("iss").and_then(|v| v.as_str());
            if iss.is_none_or(str::is_empty) {
                return Err(TokenError::WrongIssuer);
            }
            if !claims::audience_names(&claims, &self.audience) {
                return Err(TokenError::WrongAudience);
            }
            let mut grants = with_budget(|| claims::draft08_grants(&claims, hub_url))?;
            grants.expires_at = expires_at;
            return Ok(grants);
        }
        // A draft-07 token needs no `aud`, but one that names an audience must name this hub:
        // a token minted for another hub is not valid here.
        if claims.contains_key("aud") && !claims::audience_names(&claims, &self.audience) {
            return Err(TokenError::WrongAudience);
        }
        if claims.contains_key("authorization_details") && !claims.contains_key("mercure") {
            // A draft-08 token without its type: it could be an ID token or another kind.
            return Err(TokenError::WrongType);
        }
        let mut grants = with_budget(|| claims::draft07_grants(&claims, hub_url))?;
        grants.expires_at = expires_at;
        Ok(grants)
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
    /// The `sub` claim, when it is a string.
    pub subject: Option<String>,
    /// draft-08: each `subscribe` authorization detail's topics and payload, in token order
    /// ([`Grants::payload_for`]).
    pub subscribe_payloads: Vec<(Vec<Selector>, Option<serde_json::Value>)>,
}

impl Grants {
    /// The payload a subscription made with `matcher` (its `topic` / `match*` value) carries:
    /// draft-08, the payload of the first `subscribe` detail one of whose topics matches the
    /// matcher's text; draft-07, the token's `mercure.payload`.
    pub fn payload_for(&self, matcher: &str) -> Option<&serde_json::Value> {
        match self.draft {
            Some(Draft::Draft08) => self
                .subscribe_payloads
                .iter()
                .find(|(topics, _)| topics.iter().any(|s| s.matches(matcher)))
                .and_then(|(_, payload)| payload.as_ref()),
            _ => self.payload.as_ref(),
        }
    }

    /// Whether the holder may publish an update with these topics (every one needs a right).
    pub fn may_publish(&self, topics: &[String]) -> bool {
        crate::protocol::mercure::all_covered(&self.publish, topics)
    }

    /// Whether the holder may receive a private update with these topics (one is enough).
    pub fn may_receive(&self, topics: &[String]) -> bool {
        crate::protocol::mercure::any_matches(&self.subscribe, topics)
    }
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
/// token was sent and one is needed): `Bearer realm="mercure"`, then for a refused token
/// `error="invalid_token"` and, in draft-07 only, an `error_description` (draft-08 answers
/// `invalid_token` for every failure so as not to tell why).
pub fn www_authenticate(draft: Draft, error: Option<&TokenError>) -> String {
    www_authenticate_with(draft, error, None)
}

/// [`www_authenticate`] with draft-08's `resource_metadata` parameter (RFC 9728) when
/// `resource_metadata` names the hub's protected resource metadata URL.
pub fn www_authenticate_with(
    draft: Draft,
    error: Option<&TokenError>,
    resource_metadata: Option<&str>,
) -> String {
    let description = match (draft, error) {
        (Draft::Draft07, Some(error)) => Some(error.to_string()),
        _ => None,
    };
    bearer_challenge(
        draft,
        error.map(|_| "invalid_token"),
        description.as_deref(),
        resource_metadata,
    )
}

/// The challenge for a valid token that lacks the right (403, `insufficient_scope`).
pub fn www_authenticate_insufficient_scope(draft: Draft) -> String {
    bearer_challenge(draft, Some("insufficient_scope"), None, None)
}

/// The challenge for a token presented wrongly (400, `invalid_request`).
pub fn www_authenticate_invalid_request(draft: Draft) -> String {
    bearer_challenge(draft, Some("invalid_request"), None, None)
}

/// `Bearer realm="mercure"[, error="..."][, error_description="..."][, resource_metadata="..."]`
/// (RFC 6750 section 3); quoted values keep only printable ASCII without `"` and `\`.
fn bearer_challenge(
    draft: Draft,
    error: Option<&str>,
    description: Option<&str>,
    resource_metadata: Option<&str>,
) -> String {
    let mut value = format!("Bearer realm=\"{REALM}\"");
    let mut param = |name: &str, text: &str| {
        let clean: String = text
            .chars()
            .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
            .collect();
        value.push_str(&format!(", {name}=\"{clean}\""));
    };
    if let Some(error) = error {
        param("error", error);
    }
    if let Some(description) = description {
        param("error_description", description);
    }
    if draft == Draft::Draft08 {
        if let Some(url) = resource_metadata {
            param("resource_metadata", url);
        }
    }
    value
}

#[cfg(test)]
mod tests;
