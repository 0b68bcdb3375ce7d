//! What every `/api/v1` request passes before its handler: the bearer token (401 when missing,
//! malformed, unknown, expired or revoked; refusals of a known token are audited), the token's
//! rate limit (429), and for a body, JSON only (415) within [`MAX_BODY_BYTES`] (413). Errors are
//! [`V1Error`]s: `{"error":{"code":"stable_snake_case","message":"..."}}` with their status.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::Quota;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::clock::{Clock, RateLimiter};
use crate::locks::MutexExt as _;
use crate::node::SharedNode;
use crate::tenants::{ApiToken, NewAuditEntry, Scope, StoreError, TokenRefusal};

/// The largest request body: an app's settings with a PEM key fit easily.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Tenants whose limiters are kept (see [`TokenLimits::admit`] for what happens past it).
const MAX_LIMITERS: usize = 10_000;

/// A refused `/api/v1` request.
#[derive(Debug)]
pub struct V1Error {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl V1Error {
    /// An error with its status, stable code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> V1Error {
        V1Error {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> V1Error {
        V1Error::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `validation_failed`.
    pub fn invalid(message: impl Into<String>) -> V1Error {
        V1Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // The 401 budget is a minute's; the rate limit refills within a second.
            let wait = if self.code == "too_many_unauthorized" {
                "60"
            } else {
                "1"
            };
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static(wait));
        }
        response
    }
}

impl From<StoreError> for V1Error {
    fn from(error: StoreError) -> Self {
        use StatusCode as S;
        match error {
            StoreError::AppNotFound(id) => V1Error::new(
                S::NOT_FOUND,
                "app_not_found",
                format!("no app with id {id}"),
            ),
            error @ StoreError::NotInApp { .. } => V1Error::not_found(error.to_string()),
            error @ StoreError::TokenNotFound(_) => V1Error::not_found(error.to_string()),
            error @ (StoreError::TenantNotFound(_) | StoreError::UserNotFound(_)) => {
                V1Error::not_found(error.to_string())
            }
            StoreError::Invalid(message) => V1Error::invalid(message),
            error @ StoreError::Conflict(_) => {
                V1Error::new(S::CONFLICT, "conflict", error.to_string())
            }
            StoreError::Forbidden(message) | StoreError::RoleDenied(message) => {
                V1Error::new(S::FORBIDDEN, "forbidden", message)
            }
            StoreError::Busy => V1Error::new(S::SERVICE_UNAVAILABLE, "busy", "try again shortly"),
            other if other.is_unreachable() => {
                tracing::warn!(error = %other, "a management API request found the store unreachable");
                V1Error::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store did not answer",
                )
            }
            other => {
                tracing::error!(error = %other, "a management API request failed in the store");
                V1Error::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error",
                )
            }
        }
    }
}

/// 401 answers one client address may get a minute; past it every request from the address
/// is answered 429 before any token lookup, so guessing or replaying tokens costs the store
/// nothing more.
pub const UNAUTHORIZED_PER_MINUTE: u32 = 120;
/// Client addresses whose 401 counts are kept. Past it, counts of earlier minutes are dropped;
/// if the map is still full, new addresses share one count (so the map stays bounded and no
/// address's count is ever reset early).
const MAX_ADDRESSES: usize = 10_000;
/// The shared count of addresses that found the map full.
const OVERFLOW: &str = "";

/// The per-tenant rate limiters (`HERALD_API_RATE` a second, bursts of twice that, whatever
/// the number of the tenant's tokens) and the per-address budget of 401 answers.
#[derive(Debug, Default)]
pub struct TokenLimits {
    limiters: Mutex<Limiters>,
    unauthorized: Mutex<AddressCounts>,
}

/// The tenants' limiters with when each was last used (Unix milliseconds).
#[derive(Debug, Default)]
struct Limiters {
    map: HashMap<String, (Arc<RateLimiter>, i64)>,
    /// When idle limiters were last dropped (at most one pass per [`IDLE_MS`]).
    pruned: i64,
}

/// A limiter unused this long has refilled its burst (twice the rate, refilled in 2 s).
const IDLE_MS: i64 = 3_000;

/// 401 answers per client address in the current minute.
#[derive(Debug, Default)]
struct AddressCounts {
    /// Address -> (minute, answers in it).
    counts: HashMap<String, (i64, u32)>,
    /// The minute stale counts were last dropped (at most one pass a minute).
    pruned: i64,
}

impl AddressCounts {
    /// The key `address` counts under: its own, or the shared one when the map is full.
    fn key<'a>(&self, address: &'a str) -> &'a str {
        if self.counts.contains_key(address) || self.counts.len() < MAX_ADDRESSES {
            address
        } else {
            OVERFLOW
        }
    }

    fn spent(&self, address: &str, minute: i64) -> bool {
        self.counts
            .get(self.key(address))
            .is_some_and(|(at, n)| *at == minute && *n >= UNAUTHORIZED_PER_MINUTE)
    }

    fn count(&mut self, address: &str, minute: i64) {
        if !self.counts.contains_key(address)
            && self.counts.len() >= MAX_ADDRESSES
            && self.pruned != minute
        {
            self.pruned = minute;
            self.counts.retain(|_, (at, _)| *at == minute);
        }
        let key = self.key(address).to_owned();
        let entry = self.counts.entry(key).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

impl TokenLimits {
    /// Whether `address` has had its minute's [`UNAUTHORIZED_PER_MINUTE`] 401 answers.
    fn unauthorized_spent(&self, address: &str, minute: i64) -> bool {
        self.unauthorized.lock_or_recover().spent(address, minute)
    }

    /// Counts one 401 answer to `address`.
    fn count_unauthorized(&self, address: &str, minute: i64) {
        self.unauthorized.lock_or_recover().count(address, minute);
    }

    /// Whether `tenant` may make one more request now (`rate` a second, bursts of twice that).
    /// When the map is full, limiters idle for [`IDLE_MS`] are dropped (their bucket is full
    /// again, so dropping one resets nothing); if none is, newcomers share one limiter, so no
    /// tenant's budget ever starts over early.
    fn admit(&self, clock: &Clock, rate: u32, tenant: &str) -> bool {
        let now = clock.now_millis();
        let limiter = {
            let mut limiters = self.limiters.lock_or_recover();
            let full = |l: &Limiters| l.map.len() >= MAX_LIMITERS && !l.map.contains_key(tenant);
            if full(&limiters) && now - limiters.pruned >= IDLE_MS {
                limiters.pruned = now;
                limiters.map.retain(|_, (_, seen)| now - *seen < IDLE_MS);
            }
            let key = if full(&limiters) { OVERFLOW } else { tenant };
            let entry = limiters.map.entry(key.to_owned()).or_insert_with(|| {
                let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
                let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
                let quota = Quota::per_second(rate).allow_burst(burst);
                (Arc::new(clock.rate_limiter(quota)), now)
            });
            entry.1 = now;
            entry.0.clone()
        };
        limiter.check().is_ok()
    }
}

/// The actor name a token writes in the audit log.
pub(super) fn token_actor(token: &ApiToken) -> String {
    format!("api-token:{}", token.id)
}

/// The request's client address, for the audit log.
fn address(parts: &Parts, node: &SharedNode) -> String {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    // Behind a trusted proxy, the client it speaks for (as the dashboard reads it): else every
    // client behind the proxy would share one 401 budget and one audit address.
    herald_dashboard::client_address(&node.settings.trusted_proxies, peer, &parts.headers)
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// The key a client's 401 answers count under: an IPv4 address (also written IPv4-mapped) on
/// its own, an IPv6 address by its /64 (what one subscriber holds: counting each of its 2^64
/// addresses apart would give one holder unbounded 401s, and the store a lookup each).
fn budget_key(address: &str) -> String {
    match address
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_canonical())
    {
        Ok(std::net::IpAddr::V6(v6)) => {
            let network = u128::from(v6) & !u128::from(u64::MAX);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
        Ok(ip) => ip.to_string(),
        Err(_) => address.to_owned(),
    }
}

/// An authenticated caller: its token, within its rate.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token.
    pub token: ApiToken,
    /// The client's address.
    pub address: String,
}

impl Caller {
    /// Refuses with 403 `insufficient_scope` (audited) unless the token has `scope`.
    pub async fn require(&self, node: &SharedNode, scope: Scope) -> Result<(), V1Error> {
        if self.token.allows(scope) {
            return Ok(());
        }
        audit_refusal(node, &self.token, "insufficient_scope", &self.address).await;
        Err(V1Error::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this token lacks the {scope} scope"),
        ))
    }
}

/// A scope a route needs, as a type (the marker types in [`need`]), so the check runs in the
/// route's extractors, before any body is read.
pub trait Needs: Send + Sync + 'static {
    /// The scope.
    const SCOPE: Scope;
}

/// The scopes as marker types for [`Authorized`].
pub mod need {
    use super::{Needs, Scope};

    macro_rules! needs {
        ($($name:ident),*) => {$(
            #[doc = concat!("Needs `Scope::", stringify!($name), "`.")]
            #[derive(Debug)]
            pub struct $name;
            impl Needs for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )*};
    }
    needs!(
        AppsRead,
        AppsWrite,
        KeysWrite,
        WebhooksRead,
        WebhooksWrite,
        UsageRead
    );
}

/// A caller whose token has the scope `N` names: authentication, the rate limit and the scope
/// (403 `insufficient_scope`, audited) are all judged from the request head, so a token without
/// the scope is refused before the server reads (or waits for) a byte of the body.
#[derive(Debug)]
pub struct Authorized<N>(pub Caller, pub std::marker::PhantomData<N>);

impl<N: Needs> FromRequestParts<SharedNode> for Authorized<N> {
    type Rejection = V1Error;

    async fn from_request_parts(parts: &mut Parts, node: &SharedNode) -> Result<Self, V1Error> {
        let caller = Caller::from_request_parts(parts, node).await?;
        caller.require(node, N::SCOPE).await?;
        Ok(Authorized(caller, std::marker::PhantomData))
    }
}

/// Audits a refused use of a known token, at most once a minute per token
/// ([`Store::note_token_refusal`](crate::tenants::Store::note_token_refusal)): a leaked, revoked
/// token replayed in a loop leaves one entry a minute, not one per request.
async fn audit_refusal(node: &SharedNode, token: &ApiToken, reason: &str, address: &str) {
    match node.store.note_token_refusal(&token.id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(%error, "an API token refusal could not be noted");
            return;
        }
    }
    let entry = NewAuditEntry {
        tenant_id: Some(token.tenant_id.clone()),
        actor_id: None,
        actor: token_actor(token),
        action: "token.refused".to_owned(),
        target: format!("token/{}", token.id),
        details: json!({ "reason": reason, "name": token.name }),
        address: address.to_owned(),
    };
    if let Err(error) = node.store.record_audit(entry).await {
        tracing::warn!(%error, "an API token refusal could not be audited");
    }
}

impl FromRequestParts<SharedNode> for Caller {
    type Rejection = V1Error;

    async fn from_request_parts(parts: &mut Parts, node: &SharedNode) -> Result<Self, V1Error> {
        let limits = parts
            .extensions
            .get::<Arc<TokenLimits>>()
            .cloned()
            .unwrap_or_default();
        let address = address(parts, node);
        let key = budget_key(&address);
        let minute = node.settings.clock.minute();
        if limits.unauthorized_spent(&key, minute) {
            return Err(V1Error::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_unauthorized",
                format!(
                    "more than {UNAUTHORIZED_PER_MINUTE} requests a minute from this address \
                     were refused for their token: wait a minute"
                ),
            ));
        }
        let outcome = authenticate(parts, node, &limits, &address).await;
        if outcome
            .as_ref()
            .is_err_and(|e| e.status == StatusCode::UNAUTHORIZED)
        {
            limits.count_unauthorized(&key, minute);
        }
        outcome
    }
}

/// The token of the request, live and within its rate.
async fn authenticate(
    parts: &Parts,
    node: &SharedNode,
    limits: &TokenLimits,
    address: &str,
) -> Result<Caller, V1Error> {
    let unauthorized =
        |code, message: &str| V1Error::new(StatusCode::UNAUTHORIZED, code, message.to_owned());
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing_token",
            "send Authorization: Bearer <token>",
        ));
    };
    let text = value
        .to_str()
        .ok()
        // The scheme is case-insensitive (RFC 9110, 11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .map(str::trim)
        .unwrap_or("");
    let token = match node.store.authenticate_token(text).await? {
        Ok(token) => token,
        Err((refusal, found)) => {
            let (code, message, reason) = match refusal {
                TokenRefusal::Unknown => ("invalid_token", "the token is not valid", ""),
                TokenRefusal::Expired => ("token_expired", "the token has expired", "expired"),
                TokenRefusal::Revoked => ("token_revoked", "the token was revoked", "revoked"),
            };
            if let Some(token) = found {
                audit_refusal(node, &token, reason, address).await;
            }
            return Err(unauthorized(code, message));
        }
    };
    if !limits.admit(
        &node.settings.clock,
        node.settings.api_rate,
        &token.tenant_id,
    ) {
        return Err(V1Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} requests a second with this tenant's tokens (on this node)",
                node.settings.api_rate
            ),
        ));
    }
    Ok(Caller {
        token,
        address: address.to_owned(),
    })
}

/// A JSON request body: `Content-Type: application/json` (415 otherwise), at most
/// [`MAX_BODY_BYTES`] (413), well-formed (400 `invalid_json`) and of the expected shape (422).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = V1Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, V1Error> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(V1Error::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send a JSON body with Content-Type: application/json",
            ));
        }
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                V1Error::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is over {MAX_BODY_BYTES} bytes, or did not arrive whole"),
                )
            })?;
        let _ = state;
        match serde_json::from_slice::<T>(&bytes) {
            Ok(value) => Ok(Body(value)),
            Err(error) if error.classify() == serde_json::error::Category::Data => {
                Err(V1Error::invalid(error.to_string()))
            }
            Err(error) => Err(V1Error::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not JSON: {error}"),
            )),
        }
    }
}

/// Path parameters, refused as a [`V1Error`] (400 `invalid_path`) rather than axum's plain text.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = V1Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, V1Error> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Params(value)),
            Err(rejection) => Err(V1Error::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                rejection.body_text(),
            )),
        }
    }
}

/// The query's parameters by name; a repeated name is refused (400 `invalid_query`), so no
/// parameter means two things.
pub fn query_params(raw: Option<&str>) -> Result<HashMap<String, String>, V1Error> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(V1Error::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("the query names {name} more than once"),
            ));
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past [`MAX_LIMITERS`] tenants, newcomers share one limiter while every kept tenant's
    /// limiter stays spent (no reset); once limiters are idle they make room again.
    #[test]
    fn the_limiter_map_stays_bounded_without_resetting_anyone() {
        let clock = Clock::manual(1_800_000_000_000);
        let limits = TokenLimits::default();
        while limits.admit(&clock, 1, "busy") {}
        for n in 0..MAX_LIMITERS + 50 {
            limits.admit(&clock, 1, &format!("t{n}"));
        }
        let kept = limits.limiters.lock_or_recover().map.len();
        assert!(kept <= MAX_LIMITERS + 1, "{kept}");
        assert!(
            !limits.admit(&clock, 1, "busy"),
            "a full map reset a budget"
        );
        clock.set_millis(clock.now_millis() + IDLE_MS + 1);
        assert!(limits.admit(&clock, 1, "newcomer"));
        assert!(limits.limiters.lock_or_recover().map.len() <= 2);
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(budget_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(
            budget_key("2001:db8:1:2:ffff::1"),
            budget_key("2001:db8:1:2::9")
        );
        assert_ne!(budget_key("2001:db8:1:3::1"), budget_key("2001:db8:1:2::1"));
        assert_eq!(budget_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(budget_key("192.0.2.7"), "192.0.2.7");
    }

    /// Past [`MAX_ADDRESSES`] addresses, new ones share one count: the map stays bounded and
    /// no address that is counted loses its count (so no budget starts over early).
    #[test]
    fn the_address_counts_stay_bounded_without_resetting_anyone() {
        let mut counts = AddressCounts::default();
        for n in 0..UNAUTHORIZED_PER_MINUTE {
            counts.count("first", 7);
            assert!(n + 1 == UNAUTHORIZED_PER_MINUTE || !counts.spent("first", 7));
        }
        assert!(counts.spent("first", 7));
        for n in 0..MAX_ADDRESSES * 2 {
            counts.count(&format!("10.0.{n}"), 7);
        }
        assert!(counts.counts.len() <= MAX_ADDRESSES + 1);
        assert!(counts.spent("first", 7), "a full map resets nobody");
        assert!(
            counts.spent("192.0.2.1", 7),
            "newcomers share the spent overflow count"
        );
        // A new minute: stale counts are dropped to make room, budgets start again.
        counts.count("192.0.2.1", 8);
        assert!(!counts.spent("first", 8));
        assert!(counts.counts.len() <= 2);
    }
}
