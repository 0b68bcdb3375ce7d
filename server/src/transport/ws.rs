//! The WebSocket connection loop: one small task per upgraded socket.
//!
//! Herald speaks WebSocket over the raw TCP socket itself (framing in
//! [`crate::protocol::ws`]), so that an idle connection costs almost nothing:
//! - no read buffer per connection: a socket is read only once it is readable, into a buffer
//!   shared by every connection of the worker thread; only an incomplete frame is kept;
//! - no write buffer per connection: frames wait in the outbox as shared `Bytes` and are written
//!   with `sendmsg`, by the publisher itself (see [`crate::outbox`]); the task is woken only for
//!   its own answers, a full socket, a close request or its timer;
//! - one timer per connection, re-armed only when it fires.
//!
//! The upgrade and its refusals are in [`super::upgrade`].

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::node::{Node, SharedNode};
use crate::outbox::{CloseRequest, Outbox, Sink, TlsSocket};
use crate::protocol::ws::{self, opcode, Message, Reader};
use crate::protocol::{server, CloseCode};
use crate::transport::admit::admit;
use crate::transport::session::Session;

/// The routes, kept at their old paths.
pub use super::upgrade::{app_socket, not_found};

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

/// The socket once the 101 answer went out, with any bytes the client sent right behind its
/// handshake.
pub(super) struct Socket {
    pub(super) stream: Stream,
    pub(super) early: Bytes,
}

/// A WebSocket's stream: plain TCP, or TCP with its TLS session (`HERALD_TLS_CERT`).
#[derive(Clone)]
pub enum Stream {
    Plain(Arc<TcpStream>),
    Tls(Arc<TlsSocket>),
}

impl Stream {
    /// The TCP stream underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(stream) => stream,
            Stream::Tls(socket) => socket.tcp(),
        }
    }

    /// Reads what the client sent (decrypted), without waiting.
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.try_read(buf),
            Stream::Tls(socket) => socket.read_plain(buf),
        }
    }

    /// An outbox of `capacity` frames writing to this stream.
    pub(crate) fn outbox(&self, capacity: usize) -> Outbox {
        match self {
            Stream::Plain(stream) => Outbox::socket(stream.clone(), capacity),
            Stream::Tls(socket) => Outbox::new(Sink::Tls(socket.clone()), capacity),
        }
    }
}

/// `pusher:error` with `code`, then the close frame with it, then a graceful TCP close (all
/// bounded by the close budget).
pub(super) async fn send_refusal(stream: &Stream, code: CloseCode, message: &str) {
    let stream = match stream {
        Stream::Plain(stream) => stream,
        Stream::Tls(socket) => {
            // Sealed per connection: through an outbox of its own, like a connection's frames.
            let outbox = stream.outbox(2);
            outbox.force_push(opcode::TEXT, server::error(Some(code.code()), message));
            outbox.force_push(
                opcode::CLOSE,
                ws::close_payload(code.code(), code.reason()).into(),
            );
            let deadline = Instant::now() + CLOSE_BUDGET;
            let _ = tokio::time::timeout_at(deadline, poll_fn(|cx| outbox.poll_flush(cx))).await;
            socket.close_notify();
            close_tcp(socket.tcp(), deadline).await;
            return;
        }
    };
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
pub(crate) async fn close_tcp(stream: &TcpStream, deadline: Instant) {
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

/// Registers an upgraded socket with its app, runs it, and cleans up after it.
pub(super) async fn open(
    node: SharedNode,
    app: crate::tenants::AppRef,
    key: String,
    origin: Option<String>,
    socket: Socket,
) {
    let outbox = socket
        .stream
        .outbox(node.settings.outbox_capacity)
        .metered(node.meters.bytes_out.clone());
    // Boxed: this task lives as long as the connection, and the admission's inline Redis call
    // would size it for that call from the first byte to the last.
    let admitted = match Box::pin(admit(
        &node,
        &app,
        &key,
        origin.as_deref(),
        outbox,
        crate::meters::Transport::Ws,
    ))
    .await
    {
        Ok(admitted) => admitted,
        Err(code) => {
            node.meters.handshake_refused(code.code());
            send_refusal(&socket.stream, code, code.reason()).await;
            return;
        }
    };
    drop((key, origin));
    let conn = admitted.conn.clone();
    let session = Session::new(
        node.clone(),
        app.id.clone(),
        admitted.app_hub.clone(),
        conn.clone(),
    );
    tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection opened");
    // A panic in the session must not leave the connection registered: the session leaves its
    // channels when dropped, and the slot and counters are given back below either way.
    let ran = std::panic::AssertUnwindSafe(Box::pin(run(&node, socket, session, conn.outbox())))
        .catch_unwind()
        .await;
    if ran.is_err() {
        tracing::error!(app_id = %app.id, socket_id = %conn.socket_id(), "connection task panicked");
        conn.outbox().finish();
    }
    tracing::debug!(app_id = %app.id, socket_id = %conn.socket_id(), "connection closed");
    admitted.end(&node);
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
async fn run(node: &Node, socket: Socket, mut session: Session, outbox: &Outbox) {
    let Socket { stream, early } = socket;
    let settings = &node.settings;
    // hyper's reads may have left decrypted bytes in a TLS session: look before waiting.
    let mut look_first = matches!(&stream, Stream::Tls(tls) if tls.has_plaintext());
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
            outbox,
            settings.max_frame_bytes,
        );
    }
    drop(early);
    if exit.is_none() && session.pending() {
        // Boxed: awaited inline, the deferred work's futures (Redis calls) would size every
        // connection's task for them, idle or not (2.6 KiB more per idle connection, measured).
        Box::pin(session.drive()).await;
    }
    outbox.flush();
    let exit = loop {
        if let Some(exit) = exit.take() {
            break exit;
        }
        let wake = poll_fn(|cx| {
            outbox.register(cx);
            if let Some(request) = outbox.close_request() {
                return Poll::Ready(Wake::Close(request));
            }
            // A peer that does not read its answers is not read from either.
            let blocked = match outbox.poll_flush(cx) {
                Poll::Ready(Ok(())) => false,
                Poll::Ready(Err(_)) => return Poll::Ready(Wake::Broken),
                Poll::Pending => true,
            };
            match (blocked, blocked_since) {
                (true, None) => {
                    // A peer that reads nothing for the pong timeout is closed with 4100.
                    let now = Instant::now();
                    blocked_since = Some(now);
                    sent_then = outbox.bytes_sent();
                    let limit = now + settings.pong_timeout;
                    if limit < timer.deadline() {
                        timer.as_mut().reset(limit);
                    }
                }
                (false, Some(_)) => blocked_since = None,
                _ => {}
            }
            if !blocked {
                if std::mem::take(&mut look_first) {
                    return Poll::Ready(Wake::Readable);
                }
                match stream.tcp().poll_read_ready(cx) {
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
                                    outbox,
                                    settings.max_frame_bytes,
                                );
                                if exit.is_some() {
                                    return exit;
                                }
                                // Work waits for Redis: read nothing more until it is done
                                // (this bounds what the session queues behind it).
                                if session.pending() {
                                    break;
                                }
                                // Answers the peer does not take: stop reading until it does.
                                if n < scratch.len() || !outbox.flush() {
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
                if result.is_none() && session.pending() {
                    // Boxed, as above: only a connection with deferred work pays for its future.
                    Box::pin(session.drive()).await;
                }
                last_activity = Instant::now();
                pong_due = None;
                let _ = outbox.flush();
                exit = result;
                // Let the other tasks of this worker run between busy sockets.
                tokio::task::consume_budget().await;
            }
            Wake::Timer => {
                let now = Instant::now();
                if blocked_since.is_some() && outbox.bytes_sent() != sent_then {
                    // Slow, not stalled: the wait starts again.
                    blocked_since = Some(now);
                    sent_then = outbox.bytes_sent();
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
                        outbox.push(server::ping());
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
    outbox.seal();
    let deadline = Instant::now() + CLOSE_BUDGET;
    if let Some((code, reason)) = exit.close {
        if !exit.drain {
            outbox.discard_backlog();
        }
        if let Some(farewell) = exit.farewell {
            outbox.force_push(opcode::TEXT, farewell);
        }
        outbox.force_push(opcode::CLOSE, ws::close_payload(code, reason).into());
    }
    // A close of ours, or the answer to the peer's.
    let closing = exit.close.is_some() || exit.drain;
    if closing {
        let _ = tokio::time::timeout_at(deadline, poll_fn(|cx| outbox.poll_flush(cx))).await;
    }
    outbox.finish();
    session.finish();
    if closing {
        if let Stream::Tls(socket) = &stream {
            socket.close_notify();
        }
        close_tcp(stream.tcp(), deadline).await;
    }
}

/// Feeds bytes read from the socket to the session; returns how the connection must end, if it
/// must.
fn handle_input(
    reader: &mut Reader,
    input: &mut [u8],
    session: &mut Session,
    outbox: &Outbox,
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
                    outbox.flush();
                }
            }
            Message::Binary => session.on_binary(),
            Message::Ping(payload) => {
                outbox.push_op(opcode::PONG, Bytes::copy_from_slice(payload));
            }
            Message::Pong => {}
            Message::Close(code) => {
                // Answer the peer's close with its own code (or none), then end.
                let payload = match code {
                    Some(code) => Bytes::copy_from_slice(&code.to_be_bytes()),
                    None => Bytes::new(),
                };
                outbox.force_push(opcode::CLOSE, payload);
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
