//! The direct path of a subscribe: an SSE stream that leaves hyper, as a WebSocket does after its
//! upgrade, so that an idle subscriber costs about what an idle WebSocket costs (no hyper
//! connection and its buffers, no response body channel, no chunk buffers).
//!
//! The accept loop (`serve.rs`) recognises a connection whose first request is a `GET` of a hub
//! path ([`is_hub_path`]) before hyper sees it, reads its head (bounded in size and time, as
//! hyper's) and hands it here with the raw stream (plain TCP or TLS). The request is checked
//! exactly as hyper's path checks it (origin, query, token, admission); a refusal is answered
//! here (the same status, headers and text) and the connection closed. An accepted subscriber
//! gets a close-delimited `text/event-stream` (`Connection: close`, no chunked framing), whose
//! bytes the outbox writes straight to the socket, like WebSocket frames but with no framing:
//! a publish writes each subscriber's event itself, shared and not copied; the subscriber's own
//! small task only waits for a close request, a full socket, the client going away, the
//! heartbeat and the token's `exp`.

use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use super::registry::AppMercure;
use super::stream::{self, Admitted};
use super::{decorate, find_app, open, plan, root_app, stream_capacity, stream_headers, Hubs};
use crate::node::SharedNode;
use crate::transport::ws::{close_tcp, Stream};

/// How long writing a refusal and closing may take.
const ANSWER_BUDGET: Duration = Duration::from_secs(1);
/// The largest refusal body read from its response (they are one line of text).
const MAX_ANSWER_BODY: usize = 4096;

/// What a subscriber may send once its stream is open (an `EventSource` sends nothing): past
/// it the stream ends, so a client cannot make the node read and drop an endless upload.
const MAX_CLIENT_BYTES: usize = 64 * 1024;

/// Whether a `GET` of `path` (without its query) is a hub's subscribe: `/.well-known/mercure`,
/// or `/apps/{app_id}/.well-known/mercure` under any mount prefix (as the router sees it once
/// the prefix is stripped). Percent-encoded paths are left to the router.
pub fn is_hub_path(path: &str) -> bool {
    if path == "/.well-known/mercure" {
        return true;
    }
    app_of(path).is_some()
}

/// The app id of an app hub path.
fn app_of(path: &str) -> Option<&str> {
    if path.contains('%') {
        return None;
    }
    let path = if path.starts_with("/apps/") {
        path
    } else if path.starts_with("/app/")
        || path.starts_with("/dashboard")
        || path.starts_with("/api/v1/")
    {
        return None;
    } else {
        match path.find("/apps/") {
            // The router strips a prefix only when no `/app/` comes first.
            Some(start) if path.find("/app/").is_none_or(|app| app > start) => &path[start..],
            _ => return None,
        }
    };
    let app_id = path
        .strip_prefix("/apps/")?
        .strip_suffix("/.well-known/mercure")?;
    (!app_id.is_empty() && !app_id.contains('/')).then_some(app_id)
}

/// Serves the subscribes that leave hyper.
#[derive(Clone)]
pub struct Direct {
    node: SharedNode,
    hubs: Hubs,
}

impl Direct {
    /// The direct path for `node`'s hubs.
    pub fn new(node: SharedNode, hubs: Hubs) -> Direct {
        Direct { node, hubs }
    }

    /// Serves a subscribe whose head was read from `stream`: a `GET` of `path` (a hub path,
    /// see [`is_hub_path`]) with `query` and `headers`. The stream runs in a task of the node's
    /// connections (not the accept loop's, which shutdown waits for).
    pub async fn serve(&self, stream: Stream, path: &str, query: &str, headers: HeaderMap) {
        let node = &self.node;
        let app_id = match app_of(path) {
            Some(app_id) => Ok(app_id.to_owned()),
            None => root_app(node),
        };
        let app = match app_id.and_then(|id| find_app(node, &id)) {
            Ok(app) => app,
            Err(response) => return answer_and_close(&stream, *response, now(node)).await,
        };
        let plan = match plan(node, &self.hubs, app.clone(), &headers, query) {
            Ok(plan) => plan,
            Err(mut response) => {
                decorate(node, &mut response, &app, &headers);
                return answer_and_close(&stream, *response, now(node)).await;
            }
        };
        let draft = plan.draft;
        let expires = plan.expires;
        let mercure = plan.mercure.clone();
        let outbox = stream
            .outbox(stream_capacity(node))
            .metered(node.meters.bytes_out.clone())
            .raw();
        // A client that goes away while the subscribe waits (for Redis, in a cluster) ends it
        // there: its registration is removed as the subscribe is dropped.
        let opened = tokio::select! {
            opened = open(node, plan, outbox) => opened,
            () = client_gone(&stream) => {
                close(&stream, Instant::now() + ANSWER_BUDGET).await;
                return;
            }
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(mut response) => {
                decorate(node, &mut response, &app, &headers);
                return answer_and_close(&stream, *response, now(node)).await;
            }
        };
        let mut response = Response::new(axum::body::Body::empty());
        stream_headers(response.headers_mut(), draft, opened.resume_point);
        decorate(node, &mut response, &app, &headers);
        // The head, then a comment that opens the stream for the client at once, then the
        // replay already queued.
        let mut head = head_bytes(&response, None, now(node));
        head.put_slice(b":\n\n");
        let outbox = opened.admitted.conn.outbox();
        outbox.release(head.freeze());
        outbox.flush();
        let run = Run {
            admitted: opened.admitted,
            app: mercure,
            subscription: opened.subscription,
            heartbeat: node.settings.mercure.heartbeat,
            expires,
        };
        tokio::spawn(node.connections.track_future(run.run(stream)));
    }
}

/// An HTTP/1.1 response head for `response`, which closes the connection after it: the body
/// is `content_length` bytes long, or (`None`) runs until the close.
fn head_bytes(response: &Response, content_length: Option<usize>, now: String) -> BytesMut {
    let status = response.status();
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in response.headers() {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        head.put_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.put_slice(b"connection: close\r\ndate: ");
    head.put_slice(now.as_bytes());
    head.put_slice(b"\r\n\r\n");
    head
}

/// Writes `response` with its body and closes the connection (within [`ANSWER_BUDGET`]).
async fn answer_and_close(stream: &Stream, response: Response, now: String) {
    let deadline = Instant::now() + ANSWER_BUDGET;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_ANSWER_BODY)
        .await
        .unwrap_or_default();
    let response = Response::from_parts(parts, ());
    let mut bytes = head_bytes(
        &response.map(|()| axum::body::Body::empty()),
        Some(body.len()),
        now,
    );
    bytes.put_slice(&body);
    let outbox = stream.outbox(1).raw();
    outbox.release(bytes.freeze());
    let _ = tokio::time::timeout_at(deadline, poll_fn(|cx| outbox.poll_flush(cx))).await;
    close(stream, deadline).await;
}

/// Ends the connection: TLS's `close_notify`, then a graceful TCP close.
async fn close(stream: &Stream, deadline: Instant) {
    if let Stream::Tls(socket) = stream {
        socket.close_notify();
    }
    close_tcp(stream.tcp(), deadline).await;
}

/// The `Date` header's value, from the node's clock.
fn now(node: &SharedNode) -> String {
    node.settings.clock.http_date()
}

/// A refusal of the head itself (too large, malformed), answered before any hub code runs.
pub async fn refuse_head(direct: &Direct, stream: &Stream, status: StatusCode, message: &str) {
    let mut response = Response::new(axum::body::Body::from(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer_and_close(stream, response, now(&direct.node)).await;
}

/// An accepted subscriber's task.
struct Run {
    admitted: Admitted,
    app: Arc<AppMercure>,
    /// The registration (`None`: a replay cut at its bound; the stream ends after it).
    subscription: Option<u64>,
    heartbeat: Duration,
    /// When the token expires (monotonic).
    expires: Option<Instant>,
}

/// What woke the task.
enum Wake {
    /// A close was requested (slow reader, shutdown, app disabled), the socket failed, or the
    /// client went away.
    End,
    /// A cut replay is written.
    Written,
    Readable,
    Timer,
}

impl Run {
    /// Until the stream ends: the heartbeat after a silent period, the end at the token's
    /// `exp`; bytes from the client are read and dropped (its close ends the stream).
    async fn run(self, stream: Stream) {
        let Run {
            admitted,
            app,
            subscription,
            heartbeat,
            expires,
        } = self;
        let conn = admitted.conn.clone();
        let outbox = conn.outbox();
        // TLS: the head's record may have brought more than the head.
        let mut look_first = matches!(&stream, Stream::Tls(tls) if tls.has_plaintext());
        let mut sent_then = outbox.bytes_sent();
        let mut uploaded = 0usize;
        let next_beat = |now: Instant| {
            let beat = now + heartbeat;
            expires.map_or(beat, |at| at.min(beat))
        };
        let timer = tokio::time::sleep_until(next_beat(Instant::now()));
        tokio::pin!(timer);
        loop {
            let wake = poll_fn(|cx| {
                outbox.register(cx);
                if outbox.close_request().is_some() {
                    return Poll::Ready(Wake::End);
                }
                match outbox.poll_flush(cx) {
                    Poll::Ready(Err(_)) => return Poll::Ready(Wake::End),
                    Poll::Ready(Ok(())) if subscription.is_none() => {
                        return Poll::Ready(Wake::Written)
                    }
                    _ => {}
                }
                if std::mem::take(&mut look_first) {
                    return Poll::Ready(Wake::Readable);
                }
                match stream.tcp().poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Wake::Readable),
                    Poll::Ready(Err(_)) => return Poll::Ready(Wake::End),
                    Poll::Pending => {}
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Wake::Timer),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match wake {
                Wake::End | Wake::Written => break,
                Wake::Readable => {
                    if !drain_counted(&stream, &mut uploaded) || uploaded > MAX_CLIENT_BYTES {
                        break;
                    }
                    tokio::task::consume_budget().await;
                }
                Wake::Timer => {
                    let now = Instant::now();
                    if expires.is_some_and(|at| now >= at) {
                        break;
                    }
                    // Silent for a whole period: a comment keeps proxies from closing the
                    // stream (and tells a write to a vanished client).
                    if outbox.bytes_sent() == sent_then {
                        outbox.push(Bytes::from_static(b":\n"));
                        outbox.flush();
                    }
                    sent_then = outbox.bytes_sent();
                    timer.as_mut().reset(next_beat(now));
                }
            }
        }
        outbox.seal();
        stream::finish(&app, subscription, admitted);
        close(&stream, Instant::now() + ANSWER_BUDGET).await;
    }
}

/// Resolves when the client closes the connection, or has sent more than
/// [`MAX_CLIENT_BYTES`] (what it sends meanwhile is dropped).
async fn client_gone(stream: &Stream) {
    let mut uploaded = 0usize;
    loop {
        if stream.tcp().readable().await.is_err()
            || !drain_counted(stream, &mut uploaded)
            || uploaded > MAX_CLIENT_BYTES
        {
            return;
        }
        tokio::task::consume_budget().await;
    }
}

/// Reads and drops what the client sent, adding the bytes read to `read`; whether the
/// connection is still open.
fn drain_counted(stream: &Stream, read: &mut usize) -> bool {
    let mut scratch = [0u8; 512];
    for _ in 0..64 {
        match stream.try_read(&mut scratch) {
            Ok(0) => return false,
            Ok(n) => *read = read.saturating_add(n),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_paths_are_recognised_as_the_router_sees_them() {
        assert!(is_hub_path("/.well-known/mercure"));
        assert_eq!(app_of("/apps/1/.well-known/mercure"), Some("1"));
        assert_eq!(app_of("/prefix/apps/a-b/.well-known/mercure"), Some("a-b"));
        for other in [
            "/apps//.well-known/mercure",
            "/apps/1/.well-known/mercure/subscriptions",
            "/apps/1/2/.well-known/mercure",
            "/apps/%31/.well-known/mercure",
            "/app/key",
            "/x/app/k/apps/1/.well-known/mercure",
            "/.well-known/mercure/",
            "/prefix/.well-known/mercure",
        ] {
            assert!(!is_hub_path(other), "{other}");
        }
    }
}
