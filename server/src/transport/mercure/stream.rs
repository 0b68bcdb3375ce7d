//! One SSE subscriber: its admission (the app's connection quota, cluster-wide in a cluster, and
//! its share of the node, as for a WebSocket), and its task, which moves the updates queued in
//! its detached outbox to the response body.
//!
//! The task hands the body at most [`CHUNKS_IN_FLIGHT`] chunks; a client that does not read
//! leaves its outbox to fill, which closes it as a slow consumer (as a WebSocket's: 4100), and
//! the task ends, giving back its registration, quota slot and node slot. It also ends when its
//! token's `exp` passes, when the app's connections are closed (shutdown, a disabled app), and
//! when the client goes away.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::Slot;
use crate::hub::{AppHub, ConnectRefusal, Connection};
use crate::meters::{Live, Transport};
use crate::node::SharedNode;
use crate::outbox::{Outbox, Receiver};
use crate::tenants::{AppRef, AppUsage};

use super::registry::AppMercure;
use crate::transport::admit::take_quota;

/// Chunks handed to the response body and not yet taken by it.
const CHUNKS_IN_FLIGHT: usize = 1;
/// The most bytes of updates gathered into one chunk (a lone update goes as it is, shared
/// with every other subscriber's outbox, not copied): a subscriber that does not read holds
/// about three chunks of its own (the task's, the channel's, hyper's) besides its outbox.
const CHUNK_BYTES: usize = 16 * 1024;

/// Why a subscriber was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The node is full or stopping (503).
    Node,
    /// The app's connection quota (429).
    Quota,
    /// The app was disabled or deleted meanwhile (403 / 404).
    App,
}

/// A subscriber registered with its app (as a connection: quota, shutdown, live view).
pub(super) struct Admitted {
    pub(super) conn: Arc<Connection>,
    app_hub: Arc<AppHub>,
    app_id: String,
    usage: Arc<AppUsage>,
    socket_id: String,
    node: SharedNode,
    _slot: Option<Slot>,
    /// The subscriber in `/metrics`' count by transport (`sse`), given back when dropped.
    _live: Live,
}

impl Admitted {
    /// The app's usage counters.
    pub(super) fn usage(&self) -> &AppUsage {
        &self.usage
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conn.outbox().finish();
        self.app_hub.disconnect(&self.conn, &[], None, &[], false);
        self.usage.disconnected();
        self.node.taps.emit(
            &self.app_id,
            "disconnection",
            None,
            Some(&self.socket_id),
            || "Mercure subscriber disconnected".to_owned(),
        );
        self.node.hub.release_connection();
    }
}

/// Admits an SSE subscriber of `app` whose updates go to `outbox`.
pub(super) async fn admit(
    node: &SharedNode,
    app: &AppRef,
    origin: Option<&str>,
    outbox: Outbox,
) -> Result<Admitted, Refusal> {
    if node.shutdown.is_cancelled() {
        return Err(Refusal::Node);
    }
    if !node.hub.reserve_connection(node.settings.max_connections) {
        node.meters.refused("node_capacity");
        return Err(Refusal::Node);
    }
    let app_hub = node.hub.app(&app.id);
    let conn = Arc::new(Connection::with_outbox(
        node.hub.next_socket_id(),
        "",
        outbox,
    ));
    let slot = match take_quota(node, app, &app_hub, &conn).await {
        Ok(slot) => slot,
        Err(ConnectRefusal::Quota) => return Err(Refusal::Quota),
        Err(ConnectRefusal::NodeShare) => return Err(Refusal::Node),
    };
    let usage = node.usage.app(&app.id);
    usage.connected();
    let socket_id = conn.socket_id().to_string();
    node.taps.emit(
        &app.id,
        "connection",
        None,
        Some(&socket_id),
        || match origin {
            Some(origin) => format!("Mercure subscriber connected from origin {origin}"),
            None => "Mercure subscriber connected (no Origin header)".to_owned(),
        },
    );
    let admitted = Admitted {
        conn,
        app_hub,
        app_id: app.id.clone(),
        usage,
        socket_id,
        node: node.clone(),
        _slot: slot,
        _live: node.meters.live(Transport::Sse),
    };
    // Shutdown may have begun meanwhile, after the sweep that closes connections.
    if node.shutdown.is_cancelled() {
        return Err(Refusal::Node);
    }
    // So may the app have been disabled or deleted (the sweep that closes its connections
    // may have run before this one registered).
    if !node.apps.by_id(&app.id).is_some_and(|app| app.enabled) {
        return Err(Refusal::App);
    }
    Ok(admitted)
}

/// What the task needs besides the connection.
pub(super) struct Run {
    pub(super) admitted: Admitted,
    pub(super) app: Arc<AppMercure>,
    /// The registration (`None`: a replay cut at its bound; the stream ends after it).
    pub(super) subscription: Option<u64>,
    pub(super) heartbeat: Duration,
    /// When the token expires (monotonic).
    pub(super) expires: Option<Instant>,
}

/// A response body fed by the task; the sender is the task's.
pub(super) fn channel() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok)));
    (tx, Body::from_stream::<_>(Box::pin(stream) as BoxStream))
}

type BoxStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, Infallible>> + Send>>;

/// What the outbox has for the task.
enum Next {
    Chunk(Bytes),
    Closed,
}

/// The updates waiting (up to [`CHUNK_BYTES`], at least one), or the close request, waiting
/// for either.
async fn next(frames: &mut Receiver<Connection>, conn: &Connection) -> Next {
    std::future::poll_fn(|cx| {
        conn.outbox().register(cx);
        if conn.outbox().close_request().is_some() {
            return Poll::Ready(Next::Closed);
        }
        let Some(first) = frames.try_recv() else {
            return Poll::Pending;
        };
        if first.len() >= CHUNK_BYTES {
            return Poll::Ready(Next::Chunk(first));
        }
        let Some(second) = frames.try_recv() else {
            return Poll::Ready(Next::Chunk(first));
        };
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES.min(first.len() + second.len()));
        chunk.extend_from_slice(&first);
        chunk.extend_from_slice(&second);
        while chunk.len() < CHUNK_BYTES {
            match frames.try_recv() {
                Some(more) => chunk.extend_from_slice(&more),
                None => break,
            }
        }
        Poll::Ready(Next::Chunk(chunk.freeze()))
    })
    .await
}

/// Resolves once a close is requested.
async fn closing(conn: &Connection) {
    std::future::poll_fn(|cx| {
        conn.outbox().register(cx);
        if conn.outbox().close_request().is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Sends `chunk` to the body unless a close or the token's expiry comes first (a client that
/// does not read blocks here); whether the stream goes on.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    conn: &Connection,
    chunk: Bytes,
    expiry: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> bool {
    tokio::select! {
        biased;
        sent = tx.send(chunk) => sent.is_ok(),
        () = closing(conn) => false,
        () = expiry => false,
    }
}

/// The subscriber's task, until its stream ends.
pub(super) async fn run(run: Run, tx: mpsc::Sender<Bytes>) {
    let Run {
        admitted,
        app,
        subscription,
        heartbeat,
        expires,
    } = run;
    let conn = admitted.conn.clone();
    let mut frames = Receiver::new(conn.clone());
    let expiry = async {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    // The first bytes open the stream for the client at once (headers and all).
    if !send(&tx, &conn, Bytes::from_static(b":\n\n"), &mut expiry).await {
        finish(&app, subscription, admitted);
        return;
    }
    let mut beat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let chunk = tokio::select! {
            next = next(&mut frames, &conn) => match next {
                Next::Chunk(chunk) => chunk,
                Next::Closed => break,
            },
            _ = beat.tick() => Bytes::from_static(b":\n"),
            () = &mut expiry => break,
            () = tx.closed() => break,
        };
        if subscription.is_none() && conn.outbox().backlog() == 0 {
            // A cut replay: what it queued goes out, then the stream ends.
            let _ = send(&tx, &conn, chunk, &mut expiry).await;
            break;
        }
        if !send(&tx, &conn, chunk, &mut expiry).await {
            break;
        }
        beat.reset();
    }
    finish(&app, subscription, admitted);
}

pub(super) fn finish(app: &AppMercure, subscription: Option<u64>, admitted: Admitted) {
    if let Some(id) = subscription {
        app.unsubscribe(id);
    }
    drop(admitted);
}
