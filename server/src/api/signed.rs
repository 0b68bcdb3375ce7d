//! The signed-request extractors every REST route takes: [`Signed`] (the app, the query
//! parameters and the raw body) and [`SignedJson`] (the same with the body parsed).
//!
//! Everything that can be judged from the request line and headers is judged before the body is
//! read: the body's declared size, the app, `auth_key`, the `auth_*` parameters and timestamp,
//! and whether the app is enabled. Only then is the body read, within the node-wide budget for
//! unauthenticated bodies (`Node::body_budget`), and the signature verified; the budget is
//! released as soon as the body is verified or dropped.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{header, request::Parts};
use bytes::BytesMut;
use hyper::body::Body as _;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::api::{ApiError, MAX_BODY_BYTES};
use crate::auth::{self, RestKey, RestRequest};
use crate::budget::{BodyTooSlow, Share};
use crate::node::SharedNode;
use crate::protocol::{query_pairs, query_value};
use crate::tenants::AppRef;

/// The refusal of a body over [`MAX_BODY_BYTES`] (the text axum's body limit answered with).
const TOO_LARGE: &str = "Failed to buffer the request body: length limit exceeded";

/// A REST request whose signature is verified. The app is the one the `{app_id}` path parameter
/// names (`auth_key` must be one of its keys) or, on a route without one, the app `auth_key`
/// belongs to.
#[derive(Debug)]
pub struct Signed {
    /// The app the request is for.
    pub app: AppRef,
    /// The query string as received (the `auth_*` parameters included).
    pub query: Box<str>,
    /// The body, as signed.
    pub body: Bytes,
    /// The query's parameters, percent-decoded, once a handler asks for one (a trigger never
    /// does: its checks read the pairs borrowed from the request).
    params: OnceLock<Vec<(String, String)>>,
}

impl Signed {
    /// The value of query parameter `name` (the last one when repeated).
    pub fn param(&self, name: &str) -> Option<&str> {
        let params = self.params.get_or_init(|| {
            query_pairs(Some(&self.query))
                .into_iter()
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect()
        });
        query_value(params, name)
    }
}

impl FromRequest<SharedNode> for Signed {
    type Rejection = ApiError;

    async fn from_request(request: Request, node: &SharedNode) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let Path(path) = Path::<Vec<(String, String)>>::from_request_parts(&mut parts, node)
            .await
            .map_err(ApiError::Path)?;
        let app_id = path
            .iter()
            .find(|(name, _)| name == "app_id")
            .map(|(_, id)| id.as_str());
        authenticate(node, &parts, app_id, body).await
    }
}

/// A [`Signed`] request whose body is JSON, parsed into `T` once the signature is verified
/// (400 when it does not parse).
#[derive(Debug)]
pub struct SignedJson<T> {
    /// The app the request is for.
    pub app: AppRef,
    /// The parsed body.
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<SharedNode> for SignedJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, node: &SharedNode) -> Result<Self, ApiError> {
        let Signed { app, body, .. } = Signed::from_request(request, node).await?;
        let body = parse_json(&body)?;
        Ok(SignedJson { app, body })
    }
}

/// A verified body parsed as JSON into `T` (400 when it does not parse).
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Invalid JSON body: {e}")))
}

/// Finds the app, checks the request, reads the body and verifies the signature. With `app_id`,
/// the app is the one in the path and `auth_key` must be one of its keys; without, the app is
/// `auth_key`'s.
pub(super) async fn authenticate(
    node: &SharedNode,
    parts: &Parts,
    app_id: Option<&str>,
    body: Body,
) -> Result<Signed, ApiError> {
    // Refused from its headers when its declared size is over the limit (413).
    let declared = declared_length(parts)?;
    let params = query_pairs(parts.uri.query());
    let key = auth::rest_auth_key(&params)
        .ok_or_else(|| ApiError::Unauthorized("Missing parameter: auth_key".into()))?;
    let app = match app_id {
        Some(id) => {
            let app = node
                .apps
                .by_id(id)
                .ok_or_else(|| ApiError::NotFound(format!("Unknown app: {id}")))?;
            if app
                .secret_for(key, node.settings.clock.now_seconds())
                .is_none()
            {
                return Err(ApiError::Unauthorized(format!(
                    "Invalid auth_key: {key} is not a key of app {id}"
                )));
            }
            app
        }
        None => node
            .apps
            .by_key(key, node.settings.clock.now_seconds())
            .ok_or_else(|| ApiError::Unauthorized(format!("Unknown auth_key: {key}")))?,
    };
    let now = node.settings.clock.now_seconds();
    let signature = auth::check_rest_params(&params, now)?;
    if !app.enabled {
        return Err(ApiError::Forbidden("Application disabled".into()));
    }
    let (body, held) = read_body(node, declared, body).await?;
    let secret = app.secret_for(key, now).unwrap_or_default();
    let keyed = keyed(secret);
    let raw_path = parts.uri.path();
    let request = RestRequest {
        method: parts.method.as_str(),
        path: raw_path,
        params: &params,
        body: &body,
    };
    if let Err(error) = auth::verify_rest_signature_keyed(&request, &keyed, signature) {
        // A client may have signed the decoded path while its HTTP stack encoded it.
        let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        let retry = matches!(error, auth::RestAuthError::BadSignature(_)) && decoded != raw_path;
        let retried = retry
            && auth::verify_rest_signature_keyed(
                &RestRequest {
                    path: &decoded,
                    ..request
                },
                &keyed,
                signature,
            )
            .is_ok();
        if !retried {
            return Err(error.into());
        }
    }
    drop(held);
    let query = parts.uri.query().unwrap_or("").into();
    Ok(Signed {
        app,
        query,
        body,
        params: OnceLock::new(),
    })
}

thread_local! {
    /// The secret this worker thread verified a REST request with last, and its keyed HMAC
    /// state: a backend's requests usually come one app at a time, so most requests skip the
    /// keying (two SHA-256 compressions of the five or so a trigger costs; issue 19).
    static LAST_KEY: RefCell<Option<(Box<str>, RestKey)>> = const { RefCell::new(None) };
}

/// `secret` keyed for HMAC-SHA256, from this thread's last key when it is the same secret
/// (compared in constant time: the comparison must not tell how much of one app's secret
/// another's shares).
fn keyed(secret: &str) -> RestKey {
    LAST_KEY.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, key)) = last.as_ref() {
            if bool::from(cached.as_bytes().ct_eq(secret.as_bytes())) {
                return key.clone();
            }
        }
        let key = RestKey::new(secret);
        *last = Some((secret.into(), key.clone()));
        key
    })
}

/// The body size the headers announce: `Some(n)` for `Content-Length: n` (refused when over the
/// limit), `None` when the length is unknown (chunked).
fn declared_length(parts: &Parts) -> Result<Option<usize>, ApiError> {
    let Some(value) = parts.headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    // hyper has already refused a malformed or conflicting Content-Length.
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    if length > MAX_BODY_BYTES as u64 {
        return Err(ApiError::PayloadTooLarge(TOO_LARGE.into()));
    }
    Ok(Some(length as usize))
}

/// The refusal when the node-wide budget for unauthenticated bodies is spent.
fn busy() -> ApiError {
    ApiError::Unavailable {
        message: "Server busy: too many request bodies in flight, retry shortly".into(),
        retry_after: 1,
    }
}

/// Takes `bytes` more from the node-wide budget into `held`.
fn reserve(held: &mut Share<'_>, bytes: usize) -> Result<(), ApiError> {
    if held.take(bytes) {
        Ok(())
    } else {
        Err(busy())
    }
}

/// Reads the body within the node-wide budget. Nothing is reserved for headers alone: the first
/// chunk reserves its own bytes (it stays in hyper's read buffer), and a second chunk reserves
/// the buffer the body is gathered in, sized to the declared length (or what arrived, when
/// chunked). So a client makes the node hold only what it has started to send, and the minimum
/// rate makes it keep sending. Returns the body with the budget it holds.
async fn read_body(
    node: &SharedNode,
    declared: Option<usize>,
    mut body: Body,
) -> Result<(Bytes, Share<'_>), ApiError> {
    let mut held = node.body_budget.share();
    if body.is_end_stream() {
        return Ok((Bytes::new(), held));
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|error| {
            let slow = std::error::Error::source(&error)
                .is_some_and(|source| source.downcast_ref::<BodyTooSlow>().is_some());
            if slow {
                ApiError::RequestTimeout("Request body not received in time".into())
            } else {
                ApiError::BadRequest(format!("Failed to buffer the request body: {error}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len();
        if total > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge(TOO_LARGE.into()));
        }
        if let Some(joined) = rest.as_mut() {
            if declared.is_none() {
                reserve(&mut held, data.len())?;
            }
            joined.extend_from_slice(&data);
        } else if let Some(start) = first.take() {
            // A second chunk: copy both out of hyper's read buffer (holding on to a chunk
            // would keep that whole buffer alive), into a buffer of the declared size.
            let capacity = declared.unwrap_or(total).max(total);
            let more = capacity.saturating_sub(held.bytes());
            reserve(&mut held, more)?;
            let mut joined = BytesMut::with_capacity(capacity);
            joined.extend_from_slice(&start);
            joined.extend_from_slice(&data);
            rest = Some(joined);
        } else {
            reserve(&mut held, data.len())?;
            first = Some(data);
        }
    }
    let body = match rest {
        Some(joined) => joined.freeze(),
        None => first.unwrap_or_default(),
    };
    Ok((body, held))
}
