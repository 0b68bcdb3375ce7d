//! The WebSocket endpoint: `/app/{key}` handshake checks and the per-connection loop, one task
//! per connection selecting over inbound frames, the outbox, the activity deadline, a close
//! request and node shutdown.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite;

use crate::hub::{Connection, Outbox};
use crate::node::SharedNode;
use crate::protocol::{check_handshake_version, server, CloseCode, ACTIVITY_TIMEOUT_SECS};
use crate::transport::session::Session;

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

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
    configure(node, upgrade).on_upgrade(move |mut socket| async move {
        let frame = server::error(Some(code.code()), code.reason());
        if let Ok(text) = Utf8Bytes::try_from(frame) {
            let _ = socket.send(Message::Text(text)).await;
        }
        let _ = socket.send(close_message(code)).await;
    })
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
    upgrade: WebSocketUpgrade,
) -> Response {
    let protocol = query_param(query.as_deref(), "protocol");
    let version = query_param(query.as_deref(), "version");
    if let Err(code) = check_handshake_version(protocol.as_deref(), version.as_deref()) {
        return refuse(&node, upgrade, code);
    }
    let Some(app) = node.apps.by_key(&key) else {
        return refuse(&node, upgrade, CloseCode::AppDoesNotExist);
    };
    if !app.enabled {
        return refuse(&node, upgrade, CloseCode::AppDisabled);
    }
    if node.shutdown.is_cancelled() {
        return refuse(&node, upgrade, CloseCode::ReconnectNow);
    }
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
            let conn = Arc::new(conn);
            if !app_hub.connect(&conn, app.limits.connections()) {
                node.hub.release_connection();
                let mut socket = socket;
                let code = CloseCode::OverConnectionQuota;
                if let Ok(text) =
                    Utf8Bytes::try_from(server::error(Some(code.code()), code.reason()))
                {
                    let _ = socket.send(Message::Text(text)).await;
                }
                let _ = socket.send(close_message(code)).await;
                return;
            }
            conn.push(server::connection_established(
                conn.socket_id(),
                ACTIVITY_TIMEOUT_SECS,
            ));
            let session = Session::new(node.clone(), app.id.clone(), app_hub, conn.clone());
            tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection opened");
            run(node.clone(), socket, session, conn.clone(), outbox).await;
            tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection closed");
            node.hub.release_connection();
        })
    })
}

async fn send_frame(socket: &mut WebSocket, frame: Bytes) -> bool {
    match Utf8Bytes::try_from(frame) {
        Ok(text) => socket.send(Message::Text(text)).await.is_ok(),
        Err(_) => true,
    }
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
    let close: Option<CloseCode> = loop {
        tokio::select! {
            biased;
            () = node.shutdown.cancelled() => break Some(CloseCode::ReconnectNow),
            request = conn.close_requested() => {
                if request.drain {
                    while let Some(frame) = outbox.try_recv() {
                        if !send_frame(&mut socket, frame).await {
                            break;
                        }
                    }
                }
                break Some(request.code);
            }
            inbound = socket.recv() => {
                let message = match inbound {
                    None => break None,
                    Some(Ok(message)) => message,
                    Some(Err(error)) => break is_too_big(error).then_some(CloseCode::MessageTooBig),
                };
                deadline.as_mut().reset(Instant::now() + activity_timeout);
                awaiting_pong = false;
                match message {
                    Message::Text(text) => session.on_text(text.as_str()),
                    Message::Binary(_) => session.on_binary(),
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            frame = outbox.recv() => {
                let Some(frame) = frame else { break None };
                if !send_frame(&mut socket, frame).await {
                    break None;
                }
            }
            () = &mut deadline => {
                if awaiting_pong {
                    break Some(CloseCode::PongNotReceived);
                }
                awaiting_pong = true;
                if !send_frame(&mut socket, server::ping()).await {
                    break None;
                }
                deadline.as_mut().reset(Instant::now() + pong_timeout);
            }
        }
    };
    if let Some(code) = close {
        let _ = socket.send(close_message(code)).await;
    }
    session.finish();
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
