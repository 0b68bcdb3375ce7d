//! The `/app/{key}` upgrade (RFC 6455 §4.2) and its refusals, each sent as `pusher:error` and a
//! close frame on the upgraded socket, as pusher-js expects: unsupported protocol version
//! (4007, or 4008 without one), unknown app (4001), disabled app (4003), origin not allowed
//! (4009), shutting down (4200), node full (4100), and any other path (4005). An accepted socket
//! goes to the connection loop ([`super::ws`]), which registers it with the app (over its
//! connection quota: 4004; over its share of the node: 4100).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::node::SharedNode;
use crate::outbox::TlsSocket;
use crate::protocol::{check_handshake_version, query_pairs, query_value, CloseCode};
use crate::transport::ws::{open, send_refusal, Socket, Stream};

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
                            stream: Stream::Plain(Arc::new(stream)),
                            early: parts.read_buf,
                        })
                    }
                    Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                        Ok(parts) => {
                            let (stream, session) = parts.io.into_inner().into_inner();
                            let _ = stream.set_nodelay(true);
                            Some(Socket {
                                stream: Stream::Tls(Arc::new(TlsSocket::new(stream, session))),
                                early: parts.read_buf,
                            })
                        }
                        Err(_) => {
                            tracing::error!("WebSocket upgrade on a connection that is not TCP");
                            None
                        }
                    },
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
    node.meters.handshake_refused(code.code());
    upgrade.accept(
        node,
        || {},
        move |socket| async move {
            send_refusal(&socket.stream, code, message).await;
        },
    )
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
        node.meters.refused("node_capacity");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the extractor says of a request with `method` and `headers`.
    async fn judge(method: &str, headers: &[(&str, &str)]) -> Result<(), (StatusCode, String)> {
        let mut request = axum::http::Request::builder().method(method).uri("/app/k");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        match WsUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(_) => Ok(()),
            Err(NotAnUpgrade(status, message)) => Err((status, message.to_owned())),
        }
    }

    const HANDSHAKE: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[tokio::test]
    async fn a_websocket_handshake_is_recognised_header_by_header() {
        assert_eq!(
            judge("POST", &HANDSHAKE).await.unwrap_err().0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        for missing in 0..HANDSHAKE.len() {
            let headers: Vec<_> = HANDSHAKE
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, h)| *h)
                .collect();
            let (status, message) = judge("GET", &headers).await.unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        }
        let mut old = HANDSHAKE;
        old[2] = ("sec-websocket-version", "8");
        assert_eq!(
            judge("GET", &old).await.unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        // Every header right, but no connection to take over (not served by hyper).
        assert_eq!(
            judge("GET", &HANDSHAKE).await.unwrap_err().0,
            StatusCode::UPGRADE_REQUIRED
        );
    }

    #[test]
    fn header_tokens_are_comma_separated_and_case_insensitive() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(header::CONNECTION, HeaderValue::from_static(" UPGRADE ,x"));
        assert!(header_has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!header_has_token(&headers, header::CONNECTION, "close"));
        assert!(!header_has_token(&headers, header::UPGRADE, "websocket"));
    }
}
