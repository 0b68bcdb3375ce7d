//! A connection as the hub sees it: a socket id, a bounded outbox and a close request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

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
    outbox: Arc<Queue>,
    // A std mutex: held only to read or set one small value, never across an await.
    close: Mutex<Option<CloseRequest>>,
    close_notify: Notify,
}

/// A connection's outbox: a bounded queue of frames between the hub (many producers) and the
/// connection's task (one consumer). A `VecDeque` behind a mutex held for a push or a pop: it
/// allocates nothing until the first frame and stays a few pointers small while idle (tokio's
/// mpsc channel allocates a 32-slot block up front, about 1 KiB per idle connection).
#[derive(Debug)]
struct Queue {
    // A std mutex: held for one push or pop, never across an await.
    frames: Mutex<VecDeque<Bytes>>,
    ready: Notify,
    /// Set when the consumer is gone: pushes are refused.
    closed: AtomicBool,
    capacity: usize,
}

/// Above this many slots, an emptied queue gives its memory back.
const KEEP_SLOTS: usize = 16;

impl Queue {
    fn pop(&self) -> Option<Bytes> {
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > KEEP_SLOTS {
            frames.shrink_to(KEEP_SLOTS);
        }
        frame
    }
}

/// The receiving end of a connection's outbox, owned by its session.
#[derive(Debug)]
pub struct Outbox {
    queue: Arc<Queue>,
}

impl Outbox {
    /// The next frame to write (waits for one; cancel-safe).
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            // Register for the wake-up before looking, so a push in between is not missed.
            let notified = self.queue.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(frame) = self.queue.pop() {
                return Some(frame);
            }
            notified.await;
        }
    }

    /// A frame already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.queue.pop()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        let mut frames = self.queue.frames.lock().unwrap_or_else(|p| p.into_inner());
        frames.clear();
        frames.shrink_to_fit();
    }
}

impl Connection {
    /// A connection with an outbox of `capacity` frames.
    pub fn new(socket_id: SocketId, capacity: usize) -> (Connection, Outbox) {
        let queue = Arc::new(Queue {
            frames: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
        });
        (
            Connection {
                socket_id,
                key: Box::default(),
                outbox: queue.clone(),
                close: Mutex::new(None),
                close_notify: Notify::new(),
            },
            Outbox { queue },
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
        let queue = &self.outbox;
        if queue.closed.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut frames = queue.frames.lock().unwrap_or_else(|p| p.into_inner());
            if frames.len() >= queue.capacity {
                drop(frames);
                self.request_close(CloseCode::OverCapacity, false);
                return false;
            }
            frames.push_back(frame);
        }
        queue.ready.notify_one();
        true
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
