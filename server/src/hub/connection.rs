//! A connection as the hub sees it: a socket id, a bounded outbox and a close request.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

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

/// The hub's handle on one connection. Publishing never waits on it: a full outbox asks the
/// connection to close with 4100 instead.
#[derive(Debug)]
pub struct Connection {
    socket_id: SocketId,
    /// The app key the connection was opened with (closed when that key is revoked).
    key: Box<str>,
    outbox: mpsc::Sender<Bytes>,
    // A std mutex: held only to read or set one small value, never across an await.
    close: Mutex<Option<CloseRequest>>,
    close_notify: Notify,
}

/// The receiving end of a connection's outbox, owned by its session.
#[derive(Debug)]
pub struct Outbox {
    receiver: mpsc::Receiver<Bytes>,
}

impl Outbox {
    /// The next frame to write.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.receiver.recv().await
    }

    /// A frame already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.receiver.try_recv().ok()
    }
}

impl Connection {
    /// A connection with an outbox of `capacity` frames.
    pub fn new(socket_id: SocketId, capacity: usize) -> (Connection, Outbox) {
        let (outbox, receiver) = mpsc::channel(capacity.max(1));
        (
            Connection {
                socket_id,
                key: Box::default(),
                outbox,
                close: Mutex::new(None),
                close_notify: Notify::new(),
            },
            Outbox { receiver },
        )
    }

    /// The same connection, opened with app key `key`.
    pub fn with_key(mut self, key: &str) -> Connection {
        self.key = key.into();
        self
    }

    /// The app key the connection was opened with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The connection's socket id.
    pub fn socket_id(&self) -> SocketId {
        self.socket_id
    }

    /// Queues a frame. A full outbox marks a slow consumer: the connection is asked to close with
    /// 4100 and the frame is dropped. Returns whether the frame was queued.
    pub fn push(&self, frame: Bytes) -> bool {
        match self.outbox.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.request_close(CloseCode::OverCapacity, false);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
        let mut close = self.close.lock().unwrap_or_else(|p| p.into_inner());
        if close.is_none() {
            *close = Some(request);
            self.close_notify.notify_one();
        }
    }

    /// Resolves once a close has been requested.
    pub async fn close_requested(&self) -> CloseRequest {
        loop {
            if let Some(request) = self.close.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return request;
            }
            self.close_notify.notified().await;
        }
    }
}
