//! `GET /metrics` in the Prometheus text format (0.0.4), served only on `HERALD_METRICS_BIND`
//! (never on the public listener: it shows every tenant's traffic).
//!
//! Most figures are read at scrape time from what the node keeps anyway ([`NodeCollector`]):
//! connections, channels and subscriptions from the hub's live state (so these gauges cannot
//! drift), message counts from the usage counters. The rest are `meters::Meters`' counters and
//! histograms (refusals, REST and webhook latencies, bytes out, Redis round trips).
//!
//! Label cardinality is bounded: per-app series only for the `HERALD_METRICS_TOP_APPS`
//! busiest apps (by messages today, then connections), labelled by app id; REST series by the
//! route's pattern (`/apps/{app_id}/events`), never the path; codes, kinds and outcomes are
//! fixed sets.
//!
//! The exported names are listed in `infra/grafana/metric-names.txt` (`tests/it/metrics.rs`
//! compares it with a real scrape; `infra/validate/check_grafana.py` checks the dashboard's
//! queries against it): a new series goes there too.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::meters::Transport;
use crate::node::{Node, SharedNode};

/// The `/metrics` router for the metrics listener: the registry is built once, the node's live
/// figures are read on each scrape.
pub fn router(node: &SharedNode) -> Router {
    let meters = &node.meters;
    let mut registry = Registry::default();
    registry.register(
        "herald_handshake_refusals",
        "Connections refused at the handshake, by close code",
        meters.handshake_refusals.clone(),
    );
    registry.register(
        "herald_refusals",
        "Quota and limit refusals, by kind",
        meters.refusals.clone(),
    );
    registry.register(
        "herald_webhook_requests",
        "Webhook requests, by outcome",
        meters.webhook_deliveries.clone(),
    );
    registry.register(
        "herald_webhook_request_duration_seconds",
        "Webhook request latency",
        meters.webhook_seconds.clone(),
    );
    registry.register(
        "herald_rest_requests",
        "REST API requests, by route and status",
        meters.rest_requests.clone(),
    );
    registry.register(
        "herald_rest_request_duration_seconds",
        "REST API request latency, by route",
        meters.rest_seconds.clone(),
    );
    if node.cluster.is_some() {
        registry.register(
            "herald_redis_roundtrip_seconds",
            "Redis round trips (the connections' PINGs)",
            meters.redis_seconds.clone(),
        );
    }
    registry.register_collector(Box::new(NodeCollector {
        node: Arc::downgrade(node),
    }));
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry))
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Response {
    let mut body = String::with_capacity(16 * 1024);
    match prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Middleware on the REST API's routes: counts each request by route pattern and status and
/// times it. Only matched routes pass here, so the route label is one of the API's patterns.
pub async fn track_rest(State(node): State<SharedNode>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let started = tokio::time::Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    node.meters
        .rest(&route, response.status().as_u16(), seconds);
    response
}

/// A per-app series: name, help, type and how to read it from an app's figures.
type PerApp = (
    &'static str,
    &'static str,
    MetricType,
    fn(&AppFigures) -> u64,
);

/// What one app shows in the per-app series.
#[derive(Debug, Default, Clone, Copy)]
struct AppFigures {
    connections: usize,
    channels: usize,
    subscriptions: usize,
    messages_today: u64,
    published: u64,
    delivered: u64,
}

/// Reads the node's live figures on each scrape. Holds the node weakly: the metrics listener
/// must not keep a stopped node alive.
#[derive(Debug)]
struct NodeCollector {
    node: Weak<Node>,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeGaugeValue + Send + Sync + std::fmt::Debug,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One series per `(label value, value)`, under a single descriptor.
fn labelled<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &'static str,
    rows: &[(String, V)],
) -> Result<(), std::fmt::Error>
where
    V: Copy + prometheus_client::encoding::EncodeGaugeValue + Into<u64>,
{
    let mut descriptor = encoder.encode_descriptor(name, help, None, kind)?;
    for (value_label, value) in rows {
        let labels = [(label, value_label.as_str())];
        let mut family = descriptor.encode_family(&labels)?;
        match kind {
            MetricType::Counter => family
                .encode_counter::<prometheus_client::encoding::NoLabelSet, u64, u64>(
                    &(*value).into(),
                    None,
                )?,
            _ => family.encode_gauge(value)?,
        }
    }
    Ok(())
}

impl NodeCollector {
    /// Every app the node has state or counters for, with its figures.
    fn apps(node: &Node) -> HashMap<Arc<str>, AppFigures> {
        let mut apps: HashMap<Arc<str>, AppFigures> = HashMap::new();
        for app_hub in node.hub.all_apps() {
            let (connections, channels, subscriptions) = app_hub.gauges();
            let figures = apps.entry(app_hub.id()).or_default();
            figures.connections = connections;
            figures.channels = channels;
            figures.subscriptions = subscriptions;
        }
        for (id, usage) in node.usage.apps() {
            let figures = apps.entry(id).or_default();
            figures.messages_today = usage.messages_today();
            (figures.published, figures.delivered) = usage.totals();
        }
        apps
    }
}

impl prometheus_client::collector::Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(node) = self.node.upgrade() else {
            return Ok(());
        };
        let meters = &node.meters;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        let mut build = encoder.encode_descriptor(
            "herald_build_info",
            "The running build",
            None,
            MetricType::Gauge,
        )?;
        build.encode_family(&version)?.encode_gauge(&1u64)?;
        let (node_id, cluster) = match &node.cluster {
            Some(c) => (c.node_id().to_owned(), c.name().to_owned()),
            None => ("standalone".to_owned(), String::new()),
        };
        let node_labels = [("node_id", node_id.as_str()), ("cluster", cluster.as_str())];
        let mut info = encoder.encode_descriptor(
            "herald_node_info",
            "This node's id (HERALD_NODE_ID) and cluster name",
            None,
            MetricType::Gauge,
        )?;
        info.encode_family(&node_labels)?.encode_gauge(&1u64)?;
        gauge(
            &mut encoder,
            "herald_uptime_seconds",
            "Seconds since the node started",
            meters.started.elapsed().as_secs_f64(),
        )?;
        let by_transport: Vec<(String, u64)> = Transport::ALL
            .iter()
            .map(|t| {
                let live = u64::try_from(meters.live_count(*t)).unwrap_or(0);
                (t.label().to_owned(), live)
            })
            .collect();
        labelled(
            &mut encoder,
            "herald_connections",
            "Open client connections, by transport",
            MetricType::Gauge,
            "transport",
            &by_transport,
        )?;
        let apps = Self::apps(&node);
        let sum = |f: fn(&AppFigures) -> u64| apps.values().map(f).sum::<u64>();
        gauge(
            &mut encoder,
            "herald_channels",
            "Occupied channels",
            sum(|a| a.channels as u64),
        )?;
        gauge(
            &mut encoder,
            "herald_subscriptions",
            "Subscriptions (a connection on a channel)",
            sum(|a| a.subscriptions as u64),
        )?;
        let (published, delivered) = node.usage.totals();
        counter(
            &mut encoder,
            "herald_messages_in",
            "Messages published (REST and client events), one per target channel",
            published,
        )?;
        counter(
            &mut encoder,
            "herald_messages_out",
            "Messages delivered (copies, member events, webhook requests), as counted toward quotas",
            delivered,
        )?;
        counter(
            &mut encoder,
            "herald_bytes_out",
            "Bytes written to WebSocket sockets, frame headers included",
            meters.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_webhook_events_dropped",
            "Webhook events dropped because the pipeline's queue was full",
            node.hub.lost_webhook_events(),
        )?;
        if let Some(cluster) = &node.cluster {
            counter(
                &mut encoder,
                "herald_cluster_forwards_dropped",
                "Publishes this node could not forward to the others",
                cluster.dropped(),
            )?;
            counter(
                &mut encoder,
                "herald_cluster_received",
                "Publishes received from other nodes",
                cluster.received(),
            )?;
        }
        // The busiest apps only (cardinality stays bounded however many apps sign up).
        let mut ranked: Vec<(Arc<str>, AppFigures)> = apps.into_iter().collect();
        ranked.sort_by(|(a_id, a), (b_id, b)| {
            (b.messages_today, b.connections)
                .cmp(&(a.messages_today, a.connections))
                .then_with(|| a_id.cmp(b_id))
        });
        ranked.truncate(node.settings.metrics_top_apps);
        let per_app = |f: fn(&AppFigures) -> u64| -> Vec<(String, u64)> {
            ranked
                .iter()
                .map(|(id, a)| (id.to_string(), f(a)))
                .collect()
        };
        let series: [PerApp; 6] = [
            (
                "herald_app_connections",
                "Open connections of one of the busiest apps",
                MetricType::Gauge,
                |a| a.connections as u64,
            ),
            (
                "herald_app_channels",
                "Occupied channels of one of the busiest apps",
                MetricType::Gauge,
                |a| a.channels as u64,
            ),
            (
                "herald_app_subscriptions",
                "Subscriptions of one of the busiest apps",
                MetricType::Gauge,
                |a| a.subscriptions as u64,
            ),
            (
                "herald_app_messages_today",
                "Messages counted today (UTC) toward the daily quota, as of the last flush plus this node's",
                MetricType::Gauge,
                |a| a.messages_today,
            ),
            (
                "herald_app_messages_in",
                "Messages published by one of the busiest apps",
                MetricType::Counter,
                |a| a.published,
            ),
            (
                "herald_app_messages_out",
                "Messages delivered for one of the busiest apps",
                MetricType::Counter,
                |a| a.delivered,
            ),
        ];
        for (name, help, kind, value) in series {
            labelled(&mut encoder, name, help, kind, "app_id", &per_app(value))?;
        }
        Ok(())
    }
}
