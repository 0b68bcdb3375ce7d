//! Before hyper: a connection whose first request is a Mercure subscribe (a `GET` of a hub path)
//! is served by the hub's direct path ([`Direct`]) instead, so that its SSE stream costs no hyper
//! connection (see `transport/mercure/direct.rs`). Every other connection goes to hyper
//! untouched: the first bytes are only peeked (plain TCP: `MSG_PEEK`; TLS: the session's first
//! decrypted record), never consumed, unless they are a hub `GET`. A keep-alive connection whose
//! subscribe comes after other requests is hyper's, as before.
//!
//! The head of a hub `GET` is read here, within the same bounds as hyper's: the header read
//! timeout (a client too slow is closed, as hyper closes it), at most [`MAX_HEAD_BYTES`] (431
//! beyond) and [`MAX_HEADERS`] headers (431), and a malformed head gets a 400.

use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::outbox::TlsSocket;
use crate::transport::mercure::{direct_refuse_head, is_hub_path, Direct};
use crate::transport::ws::Stream;

/// The largest head of a subscribe on the direct path (its query carries the selectors, up to
/// 8 KiB, and maybe a token; a cookie may carry another).
pub(super) const MAX_HEAD_BYTES: usize = 32 * 1024;
/// The most header fields of a subscribe on the direct path (hyper's default bound).
pub(super) const MAX_HEADERS: usize = 100;
/// The longest request target prefix looked at to tell a hub path.
const MAX_PATH_PEEK: usize = 1024;
/// How long to wait before peeking again at an incomplete request line.
const PEEK_AGAIN: Duration = Duration::from_millis(5);
/// How many times (5, 10, 15, 20 ms) a plain connection's incomplete request line is peeked at
/// again before it is left to hyper.
const MAX_PEEK_WAITS: u32 = 4;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// Anything but a hub `GET`: hyper's.
    Hyper,
    /// A `GET` of a hub path.
    Hub,
    /// Too early to tell.
    More,
}

fn classify(bytes: &[u8]) -> Class {
    const GET: &[u8] = b"GET ";
    if bytes.len() < GET.len() {
        return if GET.starts_with(bytes) {
            Class::More
        } else {
            Class::Hyper
        };
    }
    if !bytes.starts_with(GET) {
        return Class::Hyper;
    }
    let target = &bytes[GET.len()..];
    match target
        .iter()
        .position(|&b| matches!(b, b' ' | b'?' | b'\r' | b'\n' | b'#'))
    {
        Some(end) => match std::str::from_utf8(&target[..end]) {
            Ok(path) if is_hub_path(path) => Class::Hub,
            _ => Class::Hyper,
        },
        None if target.len() >= MAX_PATH_PEEK => Class::Hyper,
        None => Class::More,
    }
}

/// A plain connection: `None` when it was served here (or closed), else the untouched stream
/// for hyper.
pub(super) async fn plain(
    stream: TcpStream,
    direct: &Direct,
    timeout: Duration,
) -> Option<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut peeked = [0u8; MAX_PATH_PEEK + 8];
    let mut waits = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut peeked)).await {
            Ok(Ok(n)) if n > 0 => n,
            // Closed, failed, or nothing in time (hyper would close it too).
            _ => return None,
        };
        match classify(&peeked[..n]) {
            Class::Hyper => return Some(stream),
            Class::Hub => break,
            Class::More if n == peeked.len() => return Some(stream),
            // A request line still unfinished after a few short waits (a legitimate client
            // sends it in one segment) is hyper's: a peek returns the same bytes at once, so
            // waiting here for a slow client would wake this task until the deadline.
            Class::More if waits == MAX_PEEK_WAITS => return Some(stream),
            Class::More => {
                if Instant::now() + PEEK_AGAIN >= deadline {
                    return None;
                }
                waits += 1;
                tokio::time::sleep(PEEK_AGAIN * waits).await;
            }
        }
    }
    serve_head(Stream::Plain(Arc::new(stream)), direct, deadline).await;
    None
}

/// Non-blocking reads of a TCP stream, as rustls's `Read`.
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// A TLS connection (handshake done): as [`plain`], looking at the session's first decrypted
/// record (a head split over records is left to hyper).
pub(super) async fn tls(
    mut stream: TlsStream<TcpStream>,
    direct: &Direct,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    let deadline = Instant::now() + timeout;
    loop {
        let (tcp, conn) = stream.get_mut();
        let class = match conn.reader().fill_buf() {
            Ok([]) => return None,
            Ok(bytes) => Some(classify(bytes)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
            Err(_) => return None,
        };
        match class {
            Some(Class::Hyper | Class::More) => return Some(stream),
            Some(Class::Hub) => break,
            None => {}
        }
        // Nothing decrypted yet: wait for the next record.
        match tokio::time::timeout_at(deadline, tcp.readable()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
        match conn.read_tls(&mut TryRead(tcp)) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
        if conn.process_new_packets().is_err() {
            return None;
        }
    }
    let (tcp, conn) = stream.into_inner();
    let socket = Stream::Tls(Arc::new(TlsSocket::new(tcp, conn)));
    serve_head(socket, direct, deadline).await;
    None
}

/// Reads the head of a hub `GET` from `stream` by `deadline` and serves it.
async fn serve_head(stream: Stream, direct: &Direct, deadline: Instant) {
    let mut buf = Vec::with_capacity(2048);
    let parsed = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => break owned(&request),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                break Err((
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "too many header fields",
                ))
            }
            Err(_) => break Err((StatusCode::BAD_REQUEST, "malformed request head")),
        }
        if buf.len() >= MAX_HEAD_BYTES {
            break Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request head is too large",
            ));
        }
        if !read_some(&stream, &mut buf, deadline).await {
            // Gone, or too slow: closed without an answer, as hyper does.
            return;
        }
    };
    drop(buf);
    match parsed {
        Ok((path, query, headers)) => direct.serve(stream, &path, &query, headers).await,
        Err((status, message)) => direct_refuse_head(direct, &stream, status, message).await,
    }
}

/// The head's target and headers, owned; or the refusal of a head the router would not take.
type Owned = (String, String, HeaderMap);

fn owned(request: &httparse::Request<'_, '_>) -> Result<Owned, (StatusCode, &'static str)> {
    let malformed = (StatusCode::BAD_REQUEST, "malformed request head");
    let target = request.path.ok_or(malformed)?;
    // The fragment, if a client sent one, is no part of the path or the query (the path as the
    // sniff saw it: `/apps/1/.well-known/mercure#x` is app 1's hub, not the root hub).
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| malformed)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| malformed)?;
        headers.append(name, value);
    }
    Ok((path.to_owned(), query.to_owned(), headers))
}

/// Reads more of the head into `buf` (up to [`MAX_HEAD_BYTES`]); false when the client closed
/// or failed, or `deadline` passed.
async fn read_some(stream: &Stream, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    // TLS: the record that was looked at is decrypted already.
    let mut first = matches!(stream, Stream::Tls(_));
    loop {
        if !std::mem::take(&mut first) {
            match tokio::time::timeout_at(deadline, stream.tcp().readable()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
        let start = buf.len();
        let room = (MAX_HEAD_BYTES - start).min(4096);
        buf.resize(start + room, 0);
        let read = stream.try_read(&mut buf[start..]);
        match read {
            Ok(0) => {
                buf.truncate(start);
                return false;
            }
            Ok(n) => {
                buf.truncate(start + n);
                return true;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => buf.truncate(start),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(_) => {
                buf.truncate(start);
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_a_hub_path_is_taken() {
        assert_eq!(classify(b"G"), Class::More);
        assert_eq!(classify(b"GET /apps/1/.well-kn"), Class::More);
        assert_eq!(
            classify(b"GET /apps/1/.well-known/mercure?topic=a HTTP/1.1\r\n"),
            Class::Hub
        );
        assert_eq!(
            classify(b"GET /.well-known/mercure HTTP/1.1\r\n"),
            Class::Hub
        );
        assert_eq!(classify(b"POST /apps/1/.well-known/mercure "), Class::Hyper);
        assert_eq!(classify(b"HEAD /apps/1/.well-known/mercure "), Class::Hyper);
        assert_eq!(classify(b"GET /app/key?protocol=7 "), Class::Hyper);
        assert_eq!(
            classify(b"GET /apps/1/.well-known/mercure/subscriptions "),
            Class::Hyper
        );
        let long = [b"GET /".as_slice(), &[b'a'; MAX_PATH_PEEK]].concat();
        assert_eq!(classify(&long), Class::Hyper);
    }

    #[test]
    fn a_fragment_is_no_part_of_the_path_or_the_query() {
        for (target, path, query) in [
            (
                "/apps/1/.well-known/mercure#x",
                "/apps/1/.well-known/mercure",
                "",
            ),
            (
                "/apps/1/.well-known/mercure?topic=a#x?y",
                "/apps/1/.well-known/mercure",
                "topic=a",
            ),
            ("/.well-known/mercure#/apps/2", "/.well-known/mercure", ""),
        ] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut request = httparse::Request::new(&mut fields);
            request.parse(head.as_bytes()).expect("parses");
            let (got_path, got_query, _) = owned(&request).expect("taken");
            assert_eq!(
                (got_path.as_str(), got_query.as_str()),
                (path, query),
                "{target}"
            );
        }
    }
}
