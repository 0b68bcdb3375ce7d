//! `Meters`: the node's own counters and histograms for `/metrics`, the figures that exist
//! nowhere else (refusals, REST and webhook latencies, bytes written, Redis round trips, live
//! connections by transport). Everything that already exists (connections per app, channels,
//! subscriptions, message counts) is read from the hub and the usage counters at scrape time
//! by `metrics`, not counted twice.
//!
//! A leaf module (no import of ours), so any layer may hold a handle. One `Meters` per node
//! (an `Arc` in `Node`), never a static: tests run several nodes in one process.
//!
//! Cost: the delivery path pays one `Relaxed` `fetch_add` per `sendmsg` batch (bytes out);
//! everything else here is on cold paths (a refusal, a REST request, a webhook request, a
//! heartbeat).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// A label set of one label: (name, value).
pub type Label = [(&'static str, String); 1];

/// How a client is connected. `Sse` is Mercure's subscriber stream, counted once that
/// transport admits through `Meters::live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket (`/app/{key}`).
    Ws,
    /// pusher-js's `xhr_streaming` fallback.
    XhrStreaming,
    /// pusher-js's `xhr_polling` fallback.
    XhrPolling,
    /// A Mercure server-sent events subscription.
    Sse,
}

impl Transport {
    /// Every transport, in the order of the exported series.
    pub const ALL: [Transport; 4] = [
        Transport::Ws,
        Transport::XhrStreaming,
        Transport::XhrPolling,
        Transport::Sse,
    ];

    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::XhrStreaming => "xhr_streaming",
            Transport::XhrPolling => "xhr_polling",
            Transport::Sse => "sse",
        }
    }
}

/// REST latency buckets: 0.5 ms to ~4 s.
fn rest_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// The node's counters (see the module doc).
#[derive(Debug)]
pub struct Meters {
    /// Bytes written to WebSocket sockets (frame headers included), shared with every socket
    /// outbox: one relaxed add per `sendmsg`.
    pub bytes_out: Arc<AtomicU64>,
    /// Live connections by transport, as `Transport::ALL`. Raised and lowered only by
    /// [`Live`], whose drop gives its count back, so the figure follows the guards.
    live: [AtomicI64; 4],
    /// Handshakes refused, by close code (`code`).
    pub handshake_refusals: Family<Label, Counter>,
    /// Quota and limit refusals, by `kind`.
    pub refusals: Family<Label, Counter>,
    /// Webhook requests, by `outcome` (`delivered`, `failed`, `gone`).
    pub webhook_deliveries: Family<Label, Counter>,
    /// Webhook request latency, in seconds.
    pub webhook_seconds: Histogram,
    /// REST requests, by `route` and `status`.
    pub rest_requests: Family<[(&'static str, String); 2], Counter>,
    /// REST request latency, by `route`, in seconds.
    pub rest_seconds: Family<Label, Histogram, fn() -> Histogram>,
    /// Cluster mode: Redis round trips (the heartbeat and the watchdog's PINGs), in seconds.
    pub redis_seconds: Histogram,
    /// When the node started (monotonic).
    pub started: tokio::time::Instant,
    /// The trigger routes' series for a 200, looked up once each: a trigger then skips two
    /// label-set hashes and three allocations (issue 19). Handles of the same series as
    /// `rest_seconds` and `rest_requests` (prometheus-client's metrics share their value).
    hot: [std::sync::OnceLock<(Histogram, Counter)>; HOT_ROUTES.len()],
}

/// The routes whose answers with a 200 have their series kept at hand ([`Meters::rest`]).
const HOT_ROUTES: [&str; 2] = ["/apps/{app_id}/events", "/apps/{app_id}/batch_events"];

impl Default for Meters {
    fn default() -> Meters {
        Meters::new()
    }
}

impl Meters {
    fn empty() -> Meters {
        Meters {
            bytes_out: Arc::default(),
            live: Default::default(),
            handshake_refusals: Family::default(),
            refusals: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            rest_requests: Family::default(),
            rest_seconds: Family::new_with_constructor(rest_histogram),
            redis_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            started: tokio::time::Instant::now(),
            hot: Default::default(),
        }
    }
}

/// The close codes a handshake is refused with (their series exist from the start, at 0).
const HANDSHAKE_CODES: [u16; 9] = [4001, 4003, 4004, 4005, 4006, 4007, 4008, 4100, 4200];

/// The kinds of quota and limit refusals.
pub const REFUSAL_KINDS: [&str; 8] = [
    "daily_quota",
    "connection_quota",
    "app_share_of_node",
    "node_capacity",
    "client_event_rate",
    "subscribe_rate",
    "rest_events_rate",
    "rest_reads_rate",
];

/// A webhook request's outcomes: answered 2xx, failed (to be retried or kept as failed), or
/// dropped because its endpoint or app is gone.
const WEBHOOK_OUTCOMES: [&str; 3] = ["delivered", "failed", "gone"];

impl Meters {
    /// Counts a REST request answered on `route` (its pattern, `/apps/{app_id}/events`) with
    /// `status`, after `seconds`.
    pub fn rest(&self, route: &str, status: u16, seconds: f64) {
        if status == 200 {
            if let Some(at) = HOT_ROUTES.iter().position(|hot| *hot == route) {
                let (histogram, counter) = self.hot[at].get_or_init(|| {
                    let histogram = self
                        .rest_seconds
                        .get_or_create(&[("route", route.to_owned())])
                        .clone();
                    let counter = self
                        .rest_requests
                        .get_or_create(&[("route", route.to_owned()), ("status", "200".into())])
                        .clone();
                    (histogram, counter)
                });
                histogram.observe(seconds);
                counter.inc();
                return;
            }
        }
        self.rest_seconds
            .get_or_create(&[("route", route.to_owned())])
            .observe(seconds);
        self.rest_requests
            .get_or_create(&[("route", route.to_owned()), ("status", status.to_string())])
            .inc();
    }

    /// Meters whose fixed label sets already have their series (at 0), so a dashboard's
    /// `rate()` has a start and the exported names are there from the first scrape.
    pub fn new() -> Meters {
        let meters = Meters::empty();
        for code in HANDSHAKE_CODES {
            drop(
                meters
                    .handshake_refusals
                    .get_or_create(&[("code", code.to_string())]),
            );
        }
        for kind in REFUSAL_KINDS {
            drop(meters.refusals.get_or_create(&[("kind", kind.to_owned())]));
        }
        for outcome in WEBHOOK_OUTCOMES {
            drop(
                meters
                    .webhook_deliveries
                    .get_or_create(&[("outcome", outcome.to_owned())]),
            );
        }
        meters
    }

    /// Counts a refused handshake with close code `code`.
    pub fn handshake_refused(&self, code: u16) {
        self.handshake_refusals
            .get_or_create(&[("code", code.to_string())])
            .inc();
    }

    /// Counts a quota or limit refusal of `kind`.
    pub fn refused(&self, kind: &'static str) {
        self.refusals
            .get_or_create(&[("kind", kind.to_owned())])
            .inc();
    }

    /// A live connection over `transport`, counted until the returned guard drops.
    pub fn live(self: &Arc<Self>, transport: Transport) -> Live {
        self.live[transport as usize].fetch_add(1, Ordering::Relaxed);
        Live {
            meters: self.clone(),
            transport,
        }
    }

    /// Live connections over `transport`.
    pub fn live_count(&self, transport: Transport) -> i64 {
        self.live[transport as usize].load(Ordering::Relaxed)
    }
}

/// One live connection in [`Meters`]' count, given back when dropped (whatever way the
/// connection ends: a drop cannot be forgotten, so the gauge cannot drift).
#[derive(Debug)]
pub struct Live {
    meters: Arc<Meters>,
    transport: Transport,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.meters.live[self.transport as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_guards_give_their_count_back() {
        let meters = Arc::new(Meters::default());
        let a = meters.live(Transport::Ws);
        let b = meters.live(Transport::XhrPolling);
        assert_eq!(meters.live_count(Transport::Ws), 1);
        assert_eq!(meters.live_count(Transport::XhrStreaming), 0);
        assert_eq!(meters.live_count(Transport::XhrPolling), 1);
        drop((a, b));
        for transport in Transport::ALL {
            assert_eq!(meters.live_count(transport), 0);
        }
    }

    #[test]
    fn a_trigger_route_s_kept_series_is_the_exported_one() {
        let meters = Meters::default();
        let route = "/apps/{app_id}/events";
        meters.rest(route, 200, 0.001);
        meters.rest(route, 200, 0.002);
        meters.rest(route, 400, 0.001);
        meters.rest("/apps/{app_id}/channels", 200, 0.001);
        let count = |route: &str, status: &str| {
            meters
                .rest_requests
                .get_or_create(&[("route", route.to_owned()), ("status", status.to_owned())])
                .get()
        };
        assert_eq!(count(route, "200"), 2);
        assert_eq!(count(route, "400"), 1);
        assert_eq!(count("/apps/{app_id}/channels", "200"), 1);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("rest", "", meters.rest_seconds.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("rest_count") && l.contains("/events"))
            .expect("the events route's histogram is exported");
        assert!(line.ends_with(" 3"), "{line}");
    }
}
