//! pusher-js's HTTP fallback transports, `xhr_streaming` and `xhr_polling` (contract 7.2): one
//! [`Session`](crate::transport::session::Session) per fallback session, as for a WebSocket,
//! behind a line framing instead of WebSocket frames.
//!
//! Routes (any prefix: pusher-js's `httpPath` is `/pusher`, and a proxy may mount Herald under
//! another path), all `POST`, with `OPTIONS` for the CORS preflight:
//! - `{prefix}/app/{key}/{server}/{session}/xhr_streaming`: a stream of lines that stays open;
//! - `{prefix}/app/{key}/{server}/{session}/xhr`: a poll, answered with what is queued or, after
//!   `Settings::fallback.poll_wait`, with `h`;
//! - `{prefix}/app/{key}/{server}/{session}/xhr_send`: a JSON array of Pusher messages (each a
//!   JSON string), answered 204; `[]` is the client's heartbeat.
//!
//! The first stream or poll of an unknown session opens it: the same refusals as a WebSocket
//! handshake (each answered 200 with a `c[code,"reason"]` line, which pusher-js maps like a close
//! frame), the same admission (`super::admit`, run in a task of its own so that a client hanging
//! up meanwhile leaks no slot). Only that request, on a known app with room under its quotas,
//! creates state; `xhr_send` to an unknown session is a 404. A session is bound to the address
//! (after trusted proxies) and `Origin` that opened it: any other is answered as for an unknown
//! session. One stream or poll reads it at a time: another, while the first is still open, hears
//! `c[2010,"Another connection still open"]`. A session's own task is in [`link`].
//!
//! In a cluster, a session lives on the node that opened it, which holds it in Redis (the hold
//! is taken before admission, and given back when the admission is refused); a request
//! for it that lands on another node (a non-sticky load balancer) is forwarded to the holder
//! through Redis and answered there by [`handle`], as a local request ([`relay`]). Every line of
//! a forwarded answer crosses Redis once more than a local one.

mod link;
mod relay;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use futures_util::StreamExt;

use crate::node::SharedNode;
use crate::outbox::Outbox;
use crate::protocol::{check_handshake_version, query_pairs, query_value, CloseCode};
use crate::transport::admit::admit;
use crate::transport::upgrade::{not_found, WsUpgrade};

pub use link::Sessions;
pub(crate) use link::{close_line, escaped_units, push_batch, utf16_units};
use link::{AttachRefused, Kind, Owner, SendRefused, Shared};
pub use relay::start as start_relay;

/// The longest `{server}` and `{session}` path segments (pusher-js sends up to 3 and 8).
const MAX_ID_CHARS: usize = 32;

/// What a fallback path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Receive(Kind),
    Send,
}

/// `{prefix}/app/{key}/{server}/{session}/{op}`, read from the tail.
#[derive(Debug, PartialEq, Eq)]
struct Route<'a> {
    key: &'a str,
    server: &'a str,
    session: &'a str,
    op: Op,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Route<'a>> {
        let mut tail = path.rsplit('/');
        let op = match tail.next()? {
            "xhr_streaming" => Op::Receive(Kind::Stream),
            "xhr" => Op::Receive(Kind::Poll),
            "xhr_send" => Op::Send,
            _ => return None,
        };
        let session = tail.next()?;
        let server = tail.next()?;
        let key = tail.next()?;
        if tail.next()? != "app" || key.is_empty() || key.len() > 128 {
            return None;
        }
        if !valid_id(server) || !valid_id(session) {
            return None;
        }
        Some(Route {
            key,
            server,
            session,
            op,
        })
    }

    /// The session's name in the registry.
    fn name(&self) -> String {
        format!("{}/{}/{}", self.key, self.server, self.session)
    }
}

/// For `crate::fuzzing`: the session name and the operation (the path's last segment) of a
/// fallback path, as the router reads it.
pub(crate) fn route_of(path: &str) -> Option<(String, &'static str)> {
    let route = Route::parse(path)?;
    let op = match route.op {
        Op::Receive(Kind::Stream) => "xhr_streaming",
        Op::Receive(Kind::Poll) => "xhr",
        Op::Send => "xhr_send",
    };
    Some((route.name(), op))
}

/// The messages of an `xhr_send` body: a JSON array of strings (the limits on their number and
/// sizes are checked after).
pub(crate) fn send_body(bytes: &[u8]) -> Option<Vec<String>> {
    serde_json::from_slice(bytes).ok()
}

/// The router's fallback: the fallback routes, else the WebSocket 4005 or a 404.
pub async fn fallback(node: SharedNode, sessions: Sessions, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(route) = Route::parse(&path) else {
        let (mut parts, _) = request.into_parts();
        let upgrade = WsUpgrade::from_request_parts(&mut parts, &()).await;
        return not_found(State(node), upgrade).await;
    };
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let owner = Owner {
        addr: herald_dashboard::client_address(
            &node.settings.trusted_proxies,
            peer,
            request.headers(),
        ),
        origin: origin.as_deref().map(Box::from),
    };
    // pusher-js numbers its requests (`n`): concurrent sends are handled in that order.
    let number = query_pairs(request.uri().query())
        .iter()
        .find(|(name, _)| name == "n")
        .and_then(|(_, value)| value.parse::<u64>().ok())
        .unwrap_or(0);
    let asked = Asked {
        route: &route,
        method: request.method().clone(),
        query: request.uri().query().map(str::to_owned),
        origin,
        owner,
        number,
    };
    handle(
        &node,
        &sessions,
        asked,
        Payload::Body(request.into_body()),
        Via::Client,
    )
    .await
}

/// A fallback request, as its node read it (or as the node that received it forwarded it).
pub(super) struct Asked<'a> {
    route: &'a Route<'a>,
    method: Method,
    query: Option<String>,
    origin: Option<String>,
    /// Who asks: the client's address (after trusted proxies) and `Origin`.
    owner: Owner,
    /// `xhr_send`'s request number.
    number: u64,
}

/// What an `xhr_send` brings: the client's body, or the messages read from it by the node that
/// forwarded the request.
pub(super) enum Payload {
    Body(Body),
    Messages(Vec<String>),
}

/// Where a request comes from: its client (it may be forwarded to the session's holder), or
/// another node (served here, never forwarded again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Client,
    Relay,
}

/// Answers one fallback request (the same path for a client's and a forwarded one).
pub(super) async fn handle(
    node: &SharedNode,
    sessions: &Sessions,
    asked: Asked<'_>,
    payload: Payload,
    via: Via,
) -> Response {
    let route = asked.route;
    let origin = asked.origin.as_deref();
    let app = node
        .apps
        .by_key(route.key, node.settings.clock.now_seconds());
    // CORS: only an origin the app allows may read the answers.
    let allowed = app.as_ref().is_some_and(|app| app.allows_origin(origin));
    let cors = origin.filter(|_| allowed).map(str::to_owned);
    let mut response = match (asked.method.clone(), route.op) {
        (Method::OPTIONS, _) => preflight(app.is_some(), cors.is_some()),
        (Method::POST, Op::Send) if !allowed => {
            (StatusCode::FORBIDDEN, "Origin not allowed\n").into_response()
        }
        (Method::POST, Op::Send) => send(node, sessions, &asked, payload, via).await,
        (Method::POST, Op::Receive(kind)) => receive(node, sessions, &asked, kind, app, via).await,
        _ => {
            let mut response = (StatusCode::METHOD_NOT_ALLOWED, "Use POST\n").into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            response
        }
    };
    add_cors(response.headers_mut(), cors.as_deref());
    response
}

fn add_cors(headers: &mut HeaderMap, origin: Option<&str>) {
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
}

/// `OPTIONS`: the preflight of a cross-origin `POST` with `Content-Type: application/json`.
fn preflight(known_app: bool, allowed: bool) -> Response {
    if !known_app {
        return (StatusCode::NOT_FOUND, "Not found\n").into_response();
    }
    if !allowed {
        return (StatusCode::FORBIDDEN, "Origin not allowed\n").into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// A 200 answer made of lines.
fn lines_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx pass each line on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn refusal(code: CloseCode) -> Response {
    lines_response(Body::from(close_line(code.code(), code.reason())))
}

/// A stream or a poll: attaches to its session, or opens it (here, or on the node that holds
/// it: forwarded).
async fn receive(
    node: &SharedNode,
    sessions: &Sessions,
    asked: &Asked<'_>,
    kind: Kind,
    app: Option<crate::tenants::AppRef>,
    via: Via,
) -> Response {
    let route = asked.route;
    let origin = asked.origin.as_deref();
    let owner = asked.owner.clone();
    let params = query_pairs(asked.query.as_deref());
    if let Err(code) = check_handshake_version(
        query_value(&params, "protocol"),
        query_value(&params, "version"),
    ) {
        node.meters.handshake_refused(code.code());
        return refusal(code);
    }
    let Some(app) = app else {
        node.meters
            .handshake_refused(CloseCode::AppDoesNotExist.code());
        return refusal(CloseCode::AppDoesNotExist);
    };
    if !app.enabled {
        node.meters.handshake_refused(CloseCode::AppDisabled.code());
        return refusal(CloseCode::AppDisabled);
    }
    if !app.allows_origin(origin) {
        return lines_response(Body::from(close_line(
            CloseCode::Unauthorized.code(),
            "Origin not allowed: add it to the app's allowed origins",
        )));
    }
    let name = route.name();
    if let Some(shared) = sessions.get(&name) {
        return attach(&shared, &owner, kind).await;
    }
    // Whether this request took the session's hold in Redis (given back if it is refused).
    let mut claimed = false;
    if let (Some(cluster), Via::Client) = (&node.cluster, via) {
        // Held by another live node: forwarded there. Else this node takes the hold and opens
        // it (Redis unreachable: opened here, as on one node).
        match cluster.session_holder(&name, true).await {
            Ok(Some(holder)) if holder != cluster.node_id() => {
                return relay::forward(node, sessions, &holder, asked, None).await;
            }
            Ok(_) => claimed = true,
            Err(error) => tracing::debug!(%error, "fallback session hold not taken"),
        }
    }
    // The admission runs in a task of its own: a client hanging up meanwhile drops only the
    // answer, never a node or quota slot half taken (the session then expires unread).
    let (answer, answered) = tokio::sync::oneshot::channel();
    let opening = Opening {
        node: node.clone(),
        sessions: sessions.clone(),
        name,
        key: route.key.to_owned(),
        origin: origin.map(str::to_owned),
        owner,
        kind,
        app,
        claimed,
    };
    tokio::spawn(node.connections.track_future(async move {
        let _ = answer.send(opening.open().await);
    }));
    match answered.await {
        Ok(response) => response,
        Err(_) => refusal(CloseCode::ReconnectNow),
    }
}

/// A stream or poll for a known session: attached if it comes from the session's owner and no
/// other reader is live.
async fn attach(shared: &Arc<Shared>, owner: &Owner, kind: Kind) -> Response {
    if !shared.owned_by(owner) {
        return unknown_session();
    }
    match shared.attach(kind).await {
        Ok(lines) => lines_response(Body::from_stream(lines)),
        Err(AttachRefused::Open) => lines_response(Body::from(close_line(
            2010,
            "Another connection still open",
        ))),
        Err(AttachRefused::Gone) => refusal(CloseCode::ReconnectNow),
    }
}

fn unknown_session() -> Response {
    (StatusCode::NOT_FOUND, "Unknown session\n").into_response()
}

/// What the first request of a session hands to the task that admits it.
struct Opening {
    node: SharedNode,
    sessions: Sessions,
    name: String,
    key: String,
    origin: Option<String>,
    owner: Owner,
    kind: Kind,
    app: crate::tenants::AppRef,
    /// Whether the request took the session's hold in Redis.
    claimed: bool,
}

impl Opening {
    /// Opens the session, or refuses it: a hold this request took is then given back (unless a
    /// simultaneous request opened the session here meanwhile), so refused requests leave no
    /// key in Redis.
    async fn open(self) -> Response {
        let (node, sessions, name) = (self.node.clone(), self.sessions.clone(), self.name.clone());
        let claimed = self.claimed;
        match self.admit().await {
            Ok(response) => response,
            Err(refused) => {
                if let Some(cluster) = node.cluster.as_ref().filter(|_| claimed) {
                    if sessions.get(&name).is_none() {
                        if let Err(error) = cluster.release_hold(&name).await {
                            tracing::debug!(%error, "a refused fallback session's hold not released");
                        }
                    }
                }
                refused
            }
        }
    }

    /// The session's first answer, or its refusal (`Err`).
    async fn admit(self) -> Result<Response, Response> {
        let Opening {
            node,
            sessions,
            name,
            key,
            origin,
            owner,
            kind,
            app,
            claimed: _,
        } = self;
        let refuse = |code: CloseCode| -> Response {
            node.meters.handshake_refused(code.code());
            refusal(code)
        };
        if node.shutdown.is_cancelled() {
            return Err(refuse(CloseCode::ReconnectNow));
        }
        if !node.hub.reserve_connection(node.settings.max_connections) {
            node.meters.refused("node_capacity");
            return Err(refuse(CloseCode::OverCapacity));
        }
        let outbox = Outbox::detached(node.settings.outbox_capacity);
        let transport = match kind {
            Kind::Stream => crate::meters::Transport::XhrStreaming,
            Kind::Poll => crate::meters::Transport::XhrPolling,
        };
        let admitted = match admit(&node, &app, &key, origin.as_deref(), outbox, transport).await {
            Ok(admitted) => admitted,
            Err(code) => return Err(refuse(code)),
        };
        let shared = Shared::new(admitted.conn.clone(), owner.clone());
        if let Err(existing) = sessions.insert_new(&name, shared.clone()) {
            // A simultaneous first request opened it: this admission is given back, and the
            // request joins that session.
            admitted.conn.outbox().finish();
            crate::transport::session::Session::new(
                node.clone(),
                admitted.app_id.clone(),
                admitted.app_hub.clone(),
                admitted.conn.clone(),
            )
            .finish();
            admitted.end(&node);
            return Ok(attach(&existing, &owner, kind).await);
        }
        let Ok(lines) = shared.try_attach(kind) else {
            // A new session is never gone nor read: nothing to serve if it were.
            return Ok(refusal(CloseCode::ReconnectNow));
        };
        let task = link::run(
            node.clone(),
            sessions,
            name.into_boxed_str(),
            shared,
            admitted,
        );
        tokio::spawn(node.connections.track_future(task));
        Ok(lines_response(Body::from_stream(lines)))
    }
}

/// The largest `xhr_send` body: twice the largest WebSocket message (JSON escaping inside the
/// array may double a message's size).
fn max_send_bytes(node: &SharedNode) -> usize {
    node.settings.max_frame_bytes.saturating_mul(2).max(1024)
}

/// `xhr_send`: the client's messages, for its session (here, or forwarded to the node that
/// holds it). The body is held within the node-wide budget for request bodies; a session has
/// at most [`link::MAX_SENDS`] in flight.
async fn send(
    node: &SharedNode,
    sessions: &Sessions,
    asked: &Asked<'_>,
    payload: Payload,
    via: Via,
) -> Response {
    let name = asked.route.name();
    let Some(shared) = sessions.get(&name) else {
        let Some(cluster) = node.cluster.as_ref().filter(|_| via == Via::Client) else {
            return unknown_session();
        };
        return match cluster.session_holder(&name, false).await {
            Ok(Some(holder)) if holder != cluster.node_id() => {
                let mut held = node.body_budget.share();
                let messages = match read_messages(node, payload, &mut held).await {
                    Ok(messages) => messages,
                    Err(response) => return response,
                };
                relay::forward(node, sessions, &holder, asked, Some(messages)).await
            }
            Ok(_) => unknown_session(),
            Err(error) => {
                tracing::debug!(%error, "fallback session holder not read");
                busy("The cluster cannot be reached, retry shortly\n")
            }
        };
    };
    if !shared.owned_by(&asked.owner) {
        return unknown_session();
    }
    let Some(_in_flight) = shared.send_slot() else {
        return busy("Too many sends in flight for this session\n");
    };
    let mut held = node.body_budget.share();
    let messages = match read_messages(node, payload, &mut held).await {
        Ok(messages) => messages,
        Err(response) => return response,
    };
    // The budget stays held (for the parsed messages) until the session has taken them.
    let sent = shared.send(asked.number, messages).await;
    drop(held);
    match sent {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(SendRefused::Gone) => unknown_session(),
        Err(SendRefused::Busy) => busy("Session busy\n"),
    }
}

/// An `xhr_send`'s messages, within the limits (a body is read within `held`, the node-wide
/// budget for request bodies; forwarded messages were read so by the node that received them
/// and are counted against it here too).
async fn read_messages(
    node: &SharedNode,
    payload: Payload,
    held: &mut crate::budget::Share<'_>,
) -> Result<Vec<String>, Response> {
    let frame = node.settings.max_frame_bytes;
    let messages = match payload {
        Payload::Messages(messages) => {
            let bytes = messages.iter().map(String::len).sum();
            if !held.take(bytes) {
                return Err(busy(
                    "Server busy: too many request bodies in flight, retry shortly\n",
                ));
            }
            messages
        }
        Payload::Body(body) => {
            let limit = max_send_bytes(node);
            let mut bytes = Vec::new();
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else {
                    return Err((StatusCode::BAD_REQUEST, "Body not received\n").into_response());
                };
                if bytes.len() + chunk.len() > limit {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("The body is larger than {limit} bytes\n"),
                    )
                        .into_response());
                }
                if !held.take(chunk.len()) {
                    return Err(busy(
                        "Server busy: too many request bodies in flight, retry shortly\n",
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            let Some(messages) = send_body(&bytes) else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "The body must be a JSON array of strings\n",
                )
                    .into_response());
            };
            messages
        }
    };
    if messages.len() > link::MAX_SEND_MESSAGES {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "A body holds at most {} messages\n",
                link::MAX_SEND_MESSAGES
            ),
        )
            .into_response());
    }
    if messages.iter().any(|m| m.len() > frame) {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("A message is larger than {frame} bytes\n"),
        )
            .into_response());
    }
    Ok(messages)
}

fn busy(message: &'static str) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_the_tail_under_any_prefix() {
        let route = Route::parse("/pusher/app/k1/123/abcd0v12/xhr_streaming").unwrap();
        assert_eq!(route.key, "k1");
        assert_eq!(route.server, "123");
        assert_eq!(route.session, "abcd0v12");
        assert_eq!(route.op, Op::Receive(Kind::Stream));
        assert_eq!(
            Route::parse("/app/k/1/s/xhr").unwrap().op,
            Op::Receive(Kind::Poll)
        );
        assert_eq!(
            Route::parse("/a/b/pusher/app/k/1/s/xhr_send").unwrap().op,
            Op::Send
        );
        for bad in [
            "/pusher/app/k/1/s/other",
            "/pusher/apps/k/1/s/xhr",
            "/pusher/app//1/s/xhr",
            "/pusher/app/k/1/s.x/xhr",
            "/app/k/1/xhr",
            "xhr",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
        let long = format!("/app/k/1/{}/xhr", "s".repeat(MAX_ID_CHARS + 1));
        assert_eq!(Route::parse(&long), None);
    }

    #[test]
    fn a_close_line_is_a_json_array() {
        assert_eq!(
            &close_line(4009, "Origin \"x\" refused")[..],
            b"c[4009,\"Origin \\\"x\\\" refused\"]\n"
        );
    }
}
