//! The socket sink: WebSocket frames written straight to a non-blocking `TcpStream`, each
//! frame header built at send time, many frames gathered into one `sendmsg`.

use std::io::{self, IoSlice};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{header_len, State, KEEP_SLOTS, RAW};
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

/// One `sendmsg` of up to `N` queued frames (`S` is `2 * N` slices).
fn send_batch<const N: usize, const S: usize>(
    socket: &TcpStream,
    state: &State,
) -> io::Result<usize> {
    let mut headers = [[0u8; MAX_SERVER_HEADER]; N];
    let mut slices = [IoSlice::new(&[]); S];
    let used = gather(state, &mut headers, &mut slices);
    // sendmsg rather than writev: the socket layer directly, without the file layer's position
    // lock and checks (about a tenth of a delivery's kernel time).
    socket.try_io(Interest::WRITABLE, || {
        socket2::SockRef::from(socket).send_vectored(&slices[..used])
    })
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

/// Writes the one queued frame, not yet started, with one `sendmsg`: `Ok(true)` once it is all
/// out, `Ok(false)` when the socket took part of it or none (full).
fn write_one(socket: &TcpStream, state: &mut State) -> io::Result<bool> {
    let Some(frame) = state.frames.front() else {
        return Ok(true);
    };
    let mut header = [0u8; MAX_SERVER_HEADER];
    let used = if frame.op == RAW {
        0
    } else {
        server_header(frame.op, frame.payload.len(), &mut header)
    };
    let total = used + frame.payload.len();
    let slices = [IoSlice::new(&header[..used]), IoSlice::new(&frame.payload)];
    let sent = socket.try_io(Interest::WRITABLE, || {
        socket2::SockRef::from(socket).send_vectored(&slices)
    });
    let wrote = match sent {
        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => n,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(error) => return Err(error),
    };
    if wrote < total {
        advance(state, wrote);
        return Ok(false);
    }
    state.sent += wrote as u64;
    if let Some(bytes_out) = &state.bytes_out {
        bytes_out.fetch_add(wrote as u64, std::sync::atomic::Ordering::Relaxed);
    }
    state.frames.pop_front();
    if state.frames.capacity() > KEEP_SLOTS {
        state.frames.shrink_to(KEEP_SLOTS);
    }
    Ok(true)
}

/// Writes queued frames with one `sendmsg` per batch until the queue is empty (`Ok(true)`) or
/// the socket is full (`Ok(false)`).
pub(super) fn write_queued(socket: &TcpStream, state: &mut State) -> io::Result<bool> {
    if state.broken {
        return Ok(true);
    }
    if state.held {
        return Ok(false);
    }
    if state.frames.len() == 1 && state.written == 0 {
        // A fan-out at a steady rate finds one frame queued, not yet started: its own short path.
        match write_one(socket, state) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
    while !state.frames.is_empty() {
        // Several frames (or what is left of one): room for 64 at most (clearing 64 headers and
        // 128 slices for a single frame was a third of a delivery's user-space instructions).
        let sent = if state.frames.len() == 1 {
            send_batch::<1, 2>(socket, state)
        } else {
            send_batch::<FRAMES_PER_WRITE, { FRAMES_PER_WRITE * 2 }>(socket, state)
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
    if state.frames.capacity() > KEEP_SLOTS {
        state.frames.shrink_to(KEEP_SLOTS);
    }
    Ok(true)
}
