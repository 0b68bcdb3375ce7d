//! Settings, read from `HERALD_*` environment variables. The only module that reads the
//! environment or configuration files.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Secret;

/// The default app created on the first start of an empty store.
#[derive(Debug, Clone, Default)]
pub struct DefaultApp {
    /// `HERALD_DEFAULT_APP_ID`.
    pub id: Option<String>,
    /// `HERALD_DEFAULT_APP_KEY`.
    pub key: Option<String>,
    /// `HERALD_DEFAULT_APP_SECRET`.
    pub secret: Option<Secret>,
}

/// How webhooks are batched, delayed and delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Events occurring within this window go into one request per endpoint
    /// (`HERALD_WEBHOOK_BATCH_MS`, at most 100 ms: the outbox durability window).
    pub batch_window: Duration,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// How long `channel_vacated` and `member_removed` wait for the channel or member to come back.
    pub vacate_delay: Duration,
    /// Timeout of one request (`HERALD_WEBHOOK_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// Requests in flight per endpoint (`HERALD_WEBHOOK_CONCURRENCY`).
    pub concurrency: usize,
    /// How long a delivery is retried before it is kept as failed.
    pub retry_window: Duration,
    /// The first retry delay; each further retry doubles it, up to `backoff_cap`.
    pub backoff_base: Duration,
    /// The longest delay between two retries.
    pub backoff_cap: Duration,
    /// Private ranges webhooks may reach anyway (`HERALD_WEBHOOK_ALLOW_PRIVATE`, a CIDR list;
    /// empty: public addresses only).
    pub allow_private: Vec<ipnet::IpNet>,
    /// How long failed deliveries are kept (and retryable) before they are pruned
    /// (`HERALD_WEBHOOK_FAILED_RETENTION_DAYS`, default 30).
    pub failed_retention: Duration,
    /// Events the hub may queue for the outbox writer; beyond it events are dropped and counted.
    pub event_queue: usize,
    /// `cache_miss` events: at most one per channel in this interval.
    pub cache_miss_interval: Duration,
    /// `cache_miss` events: at most this many per app per second (burst the same).
    pub cache_miss_per_second: u32,
    /// How long a node's claim on outbox rows lasts unless renewed (renewed every quarter of
    /// it, at most every 2 s): a dead node's rows are taken over by another node after it. The
    /// default is the cluster's heartbeat TTL (10 s): an endpoint a killed node held is free
    /// again by the time survivors remove its members (so their webhooks keep the 15 s bound).
    pub claim_lease: Duration,
    /// `channel_vacated` / `member_removed` reach the writer already delayed (cluster mode: the
    /// delay is kept in Redis), so the writer writes them due at once and cancels nothing.
    pub delayed_upstream: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            batch_window: Duration::from_millis(50),
            max_events_per_request: 100,
            vacate_delay: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            concurrency: 4,
            retry_window: Duration::from_secs(5 * 60),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            allow_private: Vec::new(),
            failed_retention: Duration::from_secs(30 * 24 * 3600),
            event_queue: 65_536,
            cache_miss_interval: Duration::from_secs(60),
            cache_miss_per_second: 10,
            claim_lease: Duration::from_secs(10),
            delayed_upstream: false,
        }
    }
}

/// The operator created on the first start of a store without users.
#[derive(Debug, Clone, Default)]
pub struct AdminAccount {
    /// `HERALD_ADMIN_EMAIL` (default `admin@localhost`).
    pub email: Option<String>,
    /// `HERALD_ADMIN_PASSWORD` (random when unset, written to the first-run file).
    pub password: Option<Secret>,
}

/// Cluster mode (`HERALD_REDIS_URL` set): the Redis server, the cluster's name and this node's id.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `HERALD_REDIS_URL` (may carry a password, so it is a [`Secret`]).
    pub redis_url: Secret,
    /// `HERALD_CLUSTER` (default `herald`): the prefix of every key and Redis channel, so several
    /// clusters may share one Redis.
    pub name: String,
    /// `HERALD_NODE_ID` (default: 12 random hex characters).
    pub node_id: String,
}

impl ClusterSettings {
    /// A cluster setting with a random node id.
    pub fn new(redis_url: &str, name: &str) -> ClusterSettings {
        ClusterSettings {
            redis_url: Secret::new(redis_url.to_owned()),
            name: name.to_owned(),
            node_id: random_node_id(),
        }
    }
}

/// 12 random hex characters.
pub fn random_node_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The one-line refusal of cluster mode on a store other nodes cannot share.
pub const CLUSTER_NEEDS_POSTGRES: &str =
    "cluster mode (HERALD_REDIS_URL) needs a PostgreSQL store \
     shared by every node: set HERALD_DATABASE_URL=postgres://...; SQLite is single-node only";

/// Everything a node needs to start. Tests build it directly with [`Settings::for_tests`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address for WebSocket, REST and health (`HERALD_BIND`).
    pub bind: String,
    /// Serve the dashboard on this address instead of `bind` (`HERALD_ADMIN_BIND`).
    pub admin_bind: Option<String>,
    /// Serve Prometheus `/metrics` on this address, never on `bind` (`HERALD_METRICS_BIND`).
    pub metrics_bind: Option<String>,
    /// Per-app series only for this many of the busiest apps (`HERALD_METRICS_TOP_APPS`,
    /// default 20, at most 1,000).
    pub metrics_top_apps: usize,
    /// Management API requests a second one tenant's tokens may make together on one node
    /// (`HERALD_API_RATE`, default 10,
    /// 1 to 1,000; bursts of twice that).
    pub api_rate: u32,
    /// State-changing dashboard forms (POSTs but sign-out) one signed-in member may send a
    /// minute, cluster-wide in cluster mode (`HERALD_DASHBOARD_RATE`, default 60, 1 to 10,000;
    /// bursts of that many).
    pub dashboard_rate: u32,
    /// The URL users reach the server at (`HERALD_PUBLIC_URL`, an absolute `http(s)` URL without
    /// a trailing `/`); `None`: `http://` and the bound address ([`Settings::public_url_or`]).
    pub public_url: Option<String>,
    /// Where the SQLite file and the first-run file live (`HERALD_DATA_DIR`).
    pub data_dir: PathBuf,
    /// The store (`HERALD_DATABASE_URL`, default SQLite in the data dir).
    pub database_url: String,
    /// The first-start app.
    pub default_app: DefaultApp,
    /// The first-start operator.
    pub admin: AdminAccount,
    /// The clock usage is counted by (UTC days, minutes); tests inject a manual one.
    pub clock: crate::clock::Clock,
    /// How often usage counters are written to the store (at most 5 s, see `interfaces.md`).
    pub usage_flush: Duration,
    /// Webhook batching and delivery.
    pub webhooks: WebhookSettings,
    /// Node capacity (`HERALD_MAX_CONNECTIONS`); past it handshakes get 4100.
    pub max_connections: Option<usize>,
    /// Percent of `max_connections` one app may hold (`HERALD_MAX_APP_SHARE`, default 50);
    /// past it the app's handshakes get 4100.
    pub max_app_share: u8,
    /// Silence after which the server pings a client.
    pub activity_timeout: Duration,
    /// How long the server waits for any message after its ping before closing with 4201.
    pub pong_timeout: Duration,
    /// Largest inbound WebSocket message (`HERALD_MAX_FRAME_BYTES`); larger ones close with 1009.
    pub max_frame_bytes: usize,
    /// Frames queued per connection before it counts as a slow consumer (4100).
    pub outbox_capacity: usize,
    /// How often the store's revision is polled.
    pub revision_poll: Duration,
    /// The bound on the shutdown drain of sockets, counters and the webhook outbox
    /// (`HERALD_SHUTDOWN_GRACE_SECS`, default 10).
    pub shutdown_grace: Duration,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed
    /// (`HERALD_TRUSTED_PROXIES`, a CIDR list); empty: nobody's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a client may take to send a request's headers (30 s; tests shorten it).
    pub header_timeout: Duration,
    /// How long a client may take to send a whole request body (`HERALD_BODY_TIMEOUT_SECS`,
    /// default 10); past a 2 s grace it must also keep up 16 KiB/s (see `serve.rs`).
    pub body_timeout: Duration,
    /// Bytes of REST bodies buffered node-wide before their signature is verified
    /// (`HERALD_BODY_BUFFER_MIB`, default 32); a request beyond it gets 503 with `Retry-After`.
    pub body_buffer_bytes: usize,
    /// Cluster mode, when `HERALD_REDIS_URL` is set.
    pub cluster: Option<ClusterSettings>,
    /// The pusher-js HTTP fallback sessions' timers (fixed; tests shorten them).
    pub fallback: FallbackSettings,
    /// TLS on both listeners, when `HERALD_TLS_CERT` and `HERALD_TLS_KEY` are set.
    pub tls: Option<TlsSettings>,
    /// The Mercure hub's node-wide settings.
    pub mercure: MercureHubSettings,
    /// Self-service sign-up (`HERALD_SIGNUP`, default closed).
    pub signup: SignupMode,
    /// The plan a signed-up tenant creates apps from (`HERALD_SIGNUP_PLAN`, default `sandbox`).
    pub signup_plan: String,
    /// Outgoing email (`HERALD_SMTP_URL`; may carry a password, so it is a [`Secret`]); `None`:
    /// messages go to the log.
    pub smtp_url: Option<Secret>,
    /// The sender of outgoing email (`HERALD_SMTP_FROM`); `None`: `Herald <no-reply@HOST>`.
    pub smtp_from: Option<String>,
    /// Days an audit entry is kept (`HERALD_AUDIT_RETENTION_DAYS`, default 365, at most
    /// 36500); 0 keeps them forever. Older entries are deleted by the store sweep.
    pub audit_retention_days: u64,
}

/// Who may sign up in the dashboard (`HERALD_SIGNUP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignupMode {
    /// Nobody: no sign-up page (the default).
    #[default]
    Closed,
    /// Only people invited to a tenant: the page says so.
    Invite,
    /// Anyone, with an email they confirm: each gets a tenant of their own.
    Open,
}

/// `HERALD_SIGNUP`: `closed`, `invite` or `open`.
fn signup_mode() -> Result<SignupMode, ConfigError> {
    match var("HERALD_SIGNUP").as_deref().map(str::trim) {
        None | Some("closed") => Ok(SignupMode::Closed),
        Some("invite") => Ok(SignupMode::Invite),
        Some("open") => Ok(SignupMode::Open),
        Some(other) => Err(ConfigError {
            name: "HERALD_SIGNUP",
            problem: format!("closed, invite or open, got {other:?}"),
        }),
    }
}

/// `HERALD_SIGNUP_PLAN` (default `sandbox`; checked against the plan presets at startup).
fn signup_plan() -> String {
    var("HERALD_SIGNUP_PLAN")
        .map(|plan| plan.trim().to_owned())
        .unwrap_or_else(|| "sandbox".into())
}

/// `HERALD_SMTP_URL`: `smtp://` or `smtps://` (its password is never echoed).
fn smtp_url() -> Result<Option<Secret>, ConfigError> {
    match var("HERALD_SMTP_URL") {
        None => Ok(None),
        Some(url) if url.starts_with("smtp://") || url.starts_with("smtps://") => {
            Ok(Some(Secret::new(url)))
        }
        Some(url) => Err(ConfigError {
            name: "HERALD_SMTP_URL",
            problem: format!(
                "an smtp:// or smtps:// URL, got {}",
                crate::mail::redacted_url(&url)
            ),
        }),
    }
}

/// TLS on both listeners (`HERALD_TLS_CERT`, `HERALD_TLS_KEY`: PEM files).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `HERALD_TLS_CERT`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `HERALD_TLS_KEY`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the files are checked for a change (2 s; tests shorten it).
    pub reload_poll: Duration,
    /// How long a client may take to send its ClientHello, from the accept (3 s).
    pub hello_timeout: Duration,
    /// How long a client may take over its whole TLS handshake, from the accept (10 s).
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress per listener (1,024); when all are taken, a new connection
    /// evicts the oldest handshake in progress.
    pub max_handshakes: usize,
    /// TLS handshakes in progress per client address and listener (16); a connection beyond it
    /// is closed at once. Peers in `HERALD_TRUSTED_PROXIES` are bound by `max_handshakes` only.
    pub max_handshakes_per_ip: usize,
}

impl TlsSettings {
    /// TLS with `cert` and `key` and the default timers and bound.
    pub fn new(cert: PathBuf, key: PathBuf) -> TlsSettings {
        TlsSettings {
            cert,
            key,
            reload_poll: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            max_handshakes_per_ip: 16,
        }
    }
}

fn tls_settings() -> Result<Option<TlsSettings>, ConfigError> {
    match (var("HERALD_TLS_CERT"), var("HERALD_TLS_KEY")) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsSettings::new(cert.into(), key.into()))),
        (Some(_), None) => Err(ConfigError {
            name: "HERALD_TLS_KEY",
            problem: "must be set too when HERALD_TLS_CERT is (the certificate's private key)"
                .into(),
        }),
        (None, Some(_)) => Err(ConfigError {
            name: "HERALD_TLS_CERT",
            problem: "must be set too when HERALD_TLS_KEY is (the certificate chain)".into(),
        }),
    }
}

/// The Mercure hub's node-wide settings (`transport::mercure`).
#[derive(Debug, Clone)]
pub struct MercureHubSettings {
    /// The app also served at `/.well-known/mercure` (`HERALD_MERCURE_ROOT_APP`, an app id).
    pub root_app: Option<String>,
    /// How often an idle SSE stream gets a `:` comment (20 s; tests shorten it).
    pub heartbeat: Duration,
    /// Bytes of Mercure history kept node-wide, all apps together (64 MiB); past it the
    /// oldest updates of the app publishing leave first.
    pub history_bytes: usize,
}

impl Default for MercureHubSettings {
    fn default() -> MercureHubSettings {
        MercureHubSettings {
            root_app: None,
            heartbeat: Duration::from_secs(20),
            history_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The timers of pusher-js's HTTP fallback sessions (`transport::xhr`).
#[derive(Debug, Clone)]
pub struct FallbackSettings {
    /// How often an open stream gets an `h` line (20 s: well inside pusher-js's 30 s pong
    /// timeout).
    pub heartbeat: Duration,
    /// How long a poll with nothing to answer waits before answering `h` (20 s).
    pub poll_wait: Duration,
    /// How long a session with no open stream or poll, and no request, lives on (5 s): pusher-js
    /// polls again as soon as a poll is answered and reopens a stream at once, and it disconnects
    /// by dropping its request, after which the session must go soon.
    pub expiry: Duration,
}

impl Default for FallbackSettings {
    fn default() -> FallbackSettings {
        FallbackSettings {
            heartbeat: Duration::from_secs(20),
            poll_wait: Duration::from_secs(20),
            expiry: Duration::from_secs(5),
        }
    }
}

/// A malformed environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    name: &'static str,
    problem: String,
}

/// `HERALD_AUDIT_RETENTION_DAYS`' default: a year.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 365;

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, ConfigError> {
    match var(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ConfigError {
            name,
            problem: format!("expected a number, got {v:?}"),
        }),
    }
}

/// Environment variable `name` as a list of CIDR blocks (see [`parse_named_cidr_list`]).
fn cidr_list(name: &'static str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    var(name).map_or(Ok(Vec::new()), |list| parse_named_cidr_list(name, &list))
}

/// `HERALD_DASHBOARD_RATE`'s default: a person clicking through forms never meets it; a
/// script with a stolen session makes at most one store change a second.
pub const DEFAULT_DASHBOARD_RATE: u32 = 60;

/// `HERALD_PUBLIC_URL`: an absolute `http://` or `https://` URL with a host and no query or
/// fragment; answered without a trailing `/`.
fn parse_public_url(raw: &str) -> Result<String, ConfigError> {
    let problem = |problem: &str| ConfigError {
        name: "HERALD_PUBLIC_URL",
        problem: format!("{problem}, got {raw:?}"),
    };
    let url = url::Url::parse(raw.trim()).map_err(|_| problem("expected an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(problem("expected an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem("expected a URL without query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A list of CIDR blocks separated by commas or spaces (a bare address is its /32 or /128,
/// host bits are dropped); an error names the variable `name`.
fn parse_named_cidr_list(name: &'static str, list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| ConfigError {
                    name,
                    problem: format!("expected CIDR blocks like 10.0.0.0/8, got {item:?}"),
                })
        })
        .collect()
}

/// Parses a CIDR list (`10.0.0.0/8, ::1/128`; a bare address is a single host), such as
/// `HERALD_WEBHOOK_ALLOW_PRIVATE`.
pub fn parse_cidr_list(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| {
                    item.parse::<std::net::IpAddr>().map(|ip| match ip {
                        std::net::IpAddr::V4(v4) => ipnet::IpNet::V4(ipnet::Ipv4Net::from(v4)),
                        std::net::IpAddr::V6(v6) => ipnet::IpNet::V6(ipnet::Ipv6Net::from(v6)),
                    })
                })
                .map_err(|_| format!("{item:?} is not a CIDR range or an IP address"))
        })
        .collect()
}

fn cluster_settings() -> Result<Option<ClusterSettings>, ConfigError> {
    let Some(url) = var("HERALD_REDIS_URL") else {
        return Ok(None);
    };
    let url = url.trim();
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix:")) {
        return Err(ConfigError {
            name: "HERALD_REDIS_URL",
            problem: "expected a redis:// (or rediss://, unix:) URL".into(),
        });
    }
    let name = var("HERALD_CLUSTER").unwrap_or_else(|| "herald".into());
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ConfigError {
            name: "HERALD_CLUSTER",
            problem: format!("letters, digits, '-', '_' and '.' only, got {name:?}"),
        });
    }
    let node_id = var("HERALD_NODE_ID").unwrap_or_else(random_node_id);
    if node_id.len() > 64 || !node_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError {
            name: "HERALD_NODE_ID",
            problem: format!("at most 64 printable characters without spaces, got {node_id:?}"),
        });
    }
    Ok(Some(ClusterSettings {
        redis_url: Secret::new(url.to_owned()),
        name,
        node_id,
    }))
}

fn webhook_settings() -> Result<WebhookSettings, ConfigError> {
    let mut settings = WebhookSettings::default();
    if let Some(ms) = number::<u64>("HERALD_WEBHOOK_BATCH_MS")? {
        if ms > 100 {
            return Err(ConfigError {
                name: "HERALD_WEBHOOK_BATCH_MS",
                problem: format!("at most 100 (the webhook outbox durability window), got {ms}"),
            });
        }
        settings.batch_window = Duration::from_millis(ms.max(1));
    }
    if let Some(secs) = number::<u64>("HERALD_WEBHOOK_TIMEOUT_SECS")? {
        settings.request_timeout = Duration::from_secs(secs.clamp(1, 60));
    }
    if let Some(n) = number::<usize>("HERALD_WEBHOOK_CONCURRENCY")? {
        settings.concurrency = n.clamp(1, 64);
    }
    if let Some(list) = var("HERALD_WEBHOOK_ALLOW_PRIVATE") {
        settings.allow_private = parse_cidr_list(&list).map_err(|problem| ConfigError {
            name: "HERALD_WEBHOOK_ALLOW_PRIVATE",
            problem,
        })?;
    }
    if let Some(days) = number::<u64>("HERALD_WEBHOOK_FAILED_RETENTION_DAYS")? {
        settings.failed_retention = Duration::from_secs(days.clamp(1, 3650) * 24 * 3600);
    }
    Ok(settings)
}

/// The SQLite URL of a data dir, creating the file when missing.
pub fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("herald.db").display())
}

impl Settings {
    /// Reads the environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        let data_dir =
            PathBuf::from(var("HERALD_DATA_DIR").unwrap_or_else(|| "./herald-data".into()));
        let database_url = match var("HERALD_DATABASE_URL") {
            Some(url) if url.starts_with("sqlite:") && !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            Some(url) => url,
            None => sqlite_url(&data_dir),
        };
        let max_connections = match number::<usize>("HERALD_MAX_CONNECTIONS")? {
            Some(0) => None,
            other => other,
        };
        let max_app_share = match number::<u8>("HERALD_MAX_APP_SHARE")? {
            None => 50,
            Some(percent @ 1..=100) => percent,
            Some(other) => {
                return Err(ConfigError {
                    name: "HERALD_MAX_APP_SHARE",
                    problem: format!("a percentage from 1 to 100, got {other}"),
                })
            }
        };
        let metrics_top_apps = match number::<usize>("HERALD_METRICS_TOP_APPS")? {
            None => 20,
            Some(n @ 0..=1000) => n,
            Some(other) => {
                return Err(ConfigError {
                    name: "HERALD_METRICS_TOP_APPS",
                    problem: format!("a number from 0 to 1000, got {other}"),
                })
            }
        };
        let api_rate = match number::<u32>("HERALD_API_RATE")? {
            None => 10,
            Some(n @ 1..=1000) => n,
            Some(other) => {
                return Err(ConfigError {
                    name: "HERALD_API_RATE",
                    problem: format!("a number from 1 to 1000, got {other}"),
                })
            }
        };
        let dashboard_rate = match number::<u32>("HERALD_DASHBOARD_RATE")? {
            None => DEFAULT_DASHBOARD_RATE,
            Some(n @ 1..=10_000) => n,
            Some(other) => {
                return Err(ConfigError {
                    name: "HERALD_DASHBOARD_RATE",
                    problem: format!("a number from 1 to 10000, got {other}"),
                })
            }
        };
        let cluster = cluster_settings()?;
        let public_url = var("HERALD_PUBLIC_URL")
            .map(|url| parse_public_url(&url))
            .transpose()?;
        let settings = Settings {
            metrics_bind: var("HERALD_METRICS_BIND"),
            metrics_top_apps,
            api_rate,
            dashboard_rate,
            tls: tls_settings()?,
            public_url,
            cluster,
            max_app_share,
            bind: var("HERALD_BIND").unwrap_or_else(|| "127.0.0.1:6001".into()),
            admin_bind: var("HERALD_ADMIN_BIND"),
            data_dir,
            database_url,
            default_app: DefaultApp {
                id: var("HERALD_DEFAULT_APP_ID"),
                key: var("HERALD_DEFAULT_APP_KEY"),
                secret: var("HERALD_DEFAULT_APP_SECRET").map(Secret::new),
            },
            admin: AdminAccount {
                email: var("HERALD_ADMIN_EMAIL"),
                password: var("HERALD_ADMIN_PASSWORD").map(Secret::new),
            },
            max_connections,
            max_frame_bytes: number("HERALD_MAX_FRAME_BYTES")?.unwrap_or(64 * 1024),
            webhooks: webhook_settings()?,
            trusted_proxies: cidr_list("HERALD_TRUSTED_PROXIES")?,
            body_timeout: match number::<u64>("HERALD_BODY_TIMEOUT_SECS")? {
                Some(secs) => Duration::from_secs(secs.clamp(1, 300)),
                None => Settings::defaults().body_timeout,
            },
            body_buffer_bytes: match number::<usize>("HERALD_BODY_BUFFER_MIB")? {
                Some(mib) => mib.clamp(1, 64 * 1024) * 1024 * 1024,
                None => Settings::defaults().body_buffer_bytes,
            },
            shutdown_grace: Duration::from_secs(
                number::<u64>("HERALD_SHUTDOWN_GRACE_SECS")?
                    .unwrap_or(10)
                    .clamp(1, 600),
            ),
            mercure: MercureHubSettings {
                root_app: var("HERALD_MERCURE_ROOT_APP"),
                ..MercureHubSettings::default()
            },
            signup: signup_mode()?,
            signup_plan: signup_plan(),
            smtp_url: smtp_url()?,
            smtp_from: var("HERALD_SMTP_FROM"),
            audit_retention_days: number::<u64>("HERALD_AUDIT_RETENTION_DAYS")?
                .unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS)
                .min(36_500),
            ..Settings::defaults()
        };
        settings.check_cluster().map_err(|problem| ConfigError {
            name: "HERALD_REDIS_URL",
            problem,
        })?;
        Ok(settings)
    }

    /// Refuses cluster mode on a store that is not PostgreSQL ([`CLUSTER_NEEDS_POSTGRES`]).
    pub fn check_cluster(&self) -> Result<(), String> {
        let postgres = self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://");
        if self.cluster.is_some() && !postgres {
            return Err(CLUSTER_NEEDS_POSTGRES.to_owned());
        }
        Ok(())
    }

    fn defaults() -> Settings {
        Settings {
            bind: "127.0.0.1:6001".into(),
            admin_bind: None,
            metrics_bind: None,
            metrics_top_apps: 20,
            api_rate: 10,
            dashboard_rate: DEFAULT_DASHBOARD_RATE,
            public_url: None,
            data_dir: PathBuf::from("./herald-data"),
            database_url: sqlite_url(std::path::Path::new("./herald-data")),
            default_app: DefaultApp::default(),
            admin: AdminAccount::default(),
            clock: crate::clock::Clock::system(),
            usage_flush: Duration::from_secs(5),
            webhooks: WebhookSettings::default(),
            max_connections: None,
            max_app_share: 50,
            activity_timeout: Duration::from_secs(crate::protocol::ACTIVITY_TIMEOUT_SECS),
            pong_timeout: Duration::from_secs(30),
            max_frame_bytes: 64 * 1024,
            outbox_capacity: 512,
            revision_poll: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            body_buffer_bytes: 32 * 1024 * 1024,
            cluster: None,
            fallback: FallbackSettings::default(),
            tls: None,
            mercure: MercureHubSettings::default(),
            signup: SignupMode::Closed,
            signup_plan: "sandbox".into(),
            smtp_url: None,
            smtp_from: None,
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
        }
    }

    /// How many connections one app may hold on this node: its share of the node's capacity
    /// (at least one), or `None` when the node has no capacity set.
    pub fn app_share_of_node(&self) -> Option<usize> {
        self.max_connections
            .map(|max| (max.saturating_mul(usize::from(self.max_app_share)) / 100).max(1))
    }

    /// The URL users reach the server at: `HERALD_PUBLIC_URL`, else `http://` and `bound`, the
    /// address the listener got (`HERALD_BIND`'s, with the real port when it asked for 0).
    pub fn public_url_or(&self, bound: std::net::SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }

    /// Settings for a node on `127.0.0.1:0` with its store in `data_dir`.
    pub fn for_tests(data_dir: PathBuf) -> Settings {
        Settings {
            bind: "127.0.0.1:0".into(),
            database_url: sqlite_url(&data_dir),
            data_dir,
            webhooks: WebhookSettings {
                // Tests deliver to receivers on loopback.
                allow_private: parse_cidr_list("127.0.0.0/8, ::1/128").unwrap_or_default(),
                ..WebhookSettings::default()
            },
            ..Settings::defaults()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_mode_is_refused_on_sqlite_and_taken_on_postgres() {
        let mut settings = Settings::for_tests(PathBuf::from("/tmp/unused"));
        assert_eq!(settings.check_cluster(), Ok(()), "single node on SQLite");
        settings.cluster = Some(ClusterSettings::new("redis://127.0.0.1/", "herald"));
        let refusal = settings.check_cluster().unwrap_err();
        assert!(refusal.contains("HERALD_REDIS_URL"), "{refusal}");
        assert!(!refusal.contains('\n'), "one line: {refusal}");
        settings.database_url = "postgres://herald@db/herald".into();
        assert_eq!(settings.check_cluster(), Ok(()));
        let id = settings
            .cluster
            .as_ref()
            .map(|c| c.node_id.clone())
            .unwrap();
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    #[test]
    fn the_public_url_is_checked_and_defaults_to_the_bound_address() {
        assert_eq!(
            parse_public_url("https://push.example.com/").unwrap(),
            "https://push.example.com"
        );
        assert_eq!(
            parse_public_url("http://10.0.0.1:8080/herald").unwrap(),
            "http://10.0.0.1:8080/herald"
        );
        for bad in [
            "push.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
            "/path",
        ] {
            let error = parse_public_url(bad).unwrap_err().to_string();
            assert!(error.starts_with("HERALD_PUBLIC_URL"), "{error}");
        }
        let mut settings = Settings::for_tests(PathBuf::from("/tmp/unused"));
        let bound: std::net::SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(settings.public_url_or(bound), "http://127.0.0.1:4321");
        settings.public_url = Some("https://push.example.com".into());
        assert_eq!(settings.public_url_or(bound), "https://push.example.com");
    }

    #[test]
    fn a_cidr_list_takes_blocks_and_bare_addresses_and_names_a_bad_item() {
        let list =
            parse_named_cidr_list("HERALD_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1 fd00::/8,")
                .expect("a valid list");
        let expected: Vec<ipnet::IpNet> = ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(list, expected);
        // Host bits are dropped, so 10.1.2.3/8 means 10.0.0.0/8.
        let list = parse_named_cidr_list("X", "10.1.2.3/8").unwrap();
        assert_eq!(list[0].to_string(), "10.0.0.0/8");
        let error = parse_named_cidr_list("HERALD_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")
            .unwrap_err()
            .to_string();
        assert!(error.contains("HERALD_TRUSTED_PROXIES"), "{error}");
        assert!(error.contains("proxy.internal"), "{error}");
    }
}
