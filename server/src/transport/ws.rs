//! The WebSocket endpoint: `/app/{key}` handshake checks and the per-connection task.
//!
//! Herald speaks WebSocket over the raw TCP socket itself (framing in
//! [`crate::protocol::ws`]), so that an idle connection costs almost nothing:
//! - no read buffer per connection: a socket is read only once it is readable, into a buffer
//!   shared by every connection of the worker thread; only an incomplete frame is kept;
//! - no write buffer per connection: frames wait in the outbox as shared `Bytes` and are written
//!   with `writev`, by the publisher itself (see [`crate::hub::Connection`]); the task is woken
//!   only for its own answers, a full socket, a close request or its timer;
//! - one small task per connection, with one timer that is re-armed only when it fires.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::hub::{CloseRequest, ConnectRefusal, Connection};
use crate::node::{Node, SharedNode};
use crate::protocol::ws::{self, opcode, Message, Reader};
use crate::protocol::{
    check_handshake_version, query_pairs, query_value, server, CloseCode, ACTIVITY_TIMEOUT_SECS,
};
use crate::transport::session::Session;

/// How long the closing handshake (queued frames, the farewell error, the close frame) may take
/// before the TCP connection is simply dropped.
const CLOSE_BUDGET: Duration = Duration::from_secs(1);
/// Reads from one socket before the task lets others run.
const READS_PER_TURN: usize = 8;
/// Inbound messages handled before the answers they produced are written.
const MESSAGES_PER_FLUSH: usize = 32;
/// The read buffer each worker thread shares between its connections.
const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// A WebSocket upgrade request (RFC 6455 §4.2.1), accepted or refused by the handler.
pub struct WsUpgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request to a WebSocket endpoint is not a WebSocket handshake.
#[derive(Debug)]
pub struct NotAnUpgrade(StatusCode, &'static str);

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(NotAnUpgrade(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request method must be `GET`",
            ));
        }
        let headers = &parts.headers;
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return Err(NotAnUpgrade(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !header_has_token(headers, header::UPGRADE, "websocket") {
            return Err(NotAnUpgrade(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return Err(NotAnUpgrade(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(NotAnUpgrade(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).map_err(|_| {
            NotAnUpgrade(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header invalid",
            )
        })?;
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(NotAnUpgrade(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ));
        };
        Ok(WsUpgrade { accept, on_upgrade })
    }
}

/// The socket once the 101 answer went out, with any bytes the client sent right behind its
/// handshake.
struct Socket {
    stream: Arc<TcpStream>,
    early: Bytes,
}

impl WsUpgrade {
    /// Answers 101 and runs `task` on the socket, as a tracked task (shutdown waits for it).
    /// `failed` runs instead when the upgrade does not complete.
    fn accept<F, Fut>(
        self,
        node: &SharedNode,
        failed: impl FnOnce() + Send + 'static,
        task: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let WsUpgrade { accept, on_upgrade } = self;
        tokio::spawn(node.connections.track_future(async move {
            let socket = match on_upgrade.await {
                Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        let stream = parts.io.into_inner();
                        // Frames are whole messages: send each at once.
                        let _ = stream.set_nodelay(true);
                        Some(Socket {
                            stream: Arc::new(stream),
                            early: parts.read_buf,
                        })
                    }
                    Err(_) => {
                        tracing::error!("WebSocket upgrade on a connection that is not plain TCP");
                        None
                    }
                },
                Err(error) => {
                    tracing::debug!(%error, "WebSocket upgrade failed");
                    None
                }
            };
            match socket {
                Some(socket) => task(socket).await,
                None => failed(),
            }
        }));
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        response
    }
}

/// Accepts the upgrade only to send `pusher:error` and close with `code`, as pusher-js expects.
fn refuse(node: &SharedNode, upgrade: WsUpgrade, code: CloseCode) -> Response {
    refuse_with(node, upgrade, code, code.reason())
}

/// [`refuse`] with a more specific message.
fn refuse_with(
    node: &SharedNode,
    upgrade: WsUpgrade,
    code: CloseCode,
    message: &'static str,
) -> Response {
    upgrade.accept(
        node,
        || {},
        move |socket| async move {
            send_refusal(&socket.stream, code, message).await;
        },
    )
}

/// `pusher:error` with `code`, then the close frame with it, then a graceful TCP close (all
/// bounded by the close budget).
async fn send_refusal(stream: &TcpStream, code: CloseCode, message: &str) {
    let mut bytes = ws::server_frame(opcode::TEXT, &server::error(Some(code.code()), message));
    bytes.extend(ws::server_frame(
        opcode::CLOSE,
        &ws::close_payload(code.code(), code.reason()),
    ));
    let deadline = Instant::now() + CLOSE_BUDGET;
    let _ = tokio::time::timeout_at(deadline, async {
        let mut sent = 0;
        while sent < bytes.len() {
            stream.writable().await?;
            match stream.try_write(&bytes[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
    close_tcp(stream, deadline).await;
}

/// Ends the TCP connection gracefully: no more writes, then the peer's remaining bytes (its
/// close frame) are read and dropped until it closes too or `deadline` passes, so the kernel
/// never answers unread data with a reset that could destroy frames still in flight.
async fn close_tcp(stream: &TcpStream, deadline: Instant) {
    let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Write);
    let _ = tokio::time::timeout_at(deadline, async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            let done = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                loop {
                    match stream.try_read(&mut scratch) {
                        Ok(0) => return true,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                        Err(_) => return true,
                    }
                }
            });
            if done {
                return;
            }
        }
    })
    .await;
}

/// `GET /app/{key}`: the Pusher WebSocket endpoint.
pub async fn app_socket(
    State(node): State<SharedNode>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WsUpgrade,
) -> Response {
    let params = query_pairs(query.as_deref());
    let protocol = query_value(&params, "protocol");
    let version = query_value(&params, "version");
    if let Err(code) = check_handshake_version(protocol, version) {
        return refuse(&node, upgrade, code);
    }
    let Some(app) = node.apps.by_key(&key, node.settings.clock.now_seconds()) else {
        return refuse(&node, upgrade, CloseCode::AppDoesNotExist);
    };
    if !app.enabled {
        return refuse(&node, upgrade, CloseCode::AppDisabled);
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !app.allows_origin(origin) {
        return refuse_with(
            &node,
            upgrade,
            CloseCode::Unauthorized,
            "Origin not allowed: add it to the app's allowed origins",
        );
    }
    if node.shutdown.is_cancelled() {
        return refuse(&node, upgrade, CloseCode::ReconnectNow);
    }
    let origin = origin.map(str::to_owned);
    if !node.hub.reserve_connection(node.settings.max_connections) {
        return refuse(&node, upgrade, CloseCode::OverCapacity);
    }
    let released = node.clone();
    let task_node = node.clone();
    upgrade.accept(
        &node,
        move || released.hub.release_connection(),
        move |socket| open(task_node, app, key, origin, socket),
    )
}

/// Registers an upgraded socket with its app, runs it, and cleans up after it.
async fn open(
    node: SharedNode,
    app: crate::tenants::AppRef,
    key: String,
    origin: Option<String>,
    socket: Socket,
) {
    let app_hub = node.hub.app(&app.id);
    let conn = Arc::new(Connection::attached(
        node.hub.next_socket_id(),
        &key,
        socket.stream.clone(),
        node.settings.outbox_capacity,
    ));
    drop(key);
    let share = node.settings.app_share_of_node();
    if let Err(refusal) = app_hub.connect_within(&conn, app.limits.connections(), share) {
        node.hub.release_connection();
        // Over the app's own quota: 4004. Over its share of the node (so one app's public key
        // cannot take every slot from the other tenants): 4100, as for a full node.
        let code = match refusal {
            ConnectRefusal::Quota => CloseCode::OverConnectionQuota,
            ConnectRefusal::NodeShare => CloseCode::OverCapacity,
        };
        send_refusal(&socket.stream, code, code.reason()).await;
        return;
    }
    let usage = node.usage.app(&app.id);
    usage.connected();
    let socket_id = conn.socket_id().to_string();
    node.taps.emit(
        &app.id,
        "connection",
        None,
        Some(&socket_id),
        || match &origin {
            Some(origin) => format!("connected from origin {origin}"),
            None => "connected (no Origin header)".to_owned(),
        },
    );
    drop(origin);
    // Past any close requested meanwhile: pusher-js hears of its socket first, then why it
    // closes.
    conn.force_push(
        opcode::TEXT,
        server::connection_established(conn.socket_id(), ACTIVITY_TIMEOUT_SECS),
    );
    // The app may have been disabled or deleted, or the node may have begun shutting down, while
    // this socket upgraded; the sweep that closes sockets may already have run, so look again.
    match node.apps.by_id(&app.id) {
        None => conn.close_with_error(
            CloseCode::AppDoesNotExist,
            CloseCode::AppDoesNotExist.reason(),
        ),
        Some(current) if !current.enabled => {
            conn.close_with_error(CloseCode::AppDisabled, CloseCode::AppDisabled.reason())
        }
        Some(_) if node.shutdown.is_cancelled() => {
            conn.request_close(CloseCode::ReconnectNow, false)
        }
        Some(_) => {}
    }
    let session = Session::new(node.clone(), app.id.clone(), app_hub, conn.clone());
    tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection opened");
    // A panic in the session must not leave the connection registered: the session leaves its
    // channels when dropped, and the slot and counters are given back below either way.
    let ran = std::panic::AssertUnwindSafe(Box::pin(run(&node, socket, session, &conn)))
        .catch_unwind()
        .await;
    if ran.is_err() {
        tracing::error!(app_id = %app.id, socket_id = %conn.socket_id(), "connection task panicked");
        conn.finish();
    }
    tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection closed");
    usage.disconnected();
    node.taps
        .emit(&app.id, "disconnection", None, Some(&socket_id), || {
            "disconnected".to_owned()
        });
    node.hub.release_connection();
}

/// How a connection's loop ended.
struct Exit {
    /// The close code and reason to send; `None` to just drop the connection.
    close: Option<(u16, &'static str)>,
    drain: bool,
    farewell: Option<Bytes>,
}

impl Exit {
    fn quietly() -> Exit {
        Exit {
            close: None,
            drain: false,
            farewell: None,
        }
    }

    fn with(code: CloseCode) -> Exit {
        Exit {
            close: Some((code.code(), code.reason())),
            drain: false,
            farewell: None,
        }
    }

    fn protocol(error: ws::WsError) -> Exit {
        let reason = match error {
            ws::WsError::Protocol => "Protocol error",
            ws::WsError::TooBig => CloseCode::MessageTooBig.reason(),
            ws::WsError::InvalidUtf8 => "Invalid UTF-8 in a text frame",
        };
        Exit {
            close: Some((error.close_code(), reason)),
            drain: false,
            farewell: None,
        }
    }
}

/// What woke the connection's task.
enum Wake {
    Close(CloseRequest),
    Broken,
    Readable,
    Timer,
}

/// The per-connection loop.
async fn run(node: &Node, socket: Socket, mut session: Session, conn: &Arc<Connection>) {
    let Socket { stream, early } = socket;
    let settings = &node.settings;
    let mut reader = Reader::default();
    let mut last_activity = Instant::now();
    // When the pong to our ping is due (any frame counts as one).
    let mut pong_due: Option<Instant> = None;
    // Since when the socket has taken none of our bytes (the peer stopped reading), and how
    // many it had taken then.
    let mut blocked_since: Option<Instant> = None;
    let mut sent_then = 0;
    let timer = tokio::time::sleep_until(last_activity + settings.activity_timeout);
    tokio::pin!(timer);
    let mut exit = None;
    if !early.is_empty() {
        let mut early = early.to_vec();
        exit = handle_input(
            &mut reader,
            &mut early,
            &mut session,
            conn,
            settings.max_frame_bytes,
        );
    }
    drop(early);
    conn.flush();
    let exit = loop {
        if let Some(exit) = exit.take() {
            break exit;
        }
        let wake = poll_fn(|cx| {
            conn.register(cx);
            if let Some(request) = conn.close_request() {
                return Poll::Ready(Wake::Close(request));
            }
            // A peer that does not read its answers is not read from either.
            let blocked = match conn.poll_flush(cx) {
                Poll::Ready(Ok(())) => false,
                Poll::Ready(Err(_)) => return Poll::Ready(Wake::Broken),
                Poll::Pending => true,
            };
            match (blocked, blocked_since) {
                (true, None) => {
                    // A peer that reads nothing for the pong timeout is closed with 4100.
                    let now = Instant::now();
                    blocked_since = Some(now);
                    sent_then = conn.bytes_sent();
                    let limit = now + settings.pong_timeout;
                    if limit < timer.deadline() {
                        timer.as_mut().reset(limit);
                    }
                }
                (false, Some(_)) => blocked_since = None,
                _ => {}
            }
            if !blocked {
                match stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Wake::Readable),
                    Poll::Ready(Err(_)) => return Poll::Ready(Wake::Broken),
                    Poll::Pending => {}
                }
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Wake::Timer),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match wake {
            Wake::Close(request) => {
                break Exit {
                    close: Some((request.code.code(), request.code.reason())),
                    drain: request.drain,
                    farewell: request.farewell,
                };
            }
            Wake::Broken => break Exit::quietly(),
            Wake::Readable => {
                let result = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    for _ in 0..READS_PER_TURN {
                        match stream.try_read(&mut scratch) {
                            Ok(0) => return Some(Exit::quietly()),
                            Ok(n) => {
                                let exit = handle_input(
                                    &mut reader,
                                    &mut scratch[..n],
                                    &mut session,
                                    conn,
                                    settings.max_frame_bytes,
                                );
                                if exit.is_some() {
                                    return exit;
                                }
                                // Answers the peer does not take: stop reading until it does.
                                if n < scratch.len() || !conn.flush() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return Some(Exit::quietly()),
                        }
                    }
                    None
                });
                last_activity = Instant::now();
                pong_due = None;
                let _ = conn.flush();
                exit = result;
                // Let the other tasks of this worker run between busy sockets.
                tokio::task::consume_budget().await;
            }
            Wake::Timer => {
                let now = Instant::now();
                if blocked_since.is_some() && conn.bytes_sent() != sent_then {
                    // Slow, not stalled: the wait starts again.
                    blocked_since = Some(now);
                    sent_then = conn.bytes_sent();
                }
                let blocked_limit = blocked_since.map(|since| since + settings.pong_timeout);
                if blocked_limit.is_some_and(|limit| now >= limit) {
                    break Exit::with(CloseCode::OverCapacity);
                }
                let next = match pong_due {
                    Some(due) if now >= due => break Exit::with(CloseCode::PongNotReceived),
                    Some(due) => due,
                    None if now < last_activity + settings.activity_timeout => {
                        last_activity + settings.activity_timeout
                    }
                    None => {
                        conn.push(server::ping());
                        pong_due = Some(now + settings.pong_timeout);
                        now + settings.pong_timeout
                    }
                };
                timer
                    .as_mut()
                    .reset(blocked_limit.map_or(next, |limit| limit.min(next)));
            }
        }
    };
    // Nothing published from now on may follow the close frame.
    conn.seal();
    let deadline = Instant::now() + CLOSE_BUDGET;
    if let Some((code, reason)) = exit.close {
        if !exit.drain {
            conn.discard_backlog();
        }
        if let Some(farewell) = exit.farewell {
            conn.force_push(opcode::TEXT, farewell);
        }
        conn.force_push(opcode::CLOSE, ws::close_payload(code, reason).into());
    }
    // A close of ours, or the answer to the peer's.
    let closing = exit.close.is_some() || exit.drain;
    if closing {
        let _ = tokio::time::timeout_at(deadline, poll_fn(|cx| conn.poll_flush(cx))).await;
    }
    conn.finish();
    session.finish();
    if closing {
        close_tcp(&stream, deadline).await;
    }
}

/// Feeds bytes read from the socket to the session; returns how the connection must end, if it
/// must.
fn handle_input(
    reader: &mut Reader,
    input: &mut [u8],
    session: &mut Session,
    conn: &Connection,
    max_message: usize,
) -> Option<Exit> {
    let mut exit = None;
    let mut handled = 0;
    let fed = reader.feed(input, max_message, |message| {
        match message {
            Message::Text(text) => {
                session.on_text(text);
                handled += 1;
                // Answers to pipelined requests (pusher-js resubscribing hundreds of channels
                // after a reconnect) go out as they come, so they do not fill the outbox.
                if handled % MESSAGES_PER_FLUSH == 0 {
                    conn.flush();
                }
            }
            Message::Binary => session.on_binary(),
            Message::Ping(payload) => {
                conn.push_op(opcode::PONG, Bytes::copy_from_slice(payload));
            }
            Message::Pong => {}
            Message::Close(code) => {
                // Answer the peer's close with its own code (or none), then end.
                let payload = match code {
                    Some(code) => Bytes::copy_from_slice(&code.to_be_bytes()),
                    None => Bytes::new(),
                };
                conn.force_push(opcode::CLOSE, payload);
                exit = Some(Exit {
                    close: None,
                    drain: true,
                    farewell: None,
                });
                return false;
            }
        }
        true
    });
    match fed {
        Err(error) => Some(Exit::protocol(error)),
        Ok(()) => exit,
    }
}

/// Any other path: a WebSocket gets 4005, anything else a 404.
pub async fn not_found(
    State(node): State<SharedNode>,
    upgrade: Result<WsUpgrade, NotAnUpgrade>,
) -> Response {
    match upgrade {
        Ok(upgrade) => refuse(&node, upgrade, CloseCode::PathNotFound),
        Err(_) => (StatusCode::NOT_FOUND, "Not found\n").into_response(),
    }
}
