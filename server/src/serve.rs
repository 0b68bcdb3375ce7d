//! The HTTP/1.1 accept loop for the public listener (WebSocket, REST, health, dashboard).
//!
//! Herald serves HTTP/1.1 with hyper directly rather than through `axum::serve`, whose
//! protocol detection wraps every socket in a private type: after a WebSocket upgrade, the
//! transport needs the plain `TcpStream` back (see [`crate::transport::ws`]) to write frames
//! without a per-connection buffer.
//!
//! Both listeners (the public one and `HERALD_ADMIN_BIND`'s) run this loop, so both get the same
//! slow-client protections: a header read timeout, and a [`GuardedBody`] around every request
//! body that fails the body (and so ends the connection) when it does not arrive in time.
//!
//! On the public listener, a connection whose first request is a Mercure subscribe leaves hyper
//! before hyper sees it (see [`sniff`]), so that its SSE stream costs what a WebSocket costs.
//!
//! With TLS (`HERALD_TLS_CERT`), every connection first completes its handshake ([`Handshakes`]):
//! its ClientHello within a short deadline and the whole within a longer one, with a bounded
//! number in progress per client address and per listener; when the listener's bound is
//! reached, a new connection evicts the oldest handshake in progress, so a flood of silent
//! connections cannot lock fresh clients out. hyper then
//! serves the `TlsStream` as it serves a plain one, and the upgrade hands the transport the TCP
//! stream with its rustls state.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use crate::locks::MutexExt;
use crate::transport::mercure::Direct;

mod sniff;

/// Serves `service` until `shutdown` resolves; then stops accepting, lets requests in flight
/// finish (idle keep-alive connections are closed) and returns once every HTTP connection is
/// done, or after `limits.drain` (what is still open then is left to the process's exit).
/// Upgraded sockets are not HTTP connections any more: they are not waited for here.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    tls: Option<Handshakes>,
    direct: Option<Direct>,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A TLS handshake holds the connection's TLS state before any timeout of hyper's
        // applies: a bounded number of them at once, each within its deadlines.
        let handshake = match &tls {
            None => None,
            Some(tls) => match tls.admit(remote.ip()) {
                Some(slot) => Some((tls.clone(), slot)),
                None => {
                    tracing::debug!(%remote, "too many TLS handshakes in progress from this address: connection closed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Cancelled when the connection's first request head is read (by hyper): until then
        // one header timeout bounds the sniff and hyper together (`run_connection`).
        let headed = CancellationToken::new();
        let first_head = headed.clone();
        let service = service
            .clone()
            .map_request(move |request: Request<Incoming>| {
                first_head.cancel();
                let mut request = request.map(|body| {
                    if body.is_end_stream() {
                        // No body (GET, upgrades): nothing to guard, nothing to box.
                        Body::empty()
                    } else {
                        Body::new(GuardedBody::new(body, limits.body))
                    }
                });
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            });
        let service = TowerToHyperService::new(service);
        let stopping = stopping.clone();
        let direct = direct.clone();
        connections.spawn(async move {
            let Some((tls, slot)) = handshake else {
                let head = (Instant::now() + limits.header_timeout, headed);
                // A Mercure subscribe as the first request leaves hyper (see `sniff.rs`).
                let stream = match &direct {
                    None => stream,
                    Some(direct) => {
                        let sniffed = tokio::select! {
                            sniffed = sniff::plain(stream, direct, limits.header_timeout) => sniffed,
                            () = stopping.cancelled() => return,
                        };
                        match sniffed {
                            Some(stream) => stream,
                            None => return,
                        }
                    }
                };
                return run_connection(TokioIo::new(stream), service, limits, stopping, head)
                    .await;
            };
            let accepted = tokio::select! {
                accepted = tokio::time::timeout(tls.timeout, tls.handshake(stream)) => accepted,
                () = slot.evicted.cancelled() => {
                    tracing::debug!("TLS handshake evicted by a newer connection");
                    return;
                }
                () = stopping.cancelled() => return,
            };
            drop(slot);
            match accepted {
                Ok(Some(stream)) => {
                    let head = (Instant::now() + limits.header_timeout, headed);
                    let stream = match &direct {
                        None => stream,
                        Some(direct) => {
                            let sniffed = tokio::select! {
                                sniffed = sniff::tls(stream, direct, limits.header_timeout) => sniffed,
                                () = stopping.cancelled() => return,
                            };
                            match sniffed {
                                Some(stream) => stream,
                                None => return,
                            }
                        }
                    };
                    run_connection(TokioIo::new(stream), service, limits, stopping, head).await;
                }
                Ok(None) => {}
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(limits.drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests were still in flight when shutdown went on");
    }
}

/// Serves one connection's requests (and its upgrade) until it ends or `stopping` is
/// cancelled; then lets the request in flight finish.
///
/// `head`: the deadline of the connection's first request head (one header timeout from the
/// connection's start, the sniff's wait included) and the token cancelled when hyper has read
/// it. hyper's own header timer starts when hyper starts reading, so without this deadline a
/// client trickling its request line would get the sniff's wait and then hyper's whole timeout
/// again; past it the connection is closed, as hyper closes a slow one.
async fn run_connection<I, S>(
    io: I,
    service: S,
    limits: Limits,
    stopping: CancellationToken,
    head: (Instant, CancellationToken),
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Send,
    S::Future: Send,
{
    let connection = hyper::server::conn::http1::Builder::new()
        // A client gets this long to send a request's headers (slow-loris protection).
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's read buffer grows to this (default about 400 KiB): it bounds a request
        // head, and what each connection holds besides the body it is reading.
        .max_buf_size(READ_BUFFER_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let (deadline, headed) = head;
    let first_head_late = async {
        tokio::select! {
            () = headed.cancelled() => std::future::pending::<()>().await,
            () = tokio::time::sleep_until(deadline) => {}
        }
    };
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            return;
        }
        () = first_head_late => {
            tracing::debug!("no request head within the header timeout: connection closed");
            return;
        }
        () = stopping.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// TLS on a listener: the server configuration, and the bounds on handshakes in progress.
#[derive(Clone)]
pub struct Handshakes {
    config: Arc<rustls::ServerConfig>,
    hello_timeout: Duration,
    timeout: Duration,
    max: usize,
    per_ip: usize,
    trusted: Arc<[ipnet::IpNet]>,
    pending: Arc<Mutex<Pending>>,
}

/// The handshakes in progress on a listener.
#[derive(Default)]
struct Pending {
    next: u64,
    /// Oldest first: each handshake's address key and the token that evicts it.
    by_age: BTreeMap<u64, (IpAddr, CancellationToken)>,
    /// How many handshakes each address key has in progress.
    per_ip: HashMap<IpAddr, usize>,
}

impl Pending {
    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let (ip, evict) = self.by_age.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(evict)
    }
}

/// A handshake's place among those in progress, given back when dropped.
struct Slot {
    pending: Arc<Mutex<Pending>>,
    id: u64,
    /// Cancelled when a newer connection takes this place.
    evicted: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pending.lock_or_recover().remove(self.id);
    }
}

/// The key a client's handshakes are counted under: its IPv4 address, or its IPv6 /64 (one
/// host usually holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// The most sealed TLS records a connection keeps waiting for its socket (rustls's default is
/// 64 KiB); frames beyond it wait in the outbox, under its slow-consumer bound.
pub const TLS_SEND_BUFFER_BYTES: usize = 16 * 1024;

impl Handshakes {
    /// Handshakes with `tls`'s configuration, under `settings`'s deadlines and bounds; peers in
    /// `trusted` (the proxies) are bound by the listener's bound only, not the per-address one.
    pub fn new(
        tls: &crate::tls::Tls,
        settings: &crate::config::TlsSettings,
        trusted: &[ipnet::IpNet],
    ) -> Handshakes {
        Handshakes {
            config: tls.acceptor().config().clone(),
            hello_timeout: settings.hello_timeout,
            timeout: settings.handshake_timeout,
            max: settings.max_handshakes.max(1),
            per_ip: settings.max_handshakes_per_ip.max(1),
            trusted: trusted.into(),
            pending: Arc::default(),
        }
    }

    /// A place for a handshake from `ip`: `None` when the address has its share in progress.
    /// When the listener's bound is reached, the oldest handshake in progress is evicted.
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let key = address_key(ip);
        let mut pending = self.pending.lock_or_recover();
        let trusted = self.trusted.iter().any(|net| net.contains(&ip));
        if !trusted && pending.per_ip.get(&key).copied().unwrap_or(0) >= self.per_ip {
            return None;
        }
        while pending.by_age.len() >= self.max {
            let Some((&oldest, _)) = pending.by_age.first_key_value() else {
                break;
            };
            if let Some(evict) = pending.remove(oldest) {
                evict.cancel();
            }
        }
        let id = pending.next;
        pending.next += 1;
        let evicted = CancellationToken::new();
        pending.by_age.insert(id, (key, evicted.clone()));
        *pending.per_ip.entry(key).or_default() += 1;
        Some(Slot {
            pending: self.pending.clone(),
            id,
            evicted,
        })
    }

    /// The handshake on `stream`: its ClientHello within the hello deadline (the caller bounds
    /// the whole). `None` when it fails (logged).
    async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let hello =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = match tokio::time::timeout(self.hello_timeout, hello).await {
            Ok(Ok(start)) => start,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!("no TLS ClientHello in time");
                return None;
            }
        };
        let accept = start.into_stream_with(self.config.clone(), |conn| {
            conn.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES));
        });
        match accept.await {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::debug!(%error, "TLS handshake failed");
                None
            }
        }
    }
}

/// The largest read buffer of one HTTP connection, so also the largest request head.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The client's address, as handlers see it.
pub type Remote = ConnectInfo<SocketAddr>;

/// How long a client may take over its requests, and how long shutdown waits for them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To send a request's headers (slow-loris protection).
    pub header_timeout: Duration,
    /// To send a request's body.
    pub body: BodyLimits,
    /// How long shutdown waits for requests in flight: half of `HERALD_SHUTDOWN_GRACE_SECS`,
    /// like the sockets, so the outbox and the usage counters keep the other half.
    pub drain: Duration,
}

impl Limits {
    /// The limits `settings` asks for.
    pub fn from_settings(settings: &crate::config::Settings) -> Limits {
        Limits {
            drain: settings.shutdown_grace / 2,
            header_timeout: settings.header_timeout,
            body: BodyLimits {
                timeout: settings.body_timeout,
                grace: BODY_RATE_GRACE,
                min_bytes_per_second: BODY_MIN_BYTES_PER_SECOND,
            },
        }
    }
}

/// How long a client may take to send a request body: the whole body within `timeout` of the
/// headers, and, past the first `grace`, at least `min_bytes_per_second` on average (a stalled
/// body is cut off long before `timeout`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The whole body's deadline, from the end of the headers.
    pub timeout: Duration,
    /// How long a body may take before the minimum rate applies.
    pub grace: Duration,
    /// The slowest average rate accepted after `grace`.
    pub min_bytes_per_second: u64,
}

/// The grace before the minimum body rate applies.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(2);
/// The minimum body rate after the grace: 16 KiB/s.
pub const BODY_MIN_BYTES_PER_SECOND: u64 = 16 * 1024;

impl BodyLimits {
    /// When a body that started at `start` and has delivered `received` bytes is late.
    fn due(&self, start: Instant, received: u64) -> Instant {
        let by_rate = self.grace
            + Duration::from_secs_f64(received as f64 / self.min_bytes_per_second.max(1) as f64);
        start + by_rate.min(self.timeout)
    }
}

/// The error a [`GuardedBody`] ends with when its client is too slow.
pub use crate::budget::BodyTooSlow;

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTooSlow`] when the client does not send it within
    /// its [`BodyLimits`]. hyper then closes the connection, since the body was not read to its
    /// end. The timer is armed only once the client keeps the reader waiting.
    pub struct GuardedBody {
        #[pin]
        inner: Incoming,
        #[pin]
        timer: Option<Sleep>,
        start: Instant,
        received: u64,
        limits: BodyLimits,
        late: bool,
    }
}

impl GuardedBody {
    fn new(inner: Incoming, limits: BodyLimits) -> GuardedBody {
        GuardedBody {
            inner,
            timer: None,
            start: Instant::now(),
            received: 0,
            limits,
            late: false,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.late {
            return Poll::Ready(Some(Err(BodyTooSlow.into())));
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| {
                let frame = frame?;
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                }
                Ok(frame)
            }));
        }
        // The client keeps us waiting: check (and arm) the deadline.
        loop {
            let due = this.limits.due(*this.start, *this.received);
            let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                this.timer.set(Some(tokio::time::sleep_until(due)));
                continue;
            };
            ready!(timer.poll(cx));
            if Instant::now() >= due {
                *this.late = true;
                return Poll::Ready(Some(Err(BodyTooSlow.into())));
            }
            // Bytes came since the timer was set: the body is due later.
            this.timer
                .as_mut()
                .as_pin_mut()
                .expect("armed above")
                .reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
