//! One fallback session's task and what its requests share with it.
//!
//! The task owns the [`Session`] (the protocol, exactly as over WebSocket) and the connection's
//! detached outbox. Requests reach it through [`Shared`]: `xhr_send` appends the client's
//! messages to a small bounded inbox; a stream or poll attaches itself as the reader, and the
//! task writes lines to it (`o` once per session, `a[...]` batches of what the outbox holds, `h`
//! heartbeats, one `c[code,"reason"]` to close). Between requests, frames wait in the outbox,
//! which bounds them as for a socket (full: closed as a slow consumer, 4100).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, Stream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::hub::Connection;
use crate::locks::MutexExt;
use crate::node::{Node, SharedNode};
use crate::outbox::{CloseRequest, Receiver};
use crate::protocol::CloseCode;
use crate::transport::admit::Admitted;
use crate::transport::session::Session;

/// Messages (the elements of `xhr_send` bodies) waiting for the task, and their bytes: past
/// either, a send waits for room (at most [`SEND_WAIT`]).
const MAX_INBOX: usize = 128;
const MAX_INBOX_BYTES: usize = 512 * 1024;
/// How long the task lets a client message wait for others sent at the same time: pusher-js
/// sends each message in a request of its own, numbered (`n`), and concurrent requests may
/// arrive out of order; those arriving within this window are handled in their order.
const SETTLE: Duration = Duration::from_millis(15);
/// How long an `xhr_send` waits for room in a full inbox before it is answered 503.
const SEND_WAIT: Duration = Duration::from_secs(5);
/// Lines handed to a request's response and not yet taken by it.
const LINES_IN_FLIGHT: usize = 2;
/// The largest `a[...]` line (more waits for the next line or poll).
const LINE_BYTES: usize = 64 * 1024;
/// The most a poll answers with, in UTF-16 code units as written (JSON-escaped): pusher-js's
/// buffer limit ([`STREAM_UNITS`]) applies to a poll's answer too. Frames past it wait for the
/// next poll (the first frame of an answer goes whatever its length, or it would wait forever).
const POLL_UNITS: usize = STREAM_UNITS;
/// pusher-js reopens its stream once it has read more than this many UTF-16 code units of it
/// (`MAX_BUFFER_LENGTH` in its `http_request.ts`, checked when no partial line is left) by
/// aborting the request, and whatever was written after that point is lost with it. So a stream
/// past it gets nothing more (not even `h`): its frames wait in the outbox for the reopened one.
const STREAM_UNITS: usize = 256 * 1024;
/// How long a closed session waits for a stream or poll to hear its `c` line (its node slot is
/// held meanwhile).
const LINGER: Duration = Duration::from_secs(1);
/// How long a stream or poll waits for the session's live reader to go away (pusher-js reopens a
/// stream by aborting the old request, then opening a new one) before it is refused 2010.
pub(super) const REOPEN_WAIT: Duration = Duration::from_secs(1);
/// `xhr_send` requests of one session being read or waiting for room; past it, 503 at once.
pub(super) const MAX_SENDS: usize = 16;
/// Client messages handled before the task yields.
const MESSAGES_PER_YIELD: usize = 32;
/// The most messages one `xhr_send` body may hold.
pub(super) const MAX_SEND_MESSAGES: usize = MAX_INBOX;

/// Whether a request streams (`xhr_streaming`) or polls (`xhr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Stream,
    Poll,
}

/// This node's fallback sessions, by `{key}/{server}/{session}`. Every entry is an admitted
/// connection (quota and node capacity bound them) or one closing for at most [`LINGER`].
/// With them, the requests forwarded to and from other nodes ([`super::relay`]).
#[derive(Debug, Default, Clone)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<Box<str>, Arc<Shared>>>>,
    pub(super) relay: Arc<super::relay::State>,
}

impl Sessions {
    pub(super) fn get(&self, name: &str) -> Option<Arc<Shared>> {
        self.map.lock_or_recover().get(name).cloned()
    }

    /// Registers a new session, unless one of that name is already there (returned).
    pub(super) fn insert_new(&self, name: &str, shared: Arc<Shared>) -> Result<(), Arc<Shared>> {
        let mut map = self.map.lock_or_recover();
        if let Some(existing) = map.get(name) {
            return Err(existing.clone());
        }
        map.insert(name.into(), shared);
        Ok(())
    }

    fn remove(&self, name: &str, shared: &Arc<Shared>) {
        let mut map = self.map.lock_or_recover();
        if map.get(name).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            map.remove(name);
        }
    }

    /// The names of the sessions held (their holds are refreshed in the cluster).
    pub(super) fn names(&self) -> Vec<String> {
        self.map
            .lock_or_recover()
            .keys()
            .map(|name| name.to_string())
            .collect()
    }

    /// Sessions held (tests and the live view).
    pub fn len(&self) -> usize {
        self.map.lock_or_recover().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request that reads the session's lines.
struct Reader {
    kind: Kind,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct Link {
    /// Client messages with their request's number.
    inbox: VecDeque<(u64, String)>,
    inbox_bytes: usize,
    /// When the oldest message of the inbox arrived.
    first_at: Option<Instant>,
    /// A stream or poll that arrived, for the task to take.
    attach: Option<Reader>,
    /// The latest reader: live while the task (or `attach`) holds its sender and its request
    /// has not gone away.
    live: Option<mpsc::WeakSender<Bytes>>,
    /// A request arrived since the task last looked.
    seen: bool,
    /// The session is closing: sends are refused, a reader may still hear the close.
    closing: bool,
    /// The task is gone.
    ended: bool,
}

/// What a session's requests share with its task.
pub(super) struct Shared {
    conn: Arc<Connection>,
    /// Who opened the session: only requests from there reach it.
    owner: Owner,
    /// `xhr_send` requests in flight.
    sends: AtomicUsize,
    /// A reader's request went away.
    released: Notify,
    link: Mutex<Link>,
    /// Wakes the task (a request arrived, or a response took a line or went away).
    waker: AtomicWaker,
    /// Wakes sends waiting for room in the inbox.
    room: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("socket_id", &self.conn.socket_id())
            .finish_non_exhaustive()
    }
}

/// The client that opened a session: its address (after trusted proxies) and `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) addr: Option<IpAddr>,
    pub(super) origin: Option<Box<str>>,
}

/// Why a stream or poll was not attached.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AttachRefused {
    /// The session is gone.
    Gone,
    /// Another stream or poll is still open (2010).
    Open,
}

/// One `xhr_send` in flight for a session (counted against [`MAX_SENDS`]).
pub(super) struct SendSlot(Arc<Shared>);

impl Drop for SendSlot {
    fn drop(&mut self) {
        self.0.sends.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why an `xhr_send` was not taken.
pub(super) enum SendRefused {
    /// The session is closing or gone (404).
    Gone,
    /// Its inbox stayed full (503).
    Busy,
}

/// A response body: the lines the task hands to one request.
pub(super) struct Lines {
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

impl Stream for Lines {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(line)) => {
                // Room for the next line.
                self.shared.waker.wake();
                Poll::Ready(Some(Ok(line)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // The client went away (or the response ended): the task detaches it.
        self.rx.close();
        self.shared.waker.wake();
        self.shared.released.notify_waiters();
    }
}

impl Shared {
    pub(super) fn new(conn: Arc<Connection>, owner: Owner) -> Arc<Shared> {
        Arc::new(Shared {
            conn,
            owner,
            sends: AtomicUsize::new(0),
            released: Notify::new(),
            link: Mutex::new(Link::default()),
            waker: AtomicWaker::new(),
            room: Notify::new(),
        })
    }

    /// Closes the session as a slow consumer (4100, its backlog dropped): lines taken from it
    /// were lost on their way to the client.
    pub(super) fn close_slow(&self) {
        self.conn
            .outbox()
            .request_close(crate::protocol::CloseCode::OverCapacity, false);
    }

    /// Whether a request from `owner` may reach this session.
    pub(super) fn owned_by(&self, owner: &Owner) -> bool {
        self.owner == *owner
    }

    /// Counts one more `xhr_send` in flight; `None` past [`MAX_SENDS`].
    pub(super) fn send_slot(self: &Arc<Self>) -> Option<SendSlot> {
        let before = self.sends.fetch_add(1, Ordering::AcqRel);
        let slot = SendSlot(self.clone());
        (before < MAX_SENDS).then_some(slot)
    }

    /// Attaches a stream or poll as the session's reader, once no other is live (waiting at
    /// most [`REOPEN_WAIT`] for one to go away).
    pub(super) async fn attach(self: &Arc<Self>, kind: Kind) -> Result<Lines, AttachRefused> {
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_attach(kind) {
                Err(AttachRefused::Open) => {}
                done => return done,
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.try_attach(kind);
            }
        }
    }

    /// Attaches a stream or poll unless the session is gone or another reader is live.
    pub(super) fn try_attach(self: &Arc<Self>, kind: Kind) -> Result<Lines, AttachRefused> {
        let mut link = self.link.lock_or_recover();
        if link.ended {
            return Err(AttachRefused::Gone);
        }
        let pending = link.attach.as_ref().is_some_and(|r| !r.tx.is_closed());
        let held = link
            .live
            .as_ref()
            .and_then(mpsc::WeakSender::upgrade)
            .is_some_and(|tx| !tx.is_closed());
        if pending || held {
            return Err(AttachRefused::Open);
        }
        let (tx, rx) = mpsc::channel(LINES_IN_FLIGHT);
        link.live = Some(tx.downgrade());
        link.attach = Some(Reader { kind, tx });
        link.seen = true;
        drop(link);
        self.waker.wake();
        Ok(Lines {
            rx,
            shared: self.clone(),
        })
    }

    /// Hands the messages of one `xhr_send` to the session, waiting (bounded) for room.
    pub(super) async fn send(&self, number: u64, messages: Vec<String>) -> Result<(), SendRefused> {
        let bytes: usize = messages.iter().map(String::len).sum();
        let deadline = Instant::now() + SEND_WAIT;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut link = self.link.lock_or_recover();
                if link.closing || link.ended {
                    return Err(SendRefused::Gone);
                }
                let fits = link.inbox.len() + messages.len() <= MAX_INBOX
                    && link.inbox_bytes + bytes <= MAX_INBOX_BYTES;
                if link.inbox.is_empty() || fits {
                    if !messages.is_empty() && link.first_at.is_none() {
                        link.first_at = Some(Instant::now());
                    }
                    link.inbox.extend(messages.into_iter().map(|m| (number, m)));
                    link.inbox_bytes += bytes;
                    link.seen = true;
                    drop(link);
                    self.waker.wake();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(SendRefused::Busy);
            }
        }
    }

    /// What the requests brought since the last look: the client messages once the oldest has
    /// waited [`SETTLE`], in their requests' order (else when to look again).
    fn take(&self, now: Instant) -> News {
        let mut link = self.link.lock_or_recover();
        let seen = std::mem::take(&mut link.seen);
        let attach = link.attach.take();
        match link.first_at {
            Some(first) if now < first + SETTLE => News {
                inbox: VecDeque::new(),
                attach,
                seen,
                settle: Some(first + SETTLE),
            },
            _ => {
                link.inbox_bytes = 0;
                link.first_at = None;
                let mut inbox = std::mem::take(&mut link.inbox);
                inbox.make_contiguous().sort_by_key(|(number, _)| *number);
                News {
                    inbox,
                    attach,
                    seen,
                    settle: None,
                }
            }
        }
    }

    fn has_news(&self) -> bool {
        let link = self.link.lock_or_recover();
        link.seen || link.attach.is_some()
    }
}

/// What the requests brought since the task last looked.
struct News {
    /// Client messages, in their requests' order.
    inbox: VecDeque<(u64, String)>,
    attach: Option<Reader>,
    /// A request arrived.
    seen: bool,
    /// When to look again for messages still settling.
    settle: Option<Instant>,
}

/// How the session ended: the text to give its reader (none when it expired) and the reader
/// attached then.
struct Exit {
    close: Option<Bytes>,
    reader: Option<Reader>,
}

/// Runs an admitted session until it closes or expires, then gives everything back and leaves
/// the registry.
pub(super) async fn run(
    node: SharedNode,
    sessions: Sessions,
    name: Box<str>,
    shared: Arc<Shared>,
    admitted: Admitted,
) {
    let session = Session::new(
        node.clone(),
        admitted.app_id.clone(),
        admitted.app_hub.clone(),
        admitted.conn.clone(),
    );
    tracing::debug!(app_id = %admitted.app_id, socket_id = %shared.conn.socket_id(), "fallback session opened");
    let ran = std::panic::AssertUnwindSafe(Box::pin(serve(&node, &shared, session)))
        .catch_unwind()
        .await;
    let exit = ran.unwrap_or_else(|_| {
        tracing::error!(app_id = %admitted.app_id, "fallback session task panicked");
        shared.conn.outbox().finish();
        Exit {
            close: None,
            reader: None,
        }
    });
    tracing::debug!(app_id = %admitted.app_id, socket_id = %shared.conn.socket_id(), "fallback session closed");
    // The node slot is kept until the session leaves the registry (a closed session lingers).
    admitted.end_keeping_node_slot(&node);
    if let Some(text) = exit.close {
        // Shutting down: only a request already there hears the close (no lingering).
        let linger = if node.shutdown.is_cancelled() {
            Duration::ZERO
        } else {
            LINGER
        };
        deliver_close(&shared, exit.reader, text, linger).await;
    }
    shared.link.lock_or_recover().ended = true;
    shared.room.notify_waiters();
    sessions.remove(&name, &shared);
    node.hub.release_connection();
    if let Some(cluster) = node.cluster.clone() {
        // Requests to it on other nodes are no longer forwarded here.
        if let Err(error) = cluster.release_hold(&name).await {
            tracing::debug!(%error, "fallback session hold not released");
        }
    }
}

/// Gives the close line to the reader attached, or to the next one within `linger`.
async fn deliver_close(shared: &Shared, mut reader: Option<Reader>, text: Bytes, linger: Duration) {
    let deadline = Instant::now() + linger;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        if let Some(current) = reader.take() {
            if current.tx.try_send(text.clone()).is_ok() {
                return;
            }
        }
        let arrived = std::future::poll_fn(|cx| {
            shared.waker.register(cx.waker());
            if let Some(next) = shared.link.lock_or_recover().attach.take() {
                return Poll::Ready(Some(next));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await;
        match arrived {
            Some(next) => reader = Some(next),
            None => return,
        }
    }
}

/// `a[...]`: the frames as JSON strings.
pub(crate) fn push_batch(line: &mut BytesMut, frames: &[Bytes]) {
    line.put_slice(b"a[");
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            line.put_u8(b',');
        }
        let text = String::from_utf8_lossy(frame);
        // A string always serializes.
        let _ = serde_json::to_writer((&mut *line).writer(), text.as_ref());
    }
    line.put_slice(b"]\n");
}

/// Takes queued frames from the outbox up to `budget` bytes (at least one).
fn take_frames(frames: &mut Receiver<Connection>, budget: usize) -> Vec<Bytes> {
    let mut taken = Vec::new();
    let mut bytes = 0;
    while bytes < budget {
        match frames.try_recv() {
            Some(frame) => {
                bytes += frame.len();
                taken.push(frame);
            }
            None => break,
        }
    }
    taken
}

/// Writes a poll's answer to `line` (which may hold `o` already): `a[...]` lines of the queued
/// frames, within [`POLL_UNITS`] as written.
fn poll_answer(frames: &mut Receiver<Connection>, line: &mut BytesMut) {
    let mut left = POLL_UNITS.saturating_sub(utf16_units(line));
    let mut first = true;
    loop {
        let batch = take_poll_frames(frames, &mut left, first);
        if batch.is_empty() {
            break;
        }
        first = false;
        push_batch(line, &batch);
    }
}

/// Takes queued frames for one `a[...]` line of a poll's answer: up to [`LINE_BYTES`], and
/// within `left` UTF-16 code units as [`push_batch`] writes them, which it lowers; the first
/// frame of the answer (`first`) whatever its length.
fn take_poll_frames(
    frames: &mut Receiver<Connection>,
    left: &mut usize,
    first: bool,
) -> Vec<Bytes> {
    // `a[` and `]\n`.
    const BRACKETS: usize = 4;
    let mut taken: Vec<Bytes> = Vec::new();
    let (mut bytes, mut units) = (0, BRACKETS);
    while bytes < LINE_BYTES {
        let any = first && taken.is_empty();
        let room = left.saturating_sub(units);
        let mut cost = 0;
        let frame = frames.try_recv_if(|frame| {
            // The frame as a JSON string, and its comma.
            cost = escaped_units(frame) + 1;
            any || cost <= room
        });
        let Some(frame) = frame else { break };
        bytes += frame.len();
        units += cost;
        taken.push(frame);
    }
    if !taken.is_empty() {
        *left = left.saturating_sub(units);
    }
    taken
}

/// The length in UTF-16 code units of UTF-8 text `text` written as a JSON string (quotes
/// included), as [`push_batch`] writes it.
pub(crate) fn escaped_units(text: &[u8]) -> usize {
    let escapes: usize = text
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 1,
            0x00..=0x1f => 5,
            _ => 0,
        })
        .sum();
    utf16_units(text) + escapes + 2
}

/// The length of UTF-8 text in UTF-16 code units, as a browser's `responseText.length` counts it.
pub(crate) fn utf16_units(text: &[u8]) -> usize {
    text.iter()
        .map(|&b| match b {
            0x80..=0xbf => 0,
            0xf0..=0xff => 2,
            _ => 1,
        })
        .sum()
}

/// `c[code,"reason"]`.
pub(crate) fn close_line(code: u16, reason: &str) -> Bytes {
    let reason = serde_json::to_string(reason).unwrap_or_else(|_| "\"\"".to_owned());
    Bytes::from(format!("c[{code},{reason}]\n"))
}

/// The session's loop: feeds the inbox to the session, hands queued frames to the reader, beats
/// the heart, and ends on a close request, a silent client or expiry.
async fn serve(node: &Node, shared: &Shared, mut session: Session) -> Exit {
    let timers = &node.settings.fallback;
    // A client with a stream or poll open sends `[]` on every `h` and pings after its activity
    // timeout: silent for the activity and pong timeouts, it is gone (4201, as over WebSocket).
    let silence = node.settings.activity_timeout + node.settings.pong_timeout;
    let outbox = shared.conn.outbox();
    let mut frames = Receiver::new(shared.conn.clone());
    let mut reader: Option<Reader> = None;
    let mut opened = false;
    let mut last_seen = Instant::now();
    // When the reader was attached or last written to, or when the last one went away.
    let mut since = Instant::now();
    // What the current reader, if a stream, has been written: see STREAM_UNITS.
    let mut written = 0;
    let timer = tokio::time::sleep_until(since + timers.expiry);
    tokio::pin!(timer);
    let close = loop {
        let now = Instant::now();
        let News {
            inbox,
            attach,
            seen,
            settle,
        } = shared.take(now);
        if seen {
            last_seen = now;
        }
        if let Some(new) = attach {
            // Attached only once the earlier reader has gone.
            reader = Some(new);
            since = now;
            written = 0;
        }
        if !inbox.is_empty() {
            for (handled, (_, text)) in inbox.iter().enumerate() {
                session.on_text(text);
                if session.pending() {
                    // Boxed, as on WebSocket: only a session with deferred work pays for it.
                    Box::pin(session.drive()).await;
                }
                if (handled + 1) % MESSAGES_PER_YIELD == 0 {
                    tokio::task::yield_now().await;
                }
            }
            drop(inbox);
            shared.room.notify_waiters();
        }
        if let Some(request) = outbox.close_request() {
            break request;
        }
        if reader.as_ref().is_some_and(|r| r.tx.is_closed()) {
            // The client dropped its stream or poll: it comes back at once (a reopened stream)
            // or has gone (pusher-js disconnects by aborting its request).
            reader = None;
            since = Instant::now();
        }
        let mut answered = false;
        if let Some(current) = &reader {
            if (outbox.backlog() > 0 || !opened) && !full(current, written) {
                if let Ok(permit) = current.tx.try_reserve() {
                    let mut line = BytesMut::new();
                    if !opened {
                        line.put_slice(b"o\n");
                        opened = true;
                    }
                    match current.kind {
                        Kind::Stream => {
                            let batch = take_frames(&mut frames, LINE_BYTES);
                            if !batch.is_empty() {
                                push_batch(&mut line, &batch);
                            }
                        }
                        Kind::Poll => poll_answer(&mut frames, &mut line),
                    }
                    if current.kind == Kind::Stream {
                        written += utf16_units(&line);
                    }
                    permit.send(line.freeze());
                    since = Instant::now();
                    // A poll answers once; the client polls again at once.
                    answered = current.kind == Kind::Poll;
                }
            }
        }
        if answered {
            reader = None;
        }
        let now = Instant::now();
        let deadline = match &reader {
            Some(current) => {
                if now >= last_seen + silence {
                    break CloseRequest {
                        code: CloseCode::PongNotReceived,
                        drain: false,
                        farewell: None,
                    };
                }
                let interval = match current.kind {
                    Kind::Stream => timers.heartbeat,
                    Kind::Poll => timers.poll_wait,
                };
                if now >= since + interval {
                    // A stream whose client reads nothing skips the beat (its outbox fills), as
                    // does a full one (its client is reopening it).
                    let sent = !full(current, written)
                        && current.tx.try_send(Bytes::from_static(b"h\n")).is_ok();
                    since = now;
                    if sent && current.kind == Kind::Stream {
                        written += 2;
                    }
                    if sent && current.kind == Kind::Poll {
                        reader = None;
                    }
                }
                match &reader {
                    Some(_) => (since + interval).min(last_seen + silence),
                    None => now + timers.expiry,
                }
            }
            None => {
                let expires = since.max(last_seen) + timers.expiry;
                if now >= expires {
                    outbox.finish();
                    session.finish();
                    return Exit {
                        close: None,
                        reader: None,
                    };
                }
                expires
            }
        };
        let deadline = settle.map_or(deadline, |settle| settle.min(deadline));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        std::future::poll_fn(|cx| {
            outbox.register(cx);
            shared.waker.register(cx.waker());
            if outbox.close_request().is_some() || shared.has_news() {
                return Poll::Ready(());
            }
            if let Some(current) = &reader {
                if current.tx.is_closed()
                    || ((outbox.backlog() > 0 || !opened)
                        && current.tx.capacity() > 0
                        && !full(current, written))
                {
                    return Poll::Ready(());
                }
            }
            timer.as_mut().poll(cx)
        })
        .await;
    };
    // Nothing published from now on is delivered.
    outbox.seal();
    shared.link.lock_or_recover().closing = true;
    shared.room.notify_waiters();
    if !close.drain {
        outbox.discard_backlog();
    }
    let mut text = BytesMut::new();
    let mut last = take_frames(&mut frames, usize::MAX);
    last.extend(close.farewell);
    if opened && !last.is_empty() {
        push_batch(&mut text, &last);
    }
    text.put_slice(&close_line(close.code.code(), close.code.reason()));
    outbox.finish();
    session.finish();
    let attach = shared.link.lock_or_recover().attach.take();
    // A full stream is being reopened: the close line goes to the new one.
    let reader = reader.filter(|current| !full(current, written));
    Exit {
        close: Some(text.freeze()),
        reader: attach.or(reader),
    }
}

/// Whether `reader` is a stream past what pusher-js reads of one (STREAM_UNITS).
fn full(reader: &Reader, written: usize) -> bool {
    reader.kind == Kind::Stream && written > STREAM_UNITS
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
