//! Fallback requests forwarded between nodes through Redis (cluster mode).
//!
//! A fallback session lives on one node (its holder, named by a hold in Redis,
//! [`crate::cluster::relay`]); behind a non-sticky load balancer its next requests land on any
//! node. A node that receives a request for a session another live node holds forwards it: it
//! publishes an [`Wire::Ask`] (the request's route, the client address it computed with the
//! trusted proxies applied, `Origin`, the poll's query, the parsed `xhr_send` messages) to the
//! holder's mailbox, and streams back to its client the answer the holder publishes to its own
//! mailbox: a [`Wire::Head`] (status and headers), [`Wire::Part`]s (the lines as the session
//! writes them, numbered), then [`Wire::End`]. The holder answers through the very handler a
//! local request takes ([`super::handle`], never forwarding again): the same binding to the
//! session's address and origin, one reader at a time, the same limits.
//!
//! Bounds: [`max_forwards`] requests forwarded from a node at once and as many served for other
//! nodes (503 beyond); of them, an app's `HERALD_MAX_APP_SHARE` percent each way (503
//! beyond), and per session one stream or poll and [`MAX_SENDS`] sends forwarded from a node
//! at once (a second reader waits up to [`REOPEN_WAIT`] on the forwarding node, holding no
//! place in the pool, then hears 2010 there; a send beyond gets 503): a client cannot fill the
//! pool through one session, and the holder waits for at most one reader per session per
//! other node; [`REPLY_BUFFER`] parts buffered per forwarded request (a beat finding them
//! full is dropped: the parts prove the holder alive; one place more is kept for the end), and
//! [`REPLY_BYTES`] for all of a node's (past either, or on a gap in the numbering, the answer
//! ends and the holder is told to stop); an answer's head
//! within [`HEAD_WAIT`]; then [`POLL_IDLE`] ([`STREAM_IDLE`] for a stream) without a part or a
//! beat (the holder beats every [`POLL_BEAT`], [`STREAM_BEAT`], while it serves the request;
//! the kind travels in the [`Wire::Ask`]) ends it (the holder died). A client that hangs up on the
//! forwarding node: the holder is told ([`Wire::Cancel`]) and drops the request as it would a
//! local hang-up; a holder whose publishes nobody hears (the forwarding node died) does too.
//! An answer cut short (its client too slow, the node's byte budget spent, a part lost in the
//! mailbox, or the holder's publish of a part failing) lost lines the holder took from the
//! session: the holder closes the session as a slow consumer (4100), as on one node, so the
//! client reconnects knowing it (told by a [`Wire::Cancel`] marked `cut`, naming the session:
//! a poll's part lost behind its end is noticed after the holder forgot the request, and the
//! session, if still held there, closes all the same). A forwarding node
//! shutting down ends its forwarded answers at once with `c[4200,...]` (as its own sessions'
//! readers hear) and tells their holders to stop.
//! Every line forwarded crosses Redis once more than on the holder.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::{close_line, Kind, Owner, Sessions, MAX_SENDS, REOPEN_WAIT};
use super::{busy, handle, lines_response, Asked, Op, Payload, Route, Via};
use crate::cluster::Cluster;
use crate::locks::MutexExt;
use crate::node::SharedNode;
use crate::protocol::CloseCode;

/// Requests a node forwards at once, and requests it serves for other nodes at once, when the
/// node has no `HERALD_MAX_CONNECTIONS` (see [`max_forwards`]).
const DEFAULT_MAX_FORWARDS: usize = 16_384;
/// Parts of one forwarded answer received and not yet written to its client.
const REPLY_BUFFER: usize = 64;
/// The bytes of all forwarded answers' parts received on a node and not yet written to their
/// clients: past it, the answer that would go over ends (its client reconnects).
const REPLY_BYTES: usize = 64 * 1024 * 1024;
/// How long a forwarding node waits for the holder's first answer.
const HEAD_WAIT: Duration = Duration::from_secs(10);
/// How often the holder tells a forwarding node that a forwarded poll (or `xhr_send`) it
/// serves is still open (and learns whether that node still listens), when no part went for as
/// long.
const POLL_BEAT: Duration = Duration::from_secs(1);
/// How long a forwarded poll's answer may stay silent (no part, no beat) before it ends: the
/// holder died or cannot publish, or the answer's end was lost. Below a session's expiry (5 s
/// by default): a poll whose end was lost ends on its forwarding node, and pusher-js polls
/// again, before its session on the holder, left without a reader, expires.
const POLL_IDLE: Duration = Duration::from_millis(3_500);
/// [`POLL_BEAT`] for a forwarded stream: a stream ended early buys nothing (pusher-js opens a
/// new session after it), so its beats are rarer (a third of the publishes), and a pub/sub
/// hiccup of a few seconds does not end every forwarded stream at once.
const STREAM_BEAT: Duration = Duration::from_secs(3);
/// [`POLL_IDLE`] for a forwarded stream.
const STREAM_IDLE: Duration = Duration::from_secs(10);

/// How often the holder beats, and how long the forwarding node waits in silence, for a
/// request of kind `op`.
fn pace(op: Op) -> (Duration, Duration) {
    match op {
        Op::Receive(Kind::Stream) => (STREAM_BEAT, STREAM_IDLE),
        Op::Receive(Kind::Poll) | Op::Send => (POLL_BEAT, POLL_IDLE),
    }
}

/// Requests a node forwards at once, and as many it serves for other nodes at once: twice its
/// `max_connections` (each session may have a stream or poll in flight through another node,
/// and be served here for one) and half as much again for `xhr_send`s, or
/// [`DEFAULT_MAX_FORWARDS`] without a capacity. A forwarded request in flight holds a map
/// entry and a channel of [`REPLY_BUFFER`] parts (allocated as parts arrive: a few hundred
/// bytes while it waits), besides its HTTP connection.
pub(super) fn max_forwards(node: &SharedNode) -> usize {
    node.settings
        .max_connections
        .map_or(DEFAULT_MAX_FORWARDS, |max| {
            max.saturating_mul(5).saturating_div(2).saturating_add(8)
        })
}

/// Of [`max_forwards`], how many one app's requests may take (its `HERALD_MAX_APP_SHARE`
/// percent, at least one).
fn app_share(node: &SharedNode) -> usize {
    (max_forwards(node).saturating_mul(usize::from(node.settings.max_app_share)) / 100).max(1)
}

/// What nodes publish to each other's mailboxes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    /// A request, for the session's holder.
    Ask {
        id: u64,
        /// The forwarding node's id (its mailbox).
        from: String,
        op: String,
        key: String,
        server: String,
        session: String,
        addr: Option<IpAddr>,
        origin: Option<String>,
        query: Option<String>,
        n: u64,
        messages: Option<Vec<String>>,
    },
    /// The forwarding node's client went away, or (`cut`) the answer was cut short there:
    /// lines taken from the session were lost, so the holder closes the session (4100).
    Cancel {
        id: u64,
        from: String,
        #[serde(default)]
        cut: bool,
        /// With `cut`: the session's name, closed by name if the holder already finished the
        /// request (a poll's last part lost behind its end).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// The answer's status and headers.
    Head {
        id: u64,
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// Part `seq` (from 0) of the answer's body.
    Part { id: u64, seq: u64, text: String },
    /// The answer ended after `seq` parts.
    End { id: u64, seq: u64 },
    /// The answer is still open (`from`: the holder, told to stop if the forwarding node no
    /// longer waits for it: a lost [`Wire::Cancel`] is repaired by the next beat).
    Beat { id: u64, from: String },
}

/// A forwarded answer, as its forwarding node receives it.
#[derive(Debug)]
enum Reply {
    Head(u16, Vec<(String, String)>),
    Part(u64, String),
    End(u64),
    Beat,
}

/// A request forwarded from here: where its answer goes, its holder and its session.
type Waiting = (mpsc::Sender<Reply>, String, String);

/// The requests in flight between this node and others.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The next forwarded request's id (from a random start, [`start`]).
    next: AtomicU64,
    /// The bytes of the parts buffered in `forwarded`'s channels.
    buffered: AtomicUsize,
    // std locks: map lookups only.
    /// Requests forwarded from here, by id.
    forwarded: Mutex<HashMap<u64, Waiting>>,
    /// Requests served here for other nodes, by (node, id): their token and session.
    served: Mutex<HashMap<(String, u64), (CancellationToken, String)>>,
    /// Forwarded and served requests in flight, per session and per app.
    load: Mutex<Load>,
    /// Told when a forwarded request's slot is given back (a reader waiting for its session's).
    freed: tokio::sync::Notify,
}

/// Requests in flight, counted per session and per app.
#[derive(Debug, Default)]
struct Load {
    /// Requests forwarded from here, per session: (streams and polls, `xhr_send`s).
    sessions: HashMap<String, (usize, usize)>,
    /// Requests forwarded from here, per app key.
    forwarded_apps: HashMap<String, usize>,
    /// Requests served here for other nodes, per app key.
    served_apps: HashMap<String, usize>,
}

/// Why a forwarded request gets no slot.
enum Full {
    /// Its session already has a reader (or [`MAX_SENDS`] sends) forwarded from here.
    Session,
    /// Its app holds its share of the node's forwarding pool.
    App,
}

fn count_down(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// A forwarded request's place in its session's and app's counts, given back when dropped.
struct Slot {
    sessions: Sessions,
    session: String,
    app: String,
    reader: bool,
}

impl Slot {
    /// Takes a slot for a request of session `session` of app `app` (a stream or poll when
    /// `reader`), within the app's share `share`.
    fn take(
        sessions: &Sessions,
        session: &str,
        app: &str,
        reader: bool,
        share: usize,
    ) -> Result<Slot, Full> {
        let mut load = sessions.relay.load.lock_or_recover();
        let app_count = load.forwarded_apps.get(app).copied().unwrap_or(0);
        let (readers, sends) = load.sessions.get(session).copied().unwrap_or((0, 0));
        if (reader && readers >= 1) || (!reader && sends >= MAX_SENDS) {
            return Err(Full::Session);
        }
        if app_count >= share {
            return Err(Full::App);
        }
        let entry = load.sessions.entry(session.to_owned()).or_default();
        if reader {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
        *load.forwarded_apps.entry(app.to_owned()).or_default() += 1;
        Ok(Slot {
            sessions: sessions.clone(),
            session: session.to_owned(),
            app: app.to_owned(),
            reader,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let state = &self.sessions.relay;
        {
            let mut load = state.load.lock_or_recover();
            if let Some(entry) = load.sessions.get_mut(&self.session) {
                if self.reader {
                    entry.0 = entry.0.saturating_sub(1);
                } else {
                    entry.1 = entry.1.saturating_sub(1);
                }
                if *entry == (0, 0) {
                    load.sessions.remove(&self.session);
                }
            }
            count_down(&mut load.forwarded_apps, &self.app);
        }
        state.freed.notify_waiters();
    }
}

/// A slot for a request forwarded from here, or the answer it gets at once: a reader whose
/// session has one forwarded from here waits up to [`REOPEN_WAIT`] for it to end (as the holder
/// would), then hears 2010 from this node, never taking a place in the pool meanwhile; a send
/// past [`MAX_SENDS`] for its session, or any request past its app's share, gets 503.
async fn take_slot(
    node: &SharedNode,
    sessions: &Sessions,
    route: &Route<'_>,
) -> Result<Slot, Response> {
    let reader = !matches!(route.op, Op::Send);
    let (session, share) = (route.name(), app_share(node));
    let deadline = tokio::time::Instant::now() + REOPEN_WAIT;
    loop {
        let freed = sessions.relay.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match Slot::take(sessions, &session, route.key, reader, share) {
            Ok(slot) => return Ok(slot),
            Err(Full::App) => {
                return Err(busy(
                    "Server busy: too many forwarded requests for this app, retry shortly\n",
                ))
            }
            Err(Full::Session) if !reader => {
                return Err(busy(
                    "Too many requests in flight for this session, retry shortly\n",
                ))
            }
            Err(Full::Session) => {
                if tokio::time::timeout_at(deadline, freed).await.is_err() {
                    return Err(lines_response(Body::from(close_line(
                        2010,
                        "Another connection still open",
                    ))));
                }
            }
        }
    }
}

/// Starts this node's relay (cluster mode only): reads its mailbox and refreshes its sessions'
/// holds until the node shuts down.
pub fn start(node: SharedNode, sessions: Sessions) {
    let Some(cluster) = node.cluster.clone() else {
        return;
    };
    let Some(mut mailbox) = cluster.take_mailbox() else {
        return;
    };
    // Ids start at random: after a quick restart under the same node id, a holder still
    // answering one of the previous process's requests does not publish into a new one's.
    sessions
        .relay
        .next
        .store(rand::random::<u64>() >> 1, Ordering::Relaxed);
    let names = sessions.clone();
    let refresh = crate::cluster::relay::refresh_loop(cluster, move || names.names());
    let stop = node.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = refresh => {}
            () = stop.cancelled() => {}
        }
    });
    tokio::spawn(async move {
        while let Some(payload) = mailbox.recv().await {
            let Ok(wire) = serde_json::from_slice::<Wire>(&payload) else {
                tracing::debug!("an unreadable message in the fallback relay's mailbox");
                continue;
            };
            dispatch(&node, &sessions, wire);
        }
    });
}

fn dispatch(node: &SharedNode, sessions: &Sessions, wire: Wire) {
    let state = &sessions.relay;
    let (id, reply) = match wire {
        Wire::Ask {
            id,
            ref from,
            ref key,
            ref server,
            ref session,
            ..
        } => {
            // Registered before its task runs: a Cancel right behind it finds it.
            let token = register(node, state, (from.clone(), id), key, server, session);
            let (node, sessions) = (node.clone(), sessions.clone());
            tokio::spawn(async move { serve(node, sessions, wire, token).await });
            return;
        }
        Wire::Cancel {
            id,
            from,
            cut,
            session,
        } => {
            let served = state.served.lock_or_recover().get(&(from, id)).cloned();
            if let Some((token, served_session)) = served {
                token.cancel();
                if cut {
                    close_cut(sessions, &served_session);
                }
            } else if let (true, Some(session)) = (cut, session) {
                // The request already ended here (its end posted before the cut was noticed):
                // the session, if still held here, lost lines all the same.
                close_cut(sessions, &session);
            }
            return;
        }
        Wire::Head {
            id,
            status,
            headers,
        } => (id, Reply::Head(status, headers)),
        Wire::Part { id, seq, text } => (id, Reply::Part(seq, text)),
        Wire::End { id, seq } => (id, Reply::End(seq)),
        Wire::Beat { id, from } => {
            let waited = state.forwarded.lock_or_recover().contains_key(&id);
            if !waited {
                let Some(cluster) = node.cluster.clone() else {
                    return;
                };
                let cancel = Wire::Cancel {
                    id,
                    from: cluster.node_id().to_owned(),
                    cut: false,
                    session: None,
                };
                tokio::spawn(async move { post(&cluster, &from, &cancel).await });
                return;
            }
            (id, Reply::Beat)
        }
    };
    let size = match &reply {
        Reply::Part(_, text) => text.len(),
        _ => 0,
    };
    let mut forwarded = state.forwarded.lock_or_recover();
    let Some((tx, holder, session)) = forwarded.get(&id) else {
        return;
    };
    let before = state.buffered.fetch_add(size, Ordering::AcqRel);
    if before + size > REPLY_BYTES || !deliver(tx, reply) {
        // Its client reads too slowly (or is gone), or the node holds too much: the answer
        // ends, and the holder is told it was cut (the lines it took are lost).
        state.buffered.fetch_sub(size, Ordering::AcqRel);
        let (holder, session) = (holder.clone(), session.clone());
        forwarded.remove(&id);
        drop(forwarded);
        cut_short(node, holder, id, session);
    }
}

/// A forwarded answer's channel: [`REPLY_BUFFER`] parts and beats, and one place more kept for
/// its end (or head).
fn reply_channel() -> (mpsc::Sender<Reply>, mpsc::Receiver<Reply>) {
    mpsc::channel(REPLY_BUFFER + 1)
}

/// Hands `reply` to its forwarded answer's channel: false when the answer is cut (a part finds
/// [`REPLY_BUFFER`] parts and beats waiting: its client reads too slowly; or the client is
/// gone). A beat finding the channel full is dropped, not a cut: parts waiting prove the holder
/// alive, and nothing was lost. The last place is kept for the end, which always fits.
fn deliver(tx: &mpsc::Sender<Reply>, reply: Reply) -> bool {
    match reply {
        Reply::Beat if tx.capacity() <= 1 => !tx.is_closed(),
        Reply::Part(..) if tx.capacity() <= 1 => false,
        reply => tx.try_send(reply).is_ok(),
    }
}

/// Tells `holder` that the answer to forwarded request `id` for session `session` was cut
/// short here.
fn cut_short(node: &SharedNode, holder: String, id: u64, session: String) {
    let Some(cluster) = node.cluster.clone() else {
        return;
    };
    let cancel = Wire::Cancel {
        id,
        from: cluster.node_id().to_owned(),
        cut: true,
        session: Some(session),
    };
    tokio::spawn(async move { post(&cluster, &holder, &cancel).await });
}

/// Closes session `session` served here because a forwarded answer lost lines taken from it: as
/// a slow consumer on one node (4100), so the client reconnects and knows it.
fn close_cut(sessions: &Sessions, session: &str) {
    if let Some(shared) = sessions.get(session) {
        tracing::debug!("a forwarded fallback answer was cut short: its session closes (4100)");
        shared.close_slow();
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Receive(Kind::Stream) => "xhr_streaming",
        Op::Receive(Kind::Poll) => "xhr",
        Op::Send => "xhr_send",
    }
}

/// Publishes `wire` to node `to`'s mailbox: whether it was heard. Its control messages (head,
/// end, cancel, beat: small, and their loss would leave a request hanging) are urgent, queued
/// past the mailbox's bounds for requests and parts.
async fn post(cluster: &Cluster, to: &str, wire: &Wire) -> bool {
    let Ok(payload) = serde_json::to_vec(wire) else {
        return false;
    };
    let urgent = !matches!(wire, Wire::Ask { .. } | Wire::Part { .. });
    matches!(cluster.post(to, &payload, urgent).await, Ok(true))
}

/// A forwarded request's registration on its forwarding node: removed when dropped, and the
/// holder told to stop unless the answer ended.
struct Forwarded {
    node: SharedNode,
    sessions: Sessions,
    holder: String,
    id: u64,
    /// The session's name (told to the holder with a cut).
    session: String,
    /// Where the answer arrives.
    rx: mpsc::Receiver<Reply>,
    done: bool,
    /// A part went missing: the holder is told the answer was cut.
    cut: bool,
    /// Its place in its session's and app's counts.
    _slot: Slot,
}

impl Forwarded {
    /// The answer ended: nothing to cancel.
    fn finish(&mut self) {
        self.done = true;
    }

    /// A part went missing: the holder is to be told the answer was cut.
    fn mark_cut(&mut self) {
        self.cut = true;
    }

    /// The next part of the answer, within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Reply> {
        let reply = tokio::time::timeout(limit, self.rx.recv()).await.ok()??;
        if let Reply::Part(_, text) = &reply {
            self.sessions
                .relay
                .buffered
                .fetch_sub(text.len(), Ordering::AcqRel);
        }
        Some(reply)
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        let state = &self.sessions.relay;
        state.forwarded.lock_or_recover().remove(&self.id);
        // What arrived and was not taken is no longer held.
        self.rx.close();
        while let Ok(reply) = self.rx.try_recv() {
            if let Reply::Part(_, text) = reply {
                state.buffered.fetch_sub(text.len(), Ordering::AcqRel);
            }
        }
        if self.done {
            return;
        }
        let Some(cluster) = self.node.cluster.clone() else {
            return;
        };
        let cancel = Wire::Cancel {
            id: self.id,
            from: cluster.node_id().to_owned(),
            cut: self.cut,
            session: self.cut.then(|| std::mem::take(&mut self.session)),
        };
        let holder = std::mem::take(&mut self.holder);
        // Dropped outside a runtime (it is shutting down): the holder's beat finds nobody.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                post(&cluster, &holder, &cancel).await;
            });
        }
    }
}

/// Forwards a request to `holder` and answers with what it answers (503 when it cannot be
/// reached or does not answer in time).
pub(super) async fn forward(
    node: &SharedNode,
    sessions: &Sessions,
    holder: &str,
    asked: &Asked<'_>,
    messages: Option<Vec<String>>,
) -> Response {
    let Some(cluster) = node.cluster.as_ref() else {
        return busy("Not in a cluster\n");
    };
    let state = &sessions.relay;
    let route = asked.route;
    let slot = match take_slot(node, sessions, route).await {
        Ok(slot) => slot,
        Err(answer) => return answer,
    };
    let id = state.next.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = reply_channel();
    {
        let mut forwarded = state.forwarded.lock_or_recover();
        if forwarded.len() >= max_forwards(node) {
            return busy("Server busy: too many forwarded requests, retry shortly\n");
        }
        forwarded.insert(id, (tx, holder.to_owned(), route.name()));
    }
    let mut registration = Forwarded {
        node: node.clone(),
        sessions: sessions.clone(),
        holder: holder.to_owned(),
        id,
        session: route.name(),
        rx,
        done: false,
        cut: false,
        _slot: slot,
    };
    let ask = Wire::Ask {
        id,
        from: cluster.node_id().to_owned(),
        op: op_name(route.op).to_owned(),
        key: route.key.to_owned(),
        server: route.server.to_owned(),
        session: route.session.to_owned(),
        addr: asked.owner.addr,
        origin: asked.origin.clone(),
        query: asked.query.clone(),
        n: asked.number,
        messages,
    };
    tracing::debug!(
        op = op_name(route.op),
        holder,
        "fallback request forwarded to its session's node"
    );
    if !post(cluster, holder, &ask).await {
        registration.finish();
        return busy("The session's node cannot be reached, retry shortly\n");
    }
    let Some(Reply::Head(status, headers)) = registration.next(HEAD_WAIT).await else {
        return busy("The session's node did not answer, retry shortly\n");
    };
    let shutdown = node.shutdown.clone();
    let (_, idle) = pace(route.op);
    let body = futures_util::stream::unfold(
        (registration, 0u64, false),
        move |(mut registration, seq, ended)| {
            let shutdown = shutdown.clone();
            async move {
                if ended {
                    return None;
                }
                loop {
                    let reply = tokio::select! {
                        reply = registration.next(idle) => reply,
                        // This node shuts down: its client hears 4200 (as a local session's
                        // reader would) and the holder is told to stop (the registration ends).
                        () = shutdown.cancelled() => {
                            let code = CloseCode::ReconnectNow;
                            let line = close_line(code.code(), code.reason());
                            return Some((Ok(line), (registration, seq, true)));
                        }
                    };
                    match reply {
                        Some(Reply::Beat) => {}
                        Some(Reply::Part(got, text)) if got == seq => {
                            return Some((
                                Ok::<_, Infallible>(Bytes::from(text)),
                                (registration, seq + 1, false),
                            ));
                        }
                        Some(Reply::End(got)) if got == seq => {
                            registration.finish();
                            return None;
                        }
                        // A part went missing (the mailbox dropped it): the lines it held are
                        // lost.
                        Some(Reply::Part(..) | Reply::End(_)) => {
                            registration.mark_cut();
                            return None;
                        }
                        // A second head, silence, or the answer dropped as too slow.
                        _ => return None,
                    }
                }
            }
        },
    );
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Whether a header of the holder's answer is passed on (the forwarding node sets CORS itself).
fn passed_on(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "vary" | "access-control-allow-origin" | "content-length" | "transfer-encoding"
    )
}

/// Registers a request served here for another node (`served`: its node and id): its token, or
/// `None` when it is refused (the pool or its app's share is full, or the id is already served:
/// a node restarted under the same id reusing it, the request in progress keeps its entry).
fn register(
    node: &SharedNode,
    state: &State,
    served_key: (String, u64),
    key: &str,
    server: &str,
    session: &str,
) -> Option<CancellationToken> {
    let mut served = state.served.lock_or_recover();
    let mut load = state.load.lock_or_recover();
    let app_count = load.served_apps.get(key).copied().unwrap_or(0);
    if served.contains_key(&served_key)
        || served.len() >= max_forwards(node)
        || app_count >= app_share(node)
    {
        return None;
    }
    let token = CancellationToken::new();
    let name = format!("{key}/{server}/{session}");
    served.insert(served_key, (token.clone(), name));
    *load.served_apps.entry(key.to_owned()).or_default() += 1;
    Some(token)
}

/// Removes a request served for another node from the registry when it ends.
struct Served<'a> {
    state: &'a super::relay::State,
    key: (String, u64),
    /// Its app's key (its count of requests served here).
    app: String,
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        self.state.served.lock_or_recover().remove(&self.key);
        count_down(
            &mut self.state.load.lock_or_recover().served_apps,
            &self.app,
        );
    }
}

/// Serves a request another node forwarded (`wire` is an [`Wire::Ask`]), publishing the answer
/// to its mailbox until it ends, the other node cancels it, or nobody hears it.
async fn serve(node: SharedNode, sessions: Sessions, wire: Wire, token: Option<CancellationToken>) {
    let Wire::Ask {
        id,
        from,
        op,
        key,
        server,
        session,
        addr,
        origin,
        query,
        n,
        messages,
    } = wire
    else {
        return;
    };
    let _served = token.is_some().then(|| Served {
        state: &sessions.relay,
        key: (from.clone(), id),
        app: key.clone(),
    });
    let Some(cluster) = node.cluster.clone() else {
        return;
    };
    let registered = token.is_some();
    let token = token.unwrap_or_default();
    let path = format!("/app/{key}/{server}/{session}/{op}");
    let (every, _) = Route::parse(&path).map_or(pace(Op::Send), |route| pace(route.op));
    let response = match Route::parse(&path) {
        _ if !registered => busy("Server busy: too many forwarded requests, retry shortly\n"),
        None => (StatusCode::NOT_FOUND, "Not found\n").into_response(),
        Some(route) => {
            let payload = match (route.op, messages) {
                (Op::Send, Some(messages)) => Payload::Messages(messages),
                (Op::Send, None) => Payload::Messages(Vec::new()),
                _ => Payload::Body(Body::empty()),
            };
            let asked = Asked {
                route: &route,
                method: Method::POST,
                query,
                owner: Owner {
                    addr,
                    origin: origin.as_deref().map(Box::from),
                },
                origin,
                number: n,
            };
            tokio::select! {
                response = handle(&node, &sessions, asked, payload, Via::Relay) => response,
                () = token.cancelled() => return,
            }
        }
    };
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| passed_on(name))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let head = Wire::Head {
        id,
        status: response.status().as_u16(),
        headers,
    };
    if !post(&cluster, &from, &head).await {
        return;
    }
    let mut body = response.into_body().into_data_stream();
    let mut seq = 0;
    let mut beat = tokio::time::interval(every);
    beat.reset();
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            () = token.cancelled() => return,
            _ = beat.tick() => {
                let beat = Wire::Beat { id, from: cluster.node_id().to_owned() };
                if !post(&cluster, &from, &beat).await {
                    return;
                }
                continue;
            }
        };
        let Some(Ok(chunk)) = chunk else { break };
        let part = Wire::Part {
            id,
            seq,
            text: String::from_utf8_lossy(&chunk).into_owned(),
        };
        if !post(&cluster, &from, &part).await {
            // The forwarding node is gone (or Redis is): the lines this part took from the
            // session are lost, so the session closes as a slow consumer's would (4100).
            close_cut(&sessions, &format!("{key}/{server}/{session}"));
            return;
        }
        // A part says as much as a beat.
        beat.reset();
        seq += 1;
    }
    post(&cluster, &from, &Wire::End { id, seq }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_answer_ends_before_its_session_expires_and_survives_two_lost_beats() {
        let expiry = crate::config::FallbackSettings::default().expiry;
        let (beat, idle) = pace(Op::Receive(Kind::Poll));
        assert!(idle < expiry, "{idle:?} against {expiry:?}");
        assert!(idle > beat * 3, "{idle:?} against {beat:?}");
        assert_eq!(pace(Op::Send), (beat, idle));
    }

    #[test]
    fn a_forwarded_stream_beats_less_often_and_waits_longer_than_a_poll() {
        let (poll_beat, poll_idle) = pace(Op::Receive(Kind::Poll));
        let (beat, idle) = pace(Op::Receive(Kind::Stream));
        assert!(beat >= poll_beat * 3, "{beat:?} against {poll_beat:?}");
        assert!(idle > poll_idle, "{idle:?} against {poll_idle:?}");
        assert!(idle > beat * 3, "{idle:?} against {beat:?}");
    }

    #[test]
    fn a_full_answer_drops_beats_and_keeps_room_for_its_end() {
        let (tx, mut rx) = reply_channel();
        assert!(deliver(&tx, Reply::Head(200, Vec::new())));
        for seq in 0..REPLY_BUFFER as u64 - 1 {
            assert!(deliver(&tx, Reply::Part(seq, "a".to_owned())), "part {seq}");
        }
        // Full of parts: a beat is dropped (the holder is alive), the answer goes on.
        assert!(deliver(&tx, Reply::Beat));
        // A part more is a cut: its client reads too slowly.
        assert!(!deliver(&tx, Reply::Part(99, "b".to_owned())));
        // The end still fits.
        assert!(deliver(&tx, Reply::End(REPLY_BUFFER as u64 - 1)));
        let mut parts = 0;
        while let Ok(reply) = rx.try_recv() {
            match reply {
                Reply::Part(..) => parts += 1,
                Reply::Beat => panic!("a beat was queued in a full channel"),
                Reply::End(seq) => assert_eq!(seq, REPLY_BUFFER as u64 - 1),
                Reply::Head(..) => {}
            }
        }
        assert_eq!(parts, REPLY_BUFFER - 1);
    }
}
