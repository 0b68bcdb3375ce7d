//! A connection as the hub sees it: a socket id, a bounded outbox and a close request.
//!
//! The outbox is written by whoever fills it. A publish queues its frame for every subscriber
//! under the app's lock, then (lock released) writes each subscriber's queued frames straight to
//! its socket with one non-blocking `writev`; the connection's own task is not woken at all
//! unless the socket is full. Frames queued by several publishers meanwhile go out together in
//! that one write. Every write happens under the connection's small mutex, so frames are never
//! interleaved and always leave in the order they were queued.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::protocol::ws::{opcode, server_header, server_header_len, MAX_SERVER_HEADER};
use crate::protocol::{CloseCode, SocketId};

/// How a close was requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code to send.
    pub code: CloseCode,
    /// Whether frames already in the outbox go out first.
    pub drain: bool,
    /// A last frame (a `pusher:error`) sent just before the close frame. It travels with the
    /// request rather than through the outbox, so a full outbox cannot lose it or turn the close
    /// into a 4100.
    pub farewell: Option<Bytes>,
}

/// One queued frame: a WebSocket opcode and its payload (the header is written at send time).
#[derive(Debug)]
struct Frame {
    op: u8,
    payload: Bytes,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    /// Bytes of the first frame (header included) already written.
    written: usize,
    close: Option<CloseRequest>,
    /// The connection's task is gone: pushes are refused.
    finished: bool,
    /// Set on a write error: nothing more will be written.
    broken: bool,
    /// The close frame is queued (or about to be): nothing may follow it.
    sealed: bool,
    /// Bytes written to the socket so far (progress of a slow reader).
    sent: u64,
}

/// The outcome of [`Connection::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Refused: the connection is closing, gone, or its outbox was full (it is now asked to
    /// close with 4100).
    No,
    /// Queued behind other frames: whoever queued the first of them writes this one too.
    Behind,
    /// Queued into an empty outbox: the caller must call [`Connection::flush`] (after releasing
    /// any lock it holds).
    First,
}

/// The hub's handle on one connection. Publishing never waits on it: a full outbox asks the
/// connection to close with 4100 instead.
#[derive(Debug)]
pub struct Connection {
    socket_id: SocketId,
    /// The app key the connection was opened with (closed when that key is revoked).
    key: Box<str>,
    /// The socket frames are written to; `None` for a detached connection read through its
    /// [`Outbox`] (benchmarks and unit tests).
    socket: Option<Arc<TcpStream>>,
    // A std mutex: held to queue a frame or for one non-blocking write, never across an await.
    state: Mutex<State>,
    /// Wakes the connection's task: a close request, a socket that was full, or (detached) a
    /// frame for its outbox.
    waker: AtomicWaker,
    capacity: usize,
}

/// Above this many slots, an emptied queue gives its memory back.
const KEEP_SLOTS: usize = 16;
/// Frames gathered into one `writev`.
const FRAMES_PER_WRITE: usize = 64;

/// The reading end of a detached connection's outbox.
#[derive(Debug)]
pub struct Outbox {
    conn: Arc<Connection>,
}

impl Outbox {
    /// The next text frame, waiting for one (cancel-safe).
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            self.conn.waker.register(cx.waker());
            match self.try_recv() {
                Some(frame) => Poll::Ready(Some(frame)),
                None if self.conn.lock().finished => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// A frame already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let mut state = self.conn.lock();
        let frame = state.frames.pop_front().map(|f| f.payload);
        if state.frames.is_empty() && state.frames.capacity() > KEEP_SLOTS {
            state.frames.shrink_to(KEEP_SLOTS);
        }
        frame
    }
}

impl Connection {
    /// A detached connection with an outbox of `capacity` frames, read through the returned
    /// [`Outbox`].
    pub fn new(socket_id: SocketId, capacity: usize) -> (Arc<Connection>, Outbox) {
        let conn = Arc::new(Connection::build(socket_id, "", None, capacity));
        (conn.clone(), Outbox { conn })
    }

    /// A connection that writes to `socket`, opened with app key `key`.
    pub fn attached(
        socket_id: SocketId,
        key: &str,
        socket: Arc<TcpStream>,
        capacity: usize,
    ) -> Connection {
        Connection::build(socket_id, key, Some(socket), capacity)
    }

    fn build(
        socket_id: SocketId,
        key: &str,
        socket: Option<Arc<TcpStream>>,
        capacity: usize,
    ) -> Connection {
        Connection {
            socket_id,
            key: key.into(),
            socket,
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The app key the connection was opened with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The connection's socket id.
    pub fn socket_id(&self) -> SocketId {
        self.socket_id
    }

    /// Queues a text frame without writing it. A full outbox marks a slow consumer: the
    /// connection is asked to close with 4100 and the frame is dropped.
    pub fn enqueue(&self, frame: &Bytes) -> Queued {
        self.enqueue_op(opcode::TEXT, frame.clone())
    }

    fn enqueue_op(&self, op: u8, payload: Bytes) -> Queued {
        let mut state = self.lock();
        if state.finished || state.broken || state.sealed || state.close.is_some() {
            return Queued::No;
        }
        if state.frames.len() >= self.capacity {
            if state.close.is_none() {
                state.close = Some(CloseRequest {
                    code: CloseCode::OverCapacity,
                    drain: false,
                    farewell: None,
                });
                drop(state);
                self.waker.wake();
            }
            return Queued::No;
        }
        let first = state.frames.is_empty();
        state.frames.push_back(Frame { op, payload });
        if first {
            Queued::First
        } else {
            Queued::Behind
        }
    }

    /// Queues a text frame and has it written soon (by the connection's task, so it is safe
    /// to call under the app's lock). Returns whether the frame was queued.
    pub fn push(&self, frame: Bytes) -> bool {
        self.push_op(opcode::TEXT, frame)
    }

    /// [`Connection::push`] for any opcode (pongs and close frames from the transport).
    pub fn push_op(&self, op: u8, payload: Bytes) -> bool {
        match self.enqueue_op(op, payload) {
            Queued::No => false,
            Queued::Behind => true,
            Queued::First => {
                self.waker.wake();
                true
            }
        }
    }

    /// Queues a frame of the closing handshake (the farewell error, the close frame), past the
    /// outbox limit and a close request; the connection's task writes it.
    pub fn force_push(&self, op: u8, payload: Bytes) {
        let mut state = self.lock();
        if !state.finished && !state.broken {
            state.frames.push_back(Frame { op, payload });
            if op == opcode::CLOSE {
                state.sealed = true;
            }
        }
    }

    /// Refuses every later frame but those of the closing handshake ([`Connection::force_push`]):
    /// called once the connection has decided to close, so no event can follow the close frame.
    pub fn seal(&self) {
        self.lock().sealed = true;
    }

    /// Writes what is queued, without waiting; returns whether the outbox is now empty. If the
    /// socket cannot take it all, the connection's task is woken to wait until it can.
    pub fn flush(&self) -> bool {
        let Some(socket) = &self.socket else {
            self.waker.wake();
            return true;
        };
        let mut state = self.lock();
        match write_queued(socket, &mut state) {
            Ok(true) => true,
            Ok(false) => {
                drop(state);
                self.waker.wake();
                false
            }
            Err(_) => {
                state.broken = true;
                drop(state);
                self.waker.wake();
                false
            }
        }
    }

    /// For the connection's task: writes what is queued, waiting for the socket to take it.
    /// Ready(Ok) once the outbox is empty; Ready(Err) when the socket failed.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(socket) = &self.socket else {
            return Poll::Ready(Ok(()));
        };
        loop {
            {
                let mut state = self.lock();
                if state.broken {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                match write_queued(socket, &mut state) {
                    Ok(true) => return Poll::Ready(Ok(())),
                    Ok(false) => {}
                    Err(error) => {
                        state.broken = true;
                        return Poll::Ready(Err(error));
                    }
                }
            }
            // Registers for writability; loops when the socket became writable meanwhile.
            match socket.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Bytes written to the socket so far: a connection whose backlog does not move this is
    /// stalled, one that moves it is merely slow.
    pub fn bytes_sent(&self) -> u64 {
        self.lock().sent
    }

    /// Frames waiting to be written.
    pub fn backlog(&self) -> usize {
        self.lock().frames.len()
    }

    /// Drops the frames not yet started (a close that does not drain).
    pub fn discard_backlog(&self) {
        let mut state = self.lock();
        let keep = usize::from(state.written > 0);
        state.frames.truncate(keep);
    }

    /// Registers the connection task's waker (before looking at the state, so nothing is missed).
    pub fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// The close request, if one was made.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.lock().close.clone()
    }

    /// Marks the connection finished: later pushes are refused and the outbox is emptied.
    pub fn finish(&self) {
        let mut state = self.lock();
        state.finished = true;
        state.frames = VecDeque::new();
        drop(state);
        self.waker.wake();
    }

    /// Asks the session to close the socket. The first request wins.
    pub fn request_close(&self, code: CloseCode, drain: bool) {
        self.request(CloseRequest {
            code,
            drain,
            farewell: None,
        });
    }

    /// Asks the session to send `pusher:error` with `code`, then close with it, after the frames
    /// already queued.
    pub fn close_with_error(&self, code: CloseCode, message: &str) {
        self.request(CloseRequest {
            code,
            drain: true,
            farewell: Some(crate::protocol::server::error(Some(code.code()), message)),
        });
    }

    fn request(&self, request: CloseRequest) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(request);
            drop(state);
            self.waker.wake();
        }
    }
}

/// Writes queued frames with one `sendmsg` per batch until the queue is empty (`Ok(true)`) or
/// the socket is full (`Ok(false)`).
fn write_queued(socket: &TcpStream, state: &mut State) -> io::Result<bool> {
    if state.broken {
        return Ok(true);
    }
    while !state.frames.is_empty() {
        let mut headers = [[0u8; MAX_SERVER_HEADER]; FRAMES_PER_WRITE];
        let mut slices: [IoSlice<'_>; FRAMES_PER_WRITE * 2] =
            std::array::from_fn(|_| IoSlice::new(&[]));
        let mut used = 0;
        let mut skip = state.written;
        for (frame, header) in state.frames.iter().zip(headers.iter_mut()) {
            let header_len = server_header(frame.op, frame.payload.len(), header);
            let header = &header[..header_len];
            if skip < header.len() {
                slices[used] = IoSlice::new(&header[skip..]);
                slices[used + 1] = IoSlice::new(&frame.payload);
            } else {
                slices[used] = IoSlice::new(&[]);
                slices[used + 1] = IoSlice::new(&frame.payload[skip - header.len()..]);
            }
            skip = 0;
            used += 2;
        }
        // sendmsg rather than writev: the socket layer directly, without the file layer's
        // position lock and checks (about a tenth of a delivery's kernel time).
        let sent = socket.try_io(Interest::WRITABLE, || {
            socket2::SockRef::from(socket).send_vectored(&slices[..used])
        });
        let mut wrote = match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        state.sent += wrote as u64;
        // Drop the frames written in full; remember how far into the next one we got.
        while let Some(front) = state.frames.front() {
            let total = server_header_len(front.payload.len()) + front.payload.len();
            let left = total - state.written;
            if wrote >= left {
                wrote -= left;
                state.written = 0;
                state.frames.pop_front();
            } else {
                state.written += wrote;
                break;
            }
        }
        if state.written > 0 {
            // The socket took part of a frame: it is full.
            return Ok(false);
        }
    }
    if state.frames.capacity() > KEEP_SLOTS {
        state.frames.shrink_to(KEEP_SLOTS);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn nothing_is_queued_after_the_close_frame() {
        let (conn, mut outbox) = Connection::new(SocketId::new(1, 1), 8);
        assert_eq!(conn.enqueue(&bytes("a")), Queued::First);
        assert_eq!(conn.enqueue(&bytes("b")), Queued::Behind);
        conn.force_push(opcode::CLOSE, Bytes::new());
        assert_eq!(conn.enqueue(&bytes("late")), Queued::No);
        assert!(!conn.push(bytes("late")));
        let mut seen = Vec::new();
        while let Some(frame) = outbox.try_recv() {
            seen.push(frame);
        }
        assert_eq!(seen, vec![bytes("a"), bytes("b"), Bytes::new()]);
    }

    #[test]
    fn a_sealed_or_closing_connection_takes_only_closing_frames() {
        let (conn, _outbox) = Connection::new(SocketId::new(1, 2), 8);
        conn.seal();
        assert_eq!(conn.enqueue(&bytes("x")), Queued::No);
        let (conn, _outbox) = Connection::new(SocketId::new(1, 3), 8);
        conn.request_close(CloseCode::ReconnectNow, true);
        assert_eq!(conn.enqueue(&bytes("x")), Queued::No);
        conn.force_push(opcode::TEXT, bytes("farewell"));
        assert_eq!(conn.backlog(), 1);
    }

    #[test]
    fn a_full_outbox_refuses_and_asks_for_4100() {
        let (conn, _outbox) = Connection::new(SocketId::new(1, 4), 2);
        assert_eq!(conn.enqueue(&bytes("1")), Queued::First);
        assert_eq!(conn.enqueue(&bytes("2")), Queued::Behind);
        assert_eq!(conn.enqueue(&bytes("3")), Queued::No);
        let request = conn.close_request().expect("a close request");
        assert_eq!(request.code, CloseCode::OverCapacity);
        assert!(!request.drain);
    }

    /// Frames of every size, written through a socket too small to take them at once: the bytes
    /// that arrive are exactly the frames, in order, whatever the partial writes.
    #[tokio::test]
    async fn partial_writes_resume_exactly_where_they_stopped() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // As the transport sets it; without it, Nagle and delayed ACKs make this test crawl.
        server.set_nodelay(true).unwrap();
        let _ = socket2::SockRef::from(&server).set_send_buffer_size(8192);
        let conn = Connection::attached(SocketId::new(2, 1), "key", Arc::new(server), 100_000);
        let payloads: Vec<Bytes> = (0..140)
            .map(|i| {
                let size = [3, 125, 126, 1000, 65_535, 65_536, 70_001][i % 7];
                Bytes::from(vec![b'a' + (i % 26) as u8; size])
            })
            .collect();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        let mut blocked = 0;
        for payload in &payloads {
            if conn.enqueue(payload) == Queued::First && !conn.flush() {
                blocked += 1;
            }
        }
        std::future::poll_fn(|cx| conn.poll_flush(cx))
            .await
            .unwrap();
        assert!(
            blocked > 0,
            "the socket never filled up: the test proves nothing"
        );
        drop(conn);
        let received = reader.await.unwrap();
        let mut expected = Vec::new();
        for payload in &payloads {
            expected.extend(crate::protocol::ws::server_frame(opcode::TEXT, payload));
        }
        assert_eq!(received.len(), expected.len());
        assert!(
            received == expected,
            "the byte stream differs from the frames"
        );
    }
}
