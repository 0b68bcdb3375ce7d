//! The null server: the physical floor of Herald's benchmark (issue 19). It does the least a
//! Pusher-protocol server can do for `herald-loadgen` and nothing else, so that every Herald
//! figure can be read as a fraction of what this machine allows:
//!
//! - a WebSocket upgrade is answered with `101` and `pusher:connection_established`;
//! - `pusher:subscribe` registers the socket under its channel and is answered with
//!   `pusher_internal:subscription_succeeded`; every other client frame is ignored;
//! - any `POST …/events` is a trigger: no signature check, no JSON validation (the body the load
//!   generator sends is the event with `name` for `event`, so the frame is the body with that one
//!   key renamed), the frame is built once and written with one non-blocking `send` per
//!   subscriber, and the answer is `200 {}`; any other request gets `404`.
//!
//! A send that does not take the whole frame (a full socket buffer) shuts that socket down: a
//! half-written frame would corrupt the stream, and the load generator then counts the loss.
//! No keepalives, no limits beyond a cap on request and frame sizes, no logging, no metrics;
//! Herald's allocator (mimalloc), so the rows compare servers rather than allocators.
//!
//! Usage: `herald-null-server [ADDR]` (default `127.0.0.1:6001`); it runs until killed.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

// Herald's allocator (see server/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The subscribers of each channel.
type Channels = Arc<Mutex<HashMap<Vec<u8>, Vec<Arc<TcpStream>>>>>;

/// The largest request head plus body, and the largest client frame, accepted.
const MAX_BYTES: usize = 64 * 1024;

const ESTABLISHED: &[u8] =
    br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\",\"activity_timeout\":120}"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6001".into());
    let listener = TcpListener::bind(&addr).await?;
    let channels = Channels::default();
    loop {
        // Running out of file descriptors refuses one connection, not the server.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(Arc::new(stream), channels.clone()));
    }
}

/// HTTP/1.1 requests on one connection (kept alive) until a WebSocket upgrade or the end.
async fn serve(stream: Arc<TcpStream>, channels: Channels) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_BYTES || !fill(&stream, &mut buf).await {
                return;
            }
        };
        let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
            return;
        };
        let mut words = head.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if let Some(key) = header(head, "sec-websocket-key") {
            let mut reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                 sec-websocket-accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            text_frame(&mut reply, &[ESTABLISHED]);
            buf.drain(..head_end);
            if write_all(&stream, &reply).await {
                websocket(stream, buf, channels).await;
            }
            return;
        }
        let path = target.split('?').next().unwrap_or("");
        let found = method == "POST" && path.ends_with("/events");
        let length: usize = header(head, "content-length")
            .map_or(Some(0), |v| v.parse().ok())
            .unwrap_or(usize::MAX);
        if length > MAX_BYTES {
            return;
        }
        while buf.len() < head_end + length {
            if !fill(&stream, &mut buf).await {
                return;
            }
        }
        if found {
            publish(&channels, &buf[head_end..head_end + length]);
        }
        let reply: &[u8] = if found {
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        } else {
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        };
        buf.drain(..head_end + length);
        if !write_all(&stream, reply).await {
            return;
        }
    }
}

/// A trigger: the frame built once, one non-blocking send per subscriber of its channel.
fn publish(channels: &Channels, body: &[u8]) {
    let (Some(channel), Some(name)) = (
        string_after(body, b"\"channel\":\""),
        find(body, b"\"name\":"),
    ) else {
        return;
    };
    let mut frame = Vec::with_capacity(body.len() + 16);
    text_frame(
        &mut frame,
        &[
            &body[..name],
            b"\"event\":",
            &body[name + b"\"name\":".len()..],
        ],
    );
    let channels = lock(channels);
    for subscriber in channels.get(channel).into_iter().flatten() {
        if !matches!(subscriber.try_write(&frame), Ok(n) if n == frame.len()) {
            let _ = socket2::SockRef::from(&**subscriber).shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A WebSocket session after the handshake: reads client frames, registers subscriptions, and
/// unregisters them when the client goes.
async fn websocket(stream: Arc<TcpStream>, mut buf: Vec<u8>, channels: Channels) {
    let mut subscribed: Vec<Vec<u8>> = Vec::new();
    'session: loop {
        while let Some((opcode, payload, used)) = client_frame(&buf) {
            if opcode == 0x8 {
                break 'session;
            }
            if opcode == 0x1 && find(&payload, b"\"pusher:subscribe\"").is_some() {
                if let Some(channel) = string_after(&payload, b"\"channel\":\"") {
                    let mut reply = Vec::new();
                    text_frame(
                        &mut reply,
                        &[
                            br#"{"event":"pusher_internal:subscription_succeeded","channel":""#,
                            channel,
                            br#"","data":"{}"}"#,
                        ],
                    );
                    lock(&channels)
                        .entry(channel.to_vec())
                        .or_default()
                        .push(stream.clone());
                    subscribed.push(channel.to_vec());
                    if !write_all(&stream, &reply).await {
                        break 'session;
                    }
                }
            }
            buf.drain(..used);
        }
        if buf.is_empty() {
            // An idle subscriber holds no buffer while it waits (the memory row's floor).
            buf = Vec::new();
        }
        if buf.len() > MAX_BYTES || !fill(&stream, &mut buf).await {
            break;
        }
    }
    let mut channels = lock(&channels);
    for channel in subscribed {
        if let Some(subscribers) = channels.get_mut(&channel) {
            subscribers.retain(|s| !Arc::ptr_eq(s, &stream));
            if subscribers.is_empty() {
                channels.remove(&channel);
            }
        }
    }
}

/// The first complete client frame in `buf` (clients always mask): its opcode, its unmasked
/// payload and the bytes it took; `None` until it is all there.
fn client_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&first, &second) = (buf.first()?, buf.get(1)?);
    let (length, at) = match second & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let mask: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    let payload = buf.get(at + 4..length.checked_add(at + 4)?)?;
    let payload = payload
        .iter()
        .zip(mask.iter().cycle())
        .map(|(b, m)| b ^ m)
        .collect();
    Some((first & 0x0F, payload, at + 4 + length))
}

/// Appends an unmasked, final text frame whose payload is `parts` one after the other.
fn text_frame(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    out.push(0x81);
    match length {
        0..=125 => out.push(length as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// The channels, locked (a panic elsewhere cannot leave them inconsistent: each change is one
/// call).
#[allow(
    clippy::disallowed_methods,
    reason = "a separate binary: herald's lock helper is not a dependency of it"
)]
fn lock(channels: &Channels) -> MutexGuard<'_, HashMap<Vec<u8>, Vec<Arc<TcpStream>>>> {
    channels.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads what the socket has into `buf`; `false` at the end of the stream or on an error.
async fn fill(stream: &TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        buf.reserve(4096);
        match stream.try_read_buf(buf) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
}

/// Writes all of `bytes` (the handshake and HTTP answers, not the fan-out); `false` on an error.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        if stream.writable().await.is_err() {
            return false;
        }
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    true
}

/// The value of the header `name` (lower case) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The bytes after `prefix` up to the next `"` (a channel name: Pusher's have no quotes).
fn string_after<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let start = find(text, prefix)? + prefix.len();
    let length = text[start..].iter().position(|&b| b == b'"')?;
    Some(&text[start..start + length])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_client_frame_is_unmasked() {
        let mask = [1, 2, 3, 4];
        let text = b"hello";
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        frame.push(0x81);
        assert_eq!(client_frame(&frame), Some((1, text.to_vec(), 11)));
        assert_eq!(client_frame(&frame[..10]), None);
    }

    #[test]
    fn the_trigger_body_becomes_the_event_frame() {
        let body = br#"{"channel":"c","data":"{\"name\":1}","name":"bench"}"#;
        assert_eq!(string_after(body, b"\"channel\":\""), Some(&b"c"[..]));
        let name = find(body, b"\"name\":").unwrap();
        let mut frame = Vec::new();
        text_frame(
            &mut frame,
            &[&body[..name], b"\"event\":", &body[name + 7..]],
        );
        assert_eq!(
            &frame[2..],
            br#"{"channel":"c","data":"{\"name\":1}","event":"bench"}"#
        );
        assert_eq!(frame[..2], [0x81, body.len() as u8 + 1]);
    }
}
