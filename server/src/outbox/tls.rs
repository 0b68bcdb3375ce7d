//! The TLS sink: WebSocket frames encrypted per connection. TLS records cannot be shared between
//! subscribers, so this sink gives up the socket sink's shared bytes: whoever flushes gathers the
//! queued frames (header + shared payload) into one vectored write through the connection's
//! rustls writer, which seals them into records, then writes the records with non-blocking
//! `send`s. rustls keeps at most its buffer limit (`serve::TLS_SEND_BUFFER_BYTES`, 16 KiB, set at
//! the handshake) of sealed records per connection;
//! what does not fit waits in the outbox as frames, under the same slow-consumer bound as a
//! plain socket's.
//!
//! The connection's rustls state is shared by its reader (the connection's task, decrypting what
//! the client sends) and whoever writes: it sits behind its own mutex, always taken after the
//! outbox's state lock and never held across an await.

use std::io::{self, IoSlice, Read, Write};
use std::sync::{Mutex, MutexGuard};

use rustls::ServerConnection;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::socket::{advance, gather, FRAMES_PER_WRITE};
use super::State;
use crate::locks::MutexExt;
use crate::protocol::ws::MAX_SERVER_HEADER;

/// A TCP stream with the rustls state of its TLS session.
#[derive(Debug)]
pub struct TlsSocket {
    stream: TcpStream,
    conn: Mutex<ServerConnection>,
}

/// Non-blocking reads and writes on the TCP stream, as rustls's `Read` / `Write`.
struct Tcp<'a>(&'a TcpStream);

impl Read for Tcp<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Tcp<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_io(Interest::WRITABLE, || {
            socket2::SockRef::from(self.0).send(buf)
        })
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_io(Interest::WRITABLE, || {
            socket2::SockRef::from(self.0).send_vectored(bufs)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsSocket {
    /// The socket of a completed handshake.
    pub fn new(stream: TcpStream, conn: ServerConnection) -> TlsSocket {
        TlsSocket {
            stream,
            conn: Mutex::new(conn),
        }
    }

    /// The TCP stream (for readiness, and the TCP close).
    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    fn conn(&self) -> MutexGuard<'_, ServerConnection> {
        self.conn.lock_or_recover()
    }

    /// Reads decrypted bytes without waiting: `Ok(0)` at the end of the stream (the client's
    /// `close_notify` or the TCP close), `WouldBlock` when nothing is there yet. Records the
    /// read produces for the peer (alerts, key updates) go out with the next flush.
    pub fn read_plain(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.conn();
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
            if conn.read_tls(&mut Tcp(&self.stream))? == 0 {
                return Ok(0);
            }
            conn.process_new_packets()
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        }
    }

    /// Whether decrypted bytes wait in the session (read after the upgrade, when hyper's
    /// reads may have left some there without the socket being readable again).
    pub fn has_plaintext(&self) -> bool {
        self.conn()
            .process_new_packets()
            .map_or(true, |state| state.plaintext_bytes_to_read() > 0)
    }

    /// Queues the `close_notify` alert and writes what the session holds, without waiting.
    pub fn close_notify(&self) {
        let mut conn = self.conn();
        conn.send_close_notify();
        while conn.wants_write() {
            match conn.write_tls(&mut Tcp(&self.stream)) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}

/// Seals queued frames into TLS records and writes them until the queue and the session's
/// records are all out (`Ok(true)`) or the socket is full (`Ok(false)`).
pub(super) fn write_queued(socket: &TlsSocket, state: &mut State) -> io::Result<bool> {
    if state.broken {
        return Ok(true);
    }
    if state.held {
        return Ok(false);
    }
    let mut conn = socket.conn();
    loop {
        // Records already sealed go first: they hold the earlier frames.
        while conn.wants_write() {
            match conn.write_tls(&mut Tcp(&socket.stream)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if state.frames.is_empty() {
            break;
        }
        let mut headers = [[0u8; MAX_SERVER_HEADER]; FRAMES_PER_WRITE];
        let mut slices: [IoSlice<'_>; FRAMES_PER_WRITE * 2] =
            std::array::from_fn(|_| IoSlice::new(&[]));
        let used = gather(state, &mut headers, &mut slices);
        // Takes what fits under the session's buffer limit.
        let sealed = conn.writer().write_vectored(&slices[..used])?;
        if sealed == 0 {
            // Nothing fits and nothing is waiting to go out: the session cannot send.
            return Err(io::ErrorKind::WriteZero.into());
        }
        advance(state, sealed);
    }
    Ok(true)
}
