//! The socket sink: WebSocket frames written straight to a non-blocking `TcpStream`, each
//! frame header built at send time, many frames gathered into one `sendmsg`.

use std::io::{self, IoSlice};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{header_len, State, RAW};
use crate::protocol::ws::{server_header, MAX_SERVER_HEADER};

/// Frames gathered into one `sendmsg`.
pub(super) const FRAMES_PER_WRITE: usize = 64;

/// Up to `headers.len()` queued frames as slices (header, payload) into `slices` (twice as
/// long), the first frame from where the last write stopped; returns how many slices are used.
pub(super) fn gather<'a>(
    state: &'a State,
    headers: &'a mut [[u8; MAX_SERVER_HEADER]],
    slices: &mut [IoSlice<'a>],
) -> usize {
    let mut used = 0;
    let mut skip = state.written;
    for (frame, header) in state.frames.iter().zip(headers.iter_mut()) {
        let header_len = if frame.op == RAW {
            0
        } else {
            server_header(frame.op, frame.payload.len(), header)
        };
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
    used
}

/// One `sendmsg` of up to [`FRAMES_PER_WRITE`] queued frames.
fn send_batch(socket: &TcpStream, state: &State, via: Via) -> io::Result<usize> {
    let mut headers = [[0u8; MAX_SERVER_HEADER]; FRAMES_PER_WRITE];
    let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE * 2];
    let used = gather(state, &mut headers, &mut slices);
    send(socket, &slices[..used], via)
}

/// One write of the one queued frame, from where the last write stopped: a plain `send` of a
/// copy when it is small and not started, else a `sendmsg` of header and payload. A fan-out at a
/// steady rate finds one frame queued: room for one, not for 64 (clearing 64 headers and 128
/// slices was a third of a delivery's user-space instructions), and no batch to gather.
fn send_one(socket: &TcpStream, state: &State, via: Via) -> io::Result<usize> {
    let Some(frame) = state.frames.front() else {
        return Ok(0);
    };
    let mut header = [0u8; MAX_SERVER_HEADER];
    let used = if frame.op == RAW {
        0
    } else {
        server_header(frame.op, frame.payload.len(), &mut header)
    };
    let skip = state.written;
    let whole = used + frame.payload.len();
    if skip == 0 && whole <= CONTIGUOUS_BYTES {
        // Header and payload side by side: one plain `send`, no vector for the kernel to copy
        // in and walk.
        let mut buf = [0u8; CONTIGUOUS_BYTES];
        buf[..used].copy_from_slice(&header[..used]);
        buf[used..whole].copy_from_slice(&frame.payload);
        return send_contiguous(socket, &buf[..whole], via);
    }
    let slices = if skip < used {
        [
            IoSlice::new(&header[skip..used]),
            IoSlice::new(&frame.payload),
        ]
    } else {
        [
            IoSlice::new(&[]),
            IoSlice::new(&frame.payload[skip - used..]),
        ]
    };
    send(socket, &slices, via)
}

/// The largest frame (header included) [`send_one`] copies to send in one piece.
const CONTIGUOUS_BYTES: usize = 512;

/// [`send`] of one buffer: `send(2)`.
fn send_contiguous(socket: &TcpStream, bytes: &[u8], via: Via) -> io::Result<usize> {
    let send = || socket2::SockRef::from(socket).send(bytes);
    match via {
        Via::Readiness => socket.try_io(Interest::WRITABLE, send),
        Via::Direct => send(),
    }
}

/// How a write reaches the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// Through tokio's readiness (`try_io`): a write that would block clears it, so the wait
    /// that follows really waits. [`super::Outbox::poll_flush`] writes this way, just before it
    /// waits for the socket to be writable.
    Readiness,
    /// Straight to the socket: every [`super::Outbox::flush`] (a publisher's write, and the
    /// connection task's own writes that do not wait). Reading the readiness word first would be
    /// a cold cache line per subscriber for nothing: the socket almost always takes the frame,
    /// and when it does not, the task is woken and its `poll_flush` writes through
    /// [`Via::Readiness`], whose write clears the stale readiness before the task waits on it.
    Direct,
}

/// One non-blocking `sendmsg` of `slices`. sendmsg rather than writev: the socket layer
/// directly, without the file layer's position lock and checks (about a tenth of a delivery's
/// kernel time).
fn send(socket: &TcpStream, slices: &[IoSlice<'_>], via: Via) -> io::Result<usize> {
    let sendmsg = || socket2::SockRef::from(socket).send_vectored(slices);
    match via {
        Via::Readiness => socket.try_io(Interest::WRITABLE, sendmsg),
        Via::Direct => sendmsg(),
    }
}

/// Counts `wrote` bytes as sent: drops the frames written in full and remembers how far into
/// the next one the write got.
pub(super) fn advance(state: &mut State, mut wrote: usize) {
    state.sent += wrote as u64;
    if let Some(bytes_out) = &state.bytes_out {
        bytes_out.fetch_add(wrote as u64, std::sync::atomic::Ordering::Relaxed);
    }
    while let Some(front) = state.frames.front() {
        let total = header_len(front.op, front.payload.len()) + front.payload.len();
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
}

/// Writes queued frames with one `sendmsg` per batch until the queue is empty (`Ok(true)`) or
/// the socket is full (`Ok(false)`).
pub(super) fn write_queued(socket: &TcpStream, state: &mut State, via: Via) -> io::Result<bool> {
    if state.broken {
        return Ok(true);
    }
    if state.held {
        return Ok(false);
    }
    while !state.frames.is_empty() {
        let sent = if state.frames.is_single() {
            send_one(socket, state, via)
        } else {
            send_batch(socket, state, via)
        };
        let wrote = match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        advance(state, wrote);
        if state.written > 0 {
            // The socket took part of a frame: it is full.
            return Ok(false);
        }
    }
    Ok(true)
}
