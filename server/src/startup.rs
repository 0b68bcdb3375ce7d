//! `Application::build(settings)` opens the store, creates the default app on first start,
//! binds the listener and assembles the routes; `run_until_stopped` serves until shutdown.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
use crate::hub::Hub;
use crate::node::{Node, SharedNode};
use crate::protocol::CloseCode;
use crate::tenants::{AppCache, AppChange, Dependency, NewApp, Store, StoreError, Usage, UserRole};
use crate::{api, transport};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened or migrated.
    #[error("tenant store: {0}")]
    Store(#[from] StoreError),
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
    /// The dashboard's own listener, when `HERALD_ADMIN_BIND` is set.
    admin: Option<(TcpListener, Router)>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The first-run file: where generated secrets go instead of the log.
pub fn first_run_path(data_dir: &Path) -> PathBuf {
    data_dir.join("first-run.txt")
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartupError {
    let context = context.into();
    move |source| StartupError::Io { context, source }
}

/// Opens the store named by `settings`. For SQLite the data dir is created 0700 and the
/// database file with its `-wal` and `-shm` 0600 (they hold every app secret and password hash),
/// whatever the umask; looser modes found on existing ones are tightened (and logged).
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let sqlite_file = sqlite_path(&settings.database_url);
    if settings.database_url.starts_with("sqlite:") {
        private_dir(&settings.data_dir).map_err(io_error(format!(
            "cannot create data dir {}",
            settings.data_dir.display()
        )))?;
    }
    if let Some(file) = &sqlite_file {
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            // A directory of the operator's choosing outside the data dir is created private
            // when missing, never changed when it exists (it may be shared, like /tmp).
            if parent != settings.data_dir && !parent.exists() {
                private_dir(parent)
                    .map_err(io_error(format!("cannot create {}", parent.display())))?;
            }
        }
        private_files(file, true).map_err(io_error(format!("cannot create {}", file.display())))?;
    }
    let store = Store::open(&settings.database_url, settings.clock.clone()).await?;
    if let Some(file) = &sqlite_file {
        // SQLite creates `-wal` and `-shm` with the database file's mode; check anyway (by
        // path only: closing a descriptor of the open database would drop SQLite's locks).
        private_files(file, false)
            .map_err(io_error(format!("cannot secure {}", file.display())))?;
    }
    Ok(store)
}

/// The file behind a `sqlite:` URL (`None` for other stores and in-memory databases).
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Creates `dir` (and its missing parents) with mode 0700, or tightens it to 0700 (except a
/// shared directory with the sticky bit, such as /tmp, which is left as it is, with a warning).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(dir)?.permissions().mode() & 0o1000 != 0 {
            tracing::warn!(
                path = %dir.display(),
                "the data dir is a shared directory (sticky bit): its mode is left as it is; use a directory of Herald's own"
            );
            return Ok(());
        }
    }
    tighten(dir, 0o700)
}

/// Creates the database file 0600 when missing (`create`, before SQLite opens it), and tightens
/// it, its `-wal` and its `-shm` to 0600 when they exist with a looser mode.
fn private_files(file: &Path, create: bool) -> std::io::Result<()> {
    if create && !file.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        drop(options.open(file)?);
    }
    if file.exists() {
        tighten(file, 0o600)?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        let companion = PathBuf::from(name);
        if companion.exists() {
            tighten(&companion, 0o600)?;
        }
    }
    Ok(())
}

/// Sets `path`'s permission bits to `mode` when it grants more (group or other bits).
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(
            path = %path.display(),
            was = %format!("{current:o}"),
            now = %format!("{mode:o}"),
            "tightened the permissions of the store"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// The first start of a store: the demo app when there is no app, the operator when there is no
/// user. Generated secrets go to the first-run file (and to a terminal), never to the log.
async fn first_start(settings: &Settings, store: &Store) -> Result<(), StartupError> {
    let mut generated = String::new();
    let needs_operator = !store.has_users().await?;
    let admin_email = settings
        .admin
        .email
        .clone()
        .unwrap_or_else(|| "admin@localhost".into());
    if needs_operator {
        // Refuse a bad HERALD_ADMIN_EMAIL / _PASSWORD before anything is created, so a failed
        // first start never leaves generated credentials that nobody recorded.
        if let Some(password) = &settings.admin.password {
            crate::tenants::check_new_user(&admin_email, password.expose())?;
        } else {
            crate::tenants::check_new_user(&admin_email, "long enough")?;
        }
    }
    if store.is_empty().await? {
        let defaults = &settings.default_app;
        let app = store
            .create_app(NewApp {
                name: "Demo app".into(),
                id: defaults.id.clone(),
                key: defaults.key.clone(),
                secret: defaults.secret.clone(),
                client_events: Some(true),
                ..NewApp::default()
            })
            .await?;
        tracing::info!(app_id = %app.id, key = %app.key, tenant_id = %app.tenant_id, "created the default app");
        if defaults.secret.is_none() {
            generated.push_str(&format!(
                "Default app (tenant {})\n  id:     {}\n  key:    {}\n  secret: {}\n\n",
                app.tenant_id,
                app.id,
                app.key,
                app.secret.expose()
            ));
        }
    }
    if needs_operator {
        let email = admin_email;
        let (password, random) = match &settings.admin.password {
            Some(password) => (password.expose().to_owned(), false),
            None => (crate::tenants::random_password(), true),
        };
        let user = store
            .create_user(&email, &password, UserRole::Operator, None)
            .await?;
        tracing::info!(email = %user.email, "created the platform operator");
        if random {
            generated.push_str(&format!(
                "Operator (dashboard sign-in)\n  email:    {}\n  password: {}\n\n",
                user.email, password
            ));
        }
    }
    if generated.is_empty() {
        return Ok(());
    }
    let path = first_run_path(&settings.data_dir);
    // Appended: an upgrade that adds the operator keeps the app secret written before.
    let text = match std::fs::read_to_string(&path) {
        Ok(earlier) if !earlier.is_empty() => format!("{earlier}\n{generated}"),
        _ => format!("Herald first run\n\n{generated}"),
    };
    write_private(&path, &text).map_err(io_error(format!("cannot write {}", path.display())))?;
    tracing::info!(path = %path.display(), "generated credentials were written to the first-run file");
    if std::io::stdout().is_terminal() {
        let _ = std::io::stdout().write_all(format!("Herald first run\n\n{generated}").as_bytes());
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created: tighten a file that was already there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())
}

/// Reloads the app cache when the store's revision moved, and closes the sockets of apps that
/// were disabled or deleted.
pub async fn refresh_apps(node: &Node) -> Result<(), StoreError> {
    let revision = node.store.revision().await?;
    if node.apps.revision() == Some(revision) {
        return Ok(());
    }
    let (revision, apps) = node.store.snapshot().await?;
    let webhooks = node.store.list_webhooks(None).await?;
    for (app_id, mask) in node.webhooks.replace(webhooks) {
        node.hub.set_interest(&app_id, mask);
    }
    node.webhooks.rescan();
    // The caps on what each app's publishes keep in memory (cache channels and bytes).
    for app in &apps {
        node.hub.set_limits(&app.id, &app.limits);
    }
    for change in node
        .apps
        .replace(revision, apps, node.settings.clock.now_seconds())
    {
        let (app_id, code) = match &change {
            AppChange::Disabled(id) => (id, CloseCode::AppDisabled),
            AppChange::Deleted(id) => (id, CloseCode::AppDoesNotExist),
            AppChange::KeysRevoked(id, keys) => {
                if let Some(app_hub) = node.hub.existing_app(id) {
                    let closed: usize = keys.iter().map(|k| app_hub.close_key(k)).sum();
                    tracing::info!(app_id = %id, closed, "closed the connections of revoked keys");
                }
                continue;
            }
        };
        tracing::info!(app_id = %app_id, ?change, "closing the app's connections");
        if matches!(change, AppChange::Deleted(_)) {
            node.usage.forget(app_id);
            node.rates.retain(|id| id != app_id.as_str());
        }
        if let Some(app_hub) = node.hub.existing_app(app_id) {
            app_hub.close_all(code);
        }
    }
    Ok(())
}

/// Rewrites `/prefix/apps/...` to `/apps/...` and `/prefix/app/{key}` to `/app/{key}`, so the
/// API and the socket work behind a proxy path or pusher-http-php's `path` option. The signed path
/// is the path from `/apps/` on, which is what the rewritten request carries.
fn strip_mount_prefix(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.starts_with("/apps/") || path.starts_with("/app/") || path.starts_with("/dashboard") {
        return request;
    }
    let start = path.find("/apps/").or_else(|| path.find("/app/"));
    if let Some(start) = start {
        let mut rewritten = path[start..].to_owned();
        if let Some(query) = request.uri().query() {
            rewritten.push('?');
            rewritten.push_str(query);
        }
        if let Ok(uri) = rewritten.parse::<Uri>() {
            *request.uri_mut() = uri;
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
/// dependency as `ok` or `degraded` (with the reason and since when). A degraded store does not
/// make the node unready: its hot paths run from memory.
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
    let body = serde_json::json!({
        "status": if shutting_down { "shutting_down" } else { "ready" },
        "store": node.store.health().state(Dependency::Reads),
        "store_writes": node.store.health().state(Dependency::Writes),
    });
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
        let store = open_store(&settings).await?;
        first_start(&settings, &store).await?;
        crate::tenants::warm_up_password_checks().await;
        let usage = Usage::load(&store, settings.clock.clone()).await?;
        let listener = TcpListener::bind(&settings.bind)
            .await
            .map_err(io_error(format!("cannot bind {}", settings.bind)))?;
        let address = listener
            .local_addr()
            .map_err(io_error("cannot read the bound address"))?;
        let (events, hub_events) = crate::webhooks::event_channel(settings.webhooks.event_queue);
        let webhooks = crate::webhooks::Webhooks::default();
        webhooks.seed_ids(store.max_delivery_id().await?);
        let body_budget = api::BodyBudget::new(settings.body_buffer_bytes);
        let node = Arc::new(Node {
            settings,
            apps: AppCache::default(),
            hub: Hub::with_events(events),
            webhooks,
            store,
            usage,
            rates: api::RateLimits::default(),
            body_budget,
            taps: crate::admin::Taps::default(),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
        });
        refresh_apps(&node).await?;
        let dashboard = herald_dashboard::router(
            Arc::new(crate::admin::AdminApi::new(node.clone())),
            herald_dashboard::Config {
                trusted_proxies: node.settings.trusted_proxies.clone(),
            },
        );
        let mut router = Router::new()
            .route("/app/{key}", get(transport::ws::app_socket))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .merge(api::router())
            .fallback(transport::ws::not_found)
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
        Ok(Application {
            listener,
            address,
            node,
            router,
            hub_events,
            admin,
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

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The shared node, for tests that inspect it.
    pub fn node(&self) -> SharedNode {
        self.node.clone()
    }

    /// Serves until `shutdown` resolves, then closes every socket with 4200 and waits for the
    /// connection tasks (up to the grace period) before closing the store.
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
            admin,
        } = self;
        let admin_server = admin.map(|(listener, dashboard)| {
            let token = node.shutdown.clone();
            if let Ok(address) = listener.local_addr() {
                tracing::info!("dashboard listening on http://{address}/dashboard");
            }
            // The same accept loop as the public listener: header and body timeouts.
            let limits = crate::serve::Limits::from_settings(&node.settings);
            tokio::spawn(async move {
                crate::serve::serve(listener, dashboard, limits, async move {
                    token.cancelled().await
                })
                .await;
            })
        });
        let webhooks = crate::webhooks::start(node.clone(), hub_events);
        let poller = tokio::spawn(poll_revision(node.clone()));
        let flusher = tokio::spawn(flush_usage(node.clone()));
        let service = tower::util::MapRequestLayer::new(strip_mount_prefix).layer(router);
        tracing::info!("listening on http://{address}");
        let token = node.shutdown.clone();
        let shutdown_hub = node.clone();
        // Webhook events the hub could not queue from the start of shutdown on (a full queue in
        // the close burst, or sockets still closing after the writer stopped) are lost too.
        let lost_before = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let lost_before_shutdown = lost_before.clone();
        let limits = crate::serve::Limits::from_settings(&node.settings);
        crate::serve::serve(listener, service, limits, async move {
            tokio::select! {
                () = shutdown => {}
                () = token.cancelled() => {}
            }
            tracing::info!("shutting down: closing every socket with 4200");
            lost_before_shutdown.store(
                shutdown_hub.hub.lost_webhook_events(),
                std::sync::atomic::Ordering::SeqCst,
            );
            token.cancel();
            // Sockets that register after this see the cancelled token themselves.
            shutdown_hub.hub.close_all(CloseCode::ReconnectNow);
            // Open live-console streams end too, so neither listener's drain waits for them.
            shutdown_hub.taps.close_all();
        })
        .await;
        node.shutdown.cancel();
        // One bound for the whole drain (HERALD_SHUTDOWN_GRACE_SECS): sockets get half of it
        // (they close in milliseconds unless a peer stalls), the outbox and the counters the rest.
        let grace = node.settings.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        if let Some(admin_server) = admin_server {
            let _ = tokio::time::timeout_at(deadline, admin_server).await;
        }
        node.connections.close();
        if tokio::time::timeout(grace / 2, node.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the grace period");
        }
        poller.abort();
        // Every socket is closed, so every vacate and member_removed has happened: release the
        // delayed ones, write everything to the outbox (until the deadline), stop the worker.
        let lost_events = webhooks.drain(deadline).await;
        // The flusher stops between flushes (never mid-write, which would lose the counts it
        // took); a flush stuck on an unreachable store is cut at the deadline (its counts stay
        // counted as unsaved).
        if tokio::time::timeout_at(deadline, &mut { flusher })
            .await
            .is_err()
        {
            tracing::debug!("the usage flusher was cut at the shutdown deadline");
        }
        // Every connection is closed: the counts are final. Write them before the store closes,
        // retrying until the deadline.
        let flushed = final_flush(&node, deadline).await;
        let (apps, messages) = node.usage.unsaved();
        let not_queued = node
            .hub
            .lost_webhook_events()
            .saturating_sub(lost_before.load(std::sync::atomic::Ordering::SeqCst));
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

/// The shutdown flush: writes the final counts, retrying until `deadline`. Returns whether
/// they were all written.
async fn final_flush(node: &Node, deadline: tokio::time::Instant) -> bool {
    loop {
        match tokio::time::timeout_at(deadline, node.usage.flush(&node.store)).await {
            Ok(Ok(apps)) => {
                tracing::info!(apps, "usage counters flushed");
                return true;
            }
            Ok(Err(error)) => {
                node.store
                    .health()
                    .record(Dependency::Writes, Err(format!("usage flush: {error}")));
                let retry = tokio::time::Instant::now() + std::time::Duration::from_millis(250);
                if retry >= deadline {
                    tracing::error!(%error, "could not flush usage counters at shutdown");
                    return false;
                }
                tokio::time::sleep_until(retry).await;
            }
            Err(_) => {
                tracing::error!("the usage flush did not finish within the shutdown grace period");
                return false;
            }
        }
    }
}

/// Writes usage counters to the store every `usage_flush`.
async fn flush_usage(node: SharedNode) {
    let mut interval = tokio::time::interval(node.settings.usage_flush);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let outcome = node.usage.flush(&node.store).await;
        if let Err(error) = &outcome {
            tracing::debug!(%error, "could not flush usage counters; they are kept for the next flush");
        }
        node.store.health().record(
            Dependency::Writes,
            outcome
                .map(|_| ())
                .map_err(|error| format!("usage flush: {error}")),
        );
    }
}

/// Closes the connections opened with a previous key whose grace period has just ended (once
/// per key: `handled` remembers them).
fn close_expired_keys(node: &Node, handled: &mut std::collections::HashSet<(String, String)>) {
    let now = crate::clock::unix_seconds();
    for app in node.apps.all() {
        let Some(previous) = &app.previous_key else {
            continue;
        };
        if previous.active_at(now) {
            continue;
        }
        if handled.insert((app.id.clone(), previous.key.clone())) {
            if let Some(app_hub) = node.hub.existing_app(&app.id) {
                let closed = app_hub.close_key(&previous.key);
                tracing::info!(app_id = %app.id, closed, "a previous key's grace period ended");
            }
        }
    }
}

/// How often expired cache-channel events are dropped.
const CACHE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

async fn poll_revision(node: SharedNode) {
    let mut interval = tokio::time::interval(node.settings.revision_poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    let mut expired_keys = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let outcome = refresh_apps(&node).await;
        if let Err(error) = &outcome {
            tracing::debug!(%error, "could not refresh the app cache");
        }
        node.store.health().record(
            Dependency::Reads,
            outcome.map_err(|error| format!("app cache refresh: {error}")),
        );
        close_expired_keys(&node, &mut expired_keys);
        node.hub.flush_subscription_counts();
        if last_sweep.elapsed() >= CACHE_SWEEP_INTERVAL {
            last_sweep = tokio::time::Instant::now();
            node.hub.sweep_caches();
        }
    }
}
