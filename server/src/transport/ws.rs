//! The WebSocket endpoint: `/app/{key}` handshake checks and the per-connection loop, one task
//! per connection selecting over inbound frames, the outbox, the activity deadline, a close
//! request and node shutdown.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite;

use crate::hub::{Connection, Outbox};
use crate::node::{Node, SharedNode};
use crate::protocol::{
    check_handshake_version, query_pairs, query_value, server, CloseCode, ACTIVITY_TIMEOUT_SECS,
};
use crate::transport::session::Session;

fn configure(node: &SharedNode, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    let max = node.settings.max_frame_bytes;
    upgrade
        .read_buffer_size(node.settings.ws_read_buffer)
        .write_buffer_size(node.settings.ws_write_buffer)
        .max_message_size(max)
        .max_frame_size(max)
}

/// Accepts the upgrade only to send `pusher:error` and close with `code`, as pusher-js expects.
fn refuse(node: &SharedNode, upgrade: WebSocketUpgrade, code: CloseCode) -> Response {
    refuse_with(node, upgrade, code, code.reason())
}

/// [`refuse`] with a more specific message.
fn refuse_with(
    node: &SharedNode,
    upgrade: WebSocketUpgrade,
    code: CloseCode,
    message: &'static str,
) -> Response {
    configure(node, upgrade).on_upgrade(move |mut socket| async move {
        send_refusal(&mut socket, code, message).await;
    })
}

/// `pusher:error` with `code`, then the close frame with it (bounded by the close budget).
async fn send_refusal(socket: &mut WebSocket, code: CloseCode, message: &str) {
    let _ = tokio::time::timeout(CLOSE_BUDGET, async {
        if send_text(socket, server::error(Some(code.code()), message))
            .await
            .is_ok()
        {
            let _ = socket.send(close_message(code)).await;
        }
    })
    .await;
}

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    }))
}

/// `GET /app/{key}`: the Pusher WebSocket endpoint.
pub async fn app_socket(
    State(node): State<SharedNode>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let params = query_pairs(query.as_deref());
    let protocol = query_value(&params, "protocol");
    let version = query_value(&params, "version");
    if let Err(code) = check_handshake_version(protocol, version) {
        return refuse(&node, upgrade, code);
    }
    let Some(app) = node.apps.by_key(&key) else {
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
    let upgrade = configure(&node, upgrade).on_failed_upgrade({
        let node = node.clone();
        move |_| node.hub.release_connection()
    });
    let tracked = node.clone();
    upgrade.on_upgrade(move |socket| {
        tracked.connections.track_future(async move {
            let app_hub = node.hub.app(&app.id);
            let (conn, outbox) =
                Connection::new(node.hub.next_socket_id(), node.settings.outbox_capacity);
            let conn = Arc::new(conn.with_key(&key));
            if !app_hub.connect(&conn, app.limits.connections()) {
                node.hub.release_connection();
                let mut socket = socket;
                send_refusal(
                    &mut socket,
                    CloseCode::OverConnectionQuota,
                    CloseCode::OverConnectionQuota.reason(),
                )
                .await;
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
            // The app may have been disabled or deleted while this socket upgraded; the cache
            // refresh that closes its sockets may already have run, so look again.
            match node.apps.by_id(&app.id) {
                None => conn.close_with_error(
                    CloseCode::AppDoesNotExist,
                    CloseCode::AppDoesNotExist.reason(),
                ),
                Some(current) if !current.enabled => {
                    conn.close_with_error(CloseCode::AppDisabled, CloseCode::AppDisabled.reason())
                }
                Some(_) => {}
            }
            conn.push(server::connection_established(
                conn.socket_id(),
                ACTIVITY_TIMEOUT_SECS,
            ));
            let session = Session::new(node.clone(), app.id.clone(), app_hub, conn.clone());
            tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection opened");
            run(node.clone(), socket, session, conn.clone(), outbox).await;
            tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection closed");
            usage.disconnected();
            node.taps
                .emit(&app.id, "disconnection", None, Some(&socket_id), || {
                    "disconnected".to_owned()
                });
            node.hub.release_connection();
        })
    })
}

/// How long the closing handshake (queued frames, the farewell error, the close frame) may take
/// before the TCP connection is simply dropped.
const CLOSE_BUDGET: Duration = Duration::from_secs(1);

/// How a connection's loop ended.
struct Exit {
    code: Option<CloseCode>,
    drain: bool,
    farewell: Option<Bytes>,
}

impl Exit {
    fn quietly() -> Exit {
        Exit {
            code: None,
            drain: false,
            farewell: None,
        }
    }

    fn with(code: CloseCode) -> Exit {
        Exit {
            code: Some(code),
            drain: false,
            farewell: None,
        }
    }
}

/// Writes one frame, giving up when the peer stops reading: a close request (4100 for a full
/// outbox, 4003, 4009...), node shutdown or `write_timeout` interrupts a blocked write, so a
/// stalled peer can never keep its connection (and its presence, its quota slot) alive.
async fn write(
    socket: &mut WebSocket,
    frame: Bytes,
    conn: &Connection,
    node: &Node,
) -> Result<(), Option<Exit>> {
    tokio::select! {
        sent = send_text(socket, frame) => sent.map_err(|_| None),
        request = conn.close_requested() => Err(Some(Exit {
            code: Some(request.code),
            drain: false,
            farewell: request.farewell,
        })),
        () = node.shutdown.cancelled() => Err(Some(Exit::with(CloseCode::ReconnectNow))),
        () = tokio::time::sleep(node.settings.pong_timeout) => Err(Some(Exit::with(CloseCode::OverCapacity))),
    }
}

/// Writes the frames queued right now (not those published while it writes).
async fn flush(
    socket: &mut WebSocket,
    outbox: &mut Outbox,
    conn: &Connection,
    node: &Node,
) -> Result<(), Option<Exit>> {
    for _ in 0..node.settings.outbox_capacity {
        let Some(frame) = outbox.try_recv() else {
            break;
        };
        write(socket, frame, conn, node).await?;
    }
    Ok(())
}

/// The per-connection loop.
async fn run(
    node: SharedNode,
    mut socket: WebSocket,
    mut session: Session,
    conn: Arc<Connection>,
    mut outbox: Outbox,
) {
    let activity_timeout = node.settings.activity_timeout;
    let pong_timeout = node.settings.pong_timeout;
    let deadline = sleep_until(Instant::now() + activity_timeout);
    tokio::pin!(deadline);
    let mut awaiting_pong = false;
    let exit: Exit = loop {
        tokio::select! {
            biased;
            () = node.shutdown.cancelled() => break Exit::with(CloseCode::ReconnectNow),
            request = conn.close_requested() => break Exit {
                code: Some(request.code),
                drain: request.drain,
                farewell: request.farewell,
            },
            inbound = socket.recv() => {
                let message = match inbound {
                    None => break Exit::quietly(),
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        break if is_too_big(error) {
                            Exit::with(CloseCode::MessageTooBig)
                        } else {
                            Exit::quietly()
                        };
                    }
                };
                deadline.as_mut().reset(Instant::now() + activity_timeout);
                awaiting_pong = false;
                match message {
                    Message::Text(text) => {
                        session.on_text(text.as_str());
                        // Write the answers before reading more: a client that pipelines
                        // requests (pusher-js resubscribing hundreds of channels after a
                        // reconnect) must not overflow its own outbox, and one that does not
                        // read its answers is slowed down by TCP instead.
                        if let Err(exit) = flush(&mut socket, &mut outbox, &conn, &node).await {
                            break exit.unwrap_or_else(Exit::quietly);
                        }
                    }
                    Message::Binary(_) => session.on_binary(),
                    Message::Close(_) => {
                        // tungstenite has queued the reply to the peer's close: send it.
                        let _ = tokio::time::timeout(CLOSE_BUDGET, SinkExt::flush(&mut socket)).await;
                        break Exit::quietly();
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            frame = outbox.recv() => {
                let Some(frame) = frame else { break Exit::quietly() };
                if let Err(exit) = write(&mut socket, frame, &conn, &node).await {
                    break exit.unwrap_or_else(Exit::quietly);
                }
            }
            () = &mut deadline => {
                if awaiting_pong {
                    break Exit::with(CloseCode::PongNotReceived);
                }
                awaiting_pong = true;
                if let Err(exit) = write(&mut socket, server::ping(), &conn, &node).await {
                    break exit.unwrap_or_else(Exit::quietly);
                }
                deadline.as_mut().reset(Instant::now() + pong_timeout);
            }
        }
    };
    if let Some(code) = exit.code {
        let capacity = node.settings.outbox_capacity;
        let _ = tokio::time::timeout(CLOSE_BUDGET, async {
            if exit.drain {
                // Only what was queued before the close: publishers may keep adding.
                for _ in 0..capacity {
                    let Some(frame) = outbox.try_recv() else {
                        break;
                    };
                    if send_text(&mut socket, frame).await.is_err() {
                        return;
                    }
                }
            }
            if let Some(farewell) = exit.farewell {
                if send_text(&mut socket, farewell).await.is_err() {
                    return;
                }
            }
            let _ = socket.send(close_message(code)).await;
        })
        .await;
    }
    session.finish();
}

async fn send_text(socket: &mut WebSocket, frame: Bytes) -> Result<(), axum::Error> {
    match Utf8Bytes::try_from(frame) {
        Ok(text) => socket.send(Message::Text(text)).await,
        Err(_) => Ok(()),
    }
}

/// Whether a read failed because the peer sent more than the inbound limit.
fn is_too_big(error: axum::Error) -> bool {
    matches!(
        error.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Any other path: a WebSocket gets 4005, anything else a 404.
pub async fn not_found(
    State(node): State<SharedNode>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => refuse(&node, upgrade, CloseCode::PathNotFound),
        Err(_) => (StatusCode::NOT_FOUND, "Not found\n").into_response(),
    }
}
