//! The signed-request check shared by every REST route.
//!
//! Everything that can be judged from the request line and headers is judged before the body is
//! read: the body's declared size, the app, `auth_key`, the `auth_*` parameters and timestamp,
//! and whether the app is enabled. Only then is the body read, within the node-wide budget for
//! unauthenticated bodies (`Node::body_budget`), and the signature verified; the budget is
//! released as soon as the body is verified or dropped.

use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::http::{header, request::Parts};
use bytes::BytesMut;
use hyper::body::Body as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::api::{ApiError, MAX_BODY_BYTES};
use crate::auth::{self, RestRequest};
use crate::node::SharedNode;
use crate::protocol::query_pairs;
use crate::serve::BodyTooSlow;
use crate::tenants::AppRef;

/// The refusal of a body over [`MAX_BODY_BYTES`] (the text axum's body limit answered with).
const TOO_LARGE: &str = "Failed to buffer the request body: length limit exceeded";

/// Finds the app, checks the request, reads the body and verifies the signature. With `app_id`,
/// the app is the one in the path and `auth_key` must be one of its keys; without, the app is
/// `auth_key`'s.
pub(super) async fn authenticate(
    node: &SharedNode,
    parts: &Parts,
    app_id: Option<&str>,
    body: Body,
) -> Result<(AppRef, Bytes), ApiError> {
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
    let now = crate::clock::unix_seconds();
    let signature = auth::check_rest_params(&params, now)?;
    if !app.enabled {
        return Err(ApiError::Forbidden("Application disabled".into()));
    }
    let (body, held) = read_body(node, declared, body).await?;
    let secret = app.secret_for(key, now).unwrap_or_default();
    let raw_path = parts.uri.path();
    let request = RestRequest {
        method: parts.method.as_str(),
        path: raw_path,
        params: &params,
        body: &body,
    };
    if let Err(error) = auth::verify_rest_signature(&request, secret, signature) {
        // A client may have signed the decoded path while its HTTP stack encoded it.
        let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        let retry = matches!(error, auth::RestAuthError::BadSignature(_)) && decoded != raw_path;
        let retried = retry
            && auth::verify_rest_signature(
                &RestRequest {
                    path: &decoded,
                    ..request
                },
                secret,
                signature,
            )
            .is_ok();
        if !retried {
            return Err(error.into());
        }
    }
    drop(held);
    Ok((app, body))
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

/// The node-wide budget of bytes for REST bodies not yet authenticated. Taken without waiting
/// (a lock-free counter: no mutex on the REST path), given back when a [`Held`] share drops.
#[derive(Debug)]
pub struct BodyBudget {
    available: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget {
            available: AtomicUsize::new(bytes),
        }
    }

    /// The bytes not taken right now.
    pub fn available(&self) -> usize {
        self.available.load(Ordering::Relaxed)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_sub(bytes)
            })
            .is_ok()
    }
}

/// A share of the [`BodyBudget`], given back on drop.
struct Held<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget
            .available
            .fetch_add(self.bytes, Ordering::AcqRel);
    }
}

/// Takes `bytes` more from the node-wide budget into `held`.
fn reserve(held: &mut Held<'_>, bytes: usize) -> Result<(), ApiError> {
    if bytes == 0 {
        return Ok(());
    }
    if !held.budget.try_take(bytes) {
        return Err(busy());
    }
    held.bytes += bytes;
    Ok(())
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
) -> Result<(Bytes, Held<'_>), ApiError> {
    let mut held = Held {
        budget: &node.body_budget,
        bytes: 0,
    };
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
            let more = capacity.saturating_sub(held.bytes);
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
