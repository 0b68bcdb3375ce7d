//! The outbox: one connection's bounded queue of outgoing frames, its close request, and the
//! sink that takes them. It sits below the hub, which only queues frames ([`Outbox::enqueue`],
//! [`Outbox::push`]), writes them once its lock is released ([`Outbox::flush`]) and asks for a
//! close ([`Outbox::request_close`], [`Outbox::close_with_error`]); the rest (waiting on a full
//! socket, the closing handshake's frames, sealing) is for the connection's own task.
//!
//! The outbox is written by whoever fills it. A publish queues its frame for every subscriber
//! under the app's lock, then (lock released) writes each subscriber's queued frames straight to
//! its sink; for a socket that is one non-blocking `send` or `sendmsg` (see `socket.rs`), and the
//! connection's own task is not woken at all unless the socket is full. Frames queued by several
//! publishers meanwhile go out together in that one write. Every write happens under the
//! outbox's small mutex, so frames are never interleaved and always leave in the order they
//! were queued.
//!
//! The sink is an enum, not a trait object: a delivery costs no dynamic dispatch. Today there
//! is the socket, the TLS socket (encrypted per connection, see `tls.rs`) and the detached
//! outbox (read through a [`Receiver`]: the pusher-js HTTP fallback sessions, whose task takes
//! the frames for each stream or poll, benchmarks and tests). A raw outbox ([`Outbox::raw`])
//! writes its frames' bytes with no WebSocket header: a Mercure SSE stream on a socket or TLS
//! socket, whose events are written straight to the socket like WebSocket frames.

mod frames;
mod socket;
mod tls;

pub use tls::TlsSocket;

use crate::locks::MutexExt;
use frames::{Frame, Frames};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;

use crate::protocol::ws::opcode;
use crate::protocol::CloseCode;

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

/// What the outbox's mutex guards. `repr(C)`, hot fields first: the flags, the write position
/// and the first frame (inline, see `frames.rs`) follow the mutex's own word, so queuing a frame
/// and writing it touch the same one or two cache lines; the close request, rarely read in full,
/// comes last.
#[derive(Debug, Default)]
#[repr(C)]
struct State {
    /// The connection's task is gone: pushes are refused.
    finished: bool,
    /// Set on a write error: nothing more will be written.
    broken: bool,
    /// The close frame is queued (or about to be): nothing may follow it.
    sealed: bool,
    /// Nothing is written yet: the frames wait for [`Outbox::release`] (an SSE stream whose
    /// response head is not known until its replay is queued).
    held: bool,
    /// A close was requested (`close` holds it).
    closing: bool,
    /// Bytes of the first frame (header included) already written.
    written: usize,
    frames: Frames,
    /// Bytes written to the sink so far (progress of a slow reader).
    sent: u64,
    /// The node's bytes-out counter (`meters::Meters::bytes_out`), added to once per write call.
    bytes_out: Option<Arc<std::sync::atomic::AtomicU64>>,
    close: Option<CloseRequest>,
}

/// The pseudo-opcode of a frame written as it is, with no WebSocket header (an SSE stream's
/// bytes, see [`Outbox::raw`]).
pub(crate) const RAW: u8 = 0xFF;

/// The header bytes written before a frame of `op` whose payload is `len` bytes long.
pub(crate) fn header_len(op: u8, len: usize) -> usize {
    if op == RAW {
        0
    } else {
        crate::protocol::ws::server_header_len(len)
    }
}

/// The outcome of [`Outbox::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Refused: the connection is closing, gone, or its outbox was full (it is now asked to
    /// close with 4100).
    No,
    /// Queued behind other frames: whoever queued the first of them writes this one too.
    Behind,
    /// Queued into an empty outbox: the caller must call [`Outbox::flush`] (after releasing
    /// any lock it holds).
    First,
}

/// What an outbox's frames are written to.
#[derive(Debug)]
pub enum Sink {
    /// A WebSocket over TCP: frames are written with their headers by whoever flushes.
    Socket(Arc<TcpStream>),
    /// A WebSocket over TLS: frames are sealed into the connection's own TLS records by whoever
    /// flushes, then written the same way.
    Tls(Arc<TlsSocket>),
    /// Nothing: the frames wait until a [`Receiver`] takes them (benchmarks and unit tests).
    Detached,
}

/// One connection's bounded outbox. Publishing never waits on it: a full outbox asks the
/// connection to close with 4100 instead.
///
/// `repr(C)`: what a delivery reads (the sink, the limit, the mutex and the start of its state)
/// comes first and together, see [`State`].
#[derive(Debug)]
#[repr(C)]
pub struct Outbox {
    sink: Sink,
    capacity: u32,
    /// Every frame is written as it is ([`RAW`]), whatever its opcode: a Server-Sent Events
    /// stream on a raw socket.
    raw: bool,
    // A std mutex: held to queue a frame or for one non-blocking write, never across an await.
    state: Mutex<State>,
    /// Wakes the connection's task: a close request, a socket that was full, or (detached) a
    /// frame for its receiver.
    waker: AtomicWaker,
}

impl AsRef<Outbox> for Outbox {
    fn as_ref(&self) -> &Outbox {
        self
    }
}

/// The reading end of a detached outbox, held through its owner `T` (the outbox itself or the
/// hub's connection that holds it).
#[derive(Debug)]
pub struct Receiver<T> {
    owner: Arc<T>,
}

impl<T: AsRef<Outbox>> Receiver<T> {
    /// Reads the detached outbox held by `owner`.
    pub fn new(owner: Arc<T>) -> Receiver<T> {
        Receiver { owner }
    }

    fn outbox(&self) -> &Outbox {
        (*self.owner).as_ref()
    }

    /// The next text frame, waiting for one (cancel-safe).
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            self.outbox().waker.register(cx.waker());
            match self.try_recv() {
                Some(frame) => Poll::Ready(Some(frame)),
                None if self.outbox().lock().finished => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The frame waiting first, if any and if `take` accepts it (else it stays first).
    pub fn try_recv_if(&mut self, take: impl FnOnce(&Bytes) -> bool) -> Option<Bytes> {
        let accepted = self
            .outbox()
            .lock()
            .frames
            .front()
            .is_some_and(|frame| take(&frame.payload));
        // Only this receiver takes frames: the first one is still the one judged.
        if accepted {
            self.try_recv()
        } else {
            None
        }
    }

    /// A frame already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.outbox().lock().frames.pop_front().map(|f| f.payload)
    }
}

impl Outbox {
    /// An outbox of `capacity` frames written to `sink`.
    pub fn new(sink: Sink, capacity: usize) -> Outbox {
        Outbox {
            sink,
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            // A limit past u32::MAX frames could not be reached in memory anyway.
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            raw: false,
        }
    }

    /// This outbox writing its frames' bytes as they are, with no WebSocket framing (an SSE
    /// stream on a raw socket), and holding them until [`Outbox::release`].
    pub fn raw(mut self) -> Outbox {
        self.raw = true;
        self.lock().held = true;
        self
    }

    /// Puts `head` before every frame queued so far and lets them all be written (call
    /// [`Outbox::flush`] then). For an outbox made with [`Outbox::raw`].
    pub fn release(&self, head: Bytes) {
        let mut state = self.lock();
        let op = if self.raw { RAW } else { opcode::TEXT };
        state.frames.push_front(Frame { op, payload: head });
        state.held = false;
    }

    /// An outbox of `capacity` frames written to `socket`.
    pub fn socket(socket: Arc<TcpStream>, capacity: usize) -> Outbox {
        Outbox::new(Sink::Socket(socket), capacity)
    }

    /// [`Outbox::socket`] whose writes are also added to `bytes_out` (one relaxed add per
    /// `sendmsg`).
    pub fn socket_metered(
        socket: Arc<TcpStream>,
        capacity: usize,
        bytes_out: Arc<std::sync::atomic::AtomicU64>,
    ) -> Outbox {
        Outbox::socket(socket, capacity).metered(bytes_out)
    }

    /// This outbox with its writes also added to `bytes_out` (one relaxed add per write call:
    /// a `sendmsg`, or a batch sealed into TLS records, counted as the frames' bytes).
    pub fn metered(self, bytes_out: Arc<std::sync::atomic::AtomicU64>) -> Outbox {
        self.lock().bytes_out = Some(bytes_out);
        self
    }

    /// An outbox of `capacity` frames read through a [`Receiver`].
    pub fn detached(capacity: usize) -> Outbox {
        Outbox::new(Sink::Detached, capacity)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_or_recover()
    }

    /// Queues a text frame without writing it. A full outbox marks a slow consumer: the
    /// connection is asked to close with 4100 and the frame is dropped.
    pub fn enqueue(&self, frame: &Bytes) -> Queued {
        self.enqueue_op(opcode::TEXT, frame.clone())
    }

    fn enqueue_op(&self, op: u8, payload: Bytes) -> Queued {
        let op = if self.raw { RAW } else { op };
        let mut state = self.lock();
        if state.finished || state.broken || state.sealed || state.closing {
            return Queued::No;
        }
        let first = state.frames.is_empty();
        if !first && state.frames.len() >= self.capacity as usize {
            state.closing = true;
            state.close = Some(CloseRequest {
                code: CloseCode::OverCapacity,
                drain: false,
                farewell: None,
            });
            drop(state);
            self.waker.wake();
            return Queued::No;
        }
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

    /// [`Outbox::push`] for any opcode (pongs and close frames from the transport).
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

    /// Refuses every later frame but those of the closing handshake ([`Outbox::force_push`]):
    /// called once the connection has decided to close, so no event can follow the close frame.
    pub fn seal(&self) {
        self.lock().sealed = true;
    }

    /// Writes what is queued, without waiting; returns whether the outbox is now empty. If the
    /// sink cannot take it all, the connection's task is woken to wait until it can.
    pub fn flush(&self) -> bool {
        match &self.sink {
            Sink::Socket(socket) => {
                let mut state = self.lock();
                let written = socket::write_queued(socket, &mut state, socket::Via::Direct);
                self.flushed(state, written)
            }
            Sink::Tls(socket) => {
                let mut state = self.lock();
                let written = tls::write_queued(socket, &mut state);
                self.flushed(state, written)
            }
            Sink::Detached => {
                self.waker.wake();
                true
            }
        }
    }

    /// [`Outbox::flush`]'s end: whether the write emptied the outbox; if not (the sink is full
    /// or failed, then marked broken), the connection's task is woken once the lock is given
    /// back.
    fn flushed(&self, mut state: MutexGuard<'_, State>, written: io::Result<bool>) -> bool {
        match written {
            Ok(true) => return true,
            Ok(false) => {}
            Err(_) => state.broken = true,
        }
        drop(state);
        self.waker.wake();
        false
    }

    /// For the connection's task: writes what is queued, waiting for the sink to take it.
    /// Ready(Ok) once the outbox is empty; Ready(Err) when the sink failed.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.sink {
            Sink::Socket(socket) => self.poll_write(
                cx,
                |state| socket::write_queued(socket, state, socket::Via::Readiness),
                |cx| socket.poll_write_ready(cx),
            ),
            Sink::Tls(socket) => self.poll_write(
                cx,
                |state| tls::write_queued(socket, state),
                |cx| socket.tcp().poll_write_ready(cx),
            ),
            Sink::Detached => Poll::Ready(Ok(())),
        }
    }

    /// [`Outbox::poll_flush`] for a sink: `write` writes what is queued (`Ok(true)` once all is
    /// out), `ready` registers for the sink's writability.
    fn poll_write(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut State) -> io::Result<bool>,
        mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        loop {
            {
                let mut state = self.lock();
                if state.broken {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                match write(&mut state) {
                    Ok(true) => return Poll::Ready(Ok(())),
                    Ok(false) => {}
                    Err(error) => {
                        state.broken = true;
                        return Poll::Ready(Err(error));
                    }
                }
            }
            // Registers for writability; loops when the sink became writable meanwhile.
            match ready(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Bytes written to the sink so far: a connection whose backlog does not move this is
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
        state.frames.clear();
        drop(state);
        self.waker.wake();
    }

    /// Asks the connection's task to close with `code`. The first request wins.
    pub fn request_close(&self, code: CloseCode, drain: bool) {
        self.request(CloseRequest {
            code,
            drain,
            farewell: None,
        });
    }

    /// Asks the connection's task to send `pusher:error` with `code`, then close with it, after
    /// the frames already queued.
    pub fn close_with_error(&self, code: CloseCode, message: &str) {
        self.request(CloseRequest {
            code,
            drain: true,
            farewell: Some(crate::protocol::server::error(Some(code.code()), message)),
        });
    }

    fn request(&self, request: CloseRequest) {
        let mut state = self.lock();
        if !state.closing {
            state.closing = true;
            state.close = Some(request);
            drop(state);
            self.waker.wake();
        }
    }
}

/// An outbox of `capacity` frames on a loopback socket with small buffers whose peer (returned
/// with it, to keep it open) never reads: it soon takes nothing more.
#[cfg(test)]
pub(crate) async fn unread_socket(capacity: usize) -> (Outbox, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let _ = socket2::SockRef::from(&server).set_send_buffer_size(4096);
    let _ = socket2::SockRef::from(&peer).set_recv_buffer_size(4096);
    (Outbox::socket(Arc::new(server), capacity), peer)
}

#[cfg(test)]
mod tests;
