//! A connection as the hub sees it: a socket id, the app key it was opened with, and its
//! outbox ([`crate::outbox`]), which the hub reaches only to queue frames, write them after
//! releasing its lock, and ask for a close.

use std::sync::Arc;

use crate::outbox::{Outbox, Receiver};
use crate::protocol::SocketId;

/// The hub's handle on one connection. Publishing never waits on it: a full outbox asks the
/// connection to close with 4100 instead.
///
/// `repr(C)`, the outbox first: a fan-out reads the `Arc`'s count and the outbox's hot fields,
/// which then share the allocation's first cache lines (see `outbox::State`).
#[derive(Debug)]
#[repr(C)]
pub struct Connection {
    outbox: Outbox,
    socket_id: SocketId,
    /// The app key the connection was opened with (closed when that key is revoked).
    key: Box<str>,
}

/// The reading end of a detached connection's outbox (benchmarks and unit tests).
pub type DetachedOutbox = Receiver<Connection>;

impl AsRef<Outbox> for Connection {
    fn as_ref(&self) -> &Outbox {
        &self.outbox
    }
}

impl Connection {
    /// A detached connection with an outbox of `capacity` frames, read through the returned
    /// receiver.
    pub fn new(socket_id: SocketId, capacity: usize) -> (Arc<Connection>, DetachedOutbox) {
        let conn = Arc::new(Connection::with_outbox(
            socket_id,
            "",
            Outbox::detached(capacity),
        ));
        (conn.clone(), Receiver::new(conn))
    }

    /// A connection opened with app key `key`, whose frames go to `outbox`.
    pub fn with_outbox(socket_id: SocketId, key: &str, outbox: Outbox) -> Connection {
        Connection {
            socket_id,
            key: key.into(),
            outbox,
        }
    }

    /// The connection's outbox.
    #[inline]
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The app key the connection was opened with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The connection's socket id.
    pub fn socket_id(&self) -> SocketId {
        self.socket_id
    }
}
