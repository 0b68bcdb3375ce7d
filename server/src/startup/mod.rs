//! `Application::build(settings)` opens the store, creates the default app on first start,
//! binds the listener and assembles the routes; `run_until_stopped` serves until shutdown.
//! Opening the store (private files) is in [`store_files`], the first start in [`first_run`].

mod first_run;
mod store_files;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;

use crate::config::Settings;
use crate::hub::{Hub, RateLimits, Taps};
use crate::node::{Node, SharedNode};
use crate::protocol::CloseCode;
use crate::tenants::{AppCache, Dependency, StoreError, Usage};
use crate::{api, transport};

pub use first_run::first_run_path;
pub use store_files::open_store;

/// Reloads the app cache when the store's revision moved (now [`Node::refresh_apps`]; kept for
/// old call sites).
pub async fn refresh_apps(node: &Node) -> Result<(), StoreError> {
    node.refresh_apps().await
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened or migrated.
    #[error("tenant store: {0}")]
    Store(#[from] StoreError),
    /// Cluster mode on a store other nodes cannot share, or a Redis URL that cannot be used.
    #[error("{0}")]
    Cluster(String),
    /// `HERALD_TLS_CERT` / `HERALD_TLS_KEY` cannot be used (the message names which).
    #[error("{0}")]
    Tls(String),
    /// `HERALD_SMTP_URL`, `HERALD_SMTP_FROM` or `HERALD_SIGNUP_PLAN` cannot be used (the message
    /// names which; never the SMTP password).
    #[error("{0}")]
    Mail(String),
    /// The address could not be bound, or the data dir written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A built node, bound to its address, not yet serving.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    node: SharedNode,
    router: Router,
    hub_events: crate::webhooks::EventReceiver,
    /// Apps that became occupied or stopped being so (cluster mode).
    occupancy: Option<crate::hub::OccupancyReceiver>,
    /// The dashboard's own listener, when `HERALD_ADMIN_BIND` is set.
    admin: Option<(TcpListener, Router)>,
    /// The Prometheus listener, when `HERALD_METRICS_BIND` is set.
    metrics: Option<(TcpListener, Router)>,
    /// Both listeners' TLS, when `HERALD_TLS_CERT` / `HERALD_TLS_KEY` are set.
    tls: Option<crate::tls::Tls>,
    /// The Mercure subscribes that leave hyper on the public listener.
    direct: transport::mercure::Direct,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartupError {
    let context = context.into();
    move |source| StartupError::Io { context, source }
}

/// Rewrites `/prefix/apps/...` to `/apps/...`, `/prefix/app/{key}` to `/app/{key}` and
/// `/prefix/api/v1/...` to `/api/v1/...`, so the REST API, the socket and the management API
/// work behind a proxy path that is not stripped (or pusher-http-php's `path` option). The
/// signed path is the path from `/apps/` on, which is what the rewritten request carries. The
/// first marker in the path wins (`/p/api/v1/apps/1` is the management API's). The prefix
/// taken off goes with the request ([`api::v1::MountPrefix`]: the OpenAPI document names it).
/// The dashboard (`/dashboard...`) is never rewritten.
fn strip_mount_prefix(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.starts_with("/apps/")
        || path.starts_with("/app/")
        || path.starts_with("/dashboard")
        || path.starts_with("/api/v1/")
    {
        return request;
    }
    let start = ["/api/v1/", "/apps/", "/app/"]
        .iter()
        .filter_map(|marker| path.find(marker))
        .min();
    if let Some(start) = start {
        let prefix = path[..start].to_owned();
        let mut rewritten = path[start..].to_owned();
        if let Some(query) = request.uri().query() {
            rewritten.push('?');
            rewritten.push_str(query);
        }
        if let Ok(uri) = rewritten.parse::<Uri>() {
            *request.uri_mut() = uri;
            request
                .extensions_mut()
                .insert(api::v1::MountPrefix(prefix));
        }
    }
    request
}

async fn health() -> &'static str {
    "ok\n"
}

/// How long `/ready` waits for the store's answer before reporting it degraded (the whole
/// answer comes within 1 s, see `interfaces.md`).
const READY_PROBE: std::time::Duration = std::time::Duration::from_millis(700);

/// `GET /ready`: 200 while the node takes traffic, 503 once it shuts down; the body names each
/// dependency as `ok` or `degraded` (with the reason and since when). A degraded store (or Redis,
/// in cluster mode) does not make the node unready: its hot paths run from memory. In cluster
/// mode the body also names the node and counts the publishes it could not forward and the
/// ones it received from other nodes.
async fn ready(State(node): State<SharedNode>) -> impl IntoResponse {
    let probe = tokio::time::timeout(READY_PROBE, node.store.ping()).await;
    let outcome = match probe {
        Ok(true) => Ok(()),
        Ok(false) => Err("the store refused a read".to_owned()),
        Err(_) => Err(format!(
            "no answer to a read within {} ms",
            READY_PROBE.as_millis()
        )),
    };
    node.store.health().record(Dependency::Reads, outcome);
    let shutting_down = node.shutdown.is_cancelled();
    let mut body = serde_json::json!({
        "status": if shutting_down { "shutting_down" } else { "ready" },
        "store": node.store.health().state(Dependency::Reads),
        "store_writes": node.store.health().state(Dependency::Writes),
    });
    if let Some(cluster) = &node.cluster {
        body["redis"] = serde_json::json!(cluster.health());
        body["cluster"] = serde_json::json!({
            "name": cluster.name(),
            "node_id": cluster.node_id(),
            "forwards_dropped": cluster.dropped(),
            "received": cluster.received(),
            "connections_replaced": cluster.connections_replaced(),
        });
    }
    let status = if shutting_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body))
}

impl Application {
    /// Opens the store, creates the default app if the store is empty, loads the app cache and
    /// binds `settings.bind`.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        settings.check_cluster().map_err(StartupError::Cluster)?;
        if crate::tenants::Plan::named(&settings.signup_plan).is_err() {
            return Err(StartupError::Mail(format!(
                "HERALD_SIGNUP_PLAN {:?} is not a plan (sandbox, startup, business, ...)",
                settings.signup_plan
            )));
        }
        // Before anything else: a bad pair is refused without touching the store.
        let tls = match &settings.tls {
            Some(tls) => {
                Some(crate::tls::Tls::new(&tls.cert, &tls.key).map_err(StartupError::Tls)?)
            }
            None => None,
        };
        let store = open_store(&settings).await?;
        // Nodes starting together on one empty store create the demo app and the operator once.
        let first_start = store.first_start_lock().await?;
        first_run::first_start(&settings, &store).await?;
        drop(first_start);
        crate::tenants::warm_up_password_checks().await;
        let usage = Usage::load(&store, settings.clock.clone()).await?;
        let listener = TcpListener::bind(&settings.bind)
            .await
            .map_err(io_error(format!("cannot bind {}", settings.bind)))?;
        let address = listener
            .local_addr()
            .map_err(io_error("cannot read the bound address"))?;
        // A node always knows its public URL: HERALD_PUBLIC_URL, else the bound address.
        let configured_public_url = settings.public_url.clone();
        let mut settings = settings;
        settings.public_url = Some(settings.public_url_or(address));
        let (events, hub_events) = crate::webhooks::event_channel(settings.webhooks.event_queue);
        let webhooks = crate::webhooks::Webhooks::default();
        webhooks.seed_ids(store.max_delivery_id().await?);
        let body_budget = api::BodyBudget::new(settings.body_buffer_bytes);
        let taps = Taps::new(settings.clock.clone());
        let rates = RateLimits::new(settings.clock.clone());
        let mut hub = Hub::with_events(events);
        let mut occupancy = None;
        let cluster = match &settings.cluster {
            None => None,
            Some(cluster_settings) => {
                let cluster = crate::cluster::Cluster::connect(
                    cluster_settings.clone(),
                    settings.clock.clone(),
                )
                .await
                .map_err(|e| StartupError::Cluster(e.to_string()))?;
                let (tx, rx) = crate::hub::occupancy_channel();
                hub = hub
                    .with_node_tag(cluster.socket_tag())
                    .with_occupancy(tx)
                    .with_shared_users()
                    .with_shared_cache()
                    .with_cluster_state();
                occupancy = Some(rx);
                Some(cluster)
            }
        };
        let mailer = crate::mail::Mailer::start(
            settings.smtp_url.as_ref().map(|url| url.expose()),
            settings.smtp_from.as_deref(),
            settings.public_url.as_deref().unwrap_or_default(),
        )
        .map_err(|error| StartupError::Mail(error.to_string()))?;
        let accounts = crate::node::accounts::Accounts::start(
            store.clone(),
            mailer.clone(),
            settings.signup_plan.clone(),
        );
        let node = Arc::new(Node {
            accounts,
            mailer,
            cluster,
            settings,
            apps: Arc::new(AppCache::default()),
            hub,
            webhooks: Arc::new(webhooks),
            store,
            usage: Arc::new(usage),
            rates,
            body_budget,
            taps: Arc::new(taps),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            meters: Arc::new(crate::meters::Meters::new()),
        });
        node.refresh_apps().await?;
        let dashboard = herald_dashboard::router(
            Arc::new(crate::admin::AdminApi::new(node.clone())),
            herald_dashboard::Config {
                trusted_proxies: node.settings.trusted_proxies.clone(),
                session_key: node
                    .store
                    .cookie_mac_key()
                    .await?
                    .expose()
                    .as_bytes()
                    .to_vec(),
                shared_budgets: node.cluster.clone().map(|cluster| {
                    Arc::new(crate::cluster::signin::SharedSignIn::new(cluster))
                        as Arc<dyn herald_dashboard::SharedBudgets>
                }),
                tls_listener: tls.is_some(),
                signup: match node.settings.signup {
                    crate::config::SignupMode::Closed => herald_dashboard::Signup::Closed,
                    crate::config::SignupMode::Invite => herald_dashboard::Signup::Invite,
                    crate::config::SignupMode::Open => herald_dashboard::Signup::Open,
                },
                writes_per_minute: node.settings.dashboard_rate,
            },
        );
        // pusher-js's HTTP fallback sessions, served by the router's fallback (any path prefix).
        let fallback_sessions = transport::xhr::Sessions::default();
        // In a cluster: requests for sessions held elsewhere are forwarded through Redis.
        transport::xhr::start_relay(node.clone(), fallback_sessions.clone());
        // The apps' Mercure state: the router's, and the direct path's (`serve.rs`).
        let hubs = mercure_hubs(&node);
        let direct = transport::mercure::Direct::new(node.clone(), hubs.clone());
        let mut router = Router::new()
            .route("/app/{key}", get(transport::ws::app_socket))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .merge(
                api::router().route_layer(axum::middleware::from_fn_with_state(
                    node.clone(),
                    crate::metrics::track_rest,
                )),
            )
            .merge(api::v1::router(configured_public_url))
            .merge(transport::mercure::router(hubs.clone()))
            .fallback(move |State(node): State<SharedNode>, request: Request| {
                transport::xhr::fallback(node, fallback_sessions.clone(), request)
            })
            .with_state(node.clone());
        let admin = match &node.settings.admin_bind {
            None => {
                router = router.merge(dashboard);
                None
            }
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .await
                    .map_err(io_error(format!("cannot bind HERALD_ADMIN_BIND {bind}")))?;
                Some((listener, dashboard))
            }
        };
        // `/metrics` on its own listener only: the public one answers 404 there.
        let metrics = match &node.settings.metrics_bind {
            None => None,
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .await
                    .map_err(io_error(format!("cannot bind HERALD_METRICS_BIND {bind}")))?;
                Some((listener, crate::metrics::router(&node)))
            }
        };
        Ok(Application {
            listener,
            address,
            node,
            router,
            hub_events,
            occupancy,
            admin,
            metrics,
            tls,
            direct,
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The dashboard listener's bound address, when `HERALD_ADMIN_BIND` is set.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The metrics listener's bound address, when `HERALD_METRICS_BIND` is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The shared node, for tests that inspect it.
    pub fn node(&self) -> SharedNode {
        self.node.clone()
    }

    /// Serves until `shutdown` resolves (or the node's shutdown token is cancelled), then closes
    /// every socket with 4200, drains both listeners and the sockets (half the grace period),
    /// the webhook outbox and the usage counters (until the grace period ends), and closes the
    /// store. An error when something could not be saved in time.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            address,
            node,
            router,
            hub_events,
            occupancy,
            admin,
            metrics,
            tls,
            direct,
        } = self;
        let limits = crate::serve::Limits::from_settings(&node.settings);
        let token = node.shutdown.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let handshakes = |tls: &crate::tls::Tls| {
            node.settings.tls.as_ref().map(|settings| {
                crate::serve::Handshakes::new(tls, settings, &node.settings.trusted_proxies)
            })
        };
        let (public_tls, admin_tls) = match &tls {
            Some(tls) => (handshakes(tls), handshakes(tls)),
            None => (None, None),
        };
        if let (Some(tls), Some(settings)) = (&tls, &node.settings.tls) {
            // SIGHUP or a changed file: new handshakes get the new pair, sockets keep theirs.
            tokio::spawn(tls.clone().watch(settings.reload_poll, token.clone()));
        }
        // Both listeners run the same accept loop (header and body timeouts) until the node's
        // shutdown token is cancelled.
        let admin_server = admin.map(|(listener, dashboard)| {
            if let Ok(address) = listener.local_addr() {
                tracing::info!("dashboard listening on {scheme}://{address}/dashboard");
            }
            tokio::spawn(crate::serve::serve(
                listener,
                dashboard,
                limits,
                admin_tls,
                None,
                token.clone().cancelled_owned(),
            ))
        });
        // Scrapes are short: the metrics listener stops with the others and is not waited for.
        if let Some((listener, metrics)) = metrics {
            if let Ok(address) = listener.local_addr() {
                tracing::info!("metrics listening on http://{address}/metrics");
            }
            // Plain HTTP even when the public listeners serve TLS: bind it to a private address.
            tokio::spawn(crate::serve::serve(
                listener,
                metrics,
                limits,
                None,
                None,
                token.clone().cancelled_owned(),
            ));
        }
        let webhooks = crate::webhooks::start(node.webhook_context(), hub_events);
        let poller = tokio::spawn(node.clone().poll_revision());
        let flusher = tokio::spawn(node.clone().flush_usage());
        let cluster = match (&node.cluster, occupancy) {
            (Some(cluster), Some(occupancy)) => Some(cluster.start(node.clone(), occupancy)),
            _ => None,
        };
        // The trigger routes are answered in front of the router (`api::FastRest`, issue 19).
        let router = api::FastRest::new(router, node.clone());
        let service = tower::util::MapRequestLayer::new(strip_mount_prefix).layer(router);
        tracing::info!("listening on {scheme}://{address}");
        let public_server = tokio::spawn(crate::serve::serve(
            listener,
            service,
            limits,
            public_tls,
            Some(direct),
            token.clone().cancelled_owned(),
        ));
        tokio::select! {
            () = shutdown => {}
            () = token.cancelled() => {}
        }
        // One bound for the whole drain (HERALD_SHUTDOWN_GRACE_SECS), from the signal: HTTP
        // requests in flight on both listeners and the sockets get half of it (they end in
        // milliseconds unless a peer stalls), the outbox and the counters the rest.
        let grace = node.settings.shutdown_grace;
        let started = tokio::time::Instant::now();
        let deadline = started + grace;
        let sockets_by = started + grace / 2;
        tracing::info!("shutting down: closing every socket with 4200");
        // Webhook events the hub could not queue from the start of shutdown on (a full queue in
        // the close burst, or sockets still closing after the writer stopped) are lost too.
        let lost_before = node.hub.lost_webhook_events();
        // Both listeners stop accepting; sockets that register after this see the cancelled
        // token themselves.
        token.cancel();
        node.hub.close_all(CloseCode::ReconnectNow);
        // Open live-console streams end too, so neither listener's drain waits for them.
        node.taps.close_all();
        // Each listener's drain ends by `sockets_by` (`Limits::drain`); one that has not
        // returned by then is stopped, so neither can use up the time the counts need.
        for mut server in std::iter::once(public_server).chain(admin_server) {
            if tokio::time::timeout_at(sockets_by, &mut server)
                .await
                .is_err()
            {
                tracing::warn!("a listener's HTTP connections did not drain in time; closing them");
                server.abort();
            }
        }
        node.connections.close();
        if tokio::time::timeout_at(sockets_by, node.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the grace period");
        }
        poller.abort();
        // Every socket and request has ended: publishes still queued for the other nodes go
        // out and the heartbeat key goes away, alongside the outbox and the counts (the
        // cluster's stop has a small budget of its own, so an unreachable Redis takes nothing
        // from them).
        let cluster_stop = async {
            if let Some(cluster) = cluster {
                cluster.stop(deadline).await;
            }
        };
        let save = async {
            // Every socket is closed, so every vacate and member_removed has happened: release
            // the delayed ones, write everything to the outbox (until the deadline), stop the
            // worker.
            let lost_events = webhooks.drain(deadline).await;
            // The flusher stops between flushes (never mid-write, which would lose the counts
            // it took); a flush stuck on an unreachable store is cut at the deadline (its
            // counts stay counted as unsaved).
            if tokio::time::timeout_at(deadline, &mut { flusher })
                .await
                .is_err()
            {
                tracing::debug!("the usage flusher was cut at the shutdown deadline");
            }
            // Every connection is closed: the counts are final. Write them before the store
            // closes, retrying until the deadline.
            let flushed = node.final_flush(deadline).await;
            (lost_events, flushed)
        };
        let ((), (lost_events, flushed)) = tokio::join!(cluster_stop, save);
        let (apps, messages) = node.usage.unsaved();
        let not_queued = node.hub.lost_webhook_events().saturating_sub(lost_before);
        let lost_events = lost_events + usize::try_from(not_queued).unwrap_or(usize::MAX);
        let saved = flushed && apps == 0 && lost_events == 0;
        if !saved {
            tracing::error!(
                unsaved_apps = apps,
                unsaved_messages = messages,
                lost_webhook_events = lost_events,
                grace_secs = grace.as_secs(),
                "shutdown could not save everything within the grace period: these counts and webhook events are lost"
            );
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), node.store.close()).await;
        tracing::info!("stopped");
        if saved {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "not everything was saved at shutdown: usage counts of {apps} apps ({messages} messages), {lost_events} webhook events"
            )))
        }
    }
}

/// The Mercure hubs, their histories swept every 10 s (by age; a deleted or disabled app's
/// dropped).
fn mercure_hubs(node: &SharedNode) -> transport::mercure::Hubs {
    let hubs = transport::mercure::Hubs::new(node.settings.mercure.history_bytes);
    if let Some(cluster) = &node.cluster {
        hubs.join_cluster(cluster.clone());
    }
    let node = Arc::downgrade(node);
    hubs.start_sweeper(std::time::Duration::from_secs(10), move |app_id| {
        node.upgrade()
            .and_then(|node| node.apps.by_id(app_id))
            .is_some_and(|app| app.enabled)
    });
    hubs
}
