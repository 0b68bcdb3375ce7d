//! The WebSocket transport: a tungstenite handshake and subscribe, then (fan-out) frames read
//! straight off the raw socket.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::deliveries::{Deliveries, Framing, Tally};
use crate::{source_stream, Target};

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;
/// A `wss://` connection (`--tls-ca`): frames are read through tungstenite, after rustls.
pub(crate) type TlsSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn next_json<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
) -> Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
            Err(_) => bail!("timed out waiting for a frame"),
            Ok(None) => bail!("socket closed"),
            Ok(Some(Err(e))) => bail!("socket error: {e}"),
            Ok(Some(Ok(Message::Text(text)))) => return Ok(serde_json::from_str(&text)?),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn connect(target: &Target, index: usize) -> Result<Socket> {
    let stream = source_stream(target, index).await?;
    let url = format!(
        "ws://{}/app/{}?protocol=7&client=js&version=8.6.0&flash=false",
        target.addr, target.key
    );
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(socket)
}

/// A `wss://` connection subscribed to `channel` (the certificate must name `localhost` or
/// the address's IP).
pub(crate) async fn open_subscribed_tls(
    target: &Target,
    index: usize,
    channel: &str,
) -> Result<TlsSocket> {
    let connector = target.tls()?.context("--tls-ca is needed for TLS")?;
    let stream = source_stream(target, index).await?;
    let host = target
        .addr
        .rsplit_once(':')
        .map_or(&*target.addr, |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
    let stream = connector.connect(name, stream).await?;
    let url = format!(
        "wss://{}/app/{}?protocol=7&client=js&version=8.6.0&flash=false",
        target.addr, target.key
    );
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await?;
    subscribed(socket, channel).await
}

/// Counts a `wss://` subscriber's deliveries until `stop`, answering pings.
pub(crate) async fn read_tls_deliveries(
    mut socket: TlsSocket,
    deliveries: Deliveries,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut mine = Vec::new();
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = stop.changed() => break,
        };
        let Some(Ok(message)) = message else { break };
        if let Message::Text(text) = message {
            if !deliveries.count(text.as_bytes(), &mut mine) && text.contains("\"pusher:ping\"") {
                let pong = r#"{"event":"pusher:pong","data":{}}"#;
                if socket.send(Message::Text(pong.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    deliveries.hand_over(&mut mine);
}

/// A connection subscribed to `channel`.
pub(crate) async fn open_subscribed(
    target: &Target,
    index: usize,
    channel: &str,
) -> Result<Socket> {
    let socket = connect(target, index).await?;
    subscribed(socket, channel).await
}

/// `socket` once subscribed to `channel`.
async fn subscribed<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: WebSocketStream<S>,
    channel: &str,
) -> Result<WebSocketStream<S>> {
    let first = next_json(&mut socket).await?;
    if first["event"] != "pusher:connection_established" {
        bail!("handshake refused: {first}");
    }
    let subscribe = json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":""}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    loop {
        let frame = next_json(&mut socket).await?;
        if frame["event"] == "pusher_internal:subscription_succeeded" {
            return Ok(socket);
        }
    }
}

/// Keeps a connection alive: answers the server's pings, ignores everything else.
pub(crate) async fn hold<S: AsyncRead + AsyncWrite + Unpin>(mut socket: WebSocketStream<S>) {
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            if text.contains("\"pusher:ping\"") {
                let pong = r#"{"event":"pusher:pong","data":{}}"#;
                if socket.send(Message::Text(pong.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Server frames (unmasked) read off the raw socket; a `pusher:ping` is answered at once.
#[derive(Debug, Default)]
pub(crate) struct Frames;

impl Framing for Frames {
    fn read(&mut self, buf: &[u8], stream: &TcpStream, tally: &mut Tally<'_>) -> Option<usize> {
        let mut at = 0;
        while buf.len() - at >= 2 {
            let op = buf[at] & 0x0F;
            let (len, header) = match buf[at + 1] & 0x7F {
                126 if buf.len() - at >= 4 => (
                    usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])),
                    4,
                ),
                127 if buf.len() - at >= 10 => {
                    let mut b = [0; 8];
                    b.copy_from_slice(&buf[at + 2..at + 10]);
                    (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if buf.len() - at < header + len {
                break;
            }
            let payload = &buf[at + header..at + header + len];
            if op == 0x8 {
                return None;
            }
            if op == 0x1
                && !tally.message(payload)
                && payload.windows(13).any(|w| w == b"\"pusher:ping\"")
            {
                // A masked client frame; a zero mask leaves the payload as it is.
                let pong = br#"{"event":"pusher:pong","data":{}}"#;
                let mut frame = vec![0x81, 0x80 | pong.len() as u8, 0, 0, 0, 0];
                frame.extend_from_slice(pong);
                let _ = stream.try_write(&frame);
            }
            at += header + len;
        }
        Some(at)
    }
}
